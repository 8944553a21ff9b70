// The GPU memory plan of LlamaModel<CudaBackend> (kernels/cuda_backend.h) for a config, a
// micro-batch and a use (model/model_use.h): what `train_llama --dry-run` and
// `analyze_layers --dry-run` print. Plain arithmetic, no CUDA headers, so every build can print it.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>

#include "model/model_use.h"
#include "model/zero_shards.h"  // kShardStagingFloats; zero_train_memory gives a ZeRO rank's TrainMemory

// What LlamaModel<CudaBackend> (model/llama.h) allocates for a config, a micro-batch of `rows` x T
// tokens and a use, plus its KV cache when one is reserved (kv_reserve(kv_seqs, kv_len): greedy
// decoding), plus the backend's own buffers, in bytes. It mirrors the model constructor and
// kv_reserve allocation by allocation (test_cuda_train checks the two agree for every use).
struct CudaMemoryPlan {
  ModelUse use = ModelUse::train;
  size_t weights_fp32 = 0;     // master weights (at ZeRO >= 1 this rank's slice, and the staging of their gather)
  size_t weights_bf16 = 0;     // working copy read by the ops
  size_t grads = 0;            // fp32 (train)
  size_t optimizer = 0;        // AdamW m and v (fp32; half with bf16 state) (train)
  size_t activations = 0;      // train: saved per layer for the backward; analysis: every layer's residual
                               // stream and one layer's other buffers; inference: one layer's buffers
  size_t grad_scratch = 0;     // train: activation gradients, reused by every layer; else the residual branch
  size_t lm_head = 0;          // compacted rows (and their gradient / normed lens rows), one chunk of fp32
                               // logits (+ its bf16 copy for the backward)
  size_t kv_cache = 0;         // keys and values of every layer, the decoding logits, slot/position indices
  size_t workspace = 0;        // cuBLASLt workspace, RMSNorm/attention/CE scratch, batch metadata, RoPE tables
  size_t model_bytes = 0;      // of which LlamaModel<CudaBackend> allocates itself
  size_t host = 0;             // pinned host memory of the offloaded optimizer (not in total()): fp32
                               // master weights, AdamW m and v, and the transfer chunks
  bool bf16_optimizer_state = false;  // --optimizer-state bf16
  TrainMemory memory;                 // --recompute, --offload-optimizer, a ZeRO rank's slices (zero_train_memory)
  size_t total() const {
    return weights_fp32 + weights_bf16 + grads + optimizer + activations + grad_scratch + lm_head + kv_cache +
           workspace;
  }
};

template <class Config, class Layout>
inline CudaMemoryPlan cuda_memory_plan(const Config& c, const Layout& layout, int rows, int T,
                                       bool bf16_optimizer_state = false, ModelUse use = ModelUse::train,
                                       int kv_seqs = 0, int kv_len = 0, TrainMemory memory = {}) {
  const size_t N = (size_t)rows * T, C = c.hidden_size, I = c.intermediate_size, L = c.num_hidden_layers,
               H = c.num_attention_heads, KV = c.num_key_value_heads, D = c.head_dim, V = c.vocab_size;
  const size_t QKV = (H + 2 * KV) * D, P = layout.total, A = 2 /* bf16 */, F = 4;
  const bool train = use == ModelUse::train;
  size_t head_chunk = std::max<size_t>(64, std::min<size_t>(N, ((size_t)1 << 24) / V));
  head_chunk = std::min(head_chunk, N);
  CudaMemoryPlan m;
  m.use = use;
  if (!train) memory = TrainMemory{};
  m.memory = memory;
  const bool offload = memory.offload_optimizer;
  // A ZeRO rank (TrainMemory, model/zero_shards.h zero_train_memory): the master weights and the
  // moments of its slice, with the bounded staging buffer through which the slices are gathered
  // (stage >= 1); the gradients of its slice with the staging the backward writes into (>= 2); the
  // bf16 working copy of its slice with two gathered weight groups (3). The per-GPU plan of a stage
  // is rank 0's, the largest slice.
  const size_t S = memory.shard_count > 0 ? memory.shard_count : P;
  const size_t staging = memory.shard_count > 0 ? std::min(P, kShardStagingFloats) : 0;
  m.weights_fp32 = offload ? 0 : (S + staging) * F;
  m.weights_bf16 = (memory.weight_gather > 0 ? S + 2 * memory.weight_gather : P) * A;
  m.bf16_optimizer_state = bf16_optimizer_state;
  if (train) {
    m.grads = (memory.grad_staging > 0 ? S + memory.grad_staging : P) * F;
    m.optimizer = offload ? 0 : 2 * S * (bf16_optimizer_state ? A : F);
  }
  if (offload) {  // master + m + v, and two chunks each of the backend's bf16 staging and of gradients
    const size_t chunk = std::min<size_t>(P, (size_t)1 << 24);
    m.host = 3 * P * F + 2 * chunk * (A + F);
  }
  // One layer's buffers: res_in; ln1, res_mid, ln2 and 1/rms twice (norms); qkv, att and the
  // attention log-sum-exp (attn); gate|up and SwiGLU (mlp). Training keeps L sets, except that
  // what --recompute rebuilds in the backward exists once; inference keeps one set, analysis one
  // plus the other layers' residual inputs. Then the last residual, the final norm and its 1/rms.
  const size_t res_in = N * C * A, norms = 3 * N * C * A + 2 * N * F, attn = N * (QKV + H * D) * A + N * H * F,
               mlp = N * 3 * I * A;
  const size_t layer = res_in + norms + attn + mlp;
  const Recompute rc = memory.recompute;
  const size_t shared = (rc == Recompute::attn || rc == Recompute::block ? attn : 0) +
                        (rc == Recompute::mlp || rc == Recompute::block ? mlp : 0) +
                        (rc == Recompute::block ? norms : 0);
  const size_t sets = train ? L : std::min<size_t>(L, 1);
  m.activations = sets * layer - (train && L > 1 ? (L - 1) * shared : 0) +
                  (use == ModelUse::analysis && L > 1 ? (L - 1) * N * C * A : 0) + 2 * N * C * A + N * F;
  m.grad_scratch = train ? N * (3 * C + QKV + H * D + 2 * I + I) * A : N * C * A;
  const size_t head_rows = (use == ModelUse::inference ? 1 : 2) * N * C * A;
  m.lm_head = head_rows + head_chunk * V * (F + (train ? A : 0));
  // KV cache (kv_reserve): k and v of L layers, the logits of each sequence's last token, the
  // slot / position / next-token indices; the RoPE tables grow to kv_len positions.
  const size_t rope_positions = std::max<size_t>(T, kv_seqs > 0 ? (size_t)kv_len : 0);
  if (kv_seqs > 0) {
    const size_t S = kv_seqs;
    m.kv_cache = 2 * L * S * kv_len * KV * D * A + S * V * F + 2 * std::max(N, S) * 4 + S * 4;
  }
  // Per-token 4-byte arrays of the model: 6 of batch metadata, the lens' 1/rms and its 3 statistics.
  const size_t per_token = 10 * N * 4;
  // Training scratch of the backend: RMSNorm dweight partials, the attention delta, the embedding
  // backward's plan (3N + 1 ints), the global norm's 512 block partials and 2 results.
  const size_t backward_scratch =
      train ? std::min<size_t>(N, 256) * C * F + N * H * F + (3 * N + 1) * 4 + (512 + 2) * F : 0;
  // Cross-entropy statistics: 5 floats per row of a token chunk, or of every row when the LM head
  // goes by vocabulary chunks (more rows than a token chunk holds: LlamaModel::vocab_chunk).
  const size_t ce_rows = N > head_chunk ? N : head_chunk;
  m.workspace = ((size_t)32 << 20) + backward_scratch + 5 * ce_rows * F + per_token + rope_positions * D * F;
  m.model_bytes = m.weights_fp32 + m.weights_bf16 + m.grads + m.optimizer + m.activations + m.grad_scratch + head_rows +
                  head_chunk * V * F + m.kv_cache + per_token + rope_positions * D * F;
  return m;
}

// The plan as a small table in GiB, for --dry-run (rows that are zero for this use are left out).
inline std::string format_cuda_memory_plan(const CudaMemoryPlan& m) {
  const double GiB = 1024.0 * 1024.0 * 1024.0;
  const bool train = m.use == ModelUse::train;
  const char* activations = train ? "activations saved for backward"
                            : m.use == ModelUse::analysis ? "activations (residual stream of every layer)"
                                                          : "activations (one layer, reused)";
  const std::pair<const char*, size_t> rows[] = {
      {"weights, fp32 master", m.weights_fp32}, {"weights, bf16 working copy", m.weights_bf16},
      {"gradients, fp32", m.grads},           {m.bf16_optimizer_state ? "AdamW state (m, v), bf16" : "AdamW state (m, v), fp32", m.optimizer},
      {activations, m.activations}, {train ? "activation-gradient scratch" : "residual-branch scratch", m.grad_scratch},
      {"LM head (rows, logits chunk)", m.lm_head}, {"KV cache (greedy decoding)", m.kv_cache},
      {"workspace (cuBLASLt, scratch, metadata)", m.workspace}, {"total", m.total()}};
  std::string out;
  char line[128];
  for (const auto& r : rows) {
    if (r.second == 0) continue;
    std::snprintf(line, sizeof(line), "  %-46s %9.2f GiB\n", r.first, (double)r.second / GiB);
    out += line;
  }
  if (m.host > 0) {
    std::snprintf(line, sizeof(line), "  %-46s %9.2f GiB\n", "host, pinned: master, AdamW m, v, transfers",
                  (double)m.host / GiB);
    out += line;
  }
  return out;
}
