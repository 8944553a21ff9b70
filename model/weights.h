// A model directory in Hugging Face format: config.json + model.safetensors (or shards with
// model.safetensors.index.json) + tokenizer.json. Loading converts to the flat fp32 layout of
// model/params.h; saving writes HF names so that LlamaForCausalLM.from_pretrained(dir) loads it.
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"
#include "model/params.h"

// Reads dir/model.safetensors or the sharded set into params[layout.total]. Every tensor of the
// layout must be present with the right shape and finite values (errors name file and tensor).
// A tied model may omit lm_head.weight; an untied one must have it.
void load_weights(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout, float* params);

// Writes dir/config.json and dir/model.safetensors (dtype "F32" or "BF16"), each atomically.
void save_weights(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout,
                  const float* params, const std::string& dtype = "F32");

// HF-style initialization from a config alone: normal(0, initializer_range) for linear and
// embedding weights, 1 for RMSNorm weights, 0 for biases. Deterministic for a given seed.
void init_weights(const LlamaConfig& c, const ParamLayout& layout, float* params, uint64_t seed);
