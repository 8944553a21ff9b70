// Encoding, in HF `tokenizers` order: split out added tokens that match the raw text, normalize
// the rest, split out added tokens that match the normalized text, pre-tokenize into pieces, run
// BPE (or WordPiece) on each piece, then let the post-processor add BOS/EOS ([CLS]/[SEP]).
#include <algorithm>
#include <cstring>
#include <queue>

#include "common/error.h"
#include "common/hash.h"
#include "common/progress.h"
#include "tokenizer/impl.h"
#include "tokenizer/unicode_nfc.h"

// ---- BPE result cache for frequent pieces (one per thread / per call, never shared).
struct Tokenizer::Impl::Cache {
  // Grows from a few hundred slots, so that a short encode() pays almost nothing for it.
  static constexpr size_t kMaxSlots = 1 << 17, kMaxPiece = 96;
  struct Slot {
    uint64_t hash;
    uint32_t key_offset, ids_offset;
    uint16_t key_length, n_ids;
  };
  std::vector<Slot> slots;
  std::string keys;
  std::vector<int32_t> ids;
  size_t entries = 0;

  const Slot* find(std::string_view piece, uint64_t h) const {
    if (slots.empty()) return nullptr;
    size_t mask = slots.size() - 1, i = h & mask;
    while (slots[i].key_length) {
      const Slot& s = slots[i];
      if (s.hash == h && s.key_length == piece.size() &&
          std::memcmp(keys.data() + s.key_offset, piece.data(), piece.size()) == 0)
        return &s;
      i = (i + 1) & mask;
    }
    return nullptr;
  }
  void place(const Slot& slot) {
    size_t mask = slots.size() - 1, i = slot.hash & mask;
    while (slots[i].key_length) i = (i + 1) & mask;
    slots[i] = slot;
  }
  void insert(std::string_view piece, uint64_t h, const int32_t* tokens, size_t n) {
    if (piece.empty() || piece.size() > kMaxPiece || n > 65535) return;
    if ((entries + 1) * 2 > slots.size()) {
      if (slots.size() >= kMaxSlots) return;  // full: keep what is there
      std::vector<Slot> old = std::move(slots);
      slots.assign(old.empty() ? 256 : old.size() * 2, Slot{0, 0, 0, 0, 0});
      for (const Slot& s : old)
        if (s.key_length) place(s);
    }
    place(Slot{h, uint32_t(keys.size()), uint32_t(ids.size()), uint16_t(piece.size()), uint16_t(n)});
    keys.append(piece);
    ids.insert(ids.end(), tokens, tokens + n);
    ++entries;
  }
};

namespace {

using Impl = Tokenizer::Impl;

uint32_t decode_cp(const unsigned char* s, size_t len) {
  if (len == 1) return s[0];
  uint32_t cp = s[0] & (0x7F >> len);
  for (size_t i = 1; i < len; ++i) cp = (cp << 6) | (s[i] & 63);
  return cp;
}

struct Encoder {
  const Impl& t;
  Impl::Cache* cache;
  std::vector<int32_t>* out;
  // Progress in bytes of the raw text: a piece that lies inside `frame` (a view of the raw text,
  // or of a segment's normalized copy) reports its start mapped back to a raw offset (scaled when
  // the normalizer changed the length); every segment reports its end. Pieces built elsewhere
  // (Metaspace) and a text without pre-tokenizer (one piece per segment) advance at segment ends.
  Progress* progress = nullptr;
  std::string_view frame;
  size_t frame_raw_begin = 0, frame_raw_size = 0;
  // scratch reused across pieces
  std::vector<int32_t> symbols;
  std::vector<uint32_t> ranks;

  // ---- BPE on one piece
  void add_unit(std::string_view unit, int32_t* pending_unk) {
    int32_t id = t.byte_level && unit.size() == 1 ? t.byte_token[uint8_t(unit[0])] : t.model_index.find(unit);
    if (id >= 0) {
      if (*pending_unk >= 0) symbols.push_back(*pending_unk), *pending_unk = -1;
      symbols.push_back(id);
      return;
    }
    if (t.byte_fallback) {
      bool all = true;
      for (unsigned char b : unit) all = all && t.fallback_token[b] >= 0;
      if (all) {  // as HF: a pending unk is not flushed before the bytes
        for (unsigned char b : unit) symbols.push_back(t.fallback_token[b]);
        return;
      }
    }
    if (t.unk_id >= 0) {
      if (*pending_unk >= 0 && !t.fuse_unk) symbols.push_back(*pending_unk);
      *pending_unk = t.unk_id;
    }
    // no unk token: HF drops the character
  }

  void merge_small() {
    // Few symbols: rescanning the pair ranks is cheaper than a heap (the tiktoken approach).
    size_t n = symbols.size();
    ranks.resize(n);
    auto rank_at = [&](size_t i) -> uint32_t {
      if (i + 1 >= symbols.size()) return UINT32_MAX;
      const MergeTable::Slot* m = t.merges.find(symbols[i], symbols[i + 1]);
      return m ? m->rank : UINT32_MAX;
    };
    for (size_t i = 0; i < n; ++i) ranks[i] = rank_at(i);
    while (symbols.size() > 1) {
      size_t best = 0;
      uint32_t best_rank = UINT32_MAX;
      for (size_t i = 0; i + 1 < symbols.size(); ++i)
        if (ranks[i] < best_rank) best_rank = ranks[i], best = i;
      if (best_rank == UINT32_MAX) break;
      symbols[best] = t.merges.find(symbols[best], symbols[best + 1])->merged;
      symbols.erase(symbols.begin() + best + 1);
      ranks.erase(ranks.begin() + best + 1);
      ranks[best] = rank_at(best);
      if (best > 0) ranks[best - 1] = rank_at(best - 1);
    }
  }

  void merge_large() {
    // Long pieces (whole sentences without a pre-tokenizer, SentencePiece style): a heap of
    // candidate merges ordered by (rank, position) over a linked list of symbols, as HF does.
    struct Candidate {
      uint32_t rank;
      uint32_t pos;
      int32_t merged;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    size_t n = symbols.size();
    std::vector<int32_t> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (size_t i = 0; i < n; ++i) prev[i] = int32_t(i) - 1, next[i] = i + 1 < n ? int32_t(i + 1) : -1;
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto push = [&](int32_t i) {
      if (i < 0 || next[i] < 0) return;
      const MergeTable::Slot* m = t.merges.find(symbols[i], symbols[next[i]]);
      if (m) heap.push({m->rank, uint32_t(i), m->merged});
    };
    for (size_t i = 0; i + 1 < n; ++i) push(int32_t(i));
    while (!heap.empty()) {
      Candidate c = heap.top();
      heap.pop();
      int32_t i = int32_t(c.pos);
      if (!alive[i] || next[i] < 0) continue;
      const MergeTable::Slot* m = t.merges.find(symbols[i], symbols[next[i]]);
      if (!m || m->merged != c.merged) continue;  // stale entry
      int32_t j = next[i];
      symbols[i] = c.merged;
      alive[j] = false;
      next[i] = next[j];
      if (next[j] >= 0) prev[next[j]] = i;
      push(prev[i]);
      push(i);
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = next[i]) symbols[k++] = symbols[i];
    symbols.resize(k);
  }

  // ---- WordPiece on one word: from the left, the longest vocab entry that prefixes the rest
  // (with the continuation prefix after the first piece); the whole word is unk when some rest
  // has no entry or the word has more than max_chars characters.
  std::string candidate;
  std::vector<size_t> bounds;
  void wordpiece(std::string_view word) {
    const auto* s = reinterpret_cast<const unsigned char*>(word.data());
    bounds.clear();  // character boundaries
    for (size_t i = 0; i < word.size(); i += utf8_char_length(s + i, word.size() - i)) bounds.push_back(i);
    bounds.push_back(word.size());
    if (bounds.size() - 1 > t.wordpiece_max_chars) return out->push_back(t.unk_id);
    const size_t first = out->size();
    for (size_t a = 0; a + 1 < bounds.size();) {
      int32_t id = -1;
      size_t b = bounds.size() - 1;
      for (; b > a; --b) {
        candidate.assign(a > 0 ? t.wordpiece_prefix : std::string());
        candidate.append(word.substr(bounds[a], bounds[b] - bounds[a]));
        if ((id = t.model_index.find(candidate)) >= 0) break;
      }
      if (id < 0) {
        out->resize(first);
        return out->push_back(t.unk_id);
      }
      out->push_back(id);
      a = b;
    }
  }

  void report_piece(std::string_view piece) {
    const auto p = uintptr_t(piece.data()), b = uintptr_t(frame.data());
    if (p < b || p + piece.size() > b + frame.size()) return;
    const size_t at = p - b;
    progress->reach(int64_t(frame_raw_begin + (frame.size() == frame_raw_size
                                                   ? at
                                                   : size_t(double(at) / double(frame.size()) * double(frame_raw_size)))));
  }
  void set_frame(std::string_view f, size_t raw_begin, size_t raw_size) {
    frame = f;
    frame_raw_begin = raw_begin;
    frame_raw_size = raw_size;
  }

  void bpe(std::string_view piece) {
    if (piece.empty()) return;
    if (progress) report_piece(piece);
    if (t.wordpiece) return wordpiece(piece);
    const uint64_t h = hash64(piece.data(), piece.size());
    if (t.ignore_merges) {
      int32_t id = t.model_index.find(piece, h);
      if (id >= 0) { out->push_back(id); return; }
    }
    if (cache && piece.size() <= Impl::Cache::kMaxPiece) {
      if (const auto* s = cache->find(piece, h)) {
        out->insert(out->end(), cache->ids.begin() + s->ids_offset, cache->ids.begin() + s->ids_offset + s->n_ids);
        return;
      }
    }
    symbols.clear();
    int32_t pending_unk = -1;
    const auto* s = reinterpret_cast<const unsigned char*>(piece.data());
    for (size_t i = 0; i < piece.size();) {
      size_t len = t.byte_level ? 1 : utf8_char_length(s + i, piece.size() - i);
      add_unit(piece.substr(i, len), &pending_unk);
      i += len;
    }
    if (pending_unk >= 0) symbols.push_back(pending_unk);
    if (symbols.size() <= 48) merge_small(); else merge_large();
    if (cache && piece.size() <= Impl::Cache::kMaxPiece) cache->insert(piece, h, symbols.data(), symbols.size());
    out->insert(out->end(), symbols.begin(), symbols.end());
  }

  // ---- pre-tokenizer pipeline: step k splits/edits a piece and hands the results to step k+1.
  void pre_tokenize(size_t k, std::string_view piece, bool at_origin) {
    if (piece.empty()) return;
    if (k == t.pre_tokenizers.size()) return bpe(piece);
    const PreTokenizerStep& step = t.pre_tokenizers[k];
    switch (step.kind) {
      case PreTokenizerStep::ByteLevel: {
        if (step.add_prefix_space && piece[0] != ' ') {
          std::string s = " ";
          s.append(piece);
          return pre_tokenize(k + 1, s, at_origin);
        }
        return pre_tokenize(k + 1, piece, at_origin);
      }
      case PreTokenizerStep::Metaspace: {
        std::string s;
        const std::string& rep = step.replacement;
        bool starts = false;
        for (char c : piece) {
          if (c == ' ') s += rep; else s.push_back(c);
        }
        starts = s.compare(0, rep.size(), rep) == 0;
        if (!starts && (step.prepend_scheme == PreTokenizerStep::Always ||
                        (step.prepend_scheme == PreTokenizerStep::First && at_origin)))
          s.insert(0, rep);
        if (!step.split) return pre_tokenize(k + 1, s, at_origin);
        // split before every replacement character (MergedWithNext)
        std::string_view v(s);
        size_t start = 0;
        for (size_t pos = v.find(rep, rep.size()); pos != std::string_view::npos; pos = v.find(rep, pos + rep.size())) {
          if (pos > start) pre_tokenize(k + 1, v.substr(start, pos - start), at_origin && start == 0);
          start = pos;
        }
        return pre_tokenize(k + 1, v.substr(start), at_origin && start == 0);
      }
      case PreTokenizerStep::Split:
        return split(k, step, piece, at_origin);
      case PreTokenizerStep::Bert: {
        // whitespace separates words and is dropped; each punctuation character is a word alone
        const auto* s = reinterpret_cast<const unsigned char*>(piece.data());
        size_t word = 0;
        for (size_t i = 0; i < piece.size();) {
          size_t len = utf8_char_length(s + i, piece.size() - i);
          uint32_t c = len == 1 && s[i] >= 0x80 ? 0xFFFD : decode_cp(s + i, len);
          bool space = is_white_space(c), punct = !space && bert_is_punctuation(c);
          if (space || punct) {
            if (i > word) pre_tokenize(k + 1, piece.substr(word, i - word), at_origin && word == 0);
            if (punct) pre_tokenize(k + 1, piece.substr(i, len), at_origin && i == 0);
            word = i + len;
          }
          i += len;
        }
        if (piece.size() > word) pre_tokenize(k + 1, piece.substr(word), at_origin && word == 0);
        return;
      }
    }
  }

  bool next_match(const PreTokenizerStep& step, std::string_view piece, size_t from, size_t* ms, size_t* me) {
    if (step.regex) return step.regex->find(piece, from, ms, me);
    size_t p = piece.find(step.literal, from);
    if (p == std::string_view::npos) return false;
    *ms = p;
    *me = p + step.literal.size();
    return true;
  }

  void split(size_t k, const PreTokenizerStep& step, std::string_view piece, bool at_origin) {
    auto emit = [&](size_t a, size_t b) {
      if (b > a) pre_tokenize(k + 1, piece.substr(a, b - a), at_origin && a == 0);
    };
    if (step.behavior == PreTokenizerStep::Isolated) {  // the common case, streamed
      size_t pos = 0, ms, me;
      while (pos < piece.size() && next_match(step, piece, pos, &ms, &me)) {
        emit(pos, ms);
        emit(ms, me);
        pos = me;
      }
      emit(pos, piece.size());
      return;
    }
    // Other behaviors: list (start, end, is_match) intervals, then combine as HF does.
    struct Interval { size_t a, b; bool match; };
    std::vector<Interval> iv;
    size_t pos = 0, ms, me;
    while (pos < piece.size() && next_match(step, piece, pos, &ms, &me)) {
      if (ms > pos) iv.push_back({pos, ms, step.invert});
      iv.push_back({ms, me, !step.invert});
      pos = me;
    }
    if (pos < piece.size()) iv.push_back({pos, piece.size(), step.invert});
    std::vector<std::pair<size_t, size_t>> parts;
    bool previous_match = false;
    switch (step.behavior) {
      case PreTokenizerStep::Removed:
        for (auto& x : iv) if (!x.match) parts.push_back({x.a, x.b});
        break;
      case PreTokenizerStep::Contiguous:
        for (auto& x : iv) {
          if (x.match == previous_match && !parts.empty()) parts.back().second = x.b;
          else parts.push_back({x.a, x.b});
          previous_match = x.match;
        }
        break;
      case PreTokenizerStep::MergedWithPrevious:
        for (auto& x : iv) {
          if (x.match && !previous_match && !parts.empty()) parts.back().second = x.b;
          else parts.push_back({x.a, x.b});
          previous_match = x.match;
        }
        break;
      case PreTokenizerStep::MergedWithNext:
        for (size_t r = iv.size(); r-- > 0;) {
          auto& x = iv[r];
          if (x.match && !previous_match && !parts.empty()) parts.back().first = x.a;
          else parts.push_back({x.a, x.b});
          previous_match = x.match;
        }
        std::reverse(parts.begin(), parts.end());
        break;
      default:
        for (auto& x : iv) parts.push_back({x.a, x.b});
    }
    for (auto [a, b] : parts) emit(a, b);
  }

  // ---- added tokens: leftmost-longest match over the token contents
  template <typename F>
  void split_added(std::string_view text, const std::vector<int32_t>& group,
                   const std::array<bool, 256>& first_byte, F&& segment) {
    if (group.empty()) return segment(text, 0, -1);
    size_t start_offset = 0, scan = 0;
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    while (scan < text.size()) {
      // find the leftmost position where some token matches; take the longest there
      int32_t found = -1;
      size_t at = scan;
      for (; at < text.size(); ++at) {
        if (!first_byte[s[at]]) continue;
        size_t best_len = 0;
        for (int32_t gi : group) {
          const std::string& c = t.added[gi].match_content;
          if (c.size() > best_len && c.size() <= text.size() - at && std::memcmp(s + at, c.data(), c.size()) == 0)
            best_len = c.size(), found = gi;
        }
        if (found >= 0) break;
      }
      if (found < 0) break;
      const AddedToken& tok = t.added[found];
      size_t ms = at, me = at + tok.match_content.size();
      scan = me;
      if (tok.single_word && !is_single_word(text, ms, me)) continue;
      if (tok.lstrip) {
        size_t ns = ms;
        while (ns > start_offset) {  // step back over whitespace characters
          size_t b = ns - 1;
          while (b > start_offset && (s[b] & 0xC0) == 0x80) --b;
          size_t len = utf8_char_length(s + b, text.size() - b);
          if (b + len != ns || !is_white_space(decode_cp(s + b, len))) break;
          ns = b;
        }
        ms = std::max(ns, start_offset);
      }
      if (tok.rstrip) {
        while (me < text.size()) {
          size_t len = utf8_char_length(s + me, text.size() - me);
          if (!is_white_space(decode_cp(s + me, len)) || (len == 1 && s[me] >= 0x80)) break;
          me += len;
        }
        scan = me;
      }
      if (start_offset < ms) segment(text.substr(start_offset, ms - start_offset), start_offset, -1);
      segment(text.substr(ms, me - ms), ms, tok.id);
      start_offset = me;
    }
    if (start_offset < text.size()) segment(text.substr(start_offset), start_offset, -1);
  }

  bool is_single_word(std::string_view text, size_t ms, size_t me) {
    static const Regex word_at_end(R"(\w\z)", "single_word");
    static const Regex word_at_start(R"(\A\w)", "single_word");
    size_t a, b;
    bool start_space = ms == 0 || !word_at_end.find(text.substr(0, ms), 0, &a, &b);
    bool stop_space = me == text.size() || !word_at_start.find(text.substr(me), 0, &a, &b);
    return start_space && stop_space;
  }

  // One segment of the raw text at `offset`: an added token (id >= 0) or text.
  void encode_segment(std::string_view seg, size_t offset, int32_t id) {
    if (id >= 0) return out->push_back(id);
    if (t.normalizers.empty()) {
      split_added(seg, t.added_normalized, t.normalized_first_byte,
                  [&](std::string_view sub, size_t sub_offset, int32_t sub_id) {
                    if (sub_id >= 0) return out->push_back(sub_id);
                    pre_tokenize(0, sub, offset == 0 && sub_offset == 0);
                  });
      return;
    }
    std::string normalized = normalize_text(t, seg);
    set_frame(normalized, offset, seg.size());
    split_added(normalized, t.added_normalized, t.normalized_first_byte,
                [&](std::string_view sub, size_t sub_offset, int32_t sub_id) {
                  if (sub_id >= 0) return out->push_back(sub_id);
                  pre_tokenize(0, sub, offset == 0 && sub_offset == 0);
                });
    set_frame({}, 0, 0);  // `normalized` ends here
  }

  void encode(std::string_view text, bool add_special) {
    if (add_special) out->insert(out->end(), t.post_prefix.begin(), t.post_prefix.end());
    set_frame(text, 0, text.size());
    split_added(text, t.added_raw, t.raw_first_byte, [&](std::string_view seg, size_t offset, int32_t id) {
      encode_segment(seg, offset, id);
      if (progress) progress->reach(int64_t(offset + seg.size()));
    });
    if (add_special) out->insert(out->end(), t.post_suffix.begin(), t.post_suffix.end());
  }
};

}  // namespace

std::string normalize_text(const Tokenizer::Impl& t, std::string_view text) {
  std::string s(text);
  for (const NormalizerStep& n : t.normalizers) {
    if (n.kind == NormalizerStep::Prepend) {
      if (!s.empty()) s.insert(0, n.text);
      continue;
    }
    if (n.kind == NormalizerStep::NFC) {
      s = nfc_normalize(s);
      continue;
    }
    if (n.kind == NormalizerStep::Bert) {
      s = bert_normalize(s, n.bert);
      continue;
    }
    std::string r;  // Replace every (non-overlapping, leftmost) occurrence
    size_t pos = 0, ms, me;
    while (pos < s.size()) {
      if (n.regex) {
        if (!n.regex->find(s, pos, &ms, &me)) break;
      } else {
        ms = s.find(n.text, pos);
        if (ms == std::string::npos) break;
        me = ms + n.text.size();
      }
      r.append(s, pos, ms - pos);
      r += n.content;
      pos = me;
    }
    r.append(s, pos, std::string::npos);
    s = std::move(r);
  }
  return s;
}

void Tokenizer::Impl::encode_into(std::string_view text, bool add_special, Cache* cache, std::vector<int32_t>* out,
                                  Progress* progress) const {
  Encoder e{*this, cache, out, progress, {}, 0, 0, {}, {}, {}, {}};
  e.encode(text, add_special);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return encode(text, add_special_tokens, nullptr);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens, Progress* progress) const {
  check(impl != nullptr, "Tokenizer::encode: tokenizer is not loaded");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  Impl::Cache cache;
  impl->encode_into(text, add_special_tokens, &cache, &ids, progress);
  return ids;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens, Progress* progress) const {
  check(impl != nullptr, "Tokenizer::encode_batch: tokenizer is not loaded");
  std::vector<std::vector<int32_t>> result(texts.size());
  std::string first_error;
#pragma omp parallel
  {
    Impl::Cache cache;
#pragma omp for schedule(dynamic, 8)
    for (size_t i = 0; i < texts.size(); ++i) {
      try {
        result[i].reserve(texts[i].size() / 3 + 4);
        impl->encode_into(texts[i], add_special_tokens, &cache, &result[i]);
        if (progress) progress->add();
      } catch (const EngineError& e) {
#pragma omp critical
        if (first_error.empty()) first_error = e.what();
      }
    }
  }
  if (!first_error.empty()) throw EngineError(first_error);
  return result;
}
