// SwiGLU (kernels/cuda/swiglu.cuh) on the fused [N, 2I] gate|up rows. Memory-bound:
// forward reads 4NI and writes 2NI bytes; backward reads 6NI (dh, gate, up) and writes 4NI.
#include "dev/cuda/bench.h"
#include "kernels/cuda/swiglu.cuh"

void bench_swiglu(Bench& b) {
  const BenchShape& s = b.shape();
  const size_t NI = (size_t)s.tokens() * s.I;
  DevBuf<bf16> gate_up(2 * NI), h(NI), dh(NI), dgate_up(2 * NI);
  gate_up.random(1, 3.0f);
  dh.random(2, 0.1f);
  b.run("forward", 6.0 * NI, 0, Roof::memory, {out(h)}, [&] { swiglu_forward(h, gate_up, s.tokens(), s.I, 0); });
  b.run("backward", 10.0 * NI, 0, Roof::memory, {out(dgate_up)},
        [&] { swiglu_backward(dgate_up, dh, gate_up, s.tokens(), s.I, 0); });
}
