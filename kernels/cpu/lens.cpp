#include <cmath>

#include "kernels/cpu/ops.h"

// One row at a time (rows in parallel): max and argmax (ties to the lowest id), then the sum of
// exp(x - max) in double and the gold rank in one more pass.
void lens_stats(float* prob, int32_t* rank, int32_t* top1, const float* logits, const int32_t* gold, int n, int V) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    const float* x = logits + (size_t)i * V;
    const int32_t gi = gold[i];
    const float g = x[gi];
    float mx = x[0];
    int32_t arg = 0, above = 0;
    for (int v = 0; v < V; ++v) {
      if (x[v] > mx) {
        mx = x[v];
        arg = v;
      }
      above += x[v] > g || (x[v] == g && v < gi);
    }
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(double(x[v]) - double(mx));
    prob[i] = float(std::exp(double(g) - double(mx)) / sum);
    rank[i] = above;
    top1[i] = arg;
  }
}
