// Memory files: a SequentialMemory saved as one safetensors file (atomic write), float64 so that a
// saved and reloaded memory continues exactly where it was.
//
//   tensors   M [K, C], C [K, K] (the precision c₀I + Σ WᵢᵀWᵢ), ref_pinv [C, K] (M_ref⁺), all F64
//   metadata  format = "larimar-memory", version = "1", encoder = <identity of the encoder that
//             produced the codes>, rows = <rows written minus forgotten>, min_rcond = <refusal
//             threshold for C>
//
// Codes are only meaningful to the encoder that made them, so loading names the encoder it
// expects and a file written by another one is refused.
#pragma once
#include <string>

#include "larimar/memory.h"

namespace larimar {

void save_memory(const std::string& path, const SequentialMemory& mem, const std::string& encoder);
SequentialMemory load_memory(const std::string& path, const std::string& encoder);

}  // namespace larimar
