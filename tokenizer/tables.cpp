// Hash tables of the encoder hot path, and the finishing step shared by every loader (indices,
// bos/eos, identity hash).
#include <algorithm>

#include "common/error.h"
#include "common/hash.h"
#include "tokenizer/impl.h"

static size_t table_size_for(size_t n) {
  size_t size = 16;
  while (size < n * 2) size <<= 1;  // load factor <= 0.5 keeps probe chains short
  return size;
}

void TokenIndex::build(const std::vector<std::string>* k, const std::vector<int32_t>& which) {
  keys = k;
  size_t size = table_size_for(which.size());
  mask = size - 1;
  hashes.assign(size, 0);
  ids.assign(size, -1);
  for (int32_t id : which) {
    const std::string& key = (*keys)[id];
    uint64_t h = hash64(key);
    size_t i = h & mask;
    bool duplicate = false;
    while (ids[i] >= 0) {
      if (hashes[i] == h && (*keys)[ids[i]] == key) { duplicate = true; break; }
      i = (i + 1) & mask;
    }
    if (duplicate) continue;  // first id wins, as in a vocab lookup
    hashes[i] = h;
    ids[i] = id;
  }
}

int32_t TokenIndex::find(std::string_view bytes) const {
  return find(bytes, hash64(bytes.data(), bytes.size()));
}

int32_t TokenIndex::find(std::string_view bytes, uint64_t h) const {
  if (ids.empty()) return -1;
  size_t i = h & mask;
  while (true) {
    int32_t id = ids[i];
    if (id < 0) return -1;
    if (hashes[i] == h && (*keys)[id] == bytes) return id;
    i = (i + 1) & mask;
  }
}

void MergeTable::reserve(size_t n) {
  size_t size = table_size_for(n);
  mask = size - 1;
  slots.assign(size, Slot{kEmpty, 0, -1});
  count = 0;
}

void MergeTable::insert(int32_t left, int32_t right, uint32_t rank, int32_t merged) {
  if ((count + 1) * 2 > slots.size()) {
    std::vector<Slot> old = std::move(slots);
    reserve(std::max<size_t>(count * 2 + 2, 8));
    for (const Slot& s : old)
      if (s.key != kEmpty) insert(int32_t(s.key >> 32), int32_t(uint32_t(s.key)), s.rank, s.merged);
  }
  uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  size_t i = (key * 0x9e3779b97f4a7c15ULL) >> 20 & mask;
  while (slots[i].key != kEmpty) {
    if (slots[i].key == key) {
      if (rank < slots[i].rank) slots[i].rank = rank, slots[i].merged = merged;
      return;
    }
    i = (i + 1) & mask;
  }
  slots[i] = Slot{key, rank, merged};
  ++count;
}

void finalize_tokenizer(Tokenizer::Impl* t, const std::string& canonical_extra) {
  const int32_t n = int32_t(t->token_text.size());
  t->special.assign(n, false);
  std::vector<int32_t> model_ids, all_ids;
  std::vector<bool> is_added(n, false);
  for (const AddedToken& a : t->added) is_added[a.id] = true;
  for (int32_t id = 0; id < n; ++id) {
    if (!t->present[id]) continue;
    all_ids.push_back(id);
    if (!is_added[id]) model_ids.push_back(id);
  }
  t->model_index.build(&t->token_bytes, model_ids);
  t->text_index.build(&t->token_text, all_ids);

  t->byte_token.fill(-1);
  t->fallback_token.fill(-1);
  for (int b = 0; b < 256; ++b) {
    t->byte_token[b] = t->model_index.find(std::string(1, char(b)));
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    t->fallback_token[b] = t->text_index.find(name);
    if (t->fallback_token[b] >= 0 && is_added[t->fallback_token[b]]) t->fallback_token[b] = -1;
  }

  // Added tokens are matched in two passes (before and after normalization); the first bytes
  // of their contents make a quick filter for the scan.
  t->added_raw.clear();
  t->normalized_added_text.clear();
  t->added_normalized.clear();
  t->raw_first_byte.fill(false);
  t->normalized_first_byte.fill(false);
  for (size_t i = 0; i < t->added.size(); ++i) {
    AddedToken& a = t->added[i];
    if (a.special) t->special[a.id] = true;
    // as HF: normalized tokens are matched after normalization, against their normalized content
    a.match_content = a.normalized ? normalize_text(*t, a.content) : a.content;
    if (a.match_content != a.content) t->normalized_added_text.push_back({a.id, a.match_content});
    if (a.match_content.empty()) continue;
    if (a.normalized) {
      t->added_normalized.push_back(int32_t(i));
      t->normalized_first_byte[uint8_t(a.match_content[0])] = true;
    } else {
      t->added_raw.push_back(int32_t(i));
      t->raw_first_byte[uint8_t(a.match_content[0])] = true;
    }
  }

  if (t->decoder_is_byte_level_only) {
    t->byte_level_decoded.assign(n, "");
    std::string raw;
    for (int32_t id = 0; id < n; ++id)
      if (t->present[id])
        t->byte_level_decoded[id] = byte_level_decode(t->shown_text(id), &raw) ? raw : t->shown_text(id);
  }

  // BOS/EOS: what the post-processor adds around the text; otherwise the conventional names.
  // (only special added tokens count: a trained vocab may hold "</s>" as an ordinary piece)
  auto first_present = [&](std::initializer_list<const char*> names) {
    for (const char* s : names) {
      int32_t id = t->text_index.find(s);
      if (id >= 0 && t->special[id]) return id;
    }
    return -1;
  };
  t->bos = !t->post_prefix.empty() ? t->post_prefix.front()
                                   : first_present({"<|begin_of_text|>", "<s>", "<|endoftext|>"});
  t->eos = !t->post_suffix.empty()
               ? t->post_suffix.back()
               : first_present({"<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>"});
  t->stop_ids.clear();
  if (t->eos >= 0) t->stop_ids.push_back(t->eos);
  // EOS, then the end-of-turn / end-of-message tokens of the Llama 3, ChatML (Qwen), Phi-3 and
  // GPT-2 / Llama 2 families: generation stops at any of them.
  for (const char* s : {"<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>",
                        "<|eom_id|>", "<|end|>"}) {
    int32_t id = t->text_index.find(s);
    if (id >= 0 && t->special[id] && std::find(t->stop_ids.begin(), t->stop_ids.end(), id) == t->stop_ids.end())
      t->stop_ids.push_back(id);
  }

  // Identity: vocab strings in id order, merges in rank order, model flags, added tokens, and
  // the canonical (key-sorted, whitespace-free) dump of the rest of the pipeline. JSON formatting
  // and key order therefore do not change it.
  std::string canon;
  canon.reserve(size_t(n) * 12);
  canon += "bpe-v1\n";
  canon += t->byte_level ? "byte_level\n" : "chars\n";
  for (int32_t id = 0; id < n; ++id) {
    canon += t->present[id] ? t->token_text[id] : std::string("\x01hole");
    canon.push_back('\0');
  }
  canon += "\nmerges\n";
  for (auto [a, b] : t->merge_list) {
    canon.append(reinterpret_cast<const char*>(&a), 4);
    canon.append(reinterpret_cast<const char*>(&b), 4);
  }
  canon += "\nflags ";
  canon += std::to_string(t->byte_fallback) + std::to_string(t->fuse_unk) +
           std::to_string(t->ignore_merges) + std::to_string(t->tiktoken_merges) + " unk " +
           std::to_string(t->unk_id) + "\n";
  for (const AddedToken& a : t->added) {
    canon += "added " + std::to_string(a.id) + " " + std::to_string(a.special) +
             std::to_string(a.lstrip) + std::to_string(a.rstrip) + std::to_string(a.single_word) +
             std::to_string(a.normalized) + " ";
    canon += a.content;
    canon.push_back('\0');
  }
  canon += canonical_extra;
  t->identity = hash64(canon);
}
