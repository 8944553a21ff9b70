// The logit lens and layer swapping of eval/layer_lens.h:
//   - lens probabilities, ranks and logits at every layer boundary equal transformers' (fixture from
//     dev/reference/gen_lens.py, whose adjacent boundaries differ far beyond the tolerance, so a lens
//     reading the wrong layer fails); the lens at the last boundary is the model's own logits;
//   - rank ties, ℓ* and its histogram / mean / entropy on hand-made cases;
//   - swapping: which tensors move, a self-swap changes nothing, swapping every block for the
//     reference's gives the reference's parameters and accuracy, incompatible checkpoints are refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/error.h"
#include "eval/factoid_eval.h"
#include "eval/layer_lens.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace {

const std::string kLens = "test/fixtures/eval/lens/";

struct LensFixture {
  LlamaConfig cfg;
  ParamLayout layout;
  std::vector<float> params;
  SafeTensors expected;
  std::vector<EvalItem> items;
  LensFixture() {
    cfg = load_config(kLens + "model/config.json");
    layout = make_param_layout(cfg);
    params.resize(layout.total);
    load_weights(kLens + "model", cfg, layout, params.data());
    expected = SafeTensors::open(kLens + "expected.safetensors");
    for (int i = 0; expected.tensors.count("prompt_" + std::to_string(i)); ++i) {
      EvalItem it;
      it.question = "item " + std::to_string(i);
      it.prompt_ids = expected.read_i32("prompt_" + std::to_string(i));
      it.answer_ids = expected.read_i32("answer_" + std::to_string(i));
      items.push_back(it);
    }
  }
};

}  // namespace

TEST_CASE("logit lens equals transformers (hidden_states -> model.norm -> lm_head) at every layer boundary") {
  LensFixture f;
  REQUIRE(f.items.size() == 5);
  const int L = f.cfg.num_hidden_layers, V = f.cfg.vocab_size;
  REQUIRE(L == 4);
  // Two items per forward pass: rows of different lengths, with padding.
  LlamaModel<CpuBackend> m(f.cfg, 2, lens_max_row_length(f.items));
  m.load_params(f.params.data());
  const std::vector<FactLens> facts = run_logit_lens(m, f.items, 2);
  REQUIRE(facts.size() == f.items.size());
  double worst = 0, adjacent_min = 1e9;
  std::vector<double> adjacent(L, 0.0);
  for (size_t i = 0; i < facts.size(); ++i) {
    const std::string s = std::to_string(i);
    const std::vector<float> prob = f.expected.read_f32("prob_" + s);
    const std::vector<int32_t> rank = f.expected.read_i32("rank_" + s);
    const int A = int(f.items[i].answer_ids.size());
    REQUIRE(facts[i].answer_len == A);
    REQUIRE(prob.size() == size_t((L + 1) * A));
    for (int l = 0; l <= L; ++l)
      for (int j = 0; j < A; ++j) {
        INFO("item " << i << " boundary " << l << " answer token " << j);
        const LensStat& st = facts[i].stat(l, j);
        CHECK(std::abs(st.prob - prob[l * A + j]) <= 1e-4);
        CHECK(st.rank == rank[l * A + j]);
        worst = std::max(worst, (double)std::abs(st.prob - prob[l * A + j]));
        if (l < L) adjacent[l] = std::max(adjacent[l], (double)std::abs(prob[(l + 1) * A + j] - prob[l * A + j]));
      }
  }
  // The fixture separates the boundaries: reading boundary l +- 1 instead of l misses by > 100x the tolerance.
  for (double a : adjacent) adjacent_min = std::min(adjacent_min, a);
  CHECK(adjacent_min > 1e-2);
  WARN("lens vs transformers: max |prob diff| " << worst << ", closest adjacent boundaries differ by " << adjacent_min);

  // Planned for the analysis (every layer's residual stream, no gradients, moments or backward
  // buffers): the same numbers bit for bit, in less memory. Planned for inference: refused.
  LlamaModel<CpuBackend> lean(f.cfg, 2, lens_max_row_length(f.items), ModelUse::analysis);
  lean.load_params(f.params.data());
  const std::vector<FactLens> lean_facts = run_logit_lens(lean, f.items, 2);
  REQUIRE(lean_facts.size() == facts.size());
  for (size_t i = 0; i < facts.size(); ++i) {
    INFO("item " << i);
    REQUIRE(lean_facts[i].at.size() == facts[i].at.size());
    for (size_t k = 0; k < facts[i].at.size(); ++k) {
      CHECK(std::memcmp(&lean_facts[i].at[k].prob, &facts[i].at[k].prob, sizeof(float)) == 0);
      CHECK(lean_facts[i].at[k].rank == facts[i].at[k].rank);
      CHECK(lean_facts[i].at[k].top1_id == facts[i].at[k].top1_id);
    }
    CHECK(lean_facts[i].l_star == facts[i].l_star);
    CHECK(lean_facts[i].l_star_all == facts[i].l_star_all);
  }
  CHECK(lean.param_state_bytes * 4 == m.param_state_bytes);  // parameters only: no gradients, m, v
  CHECK(lean.activation_bytes < m.activation_bytes);
  LlamaModel<CpuBackend> infer(f.cfg, 2, lens_max_row_length(f.items), ModelUse::inference);
  infer.load_params(f.params.data());
  CHECK_THROWS_WITH(run_logit_lens(infer, f.items, 2), Catch::Contains("ModelUse::analysis"));
  CHECK(infer.activation_bytes < lean.activation_bytes);

  // The logits themselves, one item at a time, and the last boundary against the model's own logits.
  LlamaModel<CpuBackend> one(f.cfg, 1, lens_max_row_length(f.items));
  one.load_params(f.params.data());
  for (size_t i = 0; i < f.items.size(); ++i) {
    const EvalItem& it = f.items[i];
    const int P = int(it.prompt_ids.size()), A = int(it.answer_ids.size()), T = lens_row_length(it);
    Batch b;
    b.rows = 1;
    b.T = T;
    for (int t = 0; t < T; ++t) {
      b.tokens.push_back(t < P ? it.prompt_ids[t] : it.answer_ids[t - P]);
      b.targets.push_back(-1);
      b.positions.push_back(t);
      b.seg_start.push_back(0);
    }
    std::vector<int32_t> index;
    for (int j = 0; j < A; ++j) index.push_back(P - 1 + j);
    const std::vector<float> expected = f.expected.read_f32("logits_" + std::to_string(i));
    std::vector<float> own((size_t)A * V), lens((size_t)A * V);
    one.forward_logits_at(b, index, own.data());
    for (int l = 0; l <= L; ++l) {
      one.lens_logits(l, index, lens.data());
      double err = 0;
      for (size_t k = 0; k < lens.size(); ++k)
        err = std::max(err, (double)std::abs(lens[k] - expected[(size_t)l * A * V + k]));
      INFO("item " << i << " boundary " << l);
      CHECK(err <= 1e-4);
    }
    CHECK(std::memcmp(own.data(), lens.data(), own.size() * sizeof(float)) == 0);  // l == L: bit for bit
  }
  CHECK_THROWS_WITH(one.lens_logits(L + 1, {0}, nullptr), Catch::Contains("layer boundary 5 is outside [0, 4]"));
}

TEST_CASE("lens statistics: rank follows greedy order on ties; l* and its summary") {
  // Four copies of one row, each with another gold token (the CPU op of LlamaModel::lens_stats).
  const std::vector<float> row = {1.0f, 3.0f, 3.0f, 0.5f};
  std::vector<float> logits;
  for (int i = 0; i < 4; ++i) logits.insert(logits.end(), row.begin(), row.end());
  const std::vector<int32_t> gold = {1, 2, 3, 0};
  float prob[4];
  int32_t rank[4], top1[4];
  lens_stats(prob, rank, top1, logits.data(), gold.data(), 4, 4);
  CHECK(rank[0] == 0);  // tie with id 2: the lower id is greedy's choice
  CHECK(rank[1] == 1);
  CHECK(rank[2] == 3);
  CHECK(rank[3] == 2);
  for (int i = 0; i < 4; ++i) CHECK(top1[i] == 1);
  const double z = std::exp(1.0) + 2 * std::exp(3.0) + std::exp(0.5);
  CHECK(prob[3] == Approx(std::exp(1.0) / z).epsilon(1e-6));
  CHECK(prob[0] == Approx(std::exp(3.0) / z).epsilon(1e-6));

  CHECK(first_stable_layer({false, true, true, true}) == 1);
  CHECK(first_stable_layer({true, false, true, true}) == 2);  // must STAY top-1 through the last boundary
  CHECK(first_stable_layer({true, true, true, false}) == -1);
  CHECK(first_stable_layer({true, true}) == 0);

  const LStarSummary s = summarize_l_star({1, 1, 2, 3, -1, -1}, 3);
  CHECK(s.histogram == std::vector<int64_t>{0, 2, 1, 1});
  CHECK(s.never == 2);
  CHECK(s.mean == Approx(7.0 / 4.0));
  CHECK(s.entropy_bits == Approx(1.5));  // (1/2, 1/4, 1/4)
  CHECK(summarize_l_star({2, 2, 2}, 3).entropy_bits == 0.0);
  CHECK(std::isnan(summarize_l_star({-1}, 3).mean));

  // ℓ*_all needs every answer token; ℓ* only the first.
  FactLens f;
  f.layers = 2;
  f.answer_len = 2;
  f.at.resize(6);
  const int ranks[3][2] = {{4, 0}, {0, 2}, {0, 0}};
  for (int l = 0; l < 3; ++l)
    for (int j = 0; j < 2; ++j) f.at[l * 2 + j].rank = ranks[l][j];
  finish_fact(f);
  CHECK(f.l_star == 1);
  CHECK(f.l_star_all == 2);
}

namespace {

LlamaConfig swap_config() {
  LlamaConfig c;
  c.vocab_size = 3008;  // test/fixtures/tokenizer/ours.json
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = true;
  c.initializer_range = 0.2f;  // peaked logits: greedy answers far from ties
  return c;
}

// The exact-match evaluation of a parameter vector, in a CPU model of its own.
EvalOutcome evaluate_params(const LlamaConfig& c, const float* params, const Tokenizer& tok,
                            const std::vector<EvalItem>& items, const GreedyOptions& opt, MatchKind match) {
  size_t max_len = 1;  // the longest prompt plus its answer
  for (const auto& it : items) max_len = std::max(max_len, it.prompt_ids.size() + size_t(opt.max_new_tokens));
  LlamaModel<CpuBackend> m(c, std::max(1, std::min(opt.batch_size, int(items.size()))), int(max_len),
                           ModelUse::inference);
  m.load_params(params);
  return evaluate_factoids(m, tok, items, opt, match);
}

}  // namespace

TEST_CASE("layer swap: the tensors of each part, self-swap, full swap, incompatible checkpoints") {
  const LlamaConfig cfg = swap_config();
  const ParamLayout layout = make_param_layout(cfg);
  const Tokenizer tok = Tokenizer::from_json_file("test/fixtures/tokenizer/ours.json");
  REQUIRE(tok.vocab_size() <= cfg.vocab_size);

  // Attention = input_layernorm + self_attn.*, MLP = post_attention_layernorm + mlp.*; together
  // exactly the layer's tensors.
  auto names = [&](int l, SwapPart p) {
    std::vector<std::string> n;
    for (const ParamTensor* t : swap_tensors(layout, l, p)) n.push_back(t->name);
    return n;
  };
  CHECK(names(1, SwapPart::attention) ==
        std::vector<std::string>{"model.layers.1.input_layernorm.weight", "model.layers.1.self_attn.q_proj.weight",
                                 "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
                                 "model.layers.1.self_attn.o_proj.weight"});
  CHECK(names(1, SwapPart::mlp) ==
        std::vector<std::string>{"model.layers.1.post_attention_layernorm.weight", "model.layers.1.mlp.gate_proj.weight",
                                 "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight"});
  CHECK(names(1, SwapPart::block).size() == 9);

  std::vector<float> a(layout.total), other(layout.total);
  init_weights(cfg, layout, a.data(), 1);
  init_weights(cfg, layout, other.data(), 2);
  // The reference: a's embeddings, final norm and head with other's blocks.
  std::vector<float> ref = a;
  for (int l = 0; l < cfg.num_hidden_layers; ++l) swap_layer(ref.data(), other.data(), layout, l, SwapPart::block);
  {
    // Swapping attention of layer 1 moves exactly those floats.
    std::vector<float> w = a;
    swap_layer(w.data(), ref.data(), layout, 1, SwapPart::attention);
    const ParamTensor* q = layout.find("model.layers.1.self_attn.q_proj.weight");
    const ParamTensor* gate = layout.find("model.layers.1.mlp.gate_proj.weight");
    const ParamTensor* q0 = layout.find("model.layers.0.self_attn.q_proj.weight");
    CHECK(std::memcmp(w.data() + q->offset, ref.data() + q->offset, q->numel * 4) == 0);
    CHECK(std::memcmp(w.data() + gate->offset, a.data() + gate->offset, gate->numel * 4) == 0);
    CHECK(std::memcmp(w.data() + q0->offset, a.data() + q0->offset, q0->numel * 4) == 0);
    CHECK(std::memcmp(w.data() + q->offset, a.data() + q->offset, q->numel * 4) != 0);
  }

  // Questions whose gold answers are the reference's own greedy answers: the reference scores 1.
  std::vector<EvalItem> items;
  for (const char* key : {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"}) {
    EvalItem it;
    it.question = std::string("The value of key ") + key + " is?";
    it.prompt_ids = tok.encode(it.question);
    items.push_back(it);
  }
  const GreedyOptions opt = make_stop_options(tok, cfg, 6, 4);
  const EvalOutcome by_ref = evaluate_params(cfg, ref.data(), tok, items, opt, MatchKind::exact);
  for (size_t i = 0; i < items.size(); ++i) items[i].golds = {by_ref.predictions[i]};
  const EvalOutcome ref_eval = evaluate_params(cfg, ref.data(), tok, items, opt, MatchKind::exact);
  const EvalOutcome a_eval = evaluate_params(cfg, a.data(), tok, items, opt, MatchKind::exact);
  REQUIRE(ref_eval.accuracy == 1.0);
  REQUIRE(a_eval.accuracy < 1.0);

  // The swaps run in one model planned for the analysis, as analyze_layers runs them.
  LlamaModel<CpuBackend> m(cfg, opt.batch_size, 32, ModelUse::analysis);
  m.load_params(a.data());
  {  // a swap written into the model moves the same floats as on the host
    std::vector<float> host = a, dev(layout.total);
    swap_layer(host.data(), ref.data(), layout, 1, SwapPart::mlp);
    swap_layer(m, ref.data(), 1, SwapPart::mlp);
    CpuBackend::download(dev.data(), m.params, layout.total);
    CHECK(std::memcmp(dev.data(), host.data(), host.size() * 4) == 0);
    swap_layer(m, a.data(), 1, SwapPart::block);
  }
  // Every block swapped: the reference's accuracy (the last cumulative row), and its exact parameters.
  const std::vector<SwapRow> rows = run_swap_profile(m, a.data(), ref.data(), tok, items, opt, MatchKind::exact);
  REQUIRE(rows.size() == size_t(4 * cfg.num_hidden_layers));
  CHECK(rows.back().part == "cumulative");
  CHECK(rows.back().layer == cfg.num_hidden_layers - 1);
  CHECK(rows.back().accuracy == ref_eval.accuracy);
  std::vector<float> all = a;
  for (int l = 0; l < cfg.num_hidden_layers; ++l) swap_layer(all.data(), ref.data(), layout, l, SwapPart::block);
  CHECK(std::memcmp(all.data(), ref.data(), all.size() * 4) == 0);

  // A checkpoint swapped with itself: every row has the unswapped result, token for token.
  std::vector<float> back(layout.total);  // the profile hands the model back with its own parameters
  CpuBackend::download(back.data(), m.params, layout.total);
  CHECK(std::memcmp(back.data(), a.data(), back.size() * 4) == 0);
  const std::vector<SwapRow> self = run_swap_profile(m, a.data(), a.data(), tok, items, opt, MatchKind::exact);
  for (const SwapRow& r : self) {
    INFO(r.part << " " << r.layer);
    CHECK(r.correct == a_eval.num_correct);
  }
  std::vector<float> w = a;
  for (int l = 0; l < cfg.num_hidden_layers; ++l)
    for (SwapPart p : {SwapPart::attention, SwapPart::mlp, SwapPart::block}) swap_layer(w.data(), a.data(), layout, l, p);
  CHECK(std::memcmp(w.data(), a.data(), w.size() * 4) == 0);
  CHECK(evaluate_params(cfg, w.data(), tok, items, opt, MatchKind::exact).output_ids == a_eval.output_ids);

  // Incompatible checkpoints: the error names the field, or the tokenizer.
  LlamaConfig wide = cfg;
  wide.intermediate_size = 128;
  CHECK_THROWS_WITH(check_swap_compatible("A", cfg, tok, "R", wide, tok),
                    Catch::Contains("--reference R: config.json field 'intermediate_size' is 128 but A has 96"));
  LlamaConfig deep = cfg;
  deep.num_hidden_layers = 4;
  CHECK_THROWS_WITH(check_swap_compatible("A", cfg, tok, "R", deep, tok), Catch::Contains("'num_hidden_layers'"));
  const Tokenizer other_tok = Tokenizer::from_json_file("test/fixtures/tokenizer/bytelevel.json");
  CHECK_THROWS_WITH(check_swap_compatible("A", cfg, tok, "R", cfg, other_tok), Catch::Contains("tokenizer (hash"));
  CHECK_NOTHROW(check_swap_compatible("A", cfg, tok, "R", cfg, tok));
}
