// Rotary embedding (kernels/cuda/rope.cuh) in place on the q and k heads of the fused qkv rows,
// as the model applies it (one call over H + KV heads). Memory-bound: reads and writes
// 2 bytes x N x (H+KV) x D; the cos/sin tables (4 bytes x D per token and head) come from L2.
#include "dev/cuda/bench.h"
#include "kernels/cuda/rope.cuh"

void bench_rope(Bench& b) {
  const BenchShape& s = b.shape();
  const int N = s.tokens(), QKV = s.qkv_width(), heads = s.H + s.KV, half = s.D / 2;
  std::vector<int> pos(N);
  for (int t = 0; t < N; t++) pos[t] = s.seg_len > 0 ? t % s.T % s.seg_len : t % s.T;
  DevBuf<int> positions(N);
  positions.upload(pos);
  DevBuf<float> cos_t((size_t)s.T * half), sin_t((size_t)s.T * half);
  cos_t.random(1);
  sin_t.random(2);
  DevBuf<bf16> qkv((size_t)N * QKV);
  qkv.random(3);
  const double bytes = 4.0 * N * heads * s.D + 4.0 * N;
  b.run("forward (q and k heads)", bytes, 0, Roof::memory, {out(qkv, false)},
        [&] { rope_apply(qkv, positions, cos_t, sin_t, N, heads, s.D, QKV, false, 0); }, "in place");
  b.run("backward (q and k heads)", bytes, 0, Roof::memory, {out(qkv, false)},
        [&] { rope_apply(qkv, positions, cos_t, sin_t, N, heads, s.D, QKV, true, 0); }, "in place");
}
