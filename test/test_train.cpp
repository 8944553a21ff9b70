// Whole-program tests of train_llama and eval_factoids (run as subprocesses from the repository
// root, after `make`): memorization of 64 KVR pairs to 100% exact match, bit-exact resume after
// SIGKILL at a random step and after SIGTERM, the non-finite guard, loss-based stopping, and the
// command line. Data comes from ./prepare_data (kvr mode); models are tiny --init configs. One
// thread per process, so that the runs are deterministic and do not fight over the two cores.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "common/file_io.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/params.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

using nlohmann::json;

namespace {

// Starts argv[0] with stdout/stderr redirected to `log`; env entries are added to the environment.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log,
            const std::map<std::string, std::string>& env = {}) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      ::close(fd);
    }
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

int wait_status(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

// Runs to completion; returns the exit code (or 128 + signal).
int run(const std::vector<std::string>& argv, const std::string& log, const std::map<std::string, std::string>& env = {}) {
  int st = wait_status(spawn(argv, log, env));
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string slurp(const std::string& path) { return file_exists(path) ? read_text_file(path) : std::string(); }

// Highest "step" of the step events in a JSONL training log (0 if none yet).
int64_t last_logged_step(const std::string& log) {
  std::ifstream f(log);
  std::string line;
  int64_t last = 0;
  while (std::getline(f, line)) {
    if (line.find("\"event\":\"step\"") == std::string::npos) continue;
    try {
      last = std::max(last, json::parse(line)["step"].get<int64_t>());
    } catch (...) {  // a line being written
    }
  }
  return last;
}

struct Data {
  std::string dir, tokenizer = "test/fixtures/tokenizer/ours.json", config, kvr, kvr_jsonl, other;
  Data() {
    dir = "build/test/tmp_train_" + std::to_string(getpid());
    remove_tree(dir);
    make_dirs(dir);
    config = dir + "/tiny.json";
    // vocab: the tokenizer fixture's size rounded up to a multiple of 64
    const int vocab = (Tokenizer::from_json_file(tokenizer).vocab_size() + 63) / 64 * 64;
    write_file_atomic(config, R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": )" + std::to_string(vocab) + R"(, "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
      "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
      "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1})");
    kvr = dir + "/kvr.bin";
    kvr_jsonl = dir + "/kvr.jsonl";
    other = dir + "/other.bin";
    REQUIRE(run({"./prepare_data", "--mode", "kvr", "--num", "64", "--seed", "1", "--tokenizer", tokenizer, "--output",
                 kvr, "--quiet"},
                dir + "/prep1.log") == 0);
    REQUIRE(run({"./prepare_data", "--mode", "kvr", "--num", "40", "--seed", "2", "--tokenizer", tokenizer, "--output",
                 other, "--quiet"},
                dir + "/prep2.log") == 0);
  }
  ~Data() {
    if (!std::getenv("KEEP_TEST_OUTPUT")) remove_tree(dir);
  }
  // A short run with gradient accumulation and a mixed stream, for the resume tests.
  std::vector<std::string> resume_args(const std::string& out) const {
    return {"./train_llama", "--init", config, "--tokenizer", tokenizer, "--data", kvr, "--mix",
            "other=" + other + ":0.5", "--steps", "36", "--batch-size", "8", "--micro-batch-size", "3", "--seq-len",
            "48", "--lr", "3e-3", "--save-every", "2", "--keep", "2", "--threads", "1", "--out", out, "--log",
            out + ".jsonl"};
  }
};

const Data& data() {
  static Data d;
  return d;
}

// The uninterrupted reference run of resume_args, made once.
const std::string& reference_run() {
  static std::string out = [] {
    std::string o = data().dir + "/straight";
    REQUIRE(run(data().resume_args(o), o + ".log") == 0);
    return o;
  }();
  return out;
}

}  // namespace

TEST_CASE("a tiny model memorizes 64 KVR pairs to 100% exact match, and eval_factoids agrees") {
  const Data& d = data();
  const std::string out = d.dir + "/memorize";
  int rc = run({"./train_llama", "--init", d.config, "--tokenizer", d.tokenizer, "--data", d.kvr, "--out", out,
                "--epochs", "150", "--batch-size", "16", "--seq-len", "64", "--lr", "1e-2", "--warmup-ratio", "0.02",
                "--eval-data", d.kvr_jsonl, "--eval-every-epochs", "5", "--stop-at-accuracy", "1.0", "--threads", "1",
                "--log", out + ".jsonl"},
               out + ".log");
  INFO(slurp(out + ".log"));
  REQUIRE(rc == 0);
  json st = load_trainer_state(out + "/final");
  REQUIRE(st["stop_reason"] == "accuracy");
  REQUIRE(st["evals"].back()["accuracy"] == 1.0);
  REQUIRE(st["prompt_template"].get<std::string>().find("{key}") != std::string::npos);
  // The JSONL log has the per-step fields and the evaluations.
  std::string log = slurp(out + ".jsonl");
  for (const char* f : {"\"loss\"", "\"lr\"", "\"grad_norm\"", "\"tokens_per_s\"", "\"eta_s\"", "\"progress\"",
                        "\"event\":\"eval\"", "\"accuracy\":1.0"})
    REQUIRE(log.find(f) != std::string::npos);
  REQUIRE(slurp(out + ".log").find("ETA") != std::string::npos);

  // eval_factoids on the final checkpoint (prompt template from the checkpoint) and the initial
  // weights (a second model: the table shows its forgetting).
  const std::string ev = d.dir + "/eval";
  rc = run({"./eval_factoids", "--model", out + "/final", "--data", d.kvr_jsonl, "--out", ev, "--threads", "1",
            "--score"},
           ev + ".log");
  INFO(slurp(ev + ".log"));
  REQUIRE(rc == 0);
  json metrics = json::parse(slurp(ev + "/metrics.json"));
  REQUIRE(metrics["models"][0]["accuracy"] == 1.0);
  REQUIRE(metrics["models"][0]["correct"] == 64);
  int lines = 0;
  std::ifstream preds(ev + "/predictions.jsonl");
  for (std::string line; std::getline(preds, line); ++lines) {
    json p = json::parse(line);
    REQUIRE(p["correct"] == true);
    REQUIRE(p["answer_logprob_sum"].get<double>() <= 0);
    REQUIRE(p.contains("prediction"));
  }
  REQUIRE(lines == 64);
  // Same questions from the shard instead of JSONL; the same checkpoint, twice: no forgetting.
  rc = run({"./eval_factoids", "--model", out + "/final", "--model", out + "/final", "--data", d.kvr, "--out",
            ev + "2", "--threads", "1"},
           ev + "2.log");
  REQUIRE(rc == 0);
  metrics = json::parse(slurp(ev + "2/metrics.json"));
  REQUIRE(metrics["models"][1]["accuracy"] == 1.0);
  REQUIRE(metrics["models"][1]["forgetting"] == 0.0);
  REQUIRE(slurp(ev + "2.log").find("forgetting") != std::string::npos);
}

// Savings (the relearning measure of forgetting) rests on two properties of --stop-at-accuracy:
// a model that already knows the facts stops after 0 steps (the evaluation before the first step),
// and relearning from the base with the same seed and data takes exactly stage 1's step count.
TEST_CASE("relearning: 0 steps from the memorized checkpoint, stage 1's own step count from the base") {
  const Data& d = data();
  const std::string dir = d.dir + "/savings", kvr16 = dir + "/kvr16.bin";
  make_dirs(dir);
  REQUIRE(run({"./prepare_data", "--mode", "kvr", "--num", "16", "--seed", "5", "--tokenizer", d.tokenizer, "--output",
               kvr16, "--quiet"},
              dir + "/prep.log") == 0);
  // The base: a few steps from --init (an ordinary checkpoint of ours, as a pretrained base is).
  REQUIRE(run({"./train_llama", "--init", d.config, "--tokenizer", d.tokenizer, "--data", d.other, "--steps", "2",
               "--batch-size", "8", "--seq-len", "64", "--threads", "1", "--out", dir + "/base"},
              dir + "/base.log") == 0);
  auto learn = [&](const std::string& from, const std::string& name) {
    const std::string out = dir + "/" + name;
    int rc = run({"./train_llama", "--model", from, "--data", kvr16, "--epochs", "100", "--batch-size", "4",
                  "--seq-len", "64", "--lr", "1e-2", "--warmup-ratio", "0.02", "--seed", "3", "--eval-data", kvr16,
                  "--eval-every-epochs", "1", "--stop-at-accuracy", "1.0", "--threads", "1", "--out", out},
                 out + ".log");
    INFO(slurp(out + ".log"));
    REQUIRE(rc == 0);
    return load_trainer_state(out + "/final");
  };
  json s1 = learn(dir + "/base/final", "stage1");
  REQUIRE(s1["stop_reason"] == "accuracy");
  const int64_t steps = s1["step"].get<int64_t>();
  REQUIRE(steps > 0);
  REQUIRE(s1["evals"][0]["step"] == 0);  // evaluated before the first step
  REQUIRE(s1["evals"][0]["accuracy"].get<double>() < 1.0);

  json again = learn(dir + "/stage1/final", "relearn_memorized");
  REQUIRE(again["stop_reason"] == "accuracy");
  REQUIRE(again["step"] == 0);
  REQUIRE(again["evals"].size() == 1);
  REQUIRE(again["evals"][0]["accuracy"] == 1.0);

  json from_base = learn(dir + "/base/final", "relearn_base");
  REQUIRE(from_base["stop_reason"] == "accuracy");
  REQUIRE(from_base["step"].get<int64_t>() == steps);
}

TEST_CASE("resume after SIGKILL at a random step gives byte-identical weights") {
  const Data& d = data();
  const std::string& ref = reference_run();
  REQUIRE(file_exists(ref + "/final/model.safetensors"));

  std::mt19937 rng(uint32_t(std::chrono::steady_clock::now().time_since_epoch().count()));
  const std::string out = d.dir + "/killed";
  int64_t kill_after = 0;
  int st = 0;
  // On a loaded machine the run may finish before the kill lands; then try again, earlier.
  for (int attempt = 0; attempt < 4; ++attempt) {
    remove_tree(out);
    std::remove((out + ".jsonl").c_str());
    kill_after = 4 + int64_t(rng() % (28 >> attempt));  // a step in [4, 31] of 36 at first
    pid_t pid = spawn(d.resume_args(out), out + ".log");
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (last_logged_step(out + ".jsonl") < kill_after && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    kill(pid, SIGKILL);
    st = wait_status(pid);
    if (WIFSIGNALED(st)) break;
  }
  INFO("killed after step " << kill_after << "\n" << slurp(out + ".log"));
  REQUIRE(WIFSIGNALED(st));
  REQUIRE_FALSE(dir_exists(out + "/final"));
  auto cks = list_run_checkpoints(out);
  REQUIRE(!cks.empty());
  REQUIRE(cks.size() <= 3);  // --keep 2 (+ possibly one being rotated in)

  // Only --resume: every other option comes from the checkpoint.
  int rc = run({"./train_llama", "--resume", out}, out + ".resume.log");
  INFO(slurp(out + ".resume.log"));
  REQUIRE(rc == 0);
  REQUIRE(slurp(out + ".resume.log").find("resumed from") != std::string::npos);
  REQUIRE(slurp(out + "/final/model.safetensors") == slurp(ref + "/final/model.safetensors"));
  REQUIRE(slurp(out + "/final/optimizer.safetensors") == slurp(ref + "/final/optimizer.safetensors"));
  REQUIRE(load_trainer_state(out + "/final")["step"] == 36);
}

TEST_CASE("SIGTERM saves a checkpoint and exits cleanly; resuming from it is bit-exact") {
  const Data& d = data();
  const std::string& ref = reference_run();
  const std::string out = d.dir + "/terminated";
  pid_t pid = spawn(d.resume_args(out), out + ".log");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (last_logged_step(out + ".jsonl") < 7 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  kill(pid, SIGTERM);
  int st = wait_status(pid);
  INFO(slurp(out + ".log"));
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 0);
  auto cks = list_run_checkpoints(out);
  REQUIRE(!cks.empty());
  json state = load_trainer_state(cks.back().dir);
  if (state["step"].get<int64_t>() < 36) {  // the signal came before the end
    REQUIRE(state["stop_reason"] == "signal");
    REQUIRE(run({"./train_llama", "--resume", out}, out + ".resume.log") == 0);
  }
  REQUIRE(slurp(out + "/final/model.safetensors") == slurp(ref + "/final/model.safetensors"));
}

TEST_CASE("non-finite gradients stop training with a clear error and keep the last good checkpoint") {
  const Data& d = data();
  const std::string out = d.dir + "/nan";
  auto args = d.resume_args(out);
  int rc = run(args, out + ".log", {{"TRAIN_LLAMA_DEBUG_NAN_STEP", "7"}});
  std::string log = slurp(out + ".log");
  INFO(log);
  REQUIRE(rc == 1);
  REQUIRE(log.find("error: step 7: the gradient norm is not finite") != std::string::npos);
  REQUIRE(log.find("checkpoint-6") != std::string::npos);
  REQUIRE_FALSE(dir_exists(out + "/final"));
  REQUIRE_FALSE(dir_exists(out + "/checkpoint-8"));
  // The kept checkpoint is complete and finite (load_weights checks every value).
  REQUIRE(list_run_checkpoints(out).back().step == 6);
  LlamaConfig c = load_config(out + "/checkpoint-6/config.json");
  ParamLayout layout = make_param_layout(c);
  std::vector<float> w(layout.total);
  load_weights(out + "/checkpoint-6", c, layout, w.data());

  // A learning rate so large that the weights blow up: stopped, never saved.
  const std::string out2 = d.dir + "/huge_lr";
  rc = run({"./train_llama", "--init", d.config, "--tokenizer", d.tokenizer, "--data", d.kvr, "--steps", "30",
            "--batch-size", "8", "--seq-len", "48", "--lr", "1e38", "--warmup-ratio", "0", "--clip", "0",
            "--threads", "1", "--out", out2},
           out2 + ".log");
  INFO(slurp(out2 + ".log"));
  REQUIRE(rc == 1);
  REQUIRE(slurp(out2 + ".log").find("not finite") != std::string::npos);
  REQUIRE_FALSE(dir_exists(out2 + "/final"));
}

TEST_CASE("--stop-loss stops once the step loss has been below the threshold N times") {
  const Data& d = data();
  const std::string out = d.dir + "/stoploss";
  int rc = run({"./train_llama", "--init", d.config, "--tokenizer", d.tokenizer, "--data", d.kvr, "--epochs", "5",
                "--batch-size", "16", "--seq-len", "48", "--stop-loss", "1000", "--stop-loss-count", "3",
                "--threads", "1", "--out", out},
               out + ".log");
  INFO(slurp(out + ".log"));
  REQUIRE(rc == 0);
  json st = load_trainer_state(out + "/final");
  REQUIRE(st["stop_reason"] == "loss");
  REQUIRE(st["step"] == 3);
  REQUIRE(st["loss_below_count"] == 3);
}

TEST_CASE("command lines: --help, unknown options and missing inputs are reported clearly") {
  const Data& d = data();
  const std::string log = d.dir + "/cli.log";
  REQUIRE(run({"./train_llama", "--help"}, log) == 0);
  for (const char* opt : {"--stop-at-accuracy", "--stop-loss", "--mix", "--resume", "--keep", "--micro-batch-size"})
    REQUIRE(slurp(log).find(opt) != std::string::npos);
  REQUIRE(run({"./train_llama", "--bogus", "1"}, log) == 1);
  REQUIRE(slurp(log).find("error: unknown option --bogus") != std::string::npos);
  REQUIRE(run({"./train_llama", "--init", d.config, "--out", d.dir + "/x"}, log) == 1);
  REQUIRE(slurp(log).find("--data is required") != std::string::npos);
  REQUIRE(run({"./train_llama", "--init", d.config, "--data", d.kvr, "--out", d.dir + "/x", "--schedule", "wavy"}, log) == 1);
  REQUIRE(slurp(log).find("wavy") != std::string::npos);
  REQUIRE(run({"./train_llama", "--resume", d.dir + "/nothing-here"}, log) == 1);
  REQUIRE(slurp(log).find("nothing-here") != std::string::npos);
  REQUIRE(run({"./eval_factoids", "--help"}, log) == 0);
  REQUIRE(slurp(log).find("--max-new-tokens") != std::string::npos);
  REQUIRE(run({"./eval_factoids", "--model", d.dir + "/missing-model", "--data", d.kvr_jsonl}, log) == 1);
  REQUIRE(slurp(log).find("missing-model") != std::string::npos);
}

TEST_CASE("--model from one of our checkpoints starts from its exact fp32 master weights, fresh optimizer") {
  const Data& d = data();
  const std::string s1 = d.dir + "/stage1_bf16", s2 = d.dir + "/stage2";
  REQUIRE(run({"./train_llama", "--init", d.config, "--tokenizer", d.tokenizer, "--data", d.kvr, "--steps", "3",
               "--batch-size", "16", "--seq-len", "48", "--lr", "1e-2", "--save-dtype", "BF16", "--threads", "1",
               "--out", s1},
              s1 + ".log") == 0);
  // lr 0: the weights cannot move, so stage 2's master weights must equal stage 1's bit for bit
  // (model.safetensors of stage 1 holds only their bf16 rounding). The tokenizer comes from the
  // checkpoint.
  int rc = run({"./train_llama", "--model", s1 + "/final", "--data", d.other, "--steps", "1", "--batch-size", "8",
                "--seq-len", "48", "--lr", "0", "--threads", "1", "--out", s2},
               s2 + ".log");
  INFO(slurp(s2 + ".log"));
  REQUIRE(rc == 0);
  LlamaConfig c = load_config(s1 + "/final/config.json");
  ParamLayout layout = make_param_layout(c);
  std::vector<float> p1(layout.total), p2(layout.total), m(layout.total), v(layout.total), w1(layout.total);
  load_optimizer_state(s1 + "/final", layout, p1.data(), m.data(), v.data());
  load_optimizer_state(s2 + "/final", layout, p2.data(), m.data(), v.data());
  REQUIRE(std::memcmp(p1.data(), p2.data(), p1.size() * sizeof(float)) == 0);
  load_weights(s1 + "/final", c, layout, w1.data());  // the bf16 file differs from the master
  REQUIRE(std::memcmp(p1.data(), w1.data(), p1.size() * sizeof(float)) != 0);
  json st = load_trainer_state(s2 + "/final");
  REQUIRE(st["step"] == 1);
  REQUIRE(st["adam_step"] == 1);
  REQUIRE(file_exists(s2 + "/final/tokenizer.json"));
}

TEST_CASE("eval_factoids renders JSONL prompts with the template the facts were trained with, across stages") {
  const Data& d = data();
  const std::string s1 = d.dir + "/tmpl_stage1", s2 = d.dir + "/tmpl_stage2", plain = d.dir + "/plain.bin";
  REQUIRE(run({"./prepare_data", "--mode", "kvr", "--num", "16", "--seed", "3", "--template", "plain", "--tokenizer",
               d.tokenizer, "--output", plain, "--quiet"},
              plain + ".log") == 0);
  // Stage 1 on KVR (template kvr), stage 2 from it on other pairs with the plain template.
  REQUIRE(run({"./train_llama", "--init", d.config, "--tokenizer", d.tokenizer, "--data", d.kvr, "--steps", "1",
               "--batch-size", "8", "--seq-len", "48", "--threads", "1", "--out", s1},
              s1 + ".log") == 0);
  REQUIRE(run({"./train_llama", "--model", s1 + "/final", "--data", plain, "--steps", "1", "--batch-size", "8",
               "--seq-len", "48", "--threads", "1", "--out", s2},
              s2 + ".log") == 0);
  const json st1 = load_trainer_state(s1 + "/final"), st2 = load_trainer_state(s2 + "/final");
  REQUIRE(st1["earlier_stage_templates"].empty());
  REQUIRE(st2["earlier_stage_templates"] == json::array({st1["prompt_template"]}));
  REQUIRE(st2["prompt_template"] != st1["prompt_template"]);

  auto prompts_by_model = [](const std::string& preds) {
    std::map<std::string, std::vector<json>> out;
    std::ifstream in(preds);
    for (std::string line; std::getline(in, line);) {
      json p = json::parse(line);
      out[p["model"].get<std::string>()].push_back(p["prompt_ids"]);
    }
    return out;
  };
  // A forgetting table over both checkpoints: stage 2's row uses stage 1's prompts, the ones the
  // stage-1 facts were trained with.
  const std::string ev = d.dir + "/tmpl_eval";
  int rc = run({"./eval_factoids", "--model", s1 + "/final", "--model", s2 + "/final", "--data", d.kvr_jsonl, "--out",
                ev, "--limit", "8", "--max-new-tokens", "2", "--threads", "1"},
               ev + ".log");
  INFO(slurp(ev + ".log"));
  REQUIRE(rc == 0);
  auto both = prompts_by_model(ev + "/predictions.jsonl");
  REQUIRE(both.size() == 2);
  REQUIRE(both[s1 + "/final"].size() == 8);
  REQUIRE(both[s1 + "/final"] == both[s2 + "/final"]);
  REQUIRE(slurp(ev + ".log").find("first model's template") != std::string::npos);
  // Stage 2 alone: its own (last) template, with a note on how to score an earlier stage's facts.
  rc = run({"./eval_factoids", "--model", s2 + "/final", "--data", d.kvr_jsonl, "--out", ev + "2", "--limit", "8",
            "--max-new-tokens", "2", "--threads", "1"},
           ev + "2.log");
  REQUIRE(rc == 0);
  auto alone = prompts_by_model(ev + "2/predictions.jsonl");
  REQUIRE(alone[s2 + "/final"].size() == 8);
  REQUIRE(alone[s2 + "/final"] != both[s1 + "/final"]);
  REQUIRE(slurp(ev + "2.log").find("trained with 2 prompt templates") != std::string::npos);
}

// ---- one writer per run directory, full disks, kills inside a checkpoint write ----------------

namespace {

// Waits (up to a minute) until `path` exists; false on timeout.
bool wait_for_file(const std::string& path) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!file_exists(path) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return file_exists(path);
}

// Names in `dir` (recursively) that an interrupted or failed write would leave: *.tmp, *.tmp.<pid>.
std::vector<std::string> leftovers(const std::string& dir) {
  std::vector<std::string> found;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.size() > 4 && (n.compare(n.size() - 4, 4, ".tmp") == 0 || n.find(".tmp.") != std::string::npos))
      found.push_back(e.path().string());
  }
  return found;
}

void require_same_final(const std::string& out, const std::string& ref) {
  REQUIRE(slurp(out + "/final/model.safetensors") == slurp(ref + "/final/model.safetensors"));
  REQUIRE(slurp(out + "/final/optimizer.safetensors") == slurp(ref + "/final/optimizer.safetensors"));
}

}  // namespace

TEST_CASE("a second writer on the same run directory is refused at once; the first run completes unaffected") {
  const Data& d = data();
  const std::string& ref = reference_run();
  const std::string out = d.dir + "/shared";
  // The first run stops inside its step-4 checkpoint write until released: the second writers
  // below meet it there, whatever the machine's speed.
  pid_t first = spawn(d.resume_args(out), out + ".log", {{"ENGINE_DEBUG_CHECKPOINT_PAUSE", "checkpoint-4"}});
  const std::string paused = out + "/checkpoint-4.tmp/.paused";
  REQUIRE(wait_for_file(paused));
  REQUIRE(slurp(out + "/run.lock").find("pid " + std::to_string(first) + "\n") != std::string::npos);

  // A new run with the same --out, and a --resume of that directory: both exit with an error
  // naming the holder, before touching anything.
  std::vector<std::string> second = d.resume_args(out);
  second.back() = out + ".second.jsonl";
  REQUIRE(run(second, out + ".second.log") == 1);
  REQUIRE(run({"./train_llama", "--resume", out}, out + ".third.log") == 1);
  for (const char* log : {".second.log", ".third.log"}) {
    std::string text = slurp(out + log);
    INFO(text);
    REQUIRE(text.find("error: " + out + ": this run directory is in use by another process (pid " +
                      std::to_string(first)) != std::string::npos);
    REQUIRE(text.find("train_llama") != std::string::npos);
  }
  REQUIRE_FALSE(file_exists(out + ".second.jsonl"));

  std::remove(paused.c_str());
  int st = wait_status(first);
  INFO(slurp(out + ".log"));
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 0);
  require_same_final(out, ref);
  REQUIRE(slurp(out + "/run.lock").empty());  // a clean exit leaves no holder's name
}

TEST_CASE("a full disk during a checkpoint: clean error, no partial files, the previous checkpoint resumes bit-exactly") {
  const Data& d = data();
  const std::string& ref = reference_run();
  // The disk fills half-way through the second checkpoint (step 4): one checkpoint's bytes, plus half.
  int64_t one = 0;
  for (const auto& e : std::filesystem::directory_iterator(ref + "/final")) one += int64_t(e.file_size());
  const std::string out = d.dir + "/fulldisk";
  int rc = run(d.resume_args(out), out + ".log",
               {{"LD_PRELOAD", "build/test/libenospc.so"}, {"ENOSPC_PATH", out + "/"},
                {"ENOSPC_AFTER_BYTES", std::to_string(one + one / 2)}});
  std::string log = slurp(out + ".log");
  INFO(log);
  REQUIRE(rc == 1);
  REQUIRE(log.find("error: " + out + "/checkpoint-4.tmp/") != std::string::npos);
  REQUIRE(log.find("No space left on device") != std::string::npos);
  REQUIRE(log.find("Last complete checkpoint: " + out + "/checkpoint-2") != std::string::npos);
  REQUIRE(leftovers(out).empty());
  auto cks = list_run_checkpoints(out);
  REQUIRE(cks.size() == 1);
  REQUIRE(cks[0].step == 2);

  // Space again: resuming the run directory continues from checkpoint-2 to the same weights.
  rc = run({"./train_llama", "--resume", out}, out + ".resume.log");
  INFO(slurp(out + ".resume.log"));
  REQUIRE(rc == 0);
  REQUIRE(slurp(out + ".resume.log").find("resumed from " + out + "/checkpoint-2 at step 2") != std::string::npos);
  require_same_final(out, ref);
}

TEST_CASE("SIGKILL inside a checkpoint write: the next start takes over the stale lock, removes the partial write, "
          "and resumes bit-exactly") {
  const Data& d = data();
  const std::string& ref = reference_run();
  const std::string out = d.dir + "/killed_in_save";
  pid_t pid = spawn(d.resume_args(out), out + ".log", {{"ENGINE_DEBUG_CHECKPOINT_PAUSE", "checkpoint-6"}});
  REQUIRE(wait_for_file(out + "/checkpoint-6.tmp/.paused"));
  kill(pid, SIGKILL);  // weights of step 6 written, optimizer state and trainer_state.json not yet
  REQUIRE(WIFSIGNALED(wait_status(pid)));
  REQUIRE(file_exists(out + "/checkpoint-6.tmp/model.safetensors"));
  REQUIRE_FALSE(file_exists(out + "/checkpoint-6.tmp/trainer_state.json"));
  REQUIRE(slurp(out + "/run.lock").find("pid " + std::to_string(pid) + "\n") != std::string::npos);
  REQUIRE(list_run_checkpoints(out).back().step == 4);

  int rc = run({"./train_llama", "--resume", out}, out + ".resume.log");
  std::string log = slurp(out + ".resume.log");
  INFO(log);
  REQUIRE(rc == 0);
  REQUIRE(log.find("note: " + out + "/run.lock: taking over the lock of a process that is gone (pid " +
                   std::to_string(pid)) != std::string::npos);
  REQUIRE(log.find("note: removed " + out + "/checkpoint-6.tmp") != std::string::npos);
  REQUIRE(log.find("resumed from " + out + "/checkpoint-4 at step 4") != std::string::npos);
  REQUIRE(leftovers(out).empty());
  require_same_final(out, ref);
}

TEST_CASE("a model that cannot fit in host memory is refused before allocation, with the plan and the shortfall") {
  const Data& d = data();
  const std::string cfg = d.dir + "/huge.json", out = d.dir + "/huge";
  // 4096 layers of hidden 16384: about 13 trillion parameters, beyond any machine's MemAvailable
  write_file_atomic(cfg, R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 4096, "hidden_size": 16384,
    "intermediate_size": 16384, "num_hidden_layers": 4096, "num_attention_heads": 128, "num_key_value_heads": 8})");
  int rc = run({"./train_llama", "--init", cfg, "--tokenizer", d.tokenizer, "--data", d.kvr, "--out", out, "--steps",
                "1", "--threads", "1", "--device", "cpu"},
               out + ".log");
  std::string log = slurp(out + ".log");
  INFO(log);
  REQUIRE(rc == 1);
  REQUIRE(log.find("error: train_llama: LlamaForCausalLM with ") != std::string::npos);
  REQUIRE(log.find("GiB of host memory (weights ") != std::string::npos);
  REQUIRE(log.find("activations ") != std::string::npos);
  REQUIRE(log.find("(MemAvailable in /proc/meminfo): short by ") != std::string::npos);
  REQUIRE(list_run_checkpoints(out).empty());
}
