// The NCCL fake: collectives with 1, 2, 3 and 4 ranks running as threads, in place and out of
// place, fp32 / bf16 / int32, every reduction op, groups, single-thread ncclCommInitAll, and the
// error paths (disagreeing ranks, a buffer too small); then ranks as forked processes: long buffers,
// rank-order reduction, disagreement on every rank, a dead or missing rank named in the error.
#include <catch2/catch.hpp>

#include <nccl.h>

#include <cmath>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <thread>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"

namespace {

#define NCCL_REQUIRE(call) REQUIRE((call) == ncclSuccess)

// Runs body(rank, comm) on nranks threads sharing one communicator.
void run_ranks(int nranks, const std::function<void(int, ncclComm_t)>& body) {
  emu::set_device_count(8);
  ncclUniqueId id;
  REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  std::vector<std::thread> threads;
  std::vector<std::string> failures(nranks);
  for (int r = 0; r < nranks; r++)
    threads.emplace_back([&, r] {
      try {
        if (cudaSetDevice(r) != cudaSuccess) throw std::runtime_error("cudaSetDevice");
        ncclComm_t comm;
        if (ncclCommInitRank(&comm, nranks, id, r) != ncclSuccess)
          throw std::runtime_error("ncclCommInitRank");
        body(r, comm);
        ncclCommDestroy(comm);
      } catch (const std::exception& e) {
        failures[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < nranks; r++) {
    INFO("rank " << r);
    REQUIRE(failures[r] == "");
  }
}

// Catch2 assertions are not thread-safe: the rank threads throw, the main thread asserts.
void expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

template <class T>
T* device_copy(const std::vector<T>& host) {
  T* p;
  CUDA_CHECK(cudaMalloc(&p, host.size() * sizeof(T)));
  CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}
template <class T>
std::vector<T> host_copy(const T* p, size_t n) {
  std::vector<T> host(n);
  CUDA_CHECK(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

// Rank r's input element i: distinct per rank and element, exactly representable in bf16.
float value(int r, size_t i) { return (float)((int)(i % 13) - 6 + 16 * r) * 0.25f; }

}  // namespace

TEST_CASE("NCCL fake: collectives are correct for 1, 2, 3 and 4 ranks", "[emu]") {
  const size_t n = 37;  // per-rank count; not a multiple of anything
  for (int nranks = 1; nranks <= 4; nranks++) {
    INFO(nranks << " ranks");
    run_ranks(nranks, [&](int r, ncclComm_t comm) {
      int count = 0, rank = -1, device = -1;
      expect(ncclCommCount(comm, &count) == ncclSuccess && count == nranks, "count");
      expect(ncclCommUserRank(comm, &rank) == ncclSuccess && rank == r, "rank");
      expect(ncclCommCuDevice(comm, &device) == ncclSuccess && device == r, "device");
      std::vector<float> mine(n);
      for (size_t i = 0; i < n; i++) mine[i] = value(r, i);
      float* send = device_copy(mine);
      float* recv;
      CUDA_CHECK(cudaMalloc(&recv, n * nranks * sizeof(float)));

      for (ncclRedOp_t op : {ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg}) {
        expect(ncclAllReduce(send, recv, n, ncclFloat32, op, comm, 0) == ncclSuccess, "allreduce");
        auto out = host_copy(recv, n);
        for (size_t i = 0; i < n; i++) {
          float e = value(0, i);
          for (int s = 1; s < nranks; s++) {
            float v = value(s, i);
            e = op == ncclSum || op == ncclAvg ? e + v : op == ncclProd ? e * v
                : op == ncclMax ? std::max(e, v) : std::min(e, v);
          }
          if (op == ncclAvg) e /= nranks;
          expect(out[i] == e, "allreduce op " + std::to_string(op) + " element " + std::to_string(i));
        }
      }
      // In place, bf16.
      std::vector<__nv_bfloat16> mine_bf16(n);
      for (size_t i = 0; i < n; i++) mine_bf16[i] = __float2bfloat16(value(r, i));
      __nv_bfloat16* inplace = device_copy(mine_bf16);
      expect(ncclAllReduce(inplace, inplace, n, ncclBfloat16, ncclSum, comm, 0) == ncclSuccess, "bf16");
      auto out_bf16 = host_copy(inplace, n);
      for (size_t i = 0; i < n; i++) {
        float e = 0;
        for (int s = 0; s < nranks; s++) e += value(s, i);
        expect(__bfloat162float(out_bf16[i]) == __bfloat162float(__float2bfloat16(e)), "bf16 sum");
      }
      // int32 sum through ncclReduce to the last rank.
      std::vector<int> ints(n);
      for (size_t i = 0; i < n; i++) ints[i] = (int)i * (r + 1);
      int* dints = device_copy(ints);
      int* dints_out = device_copy(std::vector<int>(n, -7));
      const int root = nranks - 1;
      expect(ncclReduce(dints, dints_out, n, ncclInt32, ncclSum, root, comm, 0) == ncclSuccess, "reduce");
      auto reduced = host_copy(dints_out, n);
      for (size_t i = 0; i < n; i++)
        expect(reduced[i] == (r == root ? (int)i * nranks * (nranks + 1) / 2 : -7), "reduce value");
      // Broadcast from the last rank.
      expect(ncclBroadcast(send, recv, n, ncclFloat32, root, comm, 0) == ncclSuccess, "broadcast");
      auto bcast = host_copy(recv, n);
      for (size_t i = 0; i < n; i++) expect(bcast[i] == value(root, i), "broadcast value");
      // AllGather: rank s's chunk at s * n.
      expect(ncclAllGather(send, recv, n, ncclFloat32, comm, 0) == ncclSuccess, "allgather");
      auto gathered = host_copy(recv, n * nranks);
      for (int s = 0; s < nranks; s++)
        for (size_t i = 0; i < n; i++) expect(gathered[s * n + i] == value(s, i), "allgather value");
      // ReduceScatter: rank r gets the sum of chunk r.
      std::vector<float> big(n * nranks);
      for (size_t i = 0; i < big.size(); i++) big[i] = value(r, i);
      float* dbig = device_copy(big);
      expect(ncclReduceScatter(dbig, recv, n, ncclFloat32, ncclSum, comm, 0) == ncclSuccess, "rs");
      auto scattered = host_copy(recv, n);
      for (size_t i = 0; i < n; i++) {
        float e = 0;
        for (int s = 0; s < nranks; s++) e += value(s, r * n + i);
        expect(scattered[i] == e, "reducescatter value");
      }
      // A group of two calls.
      expect(ncclGroupStart() == ncclSuccess, "group start");
      expect(ncclAllReduce(send, recv, n, ncclFloat32, ncclMax, comm, 0) == ncclSuccess, "g1");
      expect(ncclAllGather(send, dbig, n, ncclFloat32, comm, 0) == ncclSuccess, "g2");
      expect(ncclGroupEnd() == ncclSuccess, "group end");
      auto gmax = host_copy(recv, n);
      for (size_t i = 0; i < n; i++) expect(gmax[i] == value(nranks - 1, i), "grouped max");
      for (void* p : {(void*)send, (void*)recv, (void*)inplace, (void*)dints, (void*)dints_out,
                      (void*)dbig})
        cudaFree(p);
    });
  }
}

TEST_CASE("NCCL fake: one thread drives every rank through ncclCommInitAll and a group", "[emu]") {
  const int nranks = 3;
  const size_t n = 10;
  std::vector<ncclComm_t> comms(nranks);
  NCCL_REQUIRE(ncclCommInitAll(comms.data(), nranks, nullptr));
  std::vector<float*> bufs(nranks);
  for (int r = 0; r < nranks; r++) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = value(r, i);
    bufs[r] = device_copy(v);
  }
  NCCL_REQUIRE(ncclGroupStart());
  for (int r = 0; r < nranks; r++)
    NCCL_REQUIRE(ncclAllReduce(bufs[r], bufs[r], n, ncclFloat32, ncclSum, comms[r], 0));
  NCCL_REQUIRE(ncclGroupEnd());
  for (int r = 0; r < nranks; r++) {
    auto out = host_copy(bufs[r], n);
    for (size_t i = 0; i < n; i++) REQUIRE(out[i] == value(0, i) + value(1, i) + value(2, i));
    cudaFree(bufs[r]);
    ncclCommDestroy(comms[r]);
  }
}

TEST_CASE("NCCL fake: disagreeing ranks and short buffers are errors on every rank", "[emu]") {
  std::vector<ncclResult_t> results(2);
  run_ranks(2, [&](int r, ncclComm_t comm) {
    float* buf = device_copy(std::vector<float>(8, 1.0f));
    // rank 1 passes a different count
    results[r] = ncclAllReduce(buf, buf, r == 0 ? 8 : 4, ncclFloat32, ncclSum, comm, 0);
    if (r == 0) expect(std::string(ncclGetLastError(comm)).find("ranks disagree") !=
                           std::string::npos, "message");
    // then a receive buffer too small for the AllGather on rank 0 (8 floats, needs 16)
    ncclResult_t st = ncclAllGather(buf, buf, 8, ncclFloat32, comm, 0);
    expect(st == ncclInvalidArgument, "short buffer is rejected on rank " + std::to_string(r));
    expect(std::string(ncclGetLastError(comm)).find("outside the 32-byte") != std::string::npos,
           "short buffer message");
    cudaFree(buf);
  });
  REQUIRE(results[0] == ncclInvalidUsage);
  REQUIRE(results[1] == ncclInvalidUsage);
}

// ---- ranks as separate processes ----------------------------------------------------------------

namespace {

// Forks one process per rank in `ranks` (of nranks), each joining the communicator of one unique
// id and running body(rank, comm), which returns "" or a failure text. Returns each rank's text
// (or that of its ncclCommInitRank failure). `timeout_s` is the fake's EMU_NCCL_TIMEOUT_S.
// A rank in `die_after_init` exits right after joining, before any collective.
std::map<int, std::string> run_processes(int nranks, const std::vector<int>& ranks, double timeout_s,
                                         const std::function<std::string(int, ncclComm_t)>& body) {
  ncclUniqueId id;
  REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  const std::string dir = "build/test/tmp_nccl_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<pid_t> pids;
  for (int r : ranks) {
    pid_t pid = fork();
    if (pid == 0) {
      setenv("EMU_NCCL_TIMEOUT_S", std::to_string(timeout_s).c_str(), 1);
      std::string out;
      try {
        ncclComm_t comm;
        if (ncclCommInitRank(&comm, nranks, id, r) != ncclSuccess) {
          out = std::string("init: ") + ncclGetLastError(nullptr);
        } else {
          out = body(r, comm);
          ncclCommDestroy(comm);
        }
      } catch (const std::exception& e) {
        out = std::string("exception: ") + e.what();
      }
      std::ofstream(dir + "/rank" + std::to_string(r)) << out;
      std::fflush(nullptr);
      _exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t p : pids) waitpid(p, nullptr, 0);
  std::map<int, std::string> res;
  for (int r : ranks) {
    std::ifstream f(dir + "/rank" + std::to_string(r));
    res[r] = std::string(std::istreambuf_iterator<char>(f), {});
  }
  std::filesystem::remove_all(dir);
  return res;
}

std::string check_ok(ncclResult_t st, ncclComm_t comm, const std::string& what) {
  return st == ncclSuccess ? "" : what + ": " + ncclGetErrorString(st) + ": " + ncclGetLastError(comm);
}

}  // namespace

// On a created stream a call is queued (test/emu/README.md): its buffers are read when the stream
// runs, which a missing wait would show; and a communicator's calls run in issue order.
TEST_CASE("NCCL fake: calls on a created stream run when the stream is waited for, in issue order", "[emu]") {
  const size_t n = 37;
  run_ranks(2, [&](int r, ncclComm_t comm) {
    cudaStream_t comm_stream;
    cudaEvent_t reduced;
    CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreate(&reduced));
    std::vector<float> x(n);
    for (size_t i = 0; i < n; i++) x[i] = value(r, i);
    float* d = device_copy(x);
    expect(ncclGroupStart() == ncclSuccess && ncclAllReduce(d, d, n, ncclFloat32, ncclSum, comm, comm_stream) ==
           ncclSuccess && ncclGroupEnd() == ncclSuccess, "queued all-reduce");
    CUDA_CHECK(cudaEventRecord(reduced, comm_stream));
    expect(host_copy(d, n) == x, "the queued all-reduce ran before anything waited for it");
    // Writing the buffer before the wait changes what the queued call reads (on both ranks).
    for (size_t i = 0; i < n; i++) x[i] = value(r, i) + 1.0f;
    CUDA_CHECK(cudaMemcpy(d, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    // A call on the default stream would run before the queued one: refused.
    expect(ncclAllReduce(d, d, n, ncclFloat32, ncclSum, comm, 0) == ncclInvalidUsage, "out-of-order call refused");
    expect(std::string(ncclGetLastError(comm)).find("queued on another stream") != std::string::npos,
           ncclGetLastError(comm));
    CUDA_CHECK(cudaStreamWaitEvent(0, reduced, 0));
    const std::vector<float> y = host_copy(d, n);
    for (size_t i = 0; i < n; i++) expect(y[i] == value(0, i) + value(1, i) + 2.0f, "sum of what was there at the wait");
    CUDA_CHECK(cudaFree(d));
    CUDA_CHECK(cudaEventDestroy(reduced));
    CUDA_CHECK(cudaStreamDestroy(comm_stream));
  });
}

TEST_CASE("NCCL fake: collectives between 3 processes, long buffers in several rounds", "[emu]") {
  const int nranks = 3;
  // 300k floats per rank: over the fake's 1 MiB per round, so several rounds per call.
  const size_t n = 300000;
  std::map<int, std::string> res = run_processes(nranks, {0, 1, 2}, 60, [&](int r, ncclComm_t comm) -> std::string {
    std::vector<float> mine(n), big(n * nranks);
    for (size_t i = 0; i < n; i++) mine[i] = value(r, i);
    for (size_t i = 0; i < big.size(); i++) big[i] = value(r, i);
    float* send = device_copy(mine);
    float* dbig = device_copy(big);
    float* recv;
    CUDA_CHECK(cudaMalloc(&recv, n * nranks * sizeof(float)));
    std::string e;
    if (!(e = check_ok(ncclAllReduce(send, recv, n, ncclFloat32, ncclSum, comm, 0), comm, "allreduce")).empty()) return e;
    auto sum = host_copy(recv, n);
    for (size_t i = 0; i < n; i++)
      if (sum[i] != value(0, i) + value(1, i) + value(2, i)) return "allreduce element " + std::to_string(i);
    // bf16 in place
    std::vector<__nv_bfloat16> h16(n);
    for (size_t i = 0; i < n; i++) h16[i] = __float2bfloat16(value(r, i));
    __nv_bfloat16* d16 = device_copy(h16);
    if (!(e = check_ok(ncclAllReduce(d16, d16, n, ncclBfloat16, ncclSum, comm, 0), comm, "bf16")).empty()) return e;
    auto s16 = host_copy(d16, n);
    for (size_t i = 0; i < n; i++)
      if (__bfloat162float(s16[i]) != __bfloat162float(__float2bfloat16(value(0, i) + value(1, i) + value(2, i))))
        return "bf16 element " + std::to_string(i);
    // reduce-scatter, then all-gather of the pieces: the whole sum of `big`
    if (!(e = check_ok(ncclReduceScatter(dbig, recv + r * n, n, ncclFloat32, ncclSum, comm, 0), comm, "rs")).empty())
      return e;
    if (!(e = check_ok(ncclAllGather(recv + r * n, recv, n, ncclFloat32, comm, 0), comm, "ag")).empty()) return e;
    auto all = host_copy(recv, n * nranks);
    for (size_t i = 0; i < n * nranks; i++)
      if (all[i] != value(0, i) + value(1, i) + value(2, i)) return "rs+ag element " + std::to_string(i);
    // broadcast from rank 2
    if (!(e = check_ok(ncclBroadcast(send, recv, n, ncclFloat32, 2, comm, 0), comm, "bcast")).empty()) return e;
    auto b = host_copy(recv, n);
    for (size_t i = 0; i < n; i++)
      if (b[i] != value(2, i)) return "broadcast element " + std::to_string(i);
    for (void* p : {(void*)send, (void*)dbig, (void*)recv, (void*)d16}) cudaFree(p);
    return "";
  });
  for (int r = 0; r < nranks; r++) {
    INFO("rank " << r);
    REQUIRE(res[r] == "");
  }
}

TEST_CASE("NCCL fake: processes reduce in rank order, so the result is the same bits every run", "[emu]") {
  // fp32: (1e8 + 1) - 1e8 = 0 in rank order, while 1 + (1e8 - 1e8) = 1: the order shows.
  const float v[3] = {1e8f, 1.0f, -1e8f};
  for (int run = 0; run < 2; run++) {
    std::map<int, std::string> res = run_processes(3, {2, 0, 1}, 60, [&](int r, ncclComm_t comm) -> std::string {
      float* d = device_copy(std::vector<float>(5, v[r]));
      std::string e = check_ok(ncclAllReduce(d, d, 5, ncclFloat32, ncclSum, comm, 0), comm, "allreduce");
      if (!e.empty()) return e;
      for (float x : host_copy(d, 5))
        if (x != (v[0] + v[1]) + v[2]) return "not the rank-order sum: " + std::to_string(x);
      return "";
    });
    for (int r = 0; r < 3; r++) REQUIRE(res[r] == "");
  }
}

TEST_CASE("NCCL fake: processes that disagree get the error on every rank", "[emu]") {
  std::map<int, std::string> res = run_processes(2, {0, 1}, 60, [&](int r, ncclComm_t comm) -> std::string {
    float* d = device_copy(std::vector<float>(8, 1.0f));
    // rank 1 calls a broadcast where rank 0 calls an all-reduce
    ncclResult_t st = r == 0 ? ncclAllReduce(d, d, 8, ncclFloat32, ncclSum, comm, 0)
                             : ncclBroadcast(d, d, 8, ncclFloat32, 0, comm, 0);
    if (st != ncclInvalidUsage) return "expected ncclInvalidUsage";
    const std::string msg = ncclGetLastError(comm);
    // the communicator stays usable
    std::string e = check_ok(ncclAllReduce(d, d, 8, ncclFloat32, ncclSum, comm, 0), comm, "after");
    return e.empty() ? msg : e;
  });
  for (int r = 0; r < 2; r++) {
    INFO(res[r]);
    REQUIRE(res[r].find("ranks disagree: rank 0 calls ncclAllReduce (count 8") != std::string::npos);
    REQUIRE(res[r].find("rank 1 calls ncclBroadcast") != std::string::npos);
  }
}

TEST_CASE("NCCL fake: a rank that dies or never comes is named, never a hang", "[emu]") {
  // Rank 1 exits after joining: rank 0's all-reduce reports it (at once, not after the timeout).
  std::map<int, std::string> res = run_processes(2, {0, 1}, 60, [&](int r, ncclComm_t comm) -> std::string {
    if (r == 1) _exit(3);
    float* d = device_copy(std::vector<float>(4, 1.0f));
    ncclResult_t st = ncclAllReduce(d, d, 4, ncclFloat32, ncclSum, comm, 0);
    return st == ncclRemoteError ? ncclGetLastError(comm) : "expected ncclRemoteError";
  });
  INFO(res[0]);
  REQUIRE(res[0].find("rank 1 (pid ") != std::string::npos);
  REQUIRE(res[0].find("exited") != std::string::npos);
  // Rank 2 of 3 never starts: the others' ncclCommInitRank times out naming it.
  res = run_processes(3, {0, 1}, 1.0, [&](int, ncclComm_t) -> std::string { return "joined"; });
  for (int r = 0; r < 2; r++) {
    INFO(res[r]);
    REQUIRE(res[r].find("init: ncclCommInitRank (rank " + std::to_string(r) + " of 3): timed out after 1 s") == 0);
    REQUIRE(res[r].find("waiting for rank 2 of 3 to join") != std::string::npos);
  }
}
