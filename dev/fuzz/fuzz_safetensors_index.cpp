// libFuzzer target: model.safetensors.index.json of a sharded checkpoint, read by
// SafeTensors::open next to two valid shard files. Accepted: every tensor the weight_map lists is
// present, comes from the file the map names, and that file lies in the index's directory.
#include "dev/fuzz/fuzz_common.h"
#include "model/safetensors.h"

static const char* kIndex =
    R"({"metadata": {"total_size": 40}, "weight_map": {"a": "model-00001-of-00002.safetensors",)"
    R"( "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})";

static void write_seeds(const std::string& dir) {
  write_file_atomic(dir + "/index", kIndex);
  write_file_atomic(dir + "/one", R"({"weight_map": {"c": "model-00002-of-00002.safetensors"}})");
}

static std::string g_dir;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init("fuzz_safetensors_index", write_seeds);
  g_dir = fuzz::scratch_dir() + "/sharded";
  make_dirs(g_dir);
  float x[4] = {1, 2, 3, 4};
  write_safetensors(g_dir + "/model-00001-of-00002.safetensors", {{"a", "F32", {2, 2}, x}, {"b", "F32", {3}, x}});
  write_safetensors(g_dir + "/model-00002-of-00002.safetensors", {{"c", "BF16", {4}, x}});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = g_dir + "/model.safetensors.index.json";
  write_file_atomic(path, std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::run_one([&] {
    SafeTensors st = SafeTensors::open(path);
    for (const auto& [name, t] : st.tensors) {
      fuzz::require(t.file.rfind(g_dir + "/", 0) == 0 && t.file.find('/', g_dir.size() + 1) == std::string::npos,
                    "tensor '" + name + "' from a file outside the directory: " + t.file);
      std::vector<float> v = st.read_f32(name);
      fuzz::require(v.size() == size_t(t.numel()), "read_f32 size");
    }
  });
  return 0;
}
