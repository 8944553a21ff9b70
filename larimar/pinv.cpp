#include "larimar/pinv.h"

#include <cmath>

#include "common/error.h"

namespace larimar {

namespace {

void check_input(const Mat& A, const std::string& what) {
  check(A.rows() > 0 && A.cols() > 0, what, ": pseudo-inverse of an empty ", A.rows(), "x", A.cols(),
        " matrix");
  check(A.allFinite(), what, ": pseudo-inverse of a matrix with non-finite entries");
}

constexpr double kCholeskyMinRcond = 1e-8;

// Full rank and well conditioned: solve the normal equations of the smaller side. Returns false
// (and leaves `out` alone) when the Gram matrix is not safely positive definite.
bool pinv_cholesky(const Mat& A, Pinv& out) {
  const bool wide = A.rows() <= A.cols();
  const int64_t s = wide ? A.rows() : A.cols();
  Eigen::MatrixXd gram = Eigen::MatrixXd::Zero(s, s);
  if (wide)
    gram.selfadjointView<Eigen::Lower>().rankUpdate(A);
  else
    gram.selfadjointView<Eigen::Lower>().rankUpdate(A.transpose());
  gram.triangularView<Eigen::StrictlyUpper>() = gram.transpose();
  Eigen::LLT<Eigen::MatrixXd> llt(gram);
  if (llt.info() != Eigen::Success || !(llt.rcond() >= kCholeskyMinRcond)) return false;
  out.value = wide ? Mat(llt.solve(A).transpose())   // (G⁻¹A)ᵀ = Aᵀ G⁻¹
                   : Mat(llt.solve(A.transpose()));  // G⁻¹ Aᵀ
  out.rank = s;
  return true;
}

Pinv pinv_exact(const Mat& A, const PinvConfig& cfg, const std::string& what) {
  check(cfg.rtol > 0 && cfg.rtol < 1, what, ": pseudo-inverse rtol must be in (0, 1), got ", cfg.rtol);
  Pinv out;
  if (!pinv_cholesky(A, out)) {
    Eigen::BDCSVD<Eigen::MatrixXd> svd(A, Eigen::ComputeThinU | Eigen::ComputeThinV);
    check(svd.info() == Eigen::Success, what, ": the SVD of the ", A.rows(), "x", A.cols(), " matrix failed");
    const Eigen::VectorXd& sv = svd.singularValues();
    const double s1 = sv.size() ? sv(0) : 0.0;
    check(s1 > 0, what, ": the ", A.rows(), "x", A.cols(), " matrix is zero; it has no useful pseudo-inverse");
    const int64_t structural = cfg.max_rank > 0 ? std::min<int64_t>(cfg.max_rank, sv.size()) : sv.size();
    int64_t r = 0;
    while (r < structural && sv(r) > cfg.rtol * s1) ++r;
    for (int64_t i = r; i < structural; ++i)
      check(sv(i) <= 1e-3 * cfg.rtol * s1, what, ": the ", A.rows(), "x", A.cols(),
            " matrix is ill-conditioned: its singular value ", i + 1, " is ", sv(i) / s1,
            "·σ₁, neither zero (<= ", 1e-3 * cfg.rtol, "·σ₁) nor resolvable (> ", cfg.rtol,
            "·σ₁), so its rank and pseudo-inverse are not determined");
    const Eigen::VectorXd inv = sv.head(r).cwiseInverse();
    out.value = svd.matrixV().leftCols(r) * inv.asDiagonal() * svd.matrixU().leftCols(r).transpose();
    out.rank = r;
  }
  check(out.value.allFinite(), what, ": pseudo-inverse has non-finite entries");
  return out;
}

Pinv pinv_iterative(const Mat& A, const PinvConfig& cfg, const std::string& what) {
  check(cfg.steps >= 0, what, ": iterative pseudo-inverse needs steps >= 0, got ", cfg.steps);
  check(cfg.scale > 0, what, ": iterative pseudo-inverse needs scale > 0, got ", cfg.scale);
  Pinv out;
  out.iterates.reserve(cfg.steps);
  Mat X = cfg.scale * A.transpose();
  for (int k = 0; k < cfg.steps; ++k) {
    out.iterates.push_back(X);
    // X A X through the smaller product: A X (m×m) when m < n, X A (n×n) otherwise.
    Mat XAX = A.rows() < A.cols() ? Mat(X * (A * X)) : Mat((X * A) * X);
    X = 2.0 * X - XAX;
  }
  out.value = std::move(X);
  out.residual = pinv_residual(A, out.value);
  check(out.value.allFinite() && std::isfinite(out.residual) && out.residual <= 1.0, what,
        ": the iterative pseudo-inverse diverged (", cfg.steps, " steps from ", cfg.scale, "·Aᵀ, residual ",
        out.residual, "): it converges only when scale·σ_max(A)² < 2; use the exact pseudo-inverse or a smaller scale");
  return out;
}

}  // namespace

double pinv_residual(const Mat& A, const Mat& X) {
  const double na = A.norm();
  if (na == 0) return 0;
  Mat AX = A * X;
  return (AX * A - A).norm() / na;
}

Pinv pinv(const Mat& A, const PinvConfig& cfg, const std::string& what) {
  check_input(A, what);
  return cfg.kind == PinvConfig::exact ? pinv_exact(A, cfg, what) : pinv_iterative(A, cfg, what);
}

Mat pinv_backward(const Mat& A, const Pinv& fwd, const Mat& dAp, const PinvConfig& cfg) {
  const Mat& X = fwd.value;
  check(dAp.rows() == X.rows() && dAp.cols() == X.cols(), "pinv_backward: gradient is ", dAp.rows(), "x",
        dAp.cols(), ", expected ", X.rows(), "x", X.cols());
  if (cfg.kind == PinvConfig::exact) {
    // At constant rank, dX = −X dA X + X Xᵀ dAᵀ (I − A X) + (I − X A) dAᵀ Xᵀ X, whose adjoint is
    // dL/dA = −Xᵀ G Xᵀ + (I − A X) Gᵀ X Xᵀ + Xᵀ X Gᵀ (I − X A). The last two terms vanish for
    // full row (A X = I) and full column rank (X A = I) respectively.
    const Mat Xt = X.transpose();
    Mat dA = -(Xt * dAp * Xt);
    const Mat GtXXt = dAp.transpose() * (X * Xt);  // Gᵀ X Xᵀ, m×n
    dA += GtXXt - A * (X * GtXXt);                 // (I − A X) Gᵀ X Xᵀ
    const Mat XtXGt = (Xt * X) * dAp.transpose();  // Xᵀ X Gᵀ, m×n
    dA += XtXGt - (XtXGt * X) * A;                 // Xᵀ X Gᵀ (I − X A)
    return dA;
  }
  // Unrolled X_{k+1} = 2X_k − X_k A X_k, X₀ = s·Aᵀ. With G = dL/dX_{k+1}:
  //   dL/dX_k = 2G − G (A X_k)ᵀ − (X_k A)ᵀ G,   dL/dA += −X_kᵀ G X_kᵀ,   and finally dL/dA += s·G₀ᵀ.
  Mat G = dAp;
  Mat dA = Mat::Zero(A.rows(), A.cols());
  for (int k = int(fwd.iterates.size()) - 1; k >= 0; --k) {
    const Mat& Xk = fwd.iterates[k];
    const Mat Xkt = Xk.transpose();
    dA.noalias() -= Xkt * G * Xkt;
    Mat Gn = 2.0 * G;
    Gn.noalias() -= G * (A * Xk).transpose();
    Gn.noalias() -= (Xk * A).transpose() * G;
    G = std::move(Gn);
  }
  dA += cfg.scale * G.transpose();
  return dA;
}

}  // namespace larimar
