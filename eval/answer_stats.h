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
#include <cstdint>
#include <vector>

#include "model/decode.h"

struct AnswerStats {
  double sum_logprob = 0, mean_logprob = 0;
  int num_tokens = 0;
  int top1 = 0;        // answer tokens predicted top-1
  int first_rank = 0;  // rank of the first answer token (1 = top-1; 0 for an empty answer)
  double top1_share() const { return num_tokens ? double(top1) / num_tokens : 0.0; }
};

// logits: [answer.size()][vocab] fp32 rows. log-softmax in double.
AnswerStats answer_stats(const float* logits, int vocab, const std::vector<int32_t>& answer);

// Teacher-forced statistics of answers[i] after prompts[i], batch_size sequences per forward pass.
std::vector<AnswerStats> score_answers(const InferenceModel& m, const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<std::vector<int32_t>>& answers, int batch_size);
