// The parameter layout: every weight lives in one flat fp32 buffer (and so do its gradient and
// the AdamW moments), tensor after tensor, so that the optimizer, the global grad norm and a
// future ZeRO sharding are single loops over one array.
//
// Order, chosen so that fused GEMMs read contiguous weights:
//   model.embed_tokens.weight                      [V, C]
//   per layer i (prefix model.layers.{i}.):
//     input_layernorm.weight                       [C]
//     self_attn.q_proj.weight                      [H*D, C]   \  contiguous: one qkv GEMM
//     self_attn.k_proj.weight                      [KV*D, C]   | with [(H+2KV)*D, C]
//     self_attn.v_proj.weight                      [KV*D, C]  /
//     self_attn.{q,k,v}_proj.bias                  [H*D],[KV*D],[KV*D] (attention_bias only; contiguous)
//     self_attn.o_proj.weight                      [C, H*D]
//     post_attention_layernorm.weight              [C]
//     mlp.gate_proj.weight                         [I, C]     \  contiguous: one gate|up GEMM
//     mlp.up_proj.weight                           [I, C]     /  with [2I, C]
//     mlp.down_proj.weight                         [C, I]
//   model.norm.weight                              [C]
//   lm_head.weight                                 [V, C]     (absent when tied: the embedding is used)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

constexpr size_t kNoTensor = SIZE_MAX;

struct ParamTensor {
  std::string name;            // Hugging Face name
  std::vector<int64_t> shape;  // row-major, as in HF
  size_t offset = 0;           // in floats, into the flat buffer
  size_t numel = 0;
  bool is_norm = false;        // RMSNorm weight (initialized to 1)
  bool is_bias = false;        // initialized to 0
};

struct LayerOffsets {
  size_t ln1, qkv_w, qkv_b /* kNoTensor without bias */, o_w, ln2, gate_up_w, down_w;
};

struct ParamLayout {
  std::vector<ParamTensor> tensors;  // in buffer order
  std::vector<LayerOffsets> layers;
  size_t embed = 0, final_norm = 0, lm_head = 0;  // lm_head == embed when tied
  size_t total = 0;                               // floats in the flat buffer
  const ParamTensor* find(const std::string& name) const;  // nullptr if absent
  // Layer l's tensors fill [layers[l].ln1, layer_end(l)): up to the next layer's input norm, or the
  // final norm after the last layer.
  size_t layer_end(size_t l) const { return l + 1 < layers.size() ? layers[l + 1].ln1 : final_norm; }
  // The flat buffer cut into the groups a forward reads in order, as their starts followed by
  // `total`: the embedding, each layer, the final norm, the LM head (untied only).
  std::vector<size_t> forward_group_starts() const;
};

ParamLayout make_param_layout(const LlamaConfig& c);
