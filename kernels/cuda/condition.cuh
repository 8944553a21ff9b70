// Memory conditioning of the decoder (Larimar), the CUDA side of kernels/cpu/condition.cpp: a
// key/value slot in front of each row's keys|values, and a per-row vector added to the token
// embeddings. All four are copies or fixed-order sums: the results equal the CPU ops' exactly
// (up to the one bf16 rounding of an fp32 input).
//
// condition_kv_forward_kernel: one thread per element of kv [rows, T+1, 2*KVD] (grid-stride, 256
//   threads). Entry 0 of a row = its fp32 slot rounded to bf16, twice (key and value); entry t+1
//   = token t's key|value columns of qkv. traffic: reads and writes 2*2*KVD bytes per entry.
// condition_kv_backward_kernel: one thread per element of d_kv: entries t+1 are copied back to
//   d_qkv's key|value columns; entry 0's key column j adds its value column j (fp32) into
//   d_slot[r, j] (the thread of the key half writes, so no two threads write one element).
// condition_embed_forward_kernel: out[i, c] = bf16(rows_src[row_of[i], c]); one thread per element.
// condition_embed_backward_kernel: one thread per (row, channel), summing its T tokens in order in
//   fp32. traffic: reads 2*rows*T*C bytes, writes 4*rows*C.
#pragma once
#include "kernels/cuda/cuda_utils.cuh"

__global__ void condition_kv_forward_kernel(bf16* __restrict__ kv, const bf16* __restrict__ qkv,
                                            const float* __restrict__ slot, int rows, int T, int KVD,
                                            long long slot_stride, long long ld_qkv, long long k_offset) {
  const size_t n = (size_t)rows * (T + 1) * 2 * KVD;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int c = (int)(i % (2 * KVD));
    const size_t e = i / (2 * KVD);
    const int j = (int)(e % (T + 1)), r = (int)(e / (T + 1));
    kv[i] = j == 0 ? __float2bfloat16(slot[r * slot_stride + c % KVD])
                   : qkv[((size_t)r * T + j - 1) * ld_qkv + k_offset + c];
  }
}

__global__ void condition_kv_backward_kernel(bf16* __restrict__ d_qkv, float* __restrict__ d_slot,
                                             const bf16* __restrict__ d_kv, int rows, int T, int KVD,
                                             long long slot_stride, long long ld_qkv, long long k_offset) {
  const size_t n = (size_t)rows * (T + 1) * 2 * KVD;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const int c = (int)(i % (2 * KVD));
    const size_t e = i / (2 * KVD);
    const int j = (int)(e % (T + 1)), r = (int)(e / (T + 1));
    if (j > 0)
      d_qkv[((size_t)r * T + j - 1) * ld_qkv + k_offset + c] = d_kv[i];
    else if (c < KVD)
      d_slot[r * slot_stride + c] = __bfloat162float(d_kv[i]) + __bfloat162float(d_kv[i + KVD]);
  }
}

__global__ void condition_embed_forward_kernel(bf16* __restrict__ out, const float* __restrict__ rows_src,
                                               const int* __restrict__ row_of, int N, int C) {
  const size_t n = (size_t)N * C;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = __float2bfloat16(rows_src[(size_t)row_of[i / C] * C + i % C]);
}

__global__ void condition_embed_backward_kernel(float* __restrict__ d_rows, const bf16* __restrict__ d_emb, int rows,
                                                int T, int C) {
  const size_t n = (size_t)rows * C;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const size_t r = i / C, c = i % C;
    float s = 0.0f;
    for (int t = 0; t < T; t++) s += __bfloat162float(d_emb[(r * T + t) * C + c]);
    d_rows[i] = s;
  }
}

inline int condition_grid(size_t n) {
  const size_t g = ceil_div(n, (size_t)256);
  return (int)(g < 4096 ? (g > 0 ? g : 1) : 4096);
}

inline void condition_kv_forward(bf16* kv, const bf16* qkv, const float* slot, int rows, int T, int KVD,
                                 long long slot_stride, long long ld_qkv, long long k_offset, cudaStream_t stream) {
  const size_t n = (size_t)rows * (T + 1) * 2 * KVD;
  if (n == 0) return;
  LAUNCH(condition_kv_forward_kernel, condition_grid(n), 256, 0, stream)(kv, qkv, slot, rows, T, KVD, slot_stride,
                                                                          ld_qkv, k_offset);
  CUDA_CHECK(cudaGetLastError());
}
inline void condition_kv_backward(bf16* d_qkv, float* d_slot, const bf16* d_kv, int rows, int T, int KVD,
                                  long long slot_stride, long long ld_qkv, long long k_offset, cudaStream_t stream) {
  const size_t n = (size_t)rows * (T + 1) * 2 * KVD;
  if (n == 0) return;
  LAUNCH(condition_kv_backward_kernel, condition_grid(n), 256, 0, stream)(d_qkv, d_slot, d_kv, rows, T, KVD,
                                                                           slot_stride, ld_qkv, k_offset);
  CUDA_CHECK(cudaGetLastError());
}
inline void condition_embed_forward(bf16* out, const float* rows_src, const int* row_of, int N, int C,
                                    cudaStream_t stream) {
  const size_t n = (size_t)N * C;
  if (n == 0) return;
  LAUNCH(condition_embed_forward_kernel, condition_grid(n), 256, 0, stream)(out, rows_src, row_of, N, C);
  CUDA_CHECK(cudaGetLastError());
}
inline void condition_embed_backward(float* d_rows, const bf16* d_emb, int rows, int T, int C, cudaStream_t stream) {
  const size_t n = (size_t)rows * C;
  if (n == 0) return;
  LAUNCH(condition_embed_backward_kernel, condition_grid(n), 256, 0, stream)(d_rows, d_emb, rows, T, C);
  CUDA_CHECK(cudaGetLastError());
}
