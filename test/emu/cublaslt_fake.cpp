// CUDA emulation: a CPU fake of the cuBLASLt subset the project calls, with the exact signatures of
// <cublasLt.h>.
//
// Semantics, as documented for cublasLtMatmul (column-major throughout):
//   D = alpha * op(A) @ op(B) + beta * C, then the epilogue,
// where op(A) is m x k, op(B) is k x n, C and D are m x n, element (i, j) of a matrix with leading
// dimension ld is at [i + j * ld], and batch b starts at b * (strided batch offset) elements.
// Layouts give the stored (pre-transpose) rows and cols: A is m x k when TRANSA = N, k x m when T.
// Inputs are fp32, bf16 or fp16; products accumulate in fp32 (CUBLAS_COMPUTE_32F and its FAST
// variants); alpha and beta are fp32; C is not read when beta == 0. Epilogues: DEFAULT, RELU,
// BIAS, RELU_BIAS, GELU, GELU_BIAS, GELU_AUX, GELU_AUX_BIAS (tanh GELU), BGRADA, BGRADB.
// Bias is a vector of m (or, for BGRADB, n) elements of the bias data type (default: D's type).
// A descriptor mismatch returns CUBLAS_STATUS_INVALID_VALUE, an unsupported option
// CUBLAS_STATUS_NOT_SUPPORTED; an operand that overruns its cudaMalloc buffer throws KernelError.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "test/emu/emu_internal.h"

namespace {

struct FakeHandle {
  int magic = 0x4c74;
};
struct FakeDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  cublasOperation_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int bias_type = -1;  // -1: same as D
  int64_t bias_batch_stride = 0;
  void* aux = nullptr;
  int64_t aux_ld = 0;
  int64_t aux_batch_stride = 0;
};
struct FakeLayout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
  int32_t batch = 1;
  int64_t stride = 0;
  int32_t order = CUBLASLT_ORDER_COL;
};
struct FakePreference {
  uint64_t max_workspace = 0;
};

template <class T>
T* as(void* p) {
  return reinterpret_cast<T*>(p);
}

size_t type_size(int type) {
  switch (type) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16BF: return 2;
    case CUDA_R_16F: return 2;
    default: return 0;
  }
}
float load(const void* p, int type, size_t i) {
  switch (type) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case CUDA_R_16F: return __half2float(static_cast<const __half*>(p)[i]);
  }
  return NAN;
}
void store(void* p, int type, size_t i, float v) {
  switch (type) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = v; break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case CUDA_R_16F: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
  }
}

float gelu_tanh(float x) {
  const float s = std::sqrt(2.0f / (float)M_PI);
  return 0.5f * x * (1.0f + std::tanh(s * (x + 0.044715f * x * x * x)));
}

// Bytes spanned by a (batched) column-major matrix: the last element's offset plus one.
size_t extent_bytes(const FakeLayout& l) {
  if (l.rows == 0 || l.cols == 0) return 0;
  size_t last = (size_t)(l.batch - 1) * (size_t)l.stride + (l.cols - 1) * (size_t)l.ld + l.rows;
  return last * type_size(l.type);
}

struct Problem {
  uint64_t m, n, k;
  int batch;
};

// Checks every descriptor against the others; returns CUBLAS_STATUS_SUCCESS and the sizes.
cublasStatus_t validate(const FakeDesc* d, const FakeLayout* a, const FakeLayout* b,
                        const FakeLayout* c, const FakeLayout* dd, Problem* p) {
  if (!d || !a || !b || !c || !dd) return CUBLAS_STATUS_INVALID_VALUE;
  for (const FakeLayout* l : {a, b, c, dd}) {
    if (type_size(l->type) == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (l->order != CUBLASLT_ORDER_COL) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (l->ld < (int64_t)std::max<uint64_t>(1, l->rows)) return CUBLAS_STATUS_INVALID_VALUE;
    if (l->batch < 1 || l->stride < 0) return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (d->scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  switch (d->compute) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_PEDANTIC: break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const bool ta = d->transa == CUBLAS_OP_T, tb = d->transb == CUBLAS_OP_T;
  if ((d->transa != CUBLAS_OP_N && !ta) || (d->transb != CUBLAS_OP_N && !tb))
    return CUBLAS_STATUS_NOT_SUPPORTED;  // conjugate transposes are for complex types
  p->m = dd->rows;
  p->n = dd->cols;
  p->k = ta ? a->rows : a->cols;
  const uint64_t a_m = ta ? a->cols : a->rows;
  const uint64_t b_k = tb ? b->cols : b->rows, b_n = tb ? b->rows : b->cols;
  if (a_m != p->m || b_k != p->k || b_n != p->n) return CUBLAS_STATUS_INVALID_VALUE;
  if (c->rows != p->m || c->cols != p->n || c->type != dd->type) return CUBLAS_STATUS_INVALID_VALUE;
  if (a->batch != dd->batch || b->batch != dd->batch || c->batch != dd->batch)
    return CUBLAS_STATUS_INVALID_VALUE;
  p->batch = dd->batch;
  switch (d->epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT:
    case CUBLASLT_EPILOGUE_RELU:
    case CUBLASLT_EPILOGUE_GELU:
    case CUBLASLT_EPILOGUE_GELU_AUX:
      break;
    case CUBLASLT_EPILOGUE_BIAS:
    case CUBLASLT_EPILOGUE_RELU_BIAS:
    case CUBLASLT_EPILOGUE_GELU_BIAS:
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
    case CUBLASLT_EPILOGUE_BGRADA:
    case CUBLASLT_EPILOGUE_BGRADB:
      if (!d->bias) return CUBLAS_STATUS_INVALID_VALUE;
      break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  const bool aux = d->epilogue == CUBLASLT_EPILOGUE_GELU_AUX ||
                   d->epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  if (aux && (!d->aux || d->aux_ld < (int64_t)p->m)) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

using emu::KernelError;

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = reinterpret_cast<cublasLtHandle_t>(new FakeHandle());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete reinterpret_cast<FakeHandle*>(handle);
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}
const char* cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    default: return "unknown cuBLAS status";
  }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  auto* d = new FakeDesc();
  d->compute = compute;
  d->scale = scale;
  *desc = reinterpret_cast<cublasLtMatmulDesc_t>(d);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete reinterpret_cast<FakeDesc*>(desc);
  return CUBLAS_STATUS_SUCCESS;
}

template <class T>
static cublasStatus_t read_attr(T* out, const void* buf, size_t size) {
  if (!buf || size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(static_cast<void*>(out), buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  FakeDesc* d = reinterpret_cast<FakeDesc*>(desc);
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return read_attr(&d->transa, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return read_attr(&d->transb, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return read_attr(&d->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return read_attr(&d->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return read_attr(&d->bias_type, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: return read_attr(&d->bias_batch_stride, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return read_attr(&d->aux, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return read_attr(&d->aux_ld, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
      return read_attr(&d->aux_batch_stride, buf, size);
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return read_attr(&d->compute, buf, size);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return read_attr(&d->scale, buf, size);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: {
      int32_t mode;
      cublasStatus_t st = read_attr(&mode, buf, size);
      if (st != CUBLAS_STATUS_SUCCESS) return st;
      // Host and device pointers are the same memory here; vector alpha modes are not faked.
      return mode == CUBLASLT_POINTER_MODE_HOST || mode == CUBLASLT_POINTER_MODE_DEVICE
                 ? CUBLAS_STATUS_SUCCESS
                 : CUBLAS_STATUS_NOT_SUPPORTED;
    }
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
  auto* l = new FakeLayout();
  l->type = type;
  l->rows = rows;
  l->cols = cols;
  l->ld = ld;
  *layout = reinterpret_cast<cublasLtMatrixLayout_t>(l);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete reinterpret_cast<FakeLayout*>(layout);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
  FakeLayout* l = reinterpret_cast<FakeLayout*>(layout);
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return read_attr(&l->batch, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return read_attr(&l->stride, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return read_attr(&l->order, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_TYPE: {
      uint32_t t = 0;
      cublasStatus_t st = read_attr(&t, buf, size);
      l->type = (cudaDataType)t;
      return st;
    }
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return read_attr(&l->rows, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_COLS: return read_attr(&l->cols, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_LD: return read_attr(&l->ld, buf, size);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(new FakePreference());
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete reinterpret_cast<FakePreference*>(pref);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t size) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  FakePreference* p = reinterpret_cast<FakePreference*>(pref);
  if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) return read_attr(&p->max_workspace, buf, size);
  return CUBLAS_STATUS_SUCCESS;  // other search hints do not change the fake's single algorithm
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a,
    cublasLtMatrixLayout_t b, cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
    cublasLtMatmulPreference_t pref, int requested, cublasLtMatmulHeuristicResult_t results[],
    int* returned) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!pref || !results || !returned || requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
  Problem p;
  cublasStatus_t st = validate(as<FakeDesc>(desc), as<FakeLayout>(a), as<FakeLayout>(b),
                               as<FakeLayout>(c), as<FakeLayout>(d), &p);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  std::memset(static_cast<void*>(&results[0]), 0, sizeof(results[0]));
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                              const void* alpha_ptr, const void* A, cublasLtMatrixLayout_t a_desc,
                              const void* B, cublasLtMatrixLayout_t b_desc, const void* beta_ptr,
                              const void* C, cublasLtMatrixLayout_t c_desc, void* D,
                              cublasLtMatrixLayout_t d_desc, const cublasLtMatmulAlgo_t*, void*,
                              size_t, cudaStream_t) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  const FakeDesc* d = as<FakeDesc>(desc);
  const FakeLayout *la = as<FakeLayout>(a_desc), *lb = as<FakeLayout>(b_desc),
                   *lc = as<FakeLayout>(c_desc), *ld = as<FakeLayout>(d_desc);
  Problem p;
  cublasStatus_t st = validate(d, la, lb, lc, ld, &p);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  if (!alpha_ptr || !beta_ptr || !D || (p.k > 0 && (!A || !B))) return CUBLAS_STATUS_INVALID_VALUE;
  const float alpha = *static_cast<const float*>(alpha_ptr);
  const float beta = *static_cast<const float*>(beta_ptr);
  if (beta != 0.0f && !C) return CUBLAS_STATUS_INVALID_VALUE;

  // Every operand must fit in its buffer (a wrong ld or batch stride is a classic overrun).
  emu::check_device_range("cublasLtMatmul", A, extent_bytes(*la), "A");
  emu::check_device_range("cublasLtMatmul", B, extent_bytes(*lb), "B");
  if (beta != 0.0f) emu::check_device_range("cublasLtMatmul", C, extent_bytes(*lc), "C");
  emu::check_device_range("cublasLtMatmul", D, extent_bytes(*ld), "D");

  const cublasLtEpilogue_t ep = d->epilogue;
  const bool has_bias = ep == CUBLASLT_EPILOGUE_BIAS || ep == CUBLASLT_EPILOGUE_RELU_BIAS ||
                        ep == CUBLASLT_EPILOGUE_GELU_BIAS || ep == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool relu = ep == CUBLASLT_EPILOGUE_RELU || ep == CUBLASLT_EPILOGUE_RELU_BIAS;
  const bool gelu = ep == CUBLASLT_EPILOGUE_GELU || ep == CUBLASLT_EPILOGUE_GELU_BIAS ||
                    ep == CUBLASLT_EPILOGUE_GELU_AUX || ep == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const bool aux = ep == CUBLASLT_EPILOGUE_GELU_AUX || ep == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
  const int bias_type = d->bias_type >= 0 ? d->bias_type : (int)ld->type;
  const bool ta = d->transa == CUBLAS_OP_T, tb = d->transb == CUBLAS_OP_T;
  const uint64_t m = p.m, n = p.n, k = p.k;
  const size_t es_a = type_size(la->type), es_b = type_size(lb->type), es_c = type_size(lc->type),
               es_d = type_size(ld->type);

  // op(A) row i and op(B) column j as contiguous fp32 vectors of length k. Work is split over the
  // emulator's threads (idle OpenMP threads would spin between the many small calls of a test).
  const int64_t grain_rows = std::max<int64_t>(1, (int64_t)(65536 / std::max<uint64_t>(1, k)));
  std::vector<float> opa(m * k), opb(n * k);
  for (int batch = 0; batch < p.batch; batch++) {
    const char* a = static_cast<const char*>(A) + batch * la->stride * es_a;
    const char* b = static_cast<const char*>(B) + batch * lb->stride * es_b;
    const char* c = beta != 0.0f ? static_cast<const char*>(C) + batch * lc->stride * es_c : nullptr;
    char* dd = static_cast<char*>(D) + batch * ld->stride * es_d;
    emu::parallel_for((int64_t)m, grain_rows, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; i++)
        for (uint64_t kk = 0; kk < k; kk++)
          opa[i * k + kk] =
              ta ? load(a, la->type, kk + i * la->ld) : load(a, la->type, i + kk * la->ld);
    });
    emu::parallel_for((int64_t)n, grain_rows, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi; j++)
        for (uint64_t kk = 0; kk < k; kk++)
          opb[j * k + kk] =
              tb ? load(b, lb->type, j + kk * lb->ld) : load(b, lb->type, kk + j * lb->ld);
    });

    if (ep == CUBLASLT_EPILOGUE_BGRADA || ep == CUBLASLT_EPILOGUE_BGRADB) {
      // Bias gradient: sum of op(A) over k (one per row of D) or of op(B) over k (one per column).
      const bool rows = ep == CUBLASLT_EPILOGUE_BGRADA;
      const std::vector<float>& src = rows ? opa : opb;
      const uint64_t len = rows ? m : n;
      void* bias = const_cast<void*>(d->bias);
      char* out = static_cast<char*>(bias) + batch * d->bias_batch_stride * type_size(bias_type);
      emu::check_device_range("cublasLtMatmul", out, len * type_size(bias_type), "bias gradient");
      for (uint64_t r = 0; r < len; r++) {
        float s = 0.0f;
        for (uint64_t kk = 0; kk < k; kk++) s += src[r * k + kk];
        store(out, bias_type, r, s);
      }
    }
    const char* bias = has_bias ? static_cast<const char*>(d->bias) +
                                      batch * d->bias_batch_stride * type_size(bias_type)
                                : nullptr;
    if (has_bias) emu::check_device_range("cublasLtMatmul", bias, m * type_size(bias_type), "bias");
    char* aux_out = aux ? static_cast<char*>(d->aux) + batch * d->aux_batch_stride * es_d : nullptr;

    const int64_t grain_cols =
        std::max<int64_t>(1, (int64_t)(65536 / std::max<uint64_t>(1, m * std::max<uint64_t>(1, k))));
    emu::parallel_for((int64_t)n, grain_cols, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; j++) {
      for (uint64_t i = 0; i < m; i++) {
        const float* x = &opa[i * k];
        const float* y = &opb[j * k];
        float acc = 0.0f;
        for (uint64_t kk = 0; kk < k; kk++) acc += x[kk] * y[kk];
        float v = alpha * acc;
        if (beta != 0.0f) v += beta * load(c, lc->type, i + j * lc->ld);
        if (has_bias) v += load(bias, bias_type, i);
        if (aux) store(aux_out, ld->type, i + j * d->aux_ld, v);
        if (relu) v = v > 0.0f ? v : 0.0f;
        if (gelu) v = gelu_tanh(v);
        store(dd, ld->type, i + j * ld->ld, v);
      }
    }
    });
  }
  const std::string damage = emu::check_guard_zones();
  if (!damage.empty()) throw KernelError("emu: cublasLtMatmul: " + damage);
  return CUBLAS_STATUS_SUCCESS;
}
