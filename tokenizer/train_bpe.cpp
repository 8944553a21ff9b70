#include "tokenizer/train_bpe.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "common/file_io.h"
#include "tokenizer/impl.h"

const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

}  // namespace

std::string train_bpe_json(const std::vector<std::string_view>& texts, const BpeTrainOptions& opt) {
  const int32_t n_special = int32_t(opt.special_tokens.size());
  check(opt.vocab_size >= 256 + n_special, "train_bpe: vocab size ", opt.vocab_size,
        " is smaller than 256 bytes + ", n_special, " special tokens");
  if (!opt.bos_token.empty())
    check(std::find(opt.special_tokens.begin(), opt.special_tokens.end(), opt.bos_token) !=
              opt.special_tokens.end(),
          "train_bpe: bos token '", opt.bos_token, "' is not among the special tokens");

  // 1. Pieces and their counts. Special tokens are cut out of the text first, as encoding will.
  Regex re(opt.pattern, "train_bpe: pattern");
  std::unordered_map<std::string, int64_t> piece_count;
  auto count_pieces = [&](std::string_view text) {
    size_t pos = 0, ms, me;
    while (pos < text.size() && re.find(text, pos, &ms, &me)) {
      if (ms > pos) ++piece_count[std::string(text.substr(pos, ms - pos))];
      ++piece_count[std::string(text.substr(ms, me - ms))];
      pos = me;
    }
    if (pos < text.size()) ++piece_count[std::string(text.substr(pos))];
  };
  for (std::string_view text : texts) {
    size_t start = 0;
    while (start < text.size()) {
      size_t best = std::string_view::npos, best_len = 0;
      for (const std::string& s : opt.special_tokens) {
        size_t p = text.find(s, start);
        if (p != std::string_view::npos && (p < best || (p == best && s.size() > best_len))) best = p, best_len = s.size();
      }
      size_t end = best == std::string_view::npos ? text.size() : best;
      count_pieces(text.substr(start, end - start));
      start = best == std::string_view::npos ? text.size() : best + best_len;
    }
  }

  // 2. Words as byte symbols, sorted so that training does not depend on hash-map order.
  std::vector<std::pair<std::string, int64_t>> sorted(piece_count.begin(), piece_count.end());
  piece_count.clear();
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words(sorted.size());
  for (size_t w = 0; w < sorted.size(); ++w) {
    for (unsigned char c : sorted[w].first) words[w].symbols.push_back(c);
    words[w].count = sorted[w].second;
  }
  sorted.clear();

  std::vector<std::string> token_bytes(256);
  for (int b = 0; b < 256; ++b) token_bytes[b] = std::string(1, char(b));
  std::unordered_map<std::string, int32_t> token_id;
  for (int b = 0; b < 256; ++b) token_id[token_bytes[b]] = b;

  // 3. Pair counts, which words hold each pair, and a max-heap with lazy invalidation.
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  auto add_word_pairs = [&](int32_t w, int64_t sign, std::vector<uint64_t>* touched) {
    const auto& s = words[w].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = pair_key(s[i], s[i + 1]);
      pair_count[k] += sign * words[w].count;
      if (sign > 0) pair_words[k].push_back(w);
      if (touched) touched->push_back(k);
    }
  };
  for (int32_t w = 0; w < int32_t(words.size()); ++w) add_word_pairs(w, +1, nullptr);
  struct Entry {
    int64_t count;
    uint64_t key;
    bool operator<(const Entry& o) const {  // max count first, then the smallest pair
      return count != o.count ? count < o.count : key > o.key;
    }
  };
  std::priority_queue<Entry> heap;
  for (auto& [k, c] : pair_count) heap.push({c, k});

  std::vector<std::pair<int32_t, int32_t>> merges;
  const int32_t target = opt.vocab_size - n_special;
  std::vector<int32_t> last_seen(words.size(), -1);
  std::vector<uint64_t> touched;
  while (int32_t(token_bytes.size()) < target && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    auto it = pair_count.find(top.key);
    int64_t current = it == pair_count.end() ? 0 : it->second;
    if (current != top.count) {  // stale: re-queue with the current count
      if (current > 0) heap.push({current, top.key});
      continue;
    }
    if (current < std::max<int64_t>(opt.min_frequency, 1)) break;
    int32_t a = int32_t(top.key >> 32), b = int32_t(uint32_t(top.key));
    std::string merged_bytes = token_bytes[a] + token_bytes[b];
    int32_t merged;
    auto found = token_id.find(merged_bytes);
    if (found != token_id.end()) {
      merged = found->second;  // another pair already made these bytes: reuse the token
    } else {
      merged = int32_t(token_bytes.size());
      token_bytes.push_back(merged_bytes);
      token_id[merged_bytes] = merged;
    }
    merges.push_back({a, b});
    // 4. Rewrite every word holding the pair: remove its pairs, merge left to right, re-add.
    int32_t merge_index = int32_t(merges.size());
    touched.clear();
    std::vector<int32_t> holders = std::move(pair_words[top.key]);
    pair_words.erase(top.key);
    for (int32_t w : holders) {
      if (last_seen[w] == merge_index) continue;
      last_seen[w] = merge_index;
      auto& s = words[w].symbols;
      bool has = false;
      for (size_t i = 0; i + 1 < s.size(); ++i) has = has || (s[i] == a && s[i + 1] == b);
      if (!has) continue;
      add_word_pairs(w, -1, &touched);
      size_t out = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          s[out++] = merged;
          ++i;
        } else {
          s[out++] = s[i];
        }
      }
      s.resize(out);
      add_word_pairs(w, +1, &touched);
    }
    pair_count.erase(top.key);
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t k : touched) {
      auto pc = pair_count.find(k);
      if (pc == pair_count.end()) continue;
      if (pc->second <= 0) {
        pair_count.erase(pc);
        continue;
      }
      heap.push({pc->second, k});
    }
  }

  // 5. tokenizer.json
  using nlohmann::json;
  json vocab = json::object(), merge_list = json::array();
  std::vector<std::string> text(token_bytes.size());
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    text[id] = byte_level_encode(token_bytes[id]);
    vocab[text[id]] = id;
  }
  for (auto [a, b] : merges) merge_list.push_back(json::array({text[a], text[b]}));
  json added = json::array();
  int32_t next_id = int32_t(token_bytes.size()), bos_id = -1;
  for (const std::string& s : opt.special_tokens) {
    added.push_back({{"id", next_id}, {"content", s}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
    if (s == opt.bos_token) bos_id = next_id;
    ++next_id;
  }
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", opt.pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  json byte_level_pp = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  if (bos_id >= 0) {
    json tp = {{"type", "TemplateProcessing"},
               {"single", {{{"SpecialToken", {{"id", opt.bos_token}, {"type_id", 0}}}},
                           {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
               {"pair", {{{"SpecialToken", {{"id", opt.bos_token}, {"type_id", 0}}}},
                         {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                         {{"SpecialToken", {{"id", opt.bos_token}, {"type_id", 1}}}},
                         {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
               {"special_tokens", {{opt.bos_token, {{"id", opt.bos_token}, {"ids", {bos_id}}, {"tokens", {opt.bos_token}}}}}}};
    j["post_processor"] = {{"type", "Sequence"}, {"processors", {byte_level_pp, tp}}};
  } else {
    j["post_processor"] = byte_level_pp;
  }
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", true},
                {"vocab", vocab}, {"merges", merge_list}};
  return j.dump(1);
}

Tokenizer train_bpe(const std::vector<std::string_view>& texts, const BpeTrainOptions& opt) {
  return Tokenizer::from_json_string(train_bpe_json(texts, opt), "<trained tokenizer>");
}

Tokenizer train_bpe_files(const std::vector<std::string>& files, const BpeTrainOptions& opt,
                          const std::string& output_path) {
  std::vector<std::string> contents;
  for (const std::string& f : files) contents.push_back(read_text_file(f));
  std::vector<std::string_view> views(contents.begin(), contents.end());
  std::string text = train_bpe_json(views, opt);
  Tokenizer t = Tokenizer::from_json_string(text, output_path);
  write_file_atomic(output_path, text);
  return t;
}
