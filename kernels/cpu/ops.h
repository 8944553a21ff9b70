// The fp32 reference ops of the CPU backend. Every op family lives in its own .cpp file; this
// header is the one list of their signatures. The CUDA backend implements the same families with
// bf16 activations (fp32 accumulation), so the signatures avoid anything CPU-specific: plain
// pointers, explicit strides, and the saved statistics a fused GPU kernel wants (RMSNorm's 1/rms,
// attention's per-query log-sum-exp).
//
// Shapes: N = tokens (rows*T, flattened), C = hidden, V = vocab, H/KV = query/key-value heads,
// D = head dim. Tensors are row-major. "accumulate" means += into the output (gradient
// accumulation across micro-batches), otherwise the output is overwritten.
#pragma once
#include <cstddef>
#include <cstdint>

// ---- embedding.cpp ----
// out[t] = table[tokens[t]] (+ add[t] when add != nullptr: room for an additive per-token vector,
// e.g. a memory readout). Token ids are checked against V by the caller.
void embedding_forward(float* out, const int32_t* tokens, const float* table, const float* add,
                       int N, int C);
// dtable[tokens[t]] += dout[t]. Deterministic: threads own disjoint column ranges.
void embedding_backward(float* dtable, const int32_t* tokens, const float* dout, int N, int C);

// ---- rmsnorm.cpp ----
// out = x / sqrt(mean(x^2) + eps) * weight; saves rstd[t] = 1/sqrt(mean(x^2)+eps).
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int N, int C,
                     float eps);
// dx += d/dx, dweight += d/dweight (both accumulate).
void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x,
                      const float* weight, const float* rstd, int N, int C);

// ---- layernorm.cpp ---- (the BERT encoder's ops)
// out = (x - mean) / sqrt(var + eps) * weight + bias per row of C (biased variance, as torch).
// out may equal x.
void layernorm_forward(float* out, const float* x, const float* weight, const float* bias, int N, int C,
                       float eps);
// In place: x = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact GELU.
void gelu_erf_forward(float* x, int64_t n);

// ---- matmul.cpp ---- (sgemm; y = x W^T as in torch.nn.Linear, W is [OC, IC])
// out[N, OC] (= or +=) x[N, IC] W^T (+ bias).
void matmul_forward(float* out, const float* x, const float* weight, const float* bias, int N,
                    int IC, int OC, bool accumulate);
// The same from a transposed copy W^T [IC, OC] (an 'N','N' GEMM; the CPU backend's decoding GEMMs,
// see model/cpu_backend.h).
void matmul_forward_transposed(float* out, const float* x, const float* weight_t, const float* bias, int N,
                               int IC, int OC, bool accumulate);
// dx (= or +=) dout W ; dweight += dout^T x ; dbias += column sums of dout (when dbias != null).
// dx may be null (no input gradient wanted).
void matmul_backward(float* dx, float* dweight, float* dbias, const float* dout, const float* x,
                     const float* weight, int N, int IC, int OC, bool accumulate_dx);
// General row-major sgemm: C[M,N] = alpha op(A) op(B) + beta C (beta 0: C is not read).
// sgemm_dnnl.cpp (oneDNN, the default) or sgemm_omp.cpp (`make GEMM=omp`).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc);

// ---- rope.cpp ---- (Hugging Face rotate-half convention, so HF weights load unpermuted)
// Fills inv_freq[D/2] for the config's theta and optional llama3 scaling (rope_type "llama3").
// Computed in double; HF computes in fp32, the difference is far below the test tolerances.
void rope_inv_freq(double* inv_freq, int D, double theta, bool llama3, double factor,
                   double low_freq_factor, double high_freq_factor, double original_max_pos);
// cos/sin tables [max_pos, D/2] from inv_freq.
void rope_tables(float* cos_table, float* sin_table, const double* inv_freq, int D, int max_pos);
// Rotates, in place, `heads` consecutive heads of D values at the start of each token's row
// (row stride `ld` floats), by the token's position. backward=true rotates by -angle, which is
// the gradient of the forward rotation (it is orthogonal).
void rope_apply(float* x, const int32_t* positions, const float* cos_table,
                const float* sin_table, int N, int heads, int D, int64_t ld, bool backward);

// ---- attention.cpp ----
// Causal attention with GQA and per-query key ranges, for `rows` rows of Tq queries over Tk keys.
// Query (row r, column t) attends keys [key_lo[r*Tq+t], key_hi[r*Tq+t]] (inclusive) of row r.
// Training and KV-cache prefill: Tq = Tk = T, key_lo = seg_start (packing; a padding token of a
// prefill batch attends to itself only), key_hi = t. Decoding steps use attention_decode instead.
// q: [rows*Tq, ld_q] with H heads of D at the start of each row; k, v: [rows*Tk, ld_kv] with KV
// heads each (query head h reads kv head h / (H/KV), no copy). out: [rows*Tq, H*D].
// lse: [rows*Tq, H] log-sum-exp of the scaled scores, saved for the backward (as flash attention).
struct AttentionShape {
  int rows, Tq, Tk, H, KV, D;
  int64_t ld_q, ld_kv;
};
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* key_lo, const int32_t* key_hi, const AttentionShape& s);
// Overwrites dq, dk, dv (same layouts/strides as q, k, v). Recomputes probabilities from lse.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        const int32_t* key_lo, const int32_t* key_hi, const AttentionShape& s);

// ---- condition.cpp ---- (memory conditioning of the decoder, Larimar)
// Keys and values of a conditioned row: one slot in front of its T tokens, the slot's vector
// serving as both key and value. kv [rows, T+1, 2*KVD]: row r's entry 0 = [slot[r] | slot[r]],
// entry t+1 = token r*T+t's key|value, read from qkv at column k_offset (stride ld_qkv); the
// attention reads k = kv, v = kv + KVD with ld_kv = 2*KVD. slot: row r's KVD fp32 values at
// slot + r*slot_stride.
void condition_kv_forward(float* kv, const float* qkv, const float* slot, int rows, int T, int KVD,
                          int64_t slot_stride, int64_t ld_qkv, int64_t k_offset);
// The reverse: d_qkv's key|value columns <- entries t+1 of d_kv (overwritten; the query columns
// are untouched), d_slot[r] = dk[r, 0] + dv[r, 0] (overwritten, fp32).
void condition_kv_backward(float* d_qkv, float* d_slot, const float* d_kv, int rows, int T, int KVD,
                           int64_t slot_stride, int64_t ld_qkv, int64_t k_offset);
// out[i] = rows_src[row_of[i]] (fp32 rows [*, C] -> activations [N, C]): the per-row embedding
// addition laid out per token.
void condition_embed_forward(float* out, const float* rows_src, const int32_t* row_of, int N, int C);
// d_rows[r] = sum over t of d_emb[r*T + t] (overwritten, fp32).
void condition_embed_backward(float* d_rows, const float* d_emb, int rows, int T, int C);

// ---- decode.cpp ---- (KV-cache inference)
// A cache of `seqs` sequences of up to `len` positions per layer; qkv rows (stride ld_qkv) hold H
// query heads, then KV key heads, then KV value heads of D values. The layout of a layer's cache
// is the backend's own (CPU: [seqs][len][KV*D]); the model only sizes it, seqs*len*KV*D values.
struct KvShape {
  int seqs, len, H, KV, D;
  int64_t ld_qkv;
};
// Token i's key and value (after RoPE) go to sequence slot[i] at position pos[i]; pos[i] < 0
// skips the token (padding of a prefill batch).
void kv_cache_write(float* k_cache, float* v_cache, const float* qkv, const int32_t* slot,
                    const int32_t* pos, int N, const KvShape& s);
// One query per row: row i (query heads at the start of qkv row i) attends keys [0, pos[i]] of
// sequence slot[i] (its own key already written). out: [N, H*D].
void attention_decode(float* out, const float* qkv, const float* k_cache, const float* v_cache,
                      const int32_t* slot, const int32_t* pos, int N, const KvShape& s);
// out[r] = argmax of logits row r [n, V] (the lowest index wins a tie, as torch.argmax).
void argmax_rows(int32_t* out, const float* logits, int n, int V);

// ---- swiglu.cpp ----
// gate_up: [N, 2I] (gate in the first I columns, up in the next I: the fused gate|up GEMM).
// out[N, I] = silu(gate) * up.
void swiglu_forward(float* out, const float* gate_up, int N, int I);
// dgate_up[N, 2I] (overwritten) from dout[N, I].
void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int N, int I);

// ---- cross_entropy.cpp ----
// In place over a chunk of logits [n, V]: for rows with target >= 0, adds the token loss
// (logsumexp - logit[target]) to *loss_sum (double) and replaces the logits with
// (softmax - onehot) * grad_scale; rows with target < 0 become zero. The LM head GEMMs around it
// make the fused, vocabulary-sized-chunk "LM head + cross-entropy" of the training step.
void cross_entropy_forward_backward(float* logits_to_dlogits, const int32_t* targets, int n,
                                    int V, float grad_scale, double* loss_sum);

// ---- grad_norm.cpp ----
// Sum of squares of g[0..n) (accumulated in double), for global gradient-norm clipping.
double sum_of_squares(const float* g, size_t n);

// ---- adamw.cpp ----
// One AdamW step (decoupled weight decay, bias correction; torch.optim.AdamW semantics) over n
// values; the gradient used is g * grad_scale (grad_scale carries the clipping factor). step >= 1.
void adamw_update(float* params, const float* grads, float* m, float* v, size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, int step,
                  float grad_scale);

// ---- matmul.cpp (small helpers) ----
void fill_zero(float* x, size_t n);
// dst[i] = src[idx[i]] and dst[idx[i]] = src[i], rows of C floats (compacting the tokens that
// carry a loss before the LM head, and scattering their gradient back).
void gather_rows(float* dst, const float* src, const int32_t* idx, int n, int C);
void scatter_rows(float* dst, const float* src, const int32_t* idx, int n, int C);

// ---- lens.cpp ----
// Logit-lens statistics of n rows of logits [n, V], each with its gold token: the gold token's
// softmax probability, its rank (tokens with a larger logit, or an equal one and a lower id; 0 =
// greedy decoding picks it) and the top-1 token (argmax, lowest id on ties).
void lens_stats(float* prob, int32_t* rank, int32_t* top1, const float* logits, const int32_t* gold, int n, int V);
