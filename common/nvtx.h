// Named phase markers (forward, backward, optimizer, eval, checkpoint) for profilers.
// In the CPU build they compile to nothing; the CUDA build maps them to NVTX ranges so that an
// nsys timeline shows the phases of each training step.
//
//   { NVTX_RANGE("forward"); ... }   // the range lasts until the end of the enclosing scope
#pragma once

#if defined(ENGINE_USE_NVTX)
#include <nvtx3/nvToolsExt.h>
struct NvtxScopedRange {
  explicit NvtxScopedRange(const char* name) { nvtxRangePushA(name); }
  ~NvtxScopedRange() { nvtxRangePop(); }
};
#define NVTX_CONCAT_INNER(a, b) a##b
#define NVTX_CONCAT(a, b) NVTX_CONCAT_INNER(a, b)
#define NVTX_RANGE(name) NvtxScopedRange NVTX_CONCAT(nvtx_range_, __LINE__)(name)
#else
#define NVTX_RANGE(name) ((void)0)
#endif
