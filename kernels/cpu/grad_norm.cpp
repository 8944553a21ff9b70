// The global gradient norm used for clipping (torch.nn.utils.clip_grad_norm_):
// g <- g * min(1, max_norm / (||g|| + 1e-6)); the caller folds that factor into adamw_update's
// grad_scale so the gradients are read once.
#include <algorithm>
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
