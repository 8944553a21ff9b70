// The harness of the per-kernel benchmarks (dev/cuda/*.cu, driver kernel_bench.cu): model shapes,
// device buffers with random contents, one validation run on poisoned outputs, timed repeats with
// the L2 flushed in between, and the roofline of each result (dev/cuda/roofline.h).
//
// Method (see docs/cuda.md "GPU readiness"):
//   - inputs are random (a hash of the index, filled on the device), never zeros;
//   - outputs are poisoned (0xFF bytes: NaN in bf16 and fp32) before the validation run and must
//     all be finite after it: an element the kernel fails to write, or a NaN it produces, fails
//     the case (outputs that accumulate are zeroed instead, in-place ones keep their input);
//   - each timed repeat is bracketed by CUDA events, after a memset of twice the L2 size so that
//     a small working set is not served from the cache; the median of the repeats is reported;
//   - bytes are the fewest the kernel must move (each input read once, each output written
//     once), FLOPs the model's arithmetic (recomputation not counted), both stated per case.
// The same source runs on the CUDA emulator (g++ -DCUDA_EMULATION) at the "smoke" shape: that is
// test/test_cuda_bench.cpp, a `make test` check that every case runs and writes finite outputs.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "dev/cuda/roofline.h"
#include "kernels/cuda/cuda_utils.cuh"

// ---- shapes ----
struct BenchShape {
  std::string name;
  int C, H, KV, D, I, V;  // model: hidden, q heads, kv heads, head dim, MLP width, vocabulary
  int rows, T, seg_len;   // token batch: rows x T; seg_len > 0 packs examples of seg_len tokens
  int ce_rows;            // rows of fp32 logits per cross-entropy call (the model chunks tokens)
  int decode_batch, decode_len;  // decode attention: sequences, cached tokens per sequence
  size_t adamw_params;           // parameters per AdamW / global-norm call
  int gemm_ceiling;              // M = N = K of the bf16 matmul that measures the tensor-core ceiling
  size_t copy_bytes;             // bytes of the device-to-device copy that measures bandwidth
  int tokens() const { return rows * T; }
  int qkv_width() const { return (H + 2 * KV) * D; }
};

// llama8b: Llama-3-8B (C 4096, 32 q / 8 kv heads of 128, MLP 14336, vocabulary 128256) on
//          4 rows of 2048 tokens, one causal sequence per row; AdamW over one decoder layer's
//          218M parameters; decode: 32 sequences with 2048 cached tokens.
// remix:   the same model on a REMIX batch: 32 factoid examples of about 40 tokens packed into one
//          row of 1280 tokens (attention never crosses examples).
// smoke:   a tiny shape for the emulator (make test).
inline bool bench_shape(const std::string& name, BenchShape* s) {
  if (name == "llama8b") *s = {name, 4096, 32, 8, 128, 14336, 128256, 4, 2048, 0, 1024, 32, 2048, 218112000, 8192, size_t(2) << 30};
  else if (name == "remix") *s = {name, 4096, 32, 8, 128, 14336, 128256, 1, 1280, 40, 1280, 32, 64, 218112000, 0, 0};
  else if (name == "smoke") *s = {name, 256, 4, 2, 64, 384, 512, 2, 64, 24, 64, 3, 40, 10000, 128, 1 << 16};
  else return false;
  return true;
}

// ---- results ----
enum class Roof { memory, fp32, bf16_tensor };
inline const char* roof_name(Roof r) { return r == Roof::memory ? "hbm" : r == Roof::fp32 ? "fp32" : "bf16-tc"; }

struct BenchResult {
  std::string family, name, shape;
  double ms = 0, ms_min = 0;  // median and best of the timed repeats
  double bytes = 0, flops = 0;
  Roof roof = Roof::memory;
  bool outputs_ok = false;  // every output element finite after the validation run
  std::string note;
};

// Floor time (ms) of a result on a card, and the fraction of it that was reached.
inline double roof_ms(const BenchResult& r, const GpuCard& card) {
  const double mem = r.bytes / (card.hbm_tb_s * 1e12) * 1e3;
  const double peak = r.roof == Roof::bf16_tensor ? card.bf16_tflops : card.fp32_tflops;
  const double math = r.flops / (peak * 1e12) * 1e3;
  return std::max(mem, math);
}

// ---- device helpers ----
__device__ __forceinline__ float bench_hash_uniform(uint32_t i, uint32_t seed) {  // in [-1, 1)
  uint32_t x = i * 0x9e3779b9u ^ seed;
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
  return (float)(x >> 8) * (2.0f / 16777216.0f) - 1.0f;
}
template <typename T>
__global__ void bench_fill_kernel(T* x, size_t n, uint32_t seed, float scale, float offset) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] = (T)(offset + scale * bench_hash_uniform((uint32_t)i, seed));
}
template <typename T>
__global__ void bench_count_nonfinite_kernel(const T* x, size_t n, unsigned* count) {
  unsigned bad = 0;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    if (!isfinite((float)x[i])) bad++;
  if (bad) atomicAdd(count, bad);
}

// A device buffer of n elements (freed at scope exit).
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { CUDA_CHECK(cudaMalloc((void**)&p, std::max<size_t>(n, 1) * sizeof(T))); }
  ~DevBuf() { if (p) cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  operator T*() const { return p; }
  size_t bytes() const { return n * sizeof(T); }
  // uniform in [offset - scale, offset + scale)
  void random(uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
    auto k = bench_fill_kernel<T>;
    const unsigned blocks = (unsigned)std::min<size_t>(ceil_div(std::max<size_t>(n, 1), (size_t)256), 4096);
    LAUNCH(k, blocks, 256, 0, 0)(p, n, seed, scale, offset);
    CUDA_CHECK(cudaGetLastError());
  }
  void zero() { CUDA_CHECK(cudaMemset(p, 0, bytes())); }
  void upload(const std::vector<T>& h) {
    CUDA_CHECK(cudaMemcpy(p, h.data(), std::min(h.size(), n) * sizeof(T), cudaMemcpyHostToDevice));
  }
};

// An output to validate: poisoned before the validation run unless it accumulates or is in place.
struct BenchOutput {
  const void* p;
  size_t n;
  bool is_bf16;
  bool poison;
};
template <typename T>
BenchOutput out(const DevBuf<T>& b, bool poison = true) { return {b.p, b.n, sizeof(T) == 2, poison}; }
template <typename T>
BenchOutput accumulated(const DevBuf<T>& b) { return {b.p, b.n, sizeof(T) == 2, false}; }

class Bench {
 public:
  Bench(const BenchShape& shape, int warmup, int reps) : shape_(shape), warmup_(warmup), reps_(reps) {
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    flush_bytes_ = shape.name == "smoke" ? 0 : 2 * (size_t)prop.l2CacheSize;
    if (flush_bytes_) CUDA_CHECK(cudaMalloc(&flush_, flush_bytes_));
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Bench() {
    if (flush_) cudaFree(flush_);
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  const BenchShape& shape() const { return shape_; }
  // The family the following cases belong to (set by the driver).
  std::string family;
  std::vector<BenchResult> results;

  // Validates `fn` once on poisoned outputs, then times warmup + reps runs of it.
  void run(const std::string& name, double bytes, double flops, Roof roof, const std::vector<BenchOutput>& outputs,
           const std::function<void()>& fn, const std::string& note = "") {
    BenchResult r;
    r.family = family, r.name = name, r.shape = shape_.name, r.bytes = bytes, r.flops = flops, r.roof = roof;
    r.note = note;
    for (const BenchOutput& o : outputs)
      if (o.poison) CUDA_CHECK(cudaMemset(const_cast<void*>(o.p), 0xFF, o.n * (o.is_bf16 ? 2 : 4)));
    fn();
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaDeviceSynchronize());
    r.outputs_ok = true;
    for (const BenchOutput& o : outputs) r.outputs_ok = r.outputs_ok && count_nonfinite(o) == 0;
    for (int i = 0; i < warmup_; i++) fn();
    std::vector<double> ms;
    for (int i = 0; i < reps_; i++) {
      if (flush_bytes_) CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_, 0));
      CUDA_CHECK(cudaEventRecord(start_, 0));
      fn();
      CUDA_CHECK(cudaEventRecord(stop_, 0));
      CUDA_CHECK(cudaEventSynchronize(stop_));
      float t = 0;
      CUDA_CHECK(cudaEventElapsedTime(&t, start_, stop_));
      ms.push_back(t);
    }
    CUDA_CHECK(cudaGetLastError());
    std::sort(ms.begin(), ms.end());
    r.ms = ms.empty() ? 0 : ms[ms.size() / 2];
    r.ms_min = ms.empty() ? 0 : ms[0];
    results.push_back(r);
  }

 private:
  size_t count_nonfinite(const BenchOutput& o) {
    DevBuf<unsigned> count(1);
    count.zero();
    const unsigned blocks = (unsigned)std::min<size_t>(ceil_div(std::max<size_t>(o.n, 1), (size_t)256), 4096);
    if (o.is_bf16) {
      auto k = bench_count_nonfinite_kernel<bf16>;
      LAUNCH(k, blocks, 256, 0, 0)(static_cast<const bf16*>(o.p), o.n, count.p);
    } else {
      auto k = bench_count_nonfinite_kernel<float>;
      LAUNCH(k, blocks, 256, 0, 0)(static_cast<const float*>(o.p), o.n, count.p);
    }
    CUDA_CHECK(cudaGetLastError());
    unsigned h = 0;
    CUDA_CHECK(cudaMemcpy(&h, count.p, sizeof(h), cudaMemcpyDeviceToHost));
    return h;
  }
  BenchShape shape_;
  int warmup_, reps_;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  cudaEvent_t start_, stop_;
};

// ---- the kernel families (one file each in dev/cuda/, compiled together: families.h) ----
void bench_attention(Bench& b);         // attention.cu: flash forward and backward
void bench_rmsnorm(Bench& b);           // rmsnorm.cu: fused residual + norm, backward
void bench_rope(Bench& b);              // rope.cu
void bench_swiglu(Bench& b);            // swiglu.cu
void bench_cross_entropy(Bench& b);     // cross_entropy.cu: rows over the vocabulary, in place
void bench_adamw(Bench& b);             // adamw.cu: AdamW (fp32 / bf16 moments), global norm
void bench_embedding(Bench& b);         // embedding.cu: forward, deterministic backward
void bench_decode_attention(Bench& b);  // decode_attention.cu: one new token over the KV cache
void bench_matmul(Bench& b);            // matmul.cu: the Llama layer GEMMs through cuBLASLt
void bench_ceilings(Bench& b);          // ceilings.cu: measured copy bandwidth and bf16 matmul rate

struct BenchFamily {
  const char* name;
  void (*run)(Bench&);
};
inline const std::vector<BenchFamily>& bench_families() {
  static const std::vector<BenchFamily> f = {
      {"ceilings", bench_ceilings}, {"matmul", bench_matmul},     {"attention", bench_attention},
      {"rmsnorm", bench_rmsnorm},   {"rope", bench_rope},         {"swiglu", bench_swiglu},
      {"cross_entropy", bench_cross_entropy}, {"adamw", bench_adamw}, {"embedding", bench_embedding},
      {"decode_attention", bench_decode_attention},
  };
  return f;
}

// Runs the families named in `only` (all when empty) at `shape`; results accumulate in b.
inline void run_bench_families(Bench& b, const std::vector<std::string>& only) {
  for (const BenchFamily& f : bench_families()) {
    if (!only.empty() && std::find(only.begin(), only.end(), f.name) == only.end()) continue;
    b.family = f.name;
    f.run(b);
  }
}
