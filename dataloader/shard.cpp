#include "dataloader/shard.h"

#include <cstring>

#include "common/checksum.h"
#include "common/error.h"
#include "common/hash.h"  // the checksum of format version 1 only

static uint64_t pad8(uint64_t n) { return (n + 7) & ~uint64_t(7); }

uint64_t shard_checksum(uint32_t version, const void* data, size_t n) {
  return version == 1 ? hash64(data, n) : xxh3_64(data, n);
}

ShardWriter::ShardWriter(uint64_t tokenizer_hash_, uint32_t vocab_size_, std::string prompt_template_)
    : tokenizer_hash(tokenizer_hash_), vocab_size(vocab_size_), prompt_template(std::move(prompt_template_)) {
  check(vocab_size > 0, "shard writer: vocab_size must be positive");
}

void ShardWriter::add(const std::vector<int32_t>& toks, const std::vector<uint8_t>& loss) {
  check(!toks.empty(), "shard writer: example ", num_examples(), " is empty");
  check(toks.size() == loss.size(), "shard writer: example ", num_examples(), " has ", toks.size(),
        " tokens but ", loss.size(), " loss flags");
  for (int32_t t : toks)
    check(t >= 0 && uint32_t(t) < vocab_size, "shard writer: example ", num_examples(), " has token id ", t,
          " outside the vocabulary [0, ", vocab_size, ")");
  for (size_t i = 0; i < toks.size(); ++i) {
    size_t bit = tokens.size();
    if ((bit >> 3) >= loss_bits.size()) loss_bits.push_back(0);
    if (loss[i]) loss_bits[bit >> 3] |= uint8_t(1u << (bit & 7));
    tokens.push_back(toks[i]);
  }
  offsets.push_back(tokens.size());
}

ShardWriter ShardWriter::split_off(int64_t n) {
  check(n >= 0 && n < num_examples(), "shard writer: cannot split off ", n, " of ", num_examples(), " examples");
  ShardWriter tail(tokenizer_hash, vocab_size, prompt_template);
  const size_t keep = offsets.size() - 1 - size_t(n);
  for (size_t e = keep; e + 1 < offsets.size(); ++e) {
    std::vector<int32_t> t(tokens.begin() + long(offsets[e]), tokens.begin() + long(offsets[e + 1]));
    std::vector<uint8_t> l(t.size());
    for (size_t i = 0; i < l.size(); ++i) {
      const size_t bit = offsets[e] + i;
      l[i] = (loss_bits[bit >> 3] >> (bit & 7)) & 1;
    }
    tail.add(t, l);
  }
  const size_t kept_tokens = offsets[keep];
  offsets.resize(keep + 1);
  tokens.resize(kept_tokens);
  loss_bits.resize((kept_tokens + 7) / 8);
  if (kept_tokens & 7) loss_bits.back() &= uint8_t((1u << (kept_tokens & 7)) - 1);  // the padding bits are 0
  return tail;
}

std::string ShardWriter::serialize(uint32_t version) const {
  check(version == 1 || version == kShardVersion, "shard writer: cannot write version ", version);
  const uint32_t token_bytes = vocab_size <= 65536 ? 2 : 4;
  const uint64_t n_ex = offsets.size() - 1, n_tok = tokens.size();
  const uint64_t tmpl_sz = pad8(prompt_template.size());
  const uint64_t off_sz = (n_ex + 1) * 8, tok_sz = pad8(n_tok * token_bytes), mask_sz = pad8((n_tok + 7) / 8);
  std::string out(kShardHeaderBytes + tmpl_sz + off_sz + tok_sz + mask_sz, '\0');
  char* p = out.data() + kShardHeaderBytes;
  std::memcpy(p, prompt_template.data(), prompt_template.size());
  p += tmpl_sz;
  std::memcpy(p, offsets.data(), off_sz);
  p += off_sz;
  if (token_bytes == 2) {
    for (uint64_t i = 0; i < n_tok; ++i) {
      uint16_t v = uint16_t(tokens[i]);
      std::memcpy(p + 2 * i, &v, 2);
    }
  } else {
    std::memcpy(p, tokens.data(), n_tok * 4);
  }
  p += tok_sz;
  std::memcpy(p, loss_bits.data(), loss_bits.size());

  ShardHeader h{};
  std::memcpy(h.magic, kShardMagic, 8);
  h.version = version;
  h.token_bytes = token_bytes;
  h.num_examples = n_ex;
  h.num_tokens = n_tok;
  h.tokenizer_hash = tokenizer_hash;
  h.vocab_size = vocab_size;
  h.template_bytes = uint32_t(prompt_template.size());
  h.payload_checksum = shard_checksum(version, out.data() + kShardHeaderBytes, out.size() - kShardHeaderBytes);
  h.header_checksum = shard_checksum(version, &h, offsetof(ShardHeader, header_checksum));
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

void ShardWriter::write(const std::string& path) const {
  check(num_examples() > 0, path, ": refusing to write a shard with no examples");
  write_file_atomic(path, serialize());
}

static bool all_zero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i]) return false;
  return true;
}

Shard::Shard(const std::string& path) : file(path) {
  const uint8_t* d = file.data;
  const uint64_t size = file.size;
  check(size >= kShardHeaderBytes, path, ": truncated shard: ", size, " bytes, the header alone is ",
        kShardHeaderBytes);
  std::memcpy(&header, d, sizeof header);
  check(std::memcmp(header.magic, kShardMagic, 8) == 0, path, ": bad magic (not a token shard written by prepare_data)");
  check(header.version == 1 || header.version == 2, path, ": unsupported shard version ", header.version,
        " (this build reads versions 1 and 2)");
  check(header.header_checksum == shard_checksum(header.version, &header, offsetof(ShardHeader, header_checksum)), path,
        ": header checksum mismatch (corrupt header)");
  check(header.token_bytes == 2 || header.token_bytes == 4, path, ": field token_bytes is ", header.token_bytes,
        " (must be 2 or 4)");
  check(header.vocab_size > 0, path, ": field vocab_size is 0");
  // Token ids are int32 everywhere after the reader: a larger vocabulary would let ids through
  // the check below that turn negative.
  check(header.vocab_size <= uint32_t(INT32_MAX), path, ": field vocab_size ", header.vocab_size,
        " is beyond the int32 token ids");
  check((header.token_bytes == 2) == (header.vocab_size <= 65536), path, ": field token_bytes ", header.token_bytes,
        " does not match vocab_size ", header.vocab_size);
  // Bound the counts before any arithmetic so that nothing below can overflow.
  check(header.num_examples < (uint64_t(1) << 40), path, ": field num_examples is implausible (",
        header.num_examples, ")");
  check(header.num_tokens < (uint64_t(1) << 44), path, ": field num_tokens is implausible (", header.num_tokens, ")");
  const uint64_t tmpl_sz = pad8(header.template_bytes);
  const uint64_t off_sz = (header.num_examples + 1) * 8;
  const uint64_t tok_sz = pad8(header.num_tokens * header.token_bytes);
  const uint64_t mask_sz = pad8((header.num_tokens + 7) / 8);
  const uint64_t expected = kShardHeaderBytes + tmpl_sz + off_sz + tok_sz + mask_sz;
  check(size >= expected, path, ": truncated shard: ", size, " bytes, the header describes ", expected);
  check(size == expected, path, ": shard has ", size - expected, " trailing bytes beyond the ", expected,
        " the header describes");
  check(header.payload_checksum == shard_checksum(header.version, d + kShardHeaderBytes, size - kShardHeaderBytes), path,
        ": payload checksum mismatch (corrupt or modified file)");

  const uint8_t* p = d + kShardHeaderBytes;
  prompt_template.assign(reinterpret_cast<const char*>(p), header.template_bytes);
  check(all_zero(p + header.template_bytes, tmpl_sz - header.template_bytes), path, ": nonzero template padding");
  p += tmpl_sz;
  offsets = reinterpret_cast<const uint64_t*>(p);
  p += off_sz;
  tokens = p;
  p += tok_sz;
  mask = p;

  check(offsets[0] == 0, path, ": offsets[0] is ", offsets[0], " (must be 0)");
  for (uint64_t i = 0; i < header.num_examples; ++i)
    check(offsets[i + 1] > offsets[i], path, ": example ", i, " is empty or has decreasing offsets (",
          offsets[i], " -> ", offsets[i + 1], ")");
  check(offsets[header.num_examples] == header.num_tokens, path, ": last offset ", offsets[header.num_examples],
        " != num_tokens ", header.num_tokens);
  const uint64_t vocab = header.vocab_size;
  for (uint64_t t = 0; t < header.num_tokens; ++t) {
    uint32_t v = uint32_t(token(int64_t(t)));
    if (v >= vocab) {
      // find the example for the message
      uint64_t ex = 0;
      while (offsets[ex + 1] <= t) ++ex;
      fail(path, ": example ", ex, " has token id ", v, " >= vocab_size ", vocab);
    }
  }
  check(all_zero(tokens + header.num_tokens * header.token_bytes, tok_sz - header.num_tokens * header.token_bytes),
        path, ": nonzero token padding");
  const uint64_t tail_bits = header.num_tokens & 7;
  const uint64_t mask_used = (header.num_tokens + 7) / 8;
  check(tail_bits == 0 || (mask[mask_used - 1] >> tail_bits) == 0, path, ": loss bitmap has bits past num_tokens");
  check(all_zero(mask + mask_used, mask_sz - mask_used), path, ": nonzero loss bitmap padding");
}

int64_t Shard::read_example(int64_t i, int32_t* tokens_out, uint8_t* loss_out, int64_t max_len) const {
  const int64_t b = example_begin(i);
  const int64_t n = std::min(example_length(i), max_len);
  if (header.token_bytes == 2) {
    const uint16_t* t = reinterpret_cast<const uint16_t*>(tokens) + b;
    for (int64_t j = 0; j < n; ++j) tokens_out[j] = t[j];
  } else {
    const uint32_t* t = reinterpret_cast<const uint32_t*>(tokens) + b;
    for (int64_t j = 0; j < n; ++j) tokens_out[j] = int32_t(t[j]);
  }
  if (loss_out)
    for (int64_t j = 0; j < n; ++j) loss_out[j] = loss(b + j);
  return n;
}

std::vector<int32_t> Shard::example_tokens(int64_t i) const {
  std::vector<int32_t> t(size_t(example_length(i)));
  read_example(i, t.data(), nullptr, int64_t(t.size()));
  return t;
}

std::vector<uint8_t> Shard::example_loss(int64_t i) const {
  std::vector<uint8_t> l(size_t(example_length(i)));
  const int64_t b = example_begin(i);
  for (size_t j = 0; j < l.size(); ++j) l[j] = loss(b + int64_t(j));
  return l;
}
