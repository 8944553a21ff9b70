// The CPU backend's transposed weight copies for the decoding GEMMs (see model/cpu_backend.h).
#include "model/cpu_backend.h"

#include <map>
#include <vector>

#include "common/error.h"

namespace {
struct TransposedWeight {
  int IC = 0, OC = 0;
  std::vector<float> wt;  // [IC, OC]
};
// Keyed by the weight's address inside a model's parameter buffer (one process, few models).
std::map<const float*, TransposedWeight>& transposed_weights() {
  static std::map<const float*, TransposedWeight> m;
  return m;
}
}  // namespace

const float* CpuBackend::transposed(const float* w, int IC, int OC) {
  TransposedWeight& t = transposed_weights()[w];
  if (t.wt.empty()) {
    t.IC = IC;
    t.OC = OC;
    t.wt.resize(size_t(IC) * OC);
    float* wt = t.wt.data();
#pragma omp parallel for schedule(static)
    for (int i = 0; i < IC; ++i)
      for (int r = 0; r < OC; ++r) wt[size_t(i) * OC + r] = w[size_t(r) * IC + i];
  }
  check(t.IC == IC && t.OC == OC, "cpu backend: weight at ", static_cast<const void*>(w), " used as [", OC, ", ", IC,
        "] and as [", t.OC, ", ", t.IC, "]");
  return t.wt.data();
}

void CpuBackend::params_changed(const float* p, size_t n) {
  auto& m = transposed_weights();
  if (m.empty()) return;
  m.erase(m.lower_bound(p), m.lower_bound(p + n));
}
