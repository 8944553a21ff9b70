// CUDA emulation: kernel launch, the per-block fiber scheduler, barriers and warp operations.
//
// A launch hands blocks to the emulator's own block threads (BlockThreads below: the launching
// thread plus sleeping helpers; one block per OS thread at a time, so a fiber never migrates and a `static thread_local` __shared__ variable is per block). A block first runs in a
// single "runner" fiber that calls the kernel for each CUDA thread in turn: a kernel that never
// reaches a synchronization point costs one call per thread, with no switch. When thread k reaches
// one, the runner fiber becomes thread k's fiber, the threads before k (in schedule order) are
// finished, and the threads after k get fibers of their own; the block continues under the
// scheduler, which resumes ready fibers round after round in forward, reverse or random order.
// A round in which no fiber can run means a deadlock: a divergent barrier or a warp operation whose
// lanes cannot all arrive, reported as KernelError naming the kernel, the block and the threads.
#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/context/fiber.hpp>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "test/emu/emu_internal.h"

namespace ctx = boost::context;

extern "C" const int warpSize = 32;

namespace emu {

__thread uint3 tl_thread_idx;
__thread uint3 tl_block_idx;
__thread dim3 tl_block_dim;
__thread dim3 tl_grid_dim;

// ---------------------------------------------------------------------------------------------
// Options and statistics

static Schedule parse_schedule(const std::string& spec, uint64_t* seed) {
  if (spec == "forward") return Schedule::forward;
  if (spec == "reverse") return Schedule::reverse;
  if (spec.rfind("random", 0) == 0) {
    *seed = 0;
    if (spec.size() > 6) {
      check(spec[6] == ':', "EMU_SCHEDULE: expected forward, reverse or random:SEED, got '", spec,
            "'");
      *seed = std::strtoull(spec.c_str() + 7, nullptr, 10);
    }
    return Schedule::random;
  }
  fail("EMU_SCHEDULE: expected forward, reverse or random:SEED, got '", spec, "'");
}

Options& options() {
  static Options opts = [] {
    Options o;
    if (const char* s = std::getenv("EMU_SCHEDULE")) o.schedule = parse_schedule(s, &o.seed);
    if (const char* s = std::getenv("EMU_FAST_PATH")) o.fast_path = std::string(s) != "0";
    if (const char* s = std::getenv("EMU_STACK_KB"))
      o.stack_bytes = std::max<size_t>(64, std::strtoull(s, nullptr, 10)) * 1024;
    if (const char* s = std::getenv("EMU_DEVICE_COUNT"))
      o.device_count = std::max(1, std::atoi(s));
    return o;
  }();
  return opts;
}

void set_schedule(Schedule schedule, uint64_t seed) {
  options().schedule = schedule;
  options().seed = seed;
}
void set_schedule(const std::string& spec) {
  uint64_t seed = 0;
  Schedule s = parse_schedule(spec, &seed);
  set_schedule(s, seed);
}
std::string schedule_name() {
  switch (options().schedule) {
    case Schedule::forward: return "forward";
    case Schedule::reverse: return "reverse";
    case Schedule::random: return "random:" + std::to_string(options().seed);
  }
  return "?";
}
void set_fast_path(bool enabled) { options().fast_path = enabled; }
void set_device_count(int count) { options().device_count = std::max(1, count); }

static std::atomic<uint64_t> g_launches{0}, g_blocks_plain{0}, g_blocks_fibers{0},
    g_fiber_switches{0};
Stats stats() {
  Stats s;
  s.launches = g_launches.load();
  s.blocks_plain = g_blocks_plain.load();
  s.blocks_fibers = g_blocks_fibers.load();
  s.fiber_switches = g_fiber_switches.load();
  return s;
}
void reset_stats() {
  g_launches = 0;
  g_blocks_plain = 0;
  g_blocks_fibers = 0;
  g_fiber_switches = 0;
}

// ---------------------------------------------------------------------------------------------
// Fiber stacks: mmap'd with a PROT_NONE guard page below, pooled per OS thread and reused.

struct StackPool {
  size_t usable = 0;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  std::vector<char*> free_bases;
  ~StackPool() {
    for (char* b : free_bases) munmap(b, usable + page);
  }
  ctx::stack_context allocate() {
    char* base;
    if (!free_bases.empty()) {
      base = free_bases.back();
      free_bases.pop_back();
    } else {
      void* p = mmap(nullptr, usable + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      base = static_cast<char*>(p);
      mprotect(base, page, PROT_NONE);  // a stack overflow faults instead of corrupting memory
    }
    ctx::stack_context sc;
    sc.size = usable;
    sc.sp = base + page + usable;
    return sc;
  }
  void deallocate(ctx::stack_context& sc) noexcept {
    free_bases.push_back(static_cast<char*>(sc.sp) - sc.size - page);
  }
};
struct PooledStack {
  StackPool* pool;
  ctx::stack_context allocate() { return pool->allocate(); }
  void deallocate(ctx::stack_context& sc) noexcept { pool->deallocate(sc); }
};

// ---------------------------------------------------------------------------------------------
// Block state

enum class State : uint8_t { waiting_start, ready, at_barrier, at_warp, exited };

struct ThreadSlot {
  ctx::fiber fiber;
  State state = State::waiting_start;
  uint3 idx{};
  // The synchronization point the thread waits at, and its operands.
  const char* file = nullptr;
  int line = 0;
  WarpOp op = WarpOp::sync;
  int barrier_kind = -1;  // -1: __syncthreads, 0/1/2: _count/_and/_or
  unsigned mask = 0;
  int arg = 0;
  int width = 32;
  uint64_t value = 0;
  uint64_t result = 0;
};

struct Block {
  const LaunchConfig* config = nullptr;
  void (*body)(const void*) = nullptr;
  void (*plain_loop)(const void*, const PlainLoop&) = nullptr;
  std::vector<uint3> thread_idx;  // threads[t].idx, contiguous for the plain loop
  bool stop_plain = false;        // fiber_mode || failed: ends the plain loop
  const void* closure = nullptr;
  int nthreads = 0;
  std::vector<ThreadSlot> threads;
  std::vector<int> order;  // schedule order of thread indices
  dim3 indexed_dim{0, 0, 0};  // block shape that threads[].idx and order were computed for
  Schedule ordered_as = Schedule::forward;
  std::mt19937_64 rng;
  bool randomize_each_round = false;
  ctx::fiber scheduler;  // continuation of the scheduler while a fiber runs
  int current = 0;       // thread index of the running fiber
  bool fiber_mode = false;
  int runner_pos = 0;
  int waiting_at_barrier = 0;
  std::vector<unsigned> warp_waiting;  // per warp: lanes waiting at a warp operation
  bool failed = false;
  std::string error;
  StackPool* pool = nullptr;
  // Counters of the current launch, added to the global statistics once at its end.
  uint64_t stat_blocks_plain = 0, stat_blocks_fibers = 0, stat_switches = 0;
};

struct Worker {
  StackPool pool;
  Block block;
  ctx::fiber runner;  // the plain-loop fiber, idle between blocks of a launch
  unsigned char* dynamic_smem = nullptr;
  size_t dynamic_smem_capacity = 0;
  ~Worker() { std::free(dynamic_smem); }
};
static thread_local Worker* tl_worker = nullptr;
static thread_local Block* tl_block = nullptr;
static thread_local unsigned char* tl_dynamic_smem = nullptr;

static Worker& worker() {
  // One Worker per OS thread for the life of the thread (the block threads persist).
  static thread_local std::unique_ptr<Worker> w;
  if (!w) {
    w = std::make_unique<Worker>();
    w->pool.usable = (options().stack_bytes + w->pool.page - 1) / w->pool.page * w->pool.page;
  }
  tl_worker = w.get();
  return *w;
}

static std::string dim_str(uint3 d) {
  std::ostringstream s;
  s << "(" << d.x << "," << d.y << "," << d.z << ")";
  return s.str();
}

static std::string where(const Block& b) {
  std::ostringstream s;
  s << "kernel '" << b.config->kernel_name << "' (launched at " << b.config->file << ":"
    << b.config->line << ") block " << dim_str(tl_block_idx);
  return s.str();
}

static std::string thread_str(const Block& b, int t) {
  std::ostringstream s;
  s << "thread " << dim_str(b.threads[t].idx) << " (warp " << t / 32 << " lane " << t % 32 << ")";
  return s.str();
}

static std::string site_str(const char* file, int line) {
  return std::string(file ? file : "?") + ":" + std::to_string(line);
}
static bool same_site(const ThreadSlot& a, const ThreadSlot& b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

static const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::shfl_idx: return "__shfl_sync";
    case WarpOp::shfl_up: return "__shfl_up_sync";
    case WarpOp::shfl_down: return "__shfl_down_sync";
    case WarpOp::shfl_xor: return "__shfl_xor_sync";
    case WarpOp::ballot: return "__ballot_sync";
    case WarpOp::any: return "__any_sync";
    case WarpOp::all: return "__all_sync";
    case WarpOp::sync: return "__syncwarp";
    case WarpOp::reduce_add: return "__reduce_add_sync";
    case WarpOp::reduce_min: return "__reduce_min_sync";
    case WarpOp::reduce_max: return "__reduce_max_sync";
    case WarpOp::reduce_and: return "__reduce_and_sync";
    case WarpOp::reduce_or: return "__reduce_or_sync";
    case WarpOp::reduce_xor: return "__reduce_xor_sync";
    case WarpOp::match_any: return "__match_any_sync";
    case WarpOp::wmma_load: return "nvcuda::wmma::load_matrix_sync";
    case WarpOp::wmma_store: return "nvcuda::wmma::store_matrix_sync";
    case WarpOp::wmma_mma: return "nvcuda::wmma::mma_sync";
  }
  return "?";
}

[[noreturn]] static void device_error(const Block& b, const std::string& what) {
  throw KernelError("emu: " + where(b) + ": " + what);
}

static void set_thread_indices(const Block& b, int t) { tl_thread_idx = b.threads[t].idx; }

// Runs the kernel body for thread t in the current fiber; an exception (a detected bug, or an
// exception from the kernel) marks the block failed. Boost's forced_unwind must pass through.
static void run_thread(Block& b, int t) {
  try {
    if (t >= 0)
      b.body(b.closure);
    else  // the plain loop over the block's threads
      b.plain_loop(b.closure, PlainLoop{b.ordered_as == Schedule::forward ? nullptr : b.order.data(),
                                        (int)b.order.size(), b.thread_idx.data(), &b.stop_plain});
  } catch (const ctx::detail::forced_unwind&) {
    throw;
  } catch (const std::exception& e) {
    if (!b.failed) {
      b.failed = true;
      b.stop_plain = true;
      b.error = e.what();
    }
  } catch (...) {
    if (!b.failed) {
      b.failed = true;
      b.stop_plain = true;
      b.error = "emu: " + where(b) + ": unknown exception from kernel";
    }
  }
}

static ctx::fiber make_thread_fiber(Block& b, int t) {
  Block* bp = &b;
  return ctx::fiber(std::allocator_arg, PooledStack{b.pool}, [bp, t](ctx::fiber&& sched) {
    bp->scheduler = std::move(sched);
    run_thread(*bp, t);
    bp->threads[t].state = State::exited;
    return std::move(bp->scheduler);
  });
}

// From inside a fiber: back to the scheduler until it resumes this fiber.
static void yield_to_scheduler(Block& b) { b.scheduler = std::move(b.scheduler).resume(); }

// First synchronization point reached by a block in plain mode: the runner fiber becomes the
// current thread's fiber, the threads not yet started get fibers of their own.
// The plain loop publishes only threadIdx (it is the hot loop): recover the running thread and its
// position in the schedule order from it.
static void locate_plain_thread(Block& b) {
  const dim3& bd = tl_block_dim;
  const uint3 t = tl_thread_idx;
  b.current = (int)(t.x + bd.x * (t.y + bd.y * t.z));
  b.runner_pos = (int)(std::find(b.order.begin(), b.order.end(), b.current) - b.order.begin());
}

static void enter_fiber_mode(Block& b) {
  if (b.fiber_mode) return;
  locate_plain_thread(b);
  b.fiber_mode = true;
  b.stop_plain = true;
  // Plain mode keeps no per-thread state (it is the hot loop): derive it from the position.
  for (int p = 0; p < b.runner_pos; p++) b.threads[b.order[p]].state = State::exited;
  b.threads[b.order[b.runner_pos]].state = State::ready;
  for (size_t p = b.runner_pos + 1; p < b.order.size(); p++) {
    int t = b.order[p];
    b.threads[t].fiber = make_thread_fiber(b, t);
    b.threads[t].state = State::ready;
  }
}

static Block& current_block(const char* what) {
  if (!tl_block) fail("emu: ", what, " called outside a kernel launch");
  return *tl_block;
}

// ---------------------------------------------------------------------------------------------
// __syncthreads and its _count / _and / _or forms

static uint64_t barrier(int kind, int predicate, const char* file, int line) {
  Block& b = current_block("__syncthreads");
  enter_fiber_mode(b);
  const int me = b.current;
  ThreadSlot& s = b.threads[me];
  s.state = State::at_barrier;
  s.file = file;
  s.line = line;
  s.barrier_kind = kind;
  s.value = predicate != 0;
  if (++b.waiting_at_barrier == b.nthreads) {
    // Every thread of the block is here: they must all be at the same barrier.
    uint64_t count = 0;
    for (int t = 0; t < b.nthreads; t++) {
      const ThreadSlot& o = b.threads[t];
      if (!same_site(o, s) || o.barrier_kind != s.barrier_kind)
        device_error(b, "barrier divergence: " + thread_str(b, t) + " waits at the barrier at " +
                            site_str(o.file, o.line) + " while " + thread_str(b, me) +
                            " waits at " + site_str(file, line));
      count += o.value;
    }
    uint64_t result = kind == 0 ? count : kind == 1 ? (count == (uint64_t)b.nthreads) : count > 0;
    for (auto& o : b.threads) {
      o.state = State::ready;
      o.result = result;
    }
    b.waiting_at_barrier = 0;
  }
  yield_to_scheduler(b);
  return b.threads[me].result;
}

void syncthreads(const char* file, int line) { barrier(-1, 0, file, line); }
int syncthreads_reduce(int kind, int predicate, const char* file, int line) {
  return (int)barrier(kind, predicate, file, line);
}

// ---------------------------------------------------------------------------------------------
// Warp operations

static uint64_t signed_extend(uint64_t v) { return (uint64_t)(int64_t)(int32_t)(uint32_t)v; }

// All lanes of `mask` are waiting at the same warp operation: compute every lane's result.
static void complete_warp_op(Block& b, int warp_base, unsigned mask) {
  ThreadSlot* lanes = &b.threads[warp_base];
  const ThreadSlot& first = lanes[std::countr_zero(mask)];
  if (first.op == WarpOp::wmma_load || first.op == WarpOp::wmma_store || first.op == WarpOp::wmma_mma) {
    // The full mask was checked on entry: every lane's operands are on its suspended fiber.
    const WmmaCall* calls[32];
    for (int l = 0; l < 32; l++) calls[l] = reinterpret_cast<const WmmaCall*>(lanes[l].value);
    const std::string err = wmma_complete(first.op, calls);
    if (!err.empty())
      device_error(b, std::string(op_name(first.op)) + " at " + site_str(first.file, first.line) + ": " + err);
    for (int l = 0; l < 32; l++) lanes[l].state = State::ready;
    return;
  }
  uint64_t ballot = 0, reduce = 0;
  bool reduce_init = false;
  for (int l = 0; l < 32; l++) {
    if (!(mask >> l & 1u)) continue;
    const ThreadSlot& s = lanes[l];
    ballot |= (uint64_t)(s.value != 0) << l;
    uint64_t v = s.arg ? signed_extend(s.value) : s.value;
    if (!reduce_init) {
      reduce = v;
      reduce_init = true;
      continue;
    }
    switch (first.op) {
      case WarpOp::reduce_add: reduce = (uint32_t)(reduce + v); break;
      case WarpOp::reduce_and: reduce &= v; break;
      case WarpOp::reduce_or: reduce |= v; break;
      case WarpOp::reduce_xor: reduce ^= v; break;
      case WarpOp::reduce_min:
        reduce = s.arg ? (uint64_t)std::min((int64_t)reduce, (int64_t)v) : std::min(reduce, v);
        break;
      case WarpOp::reduce_max:
        reduce = s.arg ? (uint64_t)std::max((int64_t)reduce, (int64_t)v) : std::max(reduce, v);
        break;
      default: break;
    }
  }
  for (int l = 0; l < 32; l++) {
    if (!(mask >> l & 1u)) continue;
    ThreadSlot& s = lanes[l];
    const int w = s.width;
    const int segment = l & ~(w - 1);
    int src = l;
    switch (s.op) {
      case WarpOp::shfl_idx: src = segment + (s.arg & (w - 1)); break;
      case WarpOp::shfl_up: src = (l - segment) >= s.arg ? l - s.arg : l; break;
      case WarpOp::shfl_down: src = (l - segment) + s.arg < w ? l + s.arg : l; break;
      case WarpOp::shfl_xor: {
        int x = l ^ s.arg;
        src = (x >= 0 && x < segment + w) ? x : l;  // later segments: own value, as on the device
        break;
      }
      default: break;
    }
    switch (s.op) {
      case WarpOp::shfl_idx:
      case WarpOp::shfl_up:
      case WarpOp::shfl_down:
      case WarpOp::shfl_xor:
        if (!(mask >> src & 1u))
          device_error(b, std::string(op_name(s.op)) + " at " + site_str(s.file, s.line) + ": " +
                              thread_str(b, warp_base + l) + " reads lane " +
                              std::to_string(src) + ", which is not in the mask 0x" +
                              [&] { std::ostringstream o; o << std::hex << mask; return o.str(); }() +
                              " (its value is undefined on the device)");
        s.result = lanes[src].value;
        break;
      case WarpOp::ballot: s.result = ballot; break;
      case WarpOp::any: s.result = ballot != 0; break;
      case WarpOp::all: s.result = ballot == mask; break;
      case WarpOp::sync: s.result = 0; break;
      case WarpOp::match_any: {
        uint64_t m = 0;
        for (int o = 0; o < 32; o++)
          if ((mask >> o & 1u) && lanes[o].value == s.value) m |= 1ull << o;
        s.result = m;
        break;
      }
      default: s.result = (uint32_t)reduce; break;
    }
  }
  for (int l = 0; l < 32; l++)
    if (mask >> l & 1u) lanes[l].state = State::ready;
}

static std::string hex(unsigned v) {
  std::ostringstream o;
  o << "0x" << std::hex << v;
  return o.str();
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                 int line) {
  Block& b = current_block(op_name(op));
  enter_fiber_mode(b);
  const int me = b.current;
  const int lane = me % 32, warp_base = me - lane;
  // Built only for an error message (this function is hot).
  auto site = [&] { return std::string(op_name(op)) + " at " + site_str(file, line); };
  if (!(mask >> lane & 1u))
    device_error(b, "warp mask mismatch: " + site() + ": " + thread_str(b, me) +
                        " calls it with mask " + hex(mask) + ", which does not include itself");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    device_error(b, site() + ": width " + std::to_string(width) + " is not a power of two <= 32");
  const int lanes_in_warp = std::min(32, b.nthreads - warp_base);
  const bool wmma = op == WarpOp::wmma_load || op == WarpOp::wmma_store || op == WarpOp::wmma_mma;
  if (wmma && lanes_in_warp < 32)
    device_error(b, site() + ": WMMA operations need all 32 lanes of the warp, but warp " +
                        std::to_string(me / 32) + " has " + std::to_string(lanes_in_warp) +
                        " threads (the block has " + std::to_string(b.nthreads) + ")");
  if (lanes_in_warp < 32 && (mask >> lanes_in_warp) != 0)
    device_error(b, "warp mask mismatch: " + site() + ": mask " + hex(mask) + " names lanes " +
                        std::to_string(lanes_in_warp) + "..31 of warp " +
                        std::to_string(me / 32) + ", which do not exist (the block has " +
                        std::to_string(b.nthreads) + " threads)");
  ThreadSlot& s = b.threads[me];
  s.state = State::at_warp;
  s.op = op;
  s.mask = mask;
  s.value = value;
  s.arg = arg;
  s.width = width;
  s.file = file;
  s.line = line;
  // Complete when every lane of the mask waits here with the same mask. The per-warp bitmask of
  // waiting lanes avoids scanning the warp on every arrival.
  unsigned& waiting = b.warp_waiting[me / 32];
  waiting |= 1u << lane;
  if ((waiting & mask) == mask) {
    bool complete = true;
    for (int l = 0; l < 32; l++) {
      if (!(mask >> l & 1u)) continue;
      const ThreadSlot& o = b.threads[warp_base + l];
      if (!same_site(o, s) || o.op != op) {
        complete = false;  // it may come here later; if not, the deadlock check reports it
      } else if (o.mask != mask) {
        device_error(b, "warp mask mismatch: " + site() + ": " + thread_str(b, warp_base + l) +
                            " passed mask " + hex(o.mask) + " but " + thread_str(b, me) +
                            " passed mask " + hex(mask));
      }
    }
    if (complete) {
      complete_warp_op(b, warp_base, mask);
      waiting &= ~mask;
    }
  }
  yield_to_scheduler(b);
  return b.threads[me].result;
}

unsigned active_mask() {
  Block& b = current_block("__activemask");
  if (!b.fiber_mode) locate_plain_thread(b);
  const int me = b.current, warp_base = me - me % 32;
  unsigned m = 0;
  for (int l = 0; l < 32 && warp_base + l < b.nthreads; l++) m |= 1u << l;
  if (b.fiber_mode) {
    for (int l = 0; l < 32 && warp_base + l < b.nthreads; l++)
      if (b.threads[warp_base + l].state == State::exited) m &= ~(1u << l);
  } else {
    for (int p = 0; p < b.runner_pos; p++)  // plain mode: threads before this one have exited
      if (b.order[p] / 32 == me / 32) m &= ~(1u << (b.order[p] % 32));
  }
  return m;
}

void* dynamic_smem() { return tl_dynamic_smem; }

void device_trap(const char* file, int line) {
  Block& b = current_block("__trap");
  device_error(b, "__trap() at " + site_str(file, line));
}

// ---------------------------------------------------------------------------------------------
// Deadlock diagnosis: no fiber can run and some have not exited.

static std::string diagnose_deadlock(Block& b) {
  // A warp operation that cannot complete: find the lane of its mask that is elsewhere.
  for (int t = 0; t < b.nthreads; t++) {
    const ThreadSlot& s = b.threads[t];
    if (s.state != State::at_warp) continue;
    const int warp_base = t - t % 32;
    for (int l = 0; l < 32; l++) {
      if (!(s.mask >> l & 1u)) continue;
      const ThreadSlot& o = b.threads[warp_base + l];
      std::string elsewhere;
      if (o.state == State::exited)
        elsewhere = "has exited";
      else if (o.state == State::at_barrier)
        elsewhere = "waits at __syncthreads at " + site_str(o.file, o.line);
      else if (o.state == State::at_warp && (!same_site(o, s) || o.op != s.op))
        elsewhere = "waits at " + std::string(op_name(o.op)) + " at " + site_str(o.file, o.line);
      else
        continue;
      return "emu: " + where(b) + ": warp mask mismatch: " + thread_str(b, t) + " waits at " +
             op_name(s.op) + " at " + site_str(s.file, s.line) + " with mask " + hex(s.mask) +
             ", but lane " + std::to_string(l) + " named in the mask " + elsewhere +
             (s.op == WarpOp::wmma_load || s.op == WarpOp::wmma_store || s.op == WarpOp::wmma_mma
                  ? " (WMMA operations need all 32 lanes of the warp at the same call)"
                  : "");
    }
  }
  // A barrier that cannot complete because threads exited.
  int waiting = 0, exited = 0, first_waiting = -1, first_exited = -1;
  for (int t = 0; t < b.nthreads; t++) {
    if (b.threads[t].state == State::at_barrier) {
      waiting++;
      if (first_waiting < 0) first_waiting = t;
    } else if (b.threads[t].state == State::exited) {
      exited++;
      if (first_exited < 0) first_exited = t;
    }
  }
  if (waiting > 0) {
    const ThreadSlot& s = b.threads[first_waiting];
    return "emu: " + where(b) + ": barrier divergence: " + std::to_string(waiting) +
           " threads (first " + thread_str(b, first_waiting) + ") wait at __syncthreads at " +
           site_str(s.file, s.line) + " while " + std::to_string(exited) +
           " threads have exited (first " +
           (first_exited >= 0 ? thread_str(b, first_exited) : std::string("none")) + ")";
  }
  return "emu: " + where(b) + ": deadlock (no thread of the block can make progress)";
}

// ---------------------------------------------------------------------------------------------
// Running one block

static void build_order(Block& b, Schedule schedule) {
  b.order.resize(b.nthreads);
  for (int t = 0; t < b.nthreads; t++) b.order[t] = t;
  if (schedule == Schedule::reverse) std::reverse(b.order.begin(), b.order.end());
  if (schedule == Schedule::random) std::shuffle(b.order.begin(), b.order.end(), b.rng);
}

static void run_block(Block& b, uint64_t block_linear) {
  const Options& opts = options();
  const dim3 bd = tl_block_dim;
  const int nthreads = (int)(bd.x * bd.y * bd.z);
  // Thread indices and the schedule order depend only on the block shape: computed once per
  // shape, not per block (divisions per thread would dominate barrier-free kernels).
  const bool same_shape = b.nthreads == nthreads && b.indexed_dim.x == bd.x &&
                          b.indexed_dim.y == bd.y && b.indexed_dim.z == bd.z &&
                          b.ordered_as == opts.schedule && opts.schedule != Schedule::random;
  b.nthreads = nthreads;
  if (!same_shape) {
    b.threads.resize(nthreads);
    b.thread_idx.resize(nthreads);
    for (int t = 0; t < nthreads; t++)
      b.thread_idx[t] = b.threads[t].idx =
          uint3{(unsigned)(t % bd.x), (unsigned)(t / bd.x % bd.y), (unsigned)(t / (bd.x * bd.y))};
    b.indexed_dim = bd;
  }
  b.randomize_each_round = opts.schedule == Schedule::random;
  if (b.randomize_each_round) b.rng.seed(opts.seed * 0x9E3779B97F4A7C15ull + block_linear);
  if (!same_shape) build_order(b, opts.schedule);
  b.ordered_as = opts.schedule;
  b.fiber_mode = !opts.fast_path;
  b.stop_plain = b.fiber_mode;
  b.waiting_at_barrier = 0;
  b.warp_waiting.assign((nthreads + 31) / 32, 0u);
  b.failed = false;
  b.error.clear();
  b.pool = &tl_worker->pool;
  tl_block = &b;
  uint64_t switches = 0;

  if (!b.fiber_mode) {
    // Plain mode: the runner fiber calls the kernel for each thread in schedule order. It serves
    // block after block of the launch, until one of them switches to fibers: then the runner
    // becomes that thread's fiber and the next block gets a new runner.
    ctx::fiber& runner = tl_worker->runner;
    if (!runner) {
      Block* bp = &b;
      runner = ctx::fiber(std::allocator_arg, PooledStack{b.pool}, [bp](ctx::fiber&& sched) {
        bp->scheduler = std::move(sched);
        for (;;) {
          run_thread(*bp, -1);
          if (bp->fiber_mode) {
            // The thread that switched the block to fibers has now finished; so has this fiber.
            bp->threads[bp->current].state = State::exited;
            break;
          }
          bp->scheduler = std::move(bp->scheduler).resume();  // block done: wait for the next
        }
        return std::move(bp->scheduler);
      });
    }
    runner = std::move(runner).resume();
    switches++;
    if (b.fiber_mode) b.threads[b.current].fiber = std::move(runner);  // now a thread's fiber
  } else {
    for (int t = 0; t < b.nthreads; t++) {
      b.threads[t].fiber = make_thread_fiber(b, t);
      b.threads[t].state = State::ready;
    }
  }

  if (b.fiber_mode) {
    b.stat_blocks_fibers++;
    while (!b.failed) {
      if (b.randomize_each_round) std::shuffle(b.order.begin(), b.order.end(), b.rng);
      bool ran = false;
      for (int t : b.order) {
        ThreadSlot& s = b.threads[t];
        if (s.state != State::ready) continue;
        b.current = t;
        set_thread_indices(b, t);
        s.fiber = std::move(s.fiber).resume();
        switches++;
        ran = true;
        if (b.failed) break;
      }
      if (b.failed) break;
      bool all_exited = true;
      for (int t = 0; t < b.nthreads && all_exited; t++)
        all_exited = b.threads[t].state == State::exited;
      if (all_exited) break;
      if (!ran) {
        b.failed = true;
        b.error = diagnose_deadlock(b);
      }
    }
    // Finished or failed: unwind the fibers that are still suspended (forced_unwind).
    for (auto& s : b.threads) s.fiber = ctx::fiber();
  } else {
    b.stat_blocks_plain++;
  }
  b.stat_switches += switches;
  tl_block = nullptr;
}

// ---------------------------------------------------------------------------------------------
// The OS threads that run blocks: the launching thread plus helpers that sleep between launches.
// (Not an OpenMP team: it would spin-wait between the many short launches of a test, which on a
// loaded machine costs more wall time than it saves.) The thread count follows
// omp_get_max_threads(), so OMP_NUM_THREADS and --threads bound it as for the CPU backend. A helper joins a launch
// only if it wakes while the launch is still open, so a launch never waits for a sleeping helper.
// Each launching host thread has its own helpers (ranks as threads launch concurrently).

class BlockThreads {
 public:
  ~BlockThreads() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (auto& t : helpers_) t.join();
  }
  // Runs body() on the calling thread and on up to `extra` helper threads.
  void run(int extra, const std::function<void()>& body) {
    while ((int)helpers_.size() < extra) helpers_.emplace_back([this] { helper_loop(); });
    if (extra > 0) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        body_ = &body;
        slots_ = extra;
        job_++;
      }
      wake_.notify_all();
    }
    body();
    if (extra > 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      slots_ = 0;  // closed: helpers that wake up now stay out
      done_.wait(lock, [&] { return running_ == 0; });
      body_ = nullptr;
    }
  }

 private:
  void helper_loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return quit_ || job_ != seen; });
      if (quit_) return;
      seen = job_;
      if (slots_ == 0) continue;
      slots_--;
      running_++;
      const std::function<void()>* body = body_;
      lock.unlock();
      (*body)();
      lock.lock();
      if (--running_ == 0) done_.notify_all();
    }
  }
  std::vector<std::thread> helpers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void()>* body_ = nullptr;
  uint64_t job_ = 0;
  int slots_ = 0, running_ = 0;
  bool quit_ = false;
};

static BlockThreads& block_threads() {
  static thread_local BlockThreads threads;
  return threads;
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t chunks = (n + grain - 1) / grain;
  const int threads = (int)std::min<int64_t>(chunks, omp_get_max_threads());
  std::atomic<int64_t> next{0};
  std::function<void()> body = [&] {
    for (int64_t c; (c = next.fetch_add(1)) < chunks;)
      fn(c * grain, std::min(n, (c + 1) * grain));
  };
  block_threads().run(threads - 1, body);
}

// ---------------------------------------------------------------------------------------------
// Launch

static void validate_launch(const LaunchConfig& c, size_t static_smem) {
  auto bad = [&](const std::string& what) {
    throw KernelError("emu: kernel '" + std::string(c.kernel_name) + "' (launched at " + c.file +
                      ":" + std::to_string(c.line) + "): " + what +
                      " (cudaErrorInvalidConfiguration on the device)");
  };
  const dim3 b = c.block, g = c.grid;
  if (b.x == 0 || b.y == 0 || b.z == 0) bad("block dimension 0");
  if (g.x == 0 || g.y == 0 || g.z == 0) bad("grid dimension 0");
  if (b.x > 1024 || b.y > 1024 || b.z > 64)
    bad("block " + dim_str(uint3{b.x, b.y, b.z}) + " exceeds the maximum (1024,1024,64)");
  if ((uint64_t)b.x * b.y * b.z > (uint64_t)kMaxThreadsPerBlock)
    bad(std::to_string((uint64_t)b.x * b.y * b.z) + " threads per block exceed the limit of " +
        std::to_string(kMaxThreadsPerBlock));
  if (g.x > 2147483647u || g.y > 65535u || g.z > 65535u)
    bad("grid " + dim_str(uint3{g.x, g.y, g.z}) + " exceeds the maximum (2^31-1,65535,65535)");
  // Shared memory: static (the kernel's own __shared__ variables; those of device helpers are
  // not attributed to a kernel and not counted) plus dynamic must fit 48 KiB, unless the dynamic
  // part was raised with cudaFuncSetAttribute, up to 227 KiB in all.
  const size_t dyn = c.dynamic_smem_bytes;
  if (static_smem > kSharedPerBlockDefault)
    bad(std::to_string(static_smem) + " bytes of static shared memory exceed 48 KiB "
        "(nvcc rejects this kernel; use dynamic shared memory)");
  const size_t attribute = max_dynamic_smem(c.kernel);
  const bool raised = attribute != kSharedPerBlockDefault;
  if (!raised && static_smem + dyn > kSharedPerBlockDefault)
    bad(std::to_string(dyn) + " bytes of dynamic shared memory (+" + std::to_string(static_smem) +
        " static) exceed the 49152 allowed (raise it with cudaFuncSetAttribute(kernel, "
        "cudaFuncAttributeMaxDynamicSharedMemorySize, bytes))");
  if (raised && dyn > attribute)
    bad(std::to_string(dyn) + " bytes of dynamic shared memory exceed the " +
        std::to_string(attribute) + " set with cudaFuncSetAttribute");
  if (static_smem + dyn > kSharedPerBlockOptin)
    bad(std::to_string(static_smem + dyn) + " bytes of shared memory exceed the " +
        std::to_string(kSharedPerBlockOptin) + " a block can have");
}

constexpr size_t kSmemGuardBytes = 256;  // after the dynamic shared memory, checked per block

void launch(const LaunchConfig& config, void (*body)(const void*),
            void (*plain_loop)(const void*, const PlainLoop&), const void* closure) {
  if (tl_block)
    throw KernelError("emu: kernel '" + std::string(config.kernel_name) + "' launched at " +
                      config.file + ":" + std::to_string(config.line) +
                      " from device code (dynamic parallelism is not emulated)");
  const std::shared_ptr<const SharedFill> shared_fill = shared_fill_for(config.kernel);
  validate_launch(config, shared_fill->kernel_static_bytes);
  g_launches++;
  const Options opts = options();
  const uint64_t nblocks = (uint64_t)config.grid.x * config.grid.y * config.grid.z;
  // Block order: forward, reverse, or a seeded permutation.
  std::vector<uint64_t> block_order;
  if (opts.schedule != Schedule::forward) {
    block_order.resize(nblocks);
    for (uint64_t i = 0; i < nblocks; i++) block_order[i] = i;
    if (opts.schedule == Schedule::reverse) std::reverse(block_order.begin(), block_order.end());
    if (opts.schedule == Schedule::random) {
      std::mt19937_64 rng(opts.seed ^ 0xC0FFEEull);
      std::shuffle(block_order.begin(), block_order.end(), rng);
    }
  }
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string error;
  const int os_threads = (int)std::min<uint64_t>(nblocks, (uint64_t)omp_get_max_threads());
  const size_t smem = config.dynamic_smem_bytes;

  std::function<void()> run_blocks = [&] {
    Worker& w = worker();
    tl_grid_dim = config.grid;
    tl_block_dim = config.block;
    if (w.dynamic_smem_capacity < smem + kSmemGuardBytes) {
      std::free(w.dynamic_smem);
      w.dynamic_smem_capacity = smem + kSmemGuardBytes;
      w.dynamic_smem = static_cast<unsigned char*>(
          std::aligned_alloc(128, (w.dynamic_smem_capacity + 127) / 128 * 128));
    }
    tl_dynamic_smem = smem > 0 ? w.dynamic_smem : nullptr;
    Block& b = w.block;
    b.stat_blocks_plain = b.stat_blocks_fibers = b.stat_switches = 0;
    b.config = &config;
    b.body = body;
    b.plain_loop = plain_loop;
    b.closure = closure;
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) break;
      const uint64_t k = next.fetch_add(1);
      if (k >= nblocks) break;
      const uint64_t id = block_order.empty() ? k : block_order[k];
      tl_block_idx = config.grid.y == 1 && config.grid.z == 1
                         ? uint3{(unsigned)id, 0, 0}
                         : uint3{(unsigned)(id % config.grid.x),
                                 (unsigned)(id / config.grid.x % config.grid.y),
                                 (unsigned)(id / ((uint64_t)config.grid.x * config.grid.y))};
      // Shared memory starts as NaN in every block, static and dynamic alike.
      fill_static_shared_with_nan(*shared_fill);
      if (smem > 0) std::memset(w.dynamic_smem, kNanByte, smem + kSmemGuardBytes);
      run_block(b, id);
      std::string block_error;
      if (b.failed) {
        block_error = b.error;
      } else if (smem > 0) {
        uint64_t guard[kSmemGuardBytes / 8];
        std::memcpy(guard, w.dynamic_smem + smem, kSmemGuardBytes);
        uint64_t all = ~0ull;
        for (uint64_t word : guard) all &= word;
        if (all != ~0ull) {
          size_t i = 0;
          while (w.dynamic_smem[smem + i] == kNanByte) i++;
          block_error = "emu: " + where(b) + ": write past the end of the " +
                        std::to_string(smem) + " bytes of dynamic shared memory (at byte " +
                        std::to_string(smem + i) + ")";
        }
      }
      if (!block_error.empty()) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (error.empty()) error = block_error;
        failed = true;
      }
    }
    w.runner = ctx::fiber();  // unwinds the idle runner (its stack returns to the pool)
    tl_dynamic_smem = nullptr;
    g_blocks_plain += b.stat_blocks_plain;
    g_blocks_fibers += b.stat_blocks_fibers;
    g_fiber_switches += b.stat_switches;
  };
  block_threads().run(os_threads - 1, run_blocks);
  if (!error.empty()) throw KernelError(error);
  std::string guard = check_guard_zones();
  if (!guard.empty())
    throw KernelError("emu: kernel '" + std::string(config.kernel_name) + "' (launched at " +
                      config.file + ":" + std::to_string(config.line) + "): " + guard);
}

}  // namespace emu
