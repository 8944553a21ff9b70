#include "larimar/readout.h"

#include <cstdio>

#include "common/checksum.h"
#include "common/error.h"
#include "common/file_io.h"
#include "larimar/encoder.h"
#include "larimar/memory_file.h"
#include "model/cpu_backend.h"
#include "model/safetensors.h"
#include "tokenizer/tokenizer.h"

namespace larimar {

std::string encoder_identity(const std::string& dir) {
  const std::string config = read_text_file(dir + "/config.json"), weights = read_text_file(dir + "/model.safetensors");
  char hex[48];
  std::snprintf(hex, sizeof hex, "xxh3:%016llx:%016llx", (unsigned long long)xxh3_64(config.data(), config.size()),
                (unsigned long long)xxh3_64(weights.data(), weights.size()));
  return hex;
}

std::vector<float> encode_texts(const std::string& encoder_dir, const std::vector<std::string>& texts, int batch,
                                const std::string& what, int* code_size) {
  check(batch > 0, "encode_texts: batch must be positive");
  const Tokenizer tok = Tokenizer::from_json_file(encoder_dir + "/tokenizer.json");
  const EncoderConfig cfg = load_encoder_config(encoder_dir + "/config.json");
  check(tok.vocab_size() <= cfg.llama.vocab_size, encoder_dir, ": the tokenizer's ", tok.vocab_size(),
        " tokens exceed the encoder's vocab_size ", cfg.llama.vocab_size);
  std::vector<std::vector<int32_t>> ids;
  int T = 1;
  for (size_t i = 0; i < texts.size(); i++) {
    ids.push_back(tok.encode(texts[i]));
    check(!ids.back().empty(), what, ": text ", i + 1, " encodes to no tokens");
    T = std::max(T, (int)ids.back().size());
  }
  const int Cz = cfg.code_size;
  *code_size = Cz;
  std::vector<float> Z(ids.size() * Cz), z;
  if (ids.empty()) return Z;
  const int rows = std::min<int>(batch, (int)ids.size());
  Encoder<CpuBackend> enc(cfg, rows, T, ModelUse::inference);
  enc.load(encoder_dir);
  for (size_t i0 = 0; i0 < ids.size(); i0 += rows) {
    const size_t n = std::min(ids.size() - i0, (size_t)rows);
    enc.encode(std::vector<std::vector<int32_t>>(ids.begin() + i0, ids.begin() + i0 + n), z);
    std::copy(z.begin(), z.end(), Z.begin() + i0 * Cz);
  }
  return Z;
}

Conditioning memory_conditioning(const std::string& larimar_dir, const std::string& memory_file,
                                 const LlamaConfig& decoder, const std::vector<std::string>& texts, int batch) {
  const std::string enc_dir = larimar_dir + "/encoder";
  const SequentialMemory mem = load_memory(memory_file, encoder_identity(enc_dir));
  int Cz = 0;
  const std::vector<float> zf = encode_texts(enc_dir, texts, batch, memory_file + " queries", &Cz);
  check(Cz == mem.code_size(), memory_file, ": codes of size ", mem.code_size(), ", the encoder makes ", Cz);
  const int n = (int)texts.size(), L = decoder.num_hidden_layers, KVD = decoder.num_key_value_heads * decoder.head_dim,
            C = decoder.hidden_size;
  const SafeTensors st = SafeTensors::open(larimar_dir + "/larimar.safetensors");
  std::vector<float> kv_w((size_t)L * KVD * Cz), emb_w((size_t)C * Cz);
  st.read_f32("larimar.slot.weight", kv_w.data(), {(int64_t)L * KVD, Cz});
  st.read_f32("larimar.embed.weight", emb_w.data(), {C, Cz});
  Conditioning out;
  out.rows = n;
  out.slot.resize((size_t)n * L * KVD);
  out.embed.resize((size_t)n * C);
  if (n == 0) return out;
  Mat Z(n, Cz);
  for (size_t i = 0; i < zf.size(); i++) Z.data()[i] = zf[i];
  const Mat Zr = read(mem.memory(), Z, PinvConfig{}).Zr;
  const Mat slot = Zr * Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(kv_w.data(), (int64_t)L * KVD, Cz)
                            .cast<double>()
                            .transpose();
  const Mat embed =
      Zr * Eigen::Map<const Eigen::Matrix<float, -1, -1, Eigen::RowMajor>>(emb_w.data(), C, Cz).cast<double>().transpose();
  for (size_t i = 0; i < out.slot.size(); i++) out.slot[i] = (float)slot.data()[i];
  for (size_t i = 0; i < out.embed.size(); i++) out.embed[i] = (float)embed.data()[i];
  return out;
}

}  // namespace larimar
