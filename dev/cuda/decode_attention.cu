// Decode attention (kernels/cuda/decode.cuh): one new token per sequence attends over its KV
// cache, for decode_batch sequences of decode_len cached tokens. Memory-bound: the cache is read
// once per kv head (2 x 2 bytes x len x D, L2 serving the H/KV q heads that share it), plus the
// new qkv rows and the output. FLOPs 4 D per (q head, cached token), on the CUDA cores.
// Kept to the one kernel, with the cache layout [B, KV, Tmax, D] of decode.cuh.
#include "dev/cuda/bench.h"
#include "kernels/cuda/decode.cuh"

void bench_decode_attention(Bench& b) {
  const BenchShape& s = b.shape();
  const int B = s.decode_batch, L = s.decode_len, Tmax = L + 1, QKV = s.qkv_width();
  const size_t cache = (size_t)B * s.KV * Tmax * s.D;
  DevBuf<bf16> k_cache(cache), v_cache(cache), qkv((size_t)B * QKV), att((size_t)B * s.H * s.D);
  DevBuf<int> slot(B), pos(B);
  k_cache.random(1);
  v_cache.random(2);
  qkv.random(3);
  std::vector<int> slots(B);
  for (int i = 0; i < B; ++i) slots[i] = i;
  slot.upload(slots);
  pos.upload(std::vector<int>(B, L - 1));  // the new token sits at position L-1: L keys in all
  b.run("attention, one token over the cache", 4.0 * B * s.KV * L * s.D + 2.0 * B * QKV + 2.0 * B * s.H * s.D,
        4.0 * s.D * s.H * (double)L * B, Roof::memory, {out(att)},
        [&] { attention_decode(att, qkv, k_cache, v_cache, slot, pos, B, s.H, s.KV, s.D, Tmax, 0); },
        std::to_string(B) + " sequences x " + std::to_string(L) + " cached tokens");
}
