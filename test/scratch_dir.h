// Scratch space for tests: build/test/tmp_<tag>_<pid>, created on first use. The pid keeps two
// runs of the same binary (e.g. make test and a manual run) from sharing files.
#pragma once
#include <unistd.h>

#include <string>

#include "common/file_io.h"

inline std::string scratch_dir(const std::string& tag) {
  const std::string dir = "build/test/tmp_" + tag + "_" + std::to_string(getpid());
  make_dirs(dir);
  return dir;
}
