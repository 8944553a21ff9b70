// The GPU memory plan of LlamaModel<CudaBackend> (kernels/cuda_backend.h) for a config and a
// micro-batch: what `train_llama --dry-run` prints. Plain arithmetic, no CUDA headers, so every
// build can print it.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <string>
#include <utility>

// ---- GPU memory plan (train_llama --dry-run) ----
// What LlamaModel<CudaBackend> (model/llama.h) allocates for a config and a micro-batch of
// `rows` x T tokens, plus the backend's own buffers, in bytes. It mirrors the model constructor
// allocation by allocation (test_cuda_train checks the two agree).
struct CudaMemoryPlan {
  size_t weights_fp32 = 0;     // master weights
  size_t weights_bf16 = 0;     // working copy read by the matmuls
  size_t grads = 0;            // fp32
  size_t optimizer = 0;        // AdamW m and v (fp32; half with bf16 state)
  size_t activations = 0;      // saved per layer for the backward, plus final norm
  size_t grad_scratch = 0;     // activation gradients, reused by every layer
  size_t lm_head = 0;          // compacted rows, their gradient, one chunk of fp32 logits + its bf16 copy
  size_t workspace = 0;        // cuBLASLt workspace, RMSNorm/attention/CE scratch, batch metadata, RoPE tables
  size_t model_bytes = 0;      // of which LlamaModel<CudaBackend> allocates itself
  bool bf16_optimizer_state = false;  // --optimizer-state bf16
  int world_size = 1, zero = 0;       // per GPU of this many data-parallel ranks at this ZeRO stage
  size_t total() const {
    return weights_fp32 + weights_bf16 + grads + optimizer + activations + grad_scratch + lm_head + workspace;
  }
};

template <class Config, class Layout>
inline CudaMemoryPlan cuda_memory_plan(const Config& c, const Layout& layout, int rows, int T,
                                       bool bf16_optimizer_state = false) {
  const size_t N = (size_t)rows * T, C = c.hidden_size, I = c.intermediate_size, L = c.num_hidden_layers,
               H = c.num_attention_heads, KV = c.num_key_value_heads, D = c.head_dim, V = c.vocab_size;
  const size_t QKV = (H + 2 * KV) * D, P = layout.total, A = 2 /* bf16 */, F = 4;
  size_t head_chunk = std::max<size_t>(64, std::min<size_t>(N, ((size_t)1 << 24) / V));
  head_chunk = std::min(head_chunk, N);
  CudaMemoryPlan m;
  m.weights_fp32 = P * F;
  m.weights_bf16 = P * A;
  m.grads = P * F;
  m.bf16_optimizer_state = bf16_optimizer_state;
  m.optimizer = 2 * P * (bf16_optimizer_state ? A : F);
  m.activations = L * (N * (4 * C + QKV + H * D + 2 * I + I) * A + N * (2 + H) * F) + 2 * N * C * A + N * F;
  m.grad_scratch = N * (3 * C + QKV + H * D + 2 * I + I) * A;
  m.lm_head = 2 * N * C * A + head_chunk * V * (F + A);
  // Per-token 4-byte arrays of the model: 6 of batch metadata, the lens' 1/rms and its 3 statistics.
  const size_t per_token = 10 * N * 4;
  m.workspace = ((size_t)32 << 20) + std::min<size_t>(N, 256) * C * F + N * H * F + 5 * head_chunk * F +
                per_token + (3 * N + 1) * 4 + (size_t)T * D * F;
  m.model_bytes = 2 * P * F + m.optimizer + m.activations + m.grad_scratch + 2 * N * C * A + head_chunk * V * F +
                  per_token + (size_t)T * D * F;
  return m;
}

// The plan per GPU with `world` data-parallel ranks at ZeRO stage `zero` (0-3), from the plan of
// one rank's micro-batch: stage 1 shards the fp32 master weights and the AdamW state over the
// ranks, stage 2 also the gradients (keeping one unsharded bucket of the largest tensor group
// being reduced), stage 3 also the bf16 working copy (keeping two gathered groups: the one in use
// and the one prefetched). A group is one layer's weights, or the embedding / LM head when larger.
// train_llama implements stage 0 only; the other stages are the plan they are built to.
template <class Config, class Layout>
inline CudaMemoryPlan shard_cuda_memory_plan(CudaMemoryPlan m, const Config& c, const Layout& layout, int world,
                                             int zero) {
  const size_t R = (size_t)std::max(world, 1);
  auto shard = [&](size_t bytes) { return (bytes + R - 1) / R; };
  const size_t VC = (size_t)c.vocab_size * c.hidden_size;
  const size_t embeddings = VC * (c.tie_word_embeddings ? 1 : 2);
  const size_t layer = (layout.total - embeddings - (size_t)c.hidden_size) / std::max(c.num_hidden_layers, 1);
  const size_t group = std::max(layer, VC);  // floats
  if (zero >= 1) {
    m.weights_fp32 = shard(m.weights_fp32);
    m.optimizer = shard(m.optimizer);
  }
  if (zero >= 2) m.grads = shard(m.grads) + group * 4;
  if (zero >= 3) m.weights_bf16 = shard(m.weights_bf16) + 2 * group * 2;
  m.world_size = (int)R;
  m.zero = zero;
  return m;
}

// The plan as a small table in GiB, for --dry-run.
inline std::string format_cuda_memory_plan(const CudaMemoryPlan& m) {
  const double GiB = 1024.0 * 1024.0 * 1024.0;
  const std::pair<const char*, size_t> rows[] = {
      {"weights, fp32 master", m.weights_fp32}, {"weights, bf16 working copy", m.weights_bf16},
      {"gradients, fp32", m.grads},           {m.bf16_optimizer_state ? "AdamW state (m, v), bf16" : "AdamW state (m, v), fp32", m.optimizer},
      {"activations saved for backward", m.activations}, {"activation-gradient scratch", m.grad_scratch},
      {"LM head (rows, logits chunk)", m.lm_head}, {"workspace (cuBLASLt, scratch, metadata)", m.workspace},
      {"total", m.total()}};
  std::string out;
  char line[128];
  for (const auto& r : rows) {
    std::snprintf(line, sizeof(line), "  %-42s %9.2f GiB\n", r.first, (double)r.second / GiB);
    out += line;
  }
  return out;
}
