// The BERT encoder against HF BertModel (float64) on a randomly initialised tiny model
// (dev/reference/gen_bert.py): last hidden states of every real token and the mean-pooled,
// normalized sentence embeddings of a right-padded batch; padding never changes a sequence's
// result; config.json and tensors are validated by name.
#include <catch2/catch.hpp>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "model/bert.h"
#include "test/scratch_dir.h"

using nlohmann::json;

namespace {
const std::string kDir = "test/fixtures/model/bert_tiny/";

double max_abs_diff(const float* a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < b.size(); ++i) m = std::max(m, std::abs(double(a[i]) - b[i]));
  return m;
}
}  // namespace

TEST_CASE("BERT encoder: hidden states and sentence embeddings equal HF BertModel (tiny random model)") {
  BertEncoder e = BertEncoder::load(kDir + "model");
  json x = json::parse(read_text_file(kDir + "expected.json"));
  auto ids = x["ids"].get<std::vector<std::vector<int32_t>>>();
  int T = 0;
  std::vector<float> h = e.hidden_states(ids, &T);
  const int C = e.cfg.hidden_size;
  REQUIRE(C == 32);
  for (size_t b = 0; b < ids.size(); ++b) {
    auto expected = x["hidden"][b].get<std::vector<double>>();
    REQUIRE(expected.size() == ids[b].size() * C);
    double d = max_abs_diff(h.data() + b * T * C, expected);
    INFO("sequence " << b << " (length " << ids[b].size() << "): max |ours - HF| = " << d);
    CHECK(d < 1e-4);
  }
  std::vector<float> emb = e.embed(ids);
  for (size_t b = 0; b < ids.size(); ++b) {
    double d = max_abs_diff(emb.data() + b * C, x["embeddings"][b].get<std::vector<double>>());
    INFO("embedding " << b << ": max |ours - HF| = " << d);
    CHECK(d < 1e-5);
  }
  // a sequence alone gives the same embedding as in the padded batch (the mask is exact)
  for (size_t b = 0; b < ids.size(); ++b) {
    std::vector<float> alone = e.embed({ids[b]});
    for (int i = 0; i < C; ++i) REQUIRE(std::abs(alone[i] - emb[b * C + i]) < 1e-6);
  }
}

TEST_CASE("BERT encoder: config.json fields and tensors are validated by name") {
  const std::string dir = scratch_dir("bert_cfg");
  json cfg = json::parse(read_text_file(kDir + "model/config.json"));
  auto error_with = [&](const json& c) {
    write_file_atomic(dir + "/config.json", c.dump());
    try {
      load_bert_config(dir + "/config.json");
    } catch (const EngineError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  json a = cfg;
  a["rotary_dim"] = 8;
  REQUIRE_THAT(error_with(a), Catch::Contains("config.json") && Catch::Contains("'rotary_dim'"));
  json b = cfg;
  b["hidden_act"] = "relu";
  REQUIRE_THAT(error_with(b), Catch::Contains("'hidden_act'"));
  json c = cfg;
  c["position_embedding_type"] = "relative_key";
  REQUIRE_THAT(error_with(c), Catch::Contains("'position_embedding_type'"));
  json d = cfg;
  d["num_attention_heads"] = 5;
  REQUIRE_THAT(error_with(d), Catch::Contains("'num_attention_heads'"));
  json f = cfg;
  f.erase("layer_norm_eps");
  REQUIRE_THAT(error_with(f), Catch::Contains("'layer_norm_eps'"));
  json g = cfg;
  g["is_decoder"] = true;
  REQUIRE_THAT(error_with(g), Catch::Contains("'is_decoder'"));
  // a config that disagrees with the tensors: the tensor's name is in the error
  json h = cfg;
  h["intermediate_size"] = 65;
  write_file_atomic(dir + "/config.json", h.dump());
  write_file_atomic(dir + "/model.safetensors", read_text_file(kDir + "model/model.safetensors"));
  REQUIRE_THROWS_WITH(BertEncoder::load(dir), Catch::Contains("intermediate.dense.weight"));
  // ids the model cannot take
  BertEncoder e = BertEncoder::load(kDir + "model");
  int T = 0;
  REQUIRE_THROWS_WITH(e.hidden_states({{1, 2, 97}}, &T), Catch::Contains("outside the vocab"));
  REQUIRE_THROWS_WITH(e.hidden_states({std::vector<int32_t>(41, 1)}, &T), Catch::Contains("max_position_embeddings"));
}
