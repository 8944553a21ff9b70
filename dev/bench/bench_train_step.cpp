// Engine side of the training-step benchmark (dev/bench/bench_train_step.py runs it next to
// PyTorch and prints the ratio). Random weights and tokens; each step is forward + backward +
// clipping + AdamW over `rows` rows of T tokens, all tokens carrying a loss. Prints one JSON line.
//
//   make build/bench/bench_train_step
//   ./build/bench/bench_train_step --config dev/bench/tiny.json --rows 8 --T 256 --steps 5
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "common/error.h"
#include "model/llama.h"
#include "model/weights.h"

static void usage() {
  std::printf(
      "usage: bench_train_step --config CONFIG_JSON [--rows N] [--T N] [--steps N] [--warmup N]\n"
      "  --config   HF config.json of the model to benchmark (random weights)\n"
      "  --rows     rows (sequences) per step (default 8)\n"
      "  --T        tokens per row (default 256)\n"
      "  --steps    timed steps (default 5)\n"
      "  --warmup   untimed steps first (default 1)\n"
      "  --profile  print the time of forward, LM head + backward, optimizer\n");
}

int main(int argc, char** argv) {
  try {
    std::string config_path;
    int rows = 8, T = 256, steps = 5, warmup = 1;
    bool profile = false;
    for (int i = 1; i < argc; i++) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        check(i + 1 < argc, "option ", a, " needs a value");
        return argv[++i];
      };
      if (a == "--config") config_path = next();
      else if (a == "--rows") rows = std::stoi(next());
      else if (a == "--T") T = std::stoi(next());
      else if (a == "--steps") steps = std::stoi(next());
      else if (a == "--warmup") warmup = std::stoi(next());
      else if (a == "--profile") profile = true;
      else if (a == "--help" || a == "-h") { usage(); return 0; }
      else fail("unknown option ", a, " (see --help)");
    }
    check(!config_path.empty(), "--config is required (see --help)");
    LlamaConfig cfg = load_config(config_path);
    LlamaModel<CpuBackend> model(cfg, rows, T);
    init_weights(cfg, model.layout, model.params, 1234);

    Batch b;
    b.rows = rows;
    b.T = T;
    std::mt19937 rng(42);
    for (int r = 0; r < rows; r++)
      for (int t = 0; t < T; t++) {
        b.tokens.push_back((int32_t)(rng() % cfg.vocab_size));
        b.positions.push_back(t);
        b.seg_start.push_back(0);
      }
    for (int i = 0; i < rows * T; i++) {
      bool last = (i % T) == T - 1;
      b.targets.push_back(last ? (int32_t)(rng() % cfg.vocab_size) : b.tokens[i + 1]);
    }
    b.num_target_tokens = (int64_t)rows * T;
    AdamWConfig opt;
    opt.lr = 1e-4f;
    opt.weight_decay = 0.1f;

    double loss = 0, t_fwd = 0, t_bwd = 0, t_opt = 0;
    auto now = [] { return std::chrono::steady_clock::now(); };
    auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
    decltype(now()) start = now();
    for (int s = 0; s < warmup + steps; s++) {
      if (s == warmup) start = now(), t_fwd = t_bwd = t_opt = 0;
      model.zero_grad();
      if (profile) {
        // forward alone, then the full forward_backward: bwd = full - fwd.
        auto a = now();
        model.forward(b);
        auto c = now();
        loss = model.forward_backward(b, b.num_target_tokens);
        auto d = now();
        model.optimizer_step(opt);
        auto e = now();
        t_fwd += secs(a, c);
        t_bwd += secs(c, d) - secs(a, c);
        t_opt += secs(d, e);
      } else {
        loss = model.forward_backward(b, b.num_target_tokens);
        model.optimizer_step(opt);
      }
    }
    double elapsed = secs(start, now());
    if (profile) elapsed -= t_fwd;  // the extra forward pass is not part of a step
    double tok_s = (double)rows * T * steps / elapsed;
    std::printf("{\"engine\": \"llm-engine cpu\", \"threads\": %d, \"params\": %zu, \"rows\": %d, "
                "\"T\": %d, \"steps\": %d, \"seconds_per_step\": %.4f, \"tokens_per_s\": %.1f, "
                "\"loss\": %.5f, \"param_state_mb\": %.1f, \"activation_mb\": %.1f}\n",
                omp_get_max_threads(), model.layout.total, rows, T, steps, elapsed / steps, tok_s, loss,
                model.param_state_bytes / 1e6, model.activation_bytes / 1e6);
    if (profile)
      std::fprintf(stderr, "per step: forward %.3f s, head+backward %.3f s, optimizer %.3f s\n",
                   t_fwd / steps, t_bwd / steps, t_opt / steps);
    return 0;
  } catch (const EngineError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
