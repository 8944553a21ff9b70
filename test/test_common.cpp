// Tests of the shared file, checksum and hash utilities.
#include <catch2/catch.hpp>

#include <unistd.h>

#include "common/checksum.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/hash.h"

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
