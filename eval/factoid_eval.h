// Factoid evaluation shared by eval_factoids and the in-training evaluation of train_llama:
// questions with gold answers (from a QA shard or a QA JSONL file), greedy answers with a KV cache,
// and matching. The prompt is always rendered with the template the model was trained with, so
// the evaluation prompt is a token prefix of the training example.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/progress.h"
#include "eval/answer_match.h"
#include "eval/answer_stats.h"
#include "model/config.h"
#include "model/decode.h"
#include "tokenizer/tokenizer.h"

struct EvalItem {
  std::string question;             // the question (JSONL), or the decoded prompt (shard)
  std::vector<std::string> golds;   // gold answers, any of which is correct
  std::vector<int32_t> prompt_ids;  // exactly the training prompt tokens
  std::vector<int32_t> answer_ids;  // the trained answer tokens without EOS (for --score)
};

// True for a question file (*.jsonl / *.json), whose prompts a template renders; false for shards.
bool is_question_file(const std::string& path);

// path: a QA JSONL file (*.jsonl, fields as prepare_data reads them, plus KVR's key/value) or a
// comma-separated list / glob of shards. For JSONL, `template_text` (the training template) renders
// the prompts; for shards, the prompt is the example's tokens before its first trained token and the
// gold answer is the decoded trained tokens (EOS removed). limit > 0 keeps the first `limit`.
std::vector<EvalItem> load_eval_items(const std::string& path, const Tokenizer& tok, const std::string& template_text,
                                      int64_t limit = 0);

// The template JSONL questions are rendered with for checkpoint `dir` when no --template is given
// (shards carry their own prompts): the first model's (`reference`) for every model that trained
// on it in an earlier stage, so that a table over several checkpoints scores the same prompts on
// every row, the ones the first model learned the facts with; else the model's own last-stage
// template ("" for a model without our trainer_state.json). A note on stderr says which one when
// there was a choice.
std::string question_template(const std::string& dir, const std::string& reference);

// Tokens that end generation: the tokenizer's stop ids (Tokenizer::stop_ids: EOS and the
// end-of-turn tokens it has), the config's eos ids, and (stops_generation) every token whose text
// contains a newline, unless stop_at_newline is false (multi-line answers: gsm8k).
GreedyOptions make_stop_options(const Tokenizer& tok, const LlamaConfig& config, int max_new_tokens, int batch_size,
                                bool stop_at_newline = true);

struct EvalOutcome {
  std::vector<std::string> predictions;           // decoded, cut at the first newline (match_uses_first_line)
  std::vector<std::vector<int32_t>> output_ids;   // generated ids (incl. the stop token)
  std::vector<bool> correct;
  int64_t num_correct = 0;
  double accuracy = 0;
};

// Matches generated ids (output_ids[i] for items[i]) against the gold answers.
EvalOutcome match_outputs(const Tokenizer& tok, const std::vector<EvalItem>& items,
                          std::vector<std::vector<int32_t>> output_ids, MatchKind match);

// Greedy answers to every item (model/decode.h, on the model's backend), matched.
template <class Backend>
EvalOutcome evaluate_factoids(LlamaModel<Backend>& m, const Tokenizer& tok, const std::vector<EvalItem>& items,
                              const GreedyOptions& opt, MatchKind match) {
  // Decoded in chunks of whole decode batches (the same batches as all at once, so the same
  // answers), so that a large set shows its progress.
  const size_t chunk = size_t(std::max(1, opt.batch_size)) * 16;
  Progress progress("evaluating", int64_t(items.size()), "questions");
  std::vector<std::vector<int32_t>> output_ids;
  output_ids.reserve(items.size());
  // A conditioned model (LlamaModel::condition: one row per item, e.g. a Larimar memory readout)
  // hands each chunk its rows.
  const typename LlamaModel<Backend>::Condition cond = m.condition;
  check(!cond.slot || cond.seqs >= (int)items.size(), "evaluate_factoids: conditioning rows for ", cond.seqs,
        " of ", items.size(), " questions");
  for (size_t b = 0; b < items.size(); b += chunk) {
    std::vector<std::vector<int32_t>> prompts;
    for (size_t i = b; i < std::min(items.size(), b + chunk); ++i) prompts.push_back(items[i].prompt_ids);
    m.condition = m.condition_rows(cond, b);
    for (auto& ids : greedy_generate(m, prompts, opt)) output_ids.push_back(std::move(ids));
    progress.add(int64_t(prompts.size()));
  }
  m.condition = cond;
  return match_outputs(tok, items, std::move(output_ids), match);
}

// Teacher-forced statistics of each item's trained answer tokens given its prompt (eval/answer_stats.h).
template <class Backend>
std::vector<AnswerStats> score_items(LlamaModel<Backend>& m, const std::vector<EvalItem>& items, int batch_size) {
  // In chunks of whole scoring batches (the same batches as all at once), for the progress.
  const size_t chunk = size_t(std::max(1, std::min(batch_size, m.max_rows))) * 16;
  Progress progress("scoring", int64_t(items.size()), "questions");
  std::vector<AnswerStats> scores;
  scores.reserve(items.size());
  const typename LlamaModel<Backend>::Condition cond = m.condition;  // one row per item, if any
  for (size_t b = 0; b < items.size(); b += chunk) {
    std::vector<std::vector<int32_t>> prompts, answers;
    for (size_t i = b; i < std::min(items.size(), b + chunk); ++i) {
      prompts.push_back(items[i].prompt_ids);
      answers.push_back(items[i].answer_ids);
    }
    m.condition = m.condition_rows(cond, b);
    for (const AnswerStats& s : score_answers(m, prompts, answers, batch_size)) scores.push_back(s);
    progress.add(int64_t(prompts.size()));
  }
  m.condition = cond;
  return scores;
}
