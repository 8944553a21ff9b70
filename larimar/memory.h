// Larimar's memory operations (Das et al. 2024, arXiv 2403.11901), float64 on the host.
//
// A memory is M ∈ R^{K×C} (K slots, codes z ∈ R^C, stored as rows). With ⁺ the pseudo-inverse
// (larimar/pinv.h, exact or the paper's iteration):
//   write an episode Z (N×C) over the prior M₀:  W₀ = Z M₀⁺ (N×K),  M = W₀⁺ Z
//   read queries Z_q (N×C):                      W̄ = Z_q M⁺,        Z_r = W M
// with W = W̄ deterministically, or, in training, W = W̄ + σ⊙ε, σ = exp(logvar/2) per slot
// (shared by the rows of an episode: logvar comes from a learned map of M), ε ~ N(0, I).
// The KL term of the loss is KL(N(W̄, diag σ²) ‖ N(0, I)), summed over rows and slots.
//
// Sequential write and forget (the paper's Eqs. 2–4), α = +1 writes, α = −1 forgets:
//   W_i = Z_i M_ref⁺                          keys from a fixed reference memory, so that a
//                                             forgotten fact's key is the one it was written with
//   C_i = C_{i−1} + α W_iᵀ W_i                (K×K)
//   M_i = M_{i−1} + α C_i⁻¹ W_iᵀ (Z_i − W_i M_{i−1})
// Since C_i M_i = C_{i−1} M_{i−1} + α W_iᵀ Z_i, starting from C₀ = c₀·I and M₀ this keeps
//   M = (c₀ I + Σ W_iᵀ W_i)⁻¹ (c₀ M₀ + Σ W_iᵀ Z_i),
// the least-squares solution over the episodes still written (ridge towards M₀ when c₀ > 0), in
// any order of writes and forgets. C_i is kept with its Cholesky factor, updated by rank-one
// updates/downdates for small episodes (O(N·K²) instead of O(K³)); a C_i that is singular or
// ill-conditioned (e.g. c₀ = 0 and fewer than K rows written, or forgetting what was never
// written) is an EngineError and leaves the memory unchanged.
#pragma once
#include <string>

#include "larimar/pinv.h"

namespace larimar {

using Vec = Eigen::VectorXd;

// ---- one-shot write -----------------------------------------------------------------------------
struct Write {
  Mat M;      // K×C, the written memory
  Pinv p0;    // M₀⁺ (C×K)
  Mat W0;     // N×K
  Pinv q;     // W₀⁺ (K×N)
};
Write write(const Mat& M0, const Mat& Z, const PinvConfig& cfg);

struct WriteGrads {
  Mat dM0, dZ;
};
WriteGrads write_backward(const Mat& M0, const Mat& Z, const Write& fwd, const Mat& dM, const PinvConfig& cfg);

// ---- read ---------------------------------------------------------------------------------------
struct Noise {
  Vec logvar;  // K: σ_k = exp(logvar_k / 2)
  Mat eps;     // N×K standard normal draws
};
struct Read {
  Mat Zr;      // N×C
  Pinv p;      // M⁺ (C×K)
  Mat Wbar;    // N×K, the mean key Z_q M⁺
  Mat W;       // N×K, the key used (W̄, or W̄ + σ⊙ε)
};
// noise == nullptr reads deterministically.
Read read(const Mat& M, const Mat& Zq, const PinvConfig& cfg, const Noise* noise = nullptr);

struct ReadGrads {
  Mat dM, dZq;
  Vec dlogvar;  // empty without noise
};
// dWbar (optional, N×K) is an extra gradient on W̄ from other loss terms (the KL term).
ReadGrads read_backward(const Mat& M, const Mat& Zq, const Read& fwd, const Mat& dZr, const PinvConfig& cfg,
                        const Noise* noise = nullptr, const Mat* dWbar = nullptr);

// KL(N(W̄, diag exp(logvar)) ‖ N(0, I)) = ½ Σ_{n,k} (exp(logvar_k) + W̄_nk² − 1 − logvar_k), and its
// gradients (either pointer may be null).
double kl_w(const Mat& Wbar, const Vec& logvar, Mat* dWbar, Vec* dlogvar);

// ---- sequential write and forget ----------------------------------------------------------------
class SequentialMemory {
 public:
  // Prior M₀ (K×C) and C₀ = c₀·I (c₀ >= 0); keys from the fixed reference memory M_ref (K×C),
  // whose pseudo-inverse is computed once with `cfg`. An update whose C_i has a reciprocal
  // condition estimate (1-norm, Eigen's LLT::rcond) below min_rcond is refused: C_i⁻¹ then loses
  // more than 4 of double's 16 digits (cond(C) = cond(W)²).
  SequentialMemory(const Mat& M0, double c0, const Mat& M_ref, const PinvConfig& cfg, double min_rcond = 1e-12);
  // A memory restored from its state (M, C, M_ref⁺), e.g. read from a file; C must be positive
  // definite unless no row was written yet with c₀ = 0 (then C = 0).
  static SequentialMemory from_state(Mat M, Eigen::MatrixXd C, Mat ref_pinv, int64_t rows, double min_rcond);

  void write(const Mat& Z) { update(Z, +1, "write"); }
  void forget(const Mat& Z) { update(Z, -1, "forget"); }
  Mat keys(const Mat& Z) const;  // W = Z M_ref⁺

  const Mat& memory() const { return M_; }
  Eigen::MatrixXd precision() const { return C_.selfadjointView<Eigen::Lower>(); }  // C, K×K
  const Mat& reference_pinv() const { return ref_pinv_; }
  int64_t rows() const { return rows_; }  // rows written minus rows forgotten
  int64_t slots() const { return M_.rows(); }
  int64_t code_size() const { return M_.cols(); }
  double min_rcond() const { return min_rcond_; }

  // Episodes of at most this many rows update the Cholesky factor by rank-one steps (O(N·K²),
  // not blocked); larger ones refactor C (K³/3, blocked). Crossover measured by
  // dev/bench/bench_larimar.cpp (docs/larimar.md).
  int64_t max_rank_update_rows = 16;

 private:
  struct Factor : Eigen::LLT<Eigen::MatrixXd> {
    using LLT::LLT;
    void set_l1_norm(double v) { m_l1_norm = v; }  // rankUpdate leaves the norm rcond() uses stale
  };
  SequentialMemory() = default;
  void update(const Mat& Z, int alpha, const char* op);

  Mat M_;
  Eigen::MatrixXd C_;  // lower triangle
  Mat ref_pinv_;  // C×K
  Factor factor_;
  bool factored_ = false;
  int64_t rows_ = 0;
  double min_rcond_ = 1e-12;
};

}  // namespace larimar
