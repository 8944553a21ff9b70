#include "common/process_group.h"

#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/file_io.h"

namespace {

struct LauncherVars {
  const char *name, *rank, *world, *local;
};
// Precedence order (see the header).
const LauncherVars kLaunchers[] = {
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
};

int env_int(const EnvLookup& env, const char* var, const char* launcher) {
  const char* s = env(var);
  check(s != nullptr, "launcher environment (", launcher, "): ", var, " is not set while other ", launcher,
        " variables are; set all of them or none");
  int v = 0;
  const char* end = s + std::char_traits<char>::length(s);
  auto [p, ec] = std::from_chars(s, end, v);
  check(ec == std::errc() && p == end && p != s, "launcher environment (", launcher, "): ", var, "='", s,
        "' is not an integer");
  return v;
}

bool wait_for_file(const std::string& path, std::chrono::steady_clock::time_point deadline) {
  while (!file_exists(path)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string ack_path(const std::string& path, int rank) { return path + ".rank" + std::to_string(rank); }

}  // namespace

std::string ProcessGroupEnv::describe() const {
  std::string s = "rank " + std::to_string(rank) + " of " + std::to_string(world_size) + " (local rank " +
                  std::to_string(local_rank);
  for (const LauncherVars& l : kLaunchers)
    if (launcher == l.name) return s + ", from " + l.rank + "/" + l.world + "/" + l.local + ")";
  return s + ", no launcher)";
}

ProcessGroupEnv detect_process_group(const EnvLookup& env) {
  ProcessGroupEnv g;
  for (const LauncherVars& l : kLaunchers) {
    if (!env(l.rank) && !env(l.world) && !env(l.local)) continue;
    g.launcher = l.name;
    g.rank = env_int(env, l.rank, l.name);
    g.world_size = env_int(env, l.world, l.name);
    g.local_rank = env_int(env, l.local, l.name);
    check(g.world_size >= 1, "launcher environment (", l.name, "): ", l.world, "=", g.world_size,
          " must be at least 1");
    check(g.rank >= 0 && g.rank < g.world_size, "launcher environment (", l.name, "): ", l.rank, "=", g.rank,
          " is outside [0, ", l.world, "=", g.world_size, ")");
    check(g.local_rank >= 0 && g.local_rank < g.world_size, "launcher environment (", l.name, "): ", l.local, "=",
          g.local_rank, " is outside [0, ", l.world, "=", g.world_size, ")");
    return g;
  }
  return g;
}

ProcessGroupEnv detect_process_group() {
  return detect_process_group([](const char* v) -> const char* { return std::getenv(v); });
}

std::string parse_dist_init(const std::string& spec, const std::string& option) {
  const std::string scheme = "file://";
  check(spec.rfind(scheme, 0) == 0, option, " ", spec,
        ": give file:///PATH (a file on a file system every rank sees) or mpi (under OpenMPI's mpirun)");
  std::string path = spec.substr(scheme.size());
  check(!path.empty() && path[0] == '/', option, " ", spec, ": the path must be absolute (file:///dir/name)");
  check(path.back() != '/', option, " ", spec, ": give a file name, not a directory");
  return path;
}

std::string file_store_exchange(const std::string& path, int rank, int world_size, const std::string& payload,
                                double timeout_s) {
  check(world_size >= 1 && rank >= 0 && rank < world_size, "file store ", path, ": rank ", rank,
        " is outside [0, ", world_size, ")");
  if (world_size == 1) return payload;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds((long long)(timeout_s * 1000.0));
  if (rank == 0) {
    check(!file_exists(path), "file store ", path,
          ": the file already exists (left by a run that died while starting, or used by another job); "
          "remove it, or give another --dist-init path");
    check(dir_exists(dirname_of(path)), "file store ", path, ": the directory ", dirname_of(path),
          " does not exist");
    for (int r = 1; r < world_size; r++) std::remove(ack_path(path, r).c_str());
    write_file_atomic(path, payload);
    std::vector<int> missing;
    for (int r = 1; r < world_size; r++)
      if (!wait_for_file(ack_path(path, r), deadline)) missing.push_back(r);
    std::remove(path.c_str());
    for (int r = 1; r < world_size; r++) std::remove(ack_path(path, r).c_str());
    if (!missing.empty()) {
      std::string names;
      for (int r : missing) names += (names.empty() ? "" : ", ") + std::to_string(r);
      fail("file store ", path, ": timed out after ", timeout_s, " s waiting for rank", missing.size() > 1 ? "s " : " ",
           names, " of ", world_size, " to read it (not started, crashed, or given another --dist-init path?)");
    }
    return payload;
  }
  check(wait_for_file(path, deadline), "file store ", path, ": timed out after ", timeout_s,
        " s waiting for rank 0 to write it (rank 0 not started, crashed, or given another --dist-init path?)");
  std::string got = read_text_file(path);
  write_file_atomic(ack_path(path, rank), std::to_string(getpid()));
  return got;
}
