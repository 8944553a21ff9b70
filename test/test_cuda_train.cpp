// Whole-model checks of the CUDA backend on the emulator against the CPU backend: the same
// LlamaModel orchestration (model/llama.h) instantiated over CudaBackend (bf16 activations,
// cuBLASLt matmuls, the kernels of kernels/cuda/) and over CpuBackend (fp32), from the same
// weights and batches.
//   - three training steps (forward, backward, clipping, AdamW) agree: losses within 2e-2
//     relative, every gradient tensor and the parameter updates close in normalized MSE;
//   - batched greedy decoding with the CUDA KV cache gives the CPU path's tokens on a tiny model
//     whose logit margins are well above bf16 noise.
#include <catch2/catch.hpp>
#include <cstring>

#include "test/test_cuda_common.h"  // first: wraps LAUNCH

#include "kernels/cuda_backend.cu"  // the backend itself, compiled for the emulator
#include "eval/layer_lens.h"
#include "larimar/encoder.h"
#if defined(CUDA_EMULATION)
#include "larimar/larimar_model.h"
#endif
#include "model/decode.h"
#include "model/llama.h"
#include "model/weights.h"

static LlamaConfig tiny_config(int vocab, float init_range) {
  LlamaConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 128;
  c.intermediate_size = 200;  // not a multiple of any block size
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 1;  // GQA 4
  c.head_dim = 64;
  c.rms_norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.max_position_embeddings = 64;
  c.initializer_range = init_range;
  return c;
}

// Two rows of T tokens; row 0 holds two packed examples, row 1 one example and padding.
// Loss on the second half of each example (its "answer").
static Batch packed_batch(int T, int vocab, uint64_t seed) {
  Batch b;
  b.rows = 2;
  b.T = T;
  std::mt19937 rng(seed);
  const std::vector<std::vector<int>> examples = {{0, 14}, {14, T}, {0, T - 5}};  // [begin, end) per row
  const std::vector<int> row_of = {0, 0, 1};
  b.tokens.assign(2 * T, 0);
  b.targets.assign(2 * T, -1);
  b.positions.assign(2 * T, 0);
  b.seg_start.resize(2 * T);
  for (int r = 0; r < 2; r++)
    for (int t = 0; t < T; t++) b.seg_start[r * T + t] = t;  // padding: attends to itself
  for (size_t e = 0; e < examples.size(); e++) {
    const int r = row_of[e], begin = examples[e][0], end = examples[e][1];
    for (int t = begin; t < end; t++) {
      b.tokens[r * T + t] = (int)(rng() % vocab);
      b.positions[r * T + t] = t - begin;
      b.seg_start[r * T + t] = begin;
    }
    for (int t = begin + (end - begin) / 2; t < end - 1; t++) {
      b.targets[r * T + t] = b.tokens[r * T + t + 1];
      b.num_target_tokens++;
    }
    b.num_examples++;
  }
  return b;
}

// A tiny model (random init `seed`) that has memorized four sequences of L tokens on the CPU
// backend, so that greedy decoding of their prefixes has clear top-1 / top-2 logit gaps. (A large
// random init does not do: it makes the network chaotic, where rounding the weights to bf16 alone
// moves the logits by ~10% of their RMS.)
// Every gradient tensor of the CUDA model against the CPU model's: bf16 activations through the
// layers, a few % relative RMS error at most.
static void require_gradients_agree(const LlamaModel<CpuBackend>& cpu, const LlamaModel<CudaBackend>& gpu) {
  std::vector<float> g_cpu(cpu.layout.total), g_gpu(cpu.layout.total);
  CpuBackend::download(g_cpu.data(), cpu.grads, g_cpu.size());
  CudaBackend::download(g_gpu.data(), gpu.grads, g_gpu.size());
  for (const ParamTensor& t : cpu.layout.tensors) {
    INFO("gradient of " << t.name);
    const std::vector<float> a(g_gpu.begin() + t.offset, g_gpu.begin() + t.offset + t.numel);
    const std::vector<float> r(g_cpu.begin() + t.offset, g_cpu.begin() + t.offset + t.numel);
    REQUIRE(all_finite(a));
    REQUIRE(nmse(a, r) < 1e-3);
  }
}

static std::vector<float> memorized_params(const LlamaConfig& cfg, std::vector<std::vector<int32_t>>& sequences,
                                           int L, uint64_t seed) {
  const ParamLayout layout = make_param_layout(cfg);
  std::vector<float> params(layout.total);
  init_weights(cfg, layout, params.data(), seed);
  std::mt19937 rng(12);
  sequences.assign(4, std::vector<int32_t>(L));
  for (int i = 0; i < 4; i++)
    for (int t = 0; t < L; t++) sequences[i][t] = t == 0 ? 10 + i : (int32_t)(rng() % cfg.vocab_size);
  LlamaModel<CpuBackend> trainer(cfg, 4, L);
  trainer.load_params(params.data());
  Batch b;
  b.rows = 4;
  b.T = L;
  for (int i = 0; i < 4; i++)
    for (int t = 0; t < L; t++) {
      b.tokens.push_back(sequences[i][t]);
      b.targets.push_back(t + 1 < L ? sequences[i][t + 1] : -1);
      b.positions.push_back(t);
      b.seg_start.push_back(0);
    }
  b.num_target_tokens = 4 * (L - 1);
  b.num_examples = 4;
  AdamWConfig opt;
  opt.lr = 1e-2f;
  for (int step = 0; step < 60; step++) {
    trainer.zero_grad();
    trainer.forward_backward(b, b.num_target_tokens);
    trainer.optimizer_step(opt);
  }
  CpuBackend::download(params.data(), trainer.params, params.size());
  return params;
}

// The same random weights (init_weights with `seed`) loaded into two models of one config; returned.
template <class ModelA, class ModelB>
static std::vector<float> load_same_weights(ModelA& a, ModelB& b, uint64_t seed) {
  std::vector<float> p(a.layout.total);
  init_weights(a.cfg, a.layout, p.data(), seed);
  a.load_params(p.data());
  b.load_params(p.data());
  return p;
}

// The per-GPU plan of ZeRO stage `zero` over 2 ranks: rank 0's, the largest slice (what --dry-run
// prints and train_llama checks against the free memory).
static CudaMemoryPlan zero_plan(const LlamaConfig& cfg, int rows, int T, bool bf16_state, int zero) {
  const ParamLayout layout = make_param_layout(cfg);
  const TrainMemory mem =
      zero_train_memory(TrainMemory{}, layout, (size_t)cfg.vocab_size * cfg.hidden_size, cfg.hidden_size, 2, zero);
  return cuda_memory_plan(cfg, layout, rows, T, bf16_state, ModelUse::train, 0, 0, mem);
}

TEST_CASE("cuda backend: three training steps agree with the cpu backend") {
  // untied; then tied embeddings with Qwen2-style q/k/v biases (the bias epilogue and its gradient)
  for (bool tied_with_bias : {false, true}) {
    INFO("tied embeddings + qkv bias: " << tied_with_bias);
    LlamaConfig cfg = tiny_config(300, 0.05f);
    cfg.tie_word_embeddings = tied_with_bias;
    cfg.attention_bias = tied_with_bias;
    const int T = 37;
    LlamaModel<CpuBackend> cpu(cfg, 2, T);
    LlamaModel<CudaBackend> gpu(cfg, 2, T);
    const std::vector<float> p0 = load_same_weights(cpu, gpu, 7);

    AdamWConfig opt;
    opt.lr = 1e-3f;
    opt.weight_decay = 0.1f;
    opt.max_grad_norm = 1.0f;
    for (int step = 1; step <= 3; step++) {
      INFO("step " << step);
      const Batch b = packed_batch(T, cfg.vocab_size, 100 + step);
      cpu.zero_grad();
      gpu.zero_grad();
      emu::set_schedule(step == 2 ? "reverse" : step == 3 ? "random:5" : "forward");
      const double loss_cpu = cpu.forward_backward(b, b.num_target_tokens);
      const double loss_gpu = gpu.forward_backward(b, b.num_target_tokens);
      emu::set_schedule("forward");
      REQUIRE(std::isfinite(loss_gpu));
      REQUIRE(std::abs(loss_gpu - loss_cpu) <= 2e-2 * std::abs(loss_cpu));
      require_gradients_agree(cpu, gpu);
      const double norm_cpu = cpu.optimizer_step(opt), norm_gpu = gpu.optimizer_step(opt);
      REQUIRE(std::abs(norm_gpu - norm_cpu) <= 2e-2 * norm_cpu);
    }
    // Parameters after three steps: the updates (p3 - p0) agree. Adam normalizes each update to
    // about lr, so an element whose gradient is tiny can move differently; in aggregate they agree.
    std::vector<float> p_cpu(p0.size()), p_gpu(p0.size());
    CpuBackend::download(p_cpu.data(), cpu.params, p0.size());
    CudaBackend::download(p_gpu.data(), gpu.params, p0.size());
    std::vector<float> du_cpu(p0.size()), du_gpu(p0.size());
    double max_diff = 0.0;
    for (size_t i = 0; i < p0.size(); i++) {
      du_cpu[i] = p_cpu[i] - p0[i];
      du_gpu[i] = p_gpu[i] - p0[i];
      max_diff = std::max(max_diff, (double)std::abs(p_cpu[i] - p_gpu[i]));
    }
    REQUIRE(nmse(du_gpu, du_cpu) < 0.05);
    REQUIRE(max_diff <= 6 * opt.lr);  // no element further apart than 3 steps of opposite updates

    // After the steps the bf16 working copy is the rounded master: a forward from it gives the
    // same loss as the CPU backend from the CPU's parameters, within bf16 tolerance.
    const Batch b = packed_batch(T, cfg.vocab_size, 200);
    cpu.zero_grad();
    gpu.zero_grad();
    const double loss_cpu = cpu.forward_backward(b, b.num_target_tokens);
    const double loss_gpu = gpu.forward_backward(b, b.num_target_tokens);
    REQUIRE(std::abs(loss_gpu - loss_cpu) <= 2e-2 * std::abs(loss_cpu));
  }
  CudaBackend::release();
}

TEST_CASE("cuda greedy decoding with the KV cache gives the cpu path's tokens") {
  // A tiny model first memorizes four sequences (memorized_params); the logit gaps are checked
  // below against the measured CUDA-vs-CPU logit difference, otherwise the token comparison would
  // be meaningless.
  const LlamaConfig cfg = tiny_config(200, 0.05f);
  std::vector<std::vector<int32_t>> sequences;
  const std::vector<float> params = memorized_params(cfg, sequences, 24, 1);
  std::vector<std::vector<int32_t>> prompts;
  const int prompt_len[4] = {3, 9, 1, 14};  // ragged prompt lengths in one batch
  for (int i = 0; i < 4; i++) prompts.emplace_back(sequences[i].begin(), sequences[i].begin() + prompt_len[i]);
  const int max_new = 8;
  const std::vector<int32_t> stop = {7};

  GreedyOptions opt;
  opt.max_new_tokens = max_new;
  opt.batch_size = 4;
  opt.stop_token_ids = stop;
  LlamaModel<CpuBackend> cpu_model(cfg, 4, 32, ModelUse::inference);
  cpu_model.load_params(params.data());
  const auto cpu_tokens = greedy_generate(cpu_model, prompts, opt);

  // The margins: top-1 minus top-2 logit at every generated position, on the CPU (full
  // recomputation through the training forward), and the largest CUDA-vs-CPU logit difference at
  // the same positions (LlamaModel<CudaBackend>, emulated).
  LlamaModel<CpuBackend> cpu(cfg, 1, 32);
  cpu.load_params(params.data());
  LlamaModel<CudaBackend> gpu(cfg, 1, 32);
  gpu.load_params(params.data());
  double min_margin = 1e30, max_logit_error = 0.0;
  for (size_t i = 0; i < prompts.size(); i++) {
    std::vector<int32_t> seq = prompts[i];
    seq.insert(seq.end(), cpu_tokens[i].begin(), cpu_tokens[i].end());
    Batch b;
    b.rows = 1;
    b.T = (int)seq.size();
    b.tokens = seq;
    b.targets.assign(seq.size(), -1);
    for (int t = 0; t < b.T; t++) {
      b.positions.push_back(t);
      b.seg_start.push_back(0);
    }
    std::vector<float> logits((size_t)b.T * cfg.vocab_size), logits_gpu(logits.size());
    cpu.forward_logits(b, logits.data());
    gpu.forward_logits(b, logits_gpu.data());
    for (size_t j = prompts[i].size() - 1; j + 1 < seq.size(); j++) {
      for (int v = 0; v < cfg.vocab_size; v++)
        max_logit_error = std::max(max_logit_error, (double)std::abs(logits[j * cfg.vocab_size + v] -
                                                                     logits_gpu[j * cfg.vocab_size + v]));
      std::vector<float> row(logits.begin() + j * cfg.vocab_size, logits.begin() + (j + 1) * cfg.vocab_size);
      std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
      min_margin = std::min(min_margin, (double)(row[0] - row[1]));
    }
  }
  INFO("smallest top-1/top-2 logit margin " << min_margin << ", largest cuda-cpu logit difference "
                                             << max_logit_error);
  // the comparison below is meaningful only when every margin exceeds twice the logit error
  REQUIRE(min_margin > 2 * max_logit_error);

  // The same greedy loop (model/decode.h) over LlamaModel<CudaBackend>'s KV-cache mode; a plan of
  // 4 rows of 8 tokens makes the ragged prefill run in several passes.
  LlamaModel<CudaBackend> decoder(cfg, 4, 8, ModelUse::inference);
  decoder.load_params(params.data());
  std::vector<std::vector<int32_t>> gpu_tokens;
  for (const char* schedule : {"forward", "random:3"}) {
    emu::set_schedule(schedule);
    auto t = greedy_generate(decoder, prompts, opt);
    if (!gpu_tokens.empty()) REQUIRE(t == gpu_tokens);  // same tokens under another fiber order
    gpu_tokens = t;
  }
  emu::set_schedule("forward");
  REQUIRE(gpu_tokens == cpu_tokens);
}

TEST_CASE("cuda memory conditioning: a training step and the prefill and a decoding step agree with the cpu backend") {
  const LlamaConfig cfg = tiny_config(300, 0.05f);
  const int T = 20, L = cfg.num_hidden_layers, KVD = cfg.num_key_value_heads * cfg.head_dim, C = cfg.hidden_size;
  LlamaModel<CpuBackend> cpu(cfg, 2, T);
  LlamaModel<CudaBackend> gpu(cfg, 2, T);
  load_same_weights(cpu, gpu, 3);
  cpu.plan_condition();
  gpu.plan_condition();
  const std::vector<float> slot = random_bf16_values((size_t)2 * L * KVD, 31, 0.5f),
                           embed = random_bf16_values((size_t)2 * C, 32, 0.1f);
  float* slot_dev = CudaBackend::alloc<float>(slot.size());
  float* embed_dev = CudaBackend::alloc<float>(embed.size());
  CudaBackend::upload(slot_dev, slot.data(), slot.size());
  CudaBackend::upload(embed_dev, embed.data(), embed.size());
  cpu.condition = {slot.data(), embed.data(), 2};
  gpu.condition = {slot_dev, embed_dev, 2};

  // Row 0: one example of T tokens; row 1: one of T - 6 tokens, then padding.
  Batch b;
  b.rows = 2;
  b.T = T;
  std::mt19937 rng(4);
  for (int r = 0; r < 2; r++)
    for (int t = 0; t < T; t++) {
      const bool real = r == 0 || t < T - 6;
      b.tokens.push_back(real ? (int)(rng() % cfg.vocab_size) : 0);
      b.positions.push_back(real ? t : 0);
      b.seg_start.push_back(real ? 0 : t);
    }
  for (int i = 0; i < 2 * T; i++) {
    const bool has_next = i % T + 1 < T && b.seg_start[i + 1] == 0;
    b.targets.push_back(i % T >= 4 && has_next ? b.tokens[i + 1] : -1);
    b.num_target_tokens += b.targets.back() >= 0;
  }
  cpu.zero_grad();
  gpu.zero_grad();
  const double loss_cpu = cpu.forward_backward(b, b.num_target_tokens);
  const double loss_gpu = gpu.forward_backward(b, b.num_target_tokens);
  REQUIRE(std::abs(loss_gpu - loss_cpu) <= 2e-2 * std::abs(loss_cpu));
  require_gradients_agree(cpu, gpu);
  std::vector<float> ds_gpu(slot.size()), de_gpu(embed.size());
  CudaBackend::download(ds_gpu.data(), gpu.d_slot, ds_gpu.size());
  CudaBackend::download(de_gpu.data(), gpu.d_embed, de_gpu.size());
  REQUIRE(nmse(ds_gpu, std::vector<float>(cpu.d_slot, cpu.d_slot + slot.size())) < 1e-3);
  REQUIRE(nmse(de_gpu, std::vector<float>(cpu.d_embed, cpu.d_embed + embed.size())) < 1e-3);

  // Prefill (the slot goes to each sequence's cache at position 0) and one decoding step.
  const std::vector<std::vector<int32_t>> prompts = {{5, 9, 11, 2, 7}, {3, 8}};
  cpu.kv_reserve(2, 12);
  gpu.kv_reserve(2, 12);
  cpu.kv_prefill(prompts, 0, 2);
  gpu.kv_prefill(prompts, 0, 2);
  REQUIRE(cpu.kv.length == std::vector<int32_t>{6, 3});
  REQUIRE(gpu.kv.length == cpu.kv.length);
  std::vector<float> lc((size_t)2 * cfg.vocab_size), lg(lc.size());
  CpuBackend::download(lc.data(), cpu.kv_logits, lc.size());
  CudaBackend::download(lg.data(), gpu.kv_logits, lg.size());
  REQUIRE(nmse(lg, lc) < 1e-3);
  cpu.kv_decode({4, 6}, {0, 1});
  gpu.kv_decode({4, 6}, {0, 1});
  CpuBackend::download(lc.data(), cpu.kv_logits, lc.size());
  CudaBackend::download(lg.data(), gpu.kv_logits, lg.size());
  REQUIRE(nmse(lg, lc) < 1e-3);
  CudaBackend::free(slot_dev);
  CudaBackend::free(embed_dev);
  CudaBackend::release();
}

TEST_CASE("cuda Larimar encoder: bidirectional codes and every gradient agree with the cpu backend") {
  const larimar::EncoderConfig ec{tiny_config(300, 0.05f), 16};
  const int C = ec.llama.hidden_size;
  larimar::Encoder<CpuBackend> cpu(ec, 3, 20);
  larimar::Encoder<CudaBackend> gpu(ec, 3, 20);
  const std::vector<float> p0 = load_same_weights(cpu.model, gpu.model, 11);
  cpu.proj_w = gpu.proj_w = random_bf16_values((size_t)16 * C, 12, 0.3f);
  cpu.proj_b = gpu.proj_b = random_bf16_values(16, 13, 0.1f);
  std::mt19937 rng(14);
  std::vector<std::vector<int32_t>> texts;
  for (int n : {20, 7, 13}) {
    texts.emplace_back();
    for (int t = 0; t < n; t++) texts.back().push_back((int32_t)(rng() % ec.llama.vocab_size));
  }
  cpu.zero_grad();
  gpu.zero_grad();
  std::vector<float> zc, zg;
  cpu.encode(texts, zc);
  gpu.encode(texts, zg);
  REQUIRE(nmse(zg, zc) < 1e-3);
  const std::vector<float> dz = random_bf16_values(zc.size(), 15);
  cpu.backward(dz);
  gpu.backward(dz);
  std::vector<float> g_cpu(p0.size()), g_gpu(p0.size());
  CpuBackend::download(g_cpu.data(), cpu.model.grads, g_cpu.size());
  CudaBackend::download(g_gpu.data(), gpu.model.grads, g_gpu.size());
  for (const ParamTensor& t : cpu.model.layout.tensors) {
    INFO("gradient of " << t.name);
    REQUIRE(nmse(std::vector<float>(g_gpu.begin() + t.offset, g_gpu.begin() + t.offset + t.numel),
                 std::vector<float>(g_cpu.begin() + t.offset, g_cpu.begin() + t.offset + t.numel)) < 1e-3);
  }
  REQUIRE(nmse(gpu.d_proj_w, cpu.d_proj_w) < 1e-3);
  REQUIRE(nmse(gpu.d_proj_b, cpu.d_proj_b) < 1e-3);
  CudaBackend::release();
}

#if defined(CUDA_EMULATION)  // the memory math's Eigen is not on the nvcc test build's include path
// A Larimar episode on the CUDA backend (encoder and decoder rebound in turn, the memory math on
// the host) against the CPU backend: the four-term loss and the gradient of every parameter.
TEST_CASE("cuda Larimar episode: the loss and every gradient agree with the cpu backend") {
  const LlamaConfig dc = tiny_config(300, 0.05f);
  const larimar::EncoderConfig ec{tiny_config(300, 0.05f), 16};
  const int K = 8, N = 3, Cz = ec.code_size;
  larimar::LarimarModel<CpuBackend> cpu(ec, dc, K, N, 12);
  larimar::LarimarModel<CudaBackend> gpu(ec, dc, K, N, 12);
  std::vector<float> pe(cpu.enc.model.layout.total), pd(cpu.dec.layout.total);
  init_weights(ec.llama, cpu.enc.model.layout, pe.data(), 21);
  init_weights(dc, cpu.dec.layout, pd.data(), 22);
  cpu.enc.model.load_params(pe.data());
  gpu.enc.model.load_params(pe.data());
  cpu.dec.load_params(pd.data());
  gpu.dec.load_params(pd.data());
  cpu.enc.proj_w = gpu.enc.proj_w = random_bf16_values((size_t)Cz * dc.hidden_size, 23, 0.3f);
  cpu.enc.proj_b = gpu.enc.proj_b = random_bf16_values(Cz, 24, 0.1f);
  cpu.M0 = gpu.M0 = random_bf16_values((size_t)K * Cz, 25);
  cpu.lv_w = gpu.lv_w = random_bf16_values(cpu.lv_w.size(), 26, 0.01f);
  cpu.lv_b = gpu.lv_b = random_bf16_values(K, 27, 0.1f);
  cpu.kv_w = gpu.kv_w = random_bf16_values(cpu.kv_w.size(), 28, 0.3f);
  cpu.emb_w = gpu.emb_w = random_bf16_values(cpu.emb_w.size(), 29, 0.1f);
  std::mt19937 rng(30);
  std::vector<std::vector<int32_t>> texts;
  for (int n : {12, 7, 9}) {
    texts.emplace_back();
    for (int t = 0; t < n; t++) texts.back().push_back((int32_t)(rng() % dc.vocab_size));
  }
  larimar::Mat eps(N, K);
  const std::vector<float> e = random_bf16_values((size_t)N * K, 31);
  for (int i = 0; i < N * K; i++) eps.data()[i] = e[i];
  cpu.zero_grad();
  gpu.zero_grad();
  const larimar::EpisodeLoss lc = cpu.episode(texts, 0.5, eps), lg = gpu.episode(texts, 0.5, eps);
  for (auto [name, g, c] : {std::tuple{"ce_read", lg.ce_read, lc.ce_read}, {"ce_code", lg.ce_code, lc.ce_code},
                            {"ce_zero", lg.ce_zero, lc.ce_zero}, {"kl", lg.kl, lc.kl}}) {
    INFO(name << ": cuda " << g << ", cpu " << c);
    CHECK(std::fabs(g - c) <= 1e-2 * std::fabs(c));
  }
  std::vector<float> gc(pe.size()), gg(pe.size());
  CpuBackend::download(gc.data(), cpu.enc.model.grads, gc.size());
  CudaBackend::download(gg.data(), gpu.enc.model.grads, gg.size());
  for (const ParamTensor& t : cpu.enc.model.layout.tensors) {
    INFO("encoder gradient of " << t.name);
    CHECK(nmse(std::vector<float>(gg.begin() + t.offset, gg.begin() + t.offset + t.numel),
               std::vector<float>(gc.begin() + t.offset, gc.begin() + t.offset + t.numel)) < 1e-3);
  }
  gc.resize(pd.size());
  gg.resize(pd.size());
  CpuBackend::download(gc.data(), cpu.dec.grads, gc.size());
  CudaBackend::download(gg.data(), gpu.dec.grads, gg.size());
  for (const ParamTensor& t : cpu.dec.layout.tensors) {
    INFO("decoder gradient of " << t.name);
    CHECK(nmse(std::vector<float>(gg.begin() + t.offset, gg.begin() + t.offset + t.numel),
               std::vector<float>(gc.begin() + t.offset, gc.begin() + t.offset + t.numel)) < 1e-3);
  }
  for (auto [name, g, c] : {std::tuple{"proj.weight", &gpu.enc.d_proj_w, &cpu.enc.d_proj_w},
                            {"proj.bias", &gpu.enc.d_proj_b, &cpu.enc.d_proj_b}, {"M0", &gpu.d_M0, &cpu.d_M0},
                            {"logvar.weight", &gpu.d_lv_w, &cpu.d_lv_w}, {"logvar.bias", &gpu.d_lv_b, &cpu.d_lv_b},
                            {"slot.weight", &gpu.d_kv_w, &cpu.d_kv_w}, {"embed.weight", &gpu.d_emb_w, &cpu.d_emb_w}}) {
    INFO("gradient of " << name << ": nmse " << nmse(*g, *c));
    CHECK(nmse(*g, *c) < 1e-3);
  }
  CudaBackend::release();
}
#endif

// --optimizer-state bf16: the same training on the CUDA backend with bf16 AdamW moments (stochastic
// rounding) tracks fp32 moments; each model reads its own bf16 working copy.
TEST_CASE("cuda backend: bf16 AdamW moments track fp32 moments, and round-trip through the host") {
  LlamaConfig cfg = tiny_config(300, 0.05f);
  const int T = 37, steps = 5;
  LlamaModel<CudaBackend> f32(cfg, 2, T), b16(cfg, 2, T, MomentDtype::bf16);
  REQUIRE(b16.adam_m == nullptr);
  REQUIRE(b16.adam_m16 != nullptr);
  const std::vector<float> p0 = load_same_weights(f32, b16, 7);
  AdamWConfig opt;
  opt.lr = 1e-3f;
  opt.weight_decay = 0.1f;
  for (int step = 1; step <= steps; step++) {
    INFO("step " << step);
    const Batch b = packed_batch(T, cfg.vocab_size, 300 + step);
    double loss[2], norm[2];
    int k = 0;
    for (LlamaModel<CudaBackend>* m : {&f32, &b16}) {
      m->zero_grad();
      loss[k] = m->forward_backward(b, b.num_target_tokens);
      norm[k] = m->optimizer_step(opt);
      k++;
    }
    // Same weights at step 1; afterwards they differ by ~lr x the moments' relative bf16 error.
    REQUIRE(std::abs(loss[1] - loss[0]) <= 1e-3 * std::abs(loss[0]));
    REQUIRE(std::abs(norm[1] - norm[0]) <= 1e-2 * norm[0]);
  }
  const size_t n = p0.size();
  std::vector<float> m32(n), v32(n), m16(n), v16(n), pa(n), pb(n);
  f32.download_moments(m32.data(), v32.data());
  b16.download_moments(m16.data(), v16.data());
  CudaBackend::download(pa.data(), f32.params, n);
  CudaBackend::download(pb.data(), b16.params, n);
  REQUIRE(all_finite(m16));
  REQUIRE(all_finite(v16));
  double sum_sq = 0.0;
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    std::memcpy(&u, &m16[i], 4);
    REQUIRE((u & 0xffffu) == 0);  // a bf16 value
    sum_sq += (double)m32[i] * m32[i];
  }
  REQUIRE(sum_sq > 0.0);
  // Moments: bf16 keeps 8 mantissa bits (relative error <= 2^-8 per rounding, unbiased), far below
  // these bounds unless the moments are lost, misplaced or rounded with a bias that accumulates.
  INFO("nmse m " << nmse(m16, m32) << ", v " << nmse(v16, v32));
  REQUIRE(nmse(m16, m32) < 1e-3);
  REQUIRE(nmse(v16, v32) < 1e-3);
  std::vector<float> du32(n), du16(n);
  for (size_t i = 0; i < n; i++) {
    du32[i] = pa[i] - p0[i];
    du16[i] = pb[i] - p0[i];
  }
  INFO("nmse of the parameter updates " << nmse(du16, du32));
  REQUIRE(nmse(du16, du32) < 1e-3);

  // The host round trip (checkpoints) is exact for bf16 moments: fp32 -> bf16 rounds a bf16 value
  // to itself.
  LlamaModel<CudaBackend> again(cfg, 2, T, MomentDtype::bf16);
  again.upload_moments(m16.data(), v16.data());
  std::vector<float> m_back(n), v_back(n);
  again.download_moments(m_back.data(), v_back.data());
  REQUIRE(std::memcmp(m_back.data(), m16.data(), n * 4) == 0);
  REQUIRE(std::memcmp(v_back.data(), v16.data(), n * 4) == 0);
  // Stochastic rounding is a pure function of (step, index): the same step from the same state
  // gives bit-identical moments and weights (what makes a resumed run bit-exact).
  const Batch b = packed_batch(T, cfg.vocab_size, 999);
  std::vector<float> first_p(n), first_m(n), first_v(n);
  for (int rep = 0; rep < 2; rep++) {
    again.load_params(pb.data());
    again.upload_moments(m16.data(), v16.data());
    again.adam_step = steps;
    again.zero_grad();
    again.forward_backward(b, b.num_target_tokens);
    again.optimizer_step(opt);
    std::vector<float> p(n), m(n), v(n);
    CudaBackend::download(p.data(), again.params, n);
    again.download_moments(m.data(), v.data());
    if (rep == 0) {
      first_p = p, first_m = m, first_v = v;
    } else {
      REQUIRE(std::memcmp(p.data(), first_p.data(), n * 4) == 0);
      REQUIRE(std::memcmp(m.data(), first_m.data(), n * 4) == 0);
      REQUIRE(std::memcmp(v.data(), first_v.data(), n * 4) == 0);
    }
  }
  REQUIRE(std::memcmp(first_m.data(), m16.data(), n * 4) != 0);  // the step did move the moments
  CudaBackend::release();
}

TEST_CASE("cpu backend refuses bf16 AdamW moments with a clear error") {
  REQUIRE_THROWS_WITH((LlamaModel<CpuBackend>(tiny_config(300, 0.05f), 1, 8, MomentDtype::bf16)),
                      Catch::Contains("--optimizer-state bf16") && Catch::Contains("--device cuda"));
}

TEST_CASE("cuda memory plan: the model's allocations match the plan, and the figures add up") {
  const LlamaConfig cfg = tiny_config(300, 0.05f);
  const size_t before = CudaBackend::allocated_bytes();
  for (const std::pair<int, int>& shape : {std::pair<int, int>{2, 37}, std::pair<int, int>{3, 64}}) {
    const int rows = shape.first, T = shape.second;
    LlamaModel<CudaBackend> gpu(cfg, rows, T);
    const CudaMemoryPlan plan = cuda_memory_plan(cfg, gpu.layout, rows, T);
    REQUIRE(CudaBackend::allocated_bytes() - before == plan.model_bytes);
    REQUIRE(gpu.param_state_bytes + gpu.activation_bytes == plan.model_bytes);
    REQUIRE(plan.weights_fp32 == gpu.layout.total * 4);
    REQUIRE(plan.optimizer == 2 * plan.weights_fp32);
    REQUIRE(cuda_memory_plan(cfg, gpu.layout, rows, T, true).optimizer == plan.optimizer / 2);
    REQUIRE(plan.total() > plan.model_bytes);
  }
  {  // bf16 AdamW moments: the model allocates the planned half
    LlamaModel<CudaBackend> gpu(cfg, 2, 37, MomentDtype::bf16);
    const CudaMemoryPlan plan = cuda_memory_plan(cfg, gpu.layout, 2, 37, true);
    REQUIRE(CudaBackend::allocated_bytes() - before == plan.model_bytes);
    REQUIRE(plan.optimizer == 2 * gpu.layout.total * 2);
  }
  // ZeRO 1/2: a rank keeps the fp32 master weights and the AdamW moments of its slice only (plus the
  // bounded staging buffer of their gather), and the whole bf16 working copy
  for (int rank : {0, 1}) {
    INFO("rank " << rank << " of 2");
    const ParamLayout layout = make_param_layout(cfg);
    const ZeroShards shards(layout.total, 2);
    TrainMemory mem;
    mem.shard_begin = shards.begin(rank);
    mem.shard_count = shards.count(rank);
    LlamaModel<CudaBackend> gpu(cfg, 2, 37, MomentDtype::bf16, ModelUse::train, mem);
    const CudaMemoryPlan plan = cuda_memory_plan(cfg, layout, 2, 37, true, ModelUse::train, 0, 0, mem);
    REQUIRE(CudaBackend::allocated_bytes() - before == plan.model_bytes);
    REQUIRE(gpu.param_state_bytes + gpu.activation_bytes == plan.model_bytes);
    REQUIRE((gpu.opt_begin == shards.begin(rank) && gpu.opt_count == shards.count(rank) && gpu.sharded_master()));
    const size_t staging = std::min(layout.total, kShardStagingFloats);
    REQUIRE(plan.weights_fp32 == (shards.count(rank) + staging) * 4);
    REQUIRE(plan.optimizer == 2 * shards.count(rank) * 2);
    REQUIRE(plan.weights_bf16 == layout.total * 2);
    // the whole master buffer instead of the slice would be shards.count(1 - rank) floats more
    const CudaMemoryPlan whole = cuda_memory_plan(cfg, layout, 2, 37, true);
    REQUIRE(whole.model_bytes - plan.model_bytes + staging * 4 == shards.count(1 - rank) * (4 + 4));
    // rank 0 holds the largest slice: the stage-1 plan per GPU is its allocation
    if (rank == 0) REQUIRE(zero_plan(cfg, 2, 37, true, 1).model_bytes == plan.model_bytes);
  }
  // every --recompute mode, with and without the offloaded optimizer: the device allocations and
  // the pinned host state are the planned ones; attn and mlp keep less than none, block the least
  std::map<Recompute, size_t> kept;
  for (Recompute rc : {Recompute::none, Recompute::attn, Recompute::mlp, Recompute::block})
    for (bool offload : {false, true}) {
      INFO("--recompute " << recompute_name(rc) << " offload " << offload);
      const TrainMemory mem{rc, offload};
      LlamaModel<CudaBackend> gpu(cfg, 3, 64, MomentDtype::f32, ModelUse::train, mem);
      const CudaMemoryPlan plan = cuda_memory_plan(cfg, gpu.layout, 3, 64, false, ModelUse::train, 0, 0, mem);
      REQUIRE(CudaBackend::allocated_bytes() - before == plan.model_bytes);
      REQUIRE(gpu.param_state_bytes + gpu.activation_bytes == plan.model_bytes);
      REQUIRE(plan.host == (offload ? gpu.host_bytes + std::min<size_t>(gpu.layout.total, 1 << 24) * 2 * 2 : 0));
      REQUIRE((plan.weights_fp32 == 0 && plan.optimizer == 0) == offload);
      kept[rc] = plan.activations;
    }
  REQUIRE(kept[Recompute::attn] < kept[Recompute::none]);
  REQUIRE(kept[Recompute::mlp] < kept[Recompute::none]);
  REQUIRE(kept[Recompute::block] < std::min(kept[Recompute::attn], kept[Recompute::mlp]));
  REQUIRE(CudaBackend::allocated_bytes() == before);
}

TEST_CASE("cuda memory plan: inference and analysis plans, with the decoding KV cache, match the allocations") {
  const LlamaConfig cfg = tiny_config(300, 0.05f);
  const int rows = 2, T = 37, seqs = 3, len = 50;  // len > T: the RoPE tables grow too
  const size_t before = CudaBackend::allocated_bytes();
  std::map<ModelUse, CudaMemoryPlan> plans;
  for (ModelUse use : {ModelUse::train, ModelUse::inference, ModelUse::analysis}) {
    LlamaModel<CudaBackend> gpu(cfg, rows, T, use);
    const CudaMemoryPlan plan = cuda_memory_plan(cfg, gpu.layout, rows, T, false, use);
    REQUIRE(CudaBackend::allocated_bytes() - before == plan.model_bytes);
    REQUIRE(gpu.param_state_bytes + gpu.activation_bytes == plan.model_bytes);
    gpu.kv_reserve(seqs, len);
    const CudaMemoryPlan with_kv = cuda_memory_plan(cfg, gpu.layout, rows, T, false, use, seqs, len);
    REQUIRE(CudaBackend::allocated_bytes() - before == with_kv.model_bytes);
    REQUIRE(with_kv.kv_cache > 0);
    plans[use] = plan;
  }
  REQUIRE(CudaBackend::allocated_bytes() == before);
  const CudaMemoryPlan &train = plans[ModelUse::train], &infer = plans[ModelUse::inference],
                       &lens = plans[ModelUse::analysis];
  // No gradients or moments outside training; the analysis keeps L-1 more residual inputs and the
  // lens' normed rows ([N, C] bf16 each) than inference.
  REQUIRE((infer.grads == 0 && infer.optimizer == 0 && lens.grads == 0 && lens.optimizer == 0));
  const size_t NC2 = (size_t)rows * T * cfg.hidden_size * 2;
  REQUIRE(lens.model_bytes - infer.model_bytes == (size_t)cfg.num_hidden_layers * NC2);
  REQUIRE(train.model_bytes - lens.model_bytes > 3 * train.weights_fp32);
  const std::string table = format_cuda_memory_plan(lens);
  REQUIRE(table.find("residual stream of every layer") != std::string::npos);
  REQUIRE(table.find("gradients") == std::string::npos);
}

TEST_CASE("cuda backend: models with different weights alternate, each reading its own working copy") {
  const LlamaConfig cfg = tiny_config(300, 0.05f);
  const ParamLayout layout = make_param_layout(cfg);
  Batch b;
  b.rows = 1;
  b.T = 4;
  b.tokens = {1, 2, 3, 4};
  b.targets = {-1, -1, -1, -1};
  b.positions = {0, 1, 2, 3};
  b.seg_start = {0, 0, 0, 0};
  std::vector<float> pa(layout.total), pb(layout.total);
  init_weights(cfg, layout, pa.data(), 3);
  init_weights(cfg, layout, pb.data(), 4);
  const size_t n = (size_t)b.T * cfg.vocab_size;
  std::vector<float> alone_a(n), alone_b(n), la(n), lb(n);
  {
    LlamaModel<CudaBackend> m(cfg, 1, 8, ModelUse::inference);
    m.load_params(pa.data());
    m.forward_logits(b, alone_a.data());
    m.load_params(pb.data());
    m.forward_logits(b, alone_b.data());
  }
  REQUIRE(alone_a != alone_b);
  LlamaModel<CudaBackend> a(cfg, 1, 8, ModelUse::inference), c(cfg, 1, 8, ModelUse::inference);
  a.load_params(pa.data());
  c.load_params(pb.data());
  a.forward_logits(b, la.data());
  c.forward_logits(b, lb.data());
  REQUIRE(la == alone_a);
  REQUIRE(lb == alone_b);
  a.forward_logits(b, la.data());
  REQUIRE(la == alone_a);
  CudaBackend::release();
}

// analyze_layers --device cuda: the logit lens and every layer swap's greedy evaluation run in one
// LlamaModel<CudaBackend> planned with ModelUse::analysis; each swap rewrites device parameters,
// whose bf16 mirror must follow. Against the same analysis on the CPU backend.
TEST_CASE("cuda analysis: the logit lens and the layer-swap accuracies agree with the cpu backend") {
  const LlamaConfig cfg = tiny_config(200, 0.05f);
  const ParamLayout layout = make_param_layout(cfg);
  std::vector<std::vector<int32_t>> sequences;
  const std::vector<float> params = memorized_params(cfg, sequences, 24, 1);
  std::vector<float> reference(layout.total);  // another model's blocks
  init_weights(cfg, layout, reference.data(), 2);
  const Tokenizer tok = Tokenizer::from_json_file("test/fixtures/tokenizer/ours.json");
  std::vector<EvalItem> items(sequences.size());
  for (size_t i = 0; i < items.size(); i++) {
    items[i].prompt_ids.assign(sequences[i].begin(), sequences[i].begin() + 5 + 2 * i);
    items[i].answer_ids.assign(sequences[i].begin() + 5 + 2 * i, sequences[i].begin() + 9 + 2 * i);
  }
  GreedyOptions opt;
  opt.max_new_tokens = 4;
  opt.batch_size = 2;  // two decoding batches
  const AnalysisShape shape = analysis_shape(items, opt.batch_size, opt.max_new_tokens);
  LlamaModel<CpuBackend> cpu(cfg, shape.rows, shape.T, ModelUse::analysis);
  cpu.load_params(params.data());
  LlamaModel<CudaBackend> gpu(cfg, shape.rows, shape.T, ModelUse::analysis);
  gpu.load_params(params.data());

  // Lens: log-probabilities within the tolerance of test_analyze_layers (bf16 activations).
  const std::vector<FactLens> lc = run_logit_lens(cpu, items, shape.rows), lg = run_logit_lens(gpu, items, shape.rows);
  double worst = 0;
  int same_top1 = 0, n = 0;
  for (size_t i = 0; i < items.size(); i++)
    for (size_t k = 0; k < lc[i].at.size(); k++, n++) {
      worst = std::max(worst, std::abs(std::log(std::max<double>(lc[i].at[k].prob, 1e-30)) -
                                       std::log(std::max<double>(lg[i].at[k].prob, 1e-30))));
      same_top1 += (lc[i].at[k].rank == 0) == (lg[i].at[k].rank == 0);
    }
  INFO("lens cuda vs cpu: max |log prob diff| " << worst << ", top-1 flags equal on " << same_top1 << "/" << n);
  CHECK(worst <= 0.1);
  CHECK(same_top1 >= n * 9 / 10);
  for (size_t i = 0; i < items.size(); i++) CHECK(lg[i].l_star == lc[i].l_star);

  // Gold answers: the CPU's own greedy answers, so the unswapped model scores 1 on both backends.
  const EvalOutcome base = evaluate_factoids(cpu, tok, items, opt, MatchKind::exact);
  for (size_t i = 0; i < items.size(); i++) items[i].golds = {base.predictions[i]};
  REQUIRE(evaluate_factoids(cpu, tok, items, opt, MatchKind::exact).accuracy == 1.0);
  REQUIRE(evaluate_factoids(gpu, tok, items, opt, MatchKind::exact).output_ids == base.output_ids);

  const std::vector<SwapRow> rc = run_swap_profile(cpu, params.data(), reference.data(), tok, items, opt, MatchKind::exact);
  const std::vector<SwapRow> rg = run_swap_profile(gpu, params.data(), reference.data(), tok, items, opt, MatchKind::exact);
  REQUIRE(rc.size() == size_t(4 * cfg.num_hidden_layers));
  REQUIRE(rg.size() == rc.size());
  int64_t lost = 0;
  for (size_t k = 0; k < rc.size(); k++) {
    INFO(rc[k].part << " " << rc[k].layer);
    CHECK(rg[k].part == rc[k].part);
    CHECK(rg[k].correct == rc[k].correct);
    lost += int64_t(items.size()) - rc[k].correct;
  }
  REQUIRE(lost > 0);  // the swaps matter: a stale device copy of the weights would score 1 everywhere
  // The profile hands the device parameters back unswapped.
  std::vector<float> back(layout.total);
  CudaBackend::download(back.data(), gpu.params, layout.total);
  REQUIRE(std::memcmp(back.data(), params.data(), back.size() * 4) == 0);
  REQUIRE(evaluate_factoids(gpu, tok, items, opt, MatchKind::exact).output_ids == base.output_ids);
  CudaBackend::release();
}

// --recompute: the backward rebuilds what the forward did not keep with the same ops on the same
// inputs, so every gradient (and the loss) must be bit-identical to keeping everything; on the CUDA
// backend under several fiber orders, on the CPU backend, and with memory conditioning (whose
// per-layer keys|values the attention recompute rewrites).
template <class Backend>
static std::vector<float> recompute_gradients(const LlamaConfig& cfg, Recompute rc, const std::vector<float>& p0,
                                              const Batch& b, bool conditioned, double* loss) {
  LlamaModel<Backend> m(cfg, 2, b.T, MomentDtype::f32, ModelUse::train, TrainMemory{rc, false});
  m.load_params(p0.data());
  const int L = cfg.num_hidden_layers, KVD = cfg.num_key_value_heads * cfg.head_dim;
  const std::vector<float> slot = random_bf16_values((size_t)2 * L * KVD, 31, 0.5f);
  float* slot_dev = nullptr;
  if (conditioned) {
    m.plan_condition();
    slot_dev = Backend::template alloc<float>(slot.size());
    Backend::upload(slot_dev, slot.data(), slot.size());
    m.condition = {slot_dev, nullptr, 2};
  }
  std::vector<float> g(m.layout.total);
  m.zero_grad();
  *loss = m.forward_backward(b, b.num_target_tokens);
  m.forward_backward(b, b.num_target_tokens);  // twice: the recomputed buffers are reused across steps
  Backend::download(g.data(), m.grads, g.size());
  if (conditioned) {
    std::vector<float> d_slot(slot.size());
    Backend::download(d_slot.data(), m.d_slot, d_slot.size());
    g.insert(g.end(), d_slot.begin(), d_slot.end());
    Backend::free(slot_dev);
  }
  return g;
}

TEST_CASE("--recompute attn|mlp|block: bit-identical gradients to no recompute, cuda and cpu backends") {
  LlamaConfig cfg = tiny_config(300, 0.05f);
  cfg.num_hidden_layers = 3;  // a middle layer: shared buffers written by the layers on both sides
  const ParamLayout layout = make_param_layout(cfg);
  std::vector<float> p0(layout.total);
  init_weights(cfg, layout, p0.data(), 21);
  for (bool conditioned : {false, true}) {
    INFO("memory conditioning: " << conditioned);
    // conditioned rows hold one example each (the packed batch has two in row 0)
    Batch b = packed_batch(29, cfg.vocab_size, 77);
    if (conditioned)
      for (int i = 0; i < b.rows * b.T; i++)
        if (b.seg_start[i] != 0 && b.seg_start[i] != i % b.T) b.seg_start[i] = 0;
    double loss_ref = 0, loss_cpu_ref = 0;
    const std::vector<float> ref = recompute_gradients<CudaBackend>(cfg, Recompute::none, p0, b, conditioned, &loss_ref);
    const std::vector<float> cpu_ref =
        recompute_gradients<CpuBackend>(cfg, Recompute::none, p0, b, conditioned, &loss_cpu_ref);
    for (Recompute rc : {Recompute::attn, Recompute::mlp, Recompute::block}) {
      INFO("--recompute " << recompute_name(rc));
      // one fiber order per mode, none of them the reference's
      const char* order = rc == Recompute::attn ? "reverse" : rc == Recompute::mlp ? "random:9" : "random:4";
      INFO("fiber order " << order);
      emu::set_schedule(order);
      double loss = 0;
      const std::vector<float> g = recompute_gradients<CudaBackend>(cfg, rc, p0, b, conditioned, &loss);
      emu::set_schedule("forward");
      REQUIRE(loss == loss_ref);
      REQUIRE(std::memcmp(g.data(), ref.data(), g.size() * 4) == 0);
      double loss_cpu = 0;
      const std::vector<float> g_cpu = recompute_gradients<CpuBackend>(cfg, rc, p0, b, conditioned, &loss_cpu);
      REQUIRE(loss_cpu == loss_cpu_ref);
      REQUIRE(std::memcmp(g_cpu.data(), cpu_ref.data(), g_cpu.size() * 4) == 0);
    }
  }
  CudaBackend::release();
}

// --offload-optimizer: the fp32 master weights and moments in pinned host memory, AdamW by the CPU
// op. From the same state and gradients, one step gives the on-device kernel's moments within one
// rounding and weights within ulp(p) + 2^-20 lr: the two AdamW implementations evaluate the same
// formula in a different order (the CPU op folds the bias corrections into lr / bc1 and
// 1 / sqrt(bc2), the kernel divides m and v by them), a few fp32 roundings of an update whose size
// is at most a few lr. Then three training steps track the on-device run like the CPU backend does.
TEST_CASE("--offload-optimizer: host AdamW matches the on-device AdamW within its stated bound") {
  const LlamaConfig cfg = tiny_config(300, 0.05f);
  const int T = 37;
  LlamaModel<CudaBackend> dev(cfg, 2, T);
  LlamaModel<CudaBackend> off(cfg, 2, T, MomentDtype::f32, ModelUse::train, TrainMemory{Recompute::none, true});
  const size_t n = dev.layout.total;
  std::vector<float> p0(n);
  init_weights(cfg, dev.layout, p0.data(), 5);
  AdamWConfig opt;
  opt.lr = 1e-3f;
  opt.weight_decay = 0.1f;
  opt.max_grad_norm = 1.0f;
  // The two models alternate, each reading its own bf16 working copy; the offloaded update
  // (overlapped with the next forward by default) is finished before the weights are read.
  auto step = [&](LlamaModel<CudaBackend>& m, const Batch& b) {
    m.zero_grad();
    m.forward_backward(b, b.num_target_tokens);
    const double norm = m.optimizer_step(opt);
    m.finish_pending_update();
    return norm;
  };
  dev.load_params(p0.data());
  off.load_params(p0.data());
  REQUIRE(std::memcmp(off.params, p0.data(), n * 4) == 0);  // host memory, readable directly
  std::vector<float> pd(n), md(n), vd(n), po(n), mo(n), vo(n);
  for (int s = 1; s <= 3; s++) {
    INFO("step " << s);
    const Batch b = packed_batch(T, cfg.vocab_size, 200 + s);
    const double norm_dev = step(dev, b), norm_off = step(off, b);
    CudaBackend::download(pd.data(), dev.params, n);
    dev.download_moments(md.data(), vd.data());
    CudaBackend::download(po.data(), off.params, n);
    off.download_moments(mo.data(), vo.data());
    if (s == 1) {  // same weights, same batch: identical gradients, so the bound applies per element
      REQUIRE(norm_off == norm_dev);
      size_t beyond = 0;
      for (size_t i = 0; i < n; i++) {
        const float ulp_p = std::nextafter(std::abs(pd[i]), INFINITY) - std::abs(pd[i]);
        beyond += std::abs(po[i] - pd[i]) > ulp_p + std::ldexp(opt.lr, -20);
        beyond += std::abs(mo[i] - md[i]) > std::ldexp(std::abs(md[i]), -23);
        beyond += std::abs(vo[i] - vd[i]) > std::ldexp(std::abs(vd[i]), -23);
      }
      REQUIRE(beyond == 0);  // measured here: the largest weight difference is 0.94 of the bound
      REQUIRE(std::memcmp(po.data(), p0.data(), n * 4) != 0);  // the step moved the weights
    } else {  // the rounding differences feed back through the gradients: close, like cuda vs cpu
      REQUIRE(std::abs(norm_off - norm_dev) <= 1e-3 * norm_dev);
      double err = 0, ref = 0;
      for (size_t i = 0; i < n; i++) {
        err += double(po[i] - pd[i]) * (po[i] - pd[i]);
        ref += double(pd[i] - p0[i]) * (pd[i] - p0[i]);
      }
      REQUIRE(err <= 1e-6 * ref);
    }
  }
  // The offloaded state is host memory: the device holds the gradients and the bf16 copy only.
  REQUIRE(off.host_bytes == 3 * n * 4 + std::min<size_t>(n, 1 << 24) * 2 * 4);  // + the two pinned gradient chunks
  REQUIRE(off.param_state_bytes == n * 4 + n * 2);
  CudaBackend::release();
}

// --offload-optimizer overlapped with the next forward (model/offload.h): a worker updates the
// parameter groups while the next step's forward runs, which waits for each group before its first
// use. The run equals the serial update byte for byte (the same CPU op on the same values): every
// step's loss and gradient norm, a held-out loss read after the last update (the evaluation inside
// training: the working copy the uploads made), the master weights and the moments. Two
// micro-batches per step (the zeroing of the gradients by the transfer stream), an untied and a
// tied LM head (the embedding is then needed first and last). The lazy schedule starts each group
// only once the model asks for it, so any read that skips its wait sees the previous step's
// weights and changes the loss, every time.
TEST_CASE("--offload-optimizer: the update overlapped with the next forward equals the serial one byte for byte") {
  for (bool tied : {false, true}) {
    INFO("tied LM head " << tied);
    LlamaConfig cfg = tiny_config(300, 0.05f);
    cfg.tie_word_embeddings = tied;
    const int T = 37;
    const ParamLayout layout = make_param_layout(cfg);
    const size_t n = layout.total;
    std::vector<float> p0(n);
    init_weights(cfg, layout, p0.data(), 21);
    AdamWConfig opt;
    opt.lr = 1e-3f;
    opt.weight_decay = 0.1f;
    opt.max_grad_norm = 1.0f;
    struct Run {
      std::vector<double> losses;  // per step: loss, gradient norm; then the held-out loss
      std::vector<float> p, m, v;
    };
    auto train = [&](OffloadSchedule schedule) {
      Run r;
      {
        LlamaModel<CudaBackend> model(cfg, 2, T, MomentDtype::f32, ModelUse::train, TrainMemory{Recompute::none, true});
        model.offload_schedule = schedule;
        model.load_params(p0.data());
        for (int s = 1; s <= 3; s++) {
          if (s == 3) r.losses.push_back(model.forward_loss(packed_batch(T, cfg.vocab_size, 99)));
          model.zero_grad();
          double loss = 0;
          for (int micro = 0; micro < 2; micro++) {
            const Batch b = packed_batch(T, cfg.vocab_size, 10 * s + micro);
            loss += model.forward_backward(b, 2 * b.num_target_tokens);
          }
          r.losses.push_back(loss);
          r.losses.push_back(model.optimizer_step(opt));
        }
        // Still in flight after the last step: releasing the backend is refused, and the moments'
        // download waits for the update by itself.
        if (schedule != OffloadSchedule::serial)
          REQUIRE_THROWS_WITH(CudaBackend::release(), Catch::Contains("in flight"));
        r.m.resize(n);
        r.v.resize(n);
        model.download_moments(r.m.data(), r.v.data());
        r.p.assign(model.params, model.params + n);
      }
      CudaBackend::release();
      return r;
    };
    const Run serial = train(OffloadSchedule::serial);
    REQUIRE(std::memcmp(serial.p.data(), p0.data(), n * 4) != 0);  // the steps moved the weights
    for (OffloadSchedule schedule : {OffloadSchedule::lazy, OffloadSchedule::overlapped}) {
      if (tied && schedule == OffloadSchedule::overlapped) continue;  // the lazy schedule is the strict one
      INFO((schedule == OffloadSchedule::lazy ? "lazy" : "overlapped"));
      const Run r = train(schedule);
      REQUIRE(r.losses == serial.losses);
      REQUIRE(std::memcmp(r.p.data(), serial.p.data(), n * 4) == 0);
      REQUIRE(std::memcmp(r.m.data(), serial.m.data(), n * 4) == 0);
      REQUIRE(std::memcmp(r.v.data(), serial.v.data(), n * 4) == 0);
    }
  }
}

TEST_CASE("--offload-optimizer is refused by the cpu backend and with bf16 moments") {
  const LlamaConfig cfg = tiny_config(300, 0.05f);
  REQUIRE_THROWS_WITH((LlamaModel<CpuBackend>(cfg, 1, 8, MomentDtype::f32, ModelUse::train, TrainMemory{Recompute::none, true})),
                      Catch::Contains("--offload-optimizer") && Catch::Contains("--device cuda"));
  REQUIRE_THROWS_WITH((LlamaModel<CudaBackend>(cfg, 1, 8, MomentDtype::bf16, ModelUse::train, TrainMemory{Recompute::none, true})),
                      Catch::Contains("--optimizer-state bf16"));
}

// The LM head by vocabulary chunks (CudaBackend::lm_head_cross_entropy), which the model uses when
// the loss rows' logits exceed its logits buffer: forced here by shrinking the token chunk below
// the batch's 32 loss rows (chunks of 128, 128 and 44 of the 300 columns). The loss, the held-out
// loss and every gradient agree with the CPU backend as the token-chunked path does, and the loss
// with the token-chunked CUDA path within fp32 summation order.
TEST_CASE("cuda LM head by vocabulary chunks: loss and gradients agree with the cpu backend") {
  const LlamaConfig cfg = tiny_config(300, 0.05f);
  const int T = 37;
  LlamaModel<CpuBackend> cpu(cfg, 2, T);
  LlamaModel<CudaBackend> gpu(cfg, 2, T);
  load_same_weights(cpu, gpu, 11);
  const Batch b = packed_batch(T, cfg.vocab_size, 303);
  REQUIRE(b.num_target_tokens == 32);
  gpu.zero_grad();
  const double loss_tokens = gpu.forward_backward(b, b.num_target_tokens);
  gpu.head_chunk = 16;
  REQUIRE(gpu.vocab_chunk(32, true) == 128);
  gpu.zero_grad();
  cpu.zero_grad();
  const double loss_gpu = gpu.forward_backward(b, b.num_target_tokens);
  const double loss_cpu = cpu.forward_backward(b, b.num_target_tokens);
  REQUIRE(std::abs(loss_gpu - loss_tokens) <= 1e-5 * loss_tokens);
  REQUIRE(std::abs(loss_gpu - loss_cpu) <= 2e-2 * loss_cpu);
  require_gradients_agree(cpu, gpu);
  const double heldout_gpu = gpu.forward_loss(b), heldout_cpu = cpu.forward_loss(b);
  REQUIRE(std::abs(heldout_gpu - heldout_cpu) <= 2e-2 * heldout_cpu);
  CudaBackend::release();
}

// ZeRO 2 (train_llama --zero 2 with several processes): a rank allocates the fp32 gradients of its
// slice plus the staging, never the whole buffer, which is what the per-GPU plan counts. Rank 0 of
// 2 (the largest slice), with untied and tied embeddings (the tied one's staging has a third part).
TEST_CASE("ZeRO 2 and 3: a rank allocates the gradients (and at 3 the bf16 weights) of its slice and the staging, not the whole buffers, as planned") {
  for (const bool tied : {false, true}) {
    INFO("tied embeddings " << tied);
    LlamaConfig cfg = tiny_config(300, 0.05f);
    cfg.tie_word_embeddings = tied;
    const ParamLayout layout = make_param_layout(cfg);
    const ZeroShards shards(layout.total, 2);
    const GradStaging staging = grad_staging(layout, (size_t)cfg.vocab_size * cfg.hidden_size);
    REQUIRE((staging.tied > 0) == tied);
    REQUIRE(staging.half >= layout.layers[1].ln1 - layout.layers[0].ln1);  // a layer fits a half
    TrainMemory mem;
    mem.shard_begin = shards.begin(0);
    mem.shard_count = shards.count(0);
    const CudaMemoryPlan stage1 = cuda_memory_plan(cfg, layout, 2, 37, false, ModelUse::train, 0, 0, mem);
    mem.grad_staging = staging.total();
    const size_t before = CudaBackend::allocated_bytes();
    LlamaModel<CudaBackend> gpu(cfg, 2, 37, MomentDtype::f32, ModelUse::train, mem);
    REQUIRE(gpu.grads == nullptr);
    // The slice and the staging instead of the whole buffer: nothing else.
    REQUIRE(CudaBackend::allocated_bytes() - before + layout.total * 4 ==
            stage1.model_bytes + (shards.count(0) + staging.total()) * 4);
    const CudaMemoryPlan plan = zero_plan(cfg, 2, 37, false, 2);
    REQUIRE(plan.grads == (shards.count(0) + staging.total()) * 4);
    REQUIRE(plan.model_bytes == CudaBackend::allocated_bytes() - before);
    REQUIRE(gpu.slice_grads() == gpu.grad_shard);
    // ZeRO 3: the bf16 working copy of the slice and two buffers of the largest weight group
    // instead of the whole copy, as planned.
    mem.weight_gather = weight_gather_floats(layout, (size_t)cfg.vocab_size * cfg.hidden_size, cfg.hidden_size);
    const size_t before3 = CudaBackend::allocated_bytes();
    LlamaModel<CudaBackend> gpu3(cfg, 2, 37, MomentDtype::f32, ModelUse::train, mem);
    REQUIRE(CudaBackend::allocated_bytes() - before3 + layout.total * 2 ==
            plan.model_bytes + (shards.count(0) + 2 * mem.weight_gather) * 2);
    REQUIRE(zero_plan(cfg, 2, 37, false, 3).model_bytes == CudaBackend::allocated_bytes() - before3);
    REQUIRE(gpu3.slice_weights() == gpu3.weights);
    REQUIRE_THROWS_WITH(gpu3.weight(layout.embed), Catch::Contains("no on_weights_begin gathers them"));
  }
}

#if defined(CUDA_EMULATION)
// The whole plan, not only the model's own buffers: after training steps (every scratch buffer of
// the backend grown to its largest, the bf16 mirror, the cuBLASLt workspace) the device memory in
// use (the emulator's cudaMalloc accounting, through cudaMemGetInfo; scratch never shrinks, so this
// is the high-water mark) is exactly the plan's total, for recompute modes, with the offloaded
// optimizer. (With the LM head by vocabulary chunks, which needs N x V above 16M logits, its bf16
// dlogits scratch, rows x a multiple of 64 columns, can stay below the planned chunk of logits.)
TEST_CASE("cuda memory plan: the device high-water mark after training steps equals the plan's total") {
  const LlamaConfig cfg = tiny_config(300, 0.05f);
  const int rows = 2, T = 37;
  const ParamLayout layout = make_param_layout(cfg);
  std::vector<float> p0(layout.total);
  init_weights(cfg, layout, p0.data(), 8);
  auto in_use = [] {
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return total_bytes - free_bytes;
  };
  CudaBackend::release();
  const size_t before = in_use();
  // ZeRO 1 (rank 0 of 2, run alone: its optimizer updates its slice of the master weights)
  const ZeroShards shards(layout.total, 2);
  for (const TrainMemory mem : {TrainMemory{Recompute::none, false}, TrainMemory{Recompute::block, true},
                                TrainMemory{Recompute::mlp, false},
                                TrainMemory{Recompute::none, false, shards.begin(0), shards.count(0)}}) {
      INFO("--recompute " << recompute_name(mem.recompute) << " offload " << mem.offload_optimizer << " slice "
                          << mem.shard_count);
      {
        LlamaModel<CudaBackend> gpu(cfg, rows, T, MomentDtype::f32, ModelUse::train, mem);
        gpu.load_params(p0.data());
        CudaMemoryPlan plan = cuda_memory_plan(cfg, layout, rows, T, false, ModelUse::train, 0, 0, mem);
        AdamWConfig opt;
        for (int step = 0; step < 2; step++) {
          Batch b = packed_batch(T, cfg.vocab_size, 40 + step);
          for (int i = 0; i < rows * T; i++) b.targets[i] = b.tokens[(i + 1) % (rows * T)];  // every token: N rows
          b.num_target_tokens = rows * T;
          gpu.zero_grad();
          gpu.forward_backward(b, b.num_target_tokens);
          gpu.optimizer_step(opt);
        }
        REQUIRE(in_use() - before == plan.total());
        if (mem.shard_count > 0)  // the stage-1 plan per GPU of 2 ranks is what the rank allocates
          REQUIRE(zero_plan(cfg, rows, T, false, 1).total() == plan.total());
        gpu.finish_pending_update();  // the offloaded update in flight uses the backend's transfer stream
        CudaBackend::release();       // the host staging, the scratch and the cuBLASLt context
      }
      REQUIRE(in_use() == before);
    }
}
#endif
