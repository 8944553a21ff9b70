// Compile check: the emulator's sample kernels, through kernels/cuda/cuda_common.cuh, must also
// build with nvcc for the real GPUs (`make emu-nvcc-check`, sm_80 and sm_90). Not run here.
#include "test/emu/sample_kernels.cuh"

void launch_all_samples(float* f, int* i, unsigned* u, cudaStream_t stream) {
  LAUNCH(block_sum_kernel, 4, 256, 0, stream)(f, f, 1000);
  LAUNCH(block_sum_no_sync_kernel, 1, 256, 0, stream)(f, f, 256);
  LAUNCH(rotate_missing_sync_kernel, 1, 128, 0, stream)(f, f);
  LAUNCH(warp_sum_kernel, 4, 128, 0, stream)(f, f, f, 512);
  LAUNCH(tiled_matmul_kernel, dim3(3, 3), dim3(TILE, TILE), 0, stream)(f, f, f, 37, 45, 29);
  LAUNCH(histogram_kernel, 24, 128, 37 * sizeof(unsigned), stream)(i, 100, u, 37);
  LAUNCH(row_max_sum_kernel<32>, 6, 128, 0, stream)(f, f, f, 21, 70);
  LAUNCH(row_max_sum_kernel<8>, 2, 128, 0, stream)(f, f, f, 21, 70);
  LAUNCH(saxpy_kernel, 12, 256, 0, stream)(2.0f, f, f, 3000);
  LAUNCH(warp_ops_kernel, 1, 64, 0, stream)(i);
  LAUNCH(divergent_exit_kernel, 3, 64, 0, stream)(f);
  LAUNCH(divergent_sites_kernel, 2, 64, 0, stream)(f);
  LAUNCH(off_by_one_kernel, 1, 128, 0, stream)(f, 100);
  LAUNCH(negative_index_kernel, 1, 128, 0, stream)(f, 100);
  LAUNCH(uninitialized_shared_kernel, 2, 64, 0, stream)(f);
  LAUNCH(uninitialized_shared_template_kernel<float>, 1, 32, 0, stream)(f);
  LAUNCH(uninitialized_shared_template_kernel<__nv_bfloat16>, 1, 32, 0, stream)(f);
  LAUNCH(uninitialized_dynamic_shared_kernel, 1, 64, 256, stream)(f);
  LAUNCH(half_warp_shuffle_kernel, 1, 64, 0, stream)(f);
  LAUNCH(different_masks_kernel, 1, 32, 0, stream)(f);
  LAUNCH(read_outside_mask_kernel, 1, 32, 0, stream)(f);
  LAUNCH(mask_without_self_kernel, 1, 32, 0, stream)(f);
  LAUNCH(short_block_full_mask_kernel, 1, 48, 0, stream)(f);
  CUDA_CHECK(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  64 * 1024));
  LAUNCH(big_smem_kernel, 1, 1024, 64 * 1024, stream)(f);
  LAUNCH(smem_overflow_kernel, 1, 32, 128, stream)(f);
  LAUNCH(helper_shared_kernel, 1, 32, 0, stream)(f);
  LAUNCH(atomic_mix_kernel, 4, 64, 0, stream)(i, u, f, reinterpret_cast<__nv_bfloat16*>(f));
  LAUNCH(big_static_smem_kernel, 1, 64, 0, stream)(f);
  LAUNCH(indices_3d_kernel, dim3(3, 4, 5), dim3(4, 2, 3), 0, stream)(i);
  LAUNCH(syncwarp_reduce_kernel, 1, 32, 0, stream)(i);
  {
    auto* bf = reinterpret_cast<const __nv_bfloat16*>(f);
    auto rr = wmma_gemm_kernel<wmma::row_major, wmma::row_major>;
    auto cc = wmma_gemm_kernel<wmma::col_major, wmma::col_major>;
    LAUNCH(rr, dim3(2, 2), 64, 0, stream)(bf, bf, f, f, 32, 32, 64, 64);
    LAUNCH(cc, dim3(2, 2), 64, 0, stream)(bf, bf, f, f, 32, 32, 64, 64);
    LAUNCH(wmma_naive_layout_kernel, 1, 32, 0, stream)(bf, f);
    LAUNCH(wmma_acc_as_a_kernel, 1, 32, 0, stream)(bf, bf, bf, f);
    LAUNCH(wmma_half_warp_kernel, 1, 32, 0, stream)(bf, f);
    LAUNCH(wmma_load_kernel, 1, 32, 0, stream)(bf, 0, 16, 0, f);
  }
  CUDA_CHECK(cudaGetLastError());
}
