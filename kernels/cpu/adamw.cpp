// AdamW (torch.optim.AdamW semantics) and the global gradient norm used for clipping.
//   p <- p * (1 - lr * wd)                       (decoupled weight decay)
//   m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Clipping (torch.nn.utils.clip_grad_norm_): g <- g * min(1, max_norm / (||g|| + 1e-6)); the
// caller folds that factor into grad_scale so the gradients are read once.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"

// Fixed-size blocks summed in a fixed order: the result does not depend on the thread count or
// on how OpenMP combines partial sums, so a resumed run reproduces the same clipping factor.
double sum_of_squares(const float* g, size_t n) {
  const size_t block = 1 << 16;
  const size_t nblocks = (n + block - 1) / block;
  thread_local std::vector<double> partial;
  partial.assign(nblocks, 0.0);
  double* part = partial.data();
#pragma omp parallel for schedule(static)
  for (size_t b = 0; b < nblocks; b++) {
    double s = 0.0;
    size_t end = std::min(n, (b + 1) * block);
    for (size_t i = b * block; i < end; i++) s += (double)g[i] * g[i];
    part[b] = s;
  }
  double total = 0.0;
  for (size_t b = 0; b < nblocks; b++) total += part[b];
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
