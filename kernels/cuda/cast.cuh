// dtype casts between the fp32 master copies and the bf16 working copies.
//   geometry: 1-D grid-stride, 256 threads/block, grid = min(ceil(n/256), 4096) blocks.
//   traffic : f32->bf16 reads 4n and writes 2n bytes; bf16->f32 reads 2n and writes 4n.
//   precision: f32->bf16 rounds to nearest even (__float2bfloat16); bf16->f32 is exact.
#pragma once
#include "kernels/cuda/cuda_utils.cuh"

__global__ void cast_f32_to_bf16_kernel(bf16* __restrict__ out, const float* __restrict__ in, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}

__global__ void cast_bf16_to_f32_kernel(float* __restrict__ out, const bf16* __restrict__ in, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

inline int elementwise_grid(size_t n, int block) {
  size_t g = ceil_div(n, (size_t)block);
  return (int)(g < 4096 ? (g > 0 ? g : 1) : 4096);
}

inline void cast_f32_to_bf16(bf16* out, const float* in, size_t n, cudaStream_t stream) {
  LAUNCH(cast_f32_to_bf16_kernel, elementwise_grid(n, 256), 256, 0, stream)(out, in, n);
  CUDA_CHECK(cudaGetLastError());
}
inline void cast_bf16_to_f32(float* out, const bf16* in, size_t n, cudaStream_t stream) {
  LAUNCH(cast_bf16_to_f32_kernel, elementwise_grid(n, 256), 256, 0, stream)(out, in, n);
  CUDA_CHECK(cudaGetLastError());
}
