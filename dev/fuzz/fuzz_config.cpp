// libFuzzer target: a Hugging Face config.json, as load_config reads it for --model, --init and
// --resume. Accepted: the dimensions are positive and consistent (heads divisible, even head_dim),
// the parameter layout builds and adds up, and writing the config back and reading it again gives
// the same config (what checkpoints rely on).
#include "dev/fuzz/fuzz_common.h"
#include "model/config.h"
#include "model/params.h"

static void write_seeds(const std::string& dir) {
  const char* fixtures[] = {"gqa", "packed", "qwen2_bias", "tied_llama3"};
  for (const char* f : fixtures)
    fuzz::copy_seed(std::string("test/fixtures/model/") + f + "/model/config.json", dir, f);
  fuzz::copy_seed("dev/bench/tiny.json", dir, "bench_tiny");
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init("fuzz_config", write_seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::put_file("config.json", std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::run_one([&] {
    LlamaConfig c = load_config(path);
    fuzz::require(c.vocab_size > 0 && c.hidden_size > 0 && c.intermediate_size > 0 && c.num_hidden_layers > 0,
                  "positive dimensions");
    fuzz::require(c.num_attention_heads > 0 && c.num_key_value_heads > 0 &&
                      c.num_attention_heads % c.num_key_value_heads == 0 && c.head_dim > 0 && c.head_dim % 2 == 0,
                  "attention shape");
    ParamLayout layout = make_param_layout(c);
    size_t sum = 0;
    for (const auto& t : layout.tensors) {
      fuzz::require(t.offset == sum, "tensor '" + t.name + "' offset");
      size_t n = 1;
      for (int64_t d : t.shape) n *= size_t(d);
      fuzz::require(n == t.numel && n > 0, "tensor '" + t.name + "' numel");
      sum += t.numel;
    }
    fuzz::require(sum == layout.total, "layout total");
    LlamaConfig back = parse_config(config_to_json(c), "round trip");
    fuzz::require(config_to_json(back) == config_to_json(c), "config round trip");
  });
  return 0;
}
