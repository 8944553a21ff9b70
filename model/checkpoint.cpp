#include "model/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include <cstdlib>

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

static void check_finite(const float* x, const ParamLayout& layout, const std::string& dir, const char* what) {
  size_t i = first_non_finite(x, layout.total);
  if (i == layout.total) return;
  std::string tensor = "?";
  for (const auto& t : layout.tensors)
    if (i >= t.offset && i < t.offset + t.numel) tensor = t.name;
  fail(dir, ": refusing to save a checkpoint: ", what, " of tensor '", tensor, "' holds a non-finite value (",
       x[i], ") at flat index ", i);
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

static void write_checkpoint_files(const std::string& tmp, const CheckpointToSave& ck);

void save_checkpoint(const std::string& dir, const CheckpointToSave& ck) {
  check(ck.config && ck.layout && ck.params && ck.adam_m && ck.adam_v, dir, ": save_checkpoint: missing state");
  check(ck.moments_dtype == "F32" || ck.moments_dtype == "BF16", dir, ": save_checkpoint: moments_dtype '",
        ck.moments_dtype, "' is not F32 or BF16");
  const ParamLayout& layout = *ck.layout;
  check_finite(ck.params, layout, dir, "weight");
  check_finite(ck.adam_m, layout, dir, "AdamW first moment");
  check_finite(ck.adam_v, layout, dir, "AdamW second moment");

  std::string clean = dir;
  while (clean.size() > 1 && clean.back() == '/') clean.pop_back();
  const std::string tmp = clean + ".tmp";
  remove_tree(tmp);  // a leftover of an interrupted save
  try {
    write_checkpoint_files(tmp, ck);
  } catch (...) {  // e.g. a full disk: the partial directory goes, the previous checkpoints stay
    remove_tree(tmp);
    throw;
  }

  // Swap in the new directory. rename() cannot replace a non-empty directory, so an existing DIR
  // is first moved aside, then deleted once the new one is in place (recover_run_dir puts it back
  // if the process dies in between).
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
// (weights written, optimizer state not yet), creates NAME.tmp/.paused and waits until that file
// is deleted, so that a test can act (SIGKILL, a second writer) at a known point of the write.
static void debug_pause_if_asked(const std::string& tmp) {
  static const char* name = std::getenv("ENGINE_DEBUG_CHECKPOINT_PAUSE");
  if (!name || *name == '\0') return;
  std::string base = tmp.substr(0, tmp.size() - 4);  // without ".tmp"
  base = base.substr(base.find_last_of('/') + 1);
  if (base != name) return;
  write_file_atomic(tmp + "/.paused", std::to_string(getpid()) + "\n");
  while (file_exists(tmp + "/.paused")) usleep(10000);
}

static void write_checkpoint_files(const std::string& tmp, const CheckpointToSave& ck) {
  const ParamLayout& layout = *ck.layout;
  make_dirs(tmp);
  save_weights(tmp, *ck.config, layout, ck.params, ck.weights_dtype);
  debug_pause_if_asked(tmp);
  if (!ck.tokenizer_json.empty()) write_file_atomic(tmp + "/tokenizer.json", ck.tokenizer_json);
  write_file_atomic(tmp + "/generation_config.json", generation_config_json(*ck.config));

  const std::vector<int64_t> flat = {int64_t(layout.total)};
  write_safetensors(tmp + "/optimizer.safetensors",
                    {{"master_weights", "F32", flat, ck.params},
                     {"adamw.exp_avg", ck.moments_dtype, flat, ck.adam_m},
                     {"adamw.exp_avg_sq", ck.moments_dtype, flat, ck.adam_v}},
                    {{"format", "engine-optimizer"},
                     {"layout_fingerprint", layout_fingerprint(layout)},
                     {"param_total", std::to_string(layout.total)}});

  if (ck.write_extra) ck.write_extra(tmp);

  nlohmann::json state = ck.trainer_state;
  state["format_version"] = kCheckpointFormatVersion;
  // trainer_state.json is written last: its presence marks a complete checkpoint.
  write_file_atomic(tmp + "/trainer_state.json", state.dump(2) + "\n");
  fsync_dir(tmp);
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
  return file_exists(dir + "/trainer_state.json") && file_exists(dir + "/optimizer.safetensors");
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

void load_optimizer_state(const std::string& dir, const ParamLayout& layout, float* params, float* adam_m,
                          float* adam_v) {
  const std::string path = dir + "/optimizer.safetensors";
  SafeTensors st = SafeTensors::open(path);
  auto meta = st.metadata.find("layout_fingerprint");
  check(meta != st.metadata.end(), path, ": metadata field 'layout_fingerprint' is missing");
  check(meta->second == layout_fingerprint(layout), path,
        ": field 'layout_fingerprint' does not match the model (the checkpoint was made for another config)");
  const std::vector<int64_t> flat = {int64_t(layout.total)};
  st.read_f32("master_weights", params, flat);
  st.read_f32("adamw.exp_avg", adam_m, flat);
  st.read_f32("adamw.exp_avg_sq", adam_v, flat);
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
