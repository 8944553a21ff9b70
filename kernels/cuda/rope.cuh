// Rotary position embedding in Hugging Face's rotate-half convention, in place on `heads`
// consecutive heads of D values at the start of each token's row (row stride `ld` elements); the
// training path rotates the H q heads and KV k heads of the fused qkv row in one launch.
// For a head vector x, i < D/2 and the token's position p:
//   forward : y[i] = x[i] cos - x[i+D/2] sin,   y[i+D/2] = x[i+D/2] cos + x[i] sin
//   backward: the transpose rotation (sin -> -sin), applied to the gradient in place.
// cos/sin come from the fp32 tables [max_pos, D/2] that the host builds once with the CPU
// backend's rope_inv_freq/rope_tables (llama3 scaling included), so both backends rotate by
// bit-identical angles.
// geometry: one thread per (token, head, pair i); 256 threads/block, 1-D grid.
// traffic : reads and writes 2 * N * heads * D bytes (bf16), reads 4 * N * D bytes of tables
//           (L2-resident); fp32 math.
#pragma once
#include "kernels/cuda/cuda_utils.cuh"

__global__ void rope_kernel(bf16* x, const int* __restrict__ positions, const float* __restrict__ cos_table,
                            const float* __restrict__ sin_table, int N, int heads, int D, long long ld,
                            float direction) {
  const int half = D / 2;
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * heads * half) return;
  const int i = (int)(idx % half);
  const int head = (int)((idx / half) % heads);
  const size_t t = idx / ((size_t)half * heads);
  const size_t table = (size_t)positions[t] * half + i;
  const float c = cos_table[table], s = sin_table[table] * direction;
  bf16* h = x + t * ld + (size_t)head * D;
  const float x1 = __bfloat162float(h[i]), x2 = __bfloat162float(h[i + half]);
  h[i] = __float2bfloat16(x1 * c - x2 * s);
  h[i + half] = __float2bfloat16(x2 * c + x1 * s);
}

inline void rope_apply(bf16* x, const int* positions, const float* cos_table, const float* sin_table, int N,
                       int heads, int D, long long ld, bool backward, cudaStream_t stream) {
  const size_t n = (size_t)N * heads * (D / 2);
  if (n == 0) return;
  LAUNCH(rope_kernel, (unsigned)ceil_div(n, (size_t)256), 256, 0, stream)(
      x, positions, cos_table, sin_table, N, heads, D, ld, backward ? -1.0f : 1.0f);
  CUDA_CHECK(cudaGetLastError());
}
