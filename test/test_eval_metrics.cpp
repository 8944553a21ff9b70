// D_B metrics: GSM8K final-answer extraction and matching, and the held-out loss / perplexity of
// shards against transformers (fixture from dev/reference/gen_heldout.py on the tiny model of
// dev/reference/gen_eval.py).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/file_io.h"
#include "dataloader/shard.h"
#include "eval/answer_match.h"
#include "eval/factoid_eval.h"
#include "eval/heldout_loss.h"
#include "model/config.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

using nlohmann::json;

TEST_CASE("GSM8K reference answers: the number after the last ####") {
  REQUIRE(gsm8k_reference_answer("3 * 12 = <<3*12=36>>36\n#### 31") == "31");
  REQUIRE(gsm8k_reference_answer("Total 1,234 apples\n#### 1,234") == "1234");
  REQUIRE(gsm8k_reference_answer("#### -7") == "-7");
  REQUIRE(gsm8k_reference_answer("#### 3.50") == "3.5");
  REQUIRE(gsm8k_reference_answer("#### 12.0") == "12");
  REQUIRE(gsm8k_reference_answer("a #### 4 b\n#### 5") == "5");
  REQUIRE(gsm8k_reference_answer("no marker 42") == "");
  REQUIRE(gsm8k_reference_answer("####") == "");
}

TEST_CASE("GSM8K predictions: the final number, with commas, signs, decimals and trailing text") {
  REQUIRE(gsm8k_predicted_answer("She has 3 + 4 = 7 apples. The answer is 7.") == "7");
  REQUIRE(gsm8k_predicted_answer("It costs $1,000,000 in total") == "1000000");
  REQUIRE(gsm8k_predicted_answer("The temperature drops to -12 degrees.") == "-12");
  REQUIRE(gsm8k_predicted_answer("Each costs 2.50 dollars") == "2.5");
  REQUIRE(gsm8k_predicted_answer("0.75") == "0.75");
  REQUIRE(gsm8k_predicted_answer("05 items") == "5");
  REQUIRE(gsm8k_predicted_answer("-0") == "0");
  // A "####" in the output wins over numbers written after it.
  REQUIRE(gsm8k_predicted_answer("10 - 3 = 7\n#### 7\nQuestion: 5 more?") == "7");
  REQUIRE(gsm8k_predicted_answer("#### 1,250 dollars, i.e. 2 checks") == "1250");
  REQUIRE(gsm8k_predicted_answer("#### none, so 3") == "3");  // no number right after ####: the last
  REQUIRE(gsm8k_predicted_answer("no numbers here") == "");
  REQUIRE(normalize_number("+1,000.500") == "1000.5");
  REQUIRE(normalize_number("007") == "7");
}

TEST_CASE("gsm8k match kind: final answers compared, not the text; never matches without a number") {
  const std::string gold = "36 - 5 = <<36-5=31>>31 eggs.\n#### 31";
  REQUIRE(answer_matches(MatchKind::gsm8k, "36 - 5 = 31\n#### 31", gold));
  REQUIRE(answer_matches(MatchKind::gsm8k, "So 31.", gold));
  REQUIRE(answer_matches(MatchKind::gsm8k, "So 31.0 eggs remain.", gold));
  REQUIRE_FALSE(answer_matches(MatchKind::gsm8k, "31 eggs... wait, 30", gold));
  REQUIRE_FALSE(answer_matches(MatchKind::gsm8k, "-31", gold));
  REQUIRE_FALSE(answer_matches(MatchKind::gsm8k, "", gold));
  REQUIRE_FALSE(answer_matches(MatchKind::gsm8k, "31", "no marker 31"));
  REQUIRE(answer_matches(MatchKind::gsm8k, "a total of 1000", "#### 1,000"));
  REQUIRE(parse_match_kind("gsm8k") == MatchKind::gsm8k);
  REQUIRE(std::string(match_kind_name(MatchKind::gsm8k)) == "gsm8k");
  REQUIRE_FALSE(match_uses_first_line(MatchKind::gsm8k));
  REQUIRE(match_uses_first_line(MatchKind::exact));
}

TEST_CASE("held-out loss and perplexity of a shard match transformers within 1e-4") {
  const std::string dir = "test/fixtures/eval/tiny_llama";
  const json ref = json::parse(read_text_file("test/fixtures/eval/heldout.json"));
  const std::string shard = "build/test/tmp_heldout_" + std::to_string(getpid()) + ".bin";
  ShardWriter w(0, 320, "");
  for (const auto& ex : ref["examples"])
    w.add(ex["tokens"].get<std::vector<int32_t>>(), ex["loss"].get<std::vector<uint8_t>>());
  w.write(shard);
  LlamaConfig config = load_config(dir + "/config.json");
  // Several batch shapes (packing several examples per row, one batch or many): the same result.
  for (int64_t tokens_per_batch : {int64_t(1), int64_t(128), int64_t(100000)}) {
    HeldoutData data = load_heldout(shard, 0, config.vocab_size, config.max_position_embeddings, tokens_per_batch);
    REQUIRE(data.examples == int64_t(ref["examples"].size()));
    REQUIRE(data.truncated == 0);
    LlamaModel<CpuBackend> model(config, data.rows, data.T);
    load_weights(dir, config, model.layout, model.params);
    HeldoutLoss r = heldout_loss(model, data);
    INFO("tokens per batch " << tokens_per_batch << ", batches " << data.batches.size());
    REQUIRE(r.target_tokens == ref["target_tokens"].get<int64_t>());
    REQUIRE(std::abs(r.mean_loss() - ref["mean_loss"].get<double>()) <= 1e-4);
    REQUIRE(std::abs(r.perplexity() / ref["perplexity"].get<double>() - 1.0) <= 1e-4);
    // Planned for inference (no gradients, moments or per-layer activations): the same loss, bit
    // for bit, in less memory.
    LlamaModel<CpuBackend> lean(config, data.rows, data.T, ModelUse::inference);
    load_weights(dir, config, lean.layout, lean.params);
    const HeldoutLoss li = heldout_loss(lean, data);
    REQUIRE(li.loss_sum == r.loss_sum);
    REQUIRE(li.target_tokens == r.target_tokens);
    REQUIRE(lean.param_state_bytes < model.param_state_bytes);
    REQUIRE(lean.activation_bytes < model.activation_bytes);
  }
  // A context shorter than the longest example: examples are cut, and counted.
  HeldoutData cut = load_heldout(shard, 0, 320, 20, 64);
  REQUIRE(cut.T == 20);
  REQUIRE(cut.truncated == 4);  // lengths 23, 40, 61, 33
  REQUIRE_THROWS_WITH(load_heldout(shard, 0, 100, 64), Catch::Contains(shard + ": field 'vocab_size' (320)"));
  REQUIRE_THROWS_WITH(load_heldout(shard + ",nope_*.bin", 0, 320, 64), Catch::Contains("nope_*.bin"));

  // eval_factoids --heldout: the same number in the table and in metrics.json (run from the
  // repository root, as `make test` does; the shard has no tokenizer hash, any tokenizer reads it).
  const std::string out = "build/test/tmp_heldout_out_" + std::to_string(getpid());
  const std::string cmd = "./eval_factoids --model " + dir + " --tokenizer test/fixtures/dataloader/tokenizer.json "
                          "--device cpu --heldout " + shard + " --out " + out + " > " + out + ".txt 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const json metrics = json::parse(read_text_file(out + "/metrics.json"));
  const json& h = metrics["models"][0]["heldout"];
  REQUIRE(h["target_tokens"].get<int64_t>() == ref["target_tokens"].get<int64_t>());
  REQUIRE(std::abs(h["loss"].get<double>() - ref["mean_loss"].get<double>()) <= 1e-4);
  REQUIRE(std::abs(h["perplexity"].get<double>() / ref["perplexity"].get<double>() - 1.0) <= 1e-4);
  REQUIRE(read_text_file(out + ".txt").find("heldout ppl") != std::string::npos);
  std::filesystem::remove_all(out);
  std::remove((out + ".txt").c_str());
  std::remove(shard.c_str());
}

TEST_CASE("a chat shard evaluates its first reply: prompt = the tokens before it, gold = the reply") {
  const json cases = json::parse(read_text_file("test/fixtures/dataloader/expected_chat.json"))["cases"];
  Tokenizer tok = Tokenizer::from_json_file("test/fixtures/dataloader/tokenizer.json");
  const std::string shard = "build/test/tmp_chat_eval_" + std::to_string(getpid()) + ".bin";
  ShardWriter w(tok.hash(), uint32_t(tok.vocab_size()), "");
  for (const auto& c : cases)
    if (c["tokenizer"] == "tokenizer.json" && (c["line"] == 2 || c["line"] == 3))
      w.add(c["tokens"].get<std::vector<int32_t>>(), c["loss"].get<std::vector<uint8_t>>());
  w.write(shard);
  auto items = load_eval_items(shard, tok, "", 0);
  REQUIRE(items.size() == 2);
  REQUIRE(items[0].golds == std::vector<std::string>{"London"});
  REQUIRE(items[1].golds == std::vector<std::string>{"The band wrote it in 1999."});
  REQUIRE(tok.decode(items[0].prompt_ids) ==
          "<|begin_of_text|><|system|>\nAnswer in one word.\n<|user|>\nWhere was the band founded?\n<|assistant|>\n");
  REQUIRE(tok.decode(items[0].answer_ids) == "London");
  std::remove(shard.c_str());
}
