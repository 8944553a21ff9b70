// Tests that need the tokenizer: templated tokenization against HF `tokenizers` fixtures
// (dev/reference/gen_dataloader.py), and the ./prepare_data program end to end (run from the
// repository root, as `make test` does).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"
#include "common/file_io.h"
#include "dataloader/dataloader.h"
#include "dataloader/shard.h"
#include "dataloader/sources.h"
#include "dataloader/tokenize_example.h"
#include "tokenizer/tokenizer.h"
#include "test/scratch_dir.h"

using json = nlohmann::json;

static const std::string kFix = "test/fixtures/dataloader/";

static const Tokenizer& tok() {
  static Tokenizer t = Tokenizer::from_json_file(kFix + "tokenizer.json");
  return t;
}
static const json& expected() {
  static json j = json::parse(read_text_file(kFix + "expected.json"));
  return j;
}
static std::string tmp_dir() { return scratch_dir("dataloader_prepare"); }

struct RunResult { int code; std::string err; };
static RunResult run_prepare(const std::string& args) {
  const std::string err = tmp_dir() + "/stderr.txt";
  int rc = std::system(("./prepare_data " + args + " > /dev/null 2> " + err).c_str());
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, read_text_file(err)};
}

static std::vector<json> read_jsonl(const std::string& p) {
  std::vector<json> out;
  std::string text = read_text_file(p);
  size_t b = 0;
  while (b < text.size()) {
    size_t e = text.find('\n', b);
    out.push_back(json::parse(text.substr(b, e - b)));
    b = e + 1;
  }
  return out;
}

TEST_CASE("templated tokenization matches HF tokenizers, prompt is a token prefix, loss on answer and EOS") {
  REQUIRE(tok().bos_id() == expected()["bos"].get<int>());
  REQUIRE(tok().eos_id() == expected()["eos"].get<int>());
  for (auto& [name, text] : expected()["templates"].items()) REQUIRE(resolve_template(name) == text.get<std::string>());
  for (auto& c : expected()["cases"]) {
    const std::string name = c["template"], q = c["question"], a = c["answer"];
    INFO(name << ": " << q);
    PromptTemplate t = PromptTemplate::parse(resolve_template(name), name);
    REQUIRE(t.prompt(q) == c["prompt"].get<std::string>());
    REQUIRE(t.answer(a) == c["answer_text"].get<std::string>());
    TokenizedExample ex = tokenize_example(tok(), t, q, a);
    REQUIRE(ex.tokens == c["tokens"].get<std::vector<int32_t>>());
    REQUIRE(ex.loss == c["loss"].get<std::vector<uint8_t>>());
    auto prompt = tokenize_prompt(tok(), t, q);
    REQUIRE(prompt.size() < ex.tokens.size());
    REQUIRE(std::equal(prompt.begin(), prompt.end(), ex.tokens.begin()));
    for (size_t i = 0; i < ex.loss.size(); ++i) REQUIRE(ex.loss[i] == (i >= prompt.size()));
    REQUIRE(ex.tokens.back() == tok().eos_id());
    auto batch = tokenize_examples(tok(), t, {q, q}, {a, a});
    REQUIRE(batch[1].tokens == ex.tokens);
  }
}

TEST_CASE("SentencePiece-style tokenizer: the answer is encoded without the moved space") {
  Tokenizer sp = Tokenizer::from_json_file(kFix + "tokenizer_sp.json");
  const json& e = expected()["sp"];
  REQUIRE(sp.bos_id() == e["bos"].get<int>());
  REQUIRE(sp.eos_id() == e["eos"].get<int>());
  for (auto& c : e["cases"]) {
    const std::string name = c["template"], q = c["question"], a = c["answer"];
    INFO(name << ": " << q);
    PromptTemplate t = PromptTemplate::parse(resolve_template(name), name);
    TokenizedExample ex = tokenize_example(sp, t, q, a);
    REQUIRE(ex.tokens == c["tokens"].get<std::vector<int32_t>>());
    REQUIRE(ex.loss == c["loss"].get<std::vector<uint8_t>>());
    auto prompt = tokenize_prompt(sp, t, q);
    REQUIRE(std::equal(prompt.begin(), prompt.end(), ex.tokens.begin()));
    REQUIRE(tokenize_examples(sp, t, {q}, {a})[0].tokens == ex.tokens);
  }
}

TEST_CASE("prepare_data qa: shard and JSONL match the HF reference") {
  const std::string out = tmp_dir() + "/qa.bin";
  auto r = run_prepare("--mode qa --input " + kFix + "qa.jsonl --tokenizer " + kFix + "tokenizer.json --output " + out);
  INFO(r.err);
  REQUIRE(r.code == 0);
  Shard s(out);
  auto want = expected()["qa_plain"];
  REQUIRE(s.num_examples() == int64_t(want.size()));
  REQUIRE(s.tokenizer_hash() == tok().hash());
  REQUIRE(s.prompt_template == resolve_template("plain"));
  REQUIRE(s.header.vocab_size == uint32_t(tok().vocab_size()));
  PromptTemplate t = PromptTemplate::parse(s.prompt_template);
  auto lines = read_jsonl(tmp_dir() + "/qa.jsonl");
  REQUIRE(lines.size() == want.size());
  for (int64_t i = 0; i < s.num_examples(); ++i) {
    REQUIRE(s.example_tokens(i) == want[size_t(i)].get<std::vector<int32_t>>());
    // the evaluator's path: prompt from the stored template and the JSONL question
    auto prompt = tokenize_prompt(tok(), t, lines[size_t(i)]["question"]);
    auto loss = s.example_loss(i);
    for (size_t j = 0; j < loss.size(); ++j) REQUIRE(loss[j] == (j >= prompt.size()));
    REQUIRE(lines[size_t(i)]["prompt"] == t.prompt(lines[size_t(i)]["question"]));
    REQUIRE(lines[size_t(i)]["index"] == i);
  }
  // PopQA-style answer lists keep every gold answer; the first is trained on
  REQUIRE(lines[0]["answers"].size() == 2);
  REQUIRE(lines[0]["answer"] == lines[0]["answers"][0]);
  REQUIRE(lines[1]["answers"].size() == 1);

  // the dataloader accepts it for this tokenizer and refuses it for another
  DataLoaderConfig c;
  c.primary_shards = {out};
  c.T = 64;
  c.batch_size = 8;
  c.log = false;
  c.expected_tokenizer_hash = tok().hash_hex();
  DataLoader dl(c);
  REQUIRE(dl.prompt_template() == resolve_template("plain"));
  c.expected_tokenizer_hash = "0123456789abcdef";
  REQUIRE_THROWS_WITH(DataLoader(c), Catch::Contains(out) && Catch::Contains("tokenizer hash"));

  // tulu template with a template file
  const std::string tf = tmp_dir() + "/tulu.txt";
  write_file_atomic(tf, resolve_template("tulu") + "\n");
  r = run_prepare("--mode qa --input " + kFix + "qa.jsonl --tokenizer " + kFix + " --template " + tf +
                  " --limit 5 --output " + tmp_dir() + "/tulu.bin --jsonl " + tmp_dir() + "/tulu_questions.jsonl");
  INFO(r.err);
  REQUIRE(r.code == 0);
  Shard tulu(tmp_dir() + "/tulu.bin");
  REQUIRE(tulu.num_examples() == 5);
  REQUIRE(tulu.prompt_template == resolve_template("tulu"));
  REQUIRE(read_jsonl(tmp_dir() + "/tulu_questions.jsonl").size() == 5);
}

TEST_CASE("prepare_data JSONL copy escapes every character correctly") {
  const std::string in = tmp_dir() + "/escape_in.jsonl";
  json q1 = {{"question", "He said \"hi\" \\ back\nslash\ttab\u0001\u001f caf\u00e9 \U0001F600?"}, {"answer", "a\"b"}};
  json q2 = {{"question", "plain"}, {"answer", {"x\ny", "z"}}};
  write_file_atomic(in, q1.dump() + "\n" + q2.dump() + "\n");
  auto r = run_prepare("--mode qa --input " + in + " --tokenizer " + kFix + "tokenizer.json --output " + tmp_dir() +
                       "/escape.bin");
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto lines = read_jsonl(tmp_dir() + "/escape.jsonl");
  REQUIRE(lines.size() == 2);
  REQUIRE(lines[0]["question"] == q1["question"]);
  REQUIRE(lines[0]["answer"] == "a\"b");
  REQUIRE(lines[0]["prompt"] == q1["question"].get<std::string>() + "\nThe answer is:");
  REQUIRE(lines[1]["answers"] == json({"x\ny", "z"}));
  // invalid UTF-8 in a plain-text document still gives valid JSON (U+FFFD replacement)
  std::string doc;
  for (int i = 0; i < 120; ++i) doc += i == 3 ? std::string("bad\xff\xfe ") : "word ";
  write_file_atomic(tmp_dir() + "/bad_utf8.txt", doc);
  r = run_prepare("--mode text --input " + tmp_dir() + "/bad_utf8.txt --tokenizer " + kFix +
                  "tokenizer.json --output " + tmp_dir() + "/bad_utf8.bin");
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto l2 = read_jsonl(tmp_dir() + "/bad_utf8.jsonl");
  REQUIRE(l2.size() == 1);
  REQUIRE_THAT(l2[0]["question"].get<std::string>(), Catch::Contains("bad\xef\xbf\xbd"));
}

TEST_CASE("prepare_data kvr and random-words") {
  const std::string kvr = tmp_dir() + "/kvr.bin";
  auto r = run_prepare("--mode kvr --num 300 --seed 5 --tokenizer " + kFix + "tokenizer.json --output " + kvr);
  INFO(r.err);
  REQUIRE(r.code == 0);
  Shard s(kvr);
  REQUIRE(s.num_examples() == 300);
  auto lines = read_jsonl(tmp_dir() + "/kvr.jsonl");
  auto pairs = generate_kvr(300, 5);
  PromptTemplate t = PromptTemplate::parse(resolve_template("kvr"));
  for (size_t i = 0; i < pairs.size(); ++i) {
    REQUIRE(lines[i]["question"] == pairs[i].key);
    REQUIRE(lines[i]["answer"] == pairs[i].value);
    REQUIRE(s.example_tokens(int64_t(i)) == tokenize_example(tok(), t, pairs[i].key, pairs[i].value).tokens);
  }
  REQUIRE(tok().decode(s.example_tokens(0), true) == "The value of key " + pairs[0].key + " is? " + pairs[0].value);

  const std::string words = tmp_dir() + "/words.txt";
  write_file_atomic(words, "alpha\nBeta\nthe\ncity\nriver\nit's\n");
  const std::string rw = tmp_dir() + "/rw.bin";
  r = run_prepare("--mode random-words --num 20 --length 12 --word-list " + words + " --tokenizer " + kFix +
                  "tokenizer.json --output " + rw);
  INFO(r.err);
  REQUIRE(r.code == 0);
  Shard w(rw);
  REQUIRE(w.num_examples() == 20);
  auto wl = read_jsonl(tmp_dir() + "/rw.jsonl");
  std::set<std::string> seen;
  for (auto& l : wl) {
    auto ws = split_words(l["answer"]);
    REQUIRE(ws.size() == 12);
    for (auto& x : ws) seen.insert(x);
  }
  REQUIRE(seen == std::set<std::string>{"alpha", "the", "city", "river"});
  REQUIRE(w.prompt_template == resolve_template("memorize"));
  // loss covers the passage: the prompt is the same instruction for every example
  auto loss0 = w.example_loss(0), loss1 = w.example_loss(1);
  size_t p0 = std::find(loss0.begin(), loss0.end(), 1) - loss0.begin();
  size_t p1 = std::find(loss1.begin(), loss1.end(), 1) - loss1.begin();
  REQUIRE(p0 == p1);
  REQUIRE(p0 > 3);
  if (file_exists("/usr/share/dict/words")) {
    r = run_prepare("--mode random-words --num 5 --tokenizer " + kFix + "tokenizer.json --output " + tmp_dir() +
                    "/rw2.bin");
    REQUIRE(r.code == 0);
    REQUIRE(split_words(read_jsonl(tmp_dir() + "/rw2.jsonl")[0]["answer"]).size() == 50);
  }
}

TEST_CASE("prepare_data refuses a set beyond host memory before building anything, with the plan and the shortfall") {
  const std::string out = tmp_dir() + "/big.bin", T = " --tokenizer " + kFix + "tokenizer.json --output " + out;
  // fits: 300 pairs need well under a MiB
  auto r = run_prepare("--mode kvr --num 300 --host-memory 0.01" + T);
  INFO(r.err);
  REQUIRE(r.code == 0);
  REQUIRE(Shard(out).num_examples() == 300);
  remove_tree(out);
  remove_tree(tmp_dir() + "/big.jsonl");
  // 100,000 pairs do not fit in 10 MiB: refused, nothing written
  r = run_prepare("--mode kvr --num 100000 --host-memory 0.01" + T);
  REQUIRE(r.code == 1);
  for (const char* part : {"error: prepare_data --mode kvr: about 100000 examples of ", " MiB of host memory (records ",
                           "tokenized examples ", "shard ", "JSONL copy ", "but only 10.24 MiB are available (--host-memory): short by "})
    REQUIRE(r.err.find(part) != std::string::npos);
  REQUIRE_FALSE(file_exists(out));
  // against MemAvailable: a trillion pairs fit no machine
  r = run_prepare("--mode kvr --num 1000000000000" + T);
  REQUIRE(r.code == 1);
  REQUIRE(r.err.find("GiB are available (MemAvailable in /proc/meminfo): short by ") != std::string::npos);
  REQUIRE_FALSE(file_exists(out));
  // an input set: sized from its lines, bytes and a sample of its tokens
  r = run_prepare("--mode qa --input " + kFix + "qa.jsonl --host-memory 0.00001" + T);
  REQUIRE(r.code == 1);
  REQUIRE(r.err.find("error: prepare_data --mode qa: about 40 examples of ") != std::string::npos);
  REQUIRE(r.err.find("(--host-memory): short by ") != std::string::npos);
  REQUIRE_FALSE(file_exists(out));
}

TEST_CASE("progress with an ETA on stderr for large sets (prepare_data, tokenize --whole), none under --quiet") {
  // ENGINE_PROGRESS=1 prints from the first update, so the lines depend on the counts only.
  const std::string out = tmp_dir() + "/progress.bin", T = " --tokenizer " + kFix + "tokenizer.json --output " + out;
  const std::string err = tmp_dir() + "/progress_err.txt";
  auto run = [&](const std::string& cmd) {
    int rc = std::system(("ENGINE_PROGRESS=1 " + cmd + " > /dev/null 2> " + err).c_str());
    REQUIRE(WIFEXITED(rc));
    REQUIRE(WEXITSTATUS(rc) == 0);
    return read_text_file(err);
  };
  std::string log = run("./prepare_data --mode kvr --num 3000" + T);
  INFO(log);
  for (const char* line : {"generating key-value pairs: 3000/3000 pairs (100.0%)", "tokenizing examples: 3000/3000 examples (100.0%)",
                           "building the shard: 3000/3000 examples (100.0%)", "building the shard: 3/3000 examples (0.1%)"})
    REQUIRE(log.find(line) != std::string::npos);
  REQUIRE(log.find(", ETA ") != std::string::npos);
  REQUIRE(run("./prepare_data --quiet --mode kvr --num 3000" + T).empty());
  // an input file: its lines read, then tokenized
  log = run("./prepare_data --mode qa --input " + kFix + "qa.jsonl" + T);
  REQUIRE(log.find("reading " + kFix + "qa.jsonl: 40/40 lines (100.0%)") != std::string::npos);
  // tokenize encode --whole: bytes of the text
  std::string text;
  for (int i = 0; i < 200; ++i) text += "The value of key " + std::to_string(i) + " is " + std::to_string(i * 7) + ".\n";
  write_file_atomic(tmp_dir() + "/whole.txt", text);
  const std::string tcmd = "./tokenize encode --whole --tokenizer " + kFix + "tokenizer.json --input " + tmp_dir() + "/whole.txt";
  log = run(tcmd);
  const std::string n = std::to_string(text.size());
  REQUIRE(log.find("tokenize: encoding: " + n + "/" + n + " bytes (100.0%)") != std::string::npos);
  REQUIRE(log.find("tokenize: encoding: ") < log.find("tokenize: encoding: " + n + "/"));
  REQUIRE(run(tcmd + " --quiet").empty());
}

TEST_CASE("prepare_data text: REMIX passages and LM chunks") {
  std::string docs;
  std::vector<int> lengths = {120, 30, 100, 99, 250};
  for (size_t d = 0; d < lengths.size(); ++d) {
    for (int i = 0; i < lengths[d]; ++i) {
      docs += 'w';
      docs += std::to_string(d);
      docs += '_';
      docs += std::to_string(i);
      docs += i % 9 == 8 ? '\n' : ' ';
    }
    docs += "\n%\n";
  }
  const std::string in = tmp_dir() + "/docs.txt";
  write_file_atomic(in, docs);
  auto r = run_prepare("--mode text --input " + in + " --doc-separator % --tokenizer " + kFix +
                       "tokenizer.json --output " + tmp_dir() + "/remix.bin");
  INFO(r.err);
  REQUIRE(r.code == 0);
  REQUIRE_THAT(r.err, Catch::Contains("2 documents under 100 words skipped"));
  auto lines = read_jsonl(tmp_dir() + "/remix.jsonl");
  REQUIRE(lines.size() == 3);
  REQUIRE(split_words(lines[0]["question"]).size() == 50);
  REQUIRE(split_words(lines[0]["answer"]).size() == 50);
  REQUIRE(split_words(lines[0]["question"])[49] == "w0_49");
  REQUIRE(split_words(lines[0]["answer"])[0] == "w0_50");
  REQUIRE(split_words(lines[1]["question"])[0] == "w2_0");
  REQUIRE(lines[0]["prompt"].get<std::string>().rfind("Complete the following partial passage:\n\nw0_0 w0_1", 0) == 0);

  r = run_prepare("--mode text --text-mode lm --seq-len 16 --input " + in + " --doc-separator % --tokenizer " + kFix +
                  "tokenizer.json --output " + tmp_dir() + "/lm.bin");
  INFO(r.err);
  REQUIRE(r.code == 0);
  Shard lm(tmp_dir() + "/lm.bin");
  REQUIRE(lm.prompt_template.empty());
  std::vector<int32_t> all;
  for (int64_t i = 0; i < lm.num_examples(); ++i) {
    REQUIRE(lm.example_length(i) <= 16);
    auto t = lm.example_tokens(i);
    all.insert(all.end(), t.begin(), t.end());
    for (auto l : lm.example_loss(i)) REQUIRE(l == 1);
  }
  std::vector<int32_t> want;
  for (auto& d : read_documents(in, "text", "%", false)) {
    auto ids = tok().encode(d, true);
    want.insert(want.end(), ids.begin(), ids.end());
    want.push_back(tok().eos_id());
  }
  if (want.size() % 16 == 1) want.pop_back();  // a lone final token is not an example
  REQUIRE(all == want);
}

TEST_CASE("prepare_data bad input: clear error, exit 1") {
  const std::string t = " --tokenizer " + kFix + "tokenizer.json --output " + tmp_dir() + "/bad.bin";
  const std::string bad = tmp_dir() + "/malformed.jsonl";
  write_file_atomic(bad, "{\"question\": \"q\", \"answer\": \"a\"}\n\n{\"question\": \"q\" \"answer\": \"a\"}\n");
  auto r = run_prepare("--mode qa --input " + bad + t);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::StartsWith("error: ") && Catch::Contains(bad + ":3: invalid JSON"));
  REQUIRE_FALSE(file_exists(tmp_dir() + "/bad.bin"));

  r = run_prepare("--mode qa --input " + tmp_dir() + "/missing.jsonl" + t);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("missing.jsonl"));

  r = run_prepare("--mode qa --input " + kFix + "qa.jsonl --tokenizer " + tmp_dir() + "/no_tok.json --output x.bin");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("no_tok.json"));

  r = run_prepare("--mode bogus" + t);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("unknown mode 'bogus'"));
  r = run_prepare("--mode kvr --num 0" + t);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("--num"));
  r = run_prepare("--mode kvr --num 5 --template nothere.txt" + t);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("nothere.txt"));
  r = run_prepare("--mode kvr --num 5 --frobnicate 1" + t);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("unknown option --frobnicate"));
  const std::string in = tmp_dir() + "/data.jsonl";
  write_file_atomic(in, read_text_file(kFix + "qa.jsonl"));
  r = run_prepare("--mode qa --input " + in + " --tokenizer " + kFix + "tokenizer.json --output " + tmp_dir() +
                  "/data.bin");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains("would overwrite the input"));
  REQUIRE(read_text_file(in) == read_text_file(kFix + "qa.jsonl"));
  // --inspect validates shards: a good one passes, a truncated or flipped one exits 1 naming it
  const std::string good = tmp_dir() + "/inspect.bin";
  REQUIRE(run_prepare("--mode kvr --num 20 --tokenizer " + kFix + "tokenizer.json --output " + good).code == 0);
  r = run_prepare("--inspect " + good + " --tokenizer " + kFix + "tokenizer.json --show 2");
  REQUIRE(r.code == 0);
  std::string bytes = read_text_file(good);
  const std::string cut = tmp_dir() + "/cut.bin", flip = tmp_dir() + "/flip.bin";
  write_file_atomic(cut, bytes.substr(0, bytes.size() - 5));
  bytes[bytes.size() / 2] ^= 4;
  write_file_atomic(flip, bytes);
  r = run_prepare("--inspect " + cut);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::StartsWith("error: " + cut) && Catch::Contains("truncated"));
  r = run_prepare("--inspect " + flip);
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::StartsWith("error: " + flip) && Catch::Contains("checksum"));
  r = run_prepare("--inspect " + good + " --tokenizer " + kFix + "tokenizer_sp.json");
  REQUIRE(r.code == 1);
  REQUIRE_THAT(r.err, Catch::Contains(good) && Catch::Contains("tokenizer hash"));
  r = run_prepare("--help");
  REQUIRE(r.code == 0);
}
