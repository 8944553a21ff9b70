// The trainer's backend-independent parts and its CPU instantiation (the definitions are in
// larimar/train_impl.h; the CUDA instantiation is larimar/train_cuda.cu).
#include "larimar/train.h"

#include "larimar/train_impl.h"
#include "model/cpu_backend.h"

namespace larimar {

double BetaSchedule::at(int64_t step) const {
  const double period = double(std::max<int64_t>(total_steps, 1)) / std::max(cycles, 1);
  const double u = std::fmod(double(step), period) / period;
  if (u < ratio_zero) return 0.0;
  return beta_max * std::min(1.0, (u - ratio_zero) / ratio_increase);
}

std::vector<double> episode_noise(uint64_t seed, int64_t step, int n, int k) {
  Rng r = Rng::derive(seed, train_detail::kTagNoise, (uint64_t)step);
  std::vector<double> e((size_t)n * k);
  for (double& x : e) x = train_detail::normal(r);
  return e;
}

LarimarSpec larimar_spec(const std::string& src, int slots_option) {
  LarimarSpec s;
  if (std::filesystem::is_directory(src)) {
    s.dir = src;
    s.encoder = load_encoder_config(src + "/encoder/config.json");
    const SafeTensors st = SafeTensors::open(src + "/larimar.safetensors");
    const SafeTensorInfo& m0 = st.get("larimar.M0");
    check(m0.shape.size() == 2 && m0.shape[1] == s.encoder.code_size, m0.file, ": tensor 'larimar.M0' must be [K, ",
          s.encoder.code_size, "] (the encoder's larimar_code_size)");
    s.slots = (int)m0.shape[0];
    check(slots_option == 0 || slots_option == s.slots, "--memory-slots ", slots_option, ": ", m0.file,
          " has ", s.slots, " slots");
  } else {
    check(file_exists(src), src, ": no such file or directory (--larimar takes an encoder config.json or a "
                                 "Larimar directory)");
    s.encoder = load_encoder_config(src);
    s.slots = slots_option;
  }
  check(s.slots > 0, src, ": the memory needs --memory-slots K > 0");
  return s;
}

template class LarimarTrainer<CpuBackend>;

}  // namespace larimar
