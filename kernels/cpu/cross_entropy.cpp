// Cross-entropy over the vocabulary, fused with its gradient. For a row with target y:
//   loss = logsumexp(z) - z[y]
//   dz   = (softmax(z) - onehot(y)) * grad_scale
// grad_scale is 1 / (target tokens of the whole optimizer batch), so micro-batch gradients add
// up to the gradient of the batch mean loss.
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

void cross_entropy_forward_backward(float* logits, const int32_t* targets, int n, int V,
                                    float grad_scale, double* loss_sum) {
  // Per-row losses, summed in row order afterwards (deterministic, unlike an OpenMP reduction).
  thread_local std::vector<double> row_loss;
  row_loss.assign(n, 0.0);
  double* losses = row_loss.data();
#pragma omp parallel for schedule(static)
  for (int t = 0; t < n; t++) {
    float* z = logits + (int64_t)t * V;
    int y = targets[t];
    if (y < 0) {
#pragma omp simd
      for (int i = 0; i < V; i++) z[i] = 0.0f;
      continue;
    }
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; i++) mx = z[i] > mx ? z[i] : mx;
    float zy = z[y];
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; i++) {
      z[i] = exp_fast(z[i] - mx);
      sum += z[i];
    }
    losses[t] = (double)std::log(sum) + (double)mx - (double)zy;
    float inv = grad_scale / sum;
#pragma omp simd
    for (int i = 0; i < V; i++) z[i] *= inv;
    z[y] -= grad_scale;
  }
  double total = 0.0;
  for (int t = 0; t < n; t++) total += losses[t];
  *loss_sum += total;
}
