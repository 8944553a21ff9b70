// NFC as in UAX #15: decompose canonically (recursively, Hangul algorithmically), put each run of
// combining marks in canonical order (stable sort by combining class), then compose every mark
// with the last starter unless a mark of the same or higher class, or a starter, sits between.
#include "tokenizer/unicode_nfc.h"

#include <algorithm>
#include <vector>

#include "tokenizer/impl.h"

namespace {

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

int combining_class(uint32_t cp) {
  if (cp < 0x300 || cp >= kInvalidByte) return 0;
  size_t lo = 0, hi = kNfcCombiningClassCount;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (kNfcCombiningClasses[mid][0] < cp) lo = mid + 1; else hi = mid;
  }
  return lo < kNfcCombiningClassCount && kNfcCombiningClasses[lo][0] == cp ? int(kNfcCombiningClasses[lo][1]) : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out->push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0 && cp < kInvalidByte) {
    size_t lo = 0, hi = kNfcDecompositionCount;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (kNfcDecompositions[mid][0] < cp) lo = mid + 1; else hi = mid;
    }
    if (lo < kNfcDecompositionCount && kNfcDecompositions[lo][0] == cp) {
      decompose(kNfcDecompositions[lo][1], out);
      if (kNfcDecompositions[lo][2]) decompose(kNfcDecompositions[lo][2], out);
      return;
    }
  }
  out->push_back(cp);
}

uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  size_t lo = 0, hi = kNfcCompositionCount;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    const uint32_t* r = kNfcCompositions[mid];
    if (r[0] < a || (r[0] == a && r[1] < b)) lo = mid + 1; else hi = mid;
  }
  if (lo < kNfcCompositionCount && kNfcCompositions[lo][0] == a && kNfcCompositions[lo][1] == b)
    return kNfcCompositions[lo][2];
  return 0;
}

}  // namespace

std::vector<uint32_t> utf8_codepoints(std::string_view text) {
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    size_t len = utf8_char_length(s + i, text.size() - i);
    uint32_t cp;
    if (len == 1) {
      cp = s[i] < 0x80 ? s[i] : kInvalidByte + s[i];
    } else {
      cp = s[i] & (0x7F >> len);
      for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (s[i + k] & 63);
    }
    cps.push_back(cp);
    i += len;
  }
  return cps;
}

std::string codepoints_utf8(const std::vector<uint32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (uint32_t cp : cps) {
    if (cp >= kInvalidByte) out.push_back(char(cp - kInvalidByte));
    else append_utf8(&out, cp);
  }
  return out;
}

void canonical_decompose(std::vector<uint32_t>* in) {
  std::vector<uint32_t> cps;
  cps.reserve(in->size());
  for (uint32_t cp : *in) decompose(cp, &cps);
  // canonical ordering of each run of non-starters
  for (size_t i = 0; i < cps.size();) {
    if (combining_class(cps[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
    std::stable_sort(cps.begin() + i, cps.begin() + j,
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  in->swap(cps);
}

std::string nfc_normalize(std::string_view text) {
  // Below U+0300 nothing decomposes... except the precomposed Latin-1/Latin Extended letters,
  // which NFC leaves composed anyway; so pure ASCII and text without any byte >= 0xCC is fast.
  bool simple = true;
  for (unsigned char c : text) simple = simple && c < 0xCC;
  if (simple) return std::string(text);

  std::vector<uint32_t> cps = utf8_codepoints(text);
  canonical_decompose(&cps);
  // canonical composition
  std::vector<uint32_t> result;
  result.reserve(cps.size());
  ptrdiff_t starter = -1;
  for (uint32_t c : cps) {
    int cc = combining_class(c);
    if (starter >= 0) {
      bool adjacent = result.size() == size_t(starter) + 1;
      int last_cc = combining_class(result.back());
      if (adjacent || (last_cc != 0 && last_cc < cc)) {
        if (uint32_t composite = compose(result[starter], c)) {
          result[starter] = composite;
          continue;
        }
      }
    }
    if (cc == 0) starter = ptrdiff_t(result.size());
    result.push_back(c);
  }
  return codepoints_utf8(result);
}
