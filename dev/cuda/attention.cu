// Flash attention forward and backward on the training layout, on fp32 FMA units (the reference
// kernels, kernels/cuda/attention.cuh) and on tensor cores (kernels/cuda/attention_tc.cuh, WMMA):
// q, k, v are the three parts of the fused qkv rows, RoPE already applied.
//   keys:  causal within each example: one sequence per row (llama8b), or packed examples of
//          seg_len tokens whose queries see only their own example (remix).
//   FLOPs: per visible (query, key) pair and q head, 4D forward (q.k and p.v), 10D backward
//          (recomputed q.k, dO.v, dQ, dK, dV; the kernels also recompute dO.v in the dK/dV pass,
//          which is not counted); the same model FLOPs for both paths (the tensor-core forward
//          computes q.k twice, not counted either). Roof: fp32 for the FMA kernels, the bf16
//          tensor-core peak for the WMMA kernels.
//   bytes: forward reads qkv and writes out (bf16) and lse (fp32); backward reads qkv, out, dout,
//          lse and writes dq, dk, dv (the qkv-shaped gradient) and delta (fp32).
#include "dev/cuda/bench.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_tc.cuh"

void bench_attention(Bench& b) {
  const BenchShape& s = b.shape();
  const int N = s.tokens(), QKV = s.qkv_width(), HD = s.H * s.D;
  std::vector<int> lo(N), hi(N);
  double pairs = 0;  // visible (query, key) pairs per head
  for (int r = 0; r < s.rows; r++)
    for (int t = 0; t < s.T; t++) {
      const int start = s.seg_len > 0 ? t / s.seg_len * s.seg_len : 0;
      lo[r * s.T + t] = start;
      hi[r * s.T + t] = t;
      pairs += t - start + 1;
    }
  DevBuf<int> key_lo(N), key_hi(N);
  key_lo.upload(lo);
  key_hi.upload(hi);
  DevBuf<bf16> qkv((size_t)N * QKV), att((size_t)N * HD), datt((size_t)N * HD), dqkv((size_t)N * QKV);
  DevBuf<float> lse((size_t)N * s.H), delta((size_t)N * s.H);
  qkv.random(1);
  datt.random(2, 0.1f);
  AttentionDims dims{s.T, s.T, s.H, s.KV, QKV, QKV};
  const bf16 *q = qkv.p, *k = qkv.p + HD, *v = qkv.p + HD + s.KV * s.D;
  const std::string layout = s.seg_len > 0 ? "packed examples of " + std::to_string(s.seg_len) + " tokens"
                                           : "causal rows of " + std::to_string(s.T);
  const double fwd_bytes = 2.0 * N * QKV + 2.0 * N * HD + 4.0 * N * s.H, fwd_flops = 4.0 * s.D * s.H * pairs;
  const double bwd_bytes = 2.0 * N * QKV * 2 + 2.0 * N * HD * 2 + 4.0 * N * s.H * 2, bwd_flops = 10.0 * s.D * s.H * pairs;
  bf16 *dq = dqkv.p, *dk = dqkv.p + HD, *dv = dqkv.p + HD + s.KV * s.D;
  const std::string D = "D=" + std::to_string(s.D);
  b.run("forward " + D, fwd_bytes, fwd_flops, Roof::fp32, {out(att), out(lse)},
        [&] { attention_forward(att, lse, q, k, v, key_lo, key_hi, s.rows, dims, s.D, 0); }, layout);
  b.run("backward " + D, bwd_bytes, bwd_flops, Roof::fp32, {out(dqkv), out(delta)},
        [&] {
          attention_backward(dq, dk, dv, delta, datt, att, q, k, v, lse, key_lo, key_hi, s.rows, dims, s.D, 0);
        },
        layout);
  b.run("forward, tensor cores " + D, fwd_bytes, fwd_flops, Roof::bf16_tensor, {out(att), out(lse)},
        [&] { attention_tc_forward(att, lse, q, k, v, key_lo, key_hi, s.rows, dims, s.D, 0); }, layout);
  b.run("backward, tensor cores " + D, bwd_bytes, bwd_flops, Roof::bf16_tensor, {out(dqkv), out(delta)},
        [&] {
          attention_tc_backward(dq, dk, dv, delta, datt, att, q, k, v, lse, key_lo, key_hi, s.rows, dims, s.D, 0);
        },
        layout);
}
