// The CPU backend: fp32 storage everywhere, ops from kernels/cpu. LlamaModel<Backend> is written
// against exactly this surface; the CUDA backend provides the same names (with bf16 act_t,
// device allocations and a stream) so the orchestration in model/llama.h is shared.
#pragma once
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cpu/ops.h"

struct CpuBackend {
  static constexpr const char* name = "cpu";
  using act_t = float;  // activations and their gradients
  // What the ops read as weights: the fp32 master weights themselves (the model's working copy of
  // the weights is its master buffer on this backend, so it cannot be a ZeRO slice).
  using weight_t = float;
  // Parameters and gradients are fp32 on every backend (master weights); the CPU backend keeps
  // fp32 AdamW moments only (--optimizer-state bf16 is refused: the CPU path is the reference).
  static constexpr bool has_bf16_moments = false;
  // The forward keeps copy + accumulating GEMM + RMSNorm for the residual adds (see model/llama.h).
  static constexpr bool fuses_residual_rmsnorm = false;
  static constexpr bool fuses_optimizer = false;  // model/adamw.h: norm, update and zeroing as separate passes

  template <class T>
  static T* alloc(size_t n) {  // zero-filled, 64-byte aligned
    size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
    if (bytes == 0) bytes = 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    return static_cast<T*>(p);
  }
  template <class T>
  static void free(T* p) { std::free(p); }
  template <class T>
  static void upload(T* dst, const T* host, size_t n) { std::memcpy(dst, host, n * sizeof(T)); }
  template <class T>
  static void download(T* host, const T* src, size_t n) { std::memcpy(host, src, n * sizeof(T)); }
  static void copy(float* dst, const float* src, size_t n) {
    // (a decoding step copies a few rows: starting threads would cost more than the copy)
#pragma omp parallel for schedule(static) if (n > (size_t(1) << 16))
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
  }
  static void zero(float* x, size_t n) { fill_zero(x, n); }

  static void embedding_forward(float* out, const int32_t* tokens, const float* table,
                                const float* add, int N, int C) {
    ::embedding_forward(out, tokens, table, add, N, C);
  }
  static void embedding_backward(float* dtable, const int32_t* tokens, const float* dout, int N, int C) {
    ::embedding_backward(dtable, tokens, dout, N, C);
  }
  static void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps) {
    ::rmsnorm_forward(out, rstd, x, w, N, C, eps);
  }
  static void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w,
                               const float* rstd, int N, int C) {
    ::rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C);
  }
  static void matmul_forward(float* out, const float* x, const float* w, const float* b, int N, int IC,
                             int OC, bool accumulate) {
    if (decoding_) ::matmul_forward_transposed(out, x, transposed(w, IC, OC), b, N, IC, OC, accumulate);
    else ::matmul_forward(out, x, w, b, N, IC, OC, accumulate);
  }
  static void matmul_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                              const float* w, int N, int IC, int OC, bool accumulate_dx) {
    ::matmul_backward(dx, dw, db, dout, x, w, N, IC, OC, accumulate_dx);
  }
  static void rope_apply(float* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N,
                         int heads, int D, int64_t ld, bool backward) {
    ::rope_apply(x, pos, cos_t, sin_t, N, heads, D, ld, backward);
  }
  static void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                const int32_t* lo, const int32_t* hi, const AttentionShape& s) {
    ::attention_forward(out, lse, q, k, v, lo, hi, s);
  }
  static void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                                 const float* k, const float* v, const float* out, const float* lse,
                                 const int32_t* lo, const int32_t* hi, const AttentionShape& s) {
    ::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, lo, hi, s);
  }
  static void swiglu_forward(float* out, const float* gate_up, int N, int I) { ::swiglu_forward(out, gate_up, N, I); }
  static void swiglu_backward(float* dgu, const float* dout, const float* gate_up, int N, int I) {
    ::swiglu_backward(dgu, dout, gate_up, N, I);
  }
  static void cross_entropy_forward_backward(float* logits, const int32_t* targets, int n, int V,
                                             float grad_scale, double* loss_sum) {
    ::cross_entropy_forward_backward(logits, targets, n, V, grad_scale, loss_sum);
  }
  static void gather_rows(float* dst, const float* src, const int32_t* idx, int n, int C) {
    ::gather_rows(dst, src, idx, n, C);
  }
  static void scatter_rows(float* dst, const float* src, const int32_t* idx, int n, int C) {
    ::scatter_rows(dst, src, idx, n, C);
  }
  static void lens_stats(float* prob, int32_t* rank, int32_t* top1, const float* logits, const int32_t* gold, int n,
                         int V) {
    ::lens_stats(prob, rank, top1, logits, gold, n, V);
  }
  static double sum_of_squares(const float* g, size_t n) { return ::sum_of_squares(g, n); }
  // w (the working copy, here p itself) and first (p[0]'s flat index) concern backends with a
  // separate working copy and stochastic rounding.
  static void adamw_update(float* p, float* /*w*/, size_t /*first*/, const float* g, float* m, float* v, size_t n,
                           float lr, float b1, float b2, float eps, float wd, int step, float grad_scale) {
    params_changed(p, n);
    ::adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, step, grad_scale);
  }

  // ---- memory conditioning (kernels/cpu/condition.cpp) ----
  static void condition_kv_forward(float* kv, const float* qkv, const float* slot, int rows, int T, int KVD,
                                   int64_t slot_stride, int64_t ld_qkv, int64_t k_offset) {
    ::condition_kv_forward(kv, qkv, slot, rows, T, KVD, slot_stride, ld_qkv, k_offset);
  }
  static void condition_kv_backward(float* d_qkv, float* d_slot, const float* d_kv, int rows, int T, int KVD,
                                    int64_t slot_stride, int64_t ld_qkv, int64_t k_offset) {
    ::condition_kv_backward(d_qkv, d_slot, d_kv, rows, T, KVD, slot_stride, ld_qkv, k_offset);
  }
  static void condition_embed_forward(float* out, const float* rows_src, const int32_t* row_of, int N, int C) {
    ::condition_embed_forward(out, rows_src, row_of, N, C);
  }
  static void condition_embed_backward(float* d_rows, const float* d_emb, int rows, int T, int C) {
    ::condition_embed_backward(d_rows, d_emb, rows, T, C);
  }

  // ---- KV-cache inference (kernels/cpu/decode.cpp) ----
  static void kv_cache_write(float* k_cache, float* v_cache, const float* qkv, const int32_t* slot,
                             const int32_t* pos, int N, const KvShape& s) {
    ::kv_cache_write(k_cache, v_cache, qkv, slot, pos, N, s);
  }
  static void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                               const int32_t* slot, const int32_t* pos, int N, const KvShape& s) {
    ::attention_decode(out, qkv, k_cache, v_cache, slot, pos, N, s);
  }
  static void argmax_rows(int32_t* out, const float* logits, int n, int V) { ::argmax_rows(out, logits, n, V); }

  // ---- the decoding GEMMs (model/cpu_backend.cpp) ----
  // Between set_decoding(true) and set_decoding(false) (LlamaModel's KV-cache prefill and decoding
  // steps) matmul_forward reads a transposed copy W^T [IC, OC] of each weight, made on its first
  // use: oneDNN's x W^T with W^T stored row-major ('N','N') runs 1.4-1.6x faster at decoding sizes
  // (32 rows) than reading W [OC, IC] transposed ('N','T'). Training never makes the copies.
  static void set_decoding(bool on) { decoding_ = on; }
  // The parameters [p, p + n) were written: their transposed copies are dropped (made again on
  // the next decoding use). LlamaModel calls it after loading parameters;
  // adamw_update calls it for the range it updates.
  static void params_changed(const float* p, size_t n);
  // The model's notice that its master weights [p, p + n) were written (LlamaModel::params_changed):
  // w == p here; the transposed copies of [w, w + n) are dropped.
  static void params_changed(float* w, const float* /*p*/, size_t n, bool /*p_on_host*/) { params_changed(w, n); }
  // The parameter buffer [p, p + n) is about to be freed (LlamaModel's destructor): the same.
  static void params_freed(const float* p, size_t n) { params_changed(p, n); }

 private:
  static inline bool decoding_ = false;
  static const float* transposed(const float* w, int IC, int OC);
};
