// The Llama forward/backward orchestration, written once over a Backend (model/cpu_backend.h; the
// CUDA backend provides the same static ops with bf16 activations).
//
// One training micro-step:
//   embedding -> L x [ RMSNorm -> fused qkv GEMM (+bias) -> RoPE(q,k) -> attention -> o GEMM
//                      (+= residual) -> RMSNorm -> fused gate|up GEMM -> SwiGLU -> down GEMM
//                      (+= residual) ] -> final RMSNorm -> LM head + cross-entropy (fused,
//   chunked, only over tokens that carry a loss) -> the backward of all of it, accumulating
//   parameter gradients (so micro-batches of one optimizer batch simply add up).
//
// Memory plan: every activation buffer is sized once from (max_rows, max_T, config) in the
// constructor; a step allocates nothing. What is kept per layer for the backward: the residual
// input, the mid-layer residual, both RMSNorm outputs and 1/rms, qkv after RoPE, the attention
// output and its log-sum-exp, gate|up and the SwiGLU output (ModelUse::train; see model/model_use.h),
// except what TrainMemory::recompute rebuilds in the backward from what it kept (recompute_layer,
// calling again the parts of the one layer forward).
//
// Inference with a KV cache (kv_reserve / kv_prefill / kv_decode) runs the same layer loop
// (run_layers): a prefill is the forward over right-padded prompt rows (a padding token attends to
// itself only, through the per-query key ranges) that also writes each real token's key/value to
// the cache (Backend::kv_cache_write); a decoding step is one token per sequence whose attention
// reads the cache (Backend::attention_decode). The greedy and scoring loops over these steps are
// model/decode.h; a backend's decoding tricks stay behind its ops (model/cpu_backend.h).
//
// Weights: the fp32 master weights `params` (what the optimizer updates and checkpoints save) and
// their working copy `weights` in the backend's weight type (Backend::weight_t), which every op of
// the forward and the backward reads through weight(offset): on the CPU backend the master buffer
// itself, on the CUDA backend a whole bf16 copy. At ZeRO >= 1 (TrainMemory::shard_count) `params`
// holds only this rank's slice of the master weights, while `weights` stays whole (the trainer
// all-gathers the updated slices). Parameters are written through the template (load_params,
// optimizer_step), which keeps the working copy current (Backend::params_changed: the CUDA cast,
// the CPU decoding GEMMs' transposed weights dropped); a caller that writes `params` directly calls
// params_changed() afterwards. With the offloaded optimizer the update of a step runs on a host
// thread after optimizer_step returns (model/offload.h); weight(offset) and grad(offset) wait for
// the tensor's group, and every method that touches the state otherwise calls
// finish_pending_update() first. ZeRO 3 (on_weights_begin, docs/distributed.md): weight(offset)
// reads from the weight group that the caller gathered for the ops running now.
//
// Hooks: hidden_state(l) hands out the residual stream entering layer l (logit lens, layer
// swapping) without a copy; embedding_forward takes an additive per-token vector; `causal = false`
// makes every token attend its whole example (an encoder); `condition` puts a memory slot in front
// of each row's keys/values in every layer and adds a per-row vector to its embeddings (Larimar,
// docs/larimar.md), inside this one forward/backward and the KV-cache steps.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/nvtx.h"  // forward / lm_head_loss / backward ranges (no-ops in the CPU build)
#include "dataloader/batch.h"
#include "kernels/cpu/ops.h"  // AttentionShape and the host-side RoPE tables, shared by backends
#include "model/adamw.h"
#include "model/config.h"
#include "model/model_use.h"  // train | inference | analysis: what the constructor plans
#include "model/offload.h"    // the offloaded AdamW overlapped with the next forward
#include "model/params.h"
#include "model/zero_shards.h"  // kShardStagingFloats

template <class Backend>
struct LlamaModel {
  using act_t = typename Backend::act_t;
  using weight_t = typename Backend::weight_t;

  LlamaConfig cfg;
  ParamLayout layout;
  int max_rows = 0, max_T = 0;
  int64_t max_N = 0;
  int C = 0, I = 0, L = 0, H = 0, KV = 0, D = 0, V = 0, QKV = 0;
  int rope_len = 0;   // positions must be < rope_len
  int head_chunk = 0; // tokens per LM-head chunk

  // fp32 master parameters, their gradients and the AdamW moments (flat, see model/params.h).
  // params and the moments cover the optimizer slice [opt_begin, opt_begin + opt_count): params[i]
  // is the flat parameter opt_begin + i (the whole buffer unless TrainMemory shards it).
  // The moments are fp32 (adam_m, adam_v) or, with MomentDtype::bf16, raw bf16 bit patterns
  // (adam_m16, adam_v16) updated with stochastic rounding; the other pair stays null.
  float* params = nullptr;
  // The working copy the ops read (== params on the CPU): whole, or at ZeRO 3 the optimizer slice
  // (weights[i] is the flat parameter opt_begin + i) with the two buffers its groups are gathered
  // into (weight_gather, TrainMemory::weight_gather values each).
  weight_t* weights = nullptr;
  weight_t* weight_gather[2] = {nullptr, nullptr};
  float* shard_staging = nullptr;  // sharded master only: kShardStagingFloats (or fewer) device floats
  float* grads = nullptr;
  float* adam_m = nullptr;
  float* adam_v = nullptr;
  uint16_t* adam_m16 = nullptr;
  uint16_t* adam_v16 = nullptr;
  MomentDtype moment_dtype = MomentDtype::f32;
  int adam_step = 0;
  bool grads_zeroed_by_optimizer = false;  // optimizer_step left the gradients zero
  // The slice [opt_begin, opt_begin + opt_count) of the flat buffer that optimizer_step updates
  // and params and the moments cover: all of it, or this rank's ZeRO shard (TrainMemory).
  size_t opt_begin = 0, opt_count = 0;
  // Called during the backward each time the gradients of a contiguous range [begin, end) of the
  // flat buffer are complete for this micro-batch (the LM head, the final norm, each layer from
  // the last, the embedding): data parallelism reduces them over the ranks while the backward
  // goes on. Unset: nothing is called.
  std::function<void(size_t begin, size_t end)> on_grads_ready;
  // ZeRO 2 (TrainMemory::grad_staging): `grads` is null; this rank keeps the fp32 gradients of its optimizer
  // slice only (grad_shard, opt_count floats: summed over the ranks and the micro-batches by the
  // caller) and a staging buffer (grad_staging). Before the backward writes the group [begin, end)
  // of the flat buffer, on_grads_begin(begin, end) says where in the staging it goes (the model
  // zeroes it there, since the ops add into their gradients); grad() serves it from there until
  // on_grads_ready reports the group complete, when the caller reduces it to its owners.
  float* grad_shard = nullptr;
  float* grad_staging = nullptr;
  size_t grad_staging_count = 0;
  std::function<float*(size_t begin, size_t end)> on_grads_begin;
  // ZeRO 3 (docs/distributed.md, "ZeRO 3"): the ops read each weight group from where
  // the caller gathered it. A group is a contiguous range of the flat layout: the embedding, layer
  // l with the next layer's input norm (or the final norm after the last layer: CUDA's fused
  // residual add + RMSNorm at the end of layer l reads it), the LM head (the embedding when tied).
  // At the start of a group's ops the model calls on_weights_begin(group, next): the caller
  // returns where the whole group lives, ready for the compute stream, and may start gathering
  // `next` (empty: none) into another buffer, which the model then stops reading. weight() serves
  // only the groups so returned (a `check` otherwise). Unset: `weights` is whole and read directly.
  // (ZeRO 1/2 set it too, to wait for each group's part of the all-gather after a step.)
  struct WeightRange {
    size_t begin = 0, end = 0;
    bool empty() const { return end <= begin; }
    bool operator==(const WeightRange&) const = default;
  };
  std::function<const weight_t*(WeightRange group, WeightRange next)> on_weights_begin;
  // Counts the writes of the working copy (load_params, params_changed, the optimizer steps): a
  // group gathered before the last one is stale, and weight() serves no group until announced again.
  uint64_t weights_version = 0;

  // Per-layer saved activations.
  struct LayerActs {
    act_t *res_in, *ln1, *qkv, *att, *res_mid, *ln2, *gate_up, *swiglu;
    float *rstd1, *rstd2, *lse;
  };
  std::vector<LayerActs> acts;
  act_t* res_out = nullptr;  // residual stream after the last layer
  act_t* lnf = nullptr;
  float* rstdf = nullptr;
  // Gradient scratch (reused by every layer).
  act_t *d_res = nullptr, *d_ln = nullptr, *d_qkv = nullptr, *d_att = nullptr, *d_gu = nullptr,
        *d_h = nullptr, *d_lnf = nullptr;
  // LM head: compacted rows that carry a loss, their gradient, and one chunk of logits; the
  // logit lens normalizes its gathered rows into head_dx with 1/rms in head_rstd.
  act_t *head_x = nullptr, *head_dx = nullptr;
  float* logits_chunk = nullptr;
  float* head_rstd = nullptr;
  // Logit-lens statistics per gathered row (prob, rank, top-1).
  float* lens_prob = nullptr;
  int32_t *lens_rank = nullptr, *lens_top1 = nullptr;
  // Batch metadata in backend memory.
  int32_t *tokens = nullptr, *positions = nullptr, *seg_start = nullptr, *key_hi = nullptr,
          *loss_rows = nullptr, *loss_targets = nullptr;
  float *rope_cos = nullptr, *rope_sin = nullptr;
  // Host staging (sized once).
  std::vector<int32_t> host_key_hi, host_loss_rows, host_loss_targets;
  // Shape of the last forward.
  int cur_rows = 0, cur_T = 0;
  // Optional [rows*T, C] vector added to the token embeddings (room for a memory readout);
  // backend memory, set by the caller before forward(), nullptr = none.
  const act_t* embed_add = nullptr;
  // false: every token attends to the whole of its example (columns [seg_start, last column of
  // the example]), not only to the tokens before it: a bidirectional encoder (larimar/encoder.h).
  bool causal = true;

  // ---- memory conditioning (Larimar: larimar/decoder.h makes the vectors) ----
  // With condition.slot set (backend memory, fp32 [seqs, L, KV*D]), each row r of a forward (or
  // sequence s of a prefill) gets in every layer l one extra key/value slot in front of its
  // tokens, the vector slot[r, l] serving as both key and value; its tokens move one position on
  // (the slot is position 0, where RoPE is the identity, so the slot is not rotated). The optional
  // condition.embed (fp32 [seqs, C]) is added to every token embedding of row r. Needs
  // plan_condition() once. A conditioned row holds one example (seg_start 0, or its own column
  // for padding), so that every token sees the slot. Unconditioned (slot == nullptr), the
  // forward and backward are exactly the plain model's.
  struct Condition {
    const float* slot = nullptr;
    const float* embed = nullptr;
    int seqs = 0;  // rows of slot/embed
  } condition;
  // Gradients of the last conditioned forward_backward w.r.t. its rows of condition.slot
  // [rows, L, KV*D] and condition.embed [rows, C]: overwritten, scaled like the loss.
  float *d_slot = nullptr, *d_embed = nullptr;
  void plan_condition();
  bool conditioned() const { return condition.slot != nullptr; }
  // Condition c seen from its row `first` on (a loop over chunks of rows hands each chunk its own).
  Condition condition_rows(const Condition& c, size_t first) const {
    if (!c.slot) return c;
    check(first <= (size_t)c.seqs, "condition_rows: row ", first, " of ", c.seqs);
    return {c.slot + first * (size_t)L * KV * D, c.embed ? c.embed + first * (size_t)C : nullptr, c.seqs - (int)first};
  }
  // Bytes allocated by the plan: parameters + gradients + AdamW moments, and everything else.
  size_t param_state_bytes = 0, activation_bytes = 0;
  // Host (pinned) bytes: the offloaded master weights and moments, and the two gradient chunks.
  size_t host_bytes = 0;
  static constexpr size_t kOffloadChunk = (size_t)1 << 24;  // gradients copied to the host at a time
  float* offload_chunk = nullptr;                           // two chunks (the overlapped update's double buffer)
  ModelUse use = ModelUse::train;
  // Activation recompute and optimizer offload (training; model/model_use.h). With
  // memory.offload_optimizer, params, adam_m and adam_v are pinned host memory (grads stay on the
  // device) and optimizer_step runs the CPU AdamW op over chunks of gradients copied to the host,
  // by default overlapped with the next forward (model/offload.h): a caller reading params,
  // adam_m, adam_v or grads directly calls finish_pending_update() first.
  TrainMemory memory;
  OffloadSchedule offload_schedule = OffloadSchedule::overlapped;  // ENGINE_DEBUG_OFFLOAD, or set by tests

  // KV cache (kv_reserve): per layer, k and v of `seqs` sequences of up to `len` positions, in
  // the backend's layout (KvShape); length[s] = positions filled in sequence s.
  struct KvCache {
    act_t *k = nullptr, *v = nullptr;  // [L][seqs * len * KV * D]
    int seqs = 0, len = 0;
    std::vector<int32_t> length;
  } kv;
  float* kv_logits = nullptr;  // [kv.seqs, V]: logits after each sequence's last token of a step
  int32_t *kv_slot = nullptr, *kv_pos = nullptr, *kv_next = nullptr;

  LlamaModel(const LlamaConfig& c, int max_rows, int max_T, MomentDtype moments = MomentDtype::f32,
             ModelUse use = ModelUse::train, TrainMemory memory = {});
  LlamaModel(const LlamaConfig& c, int max_rows, int max_T, ModelUse use)
      : LlamaModel(c, max_rows, max_T, MomentDtype::f32, use) {}
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  // Parameters from host memory ([layout.total] fp32), and the notice after a direct write.
  void load_params(const float* host) { load_params(host, 0, layout.total); }
  // Parameters [offset, offset + n) from host memory (one tensor, e.g. a layer swap): the part
  // inside the master slice goes to `params`; the working copy is remade from the master, or with
  // a sharded master (whose slice does not hold the rest) from the host values.
  void load_params(const float* host, size_t offset, size_t n) {
    check(offset <= layout.total && n <= layout.total - offset, "load_params: [", offset, ", ", offset + n,
          ") is outside the ", layout.total, " parameters");
    finish_pending_update();
    const size_t a = std::max(offset, opt_begin), b = std::min(offset + n, opt_begin + opt_count);
    if (a < b) Backend::upload(params + (a - opt_begin), host + (a - offset), b - a);
    weights_changed();
    if (sharded_weights()) {
      if (a < b) Backend::params_changed(slice_weights() + (a - opt_begin), host + (a - offset), b - a, true);
    } else if (sharded_master()) {
      Backend::params_changed(weights + offset, host, n, true);
    } else {
      Backend::params_changed(weights + offset, params + offset, n, memory.offload_optimizer);
    }
  }
  // After a direct write to `params`: the working copy of the master slice is remade (with a
  // sharded master the rest of the copy is the owners': the trainer all-gathers it).
  void params_changed() {
    finish_pending_update();
    weights_changed();
    Backend::params_changed(slice_weights(), params, opt_count, memory.offload_optimizer);
  }
  // ZeRO: `params` holds only the optimizer slice of the master weights; at ZeRO 3 so does `weights`.
  bool sharded_master() const { return opt_begin != 0 || opt_count != layout.total; }
  bool sharded_weights() const { return memory.weight_gather > 0; }
  // The working copy of the optimizer slice (what AdamW rewrites with the master weights).
  weight_t* slice_weights() const { return sharded_weights() ? weights : weights + opt_begin; }
  // The weight and the gradient of the tensor at `offset` of the flat layout, as the ops of the
  // forward and the backward take them: every op call goes through these two, so that where a
  // weight or a gradient lives (whole buffers, a rank's shard, a gathered layer) is decided here,
  // and when it is ready: an offloaded update in flight is waited for up to the tensor's group.
  const weight_t* weight(size_t offset) const {
    wait_for_update(offset);
    if (!on_weights_begin) {
      check(!sharded_weights(), "weight: ZeRO 3 holds a slice of the weights: no on_weights_begin gathers them");
      return weights + offset;
    }
    for (const WeightWindow& w : weight_windows)
      if (offset >= w.range.begin && offset < w.range.end) return w.at + (offset - w.range.begin);
    check(false, "weight: the weight at ", offset, " is in no gathered group (ZeRO 3)");
    return nullptr;
  }
  float* grad(size_t offset) {
    wait_for_update(offset);
    for (const GradWindow& w : grad_windows)
      if (offset >= w.begin && offset < w.end) return w.at + (offset - w.begin);
    check(grads != nullptr, "grad: the gradient at ", offset, " is in no open staging group (ZeRO 2)");
    return grads + offset;
  }
  // The gradients of the optimizer slice [opt_begin, opt_begin + opt_count): what the step reads.
  float* slice_grads() { return grads ? grads + opt_begin : grad_shard; }
  const float* slice_grads() const { return grads ? grads + opt_begin : grad_shard; }
  // The offloaded update in flight (model/offload.h): its groups up to the one holding `offset`,
  // or all of it. Without one (every backend but an offloading CUDA model), nothing.
  void wait_for_update(size_t offset) const {
    if constexpr (kTransfers)
      if (offload_update && offset >= offload_update->ready_end) offload_update->need(offset);
  }
  void finish_pending_update() const {
    if constexpr (kTransfers)
      if (offload_update) offload_update->finish();
  }

  // After optimizer_step the gradients are already zero (zeroed in the optimizer pass), and the
  // memset is skipped unless a backward added to them since; a direct write to `grads` between
  // optimizer_step and zero_grad would be kept.
  void zero_grad() {
    check(use == ModelUse::train, "zero_grad: the model was planned for inference only");
    if (!grads_zeroed_by_optimizer) {
      finish_pending_update();
      Backend::zero(grads ? grads : grad_shard, grads ? layout.total : opt_count);
    }
    grads_zeroed_by_optimizer = false;
  }

  // Forward through the final norm (keeps what the backward needs). Validates the batch.
  void forward(const Batch& b);
  // Training micro-step: forward, loss, backward; parameter gradients are ADDED to `grads`.
  // The loss and gradients are normalized by `optimizer_batch_targets`, the number of target
  // tokens of the whole optimizer batch. Returns this micro-batch's share of the batch loss
  // (sum of its token losses / optimizer_batch_targets), so the shares add up to the batch loss.
  double forward_backward(const Batch& b, int64_t optimizer_batch_targets);
  // Evaluation (held-out loss): the same forward and LM-head cross-entropy over the tokens that
  // carry a loss, without the backward. Returns the sum of their losses in nats; their count is
  // b.num_target_tokens. Parameter gradients are untouched.
  double forward_loss(const Batch& b);
  // Inference: logits [rows*T, V] (host memory) for every position of the batch.
  void forward_logits(const Batch& b, float* logits_host);
  // Inference: logits [token_index.size(), V] (host memory) for the given flat token indices
  // (r*T + t) only, e.g. the last prompt token of each row or the answer positions.
  void forward_logits_at(const Batch& b, const std::vector<int32_t>& token_index, float* logits_host);
  // Logit lens on the last forward(): the final RMSNorm and the LM head applied to the residual
  // stream entering layer l (l == 0: the embeddings; l == L: after the last layer, where it gives
  // the model's own logits) at the given flat token indices: logits [token_index.size(), V] (host).
  void lens_logits(int l, const std::vector<int32_t>& token_index, float* logits_host);
  // The same rows reduced on the backend to the statistics of their gold tokens (gold[i] for
  // token_index[i]): probability, rank and top-1 token, host arrays of token_index.size() (see
  // lens_stats in kernels/cpu/ops.h). Only these leave the backend, not the logits.
  void lens_stats(int l, const std::vector<int32_t>& token_index, const std::vector<int32_t>& gold, float* prob,
                  int32_t* rank, int32_t* top1);
  // One optimizer step over the accumulated gradients (clipping, AdamW). Returns the global
  // gradient norm before clipping. When the step covers the whole buffer it also leaves the
  // gradients zero (zeroed in the update pass on fusing backends) and the next zero_grad skips its
  // memset.
  // With a ZeRO shard only the slice [opt_begin, opt_begin + opt_count) is updated, and
  // `sum_over_ranks` makes its squared gradient norm the whole model's (see adamw_step).
  double optimizer_step(const AdamWConfig& opt, const std::function<double(double)>& sum_over_ranks = nullptr) {
    check(use == ModelUse::train, "optimizer_step: the model was planned for inference only");
    weights_changed();
    if (memory.offload_optimizer) return offloaded_optimizer_step(opt);
    const AdamWTarget<Backend> p{params, slice_weights(), opt_begin};
    float* g = slice_grads();
    const bool whole = opt_begin == 0 && opt_count == layout.total;
    grads_zeroed_by_optimizer = whole;
    if constexpr (Backend::has_bf16_moments) {
      if (moment_dtype == MomentDtype::bf16)
        return whole ? adamw_step_zero_grads<Backend>(p, g, adam_m16, adam_v16, opt_count, ++adam_step, opt, sum_over_ranks)
                     : adamw_step<Backend>(p, g, adam_m16, adam_v16, opt_count, ++adam_step, opt, sum_over_ranks);
    }
    return whole ? adamw_step_zero_grads<Backend>(p, g, adam_m, adam_v, opt_count, ++adam_step, opt, sum_over_ranks)
                 : adamw_step<Backend>(p, g, adam_m, adam_v, opt_count, ++adam_step, opt, sum_over_ranks);
  }
  // The offloaded step: the global norm on the device, then the CPU AdamW op (kernels/cpu/adamw.cpp,
  // OpenMP over the host cores) on the pinned master weights and moments over the gradients copied
  // to the host. Overlapped (model/offload.h): started group by group on a worker thread, which
  // also zeroes the gradients, and waited for by the next forward. Serial: chunk by chunk here,
  // then the bf16 working copy is remade from the host (params_changed). Traffic over PCIe:
  // 4 B/param of gradients down, 2 B/param of bf16 weights up.
  double offloaded_optimizer_step(const AdamWConfig& o) {
    finish_pending_update();
    const size_t n = layout.total;
    const double norm = std::sqrt(Backend::sum_of_squares(grads, n));
    const float scale = clip_scale(norm, o.max_grad_norm);
    ++adam_step;
    if constexpr (kTransfers) {
      if (offload_schedule != OffloadSchedule::serial) {
        offload_update->start(o, adam_step, scale, offload_schedule == OffloadSchedule::lazy);
        grads_zeroed_by_optimizer = true;
        return norm;
      }
    }
    grads_zeroed_by_optimizer = false;  // zero_grad() zeroes them
    for (size_t i = 0; i < n; i += kOffloadChunk) {
      const size_t m = std::min(kOffloadChunk, n - i);
      Backend::download(offload_chunk, grads + i, m);
      ::adamw_update(params + i, offload_chunk, adam_m + i, adam_v + i, m, o.lr, o.beta1, o.beta2, o.eps,
                     o.weight_decay, adam_step, scale);
    }
    params_changed();
    return norm;
  }
  // The same step with a clipping factor computed elsewhere: clip_scale of a global norm over
  // several models' gradients (Larimar: decoder, encoder and host parameters), to which
  // grad_sum_of_squares() contributes this model's (optimizer slice's) share.
  double grad_sum_of_squares() const {
    finish_pending_update();
    return Backend::sum_of_squares(slice_grads(), opt_count);
  }
  void optimizer_step_scaled(const AdamWConfig& opt, float scale) {
    check(use == ModelUse::train, "optimizer_step: the model was planned for inference only");
    check(!memory.offload_optimizer, "optimizer_step_scaled: not with the offloaded optimizer");
    grads_zeroed_by_optimizer = false;
    weights_changed();
    const AdamWTarget<Backend> p{params, slice_weights(), opt_begin};
    const float* g = slice_grads();
    if constexpr (Backend::has_bf16_moments) {
      if (moment_dtype == MomentDtype::bf16)
        return adamw_apply<Backend>(p, g, adam_m16, adam_v16, opt_count, ++adam_step, opt, scale);
    }
    adamw_apply<Backend>(p, g, adam_m, adam_v, opt_count, ++adam_step, opt, scale);
  }
  // The moments of the optimizer slice (opt_count values each) as fp32 on the host (checkpoints;
  // bf16 -> fp32 is exact), and back (fp32 -> bf16 rounds to nearest even, exact for moments
  // saved from a bf16 run, so a resume is bit-exact).
  void download_moments(float* m_host, float* v_host) const;
  void upload_moments(const float* m_host, const float* v_host);
  // The backward of the last forward() from a gradient the caller wrote into d_lnf [rows*T, C]
  // (the output of the final norm), e.g. an encoder's pooled output; parameter gradients are added.
  void backward_from_lnf();
  // Residual stream entering layer l (l == L: after the last layer), [rows*T, C]; kept for every
  // layer by ModelUse::train and ModelUse::analysis.
  const act_t* hidden_state(int l) const { return l == L ? res_out : acts[l].res_in; }

  // ---- KV-cache inference ----
  // A cache for `seqs` sequences of up to `len` positions (kept, grown on demand; RoPE tables
  // grow to `len`), all empty.
  void kv_reserve(int seqs, int len);
  void kv_reset() { std::fill(kv.length.begin(), kv.length.end(), 0); }
  // Prefill: prompts[first + s] becomes sequence s (s < n, each empty before); kv_logits row s
  // holds the logits after its last token. Rows are run together as far as max_rows * max_T
  // tokens (padding included) allow.
  void kv_prefill(const std::vector<std::vector<int32_t>>& prompts, size_t first, int n);
  // Decoding step: tokens[i] is appended to sequence slots[i] (distinct); kv_logits row i holds
  // the logits after it.
  void kv_decode(const std::vector<int32_t>& tokens, const std::vector<int32_t>& slots);
  // The greedy choice (lowest id on ties) of kv_logits rows [0, n), into host memory.
  void kv_argmax(int n, int32_t* host_out) {
    Backend::argmax_rows(kv_next, kv_logits, n, V);
    Backend::download(host_out, kv_next, (size_t)n);
  }

 private:
  // Backends with a transfer stream (CUDA) run the offloaded update overlapped (model/offload.h).
  static constexpr bool kTransfers = requires { Backend::transfer_begin(0, size_t{0}); };
  std::unique_ptr<OffloadedUpdate<Backend>> offload_update;  // with memory.offload_optimizer
  std::vector<void*> owned;  // every allocation of the plan, freed once
  template <class T>
  T* plan(size_t n, bool param_state = false) {
    (param_state ? param_state_bytes : activation_bytes) += n * sizeof(T);
    T* p = Backend::template alloc<T>(n);
    owned.push_back(p);
    return p;
  }
  // Pinned host memory on backends that have it (the offloaded optimizer state).
  std::vector<void*> owned_host;
  template <class T>
  T* plan_host(size_t n) {
    if constexpr (requires { Backend::alloc_host_bytes(size_t{}); }) {
      host_bytes += n * sizeof(T);
      T* p = static_cast<T*>(Backend::alloc_host_bytes(n * sizeof(T)));
      owned_host.push_back(p);
      return p;
    } else {
      fail("--offload-optimizer: the ", Backend::name, " backend has no device to offload from (use --device cuda)");
    }
  }
  void release(void* p) {  // frees one planned buffer early (a table or cache that grows)
    if (!p) return;
    owned.erase(std::find(owned.begin(), owned.end(), p));
    Backend::free(p);
  }
  // Where attention finds its keys: the batch itself (training, forward), the batch while also
  // writing them to the cache (prefill), or the cache (decoding step).
  enum class Keys { batch, batch_to_cache, cache };
  // Embedding, the L layers and the final norm over N = shape.rows * shape.Tq tokens in `tokens`
  // / `positions` (and seg_start / key_hi, kv_slot / kv_pos as `keys` needs them).
  void run_layers(const AttentionShape& shape, Keys keys, const act_t* add);
  void layer_norm1(int l, int N);
  void layer_attention(int l, const AttentionShape& shape, Keys keys);
  void layer_attention_output(int l, int N);
  void layer_mlp(int l, int N);
  void layer_output(int l, int N);
  void recompute_layer(int l);
  void make_rope_tables(int positions);
  // The weight groups (on_weights_begin) and the ones weight() serves now.
  WeightRange embed_weights() const { return {layout.embed, layout.embed + (size_t)V * C}; }
  WeightRange layer_weights(int l) const { return {layout.layers[l].ln1, layout.layer_end(l) + (size_t)C}; }
  WeightRange head_weights() const { return {layout.lm_head, layout.lm_head + (size_t)V * C}; }
  WeightRange final_norm_weights() const { return {layout.final_norm, layout.final_norm + (size_t)C}; }
  // The forward's groups in order: i = 0 the embedding, then layer i - 1 (no layers: the final
  // norm), each with the next one to prefetch (after the last layer the LM head); the backward's:
  // layer l with layer l - 1.
  void use_forward_weights(int i) {
    if (i == 0) use_weights(embed_weights(), L > 0 ? layer_weights(0) : final_norm_weights());
    else if (L == 0) use_weights(final_norm_weights(), head_weights());
    else use_weights(layer_weights(i - 1), i < L ? layer_weights(i) : head_weights());
  }
  void use_backward_weights(int l) { use_weights(layer_weights(l), l > 0 ? layer_weights(l - 1) : WeightRange{}); }
  struct WeightWindow {
    WeightRange range;
    const weight_t* at;
  };
  std::vector<WeightWindow> weight_windows;
  // Before the ops of `group`: where it lives (on_weights_begin), `next` starting to gather.
  void use_weights(WeightRange group, WeightRange next);
  void weights_changed() {
    ++weights_version;
    weight_windows.clear();
  }
  // The staging groups open in the backward (ZeRO 2): at most the tied embedding and one more.
  struct GradWindow {
    size_t begin, end;
    float* at;
  };
  std::vector<GradWindow> grad_windows;
  // Before the backward writes the gradients of [begin, end): with on_grads_begin, places the
  // group in the staging (zeroed) unless it is open already (the tied embedding).
  void open_grads(size_t begin, size_t end);
  // The gradients of [begin, end) are complete for this micro-batch: reported, and closed.
  void grads_ready(size_t begin, size_t end);
  // A micro-batch without targets runs no ops, but the hooks see what a forward and backward
  // would announce, in the same order (the gradient groups zero): every rank issues the same
  // collectives (ZeRO 3's gathers, the reductions) whatever its data.
  void empty_forward_backward();
  // Conditioning buffers (plan_condition): per layer the keys|values with the slot in front
  // [max_rows * (max_T + 1), 2*KV*D] (one shared buffer for inference), their gradient, the
  // per-token embedding addition, its row index, and where a prefill writes each entry.
  std::vector<act_t*> cond_kv;
  act_t *d_cond_kv = nullptr, *cond_add = nullptr;
  int32_t *cond_row = nullptr, *cond_seq = nullptr, *cond_pos = nullptr;
  int64_t cond_entries = 0;    // max_rows * (max_T + 1)
  int cond_first = 0;          // the sequence of a run's first row (a prefill's chunk)
  bool cur_conditioned = false, cur_cond_embed = false;  // of the last forward, for its backward
  std::vector<int32_t> host_key_lo, host_positions, host_cond_row;
  // The conditioned attention of run_layers, and the embedding addition for row_of (host).
  const act_t* condition_embedding(const std::vector<int32_t>& row_of, int N);
  void validate_and_upload(const Batch& b);
  int gather_loss_rows(const Batch& b);  // rows with a target -> head_x, loss_targets; returns their count
 public:
  // The LM head over n loss rows goes by chunks of the vocabulary (Backend::lm_head_cross_entropy)
  // when their logits exceed the logits buffer (head_chunk x V) and the backend has that op:
  // chunks of v_chunk columns (a multiple of 64 when possible) for all rows at once, so the LM
  // head's weight and fp32 gradient are streamed once per step instead of once per token chunk.
  // Training also needs the gate|up gradient scratch to hold the fp32 dx accumulator (I >= C).
  // Returns the chunk width, or 0: chunks of head_chunk tokens over the whole vocabulary.
  int vocab_chunk(int n, bool train) const {
    if constexpr (!requires { Backend::has_vocab_chunked_lm_head; }) {
      return 0;
    } else {
      if (n <= head_chunk || (train && I < C)) return 0;
      const int64_t w = (int64_t)head_chunk * V / n;
      return (int)std::min<int64_t>(V, w >= 64 ? w / 64 * 64 : std::max<int64_t>(w, 1));
    }
  }

 private:
  int upload_token_index(const std::vector<int32_t>& token_index, const char* who);
  void head_logits(const act_t* x, int n, float* logits_host);
  int lens_rows(int l, const std::vector<int32_t>& token_index, const char* who);
  // Sets the backend's decoding mode for the scope of a prefill or decoding step.
  struct DecodingScope {
    DecodingScope() { Backend::set_decoding(true); }
    ~DecodingScope() { Backend::set_decoding(false); }
  };
};

// ---------------------------------------------------------------------------------------------

template <class Backend>
LlamaModel<Backend>::LlamaModel(const LlamaConfig& c, int rows, int T, MomentDtype moments, ModelUse u,
                                TrainMemory mem)
    : cfg(c), layout(make_param_layout(c)), max_rows(rows), max_T(T), moment_dtype(moments), use(u), memory(mem) {
  check(rows > 0 && T > 0, "LlamaModel: max_rows and max_T must be positive");
  check(moments == MomentDtype::f32 || Backend::has_bf16_moments, "--optimizer-state bf16: the ", Backend::name,
        " backend keeps fp32 AdamW moments only (bf16 moments need --device cuda)");
  const auto& r = c.rope_scaling;
  check(r.rope_type.empty() || r.rope_type == "llama3", "LlamaModel: unsupported rope_scaling type '", r.rope_type,
        "'");
  C = c.hidden_size; I = c.intermediate_size; L = c.num_hidden_layers; H = c.num_attention_heads;
  KV = c.num_key_value_heads; D = c.head_dim; V = c.vocab_size;
  QKV = (H + 2 * KV) * D;
  max_N = (int64_t)rows * T;
  // LM-head chunk: about 16M logits at a time (64 MB in fp32), at least 64 tokens.
  head_chunk = (int)std::max<int64_t>(64, std::min<int64_t>(max_N, (int64_t(1) << 24) / V));
  head_chunk = (int)std::min<int64_t>(head_chunk, max_N);
  const bool train = use == ModelUse::train;
  if (!train) memory = TrainMemory{};  // recompute, offload and ZeRO concern training only
  check(!memory.offload_optimizer || moment_dtype == MomentDtype::f32,
        "--offload-optimizer keeps fp32 AdamW moments on the host: it does not combine with --optimizer-state bf16");
  opt_begin = memory.shard_count > 0 ? memory.shard_begin : 0;
  opt_count = memory.shard_count > 0 ? memory.shard_count : layout.total;
  check(opt_begin <= layout.total && opt_count <= layout.total - opt_begin, "LlamaModel: the ZeRO slice [", opt_begin,
        ", ", opt_begin + opt_count, ") is outside the ", layout.total, " parameters");
  check(!sharded_master() || !memory.offload_optimizer, "--offload-optimizer keeps the whole optimizer state on the "
        "host: it does not combine with --zero 1 or 2");
  check(!sharded_master() || !std::is_same_v<weight_t, float>, "--zero: the ", Backend::name, " backend reads the "
        "fp32 master weights themselves, which cannot be a slice (use --device cuda)");

  check(!sharded_weights() || (sharded_master() && !std::is_same_v<weight_t, float>),
        "LlamaModel: ZeRO 3 (sharded working copy) needs a ZeRO slice and the CUDA backend");
  if constexpr (!std::is_same_v<weight_t, float>) {
    weights = plan<weight_t>(sharded_weights() ? opt_count : layout.total, true);
    if (sharded_weights())
      for (weight_t*& g : weight_gather) g = plan<weight_t>(memory.weight_gather, true);
  }
  if (memory.offload_optimizer) {
    params = plan_host<float>(layout.total);
    adam_m = plan_host<float>(layout.total);
    adam_v = plan_host<float>(layout.total);
    offload_chunk = plan_host<float>(2 * std::min(layout.total, kOffloadChunk));
    grads = plan<float>(layout.total, true);
    if constexpr (kTransfers) {
      offload_update = std::make_unique<OffloadedUpdate<Backend>>(layout, params, weights, grads, adam_m, adam_v,
                                                                   offload_chunk, std::min(layout.total, kOffloadChunk));
      offload_schedule = offload_schedule_from_env();
    }
  } else {
    params = plan<float>(opt_count, true);
  }
  if constexpr (std::is_same_v<weight_t, float>) weights = params;
  if (sharded_master()) shard_staging = plan<float>(std::min(layout.total, kShardStagingFloats), true);
  check(memory.grad_staging == 0 || sharded_master(), "LlamaModel: gradient staging (ZeRO 2) needs a ZeRO slice");
  if (train && !memory.offload_optimizer) {
    if (memory.grad_staging > 0) {  // ZeRO 2: the slice's gradients and the staging, never the whole buffer
      grad_shard = plan<float>(opt_count, true);
      grad_staging = plan<float>(memory.grad_staging, true);
      grad_staging_count = memory.grad_staging;
    } else {
      grads = plan<float>(layout.total, true);
    }
    if (moment_dtype == MomentDtype::bf16) {
      adam_m16 = plan<uint16_t>(opt_count, true);
      adam_v16 = plan<uint16_t>(opt_count, true);
    } else {
      adam_m = plan<float>(opt_count, true);
      adam_v = plan<float>(opt_count, true);
    }
  }

  const int64_t N = max_N;
  acts.resize(L);
  // What the recompute mode rebuilds in the backward exists once (layer 0's buffers) and is
  // shared by every layer; the rest is kept per layer.
  const Recompute rc = memory.recompute;
  const bool share_attn = rc == Recompute::attn || rc == Recompute::block;
  const bool share_mlp = rc == Recompute::mlp || rc == Recompute::block;
  const bool share_norms = rc == Recompute::block;
  for (int l = 0; l < L; l++) {
    LayerActs& a = acts[l];
    if (!train && l > 0) {  // inference: every layer reuses layer 0's buffers
      a = acts[0];
      if (use == ModelUse::analysis) a.res_in = plan<act_t>(N * C);  // but keeps its residual input
      continue;
    }
    const bool first = l == 0;
    a.res_in = plan<act_t>(N * C);
    a.ln1 = first || !share_norms ? plan<act_t>(N * C) : acts[0].ln1;
    a.qkv = first || !share_attn ? plan<act_t>(N * QKV) : acts[0].qkv;
    a.att = first || !share_attn ? plan<act_t>(N * H * D) : acts[0].att;
    a.res_mid = first || !share_norms ? plan<act_t>(N * C) : acts[0].res_mid;
    a.ln2 = first || !share_norms ? plan<act_t>(N * C) : acts[0].ln2;
    a.gate_up = first || !share_mlp ? plan<act_t>(N * 2 * I) : acts[0].gate_up;
    a.swiglu = first || !share_mlp ? plan<act_t>(N * I) : acts[0].swiglu;
    a.rstd1 = first || !share_norms ? plan<float>(N) : acts[0].rstd1;
    a.rstd2 = first || !share_norms ? plan<float>(N) : acts[0].rstd2;
    a.lse = first || !share_attn ? plan<float>(N * H) : acts[0].lse;
  }
  res_out = plan<act_t>(N * C);
  lnf = plan<act_t>(N * C);
  rstdf = plan<float>(N);
  d_ln = plan<act_t>(N * C);  // also the forward's residual-branch scratch
  if (train) {
    d_res = plan<act_t>(N * C);
    d_qkv = plan<act_t>(N * QKV);
    d_att = plan<act_t>(N * H * D);
    d_gu = plan<act_t>(N * 2 * I);
    d_h = plan<act_t>(N * I);
    d_lnf = plan<act_t>(N * C);
  }
  if (use != ModelUse::inference) head_dx = plan<act_t>(N * C);  // LM-head gradient / the lens' normed rows
  head_x = plan<act_t>(N * C);
  logits_chunk = plan<float>((int64_t)head_chunk * V);
  head_rstd = plan<float>(N);
  lens_prob = plan<float>(N);
  lens_rank = plan<int32_t>(N);
  lens_top1 = plan<int32_t>(N);
  tokens = plan<int32_t>(N);
  positions = plan<int32_t>(N);
  seg_start = plan<int32_t>(N);
  key_hi = plan<int32_t>(N);
  loss_rows = plan<int32_t>(N);
  loss_targets = plan<int32_t>(N);
  host_key_hi.resize(N);
  host_key_lo.resize(N);
  host_positions.resize(N);
  host_loss_rows.resize(N);
  host_loss_targets.resize(N);
  make_rope_tables(T);
}

// RoPE cos/sin tables [positions, D/2] for the config (HF convention, llama3 scaling included).
template <class Backend>
void LlamaModel<Backend>::make_rope_tables(int n) {
  const auto& r = cfg.rope_scaling;
  std::vector<double> inv_freq(D / 2);
  rope_inv_freq(inv_freq.data(), D, cfg.rope_theta, r.rope_type == "llama3", r.factor, r.low_freq_factor,
                r.high_freq_factor, r.original_max_position_embeddings);
  std::vector<float> cos_t((size_t)n * D / 2), sin_t((size_t)n * D / 2);
  rope_tables(cos_t.data(), sin_t.data(), inv_freq.data(), D, n);
  release(rope_cos);
  release(rope_sin);
  rope_cos = plan<float>(cos_t.size());
  rope_sin = plan<float>(sin_t.size());
  Backend::upload(rope_cos, cos_t.data(), cos_t.size());
  Backend::upload(rope_sin, sin_t.data(), sin_t.size());
  rope_len = n;
}

template <class Backend>
void LlamaModel<Backend>::plan_condition() {
  if (!cond_kv.empty()) return;
  const bool train = use == ModelUse::train;
  const int KVD = KV * D;
  cond_entries = (int64_t)max_rows * (max_T + 1);
  cond_kv.resize(L);
  for (int l = 0; l < L; l++) cond_kv[l] = train || l == 0 ? plan<act_t>(cond_entries * 2 * KVD) : cond_kv[0];
  if (train) {
    d_cond_kv = plan<act_t>(cond_entries * 2 * KVD);
    d_slot = plan<float>((int64_t)max_rows * L * KVD);
    d_embed = plan<float>((int64_t)max_rows * C);
  }
  cond_add = plan<act_t>(max_N * C);
  cond_row = plan<int32_t>(max_N);
  cond_seq = plan<int32_t>(cond_entries);
  cond_pos = plan<int32_t>(cond_entries);
  if (rope_len < max_T + 1) make_rope_tables(max_T + 1);
}

template <class Backend>
const typename LlamaModel<Backend>::act_t* LlamaModel<Backend>::condition_embedding(const std::vector<int32_t>& row_of,
                                                                                 int N) {
  if (!condition.embed) return nullptr;
  check(!embed_add, "LlamaModel: embed_add and a conditioning embedding are exclusive");
  Backend::upload(cond_row, row_of.data(), N);
  Backend::condition_embed_forward(cond_add, condition.embed, cond_row, N, C);
  return cond_add;
}

template <class Backend>
LlamaModel<Backend>::~LlamaModel() {
  try {
    finish_pending_update();
  } catch (const std::exception& e) {  // a destructor does not throw: the error was the update's
    std::fprintf(stderr, "error: the offloaded optimizer's last update: %s\n", e.what());
  }
  offload_update.reset();
  if constexpr (requires { Backend::params_freed(weights, layout.total); })
    Backend::params_freed(weights, sharded_weights() ? opt_count : layout.total);  // the backend drops what it derived from them
  for (void* p : owned) Backend::free(p);
  if constexpr (requires { Backend::free_host_bytes(nullptr); })
    for (void* p : owned_host) Backend::free_host_bytes(p);
}

template <class Backend>
void LlamaModel<Backend>::use_weights(WeightRange group, WeightRange next) {
  if (!on_weights_begin) return;
  const weight_t* at = on_weights_begin(group, next);
  check(at != nullptr, "use_weights: no buffer for the weights [", group.begin, ", ", group.end, ")");
  // The group's buffer held something else before; with a gather in flight, so does the other.
  std::erase_if(weight_windows, [&](const WeightWindow& w) { return w.at == at || !next.empty(); });
  weight_windows.push_back({group, at});
}

template <class Backend>
void LlamaModel<Backend>::open_grads(size_t begin, size_t end) {
  if (!on_grads_begin) return;
  for (const GradWindow& w : grad_windows)
    if (w.begin == begin && w.end == end) return;
  float* at = on_grads_begin(begin, end);
  check(at >= grad_staging && at + (end - begin) <= grad_staging + grad_staging_count, "open_grads: [", begin, ", ",
        end, ") placed outside the staging of ", grad_staging_count, " floats");
  Backend::zero(at, end - begin);
  grad_windows.push_back({begin, end, at});
}

template <class Backend>
void LlamaModel<Backend>::grads_ready(size_t begin, size_t end) {
  if (on_grads_ready) on_grads_ready(begin, end);
  for (size_t i = 0; i < grad_windows.size(); i++)
    if (grad_windows[i].begin == begin && grad_windows[i].end == end) grad_windows.erase(grad_windows.begin() + i);
}

template <class Backend>
void LlamaModel<Backend>::empty_forward_backward() {
  for (int i = 0; i <= std::max(L, 1); i++) use_forward_weights(i);
  use_weights(head_weights(), {});
  const size_t VC = (size_t)V * C;
  open_grads(layout.lm_head, layout.lm_head + VC);
  if (layout.lm_head != layout.embed) grads_ready(layout.lm_head, layout.lm_head + VC);
  auto group = [&](size_t b, size_t e) {
    open_grads(b, e);
    grads_ready(b, e);
  };
  group(layout.final_norm, layout.final_norm + C);
  for (int l = L - 1; l >= 0; l--) {
    use_backward_weights(l);
    group(layout.layers[l].ln1, layout.layer_end(l));
  }
  group(layout.embed, layout.embed + VC);
}

template <class Backend>
void LlamaModel<Backend>::download_moments(float* m_host, float* v_host) const {
  finish_pending_update();
  const size_t n = opt_count;
  if (moment_dtype == MomentDtype::f32) {
    Backend::download(m_host, adam_m, n);
    Backend::download(v_host, adam_v, n);
    return;
  }
  std::vector<uint16_t> bits(n);
  for (auto [dst, src] : {std::pair{m_host, adam_m16}, std::pair{v_host, adam_v16}}) {
    Backend::download(bits.data(), src, n);
    for (size_t i = 0; i < n; i++) {
      const uint32_t u = (uint32_t)bits[i] << 16;  // bf16 is the top half of an fp32
      std::memcpy(&dst[i], &u, 4);
    }
  }
}

template <class Backend>
void LlamaModel<Backend>::upload_moments(const float* m_host, const float* v_host) {
  finish_pending_update();
  const size_t n = opt_count;
  if (moment_dtype == MomentDtype::f32) {
    Backend::upload(adam_m, m_host, n);
    Backend::upload(adam_v, v_host, n);
    return;
  }
  std::vector<uint16_t> bits(n);
  for (auto [src, dst] : {std::pair{m_host, adam_m16}, std::pair{v_host, adam_v16}}) {
    for (size_t i = 0; i < n; i++) {
      uint32_t u;
      std::memcpy(&u, &src[i], 4);
      check(std::isfinite(src[i]), "upload_moments: non-finite AdamW moment at flat index ", i);
      bits[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // round to nearest even
    }
    Backend::upload(dst, bits.data(), n);
  }
}

// Every index that the ops would trust is checked here, on the host, once per micro-batch.
template <class Backend>
void LlamaModel<Backend>::validate_and_upload(const Batch& b) {
  check(b.rows > 0 && b.T > 0, "batch: rows (", b.rows, ") and T (", b.T, ") must be positive");
  check(b.rows <= max_rows && b.T <= max_T, "batch: ", b.rows, " rows of T=", b.T,
        " exceed the planned maximum of ", max_rows, " rows of T=", max_T);
  const size_t N = (size_t)b.rows * b.T;
  check(b.tokens.size() == N && b.targets.size() == N && b.positions.size() == N &&
            b.seg_start.size() == N,
        "batch: tokens/targets/positions/seg_start must each hold rows*T = ", N, " values");
  for (size_t i = 0; i < N; i++) {
    const int col = (int)(i % b.T);
    check(b.tokens[i] >= 0 && b.tokens[i] < V, "batch: tokens[", i, "] = ", b.tokens[i],
          " is outside the vocabulary [0, ", V, ")");
    check(b.targets[i] >= -1 && b.targets[i] < V, "batch: targets[", i, "] = ", b.targets[i],
          " is outside [-1, ", V, ")");
    check(b.positions[i] >= 0 && b.positions[i] < rope_len, "batch: positions[", i, "] = ",
          b.positions[i], " is outside [0, ", rope_len, ")");
    check(b.seg_start[i] >= 0 && b.seg_start[i] <= col, "batch: seg_start[", i, "] = ",
          b.seg_start[i], " is not within [0, column ", col, "]");
    host_key_hi[i] = col;
  }
  cur_conditioned = conditioned();
  cur_cond_embed = cur_conditioned && condition.embed;
  if (cur_conditioned) {
    // Keys are [slot, token 0, ..., token T-1]: a token's range moves one on and starts at the slot.
    check(!cond_kv.empty(), "batch: conditioning needs plan_condition()");
    check(causal, "batch: conditioning is for a causal decoder");
    check(b.rows <= condition.seqs, "batch: ", b.rows, " rows but conditioning vectors for ", condition.seqs);
    host_cond_row.resize(N);
    for (size_t i = 0; i < N; i++) {
      const int col = (int)(i % b.T);
      check(b.seg_start[i] == 0 || b.seg_start[i] == col, "batch: seg_start[", i, "] = ", b.seg_start[i],
            ": a conditioned row holds one example (seg_start 0, or its own column for padding)");
      check(b.positions[i] + 1 < rope_len, "batch: positions[", i, "] = ", b.positions[i],
            " + 1 (the slot comes first) is outside [0, ", rope_len, ")");
      const bool padding = col > 0 && b.seg_start[i] == col;
      host_key_lo[i] = padding ? col + 1 : 0;  // padding attends to itself only
      host_key_hi[i] = col + 1;
      host_positions[i] = b.positions[i] + 1;
      host_cond_row[i] = (int32_t)(i / b.T);
    }
  }
  if (!causal)  // the last column of each example, from the right: an example is a run of equal seg_start
    for (size_t i = N; i-- > 0;) {
      const bool continues = (int)(i % b.T) + 1 < b.T && b.seg_start[i + 1] == b.seg_start[i];
      host_key_hi[i] = continues ? host_key_hi[i + 1] : (int32_t)(i % b.T);
    }
  Backend::upload(tokens, b.tokens.data(), N);
  Backend::upload(positions, cur_conditioned ? host_positions.data() : b.positions.data(), N);
  Backend::upload(seg_start, cur_conditioned ? host_key_lo.data() : b.seg_start.data(), N);
  Backend::upload(key_hi, host_key_hi.data(), N);
  cur_rows = b.rows;
  cur_T = b.T;
}

template <class Backend>
void LlamaModel<Backend>::forward(const Batch& b) {
  validate_and_upload(b);
  cond_first = 0;
  const act_t* add = cur_conditioned ? condition_embedding(host_cond_row, cur_rows * cur_T) : nullptr;
  run_layers(AttentionShape{cur_rows, cur_T, cur_T, H, KV, D, QKV, QKV}, Keys::batch, add ? add : embed_add);
}

template <class Backend>
void LlamaModel<Backend>::run_layers(const AttentionShape& shape, Keys keys, const act_t* add) {
  const int N = shape.rows * shape.Tq;
  use_forward_weights(0);
  Backend::embedding_forward(acts.empty() ? res_out : acts[0].res_in, tokens, weight(layout.embed), add, N, C);
  if (L == 0) use_forward_weights(1);
  for (int l = 0; l < L; l++) {
    use_forward_weights(l + 1);
    // Backends with Backend::fuses_residual_rmsnorm (CUDA): the previous layer's last residual add
    // already normed this layer's input (layer_output).
    if (!Backend::fuses_residual_rmsnorm || l == 0) layer_norm1(l, N);
    layer_attention(l, shape, keys);
    layer_attention_output(l, N);
    layer_mlp(l, N);
    layer_output(l, N);
  }
  if (!Backend::fuses_residual_rmsnorm || L == 0)
    Backend::rmsnorm_forward(lnf, rstdf, res_out, weight(layout.final_norm), N, C, cfg.rms_norm_eps);
}

// The parts of one layer's forward, which run_layers calls in order and the backward calls again
// to rebuild what the recompute mode did not keep (the same ops on the same inputs: bit-identical).
template <class Backend>
void LlamaModel<Backend>::layer_norm1(int l, int N) {
  LayerActs& a = acts[l];
  Backend::rmsnorm_forward(a.ln1, a.rstd1, a.res_in, weight(layout.layers[l].ln1), N, C, cfg.rms_norm_eps);
}

// ln1 -> fused qkv GEMM (+bias) -> RoPE(q, k) -> attention: a.qkv, a.att, a.lse.
template <class Backend>
void LlamaModel<Backend>::layer_attention(int l, const AttentionShape& shape, Keys keys) {
  const int N = shape.rows * shape.Tq;
  const LayerOffsets& w = layout.layers[l];
  LayerActs& a = acts[l];
  const KvShape kv_shape{kv.seqs, kv.len, H, KV, D, QKV};
  const size_t kv_layer = (size_t)kv.seqs * kv.len * KV * D;
  Backend::matmul_forward(a.qkv, a.ln1, weight(w.qkv_w), w.qkv_b == kNoTensor ? nullptr : weight(w.qkv_b), N, C,
                          QKV, false);
  // q and k heads are adjacent in each qkv row: one RoPE pass over H + KV heads.
  Backend::rope_apply(a.qkv, positions, rope_cos, rope_sin, N, H + KV, D, QKV, false);
  act_t *k_cache = kv.k + l * kv_layer, *v_cache = kv.v + l * kv_layer;
  if (conditioned() && keys != Keys::cache) {
    // The slot in front of each row's keys|values (the first row is sequence cond_first).
    act_t* kvc = cond_kv[l];
    const int KVD = KV * D;
    Backend::condition_kv_forward(kvc, a.qkv, condition.slot + ((int64_t)cond_first * L + l) * KVD, shape.rows,
                                  shape.Tq, KVD, (int64_t)L * KVD, QKV, (int64_t)H * D);
    if (keys == Keys::batch_to_cache)  // every entry, slot included, to its sequence's cache
      Backend::kv_cache_write(k_cache, v_cache, kvc, cond_seq, cond_pos, shape.rows * (shape.Tq + 1),
                              KvShape{kv.seqs, kv.len, 0, KV, D, 2 * KVD});
    Backend::attention_forward(a.att, a.lse, a.qkv, kvc, kvc + KVD, seg_start, key_hi,
                               AttentionShape{shape.rows, shape.Tq, shape.Tq + 1, H, KV, D, QKV, 2 * KVD});
  } else if (keys == Keys::cache) {  // decoding: one token per sequence, its key appended at its position
    Backend::kv_cache_write(k_cache, v_cache, a.qkv, kv_slot, positions, N, kv_shape);
    Backend::attention_decode(a.att, a.qkv, k_cache, v_cache, kv_slot, positions, N, kv_shape);
  } else {
    if (keys == Keys::batch_to_cache) Backend::kv_cache_write(k_cache, v_cache, a.qkv, kv_slot, kv_pos, N, kv_shape);
    Backend::attention_forward(a.att, a.lse, a.qkv, a.qkv + H * D, a.qkv + (H + KV) * D, seg_start, key_hi, shape);
  }
}

// res_mid = res_in + o(att), ln2 = RMSNorm(res_mid). Backends with Backend::fuses_residual_rmsnorm
// (CUDA) compute the branch into scratch (d_ln, unused during a forward) and add it to the residual
// stream in the kernel that applies the norm: one pass instead of a copy, an accumulating GEMM and
// a separate norm. The CPU path keeps the copy + accumulating GEMM, whose rounding the HF parity
// tests were written against.
template <class Backend>
void LlamaModel<Backend>::layer_attention_output(int l, int N) {
  const LayerOffsets& w = layout.layers[l];
  LayerActs& a = acts[l];
  const float eps = cfg.rms_norm_eps;
  if constexpr (Backend::fuses_residual_rmsnorm) {
    Backend::matmul_forward(d_ln, a.att, weight(w.o_w), nullptr, N, H * D, C, false);
    Backend::residual_rmsnorm_forward(a.res_mid, a.ln2, a.rstd2, a.res_in, d_ln, weight(w.ln2), N, C, eps);
  } else {
    Backend::copy(a.res_mid, a.res_in, (size_t)N * C);
    Backend::matmul_forward(a.res_mid, a.att, weight(w.o_w), nullptr, N, H * D, C, true);
    Backend::rmsnorm_forward(a.ln2, a.rstd2, a.res_mid, weight(w.ln2), N, C, eps);
  }
}

// gate|up = ln2 W_gu, swiglu = SiLU(gate) * up.
template <class Backend>
void LlamaModel<Backend>::layer_mlp(int l, int N) {
  LayerActs& a = acts[l];
  Backend::matmul_forward(a.gate_up, a.ln2, weight(layout.layers[l].gate_up_w), nullptr, N, C, 2 * I, false);
  Backend::swiglu_forward(a.swiglu, a.gate_up, N, I);
}

// The next residual input = res_mid + down(swiglu) (fused: also the next layer's ln1, or the final norm).
template <class Backend>
void LlamaModel<Backend>::layer_output(int l, int N) {
  const LayerOffsets& w = layout.layers[l];
  LayerActs& a = acts[l];
  const bool last = l + 1 == L;
  act_t* res_next = last ? res_out : acts[l + 1].res_in;
  if constexpr (Backend::fuses_residual_rmsnorm) {
    Backend::matmul_forward(d_ln, a.swiglu, weight(w.down_w), nullptr, N, I, C, false);
    Backend::residual_rmsnorm_forward(res_next, last ? lnf : acts[l + 1].ln1, last ? rstdf : acts[l + 1].rstd1,
                                      a.res_mid, d_ln, weight(last ? layout.final_norm : layout.layers[l + 1].ln1),
                                      N, C, cfg.rms_norm_eps);
  } else {
    Backend::copy(res_next, a.res_mid, (size_t)N * C);
    Backend::matmul_forward(res_next, a.swiglu, weight(w.down_w), nullptr, N, I, C, true);
  }
}

// Before layer l's backward: rebuild what memory.recompute did not keep, from what it kept.
template <class Backend>
void LlamaModel<Backend>::recompute_layer(int l) {
  const Recompute rc = memory.recompute;
  if (rc == Recompute::none) return;
  const int N = cur_rows * cur_T;
  const AttentionShape shape{cur_rows, cur_T, cur_T, H, KV, D, QKV, QKV};
  if (rc == Recompute::block) layer_norm1(l, N);
  if (rc != Recompute::mlp) layer_attention(l, shape, Keys::batch);
  if (rc == Recompute::block) layer_attention_output(l, N);
  if (rc != Recompute::attn) layer_mlp(l, N);
}

template <class Backend>
void LlamaModel<Backend>::kv_reserve(int seqs, int len) {
  check(seqs > 0 && len > 0, "kv_reserve: sequences (", seqs, ") and length (", len, ") must be positive");
  if (len > rope_len) make_rope_tables(len);
  if (seqs > kv.seqs || len > kv.len) {
    kv.seqs = std::max(seqs, kv.seqs);
    kv.len = std::max(len, kv.len);
    for (void* p : {(void*)kv.k, (void*)kv.v, (void*)kv_logits, (void*)kv_slot, (void*)kv_pos, (void*)kv_next})
      release(p);
    const size_t n = (size_t)L * kv.seqs * kv.len * KV * D;
    kv.k = plan<act_t>(n);
    kv.v = plan<act_t>(n);
    kv_logits = plan<float>((size_t)kv.seqs * V);
    const int64_t idx = std::max<int64_t>(max_N, kv.seqs);
    kv_slot = plan<int32_t>(idx);
    kv_pos = plan<int32_t>(idx);
    kv_next = plan<int32_t>(kv.seqs);
  }
  kv.length.assign(kv.seqs, 0);
}

template <class Backend>
void LlamaModel<Backend>::kv_prefill(const std::vector<std::vector<int32_t>>& prompts, size_t first, int n) {
  check(n >= 0 && n <= kv.seqs && first + n <= prompts.size(), "kv_prefill: ", n,
        " prompts do not fit the cache of ", kv.seqs, " sequences (kv_reserve)");
  DecodingScope decoding;
  const bool cond = conditioned();
  const int shift = cond ? 1 : 0;  // a conditioned sequence starts with its slot at position 0
  check(!cond || n <= condition.seqs, "kv_prefill: ", n, " sequences but conditioning vectors for ", condition.seqs);
  check(!cond || !cond_kv.empty(), "kv_prefill: conditioning needs plan_condition()");
  std::vector<int32_t> tok, pos, lo, hi, slot, cache_pos, last, entry_seq, entry_pos, row_of;
  for (int s0 = 0; s0 < n;) {
    // Rows s0..s1-1, right-padded to the longest of them, as many as fit the activation plan.
    int s1 = s0, P = 0;
    while (s1 < n) {
      const int len = (int)prompts[first + s1].size();
      check(len > 0, "kv_prefill: prompt ", first + s1, " is empty");
      check(len + shift <= kv.len, "kv_prefill: prompt ", first + s1, " of ", len, " tokens",
            cond ? " and the memory slot" : "", " exceeds the cache of ", kv.len, " positions");
      const int P_next = std::max(P, len);
      if ((int64_t)(s1 - s0 + 1) * P_next > max_N) break;
      if (cond && (int64_t)(s1 - s0 + 1) * (P_next + 1) > cond_entries) break;
      P = P_next;
      s1++;
    }
    check(s1 > s0, "kv_prefill: prompt ", first + s0, " of ", prompts[first + s0].size(),
          " tokens exceeds the model's plan of ", max_N, " tokens per forward");
    const int rows = s1 - s0, N = rows * P;
    tok.assign(N, 0);
    pos.assign(N, 0);
    lo.resize(N);
    hi.resize(N);
    slot.resize(N);
    cache_pos.resize(N);
    last.resize(rows);
    row_of.resize(N);
    entry_seq.resize(cond ? (size_t)rows * (P + 1) : 0);
    entry_pos.resize(entry_seq.size());
    for (int r = 0; r < rows; r++) {
      const std::vector<int32_t>& p = prompts[first + s0 + r];
      const int len = (int)p.size();
      for (int t = 0; t < P; t++) {
        const int i = r * P + t;
        const bool real = t < len;
        if (real) {
          check(p[t] >= 0 && p[t] < V, "kv_prefill: prompt ", first + s0 + r, " token ", t, " = ", p[t],
                " is outside the vocabulary [0, ", V, ")");
          tok[i] = p[t];
          pos[i] = t + shift;
        }
        lo[i] = real ? 0 : t + shift;  // a padding token attends to itself only
        hi[i] = t + shift;
        slot[i] = s0 + r;
        cache_pos[i] = real ? t : -1;
        row_of[i] = s0 + r;
      }
      if (cond)  // the entries in front of the attention: slot, then the tokens (padding skipped)
        for (int j = 0; j <= P; j++) {
          entry_seq[(size_t)r * (P + 1) + j] = s0 + r;
          entry_pos[(size_t)r * (P + 1) + j] = j == 0 || j <= len ? j : -1;
        }
      last[r] = r * P + len - 1;
      kv.length[s0 + r] = len + shift;
    }
    Backend::upload(tokens, tok.data(), N);
    Backend::upload(positions, pos.data(), N);
    Backend::upload(seg_start, lo.data(), N);
    Backend::upload(key_hi, hi.data(), N);
    Backend::upload(kv_slot, slot.data(), N);
    Backend::upload(kv_pos, cache_pos.data(), N);
    Backend::upload(loss_rows, last.data(), rows);
    const act_t* add = nullptr;
    if (cond) {
      Backend::upload(cond_seq, entry_seq.data(), entry_seq.size());
      Backend::upload(cond_pos, entry_pos.data(), entry_pos.size());
      add = condition_embedding(row_of, N);
      cond_first = s0;
    }
    run_layers(AttentionShape{rows, P, P, H, KV, D, QKV, QKV}, Keys::batch_to_cache, add);
    Backend::gather_rows(head_x, lnf, loss_rows, rows, C);
    use_weights(head_weights(), {});
    Backend::matmul_forward(kv_logits + (int64_t)s0 * V, head_x, weight(layout.lm_head), nullptr, rows, C, V, false);
    s0 = s1;
  }
}

template <class Backend>
void LlamaModel<Backend>::kv_decode(const std::vector<int32_t>& toks, const std::vector<int32_t>& slots) {
  const int N = (int)toks.size();
  check(slots.size() == toks.size() && N <= kv.seqs && N <= max_N, "kv_decode: ", N,
        " tokens for as many sequences (at most ", std::min<int64_t>(kv.seqs, max_N), ")");
  std::vector<int32_t> pos(N);
  std::vector<char> seen(kv.seqs, 0);
  for (int i = 0; i < N; i++) {
    const int s = slots[i];
    check(s >= 0 && s < kv.seqs && !seen[s], "kv_decode: sequence ", s, " is out of range or given twice");
    seen[s] = 1;
    check(toks[i] >= 0 && toks[i] < V, "kv_decode: token ", toks[i], " is outside the vocabulary [0, ", V, ")");
    check(kv.length[s] < kv.len, "kv_decode: sequence ", s, " fills the cache of ", kv.len, " positions");
    check(!conditioned() || s < condition.seqs, "kv_decode: sequence ", s, " has no conditioning vectors (",
          condition.seqs, ")");
    pos[i] = kv.length[s]++;
  }
  DecodingScope decoding;
  Backend::upload(tokens, toks.data(), N);
  Backend::upload(positions, pos.data(), N);
  Backend::upload(kv_slot, slots.data(), N);
  // A conditioned sequence's slot is already in its cache (position 0); the embedding addition
  // is its sequence's.
  const act_t* add = conditioned() ? condition_embedding(slots, N) : nullptr;
  run_layers(AttentionShape{N, 1, 1, H, KV, D, QKV, QKV}, Keys::cache, add);
  use_weights(head_weights(), {});
  Backend::matmul_forward(kv_logits, lnf, weight(layout.lm_head), nullptr, N, C, V, false);
}

// The LM head over n rows x [n, C] (backend memory), in chunks of head_chunk rows, into host memory.
template <class Backend>
void LlamaModel<Backend>::head_logits(const act_t* x, int n, float* logits_host) {
  use_weights(head_weights(), {});
  for (int t0 = 0; t0 < n; t0 += head_chunk) {
    const int m = std::min(head_chunk, n - t0);
    Backend::matmul_forward(logits_chunk, x + (int64_t)t0 * C, weight(layout.lm_head), nullptr, m, C, V, false);
    Backend::download(logits_host + (int64_t)t0 * V, logits_chunk, (size_t)m * V);
  }
}

// Checks flat token indices against the last forward's batch and uploads them into loss_rows.
template <class Backend>
int LlamaModel<Backend>::upload_token_index(const std::vector<int32_t>& token_index, const char* who) {
  const int N = cur_rows * cur_T;
  const int n_idx = (int)token_index.size();
  for (int i = 0; i < n_idx; i++)
    check(token_index[i] >= 0 && token_index[i] < N, who, ": token_index[", i, "] = ", token_index[i],
          " is outside the batch [0, ", N, ")");
  Backend::upload(loss_rows, token_index.data(), n_idx);
  return n_idx;
}

template <class Backend>
void LlamaModel<Backend>::forward_logits(const Batch& b, float* logits_host) {
  forward(b);
  head_logits(lnf, cur_rows * cur_T, logits_host);
}

template <class Backend>
void LlamaModel<Backend>::forward_logits_at(const Batch& b, const std::vector<int32_t>& token_index,
                                      float* logits_host) {
  forward(b);
  const int n_idx = upload_token_index(token_index, "forward_logits_at");
  Backend::gather_rows(head_x, lnf, loss_rows, n_idx, C);
  head_logits(head_x, n_idx, logits_host);
}

// The rows of the residual stream entering layer l at token_index, through the final RMSNorm into
// head_dx (the lens' input to the LM head). Returns the number of rows.
template <class Backend>
int LlamaModel<Backend>::lens_rows(int l, const std::vector<int32_t>& token_index, const char* who) {
  check(l >= 0 && l <= L, who, ": layer boundary ", l, " is outside [0, ", L, "]");
  check(use != ModelUse::inference, who, ": the logit lens reads every layer's hidden state, which a model planned "
        "with ModelUse::inference does not keep (plan it with ModelUse::analysis)");
  check(cur_rows > 0, who, ": no forward pass to read");
  const int n_idx = upload_token_index(token_index, who);
  Backend::gather_rows(head_x, hidden_state(l), loss_rows, n_idx, C);
  use_weights(L > 0 ? layer_weights(L - 1) : final_norm_weights(), head_weights());
  Backend::rmsnorm_forward(head_dx, head_rstd, head_x, weight(layout.final_norm), n_idx, C, cfg.rms_norm_eps);
  return n_idx;
}

template <class Backend>
void LlamaModel<Backend>::lens_logits(int l, const std::vector<int32_t>& token_index, float* logits_host) {
  head_logits(head_dx, lens_rows(l, token_index, "lens_logits"), logits_host);
}

template <class Backend>
void LlamaModel<Backend>::lens_stats(int l, const std::vector<int32_t>& token_index, const std::vector<int32_t>& gold,
                               float* prob, int32_t* rank, int32_t* top1) {
  check(gold.size() == token_index.size(), "lens_stats: ", gold.size(), " gold tokens for ", token_index.size(),
        " positions");
  for (size_t i = 0; i < gold.size(); i++)
    check(gold[i] >= 0 && gold[i] < V, "lens_stats: gold[", i, "] = ", gold[i], " is outside the vocabulary [0, ", V,
          ")");
  const int n = lens_rows(l, token_index, "lens_stats");
  use_weights(head_weights(), {});
  Backend::upload(loss_targets, gold.data(), n);
  for (int t0 = 0; t0 < n; t0 += head_chunk) {
    const int m = std::min(head_chunk, n - t0);
    Backend::matmul_forward(logits_chunk, head_dx + (int64_t)t0 * C, weight(layout.lm_head), nullptr, m, C, V, false);
    Backend::lens_stats(lens_prob + t0, lens_rank + t0, lens_top1 + t0, logits_chunk, loss_targets + t0, m, V);
  }
  Backend::download(prob, lens_prob, n);
  Backend::download(rank, lens_rank, n);
  Backend::download(top1, lens_top1, n);
}

template <class Backend>
double LlamaModel<Backend>::forward_backward(const Batch& b, int64_t optimizer_batch_targets) {
  check(use == ModelUse::train, "forward_backward: the model was planned for inference only");
  check(optimizer_batch_targets > 0, "forward_backward: the optimizer batch has no target tokens");
  grads_zeroed_by_optimizer = false;
  if (std::none_of(b.targets.begin(), b.targets.end(), [](int32_t t) { return t >= 0; })) {
    validate_and_upload(b);  // no loss here: nothing to add to the gradients
    if (on_grads_ready || on_weights_begin) empty_forward_backward();
    return 0.0;
  }
  {
    NVTX_RANGE("forward");
    forward(b);
  }
  const int N = cur_rows * cur_T;
  double loss_sum = 0.0;
  {
    NVTX_RANGE("lm_head_loss");  // the LM head's forward, loss and backward, chunk by chunk
    // LM head + cross-entropy, only over the tokens that carry a loss (e.g. answer tokens), in
    // chunks so that the logits of the whole batch never exist at once. Its gradient is complete
    // as soon as the chunk's loss is known, because the normalizer is given up front.
    const int n_loss = gather_loss_rows(b);
    const float grad_scale = (float)(1.0 / (double)optimizer_batch_targets);
    use_weights(head_weights(), {});
    const weight_t* lm_w = weight(layout.lm_head);
    open_grads(layout.lm_head, layout.lm_head + (size_t)V * C);  // tied: the embedding's, kept open
    float* lm_dw = grad(layout.lm_head);
    const int v_chunk = vocab_chunk(n_loss, true);
    if constexpr (requires { Backend::has_vocab_chunked_lm_head; }) {
      if (v_chunk > 0)  // the fp32 dx accumulator is the gate|up gradient scratch, idle until the backward
        Backend::lm_head_cross_entropy(head_dx, lm_dw, reinterpret_cast<float*>(d_gu), logits_chunk, head_x, lm_w,
                                       loss_targets, n_loss, C, V, v_chunk, grad_scale, &loss_sum);
    }
    for (int t0 = 0; t0 < n_loss && v_chunk == 0; t0 += head_chunk) {
      int n = std::min(head_chunk, n_loss - t0);
      act_t* x = head_x + (int64_t)t0 * C;
      Backend::matmul_forward(logits_chunk, x, lm_w, nullptr, n, C, V, false);
      Backend::cross_entropy_forward_backward(logits_chunk, loss_targets + t0, n, V, grad_scale, &loss_sum);
      Backend::matmul_backward(head_dx + (int64_t)t0 * C, lm_dw, nullptr, logits_chunk, x, lm_w, n, C, V, false);
    }
    Backend::zero(d_lnf, (size_t)N * C);
    Backend::scatter_rows(d_lnf, head_dx, loss_rows, n_loss, C);
    if (layout.lm_head != layout.embed) grads_ready(layout.lm_head, layout.lm_head + (size_t)V * C);
  }
  {
    NVTX_RANGE("backward");
    backward_from_lnf();
  }
  return loss_sum / (double)optimizer_batch_targets;
}

template <class Backend>
int LlamaModel<Backend>::gather_loss_rows(const Batch& b) {
  const int N = cur_rows * cur_T;
  int n_loss = 0;
  for (int i = 0; i < N; i++)
    if (b.targets[i] >= 0) {
      host_loss_rows[n_loss] = i;
      host_loss_targets[n_loss] = b.targets[i];
      n_loss++;
    }
  Backend::upload(loss_rows, host_loss_rows.data(), n_loss);
  Backend::upload(loss_targets, host_loss_targets.data(), n_loss);
  Backend::gather_rows(head_x, lnf, loss_rows, n_loss, C);
  return n_loss;
}

template <class Backend>
double LlamaModel<Backend>::forward_loss(const Batch& b) {
  if (std::none_of(b.targets.begin(), b.targets.end(), [](int32_t t) { return t >= 0; })) return 0.0;
  {
    NVTX_RANGE("forward");
    forward(b);
  }
  NVTX_RANGE("lm_head_loss");
  const int n_loss = gather_loss_rows(b);
  double loss_sum = 0.0;
  const int v_chunk = vocab_chunk(n_loss, false);
  use_weights(head_weights(), {});
  if constexpr (requires { Backend::has_vocab_chunked_lm_head; }) {
    if (v_chunk > 0)
      Backend::lm_head_cross_entropy(nullptr, nullptr, nullptr, logits_chunk, head_x, weight(layout.lm_head),
                                     loss_targets, n_loss, C, V, v_chunk, 0.0f, &loss_sum);
  }
  // The training loss kernel with a zero gradient scale: the loss is the same sum, the gradient it
  // writes over the chunk's logits is discarded.
  for (int t0 = 0; t0 < n_loss && v_chunk == 0; t0 += head_chunk) {
    int n = std::min(head_chunk, n_loss - t0);
    Backend::matmul_forward(logits_chunk, head_x + (int64_t)t0 * C, weight(layout.lm_head), nullptr, n, C, V, false);
    Backend::cross_entropy_forward_backward(logits_chunk, loss_targets + t0, n, V, 0.0f, &loss_sum);
  }
  return loss_sum;
}

template <class Backend>
void LlamaModel<Backend>::backward_from_lnf() {
  grads_zeroed_by_optimizer = false;
  const int N = cur_rows * cur_T;
  const AttentionShape shape{cur_rows, cur_T, cur_T, H, KV, D, QKV, QKV};
  Backend::zero(d_res, (size_t)N * C);
  open_grads(layout.final_norm, layout.final_norm + C);
  Backend::rmsnorm_backward(d_res, grad(layout.final_norm), d_lnf, res_out, weight(layout.final_norm),
                      rstdf, N, C);
  grads_ready(layout.final_norm, layout.final_norm + C);
  for (int l = L - 1; l >= 0; l--) {
    use_backward_weights(l);
    recompute_layer(l);
    const LayerOffsets& w = layout.layers[l];
    LayerActs& a = acts[l];
    open_grads(w.ln1, layout.layer_end(l));
    // MLP block: res_next = res_mid + down(swiglu(gate_up(rmsnorm(res_mid)))); d_res flows
    // through the identity and gets the MLP branch added by the RMSNorm backward.
    Backend::matmul_backward(d_h, grad(w.down_w), nullptr, d_res, a.swiglu, weight(w.down_w), N, I, C, false);
    Backend::swiglu_backward(d_gu, d_h, a.gate_up, N, I);
    Backend::matmul_backward(d_ln, grad(w.gate_up_w), nullptr, d_gu, a.ln2, weight(w.gate_up_w), N, C, 2 * I, false);
    Backend::rmsnorm_backward(d_res, grad(w.ln2), d_ln, a.res_mid, weight(w.ln2), a.rstd2, N, C);
    // Attention block.
    Backend::matmul_backward(d_att, grad(w.o_w), nullptr, d_res, a.att, weight(w.o_w), N, H * D, C, false);
    if (cur_conditioned) {  // keys|values with the slot in front: its gradient goes to d_slot
      const int KVD = KV * D;
      act_t* kvc = cond_kv[l];
      Backend::attention_backward(d_qkv, d_cond_kv, d_cond_kv + KVD, d_att, a.qkv, kvc, kvc + KVD, a.att, a.lse,
                                  seg_start, key_hi, AttentionShape{cur_rows, cur_T, cur_T + 1, H, KV, D, QKV, 2 * KVD});
      Backend::condition_kv_backward(d_qkv, d_slot + (int64_t)l * KVD, d_cond_kv, cur_rows, cur_T, KVD,
                                     (int64_t)L * KVD, QKV, (int64_t)H * D);
    } else {
      Backend::attention_backward(d_qkv, d_qkv + H * D, d_qkv + (H + KV) * D, d_att, a.qkv, a.qkv + H * D,
                                  a.qkv + (H + KV) * D, a.att, a.lse, seg_start, key_hi, shape);
    }
    Backend::rope_apply(d_qkv, positions, rope_cos, rope_sin, N, H + KV, D, QKV, true);
    Backend::matmul_backward(d_ln, grad(w.qkv_w), w.qkv_b == kNoTensor ? nullptr : grad(w.qkv_b), d_qkv,
                       a.ln1, weight(w.qkv_w), N, C, QKV, false);
    Backend::rmsnorm_backward(d_res, grad(w.ln1), d_ln, a.res_in, weight(w.ln1), a.rstd1, N, C);
    grads_ready(w.ln1, layout.layer_end(l));
  }
  open_grads(layout.embed, layout.embed + (size_t)V * C);
  Backend::embedding_backward(grad(layout.embed), tokens, d_res, N, C);
  grads_ready(layout.embed, layout.embed + (size_t)V * C);
  if (cur_cond_embed) Backend::condition_embed_backward(d_embed, d_res, cur_rows, cur_T, C);
}

// The CPU instantiation is compiled once, in model/llama.cpp.
#include "model/cpu_backend.h"
extern template struct LlamaModel<CpuBackend>;
