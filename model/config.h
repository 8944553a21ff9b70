// The model hyper-parameters, read from and written to Hugging Face config.json.
// Supported architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM. Any field that
// would change the math and is not implemented (MoE, another rope type, an active sliding window)
// is rejected with an error naming the file and the field.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

struct RopeScaling {
  std::string rope_type;  // "" (none) or "llama3"
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string architecture = "LlamaForCausalLM";  // also MistralForCausalLM, Qwen2ForCausalLM
  std::string model_type = "llama";               // "llama", "mistral", "qwen2"
  int vocab_size = 0;
  int hidden_size = 0;         // C
  int intermediate_size = 0;   // I
  int num_hidden_layers = 0;   // L
  int num_attention_heads = 0; // H
  int num_key_value_heads = 0; // KV (GQA: H % KV == 0)
  int head_dim = 0;            // D (defaults to C / H)
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  int max_position_embeddings = 2048;
  int sliding_window = 0;      // 0 = none; otherwise sequences longer than this are refused
  bool tie_word_embeddings = false;
  bool attention_bias = false; // q/k/v biases: true exactly for Qwen2 (Llama/Mistral with HF
                               // attention_bias=true also bias o_proj: refused)
  std::vector<int> bos_token_id, eos_token_id;  // an int or a list in HF; empty if null
  float initializer_range = 0.02f;
  std::string torch_dtype = "float32";
};

// `path` is used in error messages. Throws EngineError naming path and field.
LlamaConfig parse_config(const nlohmann::json& j, const std::string& path);
LlamaConfig load_config(const std::string& config_json_path);
nlohmann::json config_to_json(const LlamaConfig& c);
void save_config(const LlamaConfig& c, const std::string& config_json_path);  // atomic write
