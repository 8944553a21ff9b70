// train_llama --device cuda end to end, on the CUDA emulator (build/train_llama_emu: the same
// program and backend compiled with -DCUDA_EMULATION), against ./train_llama --device cpu on the
// same data and init: the step losses and gradient norms agree within bf16 tolerance, the final
// weights are close, a resumed CUDA run ends with byte-identical weights, and --dry-run prints the
// GPU memory plan. Runs from the repository root after `make` (needs ./prepare_data, ./train_llama).
// On a GPU machine the same test runs the nvcc build instead (make check-gpu): the environment
// variables CUDA_TRAIN_LLAMA and CUDA_EVAL_FACTOIDS name the programs run with --device cuda.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/file_io.h"
#include "model/safetensors.h"

using nlohmann::json;

namespace {

// The programs run with --device cuda: the emulated builds, or the real ones on a GPU machine.
std::string cuda_program(const char* env, const char* emulated) {
  const char* p = std::getenv(env);
  return p && *p ? p : emulated;
}
const std::string kTrainCuda = cuda_program("CUDA_TRAIN_LLAMA", "build/train_llama_emu");
const std::string kEvalCuda = cuda_program("CUDA_EVAL_FACTOIDS", "build/eval_factoids_emu");

// Runs argv with stdout and stderr to `log`; returns the exit code.
int run(const std::vector<std::string>& argv, const std::string& log) {
  pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(log.c_str(), "w", stdout) || !freopen(log.c_str(), "a", stderr)) _exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<json> step_events(const std::string& jsonl) {
  std::vector<json> steps;
  std::ifstream f(jsonl);
  std::string line;
  while (std::getline(f, line)) {
    json j = json::parse(line);
    if (j.value("event", "") == "step") steps.push_back(j);
  }
  return steps;
}

std::vector<float> all_weights(const std::string& dir) {
  SafeTensors st = SafeTensors::open(dir);
  std::vector<float> out;
  for (const auto& [name, info] : st.tensors) {
    std::vector<float> t = st.read_f32(name);
    out.insert(out.end(), t.begin(), t.end());
  }
  return out;
}

struct Setup {
  std::string dir, tokenizer = "test/fixtures/tokenizer/ours.json", config, data;
  Setup() {
    dir = "build/test/tmp_cuda_cli_" + std::to_string(getpid());
    remove_tree(dir);
    make_dirs(dir);
    config = dir + "/tiny.json";
    // head_dim 64 (the CUDA attention kernels take 64 or 128), GQA 2
    write_file_atomic(config, R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "vocab_size": 3008, "hidden_size": 128, "intermediate_size": 200, "num_hidden_layers": 2,
      "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128,
      "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false,
      "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1})");
    data = dir + "/kvr.bin";
    REQUIRE(run({"./prepare_data", "--mode", "kvr", "--num", "16", "--seed", "1", "--tokenizer", tokenizer,
                 "--output", data, "--quiet"},
                dir + "/prep.log") == 0);
  }
  ~Setup() {
    if (!std::getenv("KEEP_TEST_OUTPUT")) remove_tree(dir);
  }
  std::vector<std::string> args(const std::string& program, const std::string& device, const std::string& name,
                                int steps) const {
    return {program, "--init", config, "--tokenizer", tokenizer, "--data", data, "--device", device, "--steps",
            std::to_string(steps), "--batch-size", "8", "--seq-len", "48", "--lr", "1e-3", "--weight-decay", "0.1",
            "--threads", "1", "--save-every", "2", "--out", dir + "/" + name, "--log", dir + "/" + name + ".jsonl"};
  }
};

}  // namespace

TEST_CASE("train_llama --device cuda (emulated) agrees with --device cpu, and resumes bit-exactly") {
  Setup s;
  const int steps = 4;
  REQUIRE(run(s.args("./train_llama", "cpu", "cpu", steps), s.dir + "/cpu.log") == 0);
  REQUIRE(run(s.args(kTrainCuda, "cuda", "gpu", steps), s.dir + "/gpu.log") == 0);
  REQUIRE(read_text_file(s.dir + "/gpu.log").find("device cuda") != std::string::npos);

  const std::vector<json> cpu = step_events(s.dir + "/cpu.jsonl"), gpu = step_events(s.dir + "/gpu.jsonl");
  REQUIRE(cpu.size() == (size_t)steps);
  REQUIRE(gpu.size() == (size_t)steps);
  for (int i = 0; i < steps; i++) {
    INFO("step " << i + 1);
    const double lc = cpu[i]["loss"], lg = gpu[i]["loss"], nc = cpu[i]["grad_norm"], ng = gpu[i]["grad_norm"];
    REQUIRE(std::isfinite(lg));
    REQUIRE(std::abs(lg - lc) <= 2e-2 * std::abs(lc));
    REQUIRE(std::abs(ng - nc) <= 2e-2 * nc);
  }
  // Final weights: same init, 4 AdamW steps of lr 1e-3 on each side.
  const std::vector<float> wc = all_weights(s.dir + "/cpu/final"), wg = all_weights(s.dir + "/gpu/final");
  REQUIRE(wc.size() == wg.size());
  double max_diff = 0.0;
  for (size_t i = 0; i < wc.size(); i++) max_diff = std::max(max_diff, (double)std::abs(wc[i] - wg[i]));
  REQUIRE(max_diff <= 2 * steps * 1e-3);  // never further apart than opposite updates every step

  // Held-out loss through the CUDA backend's forward and loss (eval_factoids --heldout): the
  // same number as the CPU backend's, within the bf16-activation tolerance of the training loss.
  REQUIRE(run({"./eval_factoids", "--model", s.dir + "/cpu/final", "--heldout", s.data, "--device", "cpu", "--threads",
               "1", "--out", s.dir + "/ho_cpu"},
              s.dir + "/ho_cpu.log") == 0);
  REQUIRE(run({"build/eval_factoids_emu", "--model", s.dir + "/cpu/final", "--heldout", s.data, "--device", "cuda",
               "--threads", "1", "--out", s.dir + "/ho_gpu"},
              s.dir + "/ho_gpu.log") == 0);
  const json hc = json::parse(read_text_file(s.dir + "/ho_cpu/metrics.json"))["models"][0]["heldout"];
  const json hg = json::parse(read_text_file(s.dir + "/ho_gpu/metrics.json"))["models"][0]["heldout"];
  REQUIRE(hc["target_tokens"].get<int64_t>() > 0);
  REQUIRE(hc["target_tokens"] == hg["target_tokens"]);
  REQUIRE(std::abs(hg["loss"].get<double>() - hc["loss"].get<double>()) <= 2e-2 * hc["loss"].get<double>());

  // Resume the CUDA run from its step-2 checkpoint: the final weights are byte-identical.
  const std::vector<std::string> resume = {kTrainCuda, "--resume", s.dir + "/gpu/checkpoint-2",
                                           "--out", s.dir + "/gpu_resumed", "--log", s.dir + "/gpu_resumed.jsonl"};
  REQUIRE(run(resume, s.dir + "/resume.log") == 0);
  const std::string a = read_text_file(s.dir + "/gpu/final/model.safetensors");
  const std::string b = read_text_file(s.dir + "/gpu_resumed/final/model.safetensors");
  REQUIRE(!a.empty());
  REQUIRE(a == b);
}

TEST_CASE("train_llama --optimizer-state bf16 (emulated cuda): tracks --device cpu, saves BF16 moments, resumes bit-exactly") {
  Setup s;
  const int steps = 4;
  std::vector<std::string> bf16_args = s.args(kTrainCuda, "cuda", "gpu16", steps);
  bf16_args.insert(bf16_args.end(), {"--optimizer-state", "bf16"});
  REQUIRE(run(bf16_args, s.dir + "/gpu16.log") == 0);
  REQUIRE(run(s.args("./train_llama", "cpu", "cpu", steps), s.dir + "/cpu.log") == 0);
  const std::vector<json> cpu = step_events(s.dir + "/cpu.jsonl"), gpu = step_events(s.dir + "/gpu16.jsonl");
  REQUIRE(gpu.size() == (size_t)steps);
  for (int i = 0; i < steps; i++) {
    INFO("step " << i + 1);
    const double lc = cpu[i]["loss"], lg = gpu[i]["loss"];
    REQUIRE(std::abs(lg - lc) <= 2e-2 * std::abs(lc));
  }
  // The moments are stored as BF16 (exact: they are bf16 values), the master weights as F32.
  const SafeTensors st = SafeTensors::open(s.dir + "/gpu16/final/optimizer.safetensors");
  REQUIRE(st.tensors.at("adamw.exp_avg").dtype == "BF16");
  REQUIRE(st.tensors.at("adamw.exp_avg_sq").dtype == "BF16");
  REQUIRE(st.tensors.at("master_weights").dtype == "F32");
  // --optimizer-state is stored with the run's options: the resume keeps bf16 moments and ends
  // byte-identical (stochastic rounding is seeded by the AdamW step, restored from the checkpoint).
  const std::vector<std::string> resume = {kTrainCuda, "--resume", s.dir + "/gpu16/checkpoint-2",
                                           "--out", s.dir + "/gpu16_resumed", "--log", s.dir + "/gpu16_resumed.jsonl"};
  REQUIRE(run(resume, s.dir + "/resume16.log") == 0);
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    INFO(file);
    const std::string a = read_text_file(s.dir + "/gpu16/final/" + file);
    const std::string b = read_text_file(s.dir + "/gpu16_resumed/final/" + file);
    REQUIRE(!a.empty());
    REQUIRE(a == b);
  }
  // The CPU backend keeps fp32 moments only and says so.
  std::vector<std::string> cpu16 = s.args("./train_llama", "cpu", "cpu16", steps);
  cpu16.insert(cpu16.end(), {"--optimizer-state", "bf16"});
  REQUIRE(run(cpu16, s.dir + "/cpu16.log") == 1);
  REQUIRE(read_text_file(s.dir + "/cpu16.log").find("error: --optimizer-state bf16") != std::string::npos);
}

TEST_CASE("train_llama --dry-run prints the GPU memory plan") {
  Setup s;
  REQUIRE(run({"./train_llama", "--init", s.config, "--dry-run", "--batch-size", "4", "--seq-len", "64"},
              s.dir + "/dry.log") == 0);
  const std::string out = read_text_file(s.dir + "/dry.log");
  for (const char* line : {"weights, fp32 master", "gradients, fp32", "AdamW state", "activations saved for backward",
                           "workspace", "total"})
    REQUIRE(out.find(line) != std::string::npos);
  REQUIRE(out.find("AdamW state (m, v), fp32") != std::string::npos);
  // with bf16 moments the table shows the bf16 state (and the fp32 total as the alternative)
  REQUIRE(run({"./train_llama", "--init", s.config, "--dry-run", "--batch-size", "4", "--seq-len", "64",
               "--optimizer-state", "bf16"},
              s.dir + "/dry16.log") == 0);
  const std::string out16 = read_text_file(s.dir + "/dry16.log");
  REQUIRE(out16.find("AdamW state (m, v), bf16") != std::string::npos);
  REQUIRE(out16.find("with --optimizer-state fp32 instead") != std::string::npos);
}

TEST_CASE("eval_factoids --device cuda (emulated) decodes the same tokens as --device cpu") {
  Setup s;
  // a partly memorized model: most answers have clear logit margins
  REQUIRE(run({"./train_llama", "--init", s.config, "--tokenizer", s.tokenizer, "--data", s.data, "--epochs", "100",
               "--batch-size", "8", "--seq-len", "48", "--lr", "1e-2", "--warmup-ratio", "0.02", "--threads", "1",
               "--out", s.dir + "/mem"},
              s.dir + "/mem.log") == 0);
  const std::string qa = s.dir + "/kvr.jsonl";  // written by prepare_data next to the shard
  REQUIRE(run({"./eval_factoids", "--model", s.dir + "/mem/final", "--data", qa, "--device", "cpu", "--threads", "1",
               "--out", s.dir + "/ev_cpu"},
              s.dir + "/ev_cpu.log") == 0);
  REQUIRE(run({kEvalCuda, "--model", s.dir + "/mem/final", "--data", qa, "--device", "cuda",
               "--threads", "1", "--out", s.dir + "/ev_gpu"},
              s.dir + "/ev_gpu.log") == 0);
  std::ifstream a(s.dir + "/ev_cpu/predictions.jsonl"), b(s.dir + "/ev_gpu/predictions.jsonl");
  std::string la, lb;
  int lines = 0, correct = 0;
  while (std::getline(a, la)) {
    REQUIRE(std::getline(b, lb));
    const json ja = json::parse(la), jb = json::parse(lb);
    INFO("question " << ja["question"]);
    REQUIRE(ja["output_ids"] == jb["output_ids"]);
    REQUIRE(ja["correct"] == jb["correct"]);
    correct += ja["correct"].get<bool>();
    lines++;
  }
  REQUIRE(lines == 16);
  REQUIRE(correct > 0);  // the model did learn something, so the tokens are not all noise

  // The evaluation inside train_llama --device cuda runs on the (emulated) GPU through the same
  // loop: with lr 0 the weights stay those of mem/final, so it scores what eval_factoids did.
  REQUIRE(run({"build/train_llama_emu", "--model", s.dir + "/mem/final", "--tokenizer", s.tokenizer, "--data", s.data,
               "--device", "cuda", "--epochs", "1", "--batch-size", "8", "--seq-len", "48", "--lr", "0",
               "--threads", "1", "--eval-data", qa, "--out", s.dir + "/gpu_eval", "--log",
               s.dir + "/gpu_eval.jsonl"},
              s.dir + "/gpu_eval.log") == 0);
  std::ifstream log(s.dir + "/gpu_eval.jsonl");
  int evals = 0;
  for (std::string line; std::getline(log, line);) {
    const json e = json::parse(line);
    if (e["event"] != "eval") continue;
    evals++;
    REQUIRE(e["correct"].get<int>() == correct);
    REQUIRE(e["total"].get<int>() == 16);
  }
  REQUIRE(evals == 2);  // before the first step (a fresh run) and after its one epoch
}
