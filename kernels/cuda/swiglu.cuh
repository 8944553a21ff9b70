// SwiGLU: h = silu(gate) * up, where gate|up is the fused [N, 2I] output of the gate_up GEMM
// (gate in columns [0, I), up in [I, 2I)).
//   backward: dgate = dh * up * silu'(gate), dup = dh * silu(gate),
//             silu'(g) = sigmoid(g) * (1 + g * (1 - sigmoid(g))).
// geometry: one thread per (row, i), 256 threads/block, 1-D grid of ceil(N*I/256) blocks.
// traffic : forward reads 4NI, writes 2NI bytes; backward reads 6NI, writes 4NI. fp32 math.
#pragma once
#include "kernels/cuda/cuda_utils.cuh"

__global__ void swiglu_forward_kernel(bf16* __restrict__ out, const bf16* __restrict__ gate_up, int N, int I) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * I) return;
  const size_t row = idx / I, i = idx % I;
  const float g = __bfloat162float(gate_up[row * 2 * I + i]);
  const float u = __bfloat162float(gate_up[row * 2 * I + I + i]);
  out[idx] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
}

__global__ void swiglu_backward_kernel(bf16* __restrict__ dgate_up, const bf16* __restrict__ dout,
                                       const bf16* __restrict__ gate_up, int N, int I) {
  const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (size_t)N * I) return;
  const size_t row = idx / I, i = idx % I;
  const float g = __bfloat162float(gate_up[row * 2 * I + i]);
  const float u = __bfloat162float(gate_up[row * 2 * I + I + i]);
  const float dh = __bfloat162float(dout[idx]);
  const float sig = 1.0f / (1.0f + expf(-g));
  dgate_up[row * 2 * I + i] = __float2bfloat16(dh * u * sig * (1.0f + g * (1.0f - sig)));
  dgate_up[row * 2 * I + I + i] = __float2bfloat16(dh * g * sig);
}

inline void swiglu_forward(bf16* out, const bf16* gate_up, int N, int I, cudaStream_t stream) {
  const size_t n = (size_t)N * I;
  if (n == 0) return;
  LAUNCH(swiglu_forward_kernel, (unsigned)ceil_div(n, (size_t)256), 256, 0, stream)(out, gate_up, N, I);
  CUDA_CHECK(cudaGetLastError());
}
inline void swiglu_backward(bf16* dgate_up, const bf16* dout, const bf16* gate_up, int N, int I, cudaStream_t stream) {
  const size_t n = (size_t)N * I;
  if (n == 0) return;
  LAUNCH(swiglu_backward_kernel, (unsigned)ceil_div(n, (size_t)256), 256, 0, stream)(dgate_up, dout, gate_up, N, I);
  CUDA_CHECK(cudaGetLastError());
}
