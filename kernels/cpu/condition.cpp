// Memory conditioning of the decoder (Larimar): one extra key/value slot in front of each row's
// keys, and a vector per row added to its token embeddings. See kernels/cpu/ops.h.
#include <algorithm>

#include "kernels/cpu/ops.h"

void condition_kv_forward(float* kv, const float* qkv, const float* slot, int rows, int T, int KVD, int64_t slot_stride,
                          int64_t ld_qkv, int64_t k_offset) {
#pragma omp parallel for schedule(static) if ((int64_t)rows * T * KVD > (1 << 16))
  for (int r = 0; r < rows; r++) {
    float* dst = kv + (int64_t)r * (T + 1) * 2 * KVD;
    std::copy_n(slot + r * slot_stride, KVD, dst);        // key
    std::copy_n(slot + r * slot_stride, KVD, dst + KVD);  // value: the same vector
    for (int t = 0; t < T; t++)
      std::copy_n(qkv + ((int64_t)r * T + t) * ld_qkv + k_offset, 2 * KVD, dst + (int64_t)(t + 1) * 2 * KVD);
  }
}

void condition_kv_backward(float* d_qkv, float* d_slot, const float* d_kv, int rows, int T, int KVD, int64_t slot_stride,
                           int64_t ld_qkv, int64_t k_offset) {
#pragma omp parallel for schedule(static) if ((int64_t)rows * T * KVD > (1 << 16))
  for (int r = 0; r < rows; r++) {
    const float* src = d_kv + (int64_t)r * (T + 1) * 2 * KVD;
    for (int j = 0; j < KVD; j++) d_slot[r * slot_stride + j] = src[j] + src[KVD + j];
    for (int t = 0; t < T; t++)
      std::copy_n(src + (int64_t)(t + 1) * 2 * KVD, 2 * KVD, d_qkv + ((int64_t)r * T + t) * ld_qkv + k_offset);
  }
}

void condition_embed_forward(float* out, const float* rows_src, const int32_t* row_of, int N, int C) {
  gather_rows(out, rows_src, row_of, N, C);
}

void condition_embed_backward(float* d_rows, const float* d_emb, int rows, int T, int C) {
#pragma omp parallel for schedule(static) if ((int64_t)rows * T * C > (1 << 16))
  for (int r = 0; r < rows; r++) {
    float* dst = d_rows + (int64_t)r * C;
    std::fill_n(dst, C, 0.0f);
    for (int t = 0; t < T; t++) {
      const float* src = d_emb + ((int64_t)r * T + t) * C;
      for (int c = 0; c < C; c++) dst[c] += src[c];
    }
  }
}
