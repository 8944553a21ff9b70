// Byte-level BPE (Llama 3 / GPT-2 / Qwen2), SentencePiece-style BPE (Llama 2 / Mistral, byte
// fallback) and WordPiece (BERT) tokenizers, loaded from Hugging Face tokenizer.json or a tiktoken
// rank file.
// Token ids are byte-identical with HF `tokenizers`.
//
// This header is the contract other components code against (dataloader, prepare_data,
// train_llama, eval_factoids); implementation details live behind Impl.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

class Progress;

struct Tokenizer {
  struct Impl;
  std::shared_ptr<const Impl> impl;

  // Throws EngineError naming the file and the unsupported/corrupt field.
  static Tokenizer from_json_file(const std::string& tokenizer_json_path);
  static Tokenizer from_json_string(const std::string& json, const std::string& name_for_errors);
  // As from_json_file, but the file's `truncation` and `padding` (which HF applies inside encode)
  // are checked field by field and dropped: for callers that cut and pad sequences themselves
  // (the BERT encoder truncates to its own max_seq_length). from_json_file refuses them.
  static Tokenizer from_json_file_without_length_rules(const std::string& tokenizer_json_path);
  static Tokenizer from_tiktoken(const std::string& ranks_path, const std::string& pattern,
                                 const std::vector<std::pair<std::string, int32_t>>& special_tokens);

  // As HF `tokenizer.encode(text, add_special_tokens=...)`: added/special tokens appearing in the
  // text are matched as tokens; add_special_tokens applies the post-processor (BOS/EOS).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // The same, reporting the bytes of `text` encoded so far to `progress` (total text.size()):
  // a large text encoded whole (tokenize encode --whole).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens, Progress* progress) const;
  // Batch encode over all cores; same result as encode() on each. `progress`, if given, counts
  // the texts done.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts, bool add_special_tokens = false,
                                                 Progress* progress = nullptr) const;
  // Exact bytes (not necessarily valid UTF-8 for a partial sequence).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t vocab_size() const;                       // including added tokens
  int32_t token_to_id(std::string_view token) const;  // -1 if absent (added tokens included)
  std::string id_to_token(int32_t id) const;          // "" if out of range
  bool is_special(int32_t id) const;
  // BOS/EOS rule: the special tokens the post-processor puts before/after the text (Llama 3's
  // <|begin_of_text|>, Llama 2's <s>); otherwise the first *special* added token named
  // <|begin_of_text|>, <s>, <|endoftext|> (BOS) or <|end_of_text|>, </s>, <|endoftext|>,
  // <|im_end|> (EOS).
  int32_t bos_id() const;  // -1 if the tokenizer has none
  int32_t eos_id() const;  // -1 if the tokenizer has none (e.g. <|end_of_text|>, </s>, <|endoftext|>)
  // Ids that end a generated answer (every evaluation path stops on these): eos_id() first, then
  // whichever of <|end_of_text|>, </s>, <|endoftext|>, <|im_end|>, <|eot_id|>, <|eom_id|>, <|end|>
  // exist as special tokens.
  const std::vector<int32_t>& stop_ids() const;

  // 64-bit identity of everything that affects encoding/decoding (vocab, merges, normalizer,
  // pre-tokenizer, added tokens, post-processor). Shards and checkpoints store it as 16 hex chars.
  uint64_t hash() const;
  std::string hash_hex() const;

  // Serialize to an HF-compatible tokenizer.json (written into checkpoints).
  std::string to_json_string() const;
};

// Streaming decoder: feed ids one at a time; returns the bytes that are now complete UTF-8
// (never splits a character), holding back an incomplete tail until it completes or flush().
struct IncrementalDecoder {
  explicit IncrementalDecoder(const Tokenizer& t, bool skip_special_tokens = false);
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer* tok;
  bool skip_special;
  bool started = false;  // a token has been decoded (the decoders treat the text start apart)
  std::string pending;
};
