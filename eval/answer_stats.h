// How well a model knows one gold answer, under teacher forcing: from the logits rows that predict
// the answer's tokens (row j predicts answer[j] given the prompt and answer[<j]).
//   sum_logprob / mean_logprob  sum and mean over the answer of log p(answer_j | prefix)
//   top1                        how many answer tokens are the argmax of their row (the lowest id
//                               wins a tie, as in greedy decoding)
//   first_rank                  the rank of the first answer token in its row: 1 = top-1,
//                               1 + the number of tokens ranked above it (higher logit, or equal
//                               logit and lower id), so rank 1 <=> greedy would emit it
// These are continuous forgetting measures: exact match is all or nothing per fact, while the
// log-probability and the rank move as a fact fades. score_answers computes them for QA pairs;
// any other source of answer logits (a logit lens over layers) can call answer_stats directly.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "dataloader/batch.h"
#include "model/llama.h"

struct AnswerStats {
  double sum_logprob = 0, mean_logprob = 0;
  int num_tokens = 0;
  int top1 = 0;        // answer tokens predicted top-1
  int first_rank = 0;  // rank of the first answer token (1 = top-1; 0 for an empty answer)
  double top1_share() const { return num_tokens ? double(top1) / num_tokens : 0.0; }
};

// logits: [answer.size()][vocab] fp32 rows. log-softmax in double.
AnswerStats answer_stats(const float* logits, int vocab, const std::vector<int32_t>& answer);

// Teacher-forced statistics (answer_stats) of answers[i] after prompts[i]: one forward per batch
// over prompt + answer rows (right-padded; padding attends to itself only), logits only at the
// positions that predict answer tokens. A conditioned model (LlamaModel::condition, one row per
// prompt, e.g. a Larimar memory readout) hands each batch its rows.
template <class Backend>
std::vector<AnswerStats> score_answers(LlamaModel<Backend>& m, const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<std::vector<int32_t>>& answers, int batch_size) {
  check(prompts.size() == answers.size(), "score_answers: prompts and answers differ in count");
  check(batch_size > 0, "score_answers: batch size must be positive");
  const int V = m.V;
  std::vector<AnswerStats> scores(prompts.size());
  std::vector<float> logits;
  const typename LlamaModel<Backend>::Condition cond = m.condition;
  check(!cond.slot || cond.seqs >= (int)prompts.size(), "score_answers: conditioning rows for ", cond.seqs, " of ",
        prompts.size(), " prompts");
  for (size_t b0 = 0; b0 < prompts.size();) {
    // As many rows as the batch size and the model's plan (max_rows of max_T tokens) allow.
    size_t b1 = b0;
    int T = 0;
    while (b1 < prompts.size() && int(b1 - b0) < std::min(batch_size, m.max_rows)) {
      check(!prompts[b1].empty(), "score_answers: prompt ", b1, " is empty");
      const int len = int(prompts[b1].size() + answers[b1].size());
      check(len <= m.max_T, "score_answers: prompt + answer ", b1, " of ", len, " tokens exceeds the model's max_T ",
            m.max_T);
      T = std::max(T, len);
      b1++;
    }
    Batch b;
    b.rows = int(b1 - b0);
    b.T = T;
    b.tokens.assign(size_t(b.rows) * T, 0);
    b.targets.assign(b.tokens.size(), -1);
    b.positions.assign(b.tokens.size(), 0);
    b.seg_start.resize(b.tokens.size());
    std::vector<int32_t> want;
    std::vector<size_t> owner;
    for (int r = 0; r < b.rows; ++r) {
      const auto& p = prompts[b0 + r];
      const auto& a = answers[b0 + r];
      const size_t len = p.size() + a.size();
      for (int t = 0; t < T; ++t) {
        const size_t i = size_t(r) * T + t;
        const bool real = size_t(t) < len;
        if (real) {
          b.tokens[i] = size_t(t) < p.size() ? p[t] : a[t - p.size()];
          b.positions[i] = t;
        }
        b.seg_start[i] = real ? 0 : t;
        // The logits after token t predict token t+1: wanted from the last prompt token to the
        // second-to-last answer token.
        if (size_t(t) + 1 >= p.size() && size_t(t) + 1 < len) {
          want.push_back(int32_t(i));
          owner.push_back(b0 + r);
        }
      }
    }
    logits.resize(want.size() * size_t(V));
    m.condition = m.condition_rows(cond, b0);
    if (!want.empty()) m.forward_logits_at(b, want, logits.data());
    m.condition = cond;
    // Each row's wanted positions are consecutive in `want`, in answer order.
    for (size_t k = 0; k < want.size();) {
      const size_t q = owner[k];
      scores[q] = answer_stats(&logits[k * V], V, answers[q]);
      k += answers[q].size();
    }
    b0 = b1;
  }
  return scores;
}
