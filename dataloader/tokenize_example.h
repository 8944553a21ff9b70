// Tokenization of templated examples: the one code path shared by prepare_data (training
// examples) and eval_factoids (prompts).
//
// The prompt part and the answer part are tokenized SEPARATELY and concatenated:
//   tokens = encode(prompt, add_special_tokens=true)   (BOS from the tokenizer's post-processor)
//          + encode(answer, add_special_tokens=false)
//          + [EOS]                                      (if the template has {eos})
//   loss   = 0 on the prompt tokens, 1 on the answer tokens and the EOS.
// So tokenize_prompt(q) is exactly a prefix of tokenize_example(q, a).tokens, whatever the
// tokenizer does at the prompt/answer boundary.
// The answer part starts with the spaces the template puts before {answer} (" Paris"), as byte-level
// BPE (Llama 3, GPT-2, Qwen) attaches a space to the following word. A SentencePiece-style
// tokenizer (Llama 2, Mistral) already marks the start of the text it encodes as a word start, so
// for it those spaces are dropped (detected once per tokenizer by probing; see the .cpp). Either
// way the tokens equal the natural encoding of the whole text in the common case.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dataloader/prompt_template.h"
#include "tokenizer/tokenizer.h"

struct TokenizedExample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss;  // 1 = trained on
};

std::vector<int32_t> tokenize_prompt(const Tokenizer& tok, const PromptTemplate& tmpl, const std::string& question);
TokenizedExample tokenize_example(const Tokenizer& tok, const PromptTemplate& tmpl, const std::string& question,
                                  const std::string& answer);
// Same as tokenize_example on each pair, using all cores (Tokenizer::encode_batch).
std::vector<TokenizedExample> tokenize_examples(const Tokenizer& tok, const PromptTemplate& tmpl,
                                                const std::vector<std::string>& questions,
                                                const std::vector<std::string>& answers);
