#include "eval/factoid_eval.h"

#include <algorithm>
#include <cstdio>
#include <set>

#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "common/hash.h"
#include "dataloader/dataloader.h"
#include "dataloader/prompt_template.h"
#include "dataloader/shard.h"
#include "dataloader/sources.h"
#include "dataloader/tokenize_example.h"
#include "model/checkpoint.h"

static bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_question_file(const std::string& path) { return ends_with(path, ".jsonl") || ends_with(path, ".json"); }

static std::vector<EvalItem> items_from_jsonl(const std::string& path, const Tokenizer& tok,
                                              const std::string& template_text, int64_t limit) {
  check(!template_text.empty(), path,
        ": no prompt template: evaluating a JSONL file needs the training template (from the checkpoint, a shard, "
        "or --template)");
  PromptTemplate tmpl = PromptTemplate::parse(template_text, "prompt template");
  std::vector<std::string> qf = default_question_fields(), af = default_answer_fields();
  qf.push_back("key");  // KVR records written as {"key": ..., "value": ...}
  af.push_back("value");
  auto records = read_qa_jsonl(path, qf, af, limit);
  std::vector<EvalItem> items(records.size());
  std::vector<std::string> questions, answers;
  for (const auto& r : records) {
    questions.push_back(r.question);
    answers.push_back(r.answer);
  }
  auto tokenized = tokenize_examples(tok, tmpl, questions, answers);
  for (size_t i = 0; i < records.size(); ++i) {
    EvalItem& it = items[i];
    it.question = trim_whitespace(records[i].question);
    it.golds = records[i].answers.empty() ? std::vector<std::string>{records[i].answer} : records[i].answers;
    const auto& ex = tokenized[i];
    size_t first = std::find(ex.loss.begin(), ex.loss.end(), 1) - ex.loss.begin();
    it.prompt_ids.assign(ex.tokens.begin(), ex.tokens.begin() + first);
    size_t end = ex.tokens.size() - (tmpl.eos ? 1 : 0);
    it.answer_ids.assign(ex.tokens.begin() + first, ex.tokens.begin() + std::max(first, end));
    check(!it.prompt_ids.empty(), path, ":", records[i].line, ": the rendered prompt has no tokens");
  }
  return items;
}

static std::vector<EvalItem> items_from_shards(const std::string& list, const Tokenizer& tok, int64_t limit) {
  std::vector<EvalItem> items;
  for (const std::string& path : expand_shard_list(list)) {
    Shard shard(path);
    check(shard.tokenizer_hash() == 0 || shard.tokenizer_hash() == tok.hash(), path,
          ": field 'tokenizer_hash' (", hash_hex(shard.tokenizer_hash()), ") differs from the model's tokenizer (",
          tok.hash_hex(), ")");
    for (int64_t e = 0; e < shard.num_examples(); ++e) {
      if (limit > 0 && int64_t(items.size()) >= limit) return items;
      auto tokens = shard.example_tokens(e);
      auto loss = shard.example_loss(e);
      size_t first = std::find(loss.begin(), loss.end(), 1) - loss.begin();
      check(first > 0 && first < tokens.size(), path, ": example ", e,
            " has no prompt or no answer (evaluation needs QA examples: prompt tokens, then trained answer tokens)");
      EvalItem it;
      it.prompt_ids.assign(tokens.begin(), tokens.begin() + first);
      // The answer is the first run of trained tokens (a chat example trains several replies),
      // up to its end-of-turn / EOS token.
      size_t end = first;
      while (end < tokens.size() && loss[end]) ++end;
      for (size_t k = first + 1; k < end; ++k)
        if (std::find(tok.stop_ids().begin(), tok.stop_ids().end(), tokens[k]) != tok.stop_ids().end()) {
          end = k;
          break;
        }
      if (tok.eos_id() >= 0 && tokens[end - 1] == tok.eos_id() && end - 1 > first) --end;
      it.answer_ids.assign(tokens.begin() + first, tokens.begin() + end);
      it.question = tok.decode(it.prompt_ids, /*skip_special_tokens=*/true);
      it.golds = {trim_whitespace(tok.decode(it.answer_ids, true))};
      items.push_back(std::move(it));
    }
  }
  return items;
}

std::vector<EvalItem> load_eval_items(const std::string& path, const Tokenizer& tok, const std::string& template_text,
                                      int64_t limit) {
  if (is_question_file(path)) return items_from_jsonl(path, tok, template_text, limit);
  return items_from_shards(path, tok, limit);
}

std::string question_template(const std::string& dir, const std::string& reference) {
  if (!file_exists(dir + "/trainer_state.json")) return "";
  const std::vector<std::string> stages =
      stage_prompt_templates(load_trainer_state(dir), dir + "/trainer_state.json");
  if (stages.empty()) return "";
  if (!reference.empty() && stages.back() != reference &&
      std::find(stages.begin(), stages.end(), reference) != stages.end()) {
    std::fprintf(stderr, "note: %s: prompts rendered with the first model's template (an earlier stage of this "
                 "checkpoint), as for every row of the table\n", dir.c_str());
    return reference;
  }
  const size_t distinct = std::set<std::string>(stages.begin(), stages.end()).size();
  if (distinct > 1)
    std::fprintf(stderr, "note: %s was trained with %zu prompt templates; prompts rendered with its last stage's. "
                 "For an earlier stage's facts give --template, or that stage's shard as --data\n",
                 dir.c_str(), distinct);
  return stages.back();
}

GreedyOptions make_stop_options(const Tokenizer& tok, const LlamaConfig& config, int max_new_tokens, int batch_size,
                                bool stop_at_newline) {
  GreedyOptions opt;
  opt.max_new_tokens = max_new_tokens;
  opt.batch_size = batch_size;
  auto add = [&](int32_t id) {
    if (id >= 0 && id < config.vocab_size &&
        std::find(opt.stop_token_ids.begin(), opt.stop_token_ids.end(), id) == opt.stop_token_ids.end())
      opt.stop_token_ids.push_back(id);
  };
  for (int32_t id : tok.stop_ids()) add(id);
  for (int id : config.eos_token_id) add(id);
  // A newline ends the answer line (REMIX answers are one line): any token whose text has one.
  if (!stop_at_newline) return opt;
  const int V = std::min(config.vocab_size, tok.vocab_size());
  opt.stops_generation.assign(config.vocab_size, false);
  for (int id = 0; id < V; ++id) {
    if (tok.is_special(id)) continue;
    if (tok.decode({id}).find('\n') != std::string::npos) opt.stops_generation[id] = true;
  }
  return opt;
}

EvalOutcome match_outputs(const Tokenizer& tok, const std::vector<EvalItem>& items,
                          std::vector<std::vector<int32_t>> output_ids, MatchKind match) {
  check(output_ids.size() == items.size(), "match_outputs: ", output_ids.size(), " outputs for ", items.size(),
        " items");
  EvalOutcome out;
  out.output_ids = std::move(output_ids);
  for (size_t i = 0; i < items.size(); ++i) {
    std::string text = tok.decode(out.output_ids[i], /*skip_special_tokens=*/true);
    std::string pred = match_uses_first_line(match) ? cut_at_newline(text) : text;
    bool ok = answer_matches_any(match, pred, items[i].golds);
    out.predictions.push_back(pred);
    out.correct.push_back(ok);
    out.num_correct += ok;
  }
  out.accuracy = items.empty() ? 0.0 : double(out.num_correct) / double(items.size());
  return out;
}
