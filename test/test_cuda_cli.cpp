// train_llama --device cuda end to end, on the CUDA emulator (build/train_llama_emu: the same
// program and backend compiled with -DCUDA_EMULATION), against ./train_llama --device cpu on the
// same data and init: the step losses and gradient norms agree within bf16 tolerance, the final
// weights are close, a resumed CUDA run ends with byte-identical weights, and --dry-run prints the
// GPU memory plan (per GPU of each ZeRO stage too); 2 processes under mpirun (data parallelism,
// the emulator's multi-process NCCL fake) against 1, checkpoints across world sizes, a signal to
// one rank, bad input; train_llama --larimar --device cuda against --device cpu. Runs from the
// repository root after `make` (needs ./prepare_data, ./train_llama, ./larimar_edit, ./eval_factoids).
// On a GPU machine the same test runs the nvcc build instead (make check-gpu): the environment
// variables CUDA_TRAIN_LLAMA and CUDA_EVAL_FACTOIDS name the programs run with --device cuda.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "common/file_io.h"
#include "test/exec_logged.h"
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
  std::fflush(nullptr);  // else the child's freopen writes this process's buffered output again
  pid_t pid = fork();
  if (pid == 0) {
    exec_logged(argv, log);
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

namespace {
// The GiB figure of a row of the --dry-run table.
double plan_gib(const std::string& out, const std::string& row) {
  const size_t at = out.find("  " + row);
  REQUIRE(at != std::string::npos);
  return std::stod(out.substr(at + 2 + row.size()));
}
}  // namespace

TEST_CASE("train_llama --recompute block --offload-optimizer (emulated cuda): tracks --device cpu, resumes bit-exactly") {
  Setup s;
  const int steps = 4;
  auto with = [&](std::vector<std::string> a, const std::vector<std::string>& extra) {
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  REQUIRE(run(s.args("./train_llama", "cpu", "cpu", steps), s.dir + "/cpu.log") == 0);
  // the CPU backend recomputes too: bit-identical gradients, so byte-identical weights
  REQUIRE(run(with(s.args("./train_llama", "cpu", "cpu_rc", steps), {"--recompute", "block"}), s.dir + "/cpu_rc.log") ==
          0);
  REQUIRE(read_text_file(s.dir + "/cpu/final/model.safetensors") ==
          read_text_file(s.dir + "/cpu_rc/final/model.safetensors"));
  // Checkpointed at step 2 right after an optimizer step whose host update is still in flight
  // (overlapped with the next forward), and evaluated after 2 epochs (4 steps), also right after one.
  const std::vector<std::string> offload = {"--recompute", "block", "--offload-optimizer", "--eval-data",
                                            s.dir + "/kvr.jsonl", "--eval-limit", "4", "--eval-every-epochs", "2"};
  REQUIRE(run(with(s.args(kTrainCuda, "cuda", "off", steps), offload), s.dir + "/off.log") == 0);
  REQUIRE(read_text_file(s.dir + "/off.log").find("fits:") != std::string::npos);
  const std::vector<json> cpu = step_events(s.dir + "/cpu.jsonl"), off = step_events(s.dir + "/off.jsonl");
  REQUIRE(off.size() == (size_t)steps);
  for (int i = 0; i < steps; i++) {
    INFO("step " << i + 1);
    const double lc = cpu[i]["loss"], lg = off[i]["loss"], nc = cpu[i]["grad_norm"], ng = off[i]["grad_norm"];
    REQUIRE(std::abs(lg - lc) <= 2e-2 * std::abs(lc));
    REQUIRE(std::abs(ng - nc) <= 2e-2 * nc);
  }
  // The options are stored with the run: the resume offloads again and ends byte-identical.
  REQUIRE(run({kTrainCuda, "--resume", s.dir + "/off/checkpoint-2", "--out", s.dir + "/off_resumed", "--log",
               s.dir + "/off_resumed.jsonl"},
              s.dir + "/off_resumed.log") == 0);
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    INFO(file);
    const std::string a = read_text_file(s.dir + "/off/final/" + file);
    REQUIRE(!a.empty());
    REQUIRE(a == read_text_file(s.dir + "/off_resumed/final/" + file));
  }
  // The overlapped update is the serial one byte for byte, through the evaluations and the
  // checkpoints too; the lazy schedule starts each group only when the program asks for it, so
  // any read of the state that skips its wait would change the results (model/offload.h).
  for (const char* schedule : {"serial", "lazy"}) {
    INFO(schedule);
    const std::string name = std::string("off_") + schedule;
    setenv("ENGINE_DEBUG_OFFLOAD", schedule, 1);
    const int rc = run(with(s.args(kTrainCuda, "cuda", name, steps), offload), s.dir + "/" + name + ".log");
    unsetenv("ENGINE_DEBUG_OFFLOAD");
    REQUIRE(rc == 0);
    const std::vector<json> other = step_events(s.dir + "/" + name + ".jsonl");
    REQUIRE(other.size() == (size_t)steps);
    for (int i = 0; i < steps; i++) {
      REQUIRE(other[i]["loss"] == off[i]["loss"]);
      REQUIRE(other[i]["grad_norm"] == off[i]["grad_norm"]);
    }
    for (const char* file : {"checkpoint-2/model.safetensors", "final/model.safetensors", "final/optimizer.safetensors"})
      REQUIRE(read_text_file(s.dir + "/off/" + file) == read_text_file(s.dir + "/" + name + "/" + file));
    auto evals = [&](const std::string& run_name) {  // the correct answers of each evaluation
      std::vector<int> correct;
      std::ifstream in(s.dir + "/" + run_name + ".jsonl");
      for (std::string line; std::getline(in, line);)
        if (const json e = json::parse(line); e["event"] == "eval") correct.push_back(e["correct"].get<int>());
      return correct;
    };
    REQUIRE(evals("off").size() == 2);  // before the first step and after the 2 epochs
    REQUIRE(evals(name) == evals("off"));
  }
  // A plan that does not fit the given memory: the plan and the shortfall, exit 1, no run started.
  REQUIRE(run(with(s.args(kTrainCuda, "cuda", "small", steps), {"--gpu-memory", "0.01"}), s.dir + "/small.log") == 1);
  const std::string small = read_text_file(s.dir + "/small.log");
  REQUIRE(small.find("GPU memory plan") != std::string::npos);
  REQUIRE(small.find("error: the GPU memory plan needs") != std::string::npos);
  REQUIRE(small.find("short by") != std::string::npos);
  REQUIRE(!std::filesystem::exists(s.dir + "/small/checkpoint-2"));
  // the CPU backend has no device to offload from
  REQUIRE(run(with(s.args("./train_llama", "cpu", "cpu_off", steps), {"--offload-optimizer"}), s.dir + "/cpu_off.log") ==
          1);
  REQUIRE(read_text_file(s.dir + "/cpu_off.log").find("error: --offload-optimizer") != std::string::npos);
  // nor does it combine with a sharded optimizer state
  REQUIRE(run(with(s.args(kTrainCuda, "cuda", "off_zero", steps), {"--offload-optimizer", "--zero", "1"}),
              s.dir + "/off_zero.log") == 1);
  REQUIRE(read_text_file(s.dir + "/off_zero.log").find("error: --offload-optimizer") != std::string::npos);
}

TEST_CASE("train_llama --dry-run: Llama-3-8B at the REMIX batch (32 x 2048) fits 80 GB with --recompute block "
          "--offload-optimizer --micro-batch-size 16; a combination that does not fit exits 1 with its shortfall") {
  Setup s;
  const std::string cfg = s.dir + "/llama3_8b.json";
  write_file_atomic(cfg, R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 8192, "rope_theta": 500000.0, "tie_word_embeddings": false})");
  const std::vector<std::string> base = {"./train_llama", "--init", cfg, "--dry-run", "--batch-size", "32",
                                         "--seq-len", "2048"};
  std::vector<std::string> chosen = base;
  chosen.insert(chosen.end(), {"--recompute", "block", "--offload-optimizer", "--micro-batch-size", "16"});
  REQUIRE(run(chosen, s.dir + "/fit.log") == 0);
  const std::string fit = read_text_file(s.dir + "/fit.log");
  REQUIRE(fit.find("micro-batch 16 x 2048 tokens, --recompute block, --offload-optimizer") != std::string::npos);
  const double GB80 = 80e9 / (1024.0 * 1024.0 * 1024.0);  // 74.51 GiB
  REQUIRE(plan_gib(fit, "total") < GB80);
  REQUIRE(fit.find("weights, fp32 master") == std::string::npos);  // on the host
  REQUIRE(plan_gib(fit, "host, pinned: master, AdamW m, v, transfers") > 3 * 29.9);
  REQUIRE(fit.find("fits:") != std::string::npos);
  // every combination is listed
  for (const char* row : {"total per option combination", "none", "attn", "mlp", "block"})
    REQUIRE(fit.find(row) != std::string::npos);
  // without the options, or with the whole batch in one micro-batch: the plan, the shortfall, exit 1
  std::vector<std::string> whole = base;
  whole.insert(whole.end(), {"--recompute", "block", "--offload-optimizer"});
  for (const auto& [argv, log] : {std::pair{base, "/nofit.log"}, std::pair{whole, "/whole.log"}}) {
    INFO(log);
    REQUIRE(run(argv, s.dir + log) == 1);
    const std::string nofit = read_text_file(s.dir + log);
    REQUIRE(plan_gib(nofit, "total") > GB80);
    REQUIRE(nofit.find("short by") != std::string::npos);
    REQUIRE(nofit.find("error: the GPU memory plan needs") != std::string::npos);
  }
}

TEST_CASE("train_llama --larimar --device cuda (emulated) agrees with --device cpu; its checkpoint serves "
          "larimar_edit and eval_factoids --memory, and resumes bit-exactly") {
  Setup s;
  // The encoder: the decoder's config with one layer and a code of 16 (head_dim 64 for the CUDA
  // attention kernels); episodes of 4 texts, memory of 8 slots.
  json enc = json::parse(read_text_file(s.config));
  enc["num_hidden_layers"] = 1;
  enc["larimar_code_size"] = 16;
  write_file_atomic(s.dir + "/enc.json", enc.dump());
  const int steps = 3;
  const auto args = [&](const std::string& program, const std::string& device, const std::string& name) {
    return std::vector<std::string>{program, "--init", s.config, "--tokenizer", s.tokenizer, "--data", s.data,
                                    "--larimar", s.dir + "/enc.json", "--memory-slots", "8", "--beta-cycles", "1",
                                    "--device", device, "--steps", std::to_string(steps), "--batch-size", "4",
                                    "--seq-len", "48", "--lr", "1e-3", "--threads", "1", "--save-every", "2",
                                    "--out", s.dir + "/" + name, "--log", s.dir + "/" + name + ".jsonl"};
  };
  REQUIRE(run(args("./train_llama", "cpu", "cpu"), s.dir + "/cpu.log") == 0);
  REQUIRE(run(args(kTrainCuda, "cuda", "gpu"), s.dir + "/gpu.log") == 0);
  REQUIRE(read_text_file(s.dir + "/gpu.log").find("device cuda") != std::string::npos);

  // Every term of the loss and the gradient norm, step by step (the last step has beta > 0, so
  // the KL term enters the loss).
  const std::vector<json> cpu = step_events(s.dir + "/cpu.jsonl"), gpu = step_events(s.dir + "/gpu.jsonl");
  REQUIRE(cpu.size() == (size_t)steps);
  REQUIRE(gpu.size() == (size_t)steps);
  REQUIRE(cpu[steps - 1]["beta"].get<double>() > 0);
  for (int i = 0; i < steps; i++)
    for (const char* key : {"loss", "ce_read", "ce_code", "ce_zero", "kl", "grad_norm"}) {
      const double c = cpu[i][key], g = gpu[i][key];
      INFO("step " << i + 1 << " " << key << ": cpu " << c << ", cuda " << g);
      REQUIRE(std::isfinite(g));
      REQUIRE(std::abs(g - c) <= 2e-2 * std::abs(c));
    }
  REQUIRE(gpu[0]["beta"] == cpu[0]["beta"]);
  // The trained encoder and memory parameters: same init, 3 AdamW steps of lr 1e-3 on each side.
  for (const char* f : {"/encoder/model.safetensors", "/larimar.safetensors"}) {
    INFO(f);
    const std::vector<float> wc = all_weights(s.dir + "/cpu/final" + f), wg = all_weights(s.dir + "/gpu/final" + f);
    REQUIRE(wc.size() == wg.size());
    double max_diff = 0.0;
    for (size_t i = 0; i < wc.size(); i++) max_diff = std::max(max_diff, (double)std::abs(wc[i] - wg[i]));
    REQUIRE(max_diff <= 2 * steps * 1e-3);
  }

  // The CUDA run's checkpoint is a Larimar directory: written facts read back through its encoder,
  // and eval_factoids decodes conditioned on the memory.
  const std::string ck = s.dir + "/gpu/final", mem = s.dir + "/mem.safetensors", facts = s.dir + "/facts.jsonl";
  write_file_atomic(facts, "{\"text\": \"the cat is red\", \"question\": \"the cat is\", \"answer\": \"red\"}\n"
                           "{\"text\": \"the dog sees fire\", \"question\": \"the dog sees\", \"answer\": \"fire\"}\n");
  REQUIRE(run({"./larimar_edit", "write", "--encoder", ck + "/encoder", "--params", ck + "/larimar.safetensors",
               "--memory", mem, "--facts", facts},
              s.dir + "/write.log") == 0);
  REQUIRE(run({"./larimar_edit", "read", "--encoder", ck + "/encoder", "--memory", mem, "--facts", facts, "--output",
               s.dir + "/read.jsonl"},
              s.dir + "/read.log") == 0);
  std::ifstream rf(s.dir + "/read.jsonl");
  int read_lines = 0;
  for (std::string line; std::getline(rf, line); read_lines++)
    REQUIRE(json::parse(line).at("relative_error").get<double>() < 1e-4);
  REQUIRE(read_lines == 2);
  REQUIRE(run({"./eval_factoids", "--model", ck, "--larimar", ck, "--memory", mem, "--data", facts, "--template",
               "plain", "--max-new-tokens", "4", "--device", "cpu", "--threads", "1", "--out", s.dir + "/eval"},
              s.dir + "/eval.log") == 0);
  REQUIRE(read_text_file(s.dir + "/eval/predictions.jsonl").find("\"prediction\"") != std::string::npos);

  // Resumed from its step-2 checkpoint, the CUDA run ends byte-identical: decoder, encoder, memory.
  REQUIRE(run({kTrainCuda, "--resume", s.dir + "/gpu/checkpoint-2", "--out", s.dir + "/gpu_resumed", "--log",
               s.dir + "/gpu_resumed.jsonl"},
              s.dir + "/resume.log") == 0);
  for (const char* f : {"/model.safetensors", "/encoder/model.safetensors", "/larimar.safetensors",
                        "/larimar_optimizer.safetensors"}) {
    INFO(f);
    const std::string a = read_text_file(ck + f), b = read_text_file(s.dir + "/gpu_resumed/final" + f);
    REQUIRE(!a.empty());
    REQUIRE(a == b);
  }

  // What the CUDA Larimar trainer still refuses, with the reason.
  std::vector<std::string> z = args(kTrainCuda, "cuda", "z");
  z.insert(z.end(), {"--optimizer-state", "bf16"});
  REQUIRE(run(z, s.dir + "/z.log") == 1);
  REQUIRE(read_text_file(s.dir + "/z.log").find("error: --larimar: --zero and --optimizer-state bf16") !=
          std::string::npos);
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

TEST_CASE("train_llama --dry-run --world-size N --zero S plans each stage's sharding per GPU") {
  Setup s;
  const std::string cfg = s.dir + "/llama3_8b.json";
  write_file_atomic(cfg, R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "max_position_embeddings": 8192, "rope_theta": 500000.0, "tie_word_embeddings": false})");
  auto plan = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> a = {"./train_llama", "--init", cfg, "--dry-run", "--batch-size", "8", "--seq-len", "2048",
                                  "--micro-batch-size", "1", "--gpu-memory", "1000"};
    a.insert(a.end(), extra.begin(), extra.end());
    REQUIRE(run(a, s.dir + "/plan.log") == 0);
    return read_text_file(s.dir + "/plan.log");
  };
  const std::string z0 = plan({}), z1 = plan({"--world-size", "4", "--zero", "1"}),
                    z2 = plan({"--world-size", "4", "--zero", "2"}), z3 = plan({"--world-size", "4", "--zero", "3"});
  REQUIRE(z1.find("per GPU of 4 ranks at ZeRO 1") != std::string::npos);
  // 8.03e9 parameters: 4 bytes each of master weights and gradients, 8 of AdamW state.
  const double P = 8030261248.0, GiB = 1024.0 * 1024.0 * 1024.0, VC = 128256.0 * 4096;
  REQUIRE(std::abs(plan_gib(z0, "AdamW state (m, v), fp32") - 8 * P / GiB) < 0.01);
  REQUIRE(std::abs(plan_gib(z1, "AdamW state (m, v), fp32") - 8 * P / 4 / GiB) < 0.01);
  // the master weights of a quarter, plus the 16 MiB staging buffer of their gather for checkpoints
  const double staging = 4.0 * (1 << 22);
  REQUIRE(std::abs(plan_gib(z1, "weights, fp32 master") - (4 * P / 4 + staging) / GiB) < 0.005);
  REQUIRE(std::abs(plan_gib(z1, "gradients, fp32") - 4 * P / GiB) < 0.01);  // whole at stage 1
  // stage 2: a quarter of the gradients plus the staging, two halves of the largest group (the
  // embedding or the LM head; untied, so no third part)
  REQUIRE(std::abs(plan_gib(z2, "gradients, fp32") - (4 * P / 4 + 2 * 4 * VC) / GiB) < 0.01);
  REQUIRE(std::abs(plan_gib(z2, "weights, bf16 working copy") - 2 * P / GiB) < 0.01);
  // stage 3: a quarter of the bf16 weights plus two gathered groups
  REQUIRE(std::abs(plan_gib(z3, "weights, bf16 working copy") - (2 * P / 4 + 2 * 2 * VC) / GiB) < 0.01);
  // activations are per rank's micro-batch, the same at every stage
  REQUIRE(plan_gib(z0, "activations saved for backward") == plan_gib(z3, "activations saved for backward"));
  REQUIRE(plan_gib(z3, "total") < plan_gib(z2, "total"));
  REQUIRE(plan_gib(z2, "total") < plan_gib(z1, "total"));
  REQUIRE(plan_gib(z1, "total") < plan_gib(z0, "total"));
  // the offloaded optimizer keeps the whole state on one host: no column for it at ZeRO >= 1, and
  // asking for both is refused before a plan is printed
  REQUIRE(z0.find("- (ZeRO 0 only)") == std::string::npos);
  REQUIRE(z2.find("- (ZeRO 0 only)") != std::string::npos);
  REQUIRE(run({"./train_llama", "--init", cfg, "--dry-run", "--batch-size", "8", "--world-size", "4", "--zero", "2",
               "--offload-optimizer"}, s.dir + "/off_zero.log") == 1);
  REQUIRE(read_text_file(s.dir + "/off_zero.log").find("error: --offload-optimizer") != std::string::npos);
  // ZeRO shards over GPUs only
  std::vector<std::string> a = s.args("./train_llama", "cpu", "z1", 1);
  a.insert(a.end(), {"--zero", "1"});
  REQUIRE(run(a, s.dir + "/z1.log") == 1);
  REQUIRE(read_text_file(s.dir + "/z1.log").find("error: --zero 1: ZeRO shards the state over GPUs") != std::string::npos);
}

// ---- data parallelism: mpirun -np 2 (Debian's OpenMPI, scripts/install_deps.sh) ------------------

namespace {

// `mpirun -np 2 program args` with the emulator showing two devices (one per rank). On a GPU
// machine (CUDA_TRAIN_LLAMA set) these tests need CUDA_DIST_TEST=1 and two GPUs.
std::vector<std::string> mpirun2(const std::vector<std::string>& args) {
  std::vector<std::string> v = {"mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x",
                                "EMU_DEVICE_COUNT=2", "-x", "OMP_WAIT_POLICY"};
  v.insert(v.end(), args.begin(), args.end());
  return v;
}
bool dist_tests_enabled() {
  const char* gpu = std::getenv("CUDA_TRAIN_LLAMA");
  const char* dist = std::getenv("CUDA_DIST_TEST");
  return !(gpu && *gpu) || (dist && std::string(dist) == "1");
}
std::vector<std::string> with(std::vector<std::string> v, const std::vector<std::string>& more) {
  v.insert(v.end(), more.begin(), more.end());
  return v;
}
std::string abs_path(const std::string& p) { return std::string(std::filesystem::absolute(p)); }

}  // namespace

TEST_CASE("eval_factoids --device cuda (emulated) decodes the same tokens as --device cpu; so does train_llama's evaluation, at ZeRO 3 too") {
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

  // At ZeRO 3 every rank decodes with the weights gathered group by group, in step with rank 0's
  // tokens: the same answers. (2 GPUs: on a GPU machine with CUDA_DIST_TEST=1 only.)
  if (!dist_tests_enabled()) return;
  const std::string store = "file://" + abs_path(s.dir) + "/store";
  REQUIRE(run(mpirun2({kTrainCuda, "--model", s.dir + "/mem/final", "--tokenizer", s.tokenizer, "--data",
                       s.data, "--device", "cuda", "--epochs", "1", "--batch-size", "8", "--seq-len", "48", "--lr", "0",
                       "--threads", "1", "--eval-data", qa, "--out", s.dir + "/z3_eval", "--log",
                       s.dir + "/z3_eval.jsonl", "--zero", "3", "--dist-init", store}),
              s.dir + "/z3_eval.log") == 0);
  evals = 0;
  std::ifstream z3_log(s.dir + "/z3_eval.jsonl");
  for (std::string line; std::getline(z3_log, line);) {
    const json e = json::parse(line);
    if (e["event"] != "eval") continue;
    evals++;
    REQUIRE(e["correct"].get<int>() == correct);
  }
  REQUIRE(evals == 2);
}

namespace {

// Max |a - b| over the weights of two checkpoints (model.safetensors or its shards).
double max_weight_diff(const std::string& a, const std::string& b) {
  const std::vector<float> w1 = all_weights(a), w2 = all_weights(b);
  REQUIRE(w1.size() == w2.size());
  double d = 0.0;
  for (size_t i = 0; i < w1.size(); i++) d = std::max(d, (double)std::abs(w1[i] - w2[i]));
  return d;
}
// The files of a checkpoint that hold numbers (weights, sharded or whole optimizer state).
std::vector<std::string> state_files(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  return files;
}
void require_same_state(const std::string& a, const std::string& b) {
  REQUIRE(state_files(a) == state_files(b));
  for (const std::string& f : state_files(a)) {
    INFO(a << "/" << f << " vs " << b << "/" << f);
    REQUIRE(read_text_file(a + "/" + f) == read_text_file(b + "/" + f));
  }
}
// Starts `args` as rank r of 2 through torchrun-style variables (the test knows each pid).
pid_t start_rank(int r, const std::vector<std::string>& a, const std::string& log,
                 const std::vector<std::pair<std::string, std::string>>& env = {}) {
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    setenv("RANK", std::to_string(r).c_str(), 1);
    setenv("WORLD_SIZE", "2", 1);
    setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
    setenv("EMU_DEVICE_COUNT", "2", 1);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    exec_logged(a, log);
  }
  return pid;
}

}  // namespace

// One process against two at ZeRO 0, 1, 2 and 3 on the same data and init, the weights of every
// checkpoint in 1 MB files (the tiny model's 4 MB in 4 files: the embedding, the layers in two,
// the LM head; the two ranks' slices split the second). The AdamW eps is 1e-6
// rather than 1e-8: with 1e-8 an element whose gradient is ~0 moves by about +-lr on the sign of
// its fp32 rounding noise, and the runs sum each gradient in a different order (one pass over 8
// rows vs. two of 4 plus the reduction); that is seen as 9e-6 relative at step 4 here, which
// would test the noise rather than the data parallelism.
TEST_CASE("train_llama --device cuda under mpirun -np 2 at ZeRO 0, 1, 2, 3 matches 1 process; checkpoints resume at any world size") {
  if (!dist_tests_enabled()) return;
  Setup s;
  const int steps = 4;
  const std::vector<std::string> eps = {"--eps", "1e-6", "--max-shard-size", "1MB"};
  const std::string store = "file://" + abs_path(s.dir) + "/store";
  REQUIRE(run(with(s.args(kTrainCuda, "cuda", "one", steps), eps), s.dir + "/one.log") == 0);
  // Every stage reduces the gradients in buckets during the backward (0.2 MB: the LM head, then a
  // layer or two per bucket, then the embedding).
  auto zero_args = [](const std::string& name) -> std::vector<std::string> {
    return {"--zero", name.substr(1, 1), "--bucket-mb", "0.2"};
  };
  // The repeat takes the NCCL id through MPI (the default under mpirun), the others through a file.
  for (const std::string name : {"z0", "z1", "z2", "z2_again", "z3"}) {
    const std::vector<std::string> init =
        name == "z2_again" ? std::vector<std::string>{} : std::vector<std::string>{"--dist-init", store + "_" + name};
    const int rc = run(mpirun2(with(with(s.args(kTrainCuda, "cuda", name, steps), eps), with(zero_args(name), init))),
                       s.dir + "/" + name + ".log");
    INFO(read_text_file(s.dir + "/" + name + ".log"));
    REQUIRE(rc == 0);
  }
  REQUIRE(read_text_file(s.dir + "/z0.log").find("data parallel: 2 processes (ZeRO 0), 4 examples of each batch per rank") !=
          std::string::npos);
  REQUIRE(read_text_file(s.dir + "/z2.log").find("data parallel: 2 processes (ZeRO 2)") != std::string::npos);
  REQUIRE(read_text_file(s.dir + "/z2_again.log").find("rendezvous: the NCCL id through MPI") != std::string::npos);
  REQUIRE(!file_exists(s.dir + "/store_z0"));  // the rendezvous file is gone
  const std::vector<json> one = step_events(s.dir + "/one.jsonl");
  REQUIRE(one.size() == (size_t)steps);
  for (const std::string name : {"z0", "z1", "z2", "z3"}) {
    INFO(name);
    const std::vector<json> two = step_events(s.dir + "/" + name + ".jsonl");
    REQUIRE(two.size() == (size_t)steps);  // rank 0 alone writes the log
    for (int i = 0; i < steps; i++) {
      INFO("step " << i + 1);
      const double l1 = one[i]["loss"], l2 = two[i]["loss"];
      REQUIRE(std::abs(l2 - l1) <= 1e-5 * std::abs(l1));
      REQUIRE(one[i]["tokens"] == two[i]["tokens"]);  // the token count is summed over the ranks
      // ZeRO 1/2: the global norm from the squared norms of the two slices summed over the ranks.
      const double n1 = one[i]["grad_norm"], n2 = two[i]["grad_norm"];
      REQUIRE(std::abs(n2 - n1) <= 1e-4 * std::abs(n1));
    }
    REQUIRE(max_weight_diff(s.dir + "/one/final", s.dir + "/" + name + "/final") <= 2 * steps * 1e-3);  // cuda-vs-cpu
  }
  // ZeRO 0 writes the 1-process checkpoint; ZeRO 1/2 the same HF directory, its weight files
  // written by the ranks, with the optimizer state in one shard per rank plus an index.
  const std::vector<std::string> weight_files = {"model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors",
                                                 "model-00003-of-00004.safetensors", "model-00004-of-00004.safetensors"};
  REQUIRE(state_files(s.dir + "/one/final") == with(weight_files, {"optimizer.safetensors"}));
  REQUIRE(state_files(s.dir + "/z0/final") == state_files(s.dir + "/one/final"));
  for (const std::string name : {"z1", "z2"}) {
    const std::string fin = s.dir + "/" + name + "/final";
    REQUIRE(state_files(fin) ==
            with(weight_files, {"optimizer-00001-of-00002.safetensors", "optimizer-00002-of-00002.safetensors"}));
    const json index = json::parse(read_text_file(fin + "/optimizer.index.json"));
    REQUIRE(index["shards"].size() == 2);
    REQUIRE(index["shards"][0]["begin"] == 0);
    REQUIRE(index["shards"][0]["end"] == index["shards"][1]["begin"]);
    // Each rank holds only its slice of the fp32 master weights: the HF weight files the ranks
    // wrote hold the values of the two shards' master weights (in whatever order the tensors are
    // stored).
    std::vector<float> hf, master;
    for (const std::string& f : weight_files) {
      const std::vector<float> part = all_weights(fin + "/" + f);
      hf.insert(hf.end(), part.begin(), part.end());
    }
    for (const char* f : {"/optimizer-00001-of-00002.safetensors", "/optimizer-00002-of-00002.safetensors"}) {
      const std::vector<float> part = SafeTensors::open(fin + f).read_f32("master_weights");
      master.insert(master.end(), part.begin(), part.end());
    }
    std::sort(hf.begin(), hf.end());
    std::sort(master.begin(), master.end());
    REQUIRE((hf == master));  // (a failure would print every value)
  }
  // Same program, same threads: the same bytes. ZeRO 3 gathers each weight group from the
  // owners' bf16 slices, which hold what ZeRO 2's all-gather copies everywhere: the same run, the
  // same checkpoint (master weights and the sharded optimizer state).
  require_same_state(s.dir + "/z2/final", s.dir + "/z2_again/final");
  require_same_state(s.dir + "/z2/final", s.dir + "/z3/final");
  // The same weights saved by 1 process and by 2 at ZeRO 2 (the 1-process checkpoint at step 2
  // resumed for 0 more steps): the same files byte for byte. A checkpoint written by the ranks
  // serves eval_factoids.
  {
    const int rc = run(mpirun2({kTrainCuda, "--resume", s.dir + "/one/checkpoint-2", "--steps", "2", "--zero", "2",
                                "--out", s.dir + "/one_saved_by_two", "--dist-init", store + "_saved"}),
                       s.dir + "/one_saved_by_two.log");
    INFO(read_text_file(s.dir + "/one_saved_by_two.log"));
    REQUIRE(rc == 0);
    REQUIRE(read_text_file(s.dir + "/one_saved_by_two.log").find("weights written by the ranks") != std::string::npos);
  }
  for (const std::string& f : with(weight_files, {"model.safetensors.index.json", "config.json"})) {
    INFO(f);
    REQUIRE(read_text_file(s.dir + "/one_saved_by_two/final/" + f) == read_text_file(s.dir + "/one/checkpoint-2/" + f));
  }
  // A full disk while rank 0 writes the second weight file, whose other part rank 1 owns
  // (test/shim/enospc.c): rank 0 goes on taking part in that file's broadcasts, both ranks agree
  // that the save failed, and nothing is kept (a rank that left the collectives would give an
  // NCCL error instead of the disk's). The ranks are started apart (not by mpirun, which ends the
  // job at the first exit) so that each one's message is seen.
  {
    const std::string out = s.dir + "/fulldisk";
    std::vector<pid_t> ranks;
    for (int r = 0; r < 2; r++)
      ranks.push_back(start_rank(r,
                                 {kTrainCuda, "--resume", s.dir + "/z2/checkpoint-2", "--steps", "2", "--out", out,
                                  "--dist-init", store + "_fulldisk"},
                                 out + std::to_string(r) + ".log",
                                 {{"LD_PRELOAD", abs_path("build/test/libenospc.so")},
                                  {"ENOSPC_PATH", "model-00002-of-00004"},
                                  {"ENOSPC_AFTER_BYTES", "1000"}}));
    for (pid_t pid : ranks) {
      int status = 0;
      REQUIRE(waitpid(pid, &status, 0) == pid);
      REQUIRE((WIFEXITED(status) && WEXITSTATUS(status) == 1));
    }
    const std::string log0 = read_text_file(out + "0.log"), log1 = read_text_file(out + "1.log");
    INFO(log0 << log1);
    REQUIRE(log0.find("error: " + out + "/final.tmp/model-00002-of-00004.safetensors: write failed: No space left on "
                      "device; nothing of this checkpoint was kept") != std::string::npos);
    REQUIRE(log1.find("error: another rank could not write its part of checkpoint " + out + "/final") !=
            std::string::npos);
    REQUIRE(!file_exists(out + "/final"));
    REQUIRE(!file_exists(out + "/final.tmp"));
  }
  REQUIRE(run({"./eval_factoids", "--model", s.dir + "/z2/final", "--data", s.dir + "/kvr.jsonl", "--device", "cpu",
               "--threads", "1", "--out", s.dir + "/z2_eval"},
              s.dir + "/z2_eval.log") == 0);
  REQUIRE(file_exists(s.dir + "/z2_eval/predictions.jsonl"));

  // ZeRO 2 with tied embeddings (the embedding's gradient stays staged from the LM head at the
  // start of the backward to the embedding at its end) and 2 micro-batches per rank, each reduced
  // to the owners' slices: the losses of one process (4 micro-batches of 2 rows).
  {
    const std::string tied = s.dir + "/tied.json";
    std::string cfg = read_text_file(s.config);
    cfg.replace(cfg.find("\"tie_word_embeddings\": false"), 28, "\"tie_word_embeddings\": true");
    write_file_atomic(tied, cfg);
    auto tied_args = [&](const std::string& name) {
      std::vector<std::string> a = with(with(s.args(kTrainCuda, "cuda", name, 2), eps), {"--micro-batch-size", "2"});
      *(std::find(a.begin(), a.end(), "--init") + 1) = tied;
      return a;
    };
    REQUIRE(run(tied_args("one_tied"), s.dir + "/one_tied.log") == 0);
    const std::vector<json> a = step_events(s.dir + "/one_tied.jsonl");
    REQUIRE(a.size() == 2);
    // ZeRO 3 also gathers the tied embedding twice per micro-batch (the embedding, then the LM
    // head) and, with --recompute block, reads each layer's group again in the backward.
    for (const std::string name : {"z2_tied", "z3_tied"}) {
      INFO(name);
      std::vector<std::string> extra = with(zero_args(name.substr(0, 2)), {"--dist-init", store + "_" + name});
      if (name == "z3_tied") extra = with(extra, {"--recompute", "block"});
      const int rc = run(mpirun2(with(tied_args(name), extra)), s.dir + "/" + name + ".log");
      INFO(read_text_file(s.dir + "/" + name + ".log"));
      REQUIRE(rc == 0);
      const std::vector<json> b = step_events(s.dir + "/" + name + ".jsonl");
      REQUIRE(b.size() == 2);
      for (int i = 0; i < 2; i++) {
        const double l1 = a[i]["loss"], l2 = b[i]["loss"], n1 = a[i]["grad_norm"], n2 = b[i]["grad_norm"];
        REQUIRE(std::abs(l2 - l1) <= 1e-5 * std::abs(l1));
        REQUIRE(std::abs(n2 - n1) <= 1e-4 * std::abs(n1));
      }
      REQUIRE(max_weight_diff(s.dir + "/one_tied/final", s.dir + "/" + name + "/final") <= 2 * 2 * 1e-3);
    }
  }
  // The planted missing wait: with ENGINE_DEBUG_SKIP_COMM_WAIT=1 the compute stream does not wait
  // for the communication stream. The emulator runs that stream only when something waits for
  // it, so (on a GPU it would race): at ZeRO 1 the forward after a step reads the weights before
  // their all-gather (step 4's loss: step 1 has learning rate 0 and the checkpoint at step 2
  // synchronizes); at ZeRO 2 the backward rewrites a staging half before its reductions read it
  // (the first gradient norm); at ZeRO 3 the forward reads a gather buffer before its group
  // arrives (the first loss).
  if (kTrainCuda == "build/train_llama_emu") {
    for (const std::string name : {"z1", "z2", "z3"}) {
      INFO(name);
      std::vector<std::string> a = mpirun2(with(with(s.args(kTrainCuda, "cuda", name + "_nowait", steps), eps),
                                                with(zero_args(name), {"--dist-init", store + "_nowait_" + name})));
      a.insert(a.begin() + 1, {"-x", "ENGINE_DEBUG_SKIP_COMM_WAIT=1"});
      REQUIRE(run(a, s.dir + "/" + name + "_nowait.log") == 0);
      const std::vector<json> b = step_events(s.dir + "/" + name + "_nowait.jsonl");
      REQUIRE(b.size() == (size_t)steps);
      const int i = name == "z1" ? 3 : 0;
      const double n1 = one[i]["grad_norm"], n2 = b[i]["grad_norm"], l1 = one[i]["loss"], l2 = b[i]["loss"];
      if (name == "z2") REQUIRE(std::abs(n2 - n1) > 1e-2 * n1);
      else REQUIRE(std::abs(l2 - l1) > 1e-3 * l1);
    }
  }

  // Re-sharding: the 2-shard checkpoint at step 2 resumed by one process, and the 1-process
  // checkpoint resumed by two at ZeRO 2 and 3 (each reading its slice), continue with the losses of the
  // uninterrupted run; a ZeRO 0 or 3 checkpoint resumed at 2 processes ends with the same bytes.
  REQUIRE(run({kTrainCuda, "--resume", s.dir + "/z2/checkpoint-2", "--zero", "0", "--out", s.dir + "/two_then_one",
               "--log", s.dir + "/two_then_one.jsonl"},
              s.dir + "/two_then_one.log") == 0);
  for (const auto& [name, from, zero] : {std::tuple<std::string, std::string, std::string>{"one_then_two", "one", "2"},
                                         {"one_then_two_z3", "one", "3"}, {"z0_resumed", "z0", "0"},
                                         {"z3_resumed", "z3", "3"}}) {
    const int rc = run(mpirun2({kTrainCuda, "--resume", s.dir + "/" + from + "/checkpoint-2", "--zero", zero, "--out",
                                s.dir + "/" + name, "--log", s.dir + "/" + name + ".jsonl", "--dist-init",
                                store + "_" + name}),
                       s.dir + "/" + name + ".log");
    INFO(read_text_file(s.dir + "/" + name + ".log"));
    REQUIRE(rc == 0);
  }
  require_same_state(s.dir + "/z0_resumed/final", s.dir + "/z0/final");
  require_same_state(s.dir + "/z3_resumed/final", s.dir + "/z3/final");
  for (const std::string name : {"two_then_one", "one_then_two", "one_then_two_z3"}) {
    INFO(name);
    const std::vector<json> resumed = step_events(s.dir + "/" + name + ".jsonl");
    REQUIRE(resumed.size() == 2);
    for (int i = 0; i < 2; i++) {
      REQUIRE(resumed[i]["step"] == i + 3);
      const double l1 = one[i + 2]["loss"], lr = resumed[i]["loss"];
      REQUIRE(std::abs(lr - l1) <= 1e-5 * std::abs(l1));
    }
  }

  // SIGKILL of both ranks while rank 0 writes the final checkpoint (every optimizer shard and
  // weight file written, nothing renamed yet): no final directory appears, and the run resumed from checkpoint-2 at 2
  // processes ends with the bytes of the uninterrupted run.
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; r++)
    pids.push_back(start_rank(r, with(with(s.args(kTrainCuda, "cuda", "killed", steps), eps),
                                      with(zero_args("z2"), {"--dist-init", store + "_killed"})),
                              s.dir + "/killed" + std::to_string(r) + ".log",
                              {{"ENGINE_DEBUG_CHECKPOINT_PAUSE", "final"}}));
  const std::string paused = s.dir + "/killed/final.tmp/.paused";
  for (int i = 0; i < 12000 && !file_exists(paused); i++) usleep(10000);
  REQUIRE(file_exists(paused));
  REQUIRE(file_exists(s.dir + "/killed/final.tmp/optimizer-00002-of-00002.safetensors"));
  for (const std::string& f : weight_files) REQUIRE(file_exists(s.dir + "/killed/final.tmp/" + f));
  for (pid_t pid : pids) kill(pid, SIGKILL);
  for (pid_t pid : pids) waitpid(pid, nullptr, 0);
  REQUIRE(!file_exists(s.dir + "/killed/final"));
  const int rc = run(mpirun2({kTrainCuda, "--resume", s.dir + "/killed", "--dist-init", store + "_killed2"}),
                     s.dir + "/killed_resumed.log");
  INFO(read_text_file(s.dir + "/killed_resumed.log"));
  REQUIRE(rc == 0);
  REQUIRE(read_text_file(s.dir + "/killed_resumed.log").find("resumed from " + s.dir + "/killed/checkpoint-2") !=
          std::string::npos);
  require_same_state(s.dir + "/killed/final", s.dir + "/z2/final");
  REQUIRE(!file_exists(s.dir + "/killed/final.tmp"));
}

TEST_CASE("train_llama with 2 processes: a signal to one rank stops both after the same step, with a checkpoint") {
  if (!dist_tests_enabled()) return;
  Setup s;
  // Two processes started by hand with torchrun-style variables, so that the test knows rank 1's pid.
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; r++)
    pids.push_back(start_rank(r, with(s.args(kTrainCuda, "cuda", "sig", 200),
                                      {"--dist-init", "file://" + abs_path(s.dir) + "/store"}),
                              s.dir + "/sig" + std::to_string(r) + ".log"));
  // Once rank 0 has logged a step, SIGTERM to rank 1 alone.
  for (int i = 0; i < 6000 && step_events(s.dir + "/sig.jsonl").empty(); i++) usleep(10000);
  REQUIRE(!step_events(s.dir + "/sig.jsonl").empty());
  kill(pids[1], SIGTERM);
  int status[2];
  for (int r = 0; r < 2; r++) waitpid(pids[r], &status[r], 0);
  INFO(read_text_file(s.dir + "/sig0.log") + read_text_file(s.dir + "/sig1.log"));
  REQUIRE((WIFEXITED(status[0]) && WEXITSTATUS(status[0]) == 0));
  REQUIRE((WIFEXITED(status[1]) && WEXITSTATUS(status[1]) == 0));
  const std::vector<json> steps = step_events(s.dir + "/sig.jsonl");
  REQUIRE(steps.size() < 200);
  const std::string ck = s.dir + "/sig/checkpoint-" + std::to_string(steps.size());
  REQUIRE(file_exists(ck + "/trainer_state.json"));
  REQUIRE(json::parse(read_text_file(ck + "/trainer_state.json"))["stop_reason"] == "signal");
}

TEST_CASE("train_llama with 2 processes: bad input is an error on every rank, never a hang") {
  if (!dist_tests_enabled()) return;
  Setup s;
  const std::string store = "file://" + abs_path(s.dir) + "/store";
  // A batch that does not divide over the ranks.
  std::vector<std::string> a = s.args(kTrainCuda, "cuda", "odd", 2);
  a[std::find(a.begin(), a.end(), "--batch-size") - a.begin() + 1] = "7";
  REQUIRE(run(mpirun2(with(a, {"--dist-init", store})), s.dir + "/odd.log") != 0);
  std::string log = read_text_file(s.dir + "/odd.log");
  INFO(log);
  // Every rank finds it; mpirun ends the job at the first rank's exit, so one message may be cut.
  REQUIRE(log.find(" of 2: --batch-size 7 does not divide over 2 ranks (give a multiple of 2)") != std::string::npos);
  // Ranks given different options (mpirun's MPMD form): both ranks say so.
  std::vector<std::string> mpmd = {"mpirun", "--allow-run-as-root", "--oversubscribe", "-x", "EMU_DEVICE_COUNT=2",
                                   "-np", "1"};
  mpmd = with(mpmd, with(s.args(kTrainCuda, "cuda", "mm", 2), {"--dist-init", store, "--warmup-ratio", "0.1"}));
  mpmd = with(mpmd, {":", "-x", "EMU_DEVICE_COUNT=2", "-np", "1"});
  mpmd = with(mpmd, with(s.args(kTrainCuda, "cuda", "mm", 2), {"--dist-init", store, "--warmup-ratio", "0.2"}));
  REQUIRE(run(mpmd, s.dir + "/mm.log") != 0);
  log = read_text_file(s.dir + "/mm.log");
  INFO(log);
  REQUIRE(log.find(" of 2: the options differ between ranks (rank 0 and rank(s) 1): every rank must be given the "
                   "same command line") != std::string::npos);
  // No --dist-init outside OpenMPI (there the default is MPI): rank 0 of 2 stops at once.
  setenv("RANK", "0", 1);
  setenv("WORLD_SIZE", "2", 1);
  setenv("LOCAL_RANK", "0", 1);
  REQUIRE(run(s.args(kTrainCuda, "cuda", "noinit", 2), s.dir + "/noinit.log") != 0);
  REQUIRE(read_text_file(s.dir + "/noinit.log").find("--dist-init file:///PATH is required when the launcher (torchrun)") !=
          std::string::npos);
  // A rank that never starts: rank 0 alone, told by torchrun-style variables that there are two.
  const int rc = run(with(s.args(kTrainCuda, "cuda", "alone", 2), {"--dist-init", store, "--dist-timeout", "1"}),
                     s.dir + "/alone.log");
  unsetenv("RANK");
  unsetenv("WORLD_SIZE");
  unsetenv("LOCAL_RANK");
  REQUIRE(rc != 0);
  log = read_text_file(s.dir + "/alone.log");
  INFO(log);
  REQUIRE(log.find("timed out after 1 s waiting for rank 1 of 2") != std::string::npos);
}

TEST_CASE("the GPU recipes start train_llama through the launcher given (--launcher, --nproc)") {
  const std::string dir = "build/test/tmp_recipe_" + std::to_string(getpid());
  remove_tree(dir);
  make_dirs(dir + "/model");
  write_file_atomic(dir + "/model/tokenizer.json", read_text_file("test/fixtures/tokenizer/ours.json"));
  auto dry = [&](const std::string& opts, const std::string& log) {
    return run({"bash", "scripts/gpu_remix.sh", "--model", dir + "/model", "--generic", "g.jsonl", "--d-b", "popqa=p.jsonl",
                "--seeds", "1", "--ratios", "1", "--out", dir + "/out", "--dry-run", "--no-build", "--no-savings", "--nproc",
                "2", "--zero", "2", "--optimizer-state", "bf16", "--launcher", opts},
               dir + "/" + log);
  };
  REQUIRE(dry("mpirun", "mpirun.log") == 0);
  std::string log = read_text_file(dir + "/mpirun.log");
  INFO(log);
  REQUIRE(log.find("+ mpirun -np 2 ./train_llama --device cuda") != std::string::npos);
  REQUIRE(log.find("--zero 2 --optimizer-state bf16 --out") != std::string::npos);  // MPI: no --dist-init
  REQUIRE(log.find("+ ./eval_factoids") != std::string::npos);                     // one process
  REQUIRE(dry("torchrun", "torchrun.log") == 0);
  log = read_text_file(dir + "/torchrun.log");
  REQUIRE(log.find("+ torchrun --standalone --nproc-per-node=2 --no-python ./train_llama") != std::string::npos);
  REQUIRE(log.find("--dist-init file://" + abs_path(dir) + "/out/stage1-none-s1.rendezvous") != std::string::npos);
  REQUIRE(dry("srun", "srun.log") == 0);
  REQUIRE(read_text_file(dir + "/srun.log").find("+ srun --ntasks=2 --ntasks-per-node=2 --gpus-per-task=1") !=
          std::string::npos);
  REQUIRE(dry("pbs", "bad.log") == 2);
  REQUIRE(read_text_file(dir + "/bad.log").find("error: --launcher 'pbs' must be none, mpirun, srun or torchrun") !=
          std::string::npos);
  REQUIRE(dry("none", "none.log") == 2);  // --nproc 2 with one process
  REQUIRE(read_text_file(dir + "/none.log").find("error: --nproc 2 needs --launcher") != std::string::npos);
  remove_tree(dir);
}
