// The property the tokenizer fuzz target checks on every input, shared with the short run in
// test/test_tokenizer.cpp: any byte string (valid UTF-8 or not) encodes without crashing to ids
// inside the vocabulary, a byte-level tokenizer gives back exactly the same bytes (unless the
// input holds an lstrip/rstrip token such as <mask>), and the
// streaming decoder adds up to decode(). The SentencePiece-style tokenizer must round-trip too
// when the input holds no added-token lookalike ('<') and no literal U+2581. A WordPiece (BERT)
// tokenizer, when given, normalizes (no round trip) but must satisfy the rest, [CLS] included.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"

inline void fuzz_fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "fuzz_check: %s for input of %zu bytes:", what, input.size());
  for (unsigned char c : input) std::fprintf(stderr, " %02x", c);
  std::fprintf(stderr, "\n");
  std::abort();
}

inline void fuzz_check_one(const Tokenizer& tok, std::string_view input, bool must_round_trip) {
  std::vector<int32_t> ids = tok.encode(input, false);
  for (int32_t id : ids)
    if (id < 0 || id >= tok.vocab_size()) fuzz_fail("id out of range", input);
  std::string back = tok.decode(ids);
  if (must_round_trip && back != input) fuzz_fail("decode(encode(x)) != x", input);
  IncrementalDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
  if (streamed != back) fuzz_fail("streaming decode != decode", input);
  std::vector<int32_t> with_special = tok.encode(input, true);
  if (tok.bos_id() >= 0 && (with_special.empty() || with_special[0] != tok.bos_id()))
    fuzz_fail("add_special_tokens did not add BOS", input);
}

// byte_level: e.g. the Llama 3 style fixture; sentencepiece: the Llama 2 style fixture;
// wordpiece (optional): the BERT style fixture.
inline void fuzz_check(const Tokenizer& byte_level, const Tokenizer& sentencepiece, std::string_view input,
                       const Tokenizer* wordpiece = nullptr) {
  if (wordpiece) fuzz_check_one(*wordpiece, input, false);
  // (the fixture's <mask> token strips the spaces around it, as in HF, so it cannot round-trip)
  fuzz_check_one(byte_level, input, input.find("<mask>") == std::string_view::npos);
  bool sp_round_trip = input.find('<') == std::string_view::npos &&
                       input.find("\xE2\x96\x81") == std::string_view::npos;
  fuzz_check_one(sentencepiece, input, sp_round_trip);
}
