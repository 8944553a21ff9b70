// The Larimar model and its training loss per episode (Das et al. 2024): encoder, memory,
// decoder conditioned on a code, glued together with their backward passes.
//
// Parameters: the encoder (larimar/encoder.h), the decoder (any LlamaModel), and on the host
//   M0    [K, Cz]            the memory prior
//   lv_w  [K, K*Cz], lv_b [K] the key variance as a linear map of the written memory:
//                             logvar = lv_w vec(M) + lv_b (IBM's w_logvar_setting 3)
//   kv_w  [L*KVD, Cz]         code -> the decoder's slot per layer: slot_l = kv_w[l*KVD : (l+1)*KVD] c
//   emb_w [C, Cz]             code -> the vector added to every token embedding: e = emb_w c
// (no biases: the code c = 0 gives a zero slot and no embedding change).
//
// One episode of N texts x_1..x_N (token ids read by both the encoder and the decoder):
//   Z = e(x) (N×Cz);  write M = W₀⁺ Z with W₀ = Z M0⁺;  logvar = lv_w vec(M) + lv_b;
//   read W̄ = Z M⁺, W = W̄ + σ⊙ε (σ = exp(logvar/2), ε ~ N(0, I) given), Z_r = W M;
//   loss = CE(x | Z_r) + CE(x | Z) + CE(x | 0) + β·KL(N(W̄, diag σ²) ‖ N(0, I))
// where CE(x | c) is the decoder's mean token cross-entropy over every next-token target of the
// episode with each text conditioned on its code c_n, and the KL is summed over rows and slots.
// The three CE terms are three forward/backward passes of the decoder over the N texts
// (conditioned on Z_r, Z and 0), each normalized by the episode's targets, so that each term is
// known apart and the decoder's gradients add up to those of the sum.
//
// Backward: the decoder gives d slot and d embed per row; through kv_w and emb_w they give
// dc per row, i.e. dZ_r, dZ (direct) and nothing for the zero code. dZ_r and the KL's dW̄, dlogvar
// go through read_backward (larimar/memory.h) to dM, dZ (as queries) and dlogvar; dlogvar through
// the logvar map to dM, dlv_w, dlv_b; dM through write_backward to dM0 and dZ (as the episode).
// The three dZ add up and go through the encoder. Memory math runs in float64 on the host.
#pragma once
#include <string>
#include <vector>

#include "larimar/encoder.h"
#include "larimar/memory.h"

namespace larimar {

struct EpisodeLoss {
  double total = 0, ce = 0, kl = 0;  // ce = CE(x|Z_r) + CE(x|Z) + CE(x|0); total = ce + β·kl
  double ce_read = 0, ce_code = 0, ce_zero = 0;  // CE(x|Z_r), CE(x|Z), CE(x|0)
};

template <class Backend>
struct LarimarModel {
  Encoder<Backend> enc;
  LlamaModel<Backend> dec;
  int K = 0, Cz = 0, L = 0, KVD = 0, C = 0, max_texts = 0;
  PinvConfig pinv;
  std::vector<float> M0, lv_w, lv_b, kv_w, emb_w;            // host parameters (see above)
  std::vector<float> d_M0, d_lv_w, d_lv_b, d_kv_w, d_emb_w;  // their gradients (added to)

  // Episodes of up to max_texts texts of up to max_T tokens; K memory slots.
  LarimarModel(const EncoderConfig& ec, const LlamaConfig& dc, int slots, int max_texts_, int max_T)
      : enc(ec, max_texts_, max_T),
        dec(dc, max_texts_, max_T),
        K(slots),
        Cz(ec.code_size),
        L(dc.num_hidden_layers),
        KVD(dc.num_key_value_heads * dc.head_dim),
        C(dc.hidden_size),
        max_texts(max_texts_) {
    check(K > 0, "larimar: memory slots ", K, " must be positive");
    dec.plan_condition();
    for (auto [p, g, n] : {std::tuple{&M0, &d_M0, (size_t)K * Cz}, {&lv_w, &d_lv_w, (size_t)K * K * Cz},
                           {&lv_b, &d_lv_b, (size_t)K}, {&kv_w, &d_kv_w, (size_t)L * KVD * Cz},
                           {&emb_w, &d_emb_w, (size_t)C * Cz}}) {
      p->assign(n, 0.0f);
      g->assign(n, 0.0f);
    }
    slot_dev = Backend::template alloc<float>((size_t)3 * max_texts * L * KVD);
    embed_dev = Backend::template alloc<float>((size_t)3 * max_texts * C);
  }
  ~LarimarModel() {
    Backend::free(slot_dev);
    Backend::free(embed_dev);
  }
  LarimarModel(const LarimarModel&) = delete;
  LarimarModel& operator=(const LarimarModel&) = delete;

  // The host parameters from a safetensors file (tensors larimar.M0, larimar.logvar.weight,
  // larimar.logvar.bias, larimar.slot.weight, larimar.embed.weight); errors name file and tensor.
  void load_memory_params(const std::string& path);

  void zero_grad() {
    enc.zero_grad();
    dec.zero_grad();
    for (auto* g : {&d_M0, &d_lv_w, &d_lv_b, &d_kv_w, &d_emb_w}) std::fill(g->begin(), g->end(), 0.0f);
  }

  // The loss of one episode and its gradients (added to every parameter's gradient). eps: N×K
  // standard normal draws for the sampled key.
  EpisodeLoss episode(const std::vector<std::vector<int32_t>>& texts, double beta, const Mat& eps);

 private:
  float *slot_dev = nullptr, *embed_dev = nullptr;  // [3N, L, KVD], [3N, C] in backend memory
};

}  // namespace larimar
