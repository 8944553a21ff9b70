// GPT-2 byte-level character map and small UTF-8 helpers.
#include <array>
#include <string>

#include "tokenizer/impl.h"

const std::array<uint32_t, 256>& byte_to_codepoint() {
  // Bytes that are printable in Latin-1 ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) keep their
  // code point; the remaining 68 (controls, space, DEL, NBSP, soft hyphen...) are shifted to
  // U+0100 + n in increasing byte order, so every byte becomes a visible character.
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t n = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = printable ? uint32_t(b) : 256 + n++;
    }
    return t;
  }();
  return table;
}

void append_utf8(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 63)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 63)));
    out->push_back(char(0x80 | (cp & 63)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 63)));
    out->push_back(char(0x80 | ((cp >> 6) & 63)));
    out->push_back(char(0x80 | (cp & 63)));
  }
}

size_t utf8_char_length(const unsigned char* s, size_t n) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t min_cp, cp;
  if ((c & 0xE0) == 0xC0) { len = 2; min_cp = 0x80; cp = c & 0x1F; }
  else if ((c & 0xF0) == 0xE0) { len = 3; min_cp = 0x800; cp = c & 0x0F; }
  else if ((c & 0xF8) == 0xF0) { len = 4; min_cp = 0x10000; cp = c & 0x07; }
  else return 1;
  if (n < len) return 1;
  for (size_t i = 1; i < len; ++i) {
    if ((s[i] & 0xC0) != 0x80) return 1;
    cp = (cp << 6) | (s[i] & 63);
  }
  // overlong forms, surrogates and values past U+10FFFF are invalid
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 1;
  return len;
}

std::string byte_level_encode(std::string_view raw) {
  const auto& t = byte_to_codepoint();
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char b : raw) append_utf8(&out, t[b]);
  return out;
}

bool byte_level_decode(std::string_view text, std::string* raw) {
  // inverse map: code points 0..0x143 cover the whole image of byte_to_codepoint
  static const std::array<int, 0x144> inverse = [] {
    std::array<int, 0x144> inv;
    inv.fill(-1);
    const auto& t = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) inv[t[b]] = b;
    return inv;
  }();
  raw->clear();
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  size_t i = 0;
  while (i < text.size()) {
    size_t len = utf8_char_length(s + i, text.size() - i);
    uint32_t cp;
    if (len == 1) {
      if (s[i] >= 0x80) return false;
      cp = s[i];
    } else if (len == 2) {
      cp = ((s[i] & 0x1F) << 6) | (s[i + 1] & 63);
    } else {
      return false;  // 3- and 4-byte characters are outside the map
    }
    if (cp >= inverse.size() || inverse[cp] < 0) return false;
    raw->push_back(char(inverse[cp]));
    i += len;
  }
  return true;
}
