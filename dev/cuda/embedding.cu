// Token embedding forward and deterministic backward (kernels/cuda/embedding.cuh) for the batch's
// N tokens over a V x C table. Memory-bound:
//   forward : reads N gathered rows of the table (2NC) and the token ids, writes 2NC;
//   backward: reads dout (2NC) and the U touched fp32 gradient rows (4UC), writes them (4UC).
// The backward's bucket plan (a stable sort of the token positions) is host work done once per
// batch, outside the timing.
#include <algorithm>
#include <cmath>

#include "dev/cuda/bench.h"
#include "kernels/cuda/embedding.cuh"

void bench_embedding(Bench& b) {
  const BenchShape& s = b.shape();
  const int N = s.tokens(), C = s.C, V = s.V;
  std::vector<int> tok(N);
  uint32_t x = 12345;
  for (int& t : tok) {  // Zipf-like: many repeats of small ids, as in text
    x = x * 1664525u + 1013904223u;
    const double u = (x >> 8) / 16777216.0;
    t = std::min(V - 1, (int)(std::pow((double)V, u * u)));
  }
  const EmbeddingBackwardPlan plan = embedding_backward_plan(tok.data(), N);
  const size_t U = plan.bucket_token.size();
  DevBuf<int> tokens(N), bt(U), bs(U + 1), bp(N);
  tokens.upload(tok);
  bt.upload(plan.bucket_token);
  bs.upload(plan.bucket_start);
  bp.upload(plan.bucket_positions);
  DevBuf<bf16> table((size_t)V * C), emb((size_t)N * C), dout((size_t)N * C);
  DevBuf<float> dtable((size_t)V * C);
  table.random(1, 0.02f);
  dout.random(2, 0.01f);
  dtable.zero();
  b.run("forward", 4.0 * N * C + 4.0 * N, 0, Roof::memory, {out(emb)},
        [&] { embedding_forward(emb, tokens, table, nullptr, N, C, 0); });
  b.run("backward", 2.0 * N * C + 8.0 * U * C + 4.0 * N, 0, Roof::memory, {accumulated(dtable)},
        [&] { embedding_backward(dtable, dout, bt, bs, bp, (int)U, C, 0); },
        std::to_string(U) + " distinct tokens");
}
