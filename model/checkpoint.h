// Training checkpoints. A checkpoint directory is a Hugging Face model directory that
// LlamaForCausalLM.from_pretrained() loads as is, plus what training needs to resume bit-exactly:
//   config.json, model.safetensors      weights under HF names (save_weights); beyond
//                                       max_shard_bytes model-0000i-of-0000N.safetensors plus
//                                       model.safetensors.index.json, as save_pretrained
//   tokenizer.json                      the tokenizer the data was made with
//   generation_config.json              bos/eos ids, greedy decoding
//   optimizer.safetensors               fp32 master weights and AdamW first/second moments, each
//                                       one flat tensor in the layout of model/params.h; the
//                                       moments are F32, or BF16 when training keeps them in bf16
//                                       (--optimizer-state bf16: the stored values are exact)
//   trainer_state.json                  step, epoch, data cursor, RNG state, args, tokenizer hash,
//                                       prompt template... (fields chosen by train_llama)
//   (any files of write_extra, e.g. a Larimar run's encoder/ and larimar*.safetensors)
// With ZeRO over R > 1 ranks the optimizer state is sharded instead of optimizer.safetensors:
//   optimizer-<r>-of-<R>.safetensors    rank r-1's slice [begin, end) of the flat buffer: the same
//                                       three tensors over that slice (metadata: begin, end)
//   optimizer.index.json                the shards' files and ranges, the layout fingerprint
// Any world size reads either form (load_optimizer_state takes a slice), so a run resumes at
// another world size by reading the slice it owns now.
// Everything is written into DIR.tmp, fsynced, then DIR.tmp is renamed to DIR, so a crash or a
// SIGKILL at any moment leaves either the old complete checkpoint or the new complete one. A save
// that fails (a full disk...) removes its DIR.tmp before throwing; one killed leaves DIR.tmp,
// which recover_run_dir removes at the next start.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/params.h"
#include "model/weights.h"

constexpr int kCheckpointFormatVersion = 1;

struct CheckpointToSave {
  const LlamaConfig* config = nullptr;
  const ParamLayout* layout = nullptr;
  const float* params = nullptr;   // [layout.total] fp32 master weights
  const float* adam_m = nullptr;   // [layout.total]
  const float* adam_v = nullptr;   // [layout.total]
  std::string tokenizer_json;      // written as tokenizer.json when not empty
  nlohmann::json trainer_state;    // "format_version" is added
  std::string weights_dtype = "F32";  // model.safetensors dtype ("F32" or "BF16")
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;  // of a weight file (plan_weight_files)
  std::string moments_dtype = "F32";  // AdamW moments in optimizer.safetensors ("F32" or "BF16")
  // More files of the same checkpoint (e.g. a Larimar model's encoder/ and memory parameters),
  // written into the temporary directory before trainer_state.json, so they are part of the
  // atomic save.
  std::function<void(const std::string& tmp_dir)> write_extra;
};

// Writes the checkpoint atomically (see above). Refuses to write non-finite weights or moments:
// a NaN must never reach disk. Replaces DIR if it exists.
void save_checkpoint(const std::string& dir, const CheckpointToSave& ck);

// The sharded save, across ranks (the caller puts a barrier between the steps, so that nothing
// is renamed before every rank has written, and every rank learns whether each step succeeded):
//   rank 0:     begin_checkpoint(DIR)               a fresh DIR.tmp
//   every rank: write_optimizer_shard(DIR, ...)     its slice into DIR.tmp (fsynced)
//   every rank: write_weight_files(DIR, ...)        the HF weight files, each written by one rank
//   rank 0:     finish_sharded_checkpoint(DIR, ...) config, tokenizer, the indexes,
//                                                   trainer_state.json last, then the rename as
//                                                   in save_checkpoint
//   on failure: abandon_checkpoint(DIR)             rank 0 removes DIR.tmp
struct OptimizerShardToSave {
  const ParamLayout* layout = nullptr;
  int rank = 0, world = 1;
  size_t begin = 0, count = 0;                               // the slice of the flat buffer
  const float *params = nullptr, *adam_m = nullptr, *adam_v = nullptr;  // [count] each
  std::string moments_dtype = "F32";
};
void begin_checkpoint(const std::string& dir);
void write_optimizer_shard(const std::string& dir, const OptimizerShardToSave& shard);

// The weight files of plan_weight_files written by the ranks, none of which holds the whole
// model: file i is written by the rank that owns most of its elements (`bounds`: the R + 1
// boundaries of the ranks' slices; empty: every rank holds everything and file i goes to rank
// i mod R). Every rank goes through every piece (weight_file_pieces) of every file in the same
// order and calls fetch(begin, end, writer, dst): the collective that brings the flat elements
// [begin, end) into dst on rank `writer` (nullptr on the others) from the ranks that own them,
// so that a writer holds one piece at a time. A writer that fails (a full disk...) goes on
// fetching, so that no rank is left waiting in a collective, and throws at the end.
struct WeightFilesToSave {
  const ParamLayout* layout = nullptr;
  std::string dtype = "F32";
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
  int rank = 0, world = 1;
  std::vector<size_t> bounds;
  size_t chunk = size_t(1) << 22;  // elements per piece
  std::function<void(size_t begin, size_t end, int writer, float* dst)> fetch;
};
std::vector<int> weight_file_writers(const std::vector<WeightFile>& files, const std::vector<size_t>& bounds,
                                     int world);
void write_weight_files(const std::string& dir, const WeightFilesToSave& w);

// ck.params and ck.adam_m/adam_v are not used (the ranks wrote the weights and their shards).
// `bounds` are the R + 1 slice boundaries (0 = bounds[0] <= ... <= bounds[R] = layout.total).
void finish_sharded_checkpoint(const std::string& dir, const CheckpointToSave& ck, const std::vector<size_t>& bounds);
void abandon_checkpoint(const std::string& dir);

// True when dir holds a complete training checkpoint (trainer_state.json + optimizer.safetensors
// or optimizer.index.json).
bool is_training_checkpoint(const std::string& dir);

// Reads trainer_state.json (checks format_version); errors name the file and the field.
nlohmann::json load_trainer_state(const std::string& dir);

// The fields of trainer_state.json that --resume reads back, each checked for type and range (the
// file is read from disk like any input). The data cursor stays JSON: DataCursor::from_json and
// DataLoader::restore validate it against the data.
struct ResumeState {
  int64_t step = 0, loss_below_count = 0, tokens_seen = 0;
  int adam_step = 0;
  double elapsed_s = 0;
  nlohmann::json data_cursor, evals = nlohmann::json::array();
  std::map<std::string, std::vector<std::string>> args;  // the run's options, as given
  std::vector<std::string> earlier_stage_templates;       // of the stages before this one
};
ResumeState parse_resume_state(const nlohmann::json& trainer_state, const std::string& where);

// The prompt templates of a checkpoint's stages, oldest first: its `earlier_stage_templates`
// followed by its own `prompt_template` (the last stage's). `where` names the file in errors.
std::vector<std::string> stage_prompt_templates(const nlohmann::json& trainer_state, const std::string& where);

// Reads the fp32 master weights and AdamW moments (F32 or BF16, returned as fp32) of a checkpoint
// made for this layout; the shape
// and a layout fingerprint are checked so that a checkpoint of another model is refused clearly.
void load_optimizer_state(const std::string& dir, const ParamLayout& layout, float* params, float* adam_m,
                          float* adam_v);
// The same from either form of the state: the whole fp32 master weights into `params` ([total];
// nullptr: not read) and the moments of the slice [begin, begin + count) into adam_m / adam_v.
void load_optimizer_state(const std::string& dir, const ParamLayout& layout, float* params, size_t begin,
                          size_t count, float* adam_m, float* adam_v);

// A fingerprint of tensor names, shapes and offsets, stored in optimizer.safetensors.
std::string layout_fingerprint(const ParamLayout& layout);

// Periodic checkpoints of a run live in OUT/checkpoint-<step>. Returns them sorted by step
// (complete ones only: a leftover .tmp directory is ignored).
struct RunCheckpoint {
  int64_t step;
  std::string dir;
};
std::vector<RunCheckpoint> list_run_checkpoints(const std::string& out_dir);
std::string run_checkpoint_dir(const std::string& out_dir, int64_t step);

// `--resume PATH`: PATH is a checkpoint, or a run directory whose newest checkpoint-<step> is
// taken. Throws naming PATH when there is none.
std::string resolve_resume_dir(const std::string& path);

// Deletes all but the `keep` newest periodic checkpoints (keep <= 0: keep all).
void rotate_run_checkpoints(const std::string& out_dir, int keep);

// Run start (with the run lock held): removes the DIR.tmp directories of interrupted saves and
// puts back a DIR.old.<pid> whose replacement never arrived. Returns one note per action.
std::vector<std::string> recover_run_dir(const std::string& out_dir);
