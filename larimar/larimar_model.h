// The Larimar model and its training loss per episode (Das et al. 2024): encoder, memory,
// decoder conditioned on a code, glued together with their backward passes.
//
// Parameters: the encoder (larimar/encoder.h), the decoder (any LlamaModel), and on the host
//   M0    [K, Cz]            the memory prior
//   lv_w  [K, K*Cz], lv_b [K] the key variance as a linear map of the written memory:
//                             logvar = lv_w vec(M) + lv_b (IBM's w_logvar_setting 3)
//   kv_w  [L*KVD, Cz]         code -> the decoder's slot per layer: slot_l = kv_w[l*KVD : (l+1)*KVD] c
//   emb_w [C, Cz]             code -> the vector added to every token embedding: e = emb_w c
// (no biases: the code c = 0 gives a zero slot and no embedding change).
//
// One episode of N texts x_1..x_N (token ids read by both the encoder and the decoder):
//   Z = e(x) (N×Cz);  write M = W₀⁺ Z with W₀ = Z M0⁺;  logvar = lv_w vec(M) + lv_b;
//   read W̄ = Z M⁺, W = W̄ + σ⊙ε (σ = exp(logvar/2), ε ~ N(0, I) given), Z_r = W M;
//   loss = CE(x | Z_r) + CE(x | Z) + CE(x | 0) + β·KL(N(W̄, diag σ²) ‖ N(0, I))
// where CE(x | c) is the decoder's mean token cross-entropy over every next-token target of the
// episode with each text conditioned on its code c_n, and the KL is summed over rows and slots.
// The three CE terms are three forward/backward passes of the decoder over the N texts
// (conditioned on Z_r, Z and 0), each normalized by the episode's targets, so that each term is
// known apart and the decoder's gradients add up to those of the sum.
//
// Backward: the decoder gives d slot and d embed per row; through kv_w and emb_w they give
// dc per row, i.e. dZ_r, dZ (direct) and nothing for the zero code. dZ_r and the KL's dW̄, dlogvar
// go through read_backward (larimar/memory.h) to dM, dZ (as queries) and dlogvar; dlogvar through
// the logvar map to dM, dlv_w, dlv_b; dM through write_backward to dM0 and dZ (as the episode).
// The three dZ add up and go through the encoder. Memory math runs in float64 on the host.
#pragma once
#include <string>
#include <vector>

#include "common/error.h"
#include "larimar/encoder.h"
#include "larimar/memory.h"
#include "model/cpu_backend.h"
#include "model/safetensors.h"

namespace larimar {

struct EpisodeLoss {
  double total = 0, ce = 0, kl = 0;  // ce = CE(x|Z_r) + CE(x|Z) + CE(x|0); total = ce + β·kl
  double ce_read = 0, ce_code = 0, ce_zero = 0;  // CE(x|Z_r), CE(x|Z), CE(x|0)
};

template <class Backend>
struct LarimarModel {
  Encoder<Backend> enc;
  LlamaModel<Backend> dec;
  int K = 0, Cz = 0, L = 0, KVD = 0, C = 0, max_texts = 0;
  PinvConfig pinv;
  std::vector<float> M0, lv_w, lv_b, kv_w, emb_w;            // host parameters (see above)
  std::vector<float> d_M0, d_lv_w, d_lv_b, d_kv_w, d_emb_w;  // their gradients (added to)

  // Episodes of up to max_texts texts of up to max_T tokens; K memory slots.
  LarimarModel(const EncoderConfig& ec, const LlamaConfig& dc, int slots, int max_texts_, int max_T)
      : enc(ec, max_texts_, max_T),
        dec(dc, max_texts_, max_T),
        K(slots),
        Cz(ec.code_size),
        L(dc.num_hidden_layers),
        KVD(dc.num_key_value_heads * dc.head_dim),
        C(dc.hidden_size),
        max_texts(max_texts_) {
    check(K > 0, "larimar: memory slots ", K, " must be positive");
    dec.plan_condition();
    for (auto [p, g, n] : {std::tuple{&M0, &d_M0, (size_t)K * Cz}, {&lv_w, &d_lv_w, (size_t)K * K * Cz},
                           {&lv_b, &d_lv_b, (size_t)K}, {&kv_w, &d_kv_w, (size_t)L * KVD * Cz},
                           {&emb_w, &d_emb_w, (size_t)C * Cz}}) {
      p->assign(n, 0.0f);
      g->assign(n, 0.0f);
    }
    slot_dev = Backend::template alloc<float>((size_t)3 * max_texts * L * KVD);
    embed_dev = Backend::template alloc<float>((size_t)3 * max_texts * C);
  }
  ~LarimarModel() {
    Backend::free(slot_dev);
    Backend::free(embed_dev);
  }
  LarimarModel(const LarimarModel&) = delete;
  LarimarModel& operator=(const LarimarModel&) = delete;

  // The host parameters from a safetensors file (tensors larimar.M0, larimar.logvar.weight,
  // larimar.logvar.bias, larimar.slot.weight, larimar.embed.weight); errors name file and tensor.
  void load_memory_params(const std::string& path);

  void zero_grad() {
    enc.zero_grad();
    dec.zero_grad();
    for (auto* g : {&d_M0, &d_lv_w, &d_lv_b, &d_kv_w, &d_emb_w}) std::fill(g->begin(), g->end(), 0.0f);
  }

  // The loss of one episode and its gradients (added to every parameter's gradient). eps: N×K
  // standard normal draws for the sampled key.
  EpisodeLoss episode(const std::vector<std::vector<int32_t>>& texts, double beta, const Mat& eps);

 private:
  float *slot_dev = nullptr, *embed_dev = nullptr;  // [3N, L, KVD], [3N, C] in backend memory
};

// ---- definitions (a header: the CPU instantiation is compiled once, in larimar_model.cpp; the
// CUDA one where the CUDA backend is compiled) ------------------------------------------------


template <class Backend>
void LarimarModel<Backend>::load_memory_params(const std::string& path) {
  SafeTensors st = SafeTensors::open(path);
  st.read_f32("larimar.M0", M0.data(), {K, Cz});
  st.read_f32("larimar.logvar.weight", lv_w.data(), {K, (int64_t)K * Cz});
  st.read_f32("larimar.logvar.bias", lv_b.data(), {K});
  st.read_f32("larimar.slot.weight", kv_w.data(), {(int64_t)L * KVD, Cz});
  st.read_f32("larimar.embed.weight", emb_w.data(), {C, Cz});
}

template <class Backend>
EpisodeLoss LarimarModel<Backend>::episode(const std::vector<std::vector<int32_t>>& texts, double beta,
                                           const Mat& eps) {
  const int N = (int)texts.size();
  check(N > 0 && N <= max_texts, "larimar episode: ", N, " texts for a plan of at most ", max_texts);
  check(eps.rows() == N && eps.cols() == K, "larimar episode: eps is ", eps.rows(), "x", eps.cols(), ", expected ", N,
        "x", K);
  // Encoder and memory.
  std::vector<float> zf;
  enc.encode(texts, zf);
  Mat Z(N, Cz);
  for (int i = 0; i < N * Cz; i++) Z.data()[i] = zf[i];
  const Mat Mp = Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(M0.data(), K, Cz).cast<double>();
  const Write w = write(Mp, Z, pinv);
  const Eigen::Map<const Eigen::VectorXd> vecM(w.M.data(), (int64_t)K * Cz);  // row-major vec(M)
  const Eigen::MatrixXd LW =
      Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(lv_w.data(), K, (int64_t)K * Cz).cast<double>();
  Noise noise;
  noise.logvar = LW * vecM + Eigen::Map<const Eigen::VectorXf>(lv_b.data(), K).cast<double>();
  noise.eps = eps;
  PinvConfig pinv_M = pinv;  // M = W₀⁺ Z has rank <= N
  pinv_M.max_rank = N;
  const Read r = read(w.M, Z, pinv_M, &noise);
  Mat dWbar_kl;
  Vec dlogvar_kl;
  EpisodeLoss out;
  out.kl = kl_w(r.Wbar, noise.logvar, &dWbar_kl, &dlogvar_kl);

  // Decoder over 3N rows: codes Z_r, Z, 0.
  int T = 0;
  for (const auto& t : texts) T = std::max(T, (int)t.size());
  const int R = 3 * N;
  const auto code = [&](int row, int k) { return row < N ? r.Zr(row, k) : row < 2 * N ? Z(row - N, k) : 0.0; };
  std::vector<float> slot((size_t)R * L * KVD), embed((size_t)R * C);
  for (int row = 0; row < R; row++) {
    for (int o = 0; o < L * KVD; o++) {  // slot[row, l, j] = kv_w[l*KVD + j] · c
      double s = 0;
      for (int k = 0; k < Cz; k++) s += (double)kv_w[(size_t)o * Cz + k] * code(row, k);
      slot[(size_t)row * L * KVD + o] = (float)s;
    }
    for (int c = 0; c < C; c++) {
      double s = 0;
      for (int k = 0; k < Cz; k++) s += (double)emb_w[(size_t)c * Cz + k] * code(row, k);
      embed[(size_t)row * C + c] = (float)s;
    }
  }
  Backend::upload(slot_dev, slot.data(), slot.size());
  Backend::upload(embed_dev, embed.data(), embed.size());
  Batch b;
  b.rows = N;
  b.T = T;
  for (int row = 0; row < N; row++) {
    const std::vector<int32_t>& x = texts[row];
    const int n = (int)x.size();
    for (int t = 0; t < T; t++) {
      b.tokens.push_back(t < n ? x[t] : 0);
      b.targets.push_back(t + 1 < n ? x[t + 1] : -1);
      b.positions.push_back(t < n ? t : 0);
      b.seg_start.push_back(t < n ? 0 : t);
      b.num_target_tokens += t + 1 < n;
    }
  }
  check(b.num_target_tokens > 0, "larimar episode: no text has two tokens (nothing to predict)");
  // Three passes over the texts, coded Z_r, Z and 0; each pass's d_slot and d_embed are its own.
  std::vector<float> d_slot(slot.size()), d_embed(embed.size());
  double* ce_part[3] = {&out.ce_read, &out.ce_code, &out.ce_zero};
  const typename LlamaModel<Backend>::Condition all{slot_dev, embed_dev, R};
  for (int g = 0; g < 3; g++) {
    dec.condition = dec.condition_rows(all, (size_t)g * N);
    dec.condition.seqs = N;
    *ce_part[g] = dec.forward_backward(b, b.num_target_tokens);
    dec.condition = {};
    if (g < 2) {  // the zero code's rows have no input to differentiate
      Backend::download(d_slot.data() + (size_t)g * N * L * KVD, dec.d_slot, (size_t)N * L * KVD);
      Backend::download(d_embed.data() + (size_t)g * N * C, dec.d_embed, (size_t)N * C);
    }
  }
  out.ce = out.ce_read + out.ce_code + out.ce_zero;
  out.total = out.ce + beta * out.kl;

  // Back through the two code maps: dc per row.
  Mat dc = Mat::Zero(R, Cz);
  for (int row = 0; row < 2 * N; row++) {  // the zero code's rows have no input to differentiate
    for (int o = 0; o < L * KVD; o++) {
      const double g = d_slot[(size_t)row * L * KVD + o];
      for (int k = 0; k < Cz; k++) {
        d_kv_w[(size_t)o * Cz + k] += (float)(g * code(row, k));
        dc(row, k) += g * kv_w[(size_t)o * Cz + k];
      }
    }
    for (int c = 0; c < C; c++) {
      const double g = d_embed[(size_t)row * C + c];
      for (int k = 0; k < Cz; k++) {
        d_emb_w[(size_t)c * Cz + k] += (float)(g * code(row, k));
        dc(row, k) += g * emb_w[(size_t)c * Cz + k];
      }
    }
  }
  // Read, KL and the logvar map.
  const Mat dWbar = beta * dWbar_kl;
  const ReadGrads rg = read_backward(w.M, Z, r, dc.topRows(N), pinv_M, &noise, &dWbar);
  const Vec dlogvar = rg.dlogvar + beta * dlogvar_kl;
  Mat dM = rg.dM;
  const Eigen::VectorXd dvecM = LW.transpose() * dlogvar;
  for (int i = 0; i < K * Cz; i++) dM.data()[i] += dvecM(i);
  for (int k = 0; k < K; k++) {
    d_lv_b[k] += (float)dlogvar(k);
    for (int i = 0; i < K * Cz; i++) d_lv_w[(size_t)k * K * Cz + i] += (float)(dlogvar(k) * vecM(i));
  }
  // Write, then the encoder.
  const WriteGrads wg = write_backward(Mp, Z, w, dM, pinv);
  for (int i = 0; i < K * Cz; i++) d_M0[i] += (float)wg.dM0.data()[i];
  const Mat dZ = wg.dZ + rg.dZq + dc.middleRows(N, N);
  std::vector<float> dz((size_t)N * Cz);
  for (int i = 0; i < N * Cz; i++) dz[i] = (float)dZ.data()[i];
  enc.backward(dz);
  return out;
}

extern template struct LarimarModel<CpuBackend>;

}  // namespace larimar
