// Progress with an ETA on stderr, for the programs' long phases (prepare_data on large or
// generated sets, eval_factoids on many questions, tokenize on large files). Quiet for short jobs,
// so that test outputs stay stable: on a terminal a line is redrawn (at most every 0.5 s) once a
// phase has run 1 s; otherwise (a log file) a line is printed every 30 s once it has run 10 s.
// ENGINE_PROGRESS=0 turns it off, ENGINE_PROGRESS=1 prints from the start at every update
// throttled to 0.1 s (tests); a program's --quiet turns it off for the whole process
// (set_progress_enabled), whatever ENGINE_PROGRESS says. add() is thread-safe and costs one relaxed atomic add, plus a
// clock read on the thread that crosses a multiple of `stride` units.
//
// Host memory checks: a plan (bytes by part) compared with MemAvailable of /proc/meminfo before
// anything large is allocated, refused with the plan and the shortfall.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

class Progress {
 public:
  // `what`: e.g. "prepare_data: tokenizing"; `total`: units of work; `unit`: e.g. "examples".
  Progress(std::string what, int64_t total, std::string unit, std::FILE* out = stderr);
  ~Progress();  // finish()
  void add(int64_t n = 1);
  // Work done so far, when the caller counts it (a no-op unless it grew).
  void reach(int64_t done);
  void finish();  // a last line if anything was printed
  // A line as printed: "WHAT: DONE/TOTAL UNIT (P%), R UNIT/s, ETA T"
  static std::string line(const std::string& what, int64_t done, int64_t total, const std::string& unit,
                          double seconds);

 private:
  void maybe_print(bool last);
  std::string what_, unit_;
  int64_t total_;
  std::FILE* out_;
  bool tty_ = false, enabled_ = true, printed_ = false, finished_ = false;
  double start_after_, every_;
  int64_t stride_;
  std::atomic<int64_t> done_{0};
  std::mutex print_mutex_;
  std::chrono::steady_clock::time_point t0_, last_print_;
};

// Off (false) for every Progress created afterwards in this process: the programs' --quiet.
void set_progress_enabled(bool on);

std::string format_eta(double seconds);  // "42s", "3m07s", "2h05m", "?" when unknown

// MemAvailable of /proc/meminfo in bytes; -1 if it cannot be read (then nothing is refused).
int64_t host_memory_available();
// Throws EngineError "WHAT needs N GiB of host memory (part a GiB, part b MiB, ...) but only
// M GiB are available (MemAvailable in /proc/meminfo): short by S GiB. HINT" when the plan does
// not fit (sizes in GiB, in MiB below 1 GiB). `available_bytes` >= 0 replaces MemAvailable (a program's option, named by
// `available_source`, for swap, cgroup limits or a machine shared with other jobs).
void check_host_memory(const std::string& what, const std::vector<std::pair<std::string, double>>& plan_bytes,
                       const std::string& hint, int64_t available_bytes = -1,
                       const std::string& available_source = "");
