// The per-kernel benchmark harness (dev/cuda/) on the CUDA emulator at its smoke shape: every
// kernel family runs every case, each case's outputs are fully written and finite (the harness
// poisons them with NaN first), and the roofline arithmetic and card lookup are right. The timings
// themselves mean nothing here (the emulator times host work) and are not checked.
#include <catch2/catch.hpp>

#include <set>

#include "dev/cuda/bench.h"
#include "dev/cuda/families.h"

TEST_CASE("kernel benchmarks: every family runs at the smoke shape and writes finite outputs") {
  BenchShape s;
  REQUIRE(bench_shape("smoke", &s));
  Bench b(s, 0, 1);
  run_bench_families(b, {});
  std::set<std::string> families;
  for (const BenchResult& r : b.results) {
    INFO(r.family << " / " << r.name);
    families.insert(r.family);
    REQUIRE(r.outputs_ok);
    REQUIRE(r.bytes > 0);
    REQUIRE(r.shape == "smoke");
  }
  REQUIRE(families.size() == bench_families().size());
  REQUIRE(b.results.size() >= 20);
}

TEST_CASE("kernel benchmarks: an output left unwritten, or a NaN, fails the case") {
  BenchShape s;
  REQUIRE(bench_shape("smoke", &s));
  Bench b(s, 0, 1);
  DevBuf<float> x(1000), y(1000);
  x.random(1);
  b.run("writes nothing", 4000, 0, Roof::memory, {out(y)}, [] {});
  b.run("copies", 8000, 0, Roof::memory, {out(y)},
        [&] { CUDA_CHECK(cudaMemcpy(y.p, x.p, x.bytes(), cudaMemcpyDeviceToDevice)); });
  CUDA_CHECK(cudaMemset(x.p + 10, 0xFF, 4));  // one NaN in the source
  b.run("copies a NaN", 8000, 0, Roof::memory, {out(y)},
        [&] { CUDA_CHECK(cudaMemcpy(y.p, x.p, x.bytes(), cudaMemcpyDeviceToDevice)); });
  REQUIRE(b.results.size() == 3);
  REQUIRE_FALSE(b.results[0].outputs_ok);
  REQUIRE(b.results[1].outputs_ok);
  REQUIRE_FALSE(b.results[2].outputs_ok);
}

TEST_CASE("roofline: card lookup by device name and the floor time of a case") {
  bool assumed = true;
  REQUIRE(std::string(gpu_card_for("NVIDIA H200", &assumed).name) == "H200 SXM");
  REQUIRE_FALSE(assumed);
  REQUIRE(std::string(gpu_card_for("NVIDIA H200 NVL", &assumed).name) == "H200 NVL");
  REQUIRE(std::string(gpu_card_for("NVIDIA H100 80GB HBM3", &assumed).name) == "H100 SXM");
  REQUIRE(std::string(gpu_card_for("NVIDIA H100 PCIe", &assumed).name) == "H100 PCIe");
  REQUIRE(std::string(gpu_card_for("NVIDIA A100-SXM4-80GB", &assumed).name) == "A100 SXM4 80GB");
  REQUIRE(std::string(gpu_card_for("CUDA emulator (H100-like limits)", &assumed).name) == "H100 SXM");
  REQUIRE(assumed);
  const GpuCard& h200 = gpu_card_for("NVIDIA H200", &assumed);
  BenchResult r;
  r.bytes = 4.8e12;  // one second of HBM traffic
  r.flops = 0;
  r.roof = Roof::memory;
  REQUIRE(roof_ms(r, h200) == Approx(1000.0));
  r.flops = 2 * 989.4e12;  // two seconds of dense bf16: the math bound wins
  r.roof = Roof::bf16_tensor;
  REQUIRE(roof_ms(r, h200) == Approx(2000.0));
  r.roof = Roof::fp32;  // the same FLOPs on the CUDA cores
  REQUIRE(roof_ms(r, h200) == Approx(2 * 989.4 / 66.9 * 1000.0));
}
