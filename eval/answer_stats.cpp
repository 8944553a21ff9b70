#include "eval/answer_stats.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

AnswerStats answer_stats(const float* logits, int vocab, const std::vector<int32_t>& answer) {
  AnswerStats st;
  for (size_t j = 0; j < answer.size(); ++j) {
    const float* row = logits + j * size_t(vocab);
    const int32_t t = answer[j];
    check(t >= 0 && t < vocab, "answer_stats: token ", t, " is outside the vocabulary (", vocab, ")");
    // log p_t = x_t - max - log(sum_i exp(x_i - max)).
    const float mx = *std::max_element(row, row + vocab);
    double sum = 0;
    int above = 0;  // tokens greedy decoding would prefer to t
    for (int i = 0; i < vocab; ++i) {
      sum += std::exp(double(row[i]) - mx);
      above += row[i] > row[t] || (row[i] == row[t] && i < t);
    }
    st.sum_logprob += double(row[t]) - mx - std::log(sum);
    st.top1 += above == 0;
    if (j == 0) st.first_rank = 1 + above;
  }
  st.num_tokens = int(answer.size());
  st.mean_logprob = st.num_tokens ? st.sum_logprob / st.num_tokens : 0.0;
  return st;
}

std::vector<AnswerStats> score_answers(const InferenceModel& m, const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<std::vector<int32_t>>& answers, int batch_size) {
  check(prompts.size() == answers.size(), "score_answers: prompts and answers differ in count");
  check(batch_size > 0, "score_answers: batch size must be positive");
  const int V = m.config->vocab_size;
  std::vector<AnswerStats> stats(prompts.size());
  for (size_t b0 = 0; b0 < prompts.size(); b0 += size_t(batch_size)) {
    const int nb = int(std::min(prompts.size() - b0, size_t(batch_size)));
    size_t longest = 0;
    std::vector<int32_t> toks;
    std::vector<int> seq, want;
    std::vector<size_t> first_row(nb);  // each sequence's first wanted row: its answer's rows follow in order
    for (int s = 0; s < nb; ++s) {
      const auto& p = prompts[b0 + s];
      const auto& a = answers[b0 + s];
      check(!p.empty(), "score_answers: prompt ", b0 + s, " is empty");
      longest = std::max(longest, p.size() + a.size());
      first_row[s] = want.size();
      for (size_t j = 0; j < p.size() + a.size(); ++j) {
        // The logits after token j predict token j+1: wanted from the last prompt token to the
        // second-to-last answer token.
        if (j + 1 >= p.size() && j + 1 < p.size() + a.size()) want.push_back(int(toks.size()));
        toks.push_back(j < p.size() ? p[j] : a[j - p.size()]);
        seq.push_back(s);
      }
    }
    KvCache cache(*m.config, nb, int(longest));
    std::vector<float> logits;
    forward_tokens(m, cache, toks, seq, want, logits);
    for (int s = 0; s < nb; ++s) stats[b0 + s] = answer_stats(&logits[first_row[s] * V], V, answers[b0 + s]);
  }
  return stats;
}
