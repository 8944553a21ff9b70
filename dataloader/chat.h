// Multi-turn chat data for prepare_data --mode chat: reading conversations from JSONL, rendering
// them with a chat template, and tokenizing them with a loss mask on the assistant turns.
//
// Input: one JSON object per line holding a list of messages, either
//   {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
//   (UltraChat, Tulu) or ShareGPT's {"conversations": [{"from": "human", "value": "..."}, ...]}.
// Roles are mapped to system / user / assistant (ChatFormat::role_map; human -> user, gpt ->
// assistant by default).
//
// Rendering and masking follow open-instruct's encode_with_messages_format, the SFT data path the
// REMIX code uses (reimplemented from its behaviour):
//   render(m_0..m_k) = concatenation of each message's text; a message is
//       system:    system template with {content} = content.strip()
//       user:      user template
//       assistant: assistant_header + content.strip() + assistant_end  ({eos} = the EOS token's text)
//   text   = render(all messages), stripped of surrounding whitespace when the template says so
//   tokens = encode(text, add_special_tokens=true)   (BOS from the tokenizer's post-processor)
//   mask   = loss on every token except, for each non-assistant message i, the tokens
//            [n(render(m_0..m_{i-1})), n(render(m_0..m_i) + header)) where n(x) = the number of
//            tokens of encode(x, true), and header = assistant_header when m_{i+1} is an
//            assistant turn (so the header is not trained on) and "" otherwise.
// So the loss falls on each assistant reply, its end-of-turn token, and (Tulu) the newline that
// follows it inside the conversation. The first token never carries a loss (nothing predicts it).
// The evaluation prompt of a reply is the token prefix before its first trained token, i.e.
// exactly what the model saw in training.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

struct Conversation {
  std::vector<ChatMessage> messages;
  int64_t line = 0;  // 1-based line in the input file
};

struct ChatFormat {
  std::vector<std::string> list_fields = {"messages", "conversations"};  // first present wins
  std::vector<std::string> role_keys = {"role", "from"};
  std::vector<std::string> content_keys = {"content", "value"};
  std::map<std::string, std::string> role_map = {
      {"system", "system"},       {"user", "user"},           {"human", "user"},
      {"assistant", "assistant"}, {"gpt", "assistant"},        {"chatgpt", "assistant"},
      {"model", "assistant"}};
};

// Reasons a conversation is refused; with skip_invalid they are counted instead of thrown.
struct ChatSkips {
  std::map<std::string, int64_t> count;  // reason -> conversations
  std::vector<std::string> first;        // the first few messages "file:line: reason"
  int64_t total() const;
  void add(const std::string& reason, const std::string& message);
  std::string summary() const;  // "3 skipped (2 no assistant turn, 1 unknown role)"; "" if none
};

// Reads conversations. An invalid line (malformed JSON, no message list, an empty conversation, a
// message without role or content, an unknown role, no assistant turn) throws
// EngineError("file:line: reason"), or, with skip_invalid, is counted in `skips`.
// limit > 0 keeps the first `limit` valid conversations.
std::vector<Conversation> read_chat_jsonl(const std::string& path, const ChatFormat& format, int64_t limit,
                                          bool skip_invalid, ChatSkips& skips);

struct ChatTemplate {
  std::string name;
  std::string system = "{content}", user = "{content}";  // each holds {content} once
  std::string assistant_header, assistant_end;  // assistant turn = header + content + end
  bool strip = false;                           // strip the whole rendered text
  std::vector<std::string> required_tokens;     // must be single tokens of the tokenizer (llama3's markers)

  // tulu | llama3 | a JSON file {"system", "user", "assistant_header", "assistant_end", "strip"}.
  static ChatTemplate resolve(const std::string& name_or_path);
  // Renders messages [0, n). eos_text replaces {eos}. Without the final strip.
  std::string render(const std::vector<ChatMessage>& m, size_t n, const std::string& eos_text) const;
  void append(std::string& s, const ChatMessage& m, const std::string& eos_text) const;  // one message
  // The one-turn QA template equivalent to this chat template (stored in shards, so that
  // eval_factoids renders a question as the prompt of a one-turn conversation):
  //   user with {content} -> {prompt}, then assistant_header{answer}{eos} (for tulu: the QA tulu template).
  std::string qa_template() const;
};

struct ChatExample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> loss;
  size_t messages = 0;  // messages kept (fewer than given when truncated)
};

enum class ChatTruncate { turns, skip, error };
ChatTruncate parse_chat_truncate(const std::string& s);  // throws naming --truncate

// Tokenizes conversations (all cores). max_tokens > 0 limits an example's length: `turns` drops
// whole exchanges from the end (the kept conversation ends with an assistant turn), `skip` drops
// the conversation, `error` throws naming the file and line. A skipped conversation (including one
// whose first exchange alone is too long) is counted in `skips` and its ChatExample is empty.
std::vector<ChatExample> tokenize_conversations(const Tokenizer& tok, const ChatTemplate& tmpl,
                                                const std::vector<Conversation>& convs, int64_t max_tokens,
                                                ChatTruncate truncate, const std::string& path, ChatSkips& skips);
