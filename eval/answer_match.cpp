#include "eval/answer_match.h"

#include "common/error.h"

MatchKind parse_match_kind(const std::string& name) {
  if (name == "exact") return MatchKind::exact;
  if (name == "squad") return MatchKind::squad;
  if (name == "contains") return MatchKind::contains;
  fail("--match: unknown matching rule '", name, "' (expected exact, squad or contains)");
}

const char* match_kind_name(MatchKind k) {
  switch (k) {
    case MatchKind::exact: return "exact";
    case MatchKind::squad: return "squad";
    case MatchKind::contains: return "contains";
  }
  return "?";
}

// Python's str.strip() with no argument removes whitespace; for ASCII that is these six.
static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
static char lower_ascii(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

std::string strip_lower(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  std::string out = s.substr(b, e - b);
  for (char& c : out) c = lower_ascii(c);
  return out;
}

// SQuAD v1.1 evaluate.py: white_space_fix(remove_articles(remove_punc(lower(s)))).
std::string squad_normalize(const std::string& s) {
  static const std::string punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";  // string.punctuation
  std::string no_punc;
  for (char c : s) {
    if (punctuation.find(c) == std::string::npos) no_punc += lower_ascii(c);
  }
  // Split on whitespace, drop the words "a", "an", "the" (regex \b(a|an|the)\b on text that has
  // no punctuation left, so word boundaries are whitespace boundaries), join with single spaces.
  std::string out, word;
  auto flush = [&] {
    if (!word.empty() && word != "a" && word != "an" && word != "the") {
      if (!out.empty()) out += ' ';
      out += word;
    }
    word.clear();
  };
  for (char c : no_punc) {
    if (is_space(c)) flush();
    else word += c;
  }
  flush();
  return out;
}

bool answer_matches(MatchKind kind, const std::string& prediction, const std::string& gold) {
  switch (kind) {
    case MatchKind::exact: return strip_lower(prediction) == strip_lower(gold);
    case MatchKind::squad: return squad_normalize(prediction) == squad_normalize(gold);
    case MatchKind::contains: return strip_lower(prediction).find(strip_lower(gold)) != std::string::npos;
  }
  return false;
}

bool answer_matches_any(MatchKind kind, const std::string& prediction, const std::vector<std::string>& golds) {
  for (const auto& g : golds)
    if (answer_matches(kind, prediction, g)) return true;
  return false;
}

std::string cut_at_newline(const std::string& generated) {
  size_t p = generated.find('\n');
  return p == std::string::npos ? generated : generated.substr(0, p);
}
