// SwiGLU MLP activation: h = silu(g) * u, silu(g) = g * sigmoid(g).
//   dh/du = silu(g)
//   dh/dg = u * sigmoid(g) * (1 + g * (1 - sigmoid(g)))
#include <cmath>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

void swiglu_forward(float* out, const float* gate_up, int N, int I) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; t++) {
    const float* g = gate_up + (int64_t)t * 2 * I;
    const float* u = g + I;
    float* o = out + (int64_t)t * I;
#pragma omp simd
    for (int i = 0; i < I; i++) {
      float s = 1.0f / (1.0f + exp_fast(-g[i]));
      o[i] = g[i] * s * u[i];
    }
  }
}

void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int N, int I) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; t++) {
    const float* g = gate_up + (int64_t)t * 2 * I;
    const float* u = g + I;
    const float* d = dout + (int64_t)t * I;
    float* dg = dgate_up + (int64_t)t * 2 * I;
    float* du = dg + I;
#pragma omp simd
    for (int i = 0; i < I; i++) {
      float s = 1.0f / (1.0f + exp_fast(-g[i]));
      du[i] = d[i] * g[i] * s;
      dg[i] = d[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
  }
}
