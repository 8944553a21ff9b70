#include "model/config.h"

#include <cmath>

#include "common/error.h"
#include "common/file_io.h"
#include "common/json_file.h"

using nlohmann::json;

namespace {

// Reads an optional numeric field; a present field of the wrong type is an error naming it.
template <typename T>
void read_field(const json& j, const char* key, T& out, const std::string& path) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  if constexpr (std::is_same_v<T, bool>) {
    check(it->is_boolean(), path, ": field '", key, "' must be a boolean");
  } else if constexpr (std::is_integral_v<T>) {
    check(it->is_number_integer(), path, ": field '", key, "' must be an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    check(it->is_number(), path, ": field '", key, "' must be a number");
  } else {
    check(it->is_string(), path, ": field '", key, "' must be a string");
  }
  out = it->get<T>();
}

template <typename T>
void require_field(const json& j, const char* key, T& out, const std::string& path) {
  check(j.contains(key) && !j[key].is_null(), path, ": missing required field '", key, "'");
  read_field(j, key, out, path);
}

std::vector<int> read_token_ids(const json& j, const char* key, const std::string& path) {
  std::vector<int> ids;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return ids;
  if (it->is_number_integer()) {
    ids.push_back(it->get<int>());
  } else {
    check(it->is_array(), path, ": field '", key, "' must be an integer or a list of integers");
    for (const auto& v : *it) {
      check(v.is_number_integer(), path, ": field '", key, "' must be an integer or a list of integers");
      ids.push_back(v.get<int>());
    }
  }
  return ids;
}

}  // namespace

LlamaConfig parse_config(const json& j, const std::string& path) {
  check(j.is_object(), path, ": config must be a JSON object");
  LlamaConfig c;

  std::string arch;
  if (j.contains("architectures")) {
    const json& a = j["architectures"];
    check(a.is_array() && a.size() == 1 && a[0].is_string(), path,
          ": field 'architectures' must be a list with one name");
    arch = a[0].get<std::string>();
  }
  read_field(j, "model_type", c.model_type, path);
  if (arch.empty()) {  // infer from model_type
    arch = c.model_type == "mistral" ? "MistralForCausalLM" : c.model_type == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  }
  check(arch == "LlamaForCausalLM" || arch == "MistralForCausalLM" || arch == "Qwen2ForCausalLM", path,
        ": field 'architectures': unsupported architecture '", arch,
        "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)");
  c.architecture = arch;
  c.model_type = arch == "MistralForCausalLM" ? "mistral" : arch == "Qwen2ForCausalLM" ? "qwen2" : "llama";

  require_field(j, "vocab_size", c.vocab_size, path);
  require_field(j, "hidden_size", c.hidden_size, path);
  require_field(j, "intermediate_size", c.intermediate_size, path);
  require_field(j, "num_hidden_layers", c.num_hidden_layers, path);
  require_field(j, "num_attention_heads", c.num_attention_heads, path);
  c.num_key_value_heads = c.num_attention_heads;
  read_field(j, "num_key_value_heads", c.num_key_value_heads, path);
  read_field(j, "head_dim", c.head_dim, path);
  if (c.head_dim == 0 && c.num_attention_heads > 0) c.head_dim = c.hidden_size / c.num_attention_heads;
  read_field(j, "rms_norm_eps", c.rms_norm_eps, path);
  read_field(j, "rope_theta", c.rope_theta, path);
  read_field(j, "max_position_embeddings", c.max_position_embeddings, path);
  read_field(j, "tie_word_embeddings", c.tie_word_embeddings, path);
  read_field(j, "initializer_range", c.initializer_range, path);
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"];
  else if (j.contains("dtype") && j["dtype"].is_string()) c.torch_dtype = j["dtype"];
  c.bos_token_id = read_token_ids(j, "bos_token_id", path);
  c.eos_token_id = read_token_ids(j, "eos_token_id", path);

  // Biases: Qwen2 always has q/k/v biases; Llama/Mistral follow attention_bias.
  // HF Llama's attention_bias also puts a bias on o_proj, which this engine does not implement.
  bool hf_attention_bias = false;
  read_field(j, "attention_bias", hf_attention_bias, path);
  check(!hf_attention_bias || arch == "Qwen2ForCausalLM", path,
        ": field 'attention_bias': true is not supported for ", arch, " (o_proj bias)");
  c.attention_bias = arch == "Qwen2ForCausalLM";

  check(c.vocab_size > 0, path, ": field 'vocab_size' must be positive");
  check(c.hidden_size > 0, path, ": field 'hidden_size' must be positive");
  check(c.intermediate_size > 0, path, ": field 'intermediate_size' must be positive");
  check(c.num_hidden_layers > 0, path, ": field 'num_hidden_layers' must be positive");
  check(c.num_attention_heads > 0, path, ": field 'num_attention_heads' must be positive");
  check(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0, path,
        ": field 'num_key_value_heads' (", c.num_key_value_heads, ") must divide num_attention_heads (",
        c.num_attention_heads, ")");
  check(c.head_dim > 0 && c.head_dim % 2 == 0, path, ": field 'head_dim' must be a positive even number");
  // Upper bounds far beyond any real model (Llama 3 405B: vocab 128256, hidden 16384, 126 layers,
  // 128 heads of 128), so that no size computed from a config can overflow and no reader builds
  // per-layer tables for an absurd depth before the memory check can refuse the model.
  auto at_most = [&](int v, int hi, const char* key) {
    check(v <= hi, path, ": field '", key, "' is ", v, ", more than the ", hi, " this engine accepts");
  };
  at_most(c.vocab_size, 1 << 24, "vocab_size");
  at_most(c.hidden_size, 1 << 20, "hidden_size");
  at_most(c.intermediate_size, 1 << 22, "intermediate_size");
  at_most(c.num_hidden_layers, 1 << 12, "num_hidden_layers");
  at_most(c.num_attention_heads, 1 << 12, "num_attention_heads");
  at_most(c.head_dim, 1 << 12, "head_dim");
  check(c.rms_norm_eps > 0, path, ": field 'rms_norm_eps' must be positive");
  check(c.rope_theta > 0, path, ": field 'rope_theta' must be positive");

  // Fields that change the math and are not implemented are refused by name.
  // RoPE: transformers < 5 writes top-level rope_theta + rope_scaling; transformers >= 5 writes
  // rope_parameters {rope_theta, rope_type, factor, ...}. Both are read.
  std::string rope_key = "rope_scaling";
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    rope_key = "rope_parameters";
    check(j["rope_parameters"].is_object(), path, ": field 'rope_parameters' must be an object");
    read_field(j["rope_parameters"], "rope_theta", c.rope_theta, path + " rope_parameters");
    check(c.rope_theta > 0, path, ": field 'rope_parameters.rope_theta' must be positive");
  }
  if (j.contains(rope_key) && !j[rope_key].is_null()) {
    const json& r = j[rope_key];
    check(r.is_object(), path, ": field '", rope_key, "' must be an object or null");
    std::string type = r.value("rope_type", r.value("type", std::string("default")));
    if (type != "default") {
      check(type == "llama3", path, ": field '", rope_key, ".rope_type': unsupported rope type '", type,
            "' (supported: llama3, default)");
      c.rope_scaling.rope_type = "llama3";
      require_field(r, "factor", c.rope_scaling.factor, path + " " + rope_key);
      read_field(r, "low_freq_factor", c.rope_scaling.low_freq_factor, path);
      read_field(r, "high_freq_factor", c.rope_scaling.high_freq_factor, path);
      read_field(r, "original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings, path);
      check(c.rope_scaling.factor > 0 && c.rope_scaling.high_freq_factor > c.rope_scaling.low_freq_factor, path,
            ": field '", rope_key, "': need factor > 0 and high_freq_factor > low_freq_factor");
    }
  }
  if (j.contains("layer_types") && j["layer_types"].is_array()) {
    for (const auto& t : j["layer_types"])
      check(t == "full_attention" || j.value("use_sliding_window", false), path,
            ": field 'layer_types': only full_attention layers are supported, got ", t.dump());
  }
  for (const char* moe : {"num_local_experts", "num_experts", "num_experts_per_tok", "moe_intermediate_size"}) {
    check(!j.contains(moe) || j[moe].is_null() || (j[moe].is_number() && j[moe].get<double>() == 0), path,
          ": field '", moe, "': mixture-of-experts models are not supported");
  }
  if (j.contains("sliding_window") && !j["sliding_window"].is_null()) {
    bool active = j.value("use_sliding_window", arch == "MistralForCausalLM");
    if (active) {
      check(j["sliding_window"].is_number_integer(), path, ": field 'sliding_window' must be an integer");
      c.sliding_window = j["sliding_window"].get<int>();
    }
  }
  if (j.contains("hidden_act")) {
    check(j["hidden_act"] == "silu", path, ": field 'hidden_act': only 'silu' is supported, got ",
          j["hidden_act"].dump());
  }
  if (j.contains("mlp_bias")) {
    check(j["mlp_bias"].is_boolean() && !j["mlp_bias"].get<bool>(), path, ": field 'mlp_bias': MLP biases are not supported");
  }
  if (j.contains("pretraining_tp")) {
    check(!j["pretraining_tp"].is_number() || j["pretraining_tp"].get<double>() <= 1, path,
          ": field 'pretraining_tp' > 1 is not supported");
  }
  return c;
}

LlamaConfig load_config(const std::string& path) {
  return parse_config(read_json_file(path), path);
}

json config_to_json(const LlamaConfig& c) {
  json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.rope_type == "llama3") {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope_scaling.factor},
                         {"low_freq_factor", c.rope_scaling.low_freq_factor},
                         {"high_freq_factor", c.rope_scaling.high_freq_factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.architecture != "Qwen2ForCausalLM") {
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
  }
  if (c.sliding_window > 0) {
    j["sliding_window"] = c.sliding_window;
    if (c.architecture == "Qwen2ForCausalLM") j["use_sliding_window"] = true;
  } else if (c.architecture != "LlamaForCausalLM") {
    j["sliding_window"] = nullptr;
    if (c.architecture == "Qwen2ForCausalLM") j["use_sliding_window"] = false;
  }
  auto ids = [](const std::vector<int>& v) -> json {
    if (v.empty()) return nullptr;
    if (v.size() == 1) return v[0];
    return v;
  };
  j["bos_token_id"] = ids(c.bos_token_id);
  j["eos_token_id"] = ids(c.eos_token_id);
  j["initializer_range"] = c.initializer_range;
  j["torch_dtype"] = c.torch_dtype;
  j["attention_dropout"] = 0.0;
  j["use_cache"] = true;
  return j;
}

void save_config(const LlamaConfig& c, const std::string& path) {
  write_file_atomic(path, config_to_json(c).dump(2) + "\n");
}
