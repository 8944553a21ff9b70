#include "model/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/file_io.h"
#include "common/hash.h"
#include "common/json_file.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace fs = std::filesystem;

std::string layout_fingerprint(const ParamLayout& layout) {
  std::string s;
  for (const auto& t : layout.tensors) {
    s += t.name;
    for (int64_t d : t.shape) s.append(":").append(std::to_string(d));
    s.append("@").append(std::to_string(t.offset)).append(";");
  }
  s.append("total=").append(std::to_string(layout.total));
  return hash_hex(hash64(s));
}

// Index of the first non-finite value, or n.
static size_t first_non_finite(const float* x, size_t n) {
  size_t first = n;
#pragma omp parallel for reduction(min : first)
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]) && i < first) first = i;
  return first;
}

// x holds the flat elements [base, base + n) (the whole buffer by default).
static void check_finite(const float* x, const ParamLayout& layout, const std::string& dir, const char* what,
                         size_t base = 0, size_t n = SIZE_MAX) {
  if (n == SIZE_MAX) n = layout.total;
  size_t j = first_non_finite(x, n);
  if (j == n) return;
  const size_t i = base + j;
  std::string tensor = "?";
  for (const auto& t : layout.tensors)
    if (i >= t.offset && i < t.offset + t.numel) tensor = t.name;
  fail(dir, ": refusing to save a checkpoint: ", what, " of tensor '", tensor, "' holds a non-finite value (",
       x[j], ") at flat index ", i);
}

static std::string generation_config_json(const LlamaConfig& c) {
  nlohmann::json g;
  auto one_or_list = [](const std::vector<int>& ids) -> nlohmann::json {
    if (ids.size() == 1) return ids[0];
    return ids;
  };
  if (!c.bos_token_id.empty()) g["bos_token_id"] = one_or_list(c.bos_token_id);
  if (!c.eos_token_id.empty()) g["eos_token_id"] = one_or_list(c.eos_token_id);
  g["do_sample"] = false;
  return g.dump(2) + "\n";
}

static std::string clean_dir(const std::string& dir) {
  std::string clean = dir;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  return clean;
}
static std::string tmp_dir(const std::string& dir) { return clean_dir(dir) + ".tmp"; }

static std::string shard_file_name(int rank, int world) {
  char name[96];
  std::snprintf(name, sizeof name, "optimizer-%05d-of-%05d.safetensors", rank + 1, world);
  return name;
}

void begin_checkpoint(const std::string& dir) {
  const std::string tmp = tmp_dir(dir);
  remove_tree(tmp);  // a leftover of an interrupted save
  make_dirs(tmp);
}

void abandon_checkpoint(const std::string& dir) { remove_tree(tmp_dir(dir)); }

// Swaps DIR.tmp in. rename() cannot replace a non-empty directory, so an existing DIR is first
// moved aside, then deleted once the new one is in place (recover_run_dir puts it back if the
// process dies in between).
static void commit_checkpoint(const std::string& dir) {
  const std::string clean = clean_dir(dir), tmp = tmp_dir(dir);
  std::string old;
  if (fs::exists(clean)) {
    old = clean + ".old." + std::to_string(getpid());
    remove_tree(old);
    check(std::rename(clean.c_str(), old.c_str()) == 0, clean, ": cannot move the previous checkpoint aside");
  }
  check(std::rename(tmp.c_str(), clean.c_str()) == 0, tmp, ": cannot rename to ", clean);
  fsync_dir(dirname_of(clean));
  if (!old.empty()) remove_tree(old);
}

// Test hook: ENGINE_DEBUG_CHECKPOINT_PAUSE=NAME stops a save into a directory named NAME half-way
// (weights written, optimizer state not yet; in a sharded save every rank's optimizer shard and
// weight files are written),
// creates NAME.tmp/.paused and waits until that file is deleted, so that a test can act (SIGKILL,
// a second writer) at a known point of the write.
static void debug_pause_if_asked(const std::string& tmp) {
  static const char* name = std::getenv("ENGINE_DEBUG_CHECKPOINT_PAUSE");
  if (!name || *name == '\0') return;
  std::string base = tmp.substr(0, tmp.size() - 4);  // without ".tmp"
  base = base.substr(base.find_last_of('/') + 1);
  if (base != name) return;
  write_file_atomic(tmp + "/.paused", std::to_string(getpid()) + "\n");
  while (file_exists(tmp + "/.paused")) usleep(10000);
}

// The rest of the Hugging Face part: tokenizer, generation config.
static void write_model_extras(const std::string& tmp, const CheckpointToSave& ck) {
  if (!ck.tokenizer_json.empty()) write_file_atomic(tmp + "/tokenizer.json", ck.tokenizer_json);
  write_file_atomic(tmp + "/generation_config.json", generation_config_json(*ck.config));
}

// trainer_state.json is written last: its presence marks a complete checkpoint. The caller's extra
// files (write_extra) go in just before it.
static void write_trainer_state(const std::string& tmp, const CheckpointToSave& ck) {
  if (ck.write_extra) ck.write_extra(tmp);
  nlohmann::json state = ck.trainer_state;
  state["format_version"] = kCheckpointFormatVersion;
  write_file_atomic(tmp + "/trainer_state.json", state.dump(2) + "\n");
  fsync_dir(tmp);
}

void save_checkpoint(const std::string& dir, const CheckpointToSave& ck) {
  check(ck.config && ck.layout && ck.params && ck.adam_m && ck.adam_v, dir, ": save_checkpoint: missing state");
  check(ck.moments_dtype == "F32" || ck.moments_dtype == "BF16", dir, ": save_checkpoint: moments_dtype '",
        ck.moments_dtype, "' is not F32 or BF16");
  const ParamLayout& layout = *ck.layout;
  check_finite(ck.params, layout, dir, "weight");
  check_finite(ck.adam_m, layout, dir, "AdamW first moment");
  check_finite(ck.adam_v, layout, dir, "AdamW second moment");
  const std::string tmp = tmp_dir(dir);
  begin_checkpoint(dir);
  try {
    save_weights(tmp, *ck.config, layout, ck.params, ck.weights_dtype, ck.max_shard_bytes);
    debug_pause_if_asked(tmp);
    write_model_extras(tmp, ck);
    const std::vector<int64_t> flat = {int64_t(layout.total)};
    write_safetensors(tmp + "/optimizer.safetensors",
                      {{"master_weights", "F32", flat, ck.params},
                       {"adamw.exp_avg", ck.moments_dtype, flat, ck.adam_m},
                       {"adamw.exp_avg_sq", ck.moments_dtype, flat, ck.adam_v}},
                      {{"format", "engine-optimizer"},
                       {"layout_fingerprint", layout_fingerprint(layout)},
                       {"param_total", std::to_string(layout.total)}});
    write_trainer_state(tmp, ck);
  } catch (...) {  // e.g. a full disk: the partial directory goes, the previous checkpoints stay
    abandon_checkpoint(dir);
    throw;
  }
  commit_checkpoint(dir);
}

void write_optimizer_shard(const std::string& dir, const OptimizerShardToSave& sh) {
  check(sh.layout && sh.params && sh.adam_m && sh.adam_v, dir, ": write_optimizer_shard: missing state");
  check(sh.moments_dtype == "F32" || sh.moments_dtype == "BF16", dir, ": write_optimizer_shard: moments_dtype '",
        sh.moments_dtype, "' is not F32 or BF16");
  const ParamLayout& layout = *sh.layout;
  check(sh.begin <= layout.total && sh.count <= layout.total - sh.begin, dir, ": write_optimizer_shard: [",
        sh.begin, ", ", sh.begin + sh.count, ") is outside the ", layout.total, " parameters");
  check_finite(sh.params, layout, dir, "weight", sh.begin, sh.count);
  check_finite(sh.adam_m, layout, dir, "AdamW first moment", sh.begin, sh.count);
  check_finite(sh.adam_v, layout, dir, "AdamW second moment", sh.begin, sh.count);
  const std::string tmp = tmp_dir(dir);
  check(dir_exists(tmp), tmp, ": missing (rank 0 creates it before the ranks write their shards)");
  const std::vector<int64_t> flat = {int64_t(sh.count)};
  write_safetensors(tmp + "/" + shard_file_name(sh.rank, sh.world),
                    {{"master_weights", "F32", flat, sh.params},
                     {"adamw.exp_avg", sh.moments_dtype, flat, sh.adam_m},
                     {"adamw.exp_avg_sq", sh.moments_dtype, flat, sh.adam_v}},
                    {{"format", "engine-optimizer-shard"},
                     {"layout_fingerprint", layout_fingerprint(layout)},
                     {"param_total", std::to_string(layout.total)},
                     {"begin", std::to_string(sh.begin)},
                     {"end", std::to_string(sh.begin + sh.count)}});
}

std::vector<int> weight_file_writers(const std::vector<WeightFile>& files, const std::vector<size_t>& bounds,
                                     int world) {
  std::vector<int> writers;
  for (size_t i = 0; i < files.size(); i++) {
    if (bounds.empty()) {
      writers.push_back(int(i % size_t(world)));
      continue;
    }
    int best = 0;
    size_t most = 0;
    for (int r = 0; r + 1 < int(bounds.size()); r++) {
      const size_t a = std::max(files[i].begin, bounds[r]), b = std::min(files[i].end, bounds[r + 1]);
      if (a < b && b - a > most) most = b - a, best = r;
    }
    writers.push_back(best);
  }
  return writers;
}

void write_weight_files(const std::string& dir, const WeightFilesToSave& w) {
  check(w.layout && w.fetch && w.world >= 1 && w.rank >= 0 && w.rank < w.world, dir,
        ": write_weight_files: missing state");
  check(w.bounds.empty() || (w.bounds.size() == size_t(w.world) + 1 && w.bounds.front() == 0 &&
                             w.bounds.back() == w.layout->total && std::is_sorted(w.bounds.begin(), w.bounds.end())),
        dir, ": write_weight_files: the slice bounds do not cover the ", w.layout->total, " parameters");
  const std::string tmp = tmp_dir(dir);
  const std::vector<WeightFile> files = plan_weight_files(*w.layout, w.dtype, w.max_shard_bytes);
  const std::vector<int> writers = weight_file_writers(files, w.bounds, w.world);
  std::string err;
  for (size_t i = 0; i < files.size(); i++) {
    const int writer = writers[i];
    if (writer != w.rank) {  // take part in the collectives that bring the file's values to its writer
      for (const auto& [a, b] : weight_file_pieces(*w.layout, files[i], w.chunk)) w.fetch(a, b, writer, nullptr);
      continue;
    }
    try {
      write_weight_file(tmp, *w.layout, w.dtype, files[i], w.chunk, [&](size_t a, size_t b, float* dst) {
        w.fetch(a, b, writer, dst);
        check(err.empty(), err);  // after an earlier file's failure the values go nowhere
        check_finite(dst, *w.layout, dir, "weight", a, b - a);
      });
    } catch (const std::exception& e) {
      if (err.empty()) err = e.what();
    }
  }
  check(err.empty(), err);
}

void finish_sharded_checkpoint(const std::string& dir, const CheckpointToSave& ck, const std::vector<size_t>& bounds) {
  check(ck.config && ck.layout, dir, ": finish_sharded_checkpoint: missing state");
  const ParamLayout& layout = *ck.layout;
  check(bounds.size() >= 2 && bounds.front() == 0 && bounds.back() == layout.total &&
            std::is_sorted(bounds.begin(), bounds.end()),
        dir, ": finish_sharded_checkpoint: the shard bounds do not cover the ", layout.total, " parameters");
  const std::string tmp = tmp_dir(dir);
  const int world = int(bounds.size()) - 1;
  try {
    nlohmann::json index;
    index["format"] = "engine-optimizer-index";
    index["param_total"] = layout.total;
    index["layout_fingerprint"] = layout_fingerprint(layout);
    index["moments_dtype"] = ck.moments_dtype;
    index["shards"] = nlohmann::json::array();
    for (int r = 0; r < world; r++) {
      const std::string file = shard_file_name(r, world);
      check(file_exists(tmp + "/" + file), tmp, "/", file, ": missing (rank ", r, " did not write its shard)");
      index["shards"].push_back({{"file", file}, {"begin", bounds[r]}, {"end", bounds[r + 1]}});
    }
    const std::vector<WeightFile> files = plan_weight_files(layout, ck.weights_dtype, ck.max_shard_bytes);
    const std::vector<int> writers = weight_file_writers(files, bounds, world);
    for (size_t i = 0; i < files.size(); i++)
      check(file_exists(tmp + "/" + files[i].name), tmp, "/", files[i].name, ": missing (rank ", writers[i],
            " did not write it)");
    write_weight_index(tmp, *ck.config, layout, ck.weights_dtype, files);
    debug_pause_if_asked(tmp);
    write_model_extras(tmp, ck);
    write_file_atomic(tmp + "/optimizer.index.json", index.dump(2) + "\n");
    write_trainer_state(tmp, ck);
  } catch (...) {
    abandon_checkpoint(dir);
    throw;
  }
  commit_checkpoint(dir);
}

std::vector<std::string> stage_prompt_templates(const nlohmann::json& st, const std::string& where) {
  std::vector<std::string> out;
  if (st.contains("earlier_stage_templates")) {
    const auto& e = st["earlier_stage_templates"];
    check(e.is_array(), where, ": field 'earlier_stage_templates' is not an array");
    for (const auto& t : e) {
      check(t.is_string(), where, ": field 'earlier_stage_templates' holds a non-string");
      out.push_back(t.get<std::string>());
    }
  }
  if (st.contains("prompt_template")) {
    check(st["prompt_template"].is_string(), where, ": field 'prompt_template' is not a string");
    out.push_back(st["prompt_template"].get<std::string>());
  }
  return out;
}

ResumeState parse_resume_state(const nlohmann::json& st, const std::string& where) {
  ResumeState r;
  check(st.is_object(), where, ": expected a JSON object");
  auto integer = [&](const char* key, int64_t& out, int64_t hi, bool required) {
    if (!st.contains(key)) {
      check(!required, where, ": field '", key, "' missing");
      return;
    }
    const auto& v = st[key];
    check(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= hi, where, ": field '", key,
          "' must be an integer in [0, ", hi, "]");
    out = v.get<int64_t>();
  };
  const int64_t big = int64_t(1) << 62;
  integer("step", r.step, big, true);
  int64_t adam_step = r.step;
  integer("adam_step", adam_step, INT32_MAX, false);
  check(adam_step <= INT32_MAX, where, ": field 'adam_step' missing and 'step' is beyond the int range");
  r.adam_step = int(adam_step);
  integer("loss_below_count", r.loss_below_count, big, false);
  integer("tokens_seen", r.tokens_seen, big, false);
  if (st.contains("elapsed_s")) {
    check(st["elapsed_s"].is_number() && std::isfinite(st["elapsed_s"].get<double>()) &&
              st["elapsed_s"].get<double>() >= 0,
          where, ": field 'elapsed_s' must be a non-negative number");
    r.elapsed_s = st["elapsed_s"].get<double>();
  }
  if (st.contains("evals")) {
    check(st["evals"].is_array(), where, ": field 'evals' must be an array");
    r.evals = st["evals"];
  }
  check(st.contains("data_cursor"), where, ": field 'data_cursor' missing");
  r.data_cursor = st["data_cursor"];
  check(st.contains("args") && st["args"].is_object(), where, ": field 'args' missing or not an object");
  for (auto it = st["args"].begin(); it != st["args"].end(); ++it) {
    check(it->is_array(), where, ": field 'args': option '", it.key(), "' must be a list of strings");
    std::vector<std::string>& values = r.args[it.key()];
    for (const auto& v : *it) {
      check(v.is_string(), where, ": field 'args': option '", it.key(), "' must be a list of strings");
      values.push_back(v.get<std::string>());
    }
  }
  r.earlier_stage_templates = stage_prompt_templates(st, where);
  if (!r.earlier_stage_templates.empty()) r.earlier_stage_templates.pop_back();  // this stage's own
  return r;
}

bool is_training_checkpoint(const std::string& dir) {
  return file_exists(dir + "/trainer_state.json") &&
         (file_exists(dir + "/optimizer.safetensors") || file_exists(dir + "/optimizer.index.json"));
}

nlohmann::json load_trainer_state(const std::string& dir) {
  const std::string path = dir + "/trainer_state.json";
  nlohmann::json j = read_json_file(path);
  check(j.is_object(), path, ": expected a JSON object");
  check(j.contains("format_version") && j["format_version"].is_number_integer(), path,
        ": field 'format_version' is missing or not an integer");
  int v = j["format_version"].get<int>();
  check(v == kCheckpointFormatVersion, path, ": field 'format_version' is ", v, ", this build reads version ",
        kCheckpointFormatVersion);
  return j;
}

// Elements [a, b) of the flat buffer from tensor t, which holds the flat elements from t_base on
// (F32 or BF16), into dst[0, b - a); every value must be finite.
static void read_flat_range(const SafeTensorInfo& t, size_t t_base, size_t a, size_t b, float* dst) {
  const size_t n = (size_t)t.numel();
  check(t.shape.size() == 1 && a >= t_base && b <= t_base + n && a <= b, t.file, ": tensor '", t.name,
        "' does not hold the flat elements [", a, ", ", b, ")");
  check(t.dtype == "F32" || t.dtype == "BF16", t.file, ": tensor '", t.name, "' has dtype ", t.dtype,
        " (F32 or BF16 expected)");
  const size_t off = a - t_base;
  if (t.dtype == "F32") {
    std::memcpy(dst, t.data + off * 4, (b - a) * 4);
  } else {
    for (size_t i = 0; i < b - a; i++) {
      uint16_t h;
      std::memcpy(&h, t.data + (off + i) * 2, 2);
      dst[i] = bf16_to_float(h);
    }
  }
  const size_t bad = first_non_finite(dst, b - a);
  check(bad == b - a, t.file, ": tensor '", t.name, "' holds a non-finite value at flat index ", a + bad);
}

static const char* const kOptimizerTensors[3] = {"master_weights", "adamw.exp_avg", "adamw.exp_avg_sq"};

void load_optimizer_state(const std::string& dir, const ParamLayout& layout, float* params, size_t begin,
                          size_t count, float* adam_m, float* adam_v) {
  const size_t total = layout.total;
  check(begin <= total && count <= total - begin, dir, ": load_optimizer_state: [", begin, ", ", begin + count,
        ") is outside the ", total, " parameters");
  // What to read: tensor k's flat range [lo[k], hi[k]) into out[k] (indexed from lo[k]).
  float* out[3] = {params, adam_m, adam_v};
  const size_t lo[3] = {0, begin, begin}, hi[3] = {params ? total : 0, begin + count, begin + count};
  const std::string single = dir + "/optimizer.safetensors";
  if (file_exists(single)) {
    SafeTensors st = SafeTensors::open(single);
    auto meta = st.metadata.find("layout_fingerprint");
    check(meta != st.metadata.end(), single, ": metadata field 'layout_fingerprint' is missing");
    check(meta->second == layout_fingerprint(layout), single,
          ": field 'layout_fingerprint' does not match the model (the checkpoint was made for another config)");
    for (int k = 0; k < 3; k++) {
      const SafeTensorInfo& t = st.get(kOptimizerTensors[k]);
      check(t.shape == std::vector<int64_t>{int64_t(total)}, single, ": tensor '", t.name, "' is not [", total, "]");
      if (out[k] && hi[k] > lo[k]) read_flat_range(t, 0, lo[k], hi[k], out[k]);
    }
    return;
  }
  const std::string path = dir + "/optimizer.index.json";
  check(file_exists(path), dir, ": no optimizer state (neither optimizer.safetensors nor optimizer.index.json)");
  const nlohmann::json index = read_json_file(path);
  check(index.is_object() && index.value("format", "") == "engine-optimizer-index", path,
        ": field 'format' is not \"engine-optimizer-index\"");
  check(index.contains("param_total") && index["param_total"].is_number_unsigned() &&
            index["param_total"].get<size_t>() == total,
        path, ": field 'param_total' does not match the model's ", total, " parameters");
  check(index.value("layout_fingerprint", "") == layout_fingerprint(layout), path,
        ": field 'layout_fingerprint' does not match the model (the checkpoint was made for another config)");
  check(index.contains("shards") && index["shards"].is_array() && !index["shards"].empty(), path,
        ": field 'shards' missing or empty");
  size_t expect = 0;
  for (const auto& sh : index["shards"]) {
    check(sh.is_object() && sh.contains("file") && sh["file"].is_string() && sh.contains("begin") &&
              sh["begin"].is_number_unsigned() && sh.contains("end") && sh["end"].is_number_unsigned(),
          path, ": field 'shards': each entry needs 'file' (string), 'begin' and 'end' (integers)");
    const std::string file = sh["file"].get<std::string>();
    const size_t b = sh["begin"].get<size_t>(), e = sh["end"].get<size_t>();
    check(file.find('/') == std::string::npos, path, ": field 'shards': file '", file, "' must be a plain name");
    check(b == expect && e >= b && e <= total, path, ": field 'shards': [", b, ", ", e, ") of ", file,
          " does not continue the shards before it at ", expect);
    expect = e;
    bool needed = false;
    for (int k = 0; k < 3; k++) needed |= out[k] && std::max(lo[k], b) < std::min(hi[k], e);
    if (!needed) continue;
    const std::string fpath = dir + "/" + file;
    SafeTensors st = SafeTensors::open(fpath);
    auto field = [&](const char* key) {
      auto it = st.metadata.find(key);
      check(it != st.metadata.end(), fpath, ": metadata field '", key, "' is missing");
      return it->second;
    };
    check(field("layout_fingerprint") == layout_fingerprint(layout), fpath,
          ": field 'layout_fingerprint' does not match the model");
    check(field("begin") == std::to_string(b) && field("end") == std::to_string(e), fpath,
          ": metadata 'begin'/'end' do not match [", b, ", ", e, ") of ", path);
    for (int k = 0; k < 3; k++) {
      const size_t a0 = std::max(lo[k], b), a1 = std::min(hi[k], e);
      if (!out[k] || a0 >= a1) continue;
      const SafeTensorInfo& t = st.get(kOptimizerTensors[k]);
      check(t.shape == std::vector<int64_t>{int64_t(e - b)}, fpath, ": tensor '", t.name, "' is not [", e - b, "]");
      read_flat_range(t, b, a0, a1, out[k] + (a0 - lo[k]));
    }
  }
  check(expect == total, path, ": field 'shards' ends at ", expect, ", not at the ", total, " parameters");
}

void load_optimizer_state(const std::string& dir, const ParamLayout& layout, float* params, float* adam_m,
                          float* adam_v) {
  load_optimizer_state(dir, layout, params, 0, layout.total, adam_m, adam_v);
}

std::string run_checkpoint_dir(const std::string& out_dir, int64_t step) {
  return out_dir + "/checkpoint-" + std::to_string(step);
}

std::vector<RunCheckpoint> list_run_checkpoints(const std::string& out_dir) {
  std::vector<RunCheckpoint> found;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return found;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    if (!e.is_directory()) continue;
    const std::string name = e.path().filename().string();
    const std::string prefix = "checkpoint-";
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string num = name.substr(prefix.size());
    if (num.empty() || num.size() > 18 || !std::all_of(num.begin(), num.end(), ::isdigit)) continue;  // .tmp, .old
    if (!is_training_checkpoint(e.path().string())) continue;
    found.push_back({std::stoll(num), e.path().string()});
  }
  std::sort(found.begin(), found.end(), [](const RunCheckpoint& a, const RunCheckpoint& b) { return a.step < b.step; });
  return found;
}

std::string resolve_resume_dir(const std::string& path) {
  if (is_training_checkpoint(path)) return path;
  check(dir_exists(path), "--resume ", path, ": no such directory");
  auto all = list_run_checkpoints(path);
  check(!all.empty(), "--resume ", path,
        ": neither a checkpoint (trainer_state.json + optimizer.safetensors) nor a run directory holding "
        "checkpoint-<step> directories");
  return all.back().dir;
}

std::vector<std::string> recover_run_dir(const std::string& out_dir) {
  std::vector<std::string> notes;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return notes;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out_dir, ec))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  auto is_ours = [](const std::string& n) { return n.rfind("checkpoint-", 0) == 0 || n.rfind("final", 0) == 0; };
  for (const std::string& n : names) {  // DIR.old.<pid>: the previous DIR, moved aside by a save
    auto pos = n.rfind(".old.");
    if (pos == std::string::npos || !is_ours(n)) continue;
    const std::string base = out_dir + "/" + n.substr(0, pos), path = out_dir + "/" + n;
    if (!fs::exists(base, ec) && is_training_checkpoint(path) && std::rename(path.c_str(), base.c_str()) == 0) {
      notes.push_back("note: " + path + ": restored as " + base + " (a checkpoint save was interrupted while " +
                      "replacing it)");
    } else {
      remove_tree(path);
      notes.push_back("note: removed " + path + ", left by an interrupted checkpoint save");
    }
  }
  for (const std::string& n : names) {
    if (!is_ours(n) || n.size() < 5 || n.compare(n.size() - 4, 4, ".tmp") != 0) continue;
    remove_tree(out_dir + "/" + n);
    notes.push_back("note: removed " + out_dir + "/" + n + ", the partial write of an interrupted checkpoint save");
  }
  return notes;
}

void rotate_run_checkpoints(const std::string& out_dir, int keep) {
  if (keep <= 0) return;
  auto all = list_run_checkpoints(out_dir);
  for (size_t i = 0; i + size_t(keep) < all.size(); ++i) remove_tree(all[i].dir);
}
