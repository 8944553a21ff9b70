// Text -> code -> memory readout -> decoder conditioning, for programs (larimar_edit,
// eval_factoids --memory). The interface has no Eigen: callers need not compile against it.
//
// A Larimar directory holds encoder/ (an encoder directory, larimar/encoder.h, with its
// tokenizer.json) and larimar.safetensors (larimar.slot.weight [L*KV*D, Cz] and
// larimar.embed.weight [C, Cz], the code maps of larimar/larimar_model.h; other tensors ignored).
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace larimar {

// The identity recorded in memory files: XXH3-64 of the encoder's config.json and model.safetensors.
std::string encoder_identity(const std::string& encoder_dir);

// Codes [texts, code_size] (row-major) of the texts, tokenized by encoder_dir/tokenizer.json and
// encoded `batch` at a time on the CPU backend; `what` names the texts in errors.
std::vector<float> encode_texts(const std::string& encoder_dir, const std::vector<std::string>& texts, int batch,
                                const std::string& what, int* code_size);

// Per text: z = e(text), the deterministic readout z_r = (z M⁺) M of the memory file (refused if
// written through another encoder), and the decoder's conditioning slot = W_kv z_r and embed =
// W_e z_r, laid out as LlamaModel::condition wants them.
struct Conditioning {
  std::vector<float> slot;   // [rows, L, KV*D]
  std::vector<float> embed;  // [rows, C]
  int rows = 0;
};
Conditioning memory_conditioning(const std::string& larimar_dir, const std::string& memory_file,
                                 const LlamaConfig& decoder, const std::vector<std::string>& texts, int batch);

}  // namespace larimar
