// The cuBLASLt fake against a naive triple loop written from the documented column-major
// semantics: every transpose combination, leading dimensions larger than the matrices, strided
// batches, bf16/fp32 data, bias and activation epilogues, and the error paths.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"

using Catch::Matchers::Contains;

namespace {

struct Matrix {  // host copy of a batched column-major matrix, in fp32
  uint64_t rows, cols;
  int64_t ld, stride;
  int batch;
  std::vector<float> data;
  float& at(int b, uint64_t i, uint64_t j) { return data[b * stride + i + j * ld]; }
  float at(int b, uint64_t i, uint64_t j) const { return data[b * stride + i + j * ld]; }
};

Matrix random_matrix(uint64_t rows, uint64_t cols, int64_t ld, int batch, std::mt19937& rng) {
  Matrix m{rows, cols, ld, (int64_t)(ld * cols + 5), batch, {}};
  m.data.resize(m.stride * batch);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (auto& x : m.data) x = dist(rng);
  return m;
}

// Device buffer in fp32 or bf16 (values already rounded to bf16 on the host when bf16).
struct Device {
  void* ptr = nullptr;
  cudaDataType_t type;
  size_t n;
  Device(const std::vector<float>& host, cudaDataType_t t) : type(t), n(host.size()) {
    size_t es = t == CUDA_R_32F ? 4 : 2;
    CUDA_CHECK(cudaMalloc(&ptr, n * es));
    if (t == CUDA_R_32F) {
      CUDA_CHECK(cudaMemcpy(ptr, host.data(), n * 4, cudaMemcpyHostToDevice));
    } else {
      std::vector<__nv_bfloat16> h(n);
      for (size_t i = 0; i < n; i++) h[i] = __float2bfloat16(host[i]);
      CUDA_CHECK(cudaMemcpy(ptr, h.data(), n * 2, cudaMemcpyHostToDevice));
    }
  }
  ~Device() { cudaFree(ptr); }
  std::vector<float> download() const {
    std::vector<float> out(n);
    if (type == CUDA_R_32F) {
      CUDA_CHECK(cudaMemcpy(out.data(), ptr, n * 4, cudaMemcpyDeviceToHost));
    } else {
      std::vector<__nv_bfloat16> h(n);
      CUDA_CHECK(cudaMemcpy(h.data(), ptr, n * 2, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < n; i++) out[i] = __bfloat162float(h[i]);
    }
    return out;
  }
};

void round_to_bf16(std::vector<float>& v) {
  for (auto& x : v) x = __bfloat162float(__float2bfloat16(x));
}

float gelu_reference(double x) {
  return (float)(0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))));
}

struct Case {
  bool ta, tb;
  uint64_t m, n, k;
  int ld_pad, batch;
  cudaDataType_t in_type, out_type;
  cublasLtEpilogue_t epilogue;
  float alpha, beta;
};

// Runs one matmul through the fake and compares every element of D with the triple loop.
void run_case(const Case& cs, uint32_t seed) {
  std::mt19937 rng(seed);
  const uint64_t a_rows = cs.ta ? cs.k : cs.m, a_cols = cs.ta ? cs.m : cs.k;
  const uint64_t b_rows = cs.tb ? cs.n : cs.k, b_cols = cs.tb ? cs.k : cs.n;
  Matrix A = random_matrix(a_rows, a_cols, a_rows + cs.ld_pad, cs.batch, rng);
  Matrix B = random_matrix(b_rows, b_cols, b_rows + cs.ld_pad, cs.batch, rng);
  Matrix C = random_matrix(cs.m, cs.n, cs.m + cs.ld_pad, cs.batch, rng);
  Matrix D = C;  // same layout; D is overwritten, its padding must stay untouched
  for (auto& x : D.data) x = 12345.0f;
  const bool bias_epilogue = cs.epilogue == CUBLASLT_EPILOGUE_BIAS ||
                             cs.epilogue == CUBLASLT_EPILOGUE_GELU_BIAS ||
                             cs.epilogue == CUBLASLT_EPILOGUE_RELU_BIAS;
  const bool bgradb = cs.epilogue == CUBLASLT_EPILOGUE_BGRADB;
  std::vector<float> bias(bgradb ? cs.n : cs.m);
  for (auto& x : bias) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  if (cs.in_type == CUDA_R_16BF) {
    round_to_bf16(A.data);
    round_to_bf16(B.data);
  }
  if (cs.out_type == CUDA_R_16BF) {
    round_to_bf16(C.data);
    round_to_bf16(bias);
  }

  Device dA(A.data, cs.in_type), dB(B.data, cs.in_type), dC(C.data, cs.out_type),
      dD(D.data, cs.out_type), dBias(bias, cs.out_type);

  cublasLtHandle_t handle;
  CUBLAS_CHECK(cublasLtCreate(&handle));
  cublasLtMatmulDesc_t desc;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t op_a = cs.ta ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = cs.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &cs.epilogue,
                                              sizeof(cs.epilogue)));
  if (bias_epilogue || bgradb)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dBias.ptr,
                                                sizeof(dBias.ptr)));
  auto layout = [&](const Matrix& mat, cudaDataType_t type) {
    cublasLtMatrixLayout_t l;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, mat.rows, mat.cols, mat.ld));
    if (cs.batch > 1) {
      int32_t batch = cs.batch;
      int64_t stride = mat.stride;
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
                                                    sizeof(batch)));
      CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                    &stride, sizeof(stride)));
    }
    return l;
  };
  cublasLtMatrixLayout_t la = layout(A, cs.in_type), lb = layout(B, cs.in_type),
                         lc = layout(C, cs.out_type), ld = layout(D, cs.out_type);
  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t workspace = 1 << 20;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace, sizeof(workspace)));
  cublasLtMatmulHeuristicResult_t heuristic;
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, lc, ld, pref, 1, &heuristic,
                                              &found));
  REQUIRE(found == 1);
  CUBLAS_CHECK(cublasLtMatmul(handle, desc, &cs.alpha, dA.ptr, la, dB.ptr, lb, &cs.beta, dC.ptr,
                              lc, dD.ptr, ld, &heuristic.algo, nullptr, 0, 0));
  auto got = dD.download();
  auto got_bias = dBias.download();

  // The reference: D(i,j) = alpha * sum_k op(A)(i,k) op(B)(k,j) + beta * C(i,j), then epilogue.
  const float tol = cs.out_type == CUDA_R_16BF ? 1.0f / 128 : 1e-5f;
  for (int b = 0; b < cs.batch; b++) {
    for (uint64_t i = 0; i < cs.m; i++)
      for (uint64_t j = 0; j < cs.n; j++) {
        double acc = 0;
        for (uint64_t kk = 0; kk < cs.k; kk++) {
          double a = cs.ta ? A.at(b, kk, i) : A.at(b, i, kk);
          double bb = cs.tb ? B.at(b, j, kk) : B.at(b, kk, j);
          acc += a * bb;
        }
        double v = cs.alpha * acc + cs.beta * C.at(b, i, j);
        if (bias_epilogue) v += bias[i];
        if (cs.epilogue == CUBLASLT_EPILOGUE_RELU || cs.epilogue == CUBLASLT_EPILOGUE_RELU_BIAS)
          v = std::max(v, 0.0);
        if (cs.epilogue == CUBLASLT_EPILOGUE_GELU_BIAS) v = gelu_reference(v);
        INFO("batch " << b << " D(" << i << "," << j << ") ta=" << cs.ta << " tb=" << cs.tb);
        REQUIRE(std::fabs(got[b * D.stride + i + j * D.ld] - v) <= tol * (1 + std::fabs(v)));
      }
    // Padding rows (ld > m) and the gap between batches are not written.
    for (uint64_t j = 0; j < cs.n; j++)
      for (int64_t i = cs.m; i < D.ld; i++) REQUIRE(got[b * D.stride + i + j * D.ld] == 12345.0f);
  }
  if (bgradb) {  // bias gradient: column sums of op(B) over k (single batch)
    for (uint64_t j = 0; j < cs.n; j++) {
      double s = 0;
      for (uint64_t kk = 0; kk < cs.k; kk++) s += cs.tb ? B.at(0, j, kk) : B.at(0, kk, j);
      REQUIRE(std::fabs(got_bias[j] - s) <= tol * (1 + std::fabs(s)));
    }
  }
  cublasLtMatmulPreferenceDestroy(pref);
  for (auto l : {la, lb, lc, ld}) cublasLtMatrixLayoutDestroy(l);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(handle);
}

}  // namespace

TEST_CASE("cuBLASLt fake: all four transposes, padded leading dimensions, batches", "[emu]") {
  uint32_t seed = 1;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // fp32, alpha/beta, ld larger than the rows, three strided batches
      run_case({ta, tb, 13, 7, 11, 3, 3, CUDA_R_32F, CUDA_R_32F, CUBLASLT_EPILOGUE_DEFAULT, 1.5f,
                0.5f},
               seed++);
      // bf16 in and out with bias, as kernels/cuda/matmul.cuh calls it
      run_case({ta, tb, 24, 9, 40, 0, 1, CUDA_R_16BF, CUDA_R_16BF, CUBLASLT_EPILOGUE_BIAS, 1.0f,
                0.0f},
               seed++);
      // bf16 in, fp32 out, accumulate into C (beta = 1)
      run_case({ta, tb, 5, 17, 33, 1, 2, CUDA_R_16BF, CUDA_R_32F, CUBLASLT_EPILOGUE_DEFAULT, 1.0f,
                1.0f},
               seed++);
    }
}

TEST_CASE("cuBLASLt fake: epilogues", "[emu]") {
  run_case({false, true, 16, 8, 12, 2, 1, CUDA_R_32F, CUDA_R_32F, CUBLASLT_EPILOGUE_RELU, 1.0f,
            0.0f},
           100);
  run_case({true, false, 16, 8, 12, 2, 1, CUDA_R_32F, CUDA_R_32F, CUBLASLT_EPILOGUE_RELU_BIAS, 1.0f,
            0.0f},
           101);
  run_case({false, false, 16, 8, 12, 0, 1, CUDA_R_32F, CUDA_R_32F, CUBLASLT_EPILOGUE_GELU_BIAS,
            1.0f, 0.0f},
           102);
  run_case({true, true, 16, 8, 12, 0, 1, CUDA_R_32F, CUDA_R_32F, CUBLASLT_EPILOGUE_BGRADB, 1.0f,
            0.0f},
           103);
}

TEST_CASE("cuBLASLt fake: beta = 0 does not read C; mismatches and overruns are errors", "[emu]") {
  const int m = 4, n = 3, k = 2;
  std::vector<float> a(m * k, 1.0f), b(k * n, 2.0f), nan_c(m * n, NAN);
  Device dA(a, CUDA_R_32F), dB(b, CUDA_R_32F), dC(nan_c, CUDA_R_32F), dD(nan_c, CUDA_R_32F);
  cublasLtHandle_t handle;
  CUBLAS_CHECK(cublasLtCreate(&handle));
  cublasLtMatmulDesc_t desc;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasLtMatrixLayout_t la, lb, lc, bad;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, m, k, m));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, k, n, k));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&bad, CUDA_R_32F, m + 1, n, m + 1));
  const float one = 1.0f, zero = 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(handle, desc, &one, dA.ptr, la, dB.ptr, lb, &zero, dC.ptr, lc, dD.ptr,
                              lc, nullptr, nullptr, 0, 0));
  for (float v : dD.download()) REQUIRE(v == 4.0f);
  // D of the wrong shape
  REQUIRE(cublasLtMatmul(handle, desc, &one, dA.ptr, la, dB.ptr, lb, &zero, dC.ptr, lc, dD.ptr, bad,
                         nullptr, nullptr, 0, 0) == CUBLAS_STATUS_INVALID_VALUE);
  // A leading dimension smaller than the rows
  cublasLtMatrixLayout_t short_ld;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&short_ld, CUDA_R_32F, m, k, m - 1));
  REQUIRE(cublasLtMatmul(handle, desc, &one, dA.ptr, short_ld, dB.ptr, lb, &zero, dC.ptr, lc,
                         dD.ptr, lc, nullptr, nullptr, 0, 0) == CUBLAS_STATUS_INVALID_VALUE);
  // A leading dimension that runs past the end of D's buffer
  cublasLtMatrixLayout_t wide;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&wide, CUDA_R_32F, m, n, 2 * m));
  REQUIRE_THROWS_WITH(cublasLtMatmul(handle, desc, &one, dA.ptr, la, dB.ptr, lb, &zero, dC.ptr,
                                     wide, dD.ptr, wide, nullptr, nullptr, 0, 0),
                      Contains("cublasLtMatmul") && Contains("D range") &&
                          Contains("outside the 48-byte cudaMalloc buffer"));
  REQUIRE_THROWS_WITH([&] {
    CUBLAS_CHECK(cublasLtMatmul(handle, desc, &one, dA.ptr, la, dB.ptr, lb, &zero, dC.ptr, lc,
                                dD.ptr, bad, nullptr, nullptr, 0, 0));
  }(), Contains("CUBLAS_STATUS_INVALID_VALUE"));
  for (auto l : {la, lb, lc, bad, short_ld, wide}) cublasLtMatrixLayoutDestroy(l);
  cublasLtMatmulDescDestroy(desc);
  cublasLtDestroy(handle);
}
