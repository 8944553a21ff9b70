#include "model/decode.h"

#include <algorithm>
#include <cmath>
#include <bit>
#include <numeric>

#include "common/error.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/vec_math.h"

static void rope_inv_freq_fn(const LlamaConfig& c, double* inv_freq) {
  const auto& r = c.rope_scaling;
  rope_inv_freq(inv_freq, c.head_dim, c.rope_theta, r.rope_type == "llama3", r.factor, r.low_freq_factor,
                r.high_freq_factor, r.original_max_position_embeddings);
}

InferenceModel::InferenceModel(const LlamaConfig& c, const ParamLayout& l, const float* p)
    : config(&c), layout(&l), params(p) {
  const auto& r = c.rope_scaling;
  check(r.rope_type.empty() || r.rope_type == "llama3", "decode: unsupported rope_scaling type '", r.rope_type, "'");
  rope_inv_freq.resize(c.head_dim / 2);
  rope_inv_freq_fn(c, rope_inv_freq.data());

  const int C = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int qkv_dim = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim;
  const int att_dim = c.num_attention_heads * c.head_dim;
  struct Job { size_t src, dst; int out, in; };  // W [out, in] at src -> W^T [in, out] at dst
  std::vector<Job> jobs;
  size_t total = 0;
  auto add = [&](size_t src, int out, int in) {
    jobs.push_back({src, total, out, in});
    total += size_t(out) * in;
    return jobs.back().dst;
  };
  for (const LayerOffsets& o : l.layers)
    layers_t.push_back({add(o.qkv_w, qkv_dim, C), add(o.o_w, C, att_dim), add(o.gate_up_w, 2 * I, C),
                        add(o.down_w, C, I)});
  lm_head_t = add(l.lm_head, V, C);
  weights_t.resize(total);
  for (const Job& j : jobs) {
    const float* w = p + j.src;
    float* wt = weights_t.data() + j.dst;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < j.in; ++i)
      for (int r = 0; r < j.out; ++r) wt[size_t(i) * j.out + r] = w[size_t(r) * j.in + i];
  }
}

void InferenceModel::ensure_rope_tables(int positions) const {
  if (positions <= rope_positions) return;
  int n = std::max(positions, 2 * rope_positions);
  if (config->max_position_embeddings > 0) n = std::max(positions, std::min(n, config->max_position_embeddings));
  const int half = config->head_dim / 2;
  rope_cos.assign(size_t(n) * half, 0.0f);
  rope_sin.assign(size_t(n) * half, 0.0f);
  rope_tables(rope_cos.data(), rope_sin.data(), rope_inv_freq.data(), config->head_dim, n);
  rope_positions = n;
}

KvCache::KvCache(const LlamaConfig& c, int seqs, int len)
    : layers(c.num_hidden_layers), max_seqs(seqs), max_len(len), kv_dim(c.num_key_value_heads * c.head_dim) {
  k.assign(size_t(layers) * seqs * len * kv_dim, 0.0f);
  v.assign(k.size(), 0.0f);
  length.assign(seqs, 0);
}

void KvCache::reset() { std::fill(length.begin(), length.end(), 0); }

// ---------------------------------------------------------------------------------------------
// The layer math is the training forward's, through the same CPU ops (kernels/cpu/ops.h); only
// attention differs in where keys live: in the cache instead of the batch.

// Decoding attention: one query per sequence, keys [0, pos] of that sequence in the cache:
//   s_hj = scale q_h . k_j[kv head of h] ; p_h = softmax_j(s_h) ; out_h = sum_j p_hj v_j[kv head of h]
// (exp_fast's values and the max-subtracted softmax as attention_forward). At batch 32 this is 32 x H
// tiny problems, and the time goes into reading the cache, not into arithmetic: GEMM calls per
// head cost more in call overhead than they compute, and walking one head at a time reads each
// cached row in 1 KiB strides. So each task is one sequence, all heads at once, streaming through
// its cached key rows and then its value rows front to back (one contiguous block each).
static void decode_attention(float* att, const float* qkv, const KvCache& cache, int layer, const int* seq,
                             const int32_t* pos, int N, int H, int KV, int D, int qkv_dim) {
  const int group = H / KV, kv_dim = KV * D, max_len = cache.max_len;
  const float scale = 1.0f / std::sqrt(float(D));
#pragma omp parallel
  {
    thread_local std::vector<float> scores;
    scores.resize(size_t(H) * max_len);  // [H][max_len]
    float* S = scores.data();
#pragma omp for schedule(static)
    for (int i = 0; i < N; ++i) {
      const int n = pos[i] + 1;  // keys 0..pos[i]
      const float* q = qkv + size_t(i) * qkv_dim;
      const size_t base = (size_t(layer) * cache.max_seqs + seq[i]) * max_len * kv_dim;
      const float* k = cache.k.data() + base;
      const float* v = cache.v.data() + base;
      if (i + 1 < N) {  // the first key rows of this thread's next sequence (the loop below prefetches the rest)
        const float* kn = cache.k.data() + (size_t(layer) * cache.max_seqs + seq[i + 1]) * max_len * kv_dim;
        const size_t lines = size_t(std::min(8, pos[i + 1] + 1)) * kv_dim;
        for (size_t e = 0; e < lines; e += 16) __builtin_prefetch(kn + e);
      }
      // Four key rows at a time: four independent dot products per head.
      int jk = 0;
      for (; jk + 4 <= n; jk += 4) {
        const float* k0 = k + size_t(jk) * kv_dim;
        const float *k1 = k0 + kv_dim, *k2 = k1 + kv_dim, *k3 = k2 + kv_dim;
        // The cache of the whole batch does not stay in cache between steps (it and the weights
        // are streamed once per step), so the walk is bound by memory latency: prefetch the key
        // rows two blocks ahead, and the value rows of this block for the value pass below.
        const int ahead = std::min(4, n - (jk + 8));
        const float* kf = k0 + size_t(8) * kv_dim;
        const float* vf = v + size_t(jk) * kv_dim;
        for (int h = 0; h < H; ++h) {
          const float* qh = q + size_t(h) * D;
          const size_t c = size_t(h / group) * D;
          if (h % group == 0)
            for (int d = 0; d < D; d += 16) {
              for (int r = 0; r < ahead; ++r) __builtin_prefetch(kf + size_t(r) * kv_dim + c + d);
              for (int r = 0; r < 4; ++r) __builtin_prefetch(vf + size_t(r) * kv_dim + c + d);
            }
          float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
          for (int d = 0; d < D; ++d) {
            d0 += qh[d] * k0[c + d];
            d1 += qh[d] * k1[c + d];
            d2 += qh[d] * k2[c + d];
            d3 += qh[d] * k3[c + d];
          }
          float* sh = S + size_t(h) * max_len + jk;
          sh[0] = d0 * scale;
          sh[1] = d1 * scale;
          sh[2] = d2 * scale;
          sh[3] = d3 * scale;
        }
      }
      for (; jk < n; ++jk) {
        const float* kj = k + size_t(jk) * kv_dim;
        for (int h = 0; h < H; ++h) {
          const float* qh = q + size_t(h) * D;
          const float* kh = kj + size_t(h / group) * D;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int d = 0; d < D; ++d) dot += qh[d] * kh[d];
          S[size_t(h) * max_len + jk] = dot * scale;
        }
      }
      for (int h = 0; h < H; ++h) {
        float* row = S + size_t(h) * max_len;
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) mx = std::max(mx, row[j]);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < n; ++j) {
          row[j] = exp_fast(row[j] - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j < n; ++j) row[j] *= inv;
      }
      float* o = att + size_t(i) * H * D;
      std::fill_n(o, size_t(H) * D, 0.0f);
      // Four value rows per pass over the output: a quarter of the loads/stores of o.
      int j = 0;
      for (; j + 4 <= n; j += 4) {
        const float* v0 = v + size_t(j) * kv_dim;
        const float *v1 = v0 + kv_dim, *v2 = v1 + kv_dim, *v3 = v2 + kv_dim;
        for (int h = 0; h < H; ++h) {
          const float* ph = S + size_t(h) * max_len + j;
          const float p0 = ph[0], p1 = ph[1], p2 = ph[2], p3 = ph[3];
          const size_t c = size_t(h / group) * D;
          float* oh = o + size_t(h) * D;
#pragma omp simd
          for (int d = 0; d < D; ++d) oh[d] += p0 * v0[c + d] + p1 * v1[c + d] + p2 * v2[c + d] + p3 * v3[c + d];
        }
      }
      for (; j < n; ++j) {
        const float* vj = v + size_t(j) * kv_dim;
        for (int h = 0; h < H; ++h) {
          const float p = S[size_t(h) * max_len + j];
          const float* vh = vj + size_t(h / group) * D;
          float* oh = o + size_t(h) * D;
#pragma omp simd
          for (int d = 0; d < D; ++d) oh[d] += p * vh[d];
        }
      }
    }
  }
}

void forward_tokens(const InferenceModel& m, KvCache& cache, const std::vector<int32_t>& tokens,
                    const std::vector<int>& seq, const std::vector<int>& logits_for, std::vector<float>& logits) {
  const LlamaConfig& c = *m.config;
  const ParamLayout& lay = *m.layout;
  const float* P = m.params;
  const int N = int(tokens.size());
  const int C = c.hidden_size, H = c.num_attention_heads, KV = c.num_key_value_heads, D = c.head_dim;
  const int I = c.intermediate_size, V = c.vocab_size;
  const int qkv_dim = (H + 2 * KV) * D, kv_dim = KV * D;
  check(seq.size() == tokens.size(), "forward_tokens: tokens and seq differ in length");

  // Position of each token: the next free slot of its sequence.
  std::vector<int32_t> pos(N);
  int max_pos = 0;
  for (int i = 0; i < N; ++i) {
    int s = seq[i];
    check(s >= 0 && s < cache.max_seqs, "forward_tokens: sequence ", s, " out of range");
    check(tokens[i] >= 0 && tokens[i] < V, "forward_tokens: token id ", tokens[i], " out of range [0, ", V, ")");
    check(cache.length[s] < cache.max_len, "forward_tokens: KV cache full (", cache.max_len, " positions)");
    pos[i] = cache.length[s]++;
    max_pos = std::max(max_pos, int(pos[i]) + 1);
  }
  m.ensure_rope_tables(max_pos);

  // Runs of consecutive tokens of one sequence (a prompt in prefill, a single token in decoding):
  // one attention call each, with the sequence's cache as keys.
  struct Run { int begin, end; };
  std::vector<Run> runs;
  for (int i = 0; i < N; ++i) {
    if (!runs.empty() && seq[runs.back().end - 1] == seq[i] && pos[runs.back().end - 1] + 1 == pos[i]) runs.back().end = i + 1;
    else runs.push_back({i, i + 1});
  }
  std::vector<int32_t> key_lo(N, 0), key_hi(N);
  for (int i = 0; i < N; ++i) key_hi[i] = pos[i];  // causal: keys [0, own position]
  // Decoding step: several sequences, one token each.
  bool one_per_sequence = N > 1;
  {
    std::vector<bool> seen(cache.max_seqs, false);
    for (int i = 0; i < N && one_per_sequence; ++i) {
      one_per_sequence = !seen[seq[i]];
      seen[seq[i]] = true;
    }
  }
  KvCache::Scratch& sc = cache.scratch;  // reused across calls: no allocation per decoded token
  std::vector<float>&x = sc.x, &xn = sc.xn, &rstd = sc.rstd, &qkv = sc.qkv, &att = sc.att, &lse = sc.lse, &gu = sc.gu,
                    &act = sc.act;
  x.resize(size_t(N) * C);
  xn.resize(size_t(N) * C);
  rstd.resize(N);
  qkv.resize(size_t(N) * qkv_dim);
  att.resize(size_t(N) * H * D);
  lse.resize(size_t(std::max(N, cache.max_seqs)) * H);
  gu.resize(size_t(N) * 2 * I);
  act.resize(size_t(N) * I);

  embedding_forward(x.data(), tokens.data(), P + lay.embed, nullptr, N, C);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const LayerOffsets& o = lay.layers[l];
    rmsnorm_forward(xn.data(), rstd.data(), x.data(), P + o.ln1, N, C, c.rms_norm_eps);
    const float* Wt = m.weights_t.data();
    const InferenceModel::LayerWeightsT& wt = m.layers_t[l];
    matmul_forward_transposed(qkv.data(), xn.data(), Wt + wt.qkv, o.qkv_b != kNoTensor ? P + o.qkv_b : nullptr, N, C,
                              qkv_dim, false);
    // RoPE on the H query heads and the KV key heads (adjacent in each row).
    rope_apply(qkv.data(), pos.data(), m.rope_cos.data(), m.rope_sin.data(), N, H + KV, D, qkv_dim, false);
#pragma omp parallel for
    for (int i = 0; i < N; ++i) {
      const float* r = &qkv[size_t(i) * qkv_dim];
      std::copy_n(r + H * D, kv_dim, cache.k_at(l, seq[i], pos[i]));
      std::copy_n(r + H * D + kv_dim, kv_dim, cache.v_at(l, seq[i], pos[i]));
    }
    if (one_per_sequence) {
      decode_attention(att.data(), qkv.data(), cache, l, seq.data(), pos.data(), N, H, KV, D, qkv_dim);
    } else {
      for (const Run& run : runs) {
        const int s = seq[run.begin];
        AttentionShape shape{1, run.end - run.begin, cache.max_len, H, KV, D, qkv_dim, kv_dim};
        attention_forward(&att[size_t(run.begin) * H * D], &lse[size_t(run.begin) * H],
                          &qkv[size_t(run.begin) * qkv_dim], cache.k_at(l, s, 0), cache.v_at(l, s, 0),
                          &key_lo[run.begin], &key_hi[run.begin], shape);
      }
    }
    matmul_forward_transposed(x.data(), att.data(), Wt + wt.o, nullptr, N, H * D, C, true);  // residual: x += att W_o^T

    rmsnorm_forward(xn.data(), rstd.data(), x.data(), P + o.ln2, N, C, c.rms_norm_eps);
    matmul_forward_transposed(gu.data(), xn.data(), Wt + wt.gate_up, nullptr, N, C, 2 * I, false);
    swiglu_forward(act.data(), gu.data(), N, I);
    matmul_forward_transposed(x.data(), act.data(), Wt + wt.down, nullptr, N, I, C, true);  // residual
  }

  // Final norm and LM head only for the rows whose logits are wanted.
  const int R = int(logits_for.size());
  std::vector<float>&sel = sc.sel, &seln = sc.seln, &rstd_sel = sc.rstd_sel;
  sel.resize(size_t(R) * C);
  seln.resize(size_t(R) * C);
  rstd_sel.resize(R);
  for (int r = 0; r < R; ++r) {
    check(logits_for[r] >= 0 && logits_for[r] < N, "forward_tokens: logits row out of range");
    std::copy_n(&x[size_t(logits_for[r]) * C], C, &sel[size_t(r) * C]);
  }
  rmsnorm_forward(seln.data(), rstd_sel.data(), sel.data(), P + lay.final_norm, R, C, c.rms_norm_eps);
  logits.resize(size_t(R) * V);
  matmul_forward_transposed(logits.data(), seln.data(), m.weights_t.data() + m.lm_head_t, nullptr, R, C, V, false);
}

// ---------------------------------------------------------------------------------------------

// The lowest index of the maximum wins a tie, as torch.argmax. Two vectorized passes (the max,
// then its first position) instead of one scalar compare chain over the vocabulary.
static int32_t argmax(const float* x, int n) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int i = 0; i < n; ++i) mx = x[i] > mx ? x[i] : mx;  // (std::max does not vectorize here)
  for (int i = 0; i < n; ++i)
    if (x[i] == mx) return i;
  return 0;  // all NaN
}

static bool is_stop(int32_t id, const GreedyOptions& opt) {
  if (std::find(opt.stop_token_ids.begin(), opt.stop_token_ids.end(), id) != opt.stop_token_ids.end()) return true;
  return size_t(id) < opt.stops_generation.size() && opt.stops_generation[id];
}

std::vector<std::vector<int32_t>> greedy_generate(const InferenceModel& m,
                                                  const std::vector<std::vector<int32_t>>& prompts,
                                                  const GreedyOptions& opt) {
  const int V = m.config->vocab_size;
  check(opt.batch_size > 0, "greedy_generate: batch size must be positive");
  std::vector<std::vector<int32_t>> results(prompts.size());
  // One cache (and its scratch) for all batches, sized for the largest: allocating and zeroing it
  // per batch costs page faults comparable to several decoding steps.
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    check(!prompts[i].empty(), "greedy_generate: prompt ", i, " is empty");
    longest = std::max(longest, prompts[i].size());
  }
  if (prompts.empty() || opt.max_new_tokens <= 0) return results;
  KvCache cache(*m.config, int(std::min(prompts.size(), size_t(opt.batch_size))),
                int(longest) + opt.max_new_tokens);
  for (size_t b0 = 0; b0 < prompts.size(); b0 += size_t(opt.batch_size)) {
    const int nb = int(std::min(prompts.size() - b0, size_t(opt.batch_size)));
    cache.reset();

    // Prefill: every prompt token of the batch in one ragged forward; logits at each last token.
    std::vector<int32_t> toks;
    std::vector<int> seq, want;
    for (int s = 0; s < nb; ++s) {
      for (int32_t t : prompts[b0 + s]) {
        toks.push_back(t);
        seq.push_back(s);
      }
      want.push_back(int(toks.size()) - 1);
    }
    std::vector<float> logits;
    std::vector<int> active(nb);
    std::iota(active.begin(), active.end(), 0);
    forward_tokens(m, cache, toks, seq, want, logits);

    std::vector<int32_t> next(nb);
    for (int s = 0; s < nb; ++s) next[s] = argmax(&logits[size_t(s) * V], V);
    for (int step = 0; !active.empty(); ++step) {
      // Record the token each active sequence just produced; drop finished sequences.
      std::vector<int> still;
      for (int s : active) {
        results[b0 + s].push_back(next[s]);
        if (!is_stop(next[s], opt) && int(results[b0 + s].size()) < opt.max_new_tokens) still.push_back(s);
      }
      active.swap(still);
      if (active.empty()) break;
      toks.clear();
      seq.clear();
      want.clear();
      for (int s : active) {
        want.push_back(int(toks.size()));
        toks.push_back(next[s]);
        seq.push_back(s);
      }
      forward_tokens(m, cache, toks, seq, want, logits);
      for (size_t r = 0; r < active.size(); ++r) next[active[r]] = argmax(&logits[r * V], V);
    }
  }
  return results;
}

std::vector<int32_t> greedy_generate_recompute(const InferenceModel& m, const std::vector<int32_t>& prompt,
                                               int max_new_tokens, const std::vector<int32_t>& stop_token_ids) {
  std::vector<int32_t> all = prompt, out;
  std::vector<float> logits;
  for (int step = 0; step < max_new_tokens; ++step) {
    KvCache cache(*m.config, 1, int(all.size()));
    forward_tokens(m, cache, all, std::vector<int>(all.size(), 0), {int(all.size()) - 1}, logits);
    int32_t t = argmax(logits.data(), m.config->vocab_size);
    out.push_back(t);
    all.push_back(t);
    if (std::find(stop_token_ids.begin(), stop_token_ids.end(), t) != stop_token_ids.end()) break;
  }
  return out;
}
