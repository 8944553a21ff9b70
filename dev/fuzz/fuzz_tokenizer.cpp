// libFuzzer target: see fuzz_check.h for the property. Build and run with dev/fuzz/run_fuzz.sh.
#include <cstdint>
#include <cstdlib>

#include "dev/fuzz/fuzz_check.h"

static const Tokenizer* byte_level = nullptr;
static const Tokenizer* sentencepiece = nullptr;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("TOKENIZER_FIXTURES");
  std::string d = dir ? dir : "test/fixtures/tokenizer";
  byte_level = new Tokenizer(Tokenizer::from_json_file(d + "/bytelevel.json"));
  sentencepiece = new Tokenizer(Tokenizer::from_json_file(d + "/sentencepiece.json"));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_check(*byte_level, *sentencepiece, std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
