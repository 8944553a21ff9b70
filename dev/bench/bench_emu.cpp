// Benchmark of the CUDA emulator (test/emu/): fiber switch cost against ucontext (what a user
// would otherwise reach for), per-launch overhead, and the barrier-free fast path against a plain
// loop that calls the same kernel body for every thread.
//
//   make build/bench/bench_emu && ./build/bench/bench_emu [--n 4194304] [--repeats 5]
#include <omp.h>
#include <ucontext.h>

#include <algorithm>
#include <boost/context/fiber.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "test/emu/emu_internal.h"

namespace ctx = boost::context;

static double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Best of `repeats` timings of fn(), in seconds.
template <class F>
static double best_of(int repeats, F fn) {
  double best = 1e30;
  for (int r = 0; r < repeats; r++) {
    double t0 = now_seconds();
    fn();
    best = std::min(best, now_seconds() - t0);
  }
  return best;
}

// ---- raw context switches: Boost.Context fiber vs ucontext, ping-pong between two contexts ----

static double boost_switch_ns(long iterations) {
  long count = 0;
  ctx::fiber f([&](ctx::fiber&& main) {
    for (;;) {
      count++;
      main = std::move(main).resume();
    }
    return std::move(main);
  });
  double t0 = now_seconds();
  for (long i = 0; i < iterations; i++) f = std::move(f).resume();
  double t = now_seconds() - t0;
  if (count != iterations) std::abort();
  return t / (2.0 * iterations) * 1e9;  // two one-way switches per round trip
}

static ucontext_t uc_main, uc_fiber;
static long uc_count = 0;
static void uc_body() {
  for (;;) {
    uc_count++;
    swapcontext(&uc_fiber, &uc_main);
  }
}
static double ucontext_switch_ns(long iterations) {
  std::vector<char> stack(256 * 1024);
  getcontext(&uc_fiber);
  uc_fiber.uc_stack.ss_sp = stack.data();
  uc_fiber.uc_stack.ss_size = stack.size();
  uc_fiber.uc_link = &uc_main;
  makecontext(&uc_fiber, uc_body, 0);
  uc_count = 0;
  double t0 = now_seconds();
  for (long i = 0; i < iterations; i++) swapcontext(&uc_main, &uc_fiber);
  double t = now_seconds() - t0;
  if (uc_count != iterations) std::abort();
  return t / (2.0 * iterations) * 1e9;
}

// ---- kernels ----

__global__ void barrier_loop_kernel(int rounds, float* out) {
  float v = threadIdx.x;
  for (int r = 0; r < rounds; r++) {
    v += 1.0f;
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

__global__ void empty_kernel() {}

__global__ void saxpy_kernel(float a, const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

int main(int argc, char** argv) {
  long n = 1 << 22;
  int repeats = 5;
  bool only_fast_path = false;
  int threads = 256;  // threads per block of the fast-path measurement  // --only-fast-path: skip the other sections (for profiling)
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf("usage: bench_emu [--n ELEMENTS] [--repeats R] [--threads PER_BLOCK] [--only-fast-path]\n"
                  "Measures the CUDA emulator: fiber switch cost (vs ucontext), launch overhead,\n"
                  "and the barrier-free fast path vs a plain loop over the same kernel body.\n");
      return 0;
    } else if (a == "--n" && i + 1 < argc) {
      n = std::atol(argv[++i]);
    } else if (a == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (a == "--only-fast-path") {
      only_fast_path = true;
    } else if (a == "--repeats" && i + 1 < argc) {
      repeats = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a.c_str());
      return 1;
    }
  }
  try {
    float* out;
    CUDA_CHECK(cudaMalloc(&out, 1024 * 1024 * sizeof(float)));
    if (!only_fast_path) {
    std::printf("== raw context switch (one way), Boost.Context fiber vs ucontext\n");
    const long iters = 2000000;
    double boost_ns = 1e30, uc_ns = 1e30;
    for (int r = 0; r < repeats; r++) {
      boost_ns = std::min(boost_ns, boost_switch_ns(iters));
      uc_ns = std::min(uc_ns, ucontext_switch_ns(iters));
    }
    std::printf("boost fiber: %.1f ns   ucontext: %.1f ns   ucontext/boost: %.1fx\n", boost_ns,
                uc_ns, uc_ns / boost_ns);

    std::printf("== emulator barrier cost (1 OS thread, 1 block of 256 threads, 1000 barriers)\n");
    omp_set_num_threads(1);
    const int rounds = 1000;
    emu::reset_stats();
    double t = best_of(repeats, [&] { LAUNCH(barrier_loop_kernel, 1, 256, 0, 0)(rounds, out); });
    emu::Stats st = emu::stats();
    const double resumes_per_launch = (double)st.fiber_switches / st.launches;
    std::printf("%.1f ns per fiber resume+yield (scheduler round trip, %.0f per launch), "
                "%.2f us per __syncthreads of a 256-thread block\n",
                t / resumes_per_launch * 1e9, resumes_per_launch, t / rounds * 1e6);

    std::printf("== launch overhead (1 OS thread)\n");
    const int launches = 20000;
    t = best_of(repeats, [&] {
      for (int i = 0; i < launches; i++) LAUNCH(empty_kernel, 1, 1, 0, 0)();
    });
    std::printf("empty kernel <<<1,1>>>: %.2f us per launch\n", t / launches * 1e6);
    t = best_of(repeats, [&] {
      for (int i = 0; i < launches / 10; i++) LAUNCH(empty_kernel, 1, 256, 0, 0)();
    });
    std::printf("empty kernel <<<1,256>>>: %.2f us per launch\n", t / (launches / 10) * 1e6);
    t = best_of(repeats, [&] {
      for (int i = 0; i < launches / 10; i++) LAUNCH(barrier_loop_kernel, 1, 256, 0, 0)(1, out);
    });
    std::printf("one-barrier kernel <<<1,256>>> (fiber path): %.2f us per launch\n",
                t / (launches / 10) * 1e6);

    }
    omp_set_num_threads(1);
    std::printf("== fast path: saxpy over %ld elements, %d threads per block (1 OS thread)\n", n,
                threads);
    std::vector<float> hx(n), hy(n);
    for (long i = 0; i < n; i++) {
      hx[i] = (float)(i % 97) * 0.01f;
      hy[i] = (float)(i % 89) * 0.02f;
    }
    float *x, *y;
    CUDA_CHECK(cudaMalloc(&x, n * sizeof(float)));
    CUDA_CHECK(cudaMalloc(&y, n * sizeof(float)));
    CUDA_CHECK(cudaMemcpy(x, hx.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(y, hy.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    const unsigned blocks = (unsigned)((n + threads - 1) / threads);
    auto run_emulator = [&] { LAUNCH(saxpy_kernel, blocks, threads, 0, 0)(1.0001f, x, y, (int)n); };
    // The plain loop: the same kernel function called for every (block, thread), indices set
    // directly, no emulator. Called through a function pointer as the emulator must (the kernel
    // is a run-time argument of the launch); the inlined variant lets g++ fuse the body.
    void (*volatile kernel_ptr)(float, const float*, float*, int) = saxpy_kernel;
    auto run_plain_loop = [&] {
      auto kernel = kernel_ptr;
      emu::tl_grid_dim = dim3(blocks);
      emu::tl_block_dim = dim3(threads);
      for (unsigned b = 0; b < blocks; b++) {
        emu::tl_block_idx = uint3{b, 0, 0};
        for (int tid = 0; tid < threads; tid++) {
          emu::tl_thread_idx = uint3{(unsigned)tid, 0, 0};
          kernel(1.0001f, x, y, (int)n);
        }
      }
    };
    auto run_plain_loop_inlined = [&] {
      emu::tl_grid_dim = dim3(blocks);
      emu::tl_block_dim = dim3(threads);
      for (unsigned b = 0; b < blocks; b++) {
        emu::tl_block_idx = uint3{b, 0, 0};
        for (int tid = 0; tid < threads; tid++) {
          emu::tl_thread_idx = uint3{(unsigned)tid, 0, 0};
          saxpy_kernel(1.0001f, x, y, (int)n);
        }
      }
    };
    // Alternate the contenders round by round (the machine is shared), keep the best of each.
    double t_emu = 1e30, t_loop = 1e30, t_loop_inlined = 1e30;
    for (int r = 0; r < 2 * repeats; r++) {
      t_emu = std::min(t_emu, best_of(1, run_emulator));
      t_loop = std::min(t_loop, best_of(1, run_plain_loop));
      t_loop_inlined = std::min(t_loop_inlined, best_of(1, run_plain_loop_inlined));
    }
    // And the C++ loop a CPU programmer would write (vectorized).
    const double t_native = best_of(repeats, [&] {
      for (long i = 0; i < n; i++) y[i] = 1.0001f * x[i] + y[i];
    });
    std::printf("emulator fast path: %.2f ms (%.1f ns per CUDA thread)   plain loop calling the "
                "kernel: %.2f ms   ratio: %.2fx\n",
                t_emu * 1e3, t_emu / n * 1e9, t_loop * 1e3, t_emu / t_loop);
    std::printf("(plain loop with the kernel inlined by g++: %.2f ms, emulator/inlined %.1fx)\n",
                t_loop_inlined * 1e3, t_emu / t_loop_inlined);
    std::printf("(native vectorized C++ loop: %.2f ms, emulator/native %.1fx)\n", t_native * 1e3,
                t_emu / t_native);
    omp_set_num_threads(omp_get_num_procs());
    const double t_emu_par = best_of(repeats, [&] {
      LAUNCH(saxpy_kernel, blocks, threads, 0, 0)(1.0001f, x, y, (int)n);
    });
    std::printf("emulator fast path on %d OS threads: %.2f ms\n", omp_get_num_procs(),
                t_emu_par * 1e3);
    cudaFree(x);
    cudaFree(y);
    cudaFree(out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
