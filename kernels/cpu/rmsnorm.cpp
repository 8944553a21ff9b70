// RMSNorm (Llama): y = x * rstd * w with rstd = 1/sqrt(mean(x^2) + eps).
//
// Backward, per token with g = dy * w:
//   dx = rstd * g - x * rstd^3 * (1/C) * sum_c(g_c * x_c)
//   dw += dy * x * rstd (summed over tokens)
#include <cmath>
#include <vector>

#include <omp.h>

#include "kernels/cpu/ops.h"

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int N, int C,
                     float eps) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; t++) {
    const float* xt = x + (int64_t)t * C;
    float* ot = out + (int64_t)t * C;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += xt[c] * xt[c];
    float r = 1.0f / std::sqrt(ss / C + eps);
    rstd[t] = r;
#pragma omp simd
    for (int c = 0; c < C; c++) ot[c] = xt[c] * r * weight[c];
  }
}

// dweight needs a sum over tokens: each thread sums its tokens into a private row, and the rows
// are added in thread order at the end (deterministic for a fixed thread count).
void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x,
                      const float* weight, const float* rstd, int N, int C) {
  int nth = omp_get_max_threads();
  thread_local std::vector<float> partial;  // grows once, then reused: no per-step allocation
  partial.assign((size_t)nth * C, 0.0f);
  float* partial_base = partial.data();  // the calling thread's buffer, shared with the team
#pragma omp parallel num_threads(nth)
  {
    float* dw = partial_base + (size_t)omp_get_thread_num() * C;
#pragma omp for schedule(static)
    for (int t = 0; t < N; t++) {
      const float* xt = x + (int64_t)t * C;
      const float* gt = dout + (int64_t)t * C;
      float* dxt = dx + (int64_t)t * C;
      float r = rstd[t];
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int c = 0; c < C; c++) dot += gt[c] * weight[c] * xt[c];
      float k = dot * r * r * r / C;
#pragma omp simd
      for (int c = 0; c < C; c++) {
        dxt[c] += r * gt[c] * weight[c] - k * xt[c];
        dw[c] += gt[c] * xt[c] * r;
      }
    }
  }
  for (int i = 0; i < nth; i++)
    for (int c = 0; c < C; c++) dweight[c] += partial[(size_t)i * C + c];
}
