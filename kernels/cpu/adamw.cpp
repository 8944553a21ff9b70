// AdamW (torch.optim.AdamW semantics) and the global gradient norm used for clipping.
//   p <- p * (1 - lr * wd)                       (decoupled weight decay)
//   m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Clipping (torch.nn.utils.clip_grad_norm_): g <- g * min(1, max_norm / (||g|| + 1e-6)); the
// caller folds that factor into grad_scale so the gradients are read once.
#include <cmath>

#include "kernels/cpu/ops.h"

double sum_of_squares(const float* g, size_t n) {
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (size_t i = 0; i < n; i++) total += (double)g[i] * g[i];
  return total;
}

void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int step,
                  float grad_scale) {
  double bc1 = 1.0 - std::pow((double)beta1, step);
  double bc2 = 1.0 - std::pow((double)beta2, step);
  float step_size = (float)(lr / bc1);
  float inv_sqrt_bc2 = (float)(1.0 / std::sqrt(bc2));
  float decay = 1.0f - lr * weight_decay;
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) {
    float g = grads[i] * grad_scale;
    float mi = beta1 * m[i] + (1.0f - beta1) * g;
    float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = params[i] * decay;
    params[i] = p - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}
