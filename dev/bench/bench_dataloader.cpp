// Dataloader side of dev/bench/bench_data.py: builds optimizer batches from shards as the training
// loop would (shuffle, REMIX mixing, first-fit packing) and prints one JSON line with batches/s.
//
//   ./build/bench/bench_dataloader --primary kvr.bin --mix rw=rw.bin:4 --B 32 --T 256 --steps 2000
#include <chrono>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "dataloader/dataloader.h"

int main(int argc, char** argv) {
  try {
    DataLoaderConfig c;
    c.batch_size = 32;
    c.T = 256;
    c.log = false;
    int64_t steps = 2000;
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto val = [&]() -> std::string {
        check(i + 1 < argc, a, ": missing value");
        return argv[++i];
      };
      if (a == "--help") {
        std::printf("usage: bench_dataloader --primary SHARDS [--mix NAME=SHARDS:RATIO]... [--B 32] [--T 256] "
                    "[--micro 0] [--pack 1] [--steps 2000]\n");
        return 0;
      } else if (a == "--primary") c.primary_shards = expand_shard_list(val());
      else if (a == "--mix") c.mixes.push_back(parse_mix_spec(val()));
      else if (a == "--B") c.batch_size = std::stoi(val());
      else if (a == "--T") c.T = std::stoi(val());
      else if (a == "--micro") c.micro_batch_size = std::stoi(val());
      else if (a == "--pack") c.pack = std::stoi(val()) != 0;
      else if (a == "--steps") steps = std::stoll(val());
      else fail("unknown option ", a);
    }
    auto t0 = std::chrono::steady_clock::now();
    DataLoader dl(c);
    auto t1 = std::chrono::steady_clock::now();
    OptimizerBatch ob;
    int64_t rows = 0, tokens = 0, examples = 0;
    for (int64_t s = 0; s < steps; ++s) {
      dl.next(ob);
      for (auto& m : ob.micro) rows += m.rows;
      tokens += ob.num_target_tokens;
      examples += ob.num_examples;
    }
    auto t2 = std::chrono::steady_clock::now();
    double open_s = std::chrono::duration<double>(t1 - t0).count();
    double secs = std::chrono::duration<double>(t2 - t1).count();
    std::printf("{\"batches_per_s\": %.1f, \"examples_per_s\": %.1f, \"rows_per_batch\": %.2f, "
                "\"target_tokens_per_batch\": %.1f, \"open_s\": %.4f, \"steps\": %lld}\n",
                double(steps) / secs, double(examples) / secs, double(rows) / double(steps),
                double(tokens) / double(steps), open_s, (long long)steps);
    return 0;
  } catch (const EngineError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
