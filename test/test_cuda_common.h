// Helpers for the CUDA tests (test/test_cuda*.cpp), on the emulator (g++ -DCUDA_EMULATION, make
// test) and on a real GPU (nvcc, make test-gpu), from the same source: device buffers, bf16 rounding,
// normalized MSE, running a launch under several fiber orders, and a record of every kernel
// launched, so that a test can fail when some __global__ kernel of kernels/cuda/ is never run.
//
// Include this before any kernels/cuda/*.cuh: it wraps LAUNCH to record the kernel's name.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"

// ---- launch record ----
inline std::set<std::string>& launched_kernels() {
  static std::set<std::string> names;
  return names;
}
inline std::mutex& launched_kernels_mutex() {
  static std::mutex m;
  return m;
}
// "attention_forward_kernel<64>" -> "attention_forward_kernel"
inline void record_launch(const char* name) {
  std::string s(name);
  const size_t lt = s.find('<');
  if (lt != std::string::npos) s.resize(lt);
  std::lock_guard<std::mutex> lock(launched_kernels_mutex());
  launched_kernels().insert(s);
}
#undef LAUNCH
#if defined(__CUDACC__)
// The real-GPU build of the same tests (make test-gpu): `record(name), kernel<<<...>>>(args)`.
#define LAUNCH(kernel, grid, block, smem, stream) \
  record_launch(#kernel), kernel<<<grid, block, smem, stream>>>
// Fiber orders exist only on the emulator; on a GPU run_all_schedules still runs every launch
// three times and requires bit-identical results (the kernels are deterministic).
namespace emu {
inline void set_schedule(const std::string&) {}
inline void set_wmma_layout(uint64_t) {}
}  // namespace emu
#else
#define LAUNCH(kernel, grid, block, smem, stream)                                       \
  (record_launch(#kernel),                                                             \
   ::emu::make_launcher(kernel, #kernel, dim3(grid), dim3(block), (size_t)(smem),       \
                        (cudaStream_t)(stream), __FILE__, __LINE__))
#endif

typedef __nv_bfloat16 bf16;

// ---- device buffers ----
template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) : n(count) {
    CUDA_CHECK(cudaMalloc((void**)&ptr, (n > 0 ? n : 1) * sizeof(T)));
    CUDA_CHECK(cudaMemset(ptr, 0, (n > 0 ? n : 1) * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& host) {
    CUDA_CHECK(cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n);
    CUDA_CHECK(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  operator T*() const { return ptr; }
};

// ---- bf16 on the host ----
inline std::vector<bf16> to_bf16(const std::vector<float>& x) {
  std::vector<bf16> y(x.size());
  for (size_t i = 0; i < x.size(); i++) y[i] = __float2bfloat16(x[i]);
  return y;
}
inline std::vector<float> to_f32(const std::vector<bf16>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); i++) y[i] = __bfloat162float(x[i]);
  return y;
}
inline std::vector<float> round_bf16(const std::vector<float>& x) { return to_f32(to_bf16(x)); }

inline std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}
// Values that are exactly representable in bf16 (so both backends see identical inputs).
inline std::vector<float> random_bf16_values(size_t n, uint64_t seed, float scale = 1.0f) {
  return round_bf16(random_vector(n, seed, scale));
}

// Normalized mean squared error, sum (a - ref)^2 / sum ref^2, as ggml's test-backend-ops. One
// bf16 rounding (8 significant bits: an error uniform within +-2^-8 of a value in [1, 2)) gives
// about (2^-8)^2 / 3 / E[x^2] ~ 2e-6; the per-op thresholds in the tests are set from that and
// from the number of bf16 roundings on the op's path.
inline double nmse(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); i++) {
    const double d = (double)a[i] - (double)ref[i];
    num += d * d;
    den += (double)ref[i] * (double)ref[i];
  }
  return den > 0.0 ? num / den : num;
}
inline bool all_finite(const std::vector<float>& x) {
  for (float v : x)
    if (!std::isfinite(v)) return false;
  return true;
}

// The fiber orders every kernel test runs under: in-order, reversed and a seeded shuffle. A
// kernel that is missing a barrier, or that depends on the order of threads, gives a different
// result under one of them (the tests require bit-identical results across orders). Each order
// also gets its own WMMA fragment layout (test/emu/wmma.h), so a kernel that depends on the
// unspecified element layout of a fragment gives a different (and wrong) result too.
inline const std::vector<std::string>& test_schedules() {
  static const std::vector<std::string> s = {"forward", "reverse", "random:12345"};
  return s;
}
// Runs `run` (which launches and returns the downloaded outputs, concatenated as floats) under
// every schedule, checks that the results are bit-identical, and returns the first.
inline std::vector<float> run_all_schedules(const std::function<std::vector<float>()>& run, bool* identical) {
  std::vector<float> first;
  *identical = true;
  for (size_t i = 0; i < test_schedules().size(); i++) {
    emu::set_schedule(test_schedules()[i]);
    emu::set_wmma_layout(i + 1);
    std::vector<float> r = run();
    if (i == 0) {
      first = r;
    } else if (r.size() != first.size() ||
               std::memcmp(r.data(), first.data(), r.size() * sizeof(float)) != 0) {
      *identical = false;
    }
  }
  emu::set_schedule("forward");
  emu::set_wmma_layout(1);
  return first;
}
inline void append(std::vector<float>& dst, const std::vector<float>& src) { dst.insert(dst.end(), src.begin(), src.end()); }
