// The CUDA backend's KV-cache ops (LlamaModel's prefill and decoding steps): writing keys/values
// into the cache, single-token attention over it, and the argmax over the vocabulary.
//
// Cache layout per layer: k_cache, v_cache [seqs, KV, Tmax, D] bf16 (a head's keys contiguous, so
// a decode step streams them). The prefill runs the training forward on right-padded rows and
// kv_cache_write_kernel copies each real token into its sequence's cache (padding has pos < 0);
// every decoding step appends one token per running sequence (row b: sequence slot[b], position
// pos[b]) and attends over [0, pos[b]] of that sequence.
//
// kv_cache_write_kernel: one thread per (token, kv head, d); pos[token] < 0 skips the token.
//   traffic: reads and writes 4 * tokens * KV * D bytes.
// attention_decode_kernel<D>: grid (H, rows), 128 threads = 4 warps. Warp w takes keys w, w+4, ...;
//   lanes hold D/32 elements of q (pre-scaled to log2 units), a key's score is a warp sum, and
//   each warp keeps its own online softmax (m, l, o[D]); the 4 partial states are merged through
//   shared memory at the end. GQA reads kv head h / (H/KV) in place.
//   traffic: reads 4 * len * D bytes of cache per (row, q head) (L2 serves the H/KV sharers).
// argmax_kernel: one block of 256 per row; ties go to the lowest index (as torch.argmax).
#pragma once
#include <cmath>

#include "kernels/cuda/cuda_utils.cuh"

__global__ void kv_cache_write_kernel(bf16* __restrict__ k_cache, bf16* __restrict__ v_cache,
                                      const bf16* __restrict__ qkv, const int* __restrict__ slot,
                                      const int* __restrict__ dest_pos, int num_tokens, int H, int KV, int D,
                                      int Tmax) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)num_tokens * KV * D) return;
  const int d = (int)(idx % D), g = (int)((idx / D) % KV), n = (int)(idx / ((size_t)D * KV));
  const int pos = dest_pos[n];
  if (pos < 0) return;
  const int b = slot[n];
  const size_t S = (size_t)(H + 2 * KV) * D;
  const size_t dst = (((size_t)b * KV + g) * Tmax + pos) * D + d;
  k_cache[dst] = qkv[n * S + (size_t)(H + g) * D + d];
  v_cache[dst] = qkv[n * S + (size_t)(H + KV + g) * D + d];
}

constexpr int DECODE_WARPS = 4;

// qkv: [rows, (H+2KV)*D], one new token per row (RoPE applied, already written to the cache).
// Row b attends to positions [0, pos[b]] of sequence slot[b] (its new token included). out: [rows, H*D].
template <int D>
__global__ void __launch_bounds__(128) attention_decode_kernel(bf16* __restrict__ out, const bf16* __restrict__ qkv,
                                                               const bf16* __restrict__ k_cache,
                                                               const bf16* __restrict__ v_cache,
                                                               const int* __restrict__ slot,
                                                               const int* __restrict__ pos, int H, int KV,
                                                               int Tmax) {
  constexpr int DL = D / WARP_SIZE;
  __shared__ float m_s[DECODE_WARPS], l_s[DECODE_WARPS];
  __shared__ float o_s[DECODE_WARPS][D];
  const int h = blockIdx.x, b = blockIdx.y, g = h / (H / KV);
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const size_t S = (size_t)(H + 2 * KV) * D;
  const float q_scale = 1.4426950408889634f * rsqrtf((float)D);
  float q[DL], o[DL];
UNROLL
  for (int dd = 0; dd < DL; dd++) {
    q[dd] = __bfloat162float(qkv[b * S + (size_t)h * D + lane + WARP_SIZE * dd]) * q_scale;
    o[dd] = 0.0f;
  }
  const bf16* keys = k_cache + ((size_t)slot[b] * KV + g) * Tmax * D;
  const bf16* values = v_cache + ((size_t)slot[b] * KV + g) * Tmax * D;
  const int len = pos[b] + 1;
  float m = -INFINITY, l = 0.0f;
  for (int j = warp; j < len; j += DECODE_WARPS) {
    float s = 0.0f;
UNROLL
    for (int dd = 0; dd < DL; dd++) s += q[dd] * __bfloat162float(keys[(size_t)j * D + lane + WARP_SIZE * dd]);
    s = warp_reduce_sum(s);
    const float m_new = fmaxf(m, s);
    const float correction = exp2f(m - m_new), p = exp2f(s - m_new);
    l = l * correction + p;
UNROLL
    for (int dd = 0; dd < DL; dd++)
      o[dd] = o[dd] * correction + p * __bfloat162float(values[(size_t)j * D + lane + WARP_SIZE * dd]);
    m = m_new;
  }
  if (lane == 0) {
    m_s[warp] = m;
    l_s[warp] = l;
  }
UNROLL
  for (int dd = 0; dd < DL; dd++) o_s[warp][lane + WARP_SIZE * dd] = o[dd];
  __syncthreads();
  float m_all = -INFINITY;
  for (int w = 0; w < DECODE_WARPS; w++) m_all = fmaxf(m_all, m_s[w]);
  float l_all = 0.0f;
  for (int w = 0; w < DECODE_WARPS; w++) l_all += m_s[w] == -INFINITY ? 0.0f : l_s[w] * exp2f(m_s[w] - m_all);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int w = 0; w < DECODE_WARPS; w++)
      if (m_s[w] != -INFINITY) acc += o_s[w][d] * exp2f(m_s[w] - m_all);
    out[(size_t)b * H * D + (size_t)h * D + d] = __float2bfloat16(acc / l_all);
  }
}

__global__ void argmax_kernel(int* __restrict__ out, const float* __restrict__ logits, int V) {
  __shared__ float best_value_s[256];
  __shared__ int best_index_s[256];
  block_argmax(logits + (size_t)blockIdx.x * V, V, best_value_s, best_index_s);
  if (threadIdx.x == 0) out[blockIdx.x] = best_index_s[0] < V ? best_index_s[0] : 0;
}

inline void kv_cache_write(bf16* k_cache, bf16* v_cache, const bf16* qkv, const int* slot, const int* dest_pos,
                           int num_tokens, int H, int KV, int D, int Tmax, cudaStream_t stream) {
  const size_t n = (size_t)num_tokens * KV * D;
  if (n == 0) return;
  LAUNCH(kv_cache_write_kernel, (unsigned)ceil_div(n, (size_t)256), 256, 0, stream)(
      k_cache, v_cache, qkv, slot, dest_pos, num_tokens, H, KV, D, Tmax);
  CUDA_CHECK(cudaGetLastError());
}

inline void attention_decode(bf16* out, const bf16* qkv, const bf16* k_cache, const bf16* v_cache, const int* slot,
                             const int* pos, int rows, int H, int KV, int D, int Tmax, cudaStream_t stream) {
  if (rows == 0) return;
  const dim3 grid(H, rows);
  if (D == 64)
    LAUNCH(attention_decode_kernel<64>, grid, 128, 0, stream)(out, qkv, k_cache, v_cache, slot, pos, H, KV, Tmax);
  else if (D == 128)
    LAUNCH(attention_decode_kernel<128>, grid, 128, 0, stream)(out, qkv, k_cache, v_cache, slot, pos, H, KV, Tmax);
  else { fprintf(stderr, "attention_decode: head_dim %d is not supported (64 or 128)\n", D); abort(); }
  CUDA_CHECK(cudaGetLastError());
}

inline void argmax_rows(int* out, const float* logits, int rows, int V, cudaStream_t stream) {
  if (rows == 0) return;
  LAUNCH(argmax_kernel, rows, 256, 0, stream)(out, logits, V);
  CUDA_CHECK(cudaGetLastError());
}
