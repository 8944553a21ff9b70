// Pre-tokenizer regexes through PCRE2 (UTF | UCP, JIT). Subjects may be invalid UTF-8
// (PCRE2_MATCH_INVALID_UTF): invalid bytes simply never match, so they end up in the gaps.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

struct Regex {
  std::string pattern;
  void* code = nullptr;  // pcre2_code_8*
  bool jit = false;

  Regex() = default;
  // Throws EngineError "<where>: cannot compile regex ...: <reason>".
  Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Finds the next non-empty match at or after `from`; returns false when there is none.
  bool find(std::string_view subject, size_t from, size_t* match_start, size_t* match_end) const;
};
