// BERT encoder inference (HF BertModel, post-LayerNorm) and sentence embeddings as
// sentence-transformers computes them for all-MiniLM-L6-v2: mean of the last hidden states over
// the attention mask, then L2 normalization. fp32 on the CPU, reusing the backend's kernels
// (sgemm, the key-range attention) plus LayerNorm and the erf GELU.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

struct BertConfig {
  int vocab_size = 0, hidden_size = 0, num_hidden_layers = 0, num_attention_heads = 0;
  int intermediate_size = 0, max_position_embeddings = 0, type_vocab_size = 0;
  float layer_norm_eps = 1e-12f;
  int pad_token_id = 0;
};

// Every field of config.json is known by name: the ones that shape the math are read and checked
// (hidden_act "gelu", position_embedding_type "absolute", not a decoder, no cross-attention), the
// ones that do not at inference (dropouts, initializer_range, ...) are accepted; anything else is
// an error naming the file and the field.
BertConfig load_bert_config(const std::string& config_json_path);

struct BertLayerWeights {
  std::vector<float> qkv_w, qkv_b;  // [3C, C], [3C]: query, key, value stacked (one GEMM)
  std::vector<float> attn_out_w, attn_out_b, attn_ln_w, attn_ln_b;
  std::vector<float> inter_w, inter_b, out_w, out_b, out_ln_w, out_ln_b;
};

struct BertEncoder {
  BertConfig cfg;
  std::vector<float> word_emb, pos_emb, type_emb, emb_ln_w, emb_ln_b;
  std::vector<BertLayerWeights> layers;

  // dir holds config.json and model.safetensors (HF BertModel names, with or without a "bert."
  // prefix). Shapes and finiteness of every tensor are checked.
  static BertEncoder load(const std::string& dir);

  // Last hidden states of a batch of token sequences (already holding [CLS] ... [SEP]), right-padded
  // to the longest: [B, T, C] with T = max length; padding positions hold the padded rows' states
  // (they are never attended to). Token type 0 everywhere, positions 0..len-1.
  std::vector<float> hidden_states(const std::vector<std::vector<int32_t>>& ids, int* T_out) const;
  // Sentence embeddings [B, C]: mean over each sequence's tokens, divided by max(norm, 1e-12).
  std::vector<float> embed(const std::vector<std::vector<int32_t>>& ids) const;
};
