// AdamW on the fp32 master weights (torch.optim.AdamW semantics: decoupled weight decay, bias
// correction), refreshing the bf16 working copy used by the forward pass in the same pass:
//   g = grad * clip_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p = p (1 - lr wd) - lr * (m / bc1) / (sqrt(v / bc2) + eps),   bc_i = 1 - b_i^step
// The moments are fp32, or bf16 (--optimizer-state bf16, half the optimizer memory) stored with
// stochastic rounding: a per-element hash of (seed, index) supplies the 16 dropped mantissa bits'
// threshold, so E[stored] = exact value and tiny updates are not lost to round-to-nearest. The
// index hashed is the element's place in the whole flat parameter buffer (index_base + i), so a
// ZeRO shard updated on its own draws the same bits as the whole buffer updated at once.
// The fused step (AdamWFusion) folds into this one pass what can be folded:
//   - the gradient zeroing for the next step: each g[i] is set to 0 right after it is read, instead of
//     a separate memset pass (same 4 B/param written, one pass and one launch fewer, and the model
//     skips its next zero_grad);
//   - the end of the global-norm reduction: every warp reduces the GLOBAL_NORM_BLOCKS partial sums
//     of global_norm_squared_kernel itself (norm_and_clip_scale, identical bits in every warp) and
//     applies the clip, so there is no finalize launch and no host round trip between the two passes.
//   The sum of squares itself cannot join this pass when clipping: the clip factor of every element
//   depends on the norm over all elements, which is complete only after every gradient was read,
//   so the gradients are read twice (4 B/param for the norm, then the update). Bit-exact with the
//   unfused path (global_norm, host clip factor, adamw_update, memset).
// geometry: 1-D grid-stride, 256 threads, up to 4096 blocks.
// traffic : fp32 state: reads 4 (p) + 4 (g) + 8 (m, v), writes 4 + 8 + 2 (bf16 copy) = 30 B/param
//           (+ 4 with the fused zeroing, which replaces the memset's 4); bf16 state: 22 B/param.
#pragma once
#include <cmath>

#include "kernels/cuda/cuda_utils.cuh"
#include "kernels/cuda/global_norm.cuh"

// A 32-bit integer hash (xorshift-multiply rounds): decorrelated bits for stochastic rounding.
__device__ __forceinline__ uint32_t hash_u32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Round x to bf16 up or down with probability proportional to the distance (unbiased).
__device__ __forceinline__ bf16 stochastic_round_bf16(float x, uint32_t random_bits) {
  uint32_t bits = __float_as_uint(x);
  if ((bits & 0x7f800000u) == 0x7f800000u) return __float2bfloat16(x);  // inf / nan unchanged
  bits += random_bits & 0xffffu;
  bits &= 0xffff0000u;
  return __float2bfloat16(__uint_as_float(bits));  // exact: the low half is zero
}

__device__ __forceinline__ float load_state(const float* p, size_t i) { return p[i]; }
__device__ __forceinline__ float load_state(const bf16* p, size_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ void store_state(float* p, size_t i, float x, uint32_t) { p[i] = x; }
__device__ __forceinline__ void store_state(bf16* p, size_t i, float x, uint32_t r) { p[i] = stochastic_round_bf16(x, r); }

// Options of the fused step (all off: the plain update).
struct AdamWFusion {
  const float* norm_partials = nullptr;  // global_norm_partials' output: the kernel computes norm and clip
  float max_norm = 0.0f;                 // clip threshold (<= 0: no clipping) when norm_partials is given
  float* norm_out = nullptr;             // with norm_partials: [norm, clip factor], written by block 0
  bool zero_grads = false;               // set each gradient to 0 after reading it
};

template <typename state_t>
__global__ void adamw_kernel(float* __restrict__ master, bf16* __restrict__ params_bf16, float* __restrict__ grads,
                             state_t* __restrict__ m, state_t* __restrict__ v, size_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float bias_correction1,
                             float bias_correction2, float grad_scale, const float* __restrict__ clip_scale,
                             AdamWFusion fuse, uint32_t seed, size_t index_base) {
  float scale = clip_scale ? grad_scale * *clip_scale : grad_scale;
  if (fuse.norm_partials) {  // every thread, all 32 lanes of each warp (blockDim is a multiple of 32)
    float norm, clip;
    norm_and_clip_scale(fuse.norm_partials, fuse.max_norm, &norm, &clip);
    scale = grad_scale * clip;
    if (blockIdx.x == 0 && threadIdx.x == 0 && fuse.norm_out) {
      fuse.norm_out[0] = norm;
      fuse.norm_out[1] = clip;
    }
  }
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const float g = grads[i] * scale;
    if (fuse.zero_grads) grads[i] = 0.0f;
    const float mi = beta1 * load_state(m, i) + (1.0f - beta1) * g;
    const float vi = beta2 * load_state(v, i) + (1.0f - beta2) * g * g;
    const size_t gi = index_base + i;
    const uint32_t r = hash_u32(seed ^ hash_u32((uint32_t)gi ^ (uint32_t)(gi >> 32) * 0x9e3779b9u));
    store_state(m, i, mi, r);
    store_state(v, i, vi, r >> 16 | r << 16);
    float p = master[i] * (1.0f - lr * weight_decay);
    p -= lr * (mi / bias_correction1) / (sqrtf(vi / bias_correction2) + eps);
    master[i] = p;
    if (params_bf16) params_bf16[i] = __float2bfloat16(p);
  }
}

struct AdamWHyper {
  float lr, beta1, beta2, eps, weight_decay;
  int step;  // 1-based, for the bias corrections
};

// One AdamW step over n contiguous parameters. The gradient used is grads * grad_scale
// (* *clip_scale when clip_scale, a device pointer such as global_norm's output [1], is given; or
// * the clip factor computed from fuse.norm_partials). params_bf16 may be null (no working copy).
// grads is written only with fuse.zero_grads. state_t: float or bf16.
// index_base: the flat index of element 0 (stochastic rounding of bf16 moments hashes it).
template <typename state_t>
inline void adamw_update(float* master, bf16* params_bf16, float* grads, state_t* m, state_t* v, size_t n,
                         const AdamWHyper& hp, float grad_scale, const float* clip_scale, uint32_t seed,
                         cudaStream_t stream, size_t index_base = 0, const AdamWFusion& fuse = AdamWFusion{}) {
  if (n == 0) return;
  const float bc1 = (float)(1.0 - pow((double)hp.beta1, hp.step)), bc2 = (float)(1.0 - pow((double)hp.beta2, hp.step));
  size_t blocks = ceil_div(n, (size_t)256);
  if (blocks > 4096) blocks = 4096;
  LAUNCH(adamw_kernel<state_t>, (unsigned)blocks, 256, 0, stream)(master, params_bf16, grads, m, v, n, hp.lr,
                                                                 hp.beta1, hp.beta2, hp.eps, hp.weight_decay, bc1,
                                                                 bc2, grad_scale, clip_scale, fuse, seed, index_base);
  CUDA_CHECK(cudaGetLastError());
}
