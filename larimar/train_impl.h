// The definitions of LarimarTrainer<Backend> (larimar/train.h), in a header so that each backend's
// instantiation is compiled where that backend is: the CPU one in larimar/train.cpp, the CUDA one in
// larimar/train_cuda.cu (linked into the CUDA programs only). It needs Eigen (larimar_model.h);
// train.h does not.
#pragma once
#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "common/file_io.h"
#include "dataloader/rng.h"
#include "kernels/cpu/ops.h"
#include "larimar/larimar_model.h"
#include "larimar/train.h"
#include "model/checkpoint.h"  // layout_fingerprint
#include "model/safetensors.h"
#include "model/weights.h"

namespace larimar {

namespace train_detail {

constexpr uint64_t kTagNoise = 0x4c4e4f495345ULL;  // the trainer's streams, apart from the data order's
constexpr uint64_t kTagInit = 0x4c494e4954ULL;

// Uniform in (0, 1]: the top 53 bits of a draw.
inline double unit(Rng& r) { return (double)((r.next() >> 11) + 1) * 0x1.0p-53; }
// One standard normal draw (Box–Muller, cosine branch).
inline double normal(Rng& r) {
  const double u1 = unit(r), u2 = unit(r);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

inline void check_finite(const std::vector<float>& x, const std::string& file, const std::string& tensor) {
  for (size_t i = 0; i < x.size(); i++)
    check(std::isfinite(x[i]), file, ": refusing to save: tensor '", tensor, "' holds a non-finite value (", x[i],
          ") at index ", i);
}

}  // namespace train_detail

template <class Backend>
struct LarimarTrainer<Backend>::Impl {
  LarimarModel<Backend> m;
  Options opt;
  int adam_step = 0;  // steps taken by the encoder's and the host parameters' AdamW
  struct Host {
    std::string name;
    std::vector<float>*p, *g;
    std::vector<int64_t> shape;
    std::vector<float> m, v;  // AdamW moments
  };
  std::vector<Host> host;

  Impl(const LarimarSpec& s, const LlamaConfig& dc, const Options& o)
      : m(s.encoder, dc, s.slots, o.max_texts, o.max_T), opt(o) {
    m.pinv.kind = o.iterative_pinv ? PinvConfig::iterative : PinvConfig::exact;
    const int64_t K = m.K, Cz = m.Cz;
    host = {{"larimar.M0", &m.M0, &m.d_M0, {K, Cz}, {}, {}},
            {"larimar.logvar.weight", &m.lv_w, &m.d_lv_w, {K, K * Cz}, {}, {}},
            {"larimar.logvar.bias", &m.lv_b, &m.d_lv_b, {K}, {}, {}},
            {"larimar.slot.weight", &m.kv_w, &m.d_kv_w, {(int64_t)m.L * m.KVD, Cz}, {}, {}},
            {"larimar.embed.weight", &m.emb_w, &m.d_emb_w, {m.C, Cz}, {}, {}},
            {kEncoderProjWeight, &m.enc.proj_w, &m.enc.d_proj_w, {Cz, m.enc.C}, {}, {}},
            {kEncoderProjBias, &m.enc.proj_b, &m.enc.d_proj_b, {Cz}, {}, {}}};
    for (Host& h : host) {
      h.m.assign(h.p->size(), 0.0f);
      h.v.assign(h.p->size(), 0.0f);
    }
  }
};

template <class Backend>
LarimarTrainer<Backend>::LarimarTrainer(const LarimarSpec& s, const LlamaConfig& dc, const Options& o)
    : impl_(std::make_unique<Impl>(s, dc, o)) {}
template <class Backend>
LarimarTrainer<Backend>::~LarimarTrainer() = default;

template <class Backend>
LlamaModel<Backend>& LarimarTrainer<Backend>::decoder() {
  return impl_->m.dec;
}
template <class Backend>
const EncoderConfig& LarimarTrainer<Backend>::encoder_config() const {
  return impl_->m.enc.cfg;
}
template <class Backend>
int LarimarTrainer<Backend>::slots() const {
  return impl_->m.K;
}
template <class Backend>
size_t LarimarTrainer<Backend>::encoder_parameters() const {
  return impl_->m.enc.model.layout.total + impl_->m.enc.proj_w.size() + impl_->m.enc.proj_b.size();
}
template <class Backend>
size_t LarimarTrainer<Backend>::host_parameters() const {
  size_t n = 0;
  for (const auto& h : impl_->host) n += h.p->size();
  return n - impl_->m.enc.proj_w.size() - impl_->m.enc.proj_b.size();
}

template <class Backend>
void LarimarTrainer<Backend>::init(uint64_t seed) {
  using namespace train_detail;
  LarimarModel<Backend>& m = impl_->m;
  std::vector<float> p(m.enc.model.layout.total);
  init_weights(m.enc.cfg.llama, m.enc.model.layout, p.data(), Rng::derive(seed, kTagInit, 0).next());
  m.enc.model.load_params(p.data());
  Rng r = Rng::derive(seed, kTagInit, 1);
  const double proj_std = 1.0 / std::sqrt((double)m.enc.C), map_std = m.dec.cfg.initializer_range,
               lv_bound = 1.0 / std::sqrt((double)m.K * m.Cz);
  for (float& x : m.enc.proj_w) x = (float)(proj_std * normal(r));
  std::fill(m.enc.proj_b.begin(), m.enc.proj_b.end(), 0.0f);
  std::fill(m.M0.begin(), m.M0.end(), 0.0f);
  for (int k = 0; k < std::min(m.K, m.Cz); k++) m.M0[(size_t)k * m.Cz + k] = 1.0f;
  for (auto* v : {&m.lv_w, &m.lv_b})
    for (float& x : *v) x = (float)(lv_bound * (2.0 * unit(r) - 1.0));
  for (auto* v : {&m.kv_w, &m.emb_w})
    for (float& x : *v) x = (float)(map_std * normal(r));
}

template <class Backend>
void LarimarTrainer<Backend>::load(const std::string& dir) {
  impl_->m.enc.load(dir + "/encoder");
  impl_->m.load_memory_params(dir + "/larimar.safetensors");
}

template <class Backend>
void LarimarTrainer<Backend>::load_optimizer(const std::string& dir) {
  load(dir);
  Impl& s = *impl_;
  const std::string path = dir + "/larimar_optimizer.safetensors";
  const SafeTensors st = SafeTensors::open(path);
  const auto meta = [&](const char* key) {
    check(st.metadata.count(key), path, ": metadata field '", key, "' missing");
    return st.metadata.at(key);
  };
  check(meta("format") == "engine-larimar-optimizer", path, ": metadata 'format' is not engine-larimar-optimizer");
  check(meta("encoder_layout") == layout_fingerprint(s.m.enc.model.layout), path,
        ": made for another encoder (metadata 'encoder_layout' differs)");
  try {
    s.adam_step = std::stoi(meta("adam_step"));
  } catch (const std::exception&) {
    fail(path, ": metadata field 'adam_step' is not an integer");
  }
  check(s.adam_step >= 0, path, ": metadata field 'adam_step' is negative");
  const int64_t n = (int64_t)s.m.enc.model.layout.total;
  std::vector<float> m(n), v(n);
  st.read_f32("encoder.exp_avg", m.data(), {n});
  st.read_f32("encoder.exp_avg_sq", v.data(), {n});
  s.m.enc.model.upload_moments(m.data(), v.data());
  s.m.enc.model.adam_step = s.adam_step;
  for (auto& h : s.host) {
    st.read_f32(h.name + ".exp_avg", h.m.data(), h.shape);
    st.read_f32(h.name + ".exp_avg_sq", h.v.data(), h.shape);
  }
}

template <class Backend>
void LarimarTrainer<Backend>::save(const std::string& dir, const std::string& tokenizer_json) const {
  using train_detail::check_finite;
  const Impl& s = *impl_;
  const Encoder<Backend>& enc = s.m.enc;
  const ParamLayout& layout = enc.model.layout;
  const std::string ed = dir + "/encoder";
  make_dirs(ed);
  std::vector<float> p(layout.total), m(layout.total), v(layout.total);
  Backend::download(p.data(), enc.model.params, layout.total);
  enc.model.download_moments(m.data(), v.data());
  check_finite(p, ed + "/model.safetensors", "encoder weights");
  std::vector<SafeTensorToWrite> tensors;
  for (const ParamTensor& t : layout.tensors) tensors.push_back({t.name, "F32", t.shape, p.data() + t.offset});
  for (const auto& h : s.host) {
    check_finite(*h.p, dir, h.name);
    if (h.name.rfind("larimar.encoder_proj", 0) == 0) tensors.push_back({h.name, "F32", h.shape, h.p->data()});
  }
  write_safetensors(ed + "/model.safetensors", tensors, {{"format", "pt"}});
  nlohmann::json j = config_to_json(enc.cfg.llama);
  j["larimar_code_size"] = enc.Cz;
  write_file_atomic(ed + "/config.json", j.dump(2) + "\n");
  if (!tokenizer_json.empty()) write_file_atomic(ed + "/tokenizer.json", tokenizer_json);

  tensors.clear();
  for (const auto& h : s.host)
    if (h.name.rfind("larimar.encoder_proj", 0) != 0) tensors.push_back({h.name, "F32", h.shape, h.p->data()});
  write_safetensors(dir + "/larimar.safetensors", tensors, {{"format", "pt"}});

  check_finite(m, dir, "encoder AdamW moments");
  check_finite(v, dir, "encoder AdamW moments");
  const std::vector<int64_t> flat = {(int64_t)layout.total};
  tensors = {{"encoder.exp_avg", "F32", flat, m.data()}, {"encoder.exp_avg_sq", "F32", flat, v.data()}};
  for (const auto& h : s.host) {
    check_finite(h.m, dir, h.name + " AdamW first moment");
    check_finite(h.v, dir, h.name + " AdamW second moment");
    tensors.push_back({h.name + ".exp_avg", "F32", h.shape, h.m.data()});
    tensors.push_back({h.name + ".exp_avg_sq", "F32", h.shape, h.v.data()});
  }
  write_safetensors(dir + "/larimar_optimizer.safetensors", tensors,
                    {{"format", "engine-larimar-optimizer"},
                     {"adam_step", std::to_string(s.adam_step)},
                     {"encoder_layout", layout_fingerprint(layout)}});
}

template <class Backend>
StepLoss LarimarTrainer<Backend>::step(const std::vector<std::vector<int32_t>>& texts, int64_t step) {
  Impl& s = *impl_;
  const int N = (int)texts.size(), K = s.m.K;
  s.m.zero_grad();
  StepLoss out;
  out.beta = s.opt.beta.at(step);
  const std::vector<double> e = episode_noise(s.opt.seed, step, N, K);
  Mat eps(N, K);
  for (int i = 0; i < N * K; i++) eps.data()[i] = e[i];
  const EpisodeLoss l = s.m.episode(texts, out.beta, eps);
  out.total = l.total;
  out.ce_read = l.ce_read;
  out.ce_code = l.ce_code;
  out.ce_zero = l.ce_zero;
  out.kl = l.kl;
  return out;
}

template <class Backend>
double LarimarTrainer<Backend>::optimizer_step(const AdamWConfig& o) {
  Impl& s = *impl_;
  double sq = s.m.enc.model.grad_sum_of_squares();
  if (!s.opt.freeze_decoder) sq += s.m.dec.grad_sum_of_squares();
  for (const auto& h : s.host) sq += ::sum_of_squares(h.g->data(), h.g->size());
  const double norm = std::sqrt(sq);
  if (!std::isfinite(norm)) return norm;
  const float scale = clip_scale(norm, o.max_grad_norm);
  if (!s.opt.freeze_decoder) s.m.dec.optimizer_step_scaled(o, scale);
  s.m.enc.model.optimizer_step_scaled(o, scale);
  ++s.adam_step;
  for (auto& h : s.host)
    ::adamw_update(h.p->data(), h.g->data(), h.m.data(), h.v.data(), h.p->size(), o.lr, o.beta1, o.beta2, o.eps,
                   o.weight_decay, s.adam_step, scale);
  return norm;
}

}  // namespace larimar
