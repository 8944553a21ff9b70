// Chat data (dataloader/chat.h) against open-instruct's rendering and masking as reproduced with HF
// `tokenizers` by dev/reference/gen_chat.py, for a byte-level and a SentencePiece-style tokenizer;
// truncation, refusals, the QA presets, and ./prepare_data --mode chat end to end (run from the
// repository root, as `make test` does).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "dataloader/chat.h"
#include "dataloader/prompt_template.h"
#include "dataloader/shard.h"
#include "dataloader/sources.h"
#include "dataloader/tokenize_example.h"
#include "tokenizer/tokenizer.h"
#include "test/scratch_dir.h"

using json = nlohmann::json;

static const std::string kFix = "test/fixtures/dataloader/";

static std::string tmp_dir() { return scratch_dir("dataloader_chat"); }
static std::string write_tmp(const std::string& name, const std::string& text) {
  std::string p = tmp_dir() + "/" + name;
  write_file_atomic(p, text);
  return p;
}
static std::vector<Conversation> fixture_convs() {
  ChatSkips skips;
  return read_chat_jsonl(kFix + "chat.jsonl", ChatFormat{}, 0, false, skips);
}

TEST_CASE("chat rendering and masks match the open-instruct reference, token for token") {
  const json cases = json::parse(read_text_file(kFix + "expected_chat.json"))["cases"];
  const auto convs = fixture_convs();
  REQUIRE(convs.size() == 6);
  int checked = 0;
  for (const auto& c : cases) {
    Tokenizer tok = Tokenizer::from_json_file(kFix + c["tokenizer"].get<std::string>());
    ChatTemplate t = ChatTemplate::resolve(c["template"].get<std::string>());
    ChatSkips skips;
    const size_t i = c["line"].get<size_t>() - 1;
    auto ex = tokenize_conversations(tok, t, {convs[i]}, 0, ChatTruncate::error, "chat.jsonl", skips);
    INFO(c["tokenizer"] << " " << c["template"] << " line " << c["line"]);
    REQUIRE(ex[0].tokens == c["tokens"].get<std::vector<int32_t>>());
    REQUIRE(ex[0].loss == c["loss"].get<std::vector<uint8_t>>());
    ++checked;
  }
  REQUIRE(checked == 24);
}

TEST_CASE("a reply's evaluation prompt is the QA prompt of its one-turn conversation") {
  Tokenizer tok = Tokenizer::from_json_file(kFix + "tokenizer.json");
  ChatTemplate t = ChatTemplate::resolve("tulu");
  REQUIRE(t.qa_template() == resolve_template("tulu"));
  const auto convs = fixture_convs();
  ChatSkips skips;
  auto ex = tokenize_conversations(tok, t, {convs[0]}, 0, ChatTruncate::error, "x", skips)[0];
  size_t first = std::find(ex.loss.begin(), ex.loss.end(), 1) - ex.loss.begin();
  auto prompt = tokenize_prompt(tok, PromptTemplate::parse(t.qa_template()), convs[0].messages[0].content);
  REQUIRE(std::vector<int32_t>(ex.tokens.begin(), ex.tokens.begin() + long(first)) == prompt);
}

TEST_CASE("chat truncation keeps whole exchanges, or skips, or refuses") {
  const json cases = json::parse(read_text_file(kFix + "expected_chat.json"))["cases"];
  const json* first_exchange = nullptr;  // line 6 is line 2's first exchange
  for (const auto& c : cases)
    if (c["tokenizer"] == "tokenizer.json" && c["line"] == 6) first_exchange = &c;
  REQUIRE(first_exchange != nullptr);
  Tokenizer tok = Tokenizer::from_json_file(kFix + "tokenizer.json");
  ChatTemplate t = ChatTemplate::resolve("tulu");
  const auto convs = fixture_convs();
  const int64_t fits = int64_t((*first_exchange)["tokens"].size());
  ChatSkips skips;
  auto ex = tokenize_conversations(tok, t, {convs[1]}, fits, ChatTruncate::turns, "chat.jsonl", skips)[0];
  REQUIRE(ex.messages == 3);
  REQUIRE(ex.tokens == (*first_exchange)["tokens"].get<std::vector<int32_t>>());
  REQUIRE(ex.loss == (*first_exchange)["loss"].get<std::vector<uint8_t>>());
  REQUIRE(skips.total() == 0);
  // One token less: not even the first exchange fits.
  ex = tokenize_conversations(tok, t, {convs[1]}, fits - 1, ChatTruncate::turns, "chat.jsonl", skips)[0];
  REQUIRE(ex.tokens.empty());
  REQUIRE(skips.count["first exchange longer than --max-tokens"] == 1);
  ex = tokenize_conversations(tok, t, {convs[1]}, fits, ChatTruncate::skip, "chat.jsonl", skips)[0];
  REQUIRE(ex.tokens.empty());
  REQUIRE(skips.count["longer than --max-tokens"] == 1);
  REQUIRE_THROWS_WITH(tokenize_conversations(tok, t, {convs[1]}, fits, ChatTruncate::error, "chat.jsonl", skips),
                      Catch::Contains("chat.jsonl:2: conversation of") && Catch::Contains("--max-tokens"));
  // A conversation that fits is untouched.
  ex = tokenize_conversations(tok, t, {convs[0]}, 1000, ChatTruncate::turns, "chat.jsonl", skips)[0];
  REQUIRE(ex.messages == 2);
}

TEST_CASE("invalid conversations: file:line: reason, or counted and skipped") {
  const std::string good = R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})";
  struct Bad { std::string line, reason, detail; };
  const std::vector<Bad> bad = {
      {R"({"messages": []})", "empty conversation", "empty conversation"},
      {R"({"messages": [{"role": "user", "content": "hi"}]})", "no assistant turn", "no assistant turn"},
      {R"({"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]})", "unknown role",
       "message 2: unknown role 'bot'"},
      {R"({"messages": [{"role": "user", "content": "hi"}, )", "malformed JSON", "invalid JSON"},
      {R"({"text": "no messages"})", "no message list", "no message list"},
      {R"({"messages": [{"role": "user"}]})", "malformed JSON", "message 1: no string content"},
  };
  for (const auto& b : bad) {
    const std::string p = write_tmp("bad.jsonl", good + "\n\n" + b.line + "\n" + good + "\n");
    ChatSkips skips;
    REQUIRE_THROWS_WITH(read_chat_jsonl(p, ChatFormat{}, 0, false, skips),
                        Catch::Contains(p + ":3: " + b.detail));
    auto convs = read_chat_jsonl(p, ChatFormat{}, 0, true, skips);
    REQUIRE(convs.size() == 2);
    REQUIRE(convs[1].line == 4);
    REQUIRE(skips.total() == 1);
    REQUIRE(skips.count.at(b.reason) == 1);
    REQUIRE(skips.summary() == "1 skipped (1 " + b.reason + ")");
  }
  // A role map makes the unknown role known.
  ChatFormat f;
  f.role_map["bot"] = "assistant";
  ChatSkips skips;
  auto convs = read_chat_jsonl(write_tmp("bot.jsonl", bad[2].line + "\n"), f, 0, false, skips);
  REQUIRE(convs[0].messages[1].role == "assistant");
  f.role_map["bot"] = "robot";
  REQUIRE_THROWS_WITH(read_chat_jsonl(write_tmp("bot.jsonl", bad[2].line + "\n"), f, 0, false, skips),
                      Catch::Contains("--role-map: 'bot' maps to 'robot'"));
}

TEST_CASE("chat template files, and a template's required tokens") {
  const std::string p = write_tmp("t.json", R"({"user": "U: {content}\n", "assistant_header": "A: ",
                                                "assistant_end": "{eos}\n", "strip": true})");
  ChatTemplate t = ChatTemplate::resolve(p);
  std::vector<ChatMessage> m = {{"user", " hi "}, {"assistant", "yo"}};
  REQUIRE(t.render(m, 2, "</s>") == "U: hi\nA: yo</s>\n");
  REQUIRE(t.qa_template() == "U: {prompt}\nA: {answer}{eos}");
  REQUIRE_THROWS_WITH(ChatTemplate::resolve(write_tmp("t2.json", R"({"user": "U", "assistant_header": "A",
                                                                    "assistant_end": "E"})")),
                      Catch::Contains("field 'user' must contain {content} exactly once"));
  REQUIRE_THROWS_WITH(ChatTemplate::resolve(write_tmp("t3.json", R"({"user": "{content}", "color": 1})")),
                      Catch::Contains("unknown field 'color'"));
  REQUIRE_THROWS_WITH(ChatTemplate::resolve("nope"), Catch::Contains("not a chat template name"));
  Tokenizer tok = Tokenizer::from_json_file(kFix + "tokenizer.json");  // no <|eot_id|>
  ChatSkips skips;
  REQUIRE_THROWS_WITH(tokenize_conversations(tok, ChatTemplate::resolve("llama3"), fixture_convs(), 0,
                                             ChatTruncate::turns, "x", skips),
                      Catch::Contains("no <|start_header_id|> token"));
}

TEST_CASE("QA presets read their data set's documented example line") {
  struct Want { std::string question, answer; size_t golds; };
  const std::map<std::string, Want> want = {
      {"evolcode", {"Write a Python function that returns the square of x.", "def square(x):\n    return x * x", 1}},
      {"apps", {"Print the sum of two integers read from one line.",
                "a, b = map(int, input().split())\nprint(a + b)", 2}},
      {"gsm8k", {"Tom has 3 boxes of 12 eggs and breaks 5. How many eggs are left?",
                 "3 * 12 = <<3*12=36>>36 eggs.\n36 - 5 = <<36-5=31>>31.\n#### 31", 1}},
      {"math", {"What is $2^{10}$?", "$2^{10} = 1024$, so the answer is $\\boxed{1024}$.", 1}},
  };
  REQUIRE(qa_presets().size() == want.size());
  for (const auto& p : qa_presets()) {
    const std::string path = write_tmp(p.name + ".jsonl", p.example + "\n");
    auto r = read_qa_jsonl(path, {p.question_field}, {p.answer_field});
    INFO(p.name);
    REQUIRE(r.size() == 1);
    REQUIRE(r[0].question == want.at(p.name).question);
    REQUIRE(r[0].answer == want.at(p.name).answer);
    REQUIRE(r[0].answers.size() == want.at(p.name).golds);
  }
  REQUIRE_THROWS_WITH(qa_preset("squad"), Catch::Contains("unknown preset 'squad'"));
  // APPS rows without a solution are refused, not trained on "[]".
  const std::string p = write_tmp("apps_empty.jsonl", R"({"question": "q", "solutions": "[]"})"
                                                      "\n");
  REQUIRE_THROWS_WITH(read_qa_jsonl(p, {"question"}, {"solutions"}), Catch::Contains(":1: field 'solutions' holds an empty JSON list"));
}

struct RunResult { int code; std::string err; };
static RunResult run_prepare(const std::string& args) {
  const std::string err = tmp_dir() + "/stderr.txt";
  int rc = std::system(("./prepare_data " + args + " > /dev/null 2> " + err).c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_text_file(err)};
}

TEST_CASE("prepare_data --mode chat: shard equals the reference; refusals and skips reported") {
  const std::string out = tmp_dir() + "/chat.bin";
  auto r = run_prepare("--mode chat --input " + kFix + "chat.jsonl --tokenizer " + kFix + "tokenizer_sp.json --output " + out);
  REQUIRE(r.code == 0);
  Shard s(out);
  REQUIRE(s.num_examples() == 6);
  REQUIRE(s.prompt_template == resolve_template("tulu"));
  const json cases = json::parse(read_text_file(kFix + "expected_chat.json"))["cases"];
  for (const auto& c : cases) {
    if (c["tokenizer"] != "tokenizer_sp.json") continue;
    const int64_t i = c["line"].get<int64_t>() - 1;
    REQUIRE(s.example_tokens(i) == c["tokens"].get<std::vector<int32_t>>());
    REQUIRE(s.example_loss(i) == c["loss"].get<std::vector<uint8_t>>());
  }
  const std::string text = read_text_file(kFix + "chat.jsonl");
  const std::string bad = write_tmp("in_bad.jsonl", text + R"({"messages": [{"role": "user", "content": "hi"}]})" "\n");
  r = run_prepare("--mode chat --input " + bad + " --tokenizer " + kFix + "tokenizer.json --output " + out);
  REQUIRE(r.code == 1);
  REQUIRE(r.err.find("error: " + bad + ":7: no assistant turn") != std::string::npos);
  r = run_prepare("--quiet --skip-invalid --mode chat --input " + bad + " --tokenizer " + kFix + "tokenizer.json --output " + out);
  REQUIRE(r.code == 0);
  REQUIRE(r.err.find("1 skipped (1 no assistant turn)") != std::string::npos);
  REQUIRE(Shard(out).num_examples() == 6);
  r = run_prepare("--quiet --mode chat --max-tokens 40 --input " + kFix + "chat.jsonl --tokenizer " + kFix +
                  "tokenizer.json --output " + out);
  REQUIRE(r.code == 0);
  REQUIRE(r.err.find("truncated at a turn boundary") != std::string::npos);
  r = run_prepare("--mode chat --template plain --input " + kFix + "chat.jsonl --tokenizer " + kFix +
                  "tokenizer.json --output " + out);
  REQUIRE(r.code == 1);
  REQUIRE(r.err.find("--chat-template") != std::string::npos);
  // --heldout: the last examples move to OUT-heldout.bin/.jsonl, byte for byte.
  r = run_prepare("--mode chat --heldout 2 --input " + kFix + "chat.jsonl --tokenizer " + kFix + "tokenizer_sp.json --output " + out);
  REQUIRE(r.code == 0);
  {
    Shard train(out), held(tmp_dir() + "/chat-heldout.bin");
    REQUIRE(train.num_examples() == 4);
    REQUIRE(held.num_examples() == 2);
    REQUIRE(held.prompt_template == train.prompt_template);
    for (const auto& c : cases) {
      if (c["tokenizer"] != "tokenizer_sp.json" || c["line"].get<int64_t>() < 5) continue;
      REQUIRE(held.example_tokens(c["line"].get<int64_t>() - 5) == c["tokens"].get<std::vector<int32_t>>());
      REQUIRE(held.example_loss(c["line"].get<int64_t>() - 5) == c["loss"].get<std::vector<uint8_t>>());
    }
    const std::string hj = read_text_file(tmp_dir() + "/chat-heldout.jsonl");
    REQUIRE(std::count(hj.begin(), hj.end(), '\n') == 2);
    REQUIRE(hj.find("\"line\": 5,") != std::string::npos);
  }
  r = run_prepare("--mode chat --heldout 6 --input " + kFix + "chat.jsonl --tokenizer " + kFix + "tokenizer.json --output " + out);
  REQUIRE(r.code == 1);
  REQUIRE(r.err.find("--heldout 6 leaves no example to train on") != std::string::npos);
  r = run_prepare("--mode qa --preset gsm8k --input " + write_tmp("g.jsonl", qa_preset("gsm8k").example + "\n") +
                  " --tokenizer " + kFix + "tokenizer.json --output " + out);
  REQUIRE(r.code == 0);
  REQUIRE(Shard(out).num_examples() == 1);
}
