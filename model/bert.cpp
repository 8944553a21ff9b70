// BERT forward, per layer (x: [N, C] hidden states of all B*T positions):
//   qkv = x Wqkv^T + b ; ctx = softmax(q k^T / sqrt(D)) v over the row's real tokens ;
//   a = LayerNorm(ctx Wo^T + bo + x) ; h = LayerNorm(W2 gelu(W1 a + b1) + b2 + a)
// and before the first layer x = LayerNorm(word[id] + position[t] + token_type[0]).
// The padding mask is the attention kernel's key range: every query of row r reads keys
// [0, len_r - 1], so padding keys get probability 0 exactly (HF adds the dtype's minimum instead).
#include "model/bert.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/json_file.h"
#include "kernels/cpu/ops.h"
#include "model/safetensors.h"

using nlohmann::json;

BertConfig load_bert_config(const std::string& path) {
  const json j = read_json_file(path);
  if (!j.is_object()) fail(path, ": not a JSON object");
  static const char* const read[] = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                     "intermediate_size", "max_position_embeddings", "type_vocab_size",
                                     "layer_norm_eps", "hidden_act", "position_embedding_type", "model_type",
                                     "architectures", "pad_token_id", "is_decoder", "add_cross_attention"};
  // no effect on inference: dropout, initialisation, bookkeeping
  static const char* const inert[] = {"attention_probs_dropout_prob", "hidden_dropout_prob", "classifier_dropout",
                                      "initializer_range", "gradient_checkpointing", "use_cache",
                                      "transformers_version", "_name_or_path", "torch_dtype", "dtype",
                                      "chunk_size_feed_forward", "output_attentions", "output_hidden_states",
                                      "return_dict", "bos_token_id", "eos_token_id", "tie_word_embeddings"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : read) known = known || it.key() == k;
    for (const char* k : inert) known = known || it.key() == k;
    if (!known) fail(path, ": field '", it.key(), "' is not supported by the BERT encoder");
  }
  auto int_field = [&](const char* k, int lo) {
    if (!j.contains(k) || !j[k].is_number_integer() || j[k].get<int64_t>() < lo || j[k].get<int64_t>() > (1 << 30))
      fail(path, ": field '", k, "' must be an integer >= ", lo);
    return j[k].get<int>();
  };
  auto str_field = [&](const char* k, const char* expected, bool required) {
    if (!j.contains(k)) {
      if (required) fail(path, ": field '", k, "' is missing");
      return;
    }
    if (!j[k].is_string() || j[k].get<std::string>() != expected)
      fail(path, ": field '", k, "' must be \"", expected, "\" (got ", j[k].dump(), ")");
  };
  BertConfig c;
  c.vocab_size = int_field("vocab_size", 1);
  c.hidden_size = int_field("hidden_size", 1);
  c.num_hidden_layers = int_field("num_hidden_layers", 1);
  c.num_attention_heads = int_field("num_attention_heads", 1);
  c.intermediate_size = int_field("intermediate_size", 1);
  c.max_position_embeddings = int_field("max_position_embeddings", 1);
  c.type_vocab_size = int_field("type_vocab_size", 1);
  if (j.contains("pad_token_id") && !j["pad_token_id"].is_null()) c.pad_token_id = int_field("pad_token_id", 0);
  if (c.hidden_size % c.num_attention_heads != 0)
    fail(path, ": field 'hidden_size' (", c.hidden_size, ") is not a multiple of 'num_attention_heads' (",
         c.num_attention_heads, ")");
  if (!j.contains("layer_norm_eps") || !j["layer_norm_eps"].is_number() || !(j["layer_norm_eps"].get<double>() > 0))
    fail(path, ": field 'layer_norm_eps' must be a positive number");
  c.layer_norm_eps = j["layer_norm_eps"].get<float>();
  str_field("hidden_act", "gelu", true);
  str_field("position_embedding_type", "absolute", false);
  str_field("model_type", "bert", true);
  if (j.contains("architectures") && !j["architectures"].is_null()) {
    if (!j["architectures"].is_array()) fail(path, ": field 'architectures' must be a list");
    for (const auto& a : j["architectures"])
      if (!a.is_string() || (a != "BertModel" && a != "BertForMaskedLM" && a != "BertForPreTraining"))
        fail(path, ": field 'architectures' holds ", a.dump(), " (only BertModel, BertForMaskedLM, BertForPreTraining)");
  }
  for (const char* k : {"is_decoder", "add_cross_attention"})
    if (j.contains(k) && !(j[k].is_boolean() && !j[k].get<bool>())) fail(path, ": field '", k, "' must be false");
  return c;
}

BertEncoder BertEncoder::load(const std::string& dir) {
  BertEncoder e;
  e.cfg = load_bert_config(dir + "/config.json");
  const BertConfig& c = e.cfg;
  SafeTensors st = SafeTensors::open(dir + "/model.safetensors");
  const std::string prefix = st.has("embeddings.word_embeddings.weight") ? "" : "bert.";
  const int64_t C = c.hidden_size, I = c.intermediate_size;
  auto read = [&](const std::string& name, const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::vector<float> v(static_cast<size_t>(n));
    st.read_f32(prefix + name, v.data(), shape);
    return v;
  };
  e.word_emb = read("embeddings.word_embeddings.weight", {c.vocab_size, C});
  e.pos_emb = read("embeddings.position_embeddings.weight", {c.max_position_embeddings, C});
  e.type_emb = read("embeddings.token_type_embeddings.weight", {c.type_vocab_size, C});
  e.emb_ln_w = read("embeddings.LayerNorm.weight", {C});
  e.emb_ln_b = read("embeddings.LayerNorm.bias", {C});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    BertLayerWeights w;
    for (const char* part : {"query", "key", "value"}) {
      auto wt = read(p + "attention.self." + part + ".weight", {C, C});
      auto b = read(p + "attention.self." + part + ".bias", {C});
      w.qkv_w.insert(w.qkv_w.end(), wt.begin(), wt.end());
      w.qkv_b.insert(w.qkv_b.end(), b.begin(), b.end());
    }
    w.attn_out_w = read(p + "attention.output.dense.weight", {C, C});
    w.attn_out_b = read(p + "attention.output.dense.bias", {C});
    w.attn_ln_w = read(p + "attention.output.LayerNorm.weight", {C});
    w.attn_ln_b = read(p + "attention.output.LayerNorm.bias", {C});
    w.inter_w = read(p + "intermediate.dense.weight", {I, C});
    w.inter_b = read(p + "intermediate.dense.bias", {I});
    w.out_w = read(p + "output.dense.weight", {C, I});
    w.out_b = read(p + "output.dense.bias", {C});
    w.out_ln_w = read(p + "output.LayerNorm.weight", {C});
    w.out_ln_b = read(p + "output.LayerNorm.bias", {C});
    e.layers.push_back(std::move(w));
  }
  return e;
}

std::vector<float> BertEncoder::hidden_states(const std::vector<std::vector<int32_t>>& ids, int* T_out) const {
  const int B = int(ids.size()), C = cfg.hidden_size, H = cfg.num_attention_heads, I = cfg.intermediate_size;
  int T = 1;
  for (const auto& s : ids) {
    check(!s.empty(), "BertEncoder: an empty token sequence (it needs at least [CLS] and [SEP])");
    check(int(s.size()) <= cfg.max_position_embeddings, "BertEncoder: a sequence of ", s.size(),
          " tokens exceeds max_position_embeddings ", cfg.max_position_embeddings);
    T = std::max(T, int(s.size()));
  }
  *T_out = T;
  const int N = B * T;
  std::vector<int32_t> tokens(N, cfg.pad_token_id), key_lo(N, 0), key_hi(N);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      if (t < int(ids[b].size())) {
        int32_t id = ids[b][t];
        check(id >= 0 && id < cfg.vocab_size, "BertEncoder: token id ", id, " outside the vocab of ", cfg.vocab_size);
        tokens[b * T + t] = id;
      }
      key_hi[b * T + t] = int32_t(ids[b].size()) - 1;
    }
  std::vector<float> x(size_t(N) * C), qkv(size_t(N) * 3 * C), ctx(size_t(N) * C), lse(size_t(N) * H),
      tmp(size_t(N) * C), inter(size_t(N) * I);
  for (int n = 0; n < N; ++n) {
    const float* w = word_emb.data() + int64_t(tokens[n]) * C;
    const float* p = pos_emb.data() + int64_t(n % T) * C;
    float* o = x.data() + int64_t(n) * C;
    for (int i = 0; i < C; ++i) o[i] = w[i] + p[i] + type_emb[i];
  }
  layernorm_forward(x.data(), x.data(), emb_ln_w.data(), emb_ln_b.data(), N, C, cfg.layer_norm_eps);
  const AttentionShape shape{B, T, T, H, H, C / H, 3 * C, 3 * C};
  for (const BertLayerWeights& w : layers) {
    matmul_forward(qkv.data(), x.data(), w.qkv_w.data(), w.qkv_b.data(), N, C, 3 * C, false);
    attention_forward(ctx.data(), lse.data(), qkv.data(), qkv.data() + C, qkv.data() + 2 * C, key_lo.data(),
                      key_hi.data(), shape);
    matmul_forward(tmp.data(), ctx.data(), w.attn_out_w.data(), w.attn_out_b.data(), N, C, C, false);
    for (size_t i = 0; i < tmp.size(); ++i) tmp[i] += x[i];
    layernorm_forward(x.data(), tmp.data(), w.attn_ln_w.data(), w.attn_ln_b.data(), N, C, cfg.layer_norm_eps);
    matmul_forward(inter.data(), x.data(), w.inter_w.data(), w.inter_b.data(), N, C, I, false);
    gelu_erf_forward(inter.data(), int64_t(inter.size()));
    matmul_forward(tmp.data(), inter.data(), w.out_w.data(), w.out_b.data(), N, I, C, false);
    for (size_t i = 0; i < tmp.size(); ++i) tmp[i] += x[i];
    layernorm_forward(x.data(), tmp.data(), w.out_ln_w.data(), w.out_ln_b.data(), N, C, cfg.layer_norm_eps);
  }
  return x;
}

std::vector<float> BertEncoder::embed(const std::vector<std::vector<int32_t>>& ids) const {
  int T = 0;
  std::vector<float> h = hidden_states(ids, &T);
  const int C = cfg.hidden_size;
  std::vector<float> out(ids.size() * size_t(C), 0.0f);
  for (size_t b = 0; b < ids.size(); ++b) {
    float* o = out.data() + b * C;
    const size_t len = ids[b].size();
    for (size_t t = 0; t < len; ++t) {
      const float* r = h.data() + (b * T + t) * size_t(C);
      for (int i = 0; i < C; ++i) o[i] += r[i];
    }
    double norm = 0;
    for (int i = 0; i < C; ++i) o[i] /= float(len), norm += double(o[i]) * o[i];
    const float inv = 1.0f / std::max(float(std::sqrt(norm)), 1e-12f);
    for (int i = 0; i < C; ++i) o[i] *= inv;
  }
  return out;
}
