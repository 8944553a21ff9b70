// exp for vectorized loops. glibc's vector expf is only declared under -ffast-math, so a plain
// std::exp in a loop is a scalar call per element; this version inlines and vectorizes.
// Method (Cephes expf): x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
// reduction), e^r by a degree-7 polynomial, 2^n through the exponent bits. About 1 ulp of
// error over the normal range; inputs are clamped to [-87.3, 88.7] (the result stays finite).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

// floor(y) for |y| < 2^22, written out because GCC 12 does not vectorize std::floor without
// -fno-trapping-math: adding and subtracting 1.5 * 2^23 rounds y to the nearest integer t, and
// floor(y) = t - (t > y) exactly. (exp_fast's y lies in (-126, 129].)
inline float floor_small(float y) {
  const float t = (y + 12582912.0f) - 12582912.0f;
  return t - float(t > y);
}

inline float exp_fast(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  const float n = floor_small(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  return p * std::bit_cast<float>(bits);
}
