// train_llama: one training stage of a Llama-family model on token shards, REMIX style.
//
//   ./train_llama --init tiny.json --tokenizer tok.json --data kvr.bin --out run1 --epochs 20
//   ./train_llama --model run1/final --data stage2.bin --mix generic=wiki*.bin:2 --out run2
//   ./train_llama --resume run1            # continues bit-exactly from the newest checkpoint
//   ./train_llama --model dec --larimar enc.json --memory-slots 64 --data text.bin --batch-size 8 --out lar
//                                          # a Larimar model: episodes of 8 texts (larimar/train.h)
//
// The loop: the dataloader hands out optimizer batches of B examples (micro-batched, packed);
// each micro-batch adds its gradients (normalized by the target tokens of the whole batch); the
// optimizer step clips the global norm and applies AdamW at the scheduled learning rate. Before the
// first step and at epoch ends the factoids can be evaluated (greedy, exact match) to stop at 100%
// memorization (after 0 steps for a model that already knows them);
// the step loss can stop training too (REMIX: below 1e-4 ten times). Checkpoints are atomic and
// hold everything needed to resume to identical weights.
#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/hash.h"
#include "common/mpi_store.h"
#include "common/nvtx.h"
#include "common/process_group.h"
#include "common/progress.h"
#include "common/run_lock.h"
#include "dataloader/dataloader.h"
#include "eval/factoid_eval.h"
#include "larimar/train.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/decode.h"
#include "model/llama.h"
#include "model/schedule.h"
#include "model/weights.h"
#include "model/zero_shards.h"
#include "tokenizer/tokenizer.h"
#include "kernels/cuda_memory_plan.h"  // --dry-run
#if defined(ENGINE_CUDA)
#include "kernels/cuda_backend.h"  // --device cuda (the Makefile defines ENGINE_CUDA when nvcc is found)
#endif
#include <type_traits>

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Command line (common/cli.h). The options given are kept as given (name -> values) so that a
// checkpoint can store them and --resume can re-apply them, with anything given again on the new
// command line winning; both go through the same declarations below.

using OptionMap = cli::OptionMap;

struct TrainArgs {
  std::string model, init, tokenizer, device = "auto";
  bool dry_run = false;
  int threads = 0;
  std::string data;
  std::vector<std::string> mix;
  int64_t epochs = 20, steps = 0;
  int batch_size = 32, micro_batch_size = 0, seq_len = 2048;
  bool pack = true, truncate = false;
  double lr = 5e-5, warmup_ratio = 0.05;
  std::string schedule = "cosine";
  double weight_decay = 0.0, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0;
  uint64_t seed = 42;
  std::string eval_data;
  int eval_every_epochs = 1;
  int64_t eval_limit = 0;
  int eval_batch_size = 32, max_new_tokens = 32;
  std::string match = "exact";
  double stop_at_accuracy = 0;  // 0 = off
  double stop_loss = 0;         // 0 = off
  int stop_loss_count = 10;
  std::string out;
  int64_t save_every = 0;
  int keep = 2;
  std::string save_dtype = "F32";
  std::string max_shard_size = "5GB";
  std::string optimizer_state = "fp32";
  std::string recompute = "none";
  bool offload_optimizer = false;
  double gpu_memory = 0;  // GiB the plan must fit (0: the device's free memory; 80 GB for --dry-run)
  std::string resume, log;
  int log_every = 1;
  std::string dist_init;
  double dist_timeout = 600;
  int world_size = 0;  // --dry-run: plan for this many ranks (0: the launcher's)
  int zero = 0;
  double bucket_mb = 25;
  // Larimar (larimar/train.h): one episode of --batch-size texts per step.
  std::string larimar, pinv = "exact";
  int memory_slots = 0;
  bool freeze_decoder = false;
  double beta = 0.5, beta_ratio_zero = 0.5, beta_ratio_increase = 0.25;
  int beta_cycles = 10;
};

static void declare_options(CLI::App& app, TrainArgs& a) {
  cli::init(app, "usage: train_llama (--model DIR | --init CONFIG.json | --resume PATH) --data SHARDS --out DIR "
                 "[options]");
  app.description(
      "Trains one stage on token shards made by ./prepare_data. Defaults are the REMIX settings:\n"
      "AdamW lr 5e-5, betas (0.9, 0.95), eps 1e-8, no weight decay, clip 1.0, cosine with 5% warmup,\n"
      "batch 32, 20 epochs. Checkpoints are HF directories plus optimizer.safetensors and\n"
      "trainer_state.json; SIGINT/SIGTERM save one and exit.");
  app.footer("environment: TRAIN_LLAMA_DEBUG_NAN_STEP=N poisons the gradients of step N (tests the\n"
             "non-finite guard).");
  const int64_t big = int64_t(1) << 40;
  auto opt = [&](const char* name, auto& var, const char* metavar, const char* help) {
    return app.add_option(name, var, help)->option_text(metavar);
  };
  opt("--model", a.model, "DIR", "start from a Hugging Face model directory or one of our checkpoints (weights only)");
  opt("--init", a.init, "CONFIG.json", "start from random init with this HF config.json (HF init, --seed)");
  opt("--tokenizer", a.tokenizer, "FILE", "tokenizer.json to store in checkpoints and to decode evaluations (default: the model's)");
  opt("--device", a.device, "auto|cpu|cuda", "backend (default auto: cuda when a GPU is present)")
      ->check(cli::one_of({"auto", "cpu", "cuda"}));
  opt("--threads", a.threads, "N", "CPU threads (default: OpenMP's default); keep it fixed for a bit-exact resume")
      ->check(cli::integer(0, 4096));
  opt("--data", a.data, "SHARDS", "primary stream: comma-separated shard paths or globs");
  cli::repeatable(opt("--mix", a.mix, "NAME=SHARDS:RATIO",
                      "add RATIO x |primary| examples of this stream to each epoch (repeatable)"));
  opt("--epochs", a.epochs, "N", "epochs to train (default 20, REMIX); the cap when early stopping is on")
      ->check(cli::integer(1, big));
  opt("--steps", a.steps, "N", "optimizer steps to train instead of --epochs")->check(cli::integer(0, big));
  opt("--batch-size", a.batch_size, "B", "examples per optimizer step (default 32)")->check(cli::integer(1, 1 << 24));
  opt("--micro-batch-size", a.micro_batch_size, "M", "examples per micro-batch, gradients accumulate (default 0 = whole batch)")
      ->check(cli::integer(0, 1 << 24));
  opt("--seq-len", a.seq_len, "T", "row length in tokens (default 2048)")->check(cli::integer(2, 1 << 24));
  opt("--pack", a.pack, "0|1", "pack several examples per row (default 1); attention never crosses examples")
      ->check(cli::zero_or_one());
  opt("--truncate", a.truncate, "0|1", "truncate examples longer than --seq-len instead of failing (default 0)")
      ->check(cli::zero_or_one());
  opt("--lr", a.lr, "LR", "peak learning rate (default 5e-5)")->check(cli::number(0, HUGE_VAL));
  opt("--warmup-ratio", a.warmup_ratio, "R", "fraction of steps of linear warmup (default 0.05)")->check(cli::number());
  opt("--schedule", a.schedule, "constant|cosine|linear", "learning-rate decay after warmup (default cosine)");
  opt("--weight-decay", a.weight_decay, "WD", "AdamW decoupled weight decay (default 0)")->check(cli::number());
  opt("--beta1", a.beta1, "B1", "AdamW beta1 (default 0.9)")->check(cli::number());
  opt("--beta2", a.beta2, "B2", "AdamW beta2 (default 0.95)")->check(cli::number());
  opt("--eps", a.eps, "EPS", "AdamW epsilon (default 1e-8)")->check(cli::number());
  opt("--clip", a.clip, "NORM", "global gradient-norm clipping, 0 = off (default 1.0)")->check(cli::number());
  opt("--seed", a.seed, "S", "seed of the data order and of --init (default 42)")->check(cli::integer(0, INT64_MAX));
  opt("--eval-data", a.eval_data, "QA", "questions to evaluate at epoch ends: QA shards or a QA JSONL file");
  opt("--eval-every-epochs", a.eval_every_epochs, "K", "evaluate every K epochs (default 1 when --eval-data is given)")
      ->check(cli::integer(1, 1 << 30));
  opt("--eval-limit", a.eval_limit, "N", "evaluate only the first N questions (default all)")->check(cli::integer(0, big));
  opt("--eval-batch-size", a.eval_batch_size, "N", "sequences decoded together (default 32)")
      ->check(cli::integer(1, 1 << 20));
  opt("--max-new-tokens", a.max_new_tokens, "N", "longest evaluated answer in tokens (default 32)")
      ->check(cli::integer(1, 1 << 20));
  opt("--match", a.match, "exact|squad|contains|gsm8k", "answer matching rule (default exact: strip + lowercase)");
  opt("--stop-at-accuracy", a.stop_at_accuracy, "A", "stop once evaluation accuracy >= A (e.g. 1.0 = 100% memorized)")
      ->check(cli::number(0, 1));
  opt("--stop-loss", a.stop_loss, "L", "stop once the step loss has been below L --stop-loss-count times in all (REMIX: 1e-4)")
      ->check(cli::number());
  opt("--stop-loss-count", a.stop_loss_count, "N", "see --stop-loss (default 10)")->check(cli::integer(1, 1 << 30));
  opt("--out", a.out, "DIR", "run directory: DIR/checkpoint-<step>, and DIR/final at the end");
  opt("--save-every", a.save_every, "N", "write a checkpoint every N steps (default 0: only the final one)")
      ->check(cli::integer(0, big));
  opt("--keep", a.keep, "N", "keep the N newest periodic checkpoints, 0 = all (default 2)")->check(cli::integer(0, 1 << 20));
  opt("--save-dtype", a.save_dtype, "F32|BF16", "dtype of model.safetensors (the master weights in optimizer.safetensors stay fp32)")
      ->check(cli::one_of({"F32", "BF16"}));
  opt("--max-shard-size", a.max_shard_size, "SIZE",
      "largest weight file of a checkpoint, as Hugging Face's max_shard_size: bytes, or with KB/MB/GB (powers of "
      "1000) or KiB/MiB/GiB; a larger model is split into model-0000i-of-0000N.safetensors plus "
      "model.safetensors.index.json (default 5GB)")
      ->check(cli::byte_size(1));
  opt("--optimizer-state", a.optimizer_state, "fp32|bf16", "AdamW moments: fp32 (default), or bf16 with stochastic rounding (--device cuda)")
      ->check(cli::one_of({"fp32", "bf16"}));
  opt("--recompute", a.recompute, "none|attn|mlp|block",
      "activation recompute: rebuild in the backward what the forward did not keep (attention: q|k|v, output, "
      "log-sum-exp; mlp: gate|up, SwiGLU; block: all but each layer's residual input); bit-identical gradients "
      "(default none)")
      ->check(cli::one_of({"none", "attn", "mlp", "block"}));
  app.add_flag("--offload-optimizer", a.offload_optimizer,
               "keep the fp32 master weights and AdamW moments in pinned host memory and run AdamW on the host "
               "cores; the GPU holds the bf16 weights and the gradients (--device cuda, fp32 moments)");
  opt("--gpu-memory", a.gpu_memory, "GIB",
      "GPU memory the plan must fit, in GiB; a plan that does not fit is printed with its shortfall and refused "
      "before anything is allocated (default: the device's free memory; 74.51 = 80 GB for --dry-run)")
      ->check(cli::number(0, 1e6));
  opt("--resume", a.resume, "PATH", "resume from a checkpoint, or from the newest checkpoint of a run directory");
  opt("--log", a.log, "FILE", "append one JSON line per step (and per evaluation) to FILE");
  opt("--log-every", a.log_every, "N", "print a progress line every N steps (default 1)")->check(cli::integer(1, 1 << 30));
  opt("--dist-init", a.dist_init, "file:///PATH|mpi",
      "rendezvous of a multi-process run (launched by mpirun, srun or with RANK/WORLD_SIZE/LOCAL_RANK): rank 0 "
      "writes the NCCL id to PATH, on a file system every rank sees, and removes it once all have read it; or "
      "mpi: MPI_Bcast through OpenMPI's libmpi (the default under OpenMPI's mpirun when libmpi loads)");
  opt("--dist-timeout", a.dist_timeout, "S", "seconds a rank waits for the others at the rendezvous (default 600)")
      ->check(cli::number(0.001, 1e9));
  opt("--zero", a.zero, "0|1|2|3",
      "ZeRO stage (--device cuda): 0 = every rank holds the whole state (default); 1 = each rank updates its "
      "slice of the AdamW state and fp32 master weights, gradients reduced to their owner during the last "
      "micro-batch's backward, updated bf16 weights gathered during the next forward; 2 = the same, each rank "
      "keeping only its slice of the gradients, every micro-batch's reduced during its backward; 3 = also only "
      "its slice of the bf16 weights, each layer's gathered before its use while the next one is prefetched")
      ->check(cli::integer(0, 3));
  opt("--bucket-mb", a.bucket_mb, "MB",
      "with several processes, gradients are reduced in buckets of about MB megabytes as the backward produces "
      "them (default 25)")
      ->check(cli::number(0.001, 1e6));
  opt("--world-size", a.world_size, "N", "--dry-run: plan per GPU for N data-parallel ranks (default: the launcher's)")
      ->check(cli::integer(1, 1 << 20));
  opt("--larimar", a.larimar, "CONFIG.json|DIR",
      "train a Larimar model (docs/larimar.md): an encoder and memory from scratch (an encoder config.json: a Llama "
      "config plus larimar_code_size) or from a Larimar directory, with the decoder of --model/--init; each step "
      "is one episode of --batch-size texts");
  opt("--memory-slots", a.memory_slots, "K", "Larimar: memory slots K (required with a config; a directory has its own)")
      ->check(cli::integer(0, 1 << 16));
  app.add_flag("--freeze-decoder", a.freeze_decoder, "Larimar: the decoder's weights stay as loaded");
  opt("--beta", a.beta, "B", "Larimar: the KL weight's peak, reached cyclically (default 0.5, IBM's)")
      ->check(cli::number(0, HUGE_VAL));
  opt("--beta-cycles", a.beta_cycles, "N", "Larimar: cycles of the beta schedule over the run (default 10)")
      ->check(cli::integer(1, 1 << 30));
  opt("--beta-ratio-zero", a.beta_ratio_zero, "R", "Larimar: fraction of each cycle at beta 0 (default 0.5)")
      ->check(cli::number(0, 1));
  opt("--beta-ratio-increase", a.beta_ratio_increase, "R",
      "Larimar: fraction of each cycle ramping linearly to the peak (default 0.25)")
      ->check(cli::number(1e-9, 1));
  opt("--pinv", a.pinv, "exact|iterative", "Larimar: pseudo-inverse of the memory write and read (default exact)")
      ->check(cli::one_of({"exact", "iterative"}));
  app.add_flag("--dry-run", a.dry_run,
               "print the GPU memory plan (weights, grads, optimizer, activations, workspace) and exit");
}

// The arguments of a run from its options (the command line, or the stored options of a resumed
// run overridden by the new command line).
static TrainArgs train_args(const OptionMap& options) {
  TrainArgs a;
  CLI::App app;
  declare_options(app, a);
  cli::parse_or_throw(app, cli::to_args(app, options));
  parse_schedule_kind(a.schedule);
  parse_match_kind(a.match);
  return a;
}

// ---------------------------------------------------------------------------------------------
// Signals. SIGINT and SIGTERM are blocked in every thread and taken by a watcher thread
// (sigwait), which raises a flag; the loop saves a checkpoint after the current step. No
// asynchronous handler ever interrupts the computation, which runs in oneDNN and OpenMP code that
// is not async-signal-safe (docs/design.md, "Signals"). A second signal terminates at once.
static std::atomic<int> g_stop_signal{0};

// Must run before any other thread exists: threads inherit the blocked mask.
static void start_signal_watcher() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set] {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) return;
    g_stop_signal = sig;
    if (sigwait(&set, &sig) != 0) return;
    signal(sig, SIG_DFL);  // the second one: default action, in this thread, where it is unblocked
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    raise(sig);
  }).detach();
}

// ---------------------------------------------------------------------------------------------

static constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
static std::string fixed2(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", x);
  return b;
}

// What LlamaModel<CpuBackend> keeps per layer for the backward (model/llama.h: the residual
// stream, both norms' outputs, q|k|v, attention output, gate|up, SwiGLU, all fp32, plus two RMSNorm
// reciprocals and the attention log-sum-exp per token): the bulk of its activation memory. What
// --recompute rebuilds is kept once, not per layer.
static double cpu_saved_activation_bytes(const LlamaConfig& c, int rows, int T, Recompute rc) {
  const double N = double(rows) * T, C = c.hidden_size, I = c.intermediate_size, H = c.num_attention_heads,
               D = c.head_dim, QKV = (c.num_attention_heads + 2.0 * c.num_key_value_heads) * c.head_dim,
               L = c.num_hidden_layers;
  const double norms = 3 * C + 2, attn = QKV + H * D + H, mlp = 3 * I, layer = C + norms + attn + mlp;
  const double shared = (rc == Recompute::attn || rc == Recompute::block ? attn : 0) +
                        (rc == Recompute::mlp || rc == Recompute::block ? mlp : 0) +
                        (rc == Recompute::block ? norms : 0);
  return N * (L * (layer - shared) + shared) * 4;
}

// Backend: CpuBackend, or CudaBackend (--device cuda, nvcc builds). On the CUDA backend the fp32 state
// lives on the device; host_* stage it for weight loading and checkpoints. With --offload-optimizer
// it is pinned host memory already (LlamaModel), read and written in place like the CPU backend's.
template <class Backend>
struct Trainer {
  static constexpr bool kOnHost = std::is_same_v<Backend, CpuBackend>;
  std::vector<float> host_params, host_m, host_v;
  bool state_in_host_memory() const { return kOnHost || args.offload_optimizer; }
  float* params_on_host() { return state_in_host_memory() ? model->params : host_params.data(); }
  float* adam_m_on_host() { return state_in_host_memory() ? model->adam_m : host_m.data(); }
  float* adam_v_on_host() { return state_in_host_memory() ? model->adam_v : host_v.data(); }
  // Device -> host copies of the parameters (and the AdamW moments with `with_optimizer`): the
  // master weights this rank holds (at ZeRO its slice, at its place in host_params).
  void state_to_host(bool with_optimizer) {
    model->finish_pending_update();  // the offloaded optimizer's update of the last step
    if (!state_in_host_memory()) {
      host_params.resize(model->layout.total);
      Backend::download(host_params.data() + model->opt_begin, model->params, model->opt_count);
      if (with_optimizer) {
        host_m.resize(model->opt_count);
        host_v.resize(model->opt_count);
        model->download_moments(host_m.data(), host_v.data());
      }
    }
  }
  void state_from_host(bool with_optimizer) {
    if (!state_in_host_memory()) {
      model->load_params(host_params.data());
      if (with_optimizer) model->upload_moments(host_m.data(), host_v.data());
    } else {
      model->params_changed();  // written in place through params_on_host()
    }
  }
  TrainArgs args;
  // This process's place in a multi-process run (launcher variables). Data parallelism (ZeRO 0):
  // every rank holds the whole model and optimizer state, takes its slice of each batch, and the
  // gradients are summed over ranks before identical optimizer steps; rank 0 alone prints, logs,
  // evaluates and writes checkpoints.
  ProcessGroupEnv pg;
  bool main_rank() const { return pg.rank == 0; }
  OptionMap options;  // as stored in checkpoints
  LlamaConfig config;
  std::optional<Tokenizer> tokenizer;
  std::unique_ptr<DataLoader> loader;
  std::unique_ptr<LlamaModel<Backend>> own_model;
  LlamaModel<Backend>* model = nullptr;  // own_model, or the decoder of a Larimar model
  // --larimar: the encoder, the memory and the decoder `model` points to (the encoder and the
  // decoder on this backend; the memory math on the host).
  std::unique_ptr<larimar::LarimarTrainer<Backend>> larimar;
  LrSchedule schedule;
  AdamWConfig adamw;
  std::vector<EvalItem> eval_items;
  MatchKind match = MatchKind::exact;

  int64_t step = 0, total_steps = 0, loss_below_count = 0, tokens_seen = 0;
  json evals = json::array();
  // Prompt templates of the primary data of the stages before this one (from the --model
  // checkpoint's lineage), oldest first: eval_factoids uses them to score earlier-stage facts
  // with the prompt they were trained with.
  json earlier_stage_templates = json::array();
  std::string last_checkpoint;  // newest complete checkpoint written or resumed from
  std::FILE* log_file = nullptr;
  double elapsed_before = 0;  // seconds trained by earlier processes (from trainer_state)

  ~Trainer() {
    if (log_file) std::fclose(log_file);
  }

  json trainer_state(const std::string& stop_reason) const {
    json s;
    s["step"] = step;
    s["epoch"] = loader->epoch();
    s["total_steps"] = total_steps;
    s["steps_per_epoch"] = loader->steps_per_epoch();
    s["data_cursor"] = loader->cursor().to_json();
    // The data order is a pure function of (seed, epoch) and there is no dropout, so the seed is
    // the whole random state of training.
    s["rng"] = {{"seed", args.seed}, {"kind", "splitmix64, derived per epoch from (seed, epoch)"}};
    if (larimar)  // ε of a step is a function of (seed, step): nothing more to keep
      s["larimar"] = {{"memory_slots", larimar->slots()}, {"code_size", larimar->encoder_config().code_size},
                      {"noise", "standard normal, Box-Muller over splitmix64 derived from (seed, step)"},
                      {"freeze_decoder", args.freeze_decoder}};
    s["args"] = options;
    s["tokenizer_hash"] = tokenizer ? tokenizer->hash_hex() : loader->tokenizer_hash_hex();
    s["prompt_template"] = loader->prompt_template();
    s["earlier_stage_templates"] = earlier_stage_templates;
    s["loss_below_count"] = loss_below_count;
    s["tokens_seen"] = tokens_seen;
    s["adam_step"] = model->adam_step;
    s["evals"] = evals;
    s["stop_reason"] = stop_reason;
    s["elapsed_s"] = elapsed_before + seconds_since_start();
    return s;
  }

  std::chrono::steady_clock::time_point start_time = std::chrono::steady_clock::now();
  double seconds_since_start() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  }

  void save(const std::string& dir, const std::string& stop_reason) {
    if (zero_sharded()) return save_sharded(dir, stop_reason);
    if (!main_rank()) return;  // every rank holds the same state (ZeRO 0)
    NVTX_RANGE("checkpoint");
    CheckpointToSave ck;
    ck.config = &config;
    ck.layout = &model->layout;
    state_to_host(true);
    ck.params = params_on_host();
    ck.adam_m = adam_m_on_host();
    ck.adam_v = adam_v_on_host();
    if (tokenizer) ck.tokenizer_json = tokenizer->to_json_string();
    ck.trainer_state = trainer_state(stop_reason);
    ck.weights_dtype = args.save_dtype;
    ck.max_shard_bytes = cli::parse_byte_size(args.max_shard_size);
    ck.moments_dtype = model->moment_dtype == MomentDtype::bf16 ? "BF16" : "F32";  // exact either way
    if (larimar) ck.write_extra = [&](const std::string& tmp) { larimar->save(tmp, ck.tokenizer_json); };
    try {
      save_checkpoint(dir, ck);
    } catch (const EngineError& e) {
      fail(e.what(), "; nothing of this checkpoint was kept. Last complete checkpoint: ",
           last_checkpoint.empty() ? "none" : last_checkpoint);
    }
    last_checkpoint = dir;
    std::printf("checkpoint: %s (step %lld)\n", dir.c_str(), (long long)step);
    std::fflush(stdout);
  }

  // The fp32 master weights [begin, end) of this rank's own slice (all that `params` holds at
  // ZeRO >= 1), to the host: what a sharded save reads of them.
  void owned_master_to_host(size_t begin, size_t end, float* dst) {
    check(begin >= model->opt_begin && end <= model->opt_begin + model->opt_count, "checkpoint: [", begin, ", ",
          end, ") is outside this rank's slice");
    Backend::download(dst, model->params + (begin - model->opt_begin), end - begin);
  }
  // The collective of write_weight_files at ZeRO >= 1: the flat weights [begin, end) into `dst` on
  // rank `writer`, each owner's part of it by one broadcast through the model's device staging
  // buffer (model->shard_staging, kShardStagingFloats; a part the writer owns is copied locally,
  // without a collective).
  void fetch_master_to_writer(size_t begin, size_t end, int writer, float* dst, float* staging,
                              std::vector<float>& host) {
    for (int r = 0; r < pg.world_size; r++) {
      const size_t a = std::max(begin, shards.begin(r)), b = std::min(end, shards.end(r));
      if (a >= b) continue;
      if (r == writer) {
        if (pg.rank == r) owned_master_to_host(a, b, dst + (a - begin));
        continue;
      }
#if defined(ENGINE_CUDA)
      if constexpr (!kOnHost) {
        if (pg.rank == r) {
          host.resize(b - a);
          owned_master_to_host(a, b, host.data());
          Backend::upload(staging, host.data(), b - a);
        }
        cuda_comm_broadcast(staging, b - a, r);
        cuda_comm_wait_all();  // the broadcast runs on the communication stream: done before the staging is read or reused
        if (pg.rank == writer) Backend::download(dst + (a - begin), staging, b - a);
      }
#endif
    }
  }

  // ZeRO >= 1 over several ranks: the same HF directory as one process, its weight files written by
  // the ranks (each from the owners' slices, one piece at a time: no rank gathers the whole model),
  // and the optimizer state as one shard per rank plus an index. Every step of the save ends with
  // an agreement of all ranks on its success, so DIR.tmp is renamed only once every rank has
  // written its files, and a failure anywhere stops every rank.
  void save_sharded(const std::string& dir, const std::string& stop_reason) {
    NVTX_RANGE("checkpoint");
    std::vector<float> own(model->opt_count);
    owned_master_to_host(model->opt_begin, model->opt_begin + model->opt_count, own.data());
    host_m.resize(model->opt_count);
    host_v.resize(model->opt_count);
    model->download_moments(host_m.data(), host_v.data());
    std::string err;
    auto step_on_all = [&](bool here, auto&& fn) {
      if (here) {
        try {
          fn();
        } catch (const std::exception& e) {
          err = e.what();
        }
      }
      double failed = err.empty() ? 0.0 : 1.0;
      sum_over_ranks(&failed, 1);
      return failed == 0.0;
    };
    const std::string moments_dtype = model->moment_dtype == MomentDtype::bf16 ? "BF16" : "F32";
    const uint64_t max_shard_bytes = cli::parse_byte_size(args.max_shard_size);
    std::vector<size_t> bounds;
    for (int r = 0; r <= pg.world_size; r++) bounds.push_back(shards.begin(r));
    bool ok = step_on_all(main_rank(), [&] { begin_checkpoint(dir); });
    ok = ok && step_on_all(true, [&] {
           OptimizerShardToSave sh;
           sh.layout = &model->layout;
           sh.rank = pg.rank;
           sh.world = pg.world_size;
           sh.begin = model->opt_begin;
           sh.count = model->opt_count;
           sh.params = own.data();
           sh.adam_m = host_m.data();
           sh.adam_v = host_v.data();
           sh.moments_dtype = moments_dtype;
           write_optimizer_shard(dir, sh);
         });
    ok = ok && step_on_all(true, [&] {
           std::vector<float> host;
           WeightFilesToSave w;
           w.layout = &model->layout;
           w.dtype = args.save_dtype;
           w.max_shard_bytes = max_shard_bytes;
           w.rank = pg.rank;
           w.world = pg.world_size;
           w.bounds = bounds;
           w.chunk = std::min(model->layout.total, kShardStagingFloats);  // what the staging holds
           w.fetch = [&](size_t a, size_t b, int writer, float* dst) {
             fetch_master_to_writer(a, b, writer, dst, model->shard_staging, host);
           };
           write_weight_files(dir, w);
         });
    ok = ok && step_on_all(main_rank(), [&] {
           CheckpointToSave ck;
           ck.config = &config;
           ck.layout = &model->layout;
           if (tokenizer) ck.tokenizer_json = tokenizer->to_json_string();
           ck.trainer_state = trainer_state(stop_reason);
           ck.weights_dtype = args.save_dtype;
           ck.max_shard_bytes = max_shard_bytes;
           ck.moments_dtype = moments_dtype;
           finish_sharded_checkpoint(dir, ck, bounds);
         });
    if (!ok) {
      if (main_rank()) abandon_checkpoint(dir);
      fail(err.empty() ? "another rank could not write its part of checkpoint " + dir : err,
           "; nothing of this checkpoint was kept. Last complete checkpoint: ",
           last_checkpoint.empty() ? "none" : last_checkpoint);
    }
    last_checkpoint = dir;
    std::printf("checkpoint: %s (step %lld, weights written by the ranks that own them, optimizer state in %d "
                "shards)\n", dir.c_str(), (long long)step, pg.world_size);
    std::fflush(stdout);
  }

  void log_json(const json& j) {
    if (!log_file) return;
    std::string line = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    std::fwrite(line.data(), 1, line.size(), log_file);
    std::fflush(log_file);
  }

  // One writer per run directory: the lock on --out (for --resume alone, the --out stored in the
  // checkpoint) is taken before anything in it is read, and held until the process ends. Leftovers
  // of a run that died in a checkpoint save are then cleaned up, with a note.
  RunLock run_lock;
  void lock_run_directory(const OptionMap& command_line) {
    std::string out = command_line.count("out") ? command_line.at("out").back() : "";
    if (out.empty() && command_line.count("resume")) {
      const std::string ck = resolve_resume_dir(command_line.at("resume").back());
      ResumeState r = parse_resume_state(load_trainer_state(ck), ck + "/trainer_state.json");
      if (r.args.count("out") && !r.args.at("out").empty()) out = r.args.at("out").back();
    }
    if (out.empty()) return;  // reported as a missing --out later
    std::string note;
    run_lock = acquire_run_lock(out, "train_llama", &note);
    if (!note.empty()) std::fprintf(stderr, "%s\n", note.c_str());
    for (const std::string& n : recover_run_dir(out)) std::fprintf(stderr, "%s\n", n.c_str());
  }

  // Refuses, before anything is allocated, a model or micro-batch whose host memory cannot fit in
  // MemAvailable. On the CPU: 16 bytes per parameter (weights, gradients, AdamW m and v, exactly
  // what LlamaModel allocates) plus the activations saved per layer for the backward (a lower
  // bound of what it allocates); with --device cuda, the host keeps fp32 staging copies of the
  // weights and moments (12 bytes per parameter), or with --offload-optimizer the state itself in
  // pinned memory, nothing more (the plan's host bytes, which the model and backend allocate).
  void check_host_memory_for_training(int rows) const {
    const ParamLayout layout = make_param_layout(config);
    const double P = double(layout.total);
    std::vector<std::pair<std::string, double>> plan;
    if constexpr (kOnHost) {
      plan = {{"weights", 4 * P}, {"gradients", 4 * P}, {"AdamW m and v", 8 * P},
              {"activations", cpu_saved_activation_bytes(config, rows, args.seq_len, train_memory().recompute)}};
    } else if (args.offload_optimizer) {  // the plan's own pinned bytes: the state and the transfer chunks
      plan = {{"offloaded master weights, AdamW m and v, transfer chunks (pinned)",
               (double)cuda_memory_plan(config, layout, rows, args.seq_len, false, ModelUse::train, 0, 0,
                                        train_memory()).host}};
    } else {
      plan = {{"host copies of the weights and AdamW m and v", 12 * P}};
    }
    char what[160];
    std::snprintf(what, sizeof what, "train_llama: %s with %.3fB parameters, micro-batch %d x %d tokens",
                  config.architecture.c_str(), P / 1e9, rows, args.seq_len);
    check_host_memory(what, plan, "Use a smaller model, --micro-batch-size or --seq-len");
  }

  // --recompute and --offload-optimizer; zero_memory adds what a ZeRO rank keeps.
  TrainMemory train_memory() const {
    TrainMemory m;
    m.recompute = args.recompute == "attn"    ? Recompute::attn
                  : args.recompute == "mlp"   ? Recompute::mlp
                  : args.recompute == "block" ? Recompute::block
                                              : Recompute::none;
    m.offload_optimizer = args.offload_optimizer;
    return m;
  }
  // `m` for rank `rank` of `world` at this run's ZeRO stage (model/zero_shards.h); rank 0 holds the
  // largest slice, so its plan is the per-GPU plan.
  TrainMemory zero_memory(TrainMemory m, int world, int rank = 0) const {
    return zero_train_memory(m, make_param_layout(config), (size_t)config.vocab_size * config.hidden_size,
                             (size_t)config.hidden_size, world, args.zero, rank);
  }

  // The GPU plan against the memory it must fit (bytes): the verdict, and on a shortfall the plan
  // (unless already printed) and an error, before anything is allocated.
  static void check_plan_fits(const CudaMemoryPlan& plan, double budget, bool print_plan) {
    const double total = (double)plan.total();
    if (total <= budget) {
      std::printf("fits: %.2f GiB of %.2f GiB (%.2f GiB spare)\n", total / kGiB, budget / kGiB,
                  (budget - total) / kGiB);
      return;
    }
    if (print_plan) std::printf("GPU memory plan:\n%s", format_cuda_memory_plan(plan).c_str());
    std::fflush(stdout);
    fail("the GPU memory plan needs ", fixed2(total / kGiB), " GiB but ", fixed2(budget / kGiB),
         " GiB are available: short by ", fixed2((total - budget) / kGiB),
         " GiB (try --recompute block, --offload-optimizer, --optimizer-state bf16, a smaller --micro-batch-size "
         "or --seq-len; --dry-run prints every combination)");
  }

  // Joins the other ranks of a multi-process run: the NCCL id from rank 0 through the file store,
  // the communicator (which also picks this process's GPU by local rank), then a check that every
  // rank runs with the same options, whose hashes are gathered by summing one-hot slots.
  void join_process_group() {
    const std::string who = "rank " + std::to_string(pg.rank) + " of " + std::to_string(pg.world_size);
    if constexpr (kOnHost) {
      fail(who, ": multi-process training needs --device cuda (the launcher started ", pg.world_size, " processes)");
    } else {
#if defined(ENGINE_CUDA)
      // The id goes through MPI under OpenMPI's mpirun (unless --dist-init names a file), else a file.
      std::string how = args.dist_init;
      if (how.empty() && pg.launcher == "openmpi" && mpi_available()) how = "mpi";
      check(!how.empty(), who, ": --dist-init file:///PATH is required when the launcher (", pg.launcher, ") starts ",
            pg.world_size, " processes (a file on a file system every rank sees; under OpenMPI's mpirun with "
            "libmpi the default is mpi)");
      check(how != "mpi" || pg.launcher == "openmpi", who, ": --dist-init mpi needs OpenMPI's mpirun (this process was "
            "started by ", pg.launcher, "); give --dist-init file:///PATH");
      check(args.batch_size % pg.world_size == 0, who, ": --batch-size ", args.batch_size, " does not divide over ",
            pg.world_size, " ranks (give a multiple of ", pg.world_size, ")");
      if (!main_rank()) {  // rank 0 reports (at ZeRO 3 every rank evaluates: one progress line)
        check(std::freopen("/dev/null", "w", stdout) != nullptr, who, ": cannot silence stdout");
        set_progress_enabled(false);
      }
      const std::string mine_id = main_rank() ? cuda_comm_unique_id() : "";
      const std::string id = how == "mpi" ? mpi_exchange(pg.rank, pg.world_size, mine_id)
                                          : file_store_exchange(parse_dist_init(how), pg.rank, pg.world_size, mine_id,
                                                                args.dist_timeout);
      std::printf("rendezvous: the NCCL id %s\n", how == "mpi" ? "through MPI (OpenMPI's libmpi)"
                                                               : ("through the file " + how.substr(7)).c_str());
      cuda_comm_init(id, pg.rank, pg.world_size, pg.local_rank);
      const std::string mine = json(options).dump();
      const uint64_t h = hash64(mine.data(), mine.size());
      std::vector<double> hashes(2 * pg.world_size, 0.0);  // two exact 32-bit halves per rank
      hashes[2 * pg.rank] = double(h >> 32);
      hashes[2 * pg.rank + 1] = double(h & 0xffffffffu);
      cuda_comm_all_reduce_sum_host(hashes.data(), (int)hashes.size());
      std::string differ;
      for (int r = 1; r < pg.world_size; r++)
        if (hashes[2 * r] != hashes[0] || hashes[2 * r + 1] != hashes[1]) differ += " " + std::to_string(r);
      check(differ.empty(), who, ": the options differ between ranks (rank 0 and rank(s)", differ,
            "): every rank must be given the same command line");
#endif
    }
  }

  // ZeRO >= 1 (--zero): this rank's slice of the flat parameter buffer is [shards.begin(rank),
  // shards.end(rank)); with one process the slice is the whole buffer and nothing is exchanged.
  ZeroShards shards;
  bool zero_sharded() const { return args.zero >= 1 && pg.world_size > 1; }

  // The gradients [lo, hi) of every rank summed: everywhere (ZeRO 0, an all-reduce) or into the
  // owner of each part (ZeRO >= 1, one reduce per owner: the reduce-scatter of uneven slices). At
  // ZeRO 2 they are read from `staged` (where the staging holds [lo, hi)) and the owner adds its
  // part to its slice's accumulator (model->grad_shard), all on the communication stream.
  void reduce_grads(size_t lo, size_t hi, float* staged = nullptr) {
#if defined(ENGINE_CUDA)
    if constexpr (!kOnHost) {
      NVTX_RANGE("reduce_grads");
      if (!zero_sharded()) return cuda_comm_all_reduce_sum(model->grads + lo, hi - lo);
      auto at = [&](size_t i) { return staged ? staged + (i - lo) : model->grads + i; };
      cuda_comm_group_start();
      for (int r = 0; r < pg.world_size; r++) {
        const size_t a = std::max(lo, shards.begin(r)), b = std::min(hi, shards.end(r));
        if (a < b) cuda_comm_reduce_sum(at(a), b - a, r);
      }
      cuda_comm_group_end();
      const size_t a = std::max(lo, shards.begin(pg.rank)), b = std::min(hi, shards.end(pg.rank));
      if (staged && a < b) cuda_comm_add(model->grad_shard + (a - shards.begin(pg.rank)), at(a), b - a);
    }
#endif
  }
  // The bf16 weights [r.begin, r.end) from their owners' slices into `into` (into[0] is the weight
  // r.begin) on every rank: one broadcast per owner of a part, in one group, on the communication
  // stream, then `tag` recorded after them. In place at ZeRO 1/2 (`into` is the whole copy's),
  // into a gather buffer at ZeRO 3.
  using WeightRange = typename LlamaModel<Backend>::WeightRange;
  using weight_t = typename Backend::weight_t;
  void gather_weights(WeightRange r, weight_t* into, int tag) {
#if defined(ENGINE_CUDA)
    if constexpr (!kOnHost) {
      NVTX_RANGE("gather_weights");
      cuda_comm_group_start();
      for (int q = 0; q < pg.world_size; q++) {
        const size_t a = std::max(r.begin, shards.begin(q)), b = std::min(r.end, shards.end(q));
        if (a < b)
          cuda_comm_broadcast(pg.rank == q ? model->slice_weights() + (a - model->opt_begin) : into + (a - r.begin),
                              into + (a - r.begin), b - a, q);
      }
      cuda_comm_group_end();
      cuda_comm_record(tag);
    }
#endif
  }
  // ZeRO 1/2: after a step each rank's updated slice of the bf16 working copy goes to every rank
  // (the all-gather of uneven slices) in pieces, in the order the forward reads them
  // (ParamLayout::forward_group_starts: the embedding, each layer, the final norm, the LM head),
  // each with its own tag (kPieceTag + i). The forward waits for the pieces of each weight group as it reaches it
  // (weights_ready, the model's on_weights_begin), so the all-gather overlaps the next forward.
  static constexpr int kPieceTag = 5;
  std::vector<size_t> piece_cuts;  // piece i is [piece_cuts[i], piece_cuts[i + 1])
  void gather_updated() {
    for (size_t i = 0; i + 1 < piece_cuts.size(); i++)
      gather_weights({piece_cuts[i], piece_cuts[i + 1]}, model->weights + piece_cuts[i], kPieceTag + (int)i);
  }
  const weight_t* weights_ready(WeightRange group) {
    const size_t last = size_t(std::upper_bound(piece_cuts.begin(), piece_cuts.end(), group.end - 1) -
                               piece_cuts.begin()) - 1;  // the last piece the group reaches into
#if defined(ENGINE_CUDA)
    if constexpr (!kOnHost) cuda_comm_wait(kPieceTag + (int)last);  // and so every earlier one
#endif
    return model->weights + group.begin;
  }
  // ZeRO 3: each rank keeps the bf16 working copy of its slice only (model->weights), and the
  // model announces each weight group before its ops (LlamaModel::on_weights_begin). The group is
  // gathered into one of the two buffers model->weight_gather (tag kGatherTag + buffer), and the
  // next group into the other while the compute stream runs this one. A gather into a buffer is
  // issued only at the start of a group that does not use that buffer: every kernel reading its
  // old group has been issued, and the communication stream starts after them (cuda_comm_*).
  static constexpr int kGatherTag = 3;  // tags 3 and 4; the gradient staging uses 0 to 2
  bool zero3() const { return args.zero >= 3 && pg.world_size > 1; }
  struct Gathered {
    WeightRange range;
    uint64_t version = ~uint64_t(0);  // model->weights_version when gathered
  };
  Gathered gathered[2];
  int last_gathered = 0;  // the buffer returned last (the model may still read it)
  bool holds(int buffer, WeightRange r) const {
    return gathered[buffer].range == r && gathered[buffer].version == model->weights_version;
  }
  void gather_group(WeightRange r, int buffer) {
    gather_weights(r, model->weight_gather[buffer], kGatherTag + buffer);
    gathered[buffer] = {r, model->weights_version};
  }
  const weight_t* weights_begin(WeightRange group, WeightRange next) {
    int b = holds(0, group) ? 0 : holds(1, group) ? 1 : -1;
    if (b < 0) {  // not prefetched: into the buffer the model was not reading last
      b = 1 - last_gathered;
      gather_group(group, b);
    }
#if defined(ENGINE_CUDA)
    if constexpr (!kOnHost) cuda_comm_wait(kGatherTag + b);
#endif
    if (!next.empty() && !holds(1 - b, next)) gather_group(next, 1 - b);
    last_gathered = b;
    return model->weight_gather[b];
  }

  // Buckets: the backward reports its finished gradient ranges from the end of the
  // flat buffer down (model->on_grads_ready); contiguous ranges gather into a bucket, reduced once
  // it holds --bucket-mb or at the end of the backward. At ZeRO 2 a bucket is also contiguous in
  // the staging (bucket_at: where bucket_lo is staged).
  size_t bucket_lo = 0, bucket_hi = 0, reduced_elems = 0;
  float* bucket_at = nullptr;
  void flush_bucket() {
    if (bucket_hi > bucket_lo) {
      reduce_grads(bucket_lo, bucket_hi, bucket_at);
#if defined(ENGINE_CUDA)
      if constexpr (!kOnHost)
        if (bucket_at) cuda_comm_record(staging_part(bucket_at));  // that part is free once this has run
#endif
    }
    reduced_elems += bucket_hi - bucket_lo;
    bucket_lo = bucket_hi = 0;
    bucket_at = nullptr;
  }
  void grads_ready(size_t begin, size_t end) {
    float* at = zero2() ? staged_at(begin) : nullptr;
    if (bucket_hi > bucket_lo && (end != bucket_lo || (at && at + (end - begin) != bucket_at))) flush_bucket();
    if (bucket_hi == bucket_lo) bucket_hi = end;
    bucket_lo = begin;
    bucket_at = at;
    if (double(bucket_hi - bucket_lo) * sizeof(float) >= args.bucket_mb * 1e6) flush_bucket();
  }
  // ZeRO 2 (TrainMemory::grad_staging): the staging is two halves and the tied embedding's part
  // (model/zero_shards.h GradStaging), parts 0, 1 and 2, each with the communication stream's tag of
  // the same number, recorded after the last reduction that reads the part. A group goes downward
  // in the current half; one that does not fit switches halves (the bucket so far reduced first),
  // and the compute stream waits for the reductions that last read the other half, which were
  // issued a whole half earlier: the backward goes on while a half is being reduced. The tied
  // embedding waits for its part's previous reduction (the previous micro-batch's).
  bool zero2() const { return args.zero >= 2 && pg.world_size > 1; }
  GradStaging staging;
  int stage_half = -1;
  size_t stage_cursor = 0, staged_begin = 0;
  float* staged = nullptr;  // where the last group placed in a half is
  int staging_part(const float* at) const {
    const size_t off = size_t(at - model->grad_staging);
    return off < staging.half ? 0 : off < 2 * staging.half ? 1 : 2;
  }
  bool tied_group(size_t begin) const { return staging.tied > 0 && begin == model->layout.embed; }
  float* stage_group(size_t begin, size_t end) {
    const size_t n = end - begin;
#if defined(ENGINE_CUDA)
    if constexpr (!kOnHost) {
      if (tied_group(begin)) {
        cuda_comm_wait(2);
        return model->grad_staging + 2 * staging.half;
      }
      if (stage_half < 0 || stage_cursor - size_t(stage_half) * staging.half < n) {
        flush_bucket();
        stage_half = stage_half == 0 ? 1 : 0;
        stage_cursor = size_t(stage_half + 1) * staging.half;
        cuda_comm_wait(stage_half);
      }
    }
#endif
    check(n <= staging.half, "ZeRO 2: a gradient group of ", n, " floats exceeds the staging half of ", staging.half);
    stage_cursor -= n;
    staged_begin = begin;
    staged = model->grad_staging + stage_cursor;
    return staged;
  }
  float* staged_at(size_t begin) const {
    if (tied_group(begin)) return model->grad_staging + 2 * staging.half;
    check(begin == staged_begin, "ZeRO 2: the group at ", begin, " completed before the one at ", staged_begin);
    return staged;
  }

  // Sums a few per-step values over the ranks (identity with one process).
  void sum_over_ranks(double* values, int n) {
#if defined(ENGINE_CUDA)
    if constexpr (!kOnHost) {
      if (pg.world_size > 1) cuda_comm_all_reduce_sum_host(values, n);
    }
#endif
  }

  void setup(const OptionMap& command_line) {
    // Resume: the stored options first, then whatever the new command line gives.
    std::string resume_dir;
    ResumeState resumed;
    options = command_line;
    if (!command_line.count("dry-run") && main_rank()) lock_run_directory(command_line);
    if (command_line.count("resume")) {
      resume_dir = resolve_resume_dir(command_line.at("resume").back());
      resumed = parse_resume_state(load_trainer_state(resume_dir), resume_dir + "/trainer_state.json");
      options = resumed.args;
      for (const auto& [k, v] : command_line) options[k] = v;
      options.erase("resume");
      // The checkpoint holds the weights and its tokenizer.json: where the run started is history.
      options.erase("model");
      options.erase("init");
      if (!command_line.count("tokenizer")) options.erase("tokenizer");
    }
    args = train_args(options);
    args.resume = resume_dir;

    if constexpr (kOnHost) {
      if (args.device == "cuda") fail("--device cuda: this build has no CUDA backend (built without nvcc)");
    } else {
      args.device = "cuda";
    }
    if (args.threads > 0) omp_set_num_threads(args.threads);
    check(args.dry_run || !args.data.empty(), "--data is required (token shards from ./prepare_data)");
    check(args.dry_run || !args.out.empty(), "--out is required (the run directory)");
    const int sources = int(!resume_dir.empty()) + int(!args.model.empty()) + int(!args.init.empty());
    check(sources == 1, "give exactly one of --model DIR, --init CONFIG.json, --resume PATH");
    if (!args.larimar.empty()) {
      check(pg.world_size == 1, "--larimar: single-process training only (the launcher started ", pg.world_size,
            " processes)");
      check(args.eval_data.empty(), "--larimar: --eval-data is not evaluated during Larimar training (evaluate a "
                                    "checkpoint with eval_factoids --memory --larimar)");
      check(args.zero == 0 && args.optimizer_state == "fp32", "--larimar: --zero and --optimizer-state bf16 are not "
                                                               "supported");
      check(args.micro_batch_size == 0 || args.micro_batch_size >= args.batch_size,
            "--larimar: an episode is one whole batch (--batch-size texts); --micro-batch-size does not apply");
    } else {
      for (const char* o : {"memory-slots", "freeze-decoder", "beta", "beta-cycles", "beta-ratio-zero",
                            "beta-ratio-increase", "pinv"})
        check(!options.count(o), "--", o, " needs --larimar");
    }

    // Model config and tokenizer.
    std::string model_dir = !resume_dir.empty() ? resume_dir : args.model;
    if (!model_dir.empty()) config = load_config(model_dir + "/config.json");
    else config = load_config(args.init);
    std::string tok_path = args.tokenizer;
    if (tok_path.empty() && !model_dir.empty() && file_exists(model_dir + "/tokenizer.json"))
      tok_path = model_dir + "/tokenizer.json";
    if (!tok_path.empty()) {
      tokenizer = Tokenizer::from_json_file(tok_path);
      check(tokenizer->vocab_size() <= config.vocab_size, tok_path, ": the tokenizer has ", tokenizer->vocab_size(),
            " tokens but the model's vocab_size is ", config.vocab_size);
    }

    check(!args.offload_optimizer || args.zero == 0, "--offload-optimizer keeps the whole optimizer state on the host: "
          "it does not combine with --zero ", args.zero);
    if (args.dry_run) {  // the GPU memory plan for this config and micro-batch, then exit
      const int world = args.world_size > 0 ? args.world_size : pg.world_size;
      const int rank_batch = std::max(1, args.batch_size / world);
      const int rows = args.micro_batch_size > 0 ? std::min(args.micro_batch_size, rank_batch) : rank_batch;
      const ParamLayout layout = make_param_layout(config);
      const bool bf16_state = args.optimizer_state == "bf16";
      auto plan = [&](bool bf16, TrainMemory mem) {
        return cuda_memory_plan(config, layout, rows, args.seq_len, bf16, ModelUse::train, 0, 0, zero_memory(mem, world));
      };
      std::printf("GPU memory plan (--device cuda): %s, %.3fB parameters, micro-batch %d x %d tokens, --recompute %s%s",
                  config.architecture.c_str(), layout.total / 1e9, rows, args.seq_len, args.recompute.c_str(),
                  args.offload_optimizer ? ", --offload-optimizer" : "");
      if (world > 1 || args.zero > 0)
        std::printf(", per GPU of %d ranks at ZeRO %d", world, args.zero);
      const CudaMemoryPlan chosen = plan(bf16_state, train_memory());
      std::printf("\n%s", format_cuda_memory_plan(chosen).c_str());
      if (!args.offload_optimizer)  // the offloaded moments are fp32, on the host
        std::printf("with --optimizer-state %s instead: total %.2f GiB\n", bf16_state ? "fp32" : "bf16",
                    plan(!bf16_state, train_memory()).total() / kGiB);
      // Every combination of the memory options, total GiB per GPU.
      std::printf("total per option combination (GiB):\n  %-18s %14s %14s %22s\n", "--recompute", "fp32 AdamW",
                  "bf16 AdamW", "--offload-optimizer");
      for (Recompute r : {Recompute::none, Recompute::attn, Recompute::mlp, Recompute::block}) {
        std::printf("  %-18s %14.2f %14.2f", recompute_name(r), plan(false, {r, false}).total() / kGiB,
                    plan(true, {r, false}).total() / kGiB);
        if (args.zero == 0) std::printf(" %22.2f\n", plan(false, {r, true}).total() / kGiB);
        else std::printf(" %22s\n", "- (ZeRO 0 only)");
      }
      check_plan_fits(chosen, args.gpu_memory > 0 ? args.gpu_memory * kGiB : 80e9, false);  // an "80 GB" card
      return;
    }
    check(!kOnHost || args.zero == 0, "--zero ", args.zero, ": ZeRO shards the state over GPUs: it needs --device cuda");

    // Data.
    DataLoaderConfig dc;
    dc.primary_shards = expand_shard_list(args.data);
    for (const auto& m : args.mix) dc.mixes.push_back(parse_mix_spec(m));
    dc.batch_size = args.batch_size;
    dc.micro_batch_size = args.micro_batch_size;
    dc.T = args.seq_len;
    dc.pack = args.pack;
    dc.truncate = args.truncate;
    dc.seed = args.seed;
    dc.expected_tokenizer_hash = tokenizer ? tokenizer->hash_hex() : "";
    dc.num_epochs = args.steps > 0 ? 0 : args.epochs;
    dc.rank = pg.rank;
    dc.world_size = pg.world_size;
    loader = std::make_unique<DataLoader>(dc);
    total_steps = args.steps > 0 ? args.steps : args.epochs * loader->steps_per_epoch();

    // Joined after everything a rank can fail on alone (options, data) and before the first device
    // allocation: a rank that stops early is then named by the others' rendezvous timeout.
    if (pg.world_size > 1) join_process_group();

    // Model state.
    const int rank_batch = args.batch_size / pg.world_size;  // examples of a batch on this rank
    int max_rows = args.micro_batch_size > 0 ? std::min(args.micro_batch_size, rank_batch) : rank_batch;
    check_host_memory_for_training(max_rows);
    const MomentDtype moments = args.optimizer_state == "bf16" ? MomentDtype::bf16 : MomentDtype::f32;
    if (zero_sharded()) {
      // ZeRO >= 1: this rank keeps the fp32 master weights and the AdamW state of its slice; the
      // slices cover the flat buffer.
      const size_t total = make_param_layout(config).total;
      shards = ZeroShards(total, pg.world_size);
      check(shards.count(pg.world_size - 1) > 0, "--zero ", args.zero, ": the model's ", total,
            " parameters are too few to give each of ", pg.world_size, " ranks a slice of ", shards.per);
      if (zero2()) staging = grad_staging(make_param_layout(config), (size_t)config.vocab_size * config.hidden_size);
    }
    if (!args.larimar.empty()) {
      check(args.recompute == "none" && !args.offload_optimizer,
            "--recompute and --offload-optimizer apply to a plain model: they do not combine with --larimar");
      make_larimar(resume_dir);
    } else {
      if constexpr (!kOnHost) {
#if defined(ENGINE_CUDA)
        const CudaMemoryPlan plan = cuda_memory_plan(config, make_param_layout(config), max_rows, args.seq_len,
                                                     moments == MomentDtype::bf16, ModelUse::train, 0, 0,
                                                     zero_memory(train_memory(), pg.world_size));
        check_plan_fits(plan, args.gpu_memory > 0 ? args.gpu_memory * kGiB : (double)cuda_free_memory(), true);
#endif
      }
      own_model = std::make_unique<LlamaModel<Backend>>(config, max_rows, args.seq_len, moments, ModelUse::train,
                                                        zero_memory(train_memory(), pg.world_size, pg.rank));
      model = own_model.get();
      if (zero3()) {
        model->on_weights_begin = [this](WeightRange g, WeightRange next) { return weights_begin(g, next); };
      } else if (zero_sharded()) {
        piece_cuts = model->layout.forward_group_starts();
        model->on_weights_begin = [this](WeightRange g, WeightRange) { return weights_ready(g); };
      }
    }
    const ParamLayout& layout = model->layout;
    if constexpr (!kOnHost) {
      if (!state_in_host_memory()) {
        host_params.resize(layout.total);
        host_m.resize(model->opt_count);
        host_v.resize(model->opt_count);
      }
    }
    if (!resume_dir.empty()) {
      load_optimizer_state(resume_dir, layout, params_on_host(), model->opt_begin, model->opt_count, adam_m_on_host(),
                           adam_v_on_host());
      state_from_host(true);
      step = resumed.step;
      model->adam_step = resumed.adam_step;
      loss_below_count = resumed.loss_below_count;
      tokens_seen = resumed.tokens_seen;
      elapsed_before = resumed.elapsed_s;
      evals = resumed.evals;
      earlier_stage_templates = resumed.earlier_stage_templates;
      loader->restore(DataCursor::from_json(resumed.data_cursor, resume_dir + "/trainer_state.json data_cursor"));
      last_checkpoint = resume_dir;
      std::printf("resumed from %s at step %lld (epoch %lld)\n", resume_dir.c_str(), (long long)step,
                  (long long)loader->epoch());
    } else if (!args.model.empty() && is_training_checkpoint(args.model)) {
      // A checkpoint of ours (e.g. stage 1 for stage 2): its fp32 master weights, which are exact
      // even when model.safetensors was saved in bf16. The optimizer starts fresh (zero moments).
      load_optimizer_state(args.model, layout, params_on_host(), 0, 0, nullptr, nullptr);
      state_from_host(false);
      earlier_stage_templates = stage_prompt_templates(load_trainer_state(args.model),
                                                       args.model + "/trainer_state.json");
    } else if (!args.model.empty()) {
      load_weights(args.model, config, layout, params_on_host());
      state_from_host(false);
    } else {
      init_weights(config, layout, params_on_host(), args.seed);
      state_from_host(false);
    }
    if (larimar) {  // the encoder and memory: resumed, from a Larimar directory, or from scratch
      if (!resume_dir.empty()) larimar->load_optimizer(resume_dir);
      else if (!larimar_spec.dir.empty()) larimar->load(larimar_spec.dir);
      else larimar->init(args.seed);
      std::printf("larimar: encoder %d layers, hidden %d, code %d, %zu parameters; memory %d slots, %zu host "
                  "parameters; decoder %s; beta %g over %d cycles\n",
                  larimar->encoder_config().llama.num_hidden_layers, larimar->encoder_config().llama.hidden_size,
                  larimar->encoder_config().code_size, larimar->encoder_parameters(), larimar->slots(),
                  larimar->host_parameters(), args.freeze_decoder ? "frozen" : "trained", args.beta, args.beta_cycles);
    }
    check(step <= total_steps || args.steps == 0, "resume: the checkpoint is at step ", step, " beyond --steps ",
          total_steps);

    schedule = LrSchedule::make(parse_schedule_kind(args.schedule), args.lr, total_steps, args.warmup_ratio);
    adamw.lr = float(args.lr);
    adamw.beta1 = float(args.beta1);
    adamw.beta2 = float(args.beta2);
    adamw.eps = float(args.eps);
    adamw.weight_decay = float(args.weight_decay);
    adamw.max_grad_norm = float(args.clip);

    if (!args.eval_data.empty()) {
      check(tokenizer.has_value(), "--eval-data needs a tokenizer: give --tokenizer (or a model directory holding "
                                   "tokenizer.json)");
      eval_items = load_eval_items(args.eval_data, *tokenizer, loader->prompt_template(), args.eval_limit);
      check(!eval_items.empty(), args.eval_data, ": no questions to evaluate");
      match = parse_match_kind(args.match);
    }
    check(args.stop_at_accuracy == 0 || !eval_items.empty(), "--stop-at-accuracy needs --eval-data");

    if (main_rank()) make_dirs(args.out);
    if (!args.log.empty() && main_rank()) {
      log_file = std::fopen(args.log.c_str(), "a");
      check(log_file != nullptr, args.log, ": cannot open the log file for appending");
    }
    std::printf("model: %s, %d layers, hidden %d, %zu parameters; device %s, %d threads\n",
                config.architecture.c_str(), config.num_hidden_layers, config.hidden_size, layout.total, Backend::name,
                omp_get_max_threads());
    if (pg.world_size > 1)
      std::printf("data parallel: %d processes (ZeRO %d), %d examples of each batch per rank; %s\n", pg.world_size,
                  args.zero, rank_batch, pg.describe().c_str());
    std::printf("training: %lld steps (%lld per epoch), batch %d, seq-len %d, lr %g (%s, warmup %lld steps)\n",
                (long long)total_steps, (long long)loader->steps_per_epoch(), args.batch_size, args.seq_len, args.lr,
                args.schedule.c_str(), (long long)schedule.warmup_steps);
    std::fflush(stdout);
  }

  // --larimar: the Larimar model around the decoder, from the run's encoder config or Larimar
  // directory, or from the checkpoint being resumed; `model` becomes its decoder.
  larimar::LarimarSpec larimar_spec;
  void make_larimar(const std::string& resume_dir) {
    check(tokenizer.has_value(), "--larimar needs a tokenizer (--tokenizer, or a model directory holding "
                                 "tokenizer.json): the encoder reads the decoder's token ids");
    const std::string src = resume_dir.empty() ? args.larimar : resume_dir;
    larimar_spec = larimar::larimar_spec(src, args.memory_slots);
    const std::string enc_tok = larimar_spec.dir + "/encoder/tokenizer.json";
    if (!larimar_spec.dir.empty() && file_exists(enc_tok))
      check(Tokenizer::from_json_file(enc_tok).hash_hex() == tokenizer->hash_hex(), enc_tok,
            ": the encoder's tokenizer differs from the run's (hash ", tokenizer->hash_hex(),
            "): encoder and decoder must read the same token ids");
    check(larimar_spec.encoder.llama.vocab_size >= tokenizer->vocab_size(), src, ": the encoder's vocab_size ",
          larimar_spec.encoder.llama.vocab_size, " is below the tokenizer's ", tokenizer->vocab_size(), " tokens");
    typename larimar::LarimarTrainer<Backend>::Options o;
    o.max_texts = args.batch_size;
    o.max_T = args.seq_len;
    o.iterative_pinv = args.pinv == "iterative";
    o.freeze_decoder = args.freeze_decoder;
    o.beta = {args.beta, args.beta_cycles, args.beta_ratio_zero, args.beta_ratio_increase, total_steps};
    o.seed = args.seed;
    larimar = std::make_unique<larimar::LarimarTrainer<Backend>>(larimar_spec, config, o);
    model = &larimar->decoder();
  }

  // evaluate() on rank 0 (all ranks hold the same weights); every rank gets the accuracy. At ZeRO 3
  // every forward gathers from every rank, so all ranks evaluate, in step: each decoding step
  // continues from rank 0's tokens (GreedyOptions::agree_tokens), so every rank runs the same
  // forwards even if an argmax differed in a tie.
  double evaluate_on_main_rank(int64_t epochs_done) {
    double acc = main_rank() || zero3() ? evaluate(epochs_done) : 0.0;
    if (!main_rank()) acc = 0.0;
    sum_over_ranks(&acc, 1);
    return acc;
  }

  // Greedy evaluation of the factoids with the current weights. Returns the accuracy.
  double evaluate(int64_t epochs_done) {
    NVTX_RANGE("eval");
    auto t0 = std::chrono::steady_clock::now();
    // On the training device, through the model's KV-cache mode (its activation buffers are free
    // between steps; the cache is kept for the next evaluation).
    GreedyOptions opt = make_stop_options(*tokenizer, config, args.max_new_tokens, args.eval_batch_size,
                                          match_uses_first_line(match));
    if (zero3())
      opt.agree_tokens = [this](int32_t* ids, int n) {  // rank 0's, exact in doubles
        std::vector<double> v(n, 0.0);
        if (main_rank()) std::copy(ids, ids + n, v.begin());
        sum_over_ranks(v.data(), n);
        std::copy(v.begin(), v.end(), ids);
      };
    EvalOutcome r = evaluate_factoids(*model, *tokenizer, eval_items, opt, match);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("eval | epoch %lld | step %lld | accuracy %.2f%% (%lld/%zu, %s) | %.1fs\n", (long long)epochs_done,
                (long long)step, 100.0 * r.accuracy, (long long)r.num_correct, eval_items.size(),
                match_kind_name(match), secs);
    std::fflush(stdout);
    json e = {{"event", "eval"}, {"step", step}, {"epoch", epochs_done}, {"accuracy", r.accuracy},
              {"correct", r.num_correct}, {"total", eval_items.size()}, {"match", match_kind_name(match)},
              {"seconds", secs}};
    evals.push_back(e);
    log_json(e);
    return r.accuracy;
  }

  int run() {
    const char* nan_env = std::getenv("TRAIN_LLAMA_DEBUG_NAN_STEP");
    const int64_t nan_step = nan_env ? std::atoll(nan_env) : -1;
    int64_t steps_this_process = 0;
    std::string stop_reason;
    OptimizerBatch batch;
    const double spe = double(loader->steps_per_epoch());

    // A fresh run evaluates before its first step: the learning curve starts at epoch 0, and a
    // model that already knows the facts stops after 0 steps (relearning a fact that was never
    // lost costs nothing, which is what the savings measure of forgetting needs).
    if (step == 0 && !eval_items.empty()) {
      double acc = evaluate_on_main_rank(0);
      if (args.stop_at_accuracy > 0 && acc >= args.stop_at_accuracy) stop_reason = "accuracy";
    }
    bool stop_requested = false;  // a rank got SIGINT/SIGTERM (agreed on by all ranks after each step)
    while (stop_reason.empty()) {
      if (stop_requested || (pg.world_size == 1 && g_stop_signal)) {
        stop_reason = "signal";
        break;
      }
      if (step >= total_steps) {
        stop_reason = args.steps > 0 ? "steps" : "epochs";
        break;
      }
      if (!loader->next(batch)) {
        stop_reason = "epochs";
        break;
      }
      auto t0 = std::chrono::steady_clock::now();
      const double lr = schedule.lr_at(step);
      adamw.lr = float(lr);

      double loss = 0;
      larimar::StepLoss lar_loss;
      // Several processes: the gradients are reduced in buckets as the backward produces them
      // (grads_ready; a micro-batch without targets reports its groups too).
      const bool bucketed = pg.world_size > 1;
      reduced_elems = 0;
      if (larimar) {  // one episode: the batch's texts (whole examples, at most --seq-len tokens)
        NVTX_RANGE("larimar_episode");
        std::vector<std::vector<int32_t>> texts;
        for (const ExampleRef& e : batch.examples) {
          texts.push_back(loader->example_tokens(e));
          if ((int)texts.back().size() > args.seq_len) texts.back().resize(args.seq_len);
        }
        lar_loss = larimar->step(texts, step);
        loss = lar_loss.total;
      } else {
        NVTX_RANGE("forward_backward");
        model->zero_grad();
        // Normalized by the target tokens of the whole batch over all ranks, so the per-rank
        // gradients and losses simply add up. ZeRO 2 reduces every micro-batch's gradients to
        // their owners (no rank holds them all), the others those of the last one, which hold the
        // sum over the micro-batches.
        if (zero2()) model->on_grads_begin = [this](size_t b, size_t e) { return stage_group(b, e); };
        for (size_t i = 0; i < batch.micro.size(); i++) {
          if (bucketed && (zero2() || i + 1 == batch.micro.size()))
            model->on_grads_ready = [this](size_t b, size_t e) { grads_ready(b, e); };
          loss += model->forward_backward(batch.micro[i], batch.global_num_target_tokens);
          if (zero2()) flush_bucket();
        }
        model->on_grads_ready = nullptr;
        model->on_grads_begin = nullptr;
        if (bucketed) flush_bucket();
      }
      int64_t batch_tokens = 0;
      for (const ExampleRef& e : batch.examples)
        batch_tokens += std::min<int64_t>(int64_t(loader->example_tokens(e).size()), args.seq_len);
      if (pg.world_size > 1) {
        const size_t expected = model->layout.total * (zero2() ? batch.micro.size() : 1);
        check(reduced_elems == expected, "step ", step + 1, ": the backward reported ", reduced_elems, " of the ",
              expected, " gradients");
#if defined(ENGINE_CUDA)
        if constexpr (!kOnHost) cuda_comm_wait_all();  // the step reads what the reductions wrote
#endif
      }
      {
        // The loss, the tokens and a stop request of any rank, the same on every rank afterwards.
        double v[3] = {loss, double(batch_tokens), g_stop_signal ? 1.0 : 0.0};
        sum_over_ranks(v, 3);
        loss = v[0];
        batch_tokens = int64_t(v[1]);
        stop_requested = v[2] > 0;
      }
      if (step + 1 == nan_step) {  // debug: poison one gradient
        const float nan = NAN;
        Backend::upload(model->slice_grads(), &nan, 1);
      }
      if (!std::isfinite(loss))
        fail("step ", step + 1, ": the loss is not finite (", loss, "); stopping without saving. Last good checkpoint: ",
             last_checkpoint.empty() ? "none" : last_checkpoint);
      double grad_norm;
      {
        NVTX_RANGE("optimizer");
        // The norm is computed before the update; a non-finite norm means the update just made
        // the in-memory weights non-finite too, so nothing is saved from here on.
        if (larimar) {
          grad_norm = larimar->optimizer_step(adamw);
        } else if (zero_sharded()) {
          // This rank's slice, clipped by the global norm (its squared norm summed over the ranks),
          // then every rank's updated weights to every rank.
          grad_norm = model->optimizer_step(adamw, [this](double sum_sq) {
            sum_over_ranks(&sum_sq, 1);
            return sum_sq;
          });
          if (std::isfinite(grad_norm) && !zero3()) gather_updated();  // ZeRO 3 gathers per group (gather_group)
        } else {
          grad_norm = model->optimizer_step(adamw);
        }
      }
      if (!std::isfinite(grad_norm))
        fail("step ", step + 1, ": the gradient norm is not finite (", grad_norm,
             "); stopping without saving. Last good checkpoint: ", last_checkpoint.empty() ? "none" : last_checkpoint);
      ++step;
      ++steps_this_process;

      tokens_seen += batch_tokens;
      const double step_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double elapsed = seconds_since_start();
      const double eta = (elapsed / double(steps_this_process)) * double(total_steps - step);
      const double epoch_f = double(batch.epoch) + double(batch.step_in_epoch + 1) / spe;
      const double progress = double(step) / double(total_steps);
      const double tok_s = batch_tokens / std::max(step_secs, 1e-9);
      if (step % args.log_every == 0 || step == total_steps) {
        char parts[160] = "";
        if (larimar)
          std::snprintf(parts, sizeof parts, " (ce read %.4f, code %.4f, zero %.4f; kl %.4g, beta %.3g)",
                        lar_loss.ce_read, lar_loss.ce_code, lar_loss.ce_zero, lar_loss.kl, lar_loss.beta);
        std::printf("step %6lld/%lld | epoch %.2f/%lld | loss %.6f%s | lr %.3e | grad norm %.4f | %.0f tok/s | %5.1f%% | ETA %s\n",
                    (long long)step, (long long)total_steps, epoch_f, (long long)(args.steps > 0 ? std::ceil(total_steps / spe) : args.epochs),
                    loss, parts, lr, grad_norm, tok_s, 100.0 * progress, format_eta(eta).c_str());
        std::fflush(stdout);
      }
      json step_log = {{"event", "step"}, {"step", step}, {"epoch", epoch_f}, {"loss", loss}, {"lr", lr},
                       {"grad_norm", grad_norm}, {"tokens", batch_tokens}, {"tokens_per_s", tok_s},
                       {"progress", progress}, {"eta_s", eta}, {"elapsed_s", elapsed_before + elapsed}};
      if (larimar) {  // the four terms: loss = ce_read + ce_code + ce_zero + beta * kl
        step_log["ce_read"] = lar_loss.ce_read;
        step_log["ce_code"] = lar_loss.ce_code;
        step_log["ce_zero"] = lar_loss.ce_zero;
        step_log["kl"] = lar_loss.kl;
        step_log["beta"] = lar_loss.beta;
      }
      log_json(step_log);

      if (args.stop_loss > 0 && loss < args.stop_loss && ++loss_below_count >= args.stop_loss_count)
        stop_reason = "loss";
      if (batch.last_in_epoch && !eval_items.empty()) {
        const int64_t epochs_done = batch.epoch + 1;
        if (epochs_done % args.eval_every_epochs == 0) {
          double acc = evaluate_on_main_rank(epochs_done);
          if (args.stop_at_accuracy > 0 && acc >= args.stop_at_accuracy && stop_reason.empty()) stop_reason = "accuracy";
        }
      }
      if (stop_reason.empty() && args.save_every > 0 && step % args.save_every == 0 && step < total_steps) {
        save(run_checkpoint_dir(args.out, step), "");
        if (main_rank()) rotate_run_checkpoints(args.out, args.keep);
      }
    }

    if (stop_reason == "signal") {
      std::printf("received a stop signal: saving a checkpoint at step %lld\n", (long long)step);
      save(run_checkpoint_dir(args.out, step), "signal");
      if (main_rank()) rotate_run_checkpoints(args.out, args.keep);
      std::printf("stopped by signal; resume with: ./train_llama --resume %s\n", args.out.c_str());
      return 0;
    }
    save(args.out + "/final", stop_reason);
    if (main_rank()) rotate_run_checkpoints(args.out, args.keep);
    std::printf("done: %s after %lld steps (%s); final checkpoint %s/final\n", stop_reason.c_str(), (long long)step,
                format_eta(elapsed_before + seconds_since_start()).c_str(), args.out.c_str());
    log_json({{"event", "done"}, {"step", step}, {"stop_reason", stop_reason}, {"checkpoint", args.out + "/final"}});
    return 0;
  }
};

int main(int argc, char** argv) {
  try {
    CLI::App app;
    TrainArgs command_line;
    declare_options(app, command_line);
    if (int rc = cli::parse_or_usage(app, argc, argv); rc >= 0) return rc;
    const OptionMap given = cli::given(app);
    start_signal_watcher();
    const ProcessGroupEnv pg = detect_process_group();
    // The backend is chosen from the command line (a resumed run may change device).
    std::string device = command_line.device;
#if defined(ENGINE_CUDA)
    if (device == "auto") device = cuda_device_count() > 0 ? "cuda" : "cpu";
    if (device == "cuda") {
      Trainer<CudaBackend> t;
      t.pg = pg;
      t.setup(given);
      const int rc = t.args.dry_run ? 0 : t.run();
      mpi_finalize();  // every rank gets here together at the end of a run
      return rc;
    }
#endif
    Trainer<CpuBackend> t;
    t.pg = pg;
    t.setup(given);
    return t.args.dry_run ? 0 : t.run();
  } catch (const std::exception& e) {  // EngineError and anything else: a message, never a crash
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
