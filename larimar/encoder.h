// Larimar's encoder e(x) -> z ∈ R^Cz: a bidirectional Llama-style stack (LlamaModel with
// causal = false: every token attends to every token of its text), the final RMSNorm's output
// h [T, C] mean-pooled over the text's tokens (padding excluded), then a linear map:
//
//   p = (1/n) Σ_{t<n} h_t            (C)
//   z = W_z p + b_z                  (Cz),  W_z [Cz, C], b_z [Cz]
//
// Backward, from dz: dW_z += dz pᵀ, db_z += dz, dp = W_zᵀ dz, and each of the n tokens gets
// dh_t = dp / n, which LlamaModel::backward_from_lnf carries through the stack.
//
// An encoder is a directory: config.json (a Llama config.json, plus "larimar_code_size": Cz) and
// model.safetensors (the Llama tensors under their HF names, plus larimar.encoder_proj.weight
// [Cz, C] and larimar.encoder_proj.bias [Cz]). Its LM head is never used; a tied config
// (tie_word_embeddings) avoids storing one.
//
// Pooling and the projection run on the host in float64 accumulation over fp32 values (bf16
// activations of the CUDA backend are widened): they are rows x C x Cz multiply-adds, nothing
// next to the stack.
#pragma once
#include <bit>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "model/llama.h"
#include "model/safetensors.h"  // bf16_to_float, float_to_bf16, SafeTensors
#include "model/weights.h"      // load_weights

namespace larimar {

struct EncoderConfig {
  LlamaConfig llama;
  int code_size = 0;  // Cz
};
// Errors name the file and the field.
EncoderConfig parse_encoder_config(const nlohmann::json& j, const std::string& path);
EncoderConfig load_encoder_config(const std::string& config_json_path);

inline const char* kEncoderProjWeight = "larimar.encoder_proj.weight";
inline const char* kEncoderProjBias = "larimar.encoder_proj.bias";

template <class Backend>
struct Encoder {
  EncoderConfig cfg;
  LlamaModel<Backend> model;  // causal = false
  int C = 0, Cz = 0;
  std::vector<float> proj_w, proj_b;      // [Cz, C], [Cz]
  std::vector<float> d_proj_w, d_proj_b;  // their gradients (added to by backward)

  Encoder(const EncoderConfig& c, int max_rows, int max_T, ModelUse use = ModelUse::train)
      : cfg(c), model(c.llama, max_rows, max_T, use), C(c.llama.hidden_size), Cz(c.code_size) {
    check(Cz > 0, "encoder: code size ", Cz, " must be positive");
    model.causal = false;
    proj_w.assign((size_t)Cz * C, 0.0f);
    proj_b.assign(Cz, 0.0f);
    d_proj_w.assign(proj_w.size(), 0.0f);
    d_proj_b.assign(Cz, 0.0f);
  }

  // The Llama tensors and the projection from an encoder directory (see above).
  void load(const std::string& dir) {
    std::vector<float> host(model.layout.total);
    load_weights(dir, cfg.llama, model.layout, host.data());
    model.load_params(host.data());
    SafeTensors st = SafeTensors::open(dir);
    st.read_f32(kEncoderProjWeight, proj_w.data(), {Cz, C});
    st.read_f32(kEncoderProjBias, proj_b.data(), {Cz});
  }

  void zero_grad() {
    model.zero_grad();
    std::fill(d_proj_w.begin(), d_proj_w.end(), 0.0f);
    std::fill(d_proj_b.begin(), d_proj_b.end(), 0.0f);
  }

  // z [texts.size(), Cz] (row-major) of texts of 1..max_T tokens each, in one forward.
  void encode(const std::vector<std::vector<int32_t>>& texts, std::vector<float>& z) {
    const int rows = (int)texts.size();
    check(rows > 0 && rows <= model.max_rows, "encoder: ", rows, " texts for a plan of at most ", model.max_rows);
    int T = 0;
    for (size_t r = 0; r < texts.size(); r++) {
      check(!texts[r].empty(), "encoder: text ", r, " is empty");
      T = std::max(T, (int)texts[r].size());
    }
    Batch b;
    b.rows = rows;
    b.T = T;
    const size_t N = (size_t)rows * T;
    b.tokens.assign(N, 0);
    b.targets.assign(N, -1);
    b.positions.assign(N, 0);
    b.seg_start.resize(N);
    lengths.resize(rows);
    for (int r = 0; r < rows; r++) {
      const int n = (int)texts[r].size();
      lengths[r] = n;
      for (int t = 0; t < T; t++) {
        const size_t i = (size_t)r * T + t;
        if (t < n) {
          b.tokens[i] = texts[r][t];
          b.positions[i] = t;
        }
        b.seg_start[i] = t < n ? 0 : t;  // padding attends to itself only
      }
    }
    model.forward(b);
    std::vector<act_t> h(N * C);
    Backend::download(h.data(), model.lnf, h.size());
    pooled.assign((size_t)rows * C, 0.0);
    for (int r = 0; r < rows; r++) {
      double* p = &pooled[(size_t)r * C];
      for (int t = 0; t < lengths[r]; t++)
        for (int c = 0; c < C; c++) p[c] += to_float(h[((size_t)r * T + t) * C + c]);
      for (int c = 0; c < C; c++) p[c] /= lengths[r];
    }
    z.resize((size_t)rows * Cz);
    for (int r = 0; r < rows; r++)
      for (int k = 0; k < Cz; k++) {
        double s = proj_b[k];
        const float* w = &proj_w[(size_t)k * C];
        for (int c = 0; c < C; c++) s += (double)w[c] * pooled[(size_t)r * C + c];
        z[(size_t)r * Cz + k] = (float)s;
      }
  }

  // Adds the gradients of a loss with dL/dz = dz [rows, Cz] (the last encode()'s rows).
  void backward(const std::vector<float>& dz) {
    const int rows = (int)lengths.size(), T = model.cur_T;
    check(rows > 0 && dz.size() == (size_t)rows * Cz, "encoder backward: dz holds ", dz.size(), " values, not ",
          rows, " x ", Cz);
    std::vector<double> dp((size_t)rows * C, 0.0);
    for (int r = 0; r < rows; r++)
      for (int k = 0; k < Cz; k++) {
        const double g = dz[(size_t)r * Cz + k];
        d_proj_b[k] += (float)g;
        float* dw = &d_proj_w[(size_t)k * C];
        const float* w = &proj_w[(size_t)k * C];
        for (int c = 0; c < C; c++) {
          dw[c] += (float)(g * pooled[(size_t)r * C + c]);
          dp[(size_t)r * C + c] += g * w[c];
        }
      }
    std::vector<act_t> dh((size_t)rows * T * C, from_float(0.0f));
    for (int r = 0; r < rows; r++)
      for (int t = 0; t < lengths[r]; t++)
        for (int c = 0; c < C; c++)
          dh[((size_t)r * T + t) * C + c] = from_float((float)(dp[(size_t)r * C + c] / lengths[r]));
    Backend::upload(model.d_lnf, dh.data(), dh.size());
    model.backward_from_lnf();
  }

 private:
  using act_t = typename Backend::act_t;
  // Activations are fp32 (CPU) or bf16 (CUDA): the same bits as bf16_to_float reads.
  static float to_float(act_t x) {
    if constexpr (std::is_same_v<act_t, float>) {
      return x;
    } else {
      static_assert(sizeof(act_t) == 2, "encoder: activations are fp32 or bf16");
      uint16_t bits;
      std::memcpy(&bits, &x, 2);
      return bf16_to_float(bits);
    }
  }
  static act_t from_float(float x) {
    if constexpr (std::is_same_v<act_t, float>) {
      return x;
    } else {
      return std::bit_cast<act_t>(float_to_bf16(x));
    }
  }
  std::vector<int> lengths;     // of the last encode()'s texts
  std::vector<double> pooled;   // [rows, C]
};

}  // namespace larimar
