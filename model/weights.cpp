#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "model/safetensors.h"

void load_weights(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout, float* params) {
  SafeTensors st = SafeTensors::open(dir);
  for (const auto& t : layout.tensors) st.read_f32(t.name, params + t.offset, t.shape);
  // A tied model may still carry lm_head.weight (some exporters write it); it must then equal the
  // embedding, otherwise tying would silently change the model.
  if (c.tie_word_embeddings && st.has("lm_head.weight")) {
    std::vector<float> head = st.read_f32("lm_head.weight");
    const float* emb = params + layout.embed;
    bool same = head.size() == size_t(c.vocab_size) * c.hidden_size;
    for (size_t i = 0; same && i < head.size(); i++) same = head[i] == emb[i];
    check(same, st.get("lm_head.weight").file,
          ": tensor 'lm_head.weight' differs from model.embed_tokens.weight but config.json says tie_word_embeddings");
  }
}

std::vector<WeightFile> plan_weight_files(const ParamLayout& layout, const std::string& dtype,
                                          uint64_t max_shard_bytes) {
  check(dtype == "F32" || dtype == "BF16", "weights: dtype '", dtype, "' is not F32 or BF16");
  check(max_shard_bytes > 0, "weights: the maximum shard size must be positive");
  const uint64_t es = dtype == "BF16" ? 2 : 4;
  std::vector<WeightFile> files;
  for (size_t i = 0; i < layout.tensors.size(); i++) {
    const ParamTensor& t = layout.tensors[i];
    const uint64_t bytes = t.numel * es;
    WeightFile* cur = files.empty() ? nullptr : &files.back();
    // save_pretrained's rule: a new file begins when this tensor would take the current one past
    // the maximum, so a tensor over the maximum is alone in its file (the next one starts afresh).
    // Unlike save_pretrained, which puts such a tensor's file ahead of the file being filled, the
    // files keep the layout's order: each is one contiguous range of the flat buffer.
    if (!cur || cur->bytes + bytes > max_shard_bytes) {
      files.push_back({"", i, i, t.offset, t.offset, 0});
      cur = &files.back();
    }
    cur->last = i + 1;
    cur->end = t.offset + t.numel;
    cur->bytes += bytes;
  }
  char name[64];
  for (size_t k = 0; k < files.size(); k++) {
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", k + 1, files.size());
    files[k].name = files.size() == 1 ? "model.safetensors" : name;
  }
  return files;
}

std::vector<std::pair<size_t, size_t>> weight_file_pieces(const ParamLayout& layout, const WeightFile& f,
                                                          size_t chunk) {
  check(chunk > 0, "weight_file_pieces: the chunk must be positive");
  std::vector<std::pair<size_t, size_t>> pieces;
  for (size_t i = f.first; i < f.last; i++) {
    const ParamTensor& t = layout.tensors[i];
    for (size_t a = t.offset; a < t.offset + t.numel; a += chunk)
      pieces.push_back({a, std::min(a + chunk, t.offset + t.numel)});
  }
  return pieces;
}

void write_weight_file(const std::string& dir, const ParamLayout& layout, const std::string& dtype,
                       const WeightFile& f, size_t chunk, const WeightReader& read) {
  std::vector<SafeTensorToWrite> tensors;
  for (size_t i = f.first; i < f.last; i++) {
    const ParamTensor& t = layout.tensors[i];
    tensors.push_back({t.name, dtype, t.shape, nullptr});
  }
  std::string err;  // the first failure; `read` still sees every piece (it may be a collective)
  std::unique_ptr<SafeTensorsWriter> w;
  try {
    w = std::make_unique<SafeTensorsWriter>(dir + "/" + f.name, tensors, std::map<std::string, std::string>{{"format", "pt"}});
  } catch (const std::exception& e) {
    err = e.what();
  }
  std::vector<float> buf;
  for (const auto& [a, b] : weight_file_pieces(layout, f, chunk)) {
    buf.resize(b - a);
    try {
      read(a, b, buf.data());
      if (err.empty()) w->write_f32(buf.data(), b - a);
    } catch (const std::exception& e) {
      if (err.empty()) err = e.what();
    }
  }
  if (err.empty()) w->commit();
  w.reset();  // without commit: the temporary file goes
  check(err.empty(), err);
}

void write_weight_index(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout,
                        const std::string& dtype, const std::vector<WeightFile>& files) {
  if (files.size() > 1) {
    nlohmann::json index, map = nlohmann::json::object();
    uint64_t total = 0;
    for (const WeightFile& f : files) {
      total += f.bytes;
      for (size_t i = f.first; i < f.last; i++) map[layout.tensors[i].name] = f.name;
    }
    index["metadata"] = {{"total_size", total}};
    index["weight_map"] = map;
    write_file_atomic(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
  }
  LlamaConfig saved = c;
  saved.torch_dtype = dtype == "BF16" ? "bfloat16" : "float32";
  save_config(saved, dir + "/config.json");
}

void save_weights(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout, const float* params,
                  const std::string& dtype, uint64_t max_shard_bytes) {
  make_dirs(dir);
  const std::vector<WeightFile> files = plan_weight_files(layout, dtype, max_shard_bytes);
  // The whole buffer is at hand: each file in one piece per tensor.
  for (const WeightFile& f : files) {
    std::vector<SafeTensorToWrite> out;
    for (size_t i = f.first; i < f.last; i++) {
      const ParamTensor& t = layout.tensors[i];
      out.push_back({t.name, dtype, t.shape, params + t.offset});
    }
    write_safetensors(dir + "/" + f.name, out, {{"format", "pt"}});
  }
  write_weight_index(dir, c, layout, dtype, files);
}

void init_weights(const LlamaConfig& c, const ParamLayout& layout, float* params, uint64_t seed) {
  // One generator per tensor, seeded from (seed, tensor index): the result does not depend on
  // the thread count, and adding a tensor does not reshuffle the others. Tensors are drawn in
  // parallel (a 1B model's 1.2G normal draws take ~20 s on one core).
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t ti = 0; ti < layout.tensors.size(); ti++) {
    const ParamTensor& t = layout.tensors[ti];
    float* p = params + t.offset;
    if (t.is_norm) {
      std::fill(p, p + t.numel, 1.0f);
    } else if (t.is_bias) {
      std::fill(p, p + t.numel, 0.0f);
    } else {
      std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ULL + ti + 1);
      std::normal_distribution<float> normal(0.0f, c.initializer_range);
      for (size_t i = 0; i < t.numel; i++) p[i] = normal(rng);
    }
  }
}
