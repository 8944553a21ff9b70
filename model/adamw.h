// AdamW with global gradient-norm clipping over the flat parameter buffer (torch.optim.AdamW +
// torch.nn.utils.clip_grad_norm_ semantics). Weight decay applies to every parameter, as with a
// single torch parameter group.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>

struct AdamWConfig {
  float lr = 5e-5f;
  float beta1 = 0.9f, beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float max_grad_norm = 1.0f;  // <= 0: no clipping
};

// Clipping factor of clip_grad_norm_: min(1, max_norm / (norm + 1e-6)).
inline float clip_scale(double grad_norm, float max_grad_norm) {
  if (max_grad_norm <= 0.0f) return 1.0f;
  return (float)std::min(1.0, (double)max_grad_norm / (grad_norm + 1e-6));
}

// Storage of the AdamW moments m and v: fp32, or bf16 (half the memory) updated with stochastic
// rounding so that E[stored] equals the exact fp32 update (backends with Backend::has_bf16_moments only;
// the moments are then kept as raw bf16 bit patterns, uint16_t, in the model).
enum class MomentDtype { f32, bf16 };

// The parameters one step updates: n fp32 master weights, their working copy in the backend's weight
// type (rewritten in the same pass; the master itself on the CPU backend), and the flat index of
// element 0 in the whole parameter buffer (a ZeRO slice starts inside it).
template <class Backend>
struct AdamWTarget {
  float* master;
  typename Backend::weight_t* work;
  size_t first;
};

// One step (step >= 1 counts steps taken, for the bias correction) with a given clipping factor
// (clip_scale of a global norm, possibly over several parameter buffers). moment_t: float, or
// uint16_t (bf16 bits) on backends that support it.
template <class Backend, class moment_t>
void adamw_apply(AdamWTarget<Backend> t, const float* grads, moment_t* m, moment_t* v, size_t n, int step,
                 const AdamWConfig& o, float scale) {
  Backend::adamw_update(t.master, t.work, t.first, grads, m, v, n, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay,
                        step, scale);
}

// One step clipped by the norm of this buffer. Returns the global gradient norm before clipping.
// The clipping factor is folded into the update, so gradients are read once.
// Backends with Backend::fuses_optimizer (CUDA) run it as their fused step (norm, clip and update
// with no host round trip, bit-exact with the sequence below) unless the norm needs the other ranks.
// With ZeRO each rank updates its own slice of the flat buffer: `sum_over_ranks` turns the slice's
// sum of squares into the whole model's (an all-reduce), so every rank clips by the global norm.
template <class Backend, class moment_t>
double adamw_step(AdamWTarget<Backend> t, const float* grads, moment_t* m, moment_t* v, size_t n, int step,
                  const AdamWConfig& o, const std::function<double(double)>& sum_over_ranks = nullptr) {
  if constexpr (Backend::fuses_optimizer) {
    if (!sum_over_ranks)
      return Backend::adamw_clip_update(t.master, t.work, t.first, const_cast<float*>(grads), m, v, n, o.lr, o.beta1,
                                        o.beta2, o.eps, o.weight_decay, step, o.max_grad_norm, false);
  }
  double sum_sq = Backend::sum_of_squares(grads, n);
  if (sum_over_ranks) sum_sq = sum_over_ranks(sum_sq);
  double norm = std::sqrt(sum_sq);
  adamw_apply<Backend>(t, grads, m, v, n, step, o, clip_scale(norm, o.max_grad_norm));
  return norm;
}

// The same step, leaving the gradients [0, n) zero for the next accumulation: on fusing backends
// each gradient is zeroed in the update pass right after it is read (no separate memset pass).
template <class Backend, class moment_t>
double adamw_step_zero_grads(AdamWTarget<Backend> t, float* grads, moment_t* m, moment_t* v, size_t n, int step,
                             const AdamWConfig& o, const std::function<double(double)>& sum_over_ranks = nullptr) {
  if constexpr (Backend::fuses_optimizer) {
    if (!sum_over_ranks)
      return Backend::adamw_clip_update(t.master, t.work, t.first, grads, m, v, n, o.lr, o.beta1, o.beta2, o.eps,
                                        o.weight_decay, step, o.max_grad_norm, true);
  }
  const double norm = adamw_step<Backend>(t, grads, m, v, n, step, o, sum_over_ranks);
  Backend::zero(grads, n);
  return norm;
}
