// BERT normalization over code points; tables by binary search (a few hundred ranges each).
#include "tokenizer/unicode_bert.h"

#include <vector>

#include "tokenizer/unicode_nfc.h"

namespace {

bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c) {
  size_t lo = 0, hi = n;  // first range whose end is >= c
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (r[mid][1] < c) lo = mid + 1; else hi = mid;
  }
  return lo < n && r[lo][0] <= c;
}

}  // namespace

bool is_white_space(uint32_t c) {
  return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool bert_is_control(uint32_t c) { return in_ranges(kBertControlRanges, kBertControlRangeCount, c); }
bool bert_is_mark(uint32_t c) { return in_ranges(kBertMarkRanges, kBertMarkRangeCount, c); }
bool bert_is_punctuation(uint32_t c) { return in_ranges(kBertPunctuationRanges, kBertPunctuationRangeCount, c); }

bool bert_is_cjk(uint32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

std::string bert_normalize(std::string_view text, const BertNormalizerOptions& o) {
  std::vector<uint32_t> cps = utf8_codepoints(text), next;
  next.reserve(cps.size());
  if (o.clean_text) {
    for (uint32_t c : cps) {
      if (c >= kInvalidByte) { next.push_back(c); continue; }
      if (c == 0 || c == 0xFFFD || bert_is_control(c)) continue;
      next.push_back(c == '\t' || c == '\n' || c == '\r' || is_white_space(c) ? ' ' : c);
    }
    cps.swap(next);
  }
  if (o.handle_chinese_chars) {
    next.clear();
    for (uint32_t c : cps) {
      if (bert_is_cjk(c)) next.insert(next.end(), {' ', c, ' '});
      else next.push_back(c);
    }
    cps.swap(next);
  }
  if (o.strip_accents) {
    canonical_decompose(&cps);
    next.clear();
    for (uint32_t c : cps)
      if (c >= kInvalidByte || !bert_is_mark(c)) next.push_back(c);
    cps.swap(next);
  }
  if (o.lowercase) {
    next.clear();
    for (uint32_t c : cps) {
      if (c < 0x80) { next.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c); continue; }
      size_t lo = 0, hi = kLowercaseCount;
      while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (kLowercase[mid][0] < c) lo = mid + 1; else hi = mid;
      }
      if (lo < kLowercaseCount && kLowercase[lo][0] == c) {
        for (int k = 1; k < 4 && kLowercase[lo][k]; ++k) next.push_back(kLowercase[lo][k]);
      } else {
        next.push_back(c);
      }
    }
    cps.swap(next);
  }
  return codepoints_utf8(cps);
}
