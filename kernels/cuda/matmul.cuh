// Matmuls through cuBLASLt: bf16 inputs, fp32 compute (CUBLAS_COMPUTE_32F), bf16 or fp32 output,
// an optional bias epilogue, and a workspace for the heuristics' split-K/stream-K algorithms.
// Under CUDA_EMULATION the same calls go to the cuBLASLt fake in test/emu/.
//
// cuBLASLt is column-major; our tensors are row-major. A row-major [R, C] matrix is a column-major
// [C, R] matrix with leading dimension C, so every row-major product is computed as its
// transpose. The three products of a linear layer y = x W^T + b (x [N, I], W [O, I], y [N, O]):
//   forward        y^T  [O x N] = (W as I x O)^T (x as I x N)          m=O, n=N, k=I, A transposed
//   input grad     dx^T [I x N] = (W as I x O)   (dy as O x N)         m=I, n=N, k=O
//   weight grad    dW^T [I x O] = (x as I x N)   (dy as O x N)^T       m=I, n=O, k=N, B transposed,
//                  accumulated in fp32 (beta = 1) so micro-batches add up without rounding.
// The bias gradient is a column sum of dy (bias_backward_kernel, deterministic, fp32).
#pragma once
#include "kernels/cuda/cuda_utils.cuh"

struct MatmulContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

constexpr size_t MATMUL_WORKSPACE_BYTES = 32u << 20;  // 32 MiB: what Hopper's heuristics ask for

inline void matmul_context_create(MatmulContext& ctx) {
  CUBLAS_CHECK(cublasLtCreate(&ctx.handle));
  ctx.workspace_bytes = MATMUL_WORKSPACE_BYTES;
  CUDA_CHECK(cudaMalloc(&ctx.workspace, ctx.workspace_bytes));
}
inline void matmul_context_destroy(MatmulContext& ctx) {
  if (ctx.workspace) CUDA_CHECK(cudaFree(ctx.workspace));
  if (ctx.handle) CUBLAS_CHECK(cublasLtDestroy(ctx.handle));
  ctx = MatmulContext{};
}

// Column-major D[m x n] = alpha * op(A) op(B) + beta * D (+ bias[m] on every column when bias is
// given). A and B are bf16; D is bf16 or fp32 (d_type); bias has D's type.
inline void matmul_lt(const MatmulContext& ctx, void* d, cudaDataType_t d_type, const bf16* a, bool trans_a, int lda,
                      const bf16* b, bool trans_b, int ldb, const void* bias, int m, int n, int k, int ldd,
                      float alpha, float beta, cudaStream_t stream) {
  cublasLtMatmulDesc_t desc;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  if (bias) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  cublasLtMatrixLayout_t layout_a, layout_b, layout_d;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_a, CUDA_R_16BF, trans_a ? k : m, trans_a ? m : k, lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_b, CUDA_R_16BF, trans_b ? n : k, trans_b ? k : n, ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout_d, d_type, m, n, ldd));
  cublasLtMatmulPreference_t preference;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &ctx.workspace_bytes, sizeof(ctx.workspace_bytes)));
  cublasLtMatmulHeuristicResult_t heuristic;
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.handle, desc, layout_a, layout_b, layout_d, layout_d, preference, 1,
                                              &heuristic, &found));
  if (found == 0) {
    fprintf(stderr, "matmul_lt: no cuBLASLt algorithm for m=%d n=%d k=%d\n", m, n, k);
    abort();
  }
  CUBLAS_CHECK(cublasLtMatmul(ctx.handle, desc, &alpha, a, layout_a, b, layout_b, &beta, d, layout_d, d, layout_d,
                              &heuristic.algo, ctx.workspace, ctx.workspace_bytes, stream));
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(layout_a));
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(layout_b));
  CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(layout_d));
  CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
}

// y[N, O] (=, or += with accumulate) x[N, I] W[O, I]^T (+ bias[O]); y is bf16 (or fp32 with
// out_f32, e.g. logits; then bias must be null).
inline void linear_forward(const MatmulContext& ctx, void* y, bool out_f32, const bf16* x, const bf16* w,
                           const bf16* bias, int N, int I, int O, cudaStream_t stream, bool accumulate = false) {
  matmul_lt(ctx, y, out_f32 ? CUDA_R_32F : CUDA_R_16BF, w, true, I, x, false, I, bias, O, N, I, O, 1.0f,
            accumulate ? 1.0f : 0.0f, stream);
}
// dx[N, I] (=, or += with accumulate) = dy[N, O] W[O, I]; dx bf16, or fp32 with out_f32.
inline void linear_backward_input(const MatmulContext& ctx, void* dx, bool out_f32, const bf16* dy, const bf16* w,
                                  int N, int I, int O, bool accumulate, cudaStream_t stream) {
  matmul_lt(ctx, dx, out_f32 ? CUDA_R_32F : CUDA_R_16BF, w, false, I, dy, false, O, nullptr, I, N, O, I, 1.0f,
            accumulate ? 1.0f : 0.0f, stream);
}
// dW[O, I] += dy[N, O]^T x[N, I], in fp32.
inline void linear_backward_weight(const MatmulContext& ctx, float* dw, const bf16* dy, const bf16* x, int N, int I,
                                   int O, cudaStream_t stream) {
  matmul_lt(ctx, dw, CUDA_R_32F, x, false, I, dy, true, O, nullptr, I, O, N, I, 1.0f, 1.0f, stream);
}

// dbias[o] += sum_n dy[n, o]. geometry: ceil(O/256) blocks of 256, one thread per column
// walking the rows in order (coalesced across the warp). traffic: reads 2NO, writes 4O bytes.
__global__ void bias_backward_kernel(float* __restrict__ dbias, const bf16* __restrict__ dy, int N, int O) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= O) return;
  float sum = 0.0f;
  for (int n = 0; n < N; n++) sum += __bfloat162float(dy[(size_t)n * O + o]);
  dbias[o] += sum;
}
inline void bias_backward(float* dbias, const bf16* dy, int N, int O, cudaStream_t stream) {
  if (O == 0) return;
  LAUNCH(bias_backward_kernel, ceil_div(O, 256), 256, 0, stream)(dbias, dy, N, O);
  CUDA_CHECK(cudaGetLastError());
}
