// The child side of the tests' fork/exec: stdout and stderr to `log` (truncated), then argv (a path,
// or a program on PATH such as mpirun). Never returns: exit 126 if the log cannot be opened, 127 if
// the program cannot be run. The parent flushes its own streams before fork(), else the child's
// freopen writes the parent's buffered output again.
#pragma once
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

[[noreturn]] inline void exec_logged(const std::vector<std::string>& argv, const std::string& log) {
  if (!freopen(log.c_str(), "w", stdout) || !freopen(log.c_str(), "a", stderr)) _exit(126);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  _exit(127);
}
