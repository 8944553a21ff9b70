// libFuzzer target: trainer_state.json of a checkpoint, as --resume reads it: load_trainer_state
// (JSON, format_version), parse_resume_state (step, counters, args, templates), then the data
// cursor (DataCursor::from_json) restored into a dataloader over two small shards (a primary
// stream and a mixed one, so that stream states matter) and one batch drawn from it. Accepted:
// the restored loader hands out a well-formed batch from the cursor's epoch.
#include "dataloader/dataloader.h"
#include "dataloader/shard.h"
#include "dev/fuzz/fuzz_common.h"
#include "model/checkpoint.h"

static std::string g_dir;
static DataLoaderConfig g_cfg;

static void make_loader_config() {
  g_dir = fuzz::scratch_dir() + "/run";
  make_dirs(g_dir);
  ShardWriter a(0x51, 100, "{question} {answer}");
  for (int i = 0; i < 5; ++i) a.add({1 + i, 2, 3 + i}, {0, 1, 1});
  a.write(g_dir + "/primary.bin");
  ShardWriter b(0x51, 100, "{question} {answer}");
  for (int i = 0; i < 3; ++i) b.add({50 + i, 60, 70, 80 + i}, {0, 0, 1, 1});
  b.write(g_dir + "/generic.bin");
  g_cfg.primary_shards = {g_dir + "/primary.bin"};
  g_cfg.mixes = {{"generic", {g_dir + "/generic.bin"}, 1.4}};
  g_cfg.batch_size = 3;
  g_cfg.T = 8;
  g_cfg.seed = 7;
  g_cfg.log = false;
}

// A trainer_state.json as train_llama writes it, at a few points of the run.
static void write_seeds(const std::string& dir) {
  make_loader_config();
  DataLoader loader(g_cfg);
  OptimizerBatch batch;
  for (int step = 0; step <= 9; ++step) {
    if (step == 0 || step == 4 || step == 9) {
      nlohmann::json s;
      s["format_version"] = kCheckpointFormatVersion;
      s["step"] = step;
      s["epoch"] = loader.epoch();
      s["data_cursor"] = loader.cursor().to_json();
      s["args"] = {{"data", {"primary.bin"}}, {"mix", {"generic=generic.bin:1.4"}}, {"seed", {"7"}}};
      s["adam_step"] = step;
      s["loss_below_count"] = 0;
      s["tokens_seen"] = 10 * step;
      s["elapsed_s"] = 1.5;
      s["evals"] = nlohmann::json::array({{{"event", "eval"}, {"accuracy", 0.5}}});
      s["prompt_template"] = "{question} {answer}";
      s["earlier_stage_templates"] = {"{question}\nThe answer is: {answer}{eos}"};
      write_file_atomic(dir + "/step" + std::to_string(step), s.dump(2));
    }
    loader.next(batch);
  }
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init("fuzz_trainer_state", write_seeds);
  make_loader_config();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  write_file_atomic(g_dir + "/trainer_state.json", std::string_view(reinterpret_cast<const char*>(data), size));
  fuzz::run_one([&] {
    const std::string where = g_dir + "/trainer_state.json";
    ResumeState r = parse_resume_state(load_trainer_state(g_dir), where);
    fuzz::require(r.step >= 0 && r.adam_step >= 0 && r.tokens_seen >= 0 && r.evals.is_array(), "counters");
    DataCursor c = DataCursor::from_json(r.data_cursor, where + " data_cursor");
    DataLoader loader(g_cfg);
    loader.restore(c);
    OptimizerBatch batch;
    fuzz::require(loader.next(batch), "a restored loader hands out a batch");
    fuzz::require(batch.epoch >= c.epoch && batch.num_examples >= 1 && batch.num_examples <= g_cfg.batch_size,
                  "batch shape");
    for (const ExampleRef& e : batch.examples) fuzz::require(!loader.example_tokens(e).empty(), "example");
  });
  return 0;
}
