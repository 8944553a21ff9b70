// Training a Larimar model: what `train_llama --larimar` keeps next to the decoder. The training
// loop, data, schedule, checkpoints, resume, logs and signals are train_llama's (one loop); this
// is the part that is Larimar's own:
//   - the encoder (a bidirectional LlamaModel + projection, larimar/encoder.h) and the host
//     parameters (M0, the logvar map, the code maps; larimar/larimar_model.h), their AdamW moments;
//   - one training step of an episode: β from the cyclic schedule, ε from a counter-based
//     generator (a pure function of (seed, step), so a resumed run draws the same noise), the
//     four-term loss and every gradient (LarimarModel::episode);
//   - the optimizer step: ONE clipping norm over every trained parameter (decoder unless frozen,
//     encoder, host), then AdamW on each buffer with that factor (torch's clip_grad_norm_ over
//     the whole model, then AdamW);
//   - the files of a Larimar directory inside a checkpoint: encoder/ (config.json,
//     model.safetensors, tokenizer.json), larimar.safetensors (M0, logvar map, code maps) and
//     larimar_optimizer.safetensors (the moments and step of the encoder and host parameters).
// The interface has no Eigen: train_llama.cu compiles without it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "larimar/encoder.h"
#include "model/adamw.h"

namespace larimar {

// β at the 0-based step t of T: IBM's Larimar schedule (frange_cycle_zero_linear of Optimus,
// with their defaults β_max 0.5, 10 cycles, ratio_zero 0.5, ratio_increase 0.25) in closed form.
// Each cycle has P = T / cycles steps; with u = (t mod P) / P the position in the cycle,
//   β = 0                                         for u < ratio_zero
//   β = β_max · min(1, (u − ratio_zero) / ratio_increase)   otherwise,
// i.e. zero for the first half of every cycle, a linear ramp over the next quarter, then β_max.
struct BetaSchedule {
  double beta_max = 0.5;
  int cycles = 10;
  double ratio_zero = 0.5, ratio_increase = 0.25;
  int64_t total_steps = 1;
  double at(int64_t step) const;
};

// ε [n, k] (row-major) for the episode of step `step`: standard normal draws (Box–Muller) from a
// splitmix64 stream derived from (seed, step) alone (dataloader/rng.h), so the noise of a step
// does not depend on what ran before it.
std::vector<double> episode_noise(uint64_t seed, int64_t step, int n, int k);

// Where a run's encoder and memory come from: an encoder config.json (a Llama config plus
// "larimar_code_size"; trained from scratch with `slots` memory slots) or a Larimar directory
// (encoder/ and larimar.safetensors, e.g. a checkpoint of an earlier run; its weights are loaded
// and its slot count is that of its M0). Errors name the file and field.
struct LarimarSpec {
  EncoderConfig encoder;
  int slots = 0;
  std::string dir;  // the Larimar directory; empty: from scratch
};
LarimarSpec larimar_spec(const std::string& config_or_dir, int slots_option);

struct StepLoss {
  double total = 0, ce_read = 0, ce_code = 0, ce_zero = 0, kl = 0, beta = 0;
};

template <class Backend>
class LarimarTrainer {
 public:
  struct Options {
    int max_texts = 1, max_T = 1;  // episode size and text length the models are planned for
    bool iterative_pinv = false;   // the paper's 15-step iteration instead of the exact pseudo-inverse
    bool freeze_decoder = false;   // the decoder's weights stay as loaded
    BetaSchedule beta;
    uint64_t seed = 0;             // of ε (and of the initialization, init())
  };
  LarimarTrainer(const LarimarSpec& spec, const LlamaConfig& decoder, const Options& o);
  ~LarimarTrainer();
  LarimarTrainer(const LarimarTrainer&) = delete;
  LarimarTrainer& operator=(const LarimarTrainer&) = delete;

  LlamaModel<Backend>& decoder();
  const EncoderConfig& encoder_config() const;
  int slots() const;
  size_t encoder_parameters() const;  // the encoder stack and its projection
  size_t host_parameters() const;     // M0, logvar map, code maps

  // From scratch: the encoder stack HF-style (model/weights.h) from the seed, its projection
  // N(0, 1/C), M0 = the K×Cz identity (IBM's `identity: true`), the logvar map uniform in
  // ±1/sqrt(K·Cz) (torch's Linear default), the code maps N(0, the decoder's initializer_range).
  void init(uint64_t seed);
  // The weights of a Larimar directory (the optimizer starts fresh).
  void load(const std::string& dir);
  // The weights and the AdamW state of a checkpoint (resume).
  void load_optimizer(const std::string& dir);
  // Writes encoder/, larimar.safetensors and larimar_optimizer.safetensors into dir (a checkpoint
  // being written); refuses non-finite values.
  void save(const std::string& dir, const std::string& tokenizer_json) const;

  // Zeroes every gradient, then the loss of one episode and its gradients at step `step`.
  StepLoss step(const std::vector<std::vector<int32_t>>& texts, int64_t step);
  // Clips by the global norm and applies AdamW; returns the norm before clipping. A non-finite
  // norm changes nothing (the caller stops).
  double optimizer_step(const AdamWConfig& o);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace larimar
