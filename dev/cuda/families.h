// Every kernel family's benchmark, for one translation unit: each kernels/cuda/*.cuh defines its
// __global__ kernels in the header (not inline), so a program includes each of them once, here.
// Included by dev/cuda/kernel_bench.cu (the GPU program) and test/test_cuda_bench.cpp (the
// emulator's smoke test).
#pragma once
#include "dev/cuda/adamw.cu"
#include "dev/cuda/attention.cu"
#include "dev/cuda/ceilings.cu"
#include "dev/cuda/cross_entropy.cu"
#include "dev/cuda/decode_attention.cu"
#include "dev/cuda/embedding.cu"
#include "dev/cuda/matmul.cu"
#include "dev/cuda/rmsnorm.cu"
#include "dev/cuda/rope.cu"
#include "dev/cuda/swiglu.cu"
