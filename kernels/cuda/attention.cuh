// Causal self-attention in the flash style, for training: online softmax, never a T x T matrix.
//
// Layout: qkv is the fused projection output [B*T, (H + 2*KV) * D] (q heads, then k, then v), rows
// token-major, RoPE already applied. GQA: q head h reads kv head h / (H/KV) in place, K/V are never
// copied. Packing: token t of a row attends to columns [seg_start[t], t] of its row (examples
// never see each other; a padding slot has seg_start = t and sees only itself). seg_start is
// assumed non-decreasing along a row (true for packed rows), which bounds the key/query ranges.
// Outputs: out [B*T, H*D] bf16 and lse [B*T, H] fp32, the natural log-sum-exp of each query row's
// scaled scores, which the backward uses to recompute the probabilities.
// Precision: bf16 in/out, fp32 scores, softmax and accumulators. Scores are kept in log2 units
// (q is pre-scaled by log2(e)/sqrt(D)) so that every exponential is one exp2f.
//
// Forward (attention_forward_kernel<D>), D in {64, 128}:
//   geometry: grid (ceil(T/16), H, B), 128 threads = 4 warps; each warp owns 4 query rows of the
//             16-row tile, each lane owns D/32 output columns. Key tiles of 32 keys are staged in
//             shared memory as fp32 (K rows padded to D+1 floats: lane j reads key j without bank
//             conflicts); lane j computes the score of key j for the warp's 4 rows, the warp
//             reduces max/sum with shuffles and broadcasts p_j with __shfl_sync for P.V.
//   smem    : (16*D + 32*(D+1) + 32*D) * 4 bytes = 41.1 KB for D=128, 20.6 KB for D=64.
//   traffic : q read once; each K/V tile read once per (16-row tile, q head): for causal T it is
//             about 2*T*D*2*(T/16)/2 bytes per (head, row) from L2; out 2*D + lse 4 bytes per row.
// Backward, recomputing P from lse, in three deterministic kernels (no float atomics):
//   attention_backward_delta_kernel: delta[n,h] = sum_d dout*out; one warp per (token, head).
//   attention_backward_dq_kernel<D>: grid (ceil(T/8), H, B), 4 warps x 2 query rows; like the
//             forward, lane j handles key j of a 32-key tile: p = exp2(s - lse), dp = dout.v_j,
//             ds = p (dp - delta), dq += ds_j k_j (k_j broadcast from smem, ds_j by shuffle).
//             smem: (2*8*D + 2*32*(D+1)) * 4 = 41.2 KB for D=128.
//   attention_backward_dkv_kernel<D>: grid (ceil(T/16), KV, B), 4 warps; the block owns 16 keys
//             of one kv head, loops over the H/KV q heads of its group and over 32-row query tiles
//             from the diagonal down to the end of the keys' segment. Phase 1: the 128 threads
//             compute P and dS for the 32x16 tile into smem; phase 2: warp w accumulates
//             dV[j] += P[i,j] dout[i] and dK[j] += dS[i,j] q[i] for its 4 keys in registers.
//             smem: 2*32*D*2 (q, dout as bf16) + 2*16*(D+1)*4 + 2*32*17*4 + 3*32*4 = 37.4 KB (D=128).
//   The gradients land in dqkv [B*T, (H+2KV)*D] with the same layout as qkv (RoPE backward next).
#pragma once
#include <cmath>

#include "kernels/cuda/cuda_utils.cuh"

constexpr int ATTN_FWD_WARPS = 4, ATTN_FWD_ROWS_PER_WARP = 4, ATTN_FWD_Q_TILE = 16, ATTN_KEY_TILE = 32;
constexpr int ATTN_DQ_ROWS_PER_WARP = 2, ATTN_DQ_Q_TILE = 8;
constexpr int ATTN_DKV_KEY_TILE = 16, ATTN_DKV_KEYS_PER_WARP = 4, ATTN_DKV_Q_TILE = 32;
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.6931471805599453f;

template <int D>
__global__ void __launch_bounds__(128) attention_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                                                                const bf16* __restrict__ qkv,
                                                                const int* __restrict__ seg_start, int T, int H,
                                                                int KV) {
  constexpr int DL = D / WARP_SIZE, R = ATTN_FWD_ROWS_PER_WARP;
  __shared__ float q_s[ATTN_FWD_Q_TILE][D];
  __shared__ float k_s[ATTN_KEY_TILE][D + 1];
  __shared__ float v_s[ATTN_KEY_TILE][D];
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / KV);
  const int S = (H + 2 * KV) * D;
  const int t0 = blockIdx.x * ATTN_FWD_Q_TILE, t_last = min(t0 + ATTN_FWD_Q_TILE, T) - 1;
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const bf16* rows = qkv + (size_t)b * T * S;
  const int* starts = seg_start + (size_t)b * T;
  const float q_scale = LOG2E * rsqrtf((float)D);

  for (int e = threadIdx.x; e < ATTN_FWD_Q_TILE * D; e += blockDim.x) {
    const int r = e / D, d = e % D, t = t0 + r;
    q_s[r][d] = t < T ? __bfloat162float(rows[(size_t)t * S + h * D + d]) * q_scale : 0.0f;
  }
  int k_begin = t_last;
  for (int t = t0; t <= t_last; t++) k_begin = min(k_begin, starts[t]);

  float m[R], l[R], o[R][DL];
  int row_start[R];
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int t = t0 + warp * R + i;
    m[i] = -INFINITY;
    l[i] = 0.0f;
    row_start[i] = t < T ? starts[t] : T;
#pragma unroll
    for (int dd = 0; dd < DL; dd++) o[i][dd] = 0.0f;
  }

  for (int j0 = k_begin; j0 <= t_last; j0 += ATTN_KEY_TILE) {
    __syncthreads();  // the previous tile is consumed (and q_s is complete on the first pass)
    for (int e = threadIdx.x; e < ATTN_KEY_TILE * D; e += blockDim.x) {
      const int j = e / D, d = e % D, key = j0 + j;
      const bool ok = key <= t_last;
      k_s[j][d] = ok ? __bfloat162float(rows[(size_t)key * S + (H + kvh) * D + d]) : 0.0f;
      v_s[j][d] = ok ? __bfloat162float(rows[(size_t)key * S + (H + KV + kvh) * D + d]) : 0.0f;
    }
    __syncthreads();
    float s[R];
#pragma unroll
    for (int i = 0; i < R; i++) s[i] = 0.0f;
    for (int d = 0; d < D; d++) {
      const float kd = k_s[lane][d];
#pragma unroll
      for (int i = 0; i < R; i++) s[i] += q_s[warp * R + i][d] * kd;
    }
    const int key = j0 + lane;
#pragma unroll
    for (int i = 0; i < R; i++) {
      const int t = t0 + warp * R + i;
      if (!(t < T && key >= row_start[i] && key <= t)) s[i] = -INFINITY;
      const float m_new = fmaxf(m[i], warp_reduce_max(s[i]));
      if (m_new == -INFINITY) continue;  // no visible key yet for this row (warp-uniform)
      const float p = exp2f(s[i] - m_new);
      const float correction = exp2f(m[i] - m_new);
      l[i] = l[i] * correction + warp_reduce_sum(p);
      m[i] = m_new;
#pragma unroll
      for (int dd = 0; dd < DL; dd++) o[i][dd] *= correction;
      for (int jj = 0; jj < ATTN_KEY_TILE; jj++) {
        const float pj = __shfl_sync(FULL_MASK, p, jj);
#pragma unroll
        for (int dd = 0; dd < DL; dd++) o[i][dd] += pj * v_s[jj][lane + WARP_SIZE * dd];
      }
    }
  }
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int t = t0 + warp * R + i;
    if (t >= T) continue;
    const size_t n = (size_t)b * T + t;
    const float inv_l = 1.0f / l[i];
#pragma unroll
    for (int dd = 0; dd < DL; dd++) out[n * H * D + h * D + lane + WARP_SIZE * dd] = __float2bfloat16(o[i][dd] * inv_l);
    if (lane == 0) lse[n * H + h] = (m[i] + log2f(l[i])) * LN2;
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
__global__ void __launch_bounds__(128) attention_backward_dq_kernel(bf16* __restrict__ dqkv,
                                                                    const bf16* __restrict__ dout,
                                                                    const bf16* __restrict__ qkv,
                                                                    const float* __restrict__ lse,
                                                                    const float* __restrict__ delta,
                                                                    const int* __restrict__ seg_start, int T, int H,
                                                                    int KV) {
  constexpr int DL = D / WARP_SIZE, R = ATTN_DQ_ROWS_PER_WARP;
  __shared__ float q_s[ATTN_DQ_Q_TILE][D];
  __shared__ float do_s[ATTN_DQ_Q_TILE][D];
  __shared__ float k_s[ATTN_KEY_TILE][D + 1];
  __shared__ float v_s[ATTN_KEY_TILE][D + 1];
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / (H / KV);
  const int S = (H + 2 * KV) * D;
  const int t0 = blockIdx.x * ATTN_DQ_Q_TILE, t_last = min(t0 + ATTN_DQ_Q_TILE, T) - 1;
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const bf16* rows = qkv + (size_t)b * T * S;
  const int* starts = seg_start + (size_t)b * T;
  const float scale = rsqrtf((float)D), q_scale = LOG2E * scale;

  for (int e = threadIdx.x; e < ATTN_DQ_Q_TILE * D; e += blockDim.x) {
    const int r = e / D, d = e % D, t = t0 + r;
    const size_t n = (size_t)b * T + t;
    q_s[r][d] = t < T ? __bfloat162float(rows[(size_t)t * S + h * D + d]) * q_scale : 0.0f;
    do_s[r][d] = t < T ? __bfloat162float(dout[n * H * D + h * D + d]) : 0.0f;
  }
  int k_begin = t_last;
  for (int t = t0; t <= t_last; t++) k_begin = min(k_begin, starts[t]);

  float lse2[R], row_delta[R], dq[R][DL];
  int row_start[R];
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int t = t0 + warp * R + i;
    const size_t n = (size_t)b * T + t;
    lse2[i] = t < T ? lse[n * H + h] * LOG2E : 0.0f;
    row_delta[i] = t < T ? delta[n * H + h] : 0.0f;
    row_start[i] = t < T ? starts[t] : T;
#pragma unroll
    for (int dd = 0; dd < DL; dd++) dq[i][dd] = 0.0f;
  }

  for (int j0 = k_begin; j0 <= t_last; j0 += ATTN_KEY_TILE) {
    __syncthreads();
    for (int e = threadIdx.x; e < ATTN_KEY_TILE * D; e += blockDim.x) {
      const int j = e / D, d = e % D, key = j0 + j;
      const bool ok = key <= t_last;
      k_s[j][d] = ok ? __bfloat162float(rows[(size_t)key * S + (H + kvh) * D + d]) : 0.0f;
      v_s[j][d] = ok ? __bfloat162float(rows[(size_t)key * S + (H + KV + kvh) * D + d]) : 0.0f;
    }
    __syncthreads();
    float s[R], dp[R];
#pragma unroll
    for (int i = 0; i < R; i++) s[i] = dp[i] = 0.0f;
    for (int d = 0; d < D; d++) {
      const float kd = k_s[lane][d], vd = v_s[lane][d];
#pragma unroll
      for (int i = 0; i < R; i++) {
        s[i] += q_s[warp * R + i][d] * kd;
        dp[i] += do_s[warp * R + i][d] * vd;
      }
    }
    const int key = j0 + lane;
#pragma unroll
    for (int i = 0; i < R; i++) {
      const int t = t0 + warp * R + i;
      const bool visible = t < T && key >= row_start[i] && key <= t;
      const float ds = visible ? exp2f(s[i] - lse2[i]) * (dp[i] - row_delta[i]) : 0.0f;
      for (int jj = 0; jj < ATTN_KEY_TILE; jj++) {
        const float dsj = __shfl_sync(FULL_MASK, ds, jj);
#pragma unroll
        for (int dd = 0; dd < DL; dd++) dq[i][dd] += dsj * k_s[jj][lane + WARP_SIZE * dd];
      }
    }
  }
#pragma unroll
  for (int i = 0; i < R; i++) {
    const int t = t0 + warp * R + i;
    if (t >= T) continue;
    bf16* dst = dqkv + ((size_t)b * T + t) * S + h * D;
#pragma unroll
    for (int dd = 0; dd < DL; dd++) dst[lane + WARP_SIZE * dd] = __float2bfloat16(dq[i][dd] * scale);
  }
}

template <int D>
__global__ void __launch_bounds__(128) attention_backward_dkv_kernel(bf16* __restrict__ dqkv,
                                                                     const bf16* __restrict__ dout,
                                                                     const bf16* __restrict__ qkv,
                                                                     const float* __restrict__ lse,
                                                                     const float* __restrict__ delta,
                                                                     const int* __restrict__ seg_start, int T,
                                                                     int H, int KV) {
  constexpr int DL = D / WARP_SIZE, KT = ATTN_DKV_KEY_TILE, QT = ATTN_DKV_Q_TILE, KW = ATTN_DKV_KEYS_PER_WARP;
  __shared__ bf16 q_s[QT][D];
  __shared__ bf16 do_s[QT][D];
  __shared__ float k_s[KT][D + 1];
  __shared__ float v_s[KT][D + 1];
  __shared__ float p_s[QT][KT + 1];
  __shared__ float ds_s[QT][KT + 1];
  __shared__ float lse_s[QT], delta_s[QT];
  __shared__ int start_s[QT];
  const int kvh = blockIdx.y, b = blockIdx.z, group = H / KV;
  const int S = (H + 2 * KV) * D;
  const int j0 = blockIdx.x * KT, j_last = min(j0 + KT, T) - 1;
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const bf16* rows = qkv + (size_t)b * T * S;
  const int* starts = seg_start + (size_t)b * T;
  const float scale = rsqrtf((float)D), q_scale = LOG2E * scale;

  for (int e = threadIdx.x; e < KT * D; e += blockDim.x) {
    const int j = e / D, d = e % D, key = j0 + j;
    const bool ok = key <= j_last;
    k_s[j][d] = ok ? __bfloat162float(rows[(size_t)key * S + (H + kvh) * D + d]) * q_scale : 0.0f;
    v_s[j][d] = ok ? __bfloat162float(rows[(size_t)key * S + (H + KV + kvh) * D + d]) : 0.0f;
  }
  float dk[KW][DL], dv[KW][DL];
#pragma unroll
  for (int kk = 0; kk < KW; kk++)
#pragma unroll
    for (int dd = 0; dd < DL; dd++) dk[kk][dd] = dv[kk][dd] = 0.0f;

  for (int g = 0; g < group; g++) {
    const int h = kvh * group + g;
    // queries that can see these keys: from the diagonal (i >= j0) until a row whose example
    // starts after the last key (seg_start is non-decreasing along the row).
    for (int i0 = j0; i0 < T && starts[i0] <= j_last; i0 += QT) {
      __syncthreads();  // the previous query tile is consumed (k_s/v_s complete on the first pass)
      for (int e = threadIdx.x; e < QT * D; e += blockDim.x) {
        const int r = e / D, d = e % D, t = i0 + r;
        const size_t n = (size_t)b * T + t;
        q_s[r][d] = t < T ? rows[(size_t)t * S + h * D + d] : __float2bfloat16(0.0f);
        do_s[r][d] = t < T ? dout[n * H * D + h * D + d] : __float2bfloat16(0.0f);
      }
      for (int r = threadIdx.x; r < QT; r += blockDim.x) {
        const int t = i0 + r;
        const size_t n = (size_t)b * T + t;
        lse_s[r] = t < T ? lse[n * H + h] * LOG2E : 0.0f;
        delta_s[r] = t < T ? delta[n * H + h] : 0.0f;
        start_s[r] = t < T ? starts[t] : T;
      }
      __syncthreads();
      // phase 1: P and dS for the QT x KT tile (k_s is pre-scaled, so s is in log2 units)
      for (int e = threadIdx.x; e < QT * KT; e += blockDim.x) {
        const int i = e / KT, j = e % KT, t = i0 + i, key = j0 + j;
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; d++) {
          s += __bfloat162float(q_s[i][d]) * k_s[j][d];
          dp += __bfloat162float(do_s[i][d]) * v_s[j][d];
        }
        const bool visible = t < T && key <= t && key >= start_s[i];
        const float p = visible ? exp2f(s - lse_s[i]) : 0.0f;
        p_s[i][j] = p;
        ds_s[i][j] = p * (dp - delta_s[i]);
      }
      __syncthreads();
      // phase 2: this warp's KW keys accumulate over the QT rows
      for (int i = 0; i < QT; i++) {
#pragma unroll
        for (int kk = 0; kk < KW; kk++) {
          const int j = warp * KW + kk;
          const float p = p_s[i][j], ds = ds_s[i][j];
#pragma unroll
          for (int dd = 0; dd < DL; dd++) {
            dv[kk][dd] += p * __bfloat162float(do_s[i][lane + WARP_SIZE * dd]);
            dk[kk][dd] += ds * __bfloat162float(q_s[i][lane + WARP_SIZE * dd]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int kk = 0; kk < KW; kk++) {
    const int key = j0 + warp * KW + kk;
    if (key > j_last) continue;
    bf16* dst = dqkv + ((size_t)b * T + key) * S;
#pragma unroll
    for (int dd = 0; dd < DL; dd++) {
      dst[(H + kvh) * D + lane + WARP_SIZE * dd] = __float2bfloat16(dk[kk][dd] * scale);
      dst[(H + KV + kvh) * D + lane + WARP_SIZE * dd] = __float2bfloat16(dv[kk][dd]);
    }
  }
}

// Host entry points. D must be 64 or 128; H % KV == 0.
inline void attention_forward(bf16* out, float* lse, const bf16* qkv, const int* seg_start, int B, int T, int H,
                              int KV, int D, cudaStream_t stream) {
  if (B == 0 || T == 0) return;
  const dim3 grid(ceil_div(T, ATTN_FWD_Q_TILE), H, B);
  if (D == 64) LAUNCH(attention_forward_kernel<64>, grid, 128, 0, stream)(out, lse, qkv, seg_start, T, H, KV);
  else if (D == 128) LAUNCH(attention_forward_kernel<128>, grid, 128, 0, stream)(out, lse, qkv, seg_start, T, H, KV);
  else { fprintf(stderr, "attention_forward: head_dim %d is not supported (64 or 128)\n", D); abort(); }
  CUDA_CHECK(cudaGetLastError());
}

// delta: scratch of B*T*H floats. Writes every element of dqkv.
inline void attention_backward(bf16* dqkv, float* delta, const bf16* dout, const bf16* out, const bf16* qkv,
                               const float* lse, const int* seg_start, int B, int T, int H, int KV, int D,
                               cudaStream_t stream) {
  if (B == 0 || T == 0) return;
  const int NH = B * T * H;
  LAUNCH(attention_backward_delta_kernel, ceil_div(NH, 8), 256, 0, stream)(delta, dout, out, NH, D);
  CUDA_CHECK(cudaGetLastError());
  const dim3 grid_dq(ceil_div(T, ATTN_DQ_Q_TILE), H, B), grid_dkv(ceil_div(T, ATTN_DKV_KEY_TILE), KV, B);
  if (D == 64) {
    LAUNCH(attention_backward_dq_kernel<64>, grid_dq, 128, 0, stream)(dqkv, dout, qkv, lse, delta, seg_start, T, H, KV);
    LAUNCH(attention_backward_dkv_kernel<64>, grid_dkv, 128, 0, stream)(dqkv, dout, qkv, lse, delta, seg_start, T, H, KV);
  } else if (D == 128) {
    LAUNCH(attention_backward_dq_kernel<128>, grid_dq, 128, 0, stream)(dqkv, dout, qkv, lse, delta, seg_start, T, H, KV);
    LAUNCH(attention_backward_dkv_kernel<128>, grid_dkv, 128, 0, stream)(dqkv, dout, qkv, lse, delta, seg_start, T, H, KV);
  } else {
    fprintf(stderr, "attention_backward: head_dim %d is not supported (64 or 128)\n", D);
    abort();
  }
  CUDA_CHECK(cudaGetLastError());
}
