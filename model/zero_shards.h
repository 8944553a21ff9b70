// ZeRO sharding of the flat parameter buffer (model/params.h): rank r of R owns the contiguous
// slice [begin(r), end(r)) of the parameters, and with them of the gradients, the fp32 master
// weights and the AdamW moments it keeps. A slice is ceil(total / R) rounded up to 256 floats
// (1 KiB, so every slice starts aligned for the vectorized kernels); the last one is shorter.
#pragma once
#include <algorithm>
#include <cstddef>

struct ZeroShards {
  size_t total = 0, per = 0;
  int world = 1;
  ZeroShards() = default;
  ZeroShards(size_t total_, int world_) : total(total_), world(world_) {
    per = (total + world - 1) / world;
    per = (per + 255) / 256 * 256;
  }
  size_t begin(int r) const { return std::min(total, size_t(r) * per); }
  size_t end(int r) const { return std::min(total, size_t(r + 1) * per); }
  size_t count(int r) const { return end(r) - begin(r); }
};

// Floats of the bounded device buffer through which the ranks' slices of the fp32 master weights
// travel when they are gathered (checkpoints): 16 MiB, or the whole model when smaller.
constexpr size_t kShardStagingFloats = (size_t)1 << 22;
