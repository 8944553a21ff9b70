// Held-out loss and perplexity of a data stream that was never trained on (D_B's own metric in a
// REMIX experiment: did stage 2 learn its task?), computed from token shards with the masking
// they were written with: the cross-entropy of every token whose loss bit is set, given the
// tokens before it in its example, averaged over all such tokens of all shards:
//   mean_loss  = sum_tokens -log p(token | prefix) / target_tokens   (nats)
//   perplexity = exp(mean_loss)
// The forward and the loss are the training ones (LlamaModel::forward_loss), on packed rows.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "dataloader/batch.h"
#include "model/llama.h"

struct HeldoutData {
  int T = 0, rows = 0;          // the model's batch shape: rows x T tokens
  std::vector<Batch> batches;   // every example once, packed first-fit into rows
  int64_t examples = 0;
  int64_t truncated = 0;        // examples longer than the model's context, cut to their first T tokens
};

// Loads the shards (a comma-separated list or globs, as --data takes), checks their tokenizer
// hash against `tokenizer_hash` (0 = not checked) and their vocabulary against the model's
// `vocab_size` (0 = not checked), and lays the examples out in batches of
// `rows` rows of T tokens, T = the longest example capped at max_T, rows = tokens_per_batch / T.
HeldoutData load_heldout(const std::string& shard_list, uint64_t tokenizer_hash, int64_t vocab_size, int max_T,
                         int64_t tokens_per_batch = 8192);

struct HeldoutLoss {
  int64_t examples = 0, target_tokens = 0, truncated = 0;
  double loss_sum = 0;  // nats
  double mean_loss() const { return target_tokens ? loss_sum / double(target_tokens) : 0.0; }
  double perplexity() const { return std::exp(mean_loss()); }
};

// The model must be built for (data.rows, data.T) rows and tokens, its parameters loaded; any
// ModelUse will do (ModelUse::inference plans the least memory: the loss reads the last layer only).
template <class Backend>
HeldoutLoss heldout_loss(LlamaModel<Backend>& model, const HeldoutData& data) {
  HeldoutLoss r;
  r.examples = data.examples;
  r.truncated = data.truncated;
  for (const Batch& b : data.batches) {
    r.loss_sum += model.forward_loss(b);
    r.target_tokens += b.num_target_tokens;
  }
  return r;
}
