// Internal state of a Tokenizer: the BPE model (token bytes, merges), the pipeline around it
// (normalizers, pre-tokenizers, added tokens, post-processor, decoders), and the tables that make
// encoding fast. Built by load_json.cpp (tokenizer.json) or tiktoken.cpp (rank files).
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_bert.h"

// GPT-2's reversible byte <-> printable-character map used by ByteLevel: printable Latin-1 bytes
// map to themselves, the other 68 bytes to U+0100.. in byte order.
const std::array<uint32_t, 256>& byte_to_codepoint();
std::string byte_level_encode(std::string_view raw);  // raw bytes -> vocab string (UTF-8)
// vocab string -> raw bytes; false if some character is not in the map.
bool byte_level_decode(std::string_view text, std::string* raw);
void append_utf8(std::string* out, uint32_t cp);
// Length of the UTF-8 sequence starting at s[0] if it is valid and complete, else 1 (one
// invalid byte).
size_t utf8_char_length(const unsigned char* s, size_t n);

// Open-addressing hash map from a token's bytes to its id; the bytes themselves live in the
// tokenizer's token table, so a slot is only a hash and an id.
struct TokenIndex {
  std::vector<uint64_t> hashes;
  std::vector<int32_t> ids;  // -1 = empty
  size_t mask = 0;
  const std::vector<std::string>* keys = nullptr;
  void build(const std::vector<std::string>* keys, const std::vector<int32_t>& which);
  int32_t find(std::string_view bytes) const;
  int32_t find(std::string_view bytes, uint64_t hash64_of_bytes) const;
};

// (left id, right id) -> (merge rank, merged id), open addressing on the packed 64-bit pair.
struct MergeTable {
  struct Slot {
    uint64_t key;
    uint32_t rank;
    int32_t merged;
  };
  std::vector<Slot> slots;
  size_t mask = 0, count = 0;
  static constexpr uint64_t kEmpty = ~0ULL;
  void reserve(size_t n);
  // Keeps the lowest rank when a pair is inserted twice.
  void insert(int32_t left, int32_t right, uint32_t rank, int32_t merged);
  const Slot* find(int32_t left, int32_t right) const {
    uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    size_t i = (key * 0x9e3779b97f4a7c15ULL) >> 20 & mask;
    while (true) {
      const Slot& s = slots[i];
      if (s.key == key) return &s;
      if (s.key == kEmpty) return nullptr;
      i = (i + 1) & mask;
    }
  }
};

struct AddedToken {
  int32_t id = -1;
  std::string content;
  std::string match_content;  // content as matched: normalized when `normalized` is set
  bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
};

struct NormalizerStep {
  enum Kind { Prepend, Replace, NFC, Bert } kind;
  std::string text;                 // Prepend: the prefix; Replace: the literal pattern
  std::shared_ptr<Regex> regex;     // Replace with a Regex pattern
  std::string content;              // Replace: the replacement
  BertNormalizerOptions bert{};     // Bert
};

struct PreTokenizerStep {
  enum Kind { Split, ByteLevel, Metaspace, Bert } kind;  // Bert: whitespace split, punctuation isolated
  // Split (also ByteLevel with use_regex, and Digits)
  std::shared_ptr<Regex> regex;
  std::string literal;  // Split on a String pattern
  enum Behavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous } behavior =
      Isolated;
  bool invert = false;
  // ByteLevel
  bool add_prefix_space = false;
  // Metaspace
  std::string replacement;  // UTF-8 of the replacement character
  enum Prepend { Always, Never, First } prepend_scheme = Always;
  bool split = true;
};

struct DecoderStep {
  enum Kind { ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, WordPiece } kind;
  std::string pattern, content;  // Replace; Strip content; WordPiece: pattern = the prefix
  int start = 0, stop = 0;       // Strip
  std::string replacement;       // Metaspace
  bool prepend = true;           // Metaspace: prepend_scheme != never
  bool cleanup = false;          // WordPiece: undo the spaces BERT's tokenization put before punctuation
};

struct Tokenizer::Impl {
  std::string name;  // file name for errors

  // ---- model: every id (model vocab and added tokens) has a string as HF shows it and the raw
  // bytes BPE works on (for byte-level models the vocab strings are byte-mapped).
  bool byte_level = false;
  std::vector<std::string> token_text;   // id -> HF token string ("" for holes)
  std::vector<std::string> token_bytes;  // id -> bytes matched/produced by BPE
  std::vector<bool> present;             // id is a model or added token
  TokenIndex model_index;                // model vocab bytes -> id
  TokenIndex text_index;                 // token_text -> id (all tokens, for token_to_id)
  MergeTable merges;
  std::vector<std::pair<int32_t, int32_t>> merge_list;  // rank order, for serialization
  std::array<int32_t, 256> byte_token{};      // byte-level: single byte -> id (or -1)
  std::array<int32_t, 256> fallback_token{};  // "<0xNN>" ids for byte_fallback (or -1)
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  bool tiktoken_merges = false;  // merges hold every split of every token (tiktoken rule)
  int32_t unk_id = -1;
  // WordPiece model (instead of BPE): greedy longest-prefix match in the vocab, pieces after the
  // first carry the prefix ("##"); a word longer than max_chars characters, or one that cannot be
  // covered, becomes unk_id.
  bool wordpiece = false;
  std::string wordpiece_prefix;
  size_t wordpiece_max_chars = 100;

  // ---- pipeline
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  bool has_decoder = false;
  std::vector<DecoderStep> decoders;
  bool decoder_is_byte_level_only = false;
  std::vector<std::string> byte_level_decoded;  // id -> bytes, when the decoder is ByteLevel only
  std::vector<AddedToken> added;                    // all added tokens
  std::vector<int32_t> added_raw, added_normalized;  // indices into `added` per matching pass
  std::array<bool, 256> raw_first_byte{}, normalized_first_byte{};
  std::vector<int32_t> post_prefix, post_suffix;  // post-processor ids around the sequence
  std::vector<bool> special;
  int32_t bos = -1, eos = -1;
  std::vector<int32_t> stop_ids;
  uint64_t identity = 0;
  std::string json;  // HF tokenizer.json text (canonical output of to_json_string)

  int32_t vocab_size_() const { return int32_t(token_text.size()); }
  // As HF: a normalized added token decodes (and shows) as its normalized form.
  std::vector<std::pair<int32_t, std::string>> normalized_added_text;  // (id, text), usually empty
  const std::string& shown_text(int32_t id) const {
    for (const auto& [i, text] : normalized_added_text)
      if (i == id) return text;
    return token_text[id];
  }

  // encode.cpp
  struct Cache;
  void encode_into(std::string_view text, bool add_special, Cache* cache, std::vector<int32_t>* out,
                   Progress* progress = nullptr) const;
  // decode.cpp: bytes of ids; at_start tells whether ids[0] is the first decoded token (the
  // Strip/Metaspace decoders treat the start of the text differently).
  std::string decode_ids(const int32_t* ids, size_t n, bool skip_special, bool at_start) const;
};

// The normalizer pipeline applied to one segment of text (encode.cpp).
std::string normalize_text(const Tokenizer::Impl& t, std::string_view text);

// Shared by the loaders: finishes tables (indices, byte tables, bos/eos, hash) once the fields
// above are filled.
void finalize_tokenizer(Tokenizer::Impl* t, const std::string& canonical_extra);
