// The dataloader: streams of examples from shards, REMIX mixing, epochs, batching, packing,
// rank sharding and a resumable cursor. This header is the API the training loop uses.
//
// Streams. One primary stream and any number of mixed streams (--mix NAME=SHARDS:RATIO); a
// stream is the concatenation of its shards' examples, in the order the shards are given.
// Epoch e holds
//   - every primary example exactly once, and
//   - k = round(RATIO * |primary|) examples of each mixed stream (halves round away from zero).
//     A mixed stream is consumed as a sequence of "cycles", each a fresh permutation of all its
//     examples; epoch e takes the draws [e*k, (e+1)*k) of that sequence, so examples are drawn
//     without replacement and cycle across epochs. When k <= |stream| no example appears twice in
//     one epoch: a cycle that begins mid-epoch moves the examples already drawn in that epoch to
//     its end.
// and is shuffled as a whole with a generator seeded by (seed + e). Everything is a pure
// function of (seed, shards, ratios, epoch), so a cursor needs only (epoch, position).
//
// Batches. Optimizer batch = B consecutive examples of the epoch order (B across all ranks); the
// last batch of an epoch has the remaining examples (never dropped). Rank r of R takes the
// contiguous slice [b*r/R, b*(r+1)/R) of a batch of b examples; the union over ranks is the batch.
// Each rank's slice is cut into micro-batches of micro_batch_size examples (0 = one micro-batch),
// and each micro-batch is laid out into rows of T tokens (see batch.h):
//   - pack = true: first-fit in order: each example goes into the first row that still has room
//     for it, else into a new row (so rows <= examples, and no row exceeds T);
//   - pack = false: one example per row.
// An example longer than T is an error (naming the shard and example) unless truncate = true, in
// which case its first T tokens are used and truncations are counted and logged.
//
// Resume. cursor() is the state after the last returned batch; restore(cursor) on a loader
// built with the same shards, ratios and seed continues with byte-identical batches. B, T,
// packing and micro-batching may differ on restore (the example order does not depend on them);
// the data definition may not (checked through a fingerprint).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dataloader/batch.h"
#include "dataloader/shard.h"

struct MixSpec {
  std::string name;
  std::vector<std::string> shards;
  double ratio = 0;
};
// "NAME=SHARDS:RATIO"; SHARDS as in expand_shard_list. Throws EngineError on a malformed spec.
MixSpec parse_mix_spec(const std::string& spec);
// Comma-separated list; each item is a path or a glob pattern (sorted matches). An item that
// matches no file is an error naming it.
std::vector<std::string> expand_shard_list(const std::string& list);

struct DataLoaderConfig {
  std::vector<std::string> primary_shards;
  std::vector<MixSpec> mixes;
  int batch_size = 32;        // B: examples per optimizer step, summed over ranks
  int micro_batch_size = 0;   // examples per micro-batch on this rank; 0 = all in one
  int T = 0;                  // row length in tokens (the model's sequence length)
  bool pack = true;
  bool truncate = false;
  uint64_t seed = 0;
  int rank = 0, world_size = 1;
  std::string expected_tokenizer_hash;  // 16 hex digits of the model's tokenizer; "" = not checked
  int64_t num_epochs = 0;               // next() returns false after this many epochs; 0 = never
  bool log = true;                      // summary and truncation counts on stderr
};

// The largest epoch a data cursor may hold (DataLoader::restore refuses more).
inline constexpr int64_t kMaxCursorEpoch = int64_t(1) << 20;

struct DataCursor {
  int64_t epoch = 0;     // epoch of the next batch
  int64_t position = 0;  // examples of that epoch already consumed (by all ranks together)
  int64_t step = 0;      // optimizer batches returned so far
  uint64_t seed = 0;
  std::string fingerprint;  // identity of the example sequence: seed, stream names, ratios, shards
  // Per mixed stream, where its draws start in `epoch`: cycle number and offset in that cycle.
  struct StreamState {
    std::string name;
    int64_t cycle = 0, offset = 0;
  };
  std::vector<StreamState> streams;

  nlohmann::json to_json() const;
  static DataCursor from_json(const nlohmann::json& j, const std::string& where);  // throws naming `where`
};

class DataLoader {
 public:
  explicit DataLoader(const DataLoaderConfig& config);  // opens and validates every shard
  ~DataLoader();

  // Fills the next optimizer batch of this rank; false once num_epochs epochs are done.
  bool next(OptimizerBatch& batch);

  int64_t epoch() const { return cursor_.epoch; }  // epoch of the next batch (= epochs completed at a boundary)
  int64_t epoch_size() const;                      // examples per epoch, all streams, all ranks
  int64_t steps_per_epoch() const;                 // ceil(epoch_size / B)
  DataCursor cursor() const { return cursor_; }
  void restore(const DataCursor& c);               // throws if c belongs to different data
  int64_t truncated_examples() const { return truncated_drawn_; }  // truncated examples returned so far

  // The prompt template and tokenizer hash of the primary stream (as stored in its first shard).
  const std::string& prompt_template() const;
  std::string tokenizer_hash_hex() const;

  // Introspection for tests and tools.
  int num_streams() const;  // 1 + number of mixes
  int64_t stream_size(int stream) const;
  int64_t stream_per_epoch(int stream) const;
  const std::string& stream_name(int stream) const;
  std::vector<ExampleRef> epoch_order(int64_t epoch);  // the whole epoch, all ranks
  std::vector<int32_t> example_tokens(ExampleRef e) const;  // full, untruncated
  std::vector<uint8_t> example_loss(ExampleRef e) const;

 private:
  struct Stream;
  DataLoaderConfig cfg_;
  std::vector<std::unique_ptr<Stream>> streams_;
  DataCursor cursor_;
  int64_t order_epoch_ = -1;
  std::vector<ExampleRef> order_;
  int64_t truncated_drawn_ = 0;
  std::string fingerprint_;

  void build_order(int64_t epoch, std::vector<ExampleRef>& out);
  int64_t draw(Stream& s, int64_t g);
  void advance_cycle(Stream& s);
  void fill_stream_states(DataCursor& c) const;
};

// Lays out examples (token and loss arrays, each already at most T long) into a Batch of rows of
// T tokens; exposed for tests and for the packed/unpacked equivalence tests of the model.
struct ExampleSpan {
  const int32_t* tokens;
  const uint8_t* loss;
  int64_t length;
};
Batch pack_examples(const std::vector<ExampleSpan>& examples, int T, bool pack);
