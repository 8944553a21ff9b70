#include "model/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/json_file.h"

using nlohmann::json;

uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1);  // round to nearest, ties to even
  return uint16_t(u >> 16);
}

float bf16_to_float(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

float f16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalize
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) { mant <<= 1; exp--; }
      u = sign | (exp << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static size_t dtype_size(const std::string& d) {
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "BF16" || d == "F16" || d == "I16" || d == "U16") return 2;
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "I8" || d == "U8" || d == "BOOL" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

int64_t SafeTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

static std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Parses and validates one file's header; adds its tensors to `out`.
static void parse_file(SafeTensors& out, std::unique_ptr<MappedFile> f) {
  const std::string& p = f->path;
  check(f->size >= 8, p, ": not a safetensors file (", f->size, " bytes, need at least 8)");
  uint64_t n;
  std::memcpy(&n, f->data, 8);
  check(n <= f->size - 8, p, ": header length ", n, " runs past the end of the file (", f->size, " bytes)");
  check(n <= (100u << 20), p, ": header length ", n, " exceeds the 100 MB limit");
  json h;
  try {
    h = json::parse(f->data + 8, f->data + 8 + n);
  } catch (const json::exception& e) {
    fail(p, ": corrupt header JSON: ", e.what());
  }
  check(h.is_object(), p, ": header is not a JSON object");
  const uint8_t* base = f->data + 8 + n;
  const size_t data_size = f->size - 8 - n;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      check(it->is_object(), p, ": __metadata__ must be an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        check(m->is_string(), p, ": __metadata__ value '", m.key(), "' must be a string");
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const std::string& name = it.key();
    const json& t = *it;
    check(t.is_object() && t.contains("dtype") && t["dtype"].is_string() && t.contains("shape") &&
              t["shape"].is_array() && t.contains("data_offsets") && t["data_offsets"].is_array() &&
              t["data_offsets"].size() == 2,
          p, ": tensor '", name, "': malformed header entry");
    SafeTensorInfo info;
    info.name = name;
    info.file = p;
    info.dtype = t["dtype"];
    size_t es = dtype_size(info.dtype);
    check(es > 0, p, ": tensor '", name, "': unknown dtype '", info.dtype, "'");
    // The element count stays below 2^40 at every step (checked before multiplying), so neither
    // it nor numel() can overflow, whatever the dimensions (a zero dimension makes it 0).
    uint64_t numel = 1;
    bool zero = false;
    for (const auto& d : t["shape"]) {
      check(d.is_number_integer() && d.get<int64_t>() >= 0, p, ": tensor '", name, "': bad shape entry");
      info.shape.push_back(d.get<int64_t>());
      const uint64_t dim = uint64_t(info.shape.back());
      check(dim < (uint64_t(1) << 40) && (zero || dim == 0 || numel <= ((uint64_t(1) << 40) - 1) / dim), p,
            ": tensor '", name, "': shape ", shape_str(info.shape), "... too large");
      zero = zero || dim == 0;
      numel = zero ? 0 : numel * dim;
    }
    const json& o = t["data_offsets"];
    check(o[0].is_number_unsigned() && o[1].is_number_unsigned(), p, ": tensor '", name, "': data_offsets must be non-negative integers");
    uint64_t b = o[0], e = o[1];
    check(b <= e && e <= data_size, p, ": tensor '", name, "': data_offsets [", b, ", ", e,
          "] out of range (data section is ", data_size, " bytes)");
    check(e - b == numel * es, p, ": tensor '", name, "': data_offsets span ", e - b, " bytes but shape ",
          shape_str(info.shape), " of ", info.dtype, " needs ", numel * es);
    info.data = base + b;
    info.nbytes = e - b;
    check(!out.tensors.count(name), p, ": tensor '", name, "' appears twice");
    ranges.push_back({b, e});
    out.tensors[name] = std::move(info);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); i++)
    check(ranges[i].first >= ranges[i - 1].second || ranges[i].first == ranges[i].second, p,
          ": tensor data_offsets overlap at byte ", ranges[i].first);
  out.files.push_back(std::move(f));
}

SafeTensors SafeTensors::open(const std::string& path) {
  std::string p = path;
  if (dir_exists(p)) {
    if (file_exists(p + "/model.safetensors")) p += "/model.safetensors";
    else if (file_exists(p + "/model.safetensors.index.json")) p += "/model.safetensors.index.json";
    else fail(path, ": no model.safetensors or model.safetensors.index.json in this directory");
  }
  SafeTensors st;
  if (p.size() > 5 && p.compare(p.size() - 5, 5, ".json") == 0) {
    const json idx = read_json_file(p);
    check(idx.is_object() && idx.contains("weight_map") && idx["weight_map"].is_object(), p,
          ": missing field 'weight_map'");
    std::string dir = dirname_of(p);
    std::map<std::string, std::vector<std::string>> by_file;
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      check(it->is_string(), p, ": weight_map entry '", it.key(), "' must be a file name");
      std::string fn = it->get<std::string>();
      check(fn.find('/') == std::string::npos, p, ": weight_map entry '", it.key(), "' names a path outside the directory");
      by_file[fn].push_back(it.key());
    }
    for (const auto& [fn, names] : by_file) {
      parse_file(st, std::make_unique<MappedFile>(dir + "/" + fn));
      for (const auto& n : names)
        check(st.tensors.count(n) && st.tensors[n].file == dir + "/" + fn, p, ": tensor '", n,
              "' is listed in weight_map but missing from ", fn);
    }
  } else {
    parse_file(st, std::make_unique<MappedFile>(p));
  }
  return st;
}

const SafeTensorInfo& SafeTensors::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::string where = files.empty() ? std::string("safetensors") : files[0]->path;
    fail(where, ": missing tensor '", name, "'");
  }
  return it->second;
}

void SafeTensors::read_f32(const std::string& name, float* dst, const std::vector<int64_t>& expected) const {
  const SafeTensorInfo& t = get(name);
  if (!expected.empty())
    check(t.shape == expected, t.file, ": tensor '", name, "' has shape ", shape_str(t.shape), ", expected ",
          shape_str(expected));
  const int64_t n = t.numel();
  if (t.dtype == "F32") {
    std::memcpy(dst, t.data, size_t(n) * 4);
  } else if (t.dtype == "BF16" || t.dtype == "F16") {
    const bool bf = t.dtype == "BF16";
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      dst[i] = bf ? bf16_to_float(h) : f16_to_float(h);
    }
  } else {
    fail(t.file, ": tensor '", name, "' has dtype ", t.dtype, ", expected F32, BF16 or F16");
  }
  int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad)
  for (int64_t i = 0; i < n; i++)
    if (!std::isfinite(dst[i])) bad = std::max(bad, i);
  check(bad < 0, t.file, ": tensor '", name, "' has a non-finite value at index ", bad);
}

std::vector<float> SafeTensors::read_f32(const std::string& name) const {
  std::vector<float> v(size_t(get(name).numel()));
  read_f32(name, v.data(), {});
  return v;
}

std::vector<int32_t> SafeTensors::read_i32(const std::string& name) const {
  const SafeTensorInfo& t = get(name);
  std::vector<int32_t> v(size_t(t.numel()));
  if (t.dtype == "I32") {
    std::memcpy(v.data(), t.data, v.size() * 4);
  } else if (t.dtype == "I64") {
    for (size_t i = 0; i < v.size(); i++) {
      int64_t x;
      std::memcpy(&x, t.data + 8 * i, 8);
      check(x >= INT32_MIN && x <= INT32_MAX, t.file, ": tensor '", name, "': value out of int32 range");
      v[i] = int32_t(x);
    }
  } else {
    fail(t.file, ": tensor '", name, "' has dtype ", t.dtype, ", expected I32 or I64");
  }
  return v;
}

// The header (padded so that the data section starts 8-byte aligned) and each tensor's bytes.
static std::string safetensors_header(const std::string& path, const std::vector<SafeTensorToWrite>& tensors,
                                      const std::map<std::string, std::string>& metadata, std::vector<size_t>& sizes) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  size_t off = 0;
  sizes.clear();
  for (const auto& t : tensors) {
    size_t es = dtype_size(t.dtype);
    check(t.dtype == "F32" || t.dtype == "BF16" || t.dtype == "F64" || t.dtype == "I32" || t.dtype == "I64", path,
          ": cannot write tensor '", t.name, "' as ", t.dtype);
    size_t numel = 1;
    for (int64_t d : t.shape) numel *= size_t(d);
    sizes.push_back(numel * es);
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + numel * es}}};
    off += numel * es;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // align the data section to 8 bytes
  uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header;
}

void write_safetensors(const std::string& path, const std::vector<SafeTensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<size_t> sizes;
  const std::string header = safetensors_header(path, tensors, metadata, sizes);
  AtomicFileWriter w(path);
  w.write(header.data(), header.size());
  std::vector<uint16_t> buf;
  for (size_t i = 0; i < tensors.size(); i++) {
    const auto& t = tensors[i];
    if (t.dtype == "BF16") {
      size_t numel = sizes[i] / 2;
      buf.resize(numel);
      const float* src = static_cast<const float*>(t.data);
      for (size_t k = 0; k < numel; k++) buf[k] = float_to_bf16(src[k]);
      w.write(buf.data(), sizes[i]);
    } else {
      w.write(t.data, sizes[i]);
    }
  }
  w.commit();
}

SafeTensorsWriter::SafeTensorsWriter(const std::string& path, const std::vector<SafeTensorToWrite>& tensors,
                                     const std::map<std::string, std::string>& metadata)
    : tensors_(tensors) {
  for (const auto& t : tensors)
    check(t.dtype == "F32" || t.dtype == "BF16", path, ": SafeTensorsWriter: tensor '", t.name, "' is ", t.dtype,
          " (F32 or BF16 from fp32 values)");
  const std::string header = safetensors_header(path, tensors, metadata, sizes_);
  file_ = std::make_unique<AtomicFileWriter>(path);
  file_->write(header.data(), header.size());
}

SafeTensorsWriter::~SafeTensorsWriter() = default;

void SafeTensorsWriter::write_f32(const float* x, size_t n) {
  while (n > 0) {
    check(tensor_ < tensors_.size(), file_->path, ": SafeTensorsWriter: more values than the tensors hold");
    const SafeTensorToWrite& t = tensors_[tensor_];
    const bool bf16 = t.dtype == "BF16";
    const size_t numel = sizes_[tensor_] / (bf16 ? 2 : 4), k = std::min(n, numel - done_);
    if (bf16) {
      buf_.resize(k);
      for (size_t i = 0; i < k; i++) buf_[i] = float_to_bf16(x[i]);
      file_->write(buf_.data(), k * 2);
    } else {
      file_->write(x, k * 4);
    }
    x += k;
    n -= k;
    done_ += k;
    if (done_ == numel) {  // this tensor is complete
      tensor_++;
      done_ = 0;
    }
  }
}

void SafeTensorsWriter::commit() {
  // Zero-element tensors at the end hold no values.
  while (tensor_ < tensors_.size() && sizes_[tensor_] == 0) tensor_++;
  check(tensor_ == tensors_.size(), file_->path, ": SafeTensorsWriter: tensor '",
        tensor_ < tensors_.size() ? tensors_[tensor_].name : "", "' is incomplete");
  file_->commit();
}
