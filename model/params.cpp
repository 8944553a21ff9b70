#include "model/params.h"

const ParamTensor* ParamLayout::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<size_t> ParamLayout::forward_group_starts() const {
  std::vector<size_t> starts = {embed};
  for (const LayerOffsets& l : layers) starts.push_back(l.ln1);
  starts.push_back(final_norm);
  if (lm_head != embed) starts.push_back(lm_head);
  starts.push_back(total);
  return starts;
}

ParamLayout make_param_layout(const LlamaConfig& c) {
  ParamLayout p;
  const int64_t V = c.vocab_size, C = c.hidden_size, I = c.intermediate_size;
  const int64_t QD = int64_t(c.num_attention_heads) * c.head_dim, KVD = int64_t(c.num_key_value_heads) * c.head_dim;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool norm = false, bool bias = false) {
    ParamTensor t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.numel = 1;
    for (int64_t d : t.shape) t.numel *= size_t(d);
    t.offset = p.total;
    t.is_norm = norm;
    t.is_bias = bias;
    p.total += t.numel;
    p.tensors.push_back(std::move(t));
    return p.tensors.back().offset;
  };
  p.embed = add("model.embed_tokens.weight", {V, C});
  for (int i = 0; i < c.num_hidden_layers; i++) {
    std::string pre = "model.layers." + std::to_string(i) + ".";
    LayerOffsets l;
    l.ln1 = add(pre + "input_layernorm.weight", {C}, true);
    l.qkv_w = add(pre + "self_attn.q_proj.weight", {QD, C});
    add(pre + "self_attn.k_proj.weight", {KVD, C});
    add(pre + "self_attn.v_proj.weight", {KVD, C});
    l.qkv_b = kNoTensor;
    if (c.attention_bias) {
      l.qkv_b = add(pre + "self_attn.q_proj.bias", {QD}, false, true);
      add(pre + "self_attn.k_proj.bias", {KVD}, false, true);
      add(pre + "self_attn.v_proj.bias", {KVD}, false, true);
    }
    l.o_w = add(pre + "self_attn.o_proj.weight", {C, QD});
    l.ln2 = add(pre + "post_attention_layernorm.weight", {C}, true);
    l.gate_up_w = add(pre + "mlp.gate_proj.weight", {I, C});
    add(pre + "mlp.up_proj.weight", {I, C});
    l.down_w = add(pre + "mlp.down_proj.weight", {C, I});
    p.layers.push_back(l);
  }
  p.final_norm = add("model.norm.weight", {C}, true);
  p.lm_head = c.tie_word_embeddings ? p.embed : add("lm_head.weight", {V, C});
  return p;
}
