// The CPU instantiation of the inference loops (model/decode.h), compiled once.
#include "model/decode.h"

template std::vector<std::vector<int32_t>> greedy_generate(LlamaModel<CpuBackend>&,
                                                           const std::vector<std::vector<int32_t>>&,
                                                           const GreedyOptions&);
