#include "model/weights.h"

#include <cmath>
#include <random>

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

void save_weights(const std::string& dir, const LlamaConfig& c, const ParamLayout& layout, const float* params,
                  const std::string& dtype) {
  make_dirs(dir);
  std::vector<SafeTensorToWrite> out;
  for (const auto& t : layout.tensors) out.push_back({t.name, dtype, t.shape, params + t.offset});
  write_safetensors(dir + "/model.safetensors", out, {{"format", "pt"}});
  LlamaConfig saved = c;
  saved.torch_dtype = dtype == "BF16" ? "bfloat16" : "float32";
  save_config(saved, dir + "/config.json");
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
