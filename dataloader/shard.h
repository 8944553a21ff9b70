// Token shards: the on-disk format between prepare_data and the dataloader.
//
// A shard holds a list of examples; each example is a sequence of token ids plus one loss bit per
// token (1 = this token is a training target, i.e. the model is trained to predict it from the
// tokens before it). Layout, little-endian, every section starting at a multiple of 8 bytes:
//
//   offset  size  field
//   0       8     magic "LLMCSHRD"
//   8       4     version (2; version 1 is still read, see below)
//   12      4     token_bytes: 2 when vocab_size <= 65536, else 4
//   16      8     num_examples
//   24      8     num_tokens (all examples)
//   32      8     tokenizer_hash (Tokenizer::hash(); 0 = tokens not from a tokenizer, tests only)
//   40      4     vocab_size (every token id is < vocab_size)
//   44      4     template_bytes (length of the prompt template text, UTF-8)
//   48      8     payload_checksum: XXH3-64 (seed 0) of every byte after the 64-byte header
//   56      8     header_checksum: XXH3-64 (seed 0) of bytes [0, 56)
//   64            template text, zero-padded to a multiple of 8
//                 uint64 offsets[num_examples + 1]: example i is tokens [offsets[i], offsets[i+1])
//                 tokens[num_tokens] (uint16 or uint32), zero-padded to a multiple of 8
//                 loss bitmap: bit (i % 8) of byte (i / 8) is token i's loss bit, zero-padded
//                 to a multiple of 8
//
// Version 1 is the same layout with both checksums computed by hash64 (common/hash.h); it is read
// and checked, and written only by tests. Why XXH3 (libxxhash): docs/design.md, "Shard checksums".
//
// The file size must equal exactly what the header describes. Readers mmap the file and check
// every field (magic, version, checksums, sizes, offsets, token ids, padding) before use; any
// failure throws EngineError naming the file and the field.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/file_io.h"

inline constexpr char kShardMagic[8] = {'L', 'L', 'M', 'C', 'S', 'H', 'R', 'D'};
inline constexpr uint32_t kShardVersion = 2;  // written; 1 and 2 are read
inline constexpr size_t kShardHeaderBytes = 64;

struct ShardHeader {
  char magic[8];
  uint32_t version;
  uint32_t token_bytes;
  uint64_t num_examples;
  uint64_t num_tokens;
  uint64_t tokenizer_hash;
  uint32_t vocab_size;
  uint32_t template_bytes;
  uint64_t payload_checksum;
  uint64_t header_checksum;
};
static_assert(sizeof(ShardHeader) == kShardHeaderBytes, "shard header must be 64 bytes");

// Accumulates examples in memory, then writes the shard atomically (temp file, fsync, rename).
struct ShardWriter {
  uint64_t tokenizer_hash = 0;
  uint32_t vocab_size = 0;
  std::string prompt_template;

  ShardWriter(uint64_t tokenizer_hash, uint32_t vocab_size, std::string prompt_template);
  // loss[i] != 0 marks tokens[i] as a target. Throws on an empty example or a token >= vocab.
  void add(const std::vector<int32_t>& tokens, const std::vector<uint8_t>& loss);
  int64_t num_examples() const { return int64_t(offsets.size()) - 1; }
  int64_t num_tokens() const { return int64_t(tokens.size()); }
  // Moves the last n examples (0 <= n < num_examples()) into a new writer with the same header
  // fields (a held-out split).
  ShardWriter split_off(int64_t n);
  // The whole file as bytes. Version 1 only to test that old shards still load.
  std::string serialize(uint32_t version = kShardVersion) const;
  void write(const std::string& path) const;

 private:
  std::vector<uint64_t> offsets{0};
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss_bits;  // packed bitmap, grows with tokens
};

// The checksum of `n` bytes in shard format `version` (1: hash64, 2: XXH3-64).
uint64_t shard_checksum(uint32_t version, const void* data, size_t n);

// A validated, memory-mapped shard.
struct Shard {
  MappedFile file;
  ShardHeader header{};
  std::string prompt_template;

  explicit Shard(const std::string& path);  // validates everything; throws EngineError
  const std::string& path() const { return file.path; }
  int64_t num_examples() const { return int64_t(header.num_examples); }
  int64_t num_tokens() const { return int64_t(header.num_tokens); }
  uint64_t tokenizer_hash() const { return header.tokenizer_hash; }
  int64_t example_begin(int64_t i) const { return int64_t(offsets[i]); }
  int64_t example_length(int64_t i) const { return int64_t(offsets[i + 1] - offsets[i]); }
  int32_t token(int64_t t) const {
    return header.token_bytes == 2 ? int32_t(reinterpret_cast<const uint16_t*>(tokens)[t])
                                   : int32_t(reinterpret_cast<const uint32_t*>(tokens)[t]);
  }
  bool loss(int64_t t) const { return (mask[t >> 3] >> (t & 7)) & 1; }
  // Copies up to max_len tokens and loss bits of example i; returns the number copied.
  int64_t read_example(int64_t i, int32_t* tokens_out, uint8_t* loss_out, int64_t max_len) const;
  std::vector<int32_t> example_tokens(int64_t i) const;
  std::vector<uint8_t> example_loss(int64_t i) const;

 private:
  const uint64_t* offsets = nullptr;
  const uint8_t* tokens = nullptr;
  const uint8_t* mask = nullptr;
};
