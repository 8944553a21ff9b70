// libFuzzer target: text encoded and decoded by three fixture tokenizers (byte-level BPE,
// SentencePiece-style BPE, WordPiece); see fuzz_check.h for the property. Build and run with
// dev/fuzz/run_fuzz.sh.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "dev/fuzz/fuzz_check.h"
#include "dev/fuzz/fuzz_common.h"

static const Tokenizer* byte_level = nullptr;
static const Tokenizer* sentencepiece = nullptr;
static const Tokenizer* wordpiece = nullptr;

// Seeds: the first documents of the tokenizer parity corpus (u32 count, then u32 length + bytes
// per document), cut to 512 bytes.
static void write_seeds(const std::string& dir) {
  const std::string data = read_text_file("test/fixtures/tokenizer/corpus.bin");
  uint32_t n = 0, len = 0;
  size_t pos = 4;
  std::memcpy(&n, data.data(), 4);
  for (uint32_t i = 0; i < n && i < 200 && pos + 4 <= data.size(); ++i) {
    std::memcpy(&len, data.data() + pos, 4);
    write_file_atomic(dir + "/doc" + std::to_string(i), data.substr(pos + 4, std::min<uint32_t>(len, 512)));
    pos += 4 + len;
  }
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init("fuzz_tokenizer", write_seeds);
  const char* dir = std::getenv("TOKENIZER_FIXTURES");
  std::string d = dir ? dir : "test/fixtures/tokenizer";
  byte_level = new Tokenizer(Tokenizer::from_json_file(d + "/bytelevel.json"));
  sentencepiece = new Tokenizer(Tokenizer::from_json_file(d + "/sentencepiece.json"));
  wordpiece = new Tokenizer(Tokenizer::from_json_file(d + "/wordpiece.json"));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Every text is valid input: the contract is the round-trip property, never a rejection.
  fuzz::run_one([&] {
    fuzz_check(*byte_level, *sentencepiece, std::string_view(reinterpret_cast<const char*>(data), size), wordpiece);
  });
  return 0;
}
