// Tests of prompt templates and raw data sources (JSONL QA, KVR, random words, documents); no
// tokenizer involved.
#include <catch2/catch.hpp>


#include <regex>
#include <set>

#include "common/error.h"
#include "common/file_io.h"
#include "dataloader/prompt_template.h"
#include "dataloader/sources.h"
#include "test/scratch_dir.h"

static std::string tmp_file(const std::string& name, const std::string& content) {
  std::string p = scratch_dir("dataloader_sources") + "/" + name;
  write_file_atomic(p, content);
  return p;
}

TEST_CASE("named templates split into prompt and answer parts, the space going to the answer") {
  auto plain = PromptTemplate::parse(resolve_template("plain"));
  REQUIRE(plain.prompt("Capital of France? ") == "Capital of France?\nThe answer is:");
  REQUIRE(plain.answer(" Paris") == " Paris");
  REQUIRE(plain.eos);
  auto kvr = PromptTemplate::parse(resolve_template("kvr"));
  REQUIRE(kvr.prompt("abcd1234") == "The value of key abcd1234 is?");
  REQUIRE(kvr.answer("zz9") == " zz9");
  auto tulu = PromptTemplate::parse(resolve_template("tulu"));
  REQUIRE(tulu.prompt("Who?") == "<|user|>\nWho?\n<|assistant|>\n");
  REQUIRE(tulu.answer("Me") == "Me");
  REQUIRE(tulu.eos);
  auto mem = PromptTemplate::parse(resolve_template("memorize"));
  REQUIRE_FALSE(mem.has_question);
  REQUIRE(mem.prompt("ignored") == "Memorize the following passage:\n\n");
  REQUIRE(mem.answer("a b c") == "a b c");
  auto pas = PromptTemplate::parse(resolve_template("passage"));
  REQUIRE(pas.prompt("w0 w1") == "Complete the following partial passage:\n\nw0 w1");
  REQUIRE(pas.answer("w2 w3") == " w2 w3");
  REQUIRE(render_prompt("Q: {question}  {answer}", "x") == "Q: x");
  // The rendered prompt followed by the rendered answer is the template filled in.
  REQUIRE(plain.prompt("q") + plain.answer("a") == "q\nThe answer is: a");
  // placeholders inside the question are not expanded
  REQUIRE(plain.prompt("{answer}?") == "{answer}?\nThe answer is:");
}

TEST_CASE("template files and template errors") {
  auto f = tmp_file("t.txt", "### {key}\n=> {value}\n");
  REQUIRE(resolve_template(f) == "### {key}\n=> {value}");
  auto t = PromptTemplate::parse(resolve_template(f), f);
  REQUIRE(t.prompt("k") == "### k\n=>");
  REQUIRE(t.answer("v") == " v");
  REQUIRE_FALSE(t.eos);
  REQUIRE_THROWS_WITH(resolve_template("no_such_template"), Catch::Contains("no_such_template"));
  REQUIRE_THROWS_WITH(PromptTemplate::parse("{question}", "x.txt"), Catch::Contains("x.txt") && Catch::Contains("{answer}"));
  REQUIRE_THROWS_WITH(PromptTemplate::parse("{answer} {answer}"), Catch::Contains("exactly once"));
  REQUIRE_THROWS_WITH(PromptTemplate::parse("{question} {answer}."), Catch::Contains("only {eos}"));
  REQUIRE_THROWS_WITH(PromptTemplate::parse("{answer}{question}"), Catch::Contains("only {eos}"));
  REQUIRE_THROWS_WITH(PromptTemplate::parse("{q} {question} {key} {answer}"), Catch::Contains("at most once"));
}

TEST_CASE("QA JSONL: default fields, answer lists, PopQA strings, TriviaQA objects") {
  auto p = tmp_file("qa.jsonl",
                    "{\"question\": \" Who wrote Hamlet? \", \"answer\": \"Shakespeare\"}\n"
                    "\n"
                    "{\"input_text\": \"q2\", \"target_text\": \"a2\"}\n"
                    "{\"question\": \"q3\", \"possible_answers\": \"[\\\"x\\\", \\\"y\\\"]\"}\n"
                    "{\"question\": \"q4\", \"answer\": [\"first\", \"second\"]}\n"
                    "{\"question\": \"q5\", \"answer\": {\"value\": \"v\", \"aliases\": [\"v\", \"w\"]}}\r\n"
                    "{\"question\": \"q6\", \"answer\": \"[not json\"}\n");
  auto r = read_qa_jsonl(p, default_question_fields(), default_answer_fields());
  REQUIRE(r.size() == 6);
  REQUIRE(r[0].question == "Who wrote Hamlet?");
  REQUIRE(r[0].answer == "Shakespeare");
  REQUIRE(r[0].line == 1);
  REQUIRE(r[1].question == "q2");
  REQUIRE(r[1].answer == "a2");
  REQUIRE(r[1].line == 3);
  REQUIRE(r[2].answers == std::vector<std::string>{"x", "y"});
  REQUIRE(r[2].answer == "x");
  REQUIRE(r[3].answers == std::vector<std::string>{"first", "second"});
  REQUIRE(r[4].answers == std::vector<std::string>{"v", "w"});
  REQUIRE(r[5].answer == "[not json");
  REQUIRE(read_qa_jsonl(p, default_question_fields(), default_answer_fields(), 2).size() == 2);
  auto custom = tmp_file("c.jsonl", "{\"subj\": \"s\", \"obj\": \"o\"}\n");
  REQUIRE(read_qa_jsonl(custom, {"subj"}, {"obj"})[0].answer == "o");
}

TEST_CASE("malformed QA JSONL names the file and the line") {
  auto bad = tmp_file("bad.jsonl", "{\"question\": \"q\", \"answer\": \"a\"}\n{\"question\": \"q\", \"answer\": \n");
  REQUIRE_THROWS_WITH(read_qa_jsonl(bad, default_question_fields(), default_answer_fields()),
                      Catch::Contains(bad + ":2: invalid JSON"));
  auto missing = tmp_file("missing.jsonl", "{\"question\": \"q\", \"answer\": \"a\"}\n\n{\"question\": \"q\"}\n");
  REQUIRE_THROWS_WITH(read_qa_jsonl(missing, default_question_fields(), default_answer_fields()),
                      Catch::Contains(missing + ":3: no answer field"));
  auto arr = tmp_file("arr.jsonl", "[1, 2]\n");
  REQUIRE_THROWS_WITH(read_qa_jsonl(arr, default_question_fields(), default_answer_fields()),
                      Catch::Contains(arr + ":1: expected a JSON object"));
  auto empty_q = tmp_file("eq.jsonl", "{\"question\": \"  \", \"answer\": \"a\"}\n");
  REQUIRE_THROWS_WITH(read_qa_jsonl(empty_q, default_question_fields(), default_answer_fields()),
                      Catch::Contains(empty_q + ":1: field 'question' is empty"));
  auto empty = tmp_file("empty.jsonl", "\n\n");
  REQUIRE_THROWS_WITH(read_qa_jsonl(empty, default_question_fields(), default_answer_fields()),
                      Catch::Contains(empty + ": no records"));
}

TEST_CASE("KVR pairs: unique 8-character lowercase alphanumeric keys and values, seeded") {
  auto a = generate_kvr(2000, 1), b = generate_kvr(2000, 1), c = generate_kvr(2000, 2);
  std::set<std::string> all;
  std::regex re("^[a-z0-9]{8}$");
  for (auto& kv : a) {
    REQUIRE(std::regex_match(kv.key, re));
    REQUIRE(std::regex_match(kv.value, re));
    all.insert(kv.key);
    all.insert(kv.value);
  }
  REQUIRE(all.size() == 4000);
  for (size_t i = 0; i < a.size(); ++i) REQUIRE((a[i].key == b[i].key && a[i].value == b[i].value));
  REQUIRE(a[0].key != c[0].key);
  // both letters and digits actually occur
  std::string joined;
  for (auto& kv : a) joined += kv.key;
  REQUIRE(joined.find_first_of("0123456789") != std::string::npos);
  REQUIRE(joined.find_first_of("xyz") != std::string::npos);
}

TEST_CASE("word list filtering and random word passages") {
  auto f = tmp_file("words", "apple\nApple\nbanana's\ncaf\xc3\xa9\n\ncherry\napple\nx1\n");
  auto w = load_word_list(f);
  REQUIRE(w == std::vector<std::string>{"apple", "cherry"});
  REQUIRE_THROWS_WITH(load_word_list(tmp_file("none", "A\nB\n")), Catch::Contains("no lowercase"));
  std::vector<std::string> words = {"a", "b", "c", "d"};
  auto s = generate_random_words(words, 200, 25, 7);
  REQUIRE(s.size() == 200);
  std::map<std::string, int> counts;
  for (auto& p : s) {
    auto ws = split_words(p);
    REQUIRE(ws.size() == 25);
    for (auto& x : ws) counts[x]++;
  }
  REQUIRE(counts.size() == 4);
  for (auto& [x, n] : counts) REQUIRE((n > 1000 && n < 1500));  // 5000 draws, uniform: 1250 each
  REQUIRE(generate_random_words(words, 3, 5, 7) == generate_random_words(words, 3, 5, 7));
  REQUIRE(generate_random_words(words, 3, 5, 7) != generate_random_words(words, 3, 5, 8));
  if (file_exists("/usr/share/dict/words")) {
    auto dict = load_word_list("/usr/share/dict/words");
    REQUIRE(dict.size() > 10000);
  }
}

TEST_CASE("documents from text and JSONL files") {
  auto t = tmp_file("doc.txt", "one two\nthree\n%\nfour\n%\n\n%\n");
  REQUIRE(read_documents(t, "text", "", false) == std::vector<std::string>{"one two\nthree\n%\nfour\n%\n\n%\n"});
  REQUIRE(read_documents(t, "text", "%", false) == std::vector<std::string>{"one two\nthree\n", "four\n"});
  auto b = tmp_file("blank.txt", "p1 a\np1 b\n\n\np2\n");
  REQUIRE(read_documents(b, "text", "", true) == std::vector<std::string>{"p1 a\np1 b\n", "p2\n"});
  auto j = tmp_file("d.jsonl", "{\"text\": \"hello world\"}\n{\"text\": \"\"}\n{\"body\": \"x\"}\n");
  REQUIRE_THROWS_WITH(read_documents(j, "text", "", false), Catch::Contains(j + ":3: no field 'text'"));
  auto j2 = tmp_file("d2.jsonl", "{\"text\": \"hello world\"}\n{\"text\": \"\"}\n");
  REQUIRE(read_documents(j2, "text", "", false) == std::vector<std::string>{"hello world"});
  REQUIRE(split_words("  a\tb\n\nc  ") == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(join_words({"a", "b", "c", "d"}, 1, 3) == "b c");
}
