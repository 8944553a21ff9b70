// ./tokenize: encode, decode, train and inspect tokenizers from the command line.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"
#include "common/progress.h"
#include "tokenizer/impl.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/train_bpe.h"

namespace {

struct Args {
  std::string tokenizer, tiktoken, pattern = "llama3", special, input, output, format = "lines", bos;
  bool add_special = false, whole = false, skip_special = false, quiet = false;
  int64_t vocab_size = 32000, min_frequency = 2;
  std::vector<std::string> files;
};

std::string resolve_pattern(const std::string& p) {
  if (p == "llama3") return kLlama3Pattern;
  if (p == "qwen2") return kQwen2Pattern;
  if (p == "gpt2") return kGpt2Pattern;
  return p;
}

Tokenizer load_tokenizer(const Args& a) {
  if (!a.tiktoken.empty()) {
    std::vector<std::pair<std::string, int32_t>> specials;
    for (const std::string& item : cli::split_commas(a.special)) {
      size_t eq = item.rfind('=');
      check(eq != std::string::npos && eq > 0, "--special: expected TOKEN=ID, got '", item, "'");
      specials.push_back({item.substr(0, eq), int32_t(std::stol(item.substr(eq + 1)))});
    }
    return Tokenizer::from_tiktoken(a.tiktoken, resolve_pattern(a.pattern), specials);
  }
  check(!a.tokenizer.empty(), "missing --tokenizer PATH (or --tiktoken PATH); see --help");
  std::string path = a.tokenizer;
  if (dir_exists(path)) path += "/tokenizer.json";
  return Tokenizer::from_json_file(path);
}

std::string read_input(const Args& a) {
  if (!a.input.empty()) return read_text_file(a.input);
  std::ostringstream s;
  s << std::cin.rdbuf();
  return s.str();
}

void write_output(const Args& a, const std::string& data) {
  if (!a.output.empty()) return write_file_atomic(a.output, data);
  check(std::fwrite(data.data(), 1, data.size(), stdout) == data.size(), "stdout: write failed");
  std::fflush(stdout);
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

void append_ids(std::string* out, const std::vector<int32_t>& ids, bool as_json) {
  if (as_json) out->push_back('[');
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out->append(as_json ? "," : " ");
    out->append(std::to_string(ids[i]));
  }
  if (as_json) out->push_back(']');
  out->push_back('\n');
}

int cmd_encode(const Args& a) {
  Tokenizer t = load_tokenizer(a);
  std::string text = read_input(a), out;
  bool as_json = a.format == "json";
  // Progress on stderr (common/progress.h): bytes when encoding the whole input as one text.
  if (a.whole) {
    Progress progress("tokenize: encoding", int64_t(text.size()), "bytes");
    append_ids(&out, t.encode(text, a.add_special, &progress), as_json);
  } else {
    std::vector<std::string> lines = split_lines(text);
    const size_t chunk = 1 << 16;  // bounded memory for big inputs
    Progress progress("tokenize: encoding", int64_t(lines.size()), "lines");
    for (size_t s = 0; s < lines.size(); s += chunk) {
      std::vector<std::string> part(lines.begin() + s, lines.begin() + std::min(lines.size(), s + chunk));
      for (const auto& ids : t.encode_batch(part, a.add_special, &progress)) append_ids(&out, ids, as_json);
    }
  }
  write_output(a, out);
  return 0;
}

int cmd_decode(const Args& a) {
  Tokenizer t = load_tokenizer(a);
  std::string out;
  size_t line_no = 0;
  for (const std::string& line : split_lines(read_input(a))) {
    ++line_no;
    std::vector<int32_t> ids;
    std::string clean = line;
    for (char& c : clean)
      if (c == '[' || c == ']' || c == ',') c = ' ';
    std::istringstream s(clean);
    std::string word;
    while (s >> word) {
      char* end = nullptr;
      long v = std::strtol(word.c_str(), &end, 10);
      check(*end == 0 && v >= 0 && v < t.vocab_size(), a.input.empty() ? "stdin" : a.input, ": line ",
            line_no, ": '", word, "' is not a token id");
      ids.push_back(int32_t(v));
    }
    out += t.decode(ids, a.skip_special);
    out.push_back('\n');
  }
  write_output(a, out);
  return 0;
}

int cmd_train(const Args& a) {
  check(!a.output.empty(), "train: --output PATH is required");
  check(!a.files.empty(), "train: give at least one training text file");
  BpeTrainOptions opt;
  opt.vocab_size = int32_t(a.vocab_size);
  opt.special_tokens = cli::split_commas(a.special);
  opt.bos_token = a.bos;
  opt.pattern = resolve_pattern(a.pattern);
  opt.min_frequency = a.min_frequency;
  Tokenizer t = train_bpe_files(a.files, opt, a.output);
  std::printf("wrote %s: vocab %d, hash %s\n", a.output.c_str(), t.vocab_size(), t.hash_hex().c_str());
  return 0;
}

int cmd_info(const Args& a) {
  Tokenizer t = load_tokenizer(a);
  const auto& impl = *t.impl;
  std::printf("vocab_size: %d\n", t.vocab_size());
  std::printf("model: BPE, %s, %zu merges%s%s\n", impl.byte_level ? "byte-level" : "character-level",
              impl.merge_list.size(), impl.byte_fallback ? ", byte_fallback" : "",
              impl.ignore_merges ? ", ignore_merges" : "");
  auto show = [&](const char* what, int32_t id) {
    if (id < 0) std::printf("%s: none\n", what);
    else std::printf("%s: %d %s\n", what, id, t.id_to_token(id).c_str());
  };
  show("bos", t.bos_id());
  show("eos", t.eos_id());
  std::printf("stop_ids:");
  for (int32_t id : t.stop_ids()) std::printf(" %d", id);
  std::printf("\nadded_tokens: %zu\n", impl.added.size());
  for (const AddedToken& tok : impl.added)
    std::printf("  %d %s%s\n", tok.id, tok.content.c_str(), tok.special ? " (special)" : "");
  std::printf("hash: %s\n", t.hash_hex().c_str());
  return 0;
}


// The options of each command, bound to `a`.
void declare_commands(CLI::App& app, Args& a) {
  cli::init(app, "usage: tokenize COMMAND [options]   (tokenize COMMAND --help: the command's options)");
  cli::last_wins(app);
  app.description("Encodes, decodes, trains and inspects tokenizers.");
  auto opt = [&](CLI::App* cmd, const char* name, std::string& var, const char* metavar, const char* help) {
    return cmd->add_option(name, var, help)->option_text(metavar);
  };
  auto tokenizer_options = [&](CLI::App* cmd) {
    opt(cmd, "--tokenizer", a.tokenizer, "PATH", "tokenizer.json, or a directory containing one");
    opt(cmd, "--tiktoken", a.tiktoken, "PATH", "a tiktoken rank file instead, with --pattern and --special");
    opt(cmd, "--pattern", a.pattern, "REGEX", "tiktoken: pre-tokenizer regex, or one of: llama3, qwen2, gpt2 (default llama3)");
    opt(cmd, "--special", a.special, "TOK=ID,...", "tiktoken: special tokens");
  };
  auto io_options = [&](CLI::App* cmd) {
    opt(cmd, "--input", a.input, "PATH", "read from PATH instead of stdin");
    opt(cmd, "--output", a.output, "PATH", "write to PATH instead of stdout");
  };
  CLI::App* encode = cli::subcommand(
      app, "encode",
      "text -> ids. Each input line becomes one output line of space-separated ids\n"
      "(--format json: one JSON array per line). --whole encodes the entire input as one text.",
      "usage: tokenize encode (--tokenizer PATH | --tiktoken PATH) [options]");
  tokenizer_options(encode);
  io_options(encode);
  encode->add_flag("--add-special-tokens", a.add_special, "add BOS/EOS as the tokenizer's post-processor says");
  opt(encode, "--format", a.format, "lines|json", "output format (default lines)")->check(cli::one_of({"lines", "json"}));
  encode->add_flag("--whole", a.whole, "encode the whole input as one text (newlines included)");
  encode->add_flag("--quiet", a.quiet, "no progress lines on stderr (shown for inputs that take more than a few seconds)");

  CLI::App* decode = cli::subcommand(
      app, "decode", "ids -> text. Each input line of ids (space-separated or a JSON array) becomes one line.",
      "usage: tokenize decode (--tokenizer PATH | --tiktoken PATH) [options]");
  tokenizer_options(decode);
  io_options(decode);
  decode->add_flag("--skip-special-tokens", a.skip_special, "leave special tokens out");

  CLI::App* train = cli::subcommand(
      app, "train", "train a byte-level BPE (Llama 3 pre-tokenizer regex) on text files, write tokenizer.json",
      "usage: tokenize train --output PATH [options] FILES...");
  train->add_option("--vocab-size", a.vocab_size, "total vocabulary including bytes and special tokens (default 32000)")
      ->option_text("N")
      ->check(cli::integer(1, INT32_MAX));
  opt(train, "--special", a.special, "TOK,TOK,...", "special tokens appended after the merges");
  opt(train, "--bos", a.bos, "TOK", "make the post-processor add this special token first");
  opt(train, "--pattern", a.pattern, "REGEX", "pre-tokenizer regex or llama3|qwen2|gpt2 (default llama3)");
  train->add_option("--min-frequency", a.min_frequency, "stop when the best pair occurs fewer than N times (default 2)")
      ->option_text("N")
      ->check(cli::integer(1, INT64_MAX));
  opt(train, "--output", a.output, "PATH", "where to write tokenizer.json (required)");
  train->add_option("FILES", a.files, "training text files")->type_name("");

  CLI::App* info = cli::subcommand(app, "info", "print vocab size, BOS/EOS, special tokens and the tokenizer hash",
                                   "usage: tokenize info (--tokenizer PATH | --tiktoken PATH) [options]");
  tokenizer_options(info);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args a;
    CLI::App app;
    declare_commands(app, a);
    if (argc < 2) {
      std::fputs(app.help().c_str(), stderr);
      return 2;
    }
    const std::string first = argv[1];
    auto named = [&](CLI::App* sub) { return sub->get_name() == first; };
    check(first[0] == '-' || !app.get_subcommands(named).empty(), "unknown command '", first,
          "' (encode, decode, train, info; see --help)");
    if (int rc = cli::parse(app, argc, argv); rc >= 0) return rc;
    const std::vector<CLI::App*> chosen = app.get_subcommands();
    check(!chosen.empty(), "give a command: encode, decode, train or info (see --help)");
    const std::string command = chosen.front()->get_name();
    set_progress_enabled(!a.quiet);
    if (command == "encode") return cmd_encode(a);
    if (command == "decode") return cmd_decode(a);
    if (command == "train") return cmd_train(a);
    return cmd_info(a);
  } catch (const std::exception& e) {  // EngineError and anything else: a message, never a crash
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
