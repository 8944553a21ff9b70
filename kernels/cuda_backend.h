// The CUDA backend: the same op surface as CpuBackend (model/cpu_backend.h), so the one
// orchestration in model/llama.h runs on the GPU, with
//   - bf16 activations and activation gradients (act_t = bf16), fp32 accumulation in every kernel;
//   - fp32 master weights, fp32 gradients and fp32 AdamW moments (the model template's buffers),
//     or bf16 moments with stochastic rounding (--optimizer-state bf16, MomentDtype::bf16),
//     plus a bf16 working copy of the weights that the matmuls and the embedding read;
//   - the kernels of kernels/cuda/*.cuh and cuBLASLt matmuls.
// This header only declares, so that host code (model/llama.h, train_llama) compiles with g++ and
// only kernels/cuda_backend.cu goes through nvcc. Under g++ -DCUDA_EMULATION the same .cu runs on
// the CPU emulator (test/emu/): that is how the tests check whole training steps of this backend
// against the CPU backend.
//
// The weight working copy. The template hands the ops fp32 weight pointers (params + offset).
// After CudaBackend::bind_params(params, n) (cuda_bind_model(model) does it), every weight pointer
// inside [params, params + n) is served from a bf16 mirror at the same offset. The mirror is
// refreshed lazily after a write into the parameter range through upload/copy/zero, and AdamW
// rewrites it in the same pass that updates the master weights, so a forward pass never reads a
// stale copy. Scratch buffers (RMSNorm dweight partials, attention delta, cross-entropy statistics,
// the bf16 copy of the LM head's fp32 dlogits, the embedding-backward plan) grow to their largest
// size once and are reused, so training steps after the first allocate nothing.
// The state is per process (one device, one model), which is what train_llama and eval_factoids
// need; multi-GPU work will make it per rank.
#pragma once
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#if defined(CUDA_EMULATION)
#include "kernels/cuda/cuda_common.cuh"  // the emulated runtime and its bf16 type
#else
#include <cuda_bf16.h>
#endif
#include "kernels/cpu/ops.h"  // AttentionShape

// Number of CUDA devices (0 when there is no GPU or no driver): what --device auto asks. Programs
// call this rather than the CUDA runtime directly, so that only kernels/cuda_backend.cu talks to it.
int cuda_device_count();

struct CudaBackend {
  static constexpr const char* name = "cuda";
  using act_t = __nv_bfloat16;
  using bf16 = __nv_bfloat16;
  static constexpr bool has_bf16_moments = true;  // adamw_update over uint16_t (bf16 bits) moments

  // ---- the weight working copy and the process-wide state ----
  static void bind_params(const float* params, size_t n);
  static void release();  // frees the mirror, the scratch and the cuBLASLt context
  static void synchronize();

  // ---- memory (device; alloc is zero-filled) ----
  static void* alloc_bytes(size_t bytes);
  static size_t allocated_bytes();  // live bytes from alloc_bytes (the model's own buffers)
  static void free_bytes(void* p);
  static void upload_bytes(void* dst, const void* host, size_t bytes);
  static void download_bytes(void* host, const void* src, size_t bytes);
  static void copy_bytes(void* dst, const void* src, size_t bytes);
  static void zero_bytes(void* dst, size_t bytes);
  template <class T>
  static T* alloc(size_t n) { return static_cast<T*>(alloc_bytes(n * sizeof(T))); }
  template <class T>
  static void free(T* p) { free_bytes(p); }
  template <class T>
  static void upload(T* dst, const T* host, size_t n) { upload_bytes(dst, host, n * sizeof(T)); }
  template <class T>
  static void download(T* host, const T* src, size_t n) { download_bytes(host, src, n * sizeof(T)); }
  template <class T>
  static void copy(T* dst, const T* src, size_t n) { copy_bytes(dst, src, n * sizeof(T)); }
  template <class T>
  static void zero(T* x, size_t n) { zero_bytes(x, n * sizeof(T)); }

  // ---- ops (same names and meaning as CpuBackend; weights are fp32 pointers into params) ----
  static void embedding_forward(bf16* out, const int32_t* tokens, const float* table, const bf16* add, int N, int C);
  static void embedding_backward(float* dtable, const int32_t* tokens, const bf16* dout, int N, int C);
  static void rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const float* w, int N, int C, float eps);
  // res_out = res_in + branch (bf16), out = RMSNorm(res_out) * w: one kernel (the template uses it
  // instead of copy + accumulating GEMM + RMSNorm, see fuses_residual_rmsnorm).
  static constexpr bool fuses_residual_rmsnorm = true;
  static void residual_rmsnorm_forward(bf16* res_out, bf16* out, float* rstd, const bf16* res_in, const bf16* branch,
                                       const float* w, int N, int C, float eps);
  static void rmsnorm_backward(bf16* dx, float* dw, const bf16* dout, const bf16* x, const float* w,
                               const float* rstd, int N, int C);
  static void matmul_forward(bf16* out, const bf16* x, const float* w, const float* b, int N, int IC, int OC,
                             bool accumulate);
  static void matmul_forward(float* out, const bf16* x, const float* w, const float* b, int N, int IC, int OC,
                             bool accumulate);
  static void matmul_backward(bf16* dx, float* dw, float* db, const bf16* dout, const bf16* x, const float* w, int N,
                              int IC, int OC, bool accumulate_dx);
  static void matmul_backward(bf16* dx, float* dw, float* db, const float* dout, const bf16* x, const float* w, int N,
                              int IC, int OC, bool accumulate_dx);
  static void rope_apply(bf16* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int heads, int D,
                         int64_t ld, bool backward);
  static void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int32_t* lo,
                                const int32_t* hi, const AttentionShape& s);
  static void attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                                 const bf16* v, const bf16* out, const float* lse, const int32_t* lo, const int32_t* hi,
                                 const AttentionShape& s);
  static void swiglu_forward(bf16* out, const bf16* gate_up, int N, int I);
  static void swiglu_backward(bf16* dgu, const bf16* dout, const bf16* gate_up, int N, int I);
  static void cross_entropy_forward_backward(float* logits, const int32_t* targets, int n, int V, float grad_scale,
                                             double* loss_sum);
  static void gather_rows(bf16* dst, const bf16* src, const int32_t* idx, int n, int C);
  static void scatter_rows(bf16* dst, const bf16* src, const int32_t* idx, int n, int C);
  // Logit-lens statistics of fp32 logit rows (kernels/cuda/lens.cuh).
  static void lens_stats(float* prob, int32_t* rank, int32_t* top1, const float* logits, const int32_t* gold, int n,
                         int V);
  static double sum_of_squares(const float* g, size_t n);
  // Updates the fp32 master weights and rewrites their bf16 working copy in the same pass.
  static void adamw_update(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
                           float eps, float wd, int step, float grad_scale);
  // The same with bf16 moments (raw bits), stored with stochastic rounding seeded by `step`, so a
  // resumed run draws the same rounding as an uninterrupted one.
  static void adamw_update(float* p, const float* g, uint16_t* m, uint16_t* v, size_t n, float lr, float b1, float b2,
                           float eps, float wd, int step, float grad_scale);
};

// Binds a LlamaModel<CudaBackend>'s parameter buffer (call once after constructing the model).
template <class Model>
inline void cuda_bind_model(Model& m) {
  CudaBackend::bind_params(m.params, m.layout.total);
}

// ---- Batched greedy decoding with a KV cache (eval_factoids --device cuda) ----
// Prefill: the prompts of a batch, right-padded to the longest, go through the training kernels
// (flash attention with per-row key ranges) and each row's first prompt_len tokens are written to
// the per-layer cache [L][batch][KV][max_len][D]. Then one token per row per step: its k/v are
// appended at the row's own position and attention_decode reads the cache; the LM head runs only
// on the rows' last positions (fp32 logits) and argmax_kernel picks the token (lowest id on ties).
// The decoder keeps its own bf16 copy of the weights (converted on the host), nothing in fp32.
struct CudaDecoderLayer {
  size_t ln1, qkv_w, qkv_b /* SIZE_MAX: no bias */, o_w, ln2, gate_up_w, down_w;
};
struct CudaDecoderSpec {
  int C = 0, I = 0, L = 0, H = 0, KV = 0, D = 0, V = 0;
  float eps = 1e-5f;
  size_t embed = 0, final_norm = 0, lm_head = 0, total = 0;
  std::vector<CudaDecoderLayer> layers;
  std::vector<float> rope_cos, rope_sin;  // [max_len, D/2], from the CPU backend's rope tables
};

class CudaGreedyDecoder {
 public:
  // host_params: the flat fp32 parameters (model/params.h layout), spec.total floats.
  CudaGreedyDecoder(const CudaDecoderSpec& spec, const float* host_params, int max_batch, int max_len);
  ~CudaGreedyDecoder();
  CudaGreedyDecoder(const CudaGreedyDecoder&) = delete;
  CudaGreedyDecoder& operator=(const CudaGreedyDecoder&) = delete;
  // Greedy continuation of each prompt (at most max_batch prompts, each non-empty, prompt plus
  // max_new_tokens at most max_len): up to max_new_tokens ids per prompt, ending with a stop id
  // when one is generated.
  // stops_generation (optional, [vocab] or empty): further tokens that end a row's generation, as
  // GreedyOptions::stops_generation of model/decode.h (e.g. every token whose text has a newline).
  std::vector<std::vector<int32_t>> generate(const std::vector<std::vector<int32_t>>& prompts, int max_new_tokens,
                                             const std::vector<int32_t>& stop_ids,
                                             const std::vector<bool>& stops_generation = {});

 private:
  struct Impl;
  Impl* impl_;
};

// The decoder spec of a model (Config = LlamaConfig, Layout = ParamLayout; templated so that this
// header does not pull in the JSON config code).
template <class Config, class Layout>
inline CudaDecoderSpec cuda_decoder_spec(const Config& c, const Layout& layout, int max_len) {
  CudaDecoderSpec s;
  s.C = c.hidden_size;
  s.I = c.intermediate_size;
  s.L = c.num_hidden_layers;
  s.H = c.num_attention_heads;
  s.KV = c.num_key_value_heads;
  s.D = c.head_dim;
  s.V = c.vocab_size;
  s.eps = c.rms_norm_eps;
  s.embed = layout.embed;
  s.final_norm = layout.final_norm;
  s.lm_head = layout.lm_head;
  s.total = layout.total;
  for (const auto& l : layout.layers) s.layers.push_back({l.ln1, l.qkv_w, l.qkv_b, l.o_w, l.ln2, l.gate_up_w, l.down_w});
  std::vector<double> inv_freq(s.D / 2);
  const auto& r = c.rope_scaling;
  rope_inv_freq(inv_freq.data(), s.D, c.rope_theta, r.rope_type == "llama3", r.factor, r.low_freq_factor,
                r.high_freq_factor, r.original_max_position_embeddings);
  s.rope_cos.resize((size_t)max_len * s.D / 2);
  s.rope_sin.resize(s.rope_cos.size());
  rope_tables(s.rope_cos.data(), s.rope_sin.data(), inv_freq.data(), s.D, max_len);
  return s;
}

#include "kernels/cuda_memory_plan.h"  // cuda_memory_plan(), format_cuda_memory_plan()
