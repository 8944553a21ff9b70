// libFuzzer target: the JSONL readers of prepare_data and eval_factoids: QA records
// (read_qa_jsonl, with every answer shape it accepts) and text documents (read_documents).
// Accepted QA records have a non-empty question, at least one gold answer, the trained answer
// first among them, and increasing line numbers inside the file.
#include <algorithm>

#include "dataloader/sources.h"
#include "dev/fuzz/fuzz_common.h"

static void write_seeds(const std::string& dir) {
  fuzz::copy_seed("test/fixtures/dataloader/qa.jsonl", dir, "fixture");
  write_file_atomic(dir + "/shapes",
                    "{\"question\": \"q1\", \"answer\": \"a\"}\n\n"
                    "{\"input_text\": \"q2\", \"answers\": [\"x\", \"y\"]}\n"
                    "{\"prompt\": \"q3\", \"possible_answers\": \"[\\\"p\\\", \\\"r\\\"]\"}\r\n"
                    "{\"question\": \"q4\", \"answer\": {\"value\": \"v\", \"aliases\": [\"w\"]}}\n"
                    "{\"text\": \"a document\"}\n");
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init("fuzz_qa_jsonl", write_seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string path = fuzz::put_file("qa.jsonl", text);
  const int64_t lines = int64_t(std::count(text.begin(), text.end(), '\n')) + 1;
  fuzz::run_one([&] {
    auto records = read_qa_jsonl(path, default_question_fields(), default_answer_fields());
    int64_t prev = 0;
    for (const auto& r : records) {
      fuzz::require(!r.question.empty(), "empty question accepted");
      fuzz::require(!r.answers.empty() && r.answer == r.answers[0], "trained answer is the first gold answer");
      fuzz::require(r.line > prev && r.line <= lines, "line numbers");
      prev = r.line;
    }
  });
  fuzz::run_one([&] {
    for (const auto& d : read_documents(path, "text", "", false)) fuzz::require(!d.empty(), "empty document");
  });
  return 0;
}
