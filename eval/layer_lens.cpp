#include "eval/layer_lens.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"

int first_stable_layer(const std::vector<bool>& top1) {
  int l = int(top1.size());
  while (l > 0 && top1[l - 1]) --l;
  return l == int(top1.size()) ? -1 : l;
}

void finish_fact(FactLens& f) {
  const int B = f.layers + 1;
  std::vector<bool> first(B), all(B);
  for (int l = 0; l < B; ++l) {
    first[l] = f.stat(l, 0).rank == 0;
    bool every = true;
    for (int j = 0; j < f.answer_len; ++j) every = every && f.stat(l, j).rank == 0;
    all[l] = every;
  }
  f.l_star = first_stable_layer(first);
  f.l_star_all = first_stable_layer(all);
}

LStarSummary summarize_l_star(const std::vector<int>& l_star, int L) {
  LStarSummary s;
  s.histogram.assign(L + 1, 0);
  double sum = 0;
  int64_t stored = 0;
  for (int l : l_star) {
    if (l < 0) {
      ++s.never;
      continue;
    }
    ++s.histogram[l];
    sum += l;
    ++stored;
  }
  s.mean = stored ? sum / double(stored) : std::numeric_limits<double>::quiet_NaN();
  for (int64_t c : s.histogram)
    if (c > 0) {
      const double q = double(c) / double(stored);
      s.entropy_bits -= q * std::log2(q);
    }
  return s;
}

LensSummary summarize_lens(const std::vector<FactLens>& facts, int L) {
  LensSummary s;
  s.top1_first.assign(L + 1, 0);
  s.prob_first.assign(L + 1, 0);
  s.top1_tokens.assign(L + 1, 0);
  s.prob_tokens.assign(L + 1, 0);
  int64_t tokens = 0;
  std::vector<int> first, all;
  for (const FactLens& f : facts) {
    check(f.layers == L, "summarize_lens: a fact has ", f.layers, " layers, expected ", L);
    for (int l = 0; l <= L; ++l) {
      s.top1_first[l] += f.stat(l, 0).rank == 0;
      s.prob_first[l] += f.stat(l, 0).prob;
      for (int j = 0; j < f.answer_len; ++j) {
        s.top1_tokens[l] += f.stat(l, j).rank == 0;
        s.prob_tokens[l] += f.stat(l, j).prob;
      }
    }
    tokens += f.answer_len;
    first.push_back(f.l_star);
    all.push_back(f.l_star_all);
  }
  for (int l = 0; l <= L; ++l) {
    const double n = std::max<double>(1, double(facts.size()));
    s.top1_first[l] /= n;
    s.prob_first[l] /= n;
    s.top1_tokens[l] /= std::max<double>(1, double(tokens));
    s.prob_tokens[l] /= std::max<double>(1, double(tokens));
  }
  s.l_star = summarize_l_star(first, L);
  s.l_star_all = summarize_l_star(all, L);
  return s;
}

int lens_row_length(const EvalItem& it) {
  check(!it.prompt_ids.empty() && !it.answer_ids.empty(), "logit lens: question '", it.question,
        "' has no prompt tokens or no answer tokens");
  return int(it.prompt_ids.size() + it.answer_ids.size()) - 1;
}

int lens_max_row_length(const std::vector<EvalItem>& items) {
  int T = 1;
  for (const auto& it : items) T = std::max(T, lens_row_length(it));
  return T;
}

AnalysisShape analysis_shape(const std::vector<EvalItem>& items, int batch_size, int max_new_tokens) {
  AnalysisShape s;
  s.rows = std::max(1, std::min(batch_size, int(items.size())));
  s.T = lens_max_row_length(items);
  if (max_new_tokens > 0) {
    size_t longest = 1;
    for (const auto& it : items) longest = std::max(longest, it.prompt_ids.size());
    s.kv_seqs = s.rows;
    s.kv_len = int(longest) + max_new_tokens;
  }
  return s;
}

// ---- layer swapping -----------------------------------------------------------------------------

const char* swap_part_name(SwapPart p) {
  switch (p) {
    case SwapPart::attention: return "attention";
    case SwapPart::mlp: return "mlp";
    case SwapPart::block: return "block";
  }
  return "?";
}

static bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::vector<const ParamTensor*> swap_tensors(const ParamLayout& layout, int layer, SwapPart part) {
  check(layer >= 0 && layer < int(layout.layers.size()), "swap: layer ", layer, " is outside [0, ",
        layout.layers.size(), ")");
  const std::string prefix = "model.layers." + std::to_string(layer) + ".";
  std::vector<const ParamTensor*> out;
  for (const ParamTensor& t : layout.tensors) {
    if (!starts_with(t.name, prefix)) continue;
    const std::string rest = t.name.substr(prefix.size());
    const bool attention = starts_with(rest, "input_layernorm.") || starts_with(rest, "self_attn.");
    const bool mlp = starts_with(rest, "post_attention_layernorm.") || starts_with(rest, "mlp.");
    check(attention || mlp, "swap: tensor '", t.name, "' is neither attention nor MLP");
    if (part == SwapPart::block || (part == SwapPart::attention && attention) || (part == SwapPart::mlp && mlp))
      out.push_back(&t);
  }
  return out;
}

void swap_layer(float* params, const float* reference, const ParamLayout& layout, int layer, SwapPart part) {
  for (const ParamTensor* t : swap_tensors(layout, layer, part))
    std::copy(reference + t->offset, reference + t->offset + t->numel, params + t->offset);
}

void check_swap_compatible(const std::string& dir, const LlamaConfig& c, const Tokenizer& tok,
                           const std::string& ref_dir, const LlamaConfig& ref_c, const Tokenizer& ref_tok) {
  auto same = [&](const char* field, auto a, auto b) {
    check(a == b, "--reference ", ref_dir, ": config.json field '", field, "' is ", b, " but ", dir, " has ", a,
          ": layers can only be swapped between checkpoints of the same shapes");
  };
  same("vocab_size", c.vocab_size, ref_c.vocab_size);
  same("hidden_size", c.hidden_size, ref_c.hidden_size);
  same("intermediate_size", c.intermediate_size, ref_c.intermediate_size);
  same("num_hidden_layers", c.num_hidden_layers, ref_c.num_hidden_layers);
  same("num_attention_heads", c.num_attention_heads, ref_c.num_attention_heads);
  same("num_key_value_heads", c.num_key_value_heads, ref_c.num_key_value_heads);
  same("head_dim", c.head_dim, ref_c.head_dim);
  same("attention_bias", c.attention_bias, ref_c.attention_bias);
  same("tie_word_embeddings", c.tie_word_embeddings, ref_c.tie_word_embeddings);
  const ParamLayout a = make_param_layout(c), b = make_param_layout(ref_c);
  check(a.tensors.size() == b.tensors.size(), "--reference ", ref_dir, ": ", b.tensors.size(), " tensors but ", dir,
        " has ", a.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i)
    check(a.tensors[i].name == b.tensors[i].name && a.tensors[i].shape == b.tensors[i].shape, "--reference ", ref_dir,
          ": tensor '", b.tensors[i].name, "' does not match ", dir, "'s '", a.tensors[i].name, "'");
  check(tok.hash() == ref_tok.hash(), "--reference ", ref_dir, ": tokenizer (hash ", ref_tok.hash_hex(),
        ") differs from ", dir, "'s (hash ", tok.hash_hex(), "): token ids would not mean the same");
}
