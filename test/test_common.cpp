// Tests of the shared file, checksum and hash utilities.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include "common/checksum.h"
#include <cstdlib>

#include "common/error.h"
#include "common/file_io.h"
#include "common/hash.h"
#include "common/progress.h"
#include "common/run_lock.h"

TEST_CASE("hash64 changes with every byte, the length and the seed") {
  std::string s(1000, 'a');
  uint64_t h = hash64(s);
  for (size_t i = 0; i < s.size(); i += 37) {
    std::string t = s;
    t[i] ^= 1;
    REQUIRE(hash64(t) != h);
  }
  REQUIRE(hash64(s.data(), 999) != h);
  REQUIRE(hash64(s, 1) != h);
  REQUIRE(hash_hex(0x0123456789abcdefULL) == "0123456789abcdef");
}

TEST_CASE("xxh3_64 is XXH3-64 with seed 0: xxHash's known answers") {
  REQUIRE(xxh3_64("", 0) == 0x2D06800538D394C2ULL);  // the empty input, from xxHash's sanity tests
  std::string s(1000, 'a');
  const uint64_t h = xxh3_64(s.data(), s.size());
  for (size_t i = 0; i < s.size(); i += 37) {
    std::string t = s;
    t[i] ^= 1;
    REQUIRE(xxh3_64(t.data(), t.size()) != h);
  }
}

TEST_CASE("write_file_atomic replaces the file and leaves no temporary") {
  std::string dir = "build/test/tmp_common_" + std::to_string(getpid());
  make_dirs(dir);
  std::string p = dir + "/x.txt";
  write_file_atomic(p, "one");
  write_file_atomic(p, "two");
  REQUIRE(read_text_file(p) == "two");
  MappedFile m(p);
  REQUIRE(m.size == 3);
  REQUIRE(std::string((const char*)m.data, 3) == "two");
  {
    AtomicFileWriter w(dir + "/y.txt");
    w.write("abc", 3);
    // destroyed without commit: nothing must appear
  }
  REQUIRE_FALSE(file_exists(dir + "/y.txt"));
  REQUIRE_THROWS_WITH(MappedFile(dir + "/missing"), Catch::Contains("missing") && Catch::Contains("cannot open"));
  REQUIRE_THROWS_AS(write_file_atomic("/proc/definitely/not/here", "x"), EngineError);
  remove_tree(dir);
}

TEST_CASE("progress lines give the count, the percentage, the rate and the ETA; short jobs print nothing") {
  REQUIRE(Progress::line("tokenizing", 250, 1000, "examples", 5.0) ==
          "tokenizing: 250/1000 examples (25.0%), 50 examples/s, ETA 15s");
  REQUIRE(format_eta(3 * 3600 + 7 * 60 + 20) == "3h07m");
  REQUIRE(format_eta(187) == "3m07s");
  REQUIRE(format_eta(-1) == "?");
  std::FILE* f = std::tmpfile();
  {
    Progress p("quiet", 100, "items", f);  // not a terminal: nothing before 10 s
    for (int i = 0; i < 100; ++i) p.add();
  }
  REQUIRE(std::ftell(f) == 0);
  setenv("ENGINE_PROGRESS", "1", 1);  // forced: the first update prints, and the end
  {
    Progress p("forced", 10, "items", f);
    for (int i = 0; i < 10; ++i) p.add();
  }
  unsetenv("ENGINE_PROGRESS");
  std::rewind(f);
  char buf[512] = {0};
  REQUIRE(std::fread(buf, 1, sizeof buf - 1, f) > 0);
  std::string text = buf;
  REQUIRE(text.find("forced: 1/10 items (10.0%)") != std::string::npos);
  REQUIRE(text.find("forced: 10/10 items (100.0%)") != std::string::npos);
  // reach(): a count given by the caller, never going back
  setenv("ENGINE_PROGRESS", "1", 1);
  {
    std::FILE* g = std::tmpfile();
    {
      Progress p("reached", 100, "bytes", g);
      p.reach(40);
      p.reach(10);
      p.reach(100);
    }
    std::rewind(g);
    std::fill(buf, buf + sizeof buf, 0);
    REQUIRE(std::fread(buf, 1, sizeof buf - 1, g) > 0);
    REQUIRE(std::string(buf).find("reached: 40/100 bytes (40.0%)") != std::string::npos);
    REQUIRE(std::string(buf).find("reached: 100/100 bytes (100.0%)") != std::string::npos);
    REQUIRE(std::string(buf).find("reached: 10/") == std::string::npos);
    std::fclose(g);
  }
  // set_progress_enabled(false) (a program's --quiet) wins over ENGINE_PROGRESS=1
  set_progress_enabled(false);
  {
    std::FILE* g = std::tmpfile();
    {
      Progress p("silenced", 10, "items", g);
      for (int i = 0; i < 10; ++i) p.add();
    }
    REQUIRE(std::ftell(g) == 0);
    std::fclose(g);
  }
  set_progress_enabled(true);
  unsetenv("ENGINE_PROGRESS");
  std::fclose(f);
}

TEST_CASE("a host memory plan beyond MemAvailable is refused with the plan and the shortfall") {
  REQUIRE(host_memory_available() > 0);
  REQUIRE_NOTHROW(check_host_memory("small", {{"weights", 1024.0}}, ""));
  REQUIRE_THROWS_WITH(check_host_memory("huge", {{"weights", 1e18}, {"activations", 1e17}}, "try less"),
                      Catch::Contains("huge needs ") && Catch::Contains("weights 931322574.62 GiB") &&
                          Catch::Contains("activations 93132257.46 GiB") && Catch::Contains("MemAvailable") &&
                          Catch::Contains("short by") && Catch::Contains("try less"));
  // an explicit amount (a program's option) replaces MemAvailable, named in the message
  REQUIRE_NOTHROW(check_host_memory("fits", {{"a", 600.0 * 1024 * 1024}}, "", int64_t(1) << 30, "--host-memory"));
  REQUIRE_THROWS_WITH(check_host_memory("tight", {{"a", 600.0 * 1024 * 1024}, {"b", 600.0 * 1024 * 1024}}, "", int64_t(1) << 30,
                                        "--host-memory"),
                      Catch::Contains("tight needs 1.17 GiB of host memory (a 600.00 MiB, b 600.00 MiB) but only 1.00 GiB "
                                      "are available (--host-memory): short by 176.00 MiB"));
}

TEST_CASE("the run lock: one holder at a time, the holder named, a dead holder's lock taken over") {
  const std::string dir = "build/test/tmp_lock_" + std::to_string(getpid());
  remove_tree(dir);
  std::string note;
  {
    RunLock a = acquire_run_lock(dir, "test", &note);
    REQUIRE(a.held());
    REQUIRE(note.empty());
    REQUIRE(read_text_file(dir + "/run.lock").find("pid " + std::to_string(getpid()) + "\nhost ") == 0);
    // flock locks belong to the open file: a second open in this process is refused too
    REQUIRE_THROWS_WITH(acquire_run_lock(dir, "test", &note),
                        Catch::Contains("in use by another process (pid " + std::to_string(getpid())) &&
                            Catch::Contains("program test"));
    // ... and leaves the holder's name in place
    REQUIRE(read_text_file(dir + "/run.lock").find("pid " + std::to_string(getpid()) + "\n") == 0);
  }
  REQUIRE(read_text_file(dir + "/run.lock").empty());  // released cleanly
  // A child takes the lock and dies without releasing it: the next taker notes the takeover.
  pid_t child = fork();
  if (child == 0) {
    std::string n;
    RunLock l = acquire_run_lock(dir, "child", &n);
    _exit(0);  // no destructor: the kernel drops the flock, the name stays
  }
  int st = 0;
  waitpid(child, &st, 0);
  REQUIRE(WIFEXITED(st));
  RunLock b = acquire_run_lock(dir, "test", &note);
  REQUIRE(note.find("taking over the lock of a process that is gone (pid " + std::to_string(child)) != std::string::npos);
  remove_tree(dir);
}
