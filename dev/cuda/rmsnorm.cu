// RMSNorm fused with the residual add, forward and backward (kernels/cuda/rmsnorm.cuh), over the
// N x C residual stream. Memory-bound; bytes as the kernel file states them:
//   forward : reads residual_in, delta (2NC each) and the weight, writes residual_out, normed
//             (2NC each) and rstd (4N).
//   backward: reads dresidual_in, dnormed, x (2NC each) and rstd, writes dresidual_out (2NC) and
//             the per-block dweight partials (4 x blocks x C), which a second kernel reduces.
#include "dev/cuda/bench.h"
#include "kernels/cuda/rmsnorm.cuh"

void bench_rmsnorm(Bench& b) {
  const BenchShape& s = b.shape();
  const int N = s.tokens(), C = s.C;
  const size_t NC = (size_t)N * C;
  DevBuf<bf16> res_in(NC), delta(NC), res_out(NC), normed(NC), w(C), dres_in(NC), dnormed(NC), dres_out(NC);
  DevBuf<float> rstd(N), dw(C), scratch((size_t)rmsnorm_backward_blocks(N) * C);
  res_in.random(1);
  delta.random(2, 0.5f);
  w.random(3, 0.2f, 1.0f);
  dres_in.random(4, 0.1f);
  dnormed.random(5, 0.1f);
  b.run("residual + norm forward", 8.0 * NC + 2.0 * C + 4.0 * N, 0, Roof::memory, {out(res_out), out(normed), out(rstd)},
        [&] { fused_residual_rmsnorm_forward(res_out, normed, rstd, res_in, delta, w, N, C, 1e-5f, 0); });
  dw.zero();
  const int blocks = rmsnorm_backward_blocks(N);
  b.run("backward (+ residual grad)", 8.0 * NC + 4.0 * N + 8.0 * blocks * C, 0, Roof::memory,
        {out(dres_out), accumulated(dw)},
        [&] { rmsnorm_backward(dres_out, dw, scratch, dres_in, dnormed, res_out, w, rstd, N, C, 0); });
}
