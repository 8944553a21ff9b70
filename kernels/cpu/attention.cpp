// Causal multi-head attention with GQA and per-query key ranges (packed rows), fp32.
//
// For query q_t (one head) and its keys j in [lo_t, hi_t], with scale = 1/sqrt(D):
//   s_j = scale * q_t . k_j ;  lse_t = log sum_j exp(s_j) ;  p_j = exp(s_j - lse_t)
//   out_t = sum_j p_j v_j
// Backward, with dO_t the output gradient and Delta_t = dO_t . out_t:
//   dv_j += p_j dO_t ;  dp_j = dO_t . v_j ;  ds_j = p_j (dp_j - Delta_t)
//   dq_t  = scale sum_j ds_j k_j ;  dk_j += scale ds_j q_t
// Only lse is saved: the backward recomputes p from it, as flash attention does, so no T x T
// matrix is kept between the passes. Query head h reads kv head h / (H / KV) in place (no copy).
//
// Work is cut in blocks of kQueryBlock queries of one head. A block only touches the keys
// [min lo, max hi] of its queries (about half of the T x T square for causal rows, less with
// packing), and its score block and both products are small GEMMs through oneDNN (which runs
// single-threaded inside our parallel loop). Keys outside a query's range get probability 0.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

namespace {

constexpr int kQueryBlock = 64;

struct BlockRange {
  int t0, nq, klo, nk;
};

BlockRange block_range(const int32_t* key_lo, const int32_t* key_hi, int64_t q0, int t0, int Tq) {
  BlockRange b;
  b.t0 = t0;
  b.nq = std::min(kQueryBlock, Tq - t0);
  int lo = key_lo[q0 + t0], hi = key_hi[q0 + t0];
  for (int i = 1; i < b.nq; i++) {
    lo = std::min(lo, (int)key_lo[q0 + t0 + i]);
    hi = std::max(hi, (int)key_hi[q0 + t0 + i]);
  }
  b.klo = lo;
  b.nk = hi - lo + 1;
  return b;
}

// Row i of the score block s[nq, nk] (already scaled) becomes probabilities exp(s - lse) inside
// the query's key range and 0 outside. forward: lse is computed and returned through *lse.
inline void softmax_row(float* s, int nk, int lo, int hi, float* lse, bool forward) {
  for (int j = 0; j < lo; j++) s[j] = 0.0f;
  for (int j = hi + 1; j < nk; j++) s[j] = 0.0f;
  float* row = s + lo;
  const int n = hi - lo + 1;
  if (forward) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < n; j++) mx = std::max(mx, row[j]);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < n; j++) {
      row[j] = exp_fast(row[j] - mx);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int j = 0; j < n; j++) row[j] *= inv;
    *lse = mx + std::log(sum);
  } else {
    const float l = *lse;
#pragma omp simd
    for (int j = 0; j < n; j++) row[j] = exp_fast(row[j] - l);
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* key_lo, const int32_t* key_hi, const AttentionShape& s) {
  const int H = s.H, D = s.D, group = s.H / s.KV;
  const float scale = 1.0f / std::sqrt((float)D);
  const int qblocks = (s.Tq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = (int64_t)s.rows * H * qblocks;
#pragma omp parallel
  {
    thread_local std::vector<float> scores;
    scores.resize((size_t)kQueryBlock * s.Tk);
    float* S = scores.data();
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; task++) {
      // Largest blocks (last query blocks, most keys) first for a better dynamic balance.
      const int qb = qblocks - 1 - (int)(task % qblocks);
      const int h = (int)((task / qblocks) % H);
      const int64_t r = task / qblocks / H;
      const int64_t q0 = r * s.Tq;
      const BlockRange b = block_range(key_lo, key_hi, q0, qb * kQueryBlock, s.Tq);
      const int kvh = h / group;
      const float* qb_ptr = q + (q0 + b.t0) * s.ld_q + (int64_t)h * D;
      const float* kb = k + (r * s.Tk + b.klo) * s.ld_kv + (int64_t)kvh * D;
      const float* vb = v + (r * s.Tk + b.klo) * s.ld_kv + (int64_t)kvh * D;
      float* ob = out + (q0 + b.t0) * (int64_t)H * D + (int64_t)h * D;
      sgemm(false, true, b.nq, b.nk, D, scale, qb_ptr, s.ld_q, kb, s.ld_kv, 0.0f, S, b.nk);
      for (int i = 0; i < b.nq; i++) {
        const int64_t qi = q0 + b.t0 + i;
        softmax_row(S + (int64_t)i * b.nk, b.nk, key_lo[qi] - b.klo, key_hi[qi] - b.klo,
                    lse + qi * H + h, true);
      }
      sgemm(false, false, b.nq, D, b.nk, 1.0f, S, b.nk, vb, s.ld_kv, 0.0f, ob, (int64_t)H * D);
    }
  }
}

// One task per (row, kv head): it owns dk/dv of that kv head in that row, so the contributions
// of the `group` query heads sharing it are summed without races, in a fixed order.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const int32_t* key_lo, const int32_t* key_hi, const AttentionShape& s) {
  const int H = s.H, D = s.D, KV = s.KV, group = s.H / s.KV;
  const float scale = 1.0f / std::sqrt((float)D);
  const int qblocks = (s.Tq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = (int64_t)s.rows * KV;
  const int64_t ld_o = (int64_t)H * D;
#pragma omp parallel
  {
    thread_local std::vector<float> scratch;
    scratch.resize((size_t)2 * kQueryBlock * s.Tk);
    float* P = scratch.data();
    float* dS = P + (size_t)kQueryBlock * s.Tk;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; task++) {
      const int kvh = (int)(task % KV);
      const int64_t r = task / KV;
      const int64_t q0 = r * s.Tq;
      const int64_t kv_off = (int64_t)kvh * D;
      for (int j = 0; j < s.Tk; j++) {
        float* dkj = dk + (r * s.Tk + j) * s.ld_kv + kv_off;
        float* dvj = dv + (r * s.Tk + j) * s.ld_kv + kv_off;
        for (int d = 0; d < D; d++) dkj[d] = dvj[d] = 0.0f;
      }
      for (int h = kvh * group; h < (kvh + 1) * group; h++) {
        for (int qb = 0; qb < qblocks; qb++) {
          const BlockRange b = block_range(key_lo, key_hi, q0, qb * kQueryBlock, s.Tq);
          const int64_t row0 = q0 + b.t0;
          const float* qb_ptr = q + row0 * s.ld_q + (int64_t)h * D;
          const float* ob = out + row0 * ld_o + (int64_t)h * D;
          const float* gob = dout + row0 * ld_o + (int64_t)h * D;
          float* dqb = dq + row0 * s.ld_q + (int64_t)h * D;
          const int64_t kv_row = r * s.Tk + b.klo;
          const float* kb = k + kv_row * s.ld_kv + kv_off;
          const float* vb = v + kv_row * s.ld_kv + kv_off;
          float* dkb = dk + kv_row * s.ld_kv + kv_off;
          float* dvb = dv + kv_row * s.ld_kv + kv_off;
          // P = exp(scale q k^T - lse) within each query's range, 0 outside.
          sgemm(false, true, b.nq, b.nk, D, scale, qb_ptr, s.ld_q, kb, s.ld_kv, 0.0f, P, b.nk);
          for (int i = 0; i < b.nq; i++) {
            const int64_t qi = row0 + i;
            float l = lse[qi * H + h];
            softmax_row(P + (int64_t)i * b.nk, b.nk, key_lo[qi] - b.klo, key_hi[qi] - b.klo, &l, false);
          }
          // dP = dO v^T, then dS = scale * P * (dP - Delta) in place.
          sgemm(false, true, b.nq, b.nk, D, 1.0f, gob, ld_o, vb, s.ld_kv, 0.0f, dS, b.nk);
          for (int i = 0; i < b.nq; i++) {
            const float* go = gob + i * ld_o;
            const float* o = ob + i * ld_o;
            float delta = 0.0f;
#pragma omp simd reduction(+ : delta)
            for (int d = 0; d < D; d++) delta += go[d] * o[d];
            float* ds = dS + (int64_t)i * b.nk;
            const float* p = P + (int64_t)i * b.nk;
#pragma omp simd
            for (int j = 0; j < b.nk; j++) ds[j] = scale * p[j] * (ds[j] - delta);
          }
          sgemm(false, false, b.nq, D, b.nk, 1.0f, dS, b.nk, kb, s.ld_kv, 0.0f, dqb, s.ld_q);
          sgemm(true, false, b.nk, D, b.nq, 1.0f, dS, b.nk, qb_ptr, s.ld_q, 1.0f, dkb, s.ld_kv);
          sgemm(true, false, b.nk, D, b.nq, 1.0f, P, b.nk, gob, ld_o, 1.0f, dvb, s.ld_kv);
        }
      }
    }
  }
}
