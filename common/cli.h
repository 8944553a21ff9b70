// The command-line module every program uses, on CLI11 (Debian libcli11-dev, header-only; why
// CLI11: docs/design.md). A program declares its options on a CLI::App bound to its own variables
// and calls cli::parse; this file adds the project's conventions on top of CLI11:
//   - `usage: ...` lines replace CLI11's generated usage line; -h/--help prints the help to stdout
//     and exits 0, so that docs/cli.md can be generated from it (`make docs-cli`);
//   - every error is one line "error: --name: what is wrong with the value" on stderr, exit 1;
//     an option the program does not know is "error: unknown option --name (see --help)";
//   - values are checked by the validators below (integer ranges, finite numbers, choices), which
//     name the value they reject; CLI11 then converts the checked text into the bound variable;
//   - an option given twice is an error, unless it was made repeatable (cli::repeatable, one
//     value per occurrence) or the program asked for the last one to win (cli::last_wins);
//   - `--name VALUE` and `--name=VALUE` are both accepted.
//
// A new program:
//   CLI::App app{"What the program does.", "prog"};
//   cli::init(app, "usage: prog --in FILE [options]");
//   int64_t n = 8;
//   app.add_option("--num", n, "how many (default 8)")->option_text("N")->check(cli::integer(1, 1 << 20));
//   if (int rc = cli::parse(app, argc, argv); rc >= 0) return rc;
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace cli {

// Options as given on a command line: long name without dashes -> its values, in order (a flag
// has one empty value). train_llama stores this in checkpoints and re-applies it on --resume.
using OptionMap = std::map<std::string, std::vector<std::string>>;

// The project's conventions (above) on a new app; `usage` is one or more "usage: ..." lines.
void init(CLI::App& app, const std::string& usage);
// A subcommand (e.g. `tokenize encode`) with its own usage line; it inherits the rest.
CLI::App* subcommand(CLI::App& app, const std::string& name, const std::string& description,
                     const std::string& usage);

// Parses argv[1..argc). Returns -1 when the program should go on; otherwise the exit status after
// printing the help (0) or an "error: ..." line (1).
int parse(CLI::App& app, int argc, const char* const* argv);
// The same, for programs that cannot run without options: no arguments at all print the help to
// stdout and return 1.
int parse_or_usage(CLI::App& app, int argc, const char* const* argv);
// Parses arguments without the program name (e.g. from cli::to_args). Returns false when the help
// was asked for (and printed); throws EngineError with the message of a bad command line.
bool parse_or_throw(CLI::App& app, std::vector<std::string> args);

// Options may be given several times, one value each, all kept in order.
CLI::Option* repeatable(CLI::Option* opt);
// For programs whose options historically let the last occurrence win.
void last_wins(CLI::App& app);

// Validators; the message names the rejected value, CLI11 prefixes the option's name.
CLI::Validator integer(int64_t lo, int64_t hi);  // a decimal integer in [lo, hi]
CLI::Validator number();                          // a finite floating-point number
CLI::Validator number(double lo, double hi);      // ... in [lo, hi]
CLI::Validator one_of(std::vector<std::string> choices);
CLI::Validator zero_or_one();                     // "0" or "1", for 0|1 switches
// A size in bytes written as Hugging Face's max_shard_size: an integer number of bytes, or a
// number and a unit, KB/MB/GB/TB (powers of 1000, as HF) or KiB/MiB/GiB/TiB (powers of 1024), the
// unit in any case: "5GB", "500MB", "1.5GiB". parse_byte_size throws an EngineError naming the text.
uint64_t parse_byte_size(const std::string& text);
CLI::Validator byte_size(uint64_t lo);  // parse_byte_size, at least lo bytes

// The options given on the parsed command line (not the defaults), in the shape of OptionMap.
OptionMap given(const CLI::App& app);
// A command line that gives these options again ("--name=value", a flag as "--name").
std::vector<std::string> to_args(const CLI::App& app, const OptionMap& options);

// Splits "a,b,c" into its non-empty parts.
std::vector<std::string> split_commas(const std::string& s);

}  // namespace cli
