// Deterministic random numbers for shuffling and data generation. Everything here is defined
// bit-for-bit by this file (no std:: distributions, whose output differs between standard
// libraries), so that a seed gives the same epochs and the same generated data everywhere.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "common/hash.h"

// splitmix64: a 64-bit counter passed through a full-avalanche finalizer. Tiny state (one word),
// which makes it trivial to derive independent streams from (seed, purpose, index) tuples.
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  // A generator for one purpose: mixes the seed with a tag and an index (e.g. epoch number).
  static Rng derive(uint64_t seed, uint64_t tag, uint64_t index = 0) {
    return Rng(hash_mix64(hash_mix64(seed ^ 0x5851f42d4c957f2dULL) ^ hash_mix64(tag + 0x14057b7ef767814fULL) ^
                          (index * 0x9e3779b97f4a7c15ULL)));
  }
  uint64_t next() {
    state += 0x9e3779b97f4a7c15ULL;
    return hash_mix64(state);
  }
  // Uniform integer in [0, n), n > 0, without modulo bias (Lemire's multiply-and-reject).
  uint64_t below(uint64_t n) {
    unsigned __int128 m = (unsigned __int128)next() * n;
    uint64_t low = uint64_t(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = (unsigned __int128)next() * n;
        low = uint64_t(m);
      }
    }
    return uint64_t(m >> 64);
  }
};

// Fisher-Yates: every permutation equally likely.
template <typename T>
void shuffle_in_place(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = size_t(rng.below(i));
    std::swap(v[i - 1], v[j]);
  }
}
