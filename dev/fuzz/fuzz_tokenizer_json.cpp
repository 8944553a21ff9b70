// libFuzzer target: tokenizer.json as Tokenizer::from_json_string reads it (--tokenizer, and the
// tokenizer.json of every model and checkpoint). Accepted: a fixed text encodes to ids inside the
// vocabulary, decodes and streams consistently (the same property as fuzz_tokenizer, on a
// fuzzed tokenizer instead of a fuzzed text), and the tokenizer's own JSON reads back to a
// tokenizer with the same hash.
#include "dev/fuzz/fuzz_check.h"
#include "dev/fuzz/fuzz_common.h"

static void write_seeds(const std::string& dir) {
  fuzz::copy_seed("test/fixtures/dataloader/tokenizer.json", dir, "bytelevel_small");
  fuzz::copy_seed("test/fixtures/dataloader/tokenizer_sp.json", dir, "sentencepiece_small");
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init("fuzz_tokenizer_json", write_seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string json(reinterpret_cast<const char*>(data), size);
  fuzz::run_one([&] {
    Tokenizer tok = Tokenizer::from_json_string(json, "fuzz tokenizer.json");
    fuzz_check_one(tok, "Hello world! The value of key 4x9q is? 12 \xC3\xA9t\xC3\xA9 <s></s>\n\n  end", false);
    Tokenizer back = Tokenizer::from_json_string(tok.to_json_string(), "round trip");
    fuzz::require(back.hash() == tok.hash(), "to_json_string round trip changes the tokenizer");
  });
  return 0;
}
