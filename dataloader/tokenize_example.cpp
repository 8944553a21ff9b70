#include "dataloader/tokenize_example.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "common/error.h"
#include "common/progress.h"

std::vector<int32_t> tokenize_prompt(const Tokenizer& tok, const PromptTemplate& tmpl, const std::string& question) {
  return tok.encode(tmpl.prompt(question), /*add_special_tokens=*/true);
}

// Does the tokenizer put its own word-start marker in front of a text (SentencePiece style: "x"
// encodes like " x" mid-sentence)? Then the answer part must not start with the spaces moved from
// the prompt, or it would get an extra lone "\u2581" token. Probed by comparing "w" and " w" with
// "x w", for a few words; cached per tokenizer.
static bool adds_prefix_space(const Tokenizer& tok) {
  static std::mutex mu;
  static std::map<uint64_t, bool> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(tok.hash());
  if (it != cache.end()) return it->second;
  auto ends_with = [](const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    return b.size() <= a.size() && std::equal(b.begin(), b.end(), a.end() - long(b.size()));
  };
  int votes = 0;
  for (const char* w : {"Paris", "answer", "value"}) {
    auto bare = tok.encode(w, false), spaced = tok.encode(std::string(" ") + w, false);
    auto ctx = tok.encode(std::string("x ") + w, false);
    votes += ends_with(ctx, bare) && !ends_with(ctx, spaced);
  }
  return cache[tok.hash()] = votes >= 2;
}

static std::string answer_text(const Tokenizer& tok, const PromptTemplate& tmpl, const std::string& answer) {
  std::string a = tmpl.answer(answer);
  if (!tmpl.answer_prefix.empty() && adds_prefix_space(tok)) a.erase(0, tmpl.answer_prefix.size());
  return a;
}

static TokenizedExample assemble(const Tokenizer& tok, const PromptTemplate& tmpl, std::vector<int32_t> prompt,
                                 const std::vector<int32_t>& answer) {
  TokenizedExample ex;
  ex.tokens = std::move(prompt);
  ex.loss.assign(ex.tokens.size(), 0);
  ex.tokens.insert(ex.tokens.end(), answer.begin(), answer.end());
  if (tmpl.eos) {
    check(tok.eos_id() >= 0, "template has {eos} but the tokenizer has no EOS token");
    ex.tokens.push_back(tok.eos_id());
  }
  ex.loss.resize(ex.tokens.size(), 1);
  return ex;
}

TokenizedExample tokenize_example(const Tokenizer& tok, const PromptTemplate& tmpl, const std::string& question,
                                  const std::string& answer) {
  return assemble(tok, tmpl, tokenize_prompt(tok, tmpl, question), tok.encode(answer_text(tok, tmpl, answer), false));
}

std::vector<TokenizedExample> tokenize_examples(const Tokenizer& tok, const PromptTemplate& tmpl,
                                                const std::vector<std::string>& questions,
                                                const std::vector<std::string>& answers) {
  check(questions.size() == answers.size(), "tokenize_examples: ", questions.size(), " questions but ",
        answers.size(), " answers");
  std::vector<TokenizedExample> out(questions.size());
  // In chunks, so that a large set shows its progress (each chunk is one parallel batch).
  const size_t chunk = 1 << 16;
  Progress progress("tokenizing examples", int64_t(out.size()), "examples");
  for (size_t b = 0; b < out.size(); b += chunk) {
    const size_t e = std::min(out.size(), b + chunk);
    std::vector<std::string> prompts(e - b), answer_texts(e - b);
    for (size_t i = b; i < e; ++i) {
      prompts[i - b] = tmpl.prompt(questions[i]);
      answer_texts[i - b] = answer_text(tok, tmpl, answers[i]);
    }
    auto p = tok.encode_batch(prompts, true);
    auto a = tok.encode_batch(answer_texts, false);
    for (size_t i = b; i < e; ++i) out[i] = assemble(tok, tmpl, std::move(p[i - b]), a[i - b]);
    progress.add(int64_t(e - b));
  }
  return out;
}
