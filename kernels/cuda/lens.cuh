// Logit-lens statistics of fp32 logit rows, on the device, so that only three numbers per row
// leave the GPU instead of the row (eval/layer_lens.h).
//
// lens_stats_kernel: one block of 256 threads per row of V fp32 logits, with the row's gold token.
//   pass 1: max and argmax (ties to the lowest index, as greedy decoding), block tree reduction;
//   pass 2: sum of exp(x - max) (fp32, fixed-order block reduction) and the gold rank: tokens with
//           a larger logit, or an equal one and a lower index.
//   out: prob = exp(gold - max) / sum, rank, top1 = argmax.
//   traffic: reads the row twice, 8 V bytes (the second pass mostly from L2); writes 12 bytes.
//   precision: fp32 throughout (the CPU op sums in double; relative difference ~1e-6).
#pragma once
#include <cmath>

#include "kernels/cuda/cuda_utils.cuh"

constexpr int LENS_THREADS = 256;

__global__ void __launch_bounds__(LENS_THREADS) lens_stats_kernel(float* __restrict__ prob, int* __restrict__ rank,
                                                                  int* __restrict__ top1,
                                                                  const float* __restrict__ logits,
                                                                  const int* __restrict__ gold, int V) {
  __shared__ float best_s[LENS_THREADS];
  __shared__ int index_s[LENS_THREADS];
  __shared__ float scratch[32];
  const float* x = logits + (size_t)blockIdx.x * V;
  block_argmax(x, V, best_s, index_s);
  const float mx = best_s[0];
  const int g_index = gold[blockIdx.x];
  const float g = x[g_index];
  float sum = 0.0f, above = 0.0f;  // the count as a float: exact below 2^24 tokens
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    sum += expf(x[v] - mx);
    above += (x[v] > g || (x[v] == g && v < g_index)) ? 1.0f : 0.0f;
  }
  sum = block_reduce_sum(sum, scratch);
  above = block_reduce_sum(above, scratch);
  if (threadIdx.x == 0) {
    prob[blockIdx.x] = expf(g - mx) / sum;
    rank[blockIdx.x] = (int)above;
    top1[blockIdx.x] = index_s[0];
  }
}

// n rows of logits [n, V] with their gold tokens [n] -> prob, rank, top1 [n] (device memory).
inline void lens_stats(float* prob, int* rank, int* top1, const float* logits, const int* gold, int n, int V,
                       cudaStream_t stream) {
  if (n == 0) return;
  LAUNCH(lens_stats_kernel, n, LENS_THREADS, 0, stream)(prob, rank, top1, logits, gold, V);
  CUDA_CHECK(cudaGetLastError());
}
