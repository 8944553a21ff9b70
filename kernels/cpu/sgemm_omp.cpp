// The row-major sgemm without oneDNN (`make GEMM=omp`): OpenMP threads plus the compiler's
// vectorizer, for machines where oneDNN is not installed (the CPU reference side on a bare GPU
// machine, see docs/cuda.md "GPU readiness"). About a fifth of oneDNN's speed; exact fp32.
//
// C[M,N] = alpha op(A)[M,K] op(B)[K,N] + beta C. Every C element is a dot product of a row of
// op(A) and a column of op(B), so op(A) is read as rows of K floats and op(B) as its transpose
// Bt[N,K]; an operand whose storage already has that form is read in place, the other is packed
// once (transposed copy) per call. The work is cut into 64 x 64 tiles of C (one OpenMP task
// each) and K into 256-float slices that stay in L1/L2; inside, a 4 x 4 register tile of dot
// products reuses each loaded element four times, and `omp simd` vectorizes the K loop.
// Determinism: each C element is computed by one thread in a fixed order of slices, so results
// do not depend on the thread count. Called inside a parallel region (the CPU attention calls
// it per block from its own threads) it runs on the calling thread.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "kernels/cpu/ops.h"

namespace {

constexpr int64_t kTile = 64, kSlice = 256;

// acc[i][j] = sum_k a_i[k] b_j[k] for a 4 x 4 tile; rows of a and b are `lda`/`ldb` apart.
inline void dot_4x4(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t n, float acc[4][4]) {
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
  const float *b0 = b, *b1 = b + ldb, *b2 = b + 2 * ldb, *b3 = b + 3 * ldb;
  float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
#pragma omp simd reduction(+ : c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33)
  for (int64_t k = 0; k < n; k++) {
    const float x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
    const float y0 = b0[k], y1 = b1[k], y2 = b2[k], y3 = b3[k];
    c00 += x0 * y0; c01 += x0 * y1; c02 += x0 * y2; c03 += x0 * y3;
    c10 += x1 * y0; c11 += x1 * y1; c12 += x1 * y2; c13 += x1 * y3;
    c20 += x2 * y0; c21 += x2 * y1; c22 += x2 * y2; c23 += x2 * y3;
    c30 += x3 * y0; c31 += x3 * y1; c32 += x3 * y2; c33 += x3 * y3;
  }
  const float r[4][4] = {{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}};
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) acc[i][j] = r[i][j];
}

inline float dot_1x1(const float* a, const float* b, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < n; k++) s += a[k] * b[k];
  return s;
}

// Transposed copy: dst[c * rows + r] = src[r * ld + c] for a rows x cols source.
void transpose(std::vector<float>& dst, const float* src, int64_t ld, int64_t rows, int64_t cols) {
  dst.resize((size_t)(rows * cols));
  const bool par = !omp_in_parallel() && rows * cols > (1 << 16);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t c0 = 0; c0 < cols; c0 += 32)
    for (int64_t r0 = 0; r0 < rows; r0 += 32)
      for (int64_t c = c0; c < std::min(cols, c0 + 32); c++)
        for (int64_t r = r0; r < std::min(rows, r0 + 32); r++) dst[(size_t)(c * rows + r)] = src[r * ld + c];
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc) {
  if (M == 0 || N == 0) return;
  // op(A) as rows of K (stride ar), op(B) as Bt rows of K (stride br).
  thread_local std::vector<float> a_pack, b_pack;
  const float* a = A;
  int64_t ar = lda;
  if (trans_a) {  // A is [K, M]
    transpose(a_pack, A, lda, K, M);
    a = a_pack.data(), ar = K;
  }
  const float* bt = B;
  int64_t br = ldb;
  if (!trans_b) {  // B is [K, N]
    transpose(b_pack, B, ldb, K, N);
    bt = b_pack.data(), br = K;
  }
  const int64_t mt = (M + kTile - 1) / kTile, nt = (N + kTile - 1) / kTile;
  const bool par = !omp_in_parallel() && M * N * K > (1 << 18);
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (par)
  for (int64_t ti = 0; ti < mt; ti++)
    for (int64_t tj = 0; tj < nt; tj++) {
      const int64_t i0 = ti * kTile, i1 = std::min(M, i0 + kTile), j0 = tj * kTile, j1 = std::min(N, j0 + kTile);
      float acc[kTile][kTile];  // the tile's dot products, summed over K slices in order
      for (int64_t i = 0; i < i1 - i0; i++)
        for (int64_t j = 0; j < j1 - j0; j++) acc[i][j] = 0.0f;
      for (int64_t k0 = 0; k0 < K; k0 += kSlice) {
        const int64_t kn = std::min(kSlice, K - k0);
        int64_t i = i0;
        for (; i + 4 <= i1; i += 4) {
          int64_t j = j0;
          for (; j + 4 <= j1; j += 4) {
            float r[4][4];
            dot_4x4(a + i * ar + k0, ar, bt + j * br + k0, br, kn, r);
            for (int u = 0; u < 4; u++)
              for (int w = 0; w < 4; w++) acc[i - i0 + u][j - j0 + w] += r[u][w];
          }
          for (; j < j1; j++)
            for (int u = 0; u < 4; u++) acc[i - i0 + u][j - j0] += dot_1x1(a + (i + u) * ar + k0, bt + j * br + k0, kn);
        }
        for (; i < i1; i++)
          for (int64_t j = j0; j < j1; j++) acc[i - i0][j - j0] += dot_1x1(a + i * ar + k0, bt + j * br + k0, kn);
      }
      for (int64_t i = i0; i < i1; i++) {
        float* c = C + i * ldc;
        for (int64_t j = j0; j < j1; j++)
          c[j] = beta == 0.0f ? alpha * acc[i - i0][j - j0] : alpha * acc[i - i0][j - j0] + beta * c[j];
      }
    }
}
