// Token embedding: out[t, :] = table[tokens[t], :] (+ add[t, :] when add is given: room for an
// additive per-token vector such as a memory readout).
//
// Forward  geometry: grid (N, ceil(C/256)), 256 threads; thread = one channel of one token.
//          traffic : reads 2NC bytes of the table (rows gathered) (+2NC of add), writes 2NC.
//          bf16 in and out; the sum with `add` is formed in fp32 and rounded once.
// Backward: deterministic, no float atomics. The host buckets the token positions by token id
//          (a stable sort, embedding_backward_plan below) so each (token id, channel) is
//          owned by exactly one thread, which sums its positions' gradients in position order in
//          fp32 and adds the sum to the fp32 gradient (+= so micro-batches accumulate).
//          geometry: grid (unique tokens, ceil(C/256)), 256 threads.
//          traffic : reads 2NC (dout) + 4UC, writes 4UC bytes (U = unique tokens).
#pragma once
#include <algorithm>
#include <vector>

#include "kernels/cuda/cuda_utils.cuh"

__global__ void embedding_forward_kernel(bf16* __restrict__ out, const int* __restrict__ tokens,
                                         const bf16* __restrict__ table, const bf16* __restrict__ add, int C) {
  const int t = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const bf16 e = table[(size_t)tokens[t] * C + c];
  out[(size_t)t * C + c] = add ? __float2bfloat16(__bfloat162float(e) + __bfloat162float(add[(size_t)t * C + c])) : e;
}

// bucket_token[u]: the token id of bucket u; bucket_start[u]..bucket_start[u+1]: its entries in
// bucket_positions (row-major token indices in increasing order).
__global__ void embedding_backward_kernel(float* __restrict__ dtable, const bf16* __restrict__ dout,
                                          const int* __restrict__ bucket_token,
                                          const int* __restrict__ bucket_start,
                                          const int* __restrict__ bucket_positions, int C) {
  const int u = blockIdx.x;
  const int c = blockIdx.y * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float sum = 0.0f;
  for (int i = bucket_start[u]; i < bucket_start[u + 1]; i++)
    sum += __bfloat162float(dout[(size_t)bucket_positions[i] * C + c]);
  dtable[(size_t)bucket_token[u] * C + c] += sum;
}

// Host-side plan for the backward: one bucket per distinct token id, in increasing id order.
struct EmbeddingBackwardPlan {
  std::vector<int> bucket_token, bucket_start, bucket_positions;
};
inline EmbeddingBackwardPlan embedding_backward_plan(const int* tokens, int N) {
  EmbeddingBackwardPlan p;
  p.bucket_positions.resize(N);
  for (int t = 0; t < N; t++) p.bucket_positions[t] = t;
  std::stable_sort(p.bucket_positions.begin(), p.bucket_positions.end(),
                   [&](int a, int b) { return tokens[a] < tokens[b]; });  // ties keep position order
  for (int i = 0; i < N; i++) {
    const int token = tokens[p.bucket_positions[i]];
    if (i == 0 || token != tokens[p.bucket_positions[i - 1]]) {
      p.bucket_token.push_back(token);
      p.bucket_start.push_back(i);
    }
  }
  p.bucket_start.push_back(N);
  return p;
}

inline void embedding_forward(bf16* out, const int* tokens, const bf16* table, const bf16* add, int N, int C,
                              cudaStream_t stream) {
  if (N == 0) return;
  LAUNCH(embedding_forward_kernel, dim3(N, ceil_div(C, 256)), 256, 0, stream)(out, tokens, table, add, C);
  CUDA_CHECK(cudaGetLastError());
}
// The three plan arrays must already be on the device; num_buckets = bucket_token.size().
inline void embedding_backward(float* dtable, const bf16* dout, const int* bucket_token, const int* bucket_start,
                               const int* bucket_positions, int num_buckets, int C, cudaStream_t stream) {
  if (num_buckets == 0) return;
  LAUNCH(embedding_backward_kernel, dim3(num_buckets, ceil_div(C, 256)), 256, 0, stream)(
      dtable, dout, bucket_token, bucket_start, bucket_positions, C);
  CUDA_CHECK(cudaGetLastError());
}
