// Raw data sources for prepare_data: QA records from JSONL, generated key-value pairs, random
// word sequences and generic text documents. No tokenization here (see tokenize_example.h).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

struct QaRecord {
  std::string question;
  std::string answer;                // the answer trained on (the first gold answer)
  std::vector<std::string> answers;  // every gold answer (for evaluation)
  int64_t line = 0;                  // 1-based line number in the input file
};

// Reads one JSON object per line (blank lines skipped). The question is the first present field of
// `question_fields`, the answer the first present of `answer_fields`. An answer field may be
//   - a string;
//   - a list of strings (the first is trained on, all are gold answers);
//   - a string holding a JSON list of strings (PopQA's possible_answers);
//   - an object with "value" and optional "aliases" (TriviaQA).
// Errors name the file, the line and the problem (invalid JSON, missing or empty field...).
// limit > 0 keeps the first `limit` records.
std::vector<QaRecord> read_qa_jsonl(const std::string& path, const std::vector<std::string>& question_fields,
                                    const std::vector<std::string>& answer_fields, int64_t limit = 0);
// Named field layouts of known instruction, code and math sets (prepare_data --preset):
//   evolcode  {"instruction": ..., "output": ...}
//   apps      {"question": ..., "solutions": "[\"code 1\", \"code 2\"]"}  (trains on the first)
//   gsm8k     {"question": ..., "answer": "... #### 42"}
//   math      {"problem": ..., "solution": "... \\boxed{42}"}
struct QaPreset {
  std::string name, question_field, answer_field, example;  // example: one JSONL line
};
const std::vector<QaPreset>& qa_presets();
const QaPreset& qa_preset(const std::string& name);  // throws naming --preset and the known names
const std::vector<std::string>& default_question_fields();  // question, input_text, prompt
const std::vector<std::string>& default_answer_fields();    // answer, target_text, possible_answers, answers

// The non-blank lines of a text (e.g. the records of a JSONL file) without their newline and
// trailing '\r', with their 1-based line numbers.
struct TextLine {
  std::string_view text;
  int64_t number;
};
std::vector<TextLine> nonblank_lines(const std::string& text);

// n key-value pairs; keys are unique, values are unique, each 8 characters of [a-z0-9].
struct KeyValue { std::string key, value; };
std::vector<KeyValue> generate_kvr(int64_t n, uint64_t seed);

// The words of a word list (one per line) that are entirely lowercase ASCII letters, deduplicated,
// in file order. Throws if none remain.
std::vector<std::string> load_word_list(const std::string& path);
// n passages of `length` words drawn uniformly (with replacement) from `words`, joined by spaces.
std::vector<std::string> generate_random_words(const std::vector<std::string>& words, int64_t n, int64_t length,
                                               uint64_t seed);

// Generic text documents. A file ending in .jsonl is one JSON object per line with the text in
// `text_field`; any other file is plain text: the whole file is one document, or, if `separator`
// is non-empty, documents are separated by lines equal to `separator` ("" + blank_lines = true
// splits at blank lines). Empty documents are skipped.
std::vector<std::string> read_documents(const std::string& path, const std::string& text_field,
                                        const std::string& separator, bool blank_lines);
std::vector<std::string> split_words(const std::string& text);  // on ASCII whitespace
std::string join_words(const std::vector<std::string>& words, size_t begin, size_t end);
