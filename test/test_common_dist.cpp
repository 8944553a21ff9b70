// common/process_group: rank / world size / local rank from each launcher's variables (and the
// errors for missing, malformed or inconsistent ones), and the file-store exchange of the NCCL id
// between real forked processes, with its timeouts naming the ranks that never came.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file_io.h"
#include "common/process_group.h"

namespace {

ProcessGroupEnv detect(const std::map<std::string, std::string>& vars) {
  return detect_process_group([&](const char* v) -> const char* {
    auto it = vars.find(v);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string detect_error(const std::map<std::string, std::string>& vars) {
  try {
    detect(vars);
  } catch (const EngineError& e) {
    return e.what();
  }
  return "";
}

struct TmpDir {
  std::string path = "build/test/tmp_dist_" + std::to_string(getpid());
  TmpDir() {
    remove_tree(path);
    make_dirs(path);
    char buf[4096];
    path = std::string(getcwd(buf, sizeof buf)) + "/" + path;  // the store wants an absolute path
  }
  ~TmpDir() { remove_tree(path); }
};

// Runs exchange(rank) in a child process per rank in `ranks`; returns each child's result line
// ("ok:<payload>" or "error:<message>"), read back from a file per rank.
std::map<int, std::string> run_exchange(const std::string& dir, const std::string& store, int world,
                                        const std::vector<int>& ranks, double timeout_s) {
  std::vector<pid_t> pids;
  for (int r : ranks) {
    pid_t pid = fork();
    if (pid == 0) {
      std::string out;
      try {
        out = "ok:" + file_store_exchange(store, r, world, "id-from-rank-" + std::to_string(r), timeout_s);
      } catch (const std::exception& e) {
        out = std::string("error:") + e.what();
      }
      write_file_atomic(dir + "/result" + std::to_string(r), out);
      _exit(0);
    }
    pids.push_back(pid);
  }
  for (pid_t p : pids) waitpid(p, nullptr, 0);
  std::map<int, std::string> results;
  for (int r : ranks) results[r] = read_text_file(dir + "/result" + std::to_string(r));
  return results;
}

}  // namespace

TEST_CASE("process group: no launcher is one process") {
  ProcessGroupEnv g = detect({});
  REQUIRE(g.rank == 0);
  REQUIRE(g.world_size == 1);
  REQUIRE(g.local_rank == 0);
  REQUIRE(g.launcher == "none");
}

TEST_CASE("process group: each launcher's variables") {
  ProcessGroupEnv t = detect({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}});
  REQUIRE((t.launcher == "torchrun" && t.rank == 3 && t.world_size == 4 && t.local_rank == 1));
  ProcessGroupEnv o = detect({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
  REQUIRE((o.launcher == "openmpi" && o.rank == 1 && o.world_size == 2 && o.local_rank == 1));
  REQUIRE(o.describe().find("OMPI_COMM_WORLD_RANK") != std::string::npos);
  ProcessGroupEnv s = detect({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}});
  REQUIRE((s.launcher == "slurm" && s.rank == 5 && s.world_size == 8 && s.local_rank == 1));
  // mpirun inside a Slurm allocation: OpenMPI's variables win over the allocation's.
  ProcessGroupEnv both = detect({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"},
                                 {"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                 {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}});
  REQUIRE((both.launcher == "openmpi" && both.rank == 2));
}

TEST_CASE("process group: missing, malformed and inconsistent variables are errors naming them") {
  std::string e = detect_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}});
  REQUIRE(e.find("LOCAL_RANK is not set") != std::string::npos);
  e = detect_error({{"OMPI_COMM_WORLD_RANK", "x1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}});
  REQUIRE(e.find("OMPI_COMM_WORLD_RANK='x1' is not an integer") != std::string::npos);
  e = detect_error({{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}});
  REQUIRE(e.find("SLURM_PROCID=2 is outside [0, SLURM_NTASKS=2)") != std::string::npos);
  e = detect_error({{"RANK", "0"}, {"WORLD_SIZE", "0"}, {"LOCAL_RANK", "0"}});
  REQUIRE(e.find("WORLD_SIZE=0 must be at least 1") != std::string::npos);
  e = detect_error({{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "-1"}});
  REQUIRE(e.find("LOCAL_RANK=-1 is outside") != std::string::npos);
  e = detect_error({{"RANK", "1"}, {"WORLD_SIZE", "2 "}, {"LOCAL_RANK", "1"}});
  REQUIRE(e.find("not an integer") != std::string::npos);
}

TEST_CASE("process group: --dist-init takes file:///PATH only") {
  REQUIRE(parse_dist_init("file:///shared/run1/nccl_id") == "/shared/run1/nccl_id");
  REQUIRE_THROWS_WITH(parse_dist_init("tcp://10.0.0.1:29500"), Catch::Contains("give file:///PATH"));
  REQUIRE_THROWS_WITH(parse_dist_init("file://relative/x"), Catch::Contains("must be absolute"));
  REQUIRE_THROWS_WITH(parse_dist_init("file:///dir/"), Catch::Contains("not a directory"));
}

TEST_CASE("file store: three processes get rank 0's payload, and nothing is left behind") {
  TmpDir d;
  const std::string store = d.path + "/store";
  std::map<int, std::string> res = run_exchange(d.path, store, 3, {0, 1, 2}, 30.0);
  for (int r = 0; r < 3; r++) {
    INFO("rank " << r << ": " << res[r]);
    REQUIRE(res[r] == "ok:id-from-rank-0");
  }
  REQUIRE(!file_exists(store));
  REQUIRE(!file_exists(store + ".rank1"));
  REQUIRE(!file_exists(store + ".rank2"));
  // The path is free again: a second exchange works.
  res = run_exchange(d.path, store, 2, {1, 0}, 30.0);
  REQUIRE(res[1] == "ok:id-from-rank-0");
}

TEST_CASE("file store: a rank that never comes is named in a timeout error; a stale file is refused") {
  TmpDir d;
  const std::string store = d.path + "/store";
  // Rank 2 of 3 never starts: rank 0 names it, rank 1 got the payload.
  std::map<int, std::string> res = run_exchange(d.path, store, 3, {0, 1}, 1.0);
  INFO(res[0]);
  REQUIRE(res[0].find("error:") == 0);
  REQUIRE(res[0].find("waiting for rank 2 of 3") != std::string::npos);
  REQUIRE(res[1] == "ok:id-from-rank-0");
  REQUIRE(!file_exists(store));
  // Rank 0 never starts: rank 1 names it.
  res = run_exchange(d.path, store, 2, {1}, 0.5);
  REQUIRE(res[1].find("waiting for rank 0 to write it") != std::string::npos);
  // A file left by a dead run is refused by rank 0.
  write_file_atomic(store, "stale");
  res = run_exchange(d.path, store, 2, {0}, 0.5);
  REQUIRE(res[0].find("already exists") != std::string::npos);
}
