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
