#include "larimar/memory_file.h"

#include <cstdio>
#include <cstring>
#include <map>

#include "common/error.h"
#include "model/safetensors.h"

namespace larimar {

namespace {

const char* kFormat = "larimar-memory";
const char* kVersion = "1";

// A row-major F64 tensor of the given shape, every value finite.
template <typename Matrix>
Matrix read_f64(const SafeTensors& st, const std::string& path, const std::string& name, int64_t rows,
                int64_t cols) {
  check(st.has(name), path, ": missing tensor '", name, "'");
  const SafeTensorInfo& t = st.get(name);
  check(t.dtype == "F64", path, ": tensor '", name, "' has dtype ", t.dtype, ", expected F64");
  check(t.shape.size() == 2 && t.shape[0] > 0 && t.shape[1] > 0 && (rows < 0 || t.shape[0] == rows) &&
            (cols < 0 || t.shape[1] == cols),
        path, ": tensor '", name, "' has shape [", t.shape.size() > 0 ? t.shape[0] : -1, ", ",
        t.shape.size() > 1 ? t.shape[1] : -1, "], expected [", rows < 0 ? std::string("K") : std::to_string(rows),
        ", ", cols < 0 ? std::string("C") : std::to_string(cols), "]");
  Mat m(t.shape[0], t.shape[1]);
  std::memcpy(m.data(), t.data, size_t(m.size()) * sizeof(double));
  check(m.allFinite(), path, ": tensor '", name, "' has non-finite values");
  return Matrix(m);
}

const std::string& meta(const SafeTensors& st, const std::string& path, const std::string& key) {
  auto it = st.metadata.find(key);
  check(it != st.metadata.end(), path, ": missing metadata field '", key, "' (not a Larimar memory file?)");
  return it->second;
}

}  // namespace

void save_memory(const std::string& path, const SequentialMemory& mem, const std::string& encoder) {
  check(!encoder.empty(), path, ": a memory file needs the identity of its encoder");
  const Mat& M = mem.memory();
  const Mat C = mem.precision();
  const Mat& P = mem.reference_pinv();
  const int64_t K = M.rows(), Cz = M.cols();
  char rcond[32];
  std::snprintf(rcond, sizeof rcond, "%.17g", mem.min_rcond());
  write_safetensors(path,
                    {{"M", "F64", {K, Cz}, M.data()}, {"C", "F64", {K, K}, C.data()},
                     {"ref_pinv", "F64", {Cz, K}, P.data()}},
                    {{"format", kFormat},
                     {"version", kVersion},
                     {"encoder", encoder},
                     {"rows", std::to_string(mem.rows())},
                     {"min_rcond", rcond}});
}

SequentialMemory load_memory(const std::string& path, const std::string& encoder) {
  SafeTensors st = SafeTensors::open(path);
  check(meta(st, path, "format") == kFormat, path, ": metadata 'format' is '", meta(st, path, "format"),
        "', expected '", kFormat, "'");
  check(meta(st, path, "version") == kVersion, path, ": metadata 'version' is '", meta(st, path, "version"),
        "', this build reads version ", kVersion);
  const std::string& written_by = meta(st, path, "encoder");
  check(written_by == encoder, path, ": the memory was written with encoder '", written_by,
        "', refusing to use it with encoder '", encoder, "' (its codes would be meaningless)");
  int64_t rows = 0;
  double min_rcond = 0;
  try {
    size_t used = 0;
    rows = std::stoll(meta(st, path, "rows"), &used);
    check(used == meta(st, path, "rows").size() && rows >= 0, "");
    min_rcond = std::stod(meta(st, path, "min_rcond"), &used);
    check(used == meta(st, path, "min_rcond").size(), "");
  } catch (const std::exception&) {
    fail(path, ": metadata 'rows' ('", meta(st, path, "rows"), "') or 'min_rcond' ('", meta(st, path, "min_rcond"),
         "') is not a number");
  }
  check(min_rcond > 0 && min_rcond < 1, path, ": metadata 'min_rcond' must be in (0, 1), got ", min_rcond);
  Mat M = read_f64<Mat>(st, path, "M", -1, -1);
  const int64_t K = M.rows(), Cz = M.cols();
  Eigen::MatrixXd C = read_f64<Eigen::MatrixXd>(st, path, "C", K, K);
  check(C == C.transpose(), path, ": tensor 'C' is not symmetric");
  Mat P = read_f64<Mat>(st, path, "ref_pinv", Cz, K);
  try {
    return SequentialMemory::from_state(std::move(M), std::move(C), std::move(P), rows, min_rcond);
  } catch (const EngineError& e) {
    fail(path, ": ", e.what());
  }
}

}  // namespace larimar
