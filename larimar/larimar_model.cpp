#include "larimar/larimar_model.h"

#include "common/error.h"
#include "model/cpu_backend.h"
#include "model/safetensors.h"

namespace larimar {

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

template struct LarimarModel<CpuBackend>;

}  // namespace larimar
