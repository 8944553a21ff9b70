// Tests of the command-line module (common/cli.h) and of docs/cli.md, which is generated from the
// programs' --help and must not go stale.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
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
