#include "dataloader/chat.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_io.h"
#include "common/json_file.h"
#include "common/progress.h"
#include "dataloader/prompt_template.h"
#include "dataloader/sources.h"

using json = nlohmann::json;

int64_t ChatSkips::total() const {
  int64_t n = 0;
  for (auto& [k, v] : count) n += v;
  return n;
}

void ChatSkips::add(const std::string& reason, const std::string& message) {
  ++count[reason];
  if (first.size() < 5) first.push_back(message);
}

std::string ChatSkips::summary() const {
  if (count.empty()) return "";
  std::string s = std::to_string(total()) + " skipped (";
  bool sep = false;
  for (auto& [k, v] : count) {
    s += (sep ? ", " : "") + std::to_string(v) + " " + k;
    sep = true;
  }
  return s + ")";
}

// A refusal: the short reason (counted) and the full message (thrown or listed).
struct Refusal {
  std::string reason, detail;
};

static const json* first_present(const json& j, const std::vector<std::string>& keys, std::string* which) {
  for (auto& k : keys)
    if (j.contains(k)) {
      *which = k;
      return &j[k];
    }
  return nullptr;
}

static std::string join_keys(const std::vector<std::string>& keys) {
  std::string s;
  for (auto& k : keys) s += (s.empty() ? "'" : ", '") + k + "'";
  return s;
}

// Parses one line; returns false and fills `why` for a refused conversation.
static bool parse_conversation(std::string_view text, const ChatFormat& f, Conversation& c, Refusal& why) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return why = {"malformed JSON", std::string("invalid JSON: ") + e.what()}, false;
  }
  if (!j.is_object()) return why = {"malformed JSON", std::string("expected a JSON object, got ") + j.type_name()}, false;
  std::string field;
  const json* list = first_present(j, f.list_fields, &field);
  if (!list) return why = {"no message list", "no message list (looked for " + join_keys(f.list_fields) + ")"}, false;
  if (!list->is_array())
    return why = {"malformed JSON", "field '" + field + "' must be a list of messages, got " + list->type_name()}, false;
  if (list->empty()) return why = {"empty conversation", "empty conversation (field '" + field + "' is [])"}, false;
  bool assistant = false;
  for (size_t i = 0; i < list->size(); ++i) {
    const json& m = (*list)[i];
    const std::string where = "message " + std::to_string(i + 1) + ": ";
    if (!m.is_object()) return why = {"malformed JSON", where + "expected an object, got " + m.type_name()}, false;
    std::string rk, ck;
    const json* role = first_present(m, f.role_keys, &rk);
    const json* content = first_present(m, f.content_keys, &ck);
    if (!role || !role->is_string())
      return why = {"malformed JSON", where + "no string role (looked for " + join_keys(f.role_keys) + ")"}, false;
    if (!content || !content->is_string())
      return why = {"malformed JSON", where + "no string content (looked for " + join_keys(f.content_keys) + ")"},
             false;
    auto it = f.role_map.find(role->get<std::string>());
    if (it == f.role_map.end()) {
      std::string known;
      for (auto& [k, v] : f.role_map) known += (known.empty() ? "" : ", ") + k;
      return why = {"unknown role", where + "unknown role '" + role->get<std::string>() + "' (known: " + known +
                                        "; map it with --role-map NAME=user|assistant|system)"},
             false;
    }
    assistant = assistant || it->second == "assistant";
    c.messages.push_back({it->second, content->get<std::string>()});
  }
  if (!assistant) return why = {"no assistant turn", "no assistant turn (nothing to train on)"}, false;
  return true;
}

std::vector<Conversation> read_chat_jsonl(const std::string& path, const ChatFormat& format, int64_t limit,
                                          bool skip_invalid, ChatSkips& skips) {
  for (auto& [k, v] : format.role_map)
    check(v == "system" || v == "user" || v == "assistant", "--role-map: '", k, "' maps to '", v,
          "' (expected system, user or assistant)");
  const std::string text = read_text_file(path);
  const std::vector<TextLine> lines = nonblank_lines(text);
  // JSON parsing dominates: lines are parsed in parallel, refusals reported in file order.
  std::vector<Conversation> convs(lines.size());
  std::vector<Refusal> why(lines.size());
  std::vector<uint8_t> ok(lines.size());
  Progress progress("reading " + path, int64_t(lines.size()), "lines");
#pragma omp parallel for schedule(dynamic, 256)
  for (size_t i = 0; i < lines.size(); ++i) {
    convs[i].line = lines[i].number;
    ok[i] = parse_conversation(lines[i].text, format, convs[i], why[i]);
    progress.add();
  }
  progress.finish();
  std::vector<Conversation> out;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (limit > 0 && int64_t(out.size()) >= limit) break;
    if (ok[i]) {
      out.push_back(std::move(convs[i]));
      continue;
    }
    const std::string msg = path + ":" + std::to_string(lines[i].number) + ": " + why[i].detail;
    check(skip_invalid, msg, " (--skip-invalid counts and skips such lines)");
    skips.add(why[i].reason, msg);
  }
  check(!out.empty(), path, ": no conversations", skips.total() ? " (" + skips.summary() + ")" : std::string());
  return out;
}

static void check_content_slot(const std::string& t, const std::string& where, const std::string& field) {
  size_t p = t.find("{content}");
  check(p != std::string::npos && t.find("{content}", p + 1) == std::string::npos, where, ": field '", field,
        "' must contain {content} exactly once");
}

ChatTemplate ChatTemplate::resolve(const std::string& name_or_path) {
  ChatTemplate t;
  t.name = name_or_path;
  if (name_or_path == "tulu") {
    t.system = "<|system|>\n{content}\n";
    t.user = "<|user|>\n{content}\n";
    t.assistant_header = "<|assistant|>\n";
    t.assistant_end = "{eos}\n";
    t.strip = true;
    return t;
  }
  if (name_or_path == "llama3") {
    t.system = "<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>";
    t.user = "<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>";
    t.assistant_header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
    t.assistant_end = "<|eot_id|>";
    t.required_tokens = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    return t;
  }
  check(file_exists(name_or_path), name_or_path, ": not a chat template name (tulu, llama3) and not a readable file");
  const json j = read_json_file(name_or_path);
  check(j.is_object(), name_or_path, ": a chat template file is a JSON object");
  for (auto& [k, v] : j.items()) {
    check(k == "system" || k == "user" || k == "assistant_header" || k == "assistant_end" || k == "strip",
          name_or_path, ": unknown field '", k, "' (system, user, assistant_header, assistant_end, strip)");
    if (k == "strip") {
      check(v.is_boolean(), name_or_path, ": field 'strip' must be true or false");
      t.strip = v.get<bool>();
    } else {
      check(v.is_string(), name_or_path, ": field '", k, "' must be a string");
    }
  }
  for (const char* k : {"user", "assistant_header", "assistant_end"})
    check(j.contains(k), name_or_path, ": missing field '", k, "'");
  t.user = j["user"].get<std::string>();
  t.system = j.value("system", std::string("{content}"));
  t.assistant_header = j["assistant_header"].get<std::string>();
  t.assistant_end = j["assistant_end"].get<std::string>();
  check_content_slot(t.user, name_or_path, "user");
  check_content_slot(t.system, name_or_path, "system");
  check(t.assistant_header.find("{content}") == std::string::npos &&
            t.assistant_end.find("{content}") == std::string::npos,
        name_or_path, ": assistant_header and assistant_end hold no {content} (the reply goes between them)");
  check(!t.assistant_end.empty(), name_or_path, ": field 'assistant_end' is empty (a reply needs an end-of-turn)");
  return t;
}

static void append_replaced(std::string& out, const std::string& tmpl, const std::string& key,
                            const std::string& value) {
  size_t b = 0;
  for (;;) {
    size_t p = tmpl.find(key, b);
    if (p == std::string::npos) break;
    out.append(tmpl, b, p - b);
    out += value;
    b = p + key.size();
  }
  out.append(tmpl, b, std::string::npos);
}

void ChatTemplate::append(std::string& s, const ChatMessage& m, const std::string& eos_text) const {
  const std::string content = trim_whitespace(m.content);
  if (m.role == "assistant") {
    append_replaced(s, assistant_header, "{eos}", eos_text);
    s += content;
    append_replaced(s, assistant_end, "{eos}", eos_text);
  } else {
    append_replaced(s, m.role == "system" ? system : user, "{content}", content);
  }
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& m, size_t n, const std::string& eos_text) const {
  std::string s;
  for (size_t i = 0; i < n && i < m.size(); ++i) append(s, m[i], eos_text);
  return s;
}

std::string ChatTemplate::qa_template() const {
  std::string s;
  append_replaced(s, user, "{content}", "{prompt}");
  return s + assistant_header + "{answer}{eos}";
}

ChatTruncate parse_chat_truncate(const std::string& s) {
  if (s == "turns") return ChatTruncate::turns;
  if (s == "skip") return ChatTruncate::skip;
  if (s == "error") return ChatTruncate::error;
  fail("--truncate: '", s, "' is not turns, skip or error");
}

// The span of a non-assistant message that carries no loss, [begin, end) in tokens: the token
// counts of its start and end prefixes (chat.h).
struct Untrained {
  size_t message, begin, end;
};

static constexpr size_t kNoText = size_t(-1);

// Appends to `texts` the whole text of conversation m (stripped when the template says so), then
// the prefixes whose token counts bound the untrained spans, rendered in one pass; `spans` gets,
// per non-assistant message, the indices in `texts` of its start prefix (kNoText: token 0) and end
// prefix. The start prefix of a message that follows another non-assistant message is that
// message's end prefix (no header is appended before a non-assistant turn): counted once.
static void mask_texts(const ChatTemplate& t, const std::vector<ChatMessage>& m, const std::string& eos,
                       std::vector<std::string>& texts, std::vector<Untrained>& spans) {
  const size_t whole = texts.size();
  texts.emplace_back();
  std::string s;
  for (size_t i = 0; i < m.size(); ++i) {
    const bool trained = m[i].role == "assistant";
    size_t start = kNoText;
    if (!trained && i > 0) {
      if (m[i - 1].role == "assistant") texts.push_back(s);
      start = texts.size() - 1;
    }
    t.append(s, m[i], eos);
    if (trained) continue;
    texts.push_back(s);
    if (i + 1 < m.size() && m[i + 1].role == "assistant") append_replaced(texts.back(), t.assistant_header, "{eos}", eos);
    spans.push_back({i, start, texts.size() - 1});
  }
  texts[whole] = t.strip ? trim_whitespace(s) : s;
}

// The example of messages [0, n): `tokens` encode their whole text; `spans` hold token counts.
// A span of a kept message is the same whatever n is, as a kept conversation ends with an
// assistant turn (so the end prefix of a kept message never lacks the header that follows it).
static ChatExample assemble(std::vector<int32_t> tokens, const std::vector<Untrained>& spans, size_t n) {
  ChatExample ex;
  ex.messages = n;
  ex.tokens = std::move(tokens);
  ex.loss.assign(ex.tokens.size(), 1);
  for (const Untrained& u : spans)
    if (u.message < n)
      for (size_t k = u.begin; k < std::min(u.end, ex.tokens.size()); ++k) ex.loss[k] = 0;
  if (!ex.loss.empty()) ex.loss[0] = 0;
  return ex;
}

std::vector<ChatExample> tokenize_conversations(const Tokenizer& tok, const ChatTemplate& tmpl,
                                                const std::vector<Conversation>& convs, int64_t max_tokens,
                                                ChatTruncate truncate, const std::string& path, ChatSkips& skips) {
  bool needs_eos = false;
  for (const std::string* s : {&tmpl.assistant_header, &tmpl.assistant_end})
    needs_eos = needs_eos || s->find("{eos}") != std::string::npos;
  check(!needs_eos || tok.eos_id() >= 0, "chat template '", tmpl.name, "' has {eos} but the tokenizer has no EOS");
  const std::string eos = needs_eos ? tok.id_to_token(tok.eos_id()) : "";
  for (auto& r : tmpl.required_tokens)
    check(tok.token_to_id(r) >= 0, "chat template '", tmpl.name, "': the tokenizer has no ", r,
          " token (a Llama 3 instruct tokenizer has); use --chat-template tulu or a template file");
  std::vector<ChatExample> out(convs.size());
  // Chunks bound the memory of the encoded prefixes.
  const size_t chunk = 8192;
  Progress progress("tokenizing " + path, int64_t(convs.size()), "conversations");
  for (size_t c0 = 0; c0 < convs.size(); c0 += chunk) {
    progress.reach(int64_t(c0));
    const size_t c1 = std::min(convs.size(), c0 + chunk);
    std::vector<std::string> texts;
    std::vector<std::vector<Untrained>> spans(c1 - c0);
    std::vector<size_t> whole(c1 - c0);
    for (size_t c = c0; c < c1; ++c) {
      whole[c - c0] = texts.size();
      mask_texts(tmpl, convs[c].messages, eos, texts, spans[c - c0]);
    }
    auto enc = tok.encode_batch(texts, /*add_special_tokens=*/true);
    for (size_t c = c0; c < c1; ++c) {
      auto& sp = spans[c - c0];
      for (Untrained& u : sp) {
        u.begin = u.begin == kNoText ? 0 : enc[u.begin].size();
        u.end = enc[u.end].size();
      }
      out[c] = assemble(std::move(enc[whole[c - c0]]), sp, convs[c].messages.size());
      if (max_tokens <= 0 || int64_t(out[c].tokens.size()) <= max_tokens) continue;
      const std::string what = path + ":" + std::to_string(convs[c].line) + ": conversation of " +
                               std::to_string(out[c].tokens.size()) + " tokens is longer than --max-tokens " +
                               std::to_string(max_tokens);
      check(truncate != ChatTruncate::error, what, " (--truncate turns or skip)");
      out[c] = ChatExample{};
      if (truncate == ChatTruncate::skip) {
        skips.add("longer than --max-tokens", what);
        continue;
      }
      // Longest prefix of whole exchanges (ending with an assistant turn) that fits: only its
      // whole text is encoded, its spans are those already counted.
      const auto& m = convs[c].messages;
      for (size_t n = m.size() - 1; n > 0; --n) {
        if (m[n - 1].role != "assistant") continue;
        const std::string text = tmpl.render(m, n, eos);
        std::vector<int32_t> tokens = tok.encode(tmpl.strip ? trim_whitespace(text) : text, true);
        if (int64_t(tokens.size()) <= max_tokens) {
          out[c] = assemble(std::move(tokens), sp, n);
          break;
        }
      }
      if (out[c].tokens.empty()) skips.add("first exchange longer than --max-tokens", what);
    }
  }
  progress.reach(int64_t(convs.size()));
  return out;
}
