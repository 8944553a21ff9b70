// Loading a Hugging Face tokenizer.json with a BPE or WordPiece model. Every field is either understood or
// rejected with an error naming it: a tokenizer that silently encodes differently from HF would
// corrupt datasets without anyone noticing.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/json_file.h"
#include "tokenizer/impl.h"

using nlohmann::json;

namespace {

struct Loader {
  const std::string& file;
  Tokenizer::Impl* t;

  template <typename... Args>
  [[noreturn]] void error(const Args&... args) const {
    fail(file, ": ", args...);
  }

  void only_keys(const json& obj, const std::string& where,
                 std::initializer_list<const char*> allowed) const {
    if (!obj.is_object()) error(where, " must be an object");
    for (auto it = obj.begin(); it != obj.end(); ++it) {
      bool ok = false;
      for (const char* a : allowed) ok = ok || it.key() == a;
      if (!ok) error("field '", where, ".", it.key(), "' is not supported");
    }
  }
  bool get_bool(const json& obj, const std::string& where, const char* key, bool dflt) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) error("field '", where, ".", key, "' must be a boolean");
    return it->get<bool>();
  }
  std::string get_string(const json& obj, const std::string& where, const char* key) const {
    auto it = obj.find(key);
    if (it == obj.end() || !it->is_string()) error("field '", where, ".", key, "' must be a string");
    return it->get<std::string>();
  }
  std::string type_of(const json& obj, const std::string& where) const {
    if (!obj.is_object()) error("field '", where, "' must be an object or null");
    return get_string(obj, where, "type");
  }
  // {"String": "..."} or {"Regex": "..."}
  void pattern_of(const json& obj, const std::string& where, std::string* literal,
                  std::shared_ptr<Regex>* regex) const {
    if (!obj.is_object() || obj.size() != 1) error("field '", where, "' must be {\"String\"|\"Regex\": ...}");
    if (obj.contains("String")) {
      *literal = get_string(obj, where, "String");
      if (literal->empty()) error("field '", where, ".String' is empty");
    } else if (obj.contains("Regex")) {
      *regex = std::make_shared<Regex>(get_string(obj, where, "Regex"), file + ": " + where);
    } else {
      error("field '", where, "' must hold \"String\" or \"Regex\"");
    }
  }

  void normalizer(const json& n, const std::string& where) {
    if (n.is_null()) return;
    std::string type = type_of(n, where);
    if (type == "Sequence") {
      only_keys(n, where, {"type", "normalizers"});
      if (!n.contains("normalizers") || !n["normalizers"].is_array()) error("field '", where, ".normalizers' must be an array");
      for (size_t i = 0; i < n["normalizers"].size(); ++i)
        normalizer(n["normalizers"][i], where + ".normalizers[" + std::to_string(i) + "]");
    } else if (type == "Prepend") {
      only_keys(n, where, {"type", "prepend"});
      t->normalizers.push_back({NormalizerStep::Prepend, get_string(n, where, "prepend"), nullptr, ""});
    } else if (type == "Replace") {
      only_keys(n, where, {"type", "pattern", "content"});
      NormalizerStep s{NormalizerStep::Replace, "", nullptr, get_string(n, where, "content")};
      pattern_of(n["pattern"], where + ".pattern", &s.text, &s.regex);
      t->normalizers.push_back(std::move(s));
    } else if (type == "NFC") {
      only_keys(n, where, {"type"});
      t->normalizers.push_back({NormalizerStep::NFC, "", nullptr, ""});
    } else if (type == "BertNormalizer") {
      only_keys(n, where, {"type", "clean_text", "handle_chinese_chars", "strip_accents", "lowercase"});
      NormalizerStep s{NormalizerStep::Bert, "", nullptr, ""};
      s.bert.clean_text = get_bool(n, where, "clean_text", true);
      s.bert.handle_chinese_chars = get_bool(n, where, "handle_chinese_chars", true);
      s.bert.lowercase = get_bool(n, where, "lowercase", true);
      // as HF: strip_accents null follows lowercase
      s.bert.strip_accents = get_bool(n, where, "strip_accents", s.bert.lowercase);
      t->normalizers.push_back(std::move(s));
    } else {
      error("normalizer type '", type, "' (", where, ") is not supported");
    }
  }

  void pre_tokenizer(const json& p, const std::string& where) {
    if (p.is_null()) return;
    std::string type = type_of(p, where);
    if (!t->pre_tokenizers.empty() && t->pre_tokenizers.back().kind == PreTokenizerStep::ByteLevel)
      error("pre-tokenizer ", where, " after ByteLevel is not supported (ByteLevel must be last)");
    PreTokenizerStep s;
    if (type == "Sequence") {
      only_keys(p, where, {"type", "pretokenizers"});
      if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array()) error("field '", where, ".pretokenizers' must be an array");
      for (size_t i = 0; i < p["pretokenizers"].size(); ++i)
        pre_tokenizer(p["pretokenizers"][i], where + ".pretokenizers[" + std::to_string(i) + "]");
      return;
    } else if (type == "Split") {
      only_keys(p, where, {"type", "pattern", "behavior", "invert"});
      s.kind = PreTokenizerStep::Split;
      if (!p.contains("pattern")) error("field '", where, ".pattern' is missing");
      pattern_of(p["pattern"], where + ".pattern", &s.literal, &s.regex);
      std::string b = get_string(p, where, "behavior");
      if (b == "Isolated") s.behavior = PreTokenizerStep::Isolated;
      else if (b == "Removed") s.behavior = PreTokenizerStep::Removed;
      else if (b == "MergedWithPrevious") s.behavior = PreTokenizerStep::MergedWithPrevious;
      else if (b == "MergedWithNext") s.behavior = PreTokenizerStep::MergedWithNext;
      else if (b == "Contiguous") s.behavior = PreTokenizerStep::Contiguous;
      else error("field '", where, ".behavior' value '", b, "' is not supported");
      s.invert = get_bool(p, where, "invert", false);
    } else if (type == "ByteLevel") {
      only_keys(p, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
      if (get_bool(p, where, "use_regex", true)) {
        // GPT-2's pattern, applied before the byte mapping
        PreTokenizerStep r;
        r.kind = PreTokenizerStep::Split;
        r.regex = std::make_shared<Regex>(
            R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
            file + ": " + where);
        r.behavior = PreTokenizerStep::Isolated;
        // add_prefix_space is applied before the regex split, so it is a separate step first
        if (get_bool(p, where, "add_prefix_space", true)) {
          PreTokenizerStep prefix;
          prefix.kind = PreTokenizerStep::ByteLevel;
          prefix.add_prefix_space = true;
          t->pre_tokenizers.push_back(prefix);
        }
        t->pre_tokenizers.push_back(std::move(r));
        s.kind = PreTokenizerStep::ByteLevel;
        s.add_prefix_space = false;
      } else {
        s.kind = PreTokenizerStep::ByteLevel;
        s.add_prefix_space = get_bool(p, where, "add_prefix_space", true);
      }
      t->byte_level = true;
    } else if (type == "Metaspace") {
      only_keys(p, where, {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"});
      s.kind = PreTokenizerStep::Metaspace;
      s.replacement = get_string(p, where, "replacement");
      if (s.replacement.empty()) error("field '", where, ".replacement' is empty");
      if (p.contains("prepend_scheme")) {
        std::string ps = get_string(p, where, "prepend_scheme");
        if (ps == "always") s.prepend_scheme = PreTokenizerStep::Always;
        else if (ps == "never") s.prepend_scheme = PreTokenizerStep::Never;
        else if (ps == "first") s.prepend_scheme = PreTokenizerStep::First;
        else error("field '", where, ".prepend_scheme' value '", ps, "' is not supported");
      } else {
        s.prepend_scheme = get_bool(p, where, "add_prefix_space", true) ? PreTokenizerStep::Always
                                                                         : PreTokenizerStep::Never;
      }
      s.split = get_bool(p, where, "split", true);
    } else if (type == "BertPreTokenizer") {
      only_keys(p, where, {"type"});
      s.kind = PreTokenizerStep::Bert;
    } else if (type == "Digits") {
      only_keys(p, where, {"type", "individual_digits"});
      s.kind = PreTokenizerStep::Split;
      s.behavior = PreTokenizerStep::Isolated;
      s.regex = std::make_shared<Regex>(get_bool(p, where, "individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)",
                                        file + ": " + where);
    } else {
      error("pre-tokenizer type '", type, "' (", where, ") is not supported");
    }
    t->pre_tokenizers.push_back(std::move(s));
  }

  std::vector<int32_t> template_ids(const json& special_tokens, const std::string& name,
                                    const std::string& where) {
    auto it = special_tokens.find(name);
    if (it == special_tokens.end() || !it->contains("ids") || !(*it)["ids"].is_array())
      error("field '", where, "' names special token '", name, "' missing from special_tokens");
    std::vector<int32_t> ids;
    for (const auto& v : (*it)["ids"]) {
      if (!v.is_number_integer()) error("field '", where, ".special_tokens.", name, ".ids' must hold integers");
      ids.push_back(v.get<int32_t>());
    }
    return ids;
  }

  void post_processor(const json& p, const std::string& where) {
    if (p.is_null()) return;
    std::string type = type_of(p, where);
    if (type == "Sequence") {
      only_keys(p, where, {"type", "processors"});
      if (!p.contains("processors") || !p["processors"].is_array()) error("field '", where, ".processors' must be an array");
      for (size_t i = 0; i < p["processors"].size(); ++i)
        post_processor(p["processors"][i], where + ".processors[" + std::to_string(i) + "]");
    } else if (type == "ByteLevel") {
      // only adjusts offsets; ids are unchanged
      only_keys(p, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
    } else if (type == "TemplateProcessing") {
      only_keys(p, where, {"type", "single", "pair", "special_tokens"});
      if (!p.contains("single") || !p["single"].is_array()) error("field '", where, ".single' must be an array");
      const json& specials = p.contains("special_tokens") ? p["special_tokens"] : json::object();
      bool seen_sequence = false;
      std::vector<int32_t> prefix, suffix;
      for (const auto& item : p["single"]) {
        if (item.contains("SpecialToken")) {
          auto ids = template_ids(specials, get_string(item["SpecialToken"], where + ".single", "id"),
                                  where + ".single");
          (seen_sequence ? suffix : prefix).insert((seen_sequence ? suffix : prefix).end(), ids.begin(), ids.end());
        } else if (item.contains("Sequence")) {
          std::string seq = get_string(item["Sequence"], where + ".single", "id");
          if (seq != "A" || seen_sequence) error("field '", where, ".single' must contain $A exactly once");
          seen_sequence = true;
        } else {
          error("field '", where, ".single' has an item that is neither SpecialToken nor Sequence");
        }
      }
      if (!seen_sequence) error("field '", where, ".single' has no $A");
      if (!t->post_prefix.empty() || !t->post_suffix.empty())
        error(where, ": more than one post-processor adds tokens; not supported");
      t->post_prefix = prefix;
      t->post_suffix = suffix;
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      // single sequence: cls $A sep, with cls/sep given as [token, id]
      for (auto it = p.begin(); it != p.end(); ++it)
        if (it.key() != "type" && it.key() != "sep" && it.key() != "cls" && it.key() != "trim_offsets" &&
            it.key() != "add_prefix_space")
          error("field '", where, ".", it.key(), "' is not supported");
      auto id_of = [&](const char* key) {
        if (!p.contains(key) || !p[key].is_array() || p[key].size() != 2 || !p[key][1].is_number_integer())
          error("field '", where, ".", key, "' must be [token, id]");
        return p[key][1].get<int32_t>();
      };
      t->post_prefix = {id_of("cls")};
      t->post_suffix = {id_of("sep")};
    } else {
      error("post-processor type '", type, "' (", where, ") is not supported");
    }
  }

  void decoder(const json& d, const std::string& where) {
    if (d.is_null()) return;
    t->has_decoder = true;
    std::string type = type_of(d, where);
    DecoderStep s;
    if (type == "Sequence") {
      only_keys(d, where, {"type", "decoders"});
      if (!d.contains("decoders") || !d["decoders"].is_array()) error("field '", where, ".decoders' must be an array");
      for (size_t i = 0; i < d["decoders"].size(); ++i)
        decoder(d["decoders"][i], where + ".decoders[" + std::to_string(i) + "]");
      return;
    } else if (type == "ByteLevel") {
      only_keys(d, where, {"type", "add_prefix_space", "trim_offsets", "use_regex"});
      s.kind = DecoderStep::ByteLevel;
    } else if (type == "Replace") {
      only_keys(d, where, {"type", "pattern", "content"});
      s.kind = DecoderStep::Replace;
      std::shared_ptr<Regex> re;
      pattern_of(d["pattern"], where + ".pattern", &s.pattern, &re);
      if (re) error("field '", where, ".pattern' Regex is not supported in a decoder (only String)");
      s.content = get_string(d, where, "content");
    } else if (type == "ByteFallback") {
      only_keys(d, where, {"type"});
      s.kind = DecoderStep::ByteFallback;
    } else if (type == "Fuse") {
      only_keys(d, where, {"type"});
      s.kind = DecoderStep::Fuse;
    } else if (type == "Strip") {
      only_keys(d, where, {"type", "content", "start", "stop"});
      s.kind = DecoderStep::Strip;
      s.content = get_string(d, where, "content");
      if (s.content.size() != 1) error("field '", where, ".content' must be one ASCII character");
      s.start = d.value("start", 0);
      s.stop = d.value("stop", 0);
    } else if (type == "Metaspace") {
      only_keys(d, where, {"type", "replacement", "prepend_scheme", "split", "add_prefix_space", "str_rep"});
      s.kind = DecoderStep::Metaspace;
      s.replacement = get_string(d, where, "replacement");
      if (d.contains("prepend_scheme")) s.prepend = get_string(d, where, "prepend_scheme") != "never";
      else s.prepend = get_bool(d, where, "add_prefix_space", true);
    } else if (type == "WordPiece") {
      only_keys(d, where, {"type", "prefix", "cleanup"});
      s.kind = DecoderStep::WordPiece;
      s.pattern = d.contains("prefix") ? get_string(d, where, "prefix") : "##";
      s.cleanup = get_bool(d, where, "cleanup", true);
    } else {
      error("decoder type '", type, "' (", where, ") is not supported");
    }
    t->decoders.push_back(std::move(s));
  }

  void model(const json& m, std::vector<int32_t>* vocab_ids) {
    if (!m.is_object()) error("field 'model' must be an object");
    std::string type = m.value("type", std::string("BPE"));
    if (type == "WordPiece") {
      only_keys(m, "model", {"type", "unk_token", "continuing_subword_prefix", "max_input_chars_per_word", "vocab"});
      t->wordpiece = true;
      t->wordpiece_prefix = m.contains("continuing_subword_prefix") ? get_string(m, "model", "continuing_subword_prefix") : "##";
      if (m.contains("max_input_chars_per_word")) {
        const json& v = m["max_input_chars_per_word"];
        if (!v.is_number_integer() || v.get<int64_t>() < 1)
          error("field 'model.max_input_chars_per_word' must be a positive integer");
        t->wordpiece_max_chars = v.get<size_t>();
      }
      if (!m.contains("unk_token")) error("field 'model.unk_token' is missing (WordPiece needs it)");
    } else {
      if (type != "BPE") error("model type '", type, "' is not supported (only BPE and WordPiece)");
      only_keys(m, "model", {"type", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                             "fuse_unk", "byte_fallback", "ignore_merges", "vocab", "merges"});
      if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
        error("field 'model.dropout' is not supported (BPE dropout makes encoding random)");
      for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (m.contains(k) && !m[k].is_null() && !(m[k].is_string() && m[k].get<std::string>().empty()))
          error("field 'model.", k, "' is not supported");
    }
    t->fuse_unk = get_bool(m, "model", "fuse_unk", false);
    t->byte_fallback = get_bool(m, "model", "byte_fallback", false);
    t->ignore_merges = get_bool(m, "model", "ignore_merges", false);
    if (!m.contains("vocab") || !m["vocab"].is_object()) error("field 'model.vocab' must be an object");
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
      if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() >= (1LL << 31) - 1)
        error("field 'model.vocab' entry '", it.key(), "' has an invalid id");
      int32_t id = it->get<int32_t>();
      if (id >= int32_t(t->token_text.size())) {
        t->token_text.resize(id + 1);
        t->present.resize(id + 1, false);
      }
      if (t->present[id]) error("field 'model.vocab': id ", id, " is used twice ('", t->token_text[id], "', '", it.key(), "')");
      t->token_text[id] = it.key();
      t->present[id] = true;
      vocab_ids->push_back(id);
    }
    if (m.contains("unk_token") && !m["unk_token"].is_null()) {
      std::string unk = get_string(m, "model", "unk_token");
      auto it = m["vocab"].find(unk);
      if (it == m["vocab"].end()) error("field 'model.unk_token' '", unk, "' is not in the vocab");
      t->unk_id = it->get<int32_t>();
    }
  }

  void merges(const json& m, const json& vocab) {
    if (!m.contains("merges")) return;
    const json& list = m["merges"];
    if (!list.is_array()) error("field 'model.merges' must be an array");
    t->merges.reserve(list.size());
    t->merge_list.reserve(list.size());
    for (size_t rank = 0; rank < list.size(); ++rank) {
      const json& e = list[rank];
      std::string a, b;
      if (e.is_string()) {  // "left right"
        const std::string& s = e.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          error("field 'model.merges[", rank, "]' '", s, "' is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        error("field 'model.merges[", rank, "]' must be \"a b\" or [\"a\", \"b\"]");
      }
      auto ia = vocab.find(a), ib = vocab.find(b), im = vocab.find(a + b);
      if (ia == vocab.end() || ib == vocab.end() || im == vocab.end())
        error("field 'model.merges[", rank, "]' (", a, " ", b, "): token not in the vocab");
      t->merges.insert(ia->get<int32_t>(), ib->get<int32_t>(), uint32_t(rank), im->get<int32_t>());
      t->merge_list.push_back({ia->get<int32_t>(), ib->get<int32_t>()});
    }
  }

  void added_tokens(const json& list) {
    if (list.is_null()) return;
    if (!list.is_array()) error("field 'added_tokens' must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      std::string where = "added_tokens[" + std::to_string(i) + "]";
      const json& a = list[i];
      only_keys(a, where, {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"});
      AddedToken tok;
      if (!a.contains("id") || !a["id"].is_number_integer() || a["id"].get<int64_t>() < 0 ||
          a["id"].get<int64_t>() >= (1LL << 31) - 1)
        error("field '", where, ".id' must be a non-negative integer");
      tok.id = a["id"].get<int32_t>();
      tok.content = get_string(a, where, "content");
      tok.special = get_bool(a, where, "special", false);
      tok.lstrip = get_bool(a, where, "lstrip", false);
      tok.rstrip = get_bool(a, where, "rstrip", false);
      tok.single_word = get_bool(a, where, "single_word", false);
      tok.normalized = get_bool(a, where, "normalized", !tok.special);
      t->added.push_back(tok);
    }
  }
};

}  // namespace

static std::shared_ptr<Tokenizer::Impl> load(const json& j, const std::string& name,
                                             const std::string& text) {
  auto t = std::make_shared<Tokenizer::Impl>();
  t->name = name;
  Loader L{name, t.get()};
  if (!j.is_object()) L.error("not a JSON object");
  L.only_keys(j, "tokenizer", {"version", "truncation", "padding", "added_tokens", "normalizer",
                               "pre_tokenizer", "model", "post_processor", "decoder"});
  for (const char* k : {"truncation", "padding"})
    if (j.contains(k) && !j[k].is_null()) L.error("field '", k, "' is not supported (must be null)");
  if (!j.contains("model")) L.error("field 'model' is missing");

  std::vector<int32_t> vocab_ids;
  L.model(j["model"], &vocab_ids);
  L.normalizer(j.value("normalizer", json()), "normalizer");
  L.pre_tokenizer(j.value("pre_tokenizer", json()), "pre_tokenizer");
  L.merges(j["model"], j["model"]["vocab"]);
  L.added_tokens(j.value("added_tokens", json()));
  L.post_processor(j.value("post_processor", json()), "post_processor");
  L.decoder(j.value("decoder", json()), "decoder");
  t->decoder_is_byte_level_only = t->decoders.size() == 1 && t->decoders[0].kind == DecoderStep::ByteLevel;

  // token bytes: byte-level vocab strings map back to raw bytes; characters outside the map
  // (possible in hand-made vocabs) leave a token that BPE over raw bytes can never produce.
  t->token_bytes.resize(t->token_text.size());
  for (int32_t id : vocab_ids) {
    if (!t->byte_level) {
      t->token_bytes[id] = t->token_text[id];
    } else if (!byte_level_decode(t->token_text[id], &t->token_bytes[id])) {
      t->token_bytes[id] = std::string("\xff\xfe\xff", 3) + t->token_text[id];
    }
  }
  for (const AddedToken& a : t->added) {
    if (a.id >= int32_t(t->token_text.size())) {
      t->token_text.resize(a.id + 1);
      t->token_bytes.resize(a.id + 1);
      t->present.resize(a.id + 1, false);
    }
    t->token_text[a.id] = a.content;
    t->token_bytes[a.id] = a.content;
    t->present[a.id] = true;
  }
  for (int32_t id : t->post_prefix)
    if (id < 0 || id >= int32_t(t->present.size()) || !t->present[id]) L.error("post_processor: id ", id, " is not a token");
  for (int32_t id : t->post_suffix)
    if (id < 0 || id >= int32_t(t->present.size()) || !t->present[id]) L.error("post_processor: id ", id, " is not a token");

  if (t->wordpiece && t->unk_id < 0) L.error("field 'model.unk_token' must name a vocab token (WordPiece needs it)");
  if (t->wordpiece && t->byte_level) L.error("a ByteLevel pre-tokenizer with a WordPiece model is not supported");
  // WordPiece settings join the identity only for WordPiece models, so BPE hashes stay as they were
  std::string extra = (t->wordpiece ? "wordpiece " + t->wordpiece_prefix + " " +
                                          std::to_string(t->wordpiece_max_chars) + "\n" : std::string()) +
                      "normalizer " + j.value("normalizer", json()).dump() + "\npre_tokenizer " +
                      j.value("pre_tokenizer", json()).dump() + "\npost_processor " +
                      j.value("post_processor", json()).dump() + "\ndecoder " +
                      j.value("decoder", json()).dump() + "\n";
  finalize_tokenizer(t.get(), extra);
  t->json = text;
  return t;
}

Tokenizer Tokenizer::from_json_string(const std::string& text, const std::string& name) {
  const json j = parse_json(text, name);
  Tokenizer tok;
  try {
    tok.impl = load(j, name, text);
  } catch (const json::exception& e) {  // a field of the wrong JSON type deep inside
    fail(name, ": malformed tokenizer.json: ", e.what());
  }
  return tok;
}

Tokenizer Tokenizer::from_json_file(const std::string& path) {
  return from_json_string(read_text_file(path), path);
}

Tokenizer Tokenizer::from_json_file_without_length_rules(const std::string& path) {
  json j = read_json_file(path);
  if (!j.is_object()) fail(path, ": not a JSON object");
  Tokenizer::Impl scratch;
  Loader L{path, &scratch};
  if (j.contains("truncation") && !j["truncation"].is_null())
    L.only_keys(j["truncation"], "truncation", {"direction", "max_length", "strategy", "stride"});
  if (j.contains("padding") && !j["padding"].is_null())
    L.only_keys(j["padding"], "padding", {"strategy", "direction", "pad_to_multiple_of", "pad_id", "pad_type_id", "pad_token"});
  j.erase("truncation");
  j.erase("padding");
  return from_json_string(j.dump(), path);
}
