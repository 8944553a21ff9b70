// Cross-entropy over the whole vocabulary (kernels/cuda/cross_entropy.cuh), the training path:
// fp32 logits [n, V] (the LM head's output for a chunk of n tokens) become (softmax - onehot) x
// scale in place, with one loss per row. Memory-bound: the stats pass reads the logits, the
// backward pass reads them again and writes them: 12 n V bytes at the least the kernels move
// (a single-pass fusion could do it in 8 n V).
#include "dev/cuda/bench.h"
#include "kernels/cuda/cross_entropy.cuh"

void bench_cross_entropy(Bench& b) {
  const BenchShape& s = b.shape();
  const int n = s.ce_rows, V = s.V;
  std::vector<int> t(n);
  for (int i = 0; i < n; i++) t[i] = i % 5 == 4 ? -1 : (int)((i * 7919u) % V);  // a fifth masked
  DevBuf<int> targets(n);
  targets.upload(t);
  DevBuf<float> logits((size_t)n * V), losses(n), row_max(n), row_sum(n), target_logit(n), lse(n);
  logits.random(1, 4.0f);
  b.run("rows forward+backward, fp32 logits", 12.0 * n * V + 8.0 * n, 0, Roof::memory, {out(logits, false), out(losses)},
        [&] {
          cross_entropy_rows_forward_backward(logits, losses, targets, n, V, 1.0f / n, row_max, row_sum, target_logit,
                                              lse, 0);
        },
        "in place, " + std::to_string(n) + " rows");
}
