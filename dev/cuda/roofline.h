// Datasheet ceilings of the GPUs the engine targets, for the roofline columns of the kernel
// benchmarks (dev/cuda/kernel_bench) and the MFU of scripts/gpu_check.sh.
//
// A kernel's floor time is max(bytes / memory bandwidth, FLOPs / peak of the unit it runs on);
// "% of roof" is that floor over the measured time. The units: HBM bandwidth, dense bf16 on the
// tensor cores (cuBLASLt matmuls), and plain fp32 FMA on the CUDA cores (the flash-attention
// kernels of kernels/cuda/attention.cuh compute in fp32 without tensor cores).
//
// Sources (vendor datasheets; dense = without 2:4 sparsity, i.e. half the headline figure):
//   H100 SXM5 80GB  NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100):
//                   HBM3 3.35 TB/s, BF16 tensor 1,979 TFLOPS with sparsity = 989.4 dense,
//                   FP32 67 TFLOPS.
//   H100 PCIe 80GB  same datasheet: 2.0 TB/s, BF16 1,513 sparse = 756.5 dense, FP32 51 TFLOPS.
//   H100 NVL        same datasheet: 3.9 TB/s, BF16 1,671 sparse = 835.5 dense, FP32 60 TFLOPS.
//   H200 SXM 141GB  NVIDIA H200 datasheet (nvidia.com/en-us/data-center/h200): HBM3e 4.8 TB/s,
//                   BF16 1,979 sparse = 989.4 dense, FP32 67 TFLOPS (the H100 SXM's compute).
//   H200 NVL        same datasheet: 4.8 TB/s, BF16 1,671 sparse = 835.5 dense, FP32 60 TFLOPS.
//   A100 SXM4 80GB  NVIDIA A100 datasheet (nvidia.com/en-us/data-center/a100): 2.039 TB/s,
//                   BF16 312 TFLOPS dense, FP32 19.5 TFLOPS.
// Datasheet rates are upper bounds: on this workplace's H200 a device-to-device copy moved about
// 4.3 TB/s (read + write) and an 8192^3 bf16 matmul ran at 770-800 TFLOP/s (the device tool's
// notes, 2026-10/11); kernel_bench measures both again ("ceilings") on every run.
#pragma once
#include <cstring>

struct GpuCard {
  const char* name;      // short name, printed
  const char* match;     // substring of cudaDeviceProp::name that identifies it
  double hbm_tb_s;       // memory bandwidth, TB/s
  double bf16_tflops;    // dense bf16 tensor-core peak, TFLOP/s
  double fp32_tflops;    // non-tensor fp32 peak, TFLOP/s
};

inline const GpuCard* gpu_cards(int* count) {
  // More specific names first: "H200 NVL" before "H200", "H100 PCIe"/"H100 NVL" before "H100".
  static const GpuCard cards[] = {
      {"H200 NVL", "H200 NVL", 4.8, 835.5, 60.0},  {"H200 SXM", "H200", 4.8, 989.4, 66.9},
      {"H100 PCIe", "H100 PCIe", 2.0, 756.5, 51.2}, {"H100 NVL", "H100 NVL", 3.9, 835.5, 60.0},
      {"H100 SXM", "H100", 3.35, 989.4, 66.9},      {"A100 SXM4 80GB", "A100", 2.039, 312.0, 19.5},
  };
  *count = (int)(sizeof(cards) / sizeof(cards[0]));
  return cards;
}

// The card of an NVIDIA device name (cudaDeviceProp::name, "NVIDIA H200", "NVIDIA H100 80GB HBM3")
// holding its match string, or of a short name (--card "H100 SXM"); unknown devices, and the CPU
// emulator, are measured against the H100 SXM (then `assumed` is set).
inline const GpuCard& gpu_card_for(const char* device_name, bool* assumed) {
  int n = 0;
  const GpuCard* cards = gpu_cards(&n);
  const bool nvidia = std::strncmp(device_name, "NVIDIA ", 7) == 0;
  for (int i = 0; i < n; i++)
    if ((nvidia && std::strstr(device_name, cards[i].match)) || std::strcmp(device_name, cards[i].name) == 0) {
      *assumed = false;
      return cards[i];
    }
  *assumed = true;
  for (int i = 0; i < n; i++)
    if (std::strcmp(cards[i].name, "H100 SXM") == 0) return cards[i];
  return cards[0];
}
