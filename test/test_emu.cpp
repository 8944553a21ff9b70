// Tests of the CUDA emulator itself: sample kernels that must compute the right thing under every
// fiber schedule, and buggy kernels whose bug the emulator must catch.
#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"
#include "test/emu/emu_internal.h"
#include "test/emu/sample_kernels.cuh"
using Catch::Matchers::Contains;

// ---------------------------------------------------------------------------------------------
// Helpers: device buffers and the schedules every kernel is run under.

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(&ptr, count * sizeof(T))); }
  DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) {
    CUDA_CHECK(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n);
    CUDA_CHECK(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

static const std::vector<std::string> kSchedules = {"forward", "reverse", "random:1", "random:2",
                                                     "random:3"};

struct ScheduleReset {
  ~ScheduleReset() {
    emu::set_schedule("forward");
    emu::set_fast_path(true);
  }
};

static std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Sample kernels

// ---------------------------------------------------------------------------------------------
// Correct kernels give the right result under every schedule

TEST_CASE("emu: block reduction with shared memory and __syncthreads", "[emu]") {
  ScheduleReset reset;
  const int n = 1000, threads = 256, blocks = (n + threads - 1) / threads;
  auto x = random_floats(n, 1);
  DeviceBuffer<float> in(x), out(blocks);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(block_sum_kernel, blocks, threads, 0, 0)(in.ptr, out.ptr, n);
    auto sums = out.download();
    for (int b = 0; b < blocks; b++) {
      double expect = 0;
      for (int i = b * threads; i < std::min(n, (b + 1) * threads); i++) expect += x[i];
      INFO(schedule << " block " << b);
      REQUIRE(sums[b] == Approx(expect).margin(1e-4));
    }
  }
}

TEST_CASE("emu: warp reduction with shuffles and float atomics", "[emu]") {
  ScheduleReset reset;
  const int n = 32 * 40 - 7, threads = 128, blocks = (n + threads - 1) / threads;
  auto x = random_floats(n, 2);
  DeviceBuffer<float> in(x), warp_sums(blocks * threads / 32), total(1);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    total.upload({0.0f});
    LAUNCH(warp_sum_kernel, blocks, threads, 0, 0)(in.ptr, warp_sums.ptr, total.ptr, n);
    auto sums = warp_sums.download();
    double all = 0;
    for (int w = 0; w < blocks * threads / 32; w++) {
      double expect = 0;
      for (int i = w * 32; i < std::min(n, (w + 1) * 32); i++) expect += x[i];
      all += expect;
      INFO(schedule << " warp " << w);
      REQUIRE(sums[w] == Approx(expect).margin(1e-5));
    }
    REQUIRE(total.download()[0] == Approx(all).margin(1e-3));
  }
}

TEST_CASE("emu: shared-memory tiled matmul with ragged edges", "[emu]") {
  ScheduleReset reset;
  const int M = 37, N = 45, K = 29;
  auto a = random_floats(M * K, 3), b = random_floats(K * N, 4);
  DeviceBuffer<float> A(a), B(b), C(M * N);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(tiled_matmul_kernel, dim3((N + TILE - 1) / TILE, (M + TILE - 1) / TILE), dim3(TILE, TILE),
           0, 0)(A.ptr, B.ptr, C.ptr, M, N, K);
    auto c = C.download();
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double expect = 0;
        for (int k = 0; k < K; k++) expect += (double)a[i * K + k] * b[k * N + j];
        INFO(schedule << " C[" << i << "," << j << "]");
        REQUIRE(c[i * N + j] == Approx(expect).margin(1e-4));
      }
  }
}

TEST_CASE("emu: atomic histogram across parallel blocks", "[emu]") {
  ScheduleReset reset;
  const int n = 50000, nbins = 37;
  std::mt19937 rng(5);
  std::vector<int> values(n);
  std::vector<unsigned> expect(nbins, 0);
  for (auto& v : values) {
    v = (int)(rng() % nbins);
    expect[v]++;
  }
  DeviceBuffer<int> d_values(values);
  DeviceBuffer<unsigned> counts(nbins);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    CUDA_CHECK(cudaMemset(counts.ptr, 0, nbins * sizeof(unsigned)));
    LAUNCH(histogram_kernel, 24, 128, nbins * sizeof(unsigned), 0)(d_values.ptr, n, counts.ptr,
                                                                   nbins);
    INFO(schedule);
    REQUIRE(counts.download() == expect);
  }
}

TEST_CASE("emu: int, unsigned, float and bf16 atomics from parallel blocks", "[emu]") {
  ScheduleReset reset;
  DeviceBuffer<int> count(1);
  DeviceBuffer<unsigned> max_index(1);
  DeviceBuffer<float> fsum(1);
  DeviceBuffer<__nv_bfloat16> bsum(1);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    count.upload({0});
    max_index.upload({0u});
    fsum.upload({0.0f});
    bsum.upload({__float2bfloat16(0.0f)});
    LAUNCH(atomic_mix_kernel, 4, 64, 0, 0)(count.ptr, max_index.ptr, fsum.ptr, bsum.ptr);
    INFO(schedule);
    REQUIRE(count.download()[0] == 256);
    REQUIRE(max_index.download()[0] == 255u);
    REQUIRE(fsum.download()[0] == 128.0f);
    REQUIRE(__bfloat162float(bsum.download()[0]) == 256.0f);
  }
}

TEST_CASE("emu: cooperative_groups tiles with reduce(plus) and reduce(greater)", "[emu]") {
  ScheduleReset reset;
  const int rows = 21, cols = 70;
  auto x = random_floats(rows * cols, 6, -5.f, 5.f);
  DeviceBuffer<float> in(x), row_max(rows), row_sum(rows);
  auto check_rows = [&](const std::string& what) {
    auto m = row_max.download(), s = row_sum.download();
    for (int r = 0; r < rows; r++) {
      float em = -INFINITY;
      double es = 0;
      for (int c = 0; c < cols; c++) {
        em = std::max(em, x[r * cols + c]);
        es += x[r * cols + c];
      }
      INFO(what << " row " << r);
      REQUIRE(m[r] == em);
      REQUIRE(s[r] == Approx(es).margin(1e-4));
    }
  };
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(row_max_sum_kernel<32>, (rows + 3) / 4, 128, 0, 0)(in.ptr, row_max.ptr, row_sum.ptr,
                                                              rows, cols);
    check_rows(schedule + " tile 32");
    CUDA_CHECK(cudaMemset(row_max.ptr, 0, rows * sizeof(float)));
    LAUNCH(row_max_sum_kernel<8>, (rows + 15) / 16, 128, 0, 0)(in.ptr, row_max.ptr, row_sum.ptr,
                                                               rows, cols);
    check_rows(schedule + " tile 8");
  }
}

TEST_CASE("emu: barrier-free kernels take the fast path; others use fibers", "[emu]") {
  ScheduleReset reset;
  const int n = 3000;
  auto x = random_floats(n, 7), y = random_floats(n, 8);
  DeviceBuffer<float> dx(x), dy(y);
  emu::reset_stats();
  LAUNCH(saxpy_kernel, (n + 255) / 256, 256, 0, 0)(2.0f, dx.ptr, dy.ptr, n);
  auto out = dy.download();
  for (int i = 0; i < n; i++) REQUIRE(out[i] == 2.0f * x[i] + y[i]);
  emu::Stats s = emu::stats();
  REQUIRE(s.launches == 1);
  REQUIRE(s.blocks_plain == (uint64_t)(n + 255) / 256);
  REQUIRE(s.blocks_fibers == 0);

  DeviceBuffer<float> sums(4);
  emu::reset_stats();
  LAUNCH(block_sum_kernel, 4, 256, 0, 0)(dx.ptr, sums.ptr, 1024);
  s = emu::stats();
  REQUIRE(s.blocks_fibers == 4);
  REQUIRE(s.fiber_switches >= 4 * 256 * 9);  // 9 barriers per thread
}

// ---------------------------------------------------------------------------------------------
// Warp intrinsics, exact semantics

TEST_CASE("emu: warp shuffles, votes and reductions follow CUDA's lane rules", "[emu]") {
  ScheduleReset reset;
  DeviceBuffer<int> out(64 * 10);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(warp_ops_kernel, 1, 64, 0, 0)(out.ptr);
    auto o = out.download();
    unsigned ballot = 0;
    for (int l = 0; l < 32; l++)
      if (l % 3 == 0) ballot |= 1u << l;
    for (int t = 0; t < 64; t++) {
      const int lane = t % 32;
      INFO(schedule << " thread " << t);
      REQUIRE(o[t * 10 + 0] == 30);
      REQUIRE(o[t * 10 + 1] == (lane / 8 * 8 + 3) * 10);
      REQUIRE(o[t * 10 + 2] == (lane % 16 >= 2 ? lane - 2 : lane));
      REQUIRE(o[t * 10 + 3] == (lane % 8 + 4 < 8 ? lane + 4 : lane));
      REQUIRE(o[t * 10 + 4] == (lane ^ 5));
      REQUIRE((unsigned)o[t * 10 + 5] == ballot);
      REQUIRE(o[t * 10 + 6] == 1);
      REQUIRE(o[t * 10 + 7] == 0);
      REQUIRE(o[t * 10 + 8] == 31 * 32 / 2);
      REQUIRE(o[t * 10 + 9] == 16);
    }
  }
}

TEST_CASE("emu: 3-D grids and blocks index every thread exactly once", "[emu]") {
  ScheduleReset reset;
  const int blocks = 3 * 4 * 5, threads = 4 * 2 * 3;
  DeviceBuffer<int> out(2 * blocks * threads);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    CUDA_CHECK(cudaMemset(out.ptr, 0xFF, out.n * sizeof(int)));
    LAUNCH(indices_3d_kernel, dim3(3, 4, 5), dim3(4, 2, 3), 0, 0)(out.ptr);
    auto o = out.download();
    for (int b = 0; b < blocks; b++)
      for (int t = 0; t < threads; t++) {
        INFO(schedule << " block " << b << " thread " << t);
        REQUIRE(o[2 * (b * threads + t)] == b);
        REQUIRE(o[2 * (b * threads + t) + 1] == t);
      }
  }
}

TEST_CASE("emu: __syncwarp orders warp-synchronous shared memory code", "[emu]") {
  ScheduleReset reset;
  DeviceBuffer<int> out(1);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(syncwarp_reduce_kernel, 1, 32, 0, 0)(out.ptr);
    INFO(schedule);
    REQUIRE(out.download()[0] == 32 * 33 / 2);
  }
  REQUIRE_THROWS_WITH(emu::set_schedule("sideways"), Contains("EMU_SCHEDULE"));
}

// ---------------------------------------------------------------------------------------------
// Bugs the emulator must catch

TEST_CASE("emu catches: a missing __syncthreads, through NaN shared memory and schedules", "[emu]") {
  ScheduleReset reset;
  const int n = 256;
  auto x = random_floats(n, 9, 0.5f, 1.0f);
  double expect = std::accumulate(x.begin(), x.end(), 0.0);
  DeviceBuffer<float> in(x), out(1);
  int detected = 0;
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(block_sum_no_sync_kernel, 1, 256, 0, 0)(in.ptr, out.ptr, n);
    float got = out.download()[0];
    bool wrong = std::isnan(got) || std::fabs(got - expect) > 1e-3;
    if (wrong) detected++;
    if (schedule.rfind("random", 0) == 0) {
      INFO(schedule << ": " << got << " vs " << expect);
      REQUIRE(wrong);  // every randomized order exposes the race
    }
  }
  REQUIRE(detected >= 4);
  // Same kernel with its barriers: right under every order.
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(block_sum_kernel, 1, 256, 0, 0)(in.ptr, out.ptr, n);
    REQUIRE(out.download()[0] == Approx(expect).margin(1e-3));
  }
}

TEST_CASE("emu catches: a missing __syncthreads that only scheduling reveals", "[emu]") {
  ScheduleReset reset;
  auto x = random_floats(128, 10, 1.0f, 2.0f);
  DeviceBuffer<float> in(x), out(128);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(rotate_missing_sync_kernel, 1, 128, 0, 0)(in.ptr, out.ptr);
    auto o = out.download();
    int stale = 0;
    for (int t = 0; t < 128; t++) {
      REQUIRE(!std::isnan(o[t]));  // no NaN: the array was initialized
      if (o[t] != x[(t + 1) % 128]) stale++;
    }
    INFO(schedule);
    REQUIRE(stale > 0);
  }
}

TEST_CASE("emu catches: divergent barriers, naming kernel and block", "[emu]") {
  ScheduleReset reset;
  DeviceBuffer<float> out(64);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    REQUIRE_THROWS_WITH(LAUNCH(divergent_exit_kernel, 3, 64, 0, 0)(out.ptr),
                        Contains("barrier divergence") && Contains("divergent_exit_kernel") &&
                            Contains("block (") && Contains("exited"));
    REQUIRE_THROWS_WITH(LAUNCH(divergent_sites_kernel, 2, 64, 0, 0)(out.ptr),
                        Contains("barrier divergence") && Contains("divergent_sites_kernel") &&
                            Contains("sample_kernels.cuh"));
  }
  // The emulator keeps working after an error.
  LAUNCH(saxpy_kernel, 1, 64, 0, 0)(1.0f, out.ptr, out.ptr, 64);
}

TEST_CASE("emu catches: out-of-bounds global writes through guard zones", "[emu]") {
  ScheduleReset reset;
  const int n = 100;
  DeviceBuffer<float> out(n);
  REQUIRE_THROWS_WITH(LAUNCH(off_by_one_kernel, 1, 128, 0, 0)(out.ptr, n),
                      Contains("off_by_one_kernel") && Contains("out-of-bounds write") &&
                          Contains("offset 400") && Contains("past its end"));
  REQUIRE_THROWS_WITH(LAUNCH(negative_index_kernel, 1, 128, 0, 0)(out.ptr, n),
                      Contains("negative_index_kernel") && Contains("before the buffer"));
  // In-bounds writes pass, and the zones were repaired after the report.
  LAUNCH(off_by_one_kernel, 1, 128, 0, 0)(out.ptr, n - 1);
  // A host-side overrun is reported when the buffer is freed (an error code, not an exception:
  // cudaFree runs in destructors).
  float* victim;
  CUDA_CHECK(cudaMalloc(&victim, 10 * sizeof(float)));
  victim[10] = 0.0f;
  REQUIRE(cudaFree(victim) == cudaErrorIllegalAddress);
  REQUIRE(cudaGetLastError() == cudaErrorIllegalAddress);
  // cudaMemcpy past the end of an allocation is caught too.
  std::vector<float> big(n + 1, 0.0f);
  REQUIRE_THROWS_WITH(cudaMemcpy(out.ptr, big.data(), big.size() * sizeof(float),
                                 cudaMemcpyHostToDevice),
                      Contains("cudaMemcpy") && Contains("outside"));
}

TEST_CASE("emu catches: reads of uninitialized shared memory (NaN propagates)", "[emu]") {
  ScheduleReset reset;
  DeviceBuffer<float> out(64);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    LAUNCH(uninitialized_shared_kernel, 2, 64, 0, 0)(out.ptr);
    auto o = out.download();
    for (int t = 0; t < 64; t++) {
      INFO(schedule << " thread " << t);
      if (t < 32)
        REQUIRE(o[t] == 2.0f);
      else
        REQUIRE(std::isnan(o[t]));
    }
  }
  // Template instances too (their statics live in comdat sections), and dynamic shared memory.
  LAUNCH(uninitialized_shared_template_kernel<float>, 1, 32, 0, 0)(out.ptr);
  auto o = out.download();
  for (int t = 0; t < 32; t++) REQUIRE(std::isnan(o[t]));
  LAUNCH(uninitialized_shared_template_kernel<__nv_bfloat16>, 1, 32, 0, 0)(out.ptr);
  o = out.download();
  for (int t = 0; t < 32; t++) REQUIRE(std::isnan(o[t]));
  LAUNCH(uninitialized_dynamic_shared_kernel, 1, 64, 64 * sizeof(float), 0)(out.ptr);
  o = out.download();
  for (int t = 0; t < 64; t++) REQUIRE(std::isnan(o[t]));
  for (int rep = 0; rep < 2; rep++) {  // also after another kernel ran on the same OS thread
    LAUNCH(helper_shared_kernel, 1, 32, 0, 0)(out.ptr);
    o = out.download();
    for (int t = 0; t < 32; t++) REQUIRE((t < 16 ? std::isnan(o[t]) : o[t] == 3.0f));
    LAUNCH(uninitialized_shared_kernel, 1, 64, 0, 0)(out.ptr);
  }
  REQUIRE(emu::static_shared_bytes() > 0);
}

TEST_CASE("emu catches: shuffles with a mismatched mask", "[emu]") {
  ScheduleReset reset;
  DeviceBuffer<float> out(64);
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    INFO(schedule);
    REQUIRE_THROWS_WITH(LAUNCH(half_warp_shuffle_kernel, 1, 64, 0, 0)(out.ptr),
                        Contains("warp mask mismatch") && Contains("half_warp_shuffle_kernel") &&
                            Contains("__shfl_xor_sync") && Contains("has exited"));
    REQUIRE_THROWS_WITH(LAUNCH(different_masks_kernel, 1, 32, 0, 0)(out.ptr),
                        Contains("different_masks_kernel") && Contains("mask"));
    REQUIRE_THROWS_WITH(LAUNCH(read_outside_mask_kernel, 1, 32, 0, 0)(out.ptr),
                        Contains("not in the mask"));
    REQUIRE_THROWS_WITH(LAUNCH(mask_without_self_kernel, 1, 32, 0, 0)(out.ptr),
                        Contains("does not include itself"));
    REQUIRE_THROWS_WITH(LAUNCH(short_block_full_mask_kernel, 1, 48, 0, 0)(out.ptr),
                        Contains("do not exist"));
  }
}

// ---------------------------------------------------------------------------------------------
// Launch limits and device properties

TEST_CASE("emu: launch limits are enforced as on an H100", "[emu]") {
  ScheduleReset reset;
  DeviceBuffer<float> out(1024);
  REQUIRE_THROWS_WITH(LAUNCH(saxpy_kernel, 1, dim3(64, 32), 0, 0)(1.0f, out.ptr, out.ptr, 1),
                      Contains("saxpy_kernel") && Contains("2048 threads per block") &&
                          Contains("cudaErrorInvalidConfiguration"));
  REQUIRE_THROWS_WITH(LAUNCH(saxpy_kernel, 1, 1025, 0, 0)(1.0f, out.ptr, out.ptr, 1),
                      Contains("exceeds the maximum (1024,1024,64)"));
  REQUIRE_THROWS_WITH(LAUNCH(saxpy_kernel, dim3(1, 70000), 32, 0, 0)(1.0f, out.ptr, out.ptr, 1),
                      Contains("grid"));
  REQUIRE_THROWS_WITH(LAUNCH(saxpy_kernel, 0, 32, 0, 0)(1.0f, out.ptr, out.ptr, 1),
                      Contains("grid dimension 0"));
  // 64 KiB of dynamic shared memory needs the opt-in attribute, up to 227 KiB.
  const size_t smem = 64 * 1024;
  REQUIRE_THROWS_WITH(LAUNCH(big_smem_kernel, 1, 1024, smem, 0)(out.ptr),
                      Contains("dynamic shared memory") && Contains("cudaFuncSetAttribute"));
  REQUIRE(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               (int)smem) == cudaSuccess);
  LAUNCH(big_smem_kernel, 1, 1024, smem, 0)(out.ptr);
  auto o = out.download();
  for (int t = 0; t < 1024; t++) REQUIRE(o[t] == 1023 - t);
  REQUIRE(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               228 * 1024) == cudaErrorInvalidValue);
  REQUIRE(cudaGetLastError() == cudaErrorInvalidValue);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  // Static shared memory counts toward the 48 KiB as well.
  LAUNCH(big_static_smem_kernel, 1, 64, 0, 0)(out.ptr);
  REQUIRE(out.download()[0] == 1.0f);
  REQUIRE_THROWS_WITH(LAUNCH(big_static_smem_kernel, 1, 64, 16 * 1024, 0)(out.ptr),
                      Contains("+40960 static") && Contains("49152"));
  REQUIRE_THROWS_WITH(LAUNCH(smem_overflow_kernel, 1, 32, 32 * sizeof(float), 0)(out.ptr),
                      Contains("past the end") && Contains("dynamic shared memory"));

  cudaDeviceProp prop;
  REQUIRE(cudaGetDeviceProperties(&prop, 0) == cudaSuccess);
  REQUIRE(prop.sharedMemPerBlock == 48 * 1024);
  REQUIRE(prop.sharedMemPerMultiprocessor == 228 * 1024);
  REQUIRE(prop.maxThreadsPerBlock == 1024);
  REQUIRE(prop.warpSize == 32);
  REQUIRE(prop.major == 9);
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  REQUIRE(count >= 1);
  REQUIRE(cudaFree(reinterpret_cast<void*>(0x1234)) == cudaErrorInvalidValue);
  REQUIRE(cudaGetLastError() == cudaErrorInvalidValue);
}

TEST_CASE("emu: CUDA_CHECK throws with file, line and the error name", "[emu]") {
  REQUIRE_THROWS_WITH([] { CUDA_CHECK(cudaSetDevice(99)); }(),
                      Contains("test_emu.cpp") && Contains("cudaErrorInvalidDevice"));
  cudaGetLastError();
}

TEST_CASE("emu: a created stream runs its work when something waits for it; events time it", "[emu]") {
  cudaStream_t stream, other;
  cudaEvent_t start, stop, done;
  REQUIRE(cudaStreamCreate(&stream) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&other, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaEventCreate(&start) == cudaSuccess);
  REQUIRE(cudaEventCreate(&stop) == cudaSuccess);
  REQUIRE(cudaEventCreate(&done) == cudaSuccess);
  const int n = 4096;
  auto x = random_floats(n, 11);
  DeviceBuffer<float> dx(x), dy(n);
  REQUIRE(cudaMemset(dy.ptr, 0, n * sizeof(float)) == cudaSuccess);
  REQUIRE(cudaEventRecord(start, stream) == cudaSuccess);
  LAUNCH(saxpy_kernel, n / 256, 256, 0, stream)(3.0f, dx.ptr, dy.ptr, n);
  REQUIRE(cudaEventRecord(stop, stream) == cudaSuccess);
  // A read on the default stream without a wait sees the memory before the queued kernel (a GPU
  // would race): a missing wait shows deterministically.
  std::vector<float> y(n, -1.0f);
  REQUIRE(cudaMemcpy(y.data(), dy.ptr, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (int i = 0; i < n; i++) REQUIRE(y[i] == 0.0f);
  // A second created stream waiting for the event runs the kernel only when it runs itself.
  REQUIRE(cudaStreamWaitEvent(other, stop, 0) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(dx.ptr, 0, sizeof(float), other) == cudaSuccess);  // after the kernel read dx
  REQUIRE(cudaEventRecord(done, other) == cudaSuccess);
  REQUIRE(cudaMemcpy(y.data(), dy.ptr, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  REQUIRE(y[0] == 0.0f);
  // The default stream waiting for `done` runs `other`, whose wait runs `stream` up to `stop`.
  REQUIRE(cudaStreamWaitEvent(0, done, 0) == cudaSuccess);
  REQUIRE(cudaMemcpy(y.data(), dy.ptr, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  for (int i = 0; i < n; i++) REQUIRE(y[i] == 3.0f * x[i]);
  float first = -1;
  REQUIRE(cudaMemcpy(&first, dx.ptr, sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  REQUIRE(first == 0.0f);
  float ms = -1;
  REQUIRE(cudaEventElapsedTime(&ms, start, stop) == cudaSuccess);
  REQUIRE(ms >= 0.0f);
  // A copy queued on a stream reads its source when the stream runs: synchronize, then read.
  REQUIRE(cudaMemcpyAsync(y.data(), dx.ptr, n * sizeof(float), cudaMemcpyDeviceToHost, stream) == cudaSuccess);
  REQUIRE(y[0] == 3.0f * x[0]);
  REQUIRE(cudaStreamSynchronize(stream) == cudaSuccess);
  REQUIRE(y[0] == 0.0f);
  REQUIRE(y[1] == x[1]);
  // Device synchronize runs every stream.
  REQUIRE(cudaMemsetAsync(dy.ptr, 0, n * sizeof(float), other) == cudaSuccess);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  REQUIRE(cudaMemcpy(y.data(), dy.ptr, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
  REQUIRE(y[n - 1] == 0.0f);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaEventDestroy(done);
  cudaStreamDestroy(stream);
  cudaStreamDestroy(other);
}

// ---------------------------------------------------------------------------------------------
// Host fallbacks of the bf16 intrinsics: one rounding, to nearest even

static float bf16_round_reference(double x) {
  // Round a double to bf16 directly: keep 8 significant bits, ties to even.
  if (x == 0 || !std::isfinite(x)) return (float)x;
  int e;
  double m = std::frexp(x, &e);  // x = m * 2^e, 0.5 <= |m| < 1
  double scaled = std::ldexp(m, 8);
  double r = std::nearbyint(scaled);  // default rounding mode: ties to even
  return (float)std::ldexp(r, e - 8);
}

TEST_CASE("emu: bf16 fma and math fallbacks round like the device", "[emu]") {
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> dist(-4.f, 4.f);
  int checked = 0;
  for (int i = 0; i < 20000; i++) {
    __nv_bfloat16 a = __float2bfloat16(dist(rng)), b = __float2bfloat16(dist(rng)),
                  c = __float2bfloat16(dist(rng) * 1e-3f);
    double exact = (double)__bfloat162float(a) * __bfloat162float(b) + __bfloat162float(c);
    REQUIRE(__bfloat162float(__hfma(a, b, c)) == bf16_round_reference(exact));
    __nv_bfloat16 p = __float2bfloat16(std::fabs(dist(rng)) + 0.01f);
    REQUIRE(__bfloat162float(hsqrt(p)) == __bfloat162float(__float2bfloat16(std::sqrt(__bfloat162float(p)))));
    REQUIRE(__bfloat162float(hexp(a)) == __bfloat162float(__float2bfloat16(std::exp(__bfloat162float(a)))));
    REQUIRE(__bfloat162float(hrsqrt(p)) ==
            __bfloat162float(__float2bfloat16(1.0f / std::sqrt(__bfloat162float(p)))));
    checked++;
  }
  REQUIRE(checked == 20000);
  // bf16 atomics accumulate with rounding to bf16 at each step (as the device does).
  __nv_bfloat16 acc = __float2bfloat16(256.0f);
  atomicAdd(&acc, __float2bfloat16(1.0f));  // 257 is not representable: ties to even -> 256
  REQUIRE(__bfloat162float(acc) == 256.0f);
}

TEST_CASE("emu: host threads may launch concurrently (ranks as threads)", "[emu]") {
  ScheduleReset reset;
  emu::set_schedule("random:4");
  const int n = 2048;
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int r = 0; r < 4; r++)
    threads.emplace_back([&, r] {
      try {
        std::vector<float> x(n, 1.0f + r);
        float *in, *out;
        CUDA_CHECK(cudaMalloc(&in, n * sizeof(float)));
        CUDA_CHECK(cudaMalloc(&out, (n / 256) * sizeof(float)));
        CUDA_CHECK(cudaMemcpy(in, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
        for (int rep = 0; rep < 20; rep++) LAUNCH(block_sum_kernel, n / 256, 256, 0, 0)(in, out, n);
        std::vector<float> sums(n / 256);
        CUDA_CHECK(cudaMemcpy(sums.data(), out, sums.size() * sizeof(float), cudaMemcpyDeviceToHost));
        bool good = true;
        for (float v : sums) good = good && v == 256.0f * (1.0f + r);
        ok[r] = good;
        cudaFree(in);
        cudaFree(out);
      } catch (const std::exception&) {
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < 4; r++) REQUIRE(ok[r] == 1);
}

// ---------------------------------------------------------------------------------------------
// Warp matrix functions (nvcuda::wmma)

static std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& x) {
  std::vector<__nv_bfloat16> y(x.size());
  for (size_t i = 0; i < x.size(); i++) y[i] = __float2bfloat16(x[i]);
  return y;
}

struct WmmaLayoutReset {
  ~WmmaLayoutReset() { emu::set_wmma_layout(1); }
};

template <class LayoutA, class LayoutB>
static void check_wmma_gemm(bool a_row, bool b_row) {
  const int M = 32, N = 64, K = 48, lda = a_row ? K + 16 : M + 8, ldb = b_row ? N + 8 : K + 8, ldc = N + 4;
  auto a = random_floats((size_t)(a_row ? M : K) * lda, 11), b = random_floats((size_t)(b_row ? K : N) * ldb, 12),
       c = random_floats((size_t)M * ldc, 13);
  auto a16 = to_bf16(a), b16 = to_bf16(b);
  DeviceBuffer<__nv_bfloat16> A(a16), B(b16);
  DeviceBuffer<float> C(c), D(c.size());
  // The reference: fp32 products of the bf16 values (exact), summed in double.
  std::vector<double> expect((size_t)M * N);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = c[(size_t)m * ldc + n];
      for (int k = 0; k < K; k++) {
        const float av = __bfloat162float(a16[a_row ? (size_t)m * lda + k : (size_t)k * lda + m]);
        const float bv = __bfloat162float(b16[b_row ? (size_t)k * ldb + n : (size_t)n * ldb + k]);
        s += (double)av * bv;
      }
      expect[(size_t)m * N + n] = 0.5 * s;
    }
  std::vector<float> first;
  const std::vector<std::pair<std::string, uint64_t>> runs = {{"forward", 1}, {"reverse", 2}, {"random:5", 3}};
  for (const auto& [schedule, layout] : runs) {
    emu::set_schedule(schedule);
    emu::set_wmma_layout(layout);
    auto k = wmma_gemm_kernel<LayoutA, LayoutB>;
    LAUNCH(k, dim3(N / 32, M / 16), 64, 0, 0)(A.ptr, B.ptr, C.ptr, D.ptr, K, lda, ldb, ldc);
    auto d = D.download();
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) {
        INFO(schedule << " layout " << layout << " D[" << m << "," << n << "]");
        REQUIRE(d[(size_t)m * ldc + n] == Approx(expect[(size_t)m * N + n]).margin(1e-5));
      }
    if (first.empty()) first = d;
    // Independent of the fiber order and of the element layout, bit for bit.
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) REQUIRE(d[(size_t)m * ldc + n] == first[(size_t)m * ldc + n]);
  }
}

TEST_CASE("emu: wmma bf16 GEMM equals the plain product in every operand layout", "[emu][wmma]") {
  ScheduleReset reset;
  WmmaLayoutReset layout_reset;
  check_wmma_gemm<wmma::row_major, wmma::row_major>(true, true);
  check_wmma_gemm<wmma::row_major, wmma::col_major>(true, false);
  check_wmma_gemm<wmma::col_major, wmma::row_major>(false, true);
  check_wmma_gemm<wmma::col_major, wmma::col_major>(false, false);
}

TEST_CASE("emu: wmma fragment layout is permuted, seed-dependent, and layout-dependent code fails", "[emu][wmma]") {
  WmmaLayoutReset layout_reset;
  std::vector<float> tile(256);
  for (int e = 0; e < 256; e++) tile[e] = (float)e;  // exact in bf16
  DeviceBuffer<__nv_bfloat16> A(to_bf16(tile));
  DeviceBuffer<float> out(256);
  std::vector<std::vector<float>> seen;
  for (uint64_t seed : {1, 2}) {
    emu::set_wmma_layout(seed);
    LAUNCH(wmma_naive_layout_kernel, 1, 32, 0, 0)(A.ptr, out.ptr);
    auto o = out.download();
    // Every element is somewhere (a bijection) ...
    auto sorted = o;
    std::sort(sorted.begin(), sorted.end());
    REQUIRE(sorted == tile);
    // ... but not where naive code expects it: most elements are elsewhere.
    int in_place = 0;
    for (int e = 0; e < 256; e++) in_place += o[e] == tile[e];
    INFO("seed " << seed << ": " << in_place << " of 256 elements where the naive layout puts them");
    REQUIRE(in_place < 16);
    seen.push_back(o);
  }
  REQUIRE(seen[0] != seen[1]);  // the layout changes with the seed

  // Reusing an accumulator as a matrix_a fragment: (A B) I != A B under the emulator.
  auto a = random_floats(256, 21), b = random_floats(256, 22);
  std::vector<float> eye(256, 0.0f);
  for (int i = 0; i < 16; i++) eye[i * 17] = 1.0f;
  DeviceBuffer<__nv_bfloat16> dA(to_bf16(a)), dB(to_bf16(b)), dI(to_bf16(eye));
  LAUNCH(wmma_acc_as_a_kernel, 1, 32, 0, 0)(dA.ptr, dB.ptr, dI.ptr, out.ptr);
  auto o = out.download();
  double err = 0, norm = 0;
  for (int m = 0; m < 16; m++)
    for (int n = 0; n < 16; n++) {
      double s = 0;
      for (int k = 0; k < 16; k++) s += (double)__bfloat162float(__float2bfloat16(a[m * 16 + k])) *
                                        __bfloat162float(__float2bfloat16(b[k * 16 + n]));
      err += (o[m * 16 + n] - s) * (o[m * 16 + n] - s);
      norm += s * s;
    }
  REQUIRE(err > 0.1 * norm);
}

TEST_CASE("emu: wmma misuse is caught", "[emu][wmma]") {
  ScheduleReset reset;
  DeviceBuffer<__nv_bfloat16> A(to_bf16(random_floats(1024, 31)));
  DeviceBuffer<float> out(64);
  REQUIRE_THROWS_WITH(LAUNCH(wmma_half_warp_kernel, 1, 32, 0, 0)(A.ptr, out.ptr),
                      Contains("load_matrix_sync") && Contains("need all 32 lanes"));
  REQUIRE_THROWS_WITH(LAUNCH(wmma_load_kernel, 1, 16, 0, 0)(A.ptr, 0, 16, 0, out.ptr),
                      Contains("need all 32 lanes") && Contains("has 16 threads"));
  REQUIRE_THROWS_WITH(LAUNCH(wmma_load_kernel, 1, 32, 0, 0)(A.ptr, 8, 16, 0, out.ptr),
                      Contains("32-byte) aligned"));
  REQUIRE_THROWS_WITH(LAUNCH(wmma_load_kernel, 1, 32, 0, 0)(A.ptr, 0, 20, 0, out.ptr),
                      Contains("ldm 20 must be") && Contains("multiple of 8"));
  REQUIRE_THROWS_WITH(LAUNCH(wmma_load_kernel, 1, 32, 0, 0)(A.ptr, 0, 16, 16, out.ptr),
                      Contains("all lanes must pass the same"));
  LAUNCH(wmma_load_kernel, 1, 64, 0, 0)(A.ptr, 16, 24, 0, out.ptr);  // correct: two warps, same call
  for (const auto& schedule : kSchedules) {
    emu::set_schedule(schedule);
    REQUIRE_THROWS_WITH(LAUNCH(wmma_half_warp_kernel, 2, 64, 0, 0)(A.ptr, out.ptr), Contains("need all 32 lanes"));
  }
}
