// Linear layers through the row-major sgemm (sgemm_dnnl.cpp: oneDNN, about 250 GFLOP/s on 2
// cores here, against about 40 for Debian's OpenBLAS on this CPU; or sgemm_omp.cpp with
// `make GEMM=omp`, for machines without oneDNN).
//
// torch.nn.Linear convention: W is [OC, IC] and y = x W^T (+ b). Then
//   dx = dy W          ([N,OC] x [OC,IC])
//   dW += dy^T x       ([OC,N] x [N,IC])
//   db += sum_t dy[t]
#include <omp.h>

#include <vector>

#include "common/error.h"
#include "kernels/cpu/ops.h"

static void add_bias_rows(float* out, const float* bias, int N, int OC) {
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; t++) {
    float* o = out + (int64_t)t * OC;
#pragma omp simd
    for (int c = 0; c < OC; c++) o[c] += bias[c];
  }
}

void matmul_forward(float* out, const float* x, const float* weight, const float* bias, int N,
                    int IC, int OC, bool accumulate) {
  sgemm(false, true, N, OC, IC, 1.0f, x, IC, weight, IC, accumulate ? 1.0f : 0.0f, out, OC);
  if (bias) add_bias_rows(out, bias, N, OC);
}

void matmul_forward_transposed(float* out, const float* x, const float* weight_t, const float* bias, int N,
                               int IC, int OC, bool accumulate) {
  sgemm(false, false, N, OC, IC, 1.0f, x, IC, weight_t, OC, accumulate ? 1.0f : 0.0f, out, OC);
  if (bias) add_bias_rows(out, bias, N, OC);
}

void matmul_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, int N, int IC, int OC, bool accumulate_dx) {
  if (dx) sgemm(false, false, N, IC, OC, 1.0f, dout, OC, weight, IC, accumulate_dx ? 1.0f : 0.0f, dx, IC);
  sgemm(true, false, OC, IC, N, 1.0f, dout, OC, x, IC, 1.0f, dweight, IC);
  if (dbias) {
    // Column sums; threads own disjoint column ranges and walk tokens in order (deterministic).
#pragma omp parallel
    {
      int nth = omp_get_num_threads(), tid = omp_get_thread_num();
      int c0 = (int)((int64_t)OC * tid / nth), c1 = (int)((int64_t)OC * (tid + 1) / nth);
      for (int t = 0; t < N; t++) {
        const float* g = dout + (int64_t)t * OC;
#pragma omp simd
        for (int c = c0; c < c1; c++) dbias[c] += g[c];
      }
    }
  }
}

void fill_zero(float* x, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) x[i] = 0.0f;
}

void gather_rows(float* dst, const float* src, const int32_t* idx, int n, int C) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++)
    for (int c = 0; c < C; c++) dst[(int64_t)i * C + c] = src[(int64_t)idx[i] * C + c];
}

void scatter_rows(float* dst, const float* src, const int32_t* idx, int n, int C) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; i++)
    for (int c = 0; c < C; c++) dst[(int64_t)idx[i] * C + c] = src[(int64_t)i * C + c];
}
