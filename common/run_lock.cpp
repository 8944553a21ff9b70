#include "common/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/error.h"
#include "common/file_io.h"

static std::string read_fd_text(int fd) {
  std::string s;
  char buf[512];
  ssize_t n;
  off_t off = 0;
  while ((n = pread(fd, buf, sizeof buf, off)) > 0 && s.size() < 4096) {
    s.append(buf, size_t(n));
    off += n;
  }
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  std::string out;  // one line: "pid 12, host h, program p, started t"
  for (char c : s) out += c == '\n' ? std::string(", ") : std::string(1, c);
  return out;
}

static std::string host_name() {
  char h[256] = {0};
  if (gethostname(h, sizeof h - 1) != 0) return "?";
  return h;
}

RunLock acquire_run_lock(const std::string& dir, const std::string& program, std::string* note) {
  if (note) note->clear();
  make_dirs(dir);
  const std::string path = dir + "/run.lock";
  // A plain descriptor until the lock is ours: a refused process must not touch the holder's file.
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  check(fd >= 0, path, ": cannot open the run lock: ", std::strerror(errno));
  int rc;
  while ((rc = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR) {
  }
  if (rc != 0) {
    const int e = errno;
    const std::string holder = read_fd_text(fd);
    ::close(fd);
    if (e == EWOULDBLOCK)
      fail(dir, ": this run directory is in use by another process (", holder.empty() ? "holder unknown" : holder,
           "; lock ", path, "). Wait for it to finish, stop it, or write to another directory");
    fail(path, ": cannot lock the run directory: ", std::strerror(e));
  }
  RunLock lock;
  lock.path = path;
  lock.fd = fd;
  // We hold it: any text left in the file names a holder that died without releasing it.
  const std::string previous = read_fd_text(lock.fd);
  if (!previous.empty() && note)
    *note = "note: " + lock.path + ": taking over the lock of a process that is gone (" + previous + ")";
  char started[32];
  std::time_t now = std::time(nullptr);
  std::strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  const std::string text = "pid " + std::to_string(getpid()) + "\nhost " + host_name() + "\nprogram " + program +
                           "\nstarted " + started + "\n";
  check(ftruncate(lock.fd, 0) == 0 && pwrite(lock.fd, text.data(), text.size(), 0) == ssize_t(text.size()),
        lock.path, ": cannot write the run lock: ", std::strerror(errno));
  return lock;
}

RunLock::RunLock(RunLock&& o) noexcept : path(std::move(o.path)), fd(o.fd) { o.fd = -1; }

RunLock& RunLock::operator=(RunLock&& o) noexcept {
  if (this != &o) {
    release();
    path = std::move(o.path);
    fd = o.fd;
    o.fd = -1;
  }
  return *this;
}

RunLock::~RunLock() { release(); }

void RunLock::release() {
  if (fd < 0) return;
  if (ftruncate(fd, 0) != 0) {  // best effort: a name left behind only causes a "taking over" note
  }
  ::close(fd);  // drops the flock
  fd = -1;
}
