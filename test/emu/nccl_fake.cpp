// CUDA emulation: a fake of the NCCL subset the project calls, with the exact signatures of
// <nccl.h>. "Device" buffers are host memory. Ranks are threads of one process or separate
// processes (`mpirun -np 2 build/train_llama_emu --device cuda ...`): the communicators of a
// group meet in one shared segment, a POSIX shared-memory object named from the unique id
// (ncclCommInitRank; rank 0 unlinks the name once every rank has mapped it) or anonymous memory
// (ncclCommInitAll, every rank in the calling process).
//
// A collective runs in rounds that move at most kSlotBytes per rank (a long buffer takes several).
// In a round every rank writes a descriptor of its call and its part of the send buffer into its
// own slot, then publishes the round number (`posted`). Once every rank has posted, each rank
// checks the descriptors (kind, count, type, op, root; a buffer outside its allocation) and
// computes ITS OWN output from all the slots: reductions in rank order with fp32 accumulation for
// fp16/bf16/fp32 (fp64 for fp64), rounded once to the type, so every rank and every run gets the
// same bits. It then publishes that it has read the round (`consumed`); a rank rewrites its slot
// only after every rank has read the previous round. No lock is held across a wait, so a rank that
// dies wedges nothing: a waiting rank polls, reports at once a rank whose process is gone
// (kill(pid, 0)), and gives up after EMU_NCCL_TIMEOUT_S seconds (default 300), naming the ranks it
// waited for (ncclRemoteError; the communicator is then unusable). A disagreement or a bad buffer
// is seen by every rank in the same round, so every rank returns the error (ncclInvalidUsage /
// ncclInvalidArgument, text from ncclGetLastError) and the communicator stays usable.
// ncclCommInitRank waits for every rank to join (same timeout), except inside a group.
//
// Groups: between ncclGroupStart and ncclGroupEnd the calls of a thread are queued; ncclGroupEnd
// runs them, in order per communicator, on one thread per communicator when the thread queued
// calls for several (the single-thread, many-GPU pattern of ncclCommInitAll).
// Supported: ncclGetUniqueId, ncclCommInitRank(Config), ncclCommInitAll, ncclCommDestroy /
// Finalize / Abort, ncclCommCount / UserRank / CuDevice, ncclAllReduce, ncclReduce, ncclBroadcast,
// ncclBcast, ncclAllGather, ncclReduceScatter, ncclGroupStart / End, ncclGetErrorString,
// ncclGetLastError, ncclGetVersion. Not faked: send/recv, split, user-defined reduction ops.
// Streams: a call on the default stream runs when it is issued; a call (or a group's calls) on a
// created stream is queued on it and runs when the stream runs (test/emu/runtime.cpp), so its
// buffers are read then, and a failure found then is thrown (an emu::KernelError with the
// message) from the wait that ran it. A communicator's calls must run in the order they were
// issued, as NCCL needs: a call while earlier calls of its communicator are still queued on
// another stream is refused (ncclInvalidUsage).
#include <nccl.h>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test/emu/emu_internal.h"

namespace {

enum class Kind { all_reduce, reduce, broadcast, all_gather, reduce_scatter };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::all_reduce: return "ncclAllReduce";
    case Kind::reduce: return "ncclReduce";
    case Kind::broadcast: return "ncclBroadcast";
    case Kind::all_gather: return "ncclAllGather";
    case Kind::reduce_scatter: return "ncclReduceScatter";
  }
  return "?";
}

struct Call {
  Kind kind;
  const void* send;
  void* recv;
  size_t count;  // per the NCCL signature: recvcount for ReduceScatter, sendcount for AllGather
  ncclDataType_t type;
  ncclRedOp_t op;
  int root;
  std::string bad_buffer;  // a range error found by this rank before posting
  cudaStream_t stream = nullptr;
};

constexpr int kMaxRanks = 16;
constexpr size_t kSlotBytes = size_t(1) << 20;
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<int32_t>::is_always_lock_free,
              "the shared segment needs address-free atomics");

// What a rank posts for one round (the whole call, not just the round's part).
struct Desc {
  int32_t kind, type, op, root;
  uint64_t count;
  uint64_t call;  // calls this rank made on the communicator before this one
  char bad_buffer[256];
};

struct alignas(64) Slot {
  std::atomic<uint64_t> posted, consumed;  // rounds posted / read by this rank
  std::atomic<int32_t> pid;                // 0 until the rank joins
  Desc desc;
};

// The shared segment: zero-filled when created (shm ftruncate, anonymous mmap), which is the
// initial state. The data area (kMaxRanks * kSlotBytes) follows; pages never written are never
// allocated, so the fixed size costs only address space.
struct Segment {
  std::atomic<int32_t> nranks;
  Slot slots[kMaxRanks];
};
constexpr size_t kSegmentBytes = sizeof(Segment) + kMaxRanks * kSlotBytes;

unsigned char* slot_data(Segment* s, int r) { return reinterpret_cast<unsigned char*>(s + 1) + r * kSlotBytes; }

struct Mapping {
  Segment* seg = nullptr;
  std::string shm_name;  // "" = anonymous
  ~Mapping() {
    if (seg) munmap(seg, kSegmentBytes);
  }
};

double timeout_seconds() {
  const char* s = std::getenv("EMU_NCCL_TIMEOUT_S");
  const double t = s ? std::atof(s) : 0.0;
  return t > 0 ? t : 300.0;
}

}  // namespace

struct ncclComm {
  ncclComm(std::shared_ptr<Mapping> m, int r, int n, int d) : map(std::move(m)), rank(r), nranks(n), device(d) {}
  std::shared_ptr<Mapping> map;
  int rank, nranks, device;
  uint64_t rounds = 0, calls = 0;
  bool unlinked = false;
  std::string last_error;
  uint64_t queued = 0;                  // calls queued on a created stream, not run yet
  cudaStream_t queued_stream = nullptr;  // that stream
};

namespace {

std::atomic<uint64_t> g_id_counter{0};
thread_local std::string tl_init_error;  // ncclGetLastError(nullptr)

thread_local int tl_group_depth = 0;
thread_local std::vector<std::pair<ncclComm*, Call>> tl_queued;

std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() > 1 ? "ranks " : "rank ";
  for (size_t i = 0; i < ranks.size(); i++) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

// A process that has exited: gone, or a zombie its parent has not reaped yet (/proc state Z or X).
bool process_gone(int32_t pid) {
  if (kill(pid, 0) != 0) return errno == ESRCH;
  char path[64], buf[512];
  std::snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE* f = std::fopen(path, "r");
  if (!f) return false;
  const size_t got = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[got] = 0;
  const char* close_paren = std::strrchr(buf, ')');  // the name may hold spaces and parentheses
  return close_paren && close_paren[1] == ' ' && (close_paren[2] == 'Z' || close_paren[2] == 'X');
}

// Waits until reached(q) holds for every rank q. Returns "" or why not: a rank whose process is
// gone, or the timeout with the ranks still missing.
template <class Pred>
std::string wait_for_ranks(ncclComm* c, Pred reached, const std::string& what) {
  Segment* seg = c->map->seg;
  const auto start = std::chrono::steady_clock::now();
  const double timeout = timeout_seconds();
  for (long spin = 0;; spin++) {
    std::vector<int> missing;
    for (int q = 0; q < c->nranks; q++)
      if (!reached(q)) missing.push_back(q);
    if (missing.empty()) return "";
    if (spin < 200) {
      sched_yield();
      continue;
    }
    if (spin % 64 == 0) {
      for (int q : missing) {
        const int32_t pid = seg->slots[q].pid.load(std::memory_order_acquire);
        if (pid > 0 && pid != getpid() && process_gone(pid))
          return "rank " + std::to_string(q) + " (pid " + std::to_string(pid) + ") exited while rank " +
                 std::to_string(c->rank) + " was waiting for it " + what;
      }
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout)
        return "timed out after " + std::to_string((int)timeout) + " s (EMU_NCCL_TIMEOUT_S) waiting for " +
               rank_list(missing) + " of " + std::to_string(c->nranks) + " " + what;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// Rank 0 removes the segment's name once every rank has mapped it: nothing is left in /dev/shm.
void unlink_when_all_mapped(ncclComm* c) {
  if (c->rank == 0 && !c->unlinked && !c->map->shm_name.empty()) shm_unlink(c->map->shm_name.c_str());
  c->unlinked = true;
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}

// Element i of a buffer, as double (exact for every supported type but 64-bit integers, which
// take the integer path below).
double load_float(const void* p, ncclDataType_t t, size_t i) {
  switch (t) {
    case ncclFloat16: return __half2float(static_cast<const __half*>(p)[i]);
    case ncclBfloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case ncclFloat32: return static_cast<const float*>(p)[i];
    case ncclFloat64: return static_cast<const double*>(p)[i];
    default: return 0;
  }
}
void store_float(void* p, ncclDataType_t t, size_t i, double v) {
  switch (t) {
    case ncclFloat16: static_cast<__half*>(p)[i] = __float2half_rn((float)v); break;
    case ncclBfloat16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn((float)v); break;
    case ncclFloat32: static_cast<float*>(p)[i] = (float)v; break;
    case ncclFloat64: static_cast<double*>(p)[i] = v; break;
    default: break;
  }
}
bool is_float(ncclDataType_t t) {
  return t == ncclFloat16 || t == ncclBfloat16 || t == ncclFloat32 || t == ncclFloat64;
}
template <class T>
T reduce_int(T a, T b, ncclRedOp_t op) {
  switch (op) {
    case ncclSum: case ncclAvg: return (T)(a + b);
    case ncclProd: return (T)(a * b);
    case ncclMax: return a > b ? a : b;
    case ncclMin: return a < b ? a : b;
    default: return a;
  }
}
template <class T>
void reduce_int_elements(const std::vector<const void*>& srcs, void* dst, size_t offset,
                         size_t count, ncclRedOp_t op) {
  for (size_t i = 0; i < count; i++) {
    T acc = static_cast<const T*>(srcs[0])[offset + i];
    for (size_t r = 1; r < srcs.size(); r++)
      acc = reduce_int(acc, static_cast<const T*>(srcs[r])[offset + i], op);
    if (op == ncclAvg) acc = (T)(acc / (T)srcs.size());
    static_cast<T*>(dst)[i] = acc;
  }
}

// dst[i] = op over ranks of src_r[offset + i], i < count.
void reduce_elements(const std::vector<const void*>& srcs, void* dst, size_t offset, size_t count,
                     ncclDataType_t t, ncclRedOp_t op) {
  if (is_float(t)) {
    const bool narrow = t == ncclFloat16 || t == ncclBfloat16 || t == ncclFloat32;
    for (size_t i = 0; i < count; i++) {
      // fp32 accumulation (fp64 for fp64) in rank order, one rounding to the storage type.
      double acc = load_float(srcs[0], t, offset + i);
      for (size_t r = 1; r < srcs.size(); r++) {
        double v = load_float(srcs[r], t, offset + i);
        switch (op) {
          case ncclSum: case ncclAvg: acc = acc + v; break;
          case ncclProd: acc = acc * v; break;
          case ncclMax: acc = acc > v ? acc : v; break;
          case ncclMin: acc = acc < v ? acc : v; break;
          default: break;
        }
        if (narrow) acc = (float)acc;
      }
      if (op == ncclAvg) acc = narrow ? (double)((float)acc / (float)srcs.size()) : acc / srcs.size();
      store_float(dst, t, i, acc);
    }
    return;
  }
  switch (t) {
    case ncclInt8: reduce_int_elements<int8_t>(srcs, dst, offset, count, op); break;
    case ncclUint8: reduce_int_elements<uint8_t>(srcs, dst, offset, count, op); break;
    case ncclInt32: reduce_int_elements<int32_t>(srcs, dst, offset, count, op); break;
    case ncclUint32: reduce_int_elements<uint32_t>(srcs, dst, offset, count, op); break;
    case ncclInt64: reduce_int_elements<int64_t>(srcs, dst, offset, count, op); break;
    case ncclUint64: reduce_int_elements<uint64_t>(srcs, dst, offset, count, op); break;
    default: break;
  }
}

// Bytes each rank sends and receives for a call.
void call_sizes(const Call& c, int nranks, size_t* send_bytes, size_t* recv_bytes) {
  const size_t es = type_size(c.type);
  switch (c.kind) {
    case Kind::all_reduce: case Kind::reduce: case Kind::broadcast:
      *send_bytes = *recv_bytes = c.count * es;
      break;
    case Kind::all_gather:
      *send_bytes = c.count * es;
      *recv_bytes = c.count * es * nranks;
      break;
    case Kind::reduce_scatter:
      *send_bytes = c.count * es * nranks;
      *recv_bytes = c.count * es;
      break;
  }
}

std::string describe(const Desc& d) {
  return std::string(kind_name(Kind(d.kind))) + " (count " + std::to_string(d.count) + ", type " +
         std::to_string(d.type) + ", op " + std::to_string(d.op) + ", root " + std::to_string(d.root) + ")";
}

// The check every rank makes once all have posted a round: "" when the calls agree.
ncclResult_t check_round(const Segment* seg, int nranks, std::string* problem) {
  for (int q = 0; q < nranks; q++)
    if (seg->slots[q].desc.bad_buffer[0]) {
      *problem = "rank " + std::to_string(q) + ": " + seg->slots[q].desc.bad_buffer;
      return ncclInvalidArgument;
    }
  const Desc& d0 = seg->slots[0].desc;
  for (int q = 1; q < nranks; q++) {
    const Desc& d = seg->slots[q].desc;
    if (d.kind != d0.kind || d.count != d0.count || d.type != d0.type || d.op != d0.op || d.root != d0.root) {
      *problem = "ranks disagree: rank 0 calls " + describe(d0) + ", rank " + std::to_string(q) + " calls " +
                 describe(d) + " (collective #" + std::to_string(d0.call + 1) + " of rank 0, #" +
                 std::to_string(d.call + 1) + " of rank " + std::to_string(q) + ")";
      return ncclInvalidUsage;
    }
  }
  return ncclSuccess;
}

ncclResult_t run_call(ncclComm* comm, Call call) {
  Segment* seg = comm->map->seg;
  const int R = comm->nranks, me = comm->rank;
  // This rank's own buffers must fit in their cudaMalloc allocations.
  size_t send_bytes = 0, recv_bytes = 0;
  call_sizes(call, R, &send_bytes, &recv_bytes);
  try {
    if (call.kind != Kind::broadcast || me == call.root)
      emu::check_device_range(kind_name(call.kind), call.send, send_bytes, "send");
    if (call.kind != Kind::reduce || me == call.root)
      emu::check_device_range(kind_name(call.kind), call.recv, recv_bytes, "receive");
  } catch (const std::exception& e) {
    call.bad_buffer = e.what();
  }
  const size_t es = type_size(call.type), n = call.count;
  const size_t per_round = call.kind == Kind::reduce_scatter ? kSlotBytes / es / R : kSlotBytes / es;
  const auto* send = static_cast<const unsigned char*>(call.send);
  auto* recv = static_cast<unsigned char*>(call.recv);
  const uint64_t call_index = comm->calls++;
  const std::string what_call = std::string("in ") + kind_name(call.kind) + " (collective #" +
                                std::to_string(call_index + 1) + " of rank " + std::to_string(me) + ")";
  Slot& mine = seg->slots[me];
  unsigned char* my_data = slot_data(seg, me);
  // One round even for count 0, so that every call is compared.
  for (size_t i0 = 0, first = 1; first || i0 < n; first = 0) {
    const size_t k = std::min(per_round, n - i0);
    const uint64_t round = ++comm->rounds;
    std::string err = wait_for_ranks(
        comm, [&](int q) { return seg->slots[q].consumed.load(std::memory_order_acquire) + 1 >= round; }, what_call);
    if (err.empty()) {
      Desc& d = mine.desc;
      d.kind = (int32_t)call.kind;
      d.type = call.type;
      d.op = call.op;
      d.root = call.root;
      d.count = n;
      d.call = call_index;
      std::snprintf(d.bad_buffer, sizeof d.bad_buffer, "%s", call.bad_buffer.c_str());
      if (call.bad_buffer.empty()) {
        if (call.kind == Kind::reduce_scatter) {
          for (int q = 0; q < R; q++) std::memcpy(my_data + q * k * es, send + (q * n + i0) * es, k * es);
        } else if (call.kind != Kind::broadcast || me == call.root) {
          std::memcpy(my_data, send + i0 * es, k * es);
        }
      }
      mine.posted.store(round, std::memory_order_release);
      err = wait_for_ranks(
          comm, [&](int q) { return seg->slots[q].posted.load(std::memory_order_acquire) >= round; }, what_call);
    }
    if (!err.empty()) {
      comm->last_error = std::string(kind_name(call.kind)) + ": " + err;
      return ncclRemoteError;
    }
    unlink_when_all_mapped(comm);
    std::string problem;
    const ncclResult_t status = check_round(seg, R, &problem);
    if (status == ncclSuccess) {
      std::vector<const void*> srcs(R);
      for (int q = 0; q < R; q++) srcs[q] = slot_data(seg, q) + (call.kind == Kind::reduce_scatter ? me * k * es : 0);
      switch (call.kind) {
        case Kind::all_reduce: case Kind::reduce_scatter:
          reduce_elements(srcs, recv + i0 * es, 0, k, call.type, call.op);
          break;
        case Kind::reduce:
          if (me == call.root) reduce_elements(srcs, recv + i0 * es, 0, k, call.type, call.op);
          break;
        case Kind::broadcast:
          std::memcpy(recv + i0 * es, slot_data(seg, call.root), k * es);
          break;
        case Kind::all_gather:
          for (int q = 0; q < R; q++) std::memcpy(recv + (q * n + i0) * es, slot_data(seg, q), k * es);
          break;
      }
    }
    mine.consumed.store(round, std::memory_order_release);
    if (status != ncclSuccess) {
      comm->last_error = std::string(kind_name(call.kind)) + ": " + problem;
      return status;
    }
    i0 += k;
  }
  return ncclSuccess;
}

// A communicator's calls run in issue order: a call on `stream` while calls of comm are queued
// on another stream is refused.
ncclResult_t check_order(ncclComm* comm, cudaStream_t stream) {
  if (comm->queued == 0 || (stream == comm->queued_stream && emu::deferred(stream))) return ncclSuccess;
  comm->last_error = "emu: a call while " + std::to_string(comm->queued) + " earlier call(s) of this communicator "
                     "are queued on another stream that nothing waited for: a communicator's calls must run in the "
                     "order they are issued";
  return ncclInvalidUsage;
}
// Queues calls of comm on a created stream; run there in order, a failure is thrown.
void enqueue_calls(ncclComm* comm, cudaStream_t stream, std::vector<Call> calls) {
  comm->queued += calls.size();
  comm->queued_stream = stream;
  emu::enqueue(stream, [comm, calls = std::move(calls)] {
    ncclResult_t st = ncclSuccess;
    for (const Call& c : calls) {
      comm->queued--;
      if (st == ncclSuccess) st = run_call(comm, c);
    }
    if (st != ncclSuccess) throw emu::KernelError("emu: NCCL " + comm->last_error);
  });
}

ncclResult_t submit(ncclComm* comm, Call call) {
  if (!comm) return ncclInvalidArgument;
  if (type_size(call.type) == 0 || (int)call.op < 0 || call.op >= ncclNumOps)
    return ncclInvalidArgument;
  if ((call.kind == Kind::reduce || call.kind == Kind::broadcast) &&
      (call.root < 0 || call.root >= comm->nranks))
    return ncclInvalidArgument;
  if (call.count > 0 && (!call.recv || (!call.send && call.kind != Kind::broadcast)))
    return ncclInvalidArgument;
  if (tl_group_depth > 0) {
    tl_queued.emplace_back(comm, std::move(call));
    return ncclSuccess;
  }
  if (const ncclResult_t st = check_order(comm, call.stream); st != ncclSuccess) return st;
  if (emu::deferred(call.stream)) {
    const cudaStream_t stream = call.stream;
    enqueue_calls(comm, stream, {std::move(call)});
    return ncclSuccess;
  }
  return run_call(comm, std::move(call));
}

}  // namespace

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return ncclInvalidArgument;
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : tl_init_error.c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return ncclInvalidArgument;
  std::memset(id->internal, 0, sizeof(id->internal));
  // The shared-memory name: unique among live processes (pid, counter) and across time (clock).
  std::snprintf(id->internal, sizeof(id->internal), "/emu-nccl-%d-%llu-%llx", (int)getpid(),
                (unsigned long long)g_id_counter.fetch_add(1),
                (unsigned long long)std::chrono::steady_clock::now().time_since_epoch().count());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  tl_init_error.clear();
  auto init_error = [&](ncclResult_t st, const std::string& msg) {
    tl_init_error = "ncclCommInitRank (rank " + std::to_string(rank) + " of " + std::to_string(nranks) + "): " + msg;
    return st;
  };
  if (!comm) return ncclInvalidArgument;
  if (nranks < 1 || nranks > kMaxRanks || rank < 0 || rank >= nranks)
    return init_error(ncclInvalidArgument, "the fake takes 1 to " + std::to_string(kMaxRanks) +
                                               " ranks, and 0 <= rank < nranks");
  const std::string name(id.internal, strnlen(id.internal, sizeof(id.internal)));
  if (name.size() < 2 || name[0] != '/') return init_error(ncclInvalidArgument, "not a unique id of this fake");
  const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT, 0600);
  if (fd < 0) return init_error(ncclSystemError, "shm_open " + name + ": " + std::strerror(errno));
  // Every rank sets the same size, so the order does not matter and nothing is ever truncated.
  void* p = ftruncate(fd, kSegmentBytes) == 0
                ? mmap(nullptr, kSegmentBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                : MAP_FAILED;
  const int saved_errno = errno;
  close(fd);
  if (p == MAP_FAILED) return init_error(ncclSystemError, "mapping " + name + ": " + std::strerror(saved_errno));
  auto map = std::make_shared<Mapping>();
  map->seg = static_cast<Segment*>(p);
  map->shm_name = name;
  Segment* seg = map->seg;
  int32_t expected = 0;
  if (!seg->nranks.compare_exchange_strong(expected, nranks) && expected != nranks)
    return init_error(ncclInvalidUsage, "another rank joined with nranks " + std::to_string(expected));
  expected = 0;
  if (!seg->slots[rank].pid.compare_exchange_strong(expected, (int32_t)getpid()))
    return init_error(ncclInvalidUsage, "rank " + std::to_string(rank) + " joined twice");
  int device = 0;
  cudaGetDevice(&device);
  auto* c = new ncclComm(map, rank, nranks, device);
  // Inside a group one thread may be initializing several ranks: the first collective waits then.
  if (tl_group_depth == 0) {
    std::string err = wait_for_ranks(
        c, [&](int q) { return seg->slots[q].pid.load(std::memory_order_acquire) != 0; }, "to join");
    if (!err.empty()) {
      shm_unlink(name.c_str());
      delete c;
      return init_error(ncclRemoteError, err);
    }
    unlink_when_all_mapped(c);
  }
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t*) {
  return ncclCommInitRank(comm, nranks, id, rank);
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  if (!comms || ndev < 1 || ndev > kMaxRanks) return ncclInvalidArgument;
  void* p = mmap(nullptr, kSegmentBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return ncclSystemError;
  auto map = std::make_shared<Mapping>();
  map->seg = static_cast<Segment*>(p);
  map->seg->nranks = ndev;
  for (int r = 0; r < ndev; r++) {
    map->seg->slots[r].pid = (int32_t)getpid();
    comms[r] = new ncclComm(map, r, ndev, devlist ? devlist[r] : r);
  }
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return comm ? ncclSuccess : ncclInvalidArgument; }
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (comm) unlink_when_all_mapped(comm);
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* error) {
  if (!comm || !error) return ncclInvalidArgument;
  *error = ncclSuccess;
  return ncclSuccess;
}
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return ncclInvalidArgument;
  *count = comm->nranks;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return ncclInvalidArgument;
  *rank = comm->rank;
  return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (!comm || !device) return ncclInvalidArgument;
  *device = comm->device;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, Call{Kind::all_reduce, send, recv, count, type, op, 0, "", stream});
}
ncclResult_t ncclReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, Call{Kind::reduce, send, recv, count, type, op, root, "", stream});
}
ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, Call{Kind::broadcast, send, recv, count, type, ncclSum, root, "", stream});
}
ncclResult_t ncclBcast(void* buff, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                       cudaStream_t stream) {
  return ncclBroadcast(buff, buff, count, type, root, comm, stream);
}
ncclResult_t ncclAllGather(const void* send, void* recv, size_t send_count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
  return submit(comm, Call{Kind::all_gather, send, recv, send_count, type, ncclSum, 0, "", stream});
}
ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recv_count,
                               ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
  return submit(comm, Call{Kind::reduce_scatter, send, recv, recv_count, type, op, 0, "", stream});
}

ncclResult_t ncclGroupStart() {
  tl_group_depth++;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (tl_group_depth == 0) return ncclInvalidUsage;
  if (--tl_group_depth > 0) return ncclSuccess;
  std::vector<std::pair<ncclComm*, Call>> queued;
  queued.swap(tl_queued);
  // Calls per communicator, in issue order.
  std::vector<ncclComm*> comms;
  for (auto& [comm, call] : queued)
    if (std::find(comms.begin(), comms.end(), comm) == comms.end()) comms.push_back(comm);
  // A group on a created stream (one communicator, one stream) is queued there as a whole.
  for (ncclComm* comm : comms) {
    cudaStream_t stream = nullptr;
    bool first = true, mixed = false;
    for (auto& [c, call] : queued)
      if (c == comm) {
        mixed |= !first && call.stream != stream;
        stream = call.stream;
        first = false;
      }
    if (const ncclResult_t st = check_order(comm, stream); st != ncclSuccess) return st;
    if (emu::deferred(stream) && (mixed || comms.size() > 1)) {
      comm->last_error = "emu: a group on a created stream must hold the calls of one communicator on one stream";
      return ncclInvalidUsage;
    }
  }
  if (queued.empty()) return ncclSuccess;
  if (comms.size() == 1 && emu::deferred(queued.front().second.stream)) {
    std::vector<Call> calls;
    for (auto& [c, call] : queued) calls.push_back(std::move(call));
    const cudaStream_t stream = calls.front().stream;
    enqueue_calls(comms[0], stream, std::move(calls));
    return ncclSuccess;
  }
  std::vector<ncclResult_t> status(comms.size(), ncclSuccess);
  std::vector<std::string> exceptions(comms.size());
  auto run_comm = [&](size_t ci) {
    try {
      for (auto& [comm, call] : queued)
        if (comm == comms[ci] && status[ci] == ncclSuccess) status[ci] = run_call(comm, call);
    } catch (const std::exception& e) {
      exceptions[ci] = e.what();
      status[ci] = ncclInternalError;
    }
  };
  if (comms.size() == 1) {
    run_comm(0);
  } else {
    std::vector<std::thread> threads;
    for (size_t ci = 0; ci < comms.size(); ci++) threads.emplace_back(run_comm, ci);
    for (auto& t : threads) t.join();
  }
  for (size_t ci = 0; ci < comms.size(); ci++)
    if (status[ci] != ncclSuccess) {
      if (!exceptions[ci].empty()) comms[ci]->last_error = exceptions[ci];
      return status[ci];
    }
  return ncclSuccess;
}
