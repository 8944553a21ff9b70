// Our side of dev/bench/bench_tokenizer.py: encodes a document file (u32 count, then u32 length +
// bytes per document) with Tokenizer::encode_batch and prints one JSON line with the throughput
// and a checksum of the ids (so the Python driver can check all three tokenizers agree).
// Threads: OMP_NUM_THREADS. Usage: bench_tokenizer TOKENIZER_JSON DOCS_BIN [REPEATS]
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstring>
#include <omp.h>

#include "common/error.h"
#include "common/file_io.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  try {
    if (argc < 3 || std::strcmp(argv[1], "--help") == 0) {
      std::fprintf(stderr, "usage: bench_tokenizer TOKENIZER_JSON DOCS_BIN [REPEATS]\n");
      return 2;
    }
    Tokenizer tok = Tokenizer::from_json_file(argv[1]);
    std::string data = read_text_file(argv[2]);
    int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
    size_t pos = 0;
    auto get_u32 = [&]() {
      check(pos + 4 <= data.size(), argv[2], ": truncated");
      uint32_t v;
      std::memcpy(&v, data.data() + pos, 4);
      pos += 4;
      return v;
    };
    std::vector<std::string> docs(get_u32());
    size_t bytes = 0;
    for (auto& d : docs) {
      uint32_t n = get_u32();
      check(pos + n <= data.size(), argv[2], ": truncated");
      d = data.substr(pos, n);
      pos += n;
      bytes += n;
    }
    // wall-clock time, and the process CPU time (all threads) which a loaded machine distorts less
    double best = 1e30, best_cpu = 1e30;
    std::vector<std::vector<int32_t>> ids;
    for (int r = 0; r < repeats; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      std::clock_t c0 = std::clock();
      ids = tok.encode_batch(docs, false);
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
      best_cpu = std::min(best_cpu, double(std::clock() - c0) / CLOCKS_PER_SEC);
    }
    uint64_t h = 0xCBF29CE484222325ULL, n_ids = 0;
    for (const auto& v : ids)
      for (int32_t id : v) h = (h ^ uint64_t(uint32_t(id))) * 0x100000001B3ULL, ++n_ids;
    std::printf("{\"threads\": %d, \"bytes\": %zu, \"seconds\": %.6f, \"cpu_seconds\": %.6f, \"mb_per_s\": %.3f, \"ids\": %llu, \"checksum\": \"%016llx\"}\n",
                omp_get_max_threads(), bytes, best, best_cpu, bytes / best / 1e6, (unsigned long long)n_ids,
                (unsigned long long)h);
    return 0;
  } catch (const EngineError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
