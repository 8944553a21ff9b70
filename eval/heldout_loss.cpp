#include "eval/heldout_loss.h"

#include <algorithm>

#include "common/error.h"
#include "common/hash.h"
#include "dataloader/dataloader.h"
#include "dataloader/shard.h"

HeldoutData load_heldout(const std::string& shard_list, uint64_t tokenizer_hash, int64_t vocab_size, int max_T,
                         int64_t tokens_per_batch) {
  check(max_T > 1, "held-out loss: the model's context (", max_T, ") is too short");
  std::vector<Shard> shards;
  int64_t longest = 0;
  for (const std::string& path : expand_shard_list(shard_list)) {
    shards.emplace_back(path);
    const Shard& s = shards.back();
    check(tokenizer_hash == 0 || s.tokenizer_hash() == 0 || s.tokenizer_hash() == tokenizer_hash, path,
          ": field 'tokenizer_hash' (", hash_hex(s.tokenizer_hash()), ") differs from the model's tokenizer (",
          hash_hex(tokenizer_hash), ")");
    check(vocab_size <= 0 || int64_t(s.header.vocab_size) <= vocab_size, path, ": field 'vocab_size' (",
          s.header.vocab_size, ") exceeds the model's vocabulary (", vocab_size, ")");
    for (int64_t e = 0; e < s.num_examples(); ++e) longest = std::max(longest, s.example_length(e));
  }
  HeldoutData d;
  d.T = int(std::min<int64_t>(longest, max_T));
  check(d.T > 0, shard_list, ": no examples");
  d.rows = int(std::max<int64_t>(1, tokens_per_batch / d.T));
  // Examples are cut to T and packed first-fit, `rows` rows per batch: the batch is closed as soon
  // as the next example would open row rows+1.
  std::vector<std::vector<int32_t>> tok;
  std::vector<std::vector<uint8_t>> loss;
  std::vector<int> fill;
  auto flush = [&] {
    if (tok.empty()) return;
    std::vector<ExampleSpan> spans;
    for (size_t i = 0; i < tok.size(); ++i) spans.push_back({tok[i].data(), loss[i].data(), int64_t(tok[i].size())});
    d.batches.push_back(pack_examples(spans, d.T, /*pack=*/true));
    tok.clear();
    loss.clear();
    fill.clear();
  };
  for (const Shard& s : shards)
    for (int64_t e = 0; e < s.num_examples(); ++e) {
      auto t = s.example_tokens(e);
      auto l = s.example_loss(e);
      if (int64_t(t.size()) > d.T) {
        t.resize(size_t(d.T));
        l.resize(size_t(d.T));
        ++d.truncated;
      }
      const int len = int(t.size());
      bool fits = false;
      for (int& f : fill)
        if (f + len <= d.T) {
          f += len;
          fits = true;
          break;
        }
      if (!fits && int(fill.size()) == d.rows) {
        flush();
      }
      if (!fits) fill.push_back(len);
      tok.push_back(std::move(t));
      loss.push_back(std::move(l));
      ++d.examples;
    }
  flush();
  return d;
}
