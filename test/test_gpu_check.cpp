// scripts/gpu_check.sh's own logic, without a GPU: the stage runner (a failing stage, a hanging one
// cut by its time limit, a stage skipped because its prerequisite failed), the JSON and markdown
// summary, the logs archive, and the dry run's listing of every stage with its time limit.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "common/file_io.h"

using nlohmann::json;

namespace {
int shell(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}
json stage(const json& summary, const std::string& name) {
  for (const json& s : summary["stages"])
    if (s["name"] == name) return s;
  FAIL("no stage " << name);
  return json();
}
}  // namespace

TEST_CASE("gpu_check.sh --selftest: failing, hanging and dependent stages end up in the JSON and markdown") {
  const std::string dir = "build/test/tmp_gpu_check_" + std::to_string(getpid());
  remove_tree(dir);
  // a stage failed and one timed out: the script exits non-zero
  REQUIRE(shell("bash scripts/gpu_check.sh --selftest --out " + dir + " > " + dir + ".log 2>&1") != 0);
  const json s = json::parse(read_text_file(dir + "/gpu_check.json"));
  REQUIRE(stage(s, "environment")["status"] == "ok");
  REQUIRE(stage(s, "passes")["status"] == "ok");
  REQUIRE(stage(s, "fails")["status"] == "fail");
  REQUIRE(stage(s, "fails")["rc"] == 3);
  REQUIRE(stage(s, "hangs")["status"] == "timeout");  // `sleep 60` under a 2 s limit
  REQUIRE(stage(s, "hangs")["rc"] == 124);
  REQUIRE(stage(s, "after-fail")["status"] == "skipped");
  REQUIRE(stage(s, "fails")["log_tail"].dump().find("about to fail") != std::string::npos);
  const std::string md = read_text_file(dir + "/gpu_check.md");
  REQUIRE(md.find("| hangs | timeout |") != std::string::npos);
  REQUIRE(md.find("| after-fail | skipped |") != std::string::npos);
  REQUIRE(md.find("## Failed stages") != std::string::npos);
  REQUIRE(shell("tar -tzf " + dir + "/logs.tar.gz | grep -q 'logs/hangs.log'") == 0);
  remove_tree(dir);
  std::remove((dir + ".log").c_str());
}

TEST_CASE("gpu_check.sh --dry-run lists every stage with its time limit and skips the GPU stages") {
  const std::string dir = "build/test/tmp_gpu_dry_" + std::to_string(getpid());
  remove_tree(dir);
  const std::string log = dir + ".log";
  REQUIRE(shell("bash scripts/gpu_check.sh --dry-run --no-build --only environment --out " + dir + " > " + log +
                " 2>&1") == 0);
  const std::string out = read_text_file(log);
  for (const char* name : {"environment", "build", "gpu-tests", "cpu-vs-cuda", "kernel-bench", "bench-data",
                           "train-remix", "train-2048", "decode", "ncu"}) {
    INFO(name);
    REQUIRE(out.find(std::string("[") + name + "] limit ") != std::string::npos);
  }
  REQUIRE(out.find("GPU_ARCH=90") != std::string::npos);  // the default architecture without a GPU
  const json s = json::parse(read_text_file(dir + "/gpu_check.json"));
  REQUIRE(s["dry_run"] == true);
  REQUIRE(stage(s, "environment")["status"] == "ok");
  for (const char* name : {"gpu-tests", "kernel-bench", "train-remix", "decode"}) REQUIRE(stage(s, name)["status"] == "skipped");
  REQUIRE(read_text_file(dir + "/gpu_check.md").find("**Dry run**") != std::string::npos);
  remove_tree(dir);
  std::remove(log.c_str());
}
