// The CUDA backend's definitions; declarations and design notes are in kernels/cuda_backend.h.
// Compiled by nvcc for the GPU build. Tests include this file under g++ -DCUDA_EMULATION to run
// the backend on the emulator.
#include "kernels/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/cuda/accumulate.cuh"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/cast.cuh"
#include "kernels/cuda/condition.cuh"
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/global_norm.cuh"
#include "kernels/cuda/lens.cuh"
#include "kernels/cuda/matmul.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/swiglu.cuh"

namespace {

enum Scratch { SCRATCH_RMSNORM = 0, SCRATCH_ATTN_DELTA, SCRATCH_CE, SCRATCH_DOUT_BF16, SCRATCH_NORM, SCRATCH_EMB_PLAN,
               SCRATCH_COUNT };

struct BackendState {
  cudaStream_t stream = 0;
  MatmulContext matmul;
  bf16* host_staging = nullptr;   // pinned, two halves of staging_n values: the host-side cast before upload
  size_t staging_n = 0;
  int staging_next = 0;
  cudaEvent_t staging_free[2] = {};  // each half's last upload
  // The offloaded optimizer's transfers (model/offload.h): a stream that does not synchronize
  // with the compute stream, the numbered events of transfer_record, and the device of the thread
  // that began them (the worker thread selects it too).
  cudaStream_t transfer = nullptr;
  cudaEvent_t compute_mark = nullptr;
  std::vector<cudaEvent_t> events;
  int device = 0;
  bool transfers_active = false;
  struct Slot {
    void* ptr = nullptr;
    size_t bytes = 0;
  } slots[SCRATCH_COUNT];
  std::vector<float> host_losses;
  std::vector<int> host_tokens;
};

BackendState& state() {
  static BackendState s;
  return s;
}
cudaStream_t stream() { return state().stream; }
const MatmulContext& matmul() {
  BackendState& s = state();
  if (!s.matmul.handle) matmul_context_create(s.matmul);
  return s.matmul;
}
template <class T>
T* scratch(Scratch slot, size_t n) {
  BackendState::Slot& s = state().slots[slot];
  const size_t bytes = n * sizeof(T) > 0 ? n * sizeof(T) : 16;
  if (bytes > s.bytes) {
    if (s.ptr) CUDA_CHECK(cudaFree(s.ptr));
    CUDA_CHECK(cudaMalloc(&s.ptr, bytes));
    s.bytes = bytes;
  }
  return static_cast<T*>(s.ptr);
}
// Host fp32 weights p [0, n) to the working copy w: rounded to bf16 on the host cores (round to
// nearest even, as cast_f32_to_bf16 does on the device) into one half of the pinned staging, once
// that half's previous upload is done, and uploaded on `st`; the chunks alternate halves, so a
// chunk's cast overlaps the previous chunk's upload.
constexpr size_t kMirrorChunk = (size_t)1 << 24;
// Event i of `events` (no timing), made together with the ones before it on first use.
cudaEvent_t numbered_event(std::vector<cudaEvent_t>& events, size_t i) {
  while (events.size() <= i) {
    events.push_back(nullptr);
    CUDA_CHECK(cudaEventCreateWithFlags(&events.back(), cudaEventDisableTiming));
  }
  return events[i];
}
void ensure_staging(size_t n) {
  BackendState& s = state();
  const size_t chunk = std::min(kMirrorChunk, std::max<size_t>(n, 1));
  if (s.staging_n >= chunk) return;
  for (cudaEvent_t e : s.staging_free)  // the old halves' last uploads
    if (e) CUDA_CHECK(cudaEventSynchronize(e));
  if (s.host_staging) CUDA_CHECK(cudaFreeHost(s.host_staging));
  CUDA_CHECK(cudaMallocHost(&s.host_staging, 2 * chunk * sizeof(bf16)));
  s.staging_n = chunk;
  for (cudaEvent_t& e : s.staging_free)
    if (!e) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
}
void weights_from_host(bf16* w, const float* p, size_t n, cudaStream_t st) {
  BackendState& s = state();
  ensure_staging(n);
  for (size_t i = 0; i < n; i += s.staging_n) {
    const size_t m = std::min(s.staging_n, n - i);
    const int half = s.staging_next;
    s.staging_next ^= 1;
    CUDA_CHECK(cudaEventSynchronize(s.staging_free[half]));
    const float* src = p + i;
    bf16* dst = s.host_staging + half * s.staging_n;
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < m; j++) dst[j] = __float2bfloat16(src[j]);
    CUDA_CHECK(cudaMemcpyAsync(w + i, dst, m * sizeof(bf16), cudaMemcpyHostToDevice, st));
    CUDA_CHECK(cudaEventRecord(s.staging_free[half], st));
  }
}
AttentionDims dims(const AttentionShape& s) {
  check(s.D == 64 || s.D == 128, "cuda backend: head_dim ", s.D, " is not supported (64 or 128)");
  check(s.KV > 0 && s.H % s.KV == 0, "cuda backend: num_attention_heads ", s.H,
        " is not a multiple of num_key_value_heads ", s.KV);
  return AttentionDims{s.Tq, s.Tk, s.H, s.KV, (long long)s.ld_q, (long long)s.ld_kv};
}

}  // namespace

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky error of a missing driver
    return 0;
  }
  return count;
}

size_t cuda_free_memory() {
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return free_bytes;
}

void CudaBackend::params_changed(bf16* w, const float* p, size_t n, bool p_on_host) {
  if (n == 0) return;
  if (p_on_host) weights_from_host(w, p, n, stream());
  else cast_f32_to_bf16(w, p, n, stream());
}
void CudaBackend::release() {
  BackendState& s = state();
  check(!s.transfers_active, "cuda backend: release while the offloaded optimizer's update is in flight "
        "(finish_pending_update first)");
  if (s.host_staging) CUDA_CHECK(cudaFreeHost(s.host_staging));
  for (cudaEvent_t e : s.staging_free)
    if (e) CUDA_CHECK(cudaEventDestroy(e));
  for (cudaEvent_t e : s.events) CUDA_CHECK(cudaEventDestroy(e));
  if (s.compute_mark) CUDA_CHECK(cudaEventDestroy(s.compute_mark));
  if (s.transfer) CUDA_CHECK(cudaStreamDestroy(s.transfer));
  for (auto& slot : s.slots)
    if (slot.ptr) CUDA_CHECK(cudaFree(slot.ptr));
  matmul_context_destroy(s.matmul);
  s = BackendState{};
}
void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream())); }

void CudaBackend::transfer_begin(int events, size_t params) {
  BackendState& s = state();
  check(!s.transfers_active, "cuda backend: transfer_begin while transfers are in flight");
  if (!s.transfer) {
    CUDA_CHECK(cudaGetDevice(&s.device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&s.transfer, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&s.compute_mark, cudaEventDisableTiming));
  }
  if (events > 0) numbered_event(s.events, events - 1);  // made here, not on the worker thread
  ensure_staging(params);  // here, not on the worker thread
  CUDA_CHECK(cudaEventRecord(s.compute_mark, s.stream));
  CUDA_CHECK(cudaStreamWaitEvent(s.transfer, s.compute_mark, 0));
  s.transfers_active = true;
}
void CudaBackend::transfer_end() { state().transfers_active = false; }
void CudaBackend::transfer_thread() { CUDA_CHECK(cudaSetDevice(state().device)); }
void CudaBackend::download_async(float* host, const float* dev, size_t n) {
  CUDA_CHECK(cudaMemcpyAsync(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost, state().transfer));
}
void CudaBackend::zero_async(float* dev, size_t n) {
  CUDA_CHECK(cudaMemsetAsync(dev, 0, n * sizeof(float), state().transfer));
}
void CudaBackend::upload_weights_async(bf16* w, const float* p, size_t n) { weights_from_host(w, p, n, state().transfer); }
void CudaBackend::transfer_record(int event) { CUDA_CHECK(cudaEventRecord(state().events.at(event), state().transfer)); }
void CudaBackend::transfer_wait(int event) { CUDA_CHECK(cudaEventSynchronize(state().events.at(event))); }

// Live allocations of alloc_bytes, for allocated_bytes() (the memory-plan check).
static std::map<void*, size_t>& live_allocations() {
  static std::map<void*, size_t> m;
  return m;
}
void* CudaBackend::alloc_bytes(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) bytes = 16;
  CUDA_CHECK(cudaMalloc(&p, bytes));
  CUDA_CHECK(cudaMemset(p, 0, bytes));
  live_allocations()[p] = bytes;
  return p;
}
void* CudaBackend::alloc_host_bytes(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) bytes = 16;
  CUDA_CHECK(cudaMallocHost(&p, bytes));
  std::memset(p, 0, bytes);
  return p;
}
void CudaBackend::free_host_bytes(void* p) {
  if (p) CUDA_CHECK(cudaFreeHost(p));
}
void CudaBackend::free_bytes(void* p) {
  if (!p) return;
  live_allocations().erase(p);
  CUDA_CHECK(cudaFree(p));
}
size_t CudaBackend::allocated_bytes() {
  size_t total = 0;
  for (const auto& kv : live_allocations()) total += kv.second;
  return total;
}
void CudaBackend::upload_bytes(void* dst, const void* host, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyDefault));  // dst may be pinned host memory (offload)
}
void CudaBackend::download_bytes(void* host, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDefault));
}
void CudaBackend::copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}
void CudaBackend::zero_bytes(void* dst, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream()));
}

void CudaBackend::embedding_forward(bf16* out, const int32_t* tokens, const bf16* table, const bf16* add, int N,
                                    int C) {
  ::embedding_forward(out, tokens, table, add, N, C, stream());
}
// Deterministic: the token ids come back to the host, which buckets the positions by id.
void CudaBackend::embedding_backward(float* dtable, const int32_t* tokens, const bf16* dout, int N, int C) {
  BackendState& s = state();
  s.host_tokens.resize(N);
  download(s.host_tokens.data(), tokens, N);
  const EmbeddingBackwardPlan plan = embedding_backward_plan(s.host_tokens.data(), N);
  const int U = (int)plan.bucket_token.size();
  int* dev = scratch<int>(SCRATCH_EMB_PLAN, (size_t)3 * N + 1);  // the most U + (U + 1) + N can be: sized by N
  upload(dev, plan.bucket_token.data(), U);
  upload(dev + U, plan.bucket_start.data(), U + 1);
  upload(dev + 2 * U + 1, plan.bucket_positions.data(), N);
  ::embedding_backward(dtable, dout, dev, dev + U, dev + 2 * U + 1, U, C, stream());
}
void CudaBackend::rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const bf16* w, int N, int C, float eps) {
  fused_residual_rmsnorm_forward(nullptr, out, rstd, x, nullptr, w, N, C, eps, stream());
}
void CudaBackend::residual_rmsnorm_forward(bf16* res_out, bf16* out, float* rstd, const bf16* res_in,
                                           const bf16* branch, const bf16* w, int N, int C, float eps) {
  fused_residual_rmsnorm_forward(res_out, out, rstd, res_in, branch, w, N, C, eps, stream());
}
// dx += d/dx (the residual stream's gradient), dw += d/dw.
void CudaBackend::rmsnorm_backward(bf16* dx, float* dw, const bf16* dout, const bf16* x, const bf16* w,
                                   const float* rstd, int N, int C) {
  float* partial = scratch<float>(SCRATCH_RMSNORM, (size_t)rmsnorm_backward_blocks(N) * C);
  ::rmsnorm_backward(dx, dw, partial, dx, dout, x, w, rstd, N, C, stream());
}
void CudaBackend::matmul_forward(bf16* out, const bf16* x, const bf16* w, const bf16* b, int N, int IC, int OC,
                                 bool accumulate) {
  linear_forward(matmul(), out, false, x, w, b, N, IC, OC, stream(), accumulate);
}
void CudaBackend::matmul_forward(float* out, const bf16* x, const bf16* w, const bf16* b, int N, int IC, int OC,
                                 bool accumulate) {
  check(b == nullptr, "cuda backend: an fp32-output matmul takes no bias");
  linear_forward(matmul(), out, true, x, w, nullptr, N, IC, OC, stream(), accumulate);
}
void CudaBackend::matmul_backward(bf16* dx, float* dw, float* db, const bf16* dout, const bf16* x, const bf16* w,
                                  int N, int IC, int OC, bool accumulate_dx) {
  if (dx) linear_backward_input(matmul(), dx, false, dout, w, N, IC, OC, accumulate_dx, stream());
  if (dw) linear_backward_weight(matmul(), dw, dout, x, N, IC, OC, stream());
  if (db) bias_backward(db, dout, N, OC, stream());
}
// The LM head's dlogits arrive in fp32 (the cross-entropy contract); cuBLASLt wants both operands
// in bf16, so they are cast once into scratch.
void CudaBackend::matmul_backward(bf16* dx, float* dw, float* db, const float* dout, const bf16* x, const bf16* w,
                                  int N, int IC, int OC, bool accumulate_dx) {
  bf16* dout_bf16 = scratch<bf16>(SCRATCH_DOUT_BF16, (size_t)N * OC);
  cast_f32_to_bf16(dout_bf16, dout, (size_t)N * OC, stream());
  matmul_backward(dx, dw, db, dout_bf16, x, w, N, IC, OC, accumulate_dx);
}
void CudaBackend::rope_apply(bf16* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int heads,
                             int D, int64_t ld, bool backward) {
  ::rope_apply(x, pos, cos_t, sin_t, N, heads, D, (long long)ld, backward, stream());
}
static CudaBackend::AttentionKernels& attention_kernels_setting() {
  static CudaBackend::AttentionKernels k = [] {
    const char* env = std::getenv("ENGINE_ATTENTION");
    const std::string v = env ? env : "tensor-cores";
    check(v == "tensor-cores" || v == "fma", "ENGINE_ATTENTION: expected fma or tensor-cores, got '", v, "'");
    return v == "fma" ? CudaBackend::AttentionKernels::fma : CudaBackend::AttentionKernels::tensor_cores;
  }();
  return k;
}
void CudaBackend::set_attention_kernels(AttentionKernels k) { attention_kernels_setting() = k; }
CudaBackend::AttentionKernels CudaBackend::attention_kernels() { return attention_kernels_setting(); }
void CudaBackend::attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                    const int32_t* lo, const int32_t* hi, const AttentionShape& s) {
  if (attention_kernels() == AttentionKernels::tensor_cores && attention_tc_supported(q, k, v, nullptr, dims(s), s.D))
    ::attention_tc_forward(out, lse, q, k, v, lo, hi, s.rows, dims(s), s.D, stream());
  else
    ::attention_forward(out, lse, q, k, v, lo, hi, s.rows, dims(s), s.D, stream());
}
void CudaBackend::attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                                     const bf16* v, const bf16* out, const float* lse, const int32_t* lo,
                                     const int32_t* hi, const AttentionShape& s) {
  float* delta = scratch<float>(SCRATCH_ATTN_DELTA, (size_t)s.rows * s.Tq * s.H);
  if (attention_kernels() == AttentionKernels::tensor_cores && attention_tc_supported(q, k, v, dout, dims(s), s.D))
    ::attention_tc_backward(dq, dk, dv, delta, dout, out, q, k, v, lse, lo, hi, s.rows, dims(s), s.D, stream());
  else
    ::attention_backward(dq, dk, dv, delta, dout, out, q, k, v, lse, lo, hi, s.rows, dims(s), s.D, stream());
}
void CudaBackend::swiglu_forward(bf16* out, const bf16* gate_up, int N, int I) {
  ::swiglu_forward(out, gate_up, N, I, stream());
}
void CudaBackend::swiglu_backward(bf16* dgu, const bf16* dout, const bf16* gate_up, int N, int I) {
  ::swiglu_backward(dgu, dout, gate_up, N, I, stream());
}
void CudaBackend::cross_entropy_forward_backward(float* logits, const int32_t* targets, int n, int V,
                                                 float grad_scale, double* loss_sum) {
  if (n == 0) return;
  float* stats = scratch<float>(SCRATCH_CE, (size_t)5 * n);
  float* losses = stats + 4 * (size_t)n;
  cross_entropy_rows_forward_backward(logits, losses, targets, n, V, grad_scale, stats, stats + n, stats + 2 * n,
                                      stats + 3 * n, stream());
  BackendState& s = state();
  s.host_losses.resize(n);
  download(s.host_losses.data(), losses, n);
  double total = 0.0;
  for (float l : s.host_losses) total += l;
  *loss_sum += total;
}
void CudaBackend::lm_head_cross_entropy(bf16* dx, float* dw, float* dx_scratch, float* logits, const bf16* x,
                                        const bf16* w, const int32_t* targets, int n, int C, int V, int v_chunk,
                                        float grad_scale, double* loss_sum) {
  if (n == 0) return;
  LmHeadScratch sc;
  sc.logits = logits;
  sc.dlogits = dx ? scratch<bf16>(SCRATCH_DOUT_BF16, (size_t)n * v_chunk) : nullptr;
  float* stats = scratch<float>(SCRATCH_CE, (size_t)5 * n);
  sc.row_max = stats;
  sc.row_sum = stats + n;
  sc.target_logit = stats + 2 * (size_t)n;
  sc.lse = stats + 3 * (size_t)n;
  sc.dx_f32 = dx_scratch;
  sc.chunk = v_chunk;
  float* losses = stats + 4 * (size_t)n;
  fused_lm_head_cross_entropy(matmul(), losses, dx, dw, x, w, targets, n, C, V, grad_scale, sc, stream());
  BackendState& s = state();
  s.host_losses.resize(n);
  download(s.host_losses.data(), losses, n);
  double total = 0.0;
  for (float l : s.host_losses) total += l;
  *loss_sum += total;
}
void CudaBackend::gather_rows(bf16* dst, const bf16* src, const int32_t* idx, int n, int C) {
  ::gather_rows(dst, src, idx, n, C, stream());
}
void CudaBackend::scatter_rows(bf16* dst, const bf16* src, const int32_t* idx, int n, int C) {
  ::scatter_rows(dst, src, idx, n, C, stream());
}
void CudaBackend::lens_stats(float* prob, int32_t* rank, int32_t* top1, const float* logits, const int32_t* gold,
                             int n, int V) {
  ::lens_stats(prob, rank, top1, logits, gold, n, V, stream());
}
double CudaBackend::sum_of_squares(const float* g, size_t n) {
  float* buf = scratch<float>(SCRATCH_NORM, GLOBAL_NORM_BLOCKS + 2);
  global_norm(buf + GLOBAL_NORM_BLOCKS, buf, g, n, 0.0f, stream());
  float norm = 0.0f;
  download(&norm, buf + GLOBAL_NORM_BLOCKS, 1);
  return (double)norm * (double)norm;
}
void CudaBackend::adamw_update(float* p, bf16* w, size_t first, const float* g, float* m, float* v, size_t n,
                               float lr, float b1, float b2, float eps, float wd, int step, float grad_scale) {
  const AdamWHyper hp{lr, b1, b2, eps, wd, step};
  ::adamw_update<float>(p, w, const_cast<float*>(g), m, v, n, hp, grad_scale, nullptr, (uint32_t)step, stream(), first);
}
void CudaBackend::adamw_update(float* p, bf16* w, size_t first, const float* g, uint16_t* m, uint16_t* v, size_t n,
                               float lr, float b1, float b2, float eps, float wd, int step, float grad_scale) {
  const AdamWHyper hp{lr, b1, b2, eps, wd, step};
  // uint16_t holds the bf16 bit patterns (the host-side template has no bf16 type).
  ::adamw_update<bf16>(p, w, const_cast<float*>(g), reinterpret_cast<bf16*>(m), reinterpret_cast<bf16*>(v), n, hp,
                       grad_scale, nullptr, (uint32_t)step, stream(), first);
}
template <class state_t>
static double adamw_clip_update_impl(float* p, bf16* w, size_t first, float* g, state_t* m, state_t* v, size_t n,
                                     float lr, float b1, float b2, float eps, float wd, int step, float max_grad_norm,
                                     bool zero_grads) {
  if (n == 0) return 0.0;
  float* buf = scratch<float>(SCRATCH_NORM, GLOBAL_NORM_BLOCKS + 2);
  global_norm_partials(buf, g, n, stream());
  AdamWFusion fuse;
  fuse.norm_partials = buf;
  fuse.max_norm = max_grad_norm;
  fuse.norm_out = buf + GLOBAL_NORM_BLOCKS;
  fuse.zero_grads = zero_grads;
  const AdamWHyper hp{lr, b1, b2, eps, wd, step};
  ::adamw_update<state_t>(p, w, g, m, v, n, hp, 1.0f, nullptr, (uint32_t)step, stream(), first, fuse);
  float norm = 0.0f;
  CudaBackend::download(&norm, buf + GLOBAL_NORM_BLOCKS, 1);
  return norm;
}
double CudaBackend::adamw_clip_update(float* p, bf16* w, size_t first, float* g, float* m, float* v, size_t n,
                                      float lr, float b1, float b2, float eps, float wd, int step,
                                      float max_grad_norm, bool zero_grads) {
  return adamw_clip_update_impl<float>(p, w, first, g, m, v, n, lr, b1, b2, eps, wd, step, max_grad_norm, zero_grads);
}
double CudaBackend::adamw_clip_update(float* p, bf16* w, size_t first, float* g, uint16_t* m, uint16_t* v, size_t n,
                                      float lr, float b1, float b2, float eps, float wd, int step,
                                      float max_grad_norm, bool zero_grads) {
  return adamw_clip_update_impl<bf16>(p, w, first, g, reinterpret_cast<bf16*>(m), reinterpret_cast<bf16*>(v), n, lr,
                                      b1, b2, eps, wd, step, max_grad_norm, zero_grads);
}

// ------------------------------------------------------------------------------------------------
// KV-cache inference.
#include "kernels/cuda/decode.cuh"

void CudaBackend::condition_kv_forward(bf16* kv, const bf16* qkv, const float* slot, int rows, int T, int KVD,
                                       int64_t slot_stride, int64_t ld_qkv, int64_t k_offset) {
  ::condition_kv_forward(kv, qkv, slot, rows, T, KVD, slot_stride, ld_qkv, k_offset, stream());
}
void CudaBackend::condition_kv_backward(bf16* d_qkv, float* d_slot, const bf16* d_kv, int rows, int T, int KVD,
                                        int64_t slot_stride, int64_t ld_qkv, int64_t k_offset) {
  ::condition_kv_backward(d_qkv, d_slot, d_kv, rows, T, KVD, slot_stride, ld_qkv, k_offset, stream());
}
void CudaBackend::condition_embed_forward(bf16* out, const float* rows_src, const int32_t* row_of, int N, int C) {
  ::condition_embed_forward(out, rows_src, row_of, N, C, stream());
}
void CudaBackend::condition_embed_backward(float* d_rows, const bf16* d_emb, int rows, int T, int C) {
  ::condition_embed_backward(d_rows, d_emb, rows, T, C, stream());
}
void CudaBackend::kv_cache_write(bf16* k_cache, bf16* v_cache, const bf16* qkv, const int32_t* slot,
                                 const int32_t* pos, int N, const KvShape& s) {
  check(s.ld_qkv == (int64_t)(s.H + 2 * s.KV) * s.D, "cuda backend: kv_cache_write takes packed qkv rows");
  ::kv_cache_write(k_cache, v_cache, qkv, slot, pos, N, s.H, s.KV, s.D, s.len, stream());
}
void CudaBackend::attention_decode(bf16* out, const bf16* qkv, const bf16* k_cache, const bf16* v_cache,
                                   const int32_t* slot, const int32_t* pos, int N, const KvShape& s) {
  check(s.ld_qkv == (int64_t)(s.H + 2 * s.KV) * s.D, "cuda backend: attention_decode takes packed qkv rows");
  check(s.D == 64 || s.D == 128, "cuda backend: head_dim ", s.D, " is not supported (64 or 128)");
  ::attention_decode(out, qkv, k_cache, v_cache, slot, pos, N, s.H, s.KV, s.D, s.len, stream());
}
void CudaBackend::argmax_rows(int32_t* out, const float* logits, int n, int V) {
  ::argmax_rows(out, logits, n, V, stream());
}

// ------------------------------------------------------------------------------------------------
// Data parallelism: the NCCL calls, through a table filled from libnccl.so.2 (dlopen) on a GPU, or
// with the emulator's fake. Only the few types and constants used here are declared when the
// toolkit has no nccl.h (NCCL's ABI: ncclFloat32 = 7, ncclFloat64 = 8, ncclSum = 0, 128-byte ids).
#if defined(CUDA_EMULATION) || __has_include(<nccl.h>)
#include <nccl.h>
#else
typedef struct ncclComm* ncclComm_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef enum { ncclSuccess = 0 } ncclResult_t;
typedef enum { ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;
#endif
#if !defined(CUDA_EMULATION)
#include <dlfcn.h>
#endif
#include <cstring>

namespace {

struct Nccl {
  ncclResult_t (*get_unique_id)(ncclUniqueId*);
  ncclResult_t (*comm_init_rank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*all_reduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
  ncclResult_t (*reduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*broadcast)(const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
  ncclResult_t (*group_start)();
  ncclResult_t (*group_end)();
  ncclResult_t (*comm_destroy)(ncclComm_t);
  const char* (*error_string)(ncclResult_t);
  const char* (*last_error)(ncclComm_t);
  ncclComm_t comm = nullptr;
  double* staging = nullptr;  // device doubles for cuda_comm_all_reduce_sum_host
  int staging_n = 0;
  // The communication stream (non-blocking: no implicit order with the legacy default stream,
  // which is the compute stream), the event that orders it after the compute stream's work, the
  // tagged events of cuda_comm_record and the one of cuda_comm_wait_all.
  cudaStream_t stream = nullptr;
  cudaEvent_t after_compute = nullptr, all = nullptr;
  std::vector<cudaEvent_t> tags = {};  // made on a tag's first record
  bool skip_waits = false;  // ENGINE_DEBUG_SKIP_COMM_WAIT: the planted missing wait of the tests
};

Nccl& nccl() {
  static Nccl n = [] {
    Nccl t{};
#if defined(CUDA_EMULATION)
    t = Nccl{ncclGetUniqueId, ncclCommInitRank, ncclAllReduce, ncclReduce,       ncclBroadcast,
             ncclGroupStart,  ncclGroupEnd,     ncclCommDestroy, ncclGetErrorString, ncclGetLastError};
#else
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    check(lib != nullptr, "multi-process training needs NCCL: cannot load libnccl.so.2 (", dlerror(),
          "); install NCCL or add its lib directory to LD_LIBRARY_PATH");
    auto sym = [&](const char* name) {
      void* p = dlsym(lib, name);
      check(p != nullptr, "libnccl.so.2 has no ", name);
      return p;
    };
    t.get_unique_id = reinterpret_cast<decltype(t.get_unique_id)>(sym("ncclGetUniqueId"));
    t.comm_init_rank = reinterpret_cast<decltype(t.comm_init_rank)>(sym("ncclCommInitRank"));
    t.all_reduce = reinterpret_cast<decltype(t.all_reduce)>(sym("ncclAllReduce"));
    t.reduce = reinterpret_cast<decltype(t.reduce)>(sym("ncclReduce"));
    t.broadcast = reinterpret_cast<decltype(t.broadcast)>(sym("ncclBroadcast"));
    t.group_start = reinterpret_cast<decltype(t.group_start)>(sym("ncclGroupStart"));
    t.group_end = reinterpret_cast<decltype(t.group_end)>(sym("ncclGroupEnd"));
    t.comm_destroy = reinterpret_cast<decltype(t.comm_destroy)>(sym("ncclCommDestroy"));
    t.error_string = reinterpret_cast<decltype(t.error_string)>(sym("ncclGetErrorString"));
    t.last_error = reinterpret_cast<decltype(t.last_error)>(sym("ncclGetLastError"));
#endif
    return t;
  }();
  return n;
}

void nccl_check(ncclResult_t st, const char* what) {
  if (st == ncclSuccess) return;
  Nccl& n = nccl();
  const char* detail = n.last_error ? n.last_error(n.comm) : "";
  fail("NCCL ", what, ": ", n.error_string(st), detail && *detail ? std::string(": ") + detail : std::string());
}

// The communication stream, after everything issued so far on the compute stream.
cudaStream_t comm_stream() {
  Nccl& t = nccl();
  check(t.stream != nullptr, "cuda_comm: no communicator (cuda_comm_init first)");
  CUDA_CHECK(cudaEventRecord(t.after_compute, stream()));
  CUDA_CHECK(cudaStreamWaitEvent(t.stream, t.after_compute, 0));
  return t.stream;
}

}  // namespace

std::string cuda_comm_unique_id() {
  ncclUniqueId id;
  nccl_check(nccl().get_unique_id(&id), "ncclGetUniqueId");
  return std::string(id.internal, sizeof id.internal);
}

void cuda_comm_init(const std::string& id, int rank, int world_size, int local_rank) {
  const int devices = cuda_device_count();
  check(local_rank < devices, "rank ", rank, " has local rank ", local_rank, " but this node shows ", devices,
        " CUDA device", devices == 1 ? "" : "s", ": one GPU per process (start at most ", devices,
        " processes per node, or check CUDA_VISIBLE_DEVICES)");
  CUDA_CHECK(cudaSetDevice(local_rank));
  ncclUniqueId uid;
  check(id.size() == sizeof uid.internal, "cuda_comm_init: the NCCL id has ", id.size(), " bytes, not ",
        sizeof uid.internal);
  std::memcpy(uid.internal, id.data(), sizeof uid.internal);
  Nccl& n = nccl();
  nccl_check(n.comm_init_rank(&n.comm, world_size, uid, rank), "ncclCommInitRank");
  CUDA_CHECK(cudaStreamCreateWithFlags(&n.stream, cudaStreamNonBlocking));
  for (cudaEvent_t* e : {&n.after_compute, &n.all}) CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
  const char* skip = std::getenv("ENGINE_DEBUG_SKIP_COMM_WAIT");
  n.skip_waits = skip && std::string(skip) == "1";
}

void cuda_comm_add(float* acc, const float* x, size_t n) { accumulate(acc, x, n, comm_stream()); }

void cuda_comm_record(int tag) {
  Nccl& t = nccl();
  check(tag >= 0 && t.stream, "cuda_comm_record: tag ", tag, " (a tag is >= 0, after cuda_comm_init)");
  CUDA_CHECK(cudaEventRecord(numbered_event(t.tags, tag), t.stream));
}
void cuda_comm_wait(int tag) {
  Nccl& t = nccl();
  check(tag >= 0 && t.stream, "cuda_comm_wait: tag ", tag, " (a tag is >= 0, after cuda_comm_init)");
  if (tag >= (int)t.tags.size()) return;  // never recorded: nothing to wait for
  if (!t.skip_waits) CUDA_CHECK(cudaStreamWaitEvent(stream(), t.tags[tag], 0));
}
void cuda_comm_wait_all() {
  Nccl& t = nccl();
  if (!t.stream) return;
  CUDA_CHECK(cudaEventRecord(t.all, t.stream));
  CUDA_CHECK(cudaStreamWaitEvent(stream(), t.all, 0));
}

void cuda_comm_all_reduce_sum(float* data, size_t n) {
  Nccl& t = nccl();
  nccl_check(t.all_reduce(data, data, n, ncclFloat32, ncclSum, t.comm, comm_stream()), "ncclAllReduce (gradients)");
}

void cuda_comm_reduce_sum(float* data, size_t n, int root) {
  Nccl& t = nccl();
  nccl_check(t.reduce(data, data, n, ncclFloat32, ncclSum, root, t.comm, comm_stream()), "ncclReduce (gradient shard)");
}

void cuda_comm_broadcast(float* data, size_t n, int root) {
  Nccl& t = nccl();
  nccl_check(t.broadcast(data, data, n, ncclFloat32, root, t.comm, comm_stream()), "ncclBroadcast (master weights)");
}

void cuda_comm_broadcast(const bf16* send, bf16* recv, size_t n, int root) {
  Nccl& t = nccl();
  nccl_check(t.broadcast(send, recv, n, ncclBfloat16, root, t.comm, comm_stream()), "ncclBroadcast (weights)");
}

void cuda_comm_group_start() { nccl_check(nccl().group_start(), "ncclGroupStart"); }
void cuda_comm_group_end() { nccl_check(nccl().group_end(), "ncclGroupEnd"); }

void cuda_comm_all_reduce_sum_host(double* host, int n) {
  Nccl& t = nccl();
  if (n > t.staging_n) {
    if (t.staging) CUDA_CHECK(cudaFree(t.staging));
    CUDA_CHECK(cudaMalloc(&t.staging, n * sizeof(double)));
    t.staging_n = n;
  }
  const cudaStream_t s = comm_stream();
  CUDA_CHECK(cudaMemcpyAsync(t.staging, host, n * sizeof(double), cudaMemcpyHostToDevice, s));
  nccl_check(t.all_reduce(t.staging, t.staging, n, ncclFloat64, ncclSum, t.comm, s), "ncclAllReduce (step values)");
  CUDA_CHECK(cudaMemcpyAsync(host, t.staging, n * sizeof(double), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void cuda_comm_destroy() {
  Nccl& t = nccl();
  if (t.staging) CUDA_CHECK(cudaFree(t.staging));
  t.staging = nullptr;
  t.staging_n = 0;
  if (t.stream) {
    CUDA_CHECK(cudaStreamSynchronize(t.stream));
    for (cudaEvent_t e : {t.after_compute, t.all}) CUDA_CHECK(cudaEventDestroy(e));
    for (cudaEvent_t& e : t.tags) CUDA_CHECK(cudaEventDestroy(e));
    t.tags.clear();
    CUDA_CHECK(cudaStreamDestroy(t.stream));
    t.stream = nullptr;
  }
  if (t.comm) t.comm_destroy(t.comm);
  t.comm = nullptr;
}
