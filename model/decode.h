// Inference for evaluation: a forward pass over a ragged set of tokens with a per-sequence
// key/value cache and batched greedy decoding on top of it (answer scoring: eval/answer_stats.h).
//
// One call of forward_tokens() takes N tokens from any number of sequences (a whole prompt during
// prefill, or one token per sequence during decoding). Each token's keys/values are appended to
// its sequence's cache before attention, so a token attends to every earlier position of its own
// sequence, whether cached by an earlier call or written by this one.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/params.h"

struct InferenceModel {
  const LlamaConfig* config = nullptr;
  const ParamLayout* layout = nullptr;
  const float* params = nullptr;  // [layout.total] fp32, HF layout of model/params.h
  std::vector<double> rope_inv_freq;  // [head_dim/2], HF convention incl. llama3 scaling
  // cos/sin tables [rope_positions, head_dim/2], grown on demand to the longest sequence seen.
  mutable std::vector<float> rope_cos, rope_sin;
  mutable int rope_positions = 0;
  // The projection weights transposed, W^T [in, out], made at construction: oneDNN's x W^T with
  // W^T stored row-major ('N','N') runs 1.4-1.6x faster at decoding sizes (32 rows) than reading
  // W [out, in] transposed ('N','T'). So `params` must not change while this model is in use.
  struct LayerWeightsT { size_t qkv, o, gate_up, down; };
  std::vector<LayerWeightsT> layers_t;  // offsets into weights_t
  size_t lm_head_t = 0;
  std::vector<float> weights_t;

  InferenceModel(const LlamaConfig& c, const ParamLayout& l, const float* p);
  void ensure_rope_tables(int positions) const;
};

// Keys/values of up to `max_seqs` sequences of up to `max_len` positions:
// k, v: [layers][max_seqs][max_len][kv_heads * head_dim].
struct KvCache {
  int layers = 0, max_seqs = 0, max_len = 0, kv_dim = 0;
  std::vector<float> k, v;
  std::vector<int> length;  // positions filled per sequence
  struct Scratch {          // activations of forward_tokens, kept between calls
    std::vector<float> x, xn, rstd, qkv, att, lse, gu, act, sel, seln, rstd_sel;
  } scratch;

  KvCache(const LlamaConfig& c, int max_seqs, int max_len);
  void reset();
  float* k_at(int layer, int seq, int pos) { return &k[((size_t(layer) * max_seqs + seq) * max_len + pos) * kv_dim]; }
  float* v_at(int layer, int seq, int pos) { return &v[((size_t(layer) * max_seqs + seq) * max_len + pos) * kv_dim]; }
};

// tokens[i] is appended to sequence seq[i] at position cache.length[seq[i]] (tokens of one
// sequence in order). logits_for lists indices i whose next-token logits are wanted; they are
// written to logits[len(logits_for) * vocab_size].
void forward_tokens(const InferenceModel& m, KvCache& cache, const std::vector<int32_t>& tokens,
                    const std::vector<int>& seq, const std::vector<int>& logits_for, std::vector<float>& logits);

struct GreedyOptions {
  int max_new_tokens = 32;
  int batch_size = 32;                 // sequences decoded together
  std::vector<int32_t> stop_token_ids; // EOS, end-of-turn...
  std::vector<bool> stops_generation;  // optional [vocab]: tokens that end generation (e.g. any
                                       // token whose text holds a newline); in addition to the ids
};

// Greedy decoding (argmax; the lowest id wins a tie, as torch.argmax). Each result holds the
// generated ids, including the stop token when one ended generation.
std::vector<std::vector<int32_t>> greedy_generate(const InferenceModel& m,
                                                  const std::vector<std::vector<int32_t>>& prompts,
                                                  const GreedyOptions& opt);

// Reference path for tests: recomputes the whole sequence at every step, without reusing a cache.
std::vector<int32_t> greedy_generate_recompute(const InferenceModel& m, const std::vector<int32_t>& prompt,
                                               int max_new_tokens, const std::vector<int32_t>& stop_token_ids);
