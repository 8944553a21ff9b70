// Global gradient norm and the clipping factor, deterministically (fixed block -> element map,
// partial sums reduced in block order; no float atomics):
//   norm  = sqrt(sum_i g_i^2) over the flat fp32 gradient buffer,
//   scale = min(1, max_norm / (norm + 1e-6))  (torch.nn.utils.clip_grad_norm_; 1 if max_norm <= 0).
// Both stay on the device (norm_and_scale[0..1]); AdamW reads the scale from there, so clipping
// needs no host round trip.
// geometry: global_norm_squared_kernel: GLOBAL_NORM_BLOCKS blocks of 256, grid-stride;
//           global_norm_finalize_kernel: 1 block of 256.
// traffic : reads 4n bytes once. Precision: fp32 per-thread sums, fp32 tree reduction.
#pragma once
#include "kernels/cuda/cuda_utils.cuh"

constexpr int GLOBAL_NORM_BLOCKS = 512;

__global__ void global_norm_squared_kernel(float* __restrict__ partial, const float* __restrict__ g, size_t n) {
  __shared__ float scratch[32];
  float sum = 0.0f;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    sum += g[i] * g[i];
  sum = block_reduce_sum(sum, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void global_norm_finalize_kernel(float* __restrict__ norm_and_scale, const float* __restrict__ partial,
                                            int num_partials, float max_norm) {
  __shared__ float scratch[32];
  float sum = 0.0f;
  for (int i = threadIdx.x; i < num_partials; i += blockDim.x) sum += partial[i];
  sum = block_reduce_sum(sum, scratch);
  if (threadIdx.x == 0) {
    const float norm = sqrtf(sum);
    norm_and_scale[0] = norm;
    norm_and_scale[1] = max_norm > 0.0f ? fminf(1.0f, max_norm / (norm + 1e-6f)) : 1.0f;
  }
}

// scratch: GLOBAL_NORM_BLOCKS floats.
inline void global_norm(float* norm_and_scale, float* scratch, const float* grads, size_t n, float max_norm,
                        cudaStream_t stream) {
  LAUNCH(global_norm_squared_kernel, GLOBAL_NORM_BLOCKS, 256, 0, stream)(scratch, grads, n);
  CUDA_CHECK(cudaGetLastError());
  LAUNCH(global_norm_finalize_kernel, 1, 256, 0, stream)(norm_and_scale, scratch, GLOBAL_NORM_BLOCKS, max_norm);
  CUDA_CHECK(cudaGetLastError());
}
