// The CPU sgemm (kernels/cpu/sgemm_dnnl.cpp, or sgemm_omp.cpp in a `make GEMM=omp` build) against a
// float64 triple loop: every transpose combination, leading dimensions wider than the matrices,
// shapes that are not multiples of any tile, alpha/beta, beta = 0 not reading C (NaN there stays
// out), and calls from inside an OpenMP parallel region (as the CPU attention makes them).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

namespace {
// C[M,N] = alpha op(A) op(B) + beta C, row-major with leading dimensions, in float64.
void reference(bool ta, bool tb, int M, int N, int K, double alpha, const std::vector<float>& A, int lda,
               const std::vector<float>& B, int ldb, double beta, std::vector<double>& C, int ldc) {
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = 0;
      for (int k = 0; k < K; k++) s += (double)A[ta ? k * lda + i : i * lda + k] * B[tb ? j * ldb + k : k * ldb + j];
      C[i * ldc + j] = alpha * s + (beta == 0 ? 0.0 : beta * C[i * ldc + j]);
    }
}
std::vector<float> random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}
}  // namespace

TEST_CASE("sgemm matches a float64 reference for every transpose, odd shapes and leading dimensions") {
  std::mt19937 rng(3);
  struct Shape {
    int M, N, K;
  };
  for (const Shape& sh : {Shape{1, 1, 1}, Shape{7, 5, 3}, Shape{67, 130, 259}, Shape{129, 3, 515}, Shape{4, 200, 64}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (float beta : {0.0f, 0.5f}) {
          const int M = sh.M, N = sh.N, K = sh.K;
          INFO("M " << M << " N " << N << " K " << K << " ta " << ta << " tb " << tb << " beta " << beta);
          const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
          const std::vector<float> A = random((size_t)(ta ? K : M) * lda, rng), B = random((size_t)(tb ? N : K) * ldb, rng);
          std::vector<float> C = random((size_t)M * ldc, rng);
          if (beta == 0.0f)
            for (float& v : C) v = std::numeric_limits<float>::quiet_NaN();  // must not be read
          std::vector<double> ref(C.begin(), C.end());
          reference(ta, tb, M, N, K, 1.5, A, lda, B, ldb, beta, ref, ldc);
          sgemm(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          double err = 0, norm = 0;
          for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
              const double d = C[i * ldc + j] - ref[i * ldc + j];
              err += d * d;
              norm += ref[i * ldc + j] * ref[i * ldc + j];
            }
          REQUIRE(std::isfinite(err));
          REQUIRE(err <= 1e-11 * norm);  // fp32 accumulation over K <= 515 terms
        }
}

TEST_CASE("sgemm called from inside a parallel region agrees with a call outside") {
  std::mt19937 rng(4);
  const int M = 33, N = 70, K = 300;
  const std::vector<float> A = random((size_t)M * K, rng), B = random((size_t)N * K, rng);
  std::vector<float> outside((size_t)M * N);
  sgemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, outside.data(), N);
  std::vector<std::vector<float>> inside(4, std::vector<float>((size_t)M * N));
#pragma omp parallel for num_threads(4)
  for (int t = 0; t < 4; t++) sgemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, 0.0f, inside[t].data(), N);
  // (oneDNN may split K differently on one thread: equal up to fp32 summation order)
  for (int t = 0; t < 4; t++) {
    double err = 0, norm = 0;
    for (size_t i = 0; i < outside.size(); i++) {
      err += (double)(inside[t][i] - outside[i]) * (inside[t][i] - outside[i]);
      norm += (double)outside[i] * outside[i];
    }
    REQUIRE(err <= 1e-11 * norm);
  }
}
