// Wall-clock of the Larimar memory operations (larimar/), float64 on the host, for K slots and
// codes of size C. Prints one JSON object {op: seconds}; dev/bench/bench_larimar.py runs it next
// to the same operations in numpy and PyTorch and prints the ratios.
//
//   build/bench/bench_larimar [K] [C] [rounds]      (defaults 512 768 3; threads: OMP_NUM_THREADS)
//
// Each op is timed `rounds` times on fresh copies of the same state; the best round's wall-clock
// and process CPU time are reported ("op" and "op_cpu").
//   write1          sequential write of one fact (rank-one Cholesky update), mean over 20 facts
//   forget1         sequential forget of one of those facts, mean over 20
//   write100_facts  100 single-fact sequential writes in a row
//   write100_batch  one sequential write of a 100-fact episode (C refactored)
//   oneshot100      one-shot write W₀ = Z M₀⁺, M = W₀⁺ Z of 100 facts, exact pseudo-inverses
//   oneshot100_iter the same with the paper's 15-step iteration
//   read1           read of one query, exact M⁺ of a memory holding 100 facts (rank 100: SVD)
//   episodeN_rank1 / episodeN_refactor   an N-row sequential write by each factor update
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>

#include "larimar/memory.h"

using namespace larimar;

namespace {

Mat randn(int64_t r, int64_t c, std::mt19937_64& g, double scale = 1.0) {
  std::normal_distribution<double> n(0.0, scale);
  Mat m(r, c);
  for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = n(g);
  return m;
}

double cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

// Best round's wall-clock and process CPU seconds (the machine may be shared: CPU time is the
// steadier of the two with one thread).
std::pair<double, double> best_of(int rounds, const std::function<void()>& setup, const std::function<void()>& op) {
  double best = 1e30, best_cpu = 1e30;
  for (int r = 0; r < rounds; ++r) {
    setup();
    const double c0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    op();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    best_cpu = std::min(best_cpu, cpu_seconds() - c0);
  }
  return {best, best_cpu};
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t K = argc > 1 ? std::atol(argv[1]) : 512;
  const int64_t C = argc > 2 ? std::atol(argv[2]) : 768;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  std::mt19937_64 g(15);
  const Mat M0 = randn(K, C, g), Mref = randn(K, C, g);
  const Mat Z100 = randn(100, C, g), facts = randn(20, C, g), zq = randn(1, C, g);
  PinvConfig exact, iter;
  iter.kind = PinvConfig::iterative;

  // A memory that already holds 2K facts (C well conditioned), as after a first batch.
  SequentialMemory base(M0, 1.0, Mref, exact);
  base.write(randn(2 * K, C, g));
  SequentialMemory mem = base;
  std::printf("{\"K\": %ld, \"C\": %ld", long(K), long(C));
  auto report = [](const std::string& name, std::pair<double, double> s, double div = 1) {
    std::printf(", \"%s\": %.6g, \"%s_cpu\": %.6g", name.c_str(), s.first / div, name.c_str(), s.second / div);
  };

  report("write1", best_of(rounds, [&] { mem = base; }, [&] {
           for (int64_t i = 0; i < facts.rows(); ++i) mem.write(facts.row(i));
         }), double(facts.rows()));
  SequentialMemory written = base;
  for (int64_t i = 0; i < facts.rows(); ++i) written.write(facts.row(i));
  report("forget1", best_of(rounds, [&] { mem = written; }, [&] {
           for (int64_t i = 0; i < facts.rows(); ++i) mem.forget(facts.row(i));
         }), double(facts.rows()));
  report("write100_facts", best_of(rounds, [&] { mem = base; }, [&] {
           for (int64_t i = 0; i < Z100.rows(); ++i) mem.write(Z100.row(i));
         }));
  report("write100_batch", best_of(rounds, [&] { mem = base; }, [&] { mem.write(Z100); }));
  Write w;
  report("oneshot100", best_of(rounds, [] {}, [&] { w = write(M0, Z100, exact); }));
  report("oneshot100_iter", best_of(rounds, [] {}, [&] { write(M0, Z100, iter); }));
  Read r;
  report("read1", best_of(rounds, [] {}, [&] { r = read(w.M, zq, exact); }));
  // Crossover of the two factor updates: an N-row episode by rank-one steps or by refactoring.
  for (int64_t n : {1, 4, 16, 64}) {
    const Mat Zn = Z100.topRows(n);
    for (int refactor = 0; refactor < 2; ++refactor) {
      const std::string name = "episode" + std::to_string(n) + (refactor ? "_refactor" : "_rank1");
      report(name, best_of(rounds, [&] {
               mem = base;
               mem.max_rank_update_rows = refactor ? 0 : n;
             }, [&] { mem.write(Zn); }));
    }
  }
  std::printf("}\n");
  return 0;
}
