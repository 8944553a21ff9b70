#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/error.h"

namespace {
// Match data, match context and JIT stack do not depend on the pattern, so each thread keeps one
// set for all regexes. The JIT stack grows to 16 MB: long whitespace runs against `\s+(?!\S)`
// recurse deeply, and the default 32 kB would fail on them.
struct MatchScratch {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    data = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 16 * 1024 * 1024, nullptr);
    if (context && stack) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
  }
};
thread_local MatchScratch scratch;
}  // namespace

// PCRE2's \s with UCP is \p{Z} plus \h and \v, which includes U+180E (MONGOLIAN VOWEL SEPARATOR,
// no longer White_Space since Unicode 6.3). Oniguruma (HF tokenizers) and Rust's regex (tiktoken)
// use the White_Space property, so \s and \S are rewritten to that explicit set.
static const char* kWhiteSpaceItems = R"(\t-\r\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";

static std::string rewrite_white_space(const std::string& pat) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pat.size(); ++i) {
    char c = pat[i];
    if (c == '\\' && i + 1 < pat.size()) {
      char e = pat[++i];
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceItems) : "[" + std::string(kWhiteSpaceItems) + "]";
      } else if (e == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpaceItems) + "]";
      } else {
        out.push_back(c);
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // a ']' right after '[' or '[^' is a literal member
      if (i + 1 < pat.size() && pat[i + 1] == '^') out.push_back(pat[++i]);
      if (i + 1 < pat.size() && pat[i + 1] == ']') out.push_back(pat[++i]);
      continue;
    }
    if (in_class && c == '[' && i + 1 < pat.size() && pat[i + 1] == ':') {  // [:alpha:]
      size_t end = pat.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(pat, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

Regex::Regex(const std::string& pat, const std::string& where) : pattern(pat) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  std::string compiled = rewrite_white_space(pat);
  pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                                PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code,
                                &error_offset, nullptr);
  if (!c) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof message);
    fail(where, ": cannot compile regex '", pat, "' at offset ", error_offset, ": ",
         reinterpret_cast<const char*>(message));
  }
  code = c;
  jit = pcre2_jit_compile(c, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() {
  if (code) pcre2_code_free(static_cast<pcre2_code*>(code));
}

bool Regex::find(std::string_view subject, size_t from, size_t* match_start,
                 size_t* match_end) const {
  auto* c = static_cast<pcre2_code*>(code);
  auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  while (from < subject.size()) {
    int rc = jit ? pcre2_jit_match(c, s, subject.size(), from, 0, scratch.data, scratch.context)
                 : pcre2_match(c, s, subject.size(), from, 0, scratch.data, scratch.context);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    if (rc < 0 && rc != 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      fail("regex '", pattern, "': match failed: ", reinterpret_cast<const char*>(message));
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.data);
    if (ov[1] > ov[0]) {
      *match_start = ov[0];
      *match_end = ov[1];
      return true;
    }
    from = ov[0] + 1;  // empty match: pieces are never empty, look further on
  }
  return false;
}
