#include "common/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/error.h"

std::string format_eta(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  long long t = (long long)std::llround(s);
  char buf[64];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%llds", t);
  return buf;
}

static std::atomic<bool> g_progress_enabled{true};
void set_progress_enabled(bool on) { g_progress_enabled = on; }

Progress::Progress(std::string what, int64_t total, std::string unit, std::FILE* out)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), out_(out) {
  const char* env = std::getenv("ENGINE_PROGRESS");
  const std::string mode = env ? env : "";
  tty_ = isatty(fileno(out_));
  enabled_ = mode != "0" && g_progress_enabled;
  if (mode == "1") {
    start_after_ = 0;
    every_ = 0.1;
  } else if (tty_) {
    start_after_ = 1;
    every_ = 0.5;
  } else {
    start_after_ = 10;
    every_ = 30;
  }
  stride_ = std::max<int64_t>(1, total_ / 1000);  // the clock is read about 1000 times per phase
  t0_ = last_print_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

std::string Progress::line(const std::string& what, int64_t done, int64_t total, const std::string& unit,
                           double secs) {
  const double rate = secs > 0 ? double(done) / secs : 0;
  const double eta = rate > 0 ? double(total - done) / rate : NAN;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: %lld/%lld %s (%.1f%%), %.0f %s/s, ETA %s", what.c_str(), (long long)done,
                (long long)total, unit.c_str(), total > 0 ? 100.0 * double(done) / double(total) : 100.0, rate,
                unit.c_str(), format_eta(eta).c_str());
  return buf;
}

void Progress::add(int64_t n) {
  if (!enabled_) return;
  const int64_t before = done_.fetch_add(n, std::memory_order_relaxed);
  if ((before + n) / stride_ != before / stride_) maybe_print(false);
}

void Progress::reach(int64_t done) {
  if (!enabled_) return;
  int64_t before = done_.load(std::memory_order_relaxed);
  while (done > before && !done_.compare_exchange_weak(before, done, std::memory_order_relaxed)) {
  }
  if (done > before && done / stride_ != before / stride_) maybe_print(false);
}

void Progress::maybe_print(bool last) {
  std::lock_guard<std::mutex> g(print_mutex_);
  if (finished_) return;
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(now - t0_).count();
  if (!last && (secs < start_after_ || (printed_ && std::chrono::duration<double>(now - last_print_).count() < every_)))
    return;
  if (last && !printed_) return;
  last_print_ = now;
  printed_ = true;
  const std::string l = line(what_, std::min(done_.load(), total_), total_, unit_, secs);
  if (tty_) std::fprintf(out_, "\r%s\033[K%s", l.c_str(), last ? "\n" : "");
  else std::fprintf(out_, "%s\n", l.c_str());
  std::fflush(out_);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  maybe_print(true);
  std::lock_guard<std::mutex> g(print_mutex_);
  finished_ = true;
}

int64_t host_memory_available() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb;
  std::string unit;
  while (f >> key >> kb) {
    std::getline(f, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  return -1;
}

void check_host_memory(const std::string& what, const std::vector<std::pair<std::string, double>>& plan,
                       const std::string& hint, int64_t available_bytes, const std::string& available_source) {
  const double GiB = 1024.0 * 1024.0 * 1024.0;
  double total = 0;
  for (const auto& [name, bytes] : plan) total += bytes;
  const int64_t avail = available_bytes >= 0 ? available_bytes : host_memory_available();
  if (avail < 0 || total <= double(avail)) return;
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(2);
  auto size = [&](double bytes) {  // GiB, or MiB below 1 GiB
    std::ostringstream b;
    b.setf(std::ios::fixed);
    b.precision(2);
    if (bytes >= GiB) b << bytes / GiB << " GiB";
    else b << bytes / (1024.0 * 1024.0) << " MiB";
    return b.str();
  };
  s << what << " needs " << size(total) << " of host memory (";
  for (size_t i = 0; i < plan.size(); ++i) s << (i ? ", " : "") << plan[i].first << " " << size(plan[i].second);
  s << ") but only " << size(double(avail)) << " are available ("
    << (available_bytes >= 0 ? available_source : std::string("MemAvailable in /proc/meminfo")) << "): short by "
    << size(total - double(avail));
  if (!hint.empty()) s << ". " << hint;
  throw EngineError(s.str());
}
