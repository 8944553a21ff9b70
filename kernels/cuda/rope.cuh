// Rotary position embedding in Hugging Face's rotate-half convention, applied in place to the q
// and k heads of the fused qkv activation [N, (H + 2*KV) * D] (q heads first, then k, then v).
// For each head vector x and i < D/2, with angle = position * inv_freq[i]:
//   forward : y[i] = x[i] cos - x[i+D/2] sin,   y[i+D/2] = x[i+D/2] cos + x[i] sin
//   backward: the transpose rotation (sin -> -sin), applied to the gradient in place.
// inv_freq[D/2] is computed on the host in fp32, including llama3 scaling (rope_inv_freq below),
// exactly as HF does; cos/sin are evaluated in fp32 with the accurate sincosf (positions reach
// 10^5, where the fast __sincosf loses digits). Positions are per token (packed rows restart at 0).
//
// geometry: one thread per (token, rotated head, pair i); 256 threads/block, 1-D grid.
// traffic : reads and writes 2 * N * (H+KV) * D bytes (bf16) + 4N positions; compute fp32.
#pragma once
#include <cmath>
#include <vector>

#include "kernels/cuda/cuda_utils.cuh"

// direction: +1 forward, -1 backward (inverse rotation).
__global__ void rope_kernel(bf16* qkv, const int* __restrict__ positions, const float* __restrict__ inv_freq, int N,
                            int rotated_heads, int row_stride, int D, float direction) {
  const int half = D / 2;
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * rotated_heads * half) return;
  const int i = (int)(idx % half);
  const int head = (int)((idx / half) % rotated_heads);
  const int t = (int)(idx / ((size_t)half * rotated_heads));
  float s, c;
  sincosf((float)positions[t] * inv_freq[i], &s, &c);
  s *= direction;
  bf16* x = qkv + (size_t)t * row_stride + (size_t)head * D;
  const float x1 = __bfloat162float(x[i]), x2 = __bfloat162float(x[i + half]);
  x[i] = __float2bfloat16(x1 * c - x2 * s);
  x[i + half] = __float2bfloat16(x2 * c + x1 * s);
}

// HF's inverse frequencies: theta^(-2i/D), then llama3 scaling when factor/low/high are given:
// wavelengths longer than original/low_freq_factor are divided by factor, shorter than
// original/high_freq_factor are kept, and the band between is interpolated smoothly.
inline std::vector<float> rope_inv_freq(int D, float theta, bool llama3, float factor, float low_freq_factor,
                                        float high_freq_factor, int original_max_positions) {
  std::vector<float> inv(D / 2);
  for (int i = 0; i < D / 2; i++) inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)D);
  if (!llama3) return inv;
  const float low_wavelen = original_max_positions / low_freq_factor;
  const float high_wavelen = original_max_positions / high_freq_factor;
  for (float& f : inv) {
    const float wavelen = 2.0f * (float)M_PI / f;
    if (wavelen > low_wavelen) {
      f = f / factor;
    } else if (wavelen >= high_wavelen) {
      const float smooth = (original_max_positions / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      f = (1.0f - smooth) * f / factor + smooth * f;
    }
  }
  return inv;
}

inline void rope_apply(bf16* qkv, const int* positions, const float* inv_freq, int N, int rotated_heads,
                       int row_stride, int D, bool backward, cudaStream_t stream) {
  const size_t n = (size_t)N * rotated_heads * (D / 2);
  if (n == 0) return;
  LAUNCH(rope_kernel, (unsigned)ceil_div(n, (size_t)256), 256, 0, stream)(
      qkv, positions, inv_freq, N, rotated_heads, row_stride, D, backward ? -1.0f : 1.0f);
  CUDA_CHECK(cudaGetLastError());
}
