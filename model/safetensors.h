// safetensors reading (mmap, every header field validated before use) and writing.
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:
// [begin, end]}, "__metadata__": {...}}, then the data section; offsets are relative to it.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/file_io.h"

struct SafeTensorInfo {
  std::string name;
  std::string dtype;            // "F32", "BF16", "F16", "I32", "I64", ...
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mmap
  size_t nbytes = 0;
  std::string file;             // for error messages
  int64_t numel() const;
};

// One .safetensors file, or a sharded set described by model.safetensors.index.json.
struct SafeTensors {
  std::vector<std::unique_ptr<MappedFile>> files;
  std::map<std::string, SafeTensorInfo> tensors;
  std::map<std::string, std::string> metadata;

  // path: a .safetensors file, a model.safetensors.index.json, or a directory holding either.
  static SafeTensors open(const std::string& path);
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  const SafeTensorInfo& get(const std::string& name) const;  // throws naming the file and tensor

  // Converts F32/BF16/F16 to fp32 into dst; checks the shape (when given) and that every value is
  // finite; errors name the file and the tensor.
  void read_f32(const std::string& name, float* dst, const std::vector<int64_t>& expected_shape) const;
  std::vector<float> read_f32(const std::string& name) const;
  std::vector<int32_t> read_i32(const std::string& name) const;  // from I32 or I64
};

struct SafeTensorToWrite {
  std::string name;
  std::string dtype;  // "F32" or "BF16" (from fp32 data, round-to-nearest-even), "F64", "I32", "I64"
  std::vector<int64_t> shape;
  const void* data;   // fp32 for F32/BF16, double for F64, int32 for I32, int64 for I64
};

// Atomic write (temporary + fsync + rename). Tensors are written in the given order.
void write_safetensors(const std::string& path, const std::vector<SafeTensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// The same file from fp32 values given piece by piece, for files larger than the memory at hand:
// the header is made from the names, dtypes ("F32" or "BF16") and shapes (`data` is not read),
// then write_f32 takes the values of the tensors in their order, in pieces of any size (BF16 is
// rounded as above); commit checks that every tensor is complete, then fsyncs and renames.
class SafeTensorsWriter {
 public:
  SafeTensorsWriter(const std::string& path, const std::vector<SafeTensorToWrite>& tensors,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafeTensorsWriter();  // without commit: the temporary file is removed
  void write_f32(const float* x, size_t n);
  void commit();

 private:
  std::vector<SafeTensorToWrite> tensors_;
  std::vector<size_t> sizes_;  // bytes of each tensor
  std::unique_ptr<AtomicFileWriter> file_;
  size_t tensor_ = 0, done_ = 0;  // the tensor being written, its values written so far
  std::vector<uint16_t> buf_;
};

// bf16 <-> fp32 on the host (round to nearest even; NaN stays NaN).
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);
float f16_to_float(uint16_t h);
