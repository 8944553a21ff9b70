// KV-cache ops of the CPU backend (inference): writing a token's keys/values into its sequence's
// cache slot, one-query-per-sequence attention over the cache, and the per-row argmax.
//
// Cache layout per layer: k, v [seqs][len][KV*D] fp32 (a sequence's rows contiguous, so a decoding
// step streams each sequence's keys, then its values, front to back).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

void kv_cache_write(float* k_cache, float* v_cache, const float* qkv, const int32_t* slot, const int32_t* pos, int N,
                    const KvShape& s) {
  const int kv_dim = s.KV * s.D;
#pragma omp parallel for if (N > 64)
  for (int i = 0; i < N; ++i) {
    if (pos[i] < 0) continue;
    const float* r = qkv + int64_t(i) * s.ld_qkv + int64_t(s.H) * s.D;
    const size_t dst = (size_t(slot[i]) * s.len + pos[i]) * kv_dim;
    std::copy_n(r, kv_dim, k_cache + dst);
    std::copy_n(r + kv_dim, kv_dim, v_cache + dst);
  }
}

// s_hj = scale q_h . k_j[kv head of h] ; p_h = softmax_j(s_h) ; out_h = sum_j p_hj v_j[kv head of h]
// (exp_fast's values and the max-subtracted softmax as attention_forward). At batch 32 this is 32 x H
// tiny problems, and the time goes into reading the cache, not into arithmetic: GEMM calls per
// head cost more in call overhead than they compute, and walking one head at a time reads each
// cached row in 1 KiB strides. So each task is one sequence, all heads at once, streaming through
// its cached key rows and then its value rows front to back (one contiguous block each).
void attention_decode(float* att, const float* qkv, const float* k_cache, const float* v_cache, const int32_t* slot,
                      const int32_t* pos, int N, const KvShape& s) {
  const int H = s.H, D = s.D, group = s.H / s.KV, kv_dim = s.KV * s.D, max_len = s.len;
  const float scale = 1.0f / std::sqrt(float(D));
  auto seq_base = [&](int i) { return size_t(slot[i]) * max_len * kv_dim; };
#pragma omp parallel
  {
    thread_local std::vector<float> scores;
    scores.resize(size_t(H) * max_len);  // [H][max_len]
    float* S = scores.data();
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      const int n = pos[i] + 1;  // keys 0..pos[i]
      const float* q = qkv + int64_t(i) * s.ld_qkv;
      const float* k = k_cache + seq_base(i);
      const float* v = v_cache + seq_base(i);
      if (i + 1 < N) {  // the first key rows of this thread's next sequence (the loop below prefetches the rest)
        const float* kn = k_cache + seq_base(i + 1);
        const size_t lines = size_t(std::min(8, pos[i + 1] + 1)) * kv_dim;
        for (size_t e = 0; e < lines; e += 16) __builtin_prefetch(kn + e);
      }
      // Four key rows at a time: four independent dot products per head.
      int jk = 0;
      for (; jk + 4 <= n; jk += 4) {
        const float* k0 = k + size_t(jk) * kv_dim;
        const float *k1 = k0 + kv_dim, *k2 = k1 + kv_dim, *k3 = k2 + kv_dim;
        // The cache of the whole batch does not stay in cache between steps (it and the weights
        // are streamed once per step), so the walk is bound by memory latency: prefetch the key
        // rows two blocks ahead, and the value rows of this block for the value pass below.
        const int ahead = std::min(4, n - (jk + 8));
        const float* kf = k0 + size_t(8) * kv_dim;
        const float* vf = v + size_t(jk) * kv_dim;
        for (int h = 0; h < H; ++h) {
          const float* qh = q + size_t(h) * D;
          const size_t c = size_t(h / group) * D;
          if (h % group == 0)
            for (int d = 0; d < D; d += 16) {
              for (int r = 0; r < ahead; ++r) __builtin_prefetch(kf + size_t(r) * kv_dim + c + d);
              for (int r = 0; r < 4; ++r) __builtin_prefetch(vf + size_t(r) * kv_dim + c + d);
            }
          float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
          for (int d = 0; d < D; ++d) {
            d0 += qh[d] * k0[c + d];
            d1 += qh[d] * k1[c + d];
            d2 += qh[d] * k2[c + d];
            d3 += qh[d] * k3[c + d];
          }
          float* sh = S + size_t(h) * max_len + jk;
          sh[0] = d0 * scale;
          sh[1] = d1 * scale;
          sh[2] = d2 * scale;
          sh[3] = d3 * scale;
        }
      }
      for (; jk < n; ++jk) {
        const float* kj = k + size_t(jk) * kv_dim;
        for (int h = 0; h < H; ++h) {
          const float* qh = q + size_t(h) * D;
          const float* kh = kj + size_t(h / group) * D;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int d = 0; d < D; ++d) dot += qh[d] * kh[d];
          S[size_t(h) * max_len + jk] = dot * scale;
        }
      }
      for (int h = 0; h < H; ++h) {
        float* row = S + size_t(h) * max_len;
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) mx = std::max(mx, row[j]);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; ++j) {
          row[j] = exp_fast(row[j] - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j < n; ++j) row[j] *= inv;
      }
      float* o = att + size_t(i) * H * D;
      std::fill_n(o, size_t(H) * D, 0.0f);
      // Four value rows per pass over the output: a quarter of the loads/stores of o.
      int j = 0;
      for (; j + 4 <= n; j += 4) {
        const float* v0 = v + size_t(j) * kv_dim;
        const float *v1 = v0 + kv_dim, *v2 = v1 + kv_dim, *v3 = v2 + kv_dim;
        for (int h = 0; h < H; ++h) {
          const float* ph = S + size_t(h) * max_len + j;
          const float p0 = ph[0], p1 = ph[1], p2 = ph[2], p3 = ph[3];
          const size_t c = size_t(h / group) * D;
          float* oh = o + size_t(h) * D;
#pragma omp simd
          for (int d = 0; d < D; ++d) oh[d] += p0 * v0[c + d] + p1 * v1[c + d] + p2 * v2[c + d] + p3 * v3[c + d];
        }
      }
      for (; j < n; ++j) {
        const float* vj = v + size_t(j) * kv_dim;
        for (int h = 0; h < H; ++h) {
          const float p = S[size_t(h) * max_len + j];
          const float* vh = vj + size_t(h / group) * D;
          float* oh = o + size_t(h) * D;
#pragma omp simd
          for (int d = 0; d < D; ++d) oh[d] += p * vh[d];
        }
      }
    }
  }
}

// The lowest index of the maximum wins a tie, as torch.argmax. Two vectorized passes (the max,
// then its first position) instead of one scalar compare chain over the vocabulary.
void argmax_rows(int32_t* out, const float* logits, int n, int V) {
  for (int r = 0; r < n; ++r) {
    const float* x = logits + int64_t(r) * V;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < V; ++i) mx = x[i] > mx ? x[i] : mx;  // (std::max does not vectorize here)
    out[r] = 0;  // all NaN
    for (int i = 0; i < V; ++i)
      if (x[i] == mx) {
        out[r] = i;
        break;
      }
  }
}
