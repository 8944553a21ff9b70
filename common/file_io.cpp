#include "common/file_io.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"

MappedFile::MappedFile(const std::string& p) : path(p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  check(fd >= 0, p, ": cannot open: ", std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ::close(fd);
    fail(p, ": cannot stat: ", std::strerror(errno));
  }
  size = size_t(st.st_size);
  if (size > 0) {
    void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      fail(p, ": cannot mmap: ", std::strerror(errno));
    }
    data = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data) munmap(const_cast<uint8_t*>(data), size);
}

MappedFile::MappedFile(MappedFile&& o) noexcept : path(std::move(o.path)), data(o.data), size(o.size) {
  o.data = nullptr;
  o.size = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data) munmap(const_cast<uint8_t*>(data), size);
    path = std::move(o.path);
    data = o.data;
    size = o.size;
    o.data = nullptr;
    o.size = 0;
  }
  return *this;
}

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  check(bool(f), path, ": cannot open: ", std::strerror(errno));
  std::ostringstream s;
  s << f.rdbuf();
  check(!f.bad(), path, ": read error");
  return s.str();
}

bool file_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool dir_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  check(!ec, path, ": cannot create directory: ", ec.message());
}

std::string dirname_of(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // best effort: some filesystems refuse directory fds
  fsync(fd);
  ::close(fd);
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

AtomicFileWriter::AtomicFileWriter(const std::string& p)
    : path(p), tmp_path(p + ".tmp." + std::to_string(getpid())) {
  fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  check(fd >= 0, tmp_path, ": cannot create: ", std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd >= 0) {
    ::close(fd);
    ::unlink(tmp_path.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    check(w > 0, path, ": write failed: ", std::strerror(errno));
    p += w;
    n -= size_t(w);
  }
}

void AtomicFileWriter::commit() {
  check(fsync(fd) == 0, path, ": fsync failed: ", std::strerror(errno));
  check(::close(fd) == 0, path, ": close failed: ", std::strerror(errno));
  fd = -1;
  if (::rename(tmp_path.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp_path.c_str());
    fail(path, ": rename failed: ", std::strerror(e));
  }
  fsync_dir(dirname_of(path));
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicFileWriter w(path);
  w.write(data.data(), data.size());
  w.commit();
}
