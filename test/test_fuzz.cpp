// A short run of every libFuzzer target (build/fuzz/fuzz_*, built by clang with ASan + UBSan; see
// dev/fuzz/). Each target writes its seed corpus, then fuzzes a fixed number of inputs from a
// fixed libFuzzer seed; a crash, sanitizer report, hang (-timeout) or oversized allocation
// (-malloc_limit_mb) fails the test with the target's output. The counts each target prints show
// that its reader both accepted and rejected inputs (the check exercised both sides). The inputs
// that once broke a reader (dev/fuzz/regressions/<target>/) are replayed too.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <regex>

#include "common/file_io.h"

namespace {

struct Target {
  const char* name;
  int runs;
  bool rejects = true;  // fuzz_tokenizer: every text is valid input
};

// Runs: about 1-2 s of CPU each (ASan + UBSan builds), some 15 s for all.
const Target kTargets[] = {
    {"fuzz_config", 10000},          {"fuzz_qa_jsonl", 1000},       {"fuzz_safetensors", 3000},
    {"fuzz_safetensors_index", 5000}, {"fuzz_shard", 20000},         {"fuzz_trainer_state", 5000},
    {"fuzz_tokenizer_json", 100},    {"fuzz_tokenizer", 2000, false},
};

int shell(const std::string& cmd) {
  int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

}  // namespace

TEST_CASE("every fuzz target runs a short fuzzing session without a failure, and replays its regressions") {
  const std::string dir = "build/test/tmp_fuzz_" + std::to_string(getpid());
  for (const Target& t : kTargets) {
    const std::string bin = std::string("build/fuzz/") + t.name;
    const std::string seeds = dir + "/" + t.name + "/seeds", corpus = dir + "/" + t.name + "/corpus",
                      log = dir + "/" + t.name + ".log";
    make_dirs(corpus);
    INFO(t.name);
    REQUIRE(file_exists(bin));
    REQUIRE(shell("FUZZ_WRITE_SEEDS=" + seeds + " " + bin + " > " + log + " 2>&1") == 0);
    const std::string cmd = bin + " -seed=1 -runs=" + std::to_string(t.runs) +
                            " -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -artifact_prefix=" + dir + "/" +
                            t.name + "- " + corpus + " " + seeds + " > " + log + " 2>&1";
    int rc = shell(cmd);
    std::string out = read_text_file(log);
    INFO(out.substr(out.size() > 6000 ? out.size() - 6000 : 0));
    REQUIRE(rc == 0);
    std::smatch m;
    REQUIRE(std::regex_search(out, m, std::regex(std::string(t.name) + ": (\\d+) inputs, (\\d+) accepted, (\\d+) rejected")));
    CHECK(std::stoll(m[2]) > 0);
    if (t.rejects) CHECK(std::stoll(m[3]) > 0);
    const std::string regressions = std::string("dev/fuzz/regressions/") + t.name;
    if (dir_exists(regressions)) {
      rc = shell(bin + " -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 " + regressions + "/* > " + log + " 2>&1");
      INFO(read_text_file(log));
      REQUIRE(rc == 0);
    }
  }
  if (!std::getenv("KEEP_TEST_OUTPUT")) remove_tree(dir);
}
