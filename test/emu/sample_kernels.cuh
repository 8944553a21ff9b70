// Sample kernels of the emulator's own tests (test/test_emu.cpp), kept in a header so that
// nvcc compiles exactly the same source (test/emu/nvcc_check.cu, `make emu-nvcc-check`): correct
// kernels of each kind (block reduction, warp shuffles, tiled matmul, atomic histogram,
// cooperative groups), and kernels with the bugs the emulator must catch.
#pragma once
#include <type_traits>

#include "kernels/cuda/cuda_common.cuh"

namespace cg = cooperative_groups;

// Block reduction: shared-memory tree with __syncthreads, one partial sum per block.
__global__ void block_sum_kernel(const float* in, float* out, int n) {
  __shared__ float partial[256];
  const int tid = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + tid;
  partial[tid] = i < n ? in[i] : 0.0f;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (tid < stride) partial[tid] += partial[tid + stride];
    __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = partial[0];
}

// The same reduction with its __syncthreads removed: a data race.
__global__ void block_sum_no_sync_kernel(const float* in, float* out, int n) {
  __shared__ float partial[256];
  const int tid = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + tid;
  partial[tid] = i < n ? in[i] : 0.0f;
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (tid < stride) partial[tid] += partial[tid + stride];
  }
  if (tid == 0) out[blockIdx.x] = partial[0];
}

// A race that NaN-filling cannot reveal (the shared array is initialized behind a barrier first):
// only the order in which threads resume decides whether a neighbour's value is stale.
__global__ void rotate_missing_sync_kernel(const float* in, float* out) {
  __shared__ float values[128];
  const int tid = threadIdx.x;
  values[tid] = 0.0f;
  __syncthreads();
  values[tid] = in[tid];
  // __syncthreads() missing here
  out[tid] = values[(tid + 1) % blockDim.x];
}

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Warp reduction with shuffles, then one atomicAdd per warp into the total.
__global__ void warp_sum_kernel(const float* in, float* warp_sums, float* total, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? in[i] : 0.0f;
  v = warp_sum(v);
  const int warp = i / 32;
  if (threadIdx.x % 32 == 0) {
    warp_sums[warp] = v;
    atomicAdd(total, v);
  }
}

// Shared-memory tiled matmul C[M,N] = A[M,K] @ B[K,N] (row-major), any sizes.
constexpr int TILE = 16;
__global__ void tiled_matmul_kernel(const float* A, const float* B, float* C, int M, int N, int K) {
  __shared__ float As[TILE][TILE];
  __shared__ float Bs[TILE][TILE];
  const int row = blockIdx.y * TILE + threadIdx.y;
  const int col = blockIdx.x * TILE + threadIdx.x;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += TILE) {
    As[threadIdx.y][threadIdx.x] =
        (row < M && k0 + (int)threadIdx.x < K) ? A[row * K + k0 + threadIdx.x] : 0.0f;
    Bs[threadIdx.y][threadIdx.x] =
        (col < N && k0 + (int)threadIdx.y < K) ? B[(k0 + threadIdx.y) * N + col] : 0.0f;
    __syncthreads();
    for (int k = 0; k < TILE; k++) acc += As[threadIdx.y][k] * Bs[k][threadIdx.x];
    __syncthreads();
  }
  if (row < M && col < N) C[row * N + col] = acc;
}

// Histogram: shared-memory counts with atomics, merged into global counts with atomics.
__global__ void histogram_kernel(const int* values, int n, unsigned* counts, int nbins) {
  DYNAMIC_SMEM(unsigned, local);
  for (int b = threadIdx.x; b < nbins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    atomicAdd(&local[values[i]], 1u);
  __syncthreads();
  for (int b = threadIdx.x; b < nbins; b += blockDim.x) atomicAdd(&counts[b], local[b]);
}

// cooperative_groups: one row per warp-sized tile (llm.c layernorm style): max and sum of a row.
template <int TILE_SIZE>
__global__ void row_max_sum_kernel(const float* x, float* row_max, float* row_sum, int rows,
                                   int cols) {
  cg::thread_block block = cg::this_thread_block();
  cg::thread_block_tile<TILE_SIZE> tile = cg::tiled_partition<TILE_SIZE>(block);
  const int row = blockIdx.x * tile.meta_group_size() + tile.meta_group_rank();
  if (row >= rows) return;  // the whole tile leaves together
  float m = -INFINITY, s = 0.0f;
  for (int c = tile.thread_rank(); c < cols; c += tile.size()) {
    m = fmaxf(m, x[row * cols + c]);
    s += x[row * cols + c];
  }
  m = cg::reduce(tile, m, cg::greater<float>());
  s = cg::reduce(tile, s, cg::plus<float>());
  if (tile.thread_rank() == 0) {
    row_max[row] = m;
    row_sum[row] = s;
  }
}

// Element-wise, barrier-free: the fast path.
__global__ void saxpy_kernel(float a, const float* x, float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

__global__ void warp_ops_kernel(int* out) {
  const int lane = threadIdx.x % 32;
  int* o = out + threadIdx.x * 10;
  o[0] = __shfl_sync(0xffffffffu, lane * 10, 3);              // every lane reads lane 3
  o[1] = __shfl_sync(0xffffffffu, lane * 10, 3, 8);           // lane 3 of its group of 8
  o[2] = __shfl_up_sync(0xffffffffu, lane, 2, 16);            // lane-2 within groups of 16
  o[3] = __shfl_down_sync(0xffffffffu, lane, 4, 8);           // lane+4 within groups of 8
  o[4] = __shfl_xor_sync(0xffffffffu, lane, 5);               // butterfly
  o[5] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);      // lanes divisible by 3
  o[6] = __any_sync(0xffffffffu, lane == 17);
  o[7] = __all_sync(0xffffffffu, lane < 31);
  o[8] = __reduce_add_sync(0xffffffffu, lane);
  o[9] = __syncthreads_count(lane % 4 == 0);
}

__global__ void divergent_exit_kernel(float* out) {
  if (threadIdx.x >= 48) return;  // these threads never reach the barrier
  out[threadIdx.x] = 1.0f;
  __syncthreads();
}

__global__ void divergent_sites_kernel(float* out) {
  if (threadIdx.x % 2 == 0) {
    out[threadIdx.x] = 1.0f;
    __syncthreads();
  } else {
    out[threadIdx.x] = 2.0f;
    __syncthreads();
  }
}

__global__ void off_by_one_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.0f;  // bug: writes out[n]
}

__global__ void negative_index_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i - 1] = 1.0f;  // bug: writes out[-1]
}

__global__ void uninitialized_shared_kernel(float* out) {
  __shared__ float scratch[64];
  if (threadIdx.x < 32) scratch[threadIdx.x] = 1.0f;  // half of it is written
  __syncthreads();
  out[threadIdx.x] = scratch[threadIdx.x] * 2.0f;
}

template <class T>
__global__ void uninitialized_shared_template_kernel(float* out) {
  __shared__ T scratch[32];
  out[threadIdx.x] = (float)scratch[threadIdx.x];
}

__global__ void uninitialized_dynamic_shared_kernel(float* out) {
  DYNAMIC_SMEM(float, scratch);
  out[threadIdx.x] = scratch[threadIdx.x] + 1.0f;
}

__global__ void half_warp_shuffle_kernel(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // lanes 16..31 never come
  out[threadIdx.x] = v;
}

__global__ void different_masks_kernel(float* out) {
  const unsigned mask = threadIdx.x % 32 < 16 ? 0xffffffffu : 0xffff0000u;
  out[threadIdx.x] = __shfl_down_sync(mask, (float)threadIdx.x, 1);
}

__global__ void read_outside_mask_kernel(float* out) {
  float v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_down_sync(0x0000ffffu, v, 8);  // lanes 8..15 read 16..23
  out[threadIdx.x] = v;
}

__global__ void mask_without_self_kernel(float* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, 1.0f, 0);  // lanes 1..31 are not in their own mask
}

__global__ void short_block_full_mask_kernel(float* out) {
  out[threadIdx.x] = warp_sum(1.0f);  // 48 threads: warp 1 has 16 lanes
}

__global__ void big_smem_kernel(float* out) {
  DYNAMIC_SMEM(float, buf);
  buf[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

__global__ void smem_overflow_kernel(float* out) {
  DYNAMIC_SMEM(float, buf);
  buf[threadIdx.x + 1] = 1.0f;  // one element past the launch's dynamic shared memory
  out[threadIdx.x] = 0.0f;
}


// A device helper (not a kernel) with its own shared array: filled with NaN for every kernel.
// (Half of it is written: g++ folds reads of a static that is never written to zero.)
__device__ float helper_uninitialized_read(int i) {
  __shared__ float helper_scratch[32];
  if (i >= 16) helper_scratch[i] = 2.0f;
  return helper_scratch[i];
}
__global__ void helper_shared_kernel(float* out) {
  out[threadIdx.x] = helper_uninitialized_read(threadIdx.x) + 1.0f;
}

// Atomics of every emulated kind from many blocks at once.
__global__ void atomic_mix_kernel(int* count, unsigned* max_index, float* fsum,
                                  __nv_bfloat16* bsum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(count, 1);
  atomicMax(max_index, (unsigned)i);
  atomicAdd(fsum, 0.5f);
  atomicAdd(bsum, __float2bfloat16(1.0f));  // integers up to 256 are exact in bf16
}

// 40 KiB of static shared memory: fine alone, too much with 16 KiB of dynamic on top.
__global__ void big_static_smem_kernel(float* out) {
  __shared__ float big[10240];
  big[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = big[(threadIdx.x + 1) % blockDim.x];
}

// Indices of a 3-D grid of 3-D blocks: each thread writes where it is.
__global__ void indices_3d_kernel(int* out) {
  const int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int threads_per_block = blockDim.x * blockDim.y * blockDim.z;
  int* o = out + 2 * (block * threads_per_block + thread);
  o[0] = block;
  o[1] = thread;
}

// Warp-synchronous tree reduction in shared memory, ordered by __syncwarp.
__global__ void syncwarp_reduce_kernel(int* out) {
  __shared__ int values[32];
  const int lane = threadIdx.x;
  values[lane] = lane + 1;
  __syncwarp();
  for (int offset = 16; offset > 0; offset /= 2) {
    const int v = lane < offset ? values[lane + offset] : 0;
    __syncwarp();
    if (lane < offset) values[lane] += v;
    __syncwarp();
  }
  if (lane == 0) out[0] = values[0];
}

// ---- Warp matrix functions (nvcuda::wmma) ----
namespace wmma = nvcuda::wmma;

// D = A B + C (bf16 A, B; fp32 C, D), M, N, K multiples of 16: one warp per 16x16 tile of D, two
// warps per block along N. A is M x K (row-major A[m*lda + k] or col-major A[k*lda + m]), B is
// K x N (row-major B[k*ldb + n] or col-major B[n*ldb + k]), C and D row-major with ldc.
template <class LayoutA, class LayoutB>
__global__ void wmma_gemm_kernel(const __nv_bfloat16* A, const __nv_bfloat16* B, const float* C, float* D, int K,
                                 int lda, int ldb, int ldc) {
  constexpr bool a_row = std::is_same<LayoutA, wmma::row_major>::value;
  constexpr bool b_row = std::is_same<LayoutB, wmma::row_major>::value;
  const int tm = blockIdx.y, tn = blockIdx.x * 2 + threadIdx.x / 32;
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LayoutA> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LayoutB> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(acc, C + (size_t)tm * 16 * ldc + tn * 16, ldc, wmma::mem_row_major);
  for (int k0 = 0; k0 < K; k0 += 16) {
    wmma::load_matrix_sync(a, a_row ? A + (size_t)tm * 16 * lda + k0 : A + (size_t)k0 * lda + tm * 16, lda);
    wmma::load_matrix_sync(b, b_row ? B + (size_t)k0 * ldb + tn * 16 : B + (size_t)tn * 16 * ldb + k0, ldb);
    wmma::mma_sync(acc, a, b, acc);
  }
  for (int i = 0; i < acc.num_elements; i++) acc.x[i] *= 0.5f;  // element-wise: layout-independent
  wmma::store_matrix_sync(D + (size_t)tm * 16 * ldc + tn * 16, acc, ldc, wmma::mem_row_major);
}

// Layout-dependent (wrong) code: reads a loaded matrix_a fragment as if lane l held elements
// 8l..8l+7 of the row-major tile. The element mapping is unspecified; the emulator's is permuted.
__global__ void wmma_naive_layout_kernel(const __nv_bfloat16* A, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
  wmma::load_matrix_sync(a, A, 16);
  for (int i = 0; i < a.num_elements; i++) out[threadIdx.x * 8 + i] = __bfloat162float(a.x[i]);
}

// Layout-dependent (wrong) code: reuses an accumulator's registers as a matrix_a fragment (the
// register trick of hand-written mma.sync kernels, valid only where the two layouts are known to
// agree): out = (A B) I.
__global__ void wmma_acc_as_a_kernel(const __nv_bfloat16* A, const __nv_bfloat16* B, const __nv_bfloat16* I,
                                     float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(a, A, 16);
  wmma::load_matrix_sync(b, B, 16);
  wmma::fill_fragment(acc, 0.0f);
  wmma::mma_sync(acc, a, b, acc);
  for (int i = 0; i < a.num_elements; i++) a.x[i] = __float2bfloat16(acc.x[i]);
  wmma::load_matrix_sync(b, I, 16);
  wmma::fill_fragment(acc, 0.0f);
  wmma::mma_sync(acc, a, b, acc);
  wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}

// Bugs: WMMA with half a warp, with a misaligned pointer, a bad ldm, or lanes disagreeing on the
// pointer.
__global__ void wmma_half_warp_kernel(const __nv_bfloat16* A, float* out) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
  if (threadIdx.x < 16) wmma::load_matrix_sync(a, A, 16);
  out[threadIdx.x] = 0.0f;
}
__global__ void wmma_load_kernel(const __nv_bfloat16* A, int offset, int ldm, int per_lane, float* out) {
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
  wmma::load_matrix_sync(b, A + offset + per_lane * (threadIdx.x % 32), ldm);
  out[threadIdx.x] = __bfloat162float(b.x[0]);
}
