// libFuzzer target: one .safetensors file (header length, JSON header, data section), as read
// by SafeTensors::open for model.safetensors and optimizer.safetensors. Accepted: every tensor's
// bytes lie inside the file, match its dtype and shape, and convert (read_f32 / read_i32) without
// reading out of bounds; the only later rejection allowed is EngineError (non-finite value, ...).
#include <cstring>

#include "dev/fuzz/fuzz_common.h"
#include "model/safetensors.h"

static void write_seeds(const std::string& dir) {
  // the smallest model fixture (88 KB): larger seeds slow every mutation down
  fuzz::copy_seed("test/fixtures/model/tied_llama3/model/model.safetensors", dir, "tied_llama3");
  // small files of each dtype family, with metadata, as the checkpoint writer makes them
  float x[6] = {1, -2, 0.5f, 3, 0, 7};
  int32_t i32[3] = {1, 2, 3};
  int64_t i64[2] = {-5, 9};
  write_safetensors(dir + "/small", {{"a", "F32", {2, 3}, x}, {"b", "BF16", {6}, x}, {"c", "I32", {3}, i32},
                                     {"d", "I64", {2}, i64}}, {{"format", "pt"}, {"layout_fingerprint", "0123"}});
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init("fuzz_safetensors", write_seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::put_file("x.safetensors", std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::run_one([&] {
    SafeTensors st = SafeTensors::open(path);
    fuzz::require(st.files.size() == 1, "one file mapped");
    const MappedFile& f = *st.files[0];
    for (const auto& [name, t] : st.tensors) {
      fuzz::require(t.name == name, "tensor name");
      fuzz::require(t.data >= f.data && t.data + t.nbytes <= f.data + f.size, "tensor '" + name + "' outside the file");
      int64_t numel = t.numel();
      fuzz::require(numel >= 0, "numel >= 0");
      if (t.dtype == "F32" || t.dtype == "BF16" || t.dtype == "F16") {
        fuzz::require(size_t(numel) * (t.dtype == "F32" ? 4 : 2) == t.nbytes, "float tensor size");
        try {
          std::vector<float> v = st.read_f32(name);
          fuzz::require(v.size() == size_t(numel), "read_f32 size");
        } catch (const EngineError&) {  // non-finite values: a clean refusal
        }
      } else if (t.dtype == "I32" || t.dtype == "I64") {
        try {
          std::vector<int32_t> v = st.read_i32(name);
          fuzz::require(v.size() == size_t(numel), "read_i32 size");
        } catch (const EngineError&) {  // out of int32 range
        }
      } else {
        unsigned sum = 0;  // touch every byte: ASan checks the bounds
        for (size_t k = 0; k < t.nbytes; ++k) sum += t.data[k];
        (void)sum;
      }
    }
  });
  return 0;
}
