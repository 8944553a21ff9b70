// Largest absolute value and largest absolute difference of float arrays: the measures the model
// tests compare against their tolerances (relative tests divide by max_abs of the reference).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

inline float max_abs(const float* a, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; i++) m = std::max(m, std::fabs(a[i]));
  return m;
}

inline float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0.0f;
  for (size_t i = 0; i < n; i++) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}
