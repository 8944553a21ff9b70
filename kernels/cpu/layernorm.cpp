// LayerNorm and the exact (erf) GELU, the two ops a BERT encoder needs beyond the Llama set.
//   layernorm: y = (x - mean) / sqrt(var + eps) * weight + bias, var the biased variance (as torch)
//   gelu:      y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))   (HF hidden_act "gelu")
// Both fp32, one pass over rows, rows in parallel; the mean and variance are two passes over the
// row (exact for rows whose mean dwarfs their spread, unlike E[x^2] - E[x]^2).
#include <cmath>

#include "kernels/cpu/ops.h"

void layernorm_forward(float* out, const float* x, const float* weight, const float* bias, int N, int C,
                       float eps) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; t++) {
    const float* r = x + (int64_t)t * C;
    float* o = out + (int64_t)t * C;
    float mean = 0.0f;
#pragma omp simd reduction(+ : mean)
    for (int i = 0; i < C; i++) mean += r[i];
    mean /= C;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int i = 0; i < C; i++) var += (r[i] - mean) * (r[i] - mean);
    const float rstd = 1.0f / std::sqrt(var / C + eps);
#pragma omp simd
    for (int i = 0; i < C; i++) o[i] = (r[i] - mean) * rstd * weight[i] + bias[i];
  }
}

void gelu_erf_forward(float* x, int64_t n) {
  const float inv_sqrt2 = 0.70710678118654752f;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * inv_sqrt2));
}
