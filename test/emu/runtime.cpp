// CUDA emulation: the subset of the CUDA runtime API the project uses, on host memory.
//
// - cudaMalloc returns 256-byte aligned host memory filled with NaN bytes (0xFF) and surrounded by
//   guard zones; every launch checks all zones afterwards, cudaMemcpy/cudaMemset check their
//   ranges against the allocation, cudaFree checks the zones of what it frees.
// - The default stream runs work when it is issued. A created stream queues it (kernels,
//   cudaMemcpyAsync / cudaMemsetAsync, events, waits, NCCL calls) and runs it, in order, only when
//   something waits for it: cudaStreamWaitEvent on the default stream (at once) or on another
//   created stream (when that one runs), cudaEventSynchronize / cudaEventQuery up to the event,
//   cudaStreamSynchronize / cudaStreamQuery / cudaStreamDestroy, cudaDeviceSynchronize. So a
//   missing wait deterministically reads what was there before the queued work (a GPU would
//   race). Created streams count as non-blocking (no implicit order with the default stream,
//   whatever the flags). An event records the host time at which it runs.
// - cudaGetDeviceProperties reports H100-like limits, which launches enforce (emu/launch.cpp).
// Functions keep the exact signatures of cuda_runtime_api.h, so host code compiles unchanged.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include "test/emu/emu_internal.h"

namespace emu {
namespace {

constexpr size_t kGuardBytes = 256;  // before and (at least) after every allocation
constexpr unsigned char kGuardByte = 0xA5;

struct Allocation {
  unsigned char* base;  // start of the leading guard zone
  size_t size;          // bytes asked for
  size_t total;         // bytes allocated, guards included
};

struct Registry {
  std::mutex mutex;
  std::map<uintptr_t, Allocation> allocations;  // keyed by the user pointer
  size_t bytes_in_use = 0;
  std::unordered_map<const void*, size_t> max_dynamic_smem;  // cudaFuncSetAttribute
};
Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: used until the process ends
  return *r;
}

thread_local cudaError_t tl_last_error = cudaSuccess;
thread_local int tl_device = 0;

cudaError_t record(cudaError_t err) {
  if (err != cudaSuccess) tl_last_error = err;
  return err;
}

// First damaged byte of an allocation's guard zones: -1 if intact, else offset from the user
// pointer (negative offsets are before the buffer).
bool guard_damage(const Allocation& a, long long* offset) {
  const unsigned char* user = a.base + kGuardBytes;
  for (size_t i = 0; i < kGuardBytes; i++)
    if (a.base[i] != kGuardByte) {
      *offset = (long long)i - (long long)kGuardBytes;
      return true;
    }
  for (size_t i = kGuardBytes + a.size; i < a.total; i++)
    if (a.base[i] != kGuardByte) {
      *offset = (long long)(i - kGuardBytes);
      return true;
    }
  (void)user;
  return false;
}

std::string describe_damage(uintptr_t user, const Allocation& a, long long offset) {
  std::ostringstream s;
  s << "out-of-bounds write: the guard zone of the " << a.size << "-byte cudaMalloc buffer at 0x"
    << std::hex << user << std::dec << " was overwritten at byte offset " << offset
    << (offset < 0 ? " (before the buffer)" : " (past its end)");
  return s.str();
}

// The allocation containing p, or null. Caller holds the mutex.
const std::pair<const uintptr_t, Allocation>* find_allocation(Registry& r, const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = r.allocations.upper_bound(a);
  if (it == r.allocations.begin()) return nullptr;
  --it;
  const uintptr_t lo = it->first - kGuardBytes, hi = it->first + it->second.total - kGuardBytes;
  if (a < lo || a >= hi) return nullptr;
  return &*it;
}

}  // namespace

// A copy or fill of [p, p+count) that starts inside an allocation must stay inside it.
void check_device_range(const char* call, const void* p, size_t count, const char* which) {
  if (count == 0 || p == nullptr) return;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  const auto* entry = find_allocation(r, p);
  if (!entry) return;  // host memory
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a < entry->first || a + count > entry->first + entry->second.size) {
    std::ostringstream s;
    s << "emu: " << call << ": the " << which << " range [" << (long long)(a - entry->first)
      << ", " << (long long)(a - entry->first) + (long long)count << ") is outside the "
      << entry->second.size << "-byte cudaMalloc buffer";
    throw KernelError(s.str());
  }
}

namespace {

struct Stream {
  unsigned flags = 0;
  std::deque<std::function<void()>> queue;
  uint64_t issued = 0, done = 0;  // work items queued / run so far
};
// An event is complete once its stream has run `seq` items (a default-stream record: at once).
struct Event {
  std::chrono::steady_clock::time_point time;
  bool recorded = false;
  Stream* stream = nullptr;
  uint64_t seq = 0;
};
// Every created stream, for cudaDeviceSynchronize. Streams are used from the thread that made
// them (one host thread per device, as the project does); the registry is guarded anyway.
std::mutex streams_mutex;
std::vector<Stream*>& streams() {
  static std::vector<Stream*>* v = new std::vector<Stream*>();
  return *v;
}
// An event's stream that was destroyed since ran all its work: the event is complete.
bool live(Stream* s) {
  std::lock_guard<std::mutex> lock(streams_mutex);
  return std::find(streams().begin(), streams().end(), s) != streams().end();
}
Stream* as_stream(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return nullptr;
  return reinterpret_cast<Stream*>(s);
}
// Runs the queued work of s until it has run `upto` items. An item that throws (a kernel bug, a
// failed NCCL call) propagates to the caller that waited, as a GPU reports errors at a sync.
void run_until(Stream* s, uint64_t upto) {
  while (s && s->done < upto && !s->queue.empty()) {
    std::function<void()> work = std::move(s->queue.front());
    s->queue.pop_front();
    s->done++;
    work();
  }
}
void run_all(Stream* s) {
  if (s) run_until(s, s->issued);
}

}  // namespace

bool deferred(cudaStream_t stream) { return as_stream(stream) != nullptr; }
void enqueue(cudaStream_t stream, std::function<void()> work) {
  Stream* s = as_stream(stream);
  if (!s) return work();
  s->queue.push_back(std::move(work));
  s->issued++;
}

std::string check_guard_zones() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& [user, a] : r.allocations) {
    long long offset;
    if (guard_damage(a, &offset)) {
      std::string msg = describe_damage(user, a, offset);
      // Repair the zone so that one bug is reported once, not by every later launch.
      std::memset(a.base, kGuardByte, kGuardBytes);
      std::memset(a.base + kGuardBytes + a.size, kGuardByte, a.total - kGuardBytes - a.size);
      return msg;
    }
  }
  return "";
}

size_t max_dynamic_smem(const void* kernel) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.max_dynamic_smem.find(kernel);
  return it == r.max_dynamic_smem.end() ? kSharedPerBlockDefault : it->second;
}

}  // namespace emu

using namespace emu;

cudaError_t cudaMalloc(void** ptr, size_t size) {
  if (!ptr) return record(cudaErrorInvalidValue);
  // Leading guard, the buffer, then a trailing guard of at least kGuardBytes, 256-aligned.
  const size_t total = (kGuardBytes + size + kGuardBytes + 255) / 256 * 256;
  auto* base = static_cast<unsigned char*>(std::aligned_alloc(256, total));
  if (!base) return record(cudaErrorMemoryAllocation);
  std::memset(base, kGuardByte, total);
  std::memset(base + kGuardBytes, kNanByte, size);  // device memory starts as garbage: NaN
  *ptr = base + kGuardBytes;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.allocations[reinterpret_cast<uintptr_t>(*ptr)] = Allocation{base, size, total};
  r.bytes_in_use += size;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  Registry& r = registry();
  Allocation a;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == r.allocations.end()) return record(cudaErrorInvalidValue);  // not ours, or freed
    a = it->second;
    r.allocations.erase(it);
    r.bytes_in_use -= a.size;
  }
  long long offset;
  const bool damaged = guard_damage(a, &offset);
  std::string msg = damaged ? describe_damage(reinterpret_cast<uintptr_t>(ptr), a, offset) : "";
  std::free(a.base);
  if (damaged) {
    // Not thrown: cudaFree is often called from destructors. The error code is what a device
    // reports for a corrupted allocation; the details go to stderr.
    std::fprintf(stderr, "emu: cudaFree: %s\n", msg.c_str());
    return record(cudaErrorIllegalAddress);
  }
  return cudaSuccess;
}

cudaError_t cudaMallocAsync(void** ptr, size_t size, cudaStream_t) { return cudaMalloc(ptr, size); }
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) { return cudaFree(ptr); }
cudaError_t cudaMallocManaged(void** ptr, size_t size, unsigned int) { return cudaMalloc(ptr, size); }

cudaError_t cudaMallocHost(void** ptr, size_t size) {
  if (!ptr) return record(cudaErrorInvalidValue);
  *ptr = std::aligned_alloc(256, (size + 255) / 256 * 256 + 256);
  return *ptr ? cudaSuccess : record(cudaErrorMemoryAllocation);
}
cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int) { return cudaMallocHost(ptr, size); }
cudaError_t cudaFreeHost(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind) {
  if (count && (!dst || !src)) return record(cudaErrorInvalidValue);
  check_device_range("cudaMemcpy", dst, count, "destination");
  check_device_range("cudaMemcpy", src, count, "source");
  if (count) std::memmove(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (!deferred(stream)) return cudaMemcpy(dst, src, count, kind);
  if (count && (!dst || !src)) return record(cudaErrorInvalidValue);
  check_device_range("cudaMemcpyAsync", dst, count, "destination");
  check_device_range("cudaMemcpyAsync", src, count, "source");
  enqueue(stream, [=] { cudaMemcpy(dst, src, count, kind); });  // the bytes as they are when it runs
  return cudaSuccess;
}
cudaError_t cudaMemcpyPeer(void* dst, int, const void* src, int, size_t count) {
  return cudaMemcpy(dst, src, count, cudaMemcpyDefault);
}
cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width,
                         size_t height, enum cudaMemcpyKind kind) {
  if (width > dpitch || width > spitch) return record(cudaErrorInvalidPitchValue);
  for (size_t row = 0; row < height; row++) {
    cudaError_t err = cudaMemcpy(static_cast<char*>(dst) + row * dpitch,
                                 static_cast<const char*>(src) + row * spitch, width, kind);
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                              size_t width, size_t height, enum cudaMemcpyKind kind, cudaStream_t stream) {
  if (!deferred(stream)) return cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind);
  if (width > dpitch || width > spitch) return record(cudaErrorInvalidPitchValue);
  enqueue(stream, [=] { cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind); });
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  if (count && !ptr) return record(cudaErrorInvalidValue);
  check_device_range("cudaMemset", ptr, count, "destination");
  if (count) std::memset(ptr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  if (!deferred(stream)) return cudaMemset(ptr, value, count);
  if (count && !ptr) return record(cudaErrorInvalidValue);
  check_device_range("cudaMemsetAsync", ptr, count, "destination");
  enqueue(stream, [=] { cudaMemset(ptr, value, count); });
  return cudaSuccess;
}
// Under emulation a __device__ / __constant__ variable is a host global: its address is the symbol.
cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset,
                               enum cudaMemcpyKind) {
  std::memcpy(static_cast<char*>(const_cast<void*>(symbol)) + offset, src, count);
  return cudaSuccess;
}
cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count, size_t offset,
                                 enum cudaMemcpyKind) {
  std::memcpy(dst, static_cast<const char*>(symbol) + offset, count);
  return cudaSuccess;
}
cudaError_t cudaMemPrefetchAsync(const void*, size_t, struct cudaMemLocation, unsigned int,
                                 cudaStream_t) {
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  const size_t total = 80ull << 30;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (total_bytes) *total_bytes = total;
  if (free_bytes) *free_bytes = r.bytes_in_use < total ? total - r.bytes_in_use : 0;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = tl_last_error;
  tl_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return tl_last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidPitchValue: return "cudaErrorInvalidPitchValue";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidPitchValue: return "invalid pitch argument";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    default: return "unknown error";
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return record(cudaErrorInvalidValue);
  *count = options().device_count;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= options().device_count) return record(cudaErrorInvalidDevice);
  tl_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return record(cudaErrorInvalidValue);
  *device = tl_device;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (!prop) return record(cudaErrorInvalidValue);
  if (device < 0 || device >= options().device_count) return record(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof(*prop));
  std::snprintf(prop->name, sizeof(prop->name), "CUDA emulator (H100-like limits)");
  prop->totalGlobalMem = 80ull << 30;
  prop->sharedMemPerBlock = kSharedPerBlockDefault;
  prop->sharedMemPerBlockOptin = kSharedPerBlockOptin;
  prop->sharedMemPerMultiprocessor = kSharedPerMultiprocessor;
  prop->regsPerBlock = 65536;
  prop->regsPerMultiprocessor = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = kMaxThreadsPerBlock;
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 2147483647;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->totalConstMem = 65536;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = kMultiprocessors;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->maxBlocksPerMultiProcessor = 32;
  prop->l2CacheSize = 50 << 20;
  prop->memoryBusWidth = 5120;
  prop->concurrentKernels = 1;
  prop->unifiedAddressing = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (!value) return record(cudaErrorInvalidValue);
  if (device < 0 || device >= options().device_count) return record(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = 1024; break;
    case cudaDevAttrMaxBlockDimY: *value = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *value = 64; break;
    case cudaDevAttrMaxGridDimX: *value = 2147483647; break;
    case cudaDevAttrMaxGridDimY: *value = 65535; break;
    case cudaDevAttrMaxGridDimZ: *value = 65535; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)kSharedPerBlockDefault; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)kSharedPerBlockOptin; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = (int)kSharedPerMultiprocessor; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = kMultiprocessors; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrL2CacheSize: *value = 50 << 20; break;
    default: *value = 0; return record(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (!func) return record(cudaErrorInvalidDeviceFunction);
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || (size_t)value > kSharedPerBlockOptin) return record(cudaErrorInvalidValue);
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.max_dynamic_smem[func] = (size_t)value;
  }
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* num_blocks, const void*,
                                                           int block_size, size_t smem) {
  if (!num_blocks || block_size <= 0) return record(cudaErrorInvalidValue);
  int by_threads = 2048 / block_size;
  int by_smem = smem ? (int)(kSharedPerMultiprocessor / smem) : 32;
  *num_blocks = std::max(0, std::min({by_threads, by_smem, 32}));
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  // Until no created stream has work left (a stream's work may wait on another's).
  for (bool again = true; again;) {
    again = false;
    std::vector<Stream*> all;
    {
      std::lock_guard<std::mutex> lock(streams_mutex);
      all = streams();
    }
    for (Stream* s : all)
      if (s->done < s->issued) {
        run_all(s);
        again = true;
      }
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int* v) {
  if (v) *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  if (v) *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDeviceCanAccessPeer(int* can, int, int) {
  if (can) *can = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceEnablePeerAccess(int, unsigned int) { return cudaSuccess; }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  if (!stream) return record(cudaErrorInvalidValue);
  Stream* s = new Stream{flags, {}, 0, 0};
  {
    std::lock_guard<std::mutex> lock(streams_mutex);
    streams().push_back(s);
  }
  *stream = reinterpret_cast<cudaStream_t>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, 0); }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned int flags, int) {
  return cudaStreamCreateWithFlags(stream, flags);
}
cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) {
  if (least) *least = 0;
  if (greatest) *greatest = -5;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Stream* s = as_stream(stream);
  if (!s) return record(cudaErrorInvalidResourceHandle);
  run_all(s);  // its work completes, as on a GPU
  {
    std::lock_guard<std::mutex> lock(streams_mutex);
    auto& v = streams();
    v.erase(std::find(v.begin(), v.end(), s));
  }
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  run_all(as_stream(stream));
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  run_all(as_stream(stream));
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (!event) return record(cudaErrorInvalidResourceHandle);
  auto* e = reinterpret_cast<Event*>(event);
  if (!e->recorded || !e->stream || !live(e->stream)) return cudaSuccess;  // nothing to wait for
  // The event's last record as of this call (a later record does not move the wait).
  Stream* other = e->stream;
  const uint64_t seq = e->seq;
  enqueue(stream, [other, seq] {
    if (live(other)) run_until(other, seq);
  });
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  if (!event) return record(cudaErrorInvalidValue);
  *event = reinterpret_cast<cudaEvent_t>(new Event());
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  return cudaEventCreate(event);
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return record(cudaErrorInvalidResourceHandle);
  auto* e = reinterpret_cast<Event*>(event);
  e->recorded = true;
  Stream* s = as_stream(stream);
  if (!s) {
    e->time = std::chrono::steady_clock::now();
    e->stream = nullptr;
    return cudaSuccess;
  }
  enqueue(stream, [e] { e->time = std::chrono::steady_clock::now(); });
  e->stream = s;
  e->seq = s->issued;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return record(cudaErrorInvalidResourceHandle);
  auto* e = reinterpret_cast<Event*>(event);
  if (e->recorded && e->stream && live(e->stream)) run_until(e->stream, e->seq);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) { return cudaEventSynchronize(event); }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms || !start || !end) return record(cudaErrorInvalidValue);
  auto* a = reinterpret_cast<Event*>(start);
  auto* b = reinterpret_cast<Event*>(end);
  if (!a->recorded || !b->recorded) return record(cudaErrorInvalidResourceHandle);
  cudaEventSynchronize(start);
  cudaEventSynchronize(end);
  *ms = std::chrono::duration<float, std::milli>(b->time - a->time).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  cudaEventSynchronize(event);  // its queued record must not outlive it
  delete reinterpret_cast<Event*>(event);
  return cudaSuccess;
}
