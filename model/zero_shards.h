// ZeRO sharding of the flat parameter buffer (model/params.h): rank r of R owns the contiguous
// slice [begin(r), end(r)) of the parameters, and with them of the gradients, the fp32 master
// weights and the AdamW moments it keeps. A slice is ceil(total / R) rounded up to 256 floats
// (1 KiB, so every slice starts aligned for the vectorized kernels); the last one is shorter.
#pragma once
#include <algorithm>
#include <cstddef>

#include "model/model_use.h"  // TrainMemory

struct ZeroShards {
  size_t total = 0, per = 0;
  int world = 1;
  ZeroShards() = default;
  ZeroShards(size_t total_, int world_) : total(total_), world(world_) {
    per = (total + world - 1) / world;
    per = (per + 255) / 256 * 256;
  }
  size_t begin(int r) const { return std::min(total, size_t(r) * per); }
  size_t end(int r) const { return std::min(total, size_t(r + 1) * per); }
  size_t count(int r) const { return end(r) - begin(r); }
};

// Floats of the bounded device buffer through which the ranks' slices of the fp32 master weights
// travel when they are gathered (checkpoints): 16 MiB, or the whole model when smaller.
constexpr size_t kShardStagingFloats = (size_t)1 << 22;

// Floats of the largest layer of the flat layout (model/params.h).
template <class Layout>
size_t largest_layer(const Layout& layout) {
  size_t n = 0;
  for (size_t l = 0; l < layout.layers.size(); l++) n = std::max(n, layout.layer_end(l) - layout.layers[l].ln1);
  return n;
}

// ZeRO 2's gradient staging (TrainMemory::grad_staging, train_llama.cu): the backward writes each
// group of gradients (the ranges LlamaModel reports through on_grads_ready: the LM head, the final
// norm, one layer, the embedding) into staging, from which it is reduced to the owners of its
// parts. Two halves, each as large as the largest group, alternate: one is being reduced while
// the backward fills the other. With tied embeddings the LM head is the embedding, written at the
// start of the backward and again at its end: its group keeps a third part for the whole backward.
struct GradStaging {
  size_t half = 0, tied = 0;  // floats
  size_t total() const { return 2 * half + tied; }
};
template <class Layout>
GradStaging grad_staging(const Layout& layout, size_t vocab_x_hidden) {
  GradStaging s;
  const bool tied = layout.lm_head == layout.embed;
  s.tied = tied ? vocab_x_hidden : 0;
  const size_t final_norm = (tied ? layout.total : layout.lm_head) - layout.final_norm;
  // the LM head and the embedding, the final norm, a layer
  s.half = std::max({tied ? 0 : vocab_x_hidden, final_norm, largest_layer(layout)});
  return s;
}

// ZeRO 3's gathered weights (LlamaModel::on_weights_begin): each of the two buffers holds one
// weight group, the embedding, the LM head, or layer l with the next layer's input norm (the final
// norm after the last layer), C values more than the layer. Floats of the largest group.
template <class Layout>
size_t weight_gather_floats(const Layout& layout, size_t vocab_x_hidden, size_t hidden) {
  return std::max(vocab_x_hidden, layout.layers.empty() ? 0 : largest_layer(layout) + hidden);
}

// What rank `rank` of `world` keeps at ZeRO stage `zero`, added to `m`: its slice (stage >= 1),
// the gradient staging (>= 2), the two weight gather buffers (3). One process keeps everything.
// The trainer builds its model from this, and the per-GPU plan (rank 0's, the largest slice) too.
template <class Layout>
TrainMemory zero_train_memory(TrainMemory m, const Layout& layout, size_t vocab_x_hidden, size_t hidden, int world,
                              int zero, int rank = 0) {
  if (zero < 1 || world < 2) return m;
  const ZeroShards shards(layout.total, world);
  m.shard_begin = shards.begin(rank);
  m.shard_count = shards.count(rank);
  if (zero >= 2) m.grad_staging = grad_staging(layout, vocab_x_hidden).total();
  if (zero >= 3) m.weight_gather = weight_gather_floats(layout, vocab_x_hidden, hidden);
  return m;
}
