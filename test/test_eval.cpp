// Evaluation: answer matching, greedy decoding with a KV cache and answer scoring, checked against
// transformers (fixture from dev/reference/gen_eval.py) and against full recomputation.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "eval/answer_match.h"
#include "eval/answer_stats.h"
#include "model/config.h"
#include "eval/factoid_eval.h"
#include "model/decode.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

using nlohmann::json;

TEST_CASE("exact match strips and lowercases, as REMIX") {
  REQUIRE(answer_matches(MatchKind::exact, "  Paris\n", "paris"));
  REQUIRE(answer_matches(MatchKind::exact, "PARIS", " Paris "));
  REQUIRE_FALSE(answer_matches(MatchKind::exact, "Paris.", "Paris"));
  REQUIRE_FALSE(answer_matches(MatchKind::exact, "Paris France", "Paris"));
  REQUIRE_FALSE(answer_matches(MatchKind::exact, "", "Paris"));
  REQUIRE(answer_matches(MatchKind::exact, "a1b2c3d4", "a1b2c3d4"));
  REQUIRE_FALSE(answer_matches(MatchKind::exact, "a1b2c3d5", "a1b2c3d4"));
}

TEST_CASE("squad normalization drops punctuation, articles and extra spaces") {
  REQUIRE(squad_normalize("The  Eiffel-Tower!") == "eiffeltower");
  REQUIRE(squad_normalize("an apple a day, the end") == "apple day end");
  REQUIRE(squad_normalize("theater") == "theater");
  REQUIRE(answer_matches(MatchKind::squad, "the Beatles.", "Beatles"));
  REQUIRE_FALSE(answer_matches(MatchKind::squad, "Rolling Stones", "Beatles"));
  REQUIRE_FALSE(answer_matches(MatchKind::exact, "the Beatles.", "Beatles"));
}

TEST_CASE("contains matches a gold answer inside the prediction; any gold answer counts") {
  REQUIRE(answer_matches(MatchKind::contains, "It is Barack Obama, I think", "barack obama"));
  REQUIRE_FALSE(answer_matches(MatchKind::contains, "Obama", "Barack Obama"));
  REQUIRE(answer_matches_any(MatchKind::exact, "NYC", {"New York City", "nyc"}));
  REQUIRE_FALSE(answer_matches_any(MatchKind::exact, "LA", {"New York City", "nyc"}));
  REQUIRE_FALSE(answer_matches_any(MatchKind::exact, "x", {}));
  REQUIRE(cut_at_newline("Paris\nThe answer") == "Paris");
  REQUIRE(cut_at_newline("Paris") == "Paris");
  REQUIRE_THROWS_WITH(parse_match_kind("fuzzy"), Catch::Contains("fuzzy") && Catch::Contains("--match"));
}

namespace {

struct Fixture {
  LlamaConfig config;
  ParamLayout layout;
  std::vector<float> params;
  json ref;
  Fixture() {
    const std::string dir = "test/fixtures/eval/tiny_llama";
    config = load_config(dir + "/config.json");
    layout = make_param_layout(config);
    params.resize(layout.total);
    load_weights(dir, config, layout, params.data());
    ref = json::parse(read_text_file("test/fixtures/eval/generate.json"));
  }
  std::vector<std::vector<int32_t>> prompts() const { return ref["prompts"].get<std::vector<std::vector<int32_t>>>(); }
  // An inference-only model of `rows` rows of up to T tokens holding the fixture's weights.
  std::unique_ptr<LlamaModel<CpuBackend>> model(int rows, int T) const {
    auto m = std::make_unique<LlamaModel<CpuBackend>>(config, rows, T, ModelUse::inference);
    m->load_params(params.data());
    return m;
  }
};

const Fixture& fixture() {
  static Fixture f;
  return f;
}

}  // namespace

TEST_CASE("the fixture's transformers-5 config.json (rope_parameters) is read with its llama3 rope scaling") {
  // transformers >= 5 writes rope_theta and rope_scaling inside "rope_parameters"; a parser that
  // misses it silently falls back to unscaled RoPE and every parity test below fails.
  const Fixture& f = fixture();
  REQUIRE(f.config.rope_scaling.rope_type == "llama3");
  REQUIRE(f.config.rope_scaling.factor == 8.0f);
  REQUIRE(f.config.rope_scaling.original_max_position_embeddings == 32);
}

// Reference path: greedy decoding that recomputes the whole sequence through the training forward
// at every step, without a cache.
std::vector<int32_t> greedy_recompute(LlamaModel<CpuBackend>& m, const std::vector<int32_t>& prompt, int max_new) {
  std::vector<int32_t> all = prompt, out;
  std::vector<float> logits(m.V);
  for (int step = 0; step < max_new; ++step) {
    Batch b;
    b.rows = 1;
    b.T = int(all.size());
    b.tokens = all;
    b.targets.assign(all.size(), -1);
    for (int t = 0; t < b.T; ++t) {
      b.positions.push_back(t);
      b.seg_start.push_back(0);
    }
    m.forward_logits_at(b, {b.T - 1}, logits.data());
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    all.push_back(next);
  }
  return out;
}

TEST_CASE("greedy decoding matches transformers generate(do_sample=False) token for token") {
  const Fixture& f = fixture();
  const auto prompts = f.prompts();
  const auto expected = f.ref["generated"].get<std::vector<std::vector<int32_t>>>();
  GreedyOptions opt;
  opt.max_new_tokens = f.ref["max_new_tokens"].get<int>();
  for (int bs : {1, 3, 32}) {
    auto m = f.model(bs, 64);
    opt.batch_size = bs;
    auto got = greedy_generate(*m, prompts, opt);
    REQUIRE(got.size() == expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      INFO("batch size " << bs << ", prompt " << i);
      REQUIRE(got[i] == expected[i]);
    }
  }
  // A plan smaller than one batch's prefill (4 rows of 16 tokens, 64 in all, for 7 prompts of up
  // to 24 tokens): the prefill runs in three passes, and the RoPE tables grow past 16 positions.
  auto small = f.model(4, 16);
  opt.batch_size = 8;
  auto got = greedy_generate(*small, {prompts.begin(), prompts.begin() + 7}, opt);
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("small plan, prompt " << i);
    REQUIRE(got[i] == expected[i]);
  }
}

TEST_CASE("the KV-cache prefill's logits match transformers at every prompt length") {
  const Fixture& f = fixture();
  auto m = f.model(1, 32);
  const auto p = f.prompts()[7];
  const auto ref = f.ref["logits_prompt7"].get<std::vector<std::vector<float>>>();
  const int V = f.config.vocab_size;
  m->kv_reserve(1, int(p.size()));
  std::vector<float> logits(V);
  double worst = 0;
  for (size_t t = 0; t < p.size(); ++t) {  // the prefix p[0..t] ends at position t
    m->kv_reset();
    m->kv_prefill({std::vector<int32_t>(p.begin(), p.begin() + t + 1)}, 0, 1);
    CpuBackend::download(logits.data(), m->kv_logits, V);
    for (int v = 0; v < V; ++v) worst = std::max(worst, std::fabs(double(logits[v]) - ref[t][v]));
  }
  REQUIRE(worst < 1e-4);
}

TEST_CASE("KV-cache decoding equals full recomputation, and prefill + decoding steps equal the training forward") {
  const Fixture& f = fixture();
  auto m = f.model(4, 64);
  const auto prompts = f.prompts();
  GreedyOptions opt;
  opt.max_new_tokens = 20;  // beyond the fixture's 12: a longer cache
  opt.batch_size = 4;
  auto cached = greedy_generate(*m, prompts, opt);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i);
    REQUIRE(cached[i] == greedy_recompute(*m, prompts[i], opt.max_new_tokens));
  }

  // Logits of a prompt + its continuation through the cache in pieces (prefill 5 tokens as
  // sequence 1 beside another prompt, then one token at a time, each step also decoding
  // sequence 0 and listing it second), and through the training forward of model/llama.h.
  std::vector<int32_t> seq = prompts[6];
  seq.insert(seq.end(), cached[6].begin(), cached[6].end());
  const int n = int(seq.size()), V = f.config.vocab_size;
  m = f.model(2, 32);
  m->kv_reserve(2, int(prompts[3].size()) + n - 5 + 1);  // sequence 0 grows as much as 1
  m->kv_reset();
  m->kv_prefill({prompts[3], std::vector<int32_t>(seq.begin(), seq.begin() + 5)}, 0, 2);
  std::vector<float> all(size_t(n) * V), row(size_t(2) * V);
  CpuBackend::download(row.data(), m->kv_logits, 2 * size_t(V));
  std::copy(row.begin() + V, row.end(), all.begin() + size_t(4) * V);
  for (int t = 5; t < n; ++t) {
    m->kv_decode({seq[t], seq[t]}, {1, 0});
    CpuBackend::download(row.data(), m->kv_logits, V);
    std::copy(row.begin(), row.begin() + V, all.begin() + size_t(t) * V);
  }
  REQUIRE(m->kv.length[1] == n);
  LlamaModel<CpuBackend> train_model(f.config, 1, n);
  train_model.load_params(f.params.data());
  Batch b;
  b.rows = 1;
  b.T = n;
  b.tokens = seq;
  b.targets.assign(n, -1);
  for (int t = 0; t < n; ++t) {
    b.positions.push_back(t);
    b.seg_start.push_back(0);
  }
  std::vector<float> ref(size_t(n) * V);
  train_model.forward_logits(b, ref.data());
  double worst = 0;
  for (size_t i = size_t(4) * V; i < ref.size(); ++i) worst = std::max(worst, double(std::fabs(ref[i] - all[i])));
  REQUIRE(worst < 1e-4);
  // The cache bounds are checked.
  REQUIRE_THROWS_WITH(m->kv_decode({seq[0]}, {2}), Catch::Contains("out of range"));
  REQUIRE_THROWS_WITH(m->kv_decode({seq[0], seq[1]}, {0, 0}), Catch::Contains("given twice"));
  while (m->kv.length[1] < m->kv.len) m->kv_decode({seq[0]}, {1});
  REQUIRE_THROWS_WITH(m->kv_decode({seq[0]}, {1}), Catch::Contains("fills the cache"));
}

TEST_CASE("generation stops at a stop token or a stopping token class, and at max_new_tokens") {
  const Fixture& f = fixture();
  auto model = f.model(8, 64);
  LlamaModel<CpuBackend>& m = *model;
  const auto prompts = f.prompts();
  const auto expected = f.ref["generated"].get<std::vector<std::vector<int32_t>>>();
  GreedyOptions opt;
  opt.max_new_tokens = 12;
  opt.batch_size = 8;
  // Stop each prompt at its third generated token: add them all to the stop set, then each
  // sequence must end at the first of them it produces.
  for (const auto& e : expected) opt.stop_token_ids.push_back(e[2]);
  auto got = greedy_generate(m, prompts, opt);
  for (size_t i = 0; i < got.size(); ++i) {
    size_t k = 0;
    while (std::find(opt.stop_token_ids.begin(), opt.stop_token_ids.end(), expected[i][k]) == opt.stop_token_ids.end()) ++k;
    REQUIRE(got[i] == std::vector<int32_t>(expected[i].begin(), expected[i].begin() + k + 1));
  }
  GreedyOptions byclass;
  byclass.max_new_tokens = 5;
  byclass.stops_generation.assign(f.config.vocab_size, false);
  byclass.stops_generation[expected[0][1]] = true;
  auto first = greedy_generate(m, {prompts[0]}, byclass);
  REQUIRE(first[0] == std::vector<int32_t>(expected[0].begin(), expected[0].begin() + 2));
  byclass.stops_generation.clear();
  REQUIRE(greedy_generate(m, {prompts[0]}, byclass)[0].size() == 5);
}

// Ranks that decode together (ZeRO 3) continue from the tokens they agree on: a sequence whose
// first token is replaced goes on as the prompt extended by that token would.
TEST_CASE("greedy decoding continues from the tokens agree_tokens returns") {
  const Fixture& f = fixture();
  auto model = f.model(8, 64);
  LlamaModel<CpuBackend>& m = *model;
  const auto prompts = f.prompts();
  GreedyOptions opt;
  opt.max_new_tokens = 6;
  opt.batch_size = int(prompts.size());
  const int32_t forced = 7;
  int calls = 0;
  opt.agree_tokens = [&](int32_t* ids, int n) {
    if (calls++ == 0) std::fill(ids, ids + n, forced);
  };
  const auto got = greedy_generate(m, prompts, opt);
  REQUIRE(calls > 1);
  GreedyOptions plain;
  plain.max_new_tokens = 5;
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("prompt " << i);
    std::vector<int32_t> extended = prompts[i];
    extended.push_back(forced);
    const std::vector<int32_t> rest = greedy_generate(m, {extended}, plain)[0];
    std::vector<int32_t> expected = {forced};
    expected.insert(expected.end(), rest.begin(), rest.end());
    REQUIRE(got[i] == expected);
  }
}

TEST_CASE("answer log-likelihoods, top-1 counts and first-token ranks match transformers") {
  const Fixture& f = fixture();
  // Random answers (low probability, ranks spread over the vocabulary) and greedy answers (every
  // token top-1, rank 1).
  for (const char* set : {"scores", "greedy_scores"}) {
    const auto answers = f.ref[std::string(set) == "scores" ? "answers" : "greedy_answers"]
                             .get<std::vector<std::vector<int32_t>>>();
    for (int bs : {1, 5}) {
      auto m = f.model(bs, 40);
      auto scores = score_answers(*m, f.prompts(), answers, bs);
      for (size_t i = 0; i < scores.size(); ++i) {
        INFO(set << " example " << i << ", batch size " << bs);
        const json& r = f.ref[set][i];
        REQUIRE(scores[i].num_tokens == int(answers[i].size()));
        REQUIRE(std::fabs(scores[i].sum_logprob - r["sum_logprob"].get<double>()) < 1e-4);
        REQUIRE(std::fabs(scores[i].mean_logprob - r["mean_logprob"].get<double>()) < 1e-4);
        REQUIRE(scores[i].top1 == r["top1"].get<int>());
        REQUIRE(scores[i].first_rank >= r["first_rank_min"].get<int>());
        REQUIRE(scores[i].first_rank <= r["first_rank_max"].get<int>());
      }
    }
  }
}

TEST_CASE("evaluation stops on Tokenizer::stop_ids() (<|eom_id|> and <|end|> included), eos ids and newlines") {
  json j = json::parse(read_text_file("test/fixtures/tokenizer/bytelevel.json"));
  int32_t next = 0;
  for (const auto& t : j["added_tokens"]) next = std::max(next, t["id"].get<int32_t>() + 1);
  for (const char* s : {"<|eom_id|>", "<|end|>"})
    j["added_tokens"].push_back({{"id", next++}, {"content", s}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", true}});
  Tokenizer tok = Tokenizer::from_json_string(j.dump(), "bytelevel+");
  LlamaConfig c;
  c.vocab_size = tok.vocab_size();
  c.eos_token_id = {7};
  const GreedyOptions opt = make_stop_options(tok, c, 5, 3);
  REQUIRE(opt.max_new_tokens == 5);
  REQUIRE(opt.batch_size == 3);
  REQUIRE(!tok.stop_ids().empty());
  for (int32_t id : tok.stop_ids()) REQUIRE(opt.stops(id));
  for (const char* s : {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|end|>"}) {
    INFO(s);
    REQUIRE(opt.stops(tok.token_to_id(s)));
  }
  REQUIRE(opt.stops(7));
  const std::vector<int32_t> newline = tok.encode("\n", false), word = tok.encode("hello", false);
  REQUIRE(newline.size() == 1);
  REQUIRE(opt.stops(newline[0]));
  for (int32_t id : word) REQUIRE_FALSE(opt.stops(id));
  REQUIRE_FALSE(opt.stops(tok.token_to_id("<|start_header_id|>")));  // special, but no end of turn
}

TEST_CASE("answer_stats: log-softmax, top-1 with greedy tie-breaking, and rank on hand-made rows") {
  // Row 0 predicts token 2: logits {0, 3, 1, 3}: tokens 1 and 3 are higher -> rank 3, not top-1.
  // Row 1 predicts token 1: logits {5, 5, 0, 0}: tied with token 0, which greedy prefers -> rank 2.
  // Row 2 predicts token 0: logits {5, 5, 0, 0}: the tie goes to the lower id -> rank 1, top-1.
  const std::vector<float> rows = {0, 3, 1, 3, 5, 5, 0, 0, 5, 5, 0, 0};
  AnswerStats a = answer_stats(rows.data(), 4, {2, 1, 0});
  REQUIRE(a.num_tokens == 3);
  REQUIRE(a.first_rank == 3);
  REQUIRE(a.top1 == 1);
  REQUIRE(a.top1_share() == Approx(1.0 / 3));
  const double lse0 = std::log(1 + std::exp(3.0) + std::exp(1.0) + std::exp(3.0));
  const double lse1 = std::log(2 * std::exp(5.0) + 2);
  const double expect = (1 - lse0) + (5 - lse1) + (5 - lse1);
  REQUIRE(a.sum_logprob == Approx(expect).epsilon(1e-12));
  REQUIRE(a.mean_logprob == Approx(expect / 3).epsilon(1e-12));
  AnswerStats b = answer_stats(rows.data() + 8, 4, {0});
  REQUIRE(b.first_rank == 1);
  REQUIRE(b.top1 == 1);
  REQUIRE_THROWS_WITH(answer_stats(rows.data(), 4, {7}), Catch::Contains("outside the vocabulary"));
  AnswerStats empty = answer_stats(rows.data(), 4, {});
  REQUIRE(empty.num_tokens == 0);
  REQUIRE(empty.first_rank == 0);
}
