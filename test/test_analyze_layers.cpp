// ./analyze_layers end to end on tiny random models and a KVR shard: metrics.json, lens.jsonl and the
// charts are consistent with each other; a reference of another shape or tokenizer is refused with
// an error naming the field; --device cuda on the emulator (build/analyze_layers_emu: the same
// program and backend compiled with -DCUDA_EMULATION, bf16 activations) agrees with --device cpu,
// lens and swaps; --dry-run prints the analysis' GPU memory plan.
// Runs from the repository root after `make` (needs ./prepare_data, ./analyze_layers).
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "test/exec_logged.h"
#include "model/config.h"
#include "model/params.h"
#include "model/weights.h"

using nlohmann::json;

namespace {

int run(const std::vector<std::string>& argv, const std::string& log) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    exec_logged(argv, log);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> rows;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) rows.push_back(json::parse(line));
  return rows;
}

const std::string kTokenizer = "test/fixtures/tokenizer/ours.json";

// head_dim 64: the CUDA attention kernels take 64 or 128.
LlamaConfig tiny(int layers, int intermediate) {
  LlamaConfig c;
  c.vocab_size = 3008;
  c.hidden_size = 128;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 1;
  c.head_dim = 64;
  c.max_position_embeddings = 128;
  c.tie_word_embeddings = true;
  c.initializer_range = 0.1f;
  c.bos_token_id = {0};
  c.eos_token_id = {1};
  return c;
}

void write_model(const std::string& dir, const LlamaConfig& c, uint64_t seed, const std::string& tokenizer = kTokenizer) {
  const ParamLayout layout = make_param_layout(c);
  std::vector<float> p(layout.total);
  init_weights(c, layout, p.data(), seed);
  save_weights(dir, c, layout, p.data());
  write_file_atomic(dir + "/tokenizer.json", read_text_file(tokenizer));
}

struct Setup {
  std::string dir, data;
  Setup() {
    dir = "build/test/tmp_analyze_layers_" + std::to_string(getpid());
    remove_tree(dir);
    make_dirs(dir);
    data = dir + "/kvr.bin";
    REQUIRE(run({"./prepare_data", "--mode", "kvr", "--num", "6", "--seed", "3", "--tokenizer", kTokenizer, "--output",
                 data, "--quiet"},
                dir + "/prep.log") == 0);
    write_model(dir + "/a", tiny(2, 200), 1);
    write_model(dir + "/b", tiny(2, 200), 2);
    write_model(dir + "/ref", tiny(2, 200), 3);
  }
  ~Setup() {
    if (!std::getenv("KEEP_TEST_OUTPUT")) remove_tree(dir);
  }
};

}  // namespace

TEST_CASE("analyze_layers: metrics.json, lens.jsonl and charts agree; swap rows; bad references are refused") {
  Setup s;
  const std::string out = s.dir + "/out";
  REQUIRE(run({"./analyze_layers", "--model", s.dir + "/a", "--model", s.dir + "/b", "--reference", s.dir + "/ref",
               "--data", s.data, "--out", out, "--threads", "1", "--max-new-tokens", "4", "--batch-size", "4"},
              s.dir + "/run.log") == 0);
  const json m = json::parse(read_text_file(out + "/metrics.json"));
  const int L = m.at("layers");
  REQUIRE(L == 2);
  REQUIRE(m.at("models").size() == 2);
  const std::vector<json> rows = read_jsonl(out + "/lens.jsonl");
  REQUIRE(rows.size() == size_t(2 * 6 * (L + 1)));
  for (size_t k = 0; k < 2; ++k) {
    const json& mk = m["models"][k];
    CHECK(mk["num_facts"] == 6);
    CHECK(mk["lens"]["top1_first"].size() == size_t(L + 1));
    // The curves and ℓ* of metrics.json are those of the per-fact rows.
    std::vector<double> top1(L + 1, 0.0);
    for (const json& r : rows) {
      if (r["model"] != mk["model"]) continue;
      top1[r["layer"].get<int>()] += r["top1"].get<bool>() ? 1.0 / 6 : 0.0;
      const int fact = r["fact"];
      const int ls = mk["l_star"]["per_fact"][fact];
      CHECK((r["l_star"].is_null() ? -1 : r["l_star"].get<int>()) == ls);
      CHECK(r["top1"].get<bool>() == (r["rank"].get<int>() == 0));
    }
    for (int l = 0; l <= L; ++l) CHECK(mk["lens"]["top1_first"][l].get<double>() == Approx(top1[l]));
    int64_t hist = mk["l_star"]["never"];
    for (const json& h : mk["l_star"]["histogram"]) hist += h.get<int64_t>();
    CHECK(hist == 6);
    // 3 parts x L layers + L cumulative rows, accuracies in [0, 1].
    const json& sw = mk.at("swap");
    CHECK(sw["reference"] == s.dir + "/ref");
    REQUIRE(sw["rows"].size() == size_t(4 * L));
    for (const json& r : sw["rows"]) CHECK((r["accuracy"] >= 0.0 && r["accuracy"] <= 1.0));
  }
  for (const json& c : m.at("charts")) {
    INFO(c);
    std::ifstream png(out + "/" + c.get<std::string>(), std::ios::binary);
    std::string magic(4, '\0');
    png.read(magic.data(), 4);
    CHECK(magic.substr(1, 3) == "PNG");
  }
  if (std::system("command -v gnuplot > /dev/null 2>&1") == 0) CHECK(m["charts"].size() == 4);  // lens, l*, 2 swaps

  // A reference of another depth, or with another tokenizer: a clear error, exit 1.
  write_model(s.dir + "/deep", tiny(3, 200), 4);
  REQUIRE(run({"./analyze_layers", "--model", s.dir + "/a", "--reference", s.dir + "/deep", "--data", s.data, "--out",
               s.dir + "/bad", "--threads", "1"},
              s.dir + "/bad.log") == 1);
  CHECK(read_text_file(s.dir + "/bad.log").find("error: --reference " + s.dir + "/deep: config.json field "
                                                "'num_hidden_layers' is 3 but " + s.dir + "/a has 2") != std::string::npos);
  write_model(s.dir + "/othertok", tiny(2, 200), 5, "test/fixtures/tokenizer/bytelevel.json");
  REQUIRE(run({"./analyze_layers", "--model", s.dir + "/a", "--reference", s.dir + "/othertok", "--tokenizer", kTokenizer,
               "--data", s.data, "--out", s.dir + "/bad2", "--threads", "1"},
              s.dir + "/bad2.log") == 0);  // --tokenizer overrides both checkpoints' tokenizers: same ids
  REQUIRE(run({"./analyze_layers", "--model", s.dir + "/a", "--reference", s.dir + "/othertok", "--data", s.data,
               "--out", s.dir + "/bad3", "--threads", "1"},
              s.dir + "/bad3.log") == 1);
  CHECK(read_text_file(s.dir + "/bad3.log").find("tokenizer (hash") != std::string::npos);
}

TEST_CASE("analyze_layers --device cuda (emulated) agrees with --device cpu") {
  Setup s;
  auto args = [&](const std::string& program, const std::string& device) {
    return std::vector<std::string>{program, "--model", s.dir + "/a", "--reference", s.dir + "/ref", "--data", s.data,
                                    "--out", s.dir + "/" + device, "--device", device, "--threads", "1", "--quiet",
                                    "--max-new-tokens", "3", "--batch-size", "4"};
  };
  REQUIRE(run(args("./analyze_layers", "cpu"), s.dir + "/cpu.log") == 0);
  REQUIRE(run(args("build/analyze_layers_emu", "cuda"), s.dir + "/cuda.log") == 0);
  const std::vector<json> cpu = read_jsonl(s.dir + "/cpu/lens.jsonl"), gpu = read_jsonl(s.dir + "/cuda/lens.jsonl");
  REQUIRE(cpu.size() == gpu.size());
  REQUIRE(cpu.size() == size_t(6 * 3));
  // Compared in log-probability: the gold probabilities of a random model are small, so an absolute
  // tolerance on them would hide a wrong layer. bf16 activations through 2 blocks: within 0.1 nats,
  // while the boundaries themselves differ by several nats (checked, so a lens reading the wrong
  // layer on the GPU fails).
  auto logp = [](const json& row, size_t j) { return std::log(std::max(row["answer_prob"][j].get<double>(), 1e-30)); };
  double worst = 0;
  int same_top1 = 0, tokens = 0;
  std::vector<double> adjacent(2, 0.0);  // max |cpu boundary l - cpu boundary l+1|
  for (size_t i = 0; i < cpu.size(); ++i) {
    REQUIRE(cpu[i]["fact"] == gpu[i]["fact"]);
    REQUIRE(cpu[i]["layer"] == gpu[i]["layer"]);
    REQUIRE(cpu[i]["answer_prob"].size() == gpu[i]["answer_prob"].size());
    const int l = cpu[i]["layer"];
    for (size_t j = 0; j < cpu[i]["answer_prob"].size(); ++j) {
      worst = std::max(worst, std::abs(logp(cpu[i], j) - logp(gpu[i], j)));
      if (l < 2) adjacent[l] = std::max(adjacent[l], std::abs(logp(cpu[i], j) - logp(cpu[i + 1], j)));
      same_top1 += (cpu[i]["answer_rank"][j] == 0) == (gpu[i]["answer_rank"][j] == 0);
      ++tokens;
    }
  }
  WARN("lens cuda (emulated, bf16) vs cpu: max |log prob diff| " << worst << " nats; adjacent boundaries differ by "
                                                                << adjacent[0] << ", " << adjacent[1]
                                                                << "; top-1 flags equal on " << same_top1 << "/" << tokens);
  CHECK(worst <= 0.1);
  CHECK(std::min(adjacent[0], adjacent[1]) > 1.0);
  CHECK(same_top1 >= tokens * 9 / 10);
  // The swap profile ran on the device too (its agreement on models where the swaps change the
  // answers is test_cuda_train's "cuda analysis"): the same rows.
  const json sc = json::parse(read_text_file(s.dir + "/cpu/metrics.json"))["models"][0]["swap"];
  const json sg = json::parse(read_text_file(s.dir + "/cuda/metrics.json"))["models"][0]["swap"];
  REQUIRE(sc["rows"].size() == 8);
  REQUIRE(sg["rows"].size() == sc["rows"].size());
  for (size_t k = 0; k < sc["rows"].size(); ++k) CHECK(sg["rows"][k] == sc["rows"][k]);
  CHECK(sg["accuracy"] == sc["accuracy"]);
  CHECK(sg["reference_accuracy"] == sc["reference_accuracy"]);
}

TEST_CASE("analyze_layers --dry-run prints the analysis' GPU memory plan, without gradients or optimizer state") {
  Setup s;
  REQUIRE(run({"./analyze_layers", "--dry-run", "--model", s.dir + "/a", "--reference", s.dir + "/ref", "--data", s.data,
               "--batch-size", "4", "--out", s.dir + "/out"},
              s.dir + "/dry.log") == 0);
  const std::string out = read_text_file(s.dir + "/dry.log");
  INFO(out);
  for (const char* line : {"GPU memory plan (--device cuda)", "weights, fp32 master", "residual stream of every layer",
                           "KV cache (greedy decoding)", "lens batches of 4 x", "planned for training instead", "total"})
    CHECK(out.find(line) != std::string::npos);
  CHECK(out.find("gradients, fp32") == std::string::npos);
  CHECK(out.find("AdamW state") == std::string::npos);
  CHECK(!file_exists(s.dir + "/out/metrics.json"));  // nothing written
}
