// Small device helpers shared by the kernels in kernels/cuda/: the bf16 type, warp and block
// reductions, ceil_div. Every reduction here has a fixed order, so results are bit-reproducible
// run to run (no float atomics anywhere in the training kernels).
#pragma once
#include "kernels/cuda/cuda_common.cuh"

#include <cmath>
#include <cstddef>
#include <cstdint>

typedef __nv_bfloat16 bf16;

// `#pragma unroll` for nvcc; g++ (the emulator build) does not know it and would warn.
#if defined(__CUDACC__)
#define UNROLL _Pragma("unroll")
#else
#define UNROLL
#endif

constexpr int WARP_SIZE = 32;
constexpr unsigned FULL_MASK = 0xffffffffu;

__host__ __device__ inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
__host__ __device__ inline size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float warp_reduce_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(FULL_MASK, v, offset);
  return v;
}
__device__ __forceinline__ float warp_reduce_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
  return v;
}

// Max and argmax of x[0, V) over the whole block: each thread scans a strided slice, then a
// shared-memory tree merges the blockDim.x partial results (blockDim.x a power of two). Ties go to
// the lowest index, as torch.argmax and greedy decoding. `value_s` and `index_s` are blockDim.x
// entries of shared memory; on return every thread may read the max from value_s[0] and the index
// from index_s[0] (V when no element compares greater than -inf, e.g. an all-NaN row).
__device__ inline void block_argmax(const float* __restrict__ x, int V, float* value_s, int* index_s) {
  float best = -INFINITY;
  int best_index = V;  // sentinel larger than any index
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    if (x[v] > best) {  // strict: a thread's lowest index wins its ties
      best = x[v];
      best_index = v;
    }
  value_s[threadIdx.x] = best;
  index_s[threadIdx.x] = best_index;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if ((int)threadIdx.x < stride) {
      const float other = value_s[threadIdx.x + stride];
      const int other_index = index_s[threadIdx.x + stride];
      if (other > value_s[threadIdx.x] || (other == value_s[threadIdx.x] && other_index < index_s[threadIdx.x])) {
        value_s[threadIdx.x] = other;
        index_s[threadIdx.x] = other_index;
      }
    }
    __syncthreads();
  }
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` is 32 floats of shared memory; the two barriers make it reusable right after.
__device__ inline float block_reduce_sum(float v, float* scratch) {
  const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
  const int num_warps = blockDim.x / WARP_SIZE;
  v = warp_reduce_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < num_warps ? scratch[lane] : 0.0f;
  total = warp_reduce_sum(total);
  __syncthreads();
  return total;
}

