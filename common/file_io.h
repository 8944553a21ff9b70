// File I/O shared by every component: read-only mmap of inputs (validated by the caller before
// any field is trusted), and atomic writes (temporary file, fsync, rename, fsync of the
// directory) so that a crash or kill never leaves a half-written output behind.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

struct MappedFile {
  std::string path;
  const uint8_t* data = nullptr;
  size_t size = 0;

  MappedFile() = default;
  explicit MappedFile(const std::string& path);  // throws EngineError naming the path
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
};

std::string read_text_file(const std::string& path);  // throws EngineError naming the path
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
void make_dirs(const std::string& path);  // mkdir -p; throws on failure

// Writes `data` to path.tmp.<pid>, fsyncs it, renames it over `path`, fsyncs the directory.
// Throws EngineError naming the path on any failure (e.g. a full disk); the old file is kept.
void write_file_atomic(const std::string& path, std::string_view data);

// Streaming version for large outputs: open() creates the temporary, write() appends, commit()
// fsyncs and renames. Destroying it without commit() removes the temporary.
struct AtomicFileWriter {
  std::string path, tmp_path;
  int fd = -1;
  explicit AtomicFileWriter(const std::string& path);
  ~AtomicFileWriter();
  void write(const void* data, size_t n);
  void commit();
};

void fsync_dir(const std::string& dir);
std::string dirname_of(const std::string& path);
void remove_tree(const std::string& path);  // rm -rf; no error if missing
