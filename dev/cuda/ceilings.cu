// The two ceilings measured on the card itself (METHOD: datasheet rates are upper bounds):
//   copy : a device-to-device cudaMemcpy of copy_bytes, counting bytes read plus written;
//   gemm : an M = N = K bf16 matmul through cuBLASLt (random operands; zeros run faster).
// Shapes with copy_bytes / gemm_ceiling 0 skip them (they do not depend on the model shape).
#include "dev/cuda/bench.h"
#include "kernels/cuda/matmul.cuh"

void bench_ceilings(Bench& b) {
  const BenchShape& s = b.shape();
  if (s.copy_bytes > 0) {
    DevBuf<float> src(s.copy_bytes / 4), dst(s.copy_bytes / 4);
    src.random(1);
    b.run("device-to-device copy", 2.0 * src.bytes(), 0, Roof::memory, {out(dst)},
          [&] { CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, src.bytes(), cudaMemcpyDeviceToDevice, 0)); },
          std::to_string(s.copy_bytes >> 20) + " MiB");
  }
  if (s.gemm_ceiling > 0) {
    const int n = s.gemm_ceiling;
    MatmulContext ctx;
    matmul_context_create(ctx);
    {
      DevBuf<bf16> x((size_t)n * n), w((size_t)n * n), y((size_t)n * n);
      x.random(2);
      w.random(3, 0.02f);
      b.run("bf16 matmul " + std::to_string(n) + "^3", 6.0 * n * (double)n, 2.0 * n * (double)n * n, Roof::bf16_tensor,
            {out(y)}, [&] { linear_forward(ctx, y, false, x, w, nullptr, n, n, n, 0); });
    }
    matmul_context_destroy(ctx);
  }
}
