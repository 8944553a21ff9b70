// A fast non-cryptographic 64-bit hash for identities whose values are stored in files and
// therefore cannot change: the tokenizer hash (Tokenizer::hash, in every shard and checkpoint),
// the checkpoint layout fingerprint, and the keys of the tokenizer's hash tables. It is also the
// checksum of shard format version 1, which is still read. Checksums of new files are XXH3
// (common/checksum.h). 8 bytes per step through a multiply-xorshift mix; the tail and the length
// are folded in so that a truncated or extended input hashes differently.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

inline uint64_t hash_mix64(uint64_t x) {  // splitmix64 finalizer: full avalanche
  x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27; x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

inline uint64_t hash64(const void* data, size_t n, uint64_t seed = 0) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = hash_mix64(seed ^ 0x9e3779b97f4a7c15ULL);
  // four independent lanes so the multiplies pipeline
  uint64_t a = h, b = h ^ 1, c = h ^ 2, d = h ^ 3;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    uint64_t w[4];
    std::memcpy(w, p + i, 32);
    a = (a ^ w[0]) * 0x9fb21c651e98df25ULL; a ^= a >> 29;
    b = (b ^ w[1]) * 0x9fb21c651e98df25ULL; b ^= b >> 29;
    c = (c ^ w[2]) * 0x9fb21c651e98df25ULL; c ^= c >> 29;
    d = (d ^ w[3]) * 0x9fb21c651e98df25ULL; d ^= d >> 29;
  }
  h = hash_mix64(a) ^ hash_mix64(b + 1) ^ hash_mix64(c + 2) ^ hash_mix64(d + 3);
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = hash_mix64(h ^ w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, n - i);
  return hash_mix64(h ^ tail ^ (uint64_t(n) * 0xff51afd7ed558ccdULL));
}

inline uint64_t hash64(const std::string& s, uint64_t seed = 0) { return hash64(s.data(), s.size(), seed); }

inline std::string hash_hex(uint64_t h) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) s[i] = digits[h & 15];
  return s;
}
