// Units of the training program: learning-rate schedules against the HF schedulers (fixture from
// dev/reference/gen_eval_schedule.py) and the checkpoint module (atomic directories, fp32 state
// round trip, refusal of non-finite values, rotation, resume resolution).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <set>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/params.h"
#include "model/safetensors.h"
#include "model/schedule.h"
#include "model/weights.h"

using nlohmann::json;

TEST_CASE("learning-rate schedules match the Hugging Face schedulers step by step") {
  json runs = json::parse(read_text_file("test/fixtures/eval/schedules.json"));
  REQUIRE(runs.size() >= 3);
  for (const auto& r : runs) {
    auto s = LrSchedule::make(parse_schedule_kind(r["kind"]), r["base_lr"].get<double>(), r["total"].get<int64_t>(),
                              r["warmup_ratio"].get<double>());
    const auto& lr = r["lr"];
    for (size_t i = 0; i < lr.size(); ++i) {
      INFO(r["kind"].get<std::string>() << " total " << r["total"] << " warmup " << r["warmup_ratio"] << " step " << i);
      REQUIRE(std::fabs(s.lr_at(int64_t(i)) - lr[i].get<double>()) <= 1e-12 + 1e-9 * lr[i].get<double>());
    }
  }
  REQUIRE_THROWS_WITH(parse_schedule_kind("step"), Catch::Contains("step") && Catch::Contains("--schedule"));
}

namespace {

struct TinyModel {
  LlamaConfig config;
  ParamLayout layout;
  std::vector<float> params, m, v;
  TinyModel() {
    json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 40},
              {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 2},
              {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"max_position_embeddings", 32},
              {"eos_token_id", 1}, {"bos_token_id", 0}};
    config = parse_config(j, "tiny config");
    layout = make_param_layout(config);
    params.resize(layout.total);
    init_weights(config, layout, params.data(), 7);
    m.resize(layout.total);
    v.resize(layout.total);
    for (size_t i = 0; i < layout.total; ++i) {
      m[i] = std::sin(float(i)) * 1e-3f;
      v[i] = float(i % 17) * 1e-6f;
    }
  }
  CheckpointToSave to_save(int64_t step) const {
    CheckpointToSave ck;
    ck.config = &config;
    ck.layout = &layout;
    ck.params = params.data();
    ck.adam_m = m.data();
    ck.adam_v = v.data();
    ck.trainer_state = {{"step", step}, {"prompt_template", "The value of key {key} is? {value}{eos}"}};
    return ck;
  }
};

std::string temp_dir(const char* tag) {
  std::string d = "build/test/tmp_" + std::string(tag) + "_" + std::to_string(getpid());
  remove_tree(d);
  make_dirs(d);
  return d;
}

}  // namespace

TEST_CASE("a checkpoint round-trips the fp32 state exactly and loads as a HF directory") {
  TinyModel t;
  std::string dir = temp_dir("ckpt");
  std::string ck = dir + "/checkpoint-5";
  save_checkpoint(ck, t.to_save(5));
  REQUIRE(is_training_checkpoint(ck));
  REQUIRE_FALSE(dir_exists(ck + ".tmp"));
  for (const char* f : {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json",
                        "generation_config.json"})
    REQUIRE(file_exists(ck + "/" + f));

  std::vector<float> p(t.layout.total), m(t.layout.total), v(t.layout.total), w(t.layout.total);
  load_optimizer_state(ck, t.layout, p.data(), m.data(), v.data());
  REQUIRE(std::memcmp(p.data(), t.params.data(), p.size() * 4) == 0);
  REQUIRE(std::memcmp(m.data(), t.m.data(), m.size() * 4) == 0);
  REQUIRE(std::memcmp(v.data(), t.v.data(), v.size() * 4) == 0);
  LlamaConfig c2 = load_config(ck + "/config.json");
  REQUIRE(make_param_layout(c2).total == t.layout.total);
  load_weights(ck, c2, t.layout, w.data());
  REQUIRE(std::memcmp(w.data(), t.params.data(), w.size() * 4) == 0);

  json st = load_trainer_state(ck);
  REQUIRE(st["step"] == 5);
  REQUIRE(st["format_version"] == kCheckpointFormatVersion);

  // Saving again over the same directory replaces it atomically.
  t.params[3] += 1.0f;
  save_checkpoint(ck, t.to_save(6));
  REQUIRE(load_trainer_state(ck)["step"] == 6);
  load_optimizer_state(ck, t.layout, p.data(), m.data(), v.data());
  REQUIRE(p[3] == t.params[3]);
  remove_tree(dir);
}

TEST_CASE("a checkpoint with non-finite weights or moments is never written") {
  TinyModel t;
  std::string dir = temp_dir("ckpt_nan");
  t.params[t.layout.layers[1].o_w + 2] = NAN;
  REQUIRE_THROWS_WITH(save_checkpoint(dir + "/checkpoint-1", t.to_save(1)),
                      Catch::Contains("non-finite") && Catch::Contains("model.layers.1.self_attn.o_proj.weight"));
  REQUIRE_FALSE(dir_exists(dir + "/checkpoint-1"));
  t.params[t.layout.layers[1].o_w + 2] = 0;
  t.v[0] = INFINITY;
  REQUIRE_THROWS_WITH(save_checkpoint(dir + "/checkpoint-1", t.to_save(1)), Catch::Contains("second moment"));
  REQUIRE_FALSE(is_training_checkpoint(dir + "/checkpoint-1"));
  remove_tree(dir);
}

TEST_CASE("checkpoints of another model or format are refused by name") {
  TinyModel t;
  std::string dir = temp_dir("ckpt_bad");
  save_checkpoint(dir + "/ck", t.to_save(1));
  json other = config_to_json(t.config);
  other["num_hidden_layers"] = 1;
  ParamLayout small = make_param_layout(parse_config(other, "other"));
  std::vector<float> p(small.total), m(small.total), v(small.total);
  REQUIRE_THROWS_WITH(load_optimizer_state(dir + "/ck", small, p.data(), m.data(), v.data()),
                      Catch::Contains("optimizer.safetensors") && Catch::Contains("layout_fingerprint"));
  write_file_atomic(dir + "/ck/trainer_state.json", "{\"format_version\": 99, \"step\": 1}");
  REQUIRE_THROWS_WITH(load_trainer_state(dir + "/ck"), Catch::Contains("trainer_state.json") &&
                                                           Catch::Contains("format_version"));
  write_file_atomic(dir + "/ck/trainer_state.json", "{\"step\": ");
  REQUIRE_THROWS_WITH(load_trainer_state(dir + "/ck"), Catch::Contains("trainer_state.json"));
  remove_tree(dir);
}

TEST_CASE("rotation keeps the newest checkpoints; resume picks the newest complete one") {
  TinyModel t;
  std::string run = temp_dir("ckpt_rot");
  for (int64_t s : {2, 4, 10, 6}) save_checkpoint(run_checkpoint_dir(run, s), t.to_save(s));
  // An interrupted save leaves a .tmp directory, which is neither listed nor resumed from.
  make_dirs(run + "/checkpoint-12.tmp");
  write_file_atomic(run + "/checkpoint-12.tmp/trainer_state.json", "{}");
  auto all = list_run_checkpoints(run);
  REQUIRE(all.size() == 4);
  REQUIRE(all.back().step == 10);
  REQUIRE(resolve_resume_dir(run) == run_checkpoint_dir(run, 10));
  REQUIRE(resolve_resume_dir(run_checkpoint_dir(run, 4)) == run_checkpoint_dir(run, 4));
  rotate_run_checkpoints(run, 2);
  all = list_run_checkpoints(run);
  REQUIRE(all.size() == 2);
  REQUIRE(all[0].step == 6);
  REQUIRE(all[1].step == 10);
  // A run start removes it, and puts back a checkpoint moved aside by a save that never finished.
  REQUIRE(std::rename(run_checkpoint_dir(run, 6).c_str(), (run_checkpoint_dir(run, 6) + ".old.77").c_str()) == 0);
  make_dirs(run + "/final.old.78");
  auto notes = recover_run_dir(run);
  REQUIRE(notes.size() == 3);
  REQUIRE_FALSE(dir_exists(run + "/checkpoint-12.tmp"));
  REQUIRE_FALSE(dir_exists(run + "/final.old.78"));
  REQUIRE(is_training_checkpoint(run_checkpoint_dir(run, 6)));
  REQUIRE(recover_run_dir(run).empty());
  rotate_run_checkpoints(run, 0);
  REQUIRE(list_run_checkpoints(run).size() == 2);
  std::string empty = run + "/empty";
  make_dirs(empty);
  REQUIRE_THROWS_WITH(resolve_resume_dir(empty), Catch::Contains("empty") && Catch::Contains("checkpoint"));
  REQUIRE_THROWS_WITH(resolve_resume_dir(run + "/missing"), Catch::Contains("missing"));
  remove_tree(run);
}

TEST_CASE("sharded optimizer checkpoints: slices re-shard to any world size; bad indexes are refused by name") {
  TinyModel t;
  const std::string dir = temp_dir("ckpt_shards"), ck = dir + "/ck";
  // Three uneven slices, written as three ranks would (rank 0 begins and finishes).
  const std::vector<size_t> bounds = {0, 1000, 2000, t.layout.total};
  REQUIRE(t.layout.total > 2000);
  begin_checkpoint(ck);
  for (int r = 0; r < 3; r++) {
    OptimizerShardToSave sh;
    sh.layout = &t.layout;
    sh.rank = r;
    sh.world = 3;
    sh.begin = bounds[r];
    sh.count = bounds[r + 1] - bounds[r];
    sh.params = t.params.data() + sh.begin;
    sh.adam_m = t.m.data() + sh.begin;
    sh.adam_v = t.v.data() + sh.begin;
    write_optimizer_shard(ck, sh);
  }
  // The HF weights in files of at most 3000 bytes, each written by the rank that owns most of it
  // from pieces of at most 100 values that the collective brings to the writer alone.
  const uint64_t max_shard = 3000;
  const std::vector<WeightFile> files = plan_weight_files(t.layout, "F32", max_shard);
  const std::vector<int> writers = weight_file_writers(files, bounds, 3);
  REQUIRE(files.size() > 3);
  REQUIRE(std::set<int>(writers.begin(), writers.end()).size() == 3);
  size_t pieces = 0;
  for (const WeightFile& f : files) pieces += weight_file_pieces(t.layout, f, 100).size();
  // Rank r's part of the weight files in `dtype`: its collective (fetch) brings each piece from
  // t.params to the writer alone, and counts the pieces in `calls`.
  auto rank_files = [&](int r, const std::string& dtype, size_t& calls) {
    WeightFilesToSave w;
    w.layout = &t.layout;
    w.dtype = dtype;
    w.max_shard_bytes = max_shard;
    w.rank = r;
    w.world = 3;
    w.bounds = bounds;
    w.chunk = 100;
    w.fetch = [&t, r, &calls](size_t a, size_t b, int writer, float* dst) {
      REQUIRE((a < b && b - a <= 100));
      REQUIRE((dst != nullptr) == (writer == r));
      if (dst) std::memcpy(dst, t.params.data() + a, (b - a) * sizeof(float));
      calls++;
    };
    return w;
  };
  for (int r = 0; r < 3; r++) {
    size_t calls = 0;
    write_weight_files(ck, rank_files(r, "F32", calls));
    REQUIRE(calls == pieces);  // every rank takes part in every piece's collective
  }
  CheckpointToSave ck3 = t.to_save(3);
  ck3.max_shard_bytes = max_shard;
  REQUIRE_FALSE(is_training_checkpoint(ck));  // nothing renamed yet
  finish_sharded_checkpoint(ck, ck3, bounds);
  // The same bytes as one process saving the whole buffer, and the weights load back.
  save_checkpoint(dir + "/whole_sharded", ck3);
  for (const WeightFile& f : files) {
    INFO(f.name);
    REQUIRE(read_text_file(ck + "/" + f.name) == read_text_file(dir + "/whole_sharded/" + f.name));
  }
  for (const char* f : {"model.safetensors.index.json", "config.json"})
    REQUIRE(read_text_file(ck + "/" + f) == read_text_file(dir + "/whole_sharded/" + f));
  std::vector<float> loaded(t.layout.total);
  load_weights(ck, t.config, t.layout, loaded.data());
  REQUIRE(loaded == t.params);
  // BF16 files: the writers round each piece as one process rounds the whole buffer.
  {
    const std::string bf = dir + "/bf16", whole = dir + "/bf16_whole";
    begin_checkpoint(bf);
    for (int r = 0; r < 3; r++) {
      size_t calls = 0;
      write_weight_files(bf, rank_files(r, "BF16", calls));
    }
    save_weights(whole, t.config, t.layout, t.params.data(), "BF16", max_shard);
    const std::vector<WeightFile> bf_files = plan_weight_files(t.layout, "BF16", max_shard);
    REQUIRE(bf_files.size() > 1);
    for (const WeightFile& f : bf_files)
      REQUIRE(read_text_file(bf + ".tmp/" + f.name) == read_text_file(whole + "/" + f.name));
  }
  // A writer that fails (here: no DIR.tmp) still takes part in every piece, then throws.
  {
    size_t calls = 0;
    REQUIRE_THROWS_WITH(write_weight_files(dir + "/no_such", rank_files(0, "F32", calls)), Catch::Contains("no_such.tmp"));
    REQUIRE(calls == pieces);
  }
  REQUIRE(is_training_checkpoint(ck));
  REQUIRE(!file_exists(ck + ".tmp"));
  REQUIRE(!file_exists(ck + "/optimizer.safetensors"));
  // Whole state (one process), and the slices of 2 ranks, which straddle the written shards.
  std::vector<float> p(t.layout.total), m(t.layout.total), v(t.layout.total);
  load_optimizer_state(ck, t.layout, p.data(), m.data(), v.data());
  REQUIRE(p == t.params);
  REQUIRE(m == t.m);
  REQUIRE(v == t.v);
  const size_t half = t.layout.total / 2 + 7;
  std::vector<float> m2(t.layout.total - half), v2(t.layout.total - half);
  load_optimizer_state(ck, t.layout, nullptr, half, t.layout.total - half, m2.data(), v2.data());
  REQUIRE(m2 == std::vector<float>(t.m.begin() + half, t.m.end()));
  REQUIRE(v2 == std::vector<float>(t.v.begin() + half, t.v.end()));
  // A slice of a whole (1-process) checkpoint: the other direction.
  save_checkpoint(dir + "/whole", t.to_save(3));
  load_optimizer_state(dir + "/whole", t.layout, nullptr, half, t.layout.total - half, m2.data(), v2.data());
  REQUIRE(m2 == std::vector<float>(t.m.begin() + half, t.m.end()));

  // A gap between shards, a missing shard file, a shard that ends early: errors naming the file.
  json index = json::parse(read_text_file(ck + "/optimizer.index.json"));
  json bad = index;
  bad["shards"][1]["begin"] = 1001;
  write_file_atomic(ck + "/optimizer.index.json", bad.dump());
  REQUIRE_THROWS_WITH(load_optimizer_state(ck, t.layout, p.data(), m.data(), v.data()),
                      Catch::Contains("optimizer.index.json") && Catch::Contains("does not continue"));
  bad = index;
  bad["shards"].erase(2);
  write_file_atomic(ck + "/optimizer.index.json", bad.dump());
  REQUIRE_THROWS_WITH(load_optimizer_state(ck, t.layout, p.data(), m.data(), v.data()),
                      Catch::Contains("optimizer.index.json") && Catch::Contains("ends at 2000"));
  write_file_atomic(ck + "/optimizer.index.json", index.dump());
  std::filesystem::remove(ck + "/optimizer-00002-of-00003.safetensors");
  REQUIRE_THROWS_WITH(load_optimizer_state(ck, t.layout, p.data(), m.data(), v.data()),
                      Catch::Contains("optimizer-00002-of-00003.safetensors"));
  // A rank that did not write its shard: nothing is renamed, the temporary directory goes.
  begin_checkpoint(dir + "/partial");
  REQUIRE_THROWS_WITH(finish_sharded_checkpoint(dir + "/partial", t.to_save(4), bounds),
                      Catch::Contains("rank 0 did not write its shard"));
  REQUIRE(!file_exists(dir + "/partial"));
  REQUIRE(!file_exists(dir + "/partial.tmp"));
  remove_tree(dir);
}
