// eval_factoids: exact-match accuracy of one or more models on factoid questions, and forgetting.
//
//   ./eval_factoids --model run1/final --model run2/final --data kvr.jsonl --out eval/
//
// Each model answers every question by batched greedy decoding with a KV cache, from exactly the
// prompt it was trained with (the template stored in its checkpoint, or in the QA shard), until
// EOS / end-of-turn / a newline / --max-new-tokens. Answers are matched (REMIX: strip + lowercase,
// equality). With several models the table also shows forgetting: the accuracy drop relative to
// the first model (e.g. after stage 1, then after stage 2). --score adds continuous measures of
// each gold answer under teacher forcing (eval/answer_stats.h): its log-likelihood (sum and mean
// over its tokens), the share of its tokens predicted top-1 and the rank of its first token; a
// fact that exact match calls lost may still be ranked high.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/nvtx.h"
#include "dataloader/prompt_template.h"
#include "eval/answer_stats.h"
#include "eval/factoid_eval.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/decode.h"
#include "model/params.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"
#if defined(ENGINE_CUDA)
#include "eval/answer_match.h"
#include "kernels/cuda_backend.h"  // --device cuda (the Makefile defines ENGINE_CUDA when nvcc is found)
#endif

using nlohmann::json;

struct EvalArgs {
  std::vector<std::string> models;
  std::string data, tokenizer, template_name, out, match = "exact", device = "auto";
  int max_new_tokens = 32, batch_size = 32, threads = 0;
  int64_t limit = 0;
  bool score = false, quiet = false;
};

static void declare_options(CLI::App& app, EvalArgs& a) {
  cli::init(app, "usage: eval_factoids --model DIR [--model DIR ...] --data QA [options]");
  cli::last_wins(app);
  app.description(
      "Greedy-decodes an answer to every question and reports exact-match accuracy; with several\n"
      "models, also the forgetting (accuracy drop relative to the first model).");
  auto opt = [&](const char* name, auto& var, const char* metavar, const char* help) {
    return app.add_option(name, var, help)->option_text(metavar);
  };
  cli::repeatable(opt("--model", a.models, "DIR", "HF model directory or train_llama checkpoint (repeatable)"));
  opt("--data", a.data, "QA",
      "QA JSONL (question/answer(s) or key/value fields) or QA shards\n"
      "(comma-separated paths or globs, from ./prepare_data)");
  opt("--template", a.template_name, "NAME|FILE",
      "prompt template for JSONL data (default: from the checkpoints'\n"
      "trainer_state.json, so it matches training: the first model's\n"
      "template for every model trained on it in an earlier stage)");
  opt("--tokenizer", a.tokenizer, "FILE", "tokenizer.json (default: the model directory's)");
  opt("--match", a.match, "exact|squad|contains", "matching rule (default exact: strip + lowercase, equality)");
  opt("--max-new-tokens", a.max_new_tokens, "N", "longest answer in tokens (default 32)")->check(cli::integer(1, 1 << 20));
  opt("--batch-size", a.batch_size, "N", "sequences decoded together (default 32)")->check(cli::integer(1, 1 << 20));
  opt("--limit", a.limit, "N", "evaluate only the first N questions")->check(cli::integer(0, int64_t(1) << 40));
  app.add_flag("--score", a.score,
               "also score each gold answer under teacher forcing: log-likelihood\n"
               "(sum, mean), share of tokens predicted top-1, first-token rank");
  opt("--out", a.out, "DIR", "write DIR/predictions.jsonl and DIR/metrics.json");
  opt("--threads", a.threads, "N", "CPU threads (default: OpenMP's default)")->check(cli::integer(0, 4096));
  opt("--device", a.device, "auto|cpu|cuda", "backend (default auto)")->check(cli::one_of({"auto", "cpu", "cuda"}));
  app.add_flag("--quiet", a.quiet, "only the table");
}

struct ModelResult {
  std::string model;
  int64_t correct = 0, total = 0;
  double accuracy = 0, decode_tokens_per_s = 0;
  // --score: means over the questions of each answer's mean log-prob and top-1 share, and the
  // median first-token rank (ranks are heavy-tailed: a mean would follow the few worst facts).
  double mean_logprob = 0, mean_top1_share = 0, median_first_rank = 0;
};

#if defined(ENGINE_CUDA)
// --device cuda: batched greedy decoding with the GPU KV cache (CudaGreedyDecoder), then the same
// matching as evaluate_factoids.
static EvalOutcome evaluate_factoids_cuda(const LlamaConfig& config, const ParamLayout& layout,
                                          const std::vector<float>& params, const Tokenizer& tok,
                                          const std::vector<EvalItem>& items, const GreedyOptions& opt,
                                          MatchKind match) {
  size_t max_prompt = 1;
  for (const auto& it : items) max_prompt = std::max(max_prompt, it.prompt_ids.size());
  const int max_len = int(max_prompt) + opt.max_new_tokens;
  const int batch = std::max(1, std::min(opt.batch_size, int(items.size())));
  CudaGreedyDecoder decoder(cuda_decoder_spec(config, layout, max_len), params.data(), batch, max_len);
  EvalOutcome out;
  for (size_t b0 = 0; b0 < items.size(); b0 += size_t(batch)) {
    std::vector<std::vector<int32_t>> prompts;
    for (size_t i = b0; i < std::min(items.size(), b0 + size_t(batch)); ++i) prompts.push_back(items[i].prompt_ids);
    for (auto& ids : decoder.generate(prompts, opt.max_new_tokens, opt.stop_token_ids, opt.stops_generation))
      out.output_ids.push_back(std::move(ids));
  }
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string pred = cut_at_newline(tok.decode(out.output_ids[i], /*skip_special_tokens=*/true));
    const bool ok = answer_matches_any(match, pred, items[i].golds);
    out.predictions.push_back(pred);
    out.correct.push_back(ok);
    out.num_correct += ok;
  }
  out.accuracy = items.empty() ? 0.0 : double(out.num_correct) / double(items.size());
  return out;
}
#endif

// The template JSONL questions are rendered with when --template is not given (shards carry their
// own prompts): the first model's (`reference`) for every model that trained on it in an earlier
// stage, so that a forgetting table scores the same prompts on every row, the ones the first model
// learned the facts with; else the model's own last-stage template ("" for a model without our
// trainer_state.json). A note on stderr says which one when there was a choice.
static std::string stored_template(const std::string& dir, const std::string& reference) {
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

int main(int argc, char** argv) {
  try {
    CLI::App app;
    EvalArgs args;
    declare_options(app, args);
    if (argc == 1) {
      std::fputs(app.help().c_str(), stdout);
      return 1;
    }
    if (int rc = cli::parse(app, argc, argv); rc >= 0) return rc;
    check(!args.models.empty(), "--model is required (see --help)");
    check(!args.data.empty(), "--data is required (see --help)");
#if defined(ENGINE_CUDA)
    if (args.device == "auto") args.device = cuda_device_count() > 0 ? "cuda" : "cpu";
#else
    if (args.device == "cuda") fail("--device cuda: this build has no CUDA backend (built without nvcc)");
#endif
    if (args.threads > 0) omp_set_num_threads(args.threads);
    const MatchKind match = parse_match_kind(args.match);
    std::string explicit_template;
    if (!args.template_name.empty()) explicit_template = resolve_template(args.template_name);

    if (!args.out.empty()) make_dirs(args.out);
    std::unique_ptr<AtomicFileWriter> pred_writer;
    if (!args.out.empty()) pred_writer = std::make_unique<AtomicFileWriter>(args.out + "/predictions.jsonl");

    std::vector<ModelResult> results;
    const bool questions = is_question_file(args.data);
    std::string reference_template;  // the first model's
    for (const std::string& dir : args.models) {
      NVTX_RANGE("eval");
      LlamaConfig config = load_config(dir + "/config.json");
      ParamLayout layout = make_param_layout(config);
      std::vector<float> params(layout.total);
      load_weights(dir, config, layout, params.data());
      const std::string tok_path = !args.tokenizer.empty() ? args.tokenizer : dir + "/tokenizer.json";
      check(file_exists(tok_path), dir, ": no tokenizer.json (give --tokenizer)");
      Tokenizer tok = Tokenizer::from_json_file(tok_path);

      const std::string template_text =
          !explicit_template.empty() || !questions ? explicit_template : stored_template(dir, reference_template);
      if (results.empty()) reference_template = template_text;
      std::vector<EvalItem> items = load_eval_items(args.data, tok, template_text, args.limit);
      check(!items.empty(), args.data, ": no questions");

      InferenceModel im(config, layout, params.data());
      GreedyOptions opt = make_stop_options(tok, config, args.max_new_tokens, args.batch_size);
      auto t0 = std::chrono::steady_clock::now();
      EvalOutcome r;
#if defined(ENGINE_CUDA)
      if (args.device == "cuda") r = evaluate_factoids_cuda(config, layout, params, tok, items, opt, match);
      else
#endif
        r = evaluate_factoids(im, tok, items, opt, match);
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      int64_t generated = 0;
      for (const auto& o : r.output_ids) generated += int64_t(o.size());

      std::vector<AnswerStats> scores;
      if (args.score) {
        std::vector<std::vector<int32_t>> prompts, answers;
        for (const auto& it : items) {
          prompts.push_back(it.prompt_ids);
          answers.push_back(it.answer_ids);
        }
        scores = score_answers(im, prompts, answers, args.batch_size);
      }

      ModelResult mr;
      mr.model = dir;
      mr.correct = r.num_correct;
      mr.total = int64_t(items.size());
      mr.accuracy = r.accuracy;
      mr.decode_tokens_per_s = generated / std::max(secs, 1e-9);
      if (!args.quiet)
        std::printf("%s: %lld/%lld correct (%.2f%%), %lld tokens decoded in %.2fs (%.0f tok/s)\n", dir.c_str(),
                    (long long)mr.correct, (long long)mr.total, 100.0 * mr.accuracy, (long long)generated, secs,
                    mr.decode_tokens_per_s);
      double sum_mean = 0, sum_top1 = 0;
      std::vector<int> ranks;
      for (size_t i = 0; i < items.size(); ++i) {
        json line = {{"model", dir},          {"index", i},
                     {"question", items[i].question}, {"gold", items[i].golds},
                     {"prediction", r.predictions[i]}, {"correct", bool(r.correct[i])},
                     {"prompt_ids", items[i].prompt_ids}, {"output_ids", r.output_ids[i]}};
        if (args.score) {
          line["answer_logprob_sum"] = scores[i].sum_logprob;
          line["answer_logprob_mean"] = scores[i].mean_logprob;
          line["answer_tokens"] = scores[i].num_tokens;
          line["answer_top1_share"] = scores[i].top1_share();
          line["first_token_rank"] = scores[i].first_rank;
          sum_mean += scores[i].mean_logprob;
          sum_top1 += scores[i].top1_share();
          ranks.push_back(scores[i].first_rank);
          if (!args.quiet)
            std::printf("score %s example %zu: sum %.6f mean %.6f (%d tokens), top-1 %d/%d, first-token rank %d\n",
                        dir.c_str(), i, scores[i].sum_logprob, scores[i].mean_logprob, scores[i].num_tokens,
                        scores[i].top1, scores[i].num_tokens, scores[i].first_rank);
        }
        if (pred_writer) {
          std::string s = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";  // a prediction may end mid-character
          pred_writer->write(s.data(), s.size());
        }
      }
      if (args.score) {
        mr.mean_logprob = sum_mean / double(items.size());
        mr.mean_top1_share = sum_top1 / double(items.size());
        std::sort(ranks.begin(), ranks.end());
        const size_t n = ranks.size();
        mr.median_first_rank = n % 2 ? ranks[n / 2] : 0.5 * (ranks[n / 2 - 1] + ranks[n / 2]);
      }
      results.push_back(mr);
    }

    // The table; forgetting = accuracy drop (percentage points) relative to the first model.
    size_t w = 5;
    for (const auto& r : results) w = std::max(w, r.model.size());
    std::printf("\n%-*s  %9s  %13s  %10s%s\n", int(w), "model", "accuracy", "correct/total", "forgetting",
                args.score ? "  mean logprob  top-1 share  median rank" : "");
    json metrics_models = json::array();
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      double forgetting = 100.0 * (results[0].accuracy - r.accuracy);
      char cnt[64], fg[32];
      std::snprintf(cnt, sizeof cnt, "%lld/%lld", (long long)r.correct, (long long)r.total);
      if (i == 0) std::snprintf(fg, sizeof fg, "-");
      else std::snprintf(fg, sizeof fg, "%.2f", forgetting);
      std::printf("%-*s  %8.2f%%  %13s  %10s", int(w), r.model.c_str(), 100.0 * r.accuracy, cnt, fg);
      if (args.score) std::printf("  %12.4f  %11.4f  %11.1f", r.mean_logprob, r.mean_top1_share, r.median_first_rank);
      std::printf("\n");
      json m = {{"model", r.model}, {"accuracy", r.accuracy}, {"correct", r.correct}, {"total", r.total},
                {"decode_tokens_per_s", r.decode_tokens_per_s}};
      if (i > 0) m["forgetting"] = results[0].accuracy - r.accuracy;
      if (args.score) {
        m["mean_answer_logprob"] = r.mean_logprob;
        m["mean_answer_top1_share"] = r.mean_top1_share;
        m["median_first_token_rank"] = r.median_first_rank;
        if (i > 0) m["answer_logprob_change"] = r.mean_logprob - results[0].mean_logprob;
      }
      metrics_models.push_back(m);
    }
    if (!args.out.empty()) {
      pred_writer->commit();
      json metrics = {{"data", args.data}, {"match", match_kind_name(match)}, {"max_new_tokens", args.max_new_tokens},
                      {"models", metrics_models}};
      write_file_atomic(args.out + "/metrics.json", metrics.dump(2) + "\n");
    }
    return 0;
  } catch (const std::exception& e) {  // EngineError and anything else: a message, never a crash
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
