// The row-major sgemm through oneDNN (the default build; `make GEMM=omp` uses sgemm_omp.cpp).
#include <dnnl.h>

#include "common/error.h"
#include "kernels/cpu/ops.h"

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc) {
  if (M == 0 || N == 0) return;
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda,
                                B, ldb, beta, C, ldc);
  check(st == dnnl_success, "sgemm: oneDNN dnnl_sgemm failed with status ", (int)st, " (M=", M,
        " N=", N, " K=", K, ")");
}
