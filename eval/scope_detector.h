// Larimar's scope detectors. The external one (ESD): a sentence encoder (all-MiniLM-L6-v2:
// WordPiece, BERT, mean pooling, L2 normalization) embeds the prompts of the written facts into a
// scope memory; a query is in scope when its nearest written fact (1-NN by cosine) is at least
// `threshold` similar. The model is installed at run time (scripts/install_deps.sh --minilm),
// never committed. The internal one (ISD) is the same detector on the Larimar encoder's own codes
// z, made unit vectors by normalize_rows (./scope_detect --isd).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/bert.h"
#include "tokenizer/tokenizer.h"

struct SentenceEncoder {
  Tokenizer tok;
  BertEncoder bert;
  int max_seq_length = 0;  // tokens per sentence, [CLS] and [SEP] included (sentence_bert_config.json)

  // dir: a sentence-transformers directory (config.json, model.safetensors, tokenizer.json,
  // sentence_bert_config.json; modules.json, when present, must be Transformer, mean Pooling,
  // Normalize). A missing MiniLM model is an error naming the package and the install command.
  static SentenceEncoder load(const std::string& dir);
  int dim() const { return bert.cfg.hidden_size; }
  // Token ids of one sentence as sentence-transformers makes them: [CLS] text [SEP], the text cut
  // so that the whole fits max_seq_length.
  std::vector<int32_t> token_ids(const std::string& text) const;
  // [n, dim] unit vectors, `batch` sentences per forward pass.
  std::vector<float> embed(const std::vector<std::string>& texts, int batch = 32) const;
};

// Scales each row of x [n, dim] to unit length (a zero row stays zero: its cosine with anything is 0).
void normalize_rows(std::vector<float>& x, int dim);

struct ScopeMatch {
  int32_t nearest = -1;   // index of the most similar written fact (-1: the memory is empty)
  float cosine = -2.0f;   // its cosine similarity
  bool in_scope = false;  // cosine >= threshold
};

struct ScopeDetector {
  int dim = 0;
  float threshold = 0.0f;
  std::vector<float> memory;  // [size(), dim] unit vectors of the written facts

  ScopeDetector(int dim, float threshold) : dim(dim), threshold(threshold) {}
  int64_t size() const { return dim ? int64_t(memory.size()) / dim : 0; }
  // Appends n embeddings (unit vectors, as SentenceEncoder::embed gives).
  void write(const float* embeddings, int64_t n);
  // 1-NN by cosine (dot products of unit vectors; a tie goes to the earlier fact).
  std::vector<ScopeMatch> match(const float* queries, int64_t n) const;
};

// Detection quality on labelled queries, from the nearest-fact cosines of in-scope queries (the
// written prompts, paraphrases) and out-of-scope ones. At threshold t a query is accepted when its
// cosine >= t: false-accept rate FAR(t) = share of out-of-scope accepted, false-reject rate
// FRR(t) = share of in-scope rejected. The equal error rate is (FAR + FRR) / 2 at the observed
// score t where |FAR - FRR| is smallest (the lower t on a tie); F1 = 2PR / (P + R) with
// precision P and recall R of the in-scope class at the given threshold (0 when undefined).
struct ScopeMetrics {
  double eer = 0, eer_threshold = 0;          // from the scores alone
  double precision = 0, recall = 0, f1 = 0;   // at `threshold`
  double threshold = 0;
};
ScopeMetrics scope_metrics(const std::vector<float>& in_scope, const std::vector<float>& out_of_scope,
                           double threshold);
