// Larimar memory operations against float64 references (dev/reference/gen_larimar.py):
// pseudo-inverses vs numpy.linalg.pinv, one-shot write/read, the Ben-Israel–Cohen iteration and
// its convergence law, sequential write/forget vs one-shot least squares, gradients vs PyTorch
// autograd, and the refusal of bad shapes and singular or ill-conditioned systems.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "larimar/memory.h"
#include "larimar/memory_file.h"
#include "model/safetensors.h"

using Catch::Contains;
using nlohmann::json;
using namespace larimar;

namespace {

const json& fixture() {
  static const json j = json::parse(read_text_file("test/fixtures/larimar/memory.json"));
  return j;
}

Mat to_mat(const json& j) {
  const int64_t r = int64_t(j.size()), c = r ? int64_t(j[0].size()) : 0;
  Mat m(r, c);
  for (int64_t i = 0; i < r; ++i)
    for (int64_t k = 0; k < c; ++k) m(i, k) = j[i][k].get<double>();
  return m;
}

Vec to_vec(const json& j) {
  Vec v(int64_t(j.size()));
  for (size_t i = 0; i < j.size(); ++i) v(int64_t(i)) = j[i].get<double>();
  return v;
}

// max |a − b| / max |b|
template <typename A, typename B>
double rel(const A& a, const B& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff();
}

PinvConfig exact_cfg() { return PinvConfig{}; }
PinvConfig iterative_cfg() {
  PinvConfig c;
  c.kind = PinvConfig::iterative;
  c.steps = fixture()["steps"].get<int>();
  c.scale = fixture()["scale"].get<double>();
  return c;
}

}  // namespace

TEST_CASE("exact pseudo-inverse equals numpy.linalg.pinv") {
  for (const auto& c : fixture()["pinv"]) {
    const Mat A = to_mat(c["A"]);
    INFO(A.rows() << "x" << A.cols());
    const Pinv p = pinv(A, exact_cfg(), "A");
    CHECK(rel(p.value, to_mat(c["pinv"])) < 1e-6);
    CHECK(pinv_residual(A, p.value) < 1e-12);
  }
}

TEST_CASE("one-shot write and read equal the numpy.linalg.pinv solutions") {
  for (const auto& c : fixture()["write_read"]) {
    const Mat M0 = to_mat(c["M0"]), Z = to_mat(c["Z"]), Zq = to_mat(c["Zq"]);
    INFO("K " << M0.rows() << " C " << M0.cols() << " N " << Z.rows());
    const Write w = write(M0, Z, exact_cfg());
    CHECK(rel(w.W0, to_mat(c["W0"])) < 1e-6);
    CHECK(rel(w.M, to_mat(c["M"])) < 1e-6);
    const Read r = read(w.M, Zq, exact_cfg());
    CHECK(rel(r.W, to_mat(c["W"])) < 1e-6);
    CHECK(rel(r.Zr, to_mat(c["Zr"])) < 1e-6);
  }
}

TEST_CASE("Ben-Israel-Cohen iteration: converges where s*sigma^2 is in its region, with the predicted error elsewhere") {
  const double scale = fixture()["scale"].get<double>();
  const int steps = fixture()["steps"].get<int>();
  for (const auto& c : fixture()["iterative"]) {
    const std::string name = c["name"];
    INFO(name);
    const Mat A = to_mat(c["A"]), exact = to_mat(c["pinv"]);
    if (name == "diverges") {
      REQUIRE_THROWS_WITH(pinv(A, iterative_cfg(), "A"), Contains("diverged") && Contains("scale"));
      continue;
    }
    const Pinv p = pinv(A, iterative_cfg(), "A");
    REQUIRE(int(p.iterates.size()) == steps);
    CHECK(rel(p.value, to_mat(c["iterate"])) < 1e-6);  // the paper's iteration, step for step
    if (name.rfind("converges", 0) == 0) {
      CHECK(rel(p.value, exact) < 1e-6);
      CHECK(p.residual < 1e-10);
    } else {
      // X_T − A⁺ has the component r^(2^T)/σ per singular value, r = 1 − sσ²
      const Vec sigma = to_vec(c["sigma"]), err = to_vec(c["component_error"]);
      double num = 0, den = 0;
      for (int64_t i = 0; i < sigma.size(); ++i) {
        num += std::pow(err(i) / sigma(i), 2);
        den += std::pow(1 / sigma(i), 2);
        CHECK(std::fabs(err(i) - std::pow(std::fabs(1 - scale * sigma(i) * sigma(i)), std::ldexp(1.0, steps))) <
              1e-9);
      }
      const double predicted = std::sqrt(num / den), actual = (p.value - exact).norm() / exact.norm();
      CHECK(actual > 1e-3);
      CHECK(std::fabs(actual - predicted) < 1e-6 * predicted);
    }
  }
}

TEST_CASE("write and read through the iteration follow the paper's unrolled recipe") {
  const auto& c = fixture()["write_read_iterative"];
  const Write w = write(to_mat(c["M0"]), to_mat(c["Z"]), iterative_cfg());
  CHECK(rel(w.M, to_mat(c["M"])) < 1e-6);
  const Read r = read(w.M, to_mat(c["Zq"]), iterative_cfg());
  CHECK(rel(r.Zr, to_mat(c["Zr"])) < 1e-6);
}

TEST_CASE("sequential writes equal one-shot least squares; forgetting equals least squares without the episode") {
  for (const auto& c : fixture()["sequential"]) {
    INFO(c["name"].get<std::string>());
    SequentialMemory mem(to_mat(c["M0"]), c["c0"].get<double>(), to_mat(c["M_ref"]), exact_cfg());
    int64_t rows = 0;
    for (const auto& e : c["episodes"]) {
      const Mat Z = to_mat(e);
      mem.write(Z);
      rows += Z.rows();
    }
    CHECK(mem.rows() == rows);
    CHECK(rel(mem.memory(), to_mat(c["after_writes"])) < 1e-6);
    for (const auto& j : c["forget"]) {
      const Mat Z = to_mat(c["episodes"][j.get<size_t>()]);
      mem.forget(Z);
      rows -= Z.rows();
    }
    CHECK(mem.rows() == rows);
    CHECK(rel(mem.memory(), to_mat(c["after_forgets"])) < 1e-6);
  }
}

TEST_CASE("sequential memory refuses singular updates and leaves the memory unchanged") {
  const auto& c = fixture()["sequential"][0];  // c0 = 0
  const Mat M0 = to_mat(c["M0"]), Mref = to_mat(c["M_ref"]);
  SequentialMemory mem(M0, 0.0, Mref, exact_cfg());
  // one row cannot determine K = 6 slots
  REQUIRE_THROWS_WITH(mem.write(to_mat(c["episodes"][1])),
                      Contains("write") && Contains("not positive definite") && Contains("at least K"));
  CHECK(mem.rows() == 0);
  CHECK(mem.memory() == M0);
  mem.write(to_mat(c["episodes"][0]));
  const Mat before = mem.memory();
  // forgetting rows that were never written (and outweigh what was) makes C indefinite
  REQUIRE_THROWS_WITH(mem.forget(3.0 * to_mat(c["episodes"][0])), Contains("forget") && Contains("not written"));
  CHECK(mem.memory() == before);
  // forgetting all that was written leaves C = 0: refused, not NaN
  REQUIRE_THROWS_WITH(mem.forget(to_mat(c["episodes"][0])), Contains("forget"));
  CHECK(mem.memory() == before);
  REQUIRE_THROWS_WITH(mem.write(Mat::Zero(2, 7)), Contains("write") && Contains("episode Z is 2x7"));
  REQUIRE_THROWS_WITH(SequentialMemory(M0, -1.0, Mref, exact_cfg()), Contains("c0"));
}

TEST_CASE("gradients of write -> sampled read -> loss match PyTorch autograd in float64") {
  for (const auto& c : fixture()["grads"]) {
    const std::string kind = c["kind"];
    INFO(kind);
    const PinvConfig cfg = kind == "exact" ? exact_cfg() : iterative_cfg();
    const Mat M0 = to_mat(c["M0"]), Z = to_mat(c["Z"]), Zq = to_mat(c["Zq"]), up = to_mat(c["dZr"]);
    const Noise noise{to_vec(c["logvar"]), to_mat(c["eps"])};
    const double beta = c["beta"].get<double>();
    const Write w = write(M0, Z, cfg);
    const Read r = read(w.M, Zq, cfg, &noise);
    CHECK(rel(w.M, to_mat(c["M"])) < 1e-9);
    CHECK(rel(r.Zr, to_mat(c["Zr"])) < 1e-9);
    Mat dWbar;
    Vec dlogvar_kl;
    const double kl = kl_w(r.Wbar, noise.logvar, &dWbar, &dlogvar_kl);
    CHECK(std::fabs(kl - c["kl"].get<double>()) < 1e-9 * std::fabs(c["kl"].get<double>()));
    CHECK(std::fabs(up.cwiseProduct(r.Zr).sum() + beta * kl - c["loss"].get<double>()) <
          1e-9 * std::fabs(c["loss"].get<double>()));
    dWbar *= beta;
    const ReadGrads rg = read_backward(w.M, Zq, r, up, cfg, &noise, &dWbar);
    const WriteGrads wg = write_backward(M0, Z, w, rg.dM, cfg);
    const Vec dlogvar = rg.dlogvar + beta * dlogvar_kl;
    CHECK(rel(rg.dZq, to_mat(c["dZq"])) < 1e-8);
    CHECK(rel(dlogvar, to_vec(c["dlogvar"])) < 1e-8);
    CHECK(rel(wg.dZ, to_mat(c["dZ"])) < 1e-8);
    CHECK(rel(wg.dM0, to_mat(c["dM0"])) < 1e-8);
  }
}

TEST_CASE("rank-deficient matrices have their pseudo-inverse; an ambiguous rank or malformed input is refused") {
  Mat A = Mat::Zero(3, 5);
  A(0, 0) = 1;
  A(1, 1) = 2;  // rank 2: the SVD route
  Pinv p = pinv(A, exact_cfg(), "M");
  CHECK(p.rank == 2);
  Mat expected = Mat::Zero(5, 3);
  expected(0, 0) = 1;
  expected(1, 1) = 0.5;
  CHECK((p.value - expected).cwiseAbs().maxCoeff() < 1e-15);
  A(2, 2) = 1e-15;  // 5e-16·σ₁: below the noise floor, zero
  CHECK(pinv(A, exact_cfg(), "M").rank == 2);
  A(2, 2) = 1e-11;  // 5e-12·σ₁: neither zero nor resolvable
  REQUIRE_THROWS_WITH(pinv(A, exact_cfg(), "read: memory M"),
                      Contains("read: memory M") && Contains("ill-conditioned") && Contains("singular value 3"));
  PinvConfig bounded = exact_cfg();
  bounded.max_rank = 2;  // known to have rank <= 2: the third value is rounding, zeroed
  p = pinv(A, bounded, "M");
  CHECK(p.rank == 2);
  CHECK((p.value - expected).cwiseAbs().maxCoeff() < 1e-15);
  bounded.max_rank = 3;  // the bound does not hide an ambiguity within it
  CHECK_THROWS_WITH(pinv(A, bounded, "M"), Contains("singular value 3"));
  A(2, 2) = 1e-3;  // cond 2e3: full rank
  p = pinv(A, exact_cfg(), "M");
  CHECK(p.rank == 3);
  CHECK(pinv_residual(A, p.value) < 1e-12);
  A(0, 4) = std::nan("");
  REQUIRE_THROWS_WITH(pinv(A, exact_cfg(), "M"), Contains("non-finite"));
  REQUIRE_THROWS_WITH(pinv(Mat(0, 3), exact_cfg(), "M"), Contains("empty"));
  REQUIRE_THROWS_WITH(pinv(Mat::Zero(3, 4), exact_cfg(), "M"), Contains("is zero"));
  const Mat M0 = Mat::Identity(4, 6);
  REQUIRE_THROWS_WITH(write(M0, Mat::Ones(2, 5), exact_cfg()), Contains("write: Z is 2x5, expected Nx6"));
  REQUIRE_THROWS_WITH(read(M0, Mat::Ones(2, 7), exact_cfg()), Contains("read: Zq is 2x7"));
  const Noise bad{Vec::Zero(3), Mat::Zero(2, 4)};
  REQUIRE_THROWS_WITH(read(M0, Mat::Ones(2, 6), exact_cfg(), &bad), Contains("logvar has 3 entries, expected K = 4"));
}

TEST_CASE("reading back the facts just written returns them, duplicates included") {
  const auto& c = fixture()["write_read"][0];  // K 8, C 12, N 5
  Mat Z = to_mat(c["Z"]);
  Z.row(3) = Z.row(1);  // a fact written twice: W₀ has rank N−1
  const Write w = write(to_mat(c["M0"]), Z, exact_cfg());
  CHECK(w.q.rank == Z.rows() - 1);
  const Read r = read(w.M, Z, exact_cfg());  // Z M⁺ M = Z when M's rows span Z's
  CHECK(rel(r.Zr, Z) < 1e-9);
}

TEST_CASE("memory files round-trip exactly and refuse another encoder or a malformed file") {
  const std::string dir = "build/test/tmp_larimar_" + std::to_string(getpid());
  remove_tree(dir);
  make_dirs(dir);
  const auto& c = fixture()["sequential"][1];  // c0 = 0.5, single facts
  SequentialMemory mem(to_mat(c["M0"]), c["c0"].get<double>(), to_mat(c["M_ref"]), exact_cfg());
  for (size_t i = 0; i + 1 < c["episodes"].size(); ++i) mem.write(to_mat(c["episodes"][i]));
  const std::string path = dir + "/facts.mem";
  save_memory(path, mem, "encoder-a");
  SequentialMemory back = load_memory(path, "encoder-a");
  CHECK(back.memory() == mem.memory());
  CHECK(back.precision() == mem.precision());
  CHECK(back.reference_pinv() == mem.reference_pinv());
  CHECK(back.rows() == mem.rows());
  // both continue alike: the last write and a forget
  const Mat last = to_mat(c["episodes"][c["episodes"].size() - 1]), first = to_mat(c["episodes"][0]);
  mem.write(last);
  back.write(last);
  mem.forget(first);
  back.forget(first);
  CHECK(rel(back.memory(), mem.memory()) < 1e-12);

  REQUIRE_THROWS_WITH(load_memory(path, "encoder-b"),
                      Contains(path) && Contains("encoder 'encoder-a'") && Contains("encoder 'encoder-b'"));
  REQUIRE_THROWS_WITH(save_memory(dir + "/x.mem", mem, ""), Contains("identity of its encoder"));
  // a model file is not a memory file
  const std::vector<float> v(4, 1.0f);
  write_safetensors(dir + "/other.safetensors", {{"w", "F32", {2, 2}, v.data()}});
  REQUIRE_THROWS_WITH(load_memory(dir + "/other.safetensors", "encoder-a"), Contains("missing metadata field 'format'"));
  // a tensor of the wrong dtype or shape is named
  const Mat& M = mem.memory();
  const Mat C = mem.precision();
  const std::map<std::string, std::string> meta{{"format", "larimar-memory"}, {"version", "1"},
                                                {"encoder", "encoder-a"}, {"rows", "3"}, {"min_rcond", "1e-12"}};
  write_safetensors(dir + "/bad1.mem",
                    {{"M", "F64", {M.rows(), M.cols()}, M.data()}, {"C", "F64", {M.rows(), M.rows()}, C.data()},
                     {"ref_pinv", "F64", {M.rows(), M.cols()}, M.data()}},
                    meta);
  REQUIRE_THROWS_WITH(load_memory(dir + "/bad1.mem", "encoder-a"),
                      Contains("bad1.mem") && Contains("tensor 'ref_pinv' has shape [6, 10], expected [10, 6]"));
  write_safetensors(dir + "/bad2.mem", {{"M", "F32", {2, 2}, v.data()}}, meta);
  REQUIRE_THROWS_WITH(load_memory(dir + "/bad2.mem", "encoder-a"), Contains("tensor 'M' has dtype F32, expected F64"));
  auto meta2 = meta;
  meta2["rows"] = "three";
  write_safetensors(dir + "/bad3.mem", {{"M", "F64", {M.rows(), M.cols()}, M.data()}}, meta2);
  REQUIRE_THROWS_WITH(load_memory(dir + "/bad3.mem", "encoder-a"), Contains("metadata 'rows' ('three')"));
  remove_tree(dir);
}
