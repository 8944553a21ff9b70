// CUDA emulation: what the runtime's .cpp files share (not for kernel code).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "test/emu/emu.h"

namespace emu {

// Options, read from the environment once (EMU_SCHEDULE, EMU_FAST_PATH, EMU_STACK_KB,
// EMU_DEVICE_COUNT) and changeable from code.
struct Options {
  Schedule schedule = Schedule::forward;
  uint64_t seed = 0;
  bool fast_path = true;
  size_t stack_bytes = 256 * 1024;
  int device_count = 1;
};
Options& options();

// Static __shared__ variables that a launch of `kernel` may use (its own and those of device
// helper functions), as ranges of the executable's TLS segment.
struct SharedFill {
  std::vector<std::pair<size_t, size_t>> ranges;  // (offset, bytes)
  size_t bytes = 0;
  size_t kernel_static_bytes = 0;  // the kernel's own variables (for the launch limit)
};
std::shared_ptr<const SharedFill> shared_fill_for(const void* kernel);
// Fills those variables with the NaN byte pattern (0xFF) in the calling OS thread's TLS.
size_t fill_static_shared_with_nan(const SharedFill& fill);
// Total size of the static __shared__ variables found in the symbol table (for diagnostics).
size_t static_shared_bytes();

// fn(begin, end) over [0, n) in chunks of `grain`, on the emulator's block threads (which sleep
// when idle, unlike an OpenMP team). Used by the library fakes.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// Guard zones around cudaMalloc allocations: a description of the first damaged zone, or "".
std::string check_guard_zones();
// [p, p + bytes) must lie inside the cudaMalloc buffer that contains p (if any): else KernelError
// naming the call and which operand.
void check_device_range(const char* call, const void* p, size_t bytes, const char* which);
// Largest dynamic shared memory a kernel may be launched with (48 KiB unless raised with
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n)).
size_t max_dynamic_smem(const void* kernel);

// H100-like limits reported by cudaGetDeviceProperties and enforced at launch.
constexpr size_t kSharedPerBlockDefault = 48 * 1024;
constexpr size_t kSharedPerBlockOptin = 227 * 1024;
constexpr size_t kSharedPerMultiprocessor = 228 * 1024;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMultiprocessors = 132;

constexpr unsigned char kNanByte = 0xFF;  // 0xFFFF.. is a NaN in fp32, fp64, bf16 and fp16

}  // namespace emu
