// Inference loops over LlamaModel<Backend>'s KV-cache steps (model/llama.h), the same on every
// backend: batched greedy decoding (answer scoring: eval/answer_stats.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "common/error.h"
#include "model/llama.h"

struct GreedyOptions {
  int max_new_tokens = 32;
  int batch_size = 32;                 // sequences decoded together
  std::vector<int32_t> stop_token_ids; // EOS, end-of-turn...
  std::vector<bool> stops_generation;  // optional [vocab]: tokens that end generation (e.g. any
                                       // token whose text holds a newline); in addition to the ids
  // Optional: called with each step's chosen ids (n of them) before they are used, and may replace
  // them: several processes decoding together (ZeRO 3) all continue from the same tokens.
  std::function<void(int32_t* ids, int n)> agree_tokens;
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
  // A conditioned model (LlamaModel::condition, one row per prompt) puts its memory slot in front
  // of each sequence; each batch of sequences reads its prompts' rows.
  const typename LlamaModel<Backend>::Condition cond = m.condition;
  check(!cond.slot || cond.seqs >= (int)prompts.size(), "greedy_generate: conditioning vectors for ", cond.seqs,
        " prompts, not ", prompts.size());
  m.kv_reserve(batch, int(longest) + opt.max_new_tokens + (cond.slot ? 1 : 0));
  std::vector<int32_t> next(batch), toks, slots;
  for (size_t b0 = 0; b0 < prompts.size(); b0 += size_t(batch)) {
    const int nb = int(std::min(prompts.size() - b0, size_t(batch)));
    m.kv_reset();
    m.condition = m.condition_rows(cond, b0);
    m.kv_prefill(prompts, b0, nb);
    m.kv_argmax(nb, next.data());
    if (opt.agree_tokens) opt.agree_tokens(next.data(), nb);
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
      if (opt.agree_tokens) opt.agree_tokens(next.data(), int(slots.size()));
    }
  }
  m.condition = cond;
  return results;
}


extern template std::vector<std::vector<int32_t>> greedy_generate(LlamaModel<CpuBackend>&,
                                                                  const std::vector<std::vector<int32_t>>&,
                                                                  const GreedyOptions&);
