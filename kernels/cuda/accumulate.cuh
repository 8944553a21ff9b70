// acc += x in fp32: the gradients of one micro-batch, reduced to their owner, added to the owner's
// accumulator (ZeRO 2 with several micro-batches per optimizer step).
//   geometry: 1-D grid-stride, 256 threads/block, grid = min(ceil(n/256), 4096) blocks.
//   traffic : reads 8n and writes 4n bytes.
//   precision: one fp32 add per element, so micro-batches add in their order.
#pragma once
#include "kernels/cuda/cast.cuh"  // elementwise_grid

__global__ void accumulate_kernel(float* __restrict__ acc, const float* __restrict__ x, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    acc[i] += x[i];
}

inline void accumulate(float* acc, const float* x, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  LAUNCH(accumulate_kernel, elementwise_grid(n, 256), 256, 0, stream)(acc, x, n);
  CUDA_CHECK(cudaGetLastError());
}
