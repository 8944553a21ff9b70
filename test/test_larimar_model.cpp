// Larimar's models against the float64 PyTorch reference (dev/reference/gen_larimar_model.py):
// the bidirectional encoder (codes and every gradient).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file_io.h"
#include "larimar/encoder.h"
#include "model/cpu_backend.h"
#include "model/safetensors.h"

using Catch::Contains;
using namespace larimar;

namespace {

const std::string kDir = "test/fixtures/larimar/";

float max_abs(const float* a, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; i++) m = std::max(m, std::fabs(a[i]));
  return m;
}
float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; i++) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Within 1e-4 of the largest reference value (and not all zero, so that the check can fail).
void check_close(const std::string& what, const float* got, const std::vector<float>& want) {
  const float err = max_abs_diff(got, want.data(), want.size()), scale = max_abs(want.data(), want.size());
  INFO(what << ": max abs error " << err << ", max |reference| " << scale);
  CHECK(scale > 0.0f);
  CHECK(err <= 1e-4f * std::max(1.0f, scale));
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
