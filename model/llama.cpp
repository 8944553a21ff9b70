// Instantiates the model for the CPU backend once, so users link it instead of recompiling it.
#include "model/llama.h"

#include "model/cpu_backend.h"

template struct LlamaModel<CpuBackend>;
