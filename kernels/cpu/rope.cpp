// Rotary position embedding in Hugging Face's rotate-half convention: for i < D/2, the pair
// (x[i], x[i + D/2]) is rotated by angle pos * inv_freq[i]:
//   y[i]       = x[i] cos - x[i+D/2] sin
//   y[i+D/2]   = x[i+D/2] cos + x[i] sin
// The rotation is orthogonal, so its gradient is the rotation by -angle.
#include <cmath>

#include "kernels/cpu/ops.h"

// llama3 scaling (Llama 3.1): long wavelengths (> original_max_pos / low_freq_factor) are divided
// by `factor`, short ones (< original_max_pos / high_freq_factor) kept, and the band in between
// interpolated smoothly in 1/wavelength.
void rope_inv_freq(double* inv_freq, int D, double theta, bool llama3, double factor,
                   double low_freq_factor, double high_freq_factor, double original_max_pos) {
  const double kPi = 3.14159265358979323846;
  for (int i = 0; i < D / 2; i++) {
    double f = 1.0 / std::pow(theta, (2.0 * i) / D);
    if (llama3) {
      double low_freq_wavelen = original_max_pos / low_freq_factor;
      double high_freq_wavelen = original_max_pos / high_freq_factor;
      double wavelen = 2.0 * kPi / f;
      if (wavelen > low_freq_wavelen) {
        f = f / factor;
      } else if (wavelen >= high_freq_wavelen) {
        double smooth = (original_max_pos / wavelen - low_freq_factor) /
                        (high_freq_factor - low_freq_factor);
        f = (1.0 - smooth) * f / factor + smooth * f;
      }
    }
    inv_freq[i] = f;
  }
}

void rope_tables(float* cos_table, float* sin_table, const double* inv_freq, int D, int max_pos) {
  int half = D / 2;
#pragma omp parallel for schedule(static)
  for (int p = 0; p < max_pos; p++)
    for (int i = 0; i < half; i++) {
      double a = p * inv_freq[i];
      cos_table[(int64_t)p * half + i] = (float)std::cos(a);
      sin_table[(int64_t)p * half + i] = (float)std::sin(a);
    }
}

void rope_apply(float* x, const int32_t* positions, const float* cos_table,
                const float* sin_table, int N, int heads, int D, int64_t ld, bool backward) {
  int half = D / 2;
  float sign = backward ? -1.0f : 1.0f;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < N; t++) {
    const float* cs = cos_table + (int64_t)positions[t] * half;
    const float* sn = sin_table + (int64_t)positions[t] * half;
    for (int h = 0; h < heads; h++) {
      float* a = x + (int64_t)t * ld + (int64_t)h * D;
      float* b = a + half;
#pragma omp simd
      for (int i = 0; i < half; i++) {
        float s = sign * sn[i], c = cs[i];
        float x1 = a[i], x2 = b[i];
        a[i] = x1 * c - x2 * s;
        b[i] = x2 * c + x1 * s;
      }
    }
  }
}
