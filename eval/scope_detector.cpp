#include "eval/scope_detector.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/model_cache.h"
#include "kernels/cpu/ops.h"

using nlohmann::json;

SentenceEncoder SentenceEncoder::load(const std::string& dir) {
  if (!file_exists(dir + "/model.safetensors") || !file_exists(dir + "/tokenizer.json")) {
    if (dir == minilm_dir()) fail(minilm_missing_message());
    fail(dir, ": not a sentence-transformers model directory (no model.safetensors or tokenizer.json)");
  }
  SentenceEncoder e;
  e.tok = Tokenizer::from_json_file_without_length_rules(dir + "/tokenizer.json");
  e.bert = BertEncoder::load(dir);
  const std::string st_config = dir + "/sentence_bert_config.json";
  e.max_seq_length = e.bert.cfg.max_position_embeddings;
  if (file_exists(st_config)) {
    json j = json::parse(read_text_file(st_config), nullptr, false);
    if (j.is_discarded() || !j.is_object()) fail(st_config, ": invalid JSON");
    for (auto it = j.begin(); it != j.end(); ++it)
      if (it.key() != "max_seq_length" && it.key() != "do_lower_case")
        fail(st_config, ": field '", it.key(), "' is not supported");
    if (!j.contains("max_seq_length") || !j["max_seq_length"].is_number_integer() ||
        j["max_seq_length"].get<int64_t>() < 3 || j["max_seq_length"].get<int64_t>() > e.max_seq_length)
      fail(st_config, ": field 'max_seq_length' must be an integer in [3, ", e.max_seq_length, "]");
    // do_lower_case is the tokenizer's business (its normalizer lowercases or not)
    e.max_seq_length = j["max_seq_length"].get<int>();
  }
  const std::string modules = dir + "/modules.json";
  if (file_exists(modules)) {  // the pipeline must be exactly what embed() computes
    json j = json::parse(read_text_file(modules), nullptr, false);
    std::vector<std::string> types;
    if (!j.is_discarded() && j.is_array())
      for (const auto& m : j) types.push_back(m.is_object() ? m.value("type", "") : "");
    const std::vector<std::string> expected = {"sentence_transformers.models.Transformer",
                                               "sentence_transformers.models.Pooling",
                                               "sentence_transformers.models.Normalize"};
    if (types != expected) fail(modules, ": the pipeline must be Transformer, Pooling, Normalize");
    const std::string pooling = dir + "/1_Pooling/config.json";
    json p = json::parse(read_text_file(pooling), nullptr, false);
    if (p.is_discarded() || !p.is_object() || !p.value("pooling_mode_mean_tokens", false) ||
        p.value("pooling_mode_cls_token", false) || p.value("pooling_mode_max_tokens", false) ||
        p.value("pooling_mode_mean_sqrt_len_tokens", false))
      fail(pooling, ": only mean pooling (pooling_mode_mean_tokens alone) is supported");
  }
  std::vector<int32_t> empty = e.tok.encode("", true);
  if (empty.size() != 2 || e.tok.bos_id() != empty[0] || e.tok.eos_id() != empty[1])
    fail(dir, "/tokenizer.json: the post-processor must add exactly one token before and one after ([CLS] $A [SEP])");
  return e;
}

std::vector<int32_t> SentenceEncoder::token_ids(const std::string& text) const {
  std::vector<int32_t> ids = tok.encode(text, true);
  if (int(ids.size()) > max_seq_length) {  // keep [CLS] and the first tokens, end with [SEP]
    ids[max_seq_length - 1] = ids.back();
    ids.resize(max_seq_length);
  }
  return ids;
}

std::vector<float> SentenceEncoder::embed(const std::vector<std::string>& texts, int batch) const {
  std::vector<float> out;
  out.reserve(texts.size() * size_t(dim()));
  for (size_t start = 0; start < texts.size(); start += size_t(batch)) {
    std::vector<std::vector<int32_t>> ids;
    for (size_t i = start; i < std::min(texts.size(), start + size_t(batch)); ++i) ids.push_back(token_ids(texts[i]));
    std::vector<float> e = bert.embed(ids);
    out.insert(out.end(), e.begin(), e.end());
  }
  return out;
}

void normalize_rows(std::vector<float>& x, int dim) {
  check(dim > 0 && x.size() % size_t(dim) == 0, "normalize_rows: ", x.size(), " values are not rows of ", dim);
  for (size_t r = 0; r < x.size(); r += size_t(dim)) {
    double ss = 0;
    for (int c = 0; c < dim; ++c) ss += double(x[r + c]) * x[r + c];
    if (ss == 0) continue;
    const double inv = 1 / std::sqrt(ss);
    for (int c = 0; c < dim; ++c) x[r + c] = float(x[r + c] * inv);
  }
}

void ScopeDetector::write(const float* embeddings, int64_t n) {
  memory.insert(memory.end(), embeddings, embeddings + n * dim);
}

std::vector<ScopeMatch> ScopeDetector::match(const float* queries, int64_t n) const {
  std::vector<ScopeMatch> result(static_cast<size_t>(n));
  const int64_t m = size();
  if (m == 0 || n == 0) return result;
  std::vector<float> sims(static_cast<size_t>(n * m));  // [n, m] = queries memory^T
  sgemm(false, true, n, m, dim, 1.0f, queries, dim, memory.data(), dim, 0.0f, sims.data(), m);
  for (int64_t q = 0; q < n; ++q) {
    const float* row = sims.data() + q * m;
    const int64_t best = std::max_element(row, row + m) - row;
    result[q] = {int32_t(best), row[best], row[best] >= threshold};
  }
  return result;
}

ScopeMetrics scope_metrics(const std::vector<float>& in_scope, const std::vector<float>& out_of_scope,
                           double threshold) {
  check(!in_scope.empty() && !out_of_scope.empty(),
        "scope_metrics: needs in-scope and out-of-scope queries (got ", in_scope.size(), " and ",
        out_of_scope.size(), ")");
  std::vector<float> in(in_scope), out(out_of_scope), candidates(in);
  std::sort(in.begin(), in.end());
  std::sort(out.begin(), out.end());
  candidates.insert(candidates.end(), out.begin(), out.end());
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  // accepted(v, t): how many of the sorted scores v are >= t
  auto accepted = [](const std::vector<float>& v, double t) {
    return double(v.end() - std::lower_bound(v.begin(), v.end(), t, [](float a, double b) { return a < b; }));
  };
  ScopeMetrics m;
  double best = 2;
  for (float t : candidates) {
    const double far = accepted(out, t) / out.size(), frr = 1 - accepted(in, t) / in.size();
    if (std::abs(far - frr) < best) best = std::abs(far - frr), m.eer = (far + frr) / 2, m.eer_threshold = t;
  }
  m.threshold = threshold;
  const double tp = accepted(in, threshold), fp = accepted(out, threshold), fn = in.size() - tp;
  m.precision = tp + fp > 0 ? tp / (tp + fp) : 0;
  m.recall = tp / (tp + fn);
  m.f1 = m.precision + m.recall > 0 ? 2 * m.precision * m.recall / (m.precision + m.recall) : 0;
  return m;
}
