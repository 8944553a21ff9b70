// Token embedding lookup and its gradient (a scatter-add into the table rows).
#include <cstring>

#include <omp.h>

#include "kernels/cpu/ops.h"

void embedding_forward(float* out, const int32_t* tokens, const float* table, const float* add,
                       int N, int C) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; t++) {
    const float* row = table + (int64_t)tokens[t] * C;
    float* o = out + (int64_t)t * C;
    if (add) {
      const float* a = add + (int64_t)t * C;
      for (int c = 0; c < C; c++) o[c] = row[c] + a[c];
    } else {
      std::memcpy(o, row, sizeof(float) * C);
    }
  }
}

// The same token may appear many times, so threads split the columns, not the tokens: every
// thread walks all tokens in order, which keeps the sum order (and the result) deterministic.
void embedding_backward(float* dtable, const int32_t* tokens, const float* dout, int N, int C) {
#pragma omp parallel
  {
    int nth = 1, tid = 0;
#ifdef _OPENMP
    nth = omp_get_num_threads();
    tid = omp_get_thread_num();
#endif
    int c0 = (int)((int64_t)C * tid / nth), c1 = (int)((int64_t)C * (tid + 1) / nth);
    for (int t = 0; t < N; t++) {
      float* d = dtable + (int64_t)tokens[t] * C;
      const float* g = dout + (int64_t)t * C;
      for (int c = c0; c < c1; c++) d[c] += g[c];
    }
  }
}
