// The optimizer step (kernels/cuda/adamw.cuh, global_norm.cuh) over `adamw_params` parameters.
// Memory-bound; bytes per parameter as the kernel file states them: fp32 moments read p, g, m, v
// (16) and write p, m, v and the bf16 working copy (14): 30; bf16 moments: 22. The global norm
// (gradient clipping) reads the fp32 gradients once: 4 bytes per parameter. The fused step (norm
// partials, then the update that finishes the norm, clips and zeroes the gradients) moves 4 + 34
// bytes per parameter, as the unfused norm + update + memset do, in two launches instead of four
// and without the host round trip.
#include "dev/cuda/bench.h"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/global_norm.cuh"

void bench_adamw(Bench& b) {
  const size_t n = b.shape().adamw_params;
  DevBuf<float> master(n), grads(n), m(n), v(n), norm(2), scratch(GLOBAL_NORM_BLOCKS);
  DevBuf<bf16> work(n), m16(n), v16(n);
  master.random(1, 0.02f);
  grads.random(2, 1e-3f);
  m.random(3, 1e-4f);
  v.random(4, 1e-8f, 2e-8f);
  m16.random(5, 1e-4f);
  v16.random(6, 1e-8f, 2e-8f);
  const AdamWHyper hp{1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 10};
  const std::string params = (n >= 1000000 ? std::to_string(n / 1000000) + "M" : std::to_string(n)) + " parameters";
  b.run("global norm", 4.0 * n, 2.0 * n, Roof::memory, {out(norm)},
        [&] { global_norm(norm, scratch, grads, n, 1.0f, 0); }, params);
  b.run("update, fp32 moments", 30.0 * n, 0, Roof::memory, {out(master, false), out(m, false), out(v, false), out(work)},
        [&] { adamw_update<float>(master, work, grads, m, v, n, hp, 1.0f, norm.p + 1, 7, 0); }, params);
  b.run("update, bf16 moments", 22.0 * n, 0, Roof::memory, {out(master, false), out(m16, false), out(v16, false), out(work)},
        [&] { adamw_update<bf16>(master, work, grads, m16, v16, n, hp, 1.0f, norm.p + 1, 7, 0); }, params);
  b.run("unfused step: norm, update, zero grads (fp32 moments)", 38.0 * n, 0, Roof::memory,
        {out(master, false), out(m, false), out(v, false), out(work), out(norm)},
        [&] {
          global_norm(norm, scratch, grads, n, 1.0f, 0);
          adamw_update<float>(master, work, grads, m, v, n, hp, 1.0f, norm.p + 1, 7, 0);
          CUDA_CHECK(cudaMemsetAsync(grads.p, 0, n * sizeof(float), 0));
        },
        params);
  b.run("fused step: norm, update, zero grads (fp32 moments)", 38.0 * n, 0, Roof::memory,
        {out(master, false), out(m, false), out(v, false), out(work), out(norm)},
        [&] {
          global_norm_partials(scratch, grads, n, 0);
          AdamWFusion fuse;
          fuse.norm_partials = scratch.p;
          fuse.max_norm = 1.0f;
          fuse.norm_out = norm.p;
          fuse.zero_grads = true;
          adamw_update<float>(master, work, grads, m, v, n, hp, 1.0f, nullptr, 7, 0, 0, fuse);
        },
        params);
}
