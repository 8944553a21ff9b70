// Moore–Penrose pseudo-inverse A⁺ of a dense m×n matrix, two ways, each with its backward pass.
//
// Exact: A⁺ = V Σ_r⁻¹ U_rᵀ over the singular values σ_i > rtol·σ₁ (numerical rank r). Two routes
// to the same result:
//   - fast: when A has full rank and is well conditioned, through the Cholesky factor of the
//     smaller Gram matrix (Eigen's LLT): A⁺ = Aᵀ(AAᵀ)⁻¹ (m <= n) or (AᵀA)⁻¹Aᵀ (m > n), m·n·min(m,n)
//     + min(m,n)³/3 flops. Taken only when the Gram matrix's reciprocal condition estimate is at
//     least 1e-8 (cond(A) <~ 1e4), so that the normal equations' cond(A)²·1e-16 error stays < 1e-8;
//   - otherwise Eigen's divide-and-conquer SVD (BDCSVD), about 5–10× the flops.
// Rank deficiency is normal here: a memory written with N < K rows has rank N. What is refused
// (EngineError) is a numerical rank that is ambiguous: a singular value between the noise floor
// 1e-3·rtol·σ₁ and the cut rtol·σ₁, where the result would hinge on rounding; and a zero matrix.
//
// Iterative: Ben-Israel–Cohen (Newton–Schulz), as the Larimar paper and IBM's code use it:
//   X₀ = s·Aᵀ,   X_{k+1} = 2X_k − X_k A X_k,   k = 0..steps−1   (paper: s = 5e-4, 15 steps).
// In A's singular basis every X_k is diagonal: for a singular value σ the component is
// x_k = (1 − r^(2^k))/σ with r = 1 − s·σ², so the relative error after T steps is exactly
// |1 − sσ²|^(2^T). It converges iff 0 < s·σ_max² < 2, and slowly where s·σ_min² is small
// (docs/larimar.md has the region). A diverged run (non-finite values, or a residual
// ‖A X A − A‖_F / ‖A‖_F above 1) is an EngineError; an unconverged one is returned with its
// residual, because the paper trains through a fixed, possibly unconverged number of steps.
//
// Backward: the exact pass uses the derivative of the pseudo-inverse at constant rank
// (Golub & Pereyra 1973), as torch.linalg.pinv does; the iterative pass differentiates the unrolled iteration, as autograd
// does in the reference implementation. Everything is float64 on the host.
#pragma once
// GCC 12 reports a false -Wmaybe-uninitialized inside its own AVX-512 intrinsics when it inlines
// Eigen's GEMM packing (-march=native); the diagnostic is disabled for Eigen's headers only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <Eigen/Dense>
#pragma GCC diagnostic pop
#include <string>
#include <vector>

namespace larimar {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct PinvConfig {
  enum Kind { exact, iterative } kind = exact;
  int steps = 15;           // iterative: number of Ben-Israel–Cohen steps
  double scale = 5e-4;      // iterative: X₀ = scale·Aᵀ
  double rtol = 1e-10;       // exact: singular values <= rtol·σ₁ are zero (numpy/torch `rtol`)
  // exact: a bound on the rank known from how A was made (0: none). A memory written from N rows
  // has rank <= N; its singular values beyond the N-th are rounding (of the order of cond(W₀)·ε,
  // which can exceed the noise floor below) and are zeroed without the ambiguity check.
  int64_t max_rank = 0;
};

struct Pinv {
  Mat value;                // A⁺, n×m
  std::vector<Mat> iterates;  // iterative only: X₀ … X_{steps−1} (what the backward pass needs)
  double residual = 0;      // iterative only: ‖A A⁺ A − A‖_F / ‖A‖_F
  int64_t rank = 0;         // exact only: numerical rank
};

// `what` names the matrix in error messages (e.g. "write: M0").
Pinv pinv(const Mat& A, const PinvConfig& cfg, const std::string& what);

// Given dL/dA⁺ (n×m), returns dL/dA (m×n) for the same config as the forward pass.
Mat pinv_backward(const Mat& A, const Pinv& fwd, const Mat& dAp, const PinvConfig& cfg);

// Relative residual ‖A X A − A‖_F / ‖A‖_F (0 for A = 0).
double pinv_residual(const Mat& A, const Mat& X);

}  // namespace larimar
