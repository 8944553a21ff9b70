// Inference loops over LlamaModel<Backend>'s KV-cache steps (model/llama.h), the same on every
// backend: batched greedy decoding and answer log-likelihood scoring.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "model/llama.h"

struct GreedyOptions {
  int max_new_tokens = 32;
  int batch_size = 32;                 // sequences decoded together
  std::vector<int32_t> stop_token_ids; // EOS, end-of-turn...
  std::vector<bool> stops_generation;  // optional [vocab]: tokens that end generation (e.g. any
                                       // token whose text holds a newline); in addition to the ids
  bool stops(int32_t id) const {
    return std::find(stop_token_ids.begin(), stop_token_ids.end(), id) != stop_token_ids.end() ||
           (size_t(id) < stops_generation.size() && stops_generation[id]);
  }
};

// Greedy decoding (argmax; the lowest id wins a tie, as torch.argmax). Each result holds the
// generated ids, including the stop token when one ended generation. Per batch of sequences:
// one prefill, then one decoding step over the sequences still running.
template <class Backend>
std::vector<std::vector<int32_t>> greedy_generate(LlamaModel<Backend>& m,
                                                  const std::vector<std::vector<int32_t>>& prompts,
                                                  const GreedyOptions& opt) {
  check(opt.batch_size > 0, "greedy_generate: batch size must be positive");
  std::vector<std::vector<int32_t>> results(prompts.size());
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    check(!prompts[i].empty(), "greedy_generate: prompt ", i, " is empty");
    longest = std::max(longest, prompts[i].size());
  }
  if (prompts.empty() || opt.max_new_tokens <= 0) return results;
  // One cache for all batches, sized for the largest (a decoding step runs at most max_N tokens).
  const int batch = (int)std::min<int64_t>({(int64_t)opt.batch_size, (int64_t)prompts.size(), m.max_N});
  m.kv_reserve(batch, int(longest) + opt.max_new_tokens);
  std::vector<int32_t> next(batch), toks, slots;
  for (size_t b0 = 0; b0 < prompts.size(); b0 += size_t(batch)) {
    const int nb = int(std::min(prompts.size() - b0, size_t(batch)));
    m.kv_reset();
    m.kv_prefill(prompts, b0, nb);
    m.kv_argmax(nb, next.data());
    slots.resize(nb);
    for (int s = 0; s < nb; ++s) slots[s] = s;
    while (!slots.empty()) {
      // Record the token each running sequence just produced; drop finished sequences.
      toks.clear();
      size_t kept = 0;
      for (size_t r = 0; r < slots.size(); ++r) {
        const int s = slots[r];
        std::vector<int32_t>& out = results[b0 + s];
        out.push_back(next[r]);
        if (opt.stops(next[r]) || int(out.size()) >= opt.max_new_tokens) continue;
        slots[kept++] = s;
        toks.push_back(next[r]);
      }
      slots.resize(kept);
      if (slots.empty()) break;
      m.kv_decode(toks, slots);
      m.kv_argmax(int(slots.size()), next.data());
    }
  }
  return results;
}

// Log-likelihood of `answer` given `prompt` under the model: the sum over answer tokens of
// log p(answer_j | prompt, answer_<j), and that sum divided by the answer length.
struct AnswerScore {
  double sum_logprob = 0, mean_logprob = 0;
  int num_tokens = 0;
};

// One forward per batch over prompt + answer rows (right-padded; padding attends to itself only),
// logits at the positions that predict answer tokens, log-softmax in double on the host.
template <class Backend>
std::vector<AnswerScore> score_answers(LlamaModel<Backend>& m, const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<std::vector<int32_t>>& answers, int batch_size) {
  check(prompts.size() == answers.size(), "score_answers: prompts and answers differ in count");
  check(batch_size > 0, "score_answers: batch size must be positive");
  const int V = m.V;
  std::vector<AnswerScore> scores(prompts.size());
  std::vector<float> logits;
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
    std::vector<int32_t> want, target;
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
          target.push_back(a[t + 1 - p.size()]);
          owner.push_back(b0 + r);
        }
      }
    }
    logits.resize(want.size() * size_t(V));
    if (!want.empty()) m.forward_logits_at(b, want, logits.data());
    for (size_t k = 0; k < want.size(); ++k) {
      // log_softmax in double for the answer token: x_t - max - log(sum exp(x - max)).
      const float* row = &logits[k * V];
      const float mx = *std::max_element(row, row + V);
      double sum = 0;
      for (int i = 0; i < V; ++i) sum += std::exp(double(row[i]) - mx);
      AnswerScore& sc = scores[owner[k]];
      sc.sum_logprob += double(row[target[k]]) - mx - std::log(sum);
      sc.num_tokens += 1;
    }
    b0 = b1;
  }
  for (auto& sc : scores) sc.mean_logprob = sc.num_tokens ? sc.sum_logprob / sc.num_tokens : 0.0;
  return scores;
}

extern template std::vector<std::vector<int32_t>> greedy_generate(LlamaModel<CpuBackend>&,
                                                                  const std::vector<std::vector<int32_t>>&,
                                                                  const GreedyOptions&);
extern template std::vector<AnswerScore> score_answers(LlamaModel<CpuBackend>&,
                                                       const std::vector<std::vector<int32_t>>&,
                                                       const std::vector<std::vector<int32_t>>&, int);
