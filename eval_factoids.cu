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
// --heldout adds each model's loss and perplexity on shards never trained on (D_B's own metric,
// beside D_A's forgetting), with the training forward and masking.
//
//   ./eval_factoids --model s1/final --model s2/final --data popqa.jsonl --heldout gsm8k_test.bin
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "common/nvtx.h"
#include "dataloader/prompt_template.h"
#include "eval/answer_stats.h"
#include "eval/factoid_eval.h"
#include "eval/heldout_loss.h"
#include "larimar/readout.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/decode.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"
#if defined(ENGINE_CUDA)
#include "kernels/cuda_backend.h"  // --device cuda (the Makefile defines ENGINE_CUDA when nvcc is found)
#endif

using nlohmann::json;

struct EvalArgs {
  std::vector<std::string> models;
  std::string data, heldout, tokenizer, template_name, out, match = "exact", device = "auto", memory, larimar;
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
  opt("--heldout", a.heldout, "SHARDS",
      "also the loss and perplexity of shards never trained on, over\n"
      "their trained-on tokens (any mode: qa, chat, text); --data is\n"
      "then optional");
  opt("--template", a.template_name, "NAME|FILE",
      "prompt template for JSONL data (default: from the checkpoints'\n"
      "trainer_state.json, so it matches training: the first model's\n"
      "template for every model trained on it in an earlier stage)");
  opt("--tokenizer", a.tokenizer, "FILE", "tokenizer.json (default: the model directory's)");
  opt("--match", a.match, "exact|squad|contains|gsm8k",
      "matching rule (default exact: strip + lowercase, equality;\n"
      "gsm8k: the final number against the one after ####, on the\n"
      "whole multi-line answer)");
  opt("--max-new-tokens", a.max_new_tokens, "N", "longest answer in tokens (default 32)")->check(cli::integer(1, 1 << 20));
  opt("--batch-size", a.batch_size, "N", "sequences decoded together (default 32)")->check(cli::integer(1, 1 << 20));
  opt("--limit", a.limit, "N", "evaluate only the first N questions")->check(cli::integer(0, int64_t(1) << 40));
  app.add_flag("--score", a.score,
               "also score each gold answer under teacher forcing: log-likelihood\n"
               "(sum, mean), share of tokens predicted top-1, first-token rank");
  opt("--memory", a.memory, "FILE",
      "decode (and with --score, score) each answer conditioned on the question's\n"
      "readout from this Larimar memory file (larimar_edit), through --larimar");
  opt("--larimar", a.larimar, "DIR", "Larimar directory: encoder/ and larimar.safetensors (docs/larimar.md)");
  opt("--out", a.out, "DIR", "write DIR/predictions.jsonl and DIR/metrics.json");
  opt("--threads", a.threads, "N", "CPU threads (default: OpenMP's default)")->check(cli::integer(0, 4096));
  opt("--device", a.device, "auto|cpu|cuda", "backend (default auto)")->check(cli::one_of({"auto", "cpu", "cuda"}));
  app.add_flag("--quiet", a.quiet, "only the table (no progress lines)");
}

struct ModelResult {
  std::string model;
  int64_t correct = 0, total = 0;
  double accuracy = 0, decode_tokens_per_s = 0;
  // --score: means over the questions of each answer's mean log-prob and top-1 share, and the
  // median first-token rank (ranks are heavy-tailed: a mean would follow the few worst facts).
  double mean_logprob = 0, mean_top1_share = 0, median_first_rank = 0;
  HeldoutLoss heldout;
};

// Held-out loss of one model on the chosen backend; a fresh model sized for the data, planned for
// inference (the loss needs the last layer's output only: no gradients, moments or per-layer activations).
template <class Backend>
static HeldoutLoss heldout_on(const LlamaConfig& config, const std::vector<float>& params, const HeldoutData& data) {
  LlamaModel<Backend> model(config, data.rows, data.T, ModelUse::inference);
  model.load_params(params.data());
  return heldout_loss(model, data);
}

// Greedy answers (and with --score the answers' log-likelihoods) of one model on the chosen
// backend, through LlamaModel's KV-cache mode: the same loops on every device. `params` (host) is
// handed over to the model and emptied, unless the held-out loss still needs them.
template <class Backend>
static EvalOutcome run_model(const LlamaConfig& config, std::vector<float>& params, const Tokenizer& tok,
                             const std::vector<EvalItem>& items, const EvalArgs& args, MatchKind match,
                             std::vector<AnswerStats>* scores, double* decode_seconds) {
  // Sized for the longest prompt plus its answer (greedy or gold, for --score).
  size_t max_len = 1;
  for (const auto& it : items)
    max_len = std::max(max_len, it.prompt_ids.size() + std::max<size_t>(args.max_new_tokens, it.answer_ids.size()));
  const int rows = std::max(1, std::min(args.batch_size, int(items.size())));
  LlamaModel<Backend> model(config, rows, int(max_len), ModelUse::inference);
  model.load_params(params.data());
  if (args.heldout.empty()) std::vector<float>().swap(params);  // the model holds them now
  // --memory: every question's memory readout conditions its decoding (LlamaModel::condition).
  float *slot = nullptr, *embed = nullptr;
  if (!args.memory.empty()) {
    std::vector<std::string> questions;
    for (const auto& it : items) questions.push_back(it.question);
    const larimar::Conditioning c =
        larimar::memory_conditioning(args.larimar, args.memory, config, questions, args.batch_size);
    slot = Backend::template alloc<float>(c.slot.size());
    embed = Backend::template alloc<float>(c.embed.size());
    Backend::upload(slot, c.slot.data(), c.slot.size());
    Backend::upload(embed, c.embed.data(), c.embed.size());
    model.plan_condition();
    model.condition = {slot, embed, c.rows};
  }
  GreedyOptions opt =
      make_stop_options(tok, config, args.max_new_tokens, args.batch_size, match_uses_first_line(match));
  auto t0 = std::chrono::steady_clock::now();
  EvalOutcome r = evaluate_factoids(model, tok, items, opt, match);
  *decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (args.score) *scores = score_items(model, items, args.batch_size);
  if (slot) {
    Backend::free(slot);
    Backend::free(embed);
  }
  return r;
}

int main(int argc, char** argv) {
  try {
    CLI::App app;
    EvalArgs args;
    declare_options(app, args);
    if (int rc = cli::parse_or_usage(app, argc, argv); rc >= 0) return rc;
    set_progress_enabled(!args.quiet);
    check(!args.models.empty(), "--model is required (see --help)");
    check(!args.data.empty() || !args.heldout.empty(), "--data or --heldout is required (see --help)");
    check(args.memory.empty() == args.larimar.empty(), "--memory and --larimar go together (see --help)");
    check(args.memory.empty() || !args.data.empty(), "--memory: needs --data (questions to decode)");
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
    const bool questions = !args.data.empty() && is_question_file(args.data);
    const bool factoids = !args.data.empty();
    std::string reference_template;  // the first model's
    for (const std::string& dir : args.models) {
      NVTX_RANGE("eval");
      LlamaConfig config = load_config(dir + "/config.json");
      ParamLayout layout = make_param_layout(config);
      check_host_memory(dir + ": " + std::to_string(layout.total) + " parameters", {{"fp32 weights", 4.0 * layout.total}},
                        "Use a smaller model, or a machine with more memory");
      std::vector<float> params(layout.total);
      load_weights(dir, config, layout, params.data());
      const std::string tok_path = !args.tokenizer.empty() ? args.tokenizer : dir + "/tokenizer.json";
      check(file_exists(tok_path), dir, ": no tokenizer.json (give --tokenizer)");
      Tokenizer tok = Tokenizer::from_json_file(tok_path);

      const std::string template_text =
          !explicit_template.empty() || !questions ? explicit_template : question_template(dir, reference_template);
      if (results.empty()) reference_template = template_text;
      std::vector<EvalItem> items;
      if (factoids) items = load_eval_items(args.data, tok, template_text, args.limit);
      check(!factoids || !items.empty(), args.data, ": no questions");

      std::vector<AnswerStats> scores;
      double secs = 0;
      EvalOutcome r;
#if defined(ENGINE_CUDA)
      if (factoids && args.device == "cuda") r = run_model<CudaBackend>(config, params, tok, items, args, match, &scores, &secs);
      else
#endif
      if (factoids) r = run_model<CpuBackend>(config, params, tok, items, args, match, &scores, &secs);
      int64_t generated = 0;
      for (const auto& o : r.output_ids) generated += int64_t(o.size());

      ModelResult mr;
      mr.model = dir;
      mr.correct = r.num_correct;
      mr.total = int64_t(items.size());
      mr.accuracy = r.accuracy;
      mr.decode_tokens_per_s = generated / std::max(secs, 1e-9);
      if (!args.quiet && factoids)
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
      if (args.score && !items.empty()) {
        mr.mean_logprob = sum_mean / double(items.size());
        mr.mean_top1_share = sum_top1 / double(items.size());
        std::sort(ranks.begin(), ranks.end());
        const size_t n = ranks.size();
        mr.median_first_rank = n % 2 ? ranks[n / 2] : 0.5 * (ranks[n / 2 - 1] + ranks[n / 2]);
      }
      if (!args.heldout.empty()) {
        const HeldoutData hd = load_heldout(args.heldout, tok.hash(), config.vocab_size, config.max_position_embeddings);
        const auto h0 = std::chrono::steady_clock::now();
#if defined(ENGINE_CUDA)
        if (args.device == "cuda") mr.heldout = heldout_on<CudaBackend>(config, params, hd);
        else
#endif
          mr.heldout = heldout_on<CpuBackend>(config, params, hd);
        check(mr.heldout.target_tokens > 0, args.heldout, ": no trained-on tokens to score");
        const double hs = std::chrono::duration<double>(std::chrono::steady_clock::now() - h0).count();
        if (!args.quiet)
          std::printf("%s: held-out loss %.4f, perplexity %.4f over %lld tokens of %lld examples%s in %.2fs\n",
                      dir.c_str(), mr.heldout.mean_loss(), mr.heldout.perplexity(),
                      (long long)mr.heldout.target_tokens, (long long)mr.heldout.examples,
                      hd.truncated ? (" (" + std::to_string(hd.truncated) + " cut to the context of " +
                                      std::to_string(hd.T) + " tokens)").c_str()
                                   : "",
                      hs);
      }
      results.push_back(mr);
    }

    // The table; forgetting = accuracy drop (percentage points) relative to the first model.
    size_t w = 5;
    for (const auto& r : results) w = std::max(w, r.model.size());
    const bool heldout = !args.heldout.empty();
    std::printf("\n%-*s", int(w), "model");
    if (factoids) std::printf("  %9s  %13s  %10s%s", "accuracy", "correct/total", "forgetting", args.score ? "  mean logprob  top-1 share  median rank" : "");
    if (heldout) std::printf("  %12s  %12s", "heldout loss", "heldout ppl");
    std::printf("\n");
    json metrics_models = json::array();
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      double forgetting = 100.0 * (results[0].accuracy - r.accuracy);
      char cnt[64], fg[32];
      std::snprintf(cnt, sizeof cnt, "%lld/%lld", (long long)r.correct, (long long)r.total);
      if (i == 0) std::snprintf(fg, sizeof fg, "-");
      else std::snprintf(fg, sizeof fg, "%.2f", forgetting);
      std::printf("%-*s", int(w), r.model.c_str());
      if (factoids) std::printf("  %8.2f%%  %13s  %10s", 100.0 * r.accuracy, cnt, fg);
      if (factoids && args.score) std::printf("  %12.4f  %11.4f  %11.1f", r.mean_logprob, r.mean_top1_share, r.median_first_rank);
      if (heldout) std::printf("  %12.4f  %12.4f", r.heldout.mean_loss(), r.heldout.perplexity());
      std::printf("\n");
      json m = {{"model", r.model}};
      if (factoids) {
        m["accuracy"] = r.accuracy;
        m["correct"] = r.correct;
        m["total"] = r.total;
        m["decode_tokens_per_s"] = r.decode_tokens_per_s;
        if (i > 0) m["forgetting"] = results[0].accuracy - r.accuracy;
      }
      if (args.score) {
        m["mean_answer_logprob"] = r.mean_logprob;
        m["mean_answer_top1_share"] = r.mean_top1_share;
        m["median_first_token_rank"] = r.median_first_rank;
        if (i > 0) m["answer_logprob_change"] = r.mean_logprob - results[0].mean_logprob;
      }
      if (heldout)
        m["heldout"] = {{"loss", r.heldout.mean_loss()},       {"perplexity", r.heldout.perplexity()},
                        {"target_tokens", r.heldout.target_tokens}, {"examples", r.heldout.examples},
                        {"truncated", r.heldout.truncated}};
      metrics_models.push_back(m);
    }
    if (!args.out.empty()) {
      pred_writer->commit();
      json metrics = {{"data", args.data}, {"match", match_kind_name(match)}, {"max_new_tokens", args.max_new_tokens},
                      {"models", metrics_models}};
      if (heldout) metrics["heldout"] = args.heldout;
      write_file_atomic(args.out + "/metrics.json", metrics.dump(2) + "\n");
    }
    return 0;
  } catch (const std::exception& e) {  // EngineError and anything else: a message, never a crash
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
