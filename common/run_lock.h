// One writer per run directory. A program that writes into a run directory (train_llama's --out)
// holds an exclusive flock(2) on DIR/run.lock for as long as it runs. The kernel drops the lock
// when the process ends, however it ends (exit, crash, SIGKILL), so a lock can never outlive its
// holder; the file's text (pid, host, program, start time) only names the holder for messages.
// A second writer fails at once with an error naming the holder. A lock file whose holder is gone
// (its text still there, nobody holding the flock) is taken over, with a note. A clean release
// empties the file, so that only a process that died leaves a name behind.
#pragma once
#include <string>

struct RunLock {
  std::string path;
  int fd = -1;

  RunLock() = default;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  RunLock(RunLock&& o) noexcept;
  RunLock& operator=(RunLock&& o) noexcept;
  ~RunLock();  // release()
  void release();  // empties the file and drops the lock
  bool held() const { return fd >= 0; }
};

// Creates DIR if needed and takes DIR/run.lock for `program`. Throws EngineError naming the holder
// when another live process has it. `note` receives a line about a stale lock taken over (else "").
RunLock acquire_run_lock(const std::string& dir, const std::string& program, std::string* note);
