#include "dataloader/prompt_template.h"

#include <utility>

#include "common/error.h"
#include "common/file_io.h"

static const std::vector<std::pair<std::string, std::string>>& named_templates() {
  static const std::vector<std::pair<std::string, std::string>> t = {
      {"plain", "{question}\nThe answer is: {answer}{eos}"},
      {"kvr", "The value of key {key} is? {value}{eos}"},
      {"tulu", "<|user|>\n{prompt}\n<|assistant|>\n{answer}{eos}"},
      {"memorize", "Memorize the following passage:\n\n{answer}{eos}"},
      {"passage", "Complete the following partial passage:\n\n{prompt} {answer}{eos}"},
  };
  return t;
}

const std::vector<std::string>& named_template_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (auto& [k, v] : named_templates()) n.push_back(k);
    return n;
  }();
  return names;
}

std::string resolve_template(const std::string& name_or_path) {
  for (auto& [name, text] : named_templates())
    if (name == name_or_path) return text;
  check(file_exists(name_or_path), name_or_path, ": not a named template (plain, kvr, tulu, memorize, passage) ",
        "and not a readable template file");
  std::string text = read_text_file(name_or_path);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (!text.empty() && text.back() == '\r') text.pop_back();
  return text;
}

std::string trim_whitespace(const std::string& s) {
  const char* ws = " \t\r\n\v\f";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

PromptTemplate PromptTemplate::parse(const std::string& text, const std::string& where) {
  PromptTemplate t;
  t.text = text;
  // Find placeholders in order of appearance.
  struct Found { size_t pos, len; int kind; };  // kind 0 question, 1 answer, 2 eos
  static const std::vector<std::pair<std::string, int>> names = {
      {"{question}", 0}, {"{prompt}", 0}, {"{key}", 0}, {"{answer}", 1}, {"{value}", 1}, {"{eos}", 2}};
  std::vector<Found> found;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '{') continue;
    for (auto& [n, kind] : names)
      if (text.compare(i, n.size(), n) == 0) {
        found.push_back({i, n.size(), kind});
        i += n.size() - 1;
        break;
      }
  }
  int nq = 0, na = 0, ne = 0;
  for (auto& f : found) (f.kind == 0 ? nq : f.kind == 1 ? na : ne)++;
  check(na == 1, where, ": template must contain {answer} (or {value}) exactly once, found ", na);
  check(nq <= 1, where, ": template contains the question placeholder ({question}/{prompt}/{key}) ", nq,
        " times (at most once)");
  check(ne <= 1, where, ": template contains {eos} ", ne, " times (at most once)");
  size_t ia = 0;
  while (found[ia].kind != 1) ++ia;
  const Found& a = found[ia];
  std::string rest = text.substr(a.pos + a.len);
  check(rest.empty() || rest == "{eos}", where, ": only {eos} may follow {answer} in a template, found \"", rest, "\"");
  t.eos = rest == "{eos}";
  std::string prompt_part = text.substr(0, a.pos);
  size_t keep = prompt_part.find_last_not_of(' ');
  keep = keep == std::string::npos ? 0 : keep + 1;
  t.answer_prefix = prompt_part.substr(keep);
  prompt_part.resize(keep);
  if (nq == 1) {
    const Found& q = found[0];
    check(q.kind == 0, where, ": the question placeholder must come before {answer}");
    t.has_question = true;
    t.before_question = text.substr(0, q.pos);
    size_t after = q.pos + q.len;
    t.after_question = after <= prompt_part.size() ? prompt_part.substr(after) : "";
  } else {
    t.before_question = prompt_part;
  }
  return t;
}

std::string PromptTemplate::prompt(const std::string& question) const {
  if (!has_question) return before_question;
  return before_question + trim_whitespace(question) + after_question;
}

std::string PromptTemplate::answer(const std::string& ans) const { return answer_prefix + trim_whitespace(ans); }

std::string render_prompt(const std::string& template_text, const std::string& question) {
  return PromptTemplate::parse(template_text).prompt(question);
}
