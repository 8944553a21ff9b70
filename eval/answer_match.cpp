#include "eval/answer_match.h"

#include <regex>

#include "common/error.h"

MatchKind parse_match_kind(const std::string& name) {
  if (name == "exact") return MatchKind::exact;
  if (name == "squad") return MatchKind::squad;
  if (name == "contains") return MatchKind::contains;
  if (name == "gsm8k") return MatchKind::gsm8k;
  fail("--match: unknown matching rule '", name, "' (expected exact, squad, contains or gsm8k)");
}

const char* match_kind_name(MatchKind k) {
  switch (k) {
    case MatchKind::exact: return "exact";
    case MatchKind::squad: return "squad";
    case MatchKind::contains: return "contains";
    case MatchKind::gsm8k: return "gsm8k";
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
    case MatchKind::gsm8k: {
      const std::string g = gsm8k_reference_answer(gold);
      return !g.empty() && g == gsm8k_predicted_answer(prediction);
    }
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

bool match_uses_first_line(MatchKind k) { return k != MatchKind::gsm8k; }

// A number as GSM8K writes one: optional sign, digits with optional thousands commas, optional
// decimals. "1,234.50", "-7", "+3", ".5" is not matched as a number on its own (GSM8K answers are
// integers; ".5" would read the "5").
static const std::regex& number_regex() {
  static const std::regex re(R"([-+]?\d[\d,]*(?:\.\d+)?)");
  return re;
}

std::string normalize_number(const std::string& number) {
  std::string s;
  for (char c : number)
    if (c != ',') s += c;
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.erase(0, 1);
  }
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  size_t z = 0;
  while (z + 1 < s.size() && s[z] == '0' && s[z + 1] != '.') ++z;
  s.erase(0, z);
  if (s.empty()) return "";
  if (s == "0") negative = false;
  return negative ? "-" + s : s;
}

static std::string first_number(const std::string& s) {
  std::smatch m;
  return std::regex_search(s, m, number_regex()) ? normalize_number(m.str()) : "";
}

static std::string last_number(const std::string& s) {
  std::string last;
  for (auto it = std::sregex_iterator(s.begin(), s.end(), number_regex()); it != std::sregex_iterator(); ++it)
    last = it->str();
  return last.empty() ? "" : normalize_number(last);
}

std::string gsm8k_reference_answer(const std::string& solution) {
  size_t p = solution.rfind("####");
  return p == std::string::npos ? "" : first_number(solution.substr(p + 4));
}

std::string gsm8k_predicted_answer(const std::string& generated) {
  size_t p = generated.rfind("####");
  if (p != std::string::npos) {
    std::string after = first_number(generated.substr(p + 4));
    if (!after.empty()) return after;
  }
  return last_number(generated);
}
