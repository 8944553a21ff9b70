// Shared by the libFuzzer targets of the file readers (dev/fuzz/fuzz_*.cpp). Each target feeds
// the input to a reader exactly as a user's file would reach it and checks the reader's contract:
// it throws EngineError (a clean "error: ..." in the programs), or returns an object that passes
// every check the engine relies on afterwards; it never crashes (ASan/UBSan abort), hangs
// (-timeout) or allocates without bound (-malloc_limit_mb/-rss_limit_mb).
//
// Counters: at exit each target prints "<name>: N inputs, A accepted, R rejected" so that a run
// shows both the accepting and the rejecting path were exercised (test/test_fuzz.cpp checks it).
// Seeds: with FUZZ_WRITE_SEEDS=DIR the target writes its seed corpus (fixture files, or valid
// inputs it builds itself) into DIR and exits; dev/fuzz/run_fuzz.sh does this before fuzzing.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/file_io.h"

namespace fuzz {

inline const char* g_name = "fuzz";
inline long long g_inputs = 0, g_accepted = 0, g_rejected = 0;

inline void print_counts() {
  std::fprintf(stderr, "%s: %lld inputs, %lld accepted, %lld rejected\n", g_name, g_inputs, g_accepted, g_rejected);
}

// A scratch directory private to this process (in /dev/shm when there is one: no disk traffic).
// (Never destroyed: the exit handler that removes it runs after static destructors would.)
inline const std::string& scratch_dir() {
  static const std::string* dir = [] {
    std::string base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
    auto* d = new std::string(base + "/engine-fuzz-" + std::to_string(getpid()));
    make_dirs(*d);
    std::atexit([] { remove_tree(scratch_dir()); });
    return d;
  }();
  return *dir;
}

// Writes bytes to scratch_dir()/name (plain write: the readers must not care how a file came).
inline std::string put_file(const std::string& name, std::string_view bytes) {
  std::string p = scratch_dir() + "/" + name;
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "fuzz: cannot write %s\n", p.c_str());
    std::abort();
  }
  return p;
}

[[noreturn]] inline void contract_broken(const std::string& what) {
  std::fprintf(stderr, "%s: contract broken: %s\n", g_name, what.c_str());
  std::abort();
}
inline void require(bool ok, const std::string& what) {
  if (!ok) contract_broken(what);
}

// Runs fn(); an EngineError counts as a clean rejection, anything else escaping is a bug (libFuzzer
// reports an uncaught exception as a crash with the input).
template <typename Fn>
inline void run_one(Fn fn) {
  ++g_inputs;
  try {
    fn();
    ++g_accepted;
  } catch (const EngineError&) {
    ++g_rejected;
  }
}

// Called from LLVMFuzzerInitialize: names the target, registers the counters and handles
// FUZZ_WRITE_SEEDS (write_seeds(dir) then exit).
template <typename WriteSeeds>
inline void init(const char* name, WriteSeeds write_seeds) {
  g_name = name;
  if (const char* d = std::getenv("FUZZ_WRITE_SEEDS")) {
    make_dirs(d);
    write_seeds(std::string(d));
    std::exit(0);
  }
  std::atexit(print_counts);
}

inline void copy_seed(const std::string& from, const std::string& dir, const std::string& name) {
  write_file_atomic(dir + "/" + name, read_text_file(from));
}

}  // namespace fuzz
