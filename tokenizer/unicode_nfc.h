// Unicode NFC (canonical decomposition, canonical ordering, canonical composition), for the NFC
// normalizer of Qwen2-style tokenizer.json files, and NFD for BERT's accent stripping. Invalid
// UTF-8 bytes pass through unchanged and block composition across them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

std::string nfc_normalize(std::string_view text);

// Code points of UTF-8 text; an invalid byte b becomes kInvalidByte + b and comes back unchanged.
constexpr uint32_t kInvalidByte = 0x110000;
std::vector<uint32_t> utf8_codepoints(std::string_view text);
std::string codepoints_utf8(const std::vector<uint32_t>& cps);
// NFD in place: full canonical decomposition, then canonical ordering of each run of marks.
void canonical_decompose(std::vector<uint32_t>* cps);

// tables (unicode_nfc_tables.cpp, generated)
extern const uint32_t kNfcDecompositions[][3];  // code point, first, second (0 = singleton)
extern const size_t kNfcDecompositionCount;
extern const uint32_t kNfcCombiningClasses[][2];  // code point, class (non-zero only)
extern const size_t kNfcCombiningClassCount;
extern const uint32_t kNfcCompositions[][3];  // first, second, composite; sorted
extern const size_t kNfcCompositionCount;
