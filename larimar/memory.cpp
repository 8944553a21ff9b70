#include "larimar/memory.h"

#include <cmath>

#include "common/error.h"

namespace larimar {

namespace {

void check_shape(const Mat& A, int64_t rows, int64_t cols, const char* op, const char* name) {
  check((rows < 0 || A.rows() == rows) && (cols < 0 || A.cols() == cols), op, ": ", name, " is ", A.rows(), "x",
        A.cols(), ", expected ", rows < 0 ? std::string("N") : std::to_string(rows), "x",
        cols < 0 ? std::string("N") : std::to_string(cols));
  check(A.allFinite(), op, ": ", name, " has non-finite entries");
}

void check_noise(const Noise& noise, int64_t n, int64_t k) {
  check(noise.logvar.size() == k, "read: noise logvar has ", noise.logvar.size(), " entries, expected K = ", k);
  check_shape(noise.eps, n, k, "read", "noise eps");
  check(noise.logvar.allFinite(), "read: noise logvar has non-finite entries");
}

}  // namespace

// ---- one-shot write -----------------------------------------------------------------------------

Write write(const Mat& M0, const Mat& Z, const PinvConfig& cfg) {
  check_shape(M0, -1, -1, "write", "M0");
  check_shape(Z, -1, M0.cols(), "write", "Z");
  Write w;
  w.p0 = pinv(M0, cfg, "write: prior memory M0");
  w.W0 = Z * w.p0.value;
  w.q = pinv(w.W0, cfg, "write: episode keys W0 = Z M0⁺");
  w.M = w.q.value * Z;
  return w;
}

WriteGrads write_backward(const Mat& M0, const Mat& Z, const Write& fwd, const Mat& dM, const PinvConfig& cfg) {
  check_shape(dM, M0.rows(), M0.cols(), "write_backward", "dM");
  WriteGrads g;
  // M = Q Z with Q = W₀⁺
  const Mat dQ = dM * Z.transpose();
  g.dZ = fwd.q.value.transpose() * dM;
  const Mat dW0 = pinv_backward(fwd.W0, fwd.q, dQ, cfg);
  // W₀ = Z P₀ with P₀ = M₀⁺
  g.dZ.noalias() += dW0 * fwd.p0.value.transpose();
  const Mat dP0 = Z.transpose() * dW0;
  g.dM0 = pinv_backward(M0, fwd.p0, dP0, cfg);
  return g;
}

// ---- read ---------------------------------------------------------------------------------------

Read read(const Mat& M, const Mat& Zq, const PinvConfig& cfg, const Noise* noise) {
  check_shape(M, -1, -1, "read", "M");
  check_shape(Zq, -1, M.cols(), "read", "Zq");
  Read r;
  r.p = pinv(M, cfg, "read: memory M");
  r.Wbar = Zq * r.p.value;
  r.W = r.Wbar;
  if (noise) {
    check_noise(*noise, Zq.rows(), M.rows());
    const Vec sigma = (0.5 * noise->logvar.array()).exp().matrix();
    r.W.array() += noise->eps.array().rowwise() * sigma.transpose().array();
  }
  r.Zr = r.W * M;
  return r;
}

ReadGrads read_backward(const Mat& M, const Mat& Zq, const Read& fwd, const Mat& dZr, const PinvConfig& cfg,
                        const Noise* noise, const Mat* dWbar) {
  check_shape(dZr, Zq.rows(), M.cols(), "read_backward", "dZr");
  ReadGrads g;
  // Z_r = W M
  Mat dW = dZr * M.transpose();
  g.dM = fwd.W.transpose() * dZr;
  if (noise) {
    // W = W̄ + σ⊙ε, σ_k = exp(logvar_k/2): ∂W_nk/∂logvar_k = ½ σ_k ε_nk
    const Vec sigma = (0.5 * noise->logvar.array()).exp().matrix();
    g.dlogvar = 0.5 * sigma.cwiseProduct((dW.array() * noise->eps.array()).colwise().sum().transpose().matrix());
  }
  if (dWbar) {
    check_shape(*dWbar, Zq.rows(), M.rows(), "read_backward", "dWbar");
    dW += *dWbar;
  }
  // W̄ = Z_q P with P = M⁺
  g.dZq = dW * fwd.p.value.transpose();
  const Mat dP = Zq.transpose() * dW;
  g.dM += pinv_backward(M, fwd.p, dP, cfg);
  return g;
}

double kl_w(const Mat& Wbar, const Vec& logvar, Mat* dWbar, Vec* dlogvar) {
  check(logvar.size() == Wbar.cols(), "kl_w: logvar has ", logvar.size(), " entries, expected K = ", Wbar.cols());
  const double n = double(Wbar.rows());
  const double kl = 0.5 * (Wbar.squaredNorm() + n * (logvar.array().exp() - 1.0 - logvar.array()).sum());
  if (dWbar) *dWbar = Wbar;
  if (dlogvar) *dlogvar = (0.5 * n * (logvar.array().exp() - 1.0)).matrix();
  return kl;
}

// ---- sequential write and forget ----------------------------------------------------------------

SequentialMemory::SequentialMemory(const Mat& M0, double c0, const Mat& M_ref, const PinvConfig& cfg,
                                   double min_rcond) {
  check_shape(M0, -1, -1, "memory", "prior M0");
  check_shape(M_ref, M0.rows(), M0.cols(), "memory", "reference memory M_ref");
  check(std::isfinite(c0) && c0 >= 0, "memory: prior precision c0 must be finite and >= 0, got ", c0);
  check(min_rcond > 0 && min_rcond < 1, "memory: min_rcond must be in (0, 1), got ", min_rcond);
  min_rcond_ = min_rcond;
  M_ = M0;
  const int64_t K = M0.rows();
  C_ = Eigen::MatrixXd::Identity(K, K) * c0;  // lower triangle used
  ref_pinv_ = pinv(M_ref, cfg, "memory: reference memory M_ref").value;
  if (c0 > 0) {
    factor_.compute(C_);
    factored_ = true;
  }
}

SequentialMemory SequentialMemory::from_state(Mat M, Eigen::MatrixXd C, Mat ref_pinv, int64_t rows,
                                              double min_rcond) {
  check_shape(M, -1, -1, "memory", "M");
  const int64_t K = M.rows();
  check(C.rows() == K && C.cols() == K && C.allFinite(), "memory: C is ", C.rows(), "x", C.cols(),
        " or non-finite, expected ", K, "x", K);
  check_shape(ref_pinv, M.cols(), K, "memory", "reference pseudo-inverse");
  check(rows >= 0, "memory: negative row count ", rows);
  SequentialMemory s;
  s.M_ = std::move(M);
  s.C_ = std::move(C);
  s.ref_pinv_ = std::move(ref_pinv);
  s.rows_ = rows;
  s.min_rcond_ = min_rcond;
  if (!s.C_.isZero(0)) {
    s.factor_.compute(s.C_);
    check(s.factor_.info() == Eigen::Success && s.factor_.rcond() >= min_rcond,
          "memory: the stored precision C is not positive definite or is ill-conditioned");
    s.factored_ = true;
  }
  return s;
}

Mat SequentialMemory::keys(const Mat& Z) const {
  check_shape(Z, -1, M_.cols(), "memory", "Z");
  return Z * ref_pinv_;
}

void SequentialMemory::update(const Mat& Z, int alpha, const char* op) {
  check_shape(Z, -1, M_.cols(), op, "episode Z");
  check(Z.rows() > 0, op, ": empty episode");
  const int64_t K = M_.rows();
  const int64_t N = Z.rows();
  const double a = double(alpha);
  const Mat W = Z * ref_pinv_;  // N×K
  // Only the lower triangle of C is kept (LLT reads only it).
  Eigen::MatrixXd C = C_;
  C.selfadjointView<Eigen::Lower>().rankUpdate(W.transpose(), a);

  // New Cholesky factor: rank-one steps on the old one for small episodes, else from scratch.
  Factor f;
  if (factored_ && N <= max_rank_update_rows) {
    f = factor_;
    for (int64_t n = 0; n < N && f.info() == Eigen::Success; ++n) f.rankUpdate(W.row(n).transpose(), a);
  } else {
    f.compute(C);
  }
  const int64_t rows = rows_ + alpha * N;
  check(f.info() == Eigen::Success, op, ": C = c0·I + Σ WᵢᵀWᵢ is not positive definite after this episode (",
        alpha > 0 ? "K = " + std::to_string(K) + ", rows written " + std::to_string(rows) +
                        ": with c0 = 0 the first writes must hold at least K independent rows"
                  : std::string("forgetting an episode that was not written?"),
        "); memory unchanged");
  // ‖C‖₁ from the lower triangle: column j's sum is its lower part plus row j's left part
  double l1 = 0;
  for (int64_t j = 0; j < K; ++j)
    l1 = std::max(l1, C.col(j).tail(K - j).cwiseAbs().sum() + C.row(j).head(j).cwiseAbs().sum());
  f.set_l1_norm(l1);
  const double rc = f.rcond();
  check(rc >= min_rcond_, op, ": C is ill-conditioned after this episode (reciprocal condition ", rc, " < ",
        min_rcond_, "); memory unchanged");

  // M += α C⁻¹ Wᵀ (Z − W M)
  const Mat R = Z - W * M_;                                // N×C
  const Eigen::MatrixXd Y = a * f.solve(W.transpose());    // K×N
  const Mat dM = Y * R;
  check(dM.allFinite(), op, ": the memory update produced non-finite values; memory unchanged");
  M_ += dM;
  C_ = std::move(C);
  factor_ = std::move(f);
  factored_ = true;
  rows_ = rows;
}

}  // namespace larimar
