// The LM head fused with softmax cross-entropy, chunked over the vocabulary so that no [N, V]
// tensor exists (V = 128256 for Llama 3 would be 1 GiB per 2048 tokens in fp32):
//   pass 1, per vocab chunk [v0, v0+Vc): logits = x W[v0:v0+Vc]^T (cuBLASLt, fp32 out), then
//           cross_entropy_chunk_stats_kernel folds the chunk into each row's running max and
//           sum of exponentials (online log-sum-exp) and picks up the target's logit;
//   cross_entropy_loss_kernel: lse = max + log(sum); loss_row = lse - logit[target].
//   pass 2 (training), per chunk: the logits are recomputed, cross_entropy_chunk_backward_kernel
//           writes dlogits = (softmax - onehot(target)) * dloss_scale in bf16, and two GEMMs
//           accumulate dx (fp32) += dlogits W_chunk and dW_chunk (fp32) += dlogits^T x.
// The loss mask is targets == -1: such rows have zero loss and zero gradient. dloss_scale is
// 1 / (target tokens in the whole optimizer batch), so micro-batches and ranks add up to the
// global mean, never a mean of means. Probabilities are never stored.
// Cost: the LM-head forward GEMM runs twice (4 GEMMs instead of 3), in exchange for O(N*Vc) memory.
//
// stats   : one block (256 threads) per row; reads 4*Vc bytes per row per chunk; fp32.
// loss    : one thread per row.
// backward: grid (N, ceil(Vc/256)), 256 threads; reads 4*N*Vc, writes 2*N*Vc bytes.
#pragma once
#include <cmath>

#include "kernels/cuda/cast.cuh"
#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/matmul.cuh"

__device__ inline float block_reduce_max(float v, float* scratch) {
  const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
  v = warp_reduce_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < (int)(blockDim.x / WARP_SIZE) ? scratch[lane] : -INFINITY;
  total = warp_reduce_max(total);
  __syncthreads();
  return total;
}

__global__ void cross_entropy_chunk_stats_kernel(float* __restrict__ row_max, float* __restrict__ row_sum,
                                                 float* __restrict__ target_logit, const float* __restrict__ logits,
                                                 const int* __restrict__ targets, int v_begin, int v_count,
                                                 int first_chunk) {
  __shared__ float scratch[32];
  const int row = blockIdx.x;
  const int target = targets[row];
  if (target < 0) return;  // masked row: the whole block leaves together
  const float* x = logits + (size_t)row * v_count;
  float local_max = -INFINITY;
  for (int v = threadIdx.x; v < v_count; v += blockDim.x) local_max = fmaxf(local_max, x[v]);
  const float chunk_max = block_reduce_max(local_max, scratch);
  float local_sum = 0.0f;
  for (int v = threadIdx.x; v < v_count; v += blockDim.x) local_sum += expf(x[v] - chunk_max);
  const float chunk_sum = block_reduce_sum(local_sum, scratch);
  if (threadIdx.x == 0) {
    if (first_chunk) {
      row_max[row] = chunk_max;
      row_sum[row] = chunk_sum;
    } else {
      const float m = fmaxf(row_max[row], chunk_max);
      row_sum[row] = row_sum[row] * expf(row_max[row] - m) + chunk_sum * expf(chunk_max - m);
      row_max[row] = m;
    }
    if (target >= v_begin && target < v_begin + v_count) target_logit[row] = x[target - v_begin];
  }
}

__global__ void cross_entropy_loss_kernel(float* __restrict__ losses, float* __restrict__ lse,
                                          const float* __restrict__ row_max, const float* __restrict__ row_sum,
                                          const float* __restrict__ target_logit, const int* __restrict__ targets,
                                          int N) {
  const int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= N) return;
  if (targets[row] < 0) {
    losses[row] = 0.0f;
    lse[row] = 0.0f;
    return;
  }
  const float l = row_max[row] + logf(row_sum[row]);
  lse[row] = l;
  losses[row] = l - target_logit[row];
}

// dlogits may alias logits (out_t = float: the CPU backend's in-place contract).
template <typename out_t>
__global__ void cross_entropy_chunk_backward_kernel(out_t* dlogits, const float* logits, const float* __restrict__ lse,
                                                    const int* __restrict__ targets, int v_begin, int v_count,
                                                    float dloss_scale) {
  const int row = blockIdx.x;
  const int v = blockIdx.y * blockDim.x + threadIdx.x;
  if (v >= v_count) return;
  const int target = targets[row];
  const size_t i = (size_t)row * v_count + v;
  float g = 0.0f;
  if (target >= 0) g = (expf(logits[i] - lse[row]) - (v_begin + v == target ? 1.0f : 0.0f)) * dloss_scale;
  dlogits[i] = (out_t)g;
}

// Compaction of the rows that carry a loss before the LM head, and the scatter of their gradient:
//   gather: dst[i] = src[idx[i]];  scatter: dst[idx[i]] = src[i]   (rows of C bf16 values).
// geometry: grid (n, ceil(C/256)), 256 threads. traffic: 4nC bytes.
__global__ void gather_rows_kernel(bf16* __restrict__ dst, const bf16* __restrict__ src, const int* __restrict__ idx,
                                   int C) {
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c < C) dst[(size_t)blockIdx.x * C + c] = src[(size_t)idx[blockIdx.x] * C + c];
}
__global__ void scatter_rows_kernel(bf16* __restrict__ dst, const bf16* __restrict__ src, const int* __restrict__ idx,
                                    int C) {
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c < C) dst[(size_t)idx[blockIdx.x] * C + c] = src[(size_t)blockIdx.x * C + c];
}

inline void gather_rows(bf16* dst, const bf16* src, const int* idx, int n, int C, cudaStream_t stream) {
  if (n == 0) return;
  LAUNCH(gather_rows_kernel, dim3(n, ceil_div(C, 256)), 256, 0, stream)(dst, src, idx, C);
  CUDA_CHECK(cudaGetLastError());
}
inline void scatter_rows(bf16* dst, const bf16* src, const int* idx, int n, int C, cudaStream_t stream) {
  if (n == 0) return;
  LAUNCH(scatter_rows_kernel, dim3(n, ceil_div(C, 256)), 256, 0, stream)(dst, src, idx, C);
  CUDA_CHECK(cudaGetLastError());
}

// One chunk of rows over the whole vocabulary (the CPU backend's contract, used by the model
// template, which chunks over tokens): logits [n, V] fp32 become (softmax - onehot) * grad_scale
// in place; losses[n] receives each row's loss (0 when masked). stats: row_max, row_sum,
// target_logit, lse scratch of n floats each.
inline void cross_entropy_rows_forward_backward(float* logits, float* losses, const int* targets, int n, int V,
                                                float grad_scale, float* row_max, float* row_sum,
                                                float* target_logit, float* lse, cudaStream_t stream) {
  if (n == 0) return;
  LAUNCH(cross_entropy_chunk_stats_kernel, n, 256, 0, stream)(row_max, row_sum, target_logit, logits, targets, 0, V, 1);
  CUDA_CHECK(cudaGetLastError());
  LAUNCH(cross_entropy_loss_kernel, ceil_div(n, 256), 256, 0, stream)(losses, lse, row_max, row_sum, target_logit,
                                                                     targets, n);
  CUDA_CHECK(cudaGetLastError());
  LAUNCH(cross_entropy_chunk_backward_kernel<float>, dim3(n, ceil_div(V, 256)), 256, 0, stream)(
      logits, logits, lse, targets, 0, V, grad_scale);
  CUDA_CHECK(cudaGetLastError());
}

// Device scratch for the fused LM head: sized from (N max, chunk, C).
struct LmHeadScratch {
  float* logits = nullptr;     // [N, chunk] fp32
  bf16* dlogits = nullptr;     // [N, chunk]
  float* row_max = nullptr;    // [N]
  float* row_sum = nullptr;    // [N]
  float* target_logit = nullptr;  // [N]
  float* lse = nullptr;        // [N]
  float* dx_f32 = nullptr;     // [N, C]
  int chunk = 0;
};

// x [N, C] bf16 (final-norm output), w [V, C] bf16. Always writes losses[N] (0 on masked rows).
// With dx != null (training) also writes dx [N, C] bf16 and accumulates dw [V, C] fp32 (+=).
inline void fused_lm_head_cross_entropy(const MatmulContext& ctx, float* losses, bf16* dx, float* dw, const bf16* x,
                                        const bf16* w, const int* targets, int N, int C, int V, float dloss_scale,
                                        const LmHeadScratch& s, cudaStream_t stream) {
  if (N == 0) return;
  for (int v0 = 0; v0 < V; v0 += s.chunk) {
    const int vc = V - v0 < s.chunk ? V - v0 : s.chunk;
    linear_forward(ctx, s.logits, true, x, w + (size_t)v0 * C, nullptr, N, C, vc, stream);
    LAUNCH(cross_entropy_chunk_stats_kernel, N, 256, 0, stream)(s.row_max, s.row_sum, s.target_logit, s.logits,
                                                               targets, v0, vc, v0 == 0);
    CUDA_CHECK(cudaGetLastError());
  }
  LAUNCH(cross_entropy_loss_kernel, ceil_div(N, 256), 256, 0, stream)(losses, s.lse, s.row_max, s.row_sum,
                                                                     s.target_logit, targets, N);
  CUDA_CHECK(cudaGetLastError());
  if (!dx) return;
  for (int v0 = 0; v0 < V; v0 += s.chunk) {
    const int vc = V - v0 < s.chunk ? V - v0 : s.chunk;
    linear_forward(ctx, s.logits, true, x, w + (size_t)v0 * C, nullptr, N, C, vc, stream);
    LAUNCH(cross_entropy_chunk_backward_kernel<bf16>, dim3(N, ceil_div(vc, 256)), 256, 0, stream)(
        s.dlogits, s.logits, s.lse, targets, v0, vc, dloss_scale);
    CUDA_CHECK(cudaGetLastError());
    linear_backward_input(ctx, s.dx_f32, true, s.dlogits, w + (size_t)v0 * C, N, C, vc, v0 > 0, stream);
    if (dw) linear_backward_weight(ctx, dw + (size_t)v0 * C, s.dlogits, x, N, C, vc, stream);
  }
  cast_f32_to_bf16(dx, s.dx_f32, (size_t)N * C, stream);
}
