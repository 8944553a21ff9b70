// Parity of our tokenizer with HF `tokenizers` (and tiktoken) on a 1.3 MB diverse corpus, from the
// fixtures written by dev/reference/gen_tokenizer.py; decode, streaming decode, the trainer, the
// identity hash and the errors for unsupported tokenizer.json content.
#include <catch2/catch.hpp>

#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "dev/fuzz/fuzz_check.h"
#include "common/file_io.h"
#include "common/model_cache.h"
#include "common/progress.h"
#include "test/scratch_dir.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/train_bpe.h"

using nlohmann::json;

namespace {

const std::string kDir = "test/fixtures/tokenizer/";
constexpr size_t kBlock = 64;

uint64_t fnv_ids(const int32_t* ids, size_t n) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (size_t i = 0; i < n; ++i) h = (h ^ uint64_t(uint32_t(ids[i]))) * 0x100000001B3ULL;
  return h;
}
uint64_t fnv_bytes(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ULL;
  return h;
}

struct Reader {
  std::string data;
  size_t pos = 0;
  std::string path;
  template <typename T>
  T get() {
    check(pos + sizeof(T) <= data.size(), path, ": truncated at byte ", pos);
    T v;
    std::memcpy(&v, data.data() + pos, sizeof(T));
    pos += sizeof(T);
    return v;
  }
};

const std::vector<std::string>& corpus() {
  static const std::vector<std::string> docs = [] {
    Reader r{read_text_file(kDir + "corpus.bin"), 0, kDir + "corpus.bin"};
    uint32_t n = r.get<uint32_t>();
    std::vector<std::string> d(n);
    for (auto& doc : d) {
      uint32_t len = r.get<uint32_t>();
      check(r.pos + len <= r.data.size(), "corpus.bin truncated");
      doc = r.data.substr(r.pos, len);
      r.pos += len;
    }
    return d;
  }();
  return docs;
}

struct Expected {
  std::vector<bool> add_special;
  std::vector<uint32_t> count;
  std::vector<uint64_t> decode_hash;
  std::vector<std::vector<uint64_t>> blocks;
};

Expected load_expected(const std::string& name) {
  Reader r{read_text_file(kDir + "expected_" + name + ".bin"), 0, name};
  Expected e;
  uint32_t n = r.get<uint32_t>();
  for (uint32_t i = 0; i < n; ++i) {
    e.add_special.push_back(r.get<uint8_t>() != 0);
    e.count.push_back(r.get<uint32_t>());
    e.decode_hash.push_back(r.get<uint64_t>());
    std::vector<uint64_t> b((e.count.back() + kBlock - 1) / kBlock);
    for (auto& x : b) x = r.get<uint64_t>();
    e.blocks.push_back(std::move(b));
  }
  return e;
}

json variant_json(const std::string& name) {
  json variants = json::parse(read_text_file(kDir + "variants.json"));
  for (const json& v : variants) {
    if (v["name"] != name) continue;
    json j = json::parse(read_text_file(kDir + v["base"].get<std::string>()));
    for (auto it = v["set"].begin(); it != v["set"].end(); ++it) {
      json* node = &j;
      std::string key = it.key();
      for (size_t dot; (dot = key.find('.')) != std::string::npos; key = key.substr(dot + 1))
        node = &(*node)[key.substr(0, dot)];
      (*node)[key] = it.value();
    }
    return j;
  }
  fail("variants.json: no variant ", name);
}

std::string show(const std::string& s) {  // printable excerpt of a document
  std::string o;
  for (unsigned char c : s.substr(0, 160)) {
    if (c == '\n') o += "\\n";
    else if (c == '\t') o += "\\t";
    else o.push_back(char(c));
  }
  return o;
}

// Compares our ids with the expected ones document by document; reports the first document and
// 64-id block that differs, with our ids there.
void check_parity(const Tokenizer& tok, const std::string& expected_name, bool check_decode_hash,
                  bool check_roundtrip) {
  Expected e = load_expected(expected_name);
  const auto& all_docs = corpus();
  REQUIRE(e.count.size() <= all_docs.size());
  const bool full = e.count.size() == all_docs.size();
  const std::vector<std::string> docs(all_docs.begin(), all_docs.begin() + e.count.size());
  std::vector<std::string> plain, special;
  std::vector<size_t> plain_index, special_index;
  for (size_t i = 0; i < docs.size(); ++i) {
    (e.add_special[i] ? special : plain).push_back(docs[i]);
    (e.add_special[i] ? special_index : plain_index).push_back(i);
  }
  auto a = tok.encode_batch(plain, false), b = tok.encode_batch(special, true);
  std::vector<std::vector<int32_t>> ids(docs.size());
  for (size_t k = 0; k < a.size(); ++k) ids[plain_index[k]] = std::move(a[k]);
  for (size_t k = 0; k < b.size(); ++k) ids[special_index[k]] = std::move(b[k]);
  size_t total_bytes = 0, total_ids = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    total_bytes += docs[i].size();
    total_ids += ids[i].size();
    const auto& x = ids[i];
    size_t n_blocks = (x.size() + kBlock - 1) / kBlock;
    for (size_t blk = 0; blk < std::max(n_blocks, e.blocks[i].size()); ++blk) {
      bool same = blk < n_blocks && blk < e.blocks[i].size() &&
                  fnv_ids(x.data() + blk * kBlock, std::min(kBlock, x.size() - blk * kBlock)) == e.blocks[i][blk];
      if (!same) {
        std::string ours;
        for (size_t k = blk * kBlock; k < std::min(x.size(), (blk + 1) * kBlock); ++k) ours += std::to_string(x[k]) + " ";
        FAIL(expected_name << ": document " << i << " differs first in ids [" << blk * kBlock << ", "
                           << (blk + 1) * kBlock << ") (ours " << x.size() << " ids, expected "
                           << e.count[i] << "); our ids there: " << ours << "\ndocument: " << show(docs[i]));
      }
    }
    REQUIRE(x.size() == e.count[i]);
    if (check_decode_hash && fnv_bytes(tok.decode(x)) != e.decode_hash[i])
      FAIL(expected_name << ": decode of document " << i << " differs from HF: '" << show(tok.decode(x)) << "'");
    // (<mask> strips the spaces around it, so text holding it cannot round-trip, in HF either)
    if (check_roundtrip && !e.add_special[i] && docs[i].find("<mask>") == std::string::npos &&
        tok.decode(x) != docs[i])
      FAIL(expected_name << ": decode(encode(x)) != x for document " << i << ": " << show(docs[i]));
  }
  INFO(expected_name << ": " << docs.size() << " documents, " << total_bytes << " bytes, " << total_ids << " ids");
  if (full) REQUIRE(total_bytes >= 1000000);
}

}  // namespace

TEST_CASE("(a) byte-level BPE trained by HF with the Llama 3 regex: identical ids") {
  Tokenizer t = Tokenizer::from_json_string(variant_json("llama3").dump(), "llama3");
  check_parity(t, "llama3", true, true);
  REQUIRE(t.bos_id() == t.token_to_id("<|begin_of_text|>"));
  REQUIRE(t.eos_id() == t.token_to_id("<|end_of_text|>"));
  REQUIRE(t.is_special(t.bos_id()));
  REQUIRE_FALSE(t.is_special(t.token_to_id("[[note]]")));
}

TEST_CASE("(a) same vocab as Qwen2 (its regex, merges not ignored): identical ids") {
  Tokenizer t = Tokenizer::from_json_string(variant_json("qwen2").dump(), "qwen2");
  check_parity(t, "qwen2", true, true);
  REQUIRE(t.bos_id() == t.token_to_id("<|begin_of_text|>"));  // no template: by name
}

TEST_CASE("(a) same vocab with Qwen2's full setup (NFC normalizer): identical ids") {
  Tokenizer t = Tokenizer::from_json_string(variant_json("qwen2_nfc").dump(), "qwen2_nfc");
  // decode gives the NFC text, so no round trip; the decode itself must still equal HF's
  check_parity(t, "qwen2_nfc", true, false);
}

TEST_CASE("(a) same vocab as GPT-2 (ByteLevel regex, with and without prefix space): identical ids") {
  Tokenizer t = Tokenizer::from_json_string(variant_json("gpt2").dump(), "gpt2");
  check_parity(t, "gpt2", true, true);
  Tokenizer p = Tokenizer::from_json_string(variant_json("gpt2_prefix_space").dump(), "gpt2_prefix_space");
  check_parity(p, "gpt2_prefix_space", true, false);
}

TEST_CASE("(b) our trained tokenizer, loaded by HF: identical ids, and training reproduces it") {
  Tokenizer t = Tokenizer::from_json_file(kDir + "ours.json");
  check_parity(t, "ours", true, true);
  // the trainer is deterministic: the same input and options give the same tokenizer.json
  const auto& docs = corpus();
  std::string text;
  for (size_t i = 0; i < 400; ++i) text += (i ? "\n" : "") + docs[i];
  BpeTrainOptions opt;
  opt.vocab_size = 3000;
  opt.special_tokens = {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"};
  opt.bos_token = "<|begin_of_text|>";
  std::string trained = train_bpe_json({text}, opt);
  Tokenizer again = Tokenizer::from_json_string(trained, "retrained");
  REQUIRE(again.hash() == t.hash());
  REQUIRE(trained == read_text_file(kDir + "ours.json"));
  REQUIRE(again.vocab_size() == 3000);
  REQUIRE(again.bos_id() == 2995);
  REQUIRE(again.encode("hi", true).front() == 2995);
}

TEST_CASE("(c) SentencePiece-style BPE with byte fallback (Llama 2 layout): identical ids and decode") {
  Tokenizer t = Tokenizer::from_json_string(variant_json("llama2").dump(), "llama2");
  check_parity(t, "llama2", true, false);
  REQUIRE(t.bos_id() == 1);
  REQUIRE(t.eos_id() == 2);
  // round trip where nothing is lost: no special tokens, no literal U+2581
  for (std::string s : {"Hello  world", " leading space", "日本語のテキスト 🙂👨‍👩‍👧", "tabs\tand\nnewlines\n", "x"})
    REQUIRE(t.decode(t.encode(s)) == s);
  // byte fallback: a character outside the trained alphabet becomes its UTF-8 bytes
  auto ids = t.encode("\xF0\x9F\xA6\x84");  // U+1F984 unicorn
  REQUIRE(t.decode(ids) == "\xF0\x9F\xA6\x84");
}

TEST_CASE("(c) SentencePiece-style BPE with a Metaspace pre-tokenizer (Mistral style): identical ids") {
  Tokenizer t = Tokenizer::from_json_string(variant_json("metaspace").dump(), "metaspace");
  check_parity(t, "metaspace", true, false);
}

TEST_CASE("(d) WordPiece with the BERT normalizer and pre-tokenizer, trained by HF: identical ids and decode") {
  // uncased (lowercase, accents stripped, CJK spaced out); cased with max_input_chars_per_word 8
  // and nothing cleaned; accents stripped without lowercasing
  for (const char* name : {"bert", "bert_cased", "bert_strip_accents"}) {
    Tokenizer t = Tokenizer::from_json_string(variant_json(name).dump(), name);
    check_parity(t, name, true, false);
  }
  Tokenizer t = Tokenizer::from_json_string(variant_json("bert").dump(), "bert");
  const int32_t cls = t.token_to_id("[CLS]"), sep = t.token_to_id("[SEP]"), unk = t.token_to_id("[UNK]");
  REQUIRE(cls >= 0);
  REQUIRE(t.bos_id() == cls);
  REQUIRE(t.eos_id() == sep);
  auto ids = t.encode("Héllo, WORLD!", true);
  REQUIRE(ids.front() == cls);
  REQUIRE(ids.back() == sep);
  REQUIRE(t.decode(ids, true) == "hello, world!");
  REQUIRE(t.encode("x" + std::string(101, 'a')) == std::vector<int32_t>{unk});  // > max_input_chars_per_word
}

TEST_CASE("truncation and padding: refused by from_json_file, checked by name and dropped for callers that cut themselves") {
  json j = variant_json("bert");
  j["truncation"] = {{"direction", "Right"}, {"max_length", 4}, {"strategy", "LongestFirst"}, {"stride", 0}};
  j["padding"] = {{"strategy", {{"Fixed", 16}}}, {"direction", "Right"}, {"pad_to_multiple_of", nullptr},
                  {"pad_id", 0}, {"pad_type_id", 0}, {"pad_token", "[PAD]"}};
  const std::string path = scratch_dir("tokenizer_length") + "/tokenizer.json";
  write_file_atomic(path, j.dump());
  REQUIRE_THROWS_WITH(Tokenizer::from_json_file(path), Catch::Contains("'truncation'"));
  Tokenizer t = Tokenizer::from_json_file_without_length_rules(path);
  const std::string text = "a sentence much longer than four tokens, never cut nor padded";
  REQUIRE(t.encode(text, true) == Tokenizer::from_json_string(variant_json("bert").dump(), "b").encode(text, true));
  j["truncation"]["side"] = "left";
  write_file_atomic(path, j.dump());
  REQUIRE_THROWS_WITH(Tokenizer::from_json_file_without_length_rules(path),
                      Catch::Contains(path) && Catch::Contains("truncation.side"));
}

TEST_CASE("the real all-MiniLM-L6-v2 tokenizer: identical ids and decode (make test-minilm)", "[.minilm]") {
  const std::string path = minilm_dir() + "/tokenizer.json";
  if (!file_exists(path)) FAIL(minilm_missing_message());
  Tokenizer t = Tokenizer::from_json_file_without_length_rules(path);
  REQUIRE(t.vocab_size() == 30522);
  check_parity(t, "minilm", true, false);
  // the file's truncation/padding are refused by the plain loader
  REQUIRE_THROWS_WITH(Tokenizer::from_json_file(path), Catch::Contains("'truncation'"));
}

TEST_CASE("other pre-tokenizer / normalizer pieces (Split behaviors, invert, Digits, Metaspace) on 300 documents") {
  for (const char* name : {"split_removed_digits", "split_merged_next", "split_merged_previous",
                           "split_contiguous_invert", "metaspace_always_nosplit"}) {
    Tokenizer t = Tokenizer::from_json_string(variant_json(name).dump(), name);
    check_parity(t, name, true, false);
  }
}

TEST_CASE("tiktoken rank file: identical ids with the tiktoken library") {
  std::vector<std::pair<std::string, int32_t>> specials;
  Tokenizer hf = Tokenizer::from_json_file(kDir + "bytelevel.json");
  for (const char* s : {"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"})
    specials.push_back({s, hf.token_to_id(s)});
  Tokenizer t = Tokenizer::from_tiktoken(kDir + "bytelevel.tiktoken", kLlama3Pattern, specials);
  check_parity(t, "tiktoken", true, true);
  // to_json_string gives an HF tokenizer.json that loads back
  Tokenizer back = Tokenizer::from_json_string(t.to_json_string(), "tiktoken-as-json");
  REQUIRE(back.encode("Hello, world! 12345") == t.encode("Hello, world! 12345"));
  REQUIRE(back.vocab_size() == t.vocab_size());
}

TEST_CASE("the streaming decoder never splits a UTF-8 character and adds up to decode()") {
  for (const char* name : {"llama3", "llama2", "metaspace"}) {
    Tokenizer t = Tokenizer::from_json_string(variant_json(name).dump(), name);
    const auto& docs = corpus();
    for (size_t i = 0; i < docs.size(); i += 23) {
      auto ids = t.encode(docs[i]);
      IncrementalDecoder dec(t);
      std::string all;
      for (int32_t id : ids) {
        std::string chunk = dec.push(id);
        // every chunk is whole characters: it starts on a lead byte and ends complete
        if (!chunk.empty()) {
          REQUIRE((uint8_t(chunk[0]) & 0xC0) != 0x80);
          size_t k = chunk.size();
          size_t back = 0;
          while (back < 4 && back < k && (uint8_t(chunk[k - 1 - back]) & 0xC0) == 0x80) ++back;
          if (back < k) {
            uint8_t lead = uint8_t(chunk[k - 1 - back]);
            size_t need = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : 4;
            REQUIRE(back + 1 == need);
          }
        }
        all += chunk;
      }
      all += dec.flush();
      INFO(name << " document " << i);
      REQUIRE(all == t.decode(ids));
    }
  }
}

TEST_CASE("invalid UTF-8 never crashes; byte-level round-trips it exactly") {
  Tokenizer bl = Tokenizer::from_json_string(variant_json("llama3").dump(), "llama3");
  Tokenizer sp = Tokenizer::from_json_string(variant_json("llama2").dump(), "llama2");
  Tokenizer nfc = Tokenizer::from_json_string(variant_json("qwen2_nfc").dump(), "qwen2_nfc");
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = char(rng() % 4 == 0 ? rng() % 256 : "a \n\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80"[rng() % 12]);
    auto ids = bl.encode(s, true);
    for (int32_t id : ids) REQUIRE((id >= 0 && id < bl.vocab_size()));
    REQUIRE(bl.decode(bl.encode(s)) == s);
    auto sp_ids = sp.encode(s, true);
    for (int32_t id : sp_ids) REQUIRE((id >= 0 && id < sp.vocab_size()));
    // without special-token lookalikes or U+2581, SentencePiece style round-trips bytes too
    if (s.find('<') == std::string::npos) REQUIRE(sp.decode(sp.encode(s)) == s);
    for (int32_t id : nfc.encode(s, true)) REQUIRE((id >= 0 && id < nfc.vocab_size()));
  }
  // NFC keeps invalid bytes as they are and still composes around them
  REQUIRE(nfc.decode(nfc.encode("e\xCC\x81\xFF" "e\xCC\x81")) == "\xC3\xA9\xFF" "\xC3\xA9");
}

TEST_CASE("the hash depends on content, not on JSON formatting") {
  json j = variant_json("llama3");
  Tokenizer a = Tokenizer::from_json_string(j.dump(), "a");
  Tokenizer b = Tokenizer::from_json_string(j.dump(4), "b");
  REQUIRE(a.hash() == b.hash());
  REQUIRE(a.hash_hex().size() == 16);
  json m = j;  // merges as "a b" strings instead of [a, b] pairs
  for (auto& x : m["model"]["merges"]) x = x[0].get<std::string>() + " " + x[1].get<std::string>();
  REQUIRE(Tokenizer::from_json_string(m.dump(), "m").hash() == a.hash());
  json swapped = j;
  std::swap(swapped["model"]["merges"][10], swapped["model"]["merges"][11]);
  REQUIRE(Tokenizer::from_json_string(swapped.dump(), "s").hash() != a.hash());
  json special = j;
  special["added_tokens"][0]["special"] = false;
  REQUIRE(Tokenizer::from_json_string(special.dump(), "x").hash() != a.hash());
  json pre = j;
  pre["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = kQwen2Pattern;
  REQUIRE(Tokenizer::from_json_string(pre.dump(), "p").hash() != a.hash());
  REQUIRE(Tokenizer::from_json_string(variant_json("qwen2").dump(), "q").hash() != a.hash());
  // WordPiece: the model's own settings count too
  json w = variant_json("bert");
  const uint64_t wh = Tokenizer::from_json_string(w.dump(), "w").hash();
  w["model"]["max_input_chars_per_word"] = 99;
  REQUIRE(Tokenizer::from_json_string(w.dump(), "w").hash() != wh);
  w = variant_json("bert");
  w["model"]["continuing_subword_prefix"] = "@@";
  REQUIRE(Tokenizer::from_json_string(w.dump(), "w").hash() != wh);
}

TEST_CASE("unsupported or corrupt tokenizer.json content is an error naming it") {
  json j = variant_json("llama3");
  auto error_of = [](const json& x) {
    try {
      Tokenizer::from_json_string(x.dump(), "tok.json");
    } catch (const EngineError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  json a = j;
  a["normalizer"] = {{"type", "NFKC"}};
  REQUIRE_THAT(error_of(a), Catch::Contains("tok.json") && Catch::Contains("normalizer type 'NFKC'"));
  json b = j;
  b["model"]["type"] = "Unigram";
  REQUIRE_THAT(error_of(b), Catch::Contains("model type 'Unigram'"));
  json c = j;
  c["truncation"] = {{"max_length", 10}};
  REQUIRE_THAT(error_of(c), Catch::Contains("'truncation'"));
  json d = j;
  d["model"]["merges"][3] = json::array({"notatoken", "x"});
  REQUIRE_THAT(error_of(d), Catch::Contains("model.merges[3]"));
  json e = j;
  e["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  REQUIRE_THAT(error_of(e), Catch::Contains("cannot compile regex"));
  json f = j;
  f["model"]["dropout"] = 0.1;
  REQUIRE_THAT(error_of(f), Catch::Contains("model.dropout"));
  json g = j;
  g["pre_tokenizer"] = {{"type", "Whitespace"}};
  REQUIRE_THAT(error_of(g), Catch::Contains("pre-tokenizer type 'Whitespace'"));
  json h = j;
  h["model"]["something_new"] = 1;
  REQUIRE_THAT(error_of(h), Catch::Contains("model.something_new"));
  json w = variant_json("bert");
  w["normalizer"]["unicode_version"] = 9;
  REQUIRE_THAT(error_of(w), Catch::Contains("normalizer.unicode_version"));
  w = variant_json("bert");
  w["model"]["unk_token"] = "[NOPE]";
  REQUIRE_THAT(error_of(w), Catch::Contains("model.unk_token"));
  w = variant_json("bert");
  w["model"]["max_input_chars_per_word"] = 0;
  REQUIRE_THAT(error_of(w), Catch::Contains("model.max_input_chars_per_word"));
  w = variant_json("bert");
  w["decoder"]["strip"] = true;
  REQUIRE_THAT(error_of(w), Catch::Contains("decoder.strip"));
  w = variant_json("bert");
  w["pre_tokenizer"]["split_digits"] = true;
  REQUIRE_THAT(error_of(w), Catch::Contains("pre_tokenizer.split_digits"));
  REQUIRE_THAT(error_of(json::parse("[1,2]")), Catch::Contains("tok.json"));
  REQUIRE_THROWS_WITH(Tokenizer::from_json_string("{not json", "bad.json"), Catch::Contains("bad.json: invalid JSON"));
  REQUIRE_THROWS_WITH(Tokenizer::from_json_file("/nonexistent/tokenizer.json"), Catch::Contains("/nonexistent/tokenizer.json"));
}

TEST_CASE("special tokens: matched in text, added by the post-processor, skipped on request") {
  Tokenizer t = Tokenizer::from_json_string(variant_json("llama3").dump(), "llama3");
  int32_t bos = t.token_to_id("<|begin_of_text|>"), eot = t.token_to_id("<|eot_id|>");
  auto ids = t.encode("hi<|eot_id|>", true);
  REQUIRE(ids.front() == bos);
  REQUIRE(ids.back() == eot);
  REQUIRE(t.decode(ids) == "<|begin_of_text|>hi<|eot_id|>");
  REQUIRE(t.decode(ids, true) == "hi");
  REQUIRE(t.encode("hi<|eot_id|>", false).front() != bos);
  REQUIRE(std::find(t.stop_ids().begin(), t.stop_ids().end(), eot) != t.stop_ids().end());
  REQUIRE(t.token_to_id("no such token") == -1);
  REQUIRE(t.id_to_token(-1).empty());
  REQUIRE(t.id_to_token(t.vocab_size()).empty());
  REQUIRE(t.id_to_token(eot) == "<|eot_id|>");
}

TEST_CASE("stop ids: EOS and every end-of-turn token the tokenizer has, <|eom_id|> and <|end|> included") {
  json j = variant_json("llama3");
  int32_t next = 6002;
  for (const char* s : {"<|eom_id|>", "<|end|>", "<|im_end|>"})
    j["added_tokens"].push_back({{"id", next++}, {"content", s}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", true}});
  j["added_tokens"].push_back({{"id", next}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", false}, {"special", false}});  // not special: no stop
  Tokenizer t = Tokenizer::from_json_string(j.dump(), "llama3+");
  const std::vector<int32_t>& stop = t.stop_ids();
  REQUIRE(!stop.empty());
  REQUIRE(stop.front() == t.eos_id());
  std::vector<int32_t> expected = {t.eos_id()};
  for (const char* s : {"<|eot_id|>", "<|eom_id|>", "<|end|>", "<|im_end|>"}) {
    INFO(s);
    const int32_t id = t.token_to_id(s);
    REQUIRE(id >= 0);
    REQUIRE(std::count(stop.begin(), stop.end(), id) == 1);
    expected.push_back(id);
  }
  REQUIRE(std::count(stop.begin(), stop.end(), t.token_to_id("<|endoftext|>")) == 0);
  std::sort(expected.begin(), expected.end());
  std::vector<int32_t> got = stop;
  std::sort(got.begin(), got.end());
  REQUIRE(got == expected);
}

TEST_CASE("encode_batch equals encode on each text") {
  Tokenizer t = Tokenizer::from_json_string(variant_json("llama2").dump(), "llama2");
  const auto& docs = corpus();
  std::vector<std::string> some(docs.begin(), docs.begin() + 300);
  auto batch = t.encode_batch(some, true);
  for (size_t i = 0; i < some.size(); ++i) REQUIRE(batch[i] == t.encode(some[i], true));
}

TEST_CASE("encoding a whole text with a progress counter: the same ids, every byte counted, lines on the way") {
  // 400 corpus documents joined into one text, with special tokens between some of them.
  std::string text;
  for (size_t i = 0; i < 400; ++i) text += corpus()[i] + (i % 50 == 49 ? "<s>\n" : "\n");
  setenv("ENGINE_PROGRESS", "1", 1);  // print from the first update (throttled), whatever the clock
  for (const char* name : {"llama3", "llama2", "metaspace", "qwen2_nfc"}) {
    INFO(name);
    Tokenizer t = Tokenizer::from_json_string(variant_json(name).dump(), name);
    std::FILE* f = std::tmpfile();
    std::vector<int32_t> ids;
    {
      Progress p("encoding", int64_t(text.size()), "bytes", f);
      ids = t.encode(text, true, &p);
    }
    REQUIRE(ids == t.encode(text, true));
    std::rewind(f);
    std::string log(4096, '\0');
    log.resize(std::fread(log.data(), 1, log.size(), f));
    std::fclose(f);
    const std::string total = std::to_string(text.size());
    REQUIRE(log.find("encoding: " + total + "/" + total + " bytes (100.0%)") != std::string::npos);
    // The first line comes from a piece or segment before the end (a text without pre-tokenizer
    // advances at the special tokens that cut it into segments).
    REQUIRE(log.find("/" + total + " bytes (100.0%)") > log.find("/" + total + " bytes ("));
  }
  unsetenv("ENGINE_PROGRESS");
}

TEST_CASE("fuzz property, short run (the long run is dev/fuzz/run_fuzz.sh)") {
  // Random bytes, random mixes of multi-byte characters, and corpus slices with bytes flipped,
  // cut or duplicated; fuzz_check aborts with the input in hex on any failure.
  Tokenizer bl = Tokenizer::from_json_file(kDir + "bytelevel.json");
  Tokenizer sp = Tokenizer::from_json_file(kDir + "sentencepiece.json");
  Tokenizer wp = Tokenizer::from_json_file(kDir + "wordpiece.json");
  const auto& docs = corpus();
  std::mt19937_64 rng(12345);
  const char* pieces[] = {"a", " ", "  ", "\n", "\t", "\r\n", "1", "'s", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80",
                          "\xE2\x80\x8D", "\xCC\x81", "<|eot_id|>", "<|eot_id", "\xE1\xA0\x8E", "\xE3\x80\x80",
                          "\xF0", "\x80", "\xFF", "\xC3", "\xED\xA0\x80", "\xE2\x96\x81"};
  for (int i = 0; i < 4000; ++i) {
    std::string s;
    switch (i % 3) {
      case 0:
        s.resize(rng() % 80);
        for (char& c : s) c = char(rng());
        break;
      case 1:
        for (int k = int(rng() % 40); k > 0; --k) s += pieces[rng() % (sizeof pieces / sizeof *pieces)];
        break;
      default: {
        const std::string& d = docs[rng() % docs.size()];
        size_t a = rng() % (d.size() + 1), n = rng() % 200;
        s = d.substr(a, n);
        for (int k = int(rng() % 4); k > 0 && !s.empty(); --k) s[rng() % s.size()] ^= char(1 << (rng() % 8));
        if (rng() % 4 == 0) s += s;
      }
    }
    fuzz_check(bl, sp, s, &wp);
  }
  SUCCEED("4000 inputs");
}
