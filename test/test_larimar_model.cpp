// Larimar's models against the float64 PyTorch reference (dev/reference/gen_larimar_model.py):
// the bidirectional encoder (codes and every gradient) and the decoder conditioned on a memory
// slot and an embedding addition (logits, loss, every gradient, greedy decoding), whose
// unconditioned path must stay bit for bit the plain decoder's; the Larimar loss of an episode
// (through memory write and read) and every gradient.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file_io.h"
#include "larimar/encoder.h"
#include "larimar/larimar_model.h"
#include "larimar/train.h"
#include "model/decode.h"
#include "model/weights.h"
#include "model/cpu_backend.h"
#include "model/safetensors.h"
#include "test/max_abs.h"

using Catch::Contains;
using namespace larimar;

namespace {

const std::string kDir = "test/fixtures/larimar/";

// Within 1e-4 relative to the largest reference value (and not all zero, so that the check can fail).
void check_close(const std::string& what, const float* got, const std::vector<float>& want) {
  const float err = max_abs_diff(got, want.data(), want.size()), scale = max_abs(want.data(), want.size());
  INFO(what << ": max abs error " << err << ", max |reference| " << scale);
  CHECK(scale > 0.0f);
  CHECK(err <= 1e-4f * scale);
}

std::vector<std::vector<int32_t>> fixture_texts(const SafeTensors& e) {
  const std::vector<int32_t> tokens = e.read_i32("tokens"), lengths = e.read_i32("lengths");
  const size_t T = tokens.size() / lengths.size();
  std::vector<std::vector<int32_t>> texts;
  for (size_t r = 0; r < lengths.size(); r++)
    texts.emplace_back(tokens.begin() + r * T, tokens.begin() + r * T + lengths[r]);
  return texts;
}

}  // namespace

TEST_CASE("encoder: codes and gradients match the PyTorch reference") {
  const std::string dir = kDir + "encoder/";
  const EncoderConfig cfg = load_encoder_config(dir + "model/config.json");
  REQUIRE(cfg.code_size == 16);
  SafeTensors e = SafeTensors::open(dir + "expected.safetensors");
  const auto texts = fixture_texts(e);
  Encoder<CpuBackend> enc(cfg, (int)texts.size(), 16);
  enc.load(dir + "model");
  enc.zero_grad();
  std::vector<float> z;
  enc.encode(texts, z);
  check_close("z", z.data(), e.read_f32("z"));
  enc.backward(e.read_f32("dz"));
  for (const ParamTensor& t : enc.model.layout.tensors)
    check_close("grad " + t.name, enc.model.grads + t.offset, e.read_f32("grad." + t.name));
  check_close("grad proj.weight", enc.d_proj_w.data(), e.read_f32(std::string("grad.") + kEncoderProjWeight));
  check_close("grad proj.bias", enc.d_proj_b.data(), e.read_f32(std::string("grad.") + kEncoderProjBias));

  SECTION("a text's code does not depend on the other texts of the batch or on padding") {
    std::vector<float> alone;
    enc.encode({texts[1]}, alone);
    CHECK(max_abs_diff(alone.data(), z.data() + 16, 16) <= 1e-5f);
  }
  SECTION("the encoder is bidirectional: changing the last token changes every token's state") {
    auto changed = texts;
    changed[0].back() = (changed[0].back() + 1) % cfg.llama.vocab_size;
    std::vector<float> z2;
    enc.encode(changed, z2);
    // A causal stack's mean would move too; the first token's state only moves bidirectionally.
    std::vector<float> h0(cfg.llama.hidden_size);
    enc.encode({changed[0]}, z2);
    std::copy(enc.model.lnf, enc.model.lnf + h0.size(), h0.begin());
    enc.encode({texts[0]}, z2);
    CHECK(max_abs_diff(h0.data(), enc.model.lnf, h0.size()) > 1e-3f);
  }
}

TEST_CASE("encoder: bad configuration and inputs are refused") {
  nlohmann::json j = nlohmann::json::parse(read_text_file(kDir + "encoder/model/config.json"));
  j.erase("larimar_code_size");
  CHECK_THROWS_WITH(parse_encoder_config(j, "enc/config.json"),
                    Contains("enc/config.json") && Contains("larimar_code_size"));
  j["larimar_code_size"] = -3;
  CHECK_THROWS_WITH(parse_encoder_config(j, "enc/config.json"), Contains("larimar_code_size"));
  j["larimar_code_size"] = 16;
  Encoder<CpuBackend> enc(parse_encoder_config(j, "enc/config.json"), 2, 8);
  std::vector<float> z;
  CHECK_THROWS_WITH(enc.encode({{1, 2}, {}}, z), Contains("text 1 is empty"));
  CHECK_THROWS_WITH(enc.encode({{1}, {2}, {3}}, z), Contains("3 texts"));
  CHECK_THROWS_WITH(enc.encode({std::vector<int32_t>(9, 1)}, z), Contains("exceed"));
}

namespace {

Batch decoder_batch(const SafeTensors& e) {
  Batch b;
  const SafeTensorInfo& info = e.get("tokens");
  b.rows = (int)info.shape[0];
  b.T = (int)info.shape[1];
  b.tokens = e.read_i32("tokens");
  b.targets = e.read_i32("targets");
  b.positions = e.read_i32("positions");
  b.seg_start = e.read_i32("seg_start");
  for (int32_t t : b.targets) b.num_target_tokens += t >= 0;
  return b;
}

}  // namespace

TEST_CASE("decoder conditioning: logits, loss and every gradient match the PyTorch reference") {
  const std::string dir = kDir + "decoder/";
  const LlamaConfig cfg = load_config(dir + "model/config.json");
  SafeTensors e = SafeTensors::open(dir + "expected.safetensors");
  const Batch b = decoder_batch(e);
  LlamaModel<CpuBackend> m(cfg, b.rows, b.T);
  load_weights(dir + "model", cfg, m.layout, m.params);
  m.params_changed();
  m.plan_condition();
  const std::vector<float> slot = e.read_f32("slot"), embed = e.read_f32("embed");  // CPU: host memory
  m.condition = {slot.data(), embed.data(), b.rows};

  std::vector<float> logits((size_t)b.rows * b.T * cfg.vocab_size);
  m.forward_logits(b, logits.data());
  check_close("logits", logits.data(), e.read_f32("logits"));
  m.zero_grad();
  const double loss = m.forward_backward(b, b.num_target_tokens);
  const double want = e.read_f32("loss")[0];
  INFO("loss " << loss << " reference " << want);
  CHECK(std::fabs(loss - want) <= 1e-4 * std::fabs(want));
  for (const ParamTensor& t : m.layout.tensors)
    check_close("grad " + t.name, m.grads + t.offset, e.read_f32("grad." + t.name));
  check_close("grad slot", m.d_slot, e.read_f32("grad.slot"));
  check_close("grad embed", m.d_embed, e.read_f32("grad.embed"));

  SECTION("greedy decoding with the slot in the KV cache") {
    const std::vector<int32_t> pt = e.read_i32("prompt_tokens"), pl = e.read_i32("prompt_lengths"),
                               want_tokens = e.read_i32("greedy");
    const size_t P = pt.size() / pl.size(), steps = want_tokens.size() / pl.size();
    std::vector<std::vector<int32_t>> prompts;
    for (size_t r = 0; r < pl.size(); r++) prompts.emplace_back(pt.begin() + r * P, pt.begin() + r * P + pl[r]);
    for (int batch : {2, 1}) {  // together, and one at a time (each batch reads its own rows)
      GreedyOptions opt;
      opt.max_new_tokens = (int)steps;
      opt.batch_size = batch;
      const auto got = greedy_generate(m, prompts, opt);
      for (size_t r = 0; r < prompts.size(); r++) {
        INFO("batch " << batch << " prompt " << r);
        CHECK(got[r] == std::vector<int32_t>(want_tokens.begin() + r * steps, want_tokens.begin() + (r + 1) * steps));
      }
    }
  }
}

TEST_CASE("decoder conditioning: the unconditioned path is bit for bit the plain decoder") {
  const std::string dir = kDir + "decoder/";
  const LlamaConfig cfg = load_config(dir + "model/config.json");
  SafeTensors e = SafeTensors::open(dir + "expected.safetensors");
  const Batch b = decoder_batch(e);
  const size_t nl = (size_t)b.rows * b.T * cfg.vocab_size;
  LlamaModel<CpuBackend> plain(cfg, b.rows, b.T), cond(cfg, b.rows, b.T);
  load_weights(dir + "model", cfg, plain.layout, plain.params);
  load_weights(dir + "model", cfg, cond.layout, cond.params);
  plain.params_changed();
  cond.params_changed();
  cond.plan_condition();
  const std::vector<float> slot = e.read_f32("slot"), embed = e.read_f32("embed");
  std::vector<float> a(nl), c(nl);
  // A conditioned pass first, so that anything it leaves behind would show.
  cond.condition = {slot.data(), embed.data(), b.rows};
  cond.forward_logits(b, c.data());
  plain.forward_logits(b, a.data());
  CHECK(max_abs_diff(a.data(), c.data(), nl) > 1e-3f);  // the conditioning does change the logits
  cond.condition = {};
  cond.forward_logits(b, c.data());
  CHECK(std::memcmp(a.data(), c.data(), nl * sizeof(float)) == 0);
  plain.zero_grad();
  cond.zero_grad();
  const double la = plain.forward_backward(b, b.num_target_tokens), lc = cond.forward_backward(b, b.num_target_tokens);
  CHECK(la == lc);
  CHECK(std::memcmp(plain.grads, cond.grads, plain.layout.total * sizeof(float)) == 0);
  std::vector<std::vector<int32_t>> prompts = {{3, 5, 7}, {1, 2}};
  GreedyOptions opt;
  opt.max_new_tokens = 5;
  CHECK(greedy_generate(plain, prompts, opt) == greedy_generate(cond, prompts, opt));
}

TEST_CASE("decoder conditioning: bad use is refused") {
  const std::string dir = kDir + "decoder/";
  const LlamaConfig cfg = load_config(dir + "model/config.json");
  SafeTensors e = SafeTensors::open(dir + "expected.safetensors");
  Batch b = decoder_batch(e);
  LlamaModel<CpuBackend> m(cfg, b.rows, b.T);
  const std::vector<float> slot = e.read_f32("slot");
  std::vector<float> logits((size_t)b.rows * b.T * cfg.vocab_size);
  m.condition = {slot.data(), nullptr, b.rows};
  CHECK_THROWS_WITH(m.forward_logits(b, logits.data()), Contains("plan_condition"));
  m.plan_condition();
  m.condition.seqs = 1;
  CHECK_THROWS_WITH(m.forward_logits(b, logits.data()), Contains("2 rows but conditioning vectors for 1"));
  m.condition.seqs = b.rows;
  b.seg_start[3] = 2;  // a second example packed in row 0
  CHECK_THROWS_WITH(m.forward_logits(b, logits.data()), Contains("one example"));
}

TEST_CASE("larimar episode: the four-term loss and every gradient match the PyTorch reference") {
  const std::string dir = kDir + "episode/";
  const EncoderConfig ec = load_encoder_config(dir + "encoder/config.json");
  const LlamaConfig dc = load_config(dir + "decoder/config.json");
  SafeTensors e = SafeTensors::open(dir + "expected.safetensors");
  const auto texts = fixture_texts(e);
  const std::vector<float> eps_f = e.read_f32("eps");
  const int K = 8, N = (int)texts.size();
  REQUIRE(eps_f.size() == (size_t)N * K);
  Mat eps(N, K);
  for (int i = 0; i < N * K; i++) eps.data()[i] = eps_f[i];
  LarimarModel<CpuBackend> m(ec, dc, K, N, 8);
  m.enc.load(dir + "encoder");
  std::vector<float> dec_params(m.dec.layout.total);
  load_weights(dir + "decoder", dc, m.dec.layout, dec_params.data());
  m.dec.load_params(dec_params.data());
  m.load_memory_params(dir + "larimar.safetensors");
  m.zero_grad();
  const EpisodeLoss loss = m.episode(texts, e.read_f32("beta")[0], eps);
  for (auto [name, got] : {std::pair{"loss", loss.total}, {"ce", loss.ce}, {"kl", loss.kl}}) {
    const double want = e.read_f32(name)[0];
    INFO(name << " " << got << " reference " << want);
    CHECK(std::fabs(got - want) <= 1e-4 * std::fabs(want));
  }
  const std::vector<float> parts = e.read_f32("ce_parts");  // CE(x|Z_r), CE(x|Z), CE(x|0)
  for (auto [i, got] : {std::pair{0, loss.ce_read}, {1, loss.ce_code}, {2, loss.ce_zero}}) {
    INFO("ce part " << i << " " << got << " reference " << parts[i]);
    CHECK(std::fabs(got - parts[i]) <= 1e-4 * std::fabs(parts[i]));
  }
  for (const ParamTensor& t : m.enc.model.layout.tensors)
    check_close("encoder grad " + t.name, m.enc.model.grads + t.offset, e.read_f32("grad.enc." + t.name));
  for (const ParamTensor& t : m.dec.layout.tensors)
    check_close("decoder grad " + t.name, m.dec.grads + t.offset, e.read_f32("grad.dec." + t.name));
  check_close("grad encoder proj.weight", m.enc.d_proj_w.data(), e.read_f32(std::string("grad.") + kEncoderProjWeight));
  check_close("grad encoder proj.bias", m.enc.d_proj_b.data(), e.read_f32(std::string("grad.") + kEncoderProjBias));
  check_close("grad M0", m.d_M0.data(), e.read_f32("grad.larimar.M0"));
  check_close("grad logvar.weight", m.d_lv_w.data(), e.read_f32("grad.larimar.logvar.weight"));
  check_close("grad logvar.bias", m.d_lv_b.data(), e.read_f32("grad.larimar.logvar.bias"));
  check_close("grad slot.weight", m.d_kv_w.data(), e.read_f32("grad.larimar.slot.weight"));
  check_close("grad embed.weight", m.d_emb_w.data(), e.read_f32("grad.larimar.embed.weight"));

  SECTION("bad input is refused") {
    CHECK_THROWS_WITH(m.episode(texts, 0.5, Mat::Zero(N, K + 1)), Contains("eps is 3x9"));
    CHECK_THROWS_WITH(m.episode({texts[0], texts[1], texts[2], texts[0]}, 0.5, Mat::Zero(4, K)),
                      Contains("4 texts"));
    CHECK_THROWS_WITH(m.load_memory_params(dir + "decoder/model.safetensors"), Contains("larimar.M0"));
  }
}

TEST_CASE("larimar training: the beta schedule and the noise of a step") {
  // IBM's schedule over 100 steps, 4 cycles of 25: 0 for the first half, a ramp over 6.25 steps,
  // then the peak.
  const BetaSchedule s{0.5, 4, 0.5, 0.25, 100};
  CHECK(s.at(0) == 0.0);
  CHECK(s.at(12) == 0.0);                              // u = 0.48
  CHECK(s.at(13) == Approx(0.5 * (0.52 - 0.5) / 0.25));  // on the ramp
  CHECK(s.at(20) == 0.5);                              // u = 0.8: past the ramp
  CHECK(s.at(25) == 0.0);                              // the next cycle starts at 0
  CHECK(s.at(99) == 0.5);
  // ε: a function of (seed, step) only, standard normal.
  const std::vector<double> a = episode_noise(7, 3, 200, 500), b = episode_noise(7, 3, 200, 500),
                            c = episode_noise(7, 4, 200, 500), d = episode_noise(8, 3, 200, 500);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != d);
  double mean = 0, var = 0;
  for (double x : a) mean += x / a.size();
  for (double x : a) var += (x - mean) * (x - mean) / a.size();
  CHECK(std::fabs(mean) < 0.01);  // 1e5 draws: standard error 0.003
  CHECK(std::fabs(var - 1.0) < 0.02);
}
