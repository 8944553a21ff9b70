// Causal multi-head attention with GQA and per-query key ranges (packed rows), fp32.
//
// For query q_t (one head) and its keys j in [lo_t, hi_t], with scale = 1/sqrt(D):
//   s_j = scale * q_t . k_j ;  lse_t = log sum_j exp(s_j) ;  p_j = exp(s_j - lse_t)
//   out_t = sum_j p_j v_j
// Backward, with dO_t the output gradient and Delta_t = dO_t . out_t:
//   dv_j += p_j dO_t ;  dp_j = dO_t . v_j ;  ds_j = p_j (dp_j - Delta_t)
//   dq_t  = scale sum_j ds_j k_j ;  dk_j += scale ds_j q_t
// Only lse is saved: the backward recomputes p from it, as flash attention does, so no T x T
// matrix is ever stored. Query head h reads kv head h / (H / KV) in place (no K/V copy).
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"

namespace {

inline float dot(const float* a, const float* b, int D) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int d = 0; d < D; d++) s += a[d] * b[d];
  return s;
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* key_lo, const int32_t* key_hi, const AttentionShape& s) {
  const int H = s.H, D = s.D, group = s.H / s.KV;
  const float scale = 1.0f / std::sqrt((float)D);
  const int64_t tasks = (int64_t)s.rows * s.Tq * H;
#pragma omp parallel
  {
    thread_local std::vector<float> scores;
    scores.resize(s.Tk);
    float* p = scores.data();
#pragma omp for schedule(dynamic, 16)
    for (int64_t task = 0; task < tasks; task++) {
      const int h = (int)(task % H);
      const int64_t qi = task / H;  // query index r*Tq + t
      const int64_t r = qi / s.Tq;
      const int kvh = h / group;
      const float* qt = q + qi * s.ld_q + (int64_t)h * D;
      const float* kb = k + r * s.Tk * s.ld_kv + (int64_t)kvh * D;
      const float* vb = v + r * s.Tk * s.ld_kv + (int64_t)kvh * D;
      const int lo = key_lo[qi], hi = key_hi[qi];
      float mx = -INFINITY;
      for (int j = lo; j <= hi; j++) {
        float sj = scale * dot(qt, kb + j * s.ld_kv, D);
        p[j] = sj;
        mx = sj > mx ? sj : mx;
      }
      float sum = 0.0f;
      for (int j = lo; j <= hi; j++) {
        p[j] = std::exp(p[j] - mx);
        sum += p[j];
      }
      float inv = 1.0f / sum;
      float* ot = out + qi * (int64_t)H * D + (int64_t)h * D;
      for (int d = 0; d < D; d++) ot[d] = 0.0f;
      for (int j = lo; j <= hi; j++) {
        const float* vj = vb + j * s.ld_kv;
        float pj = p[j] * inv;
#pragma omp simd
        for (int d = 0; d < D; d++) ot[d] += pj * vj[d];
      }
      lse[qi * H + h] = mx + std::log(sum);
    }
  }
}

// One task per (row, kv head): it owns dk/dv of that kv head in that row, so the contributions
// of the `group` query heads that share it are summed without races, in a fixed order.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const int32_t* key_lo, const int32_t* key_hi, const AttentionShape& s) {
  const int H = s.H, D = s.D, KV = s.KV, group = s.H / s.KV;
  const float scale = 1.0f / std::sqrt((float)D);
  const int64_t tasks = (int64_t)s.rows * KV;
#pragma omp parallel
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; task++) {
      const int kvh = (int)(task % KV);
      const int64_t r = task / KV;
      const int64_t kv_row0 = r * s.Tk;
      const float* kb = k + kv_row0 * s.ld_kv + (int64_t)kvh * D;
      const float* vb = v + kv_row0 * s.ld_kv + (int64_t)kvh * D;
      float* dkb = dk + kv_row0 * s.ld_kv + (int64_t)kvh * D;
      float* dvb = dv + kv_row0 * s.ld_kv + (int64_t)kvh * D;
      for (int j = 0; j < s.Tk; j++)
        for (int d = 0; d < D; d++) dkb[j * s.ld_kv + d] = dvb[j * s.ld_kv + d] = 0.0f;
      for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int t = 0; t < s.Tq; t++) {
          const int64_t qi = r * s.Tq + t;
          const float* qt = q + qi * s.ld_q + (int64_t)h * D;
          const float* ot = out + qi * (int64_t)H * D + (int64_t)h * D;
          const float* got = dout + qi * (int64_t)H * D + (int64_t)h * D;
          float* dqt = dq + qi * s.ld_q + (int64_t)h * D;
          const int lo = key_lo[qi], hi = key_hi[qi];
          const float l = lse[qi * H + h];
          const float delta = dot(got, ot, D);
          for (int d = 0; d < D; d++) dqt[d] = 0.0f;
          for (int j = lo; j <= hi; j++) {
            const float* kj = kb + j * s.ld_kv;
            const float* vj = vb + j * s.ld_kv;
            float pj = std::exp(scale * dot(qt, kj, D) - l);
            float ds = pj * (dot(got, vj, D) - delta) * scale;
            float* dkj = dkb + j * s.ld_kv;
            float* dvj = dvb + j * s.ld_kv;
#pragma omp simd
            for (int d = 0; d < D; d++) {
              dqt[d] += ds * kj[d];
              dkj[d] += ds * qt[d];
              dvj[d] += pj * got[d];
            }
          }
        }
      }
    }
  }
}
