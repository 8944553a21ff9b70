// The demo pipeline in miniature: scripts/demo.py --mini runs every stage of `make demo` (offline
// data from Debian packages, tokenizer training, shards, base-model pretraining, stage 1 under two
// mixes, stage 2 with and without mixing and with replay, evaluation, report) on a few dozen
// examples and a model of a few thousand parameters. The test checks that every stage produced its
// outputs, that every number of the results table equals the metrics.json value it cites, and that
// a second unchanged run reuses every stage.
//
// Run from the repository root (as `make test` does); it needs the binaries (`make`).
#include <catch2/catch.hpp>

#include <chrono>
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
  for (const char* bin : {"tokenize", "prepare_data", "train_llama", "eval_factoids", "analyze_layers"}) {
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
                        "data-fr/fr.jsonl", "data-code/code.jsonl", "tokenizer/tokenizer.json",
                        "base-config/config.json"}) {
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
  // Shards with their JSONL copies.
  for (const char* s : {"pretrain", "kvr", "random", "generic", "fr", "code"}) {
    INFO("shards-" << s);
    CHECK(fs::file_size(run / ("shards-" + std::string(s)) / "data.bin") > 0);
    CHECK(fs::file_size(run / ("shards-" + std::string(s)) / "data.jsonl") > 0);
  }
  // Every trained model, every evaluation.
  std::vector<std::string> models = {"base", "stage1-none", "stage1-remix"};
  std::vector<std::string> runs = {"stage2-fr-from-none-mix-none", "stage2-fr-from-none-mix-replay",
                                   "stage2-fr-from-remix-mix-generic", "stage2-code-from-none-mix-none",
                                   "stage2-code-from-none-mix-replay", "stage2-code-from-remix-mix-generic"};
  for (auto& r : runs) models.push_back(r);
  for (auto& m : models) {
    INFO(m);
    CHECK(fs::exists(run / m / "run" / "final" / "model.safetensors"));
    CHECK(fs::exists(run / m / "run" / "final" / "config.json"));
    CHECK(fs::exists(run / m / "stage.json"));
  }
  for (auto& r : runs) {
    INFO(r);
    json a = read_json_file(run / ("eval-" + r) / "d_a" / "metrics.json");
    CHECK(!a.empty());
    if (r.rfind("stage2-fr", 0) == 0) CHECK(fs::exists(run / ("eval-" + r) / "d_b" / "metrics.json"));
  }
  // The report: markdown with the table and the chart, and results.json whose every number equals
  // the metrics.json value it cites.
  std::string report = read_all(run / "report.md");
  CHECK(report.find("| D_B (stage 2) |") != std::string::npos);
  CHECK(report.find("## Outcome") != std::string::npos);
  CHECK((fs::exists(run / "chart.png") || fs::exists(run / "chart.svg")));
  if (fs::exists(run / "chart.png")) {
    std::string png = read_all(run / "chart.png");
    CHECK(png.substr(1, 3) == "PNG");
  }
  json results = read_json_file(run / "results.json");
  REQUIRE(results.at("rows").size() == runs.size());
  int compared = 0;
  for (auto& row : results.at("rows")) {
    for (const char* k : {"d_a_after_stage1", "d_a_after_stage2", "drop", "d_b_after_stage2"}) {
      if (row.at(k).is_null()) continue;
      json cited = follow_source(row.at(k).at("source").get<std::string>());
      INFO(row.at("run") << " " << k);
      CHECK(cited == row.at(k).at("value"));
      compared++;
    }
    // The D_A accuracies are in [0, 1] and the drop is their difference.
    double a1 = row.at("d_a_after_stage1").at("value"), a2 = row.at("d_a_after_stage2").at("value");
    CHECK(a1 >= 0.0);
    CHECK(a1 <= 1.0);
    CHECK(row.at("drop").at("value").get<double>() == Approx(a1 - a2).margin(1e-9));
  }
  CHECK(compared >= 3 * (int)runs.size());
  // Each table row of report.md shows the D_A accuracy after stage 1 as in results.json.
  for (auto& row : results.at("rows")) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", row.at("d_a_after_stage1").at("value").get<double>());
    CHECK(report.find(buf) != std::string::npos);
  }

  // "Where the facts are stored": the logit lens of every stage-1 checkpoint with its swap profile
  // against the base model, and of one stage-2 checkpoint per stage-1 mix; the statement about the
  // mixes is made from the l* values of metrics.json.
  CHECK(report.find("## Where the facts are stored") != std::string::npos);
  const json l1 = read_json_file(run / "layers-stage1" / "metrics.json");
  const json l2 = read_json_file(run / "layers-stage2" / "metrics.json");
  const int L = l1.at("layers");
  CHECK(L == 2);
  REQUIRE(l1.at("models").size() == 2);
  CHECK(l2.at("models").size() == 2);
  for (const json& m : l1["models"]) {
    CHECK(m.at("swap").at("reference") == kRunDir + "/base/run/final");
    CHECK(m["swap"]["rows"].size() == size_t(4 * L));
    CHECK(m["lens"]["top1_first"].size() == size_t(L + 1));
  }
  const json lj = read_json_file(run / "layers.json");
  REQUIRE(lj.at("statements").size() == 1);  // stage-1 mixes: none and remix
  const std::string statement = lj["statements"][0];
  CHECK(report.find(statement) != std::string::npos);
  auto stored = [](const json& m, double* mean) {
    int n = 0;
    double sum = 0;
    for (const json& v : m["l_star"]["per_fact"])
      if (v.get<int>() >= 0) sum += v.get<int>(), ++n;
    *mean = n ? sum / n : 0.0;
    return n;
  };
  double mean_none = 0, mean_remix = 0;
  const int n_none = stored(l1["models"][0], &mean_none), n_remix = stored(l1["models"][1], &mean_remix);
  if (n_none == 0 || n_remix == 0) {
    CHECK(statement.find("defined for " + std::to_string(n_remix) + " of its 16 facts and for " +
                         std::to_string(n_none) + " of the unmixed") != std::string::npos);
  } else {
    char buf[64];
    std::snprintf(buf, sizeof buf, "mean l* %.2f vs %.2f", mean_remix, mean_none);
    CHECK(statement.find(buf) != std::string::npos);
  }
  for (const char* png : {"layers-stage1/lens.png", "layers-stage1/l_star.png", "layers-stage1/swap_0.png",
                          "layers-stage2/lens.png"})
    if (std::system("command -v gnuplot > /dev/null 2>&1") == 0) CHECK(fs::exists(run / png));

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
