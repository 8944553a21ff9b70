// Decoding ids back to bytes through the tokenizer's decoder chain, the streaming decoder, and
// the small accessors of the public API.
#include "common/error.h"
#include "common/hash.h"
#include "tokenizer/impl.h"

namespace {

void replace_all(std::string* s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string r;
  size_t pos = 0;
  for (size_t p = s->find(from); p != std::string::npos; p = s->find(from, pos)) {
    r.append(*s, pos, p - pos);
    r += to;
    pos = p + from.size();
  }
  if (pos == 0) return;
  r.append(*s, pos, std::string::npos);
  *s = std::move(r);
}

// "<0xNN>" -> NN, or -1
int byte_fallback_value(const std::string& s) {
  if (s.size() != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
  auto hex = [](char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
  };
  int hi = hex(s[3]), lo = hex(s[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// WordPiece cleanup: BERT's tokenization put spaces before punctuation and inside contractions.
const std::pair<std::string, std::string> kWordPieceCleanup[] = {
    {" .", "."},     {" ?", "?"},       {" !", "!"},         {" ,", ","},   {" ' ", "'"},   {" n't", "n't"},
    {" 'm", "'m"},   {" do not", " don't"}, {" 's", "'s"},    {" 've", "'ve"}, {" 're", "'re"}};

}  // namespace

std::string Tokenizer::Impl::decode_ids(const int32_t* ids, size_t n, bool skip_special,
                                        bool at_start) const {
  const int32_t vocab = int32_t(token_text.size());
  auto valid = [&](int32_t id) { return id >= 0 && id < vocab && present[id]; };
  if (decoder_is_byte_level_only) {
    // ByteLevel alone is a per-token map, so concatenating per-token bytes is exact.
    std::string out;
    for (size_t i = 0; i < n; ++i) {
      int32_t id = ids[i];
      if (!valid(id) || (skip_special && special[id])) continue;
      out += byte_level_decoded[id];
    }
    return out;
  }
  std::vector<std::string> tokens;  // the HF token strings, then transformed step by step
  for (size_t i = 0; i < n; ++i) {
    int32_t id = ids[i];
    if (!valid(id) || (skip_special && special[id])) continue;
    tokens.push_back(shown_text(id));
  }
  if (!has_decoder) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  bool fused = false;  // after Fuse/ByteLevel there is one token: the whole text
  for (const DecoderStep& d : decoders) {
    switch (d.kind) {
      case DecoderStep::ByteLevel: {
        std::string all, raw;
        for (const std::string& tok : tokens) all += byte_level_decode(tok, &raw) ? raw : tok;
        tokens.assign(1, std::move(all));
        fused = true;
        break;
      }
      case DecoderStep::Fuse: {
        std::string all;
        for (const std::string& tok : tokens) all += tok;
        tokens.assign(1, std::move(all));
        fused = true;
        break;
      }
      case DecoderStep::Replace:
        for (std::string& tok : tokens) replace_all(&tok, d.pattern, d.content);
        break;
      case DecoderStep::ByteFallback:
        // Exact bytes: HF turns an invalid UTF-8 run of byte tokens into U+FFFD characters,
        // we keep the bytes (decode() promises exact bytes).
        for (std::string& tok : tokens) {
          int b = byte_fallback_value(tok);
          if (b >= 0) tok.assign(1, char(b));
        }
        break;
      case DecoderStep::Strip:
        for (std::string& tok : tokens) {
          size_t a = 0, e = tok.size();
          if (!fused || at_start)
            while (a < size_t(d.start) && a < e && tok[a] == d.content[0]) ++a;
          if (!fused)  // the end of a fused text is only known at the end of the stream
            for (int k = 0; k < d.stop && e > a && tok[e - 1] == d.content[0]; ++k) --e;
          tok = tok.substr(a, e - a);
        }
        break;
      case DecoderStep::WordPiece:
        for (size_t i = 0; i < tokens.size(); ++i) {
          std::string& tok = tokens[i];
          if (!(i == 0 && at_start)) {  // a continuation joins its word, any other token gets a space
            if (!d.pattern.empty() && tok.compare(0, d.pattern.size(), d.pattern) == 0) tok.erase(0, d.pattern.size());
            else tok = " " + tok;
          }
          if (d.cleanup)  // as HF, per token and in this order
            for (const auto& [from, to] : kWordPieceCleanup) replace_all(&tok, from, to);
        }
        break;
      case DecoderStep::Metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          // as HF: in the first token every replacement character is dropped (when prepending)
          replace_all(&tokens[i], d.replacement, i == 0 && at_start && d.prepend ? "" : " ");
        }
        break;
    }
  }
  std::string out;
  for (const std::string& tok : tokens) out += tok;
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  check(impl != nullptr, "Tokenizer::decode: tokenizer is not loaded");
  return impl->decode_ids(ids.data(), ids.size(), skip_special_tokens, true);
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& t, bool skip_special_tokens)
    : tok(&t), skip_special(skip_special_tokens) {
  check(t.impl != nullptr, "IncrementalDecoder: tokenizer is not loaded");
}

std::string IncrementalDecoder::push(int32_t id) {
  const auto& impl = *tok->impl;
  bool counts = id >= 0 && id < impl.vocab_size_() && impl.present[id] && !(skip_special && impl.special[id]);
  pending += impl.decode_ids(&id, 1, skip_special, !started);
  if (counts) started = true;
  // Hold back a trailing incomplete UTF-8 sequence (a lead byte followed by too few
  // continuation bytes); anything else, even invalid bytes, can go out now.
  size_t n = pending.size(), cut = n;
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    unsigned char c = pending[n - back];
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    if (need > back) cut = n - back;
    break;
  }
  std::string ready = pending.substr(0, cut);
  pending.erase(0, cut);
  return ready;
}

std::string IncrementalDecoder::flush() {
  std::string rest;
  rest.swap(pending);
  started = false;
  return rest;
}

static const Tokenizer::Impl& loaded(const std::shared_ptr<const Tokenizer::Impl>& impl) {
  check(impl != nullptr, "Tokenizer: used before being loaded");
  return *impl;
}

int32_t Tokenizer::vocab_size() const { return loaded(impl).vocab_size_(); }

int32_t Tokenizer::token_to_id(std::string_view token) const { return loaded(impl).text_index.find(token); }

std::string Tokenizer::id_to_token(int32_t id) const {
  loaded(impl);
  if (id < 0 || id >= impl->vocab_size_() || !impl->present[id]) return "";
  return impl->shown_text(id);
}

bool Tokenizer::is_special(int32_t id) const {
  loaded(impl);
  return id >= 0 && id < impl->vocab_size_() && impl->special[id];
}

int32_t Tokenizer::bos_id() const { return loaded(impl).bos; }
int32_t Tokenizer::eos_id() const { return loaded(impl).eos; }
const std::vector<int32_t>& Tokenizer::stop_ids() const { return loaded(impl).stop_ids; }
uint64_t Tokenizer::hash() const { return loaded(impl).identity; }
std::string Tokenizer::hash_hex() const { return ::hash_hex(loaded(impl).identity); }
std::string Tokenizer::to_json_string() const { return loaded(impl).json; }
