// A model directory in Hugging Face format: config.json + model.safetensors (or shards with
// model.safetensors.index.json) + tokenizer.json. Loading converts to the flat fp32 layout of
// model/params.h; saving writes HF names so that LlamaForCausalLM.from_pretrained(dir) loads it.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/params.h"

// Reads dir/model.safetensors or the sharded set into params[layout.total]. Every tensor of the
// layout must be present with the right shape and finite values (errors name file and tensor).
// A tied model may omit lm_head.weight; an untied one must have it.
void load_weights(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout, float* params);

// Hugging Face's default max_shard_size of save_pretrained ("5GB").
constexpr uint64_t kDefaultMaxShardBytes = 5000000000ull;

// One file of the weights, split as save_pretrained(max_shard_size) splits a model: tensors whole,
// in layout order; a tensor that would take the current file past the maximum starts the next
// file, and one larger than the maximum has a file of its own. A model that fits in one file is
// model.safetensors; otherwise the files are model-0000i-of-0000N.safetensors, listed by
// model.safetensors.index.json ({"metadata": {"total_size": bytes}, "weight_map": {tensor: file}}).
struct WeightFile {
  std::string name;
  size_t first = 0, last = 0;  // the tensors layout.tensors[first, last)
  size_t begin = 0, end = 0;   // the flat elements they span
  uint64_t bytes = 0;          // their data, in the file's dtype
};
std::vector<WeightFile> plan_weight_files(const ParamLayout& layout, const std::string& dtype,
                                          uint64_t max_shard_bytes = kDefaultMaxShardBytes);

// The pieces [begin, end) of the flat buffer in which a file's values are gathered and written:
// each tensor in order, cut every `chunk` elements (so that the host holds one piece at a time).
std::vector<std::pair<size_t, size_t>> weight_file_pieces(const ParamLayout& layout, const WeightFile& f,
                                                          size_t chunk);

// Writes dir/<f.name> (atomically: temporary file, fsync, rename) from the values that `read`
// puts into dst[0, end - begin) for each piece [begin, end) of weight_file_pieces, in order.
// `read` is called for every piece even after a failure (it may be a collective that other
// processes wait in); the first failure is thrown at the end, and no file is left.
using WeightReader = std::function<void(size_t begin, size_t end, float* dst)>;
void write_weight_file(const std::string& dir, const ParamLayout& layout, const std::string& dtype,
                       const WeightFile& f, size_t chunk, const WeightReader& read);

// dir/config.json (torch_dtype from dtype) and, when the plan has several files,
// dir/model.safetensors.index.json; each atomically.
void write_weight_index(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout,
                        const std::string& dtype, const std::vector<WeightFile>& files);

// Writes dir/config.json and the weights (dtype "F32" or "BF16") from the whole flat buffer: one
// model.safetensors, or shards plus an index beyond max_shard_bytes (above).
void save_weights(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout,
                  const float* params, const std::string& dtype = "F32",
                  uint64_t max_shard_bytes = kDefaultMaxShardBytes);

// HF-style initialization from a config alone: normal(0, initializer_range) for linear and
// embedding weights, 1 for RMSNorm weights, 0 for biases. Deterministic for a given seed.
void init_weights(const LlamaConfig& c, const ParamLayout& layout, float* params, uint64_t seed);
