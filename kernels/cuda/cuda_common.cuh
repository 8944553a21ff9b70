// The portable prelude of every CUDA kernel file (kernels/cuda/<op>.cuh starts by including it).
//
// The same kernel source compiles two ways:
//   - nvcc (__CUDACC__): the real CUDA runtime, bf16, cooperative groups, WMMA and cuBLASLt headers;
//   - g++ -DCUDA_EMULATION: the CPU emulator in test/emu/ (every CUDA thread is a fiber, blocks
//     run on the emulator's own threads, with barrier / warp-mask / out-of-bounds checks), which
//     defines the same names with the same meaning, so kernels run under `make test` on machines
//     with no GPU.
//
// Kernel-side rules that keep both builds identical:
//   - launch ONLY through   LAUNCH(kernel, grid, block, smem_bytes, stream)(arg1, arg2, ...);
//     (a templated kernel whose name holds a comma goes through an alias first:
//      `auto kernel = my_kernel<float, 4>; LAUNCH(kernel, ...)`);
//   - declare dynamic shared memory inside the kernel with   DYNAMIC_SMEM(float, buf);
//     then use buf[i] (the size comes from the launch; all DYNAMIC_SMEM arrays of a kernel alias
//     the same bytes, as `extern __shared__` arrays do);
//   - check runtime calls with CUDA_CHECK(call) and cuBLAS(Lt) calls with CUBLAS_CHECK(call).
#pragma once

#if defined(__CUDACC__)

#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cooperative_groups.h>
#include <cooperative_groups/reduce.h>
#include <cublasLt.h>
#include <mma.h>

#define LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>

// `extern __shared__ T name[]` with a different T in two template instances is a redeclaration
// error under nvcc, so the bytes are declared once per name as aligned chars and then typed.
#define DYNAMIC_SMEM(type, name)                                          \
  extern __shared__ __align__(16) unsigned char name##_dynamic_smem_[];  \
  type* const name = reinterpret_cast<type*>(name##_dynamic_smem_)

inline void cuda_check_failed(cudaError_t err, const char* file, int line) {
  fprintf(stderr, "[CUDA ERROR] %s:%d: %s (%s)\n", file, line, cudaGetErrorString(err),
          cudaGetErrorName(err));
  exit(EXIT_FAILURE);
}
inline void cublas_check_failed(cublasStatus_t status, const char* file, int line) {
  fprintf(stderr, "[cuBLAS ERROR] %s:%d: %s (%d)\n", file, line, cublasLtGetStatusString(status),
          (int)status);
  exit(EXIT_FAILURE);
}

#elif defined(CUDA_EMULATION)

// Defines __shared__ & co. BEFORE including the CUDA headers, then the device API on the CPU.
#include "test/emu/emu.h"

// Under emulation a failed check throws EngineError (a test can assert on it; a program's main()
// prints it and exits 1) instead of exiting the process.
#include "common/error.h"
inline void cuda_check_failed(cudaError_t err, const char* file, int line) {
  fail(file, ":", line, ": CUDA error ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
}
inline void cublas_check_failed(cublasStatus_t status, const char* file, int line) {
  fail(file, ":", line, ": cuBLAS error ", cublasLtGetStatusName(status), ": ",
       cublasLtGetStatusString(status));
}

#else
#error "kernels/cuda/*.cuh compile with nvcc, or with g++ -DCUDA_EMULATION (the CPU emulator)"
#endif

#define CUDA_CHECK(call)                                                         \
  do {                                                                           \
    cudaError_t cuda_check_err_ = (call);                                        \
    if (cuda_check_err_ != cudaSuccess)                                          \
      cuda_check_failed(cuda_check_err_, __FILE__, __LINE__);                    \
  } while (0)

#define CUBLAS_CHECK(call)                                                       \
  do {                                                                           \
    cublasStatus_t cublas_check_status_ = (call);                                \
    if (cublas_check_status_ != CUBLAS_STATUS_SUCCESS)                           \
      cublas_check_failed(cublas_check_status_, __FILE__, __LINE__);             \
  } while (0)

