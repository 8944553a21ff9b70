// RMSNorm fused with the residual add (pre-norm Llama block):
//   residual_out = residual_in + delta            (delta may be null; with residual_out null too,
//                                                  it is a plain RMSNorm of residual_in)
//   normed       = residual_out * rstd * weight,   rstd = 1 / sqrt(mean(residual_out^2) + eps)
// The residual stream and the normed output are bf16; the statistics are fp32 and rstd is saved
// for the backward. The norm reads the *stored* (bf16-rounded) residual, so forward and backward
// see the same x.
//
// Forward  geometry: one warp per row, 256 threads (8 rows) per block, grid = ceil(N/8).
//          traffic : reads 2NC (residual) + 2NC (delta) + 2C, writes 2NC + 2NC + 4N bytes.
// Backward: dx = rstd * (w*dy - x * rstd^2 * mean(w*dy*x)), and the residual gradient is fused:
//          dresidual_out = dresidual_in + dx. dweight = sum over rows of dy * x * rstd, reduced
//          deterministically: each block owns a fixed set of rows and accumulates its partial sums
//          in shared memory (each thread owns channels tid, tid+256, ...), then
//          rmsnorm_dweight_reduce_kernel sums the block partials in block order.
//          geometry: grid = min(N, 256) blocks of 256 threads, C*4 bytes of dynamic smem;
//                    reduce: ceil(C/256) blocks of 256.
//          traffic : reads 2NC (dy) + 2NC (x) + 2NC (dresidual_in) + 4N, writes 2NC + 4*grid*C.
#pragma once
#include "kernels/cuda/cuda_utils.cuh"

__global__ void fused_residual_rmsnorm_forward_kernel(bf16* residual_out, bf16* __restrict__ normed,
                                                      float* __restrict__ rstd_out, const bf16* residual_in,
                                                      const bf16* __restrict__ delta,
                                                      const bf16* __restrict__ weight, int N, int C, float eps) {
  const int lane = threadIdx.x % WARP_SIZE;
  const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
  if (row >= N) return;
  const bf16* in = residual_in + (size_t)row * C;
  bf16* res = residual_out ? residual_out + (size_t)row * C : nullptr;
  const bf16* d = delta ? delta + (size_t)row * C : nullptr;
  float sum_squares = 0.0f;
  for (int c = lane; c < C; c += WARP_SIZE) {
    float x = __bfloat162float(in[c]);
    if (d) x += __bfloat162float(d[c]);
    const bf16 xr = __float2bfloat16(x);
    if (res) res[c] = xr;
    const float xf = __bfloat162float(xr);
    sum_squares += xf * xf;
  }
  sum_squares = warp_reduce_sum(sum_squares);
  const float rstd = rsqrtf(sum_squares / C + eps);
  if (lane == 0) rstd_out[row] = rstd;
  bf16* out = normed + (size_t)row * C;
  const bf16* x = res ? res : in;  // the stored residual (bf16) is what the backward will read
  for (int c = lane; c < C; c += WARP_SIZE)
    out[c] = __float2bfloat16(__bfloat162float(x[c]) * rstd * __bfloat162float(weight[c]));
}

__global__ void rmsnorm_backward_kernel(bf16* dresidual_out, float* __restrict__ dweight_partial,
                                        const bf16* dresidual_in, const bf16* __restrict__ dnormed,
                                        const bf16* __restrict__ input, const bf16* __restrict__ weight,
                                        const float* __restrict__ rstd, int N, int C) {
  DYNAMIC_SMEM(float, dweight_acc);  // [C]
  __shared__ float scratch[32];
  for (int c = threadIdx.x; c < C; c += blockDim.x) dweight_acc[c] = 0.0f;
  for (int row = blockIdx.x; row < N; row += gridDim.x) {
    const bf16* dy = dnormed + (size_t)row * C;
    const bf16* x = input + (size_t)row * C;
    const float r = rstd[row];
    float dot = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
      dot += __bfloat162float(weight[c]) * __bfloat162float(dy[c]) * __bfloat162float(x[c]);
    dot = block_reduce_sum(dot, scratch);
    const float mean_term = dot * r * r / C;
    const bf16* dres_in = dresidual_in ? dresidual_in + (size_t)row * C : nullptr;
    bf16* dres_out = dresidual_out + (size_t)row * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float dyc = __bfloat162float(dy[c]), xc = __bfloat162float(x[c]);
      float dx = r * (__bfloat162float(weight[c]) * dyc - xc * mean_term);
      if (dres_in) dx += __bfloat162float(dres_in[c]);
      dres_out[c] = __float2bfloat16(dx);
      dweight_acc[c] += dyc * xc * r;
    }
  }
  float* partial = dweight_partial + (size_t)blockIdx.x * C;
  for (int c = threadIdx.x; c < C; c += blockDim.x) partial[c] = dweight_acc[c];
}

__global__ void rmsnorm_dweight_reduce_kernel(float* __restrict__ dweight, const float* __restrict__ dweight_partial,
                                              int num_partials, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sum = 0.0f;
  for (int p = 0; p < num_partials; p++) sum += dweight_partial[(size_t)p * C + c];
  dweight[c] += sum;
}

inline void fused_residual_rmsnorm_forward(bf16* residual_out, bf16* normed, float* rstd, const bf16* residual_in,
                                           const bf16* delta, const bf16* weight, int N, int C, float eps,
                                           cudaStream_t stream) {
  if (N == 0) return;
  LAUNCH(fused_residual_rmsnorm_forward_kernel, ceil_div(N, 8), 256, 0, stream)(
      residual_out, normed, rstd, residual_in, delta, weight, N, C, eps);
  CUDA_CHECK(cudaGetLastError());
}

inline int rmsnorm_backward_blocks(int N) { return N < 256 ? (N > 0 ? N : 1) : 256; }
// scratch: rmsnorm_backward_blocks(N) * C floats. dweight (fp32) is accumulated into (+=).
inline void rmsnorm_backward(bf16* dresidual_out, float* dweight, float* scratch, const bf16* dresidual_in,
                             const bf16* dnormed, const bf16* input, const bf16* weight, const float* rstd, int N,
                             int C, cudaStream_t stream) {
  if (N == 0) return;
  const int blocks = rmsnorm_backward_blocks(N);
  LAUNCH(rmsnorm_backward_kernel, blocks, 256, C * sizeof(float), stream)(
      dresidual_out, scratch, dresidual_in, dnormed, input, weight, rstd, N, C);
  CUDA_CHECK(cudaGetLastError());
  LAUNCH(rmsnorm_dweight_reduce_kernel, ceil_div(C, 256), 256, 0, stream)(dweight, scratch, blocks, C);
  CUDA_CHECK(cudaGetLastError());
}
