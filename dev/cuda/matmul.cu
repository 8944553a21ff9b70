// The decoder layer's linear layers through cuBLASLt (kernels/cuda/matmul.cuh) at the batch's N
// tokens: bf16 operands, fp32 accumulation; FLOPs 2 N I O each, bytes the operands and result
// once. The gate_up projection (the largest) also runs its two backward GEMMs (input gradient in
// bf16, weight gradient accumulated in fp32), and the LM head its forward to fp32 logits for one
// cross-entropy chunk of ce_rows tokens.
#include "dev/cuda/bench.h"
#include "kernels/cuda/matmul.cuh"

void bench_matmul(Bench& b) {
  const BenchShape& s = b.shape();
  const int N = s.tokens(), C = s.C, HD = s.H * s.D;
  MatmulContext ctx;
  matmul_context_create(ctx);
  struct Linear {
    const char* name;
    int in, out;
  };
  const Linear layers[] = {{"qkv", C, s.qkv_width()}, {"o", HD, C}, {"gate_up", C, 2 * s.I}, {"down", s.I, C}};
  for (const Linear& l : layers) {
    DevBuf<bf16> x((size_t)N * l.in), w((size_t)l.out * l.in), y((size_t)N * l.out);
    x.random(1);
    w.random(2, 0.02f);
    const double flops = 2.0 * N * l.in * l.out;
    b.run(std::string(l.name) + " forward", 2.0 * ((double)N * l.in + (double)l.out * l.in + (double)N * l.out), flops,
          Roof::bf16_tensor, {out(y)}, [&] { linear_forward(ctx, y, false, x, w, nullptr, N, l.in, l.out, 0); },
          std::to_string(N) + "x" + std::to_string(l.in) + " . " + std::to_string(l.in) + "x" + std::to_string(l.out));
    if (std::string(l.name) == "gate_up") {
      DevBuf<bf16> dx((size_t)N * l.in);
      DevBuf<float> dw((size_t)l.out * l.in);
      dw.zero();
      b.run("gate_up backward input", 2.0 * ((double)N * l.out + (double)l.out * l.in + (double)N * l.in), flops,
            Roof::bf16_tensor, {out(dx)}, [&] { linear_backward_input(ctx, dx, false, y, w, N, l.in, l.out, false, 0); });
      b.run("gate_up backward weight", 2.0 * ((double)N * l.out + (double)N * l.in) + 8.0 * l.out * l.in, flops,
            Roof::bf16_tensor, {accumulated(dw)}, [&] { linear_backward_weight(ctx, dw, y, x, N, l.in, l.out, 0); },
            "fp32 accumulate");
    }
  }
  {
    const int n = s.ce_rows, V = s.V;
    DevBuf<bf16> x((size_t)n * C), w((size_t)V * C);
    DevBuf<float> logits((size_t)n * V);
    x.random(3);
    w.random(4, 0.02f);
    b.run("lm_head forward, fp32 logits", 2.0 * ((double)n * C + (double)V * C) + 4.0 * n * V, 2.0 * n * C * (double)V,
          Roof::bf16_tensor, {out(logits)}, [&] { linear_forward(ctx, logits, true, x, w, nullptr, n, C, V, 0); },
          std::to_string(n) + " tokens");
  }
  matmul_context_destroy(ctx);
}
