// The CPU AdamW op (kernels/cpu/adamw.cpp, a vectorized OpenMP loop) against a scalar reference
// written here with the roundings the op documents: the same bits (memcmp), not a tolerance, over
// realistic values, arbitrary finite bit patterns (every exponent, denormals), zeros and
// denormals, huge / infinite / NaN gradients on fresh moments (v = 0), several chained steps, early
// and late bias correction, grad_scale != 1, random hyperparameters and 1 to 3 threads, with
// lengths that leave vector tails. The CPU backend's checkpoints and published results depend on
// these bits; the op's products that are not fused must stay unfused, and the fused ones fused.
#include <catch2/catch.hpp>
#include <omp.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"

namespace {
struct Hyper {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  int step;
};

// One element at a time. `decayed` is volatile: its product is rounded to fp32 and stored, so
// the compiler can neither fuse it into the subtraction nor vectorize the loop (this file is
// built with the default flags, under which GCC contracts a * b - c into an FMA where it can).
void reference(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v,
               const Hyper& h) {
  const double bc1 = 1.0 - std::pow((double)h.beta1, h.step);
  const double bc2 = 1.0 - std::pow((double)h.beta2, h.step);
  const float step_size = (float)(h.lr / bc1);
  const float inv_sqrt_bc2 = (float)(1.0 / std::sqrt(bc2));
  const float decay = std::fma(-h.lr, h.weight_decay, 1.0f);  // 1 - lr wd, one rounding
  for (size_t i = 0; i < p.size(); i++) {
    const float gi = g[i] * h.grad_scale;
    const float mi = std::fma(h.beta1, m[i], (1.0f - h.beta1) * gi);
    const float vi = std::fma(h.beta2, v[i], ((1.0f - h.beta2) * gi) * gi);
    m[i] = mi;
    v[i] = vi;
    const volatile float decayed = p[i] * decay;
    const float update = (step_size * mi) / std::fma(std::sqrt(vi), inv_sqrt_bc2, h.eps);
    p[i] = decayed - update;
  }
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// One step of the op on (p, m, v) and of the reference on (rp, rm, rv), the same gradients: the
// same bits after it.
void require_same_step(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m,
                       std::vector<float>& v, std::vector<float>& rp, std::vector<float>& rm, std::vector<float>& rv,
                       const Hyper& h) {
  adamw_update(p.data(), g.data(), m.data(), v.data(), p.size(), h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step,
               h.grad_scale);
  reference(rp, g, rm, rv, h);
  REQUIRE(same_bits(m, rm));
  REQUIRE(same_bits(v, rv));
  REQUIRE(same_bits(p, rp));
}

float finite_bits(std::mt19937& rng) {
  for (;;) {
    const float x = std::bit_cast<float>((uint32_t)rng());
    if (std::isfinite(x)) return x;
  }
}
float denormal_or_zero(std::mt19937& rng) {
  const uint32_t r = rng();
  return (r & 3) == 0 ? 0.0f : std::bit_cast<float>(r & 0x807fffffu);  // sign and mantissa only
}

enum class Kind { realistic, any_finite, denormal, huge_gradients };

// p, g, m, v of one kind; v >= 0 as the op's callers keep it.
void fill(Kind kind, size_t n, std::mt19937& rng, std::vector<float>& p, std::vector<float>& g, std::vector<float>& m,
          std::vector<float>& v) {
  std::normal_distribution<float> normal;
  const float specials[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::max(),
                            -3e38f, 1e30f, -1e20f, 2e19f};
  p.resize(n), g.resize(n), m.resize(n), v.resize(n);
  for (size_t i = 0; i < n; i++) switch (kind) {
      case Kind::realistic:
        p[i] = 0.02f * normal(rng), g[i] = 1e-3f * normal(rng), m[i] = 1e-4f * normal(rng);
        v[i] = 1e-8f * std::abs(normal(rng));
        break;
      case Kind::any_finite:
        p[i] = finite_bits(rng), g[i] = finite_bits(rng), m[i] = finite_bits(rng), v[i] = std::abs(finite_bits(rng));
        break;
      case Kind::denormal:
        p[i] = denormal_or_zero(rng), g[i] = denormal_or_zero(rng), m[i] = denormal_or_zero(rng);
        v[i] = std::abs(denormal_or_zero(rng));
        break;
      case Kind::huge_gradients:
        p[i] = 0.02f * normal(rng), m[i] = 0.0f, v[i] = 0.0f;
        g[i] = rng() % 2 ? specials[rng() % 8] : finite_bits(rng);
        break;
    }
}

Hyper random_hyper(std::mt19937& rng) {
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  Hyper h;
  h.lr = std::exp(-14.0f + 12.0f * u(rng));  // 1e-6 .. 0.1
  h.weight_decay = rng() % 4 == 0 ? 0.0f : u(rng);
  h.beta1 = 1.0f - std::exp(-1.0f - 4.0f * u(rng));
  h.beta2 = 1.0f - std::exp(-2.0f - 6.0f * u(rng));
  h.eps = std::exp(-25.0f + 15.0f * u(rng));
  h.grad_scale = rng() % 3 == 0 ? 1.0f : 0.05f + u(rng);
  h.step = rng() % 2 ? 1 : 1 + (int)(rng() % 5000);
  return h;
}

// Threads for the op; restored on scope exit.
struct Threads {
  int saved = omp_get_max_threads();
  explicit Threads(int t) { omp_set_num_threads(t); }
  ~Threads() { omp_set_num_threads(saved); }
};
}  // namespace

TEST_CASE("adamw_update gives the scalar reference's bits: edge values, chained steps, 1 to 3 threads") {
  std::mt19937 rng(7);
  for (Kind kind : {Kind::realistic, Kind::any_finite, Kind::denormal, Kind::huge_gradients})
    for (int threads : {1, 2, 3})
      for (size_t n : {1, 15, 17, 1000, 65537}) {
        Threads scope(threads);
        std::vector<float> p, g, m, v;
        fill(kind, n, rng, p, g, m, v);
        std::vector<float> rp = p, rm = m, rv = v;
        Hyper h = random_hyper(rng);
        for (int k = 0; k < 4; k++, h.step++) {
          INFO("kind " << (int)kind << " threads " << threads << " n " << n << " step " << h.step << " lr " << h.lr
                       << " wd " << h.weight_decay << " b1 " << h.beta1 << " b2 " << h.beta2 << " eps " << h.eps
                       << " grad_scale " << h.grad_scale);
          require_same_step(p, g, m, v, rp, rm, rv, h);
        }
      }
}

// The weight decay factor 1 - lr wd is a single rounding; two roundings differ from it for a few
// percent of (lr, wd) pairs only, so many pairs are drawn (one call each, on one thread: a
// parallel region per call would cost more than the update on a loaded machine).
TEST_CASE("adamw_update gives the scalar reference's bits over many random hyperparameters") {
  std::mt19937 rng(11);
  Threads scope(1);
  for (int draw = 0; draw < 3000; draw++) {
    std::vector<float> p, g, m, v;
    fill(Kind::realistic, 37, rng, p, g, m, v);
    std::vector<float> rp = p, rm = m, rv = v;
    const Hyper h = random_hyper(rng);
    INFO("draw " << draw << " step " << h.step << " lr " << h.lr << " wd " << h.weight_decay << " grad_scale "
                 << h.grad_scale);
    require_same_step(p, g, m, v, rp, rm, rv, h);
  }
}

TEST_CASE("adamw_update over chunks equals one call over the whole range") {
  std::mt19937 rng(13);
  std::vector<float> p, g, m, v;
  fill(Kind::realistic, 100003, rng, p, g, m, v);
  std::vector<float> cp = p, cm = m, cv = v;
  const Hyper h = random_hyper(rng);
  adamw_update(p.data(), g.data(), m.data(), v.data(), p.size(), h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.step,
               h.grad_scale);
  for (size_t begin = 0, len = 1; begin < cp.size(); begin += len, len = len * 3 + 1) {
    const size_t k = std::min(len, cp.size() - begin);
    adamw_update(cp.data() + begin, g.data() + begin, cm.data() + begin, cv.data() + begin, k, h.lr, h.beta1, h.beta2,
                 h.eps, h.weight_decay, h.step, h.grad_scale);
  }
  REQUIRE(same_bits(p, cp));
  REQUIRE(same_bits(m, cm));
  REQUIRE(same_bits(v, cv));
}
