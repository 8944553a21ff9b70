// prepare_data: turns question/answer JSONL, generated key-value pairs, random word passages or
// generic text into a token shard (dataloader/shard.h) plus a JSONL copy of the examples, which
// eval_factoids reads as its question list.
//
//   ./prepare_data --mode qa --input popqa.jsonl --tokenizer model/ --output data/popqa.bin
//   ./prepare_data --mode kvr --num 2000 --tokenizer model/ --output data/kvr.bin
//   ./prepare_data --mode random-words --num 8000 --length 50 --tokenizer model/ --output data/rw.bin
//   ./prepare_data --mode text --text-mode remix --input wiki.jsonl --tokenizer model/ --output data/gen.bin
//   ./prepare_data --mode chat --input ultrachat.jsonl --tokenizer model/ --output data/chat.bin
//   ./prepare_data --mode qa --preset gsm8k --input gsm8k.jsonl --tokenizer model/ --output data/gsm8k.bin
#include <chrono>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/hash.h"
#include "dataloader/chat.h"
#include "common/progress.h"
#include "dataloader/prompt_template.h"
#include "dataloader/shard.h"
#include "dataloader/sources.h"
#include "dataloader/tokenize_example.h"
#include "tokenizer/tokenizer.h"

using json = nlohmann::json;

static const char* kUsage =
    "usage: prepare_data --mode MODE --tokenizer PATH --output OUT.bin [options]\n"
    "   or: prepare_data --inspect SHARD.bin... [--tokenizer PATH] [--show N]";

static const char* kDescription = R"(The first form writes OUT.bin (a token shard: examples, loss mask, tokenizer hash, prompt
template) and a JSONL copy of the examples (OUT.jsonl unless --jsonl is given; one line per
example with "index", "question", "prompt", "answer", "answers").
The second validates shards (every field and the checksum) and prints their header; with
--tokenizer and --show N, also decodes the first N examples, marking the trained-on part with [[...]].

Modes:
  qa            question/answer records from --input FILE.jsonl (loss on the answer and EOS);
                --preset names the fields of a known data set (see below)
  chat          multi-turn conversations from --input FILE.jsonl: {"messages": [{"role", "content"}]}
                (UltraChat, Tulu) or {"conversations": [{"from", "value"}]} (ShareGPT), rendered
                with --chat-template; loss on the assistant turns and their end-of-turn token
  kvr           --num N generated key-value pairs, unique 8-char [a-z0-9] keys and values
  random-words  --num N passages of --length L words drawn uniformly from --word-list
  text          generic documents from --input files (.jsonl: one object per line with
                --text-field; other files: plain text), in one of two --text-mode:
                  remix  prompt = words [0, P), target = words [P, P+W) (P = --prompt-words,
                         W = --target-words, default 50 and 50); shorter documents are skipped
                  lm     documents tokenized (BOS from the tokenizer, EOS appended), concatenated
                         and cut into chunks of --seq-len tokens with loss everywhere)";

// Appends s as a JSON string literal. Hand-written because building nlohmann objects for every
// line dominated the output time; invalid UTF-8 (possible in plain-text inputs) goes through
// nlohmann with U+FFFD replacement instead.
static bool valid_utf8(const std::string& s) {
  size_t i = 0, n = s.size();
  while (i < n) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || i + size_t(len) > n) return false;
    for (int k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + size_t(k)]) >> 6) != 2) return false;
    i += size_t(len);
  }
  return true;
}
static void append_json_string(std::string& out, const std::string& s) {
  if (!valid_utf8(s)) {
    out += json(s).dump(-1, ' ', false, json::error_handler_t::replace);
    return;
  }
  out += '"';
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
}

static int64_t file_size_of(const std::string& p) {
  MappedFile m(p);
  return int64_t(m.size);
}

// What the largest phase holds at once (building the shard and its JSONL copy, while the records
// and the tokenized examples are alive), estimated before anything is read or generated.
struct DataSize {
  double examples = 0;      // records (generated, or JSONL lines / text lines of the inputs)
  double string_heap = 0;   // heap bytes of one record's question, answer and gold answer strings
  double text_bytes = 0;    // question + answer bytes of one record
  double tokens = 0;        // tokens of one example
};

// A std::string's heap block: none up to its 15 inline characters, else the text, a NUL and about
// 16 bytes of allocator overhead; the same overhead for each std::vector block.
static double heap_of(double chars) { return chars > 15 ? chars + 17 : 0; }

// Bytes by part, for check_host_memory. Records: three std::string (32 bytes each) and a
// one-element gold vector (24 + 48) each, plus their text; tokenized examples: two vectors (int32
// ids, one loss byte per token); the shard: ids, a loss bitmap and an offset per example, held
// twice at the end (the writer's int32 arrays, and the serialized file with 2-byte ids when the
// vocabulary allows, as ShardWriter::serialize writes them); the JSONL copy: the question,
// prompt, answer and gold answer of each example (or the decoded text of an lm chunk) and ~60
// bytes of keys.
static std::vector<std::pair<std::string, double>> memory_plan(const DataSize& d, double template_bytes, bool lm_chunks,
                                                               int32_t vocab_size) {
  const double n = d.examples, tokens = n * d.tokens;
  std::vector<std::pair<std::string, double>> plan;
  if (lm_chunks) {  // documents, their ids, the concatenated stream
    plan.push_back({"documents", n * (32 + d.string_heap)});
    plan.push_back({"token ids", 2 * tokens * 4 + n * 40});
  } else {
    plan.push_back({"records", n * (3 * 32 + 24 + 48 + d.string_heap)});
    plan.push_back({"tokenized examples", n * (48 + 2 * 16) + tokens * 5});
  }
  plan.push_back({"shard", tokens * (4 + (vocab_size <= 65536 ? 2 : 4) + 2 * 0.125) + 2 * n * 8});
  plan.push_back({"JSONL copy", lm_chunks ? n * d.text_bytes + n * 40 : n * (60 + template_bytes + 3 * d.text_bytes)});
  return plan;
}

// Sizes of the inputs: records counted as non-blank lines (a memchr pass over mapped files), text
// bytes from the file sizes, tokens per byte measured on the first 64 KiB of the first input.
static DataSize input_size(const std::vector<std::string>& inputs, const Tokenizer& tok, int64_t limit) {
  DataSize d;
  double bytes = 0;
  for (const std::string& in : inputs) {
    MappedFile m(in);
    const char* p = reinterpret_cast<const char*>(m.data);
    bytes += double(m.size);
    int64_t lines = 0;
    for (size_t at = 0; at < m.size;) {
      const void* nl = std::memchr(p + at, '\n', m.size - at);
      const size_t end = nl ? size_t(static_cast<const char*>(nl) - p) : m.size;
      lines += end > at;
      at = end + 1;
    }
    d.examples += double(std::max<int64_t>(lines, 1));
  }
  MappedFile first(inputs[0]);
  const size_t cut = std::min<size_t>(first.size, 64 << 10);
  const std::string sample(reinterpret_cast<const char*>(first.data), cut);
  const double tokens_per_byte = cut ? double(tok.encode(sample).size()) / double(cut) : 0;
  d.text_bytes = bytes / d.examples;
  d.tokens = d.text_bytes * tokens_per_byte + 2;  // + BOS/EOS
  d.string_heap = 2 * heap_of(d.text_bytes);      // each record's text, and a copy of its answer
  if (limit > 0) d.examples = std::min(d.examples, double(limit));
  return d;
}

// Sizes of a generated set, measured on its first (up to) 1000 records, generated and tokenized as
// the whole set will be.
static DataSize generated_size(const std::vector<std::string>& questions, const std::vector<std::string>& answers,
                               const Tokenizer& tok, const PromptTemplate& tmpl, int64_t num) {
  DataSize d;
  d.examples = double(num);
  const auto examples = tokenize_examples(tok, tmpl, questions, answers);
  for (size_t i = 0; i < questions.size(); ++i) {
    d.text_bytes += double(questions[i].size() + answers[i].size());
    d.string_heap += heap_of(double(questions[i].size())) + 2 * heap_of(double(answers[i].size()));
    d.tokens += double(examples[i].tokens.size());
  }
  for (double* v : {&d.text_bytes, &d.string_heap, &d.tokens}) *v /= double(questions.size());
  return d;
}

static int inspect_shards(const std::vector<std::string>& paths, std::string tok_path, int64_t show) {
  Tokenizer tok;
  if (!tok_path.empty()) {
    if (dir_exists(tok_path)) tok_path += "/tokenizer.json";
    tok = Tokenizer::from_json_file(tok_path);
  }
  for (auto& p : paths) {
    Shard s(p);
    int64_t loss_tokens = 0, max_len = 0;
    for (int64_t t = 0; t < s.num_tokens(); ++t) loss_tokens += s.loss(t);
    for (int64_t i = 0; i < s.num_examples(); ++i) max_len = std::max(max_len, s.example_length(i));
    json j = {{"path", p},
              {"version", s.header.version},
              {"examples", s.num_examples()},
              {"tokens", s.num_tokens()},
              {"loss_tokens", loss_tokens},
              {"max_example_tokens", max_len},
              {"mean_example_tokens", double(s.num_tokens()) / double(std::max<int64_t>(1, s.num_examples()))},
              {"token_bytes", s.header.token_bytes},
              {"vocab_size", s.header.vocab_size},
              {"tokenizer_hash", hash_hex(s.tokenizer_hash())},
              {"template", s.prompt_template}};
    std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    if (tok.impl) {
      check(tok.hash() == s.tokenizer_hash(), p, ": tokenizer hash ", hash_hex(s.tokenizer_hash()), " differs from ",
            tok_path, " (", tok.hash_hex(), ")");
      for (int64_t i = 0; i < std::min(show, s.num_examples()); ++i) {
        auto t = s.example_tokens(i);
        auto l = s.example_loss(i);
        std::string text;
        for (size_t k = 0; k < t.size();) {  // runs of equal loss bits
          size_t e = k;
          while (e < t.size() && l[e] == l[k]) ++e;
          std::string part = tok.decode(std::vector<int32_t>(t.begin() + long(k), t.begin() + long(e)));
          text += l[k] ? "[[" + part + "]]" : part;
          k = e;
        }
        std::printf("example %lld (%zu tokens): %s\n", (long long)i, t.size(), text.c_str());
      }
    }
  }
  return 0;
}

int run(int argc, char** argv) {
  std::string mode, tok_path, output, jsonl_path, template_arg, word_list = "/usr/share/dict/words";
  std::string text_mode = "remix", text_field = "text", doc_sep, qfield_arg, afield_arg;
  bool blank_docs = false, quiet = false, skip_invalid = false;
  std::string preset, chat_template = "tulu", truncate_arg = "turns", role_map_arg;
  int64_t max_tokens = 0, heldout = 0;
  double host_memory_gib = -1;
  std::vector<std::string> input_args, inspect;
  int64_t show = 0;
  int64_t limit = 0, num = 0, length = 50, prompt_words = 50, target_words = 50, seq_len = 256;
  uint64_t seed = 0;

  CLI::App app;
  cli::init(app, kUsage);
  cli::last_wins(app);
  app.description(kDescription);
  auto opt = [&](const char* name, auto& var, const char* metavar, const char* help) {
    return app.add_option(name, var, help)->option_text(metavar);
  };
  auto count = [](int64_t min) { return cli::integer(min, INT64_MAX); };
  opt("--mode", mode, "MODE", "qa | chat | kvr | random-words | text (required)");
  opt("--tokenizer", tok_path, "PATH", "tokenizer.json, or a model directory holding one (required)");
  opt("--output", output, "OUT.bin", "shard to write (required); written atomically");
  opt("--jsonl", jsonl_path, "PATH", "JSONL copy of the examples (default: OUT with .bin replaced by .jsonl)");
  opt("--template", template_arg, "T",
      "plain | kvr | tulu | memorize | passage | a template file. Default:\n"
      "plain (qa), kvr (kvr), memorize (random-words), passage (text remix).\n"
      "Placeholders: {question} ({prompt}, {key}), {answer} ({value}), {eos}");
  cli::repeatable(opt("--input", input_args, "FILE", "input file; repeat or comma-separate for several (qa, chat, text)"));
  opt("--question-field", qfield_arg, "F,..",
      "qa: question field names, first present wins\n(default question,input_text,prompt)");
  opt("--answer-field", afield_arg, "F,..", "qa: answer field names (default answer,target_text,possible_answers,answers)");
  std::vector<std::string> preset_names;
  for (const QaPreset& p : qa_presets()) preset_names.push_back(p.name);
  opt("--preset", preset, "P",
      "qa: field names of a data set (explicit --question-field/--answer-field win):\n"
      "  evolcode  instruction -> output\n"
      "  apps      question -> solutions (a JSON-string list; trains on the first)\n"
      "  gsm8k     question -> answer (evaluate with eval_factoids --match gsm8k)\n"
      "  math      problem -> solution")
      ->check(cli::one_of(preset_names));
  opt("--chat-template", chat_template, "T",
      "chat: tulu (default: <|user|>\\n...\\n<|assistant|>\\n...EOS, as open-instruct)\n"
      "| llama3 (<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>)\n"
      "| a JSON file {\"system\", \"user\", \"assistant_header\", \"assistant_end\", \"strip\"}");
  opt("--role-map", role_map_arg, "A=R,..",
      "chat: extra role names, R one of user, assistant, system (built in: user,\n"
      "human -> user; assistant, gpt, chatgpt, model -> assistant; system)");
  opt("--max-tokens", max_tokens, "N", "chat: longest example in tokens (0 = no limit, the default)")->check(count(0));
  opt("--truncate", truncate_arg, "M",
      "chat, over --max-tokens: turns (default: drop whole exchanges from the end)\n"
      "| skip (drop the conversation, counted) | error")
      ->check(cli::one_of({"turns", "skip", "error"}));
  app.add_flag("--skip-invalid", skip_invalid,
               "chat: count and skip invalid conversations (empty, no assistant turn,\n"
               "unknown role, malformed JSON) instead of stopping at the first");
  opt("--limit", limit, "N", "keep the first N records/documents (0 = all)")->check(count(0));
  opt("--heldout", heldout, "N",
      "the last N examples go to OUT-heldout.bin (+ OUT-heldout.jsonl) instead of\n"
      "OUT.bin: a split never trained on, for eval_factoids --heldout / --data")
      ->check(count(0));
  opt("--num", num, "N", "kvr, random-words: number of examples")->check(count(1));
  opt("--length", length, "L", "random-words: words per passage (default 50)")->check(count(1));
  opt("--word-list", word_list, "PATH", "random-words: default /usr/share/dict/words (lowercase a-z words only)");
  opt("--seed", seed, "S", "kvr, random-words: generator seed (default 0)")->check(count(0));
  opt("--text-mode", text_mode, "M", "text: remix (default) | lm");
  opt("--text-field", text_field, "F", "text, .jsonl inputs: field holding the document (default text)");
  opt("--doc-separator", doc_sep, "LINE", "text, plain files: documents are separated by lines equal to LINE");
  app.add_flag("--blank-line-docs", blank_docs, "text, plain files: documents are separated by blank lines");
  opt("--prompt-words", prompt_words, "P", "text remix: prompt words (default 50)")->check(count(1));
  opt("--target-words", target_words, "W", "text remix: target words (default 50)")->check(count(1));
  opt("--seq-len", seq_len, "T", "text lm: chunk length in tokens (default 256)")->check(count(2));
  cli::repeatable(opt("--inspect", inspect, "SHARD", "validate and describe a shard (repeatable); no output is written"));
  opt("--show", show, "N", "with --inspect and --tokenizer: decode the first N examples")->check(count(0));
  opt("--host-memory", host_memory_gib, "GiB",
      "host memory this run may use (default: MemAvailable of /proc/meminfo). A run whose\n"
      "estimated need is larger is refused before it reads or generates anything")
      ->check(cli::number(0, 1e9));
  app.add_flag("--quiet", quiet, "no summary line and no progress lines");
  if (int rc = cli::parse(app, argc, argv); rc >= 0) return rc;
  set_progress_enabled(!quiet);

  std::vector<std::string> inputs, qfields = default_question_fields(), afields = default_answer_fields();
  for (const std::string& a : input_args)
    for (std::string& s : cli::split_commas(a)) inputs.push_back(std::move(s));
  if (app.count("--question-field")) qfields = cli::split_commas(qfield_arg);
  if (app.count("--answer-field")) afields = cli::split_commas(afield_arg);
  const bool qfields_set = app.count("--question-field") > 0, afields_set = app.count("--answer-field") > 0;
  ChatFormat chat_format;
  for (const std::string& kv : cli::split_commas(role_map_arg)) {
    size_t e = kv.find('=');
    check(e != std::string::npos && e > 0, "--role-map: '", kv, "' is not NAME=ROLE");
    chat_format.role_map[kv.substr(0, e)] = kv.substr(e + 1);
  }
  if (!inspect.empty()) return inspect_shards(inspect, tok_path, show);
  check(!mode.empty(), "--mode is required (qa, chat, kvr, random-words, text); see --help");
  check(mode == "qa" || mode == "chat" || mode == "kvr" || mode == "random-words" || mode == "text",
        "--mode: unknown mode '", mode, "' (qa, chat, kvr, random-words, text)");
  check(preset.empty() || mode == "qa", "--preset applies to --mode qa");
  if (!preset.empty()) {
    const QaPreset& p = qa_preset(preset);
    if (!qfields_set) qfields = {p.question_field};
    if (!afields_set) afields = {p.answer_field};
  }
  const ChatTruncate truncate = parse_chat_truncate(truncate_arg);
  if (mode == "chat") check(template_arg.empty(), "--template is for qa data; chat data takes --chat-template");
  check(!tok_path.empty(), "--tokenizer is required");
  check(!output.empty(), "--output is required");
  check(text_mode == "remix" || text_mode == "lm", "--text-mode: '", text_mode, "' is not remix or lm");
  if (mode == "qa" || mode == "text" || mode == "chat") check(!inputs.empty(), "--mode ", mode, " needs --input");
  if (mode == "kvr" || mode == "random-words") check(num > 0, "--mode ", mode, " needs --num");
  if (jsonl_path.empty()) {
    jsonl_path = output;
    if (jsonl_path.size() > 4 && jsonl_path.compare(jsonl_path.size() - 4, 4, ".bin") == 0) jsonl_path.resize(jsonl_path.size() - 4);
    jsonl_path += ".jsonl";
  }
  check(jsonl_path != output, "--jsonl must differ from --output");
  std::string stem = output;
  if (stem.size() > 4 && stem.compare(stem.size() - 4, 4, ".bin") == 0) stem.resize(stem.size() - 4);
  const std::string heldout_path = stem + "-heldout.bin", heldout_jsonl = stem + "-heldout.jsonl";
  // Never overwrite an input with an output (e.g. --input data.jsonl --output data.bin).
  for (auto& in : inputs) {
    std::error_code ec;
    for (const std::string* out : std::initializer_list<const std::string*>{&output, &jsonl_path, &heldout_path, &heldout_jsonl})
      check(!std::filesystem::equivalent(in, *out, ec), *out, ": output would overwrite the input ", in,
            " (choose another --output or --jsonl)");
  }
  const bool lm_chunks = mode == "text" && text_mode == "lm";

  const auto t0 = std::chrono::steady_clock::now();
  if (dir_exists(tok_path)) tok_path += "/tokenizer.json";
  Tokenizer tok = Tokenizer::from_json_file(tok_path);

  std::string template_text;
  ChatTemplate chat_tmpl;
  if (mode == "chat") {
    chat_tmpl = ChatTemplate::resolve(chat_template);
    template_text = chat_tmpl.qa_template();
    template_arg = "chat " + chat_template;
  } else if (!lm_chunks) {
    if (template_arg.empty())
      template_arg = mode == "qa" ? "plain" : mode == "kvr" ? "kvr" : mode == "random-words" ? "memorize" : "passage";
    template_text = resolve_template(template_arg);
  } else {
    check(template_arg.empty(), "--template does not apply to --text-mode lm (loss on every token)");
  }

  // 0. Refuse a set that cannot fit in host memory, before reading or generating it.
  std::vector<std::string> words;
  if (mode == "random-words") words = load_word_list(word_list);
  {
    DataSize size;
    if (mode == "kvr" || mode == "random-words") {
      const int64_t k = std::min<int64_t>(num, 1000);
      std::vector<std::string> q, a;
      if (mode == "kvr") {
        for (auto& kv : generate_kvr(k, seed)) q.push_back(kv.key), a.push_back(kv.value);
      } else {
        a = generate_random_words(words, k, length, seed);
        q.assign(a.size(), "");
      }
      size = generated_size(q, a, tok, PromptTemplate::parse(template_text, template_arg), num);
    } else {
      size = input_size(inputs, tok, limit);
    }
    const double gib = 1024.0 * 1024.0 * 1024.0;
    char what[160];
    std::snprintf(what, sizeof what, "prepare_data --mode %s: about %.0f examples of %.0f tokens", mode.c_str(),
                  size.examples, size.tokens);
    check_host_memory(what, memory_plan(size, double(template_text.size()), lm_chunks, tok.vocab_size()),
                      "use a smaller --num or --limit, or split the input (--host-memory GiB replaces MemAvailable)",
                      host_memory_gib >= 0 ? int64_t(host_memory_gib * gib) : -1, "--host-memory");
  }

  // 1. Collect (question, answer, gold answers) records.
  std::vector<std::string> questions, answers;
  std::vector<std::vector<std::string>> golds;
  std::vector<std::string> documents;
  int64_t input_bytes = 0, skipped = 0;
  std::vector<std::vector<Conversation>> chats;  // the conversations of each input file
  ChatSkips chat_skips;
  if (mode == "chat") {
    int64_t read = 0;
    for (const std::string& in : inputs) {
      input_bytes += file_size_of(in);
      const int64_t left = limit > 0 ? limit - read : 0;
      if (limit > 0 && left <= 0) break;
      chats.push_back(read_chat_jsonl(in, chat_format, left, skip_invalid, chat_skips));
      read += int64_t(chats.back().size());
    }
  } else if (mode == "qa") {
    for (auto& in : inputs) {
      input_bytes += file_size_of(in);
      for (auto& r : read_qa_jsonl(in, qfields, afields, 0)) {
        questions.push_back(r.question);
        answers.push_back(r.answer);
        golds.push_back(r.answers);
      }
    }
  } else if (mode == "kvr") {
    for (auto& kv : generate_kvr(num, seed)) {
      questions.push_back(kv.key);
      answers.push_back(kv.value);
      golds.push_back({kv.value});
      input_bytes += int64_t(kv.key.size() + kv.value.size());
    }
  } else if (mode == "random-words") {
    for (auto& p : generate_random_words(words, num, length, seed)) {
      questions.push_back("");
      answers.push_back(p);
      golds.push_back({p});
      input_bytes += int64_t(p.size());
    }
  } else {
    for (auto& in : inputs) {
      input_bytes += file_size_of(in);
      for (auto& d : read_documents(in, text_field, doc_sep, blank_docs)) documents.push_back(std::move(d));
    }
    check(!documents.empty(), inputs[0], ": no documents in the input");
    if (!lm_chunks) {
      for (auto& d : documents) {
        if (limit > 0 && int64_t(questions.size()) >= limit) break;
        auto w = split_words(d);
        if (int64_t(w.size()) < prompt_words + target_words) {
          ++skipped;
          continue;
        }
        questions.push_back(join_words(w, 0, size_t(prompt_words)));
        answers.push_back(join_words(w, size_t(prompt_words), size_t(prompt_words + target_words)));
        golds.push_back({answers.back()});
      }
      check(!questions.empty(), inputs[0], ": every document is shorter than ", prompt_words + target_words,
            " words (", skipped, " skipped)");
    } else if (limit > 0 && int64_t(documents.size()) > limit) {
      documents.resize(size_t(limit));
    }
  }
  if (limit > 0 && int64_t(questions.size()) > limit) {
    questions.resize(size_t(limit));
    answers.resize(size_t(limit));
    golds.resize(size_t(limit));
  }

  // 2. Tokenize and write.
  ShardWriter writer(tok.hash(), uint32_t(tok.vocab_size()), template_text);
  std::string jsonl;
  if (mode == "chat") {
    const std::string eos = tok.eos_id() >= 0 ? tok.id_to_token(tok.eos_id()) : "";
    int64_t chat_truncated = 0;
    // Files are tokenized apart so that a length refusal names its own file.
    for (size_t f = 0; f < chats.size(); ++f) {
      const auto examples = tokenize_conversations(tok, chat_tmpl, chats[f], max_tokens, truncate, inputs[f], chat_skips);
      for (size_t i = 0; i < examples.size(); ++i) {
        if (examples[i].tokens.empty()) continue;
        writer.add(examples[i].tokens, examples[i].loss);
        const auto& m = chats[f][i].messages;
        chat_truncated += examples[i].messages < m.size();
        size_t first_user = 0, first_reply = 0;
        while (m[first_reply].role != "assistant") ++first_reply;
        while (first_user < first_reply && m[first_user].role != "user") ++first_user;
        // "prompt": the rendered text the first reply is generated from; question/answer: the first
        // user message and the first reply.
        std::string prompt = chat_tmpl.render(m, first_reply, eos) + chat_tmpl.assistant_header;
        jsonl += "{\"index\": " + std::to_string(writer.num_examples() - 1) + ", \"line\": " +
                 std::to_string(chats[f][i].line) + ", \"question\": ";
        append_json_string(jsonl, first_user < first_reply ? trim_whitespace(m[first_user].content) : "");
        jsonl += ", \"prompt\": ";
        append_json_string(jsonl, prompt);
        jsonl += ", \"answer\": ";
        append_json_string(jsonl, trim_whitespace(m[first_reply].content));
        jsonl += ", \"messages\": [";
        for (size_t k = 0; k < examples[i].messages; ++k) {
          jsonl += k ? ", {\"role\": " : "{\"role\": ";
          append_json_string(jsonl, m[k].role);
          jsonl += ", \"content\": ";
          append_json_string(jsonl, m[k].content);
          jsonl += "}";
        }
        jsonl += "]}\n";
      }
    }
    // Never silent, even with --quiet: what was left out or cut, and why.
    if (chat_skips.total() > 0) {
      std::fprintf(stderr, "prepare_data: %s\n", chat_skips.summary().c_str());
      for (auto& m : chat_skips.first) std::fprintf(stderr, "  skipped %s\n", m.c_str());
    }
    if (chat_truncated > 0)
      std::fprintf(stderr, "prepare_data: %lld conversations truncated at a turn boundary to --max-tokens %lld\n",
                   (long long)chat_truncated, (long long)max_tokens);
  } else if (!lm_chunks) {
    PromptTemplate tmpl = PromptTemplate::parse(template_text, template_arg);
    auto examples = tokenize_examples(tok, tmpl, questions, answers);
    Progress progress("building the shard", int64_t(examples.size()), "examples");
    for (size_t i = 0; i < examples.size(); ++i) {
      progress.add();
      writer.add(examples[i].tokens, examples[i].loss);
      jsonl += "{\"index\": " + std::to_string(i) + ", \"question\": ";
      append_json_string(jsonl, questions[i]);
      jsonl += ", \"prompt\": ";
      append_json_string(jsonl, tmpl.prompt(questions[i]));
      jsonl += ", \"answer\": ";
      append_json_string(jsonl, answers[i]);
      jsonl += ", \"answers\": [";
      for (size_t k = 0; k < golds[i].size(); ++k) {
        if (k) jsonl += ", ";
        append_json_string(jsonl, golds[i][k]);
      }
      jsonl += "]}\n";
    }
  } else {
    Progress progress("tokenizing documents", int64_t(documents.size()), "documents");
    auto docs = tok.encode_batch(documents, /*add_special_tokens=*/true, &progress);
    progress.finish();
    std::vector<int32_t> stream;
    for (auto& d : docs) {
      stream.insert(stream.end(), d.begin(), d.end());
      if (tok.eos_id() >= 0) stream.push_back(tok.eos_id());
    }
    for (size_t b = 0; b < stream.size(); b += size_t(seq_len)) {
      size_t e = std::min(stream.size(), b + size_t(seq_len));
      if (e - b < 2) break;  // a single token has nothing to predict
      std::vector<int32_t> chunk(stream.begin() + long(b), stream.begin() + long(e));
      writer.add(chunk, std::vector<uint8_t>(chunk.size(), 1));
      jsonl += "{\"index\": " + std::to_string(writer.num_examples() - 1) + ", \"text\": ";
      append_json_string(jsonl, tok.decode(chunk));
      jsonl += "}\n";
    }
  }
  check(writer.num_examples() > 0, output, ": no examples to write",
        chat_skips.total() ? " (" + chat_skips.summary() + ")" : std::string());
  const auto t1 = std::chrono::steady_clock::now();
  const std::string out_dir = dirname_of(output);
  if (!out_dir.empty() && out_dir != ".") make_dirs(out_dir);
  if (heldout > 0) {
    // The last N examples (and their JSONL lines, one per example) go to the held-out files.
    check(heldout < writer.num_examples(), "--heldout ", heldout, " leaves no example to train on (",
          writer.num_examples(), " examples)");
    size_t cut = 0;
    for (int64_t e = 0; e < writer.num_examples() - heldout; ++e) cut = jsonl.find('\n', cut) + 1;
    writer.split_off(heldout).write(heldout_path);
    write_file_atomic(heldout_jsonl, std::string_view(jsonl).substr(cut));
    jsonl.resize(cut);
    if (!quiet)
      std::fprintf(stderr, "prepare_data: the last %lld examples held out in %s\n", (long long)heldout,
                   heldout_path.c_str());
  }
  writer.write(output);
  write_file_atomic(jsonl_path, jsonl);
  const double secs = std::chrono::duration<double>(t1 - t0).count();
  if (!quiet) {
    std::fprintf(stderr,
                 "prepare_data: %s: %lld examples, %lld tokens (tokenizer %s, template %s)%s; %.2f MB of input in "
                 "%.2f s = %.1f MB/s\n",
                 output.c_str(), (long long)writer.num_examples(), (long long)writer.num_tokens(),
                 tok.hash_hex().c_str(), lm_chunks ? "none" : template_arg.c_str(),
                 skipped ? (", " + std::to_string(skipped) + " documents under " +
                            std::to_string(prompt_words + target_words) + " words skipped").c_str()
                         : "",
                 double(input_bytes) / 1e6, secs, double(input_bytes) / 1e6 / secs);
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // EngineError and anything else: a message, never a crash
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
