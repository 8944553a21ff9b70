// Prints the GPU memory plan of LlamaModel<CudaBackend> (kernels/cuda_backend.h) for a config and
// a micro-batch, with fp32 and bf16 AdamW state: the figures `train_llama --dry-run` reports.
//
//   make build/libmodel.a build/libkernels.a build/libcommon.a
//   g++ -std=c++20 -O2 -I. -I/usr/local/cuda/include dev/cuda_memory_plan.cpp build/libmodel.a \
//       build/libkernels.a build/libcommon.a -ldnnl -fopenmp -o /tmp/cuda_memory_plan
//   /tmp/cuda_memory_plan llama-3-8b 1 2048       # built-in configs: llama-3-8b, llama-3.2-1b
//   /tmp/cuda_memory_plan path/to/config.json 4 512
#include <cstdio>
#include <string>

#include <cuda_bf16.h>

#include "common/error.h"
#include "kernels/cuda_backend.h"
#include "model/config.h"
#include "model/params.h"

static LlamaConfig builtin(const std::string& name) {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"rms_norm_eps", 1e-5},
                      {"rope_theta", 500000.0}, {"max_position_embeddings", 131072}, {"vocab_size", 128256},
                      {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                        {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}};
  if (name == "llama-3-8b") {
    j["hidden_size"] = 4096; j["intermediate_size"] = 14336; j["num_hidden_layers"] = 32;
    j["num_attention_heads"] = 32; j["num_key_value_heads"] = 8; j["tie_word_embeddings"] = false;
    j.erase("rope_scaling");
    j["max_position_embeddings"] = 8192;
  } else if (name == "llama-3.2-1b") {
    j["hidden_size"] = 2048; j["intermediate_size"] = 8192; j["num_hidden_layers"] = 16;
    j["num_attention_heads"] = 32; j["num_key_value_heads"] = 8; j["tie_word_embeddings"] = true;
    j["rope_scaling"]["factor"] = 32.0;
  } else {
    return load_config(name);
  }
  return parse_config(j, name);
}

int main(int argc, char** argv) {
  try {
    if (argc != 4) {
      std::fprintf(stderr, "usage: %s CONFIG_OR_NAME ROWS T\n", argv[0]);
      return 1;
    }
    const LlamaConfig c = builtin(argv[1]);
    const ParamLayout layout = make_param_layout(c);
    const int rows = std::stoi(argv[2]), T = std::stoi(argv[3]);
    std::printf("%s: %.3fB parameters, micro-batch %d x %d tokens\n", argv[1], layout.total / 1e9, rows, T);
    std::printf("fp32 AdamW state:\n%s", format_cuda_memory_plan(cuda_memory_plan(c, layout, rows, T)).c_str());
    std::printf("bf16 AdamW state (--optimizer-state bf16):\n%s",
                format_cuda_memory_plan(cuda_memory_plan(c, layout, rows, T, true)).c_str());
  } catch (const EngineError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
