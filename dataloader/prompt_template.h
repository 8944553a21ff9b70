// Prompt templates: how a (question, answer) pair becomes training text, and the exact prompt the
// evaluator must use. Shared by prepare_data (training examples) and eval_factoids (prompts), so
// that the evaluation prompt is by construction a token prefix of the training example.
//
// A template is a string with placeholders:
//   {question}  (aliases {prompt}, {key})  the question text; optional (random-word passages)
//   {answer}    (alias {value})           the answer text; required, exactly once
//   {eos}                                 the tokenizer's EOS token; optional, only right after
//                                         {answer}
// Nothing but {eos} may follow {answer}. The text is split into
//   prompt part = everything before {answer}, with its trailing spaces removed
//   answer part = those trailing spaces + the answer (+ EOS)
// Moving the spaces to the answer matches how byte-level BPE tokenizes: the space belongs to the
// following word (" Paris" is one token), so the prompt ends on "is:" and greedy decoding of the
// answer starts with the " Paris" token exactly as in training. Example: with `plain`,
//   question "Capital of France?", answer "Paris" ->
//   prompt "Capital of France?\nThe answer is:"  answer " Paris" + EOS.
// Questions and answers are trimmed of surrounding whitespace before rendering.
//
// Named templates (resolve_template):
//   plain        "{question}\nThe answer is: {answer}{eos}"
//   kvr          "The value of key {key} is? {value}{eos}"
//   tulu         "<|user|>\n{prompt}\n<|assistant|>\n{answer}{eos}"
//   memorize     "Memorize the following passage:\n\n{answer}{eos}"        (random-words)
//   passage      "Complete the following partial passage:\n\n{prompt} {answer}{eos}"  (text, REMIX)
// Anything else is read as a template file (one trailing newline of the file is dropped).
#pragma once
#include <string>
#include <vector>

struct PromptTemplate {
  std::string text;             // the template as written (stored in shards and checkpoints)
  std::string before_question;  // prompt = before_question + question + after_question
  std::string after_question;   //   (after_question excludes the spaces moved to the answer)
  bool has_question = false;
  std::string answer_prefix;    // the spaces moved from the end of the prompt part
  bool eos = false;             // append the tokenizer's EOS after the answer (trained on)

  // Throws EngineError naming `where` (file or template name) and the problem.
  static PromptTemplate parse(const std::string& text, const std::string& where = "template");
  std::string prompt(const std::string& question) const;  // the prompt part, rendered
  std::string answer(const std::string& answer) const;    // the answer part, rendered, without EOS
};

// Named template -> text; otherwise reads the file `name_or_path`.
std::string resolve_template(const std::string& name_or_path);
const std::vector<std::string>& named_template_names();

// Convenience for the evaluator: the prompt text for a question under the stored template text.
std::string render_prompt(const std::string& template_text, const std::string& question);

std::string trim_whitespace(const std::string& s);
