// Host AdamW throughput: the CPU op that the offloaded optimizer runs on the host cores
// (kernels/cpu/adamw.cpp, OpenMP), over n fp32 parameters, in host-memory bytes per second
// (p, g, m, v read and p, m, v written: 28 B per parameter). dev/bench/bench_adamw_host.py runs it
// next to torch.optim.AdamW (foreach and fused) and prints the ratio. Prints one JSON line.
//
//   make build/bench/bench_adamw_host
//   ./build/bench/bench_adamw_host --n 33554432 --reps 10
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "common/cli.h"
#include "common/error.h"
#include "kernels/cpu/ops.h"

int main(int argc, char** argv) {
  try {
    CLI::App app;
    cli::init(app, "usage: bench_adamw_host [--n N] [--reps N]");
    int64_t n = (int64_t)1 << 25, reps = 10;
    app.add_option("--n", n, "parameters (default 2^25: 0.9 GB of state)")->check(cli::integer(1, (int64_t)1 << 32));
    app.add_option("--reps", reps, "timed steps, the best one is kept (default 10)")->check(cli::integer(1, 1000));
    if (int rc = cli::parse(app, argc, argv); rc >= 0) return rc;
    std::vector<float> p(n), g(n), m(n), v(n);
    // Touched once in the op's own static schedule (first-touch page placement), with values
    // of a real step's magnitude.
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
      p[i] = 0.01f * (float)((i % 97) - 48);
      g[i] = 1e-3f * (float)((i % 89) - 44);
      m[i] = 0.0f;
      v[i] = 0.0f;
    }
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {  // the first one is a warmup
      const auto t0 = std::chrono::steady_clock::now();
      adamw_update(p.data(), g.data(), m.data(), v.data(), (size_t)n, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, r + 1, 0.5f);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) best = std::min(best, s);
    }
    std::printf("{\"n\": %lld, \"threads\": %d, \"seconds\": %.6f, \"params_per_s\": %.4g, \"gb_per_s\": %.3f}\n",
                (long long)n, omp_get_max_threads(), best, n / best, 28.0 * n / best / 1e9);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
