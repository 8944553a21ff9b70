// Global gradient norm and the clipping factor, deterministically (fixed block -> element map,
// partial sums reduced in a fixed order; no float atomics):
//   norm  = sqrt(sum_i g_i^2) over the flat fp32 gradient buffer,
//   scale = min(1, max_norm / (norm + 1e-6))  (torch.nn.utils.clip_grad_norm_; 1 if max_norm <= 0),
//           computed in double from the fp32 norm exactly as the host does (model/adamw.h
//           clip_scale), so a device-side clip gives the host path's bits.
// Both stay on the device (norm_and_scale[0..1]); AdamW reads the scale from there, or computes it
// itself from the partial sums (adamw.cuh, the fused step), so clipping needs no host round trip.
// geometry: global_norm_squared_kernel: GLOBAL_NORM_BLOCKS blocks of 256, grid-stride;
//           global_norm_finalize_kernel: 1 warp (norm_and_clip_scale).
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

// The norm and the clipping factor from the GLOBAL_NORM_BLOCKS partial sums, by one whole warp in a
// fixed order (lane l adds partials l, l + 32, ...; then an xor butterfly, which leaves the same
// bits in every lane): every warp that calls it gets the same result, so the finalize kernel and
// each warp of the fused AdamW kernel agree exactly.
__device__ __forceinline__ void norm_and_clip_scale(const float* __restrict__ partial, float max_norm, float* norm,
                                                    float* scale) {
  float sum = 0.0f;
  for (int i = threadIdx.x % WARP_SIZE; i < GLOBAL_NORM_BLOCKS; i += WARP_SIZE) sum += partial[i];
  sum = warp_reduce_sum(sum);
  *norm = sqrtf(sum);
  *scale = max_norm > 0.0f ? (float)fmin(1.0, (double)max_norm / ((double)*norm + 1e-6)) : 1.0f;
}

__global__ void global_norm_finalize_kernel(float* __restrict__ norm_and_scale, const float* __restrict__ partial,
                                            float max_norm) {
  float norm, scale;
  norm_and_clip_scale(partial, max_norm, &norm, &scale);
  if (threadIdx.x == 0) {
    norm_and_scale[0] = norm;
    norm_and_scale[1] = scale;
  }
}

// The partial sums of squares only (scratch: GLOBAL_NORM_BLOCKS floats), for the fused AdamW step.
inline void global_norm_partials(float* scratch, const float* grads, size_t n, cudaStream_t stream) {
  LAUNCH(global_norm_squared_kernel, GLOBAL_NORM_BLOCKS, 256, 0, stream)(scratch, grads, n);
  CUDA_CHECK(cudaGetLastError());
}

// scratch: GLOBAL_NORM_BLOCKS floats.
inline void global_norm(float* norm_and_scale, float* scratch, const float* grads, size_t n, float max_norm,
                        cudaStream_t stream) {
  global_norm_partials(scratch, grads, n, stream);
  LAUNCH(global_norm_finalize_kernel, 1, WARP_SIZE, 0, stream)(norm_and_scale, scratch, max_norm);
  CUDA_CHECK(cudaGetLastError());
}
