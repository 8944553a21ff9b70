// libFuzzer target: a token shard (header, template, offsets, tokens, loss bitmap), as the
// dataloader opens it. Each input is tried as is, then with both checksums recomputed as the
// reader checks them for the version the header names (shard_checksum: hash64 for version 1,
// XXH3-64 for version 2), so that mutations also reach the checks behind the checksums; seeds of
// both versions. Accepted: every example is non-empty,
// lies inside the token array, holds ids < vocab_size, and its loss bits read back; the template
// either parses or is refused with EngineError.
#include <cstring>

#include "dataloader/prompt_template.h"
#include "dataloader/shard.h"
#include "dev/fuzz/fuzz_common.h"

static void write_seeds(const std::string& dir) {
  ShardWriter a(0x1234, 300, "{question}\nThe answer is: {answer}{eos}");
  a.add({1, 2, 3, 299}, {0, 0, 1, 1});
  a.add({7}, {1});
  a.add({5, 6, 7, 8, 9, 10, 11, 12, 13}, {0, 1, 0, 1, 0, 1, 0, 1, 1});
  a.write(dir + "/small16");
  write_file_atomic(dir + "/small16_v1", a.serialize(1));
  ShardWriter b(0x99, 70000, "The value of key {key} is? {value}{eos}");
  b.add({69999, 0, 65536}, {1, 1, 0});
  b.write(dir + "/small32");
  write_file_atomic(dir + "/small32_v1", b.serialize(1));
  ShardWriter c(0, 1, "");
  c.add({0}, {0});
  c.write(dir + "/tiny");
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::init("fuzz_shard", write_seeds);
  return 0;
}

static void check_shard(const std::string& path) {
  Shard s(path);
  const int64_t n = s.num_examples(), total = s.num_tokens();
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    fuzz::require(s.example_begin(i) == sum && s.example_length(i) >= 1, "example bounds");
    std::vector<int32_t> t = s.example_tokens(i);
    std::vector<uint8_t> l = s.example_loss(i);
    fuzz::require(int64_t(t.size()) == s.example_length(i) && l.size() == t.size(), "example size");
    for (int32_t id : t) fuzz::require(id >= 0 && uint32_t(id) < s.header.vocab_size, "token id out of range");
    sum += s.example_length(i);
  }
  fuzz::require(sum == total, "examples cover the tokens");
  if (!s.prompt_template.empty()) {
    try {
      PromptTemplate t = PromptTemplate::parse(s.prompt_template, path);
      (void)t.prompt("q");
      (void)t.answer("a");
    } catch (const EngineError&) {
    }
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  const std::string path = fuzz::put_file("x.bin", bytes);
  fuzz::run_one([&] { check_shard(path); });
  if (size >= kShardHeaderBytes) {
    ShardHeader h;
    std::memcpy(&h, bytes.data(), sizeof h);
    h.payload_checksum = shard_checksum(h.version, bytes.data() + kShardHeaderBytes, size - kShardHeaderBytes);
    h.header_checksum = shard_checksum(h.version, &h, offsetof(ShardHeader, header_checksum));
    std::memcpy(bytes.data(), &h, sizeof h);
    fuzz::put_file("x.bin", bytes);
    fuzz::run_one([&] { check_shard(path); });
  }
  return 0;
}
