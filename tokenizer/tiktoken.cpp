// Loading a tiktoken rank file ("<base64 token> <rank>" per line) with a pre-tokenizer pattern and
// special tokens. tiktoken merges the adjacent pair whose concatenation has the lowest rank, so
// every way of splitting a token into two tokens is a merge of that token's rank; a piece that is
// a token is emitted whole (ignore_merges). The HF tokenizer.json written by to_json_string keeps
// one merge per token (its last BPE step), which is what transformers' converter does.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "tokenizer/impl.h"

using nlohmann::json;

static bool base64_decode(std::string_view in, std::string* out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  out->clear();
  if (in.size() % 4 != 0) return false;
  for (size_t i = 0; i < in.size(); i += 4) {
    int v[4], pad = 0;
    for (int k = 0; k < 4; ++k) {
      if (in[i + k] == '=' && i + 4 == in.size() && k >= 2) { v[k] = 0; ++pad; continue; }
      if (pad) return false;
      v[k] = value(in[i + k]);
      if (v[k] < 0) return false;
    }
    uint32_t x = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out->push_back(char(x >> 16));
    if (pad < 2) out->push_back(char((x >> 8) & 255));
    if (pad < 1) out->push_back(char(x & 255));
  }
  return true;
}

Tokenizer Tokenizer::from_tiktoken(const std::string& ranks_path, const std::string& pattern,
                                   const std::vector<std::pair<std::string, int32_t>>& special_tokens) {
  auto t = std::make_shared<Impl>();
  t->name = ranks_path;
  std::string text = read_text_file(ranks_path);
  std::vector<std::pair<std::string, int32_t>> ranks;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    size_t sp = line.find(' ');
    std::string bytes;
    if (sp == std::string_view::npos || !base64_decode(line.substr(0, sp), &bytes) || bytes.empty())
      fail(ranks_path, ": line ", line_no, ": expected '<base64 token> <rank>'");
    std::string_view r = line.substr(sp + 1);
    int64_t rank = 0;
    if (r.empty() || r.size() > 10) fail(ranks_path, ": line ", line_no, ": bad rank");
    for (char c : r) {
      if (c < '0' || c > '9') fail(ranks_path, ": line ", line_no, ": bad rank '", r, "'");
      rank = rank * 10 + (c - '0');
    }
    if (rank >= (1LL << 31) - 1) fail(ranks_path, ": line ", line_no, ": rank too large");
    ranks.push_back({bytes, int32_t(rank)});
  }
  check(!ranks.empty(), ranks_path, ": no ranks");

  int32_t n = 0;
  for (auto& [b, r] : ranks) n = std::max(n, r + 1);
  for (auto& [s, id] : special_tokens) {
    check(id >= 0, ranks_path, ": special token '", s, "' has a negative id");
    n = std::max(n, id + 1);
  }
  t->token_text.assign(n, "");
  t->token_bytes.assign(n, "");
  t->present.assign(n, false);
  for (auto& [b, r] : ranks) {
    check(!t->present[r], ranks_path, ": rank ", r, " appears twice");
    t->token_bytes[r] = b;
    t->token_text[r] = byte_level_encode(b);
    t->present[r] = true;
  }
  for (auto& [s, id] : special_tokens) {
    check(!t->present[id], ranks_path, ": special token '", s, "' reuses id ", id);
    AddedToken a;
    a.id = id;
    a.content = s;
    a.special = true;
    t->added.push_back(a);
    t->token_text[id] = s;
    t->token_bytes[id] = s;
    t->present[id] = true;
  }
  t->byte_level = true;
  t->ignore_merges = true;
  t->tiktoken_merges = true;
  PreTokenizerStep split;
  split.kind = PreTokenizerStep::Split;
  split.regex = std::make_shared<Regex>(pattern, ranks_path + ": pattern");
  split.behavior = PreTokenizerStep::Isolated;
  t->pre_tokenizers.push_back(split);
  PreTokenizerStep bl;
  bl.kind = PreTokenizerStep::ByteLevel;
  t->pre_tokenizers.push_back(bl);
  t->has_decoder = true;
  t->decoders.push_back(DecoderStep{DecoderStep::ByteLevel, "", "", 0, 0, "", true});
  t->decoder_is_byte_level_only = true;

  // model index first (merge derivation looks tokens up by bytes)
  std::vector<int32_t> ids;
  for (auto& [b, r] : ranks) ids.push_back(r);
  t->model_index.build(&t->token_bytes, ids);
  std::sort(ranks.begin(), ranks.end(), [](auto& a, auto& b) { return a.second < b.second; });
  t->merges.reserve(ranks.size() * 4);
  for (auto& [b, r] : ranks) {
    for (size_t i = 1; i < b.size(); ++i) {
      int32_t left = t->model_index.find(std::string_view(b).substr(0, i));
      int32_t right = t->model_index.find(std::string_view(b).substr(i));
      if (left >= 0 && right >= 0) t->merges.insert(left, right, uint32_t(r), r);
    }
  }
  // Canonical merge of each token: run BPE on its bytes with only lower ranks allowed; the two
  // parts left are the last merge.
  std::vector<int32_t> parts;
  for (auto& [b, r] : ranks) {
    if (b.size() < 2) continue;
    parts.clear();
    bool ok = true;
    for (unsigned char c : b) {
      int32_t id = t->model_index.find(std::string(1, char(c)));
      if (id < 0) { ok = false; break; }
      parts.push_back(id);
    }
    if (!ok) continue;
    while (parts.size() > 2) {
      size_t best = 0;
      int32_t best_rank = INT32_MAX;
      for (size_t i = 0; i + 1 < parts.size(); ++i) {
        int32_t m = t->model_index.find(t->token_bytes[parts[i]] + t->token_bytes[parts[i + 1]]);
        if (m >= 0 && m < r && m < best_rank) best_rank = m, best = i;
      }
      if (best_rank == INT32_MAX) break;
      parts[best] = best_rank;
      parts.erase(parts.begin() + best + 1);
    }
    if (parts.size() == 2) t->merge_list.push_back({parts[0], parts[1]});
  }

  // HF form, for to_json_string()
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = json::array();
  for (const AddedToken& a : t->added)
    j["added_tokens"].push_back({{"id", a.id}, {"content", a.content}, {"single_word", false},
                                 {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                                 {"special", true}});
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  json vocab = json::object(), merges = json::array();
  for (auto& [b, r] : ranks) vocab[t->token_text[r]] = r;
  for (auto [a, b] : t->merge_list) merges.push_back(json::array({t->token_text[a], t->token_text[b]}));
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", true},
                {"vocab", vocab}, {"merges", merges}};
  t->json = j.dump(2);
  finalize_tokenizer(t.get(), "tiktoken pattern " + pattern + "\n");
  Tokenizer tok;
  tok.impl = t;
  return tok;
}
