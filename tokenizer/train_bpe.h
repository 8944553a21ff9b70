// Byte-level BPE trainer: pre-tokenizes text with a regex (Llama 3's by default), counts the
// pieces, then repeatedly merges the most frequent adjacent pair of tokens. The result is an HF
// tokenizer.json (ByteLevel, ignore_merges, added special tokens) that HF `tokenizers` loads and
// encodes identically.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"

// The Llama 3 / tiktoken cl100k-style pre-tokenizer pattern.
extern const char* const kLlama3Pattern;
// Qwen2's pattern (Llama 3's with single digits).
extern const char* const kQwen2Pattern;
// GPT-2's pattern.
extern const char* const kGpt2Pattern;

struct BpeTrainOptions {
  int32_t vocab_size = 32000;  // including the 256 byte tokens and the special tokens
  std::vector<std::string> special_tokens;  // appended after the merged tokens, in this order
  std::string bos_token;  // if set (must be one of special_tokens), the post-processor adds it
  std::string pattern = kLlama3Pattern;
  int64_t min_frequency = 2;  // stop when the best pair occurs fewer times
};

// Trains on the given texts and returns the tokenizer.json text.
std::string train_bpe_json(const std::vector<std::string_view>& texts, const BpeTrainOptions& opt);
Tokenizer train_bpe(const std::vector<std::string_view>& texts, const BpeTrainOptions& opt);
// Reads the files (each one whole), trains, writes `output_path` atomically; returns the tokenizer.
Tokenizer train_bpe_files(const std::vector<std::string>& files, const BpeTrainOptions& opt,
                          const std::string& output_path);
