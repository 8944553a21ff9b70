// Tests of the command-line module (common/cli.h) and of the documentation: docs/cli.md is
// generated from the programs' --help and must not go stale; README.md stays a short entry point
// (at most 15 KB) from which every document in docs/ is one link away.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "common/cli.h"
#include "common/error.h"
#include "common/file_io.h"

namespace {

struct Opts {
  int64_t n = 3;
  double lr = 0.5;
  std::string device = "auto";
  bool pack = true, quiet = false;
  std::vector<std::string> mix;
};

void declare(CLI::App& app, Opts& o) {
  cli::init(app, "usage: prog [options]");
  app.add_option("--n", o.n, "a count")->option_text("N")->check(cli::integer(1, 100));
  app.add_option("--lr", o.lr, "a rate")->option_text("LR")->check(cli::number(0, 1));
  app.add_option("--device", o.device, "a device")->check(cli::one_of({"auto", "cpu", "cuda"}));
  app.add_option("--pack", o.pack, "a switch")->check(cli::zero_or_one());
  cli::repeatable(app.add_option("--mix", o.mix, "repeatable"));
  app.add_flag("--quiet", o.quiet, "a flag");
}

// The message of the error a command line gives, or "" when it parses.
std::string error_of(std::vector<std::string> args) {
  CLI::App app;
  Opts o;
  declare(app, o);
  try {
    cli::parse_or_throw(app, args);
  } catch (const EngineError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("cli: values are converted into the bound variables, both --name V and --name=V") {
  CLI::App app;
  Opts o;
  declare(app, o);
  REQUIRE(cli::parse_or_throw(app, {"--n", "42", "--lr=0.25", "--device", "cpu", "--pack", "0", "--mix", "a=x:1",
                                    "--mix=b=y:2", "--quiet"}));
  REQUIRE(o.n == 42);
  REQUIRE(o.lr == 0.25);
  REQUIRE(o.device == "cpu");
  REQUIRE_FALSE(o.pack);
  REQUIRE(o.quiet);
  REQUIRE(o.mix == std::vector<std::string>{"a=x:1", "b=y:2"});
}

TEST_CASE("cli: bad command lines give one message naming the option") {
  REQUIRE(error_of({"--n", "7"}).empty());
  REQUIRE(error_of({"--n", "0"}) == "--n: 0 is below the minimum 1");
  REQUIRE(error_of({"--n", "101"}) == "--n: 101 is above the maximum 100");
  REQUIRE(error_of({"--n", "x"}) == "--n: 'x' is not a decimal integer");
  REQUIRE(error_of({"--n", "010"}) == "--n: '010' is not a decimal integer");  // not octal 8
  REQUIRE(error_of({"--n", "99999999999999999999"}) == "--n: '99999999999999999999' is not a decimal integer");
  REQUIRE(error_of({"--lr", "nan"}) == "--lr: 'nan' is not a finite number");
  REQUIRE(error_of({"--lr", "2"}) == "--lr: 2 is outside [0, 1]");
  REQUIRE(error_of({"--device", "gpu"}) == "--device: expected auto, cpu or cuda, got 'gpu'");
  REQUIRE(error_of({"--pack", "yes"}) == "--pack: expected 0 or 1, got 'yes'");
  REQUIRE(error_of({"--bogus", "1"}) == "unknown option --bogus (see --help)");
  REQUIRE(error_of({"--bogus=1"}) == "unknown option --bogus (see --help)");
  REQUIRE(error_of({"stray"}) == "unexpected argument 'stray' (see --help)");
  REQUIRE(error_of({"--n", "1", "--n", "2"}) == "option --n given 2 times (once at most)");
  REQUIRE(error_of({"--n"}) == "option --n needs a value");
  REQUIRE(error_of({"--mix", "a", "b"}) == "unexpected argument 'b' (see --help)");  // one value per --mix
}

TEST_CASE("cli: last_wins lets the last occurrence of an option win") {
  CLI::App app;
  cli::init(app, "usage: prog");
  cli::last_wins(app);
  std::string s;
  app.add_option("--s", s, "text");
  REQUIRE(cli::parse_or_throw(app, {"--s", "a", "--s", "b"}));
  REQUIRE(s == "b");
}

TEST_CASE("cli: --help prints the usage line first and asks the caller to exit 0") {
  CLI::App app{"What it does."};
  Opts o;
  declare(app, o);
  const char* argv[] = {"prog", "--help"};
  REQUIRE(cli::parse(app, 2, argv) == 0);
  const std::string help = app.help();
  REQUIRE(help.rfind("usage: prog [options]\n\nWhat it does.\n", 0) == 0);
  REQUIRE(help.find("--n N") != std::string::npos);
  const char* bad[] = {"prog", "--n", "0"};
  REQUIRE(cli::parse(app, 3, bad) == 1);
}

TEST_CASE("cli: given() and to_args() round-trip a command line (train_llama --resume re-applies it)") {
  CLI::App app;
  Opts o;
  declare(app, o);
  REQUIRE(cli::parse_or_throw(app, {"--n=5", "--mix", "a", "--mix", "-b", "--quiet", "--lr", "1e-1"}));
  const cli::OptionMap given = cli::given(app);
  REQUIRE(given == cli::OptionMap{{"n", {"5"}}, {"mix", {"a", "-b"}}, {"quiet", {""}}, {"lr", {"1e-1"}}});
  CLI::App again;
  Opts p;
  declare(again, p);
  cli::OptionMap stored = given;
  stored["removed-in-a-later-version"] = {"x"};  // skipped, as an old checkpoint's obsolete option
  REQUIRE(cli::parse_or_throw(again, cli::to_args(again, stored)));
  REQUIRE(p.n == 5);
  REQUIRE(p.mix == o.mix);
  REQUIRE(p.quiet);
  REQUIRE(p.lr == 0.1);
  REQUIRE(cli::given(again) == given);
}

TEST_CASE("cli: split_commas keeps the non-empty parts") {
  REQUIRE(cli::split_commas("a,b,,c,") == std::vector<std::string>{"a", "b", "c"});
  REQUIRE(cli::split_commas("").empty());
}

// Every program, through the module: an unknown option or a bad value is one "error:" line naming
// the option, and exit status 1 (`make test` builds the programs first).
TEST_CASE("cli: sizes in bytes as Hugging Face's max_shard_size") {
  REQUIRE(cli::parse_byte_size("5GB") == 5000000000ull);
  REQUIRE(cli::parse_byte_size("500MB") == 500000000ull);
  REQUIRE(cli::parse_byte_size("1.5GiB") == 1610612736ull);
  REQUIRE(cli::parse_byte_size("2kib") == 2048);
  REQUIRE(cli::parse_byte_size("4000") == 4000);
  REQUIRE(cli::parse_byte_size("4000B") == 4000);
  for (const char* bad : {"", "GB", "5XB", "1.5", "-1", "5 GB", "1e3MB", "1.2.3GB"})
    REQUIRE_THROWS_WITH(cli::parse_byte_size(bad), Catch::Contains("'" + std::string(bad) + "' is not a size"));
}

TEST_CASE("the programs report bad command lines naming the option, with exit status 1") {
  const std::string log = "build/test/cli_err_" + std::to_string(getpid()) + ".log";
  auto run = [&](const std::string& cmd) {
    const int status = std::system((cmd + " > " + log + " 2>&1").c_str());
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text_file(log));
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"./tokenize encode --bogus", "error: unknown option --bogus"},
      {"./tokenize encode --format xml", "error: --format: expected lines or json, got 'xml'"},
      {"./tokenize frobnicate", "error: unknown command 'frobnicate'"},
      {"./tokenize train --vocab-size ten", "error: --vocab-size: 'ten' is not a decimal integer"},
      {"./prepare_data --mode kvr --seed -1", "error: --seed: -1 is below the minimum 0"},
      {"./prepare_data --bogus=1", "error: unknown option --bogus"},
      {"./train_llama --epochs 0", "error: --epochs: 0 is below the minimum 1"},
      {"./train_llama --lr nan", "error: --lr: 'nan' is not a finite number"},
      {"./train_llama --pack 2", "error: --pack: expected 0 or 1, got '2'"},
      {"./train_llama --out a --out b", "error: option --out given 2 times"},
      {"./eval_factoids --batch-size 0", "error: --batch-size: 0 is below the minimum 1"},
      {"./eval_factoids --device tpu", "error: --device: expected auto, cpu or cuda, got 'tpu'"},
      {"./eval_factoids --model", "error: option --model needs a value"},
  };
  for (const auto& [cmd, message] : cases) {
    const auto [code, out] = run(cmd);
    INFO(cmd << " -> " << out);
    REQUIRE(code == 1);
    REQUIRE(out.rfind(message, 0) == 0);
  }
  for (const char* help : {"./tokenize --help", "./tokenize train --help", "./prepare_data --help",
                           "./train_llama --help", "./eval_factoids --help"}) {
    const auto [code, out] = run(help);
    INFO(help);
    REQUIRE(code == 0);
    REQUIRE(out.rfind("usage: ", 0) == 0);
  }
  std::remove(log.c_str());
}

// docs/cli.md is what dev/gen_cli_docs.sh writes from the built programs' --help (`make test`
// builds them first).
TEST_CASE("docs/cli.md is up to date with the programs' --help (else: make docs-cli)") {
  const std::string fresh = "build/test/cli_md_" + std::to_string(getpid()) + ".md";
  const std::string cmd = "bash dev/gen_cli_docs.sh " + fresh;
  REQUIRE(std::system(cmd.c_str()) == 0);
  const std::string want = read_text_file(fresh);
  std::remove(fresh.c_str());
  INFO("docs/cli.md differs from the programs' --help: run `make docs-cli` and commit docs/cli.md");
  REQUIRE(read_text_file("docs/cli.md") == want);
}

TEST_CASE("README.md is at most 15 KB and links every document in docs/") {
  const std::string readme = read_text_file("README.md");
  REQUIRE(readme.size() <= 15 * 1024);
  for (const auto& e : std::filesystem::directory_iterator("docs")) {
    if (e.path().extension() != ".md") continue;
    const std::string link = "](docs/" + e.path().filename().string() + ")";
    INFO("README.md has no link to " << e.path().string());
    REQUIRE(readme.find(link) != std::string::npos);
  }
  for (size_t at = readme.find("](docs/"); at != std::string::npos; at = readme.find("](docs/", at + 1)) {
    const std::string target = readme.substr(at + 2, readme.find_first_of(")#", at) - at - 2);
    INFO("README.md links to " << target << ", which does not exist");
    REQUIRE(file_exists(target));
  }
}
