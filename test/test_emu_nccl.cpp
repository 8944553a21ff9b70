// The NCCL fake: collectives with 1, 2, 3 and 4 ranks running as threads, in place and out of
// place, fp32 / bf16 / int32, every reduction op, groups, single-thread ncclCommInitAll, and the
// error paths (disagreeing ranks, a buffer too small).
#include <catch2/catch.hpp>

#include <nccl.h>

#include <cmath>
#include <functional>
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
