// What a LlamaModel is planned for (model/llama.h); the GPU memory plan (kernels/cuda_memory_plan.h)
// follows the same choice.
//   train:     parameters, gradients, AdamW moments, every layer's activations kept for the
//              backward, and the backward's scratch;
//   inference: parameters and one set of activation buffers that every layer reuses (scoring,
//              decoding, held-out loss): no gradients, moments or backward scratch;
//   analysis:  inference that also keeps the residual stream entering every layer
//              (LlamaModel::hidden_state, the logit lens): L - 1 more [N, C] buffers, plus the
//              lens' normalized rows.
#pragma once
#include <cstddef>

enum class ModelUse { train, inference, analysis };

// Activation recompute (training): which per-layer activations the forward keeps for the
// backward, and which the backward recomputes from what was kept, layer by layer, with the same
// forward ops (so the gradients are bit-identical to keeping everything). The recomputed buffers
// exist once and are shared by all layers.
//   none:  keep everything (fastest);
//   attn:  recompute q|k|v, the attention output and its log-sum-exp from the kept RMSNorm output
//          (one qkv GEMM, RoPE and the attention forward again per layer);
//   mlp:   recompute gate|up and the SwiGLU output from the kept RMSNorm output (the largest
//          buffers: 3 x intermediate_size per token; one gate|up GEMM again per layer);
//   block: keep only each layer's residual input and recompute the whole layer except its down
//          projection (a whole forward pass again, minus the down GEMMs and the LM head).
enum class Recompute { none, attn, mlp, block };

inline const char* recompute_name(Recompute r) {
  return r == Recompute::attn ? "attn" : r == Recompute::mlp ? "mlp" : r == Recompute::block ? "block" : "none";
}

// How a training model places its state: the activation recompute, whether the fp32 master
// weights and AdamW moments live in pinned host memory (offload: AdamW runs on the host cores over
// gradients copied from the device, and the bf16 working copy is streamed back; --device cuda),
// at ZeRO >= 1 the slice [shard_begin, shard_begin + shard_count) of the flat parameter buffer
// whose fp32 master weights and AdamW moments this rank keeps (model/zero_shards.h; count 0: all),
// at ZeRO 2 the floats of gradient staging (model/zero_shards.h, grad_staging): the rank then
// keeps the gradients of its slice plus the staging instead of the whole gradient buffer, and at
// ZeRO 3 the floats of each of the two buffers that weight groups are gathered into
// (model/zero_shards.h, weight_gather_floats): the working copy then holds the slice only.
struct TrainMemory {
  Recompute recompute = Recompute::none;
  bool offload_optimizer = false;
  size_t shard_begin = 0, shard_count = 0;
  size_t grad_staging = 0;
  size_t weight_gather = 0;
};
