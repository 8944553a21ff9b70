#include "dataloader/sources.h"

#include <nlohmann/json.hpp>
#include <unordered_set>

#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "dataloader/prompt_template.h"
#include "dataloader/rng.h"

using json = nlohmann::json;

const std::vector<std::string>& default_question_fields() {
  static const std::vector<std::string> f = {"question", "input_text", "prompt"};
  return f;
}
const std::vector<std::string>& default_answer_fields() {
  static const std::vector<std::string> f = {"answer", "target_text", "possible_answers", "answers"};
  return f;
}

const std::vector<QaPreset>& qa_presets() {
  static const std::vector<QaPreset> p = {
      {"evolcode", "instruction", "output",
       R"({"instruction": "Write a Python function that returns the square of x.", "output": "def square(x):\n    return x * x"})"},
      {"apps", "question", "solutions",
       R"({"question": "Print the sum of two integers read from one line.", "solutions": "[\"a, b = map(int, input().split())\\nprint(a + b)\", \"print(sum(map(int, input().split())))\"]"})"},
      {"gsm8k", "question", "answer",
       R"({"question": "Tom has 3 boxes of 12 eggs and breaks 5. How many eggs are left?", "answer": "3 * 12 = <<3*12=36>>36 eggs.\n36 - 5 = <<36-5=31>>31.\n#### 31"})"},
      {"math", "problem", "solution",
       R"({"problem": "What is $2^{10}$?", "solution": "$2^{10} = 1024$, so the answer is $\\boxed{1024}$."})"},
  };
  return p;
}

const QaPreset& qa_preset(const std::string& name) {
  std::string known;
  for (auto& p : qa_presets()) {
    if (p.name == name) return p;
    known += (known.empty() ? "" : ", ") + p.name;
  }
  fail("--preset: unknown preset '", name, "' (", known, ")");
}

static std::string join_names(const std::vector<std::string>& v) {
  std::string s;
  for (auto& x : v) s += (s.empty() ? "'" : ", '") + x + "'";
  return s;
}

static bool is_blank(std::string_view s) { return s.find_first_not_of(" \t\r\n") == std::string_view::npos; }

// Calls fn(line_text, line_number) for each line of the file (without the newline).
template <typename Fn>
static void for_each_line(const std::string& text, Fn fn) {
  size_t pos = 0;
  int64_t line = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    ++line;
    std::string_view l(text.data() + pos, nl - pos);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    fn(l, line);
    pos = nl + 1;
  }
}


std::vector<TextLine> nonblank_lines(const std::string& text) {
  std::vector<TextLine> lines;
  for_each_line(text, [&](std::string_view l, int64_t line) {
    if (!is_blank(l)) lines.push_back({l, line});
  });
  return lines;
}

static json parse_line(const std::string& path, int64_t line, std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(path, ":", line, ": invalid JSON: ", e.what());
  }
  check(j.is_object(), path, ":", line, ": expected a JSON object, got ", j.type_name());
  return j;
}

static std::vector<std::string> answers_from(const std::string& path, int64_t line, const std::string& field,
                                             const json& v) {
  std::vector<std::string> out;
  auto add_list = [&](const json& arr) {
    for (auto& x : arr) {
      check(x.is_string(), path, ":", line, ": field '", field, "' lists a non-string answer (", x.type_name(), ")");
      out.push_back(x.get<std::string>());
    }
  };
  if (v.is_string()) {
    std::string s = v.get<std::string>();
    std::string t = trim_whitespace(s);
    if (!t.empty() && t.front() == '[') {  // PopQA stores its answer list as a JSON string
      json arr = json::parse(t, nullptr, /*allow_exceptions=*/false);
      check(!(arr.is_array() && arr.empty()), path, ":", line, ": field '", field,
            "' holds an empty JSON list (no answer)");
      bool all_strings = arr.is_array() && !arr.empty();
      if (all_strings)
        for (auto& x : arr) all_strings = all_strings && x.is_string();
      if (all_strings) {
        add_list(arr);
        return out;
      }
    }
    out.push_back(s);
  } else if (v.is_array()) {
    add_list(v);
  } else if (v.is_object() && v.contains("value") && v["value"].is_string()) {  // TriviaQA
    out.push_back(v["value"].get<std::string>());
    if (v.contains("aliases") && v["aliases"].is_array())
      for (auto& x : v["aliases"])
        if (x.is_string() && x.get<std::string>() != out[0]) out.push_back(x.get<std::string>());
  } else if (v.is_number()) {
    out.push_back(v.dump());
  } else {
    fail(path, ":", line, ": field '", field, "' must be a string, a list of strings or an object with 'value', got ",
         v.type_name());
  }
  std::vector<std::string> trimmed;
  for (auto& a : out)
    if (!trim_whitespace(a).empty()) trimmed.push_back(trim_whitespace(a));
  check(!trimmed.empty(), path, ":", line, ": field '", field, "' holds no non-empty answer");
  return trimmed;
}

static QaRecord parse_qa_line(const std::string& path, int64_t line, std::string_view l,
                              const std::vector<std::string>& question_fields,
                              const std::vector<std::string>& answer_fields) {
  json j = parse_line(path, line, l);
  QaRecord r;
  r.line = line;
  const std::string* qf = nullptr;
  for (auto& f : question_fields)
    if (j.contains(f)) { qf = &f; break; }
  check(qf != nullptr, path, ":", line, ": no question field (looked for ", join_names(question_fields), ")");
  check(j[*qf].is_string(), path, ":", line, ": field '", *qf, "' must be a string, got ", j[*qf].type_name());
  r.question = trim_whitespace(j[*qf].get<std::string>());
  check(!r.question.empty(), path, ":", line, ": field '", *qf, "' is empty");
  const std::string* af = nullptr;
  for (auto& f : answer_fields)
    if (j.contains(f)) { af = &f; break; }
  check(af != nullptr, path, ":", line, ": no answer field (looked for ", join_names(answer_fields), ")");
  r.answers = answers_from(path, line, *af, j[*af]);
  r.answer = r.answers[0];
  return r;
}

std::vector<QaRecord> read_qa_jsonl(const std::string& path, const std::vector<std::string>& question_fields,
                                    const std::vector<std::string>& answer_fields, int64_t limit) {
  const std::string text = read_text_file(path);
  std::vector<TextLine> lines = nonblank_lines(text);
  if (limit > 0 && int64_t(lines.size()) > limit) lines.resize(size_t(limit));
  // JSON parsing is the slow part: parse lines in parallel, then report the first bad line.
  std::vector<QaRecord> out(lines.size());
  std::vector<std::string> errors(lines.size());
  Progress progress("reading " + path, int64_t(lines.size()), "lines");
#pragma omp parallel for schedule(dynamic, 256)
  for (size_t i = 0; i < lines.size(); ++i) {
    try {
      out[i] = parse_qa_line(path, lines[i].number, lines[i].text, question_fields, answer_fields);
    } catch (const EngineError& e) {
      errors[i] = e.what();
    }
    progress.add();
  }
  progress.finish();
  for (auto& e : errors)
    if (!e.empty()) throw EngineError(e);
  check(!out.empty(), path, ": no records");
  return out;
}

static std::string random_alnum8(Rng& rng) {
  static const char* alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s(8, ' ');
  for (char& c : s) c = alphabet[rng.below(36)];
  return s;
}

std::vector<KeyValue> generate_kvr(int64_t n, uint64_t seed) {
  check(n > 0, "kvr: the number of pairs must be positive");
  Rng rng = Rng::derive(seed, 0x6b7672 /* "kvr" */);
  std::unordered_set<std::string> used;  // keys and values are all distinct strings
  auto fresh = [&] {
    for (;;) {
      std::string s = random_alnum8(rng);
      if (used.insert(s).second) return s;
    }
  };
  std::vector<KeyValue> out(static_cast<size_t>(n));
  Progress progress("generating key-value pairs", n, "pairs");
  for (auto& kv : out) {
    kv.key = fresh();
    kv.value = fresh();
    progress.add();
  }
  return out;
}

std::vector<std::string> load_word_list(const std::string& path) {
  const std::string text = read_text_file(path);
  std::vector<std::string> words;
  std::unordered_set<std::string> seen;
  for_each_line(text, [&](std::string_view l, int64_t) {
    if (l.empty()) return;
    for (char c : l)
      if (c < 'a' || c > 'z') return;
    std::string w(l);
    if (seen.insert(w).second) words.push_back(std::move(w));
  });
  check(!words.empty(), path, ": no lowercase alphabetic words in the word list");
  return words;
}

std::vector<std::string> generate_random_words(const std::vector<std::string>& words, int64_t n, int64_t length,
                                               uint64_t seed) {
  check(!words.empty(), "random-words: empty word list");
  check(n > 0 && length > 0, "random-words: the number and the length of sequences must be positive");
  Rng rng = Rng::derive(seed, 0x776f726473 /* "words" */);
  std::vector<std::string> out(static_cast<size_t>(n));
  for (auto& s : out)
    for (int64_t i = 0; i < length; ++i) {
      if (i) s += ' ';
      s += words[rng.below(words.size())];
    }
  return out;
}

std::vector<std::string> read_documents(const std::string& path, const std::string& text_field,
                                        const std::string& separator, bool blank_lines) {
  const std::string text = read_text_file(path);
  std::vector<std::string> docs;
  Progress progress("reading " + path, int64_t(text.size()), "bytes");
  auto reached = [&](std::string_view line) { progress.reach(int64_t(line.data() + line.size() - text.data())); };
  auto ends_with = [](const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  if (ends_with(path, ".jsonl")) {
    for_each_line(text, [&](std::string_view l, int64_t line) {
      reached(l);
      if (is_blank(l)) return;
      json j = parse_line(path, line, l);
      check(j.contains(text_field), path, ":", line, ": no field '", text_field, "'");
      check(j[text_field].is_string(), path, ":", line, ": field '", text_field, "' must be a string, got ",
            j[text_field].type_name());
      std::string d = j[text_field].get<std::string>();
      if (!is_blank(d)) docs.push_back(std::move(d));
    });
  } else if (separator.empty() && !blank_lines) {
    if (!is_blank(text)) docs.push_back(text);
  } else {
    std::string cur;
    auto flush = [&] {
      if (!is_blank(cur)) docs.push_back(cur);
      cur.clear();
    };
    for_each_line(text, [&](std::string_view l, int64_t) {
      reached(l);
      if (blank_lines ? is_blank(l) : l == separator) {
        flush();
      } else {
        cur.append(l);
        cur += '\n';
      }
    });
    flush();
  }
  return docs;
}

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> w;
  size_t i = 0;
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (i < text.size()) {
    while (i < text.size() && ws(text[i])) ++i;
    size_t b = i;
    while (i < text.size() && !ws(text[i])) ++i;
    if (i > b) w.emplace_back(text, b, i - b);
  }
  return w;
}

std::string join_words(const std::vector<std::string>& words, size_t begin, size_t end) {
  std::string s;
  for (size_t i = begin; i < end && i < words.size(); ++i) {
    if (i > begin) s += ' ';
    s += words[i];
  }
  return s;
}
