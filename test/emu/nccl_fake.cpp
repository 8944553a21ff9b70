// CUDA emulation: a fake of the NCCL subset the project calls, with the exact signatures of
// <nccl.h>. Ranks are threads of one process and "device" buffers are host memory, so a
// collective is a rendezvous: every rank posts its call, the last one to arrive checks that the
// calls agree (kind, count, type, op, root), computes every rank's output from all the send
// buffers (reductions in rank order, fp32 accumulation for fp16/bf16, rounded once), and then
// each rank copies its own result out. Streams are synchronous, so a call returns when done.
//
// Groups: between ncclGroupStart and ncclGroupEnd the calls of a thread are queued; ncclGroupEnd
// runs them, in order per communicator, on one thread per communicator when the thread queued
// calls for several (the single-thread, many-GPU pattern of ncclCommInitAll).
// Supported: ncclGetUniqueId, ncclCommInitRank(Config), ncclCommInitAll, ncclCommDestroy /
// Finalize / Abort, ncclCommCount / UserRank / CuDevice, ncclAllReduce, ncclReduce, ncclBroadcast,
// ncclBcast, ncclAllGather, ncclReduceScatter, ncclGroupStart / End, ncclGetErrorString,
// ncclGetLastError, ncclGetVersion. Not faked: send/recv, split, user-defined reduction ops.
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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
};

struct Group {
  int nranks;
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<Call> posted;
  int joined = 0;  // ranks that called ncclCommInitRank
  int arrived = 0;
  uint64_t generation = 0;
  ncclResult_t status = ncclSuccess;
  std::string error;
  std::vector<std::vector<unsigned char>> results;
  explicit Group(int n) : nranks(n), posted(n), results(n) {}
};

}  // namespace

struct ncclComm {
  std::shared_ptr<Group> group;
  int rank;
  int device;
  std::string last_error;
};

namespace {

std::mutex g_registry_mutex;
std::map<std::string, std::shared_ptr<Group>> g_pending;  // unique id -> group being joined
std::atomic<uint64_t> g_id_counter{0};

thread_local int tl_group_depth = 0;
thread_local std::vector<std::pair<ncclComm*, Call>> tl_queued;

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

// Run by the last rank to arrive, under the group's mutex: check, then compute every output.
void compute_all(Group& g) {
  const Call& c0 = g.posted[0];
  g.status = ncclSuccess;
  g.error.clear();
  for (int r = 0; r < g.nranks; r++) {
    const Call& c = g.posted[r];
    if (!c.bad_buffer.empty()) {
      g.status = ncclInvalidArgument;
      g.error = "rank " + std::to_string(r) + ": " + c.bad_buffer;
      return;
    }
    if (c.kind != c0.kind || c.count != c0.count || c.type != c0.type || c.op != c0.op ||
        c.root != c0.root) {
      g.status = ncclInvalidUsage;
      g.error = std::string("ranks disagree: rank 0 calls ") + kind_name(c0.kind) + " (count " +
                std::to_string(c0.count) + ", type " + std::to_string(c0.type) + ", op " +
                std::to_string(c0.op) + ", root " + std::to_string(c0.root) + "), rank " +
                std::to_string(r) + " calls " + kind_name(c.kind) + " (count " +
                std::to_string(c.count) + ", type " + std::to_string(c.type) + ", op " +
                std::to_string(c.op) + ", root " + std::to_string(c.root) + ")";
      return;
    }
  }
  const size_t es = type_size(c0.type), n = c0.count;
  std::vector<const void*> sends(g.nranks);
  for (int r = 0; r < g.nranks; r++) sends[r] = g.posted[r].send;
  for (int r = 0; r < g.nranks; r++) {
    size_t send_bytes = 0, recv_bytes = 0;
    call_sizes(g.posted[r], g.nranks, &send_bytes, &recv_bytes);
    std::vector<unsigned char>& out = g.results[r];
    switch (c0.kind) {
      case Kind::all_reduce:
        out.resize(recv_bytes);
        reduce_elements(sends, out.data(), 0, n, c0.type, c0.op);
        break;
      case Kind::reduce:
        out.resize(r == c0.root ? recv_bytes : 0);  // only the root receives
        if (r == c0.root) reduce_elements(sends, out.data(), 0, n, c0.type, c0.op);
        break;
      case Kind::broadcast:
        out.assign(static_cast<const unsigned char*>(sends[c0.root]),
                   static_cast<const unsigned char*>(sends[c0.root]) + n * es);
        break;
      case Kind::all_gather:
        out.resize(recv_bytes);
        for (int s = 0; s < g.nranks; s++) std::memcpy(out.data() + s * n * es, sends[s], n * es);
        break;
      case Kind::reduce_scatter:
        out.resize(recv_bytes);
        reduce_elements(sends, out.data(), (size_t)r * n, n, c0.type, c0.op);
        break;
    }
  }
}

ncclResult_t run_call(ncclComm* comm, Call call) {
  Group& g = *comm->group;
  // This rank's own buffers must fit in their cudaMalloc allocations.
  size_t send_bytes = 0, recv_bytes = 0;
  call_sizes(call, g.nranks, &send_bytes, &recv_bytes);
  try {
    if (call.kind != Kind::broadcast || comm->rank == call.root)
      emu::check_device_range(kind_name(call.kind), call.send, send_bytes, "send");
    if (call.kind != Kind::reduce || comm->rank == call.root)
      emu::check_device_range(kind_name(call.kind), call.recv, recv_bytes, "receive");
  } catch (const std::exception& e) {
    call.bad_buffer = e.what();
  }
  std::unique_lock<std::mutex> lock(g.mutex);
  const uint64_t generation = g.generation;
  g.posted[comm->rank] = call;
  if (++g.arrived == g.nranks) {
    compute_all(g);
    g.arrived = 0;
    g.generation++;
    g.cv.notify_all();
  } else {
    g.cv.wait(lock, [&] { return g.generation != generation; });
  }
  const ncclResult_t status = g.status;
  if (status != ncclSuccess) {
    comm->last_error = std::string(kind_name(call.kind)) + ": " + g.error;
    return status;
  }
  lock.unlock();
  // results[rank] is only rewritten by a later call, which needs this rank to post first.
  const std::vector<unsigned char>& out = g.results[comm->rank];
  if (!out.empty()) std::memmove(call.recv, out.data(), out.size());
  return ncclSuccess;
}

ncclResult_t submit(ncclComm* comm, Call call) {
  if (!comm) return ncclInvalidArgument;
  if (type_size(call.type) == 0 || (int)call.op < 0 || call.op >= ncclNumOps)
    return ncclInvalidArgument;
  if ((call.kind == Kind::reduce || call.kind == Kind::broadcast) &&
      (call.root < 0 || call.root >= comm->group->nranks))
    return ncclInvalidArgument;
  if (call.count > 0 && (!call.recv || (!call.send && call.kind != Kind::broadcast)))
    return ncclInvalidArgument;
  if (tl_group_depth > 0) {
    tl_queued.emplace_back(comm, std::move(call));
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

const char* ncclGetLastError(ncclComm_t comm) { return comm ? comm->last_error.c_str() : ""; }

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return ncclInvalidArgument;
  std::memset(id->internal, 0, sizeof(id->internal));
  std::snprintf(id->internal, sizeof(id->internal), "emu-nccl-%llu",
                (unsigned long long)g_id_counter.fetch_add(1));
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (!comm || nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  const std::string key(id.internal, strnlen(id.internal, sizeof(id.internal)));
  std::shared_ptr<Group> group;
  {
    std::lock_guard<std::mutex> lock(g_registry_mutex);
    auto& slot = g_pending[key];
    if (!slot) slot = std::make_shared<Group>(nranks);
    if (slot->nranks != nranks) return ncclInvalidArgument;
    group = slot;
    if (++group->joined == nranks) g_pending.erase(key);  // complete: the id may be reused
  }
  int device = 0;
  cudaGetDevice(&device);
  *comm = new ncclComm{group, rank, device, ""};
  // No wait for the other ranks here: the first collective is the rendezvous (so grouped or
  // single-threaded initialization cannot deadlock).
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t*) {
  return ncclCommInitRank(comm, nranks, id, rank);
}

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  if (!comms || ndev < 1) return ncclInvalidArgument;
  auto group = std::make_shared<Group>(ndev);
  for (int r = 0; r < ndev; r++) comms[r] = new ncclComm{group, r, devlist ? devlist[r] : r, ""};
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return comm ? ncclSuccess : ncclInvalidArgument; }
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
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
  *count = comm->group->nranks;
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
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t) {
  return submit(comm, Call{Kind::all_reduce, send, recv, count, type, op, 0, ""});
}
ncclResult_t ncclReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t) {
  return submit(comm, Call{Kind::reduce, send, recv, count, type, op, root, ""});
}
ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t) {
  return submit(comm, Call{Kind::broadcast, send, recv, count, type, ncclSum, root, ""});
}
ncclResult_t ncclBcast(void* buff, size_t count, ncclDataType_t type, int root, ncclComm_t comm,
                       cudaStream_t stream) {
  return ncclBroadcast(buff, buff, count, type, root, comm, stream);
}
ncclResult_t ncclAllGather(const void* send, void* recv, size_t send_count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t) {
  return submit(comm, Call{Kind::all_gather, send, recv, send_count, type, ncclSum, 0, ""});
}
ncclResult_t ncclReduceScatter(const void* send, void* recv, size_t recv_count,
                               ncclDataType_t type, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t) {
  return submit(comm, Call{Kind::reduce_scatter, send, recv, recv_count, type, op, 0, ""});
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
