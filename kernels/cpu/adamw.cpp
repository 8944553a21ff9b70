// AdamW (torch.optim.AdamW semantics):
//   p <- p * (1 - lr * wd)                       (decoupled weight decay)
//   m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// with g = grads * grad_scale (grad_scale carries the clipping factor, grad_norm.cpp).
//
// Precision: fp32, every rounding written out. Four products are fused with the sum that
// follows them (std::fma, one rounding): 1 - lr wd, b1 m + ..., b2 v + ...,
// sqrt(v) * inv_sqrt_bc2 + eps; every other operation rounds on its own (the weight decay
// product p * decay in particular).
// These are the roundings the CPU backend's results (checkpoints, docs/results) are made with.
// The Makefile compiles this file with
//   -ffp-contract=off: the compiler fuses nothing by itself, so the bits do not depend on how
//                      it would contract a scalar or a vector loop (nor on the target having FMA:
//                      without FMA units std::fma is the exact libm call, slower, same bits);
//   -fno-math-errno:   std::sqrt needs no errno branch, so the loop vectorizes (AVX-512: 16
//                      values per instruction under -march=native).
// Vector sqrt, division and fma round correctly like their scalar forms, so the result is the
// same bit for bit whatever the vector width, thread count or chunking (the op is elementwise).
// Traffic: reads p, g, m, v and writes p, m, v: 28 B per value; one AVX-512 core runs it near
// memory bandwidth (docs/performance.md).
#include <cmath>

#include "kernels/cpu/ops.h"

void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int step,
                  float grad_scale) {
  double bc1 = 1.0 - std::pow((double)beta1, step);
  double bc2 = 1.0 - std::pow((double)beta2, step);
  float step_size = (float)(lr / bc1);
  float inv_sqrt_bc2 = (float)(1.0 / std::sqrt(bc2));
  float decay = std::fma(-lr, weight_decay, 1.0f);
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) {
    float g = grads[i] * grad_scale;
    float mi = std::fma(beta1, m[i], (1.0f - beta1) * g);
    float vi = std::fma(beta2, v[i], (1.0f - beta2) * g * g);
    m[i] = mi;
    v[i] = vi;
    float denom = std::fma(std::sqrt(vi), inv_sqrt_bc2, eps);
    params[i] = params[i] * decay - step_size * mi / denom;
  }
}
