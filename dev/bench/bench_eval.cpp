// Greedy decoding throughput of the engine (LlamaModel's KV-cache mode through model/decode.h's
// greedy loop, batched, CPU backend), for
// dev/bench/bench_eval.py, which runs transformers generate on the same model and prompts.
//
//   build/bench/bench_eval --model DIR --prompts prompts.json --batch-size 32 --max-new-tokens 32
//
// Every prompt generates exactly --max-new-tokens tokens (no stop tokens), as generate() with
// min_new_tokens = max_new_tokens. Prints one JSON line: tokens, seconds, tokens_per_s, and the
// CPU seconds, and the generated ids (so the driver can check that both sides produced the same tokens).
#include <algorithm>
#include <ctime>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "model/config.h"
#include "model/decode.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/weights.h"

int main(int argc, char** argv) {
  try {
    std::string model_dir, prompts_path;
    int batch_size = 32, max_new = 32, repeats = 1;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        check(i + 1 < argc, a, " needs a value");
        return argv[++i];
      };
      if (a == "--model") model_dir = next();
      else if (a == "--prompts") prompts_path = next();
      else if (a == "--batch-size") batch_size = std::stoi(next());
      else if (a == "--max-new-tokens") max_new = std::stoi(next());
      else if (a == "--repeats") repeats = std::stoi(next());
      else if (a == "--help") {
        std::printf("usage: bench_eval --model DIR --prompts FILE.json [--batch-size N] [--max-new-tokens N] [--repeats N]\n");
        return 0;
      } else fail("unknown option ", a);
    }
    check(!model_dir.empty() && !prompts_path.empty(), "--model and --prompts are required");
    LlamaConfig c = load_config(model_dir + "/config.json");
    ParamLayout layout = make_param_layout(c);
    std::vector<float> params(layout.total);
    load_weights(model_dir, c, layout, params.data());
    auto prompts = nlohmann::json::parse(read_text_file(prompts_path)).get<std::vector<std::vector<int32_t>>>();
    size_t longest = 1;
    for (const auto& p : prompts) longest = std::max(longest, p.size());
    LlamaModel<CpuBackend> m(c, batch_size, int(longest) + max_new, ModelUse::inference);
    m.load_params(params.data());
    GreedyOptions opt;
    opt.batch_size = batch_size;
    opt.max_new_tokens = max_new;
    greedy_generate(m, {prompts[0]}, opt);  // warm-up (oneDNN kernels, page faults)
    double best = 1e30, best_cpu = 1e30;
    std::vector<std::vector<int32_t>> out;
    for (int r = 0; r < repeats; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      std::clock_t c0 = std::clock();  // process CPU time, all threads
      out = greedy_generate(m, prompts, opt);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      best_cpu = std::min(best_cpu, double(std::clock() - c0) / CLOCKS_PER_SEC);
    }
    int64_t tokens = 0;
    for (const auto& o : out) tokens += int64_t(o.size());
    nlohmann::json j = {{"tokens", tokens}, {"seconds", best}, {"tokens_per_s", tokens / best},
                        {"cpu_seconds", best_cpu}, {"tokens_per_cpu_s", tokens / best_cpu}, {"generated", out}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
