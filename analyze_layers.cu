// analyze_layers: where do checkpoints store their facts? Logit lens and layer swapping.
//
//   ./analyze_layers --model run/stage1/final --model run/stage2/final --data kvr.bin
//                    --reference base/final --out layers/
//
// For every model and every question of --data (QA shards or JSONL, rendered exactly as
// ./eval_factoids renders them): the logit lens at every layer boundary (eval/layer_lens.h) on every
// answer token under teacher forcing, ℓ* per fact, per-layer curves, the ℓ* histogram, its mean and
// entropy. With --reference: the exact-match accuracy after swapping each layer's attention, MLP
// or whole block for the reference's, and after swapping blocks 0..l. Writes OUT/metrics.json,
// OUT/lens.jsonl (one row per fact and layer boundary) and gnuplot charts (OUT/*.png).
// With --device cuda everything runs on the GPU: one model per checkpoint, planned with
// ModelUse::analysis (every layer's residual stream, no gradients or optimizer state), serves the
// lens and every swap evaluation; --dry-run prints that model's GPU memory plan.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "dataloader/prompt_template.h"
#include "eval/factoid_eval.h"
#include "eval/layer_lens.h"
#include "kernels/cuda_memory_plan.h"  // --dry-run
#include "model/config.h"
#include "model/llama.h"
#include "model/params.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"
#if defined(ENGINE_CUDA)
#include "kernels/cuda_backend.h"  // --device cuda (the Makefile defines ENGINE_CUDA when nvcc is found)
#endif

using nlohmann::json;

struct Args {
  std::vector<std::string> models;
  std::string data, reference, tokenizer, template_name, out, match = "exact", device = "cpu";
  int batch_size = 32, max_new_tokens = 32, threads = 0;
  int64_t limit = 0;
  bool quiet = false, dry_run = false;
};

static void declare_options(CLI::App& app, Args& a) {
  cli::init(app, "usage: analyze_layers --model DIR [--model DIR ...] --data QA --out DIR [options]");
  app.description(
      "Logit lens (the final norm and LM head read off the residual stream after every layer) on the\n"
      "answer tokens of every question, per-fact storage layer l*, and with --reference the accuracy\n"
      "after swapping layers for the reference's. See docs/analysis.md.");
  auto opt = [&](const char* name, auto& var, const char* metavar, const char* help) {
    return app.add_option(name, var, help)->option_text(metavar);
  };
  cli::repeatable(opt("--model", a.models, "DIR", "HF model directory or train_llama checkpoint (repeatable)"));
  opt("--data", a.data, "QA", "QA JSONL or QA shards (comma-separated paths or globs), as eval_factoids");
  opt("--out", a.out, "DIR", "writes DIR/metrics.json, DIR/lens.jsonl and the charts DIR/*.png");
  opt("--reference", a.reference, "DIR",
      "swap each layer of every --model for this checkpoint's (same shapes\n"
      "and tokenizer) and report the exact-match accuracy after each swap");
  opt("--template", a.template_name, "NAME|FILE",
      "prompt template for JSONL data (default: from the checkpoints, as\neval_factoids)");
  opt("--tokenizer", a.tokenizer, "FILE", "tokenizer.json (default: the model directory's)");
  opt("--match", a.match, "exact|squad|contains", "answer matching of the swap evaluations (default exact)");
  opt("--max-new-tokens", a.max_new_tokens, "N", "longest answer of the swap evaluations (default 32)")
      ->check(cli::integer(1, 1 << 20));
  opt("--batch-size", a.batch_size, "N", "questions per forward pass / decoding batch (default 32)")
      ->check(cli::integer(1, 1 << 16));
  opt("--limit", a.limit, "N", "only the first N questions")->check(cli::integer(0, int64_t(1) << 40));
  opt("--device", a.device, "cpu|cuda", "backend of the whole analysis: the lens and every swap evaluation\n(default cpu)")
      ->check(cli::one_of({"cpu", "cuda"}));
  opt("--threads", a.threads, "N", "CPU threads (default: OpenMP's default)")->check(cli::integer(0, 4096));
  app.add_flag("--quiet", a.quiet, "no progress lines");
  app.add_flag("--dry-run", a.dry_run,
               "print the GPU memory plan of each model's analysis (from config.json,\nthe data and "
               "--batch-size; no weights are read) and exit");
}

// Progress of one phase (common/progress.h) from a callback that reports work done so far; none
// with --quiet. The total is known at the first report.
struct PhaseProgress {
  PhaseProgress(bool q, std::string w, std::string u) : quiet(q), what(std::move(w)), unit(std::move(u)) {}
  bool quiet;
  std::string what, unit;
  std::unique_ptr<Progress> progress;
  size_t done = 0;
  void update(size_t now, size_t total) {
    if (quiet) return;
    if (!progress) progress = std::make_unique<Progress>(what, int64_t(total), unit);
    progress->add(int64_t(now - done));
    done = now;
  }
};

struct Checkpoint {
  std::string dir;
  LlamaConfig config;
  ParamLayout layout;
  std::vector<float> params;
  std::unique_ptr<Tokenizer> tok;
};

// The config and tokenizer, and the weights unless `weights` is false (--dry-run).
static Checkpoint load_checkpoint(const std::string& dir, const std::string& tokenizer, bool weights = true) {
  Checkpoint c;
  c.dir = dir;
  c.config = load_config(dir + "/config.json");
  c.layout = make_param_layout(c.config);
  if (weights) {
    c.params.resize(c.layout.total);
    load_weights(dir, c.config, c.layout, c.params.data());
  }
  const std::string tok_path = !tokenizer.empty() ? tokenizer : dir + "/tokenizer.json";
  check(file_exists(tok_path), dir, ": no tokenizer.json (give --tokenizer)");
  c.tok = std::make_unique<Tokenizer>(Tokenizer::from_json_file(tok_path));
  return c;
}

// A model on the chosen backend holding `params`, shaped for the analysis (AnalysisShape).
template <class Backend>
static std::unique_ptr<LlamaModel<Backend>> make_model(const LlamaConfig& config, const std::vector<float>& params,
                                                       const AnalysisShape& shape, ModelUse use) {
  auto m = std::make_unique<LlamaModel<Backend>>(config, shape.rows, shape.T, use);
  m->load_params(params.data());
  return m;
}

// The lens of one checkpoint, and with a reference its swap profile (as metrics.json's "swap"), all
// on one backend. The reference's own accuracy is measured once, in a model of its own (its config)
// that is gone before the checkpoint's is made: one model on the device at a time.
template <class Backend>
static std::vector<FactLens> analyze_on(const Checkpoint& ck, const Checkpoint* ref, const std::vector<EvalItem>& items,
                                        const Args& args, MatchKind match, double& ref_accuracy, json& swap) {
  const AnalysisShape shape = analysis_shape(items, args.batch_size, ref ? args.max_new_tokens : 0);
  const GreedyOptions opt = make_stop_options(*ck.tok, ck.config, args.max_new_tokens, args.batch_size);
  if (ref && ref_accuracy < 0)
    ref_accuracy = evaluate_factoids(*make_model<Backend>(ref->config, ref->params, shape, ModelUse::inference),
                                     *ref->tok, items, opt, match).accuracy;
  auto m = make_model<Backend>(ck.config, ck.params, shape, ModelUse::analysis);
  PhaseProgress lens_progress{args.quiet, "analyze_layers: lens " + ck.dir, "questions"};
  std::vector<FactLens> facts =
      run_logit_lens(*m, items, shape.rows, [&](size_t done) { lens_progress.update(done, items.size()); });
  if (!ref) return facts;
  const EvalOutcome base = evaluate_factoids(*m, *ck.tok, items, opt, match);
  PhaseProgress progress{args.quiet, "analyze_layers: swaps " + ck.dir, "swaps"};
  const std::vector<SwapRow> rows =
      run_swap_profile(*m, ck.params.data(), ref->params.data(), *ck.tok, items, opt, match,
                       [&](size_t done, size_t total) { progress.update(done, total); });
  json jr = json::array();
  for (const SwapRow& r : rows)
    jr.push_back({{"part", r.part}, {"layer", r.layer}, {"correct", r.correct}, {"accuracy", r.accuracy}});
  swap = {{"reference", ref->dir}, {"accuracy", base.accuracy}, {"correct", base.num_correct},
          {"reference_accuracy", ref_accuracy}, {"match", match_kind_name(match)}, {"rows", jr}};
  return facts;
}

// --dry-run: the GPU memory plan of analyze_on's model for this data, next to the training plan
// the analysis does not need, and the host memory of the parameters analyze_layers keeps.
static void print_plan(const Checkpoint& ck, const std::vector<EvalItem>& items, const Args& args, bool reference) {
  const AnalysisShape sh = analysis_shape(items, args.batch_size, reference ? args.max_new_tokens : 0);
  const double GiB = 1024.0 * 1024.0 * 1024.0;
  std::printf("GPU memory plan (--device cuda) of %s: %s, %.3fB parameters, %zu questions; lens batches of %d x %d "
              "tokens",
              ck.dir.c_str(), ck.config.architecture.c_str(), ck.layout.total / 1e9, items.size(), sh.rows, sh.T);
  if (reference) std::printf("; swap decoding %d sequences x %d positions", sh.kv_seqs, sh.kv_len);
  std::printf("\n%s", format_cuda_memory_plan(cuda_memory_plan(ck.config, ck.layout, sh.rows, sh.T, false,
                                                                 ModelUse::analysis, sh.kv_seqs, sh.kv_len)).c_str());
  std::printf("planned for training instead (gradients, AdamW moments, backward activations): total %.2f GiB\n",
              cuda_memory_plan(ck.config, ck.layout, sh.rows, sh.T).total() / GiB);
  std::printf("host memory: fp32 parameters of the checkpoint %.2f GiB%s\n", ck.layout.total * 4.0 / GiB,
              reference ? ", and as much for the reference" : "");
}

static json l_star_json(const LStarSummary& s, const std::vector<int>& per_fact) {
  return {{"histogram", s.histogram}, {"never", s.never}, {"mean", std::isnan(s.mean) ? json(nullptr) : json(s.mean)},
          {"entropy_bits", s.entropy_bits}, {"per_fact", per_fact}};
}

// gnuplot draws OUT/<name>.png from OUT/<name>.gp (pngcairo, else png). Returns false when gnuplot
// is missing or fails (the .gp and .dat files stay for the user).
static bool plot(const std::string& out, const std::string& name, const std::string& body) {
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) return false;
  for (const char* term : {"pngcairo size 900,560 font 'sans,10'", "png size 900,560"}) {
    const std::string gp = out + "/" + name + ".gp";
    write_file_atomic(gp, std::string("set terminal ") + term + "\nset output '" + out + "/" + name + ".png'\n" + body);
    if (std::system(("gnuplot '" + gp + "' > /dev/null 2>&1").c_str()) == 0) return true;
  }
  return false;
}

static std::string gp_quote(const std::string& s) {
  std::string q;
  for (char c : s) q += c == '\'' ? std::string("''") : std::string(1, c);
  return "'" + q + "'";
}

static std::vector<std::string> draw_charts(const std::string& out, const json& models, int L) {
  std::vector<std::string> drawn;
  // Lens curves: first-answer-token top-1 share per layer boundary, one curve per checkpoint.
  std::string dat = "# boundary";
  for (size_t i = 0; i < models.size(); ++i) dat += "\tmodel" + std::to_string(i);
  dat += "\n";
  for (int l = 0; l <= L; ++l) {
    dat += std::to_string(l);
    for (const auto& m : models) dat.append("\t").append(std::to_string(m["lens"]["top1_first"][l].get<double>()));
    dat += "\n";
  }
  write_file_atomic(out + "/lens.dat", dat);
  std::string plots;
  for (size_t i = 0; i < models.size(); ++i)
    plots += std::string(i ? ", " : "") + "'" + out + "/lens.dat' using 1:" + std::to_string(i + 2) +
             " with linespoints lw 2 title " + gp_quote(models[i]["model"]);
  if (plot(out, "lens", "set title 'Logit lens: gold first answer token is top-1'\nset xlabel 'layer boundary (0 = "
                        "embeddings, " + std::to_string(L) + " = last block)'\nset ylabel 'share of facts'\n"
                        "set yrange [0:1.05]\nset xtics 1\nset grid\nset key noenhanced bottom right\nplot " + plots + "\n"))
    drawn.push_back("lens.png");

  // ℓ* histograms, clustered per boundary (last cluster: never).
  dat = "# l_star";
  for (size_t i = 0; i < models.size(); ++i) dat += "\tmodel" + std::to_string(i);
  dat += "\n";
  for (int l = 0; l <= L + 1; ++l) {
    dat += l <= L ? std::to_string(l) : std::string("never");
    for (const auto& m : models) {
      const json& s = m["l_star"];
      const double n = double(m["num_facts"].get<int64_t>());
      const double c = l <= L ? s["histogram"][l].get<double>() : s["never"].get<double>();
      dat.append("\t").append(std::to_string(n > 0 ? c / n : 0.0));
    }
    dat += "\n";
  }
  write_file_atomic(out + "/l_star.dat", dat);
  plots.clear();
  for (size_t i = 0; i < models.size(); ++i)
    plots += std::string(i ? ", " : "") + "'" + out + "/l_star.dat' using " + std::to_string(i + 2) +
             (i ? "" : ":xtic(1)") + " title " + gp_quote(models[i]["model"]);
  if (plot(out, "l_star", "set title 'l*: first layer from which the gold token stays top-1'\nset style data "
                          "histograms\nset style histogram clustered gap 1\nset style fill solid 0.85 border -1\n"
                          "set boxwidth 0.9\nset yrange [0:1.05]\nset ylabel 'share of facts'\nset grid ytics\n"
                          "set key noenhanced top left\nplot " + plots + "\n"))
    drawn.push_back("l_star.png");

  // Swap profiles, one chart per analysed checkpoint.
  for (size_t i = 0; i < models.size(); ++i) {
    if (!models[i].contains("swap")) continue;
    const json& sw = models[i]["swap"];
    std::string d = "# layer\tattention\tmlp\tblock\tcumulative\n";
    for (int l = 0; l < L; ++l) {
      d += std::to_string(l);
      for (const char* part : {"attention", "mlp", "block", "cumulative"})
        for (const auto& r : sw["rows"])
          if (r["part"] == part && r["layer"] == l) d.append("\t").append(std::to_string(r["accuracy"].get<double>()));
      d += "\n";
    }
    const std::string name = "swap_" + std::to_string(i);
    write_file_atomic(out + "/" + name + ".dat", d);
    const std::string f = "'" + out + "/" + name + ".dat'";
    char ref[160];
    std::snprintf(ref, sizeof ref, "%.4f title 'unswapped', %.4f title 'reference' dt 2", sw["accuracy"].get<double>(),
                  sw["reference_accuracy"].get<double>());
    if (plot(out, name, "set title " + gp_quote("Layer swap: " + models[i]["model"].get<std::string>() + " <- " +
                                                sw["reference"].get<std::string>()) +
                            " noenhanced\nset xlabel 'layer (cumulative: layers 0..l)'\nset ylabel 'exact-match "
                            "accuracy'\nset yrange [0:1.05]\nset xtics 1\nset grid\nset key outside right\nplot " + f +
                            " using 1:2 with linespoints lw 2 title 'attention', " + f +
                            " using 1:3 with linespoints lw 2 title 'MLP', " + f +
                            " using 1:4 with linespoints lw 2 title 'block', " + f +
                            " using 1:5 with linespoints lw 2 title 'blocks 0..l', " + ref + "\n"))
      drawn.push_back(name + ".png");
  }
  return drawn;
}

int main(int argc, char** argv) {
  try {
    CLI::App app;
    Args args;
    declare_options(app, args);
    if (int rc = cli::parse_or_usage(app, argc, argv); rc >= 0) return rc;
    set_progress_enabled(!args.quiet);  // also the swap evaluations' own progress lines
    check(!args.models.empty(), "--model is required (see --help)");
    check(!args.data.empty(), "--data is required (see --help)");
    check(args.dry_run || !args.out.empty(), "--out is required (see --help)");
#if !defined(ENGINE_CUDA)
    check(args.dry_run || args.device != "cuda", "--device cuda: this build has no CUDA backend (built without nvcc)");
#endif
    if (args.threads > 0) omp_set_num_threads(args.threads);
    const MatchKind match = parse_match_kind(args.match);
    const std::string explicit_template = args.template_name.empty() ? "" : resolve_template(args.template_name);
    const bool questions = is_question_file(args.data);
    std::unique_ptr<AtomicFileWriter> rows_out;
    if (!args.dry_run) {
      make_dirs(args.out);
      rows_out = std::make_unique<AtomicFileWriter>(args.out + "/lens.jsonl");
    }

    const bool weights = !args.dry_run;
    std::unique_ptr<Checkpoint> ref;
    if (!args.reference.empty())
      ref = std::make_unique<Checkpoint>(load_checkpoint(args.reference, args.tokenizer, weights));
    double ref_accuracy = -1;
    json models = json::array();
    int L = -1;
    std::string first_template;
    for (const std::string& dir : args.models) {
      const Checkpoint ck = load_checkpoint(dir, args.tokenizer, weights);
      check(L < 0 || ck.config.num_hidden_layers == L, dir, ": config.json field 'num_hidden_layers' is ",
            ck.config.num_hidden_layers, " but ", args.models[0], " has ", L, ": the lens curves share one layer axis");
      L = ck.config.num_hidden_layers;
      if (ref) check_swap_compatible(dir, ck.config, *ck.tok, ref->dir, ref->config, *ref->tok);  // before any work
      const std::string tmpl = !explicit_template.empty() || !questions ? explicit_template
                                                                        : question_template(dir, first_template);
      if (&dir == &args.models.front()) first_template = tmpl;
      const std::vector<EvalItem> items = load_eval_items(args.data, *ck.tok, tmpl, args.limit);
      check(!items.empty(), args.data, ": no questions");
      if (args.dry_run) {
        print_plan(ck, items, args, ref != nullptr);
        continue;
      }

      std::vector<FactLens> facts;
      json swap;
#if defined(ENGINE_CUDA)
      if (args.device == "cuda") facts = analyze_on<CudaBackend>(ck, ref.get(), items, args, match, ref_accuracy, swap);
      else
#endif
        facts = analyze_on<CpuBackend>(ck, ref.get(), items, args, match, ref_accuracy, swap);
      const LensSummary s = summarize_lens(facts, L);

      std::vector<int> ls, ls_all;
      for (size_t i = 0; i < facts.size(); ++i) {
        const FactLens& f = facts[i];
        ls.push_back(f.l_star);
        ls_all.push_back(f.l_star_all);
        for (int l = 0; l <= L; ++l) {
          json probs = json::array(), ranks = json::array();
          int top1 = 0;
          for (int j = 0; j < f.answer_len; ++j) {
            probs.push_back(f.stat(l, j).prob);
            ranks.push_back(f.stat(l, j).rank);
            top1 += f.stat(l, j).rank == 0;
          }
          json row = {{"model", dir}, {"fact", i}, {"layer", l}, {"question", items[i].question},
                      {"gold", items[i].golds.empty() ? "" : items[i].golds[0]}, {"prompt_ids", items[i].prompt_ids},
                      {"gold_ids", items[i].answer_ids},
                      {"prob", f.stat(l, 0).prob}, {"rank", f.stat(l, 0).rank}, {"top1_id", f.stat(l, 0).top1_id},
                      {"top1", f.stat(l, 0).rank == 0}, {"answer_prob", probs}, {"answer_rank", ranks},
                      {"answer_top1_share", double(top1) / f.answer_len},
                      {"l_star", f.l_star < 0 ? json(nullptr) : json(f.l_star)},
                      {"l_star_all", f.l_star_all < 0 ? json(nullptr) : json(f.l_star_all)}};
          const std::string line = row.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
          rows_out->write(line.data(), line.size());
        }
      }
      json m = {{"model", dir},
                {"num_facts", facts.size()},
                {"lens", {{"top1_first", s.top1_first}, {"prob_first", s.prob_first}, {"top1_tokens", s.top1_tokens},
                          {"prob_tokens", s.prob_tokens}}},
                {"l_star", l_star_json(s.l_star, ls)},
                {"l_star_all", l_star_json(s.l_star_all, ls_all)}};

      if (ref) m["swap"] = swap;
      if (!args.quiet) {
        std::printf("%s: %zu facts; top-1 of the first answer token by layer boundary:", dir.c_str(), facts.size());
        for (double v : s.top1_first) std::printf(" %.3f", v);
        std::printf("; l* mean %.3f, entropy %.3f bits, never %lld\n", s.l_star.mean, s.l_star.entropy_bits,
                    (long long)s.l_star.never);
      }
      models.push_back(m);
    }
    if (args.dry_run) return 0;
    rows_out->commit();
    const std::vector<std::string> charts = draw_charts(args.out, models, L);
    if (charts.empty()) std::fprintf(stderr, "note: gnuplot not found or failed: no charts (the .gp files are in %s)\n", args.out.c_str());
    json metrics = {{"data", args.data}, {"layers", L}, {"device", args.device}, {"models", models}, {"charts", charts}};
    write_file_atomic(args.out + "/metrics.json", metrics.dump(1) + "\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
