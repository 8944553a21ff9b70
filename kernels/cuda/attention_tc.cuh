// Attention on tensor cores (nvcuda::wmma, bf16 operands, fp32 accumulation): the same contract as
// kernels/cuda/attention.cuh (shapes, per-query key ranges [key_lo, key_hi] for causal rows, packed
// segments and the memory slot, GQA without K/V copies, out/lse/dq/dk/dv layouts), which stays the
// reference path. Scores are in log2 units (s = q.k * log2(e)/sqrt(D)), as there.
//
// The element layout of a WMMA fragment is unspecified, so no kernel here touches a fragment
// element by position: every per-row operation (masking, softmax, dS) goes through a per-warp
// shared-memory tile that store_matrix_sync writes and load_matrix_sync reads back. Since an
// accumulator's rows cannot be rescaled in place, the forward does not use the online softmax: a
// first pass over the key tiles computes each row's max and sum (the lse), a second recomputes the
// scores and accumulates exp2(s - lse) V, already normalized, in fragments. QK^T is thus computed
// twice (6 D instead of 4 D flops per query-key pair), on units ~15x faster than the fp32 FMA pipe.
// Precision: fp32 scores, softmax, lse and accumulators; the probabilities P (forward) and dS
// (backward) are rounded to bf16 as the A operand of the second product (one more bf16 rounding
// than the FMA kernels, which keep them in fp32).
// Shared-memory tiles are padded by 8 bf16 / 4 floats per row (16 bytes, against bank conflicts);
// every fragment pointer is 32-byte aligned and every ldm a multiple of 16 bytes, as WMMA requires.
//
// Forward (attention_tc_forward_kernel<D>), D in {64, 128}:
//   geometry: grid (ceil(Tq/64), H, rows), 128 threads = 4 warps; warp w owns queries 16w..16w+15 of
//             the 64-query tile and keeps their Q as D/16 matrix_a fragments in registers. Key tiles
//             of 32, from the tile's lowest key_lo to its highest key_hi; a warp skips the tiles
//             outside its own rows' ranges. Pass 1: S = Q K^T (2 x D/16 mma), lanes 2r, 2r+1 keep
//             the running max/sum of row r over 16 keys each. Pass 2: S again, P = exp2(S - lse)
//             (bf16) and O += P V (2 x D/16 mma) in D/16 accumulators.
//   smem    : 64 x (D+8) bf16 (Q, then K | V) + 4 x 16 x 36 fp32 (S) + 4 x 16 x 40 bf16 (P)
//             + 2 x 64 ints = 32.3 KB for D = 128, 24.1 KB for D = 64.
//   traffic : q, out once (2 D bytes per query and head); K twice and V once per 64-query tile
//             (vs once per 16 queries for the FMA kernel), from L2 for the tiles sharing them.
// Backward, recomputing P from lse, deterministic (no atomics), after the delta kernel of
// attention.cuh (delta = rowsum(dout * out)):
//   attention_tc_backward_dq_kernel<D>: grid (ceil(Tq/64), H, rows), 4 warps x 16 queries, Q and dO
//             as matrix_a fragments in registers; per 32-key tile: S = Q K^T, dP = dO V^T (into
//             smem), dS = P (dP - delta) (bf16), dQ += dS K in D/16 accumulators.
//             smem: 64 x (D+8) bf16 + 2 x 4 x 16 x 36 fp32 + 4 x 16 x 40 bf16 + 4 x 64 x 4 = 42.0 KB (D = 128).
//   attention_tc_backward_dkv_kernel<D>: grid (ceil(Tk/32), KV, rows), 64 threads = 2 warps x 16
//             keys, dK and dV in 2 x D/16 accumulators per warp; loops over the H/KV q heads of
//             its group and the 16-query tiles that see any of its keys (a block vote skips the
//             others): S^T = K Q^T, P^T (bf16), dP^T = V dO^T, dS^T (bf16), dV += P^T dO,
//             dK += dS^T Q.
//             smem: 64 x (D+8) bf16 (K | V) + 32 x (D+8) bf16 (Q | dO) + 2 x 16 x 20 fp32
//             + 2 x 2 x 16 x 24 bf16 + 16 x 16 = 32.0 KB (D = 128). 254 registers at D = 128 (dK and
//             dV in fragments; no spills, docs/cuda_stats.md): 4 blocks, 8 warps per SM.
//   dq, dk, dv have the layouts and strides of q, k, v and are fully overwritten.
#pragma once

#include "kernels/cuda/attention.cuh"

namespace wmma = nvcuda::wmma;

constexpr int ATC_Q_TILE = 64, ATC_KEY_TILE = 32, ATC_ROWS = 16;  // 16 rows per warp
constexpr int ATC_DKV_KEYS = 32, ATC_DKV_Q_TILE = 16;
constexpr int ATC_S_LD = ATC_KEY_TILE + 4, ATC_P_LD = ATC_KEY_TILE + 8;

using frag_a_row = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using frag_b_row = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using frag_b_col = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using frag_acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// 16 bytes from src to dst (both 16-byte aligned; src null: zeros) as one vector access: a uint4
// load and store under nvcc, memcpy under the emulator (g++ would take the cast for a
// strict-aliasing violation).
__device__ __forceinline__ void atc_copy16(void* dst, const void* src) {
#if defined(__CUDACC__)
  *reinterpret_cast<uint4*>(dst) = src ? *reinterpret_cast<const uint4*>(src) : make_uint4(0u, 0u, 0u, 0u);
#else
  if (src) std::memcpy(dst, src, 16);
  else std::memset(dst, 0, 16);  // bf16 zeros
#endif
}

// rows x D bf16 from global memory (row stride ld, `rows_valid` real rows, zeros after) into a
// padded shared tile, in 16-byte vectors (src 16-byte aligned, ld a multiple of 8: see
// attention_tc_supported); all threads of the block take part.
template <int D>
__device__ __forceinline__ void atc_load_rows(bf16 (*dst)[D + 8], const bf16* __restrict__ src, long long ld, int rows,
                                              int rows_valid) {
  constexpr int V = D / 8;  // vectors per row
  for (int e = threadIdx.x; e < rows * V; e += blockDim.x) {
    const int i = e / V, c = e % V;
    atc_copy16(&dst[i][8 * c], i < rows_valid ? src + (size_t)i * ld + 8 * c : nullptr);
  }
}

// acc[c] (16 x 16 each, c < D/16) -> bf16 rows of dst (row stride ld), through the warp's fp32
// staging tile (16 x ATC_S_LD); rows at or past `rows_valid` are not written.
template <int D>
__device__ __forceinline__ void atc_store_rows(bf16* __restrict__ dst, long long ld, int rows_valid, frag_acc* acc,
                                               float scale, float* stage) {
  const int lane = threadIdx.x % WARP_SIZE;
UNROLL
  for (int c = 0; c < D / 16; c++) {
    wmma::store_matrix_sync(stage, acc[c], ATC_S_LD, wmma::mem_row_major);
    __syncwarp();
UNROLL
    for (int i = 0; i < 8; i++) {
      const int e = lane * 8 + i, row = e / 16, col = e % 16;
      if (row < rows_valid) dst[(size_t)row * ld + c * 16 + col] = __float2bfloat16(stage[row * ATC_S_LD + col] * scale);
    }
    __syncwarp();
  }
}

// S (16 x 32) = A (16 x D, fragments in registers) . B^T, B = 32 rows of a padded smem tile,
// stored into the warp's fp32 tile s (16 x ATC_S_LD).
template <int D>
__device__ __forceinline__ void atc_scores(float* s, const frag_a_row* a, const bf16 (*b)[D + 8]) {
  frag_acc acc[2];
  frag_b_col kb;
UNROLL
  for (int half = 0; half < 2; half++) {
    wmma::fill_fragment(acc[half], 0.0f);
UNROLL
    for (int c = 0; c < D / 16; c++) {
      wmma::load_matrix_sync(kb, &b[16 * half][16 * c], D + 8);
      wmma::mma_sync(acc[half], a[c], kb, acc[half]);
    }
    wmma::store_matrix_sync(s + 16 * half, acc[half], ATC_S_LD, wmma::mem_row_major);
  }
}

// acc[c] += P (16 x 32, bf16 tile p) . B (32 rows of a padded smem tile, columns 16c..16c+15).
template <int D>
__device__ __forceinline__ void atc_accumulate(frag_acc* acc, const bf16* p, const bf16 (*b)[D + 8]) {
  frag_a_row pa[2];
  frag_b_row vb;
  wmma::load_matrix_sync(pa[0], p, ATC_P_LD);
  wmma::load_matrix_sync(pa[1], p + 16, ATC_P_LD);
UNROLL
  for (int c = 0; c < D / 16; c++)
UNROLL
    for (int half = 0; half < 2; half++) {
      wmma::load_matrix_sync(vb, &b[16 * half][16 * c], D + 8);
      wmma::mma_sync(acc[c], pa[half], vb, acc[c]);
    }
}

template <int D>
__global__ void __launch_bounds__(128) attention_tc_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                                                                   const bf16* __restrict__ q,
                                                                   const bf16* __restrict__ k,
                                                                   const bf16* __restrict__ v,
                                                                   const int* __restrict__ key_lo,
                                                                   const int* __restrict__ key_hi, AttentionDims s) {
  __shared__ __align__(32) bf16 buf[ATC_Q_TILE][D + 8];  // Q tile, then K (rows 0..31) | V (32..63)
  __shared__ __align__(32) float s_s[4][ATC_ROWS * ATC_S_LD];
  __shared__ __align__(32) bf16 p_s[4][ATC_ROWS * ATC_P_LD];
  __shared__ int lo_s[ATC_Q_TILE], hi_s[ATC_Q_TILE];
  const int h = blockIdx.y, r = blockIdx.z, kvh = h / (s.H / s.KV);
  const int t0 = blockIdx.x * ATC_Q_TILE;
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const size_t q_row0 = (size_t)r * s.Tq, k_row0 = (size_t)r * s.Tk;
  const float q_scale = LOG2E * rsqrtf((float)D);

  if (threadIdx.x < ATC_Q_TILE) {
    const int t = t0 + threadIdx.x;
    lo_s[threadIdx.x] = t < s.Tq ? key_lo[q_row0 + t] : 1;  // empty range for rows past the end
    hi_s[threadIdx.x] = t < s.Tq ? key_hi[q_row0 + t] : 0;
  }
  atc_load_rows<D>(buf, q + (q_row0 + t0) * s.ld_q + h * D, s.ld_q, ATC_Q_TILE, s.Tq - t0);
  __syncthreads();
  frag_a_row qa[D / 16];
UNROLL
  for (int c = 0; c < D / 16; c++) wmma::load_matrix_sync(qa[c], &buf[ATC_ROWS * warp][16 * c], D + 8);
  int k_begin = s.Tk, k_last = -1, w_begin = s.Tk, w_last = -1;  // the block's and the warp's key span
  for (int i = 0; i < ATC_Q_TILE; i++) {
    if (lo_s[i] > hi_s[i]) continue;
    k_begin = min(k_begin, lo_s[i]);
    k_last = max(k_last, hi_s[i]);
    if (i / ATC_ROWS == warp) {
      w_begin = min(w_begin, lo_s[i]);
      w_last = max(w_last, hi_s[i]);
    }
  }
  // Lanes 2i and 2i+1 own row i of the warp's 16, keys 16*(lane%2)..+15 of each tile.
  const int row = lane / 2, half = lane % 2, lo = lo_s[ATC_ROWS * warp + row], hi = hi_s[ATC_ROWS * warp + row];
  float* const st = s_s[warp];
  bf16* const pt = p_s[warp];

  // Pass 1: the row max and sum of exp2 over the visible keys.
  float m = -INFINITY, l = 0.0f;
  for (int j0 = k_begin; j0 <= k_last; j0 += ATC_KEY_TILE) {
    __syncthreads();  // the previous tile (or the Q fragments' source) is consumed
    atc_load_rows<D>(buf, k + (k_row0 + j0) * s.ld_kv + kvh * D, s.ld_kv, ATC_KEY_TILE, k_last + 1 - j0);
    __syncthreads();
    if (j0 > w_last || j0 + ATC_KEY_TILE <= w_begin) continue;  // warp-uniform
    atc_scores<D>(st, qa, buf);
    __syncwarp();
    float tile_max = -INFINITY;
    for (int jj = 0; jj < 16; jj++) {
      const int key = j0 + 16 * half + jj;
      if (key >= lo && key <= hi) tile_max = fmaxf(tile_max, st[row * ATC_S_LD + 16 * half + jj] * q_scale);
    }
    if (tile_max > -INFINITY) {
      const float m_new = fmaxf(m, tile_max);
      float sum = 0.0f;
      for (int jj = 0; jj < 16; jj++) {
        const int key = j0 + 16 * half + jj;
        if (key >= lo && key <= hi) sum += exp2f(st[row * ATC_S_LD + 16 * half + jj] * q_scale - m_new);
      }
      l = l * exp2f(m - m_new) + sum;
      m = m_new;
    }
    __syncwarp();  // st is read before the next tile overwrites it
  }
  const float m_other = __shfl_xor_sync(FULL_MASK, m, 1), l_other = __shfl_xor_sync(FULL_MASK, l, 1);
  const float m_row = fmaxf(m, m_other);
  const float l_row = m_row == -INFINITY ? 0.0f : l * exp2f(m - m_row) + l_other * exp2f(m_other - m_row);
  const float lse2 = l_row > 0.0f ? m_row + log2f(l_row) : 0.0f;  // an empty range has no visible key
  const int t_row = t0 + ATC_ROWS * warp + row;
  if (half == 0 && t_row < s.Tq) lse[(q_row0 + t_row) * s.H + h] = l_row > 0.0f ? lse2 * LN2 : -INFINITY;

  // Pass 2: O = sum_j exp2(s_j - lse2) v_j, normalized as it accumulates.
  frag_acc o[D / 16];
UNROLL
  for (int c = 0; c < D / 16; c++) wmma::fill_fragment(o[c], 0.0f);
  for (int j0 = k_begin; j0 <= k_last; j0 += ATC_KEY_TILE) {
    __syncthreads();
    atc_load_rows<D>(buf, k + (k_row0 + j0) * s.ld_kv + kvh * D, s.ld_kv, ATC_KEY_TILE, k_last + 1 - j0);
    atc_load_rows<D>(buf + ATC_KEY_TILE, v + (k_row0 + j0) * s.ld_kv + kvh * D, s.ld_kv, ATC_KEY_TILE, k_last + 1 - j0);
    __syncthreads();
    if (j0 > w_last || j0 + ATC_KEY_TILE <= w_begin) continue;
    atc_scores<D>(st, qa, buf);
    __syncwarp();
    for (int jj = 0; jj < 16; jj++) {
      const int key = j0 + 16 * half + jj, col = 16 * half + jj;
      const bool visible = key >= lo && key <= hi;
      pt[row * ATC_P_LD + col] = __float2bfloat16(visible ? exp2f(st[row * ATC_S_LD + col] * q_scale - lse2) : 0.0f);
    }
    __syncwarp();
    atc_accumulate<D>(o, pt, buf + ATC_KEY_TILE);
  }
  __syncwarp();
  atc_store_rows<D>(out + (q_row0 + t0 + ATC_ROWS * warp) * s.H * D + h * D, (long long)s.H * D,
                    s.Tq - t0 - ATC_ROWS * warp, o, 1.0f, st);
}

template <int D>
__global__ void __launch_bounds__(128) attention_tc_backward_dq_kernel(bf16* __restrict__ dq,
                                                                       const bf16* __restrict__ dout,
                                                                       const bf16* __restrict__ q,
                                                                       const bf16* __restrict__ k,
                                                                       const bf16* __restrict__ v,
                                                                       const float* __restrict__ lse,
                                                                       const float* __restrict__ delta,
                                                                       const int* __restrict__ key_lo,
                                                                       const int* __restrict__ key_hi,
                                                                       AttentionDims s) {
  __shared__ __align__(32) bf16 buf[ATC_Q_TILE][D + 8];  // Q, then dO, then K (rows 0..31) | V (32..63)
  __shared__ __align__(32) float s_s[4][ATC_ROWS * ATC_S_LD];
  __shared__ __align__(32) float dp_s[4][ATC_ROWS * ATC_S_LD];
  __shared__ __align__(32) bf16 ds_s[4][ATC_ROWS * ATC_P_LD];
  __shared__ int lo_s[ATC_Q_TILE], hi_s[ATC_Q_TILE];
  __shared__ float lse2_s[ATC_Q_TILE], delta_s[ATC_Q_TILE];
  const int h = blockIdx.y, r = blockIdx.z, kvh = h / (s.H / s.KV);
  const int t0 = blockIdx.x * ATC_Q_TILE;
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const size_t q_row0 = (size_t)r * s.Tq, k_row0 = (size_t)r * s.Tk;
  const float scale = rsqrtf((float)D), q_scale = LOG2E * scale;

  if (threadIdx.x < ATC_Q_TILE) {
    const int t = t0 + threadIdx.x;
    const size_t n = q_row0 + t;
    lo_s[threadIdx.x] = t < s.Tq ? key_lo[n] : 1;
    hi_s[threadIdx.x] = t < s.Tq ? key_hi[n] : 0;
    lse2_s[threadIdx.x] = t < s.Tq ? lse[n * s.H + h] * LOG2E : 0.0f;
    delta_s[threadIdx.x] = t < s.Tq ? delta[n * s.H + h] : 0.0f;
  }
  frag_a_row qa[D / 16], doa[D / 16];
  atc_load_rows<D>(buf, q + (q_row0 + t0) * s.ld_q + h * D, s.ld_q, ATC_Q_TILE, s.Tq - t0);
  __syncthreads();
UNROLL
  for (int c = 0; c < D / 16; c++) wmma::load_matrix_sync(qa[c], &buf[ATC_ROWS * warp][16 * c], D + 8);
  __syncthreads();
  atc_load_rows<D>(buf, dout + (q_row0 + t0) * s.H * D + h * D, (long long)s.H * D, ATC_Q_TILE, s.Tq - t0);
  __syncthreads();
UNROLL
  for (int c = 0; c < D / 16; c++) wmma::load_matrix_sync(doa[c], &buf[ATC_ROWS * warp][16 * c], D + 8);
  int k_begin = s.Tk, k_last = -1, w_begin = s.Tk, w_last = -1;
  for (int i = 0; i < ATC_Q_TILE; i++) {
    if (lo_s[i] > hi_s[i]) continue;
    k_begin = min(k_begin, lo_s[i]);
    k_last = max(k_last, hi_s[i]);
    if (i / ATC_ROWS == warp) {
      w_begin = min(w_begin, lo_s[i]);
      w_last = max(w_last, hi_s[i]);
    }
  }
  const int row = lane / 2, half = lane % 2, ri = ATC_ROWS * warp + row;
  const int lo = lo_s[ri], hi = hi_s[ri];
  const float lse2 = lse2_s[ri], row_delta = delta_s[ri];
  float* const st = s_s[warp];
  float* const dpt = dp_s[warp];
  bf16* const dst = ds_s[warp];

  frag_acc acc[D / 16];
UNROLL
  for (int c = 0; c < D / 16; c++) wmma::fill_fragment(acc[c], 0.0f);
  for (int j0 = k_begin; j0 <= k_last; j0 += ATC_KEY_TILE) {
    __syncthreads();
    atc_load_rows<D>(buf, k + (k_row0 + j0) * s.ld_kv + kvh * D, s.ld_kv, ATC_KEY_TILE, k_last + 1 - j0);
    atc_load_rows<D>(buf + ATC_KEY_TILE, v + (k_row0 + j0) * s.ld_kv + kvh * D, s.ld_kv, ATC_KEY_TILE, k_last + 1 - j0);
    __syncthreads();
    if (j0 > w_last || j0 + ATC_KEY_TILE <= w_begin) continue;
    atc_scores<D>(st, qa, buf);
    atc_scores<D>(dpt, doa, buf + ATC_KEY_TILE);
    __syncwarp();
    for (int jj = 0; jj < 16; jj++) {
      const int key = j0 + 16 * half + jj, col = 16 * half + jj;
      const bool visible = key >= lo && key <= hi;
      const float ds = visible ? exp2f(st[row * ATC_S_LD + col] * q_scale - lse2) * (dpt[row * ATC_S_LD + col] - row_delta)
                               : 0.0f;
      dst[row * ATC_P_LD + col] = __float2bfloat16(ds);
    }
    __syncwarp();
    atc_accumulate<D>(acc, dst, buf);
  }
  __syncwarp();
  atc_store_rows<D>(dq + (q_row0 + t0 + ATC_ROWS * warp) * s.ld_q + h * D, s.ld_q, s.Tq - t0 - ATC_ROWS * warp, acc,
                    scale, st);
}

template <int D>
__global__ void __launch_bounds__(64) attention_tc_backward_dkv_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv,
                                                                       const bf16* __restrict__ dout,
                                                                       const bf16* __restrict__ q,
                                                                       const bf16* __restrict__ k,
                                                                       const bf16* __restrict__ v,
                                                                       const float* __restrict__ lse,
                                                                       const float* __restrict__ delta,
                                                                       const int* __restrict__ key_lo,
                                                                       const int* __restrict__ key_hi,
                                                                       AttentionDims s) {
  constexpr int QT = ATC_DKV_Q_TILE, F_LD = QT + 4, B_LD = QT + 8;
  __shared__ __align__(32) bf16 kv_s[2 * ATC_DKV_KEYS][D + 8];  // K (rows 0..31) | V (32..63)
  __shared__ __align__(32) bf16 qd_s[2 * QT][D + 8];            // Q (rows 0..15) | dO (16..31)
  __shared__ __align__(32) float f_s[2][16 * F_LD];
  __shared__ __align__(32) bf16 pt_s[2][16 * B_LD];
  __shared__ __align__(32) bf16 dst_s[2][16 * B_LD];
  __shared__ float lse2_s[QT], delta_s[QT];
  __shared__ int lo_s[QT], hi_s[QT];
  const int kvh = blockIdx.y, r = blockIdx.z, group = s.H / s.KV;
  const int j0 = blockIdx.x * ATC_DKV_KEYS, j_last = min(j0 + ATC_DKV_KEYS, s.Tk) - 1;
  const int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
  const int wj0 = j0 + 16 * warp, wj_last = min(wj0 + 15, j_last);  // this warp's keys (may be none)
  const size_t q_row0 = (size_t)r * s.Tq, k_row0 = (size_t)r * s.Tk;
  const float scale = rsqrtf((float)D), q_scale = LOG2E * scale;

  atc_load_rows<D>(kv_s, k + (k_row0 + j0) * s.ld_kv + kvh * D, s.ld_kv, ATC_DKV_KEYS, j_last + 1 - j0);
  atc_load_rows<D>(kv_s + ATC_DKV_KEYS, v + (k_row0 + j0) * s.ld_kv + kvh * D, s.ld_kv, ATC_DKV_KEYS, j_last + 1 - j0);
  frag_acc dk_acc[D / 16], dv_acc[D / 16];
UNROLL
  for (int c = 0; c < D / 16; c++) {
    wmma::fill_fragment(dk_acc[c], 0.0f);
    wmma::fill_fragment(dv_acc[c], 0.0f);
  }
  float* const ft = f_s[warp];
  bf16* const pt = pt_s[warp];
  bf16* const dst = dst_s[warp];
  frag_a_row a;
  frag_b_col bc;
  frag_b_row br;
  frag_acc st;
  float p[8];

  for (int g = 0; g < group; g++) {
    const int h = kvh * group + g;
    for (int i0 = 0; i0 < s.Tq; i0 += QT) {
      __syncthreads();  // the previous query tile is consumed (kv_s complete on the first pass)
      bool sees_block = false;
      if (threadIdx.x < QT) {
        const int t = i0 + threadIdx.x;
        const size_t n = q_row0 + t;
        lo_s[threadIdx.x] = t < s.Tq ? key_lo[n] : 1;
        hi_s[threadIdx.x] = t < s.Tq ? key_hi[n] : 0;
        lse2_s[threadIdx.x] = t < s.Tq ? lse[n * s.H + h] * LOG2E : 0.0f;
        delta_s[threadIdx.x] = t < s.Tq ? delta[n * s.H + h] : 0.0f;
        sees_block = lo_s[threadIdx.x] <= j_last && hi_s[threadIdx.x] >= j0 && lo_s[threadIdx.x] <= hi_s[threadIdx.x];
      }
      if (!__syncthreads_or(sees_block)) continue;  // no query of this tile sees the block's keys
      atc_load_rows<D>(qd_s, q + (q_row0 + i0) * s.ld_q + h * D, s.ld_q, QT, s.Tq - i0);
      atc_load_rows<D>(qd_s + QT, dout + (q_row0 + i0) * s.H * D + h * D, (long long)s.H * D, QT, s.Tq - i0);
      __syncthreads();
      bool sees_warp = false;  // warp-uniform: some query of the tile sees one of this warp's keys
      for (int i = 0; i < QT; i++) sees_warp |= lo_s[i] <= wj_last && hi_s[i] >= wj0 && lo_s[i] <= hi_s[i];
      if (!sees_warp) continue;
      // S^T = K_w Q^T (16 keys x 16 queries), then P^T; lane owns elements 8 lane .. 8 lane + 7.
      wmma::fill_fragment(st, 0.0f);
UNROLL
      for (int c = 0; c < D / 16; c++) {
        wmma::load_matrix_sync(a, &kv_s[16 * warp][16 * c], D + 8);
        wmma::load_matrix_sync(bc, &qd_s[0][16 * c], D + 8);
        wmma::mma_sync(st, a, bc, st);
      }
      wmma::store_matrix_sync(ft, st, F_LD, wmma::mem_row_major);
      __syncwarp();
UNROLL
      for (int e = 0; e < 8; e++) {
        const int jj = (lane * 8 + e) / 16, ii = (lane * 8 + e) % 16, key = wj0 + jj;
        const bool visible = key <= wj_last && key >= lo_s[ii] && key <= hi_s[ii];
        p[e] = visible ? exp2f(ft[jj * F_LD + ii] * q_scale - lse2_s[ii]) : 0.0f;
        pt[jj * B_LD + ii] = __float2bfloat16(p[e]);
      }
      __syncwarp();
      // dP^T = V_w dO^T, then dS^T = P^T (dP^T - delta).
      wmma::fill_fragment(st, 0.0f);
UNROLL
      for (int c = 0; c < D / 16; c++) {
        wmma::load_matrix_sync(a, &kv_s[ATC_DKV_KEYS + 16 * warp][16 * c], D + 8);
        wmma::load_matrix_sync(bc, &qd_s[QT][16 * c], D + 8);
        wmma::mma_sync(st, a, bc, st);
      }
      wmma::store_matrix_sync(ft, st, F_LD, wmma::mem_row_major);
      __syncwarp();
UNROLL
      for (int e = 0; e < 8; e++) {
        const int jj = (lane * 8 + e) / 16, ii = (lane * 8 + e) % 16;
        dst[jj * B_LD + ii] = __float2bfloat16(p[e] * (ft[jj * F_LD + ii] - delta_s[ii]));
      }
      __syncwarp();
      // dV += P^T dO, dK += dS^T Q.
      wmma::load_matrix_sync(a, pt, B_LD);
UNROLL
      for (int c = 0; c < D / 16; c++) {
        wmma::load_matrix_sync(br, &qd_s[QT][16 * c], D + 8);
        wmma::mma_sync(dv_acc[c], a, br, dv_acc[c]);
      }
      wmma::load_matrix_sync(a, dst, B_LD);
UNROLL
      for (int c = 0; c < D / 16; c++) {
        wmma::load_matrix_sync(br, &qd_s[0][16 * c], D + 8);
        wmma::mma_sync(dk_acc[c], a, br, dk_acc[c]);
      }
    }
  }
  // Staging through the warp's fp32 tile (ldm F_LD = 20: 16 columns per chunk fit).
  const int keys = wj_last - wj0 + 1;
  __syncwarp();
UNROLL
  for (int c = 0; c < D / 16; c++) {
    for (int part = 0; part < 2; part++) {
      wmma::store_matrix_sync(ft, part == 0 ? dk_acc[c] : dv_acc[c], F_LD, wmma::mem_row_major);
      __syncwarp();
      bf16* dstg = part == 0 ? dk : dv;
      const float sc = part == 0 ? scale : 1.0f;
UNROLL
      for (int e = 0; e < 8; e++) {
        const int jj = (lane * 8 + e) / 16, col = (lane * 8 + e) % 16;
        if (jj < keys) dstg[(k_row0 + wj0 + jj) * s.ld_kv + kvh * D + 16 * c + col] = __float2bfloat16(ft[jj * F_LD + col] * sc);
      }
      __syncwarp();
    }
  }
}

// The kernels read q, k, v and dout rows as 16-byte vectors: the pointers must be 16-byte aligned and
// the row strides multiples of 8 elements (the fused qkv rows and the conditioning buffer are).
// The CUDA backend falls back to the FMA kernels otherwise.
inline bool attention_tc_supported(const void* q, const void* k, const void* v, const void* dout,
                                   const AttentionDims& s, int D) {
  auto aligned = [](const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return (D == 64 || D == 128) && aligned(q) && aligned(k) && aligned(v) && aligned(dout) && s.ld_q % 8 == 0 &&
         s.ld_kv % 8 == 0;
}
inline void attention_tc_check(const void* q, const void* k, const void* v, const void* dout, const AttentionDims& s,
                               int D) {
  if (attention_tc_supported(q, k, v, dout, s, D)) return;
  fprintf(stderr, "attention_tc: head_dim %d (64 or 128), 16-byte aligned q/k/v/dout and row strides multiple of 8 "
          "(ld_q %lld, ld_kv %lld) required\n", D, s.ld_q, s.ld_kv);
  abort();
}

// Host entry points, as attention_forward / attention_backward of attention.cuh. D must be 64 or
// 128; H % KV == 0; attention_tc_supported.
inline void attention_tc_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v, const int* key_lo,
                                 const int* key_hi, int rows, const AttentionDims& s, int D, cudaStream_t stream) {
  if (rows == 0 || s.Tq == 0) return;
  attention_tc_check(q, k, v, nullptr, s, D);
  const dim3 grid(ceil_div(s.Tq, ATC_Q_TILE), s.H, rows);
  if (D == 64) LAUNCH(attention_tc_forward_kernel<64>, grid, 128, 0, stream)(out, lse, q, k, v, key_lo, key_hi, s);
  else LAUNCH(attention_tc_forward_kernel<128>, grid, 128, 0, stream)(out, lse, q, k, v, key_lo, key_hi, s);
  CUDA_CHECK(cudaGetLastError());
}

// delta: scratch of rows*Tq*H floats.
inline void attention_tc_backward(bf16* dq, bf16* dk, bf16* dv, float* delta, const bf16* dout, const bf16* out,
                                  const bf16* q, const bf16* k, const bf16* v, const float* lse, const int* key_lo,
                                  const int* key_hi, int rows, const AttentionDims& s, int D, cudaStream_t stream) {
  if (rows == 0 || s.Tq == 0) return;
  attention_tc_check(q, k, v, dout, s, D);
  const int NH = rows * s.Tq * s.H;
  LAUNCH(attention_backward_delta_kernel, ceil_div(NH, 8), 256, 0, stream)(delta, dout, out, NH, D);
  CUDA_CHECK(cudaGetLastError());
  const dim3 grid_dq(ceil_div(s.Tq, ATC_Q_TILE), s.H, rows), grid_dkv(ceil_div(s.Tk, ATC_DKV_KEYS), s.KV, rows);
  if (D == 64) {
    LAUNCH(attention_tc_backward_dq_kernel<64>, grid_dq, 128, 0, stream)(dq, dout, q, k, v, lse, delta, key_lo, key_hi, s);
    LAUNCH(attention_tc_backward_dkv_kernel<64>, grid_dkv, 64, 0, stream)(dk, dv, dout, q, k, v, lse, delta, key_lo,
                                                                          key_hi, s);
  } else {
    LAUNCH(attention_tc_backward_dq_kernel<128>, grid_dq, 128, 0, stream)(dq, dout, q, k, v, lse, delta, key_lo, key_hi,
                                                                          s);
    LAUNCH(attention_tc_backward_dkv_kernel<128>, grid_dkv, 64, 0, stream)(dk, dv, dout, q, k, v, lse, delta, key_lo,
                                                                           key_hi, s);
  }
  CUDA_CHECK(cudaGetLastError());
}
