// The CUDA backend's definitions; declarations and design notes are in kernels/cuda_backend.h.
// Compiled by nvcc for the GPU build. Tests include this file under g++ -DCUDA_EMULATION to run
// the backend on the emulator.
#include "kernels/cuda_backend.h"

#include <algorithm>
#include <map>
#include <vector>

#include "common/error.h"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cast.cuh"
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
  const float* params = nullptr;  // fp32 master weights (device)
  bf16* params_bf16 = nullptr;    // working copy, same offsets
  size_t params_n = 0;
  bool mirror_stale = true;
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
bool in_params(const void* p) {
  const BackendState& s = state();
  const float* f = static_cast<const float*>(p);
  return s.params && f >= s.params && f < s.params + s.params_n;
}
void mark_written(const void* p, size_t bytes) {
  const BackendState& s = state();
  const char* a = static_cast<const char*>(p);
  const char* lo = reinterpret_cast<const char*>(s.params);
  if (s.params && a < lo + s.params_n * sizeof(float) && a + bytes > lo) state().mirror_stale = true;
}
// The bf16 working copy of a weight given by its fp32 master pointer.
const bf16* weight(const float* w) {
  BackendState& s = state();
  if (!w) return nullptr;
  check(in_params(w), "cuda backend: a weight pointer lies outside the bound parameter buffer "
                      "(call CudaBackend::bind_params / cuda_bind_model after creating the model)");
  if (s.mirror_stale) {
    cast_f32_to_bf16(s.params_bf16, s.params, s.params_n, s.stream);
    s.mirror_stale = false;
  }
  return s.params_bf16 + (w - s.params);
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

void CudaBackend::bind_params(const float* params, size_t n) {
  BackendState& s = state();
  if (s.params_bf16) CUDA_CHECK(cudaFree(s.params_bf16));
  s.params = params;
  s.params_n = n;
  CUDA_CHECK(cudaMalloc(&s.params_bf16, (n > 0 ? n : 1) * sizeof(bf16)));
  s.mirror_stale = true;
}
void CudaBackend::release() {
  BackendState& s = state();
  if (s.params_bf16) CUDA_CHECK(cudaFree(s.params_bf16));
  for (auto& slot : s.slots)
    if (slot.ptr) CUDA_CHECK(cudaFree(slot.ptr));
  matmul_context_destroy(s.matmul);
  s = BackendState{};
}
void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream())); }

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
  CUDA_CHECK(cudaMemcpy(dst, host, bytes, cudaMemcpyHostToDevice));
  mark_written(dst, bytes);
}
void CudaBackend::download_bytes(void* host, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpy(host, src, bytes, cudaMemcpyDeviceToHost));
}
void CudaBackend::copy_bytes(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
  mark_written(dst, bytes);
}
void CudaBackend::zero_bytes(void* dst, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stream()));
  mark_written(dst, bytes);
}

void CudaBackend::embedding_forward(bf16* out, const int32_t* tokens, const float* table, const bf16* add, int N,
                                    int C) {
  ::embedding_forward(out, tokens, weight(table), add, N, C, stream());
}
// Deterministic: the token ids come back to the host, which buckets the positions by id.
void CudaBackend::embedding_backward(float* dtable, const int32_t* tokens, const bf16* dout, int N, int C) {
  BackendState& s = state();
  s.host_tokens.resize(N);
  download(s.host_tokens.data(), tokens, N);
  const EmbeddingBackwardPlan plan = embedding_backward_plan(s.host_tokens.data(), N);
  const int U = (int)plan.bucket_token.size();
  int* dev = scratch<int>(SCRATCH_EMB_PLAN, (size_t)U + (U + 1) + N);
  upload(dev, plan.bucket_token.data(), U);
  upload(dev + U, plan.bucket_start.data(), U + 1);
  upload(dev + 2 * U + 1, plan.bucket_positions.data(), N);
  ::embedding_backward(dtable, dout, dev, dev + U, dev + 2 * U + 1, U, C, stream());
}
void CudaBackend::rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const float* w, int N, int C, float eps) {
  fused_residual_rmsnorm_forward(nullptr, out, rstd, x, nullptr, weight(w), N, C, eps, stream());
}
void CudaBackend::residual_rmsnorm_forward(bf16* res_out, bf16* out, float* rstd, const bf16* res_in,
                                           const bf16* branch, const float* w, int N, int C, float eps) {
  fused_residual_rmsnorm_forward(res_out, out, rstd, res_in, branch, weight(w), N, C, eps, stream());
}
// dx += d/dx (the residual stream's gradient), dw += d/dw.
void CudaBackend::rmsnorm_backward(bf16* dx, float* dw, const bf16* dout, const bf16* x, const float* w,
                                   const float* rstd, int N, int C) {
  float* partial = scratch<float>(SCRATCH_RMSNORM, (size_t)rmsnorm_backward_blocks(N) * C);
  ::rmsnorm_backward(dx, dw, partial, dx, dout, x, weight(w), rstd, N, C, stream());
}
void CudaBackend::matmul_forward(bf16* out, const bf16* x, const float* w, const float* b, int N, int IC, int OC,
                                 bool accumulate) {
  linear_forward(matmul(), out, false, x, weight(w), weight(b), N, IC, OC, stream(), accumulate);
}
void CudaBackend::matmul_forward(float* out, const bf16* x, const float* w, const float* b, int N, int IC, int OC,
                                 bool accumulate) {
  check(b == nullptr, "cuda backend: an fp32-output matmul takes no bias");
  linear_forward(matmul(), out, true, x, weight(w), nullptr, N, IC, OC, stream(), accumulate);
}
void CudaBackend::matmul_backward(bf16* dx, float* dw, float* db, const bf16* dout, const bf16* x, const float* w,
                                  int N, int IC, int OC, bool accumulate_dx) {
  if (dx) linear_backward_input(matmul(), dx, false, dout, weight(w), N, IC, OC, accumulate_dx, stream());
  if (dw) linear_backward_weight(matmul(), dw, dout, x, N, IC, OC, stream());
  if (db) bias_backward(db, dout, N, OC, stream());
}
// The LM head's dlogits arrive in fp32 (the cross-entropy contract); cuBLASLt wants both operands
// in bf16, so they are cast once into scratch.
void CudaBackend::matmul_backward(bf16* dx, float* dw, float* db, const float* dout, const bf16* x, const float* w,
                                  int N, int IC, int OC, bool accumulate_dx) {
  bf16* dout_bf16 = scratch<bf16>(SCRATCH_DOUT_BF16, (size_t)N * OC);
  cast_f32_to_bf16(dout_bf16, dout, (size_t)N * OC, stream());
  matmul_backward(dx, dw, db, dout_bf16, x, w, N, IC, OC, accumulate_dx);
}
void CudaBackend::rope_apply(bf16* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int heads,
                             int D, int64_t ld, bool backward) {
  ::rope_apply(x, pos, cos_t, sin_t, N, heads, D, (long long)ld, backward, stream());
}
void CudaBackend::attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                                    const int32_t* lo, const int32_t* hi, const AttentionShape& s) {
  ::attention_forward(out, lse, q, k, v, lo, hi, s.rows, dims(s), s.D, stream());
}
void CudaBackend::attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                                     const bf16* v, const bf16* out, const float* lse, const int32_t* lo,
                                     const int32_t* hi, const AttentionShape& s) {
  float* delta = scratch<float>(SCRATCH_ATTN_DELTA, (size_t)s.rows * s.Tq * s.H);
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
void CudaBackend::adamw_update(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
                               float eps, float wd, int step, float grad_scale) {
  BackendState& s = state();
  bf16* mirror = nullptr;
  if (in_params(p)) {
    weight(p);  // refreshes a stale mirror first, so the parameters outside [p, p+n) are current
    mirror = s.params_bf16 + (p - s.params);
  }
  const AdamWHyper hp{lr, b1, b2, eps, wd, step};
  ::adamw_update<float>(p, mirror, g, m, v, n, hp, grad_scale, nullptr, (uint32_t)step, stream());
}
void CudaBackend::adamw_update(float* p, const float* g, uint16_t* m, uint16_t* v, size_t n, float lr, float b1,
                               float b2, float eps, float wd, int step, float grad_scale) {
  BackendState& s = state();
  bf16* mirror = nullptr;
  if (in_params(p)) {
    weight(p);
    mirror = s.params_bf16 + (p - s.params);
  }
  const AdamWHyper hp{lr, b1, b2, eps, wd, step};
  // uint16_t holds the bf16 bit patterns (the host-side template has no bf16 type).
  ::adamw_update<bf16>(p, mirror, g, reinterpret_cast<bf16*>(m), reinterpret_cast<bf16*>(v), n, hp, grad_scale,
                       nullptr, (uint32_t)step, stream());
}

// ------------------------------------------------------------------------------------------------
// Greedy decoding with a KV cache.
#include "kernels/cuda/decode.cuh"

struct CudaGreedyDecoder::Impl {
  CudaDecoderSpec spec;
  int max_batch = 0, max_len = 0, S = 0;
  MatmulContext ctx;
  cudaStream_t stream = 0;
  bf16* weights = nullptr;  // bf16 copy of the flat parameters
  bf16 *x = nullptr, *ln = nullptr, *qkv = nullptr, *att = nullptr, *gu = nullptr, *h = nullptr, *last = nullptr,
       *last_ln = nullptr, *k_cache = nullptr, *v_cache = nullptr;
  float *rstd = nullptr, *lse = nullptr, *logits = nullptr, *rope_cos = nullptr, *rope_sin = nullptr;
  int *tokens = nullptr, *positions = nullptr, *lo = nullptr, *hi = nullptr, *dest_pos = nullptr, *kv_len = nullptr,
      *last_idx = nullptr, *next = nullptr;
  std::vector<void*> owned;

  template <class T>
  T* device(size_t n) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, (n > 0 ? n : 1) * sizeof(T)));
    CUDA_CHECK(cudaMemset(p, 0, (n > 0 ? n : 1) * sizeof(T)));
    owned.push_back(p);
    return static_cast<T*>(p);
  }
  const bf16* w(size_t offset) const { return offset == SIZE_MAX ? nullptr : weights + offset; }
  bf16* cache(bf16* base, int layer) const { return base + (size_t)layer * max_batch * spec.KV * max_len * spec.D; }

  // The decoder layers over N tokens laid out as `rows` rows of T_in; `prefill` selects flash
  // attention over the rows themselves, otherwise single-token attention over the cache.
  void layers(int N, int rows, int T_in, bool prefill) {
    const CudaDecoderSpec& s = spec;
    for (int l = 0; l < s.L; l++) {
      const CudaDecoderLayer& lw = s.layers[l];
      fused_residual_rmsnorm_forward(nullptr, ln, rstd, x, nullptr, w(lw.ln1), N, s.C, s.eps, stream);
      linear_forward(ctx, qkv, false, ln, w(lw.qkv_w), w(lw.qkv_b), N, s.C, S, stream);
      ::rope_apply(qkv, positions, rope_cos, rope_sin, N, s.H + s.KV, s.D, S, false, stream);
      kv_cache_write(cache(k_cache, l), cache(v_cache, l), qkv, dest_pos, N, T_in, s.H, s.KV, s.D, max_len, stream);
      if (prefill) {
        const AttentionDims dims{T_in, T_in, s.H, s.KV, S, S};
        ::attention_forward(att, lse, qkv, qkv + s.H * s.D, qkv + (s.H + s.KV) * s.D, lo, hi, rows, dims, s.D, stream);
      } else {
        attention_decode(att, qkv, cache(k_cache, l), cache(v_cache, l), kv_len, rows, s.H, s.KV, s.D, max_len, stream);
      }
      linear_forward(ctx, x, false, att, w(lw.o_w), nullptr, N, s.H * s.D, s.C, stream, true);
      fused_residual_rmsnorm_forward(nullptr, ln, rstd, x, nullptr, w(lw.ln2), N, s.C, s.eps, stream);
      linear_forward(ctx, gu, false, ln, w(lw.gate_up_w), nullptr, N, s.C, 2 * s.I, stream);
      ::swiglu_forward(h, gu, N, s.I, stream);
      linear_forward(ctx, x, false, h, w(lw.down_w), nullptr, N, s.I, s.C, stream, true);
    }
  }
  // Next token of each row from the hidden state at row-major token index last_idx[row].
  void next_tokens(int rows, std::vector<int>& out) {
    const CudaDecoderSpec& s = spec;
    ::gather_rows(last, x, last_idx, rows, s.C, stream);
    fused_residual_rmsnorm_forward(nullptr, last_ln, rstd, last, nullptr, w(s.final_norm), rows, s.C, s.eps, stream);
    linear_forward(ctx, logits, true, last_ln, w(s.lm_head), nullptr, rows, s.C, s.V, stream);
    argmax_rows(next, logits, rows, s.V, stream);
    out.resize(rows);
    CUDA_CHECK(cudaMemcpy(out.data(), next, rows * sizeof(int), cudaMemcpyDeviceToHost));
  }
};

CudaGreedyDecoder::CudaGreedyDecoder(const CudaDecoderSpec& spec, const float* host_params, int max_batch,
                                     int max_len)
    : impl_(new Impl) {
  Impl& m = *impl_;
  m.spec = spec;
  m.max_batch = max_batch;
  m.max_len = max_len;
  m.S = (spec.H + 2 * spec.KV) * spec.D;
  check(spec.D == 64 || spec.D == 128, "cuda decoding: head_dim ", spec.D, " is not supported (64 or 128)");
  check((int)spec.rope_cos.size() >= max_len * spec.D / 2, "cuda decoding: rope tables shorter than max_len");
  matmul_context_create(m.ctx);
  {
    std::vector<bf16> w(spec.total);
    for (size_t i = 0; i < spec.total; i++) w[i] = __float2bfloat16(host_params[i]);
    m.weights = m.device<bf16>(spec.total);
    CUDA_CHECK(cudaMemcpy(m.weights, w.data(), w.size() * sizeof(bf16), cudaMemcpyHostToDevice));
  }
  const size_t N = (size_t)max_batch * max_len;
  m.x = m.device<bf16>(N * spec.C);
  m.ln = m.device<bf16>(N * spec.C);
  m.qkv = m.device<bf16>(N * m.S);
  m.att = m.device<bf16>(N * spec.H * spec.D);
  m.gu = m.device<bf16>(N * 2 * spec.I);
  m.h = m.device<bf16>(N * spec.I);
  m.rstd = m.device<float>(N);
  m.lse = m.device<float>(N * spec.H);
  m.last = m.device<bf16>((size_t)max_batch * spec.C);
  m.last_ln = m.device<bf16>((size_t)max_batch * spec.C);
  m.logits = m.device<float>((size_t)max_batch * spec.V);
  const size_t cache = (size_t)spec.L * max_batch * spec.KV * max_len * spec.D;
  m.k_cache = m.device<bf16>(cache);
  m.v_cache = m.device<bf16>(cache);
  m.rope_cos = m.device<float>(spec.rope_cos.size());
  m.rope_sin = m.device<float>(spec.rope_sin.size());
  CUDA_CHECK(cudaMemcpy(m.rope_cos, spec.rope_cos.data(), spec.rope_cos.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(m.rope_sin, spec.rope_sin.data(), spec.rope_sin.size() * sizeof(float), cudaMemcpyHostToDevice));
  for (int** p : {&m.tokens, &m.positions, &m.lo, &m.hi, &m.dest_pos}) *p = m.device<int>(N);
  for (int** p : {&m.kv_len, &m.last_idx, &m.next}) *p = m.device<int>(max_batch);
}

CudaGreedyDecoder::~CudaGreedyDecoder() {
  matmul_context_destroy(impl_->ctx);
  for (void* p : impl_->owned) cudaFree(p);
  delete impl_;
}

std::vector<std::vector<int32_t>> CudaGreedyDecoder::generate(const std::vector<std::vector<int32_t>>& prompts,
                                                              int max_new_tokens, const std::vector<int32_t>& stop_ids,
                                                              const std::vector<bool>& stops_generation) {
  Impl& m = *impl_;
  const int B = (int)prompts.size();
  std::vector<std::vector<int32_t>> result(B);
  if (B == 0 || max_new_tokens <= 0) return result;
  check(B <= m.max_batch, "cuda decoding: ", B, " prompts exceed the batch of ", m.max_batch);
  int P = 0;
  for (const auto& p : prompts) {
    check(!p.empty(), "cuda decoding: empty prompt");
    check((int)p.size() + max_new_tokens <= m.max_len, "cuda decoding: prompt of ", p.size(), " tokens plus ",
          max_new_tokens, " new tokens exceeds max_len ", m.max_len);
    for (int32_t t : p) check(t >= 0 && t < m.spec.V, "cuda decoding: token id ", t, " outside [0, ", m.spec.V, ")");
    P = std::max(P, (int)p.size());
  }
  // Prefill: B right-padded rows of P tokens.
  const int N = B * P;
  std::vector<int> tokens(N, 0), positions(N), lo(N), hi(N), dest(N), last_idx(B), kv_len(B);
  for (int b = 0; b < B; b++) {
    const int len = (int)prompts[b].size();
    for (int t = 0; t < P; t++) {
      const int i = b * P + t;
      const bool real = t < len;
      tokens[i] = real ? prompts[b][t] : 0;
      positions[i] = real ? t : 0;
      lo[i] = real ? 0 : t;  // padding attends to itself only
      hi[i] = t;
      dest[i] = real ? t : -1;
    }
    last_idx[b] = b * P + len - 1;
    kv_len[b] = len;
  }
  auto up = [](int* dst, const std::vector<int>& v) {
    CUDA_CHECK(cudaMemcpy(dst, v.data(), v.size() * sizeof(int), cudaMemcpyHostToDevice));
  };
  up(m.tokens, tokens);
  up(m.positions, positions);
  up(m.lo, lo);
  up(m.hi, hi);
  up(m.dest_pos, dest);
  up(m.last_idx, last_idx);
  ::embedding_forward(m.x, m.tokens, m.weights + m.spec.embed, nullptr, N, m.spec.C, m.stream);
  m.layers(N, B, P, true);
  std::vector<int> next;
  m.next_tokens(B, next);

  std::vector<bool> done(B, false);
  std::vector<int> step_idx(B);
  for (int b = 0; b < B; b++) step_idx[b] = b;
  for (int step = 0;; step++) {
    int active = 0;
    for (int b = 0; b < B; b++) {
      if (done[b]) continue;
      result[b].push_back(next[b]);
      const bool stop = std::find(stop_ids.begin(), stop_ids.end(), next[b]) != stop_ids.end() ||
                        ((size_t)next[b] < stops_generation.size() && stops_generation[next[b]]);
      if (stop || (int)result[b].size() >= max_new_tokens) done[b] = true;
      else active++;
    }
    if (active == 0) break;
    // One token per row (finished rows keep decoding a dummy token: the batch stays rectangular).
    std::vector<int> pos(B);
    for (int b = 0; b < B; b++) {
      pos[b] = kv_len[b];
      kv_len[b]++;
    }
    up(m.tokens, next);
    up(m.positions, pos);
    up(m.dest_pos, pos);
    up(m.kv_len, kv_len);
    up(m.last_idx, step_idx);
    ::embedding_forward(m.x, m.tokens, m.weights + m.spec.embed, nullptr, B, m.spec.C, m.stream);
    m.layers(B, B, 1, false);
    m.next_tokens(B, next);
  }
  return result;
}
