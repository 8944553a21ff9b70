// CUDA emulation: the device-side API that kernel source sees when compiled by g++ with
// -DCUDA_EMULATION (kernels/cuda/cuda_common.cuh includes this file; do not include it after a
// CUDA header).
//
// Model: a launch runs its blocks on the emulator's own threads (the launching thread plus helpers
// that sleep between launches), one block per OS thread at a time. Within a
// block every CUDA thread is a Boost.Context fiber on that OS thread, so `__shared__` (a static
// thread_local) is per block, and __syncthreads / warp operations switch fibers in an order that
// can be forward, reverse or seeded random (EMU_SCHEDULE, emu::set_schedule). A block whose
// threads never reach a synchronization point runs as a plain loop without switching. See
// test/emu/README.md for the checks (barrier divergence, warp masks, guard zones, NaN shared
// memory, launch limits).
#pragma once
#if defined(__CUDACC__)
#error "test/emu/emu.h is the g++ emulation of CUDA; nvcc uses the real headers"
#endif
#ifndef CUDA_EMULATION
#define CUDA_EMULATION 1
#endif

// ---- 1. Qualifiers, defined before any CUDA header (host_defines.h keeps an existing macro). ----
// __shared__ is per block storage: blocks run one per OS thread, the threads of a block are fibers
// on that thread.
// (If a CUDA header, say <nccl.h>, came first, its definitions are replaced here.)
#undef __shared__
#undef __global__
#undef __device__
#undef __host__
#undef __constant__
#undef __managed__
#undef __grid_constant__
#undef __launch_bounds__
#define __shared__ static thread_local
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __launch_bounds__(...)

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublasLt.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "common/error.h"

// After the CUDA headers (whose extern "C" functions cannot carry it): the ABI tag puts
// "B8cuda_emu" into the mangled names of device functions and of the static locals (the
// __shared__ variables) they declare, so that the runtime finds every __shared__ variable in the
// symbol table, template instances included, and fills it with NaN at block start.
#undef __global__
#undef __device__
#define __global__ __attribute__((abi_tag("cuda_emu")))
#define __device__ __attribute__((abi_tag("cuda_emu")))

namespace emu {

// ---- 2. Errors and options ----

// Thrown by a launch (or by a runtime call) when the emulator detects a bug that a GPU would show
// as a hang, a wrong result or a launch failure. The message names the kernel (and the block).
struct KernelError : EngineError {
  using EngineError::EngineError;
};

enum class Schedule { forward, reverse, random };
// Order in which the fibers of a block are resumed (and blocks are started). The environment
// variable EMU_SCHEDULE=forward|reverse|random:SEED sets the initial value.
void set_schedule(Schedule schedule, uint64_t seed = 0);
void set_schedule(const std::string& spec);  // "forward", "reverse", "random:SEED"
std::string schedule_name();
// The barrier-free fast path (on by default; EMU_FAST_PATH=0 turns it off).
void set_fast_path(bool enabled);
// Number of emulated devices reported by cudaGetDeviceCount (EMU_DEVICE_COUNT, default 1).
void set_device_count(int count);

// Counters, for benchmarks and for tests that check which path ran.
struct Stats {
  uint64_t launches = 0;
  uint64_t blocks_plain = 0;    // blocks that ran as a plain loop
  uint64_t blocks_fibers = 0;   // blocks that needed fibers
  uint64_t fiber_switches = 0;  // scheduler -> fiber resumptions
};
Stats stats();
void reset_stats();

// ---- 3. Per fiber indices: the scheduler sets them before it resumes a fiber. ----
extern __thread uint3 tl_thread_idx;
extern __thread uint3 tl_block_idx;
extern __thread dim3 tl_block_dim;
extern __thread dim3 tl_grid_dim;

// ---- 4. Synchronization points (all switch to the scheduler). ----
void syncthreads(const char* file, int line);
int syncthreads_reduce(int kind, int predicate, const char* file, int line);  // count / and / or

enum class WarpOp : int {
  shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all, sync,
  reduce_add, reduce_min, reduce_max, reduce_and, reduce_or, reduce_xor, match_any,
  wmma_load, wmma_store, wmma_mma,  // nvcuda::wmma collectives (test/emu/wmma.h)
};
// One warp-synchronous operation: every lane named in `mask` must reach the same call site with
// the same mask. `value` is the lane's operand (bit pattern), `arg` the lane / delta / lane mask.
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                 int line);
unsigned active_mask();
void* dynamic_smem();
[[noreturn]] void device_trap(const char* file, int line);

template <class T>
inline uint64_t to_bits(const T& v) {
  // (CUDA's bf16x2 / half2 are not formally trivially copyable but are plain bits.)
  static_assert(sizeof(T) <= 8, "warp operand larger than 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, static_cast<const void*>(&v), sizeof(T));
  return bits;
}
template <class T>
inline T from_bits(uint64_t bits) {
  T v;
  std::memcpy(static_cast<void*>(&v), &bits, sizeof(T));
  return v;
}

// ---- 5. Launch ----
struct LaunchConfig {
  const char* kernel_name;
  const void* kernel;
  dim3 grid, block;
  size_t dynamic_smem_bytes;
  cudaStream_t stream;
  const char* file;
  int line;
};
// The barrier-free fast path of one block: call the kernel for threads order[0..count) in turn,
// publishing only the thread index, until *stop (the block switched to fibers or failed).
struct PlainLoop {
  const int* order;  // null: forward order
  int count;
  const uint3* thread_idx;
  const bool* stop;
};
// Runs the kernel once per CUDA thread of the grid: body(closure) runs one thread (in a fiber),
// plain_loop(closure, loop) runs a block's threads in a loop. Throws KernelError on a detected bug.
void launch(const LaunchConfig& config, void (*body)(const void*),
            void (*plain_loop)(const void*, const PlainLoop&), const void* closure);
// Streams (test/emu/runtime.cpp): work issued on a created stream is queued and runs only when
// something waits for it (cudaStreamWaitEvent on a later stream, a stream / event / device
// synchronize or query); the default stream (0, cudaStreamLegacy, cudaStreamPerThread) runs work
// when it is issued. deferred(s): work on s is queued; enqueue(s, work) queues it.
bool deferred(cudaStream_t stream);
void enqueue(cudaStream_t stream, std::function<void()> work);

template <class... Params>
struct KernelLauncher {
  void (*kernel)(Params...);
  LaunchConfig config;
  template <class... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "kernel launched with wrong arity");
    // Arguments are converted once on the host, as cudaLaunchKernel copies them to the device.
    struct Closure {
      void (*kernel)(Params...);
      std::tuple<std::decay_t<Params>...> args;
    };
    auto closure = std::make_shared<const Closure>(
        Closure{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)});
    void (*body)(const void*) = [](const void* p) {
      const Closure* c = static_cast<const Closure*>(p);
      std::apply(c->kernel, c->args);
    };
    void (*plain_loop)(const void*, const PlainLoop&) = [](const void* p, const PlainLoop& loop) {
      const Closure* c = static_cast<const Closure*>(p);
      for (int i = 0; i < loop.count; i++) {
        tl_thread_idx = loop.thread_idx[loop.order ? loop.order[i] : i];
        std::apply(c->kernel, c->args);
        if (*loop.stop) return;
      }
    };
    if (deferred(config.stream))  // the arguments as given now, the launch when the stream runs
      enqueue(config.stream, [config = config, closure, body, plain_loop] {
        launch(config, body, plain_loop, closure.get());
      });
    else
      launch(config, body, plain_loop, closure.get());
  }
};
template <class... Params>
inline KernelLauncher<Params...> make_launcher(void (*kernel)(Params...), const char* name,
                                               dim3 grid, dim3 block, size_t smem,
                                               cudaStream_t stream, const char* file, int line) {
  return KernelLauncher<Params...>{
      kernel, LaunchConfig{name, reinterpret_cast<const void*>(kernel), grid, block, smem, stream,
                           file, line}};
}

}  // namespace emu

#define LAUNCH(kernel, grid, block, smem, stream)                                       \
  ::emu::make_launcher(kernel, #kernel, dim3(grid), dim3(block), (size_t)(smem),        \
                       (cudaStream_t)(stream), __FILE__, __LINE__)

#define DYNAMIC_SMEM(type, name) type* const name = static_cast<type*>(::emu::dynamic_smem())

// ---- 6. Built-in variables (read-only references to the current fiber's values). ----
#define threadIdx (static_cast<const uint3&>(::emu::tl_thread_idx))
#define blockIdx (static_cast<const uint3&>(::emu::tl_block_idx))
#define blockDim (static_cast<const dim3&>(::emu::tl_block_dim))
#define gridDim (static_cast<const dim3&>(::emu::tl_grid_dim))
// warpSize stays the `extern "C" const int` that device_launch_parameters.h declares (the
// emulator defines it as 32), so host code may still name cudaDeviceProp::warpSize.

// ---- 7. Barriers and warp intrinsics. The default arguments record the call site. ----
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emu::syncthreads(file, line);
}
inline int __syncthreads_count(int predicate, const char* file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  return emu::syncthreads_reduce(0, predicate, file, line);
}
inline int __syncthreads_and(int predicate, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  return emu::syncthreads_reduce(1, predicate, file, line);
}
inline int __syncthreads_or(int predicate, const char* file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
  return emu::syncthreads_reduce(2, predicate, file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  emu::warp_op(emu::WarpOp::sync, mask, 0, 0, 32, file, line);
}
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::from_bits<T>(
      emu::warp_op(emu::WarpOp::shfl_idx, mask, emu::to_bits(var), src_lane, width, file, line));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::from_bits<T>(emu::warp_op(emu::WarpOp::shfl_up, mask, emu::to_bits(var),
                                        (int)delta, width, file, line));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::from_bits<T>(emu::warp_op(emu::WarpOp::shfl_down, mask, emu::to_bits(var),
                                        (int)delta, width, file, line));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::from_bits<T>(
      emu::warp_op(emu::WarpOp::shfl_xor, mask, emu::to_bits(var), lane_mask, width, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return (unsigned)emu::warp_op(emu::WarpOp::ballot, mask, predicate != 0, 0, 32, file, line);
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return (int)emu::warp_op(emu::WarpOp::any, mask, predicate != 0, 0, 32, file, line);
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return (int)emu::warp_op(emu::WarpOp::all, mask, predicate != 0, 0, 32, file, line);
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value, const char* file = __builtin_FILE(),
                                 int line = __builtin_LINE()) {
  return (unsigned)emu::warp_op(emu::WarpOp::match_any, mask, emu::to_bits(value), 0, 32, file,
                                line);
}
// sm_80 warp reductions on 32-bit integers.
#define EMU_WARP_REDUCE(NAME, OP, T)                                                        \
  inline T NAME(unsigned mask, T value, const char* file = __builtin_FILE(),              \
                int line = __builtin_LINE()) {                                            \
    return (T)emu::warp_op(emu::WarpOp::OP, mask, (uint64_t)(uint32_t)value,              \
                           std::is_signed_v<T> ? 1 : 0, 32, file, line);                  \
  }
EMU_WARP_REDUCE(__reduce_add_sync, reduce_add, int)
EMU_WARP_REDUCE(__reduce_add_sync, reduce_add, unsigned)
EMU_WARP_REDUCE(__reduce_min_sync, reduce_min, int)
EMU_WARP_REDUCE(__reduce_min_sync, reduce_min, unsigned)
EMU_WARP_REDUCE(__reduce_max_sync, reduce_max, int)
EMU_WARP_REDUCE(__reduce_max_sync, reduce_max, unsigned)
EMU_WARP_REDUCE(__reduce_and_sync, reduce_and, unsigned)
EMU_WARP_REDUCE(__reduce_or_sync, reduce_or, unsigned)
EMU_WARP_REDUCE(__reduce_xor_sync, reduce_xor, unsigned)
#undef EMU_WARP_REDUCE
inline unsigned __activemask() { return emu::active_mask(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emu::device_trap(file, line);
}

// ---- 8. Cache-hinted loads and stores: plain memory accesses on the CPU. ----
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// ---- 9. Atomics: real atomics, because blocks run in parallel on several OS threads. ----
namespace emu {
template <class T>
inline T atomic_fetch_add(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}
// Read-modify-write through compare-and-swap on the storage word, for 16/32-bit float types.
template <class T, class Word, class F>
inline T atomic_update(T* address, F update) {
  static_assert(sizeof(T) == sizeof(Word));
  std::atomic_ref<Word> word(*reinterpret_cast<Word*>(address));
  Word expected = word.load();
  for (;;) {
    T old_value = from_bits<T>(expected);
    T new_value = update(old_value);
    Word desired = (Word)to_bits(new_value);
    if (word.compare_exchange_weak(expected, desired)) return old_value;
  }
}
}  // namespace emu

inline int atomicAdd(int* a, int v) { return emu::atomic_fetch_add(a, v); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return emu::atomic_fetch_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return emu::atomic_fetch_add(a, v);
}
inline float atomicAdd(float* a, float v) { return emu::atomic_fetch_add(a, v); }
inline double atomicAdd(double* a, double v) { return emu::atomic_fetch_add(a, v); }
// bf16/half atomics round the sum to the storage type, as the device does.
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
  return emu::atomic_update<__nv_bfloat16, uint16_t>(a, [&](__nv_bfloat16 old) {
    return __float2bfloat16(__bfloat162float(old) + __bfloat162float(v));
  });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* a, __nv_bfloat162 v) {
  return emu::atomic_update<__nv_bfloat162, uint32_t>(a, [&](__nv_bfloat162 old) {
    __nv_bfloat162 r;
    r.x = __float2bfloat16(__bfloat162float(old.x) + __bfloat162float(v.x));
    r.y = __float2bfloat16(__bfloat162float(old.y) + __bfloat162float(v.y));
    return r;
  });
}
inline __half atomicAdd(__half* a, __half v) {
  return emu::atomic_update<__half, uint16_t>(
      a, [&](__half old) { return __float2half(__half2float(old) + __half2float(v)); });
}
inline int atomicSub(int* a, int v) { return std::atomic_ref<int>(*a).fetch_sub(v); }
inline unsigned atomicSub(unsigned* a, unsigned v) {
  return std::atomic_ref<unsigned>(*a).fetch_sub(v);
}
template <class T>
inline T atomicExch(T* a, T v) {
  return std::atomic_ref<T>(*a).exchange(v);
}
template <class T>
inline T atomicCAS(T* a, T compare, T v) {
  std::atomic_ref<T>(*a).compare_exchange_strong(compare, v);
  return compare;  // holds the old value whether or not the swap happened
}
#define EMU_ATOMIC_MINMAX(NAME, CMP)                                                 \
  template <class T>                                                                 \
  inline T NAME(T* a, T v) {                                                         \
    std::atomic_ref<T> ref(*a);                                                      \
    T old = ref.load();                                                              \
    while ((v CMP old) && !ref.compare_exchange_weak(old, v)) {                      \
    }                                                                                \
    return old;                                                                      \
  }
EMU_ATOMIC_MINMAX(atomicMin, <)
EMU_ATOMIC_MINMAX(atomicMax, >)
#undef EMU_ATOMIC_MINMAX
template <class T> inline T atomicAnd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_and(v); }
template <class T> inline T atomicOr(T* a, T v) { return std::atomic_ref<T>(*a).fetch_or(v); }
template <class T> inline T atomicXor(T* a, T v) { return std::atomic_ref<T>(*a).fetch_xor(v); }

// Host-side C++ overloads that cuda_runtime.h declares only under nvcc.
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <class T>
inline cudaError_t cudaMemcpyToSymbol(const T& symbol, const void* src, size_t count,
                                      size_t offset = 0,
                                      cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  return ::cudaMemcpyToSymbol(static_cast<const void*>(&symbol), src, count, offset, kind);
}
template <class T>
inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t count,
                                        size_t offset = 0,
                                        cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
  return ::cudaMemcpyFromSymbol(dst, static_cast<const void*>(&symbol), count, offset, kind);
}

#include "test/emu/device_math.h"
#include "test/emu/cooperative_groups.h"
#include "test/emu/wmma.h"
