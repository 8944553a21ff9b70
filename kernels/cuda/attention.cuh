// Causal self-attention in the flash style, for training: online softmax, never a Tq x Tk matrix.
//
// Shapes (as the CPU backend's AttentionShape): `rows` rows, each with Tq queries and Tk keys.
// q [rows*Tq, ld_q] holds H heads of D at the start of each token's row; k, v [rows*Tk, ld_kv]
// hold KV heads each. On the training path q, k and v are the three parts of one fused qkv row
// (ld_q = ld_kv = (H+2KV)*D), RoPE already applied. GQA: q head h reads kv head h / (H/KV) in
// place, K/V are never copied. Query t of row r attends keys [key_lo[r*Tq+t], key_hi[r*Tq+t]] of
// row r: causal training uses key_hi = t and key_lo = the start of t's example (packing: examples
// never see each other; positions restart per example in RoPE).
// Outputs: out [rows*Tq, H*D] bf16 and lse [rows*Tq, H] fp32, the natural log-sum-exp of each
// query row's scaled scores, from which the backward recomputes the probabilities.
// Precision: bf16 in/out, fp32 scores, softmax and accumulators. Scores are kept in log2 units
// (q is pre-scaled by log2(e)/sqrt(D)) so that every exponential is one exp2f.
//
// Forward (attention_forward_kernel<D>), D in {64, 128}:
//   geometry: grid (ceil(Tq/16), H, rows), 128 threads = 4 warps; each warp owns 4 query rows of
//             the 16-row tile, each lane owns D/32 output columns. Key tiles of 32 keys, from the
//             tile's lowest key_lo to its highest key_hi, are staged in shared memory as fp32 (K
//             rows padded to D+1 floats so lane j reads key j without bank conflicts); lane j
//             scores key j for the warp's 4 rows, the warp reduces max/sum with shuffles and
//             broadcasts p_j with __shfl_sync for P.V.
//   smem    : (16*D + 32*(D+1) + 32*D) * 4 bytes = 41.1 KB for D=128, 20.6 KB for D=64.
//   traffic : q, out once (2*D bytes per row and head); per 16-query tile, the visible K/V tiles
//             (4*D bytes per key, served by L2 for the 16/32.. tiles sharing them).
// Backward, recomputing P from lse, in three deterministic kernels (no float atomics):
//   attention_backward_delta_kernel: delta[n,h] = sum_d dout*out; one warp per (token, head).
//   attention_backward_dq_kernel<D>: grid (ceil(Tq/8), H, rows), 4 warps x 2 query rows; like the
//             forward, lane j handles key j of a 32-key tile: p = exp2(s - lse), dp = dout.v_j,
//             ds = p (dp - delta), dq += ds_j k_j (k_j from smem, ds_j broadcast by shuffle).
//             smem: (2*8*D + 2*32*(D+1)) * 4 = 41.2 KB for D=128.
//   attention_backward_dkv_kernel<D>: grid (ceil(Tk/16), KV, rows), 4 warps; the block owns 16
//             keys of one kv head, loops over the H/KV q heads of its group and over the 32-row
//             query tiles that see any of its keys (tiles that see none are skipped after a
//             block-wide vote). Phase 1: the 128 threads compute P and dS for the 32x16 tile into
//             smem; phase 2: warp w accumulates dV[j] += P[i,j] dout[i] and dK[j] += dS[i,j] q[i]
//             for its 4 keys in registers.
//             smem: 2*32*D*2 (q, dout as bf16) + 2*16*(D+1)*4 + 2*32*17*4 + 4*32*4 = 37.5 KB (D=128).
//   dq, dk, dv have the layouts and strides of q, k, v and are fully overwritten.
#pragma once

#include "kernels/cuda/cuda_utils.cuh"

constexpr int ATTN_FWD_ROWS_PER_WARP = 4, ATTN_FWD_Q_TILE = 16, ATTN_KEY_TILE = 32;
constexpr int ATTN_DQ_ROWS_PER_WARP = 2, ATTN_DQ_Q_TILE = 8;
constexpr int ATTN_DKV_KEY_TILE = 16, ATTN_DKV_KEYS_PER_WARP = 4, ATTN_DKV_Q_TILE = 32;
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

struct AttentionDims {
  int Tq, Tk, H, KV;
  long long ld_q, ld_kv;
};

template <int D>
__global__ void __launch_bounds__(128) attention_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                                                                const bf16* __restrict__ q, const bf16* __restrict__ k,
                                                                const bf16* __restrict__ v,
                                                                const int* __restrict__ key_lo,
                                                                const int* __restrict__ key_hi, AttentionDims s) {
  constexpr int DL = D / WARP_SIZE, R = ATTN_FWD_ROWS_PER_WARP;
  __shared__ float q_s[ATTN_FWD_Q_TILE][D];
  __shared__ float k_s[ATTN_KEY_TILE][D + 1];
  __shared__ float v_s[ATTN_KEY_TILE][D];
  const int h = blockIdx.y, r = blockIdx.z, kvh = h / (s.H / s.KV);
  const int t0 = blockIdx.x * ATTN_FWD_Q_TILE, t_end = min(t0 + ATTN_FWD_Q_TILE, s.Tq);
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const size_t q_row0 = (size_t)r * s.Tq, k_row0 = (size_t)r * s.Tk;
  const float q_scale = LOG2E * rsqrtf((float)D);

  for (int e = threadIdx.x; e < ATTN_FWD_Q_TILE * D; e += blockDim.x) {
    const int i = e / D, d = e % D, t = t0 + i;
    q_s[i][d] = t < s.Tq ? __bfloat162float(q[(q_row0 + t) * s.ld_q + h * D + d]) * q_scale : 0.0f;
  }
  int k_begin = s.Tk, k_last = -1;  // union of the tile's key ranges
  for (int t = t0; t < t_end; t++) {
    k_begin = min(k_begin, key_lo[q_row0 + t]);
    k_last = max(k_last, key_hi[q_row0 + t]);
  }

  float m[R], l[R], o[R][DL];
  int lo[R], hi[R];
UNROLL
  for (int i = 0; i < R; i++) {
    const int t = t0 + warp * R + i;
    m[i] = -INFINITY;
    l[i] = 0.0f;
    lo[i] = t < s.Tq ? key_lo[q_row0 + t] : 1;
    hi[i] = t < s.Tq ? key_hi[q_row0 + t] : 0;  // empty range for rows past the end
UNROLL
    for (int dd = 0; dd < DL; dd++) o[i][dd] = 0.0f;
  }

  for (int j0 = k_begin; j0 <= k_last; j0 += ATTN_KEY_TILE) {
    __syncthreads();  // the previous tile is consumed (and q_s is complete on the first pass)
    for (int e = threadIdx.x; e < ATTN_KEY_TILE * D; e += blockDim.x) {
      const int j = e / D, d = e % D, key = j0 + j;
      const bool ok = key <= k_last;
      k_s[j][d] = ok ? __bfloat162float(k[(k_row0 + key) * s.ld_kv + kvh * D + d]) : 0.0f;
      v_s[j][d] = ok ? __bfloat162float(v[(k_row0 + key) * s.ld_kv + kvh * D + d]) : 0.0f;
    }
    __syncthreads();
    float sc[R];
UNROLL
    for (int i = 0; i < R; i++) sc[i] = 0.0f;
    for (int d = 0; d < D; d++) {
      const float kd = k_s[lane][d];
UNROLL
      for (int i = 0; i < R; i++) sc[i] += q_s[warp * R + i][d] * kd;
    }
    const int key = j0 + lane;
UNROLL
    for (int i = 0; i < R; i++) {
      if (!(key >= lo[i] && key <= hi[i])) sc[i] = -INFINITY;
      const float m_new = fmaxf(m[i], warp_reduce_max(sc[i]));
      if (m_new == -INFINITY) continue;  // no visible key yet for this row (warp-uniform)
      const float p = exp2f(sc[i] - m_new);
      const float correction = exp2f(m[i] - m_new);
      l[i] = l[i] * correction + warp_reduce_sum(p);
      m[i] = m_new;
UNROLL
      for (int dd = 0; dd < DL; dd++) o[i][dd] *= correction;
      for (int jj = 0; jj < ATTN_KEY_TILE; jj++) {
        const float pj = __shfl_sync(FULL_MASK, p, jj);
UNROLL
        for (int dd = 0; dd < DL; dd++) o[i][dd] += pj * v_s[jj][lane + WARP_SIZE * dd];
      }
    }
  }
UNROLL
  for (int i = 0; i < R; i++) {
    const int t = t0 + warp * R + i;
    if (t >= s.Tq) continue;
    const size_t n = q_row0 + t;
    const float inv_l = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;  // an empty key range gives 0
UNROLL
    for (int dd = 0; dd < DL; dd++)
      out[n * s.H * D + h * D + lane + WARP_SIZE * dd] = __float2bfloat16(o[i][dd] * inv_l);
    if (lane == 0) lse[n * s.H + h] = l[i] > 0.0f ? (m[i] + log2f(l[i])) * LN2 : -INFINITY;
  }
}

__global__ void attention_backward_delta_kernel(float* __restrict__ delta, const bf16* __restrict__ dout,
                                                const bf16* __restrict__ out, int NH, int D) {
  const int lane = threadIdx.x % WARP_SIZE;
  const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;  // (token, head)
  if (row >= NH) return;
  float sum = 0.0f;
  for (int d = lane; d < D; d += WARP_SIZE)
    sum += __bfloat162float(dout[(size_t)row * D + d]) * __bfloat162float(out[(size_t)row * D + d]);
  sum = warp_reduce_sum(sum);
  if (lane == 0) delta[row] = sum;
}

template <int D>
__global__ void __launch_bounds__(128) attention_backward_dq_kernel(bf16* __restrict__ dq,
                                                                    const bf16* __restrict__ dout,
                                                                    const bf16* __restrict__ q,
                                                                    const bf16* __restrict__ k,
                                                                    const bf16* __restrict__ v,
                                                                    const float* __restrict__ lse,
                                                                    const float* __restrict__ delta,
                                                                    const int* __restrict__ key_lo,
                                                                    const int* __restrict__ key_hi, AttentionDims s) {
  constexpr int DL = D / WARP_SIZE, R = ATTN_DQ_ROWS_PER_WARP;
  __shared__ float q_s[ATTN_DQ_Q_TILE][D];
  __shared__ float do_s[ATTN_DQ_Q_TILE][D];
  __shared__ float k_s[ATTN_KEY_TILE][D + 1];
  __shared__ float v_s[ATTN_KEY_TILE][D + 1];
  const int h = blockIdx.y, r = blockIdx.z, kvh = h / (s.H / s.KV);
  const int t0 = blockIdx.x * ATTN_DQ_Q_TILE, t_end = min(t0 + ATTN_DQ_Q_TILE, s.Tq);
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const size_t q_row0 = (size_t)r * s.Tq, k_row0 = (size_t)r * s.Tk;
  const float scale = rsqrtf((float)D), q_scale = LOG2E * scale;

  for (int e = threadIdx.x; e < ATTN_DQ_Q_TILE * D; e += blockDim.x) {
    const int i = e / D, d = e % D, t = t0 + i;
    const size_t n = q_row0 + t;
    q_s[i][d] = t < s.Tq ? __bfloat162float(q[n * s.ld_q + h * D + d]) * q_scale : 0.0f;
    do_s[i][d] = t < s.Tq ? __bfloat162float(dout[n * s.H * D + h * D + d]) : 0.0f;
  }
  int k_begin = s.Tk, k_last = -1;
  for (int t = t0; t < t_end; t++) {
    k_begin = min(k_begin, key_lo[q_row0 + t]);
    k_last = max(k_last, key_hi[q_row0 + t]);
  }

  float lse2[R], row_delta[R], acc[R][DL];
  int lo[R], hi[R];
UNROLL
  for (int i = 0; i < R; i++) {
    const int t = t0 + warp * R + i;
    const size_t n = q_row0 + t;
    lse2[i] = t < s.Tq ? lse[n * s.H + h] * LOG2E : 0.0f;
    row_delta[i] = t < s.Tq ? delta[n * s.H + h] : 0.0f;
    lo[i] = t < s.Tq ? key_lo[n] : 1;
    hi[i] = t < s.Tq ? key_hi[n] : 0;
UNROLL
    for (int dd = 0; dd < DL; dd++) acc[i][dd] = 0.0f;
  }

  for (int j0 = k_begin; j0 <= k_last; j0 += ATTN_KEY_TILE) {
    __syncthreads();
    for (int e = threadIdx.x; e < ATTN_KEY_TILE * D; e += blockDim.x) {
      const int j = e / D, d = e % D, key = j0 + j;
      const bool ok = key <= k_last;
      k_s[j][d] = ok ? __bfloat162float(k[(k_row0 + key) * s.ld_kv + kvh * D + d]) : 0.0f;
      v_s[j][d] = ok ? __bfloat162float(v[(k_row0 + key) * s.ld_kv + kvh * D + d]) : 0.0f;
    }
    __syncthreads();
    float sc[R], dp[R];
UNROLL
    for (int i = 0; i < R; i++) sc[i] = dp[i] = 0.0f;
    for (int d = 0; d < D; d++) {
      const float kd = k_s[lane][d], vd = v_s[lane][d];
UNROLL
      for (int i = 0; i < R; i++) {
        sc[i] += q_s[warp * R + i][d] * kd;
        dp[i] += do_s[warp * R + i][d] * vd;
      }
    }
    const int key = j0 + lane;
UNROLL
    for (int i = 0; i < R; i++) {
      const bool visible = key >= lo[i] && key <= hi[i];
      const float ds = visible ? exp2f(sc[i] - lse2[i]) * (dp[i] - row_delta[i]) : 0.0f;
      for (int jj = 0; jj < ATTN_KEY_TILE; jj++) {
        const float dsj = __shfl_sync(FULL_MASK, ds, jj);
UNROLL
        for (int dd = 0; dd < DL; dd++) acc[i][dd] += dsj * k_s[jj][lane + WARP_SIZE * dd];
      }
    }
  }
UNROLL
  for (int i = 0; i < R; i++) {
    const int t = t0 + warp * R + i;
    if (t >= s.Tq) continue;
    bf16* dst = dq + (q_row0 + t) * s.ld_q + h * D;
UNROLL
    for (int dd = 0; dd < DL; dd++) dst[lane + WARP_SIZE * dd] = __float2bfloat16(acc[i][dd] * scale);
  }
}

template <int D>
__global__ void __launch_bounds__(128) attention_backward_dkv_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv,
                                                                     const bf16* __restrict__ dout,
                                                                     const bf16* __restrict__ q,
                                                                     const bf16* __restrict__ k,
                                                                     const bf16* __restrict__ v,
                                                                     const float* __restrict__ lse,
                                                                     const float* __restrict__ delta,
                                                                     const int* __restrict__ key_lo,
                                                                     const int* __restrict__ key_hi, AttentionDims s) {
  constexpr int DL = D / WARP_SIZE, KT = ATTN_DKV_KEY_TILE, QT = ATTN_DKV_Q_TILE, KW = ATTN_DKV_KEYS_PER_WARP;
  __shared__ bf16 q_s[QT][D];
  __shared__ bf16 do_s[QT][D];
  __shared__ float k_s[KT][D + 1];
  __shared__ float v_s[KT][D + 1];
  __shared__ float p_s[QT][KT + 1];
  __shared__ float ds_s[QT][KT + 1];
  __shared__ float lse_s[QT], delta_s[QT];
  __shared__ int lo_s[QT], hi_s[QT];
  const int kvh = blockIdx.y, r = blockIdx.z, group = s.H / s.KV;
  const int j0 = blockIdx.x * KT, j_last = min(j0 + KT, s.Tk) - 1;
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const size_t q_row0 = (size_t)r * s.Tq, k_row0 = (size_t)r * s.Tk;
  const float scale = rsqrtf((float)D), q_scale = LOG2E * scale;

  // k is pre-scaled so that q.k comes out in log2 units, like the forward's scores
  for (int e = threadIdx.x; e < KT * D; e += blockDim.x) {
    const int j = e / D, d = e % D, key = j0 + j;
    const bool ok = key <= j_last;
    k_s[j][d] = ok ? __bfloat162float(k[(k_row0 + key) * s.ld_kv + kvh * D + d]) * q_scale : 0.0f;
    v_s[j][d] = ok ? __bfloat162float(v[(k_row0 + key) * s.ld_kv + kvh * D + d]) : 0.0f;
  }
  float dk_acc[KW][DL], dv_acc[KW][DL];
UNROLL
  for (int kk = 0; kk < KW; kk++)
UNROLL
    for (int dd = 0; dd < DL; dd++) dk_acc[kk][dd] = dv_acc[kk][dd] = 0.0f;

  for (int g = 0; g < group; g++) {
    const int h = kvh * group + g;
    for (int i0 = 0; i0 < s.Tq; i0 += QT) {
      __syncthreads();  // the previous query tile is consumed (k_s/v_s complete on the first pass)
      bool sees_tile = false;
      if (threadIdx.x < QT) {
        const int t = i0 + threadIdx.x;
        const size_t n = q_row0 + t;
        lo_s[threadIdx.x] = t < s.Tq ? key_lo[n] : 1;
        hi_s[threadIdx.x] = t < s.Tq ? key_hi[n] : 0;
        lse_s[threadIdx.x] = t < s.Tq ? lse[n * s.H + h] * LOG2E : 0.0f;
        delta_s[threadIdx.x] = t < s.Tq ? delta[n * s.H + h] : 0.0f;
        sees_tile = lo_s[threadIdx.x] <= j_last && hi_s[threadIdx.x] >= j0 && lo_s[threadIdx.x] <= hi_s[threadIdx.x];
      }
      if (!__syncthreads_or(sees_tile)) continue;  // no query of this tile sees our keys
      for (int e = threadIdx.x; e < QT * D; e += blockDim.x) {
        const int i = e / D, d = e % D, t = i0 + i;
        const size_t n = q_row0 + t;
        q_s[i][d] = t < s.Tq ? q[n * s.ld_q + h * D + d] : __float2bfloat16(0.0f);
        do_s[i][d] = t < s.Tq ? dout[n * s.H * D + h * D + d] : __float2bfloat16(0.0f);
      }
      __syncthreads();
      // phase 1: P and dS for the QT x KT tile
      for (int e = threadIdx.x; e < QT * KT; e += blockDim.x) {
        const int i = e / KT, j = e % KT, key = j0 + j;
        float sc = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; d++) {
          sc += __bfloat162float(q_s[i][d]) * k_s[j][d];
          dp += __bfloat162float(do_s[i][d]) * v_s[j][d];
        }
        const bool visible = key <= j_last && key >= lo_s[i] && key <= hi_s[i];
        const float p = visible ? exp2f(sc - lse_s[i]) : 0.0f;
        p_s[i][j] = p;
        ds_s[i][j] = p * (dp - delta_s[i]);
      }
      __syncthreads();
      // phase 2: this warp's KW keys accumulate over the QT rows
      for (int i = 0; i < QT; i++) {
UNROLL
        for (int kk = 0; kk < KW; kk++) {
          const int j = warp * KW + kk;
          const float p = p_s[i][j], ds = ds_s[i][j];
UNROLL
          for (int dd = 0; dd < DL; dd++) {
            dv_acc[kk][dd] += p * __bfloat162float(do_s[i][lane + WARP_SIZE * dd]);
            dk_acc[kk][dd] += ds * __bfloat162float(q_s[i][lane + WARP_SIZE * dd]);
          }
        }
      }
    }
  }
UNROLL
  for (int kk = 0; kk < KW; kk++) {
    const int key = j0 + warp * KW + kk;
    if (key > j_last) continue;
    const size_t row = (k_row0 + key) * s.ld_kv + kvh * D;
UNROLL
    for (int dd = 0; dd < DL; dd++) {
      dk[row + lane + WARP_SIZE * dd] = __float2bfloat16(dk_acc[kk][dd] * scale);
      dv[row + lane + WARP_SIZE * dd] = __float2bfloat16(dv_acc[kk][dd]);
    }
  }
}

// Host entry points. D must be 64 or 128; H % KV == 0.
inline void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* key_lo,
                              const int* key_hi, int rows, const AttentionDims& s, int D, cudaStream_t stream) {
  if (rows == 0 || s.Tq == 0) return;
  const dim3 grid(ceil_div(s.Tq, ATTN_FWD_Q_TILE), s.H, rows);
  if (D == 64) LAUNCH(attention_forward_kernel<64>, grid, 128, 0, stream)(out, lse, q, k, v, key_lo, key_hi, s);
  else if (D == 128) LAUNCH(attention_forward_kernel<128>, grid, 128, 0, stream)(out, lse, q, k, v, key_lo, key_hi, s);
  else { fprintf(stderr, "attention_forward: head_dim %d is not supported (64 or 128)\n", D); abort(); }
  CUDA_CHECK(cudaGetLastError());
}

// delta: scratch of rows*Tq*H floats.
inline void attention_backward(bf16* dq, bf16* dk, bf16* dv, float* delta, const bf16* dout, const bf16* out,
                               const bf16* q, const bf16* k, const bf16* v, const float* lse, const int* key_lo,
                               const int* key_hi, int rows, const AttentionDims& s, int D, cudaStream_t stream) {
  if (rows == 0 || s.Tq == 0) return;
  const int NH = rows * s.Tq * s.H;
  LAUNCH(attention_backward_delta_kernel, ceil_div(NH, 8), 256, 0, stream)(delta, dout, out, NH, D);
  CUDA_CHECK(cudaGetLastError());
  const dim3 grid_dq(ceil_div(s.Tq, ATTN_DQ_Q_TILE), s.H, rows), grid_dkv(ceil_div(s.Tk, ATTN_DKV_KEY_TILE), s.KV, rows);
  if (D == 64) {
    LAUNCH(attention_backward_dq_kernel<64>, grid_dq, 128, 0, stream)(dq, dout, q, k, v, lse, delta, key_lo, key_hi, s);
    LAUNCH(attention_backward_dkv_kernel<64>, grid_dkv, 128, 0, stream)(dk, dv, dout, q, k, v, lse, delta, key_lo, key_hi, s);
  } else if (D == 128) {
    LAUNCH(attention_backward_dq_kernel<128>, grid_dq, 128, 0, stream)(dq, dout, q, k, v, lse, delta, key_lo, key_hi, s);
    LAUNCH(attention_backward_dkv_kernel<128>, grid_dkv, 128, 0, stream)(dk, dv, dout, q, k, v, lse, delta, key_lo, key_hi, s);
  } else {
    fprintf(stderr, "attention_backward: head_dim %d is not supported (64 or 128)\n", D);
    abort();
  }
  CUDA_CHECK(cudaGetLastError());
}
