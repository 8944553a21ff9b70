// One micro-batch in the layout the model consumes: `rows` rows of T tokens, row-major.
// Several examples may share a row (packing); attention never crosses an example boundary and
// positions restart at 0 for each example. Padding carries no loss.
#pragma once
#include <cstdint>
#include <vector>

struct Batch {
  int rows = 0, T = 0;
  std::vector<int32_t> tokens;     // [rows*T] token ids; padding slots hold 0
  std::vector<int32_t> targets;    // [rows*T] id of the next token where the loss applies, else -1
                                   // (prompt tokens, the last token of an example, padding)
  std::vector<int32_t> positions;  // [rows*T] position of the token within its example (0-based)
  std::vector<int32_t> seg_start;  // [rows*T] column, within the row, of the first token of this
                                   // token's example: token t attends to columns [seg_start[t], t].
                                   // A padding slot has seg_start = its own column.
  int num_examples = 0;            // examples laid out in this micro-batch
  int64_t num_target_tokens = 0;   // count of targets != -1
};

// An optimizer step: B examples, split into micro-batches. The loss is the sum over all target
// tokens of all micro-batches divided by `num_target_tokens` (the whole optimizer batch), never a
// mean of per-micro-batch means.
//
// With several ranks, each rank's OptimizerBatch holds its own slice of the B examples; the
// global_* fields give the totals over all ranks (computed locally, the data order being
// deterministic), so the loss can be normalized by the whole batch's target count without an
// extra all-reduce.
struct ExampleRef {
  int32_t stream = 0;  // 0 = primary, 1.. = mixed streams in --mix order
  int64_t index = 0;   // example index within the stream (shards concatenated in order)
};

struct OptimizerBatch {
  std::vector<Batch> micro;
  int64_t num_target_tokens = 0;  // this rank: sum over micro
  int num_examples = 0;           // this rank
  int64_t global_num_target_tokens = 0;  // all ranks
  int global_num_examples = 0;           // all ranks (B, or fewer in the last batch of an epoch)
  int64_t epoch = 0;                     // epoch this batch belongs to
  int64_t step_in_epoch = 0;             // 0-based
  bool last_in_epoch = false;
  std::vector<ExampleRef> examples;      // this rank's examples, in layout order
};
