// Unicode NFC (canonical decomposition, canonical ordering, canonical composition), for the NFC
// normalizer of Qwen2-style tokenizer.json files. Invalid UTF-8 bytes pass through unchanged and
// block composition across them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

std::string nfc_normalize(std::string_view text);

// tables (unicode_nfc_tables.cpp, generated)
extern const uint32_t kNfcDecompositions[][3];  // code point, first, second (0 = singleton)
extern const size_t kNfcDecompositionCount;
extern const uint32_t kNfcCombiningClasses[][2];  // code point, class (non-zero only)
extern const size_t kNfcCombiningClassCount;
extern const uint32_t kNfcCompositions[][3];  // first, second, composite; sorted
extern const size_t kNfcCompositionCount;
