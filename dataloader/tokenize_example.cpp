#include "dataloader/tokenize_example.h"

#include "common/error.h"

std::vector<int32_t> tokenize_prompt(const Tokenizer& tok, const PromptTemplate& tmpl, const std::string& question) {
  return tok.encode(tmpl.prompt(question), /*add_special_tokens=*/true);
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
  return assemble(tok, tmpl, tokenize_prompt(tok, tmpl, question), tok.encode(tmpl.answer(answer), false));
}

std::vector<TokenizedExample> tokenize_examples(const Tokenizer& tok, const PromptTemplate& tmpl,
                                                const std::vector<std::string>& questions,
                                                const std::vector<std::string>& answers) {
  check(questions.size() == answers.size(), "tokenize_examples: ", questions.size(), " questions but ",
        answers.size(), " answers");
  std::vector<std::string> prompts(questions.size()), answer_texts(answers.size());
  for (size_t i = 0; i < questions.size(); ++i) {
    prompts[i] = tmpl.prompt(questions[i]);
    answer_texts[i] = tmpl.answer(answers[i]);
  }
  auto p = tok.encode_batch(prompts, true);
  auto a = tok.encode_batch(answer_texts, false);
  std::vector<TokenizedExample> out(questions.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = assemble(tok, tmpl, std::move(p[i]), a[i]);
  return out;
}
