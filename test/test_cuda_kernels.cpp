// Every CUDA kernel of kernels/cuda/, run on the emulator and compared with the CPU backend's fp32
// reference ops (kernels/cpu/ops.h), in the style of ggml's test-backend-ops:
//   - inputs are bf16-representable, so both sides start from identical values;
//   - the error measure is the normalized MSE, with a threshold per op set from the number of bf16
//     roundings on the op's path (one rounding ~ 2e-6, see test/test_cuda_common.h);
//   - shapes are deliberately not multiples of the block or tile sizes;
//   - every launch runs under three fiber orders (forward, reverse, seeded random) and the results
//     must be bit-identical (the kernels are deterministic: no float atomics);
//   - the emulator checks guard zones, barrier divergence and warp masks on every launch.
// The last test case fails if some __global__ kernel in kernels/cuda/*.cuh was never launched.
#include <catch2/catch.hpp>

#include "test/test_cuda_common.h"  // first: wraps LAUNCH to record kernel names

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/accumulate.cuh"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/cast.cuh"
#include "kernels/cuda/condition.cuh"
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/decode.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/global_norm.cuh"
#include "kernels/cuda/lens.cuh"
#include "kernels/cuda/matmul.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "model/adamw.h"
#include "model/safetensors.h"

// Thresholds (normalized MSE).
constexpr double EXACT = 0.0;
constexpr double FP32_ORDER = 1e-10;      // fp32 results that differ only by summation order
constexpr double BF16_OUTPUT = 1e-5;      // one bf16 rounding of the result (~2e-6 expected)
constexpr double BF16_TWO_ROUNDINGS = 2e-5;  // a bf16 input rounding (e.g. dlogits) + the output

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda cast: f32 -> bf16 rounds to nearest even, bf16 -> f32 is exact") {
  std::vector<float> x = random_vector(1000 + 7, 1, 3.0f);
  x[0] = 0.0f;
  x[1] = -0.0f;
  x[2] = 1e30f;
  x[3] = 1e-30f;
  x[4] = 1.0f + 1.0f / 256.0f;  // a tie: rounds to even (1.0)
  x[5] = 1.0f + 3.0f / 256.0f;  // a tie: rounds to even (1 + 4/256)
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<float> in(x), back(x.size());
    DeviceBuffer<bf16> mid(x.size());
    cast_f32_to_bf16(mid, in, x.size(), 0);
    cast_bf16_to_f32(back, mid, x.size(), 0);
    return back.download();
  }, &identical);
  REQUIRE(identical);
  for (size_t i = 0; i < x.size(); i++) REQUIRE(got[i] == bf16_to_float(float_to_bf16(x[i])));
  REQUIRE(got[4] == 1.0f);
  REQUIRE(got[5] == 1.0f + 4.0f / 256.0f);
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda accumulate: acc += x is one fp32 add per element (ZeRO 2's micro-batch sum)") {
  const size_t n = 3 * 256 + 11;  // several blocks and a partial one
  const std::vector<float> acc0 = random_vector(n, 11, 2.0f), x = random_vector(n, 12, 1e-3f);
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<float> acc(acc0), in(x);
    accumulate(acc, in, n, 0);
    accumulate(acc, in, 0, 0);  // nothing to add: no launch
    return acc.download();
  }, &identical);
  REQUIRE(identical);
  for (size_t i = 0; i < n; i++) REQUIRE(got[i] == acc0[i] + x[i]);
  REQUIRE(std::any_of(x.begin(), x.end(), [](float v) { return v != 0.0f; }));
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda embedding: forward (with and without an additive vector) and deterministic backward") {
  const int V = 50, C = 300, N = 74;  // C is not a multiple of the 256-thread block
  std::mt19937 rng(2);
  std::vector<int> tokens(N);
  for (int& t : tokens) t = (int)(rng() % 12);  // many repeats, as the backward must sum them
  tokens[5] = V - 1;
  const std::vector<float> table = random_bf16_values((size_t)V * C, 3);
  const std::vector<float> add = random_bf16_values((size_t)N * C, 4, 0.1f);
  const std::vector<float> dout = random_bf16_values((size_t)N * C, 5);
  const std::vector<float> dtable0 = random_vector((size_t)V * C, 6);

  for (bool with_add : {false, true}) {
    bool identical = false;
    std::vector<float> got = run_all_schedules([&] {
      DeviceBuffer<int> tok(tokens);
      DeviceBuffer<bf16> tab(to_bf16(table)), out((size_t)N * C);
      DeviceBuffer<bf16> addb(to_bf16(add));
      embedding_forward(out, tok, tab, with_add ? addb.ptr : nullptr, N, C, 0);
      return to_f32(out.download());
    }, &identical);
    REQUIRE(identical);
    std::vector<float> ref((size_t)N * C);
    embedding_forward(ref.data(), tokens.data(), table.data(), with_add ? add.data() : nullptr, N, C);
    if (with_add) REQUIRE(nmse(got, ref) < BF16_OUTPUT);
    else REQUIRE(nmse(got, ref) == EXACT);
  }

  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    const EmbeddingBackwardPlan plan = embedding_backward_plan(tokens.data(), N);
    DeviceBuffer<int> bt(plan.bucket_token), bs(plan.bucket_start), bp(plan.bucket_positions);
    DeviceBuffer<bf16> d(to_bf16(dout));
    DeviceBuffer<float> dtab(dtable0);
    embedding_backward(dtab, d, bt, bs, bp, (int)plan.bucket_token.size(), C, 0);
    return dtab.download();
  }, &identical);
  REQUIRE(identical);
  std::vector<float> ref = dtable0;
  embedding_backward(ref.data(), tokens.data(), dout.data(), N, C);
  REQUIRE(nmse(got, ref) < FP32_ORDER);
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda rmsnorm: fused residual add + norm forward, and the unfused form") {
  const int N = 37, C = 300;
  const float eps = 1e-5f;
  const std::vector<float> res_in = random_bf16_values((size_t)N * C, 10);
  const std::vector<float> delta = random_bf16_values((size_t)N * C, 11, 0.5f);
  std::vector<float> w = random_bf16_values(C, 12, 0.2f);
  for (float& v : w) v = bf16_to_float(float_to_bf16(1.0f + v));

  for (bool fused : {true, false}) {
    bool identical = false;
    std::vector<float> got = run_all_schedules([&] {
      DeviceBuffer<bf16> rin(to_bf16(res_in)), d(to_bf16(delta)), wb(to_bf16(w)), rout((size_t)N * C),
          normed((size_t)N * C);
      DeviceBuffer<float> rstd(N);
      fused_residual_rmsnorm_forward(fused ? rout.ptr : nullptr, normed, rstd, rin, fused ? d.ptr : nullptr, wb, N, C,
                                     eps, 0);
      std::vector<float> r = to_f32(normed.download());
      append(r, rstd.download());
      if (fused) append(r, to_f32(rout.download()));
      return r;
    }, &identical);
    REQUIRE(identical);
    std::vector<float> x(res_in);
    if (fused) {
      for (size_t i = 0; i < x.size(); i++) x[i] = res_in[i] + delta[i];
      x = round_bf16(x);  // the residual stream is stored in bf16 and normalized as stored
    }
    std::vector<float> ref((size_t)N * C), rstd_ref(N);
    rmsnorm_forward(ref.data(), rstd_ref.data(), x.data(), w.data(), N, C, eps);
    const std::vector<float> got_normed(got.begin(), got.begin() + (size_t)N * C);
    const std::vector<float> got_rstd(got.begin() + (size_t)N * C, got.begin() + (size_t)N * C + N);
    REQUIRE(nmse(got_normed, ref) < BF16_OUTPUT);
    REQUIRE(nmse(got_rstd, rstd_ref) < FP32_ORDER);
    if (fused) {
      const std::vector<float> got_res(got.begin() + (size_t)N * C + N, got.end());
      REQUIRE(nmse(got_res, x) == EXACT);
    }
  }
}

TEST_CASE("cuda rmsnorm: backward with the residual gradient fused, deterministic dweight") {
  // N = 300 > 256 blocks: some blocks own two rows, as on a real batch.
  for (const std::pair<int, int>& shape : {std::pair<int, int>{37, 300}, std::pair<int, int>{300, 72}}) {
    const int N = shape.first, C = shape.second;
    const float eps = 1e-5f;
    const std::vector<float> x = random_bf16_values((size_t)N * C, 20);
    std::vector<float> w = random_bf16_values(C, 21, 0.2f);
    for (float& v : w) v = bf16_to_float(float_to_bf16(1.0f + v));
    const std::vector<float> dy = random_bf16_values((size_t)N * C, 22);
    const std::vector<float> dres = random_bf16_values((size_t)N * C, 23);
    const std::vector<float> dw0 = random_vector(C, 24);
    std::vector<float> normed((size_t)N * C), rstd(N);
    rmsnorm_forward(normed.data(), rstd.data(), x.data(), w.data(), N, C, eps);

    bool identical = false;
    std::vector<float> got = run_all_schedules([&] {
      DeviceBuffer<bf16> xb(to_bf16(x)), wb(to_bf16(w)), dyb(to_bf16(dy)), dr(to_bf16(dres));
      DeviceBuffer<float> rs(rstd), dw(dw0), scratch((size_t)rmsnorm_backward_blocks(N) * C);
      rmsnorm_backward(dr, dw, scratch, dr, dyb, xb, wb, rs, N, C, 0);  // in place: dres += dx
      std::vector<float> r = to_f32(dr.download());
      append(r, dw.download());
      return r;
    }, &identical);
    REQUIRE(identical);
    std::vector<float> dx_ref = dres, dw_ref = dw0;
    rmsnorm_backward(dx_ref.data(), dw_ref.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
    const std::vector<float> got_dx(got.begin(), got.begin() + (size_t)N * C), got_dw(got.begin() + (size_t)N * C, got.end());
    REQUIRE(nmse(got_dx, dx_ref) < BF16_OUTPUT);
    REQUIRE(nmse(got_dw, dw_ref) < FP32_ORDER);
  }
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda rope: llama3-scaled rotate-half forward and backward on the q and k heads of qkv rows") {
  for (int D : {64, 128}) {
    const int N = 37, H = 4, KV = 2, S = (H + 2 * KV) * D, max_pos = 100;
    std::vector<double> inv_freq(D / 2);
    rope_inv_freq(inv_freq.data(), D, 500000.0, true, 8.0, 1.0, 4.0, 64);
    std::vector<float> cos_t((size_t)max_pos * D / 2), sin_t((size_t)max_pos * D / 2);
    rope_tables(cos_t.data(), sin_t.data(), inv_freq.data(), D, max_pos);
    std::mt19937 rng(30);
    std::vector<int> pos(N);
    for (int& p : pos) p = (int)(rng() % max_pos);
    const std::vector<float> qkv = random_bf16_values((size_t)N * S, 31);
    for (bool backward : {false, true}) {
      bool identical = false;
      std::vector<float> got = run_all_schedules([&] {
        DeviceBuffer<bf16> x(to_bf16(qkv));
        DeviceBuffer<int> p(pos);
        DeviceBuffer<float> c(cos_t), s(sin_t);
        rope_apply(x, p, c, s, N, H + KV, D, S, backward, 0);
        return to_f32(x.download());
      }, &identical);
      REQUIRE(identical);
      std::vector<float> ref = qkv;
      rope_apply(ref.data(), pos.data(), cos_t.data(), sin_t.data(), N, H + KV, D, S, backward);
      REQUIRE(nmse(got, ref) < BF16_OUTPUT);
      // the v heads are untouched
      for (int t = 0; t < N; t++)
        for (int i = (H + KV) * D; i < S; i++) REQUIRE(got[(size_t)t * S + i] == qkv[(size_t)t * S + i]);
    }
  }
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda swiglu: forward and backward") {
  const int N = 37, I = 300;
  const std::vector<float> gu = random_bf16_values((size_t)N * 2 * I, 40, 2.0f);
  const std::vector<float> dout = random_bf16_values((size_t)N * I, 41);
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<bf16> g(to_bf16(gu)), out((size_t)N * I), d(to_bf16(dout)), dg((size_t)N * 2 * I);
    swiglu_forward(out, g, N, I, 0);
    swiglu_backward(dg, d, g, N, I, 0);
    std::vector<float> r = to_f32(out.download());
    append(r, to_f32(dg.download()));
    return r;
  }, &identical);
  REQUIRE(identical);
  std::vector<float> out_ref((size_t)N * I), dg_ref((size_t)N * 2 * I);
  swiglu_forward(out_ref.data(), gu.data(), N, I);
  swiglu_backward(dg_ref.data(), dout.data(), gu.data(), N, I);
  REQUIRE(nmse(std::vector<float>(got.begin(), got.begin() + (size_t)N * I), out_ref) < BF16_OUTPUT);
  REQUIRE(nmse(std::vector<float>(got.begin() + (size_t)N * I, got.end()), dg_ref) < BF16_OUTPUT);
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda matmul (cuBLASLt): linear forward with bias and accumulation, input/weight/bias gradients") {
  const int N = 37, I = 72, O = 100;
  const std::vector<float> x = random_bf16_values((size_t)N * I, 50);
  const std::vector<float> W = random_bf16_values((size_t)O * I, 51, 0.1f);
  const std::vector<float> b = random_bf16_values(O, 52);
  const std::vector<float> y0 = random_bf16_values((size_t)N * O, 53);
  const std::vector<float> dy = random_bf16_values((size_t)N * O, 54);
  const std::vector<float> dx0 = random_bf16_values((size_t)N * I, 55);
  const std::vector<float> dW0 = random_vector((size_t)O * I, 56), db0 = random_vector(O, 57);
  MatmulContext ctx;
  matmul_context_create(ctx);
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<bf16> xb(to_bf16(x)), Wb(to_bf16(W)), bb(to_bf16(b)), y((size_t)N * O), yacc(to_bf16(y0)),
        dyb(to_bf16(dy)), dx((size_t)N * I), dxacc(to_bf16(dx0));
    DeviceBuffer<float> logits((size_t)N * O), dW(dW0), db(db0);
    linear_forward(ctx, y, false, xb, Wb, bb, N, I, O, 0);
    linear_forward(ctx, yacc, false, xb, Wb, nullptr, N, I, O, 0, /*accumulate=*/true);
    linear_forward(ctx, logits, true, xb, Wb, nullptr, N, I, O, 0);
    linear_backward_input(ctx, dx, false, dyb, Wb, N, I, O, false, 0);
    linear_backward_input(ctx, dxacc, false, dyb, Wb, N, I, O, true, 0);
    linear_backward_weight(ctx, dW, dyb, xb, N, I, O, 0);
    bias_backward(db, dyb, N, O, 0);
    std::vector<float> r = to_f32(y.download());
    append(r, to_f32(yacc.download()));
    append(r, logits.download());
    append(r, to_f32(dx.download()));
    append(r, to_f32(dxacc.download()));
    append(r, dW.download());
    append(r, db.download());
    return r;
  }, &identical);
  matmul_context_destroy(ctx);
  REQUIRE(identical);
  std::vector<float> y_ref((size_t)N * O), yacc_ref = y0, logits_ref((size_t)N * O), dx_ref((size_t)N * I),
      dxacc_ref = dx0, dW_ref = dW0, db_ref = db0, dW_unused = dW0;
  matmul_forward(y_ref.data(), x.data(), W.data(), b.data(), N, I, O, false);
  matmul_forward(yacc_ref.data(), x.data(), W.data(), nullptr, N, I, O, true);
  matmul_forward(logits_ref.data(), x.data(), W.data(), nullptr, N, I, O, false);
  matmul_backward(dx_ref.data(), dW_ref.data(), db_ref.data(), dy.data(), x.data(), W.data(), N, I, O, false);
  matmul_backward(dxacc_ref.data(), dW_unused.data(), nullptr, dy.data(), x.data(), W.data(), N, I, O, true);
  size_t at = 0;
  auto take = [&](size_t n) {
    std::vector<float> r(got.begin() + at, got.begin() + at + n);
    at += n;
    return r;
  };
  REQUIRE(nmse(take((size_t)N * O), y_ref) < BF16_OUTPUT);
  REQUIRE(nmse(take((size_t)N * O), yacc_ref) < BF16_OUTPUT);
  REQUIRE(nmse(take((size_t)N * O), logits_ref) < FP32_ORDER);
  REQUIRE(nmse(take((size_t)N * I), dx_ref) < BF16_OUTPUT);
  REQUIRE(nmse(take((size_t)N * I), dxacc_ref) < BF16_OUTPUT);
  REQUIRE(nmse(take((size_t)O * I), dW_ref) < FP32_ORDER);
  REQUIRE(nmse(take(O), db_ref) < FP32_ORDER);
}

// ------------------------------------------------------------------------------------------------
// Attention: packed rows (several examples per row, positions/key ranges restarting per example,
// trailing padding that attends only to itself), T not a multiple of any tile.
struct PackedRows {
  int rows, T;
  std::vector<int> lo, hi;
  int Tk = 0;  // keys per row; 0: T
};
static PackedRows packed_rows(int T) {
  PackedRows p{2, T, {}, {}};
  // row 0: examples [0, 20) and [20, T); row 1: [0, 13), [13, 30), [30, T-4), then 4 padding slots
  const std::vector<std::vector<int>> starts = {{0, 20}, {0, 13, 30}};
  for (int r = 0; r < 2; r++) {
    for (int t = 0; t < T; t++) {
      int start = 0;
      for (int s : starts[r])
        if (s <= t) start = s;
      if (r == 1 && t >= T - 4) start = t;  // padding
      p.lo.push_back(start);
      p.hi.push_back(t);
    }
  }
  return p;
}

// Both paths, the FMA kernels (attention.cuh, the reference) and the tensor-core kernels
// (attention_tc.cuh), against the CPU op and against each other. With pk.Tk > T the keys and values
// are in their own buffer [rows * Tk, 2 KV D] (the memory slot's layout: Tk = T + 1).
static void check_attention(int D, int H, int KV, const PackedRows& pk, uint64_t seed) {
  const int rows = pk.rows, T = pk.T, Tk = pk.Tk > 0 ? pk.Tk : T, S = (H + 2 * KV) * D, N = rows * T;
  const bool own_kv = Tk != T;
  const int LKV = own_kv ? 2 * KV * D : S;
  const size_t NK = (size_t)rows * Tk, k_off = own_kv ? 0 : H * D, v_off = own_kv ? KV * D : (H + KV) * D;
  INFO("D=" << D << " H=" << H << " KV=" << KV << " T=" << T << " Tk=" << Tk);
  const std::vector<float> qkv = random_bf16_values((size_t)N * S, seed, 1.5f);
  const std::vector<float> kv = own_kv ? random_bf16_values(NK * LKV, seed + 2, 1.5f) : std::vector<float>(1);
  const std::vector<float> dout = random_bf16_values((size_t)N * H * D, seed + 1);
  const AttentionShape shape{rows, T, Tk, H, KV, D, S, LKV};
  const AttentionDims dims{T, Tk, H, KV, S, LKV};
  const size_t n_out = (size_t)N * H * D, n_lse = (size_t)N * H, n_dqkv = (size_t)N * S, n_dkv = own_kv ? NK * LKV : 0;
  const float* kv_src = own_kv ? kv.data() : qkv.data();

  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    std::vector<float> r;
    for (bool tc : {false, true}) {
      DeviceBuffer<bf16> x(to_bf16(qkv)), xkv(to_bf16(kv)), out(n_out), d(to_bf16(dout)), dqkv(n_dqkv),
          dkv(std::max<size_t>(n_dkv, 1));
      DeviceBuffer<float> lse(n_lse), delta(n_lse);
      DeviceBuffer<int> lo(pk.lo), hi(pk.hi);
      const bf16* kvp = own_kv ? xkv.ptr : x.ptr;
      bf16* dkvp = own_kv ? dkv.ptr : dqkv.ptr;
      if (tc) {
        attention_tc_forward(out, lse, x, kvp + k_off, kvp + v_off, lo, hi, rows, dims, D, 0);
        attention_tc_backward(dqkv, dkvp + k_off, dkvp + v_off, delta, d, out, x, kvp + k_off, kvp + v_off, lse, lo,
                              hi, rows, dims, D, 0);
      } else {
        attention_forward(out, lse, x, kvp + k_off, kvp + v_off, lo, hi, rows, dims, D, 0);
        attention_backward(dqkv, dkvp + k_off, dkvp + v_off, delta, d, out, x, kvp + k_off, kvp + v_off, lse, lo, hi,
                           rows, dims, D, 0);
      }
      append(r, to_f32(out.download()));
      append(r, lse.download());
      append(r, to_f32(dqkv.download()));
      if (own_kv) append(r, to_f32(dkv.download()));
    }
    return r;
  }, &identical);
  REQUIRE(identical);
  const size_t per_path = n_out + n_lse + n_dqkv + n_dkv;
  std::vector<float> fma_out;
  for (int path = 0; path < 2; path++) {
    INFO((path == 0 ? "FMA kernels" : "tensor-core kernels"));
    const auto at = got.begin() + path * per_path;
    const std::vector<float> got_out(at, at + n_out), got_lse(at + n_out, at + n_out + n_lse),
        got_dqkv(at + n_out + n_lse, at + n_out + n_lse + n_dqkv), got_dkv(at + n_out + n_lse + n_dqkv, at + per_path);
    REQUIRE(all_finite(got_out));
    // The tensor-core path rounds P (forward) and dS (backward) to bf16 before the second product:
    // one bf16 rounding more than the FMA path on each output.
    const double tol = path == 0 ? BF16_OUTPUT : BF16_TWO_ROUNDINGS;
    std::vector<float> out_ref(n_out), lse_ref(n_lse);
    attention_forward(out_ref.data(), lse_ref.data(), qkv.data(), kv_src + k_off, kv_src + v_off, pk.lo.data(),
                      pk.hi.data(), shape);
    REQUIRE(nmse(got_out, out_ref) < tol);
    REQUIRE(nmse(got_lse, lse_ref) < FP32_ORDER);
    if (path == 0) fma_out = got_out;
    else REQUIRE(nmse(got_out, fma_out) < BF16_TWO_ROUNDINGS);  // the two paths agree with each other
    // The backward reference starts from the forward this path actually produced (its bf16
    // output), as the GPU backward does, so the comparison isolates the backward kernels.
    std::vector<float> dqkv_ref(n_dqkv), dkv_ref(n_dkv);
    float* dkv_ref_p = own_kv ? dkv_ref.data() : dqkv_ref.data();
    attention_backward(dqkv_ref.data(), dkv_ref_p + k_off, dkv_ref_p + v_off, dout.data(), qkv.data(), kv_src + k_off,
                       kv_src + v_off, got_out.data(), lse_ref.data(), pk.lo.data(), pk.hi.data(), shape);
    // compare q, k and v gradients separately (their scales differ)
    for (int part = 0; part < 3; part++) {
      const bool in_kv = part > 0 && own_kv;
      const std::vector<float>& g = in_kv ? got_dkv : got_dqkv;
      const std::vector<float>& ref = in_kv ? dkv_ref : dqkv_ref;
      const size_t begin = part == 0 ? 0 : part == 1 ? k_off : v_off, ld = in_kv ? LKV : S, n = part == 0 ? N : NK;
      const int width = part == 0 ? H * D : KV * D;
      std::vector<float> a, b;
      for (size_t row = 0; row < n; row++)
        for (int i = 0; i < width; i++) {
          a.push_back(g[row * ld + begin + i]);
          b.push_back(ref[row * ld + begin + i]);
        }
      INFO("gradient part " << "qkv"[part] << " nmse " << nmse(a, b));
      REQUIRE(all_finite(a));
      REQUIRE(nmse(a, b) < tol);
    }
  }
}

TEST_CASE("cuda attention: flash forward/backward, head_dim 64 and 128, GQA 1/4/8, packed segments") {
  const PackedRows packed = packed_rows(77);  // several key and query tiles per row
  for (int D : {64, 128})
    for (int KV : {8, 2, 1}) check_attention(D, 8, KV, packed, 60 + D + KV);
}

TEST_CASE("cuda attention: unpacked causal rows, a row shorter than one tile, and a long row") {
  // Operands the tensor-core kernels cannot load as 16-byte vectors (the backend then runs the FMA
  // kernels): a misaligned pointer, a row stride that is not a multiple of 8, another head size.
  const void* aligned = reinterpret_cast<const void*>(uintptr_t{4096});
  const void* off = reinterpret_cast<const void*>(uintptr_t{4096 + 2});
  REQUIRE(attention_tc_supported(aligned, aligned, aligned, aligned, AttentionDims{8, 8, 4, 1, 384, 384}, 64));
  REQUIRE_FALSE(attention_tc_supported(aligned, off, aligned, nullptr, AttentionDims{8, 8, 4, 1, 384, 384}, 64));
  REQUIRE_FALSE(attention_tc_supported(aligned, aligned, aligned, nullptr, AttentionDims{8, 8, 4, 1, 388, 384}, 64));
  REQUIRE_FALSE(attention_tc_supported(aligned, aligned, aligned, nullptr, AttentionDims{8, 8, 4, 1, 384, 384}, 96));
  for (int T : {7, 70}) {
    PackedRows p{2, T, {}, {}};
    for (int r = 0; r < 2; r++)
      for (int t = 0; t < T; t++) {
        p.lo.push_back(0);
        p.hi.push_back(t);
      }
    check_attention(64, 4, 1, p, 90 + T);
  }
}

TEST_CASE("cuda attention: a memory slot before each row's keys (Tk = T + 1, own K/V buffer), causal and bidirectional") {
  const int T = 37;
  for (bool causal : {true, false}) {
    INFO((causal ? "causal" : "bidirectional"));
    PackedRows p{2, T, {}, {}, T + 1};
    for (int r = 0; r < 2; r++)
      for (int t = 0; t < T; t++) {
        p.lo.push_back(0);  // the slot (key 0) and the row's keys 1..T
        p.hi.push_back(causal ? t + 1 : T);
      }
    check_attention(causal ? 128 : 64, 4, 2, p, 140 + causal);
  }
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda cross-entropy: rows over the whole vocabulary, in place, with the loss mask") {
  const int n = 13, V = 1000;
  std::vector<float> logits = random_vector((size_t)n * V, 70, 3.0f);
  std::vector<int> targets(n);
  std::mt19937 rng(71);
  for (int& t : targets) t = (int)(rng() % V);
  targets[3] = -1;
  targets[9] = -1;
  const float grad_scale = 1.0f / 29.0f;
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<float> l(logits), stats((size_t)5 * n);
    DeviceBuffer<int> tg(targets);
    cross_entropy_rows_forward_backward(l, stats.ptr + 4 * n, tg, n, V, grad_scale, stats, stats.ptr + n,
                                        stats.ptr + 2 * n, stats.ptr + 3 * n, 0);
    std::vector<float> r = l.download();
    const std::vector<float> s = stats.download();
    r.insert(r.end(), s.begin() + 4 * n, s.end());
    return r;
  }, &identical);
  REQUIRE(identical);
  std::vector<float> ref = logits;
  double loss_ref = 0.0;
  cross_entropy_forward_backward(ref.data(), targets.data(), n, V, grad_scale, &loss_ref);
  REQUIRE(nmse(std::vector<float>(got.begin(), got.begin() + (size_t)n * V), ref) < FP32_ORDER);
  double loss = 0.0;
  for (int i = 0; i < n; i++) {
    loss += got[(size_t)n * V + i];
    if (targets[i] < 0) REQUIRE(got[(size_t)n * V + i] == 0.0f);
  }
  REQUIRE(std::abs(loss - loss_ref) <= 1e-5 * std::abs(loss_ref));
}

TEST_CASE("cuda fused LM head + cross-entropy, chunked over the vocabulary (chunk not dividing V)") {
  const int N = 21, C = 72, V = 1000;
  const std::vector<float> x = random_bf16_values((size_t)N * C, 80);
  const std::vector<float> W = random_bf16_values((size_t)V * C, 81, 0.3f);
  const std::vector<float> dW0 = random_vector((size_t)V * C, 82, 0.01f);
  std::vector<int> targets(N);
  std::mt19937 rng(83);
  for (int& t : targets) t = (int)(rng() % V);
  targets[0] = targets[7] = targets[20] = -1;
  const float dloss_scale = 1.0f / 40.0f;  // the whole optimizer batch has 40 target tokens
  for (int chunk : {384, 1000}) {
    INFO("chunk " << chunk);
    MatmulContext ctx;
    matmul_context_create(ctx);
    bool identical = false;
    std::vector<float> got = run_all_schedules([&] {
      DeviceBuffer<bf16> xb(to_bf16(x)), Wb(to_bf16(W)), dx((size_t)N * C), dlogits((size_t)N * chunk);
      DeviceBuffer<float> losses(N), dW(dW0), logits((size_t)N * chunk), stats((size_t)4 * N), dx32((size_t)N * C);
      DeviceBuffer<int> tg(targets);
      LmHeadScratch s;
      s.logits = logits;
      s.dlogits = dlogits;
      s.row_max = stats;
      s.row_sum = stats.ptr + N;
      s.target_logit = stats.ptr + 2 * N;
      s.lse = stats.ptr + 3 * N;
      s.dx_f32 = dx32;
      s.chunk = chunk;
      fused_lm_head_cross_entropy(ctx, losses, dx, dW, xb, Wb, tg, N, C, V, dloss_scale, s, 0);
      std::vector<float> r = losses.download();
      append(r, to_f32(dx.download()));
      append(r, dW.download());
      return r;
    }, &identical);
    matmul_context_destroy(ctx);
    REQUIRE(identical);
    // reference: full logits, CPU cross-entropy, CPU matmul backward
    std::vector<float> logits((size_t)N * V), dx_ref((size_t)N * C), dW_ref = dW0;
    matmul_forward(logits.data(), x.data(), W.data(), nullptr, N, C, V, false);
    double loss_ref = 0.0;
    cross_entropy_forward_backward(logits.data(), targets.data(), N, V, dloss_scale, &loss_ref);
    matmul_backward(dx_ref.data(), dW_ref.data(), nullptr, logits.data(), x.data(), W.data(), N, C, V, false);
    double loss = 0.0;
    for (int i = 0; i < N; i++) loss += got[i];
    REQUIRE(std::abs(loss - loss_ref) <= 1e-5 * std::abs(loss_ref));
    REQUIRE(nmse(std::vector<float>(got.begin() + N, got.begin() + N + (size_t)N * C), dx_ref) < BF16_TWO_ROUNDINGS);
    // dW = dW0 + dlogits^T x: compare the increment, not the (larger) initial value
    std::vector<float> inc_got((size_t)V * C), inc_ref((size_t)V * C);
    for (size_t i = 0; i < inc_got.size(); i++) {
      inc_got[i] = got[N + (size_t)N * C + i] - dW0[i];
      inc_ref[i] = dW_ref[i] - dW0[i];
    }
    REQUIRE(nmse(inc_got, inc_ref) < BF16_TWO_ROUNDINGS);
  }
}

TEST_CASE("cuda gather/scatter rows (LM-head compaction)") {
  const int N = 30, C = 300, n = 11;
  const std::vector<float> src = random_bf16_values((size_t)N * C, 85);
  std::vector<int> idx = {0, 3, 4, 8, 9, 13, 17, 21, 22, 28, 29};
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<bf16> s(to_bf16(src)), g((size_t)n * C), back((size_t)N * C);
    DeviceBuffer<int> ix(idx);
    gather_rows(g, s, ix, n, C, 0);
    scatter_rows(back, g, ix, n, C, 0);
    std::vector<float> r = to_f32(g.download());
    append(r, to_f32(back.download()));
    return r;
  }, &identical);
  REQUIRE(identical);
  std::vector<float> g_ref((size_t)n * C), back_ref((size_t)N * C, 0.0f);
  gather_rows(g_ref.data(), src.data(), idx.data(), n, C);
  scatter_rows(back_ref.data(), g_ref.data(), idx.data(), n, C);
  REQUIRE(nmse(std::vector<float>(got.begin(), got.begin() + (size_t)n * C), g_ref) == EXACT);
  REQUIRE(nmse(std::vector<float>(got.begin() + (size_t)n * C, got.end()), back_ref) == EXACT);
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda global norm and AdamW (fp32 state) match the CPU step, clipping through the device scale") {
  const size_t n = 100003;  // several grid-stride passes of the 512-block norm kernel
  const std::vector<float> p0 = random_vector(n, 100), g = random_vector(n, 101, 0.01f);
  const float max_norm = 1.0f;
  AdamWConfig o;
  o.lr = 1e-2f;
  o.weight_decay = 0.1f;
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<float> p(p0), gb(g), m(n), v(n), norm_scale(2), scratch(GLOBAL_NORM_BLOCKS);
    DeviceBuffer<bf16> pb(n);
    std::vector<float> r;
    for (int step = 1; step <= 3; step++) {
      global_norm(norm_scale, scratch, gb, n, max_norm, 0);
      append(r, norm_scale.download());
      const AdamWHyper hp{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, step};
      adamw_update<float>(p, pb, gb, m, v, n, hp, 1.0f, norm_scale.ptr + 1, 7, 0);
    }
    append(r, p.download());
    append(r, m.download());
    append(r, v.download());
    append(r, to_f32(pb.download()));
    return r;
  }, &identical);
  REQUIRE(identical);
  std::vector<float> p = p0, m(n, 0.0f), v(n, 0.0f);
  for (int step = 1; step <= 3; step++) {
    const double norm = std::sqrt(sum_of_squares(g.data(), n));
    REQUIRE(std::abs(got[2 * (step - 1)] - norm) <= 1e-5 * norm);
    REQUIRE(std::abs(got[2 * (step - 1) + 1] - clip_scale(norm, max_norm)) <= 1e-5);
    adamw_update(p.data(), g.data(), m.data(), v.data(), n, o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, step,
                 clip_scale(norm, max_norm));
  }
  const size_t at = 6;
  const std::vector<float> gp(got.begin() + at, got.begin() + at + n), gm(got.begin() + at + n, got.begin() + at + 2 * n),
      gv(got.begin() + at + 2 * n, got.begin() + at + 3 * n), gpb(got.begin() + at + 3 * n, got.end());
  REQUIRE(nmse(gp, p) < FP32_ORDER);
  REQUIRE(nmse(gm, m) < FP32_ORDER);
  REQUIRE(nmse(gv, v) < FP32_ORDER);
  REQUIRE(nmse(gpb, round_bf16(gp)) == EXACT);  // the bf16 working copy is the rounded master

  // No clipping when max_norm <= 0.
  DeviceBuffer<float> gb(g), norm_scale(2), scratch(GLOBAL_NORM_BLOCKS);
  global_norm(norm_scale, scratch, gb, n, 0.0f, 0);
  REQUIRE(norm_scale.download()[1] == 1.0f);
}

TEST_CASE("cuda AdamW with bf16 state: stochastic rounding is unbiased and tracks the fp32 state") {
  // Every element sees the same gradient, so m = (1 - beta1) g after one step. The exact value is
  // placed a quarter of the way between two bf16 neighbours: round-to-nearest would always return
  // the lower one (a bias of 1/4 ulp); stochastic rounding must average to the exact value.
  const size_t n = 40000;
  const float lo = 1.0f, ulp = 1.0f / 128.0f;
  const float target_m = lo + 0.25f * ulp;
  const float g_value = target_m / 0.1f;
  const std::vector<float> g(n, g_value), p0 = random_vector(n, 110);
  const AdamWHyper hp{1e-3f, 0.9f, 0.95f, 1e-8f, 0.0f, 1};
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<float> p(p0), gb(g);
    DeviceBuffer<bf16> m(n), v(n);
    adamw_update<bf16>(p, nullptr, gb, m, v, n, hp, 1.0f, nullptr, 99, 0);
    std::vector<float> r = to_f32(m.download());
    append(r, p.download());
    return r;
  }, &identical);
  REQUIRE(identical);
  const float exact_m = 0.1f * g_value;  // what the fp32 state holds
  double mean = 0.0;
  for (size_t i = 0; i < n; i++) {
    REQUIRE((got[i] == lo || got[i] == lo + ulp));  // one of the two neighbours
    mean += got[i];
  }
  mean /= n;
  // standard error of the mean: ulp * sqrt(0.25 * 0.75 / n) ~ 1.7e-5; allow 5 of them
  REQUIRE(std::abs(mean - exact_m) < 5 * ulp * std::sqrt(0.25 * 0.75 / n));
  // and the parameters follow the fp32-state update closely
  std::vector<float> p_ref = p0, m_ref(n, 0.0f), v_ref(n, 0.0f);
  adamw_update(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n, hp.lr, hp.beta1, hp.beta2, hp.eps,
               hp.weight_decay, 1, 1.0f);
  std::vector<float> dp_got(n), dp_ref(n);
  for (size_t i = 0; i < n; i++) {
    dp_got[i] = got[n + i] - p0[i];
    dp_ref[i] = p_ref[i] - p0[i];
  }
  REQUIRE(nmse(dp_got, dp_ref) < 1e-4);  // the update, with state rounded to bf16 (2^-8 relative)

  // ZeRO: two slices updated on their own, each with its index_base, draw the same rounding bits
  // as the whole buffer at once (and so give the same state bit for bit); without the base they
  // would not.
  const size_t cut = 12345;
  auto sliced = [&](bool with_base) {
    DeviceBuffer<float> p(p0), gb(g);
    DeviceBuffer<bf16> m(n), v(n);
    adamw_update<bf16>(p, nullptr, gb, m, v, cut, hp, 1.0f, nullptr, 99, 0, 0);
    adamw_update<bf16>(p.ptr + cut, nullptr, gb.ptr + cut, m.ptr + cut, v.ptr + cut, n - cut, hp, 1.0f, nullptr, 99, 0,
                       with_base ? cut : 0);
    return to_f32(m.download());
  };
  const std::vector<float> whole_m(got.begin(), got.begin() + n);
  REQUIRE(sliced(true) == whole_m);
  REQUIRE(sliced(false) != whole_m);
}

// The fused step (norm reduction finished in the update pass, gradients zeroed there) against the
// unfused sequence the backend ran before: global norm, clip factor on the host, update, memset.
template <class state_t>
static void check_fused_adamw(float g_scale, float max_norm) {
  const size_t n = 6007;  // a ragged last block
  const std::vector<float> p0 = random_vector(n, 130), g = random_vector(n, 131, g_scale);
  const AdamWHyper base{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0};
  INFO("g scale " << g_scale << " max_norm " << max_norm << (sizeof(state_t) == 2 ? " bf16 state" : " fp32 state"));
  bool identical = false;
  const std::vector<float> got = run_all_schedules([&] {
    std::vector<float> r;
    for (bool fused : {false, true}) {
      DeviceBuffer<float> p(p0), gb(n), norm_scale(2), scratch(GLOBAL_NORM_BLOCKS);
      DeviceBuffer<state_t> m(n), v(n);
      DeviceBuffer<bf16> pb(n);
      CUDA_CHECK(cudaMemset(m.ptr, 0, n * sizeof(state_t)));
      CUDA_CHECK(cudaMemset(v.ptr, 0, n * sizeof(state_t)));
      for (int step = 1; step <= 2; step++) {
        gb.upload(g);
        AdamWHyper hp = base;
        hp.step = step;
        if (fused) {
          global_norm_partials(scratch, gb, n, 0);
          AdamWFusion fuse;
          fuse.norm_partials = scratch.ptr;
          fuse.max_norm = max_norm;
          fuse.norm_out = norm_scale.ptr;
          fuse.zero_grads = true;
          adamw_update<state_t>(p, pb, gb, m, v, n, hp, 1.0f, nullptr, 7 + step, 0, 0, fuse);
          r.push_back(norm_scale.download()[0]);
        } else {
          global_norm(norm_scale, scratch, gb, n, 0.0f, 0);
          const float norm = norm_scale.download()[0];
          adamw_update<state_t>(p, pb, gb, m, v, n, hp, clip_scale(norm, max_norm), nullptr, 7 + step, 0);
          CUDA_CHECK(cudaMemset(gb.ptr, 0, n * sizeof(float)));
          r.push_back(norm);
        }
      }
      append(r, p.download());
      append(r, to_f32(pb.download()));
      append(r, gb.download());
      for (const state_t& x : m.download()) r.push_back((float)x);
      for (const state_t& x : v.download()) r.push_back((float)x);
    }
    return r;
  }, &identical);
  REQUIRE(identical);
  const size_t half = got.size() / 2;
  REQUIRE(std::memcmp(got.data(), got.data() + half, half * sizeof(float)) == 0);  // bit-exact
  const double norm = std::sqrt(sum_of_squares(g.data(), n));
  REQUIRE(std::abs(got[0] - norm) <= 1e-5 * norm);
  REQUIRE(std::all_of(got.begin() + 2 + 2 * n, got.begin() + 2 + 3 * n, [](float x) { return x == 0.0f; }));
  size_t moved = 0;  // the step did update the parameters
  for (size_t i = 0; i < n; i++) moved += got[2 + i] != p0[i];
  REQUIRE(moved > n / 2);
}

TEST_CASE("cuda fused AdamW step: norm, clipping and gradient zeroing in the update pass, bit-exact with the unfused "
          "path") {
  check_fused_adamw<float>(0.1f, 1.0f);    // norm ~ 7.7: the clip binds
  check_fused_adamw<bf16>(0.001f, 1.0f);   // norm ~ 0.08: below the threshold (factor 1)
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda decoding: KV-cache writes and single-token attention with ragged lengths, GQA") {
  for (int D : {64, 128}) {
    INFO("D=" << D);
    const int B = 3, H = 8, KV = 2, S = (H + 2 * KV) * D, Tmax = 40, P = 33;
    const std::vector<int> prompt_len = {5, 17, 33};
    // decoding row r carries the next token of sequence seq_of_row[r] (rows need not follow slots)
    const std::vector<int> seq_of_row = {2, 0, 1};
    // prefill: B right-padded rows of P tokens; only the first prompt_len[b] go to the cache
    const std::vector<float> prefill = random_bf16_values((size_t)B * P * S, 120 + D);
    const std::vector<float> step = random_bf16_values((size_t)B * S, 121 + D);
    std::vector<int> prefill_pos(B * P), prefill_slot(B * P), step_pos(B);
    for (int b = 0; b < B; b++) {
      for (int t = 0; t < P; t++) {
        prefill_pos[b * P + t] = t < prompt_len[b] ? t : -1;
        prefill_slot[b * P + t] = b;
      }
      step_pos[b] = prompt_len[seq_of_row[b]];
    }
    bool identical = false;
    std::vector<float> got = run_all_schedules([&] {
      DeviceBuffer<bf16> pre(to_bf16(prefill)), st(to_bf16(step)), kc((size_t)B * KV * Tmax * D),
          vc((size_t)B * KV * Tmax * D), out((size_t)B * H * D);
      DeviceBuffer<int> pp(prefill_pos), ps(prefill_slot), sp(step_pos), ss(seq_of_row);
      kv_cache_write(kc, vc, pre, ps, pp, B * P, H, KV, D, Tmax, 0);
      kv_cache_write(kc, vc, st, ss, sp, B, H, KV, D, Tmax, 0);
      attention_decode(out, st, kc, vc, ss, sp, B, H, KV, D, Tmax, 0);
      std::vector<float> r = to_f32(out.download());
      append(r, to_f32(kc.download()));
      return r;
    }, &identical);
    REQUIRE(identical);
    // reference: each sequence's keys/values laid out [B, Tmax, KV*D] (sequence order) and, for the
    // CPU attention op, in decoding-row order; query = the step row
    std::vector<float> keys((size_t)B * Tmax * KV * D, 0.0f), values(keys.size(), 0.0f);
    std::vector<float> row_keys(keys.size()), row_values(keys.size());
    for (int r = 0; r < B; r++) {
      const int b = seq_of_row[r];
      for (int t = 0; t <= prompt_len[b]; t++) {
        const float* src = t < prompt_len[b] ? &prefill[((size_t)b * P + t) * S] : &step[(size_t)r * S];
        for (int i = 0; i < KV * D; i++) {
          keys[((size_t)b * Tmax + t) * KV * D + i] = src[H * D + i];
          values[((size_t)b * Tmax + t) * KV * D + i] = src[(H + KV) * D + i];
        }
      }
    }
    for (int r = 0; r < B; r++) {
      const size_t row = (size_t)Tmax * KV * D;
      std::copy_n(&keys[seq_of_row[r] * row], row, &row_keys[r * row]);
      std::copy_n(&values[seq_of_row[r] * row], row, &row_values[r * row]);
    }
    std::vector<int> lo(B, 0), hi(B);
    for (int r = 0; r < B; r++) hi[r] = step_pos[r];
    const AttentionShape shape{B, 1, Tmax, H, KV, D, S, KV * D};
    std::vector<float> out_ref((size_t)B * H * D), lse_ref((size_t)B * H);
    attention_forward(out_ref.data(), lse_ref.data(), step.data(), row_keys.data(), row_values.data(), lo.data(),
                      hi.data(), shape);
    REQUIRE(nmse(std::vector<float>(got.begin(), got.begin() + (size_t)B * H * D), out_ref) < BF16_OUTPUT);
    // the cache holds exactly the written keys at [b][g][t]
    const float* kc = got.data() + (size_t)B * H * D;
    for (int b = 0; b < B; b++)
      for (int g = 0; g < KV; g++)
        for (int t = 0; t < Tmax; t++)
          for (int d = 0; d < D; d++) {
            const float expect = t <= prompt_len[b] ? keys[((size_t)b * Tmax + t) * KV * D + g * D + d] : 0.0f;
            REQUIRE(kc[(((size_t)b * KV + g) * Tmax + t) * D + d] == expect);
          }
  }
}

TEST_CASE("cuda argmax over the vocabulary: lowest index wins ties") {
  const int rows = 5, V = 1000;
  std::vector<float> logits = random_vector((size_t)rows * V, 130);
  logits[1 * V + 700] = 50.0f;
  logits[1 * V + 300] = 50.0f;  // tie: 300 wins
  logits[2 * V + 999] = 60.0f;  // the last element
  logits[3 * V + 0] = 60.0f;    // the first element
  for (int v = 0; v < V; v++) logits[4 * V + v] = 1.0f;  // all equal: 0
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<float> l(logits);
    DeviceBuffer<int> out(rows);
    argmax_rows(out, l, rows, V, 0);
    std::vector<float> r;
    for (int i : out.download()) r.push_back((float)i);
    return r;
  }, &identical);
  REQUIRE(identical);
  for (int r = 0; r < rows; r++) {
    const float* x = &logits[(size_t)r * V];
    const int expect = (int)(std::max_element(x, x + V) - x);  // first maximum
    REQUIRE((int)got[r] == expect);
  }
  REQUIRE((int)got[1] == 300);
}

TEST_CASE("cuda logit-lens statistics: probability, rank with ties, top-1, as the CPU op") {
  const int rows = 6, V = 1003;
  std::vector<float> logits = random_vector((size_t)rows * V, 140);
  std::vector<int> gold = {5, 300, 999, 0, 17, 700};
  logits[1 * V + 700] = 9.0f;
  logits[1 * V + 300] = 9.0f;   // gold 300 ties the maximum at 700 with the lower id: rank 0, top-1
  logits[2 * V + 999] = 12.0f;  // the last element is the maximum and the gold token
  for (int v = 0; v < V; v++) logits[3 * V + v] = 1.0f;  // all equal: gold 0 is top-1, rank 0
  for (int v = 0; v < V; v++) logits[4 * V + v] = 1.0f;  // all equal: gold 17 has 17 lower ids before it
  logits[5 * V + 700] = -9.0f;  // gold at the bottom
  bool identical = false;
  std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<float> l(logits), prob(rows);
    DeviceBuffer<int> g(gold), rank(rows), top1(rows);
    lens_stats(prob, rank, top1, l, g, rows, V, 0);
    std::vector<float> r = prob.download();
    for (int i : rank.download()) r.push_back((float)i);
    for (int i : top1.download()) r.push_back((float)i);
    return r;
  }, &identical);
  REQUIRE(identical);
  std::vector<float> prob(rows);
  std::vector<int32_t> rank(rows), top1(rows);
  ::lens_stats(prob.data(), rank.data(), top1.data(), logits.data(), gold.data(), rows, V);
  for (int r = 0; r < rows; r++) {
    INFO("row " << r);
    CHECK(got[r] == Approx(prob[r]).epsilon(1e-5));
    CHECK((int)got[rows + r] == rank[r]);
    CHECK((int)got[2 * rows + r] == top1[r]);
  }
  CHECK((int)got[rows + 1] == 0);       // 300 beats 700 on the tie
  CHECK((int)got[2 * rows + 1] == 300);
  CHECK((int)got[rows + 2] == 0);
  CHECK((int)got[rows + 3] == 0);
  CHECK((int)got[rows + 4] == 17);
  CHECK((int)got[rows + 5] == V - 1);
  CHECK(got[3] == Approx(1.0 / V).epsilon(1e-5));
}

// ------------------------------------------------------------------------------------------------
TEST_CASE("cuda memory conditioning: the slot before the keys and values and the embedding rows, forward and backward") {
  // qkv rows of H + 2KV heads with a wider stride than packed; slots with a stride of L * KVD.
  const int rows = 3, T = 7, H = 4, KV = 2, D = 5, KVD = KV * D, L = 2, C = 13;
  const int64_t ld = (H + 2 * KV) * D + 3, k_off = (int64_t)H * D, stride = (int64_t)L * KVD;
  const size_t nkv = (size_t)rows * (T + 1) * 2 * KVD;
  const std::vector<float> qkv = random_bf16_values((size_t)rows * T * ld, 91);
  const std::vector<float> slot = random_bf16_values((size_t)rows * stride, 92);
  const std::vector<float> dkv = random_bf16_values(nkv, 93);
  const std::vector<float> rows_src = random_bf16_values((size_t)rows * C, 94);
  const std::vector<float> demb = random_bf16_values((size_t)rows * T * C, 95);
  std::vector<int> row_of(rows * T);
  for (int i = 0; i < rows * T; i++) row_of[i] = (i * 5 + 1) % rows;
  bool identical = false;
  const std::vector<float> got = run_all_schedules([&] {
    DeviceBuffer<bf16> q(to_bf16(qkv)), kv(nkv), dq(to_bf16(qkv)), dk(to_bf16(dkv)), emb((size_t)rows * T * C),
        de(to_bf16(demb));
    DeviceBuffer<float> sl(slot), dsl((size_t)rows * stride), rs(rows_src), drs((size_t)rows * C);
    DeviceBuffer<int> ro(row_of);
    condition_kv_forward(kv, q, sl, rows, T, KVD, stride, ld, k_off, 0);
    condition_kv_backward(dq, dsl, dk, rows, T, KVD, stride, ld, k_off, 0);
    condition_embed_forward(emb, rs, ro, rows * T, C, 0);
    condition_embed_backward(drs, de, rows, T, C, 0);
    std::vector<float> r = to_f32(kv.download());
    append(r, to_f32(dq.download()));
    append(r, dsl.download());
    append(r, to_f32(emb.download()));
    append(r, drs.download());
    return r;
  }, &identical);
  REQUIRE(identical);
  std::vector<float> kv_ref(nkv), dq_ref = qkv, dsl_ref((size_t)rows * stride, 0.0f), emb_ref((size_t)rows * T * C),
                                   drs_ref((size_t)rows * C);
  ::condition_kv_forward(kv_ref.data(), qkv.data(), slot.data(), rows, T, KVD, stride, ld, k_off);
  ::condition_kv_backward(dq_ref.data(), dsl_ref.data(), dkv.data(), rows, T, KVD, stride, ld, k_off);
  ::condition_embed_forward(emb_ref.data(), rows_src.data(), row_of.data(), rows * T, C);
  ::condition_embed_backward(drs_ref.data(), demb.data(), rows, T, C);
  std::vector<float> want = kv_ref;
  for (const auto* v : {&dq_ref, &dsl_ref, &emb_ref, &drs_ref}) append(want, *v);
  REQUIRE(got.size() == want.size());
  REQUIRE(nmse(got, want) == EXACT);
  REQUIRE(std::any_of(want.begin(), want.end(), [](float x) { return x != 0.0f; }));
}

// ------------------------------------------------------------------------------------------------
// Must stay the last test case of this file (Catch2 runs them in declaration order).
TEST_CASE("cuda coverage: every __global__ kernel in kernels/cuda/ was launched by a test above") {
  const std::regex kernel_decl(R"(__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\()");
  std::set<std::string> declared;
  for (const auto& entry : std::filesystem::directory_iterator("kernels/cuda")) {
    if (entry.path().extension() != ".cuh") continue;
    std::ifstream f(entry.path());
    std::stringstream text;
    text << f.rdbuf();
    const std::string s = text.str();
    for (auto it = std::sregex_iterator(s.begin(), s.end(), kernel_decl); it != std::sregex_iterator(); ++it)
      declared.insert((*it)[1]);
  }
  REQUIRE(declared.size() >= 25);
  std::vector<std::string> missing;
  for (const std::string& k : declared)
    if (!launched_kernels().count(k)) missing.push_back(k);
  INFO("kernels never launched: " << Catch::Detail::stringify(missing));
  REQUIRE(missing.empty());
}
