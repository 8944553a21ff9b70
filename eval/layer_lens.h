// Where a model stores its facts: the logit lens and layer swapping (analyze_layers).
//
// Logit lens. For a QA item (prompt tokens p, answer tokens a_0..a_{A-1}) the model reads the
// teacher-forced sequence p a_0 .. a_{A-2} in ONE forward pass of LlamaModel<Backend>, which keeps
// the residual stream h_l entering every layer (h_0 = the embeddings, h_L = after the last block).
// At each position t that predicts an answer token (t = |p|-1+j predicts a_j) and each layer
// boundary l = 0..L, the lens reads the model's own final RMSNorm and LM head off h_l:
//   logits_l(t) = W_head · (g ⊙ h_l(t) / rms(h_l(t))),   p_l(a_j) = softmax(logits_l(t))[a_j]
// (at l = L these are exactly the model's logits). Per (token, layer) it records the gold
// probability, the gold rank (0 = greedy decoding picks it: the count of tokens with a larger
// logit, plus those with an equal logit and a lower id, as argmax takes the lowest id on ties) and
// the top-1 token. ℓ* of a fact is the first layer boundary from which the gold first answer token
// is top-1 at every later boundary through L, or "never" (-1) when it is not top-1 at L;
// ℓ*_all asks the same of every answer token at once.
//
// Cost per fact: one forward pass over |p|+A-1 tokens, plus (L+1)·A lens rows of
// C (RMSNorm) + 2·C·V (LM head) flops each. The LM head runs only at the A answer positions, in
// chunks of model.head_chunk rows of full vocabulary logits (bounded memory; a full row is needed
// for the exact rank), and each row is reduced on the backend (LlamaModel::lens_stats) to its
// probability, rank and top-1: only those leave the device.
//
// Layer swapping. swap_layer() copies the tensors of layer l of a reference checkpoint into the
// analysed parameters, by Hugging Face name (prefix model.layers.{l}.):
//   attention : input_layernorm.weight, self_attn.{q,k,v}_proj.weight (+ .bias), self_attn.o_proj.weight
//   mlp       : post_attention_layernorm.weight, mlp.{gate,up,down}_proj.weight
//   block     : both
// The embeddings, the final norm and the LM head are never swapped. The swaps are written into the
// model on its backend (host -> device, one tensor at a time: the reference never has to fit on the
// device next to the model), and the accuracy after a swap is that of evaluate_factoids (greedy
// decoding + answer matching) on the same model: one model, planned with ModelUse::analysis,
// serves the lens and every swap.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "eval/factoid_eval.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/params.h"
#include "tokenizer/tokenizer.h"

// One answer token at one layer boundary.
struct LensStat {
  float prob = 0;       // softmax probability of the gold token
  int32_t rank = 0;     // 0 = top-1 (see above)
  int32_t top1_id = 0;  // the greedy choice at this layer
};


struct FactLens {
  int layers = 0;             // L; boundaries 0..L
  int answer_len = 0;         // A
  std::vector<LensStat> at;   // [(L+1) * A], boundary-major: at[l * A + j]
  int l_star = -1;            // first answer token; -1 = never
  int l_star_all = -1;        // all answer tokens at once; -1 = never
  const LensStat& stat(int l, int j) const { return at[(size_t)l * answer_len + j]; }
};

// ℓ* of a sequence of top-1 flags over boundaries 0..L (true = gold is top-1): the first boundary of
// the final run of trues, -1 when flags[L] is false.
int first_stable_layer(const std::vector<bool>& top1_by_layer);
// Fills l_star and l_star_all from `at`.
void finish_fact(FactLens& f);

// Aggregates over facts (curves indexed by boundary 0..L).
struct LStarSummary {
  std::vector<int64_t> histogram;  // [L+1] facts per ℓ*
  int64_t never = 0;               // facts whose gold is not top-1 at the last layer
  double mean = 0;                 // over facts with an ℓ* (NaN when none)
  double entropy_bits = 0;         // of the ℓ* distribution over facts with an ℓ* (0 when none)
};
struct LensSummary {
  std::vector<double> top1_first, prob_first;    // first answer token: share top-1, mean gold prob
  std::vector<double> top1_tokens, prob_tokens;  // every answer token (teacher forcing)
  LStarSummary l_star, l_star_all;
};
LensSummary summarize_lens(const std::vector<FactLens>& facts, int L);
LStarSummary summarize_l_star(const std::vector<int>& l_star, int L);

// Tokens a lens batch needs per row: the prompt and all answer tokens but the last.
int lens_row_length(const EvalItem& it);
int lens_max_row_length(const std::vector<EvalItem>& items);

// The model an analysis of `items` needs: `rows` lens rows of T = lens_max_row_length tokens per
// forward pass (rows = min(batch_size, items)), and, for the swap evaluations (max_new_tokens > 0),
// the KV cache greedy decoding reserves: kv_seqs = rows sequences of the longest prompt plus
// max_new_tokens positions. The prefill packs whole prompts into rows * T tokens, which always
// holds one (a prompt is shorter than its lens row).
struct AnalysisShape {
  int rows = 1, T = 1, kv_seqs = 0, kv_len = 0;
};
AnalysisShape analysis_shape(const std::vector<EvalItem>& items, int batch_size, int max_new_tokens);

// The logit lens over `items`, rows_per_batch items per forward pass. `m` must have been built
// with max_rows >= rows_per_batch and max_T >= lens_max_row_length(items), its parameters loaded.
// progress(done) is called after each batch.
template <class Backend>
std::vector<FactLens> run_logit_lens(LlamaModel<Backend>& m, const std::vector<EvalItem>& items, int rows_per_batch,
                                     const std::function<void(size_t)>& progress = {});

// ---- layer swapping -------------------------------------------------------------------------------
enum class SwapPart { attention, mlp, block };
const char* swap_part_name(SwapPart p);
// The tensors of layer `layer` that a swap of `part` replaces, in buffer order.
std::vector<const ParamTensor*> swap_tensors(const ParamLayout& layout, int layer, SwapPart part);
// params[t] = reference[t] for those tensors.
void swap_layer(float* params, const float* reference, const ParamLayout& layout, int layer, SwapPart part);
// The same into a model's parameters on its backend, from host memory (the backend is told, so its
// weight copies are remade: LlamaModel::load_params).
template <class Backend>
void swap_layer(LlamaModel<Backend>& m, const float* source, int layer, SwapPart part) {
  for (const ParamTensor* t : swap_tensors(m.layout, layer, part))
    m.load_params(source + t->offset, t->offset, t->numel);
}

// Refuses a swap between checkpoints whose weights do not line up or whose token ids mean different
// things: every shape-defining config field, then the tensor layout, then the tokenizer. The error
// names both directories and the mismatching field.
void check_swap_compatible(const std::string& dir, const LlamaConfig& c, const Tokenizer& tok,
                           const std::string& ref_dir, const LlamaConfig& ref_c, const Tokenizer& ref_tok);

struct SwapRow {
  std::string part;  // "attention", "mlp", "block", "cumulative" (blocks 0..layer)
  int layer = 0;
  int64_t correct = 0;
  double accuracy = 0;
};
// Every single-layer swap (attention, mlp, block for l = 0..L-1), then the cumulative block swaps,
// each evaluated with evaluate_factoids on `m`, whose parameters must be `params` (host) on entry
// and are again on return. progress(done, total) after each evaluation.
template <class Backend>
std::vector<SwapRow> run_swap_profile(LlamaModel<Backend>& m, const float* params, const float* reference,
                                      const Tokenizer& tok, const std::vector<EvalItem>& items,
                                      const GreedyOptions& opt, MatchKind match,
                                      const std::function<void(size_t, size_t)>& progress = {});

// ---------------------------------------------------------------------------------------------------

template <class Backend>
std::vector<FactLens> run_logit_lens(LlamaModel<Backend>& m, const std::vector<EvalItem>& items, int rows_per_batch,
                                     const std::function<void(size_t)>& progress) {
  const int L = m.L;
  check(rows_per_batch > 0 && rows_per_batch <= m.max_rows, "logit lens: ", rows_per_batch,
        " rows per batch, the model was planned for ", m.max_rows);
  std::vector<FactLens> out(items.size());
  std::vector<float> prob;
  std::vector<int32_t> rank, top1;
  for (size_t i0 = 0; i0 < items.size(); i0 += (size_t)rows_per_batch) {
    const size_t i1 = std::min(items.size(), i0 + (size_t)rows_per_batch);
    Batch b;
    b.rows = int(i1 - i0);
    b.T = 1;
    for (size_t i = i0; i < i1; ++i) b.T = std::max(b.T, lens_row_length(items[i]));
    check(b.T <= m.max_T, "logit lens: an item of ", b.T, " tokens exceeds the planned ", m.max_T);
    const size_t N = (size_t)b.rows * b.T;
    b.tokens.assign(N, 0);
    b.targets.assign(N, -1);
    b.positions.assign(N, 0);
    b.seg_start.resize(N);
    std::vector<int32_t> index, gold;  // flat positions predicting answer tokens, and those tokens
    for (int r = 0; r < b.rows; ++r) {
      const EvalItem& it = items[i0 + r];
      const int P = int(it.prompt_ids.size()), A = int(it.answer_ids.size());
      for (int t = 0; t < b.T; ++t) b.seg_start[(size_t)r * b.T + t] = t;  // padding attends to itself
      for (int t = 0; t < lens_row_length(it); ++t) {
        b.tokens[(size_t)r * b.T + t] = t < P ? it.prompt_ids[t] : it.answer_ids[t - P];
        b.positions[(size_t)r * b.T + t] = t;
        b.seg_start[(size_t)r * b.T + t] = 0;
      }
      for (int j = 0; j < A; ++j) {
        index.push_back(r * b.T + P - 1 + j);
        gold.push_back(it.answer_ids[j]);
      }
      FactLens& f = out[i0 + r];
      f.layers = L;
      f.answer_len = A;
      f.at.resize((size_t)(L + 1) * A);
    }
    m.forward(b);
    prob.resize(index.size());
    rank.resize(index.size());
    top1.resize(index.size());
    for (int l = 0; l <= L; ++l) {
      m.lens_stats(l, index, gold, prob.data(), rank.data(), top1.data());
      size_t k = 0;
      for (int r = 0; r < b.rows; ++r) {
        FactLens& f = out[i0 + r];
        for (int j = 0; j < f.answer_len; ++j, ++k) f.at[(size_t)l * f.answer_len + j] = {prob[k], rank[k], top1[k]};
      }
    }
    for (size_t i = i0; i < i1; ++i) finish_fact(out[i]);
    if (progress) progress(i1);
  }
  return out;
}

template <class Backend>
std::vector<SwapRow> run_swap_profile(LlamaModel<Backend>& m, const float* params, const float* reference,
                                      const Tokenizer& tok, const std::vector<EvalItem>& items,
                                      const GreedyOptions& opt, MatchKind match,
                                      const std::function<void(size_t, size_t)>& progress) {
  const int L = m.L;
  const size_t total = size_t(4 * L);
  std::vector<SwapRow> rows;
  auto evaluate = [&](const char* part, int layer) {
    const EvalOutcome r = evaluate_factoids(m, tok, items, opt, match);
    rows.push_back({part, layer, r.num_correct, r.accuracy});
    if (progress) progress(rows.size(), total);
  };
  for (int l = 0; l < L; ++l)
    for (SwapPart part : {SwapPart::attention, SwapPart::mlp, SwapPart::block}) {
      swap_layer(m, reference, l, part);
      evaluate(swap_part_name(part), l);
      swap_layer(m, params, l, SwapPart::block);  // restore
    }
  for (int l = 0; l < L; ++l) {  // the model already holds blocks 0..l-1 of the reference
    swap_layer(m, reference, l, SwapPart::block);
    evaluate("cumulative", l);
  }
  for (int l = 0; l < L; ++l) swap_layer(m, params, l, SwapPart::block);
  return rows;
}
