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
// The weight working copy. The ops read bf16 weights (weight_t): the model owns a whole bf16 working
// copy next to its fp32 master weights and hands the ops pointers into it (LlamaModel::weight), so
// no op needs the fp32 buffer and the master can be a ZeRO slice. The model remakes the copy from
// the master through params_changed() whenever it writes the parameters (load_params; a caller
// writing them directly calls model.params_changed()), and AdamW rewrites it in the same pass that
// updates the master weights, so a forward pass never reads a stale copy.
// Scratch buffers (RMSNorm dweight partials, attention delta, cross-entropy statistics, the bf16
// copy of the LM head's fp32 dlogits, the embedding-backward plan) grow to their largest size once
// and are reused, so training steps after the first allocate nothing.
// The state (stream, scratch, cuBLASLt context) is per process: one device per process.
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
// Free memory of the current device in bytes (cudaMemGetInfo): what a plan must fit.
size_t cuda_free_memory();

struct CudaBackend {
  static constexpr const char* name = "cuda";
  using act_t = __nv_bfloat16;
  using bf16 = __nv_bfloat16;
  static constexpr bool has_bf16_moments = true;  // adamw_update over uint16_t (bf16 bits) moments

  using weight_t = bf16;  // what the ops read: the model's bf16 working copy of its fp32 master weights

  // ---- the weight working copy and the process-wide state ----
  // The master weights [p, p + n) were written: their working copy [w, w + n) is remade, by the
  // cast kernel from device memory, or with p_on_host (pinned host master weights of the offloaded
  // optimizer, or any host buffer) rounded on the host cores and uploaded (2 B/param over PCIe).
  static void params_changed(bf16* w, const float* p, size_t n, bool p_on_host);
  static void release();  // frees the host staging, the scratch and the cuBLASLt context
  static void synchronize();

  // ---- the offloaded optimizer's transfers (model/offload.h) ----
  // A second stream, which does not synchronize with the compute stream, takes the gradients to
  // pinned host memory and brings the updated bf16 weights back while the compute stream runs the
  // next forward. transfer_begin (the model's thread, for a model of `params` parameters: the
  // host staging of the weights' uploads is sized for them) makes the stream and `events` numbered
  // events and starts the transfer stream after the compute stream's work so far (the gradients);
  // then only the worker thread uses the stream (transfer_thread first: selects the device) and
  // waits on the host for its events; transfer_end (the model's thread, after the worker ended)
  // closes it; release() in between is refused.
  static void transfer_begin(int events, size_t params);
  static void transfer_end();
  static void transfer_thread();
  static void download_async(float* host, const float* dev, size_t n);  // pinned host <- device
  static void zero_async(float* dev, size_t n);
  // Host master weights p [0, n), rounded to bf16 on the host, into the working copy w [0, n).
  static void upload_weights_async(bf16* w, const float* p, size_t n);
  static void transfer_record(int event);  // on the transfer stream, after what was issued there
  static void transfer_wait(int event);    // the calling thread waits for the recorded event

  // ---- memory (device; alloc is zero-filled) ----
  static void* alloc_bytes(size_t bytes);
  // Pinned host memory (cudaMallocHost), zero-filled: the offloaded master weights and moments.
  static void* alloc_host_bytes(size_t bytes);
  static void free_host_bytes(void* p);
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

  // ---- ops (same names and meaning as CpuBackend; weights are bf16 pointers into the working copy) ----
  static void embedding_forward(bf16* out, const int32_t* tokens, const bf16* table, const bf16* add, int N, int C);
  static void embedding_backward(float* dtable, const int32_t* tokens, const bf16* dout, int N, int C);
  static void rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const bf16* w, int N, int C, float eps);
  // res_out = res_in + branch (bf16), out = RMSNorm(res_out) * w: one kernel (the template uses it
  // instead of copy + accumulating GEMM + RMSNorm, see fuses_residual_rmsnorm).
  static constexpr bool fuses_residual_rmsnorm = true;
  static void residual_rmsnorm_forward(bf16* res_out, bf16* out, float* rstd, const bf16* res_in, const bf16* branch,
                                       const bf16* w, int N, int C, float eps);
  static void rmsnorm_backward(bf16* dx, float* dw, const bf16* dout, const bf16* x, const bf16* w,
                               const float* rstd, int N, int C);
  static void matmul_forward(bf16* out, const bf16* x, const bf16* w, const bf16* b, int N, int IC, int OC,
                             bool accumulate);
  static void matmul_forward(float* out, const bf16* x, const bf16* w, const bf16* b, int N, int IC, int OC,
                             bool accumulate);
  static void matmul_backward(bf16* dx, float* dw, float* db, const bf16* dout, const bf16* x, const bf16* w, int N,
                              int IC, int OC, bool accumulate_dx);
  static void matmul_backward(bf16* dx, float* dw, float* db, const float* dout, const bf16* x, const bf16* w, int N,
                              int IC, int OC, bool accumulate_dx);
  static void rope_apply(bf16* x, const int32_t* pos, const float* cos_t, const float* sin_t, int N, int heads, int D,
                         int64_t ld, bool backward);
  // Attention kernels: tensor cores (kernels/cuda/attention_tc.cuh, WMMA) by default, or the fp32
  // FMA kernels (kernels/cuda/attention.cuh, the reference path) with ENGINE_ATTENTION=fma in the
  // environment or set_attention_kernels (read once; any other value than fma / tensor-cores is an
  // error). Operands the tensor-core kernels cannot load as 16-byte vectors go to the FMA kernels.
  enum class AttentionKernels { tensor_cores, fma };
  static void set_attention_kernels(AttentionKernels k);
  static AttentionKernels attention_kernels();
  static void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int32_t* lo,
                                const int32_t* hi, const AttentionShape& s);
  static void attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q, const bf16* k,
                                 const bf16* v, const bf16* out, const float* lse, const int32_t* lo, const int32_t* hi,
                                 const AttentionShape& s);
  static void swiglu_forward(bf16* out, const bf16* gate_up, int N, int I);
  static void swiglu_backward(bf16* dgu, const bf16* dout, const bf16* gate_up, int N, int I);
  static void cross_entropy_forward_backward(float* logits, const int32_t* targets, int n, int V, float grad_scale,
                                             double* loss_sum);
  // The LM head fused with the cross-entropy over n rows, chunked over the vocabulary (v_chunk
  // columns at a time, kernels/cuda/cross_entropy.cuh): the model template uses it when the rows'
  // logits exceed its logits buffer (logits: n * v_chunk fp32). Adds the rows' losses to
  // *loss_sum; with dx (training) writes dx [n, C] through the fp32 accumulator dx_scratch
  // [n, C] and adds to dw.
  static constexpr bool has_vocab_chunked_lm_head = true;
  static void lm_head_cross_entropy(bf16* dx, float* dw, float* dx_scratch, float* logits, const bf16* x,
                                    const bf16* w, const int32_t* targets, int n, int C, int V, int v_chunk,
                                    float grad_scale, double* loss_sum);
  static void gather_rows(bf16* dst, const bf16* src, const int32_t* idx, int n, int C);
  static void scatter_rows(bf16* dst, const bf16* src, const int32_t* idx, int n, int C);
  // Logit-lens statistics of fp32 logit rows (kernels/cuda/lens.cuh).
  static void lens_stats(float* prob, int32_t* rank, int32_t* top1, const float* logits, const int32_t* gold, int n,
                         int V);
  static double sum_of_squares(const float* g, size_t n);
  // Updates the fp32 master weights p and rewrites their bf16 working copy w in the same pass;
  // `first` is p[0]'s index in the whole flat buffer (a ZeRO slice starts inside it), which seeds
  // the stochastic rounding of bf16 moments so that a slice draws the bits the whole buffer would.
  static void adamw_update(float* p, bf16* w, size_t first, const float* g, float* m, float* v, size_t n, float lr,
                           float b1, float b2, float eps, float wd, int step, float grad_scale);
  // The same with bf16 moments (raw bits), stored with stochastic rounding seeded by `step`, so a
  // resumed run draws the same rounding as an uninterrupted one.
  static void adamw_update(float* p, bf16* w, size_t first, const float* g, uint16_t* m, uint16_t* v, size_t n,
                           float lr, float b1, float b2, float eps, float wd, int step, float grad_scale);
  // The fused step (kernels/cuda/adamw.cuh): global norm, clipping and AdamW in two passes with no
  // host round trip between them, and the gradients zeroed in the update pass when zero_grads.
  // Returns the norm before clipping; the same bits as sum_of_squares + adamw_update + zero.
  static constexpr bool fuses_optimizer = true;
  static double adamw_clip_update(float* p, bf16* w, size_t first, float* g, float* m, float* v, size_t n, float lr,
                                  float b1, float b2, float eps, float wd, int step, float max_grad_norm,
                                  bool zero_grads);
  static double adamw_clip_update(float* p, bf16* w, size_t first, float* g, uint16_t* m, uint16_t* v, size_t n,
                                  float lr, float b1, float b2, float eps, float wd, int step, float max_grad_norm,
                                  bool zero_grads);

  // ---- memory conditioning (kernels/cuda/condition.cuh) ----
  static void condition_kv_forward(bf16* kv, const bf16* qkv, const float* slot, int rows, int T, int KVD,
                                   int64_t slot_stride, int64_t ld_qkv, int64_t k_offset);
  static void condition_kv_backward(bf16* d_qkv, float* d_slot, const bf16* d_kv, int rows, int T, int KVD,
                                    int64_t slot_stride, int64_t ld_qkv, int64_t k_offset);
  static void condition_embed_forward(bf16* out, const float* rows_src, const int32_t* row_of, int N, int C);
  static void condition_embed_backward(float* d_rows, const bf16* d_emb, int rows, int T, int C);

  // ---- KV-cache inference (kernels/cuda/decode.cuh; cache layout per layer [seqs, KV, len, D]) ----
  static void set_decoding(bool) {}  // the GPU path has no decoding-only variant of its ops
  static void kv_cache_write(bf16* k_cache, bf16* v_cache, const bf16* qkv, const int32_t* slot, const int32_t* pos,
                             int N, const KvShape& s);
  static void attention_decode(bf16* out, const bf16* qkv, const bf16* k_cache, const bf16* v_cache,
                               const int32_t* slot, const int32_t* pos, int N, const KvShape& s);
  static void argmax_rows(int32_t* out, const float* logits, int n, int V);
};

#include "kernels/cuda_memory_plan.h"  // cuda_memory_plan(), format_cuda_memory_plan()

// ---- data parallelism: one NCCL communicator per process ----
// On a GPU, NCCL is loaded at run time (libnccl.so.2) by the first cuda_comm_* call, so a
// single-GPU build and run need no NCCL at all; under CUDA_EMULATION the calls go to the
// emulator's multi-process fake (test/emu/nccl_fake.cpp).
std::string cuda_comm_unique_id();  // rank 0: a new NCCL unique id (its bytes)
// Selects device `local_rank` (one GPU per process; call before any allocation) and joins the
// communicator of `id` as `rank` of `world_size`.
void cuda_comm_init(const std::string& id, int rank, int world_size, int local_rank);
void cuda_comm_all_reduce_sum(float* device_data, size_t n);  // in place, over all ranks, in rank order on the fake
void cuda_comm_all_reduce_sum_host(double* host_values, int n);  // a few host values (loss, token counts, flags)
// ZeRO (model/zero_shards.h: each rank owns a contiguous slice of the flat parameter buffer; the
// slices differ in length by the rounding, so the scatter and gather are one ncclReduce /
// ncclBroadcast per owner inside a group, NCCL's form of a reduce-scatter / all-gather with
// unequal counts).
void cuda_comm_reduce_sum(float* device_data, size_t n, int root);  // in place; only root's result is defined
void cuda_comm_broadcast(float* device_data, size_t n, int root);   // in place, root's values to every rank
// bf16 values of the weights' working copy, root's `send` into every rank's `recv` (in place when
// they are the same; `send` is read on root only): the all-gather of the slices each rank has just
// updated (ZeRO 1/2, in place), or of one weight group into a gather buffer (ZeRO 3).
void cuda_comm_broadcast(const CudaBackend::bf16* send, CudaBackend::bf16* recv, size_t n, int root);
void cuda_comm_group_start();  // the calls up to cuda_comm_group_end progress together
void cuda_comm_group_end();
// The communication stream. Every cuda_comm_* call runs on a second stream that cuda_comm_init
// makes, ordered after all the work issued on the compute stream before the call (an event
// recorded there, which the communication stream waits for), so a bucket of gradients is reduced
// while the backward goes on. The compute stream must wait before it reads or overwrites what a
// call reads or writes: cuda_comm_wait(tag) waits for the calls issued up to the last
// cuda_comm_record(tag) (a tag is any small integer >= 0 the caller picks; one never recorded has
// nothing to wait for), cuda_comm_wait_all() for every call so far. The calls of the one
// communicator thus run in the order they are issued, as NCCL needs.
// ENGINE_DEBUG_SKIP_COMM_WAIT=1 makes cuda_comm_wait a no-op: a planted missing wait for the tests.
void cuda_comm_record(int tag);
void cuda_comm_wait(int tag);
void cuda_comm_wait_all();
void cuda_comm_add(float* acc, const float* x, size_t n);  // acc += x, on the communication stream
void cuda_comm_destroy();
