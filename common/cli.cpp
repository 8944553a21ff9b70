// The command-line conventions of common/cli.h on top of CLI11.
#include "common/cli.h"

#include "common/error.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace cli {

namespace {

// CLI11's formatter with our usage lines first, then the description, then the options.
class Formatter : public CLI::Formatter {
 public:
  explicit Formatter(std::string usage) : usage_(std::move(usage)) { column_width(36); }
  std::string make_description(const CLI::App*) const override { return ""; }
  std::string make_usage(const CLI::App* app, std::string) const override {
    std::string s = usage_;
    if (!s.empty() && s.back() != '\n') s += '\n';
    const std::string& d = app->get_description();
    if (!d.empty()) s += "\n" + d + (d.back() == '\n' ? "" : "\n");
    return s;
  }

 private:
  std::string usage_;
};

std::vector<const CLI::App*> with_subcommands(const CLI::App& app) {
  std::vector<const CLI::App*> all{&app};
  for (size_t i = 0; i < all.size(); ++i)
    for (const CLI::App* s : all[i]->get_subcommands([](const CLI::App*) { return true; })) all.push_back(s);
  return all;
}

}  // namespace

void init(CLI::App& app, const std::string& usage) {
  app.formatter(std::make_shared<Formatter>(usage));
  app.set_help_flag("-h,--help", "show this help and exit");
  // Unknown arguments are collected (not thrown) so that parse() can name them our way.
  app.allow_extras();
}

CLI::App* subcommand(CLI::App& app, const std::string& name, const std::string& description,
                     const std::string& usage) {
  CLI::App* sub = app.add_subcommand(name, description);
  sub->formatter(std::make_shared<Formatter>(usage));
  return sub;
}

bool parse_or_throw(CLI::App& app, std::vector<std::string> args) {
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return false;
  } catch (const CLI::ArgumentMismatch& e) {
    // CLI11 says "--x: At Most 1 required but received 2" or "--x: 1 required TEXT missing".
    for (const CLI::App* a : with_subcommands(app))
      for (const CLI::Option* o : a->get_options())
        if (o->get_multi_option_policy() == CLI::MultiOptionPolicy::Throw && o->get_expected_max() > 0 &&
            o->count() > 1)
          fail("option ", o->get_name(), " given ", o->count(), " times (once at most)");
    const std::string what = e.what();
    const size_t colon = what.find(':');
    if (colon != std::string::npos && what.size() > 8 && what.compare(what.size() - 8, 8, " missing") == 0)
      fail("option ", what.substr(0, colon), " needs a value");
    fail(what);
  } catch (const CLI::ParseError& e) {
    fail(e.what());
  }
  std::vector<std::string> extra = app.remaining(/*recurse=*/true);
  if (!extra.empty()) {
    const std::string& a = extra.front();
    if (a.size() > 1 && a[0] == '-') fail("unknown option ", a.substr(0, a.find('=')), " (see --help)");
    fail("unexpected argument '", a, "' (see --help)");
  }
  return true;
}

int parse(CLI::App& app, int argc, const char* const* argv) {
  try {
    return parse_or_throw(app, std::vector<std::string>(argv + std::min(argc, 1), argv + argc)) ? -1 : 0;
  } catch (const EngineError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

int parse_or_usage(CLI::App& app, int argc, const char* const* argv) {
  if (argc <= 1) {
    std::fputs(app.help().c_str(), stdout);
    return 1;
  }
  return parse(app, argc, argv);
}

CLI::Option* repeatable(CLI::Option* opt) {
  return opt->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)->allow_extra_args(false);
}

void last_wins(CLI::App& app) { app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast); }

CLI::Validator integer(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        errno = 0;
        char* end = nullptr;
        const long long x = std::strtoll(v.c_str(), &end, 10);
        // Canonical decimal only: CLI11's own conversion, which runs next, reads "010" as octal.
        if (v.empty() || *end != '\0' || errno == ERANGE || std::to_string(x) != (v[0] == '+' ? v.substr(1) : v))
          return "'" + v + "' is not a decimal integer";
        if (x < lo) return v + " is below the minimum " + std::to_string(lo);
        if (x > hi) return v + " is above the maximum " + std::to_string(hi);
        return "";
      },
      "");
}

uint64_t parse_byte_size(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && (std::isdigit((unsigned char)text[i]) || text[i] == '.')) i++;
  std::string unit = text.substr(i);
  for (char& ch : unit) ch = char(std::toupper((unsigned char)ch));
  static const std::map<std::string, double> units = {
      {"", 1},         {"B", 1},         {"KB", 1e3},           {"MB", 1e6},           {"GB", 1e9},
      {"TB", 1e12},    {"KIB", 1024.0},  {"MIB", 1048576.0},    {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
  const auto u = units.find(unit);
  char* end = nullptr;
  const std::string number = text.substr(0, i);
  const double x = number.empty() ? -1 : std::strtod(number.c_str(), &end);
  check(u != units.end() && end && *end == '\0' && x >= 0 && x * u->second < 1.8e19 &&
            (unit.size() > 1 || number.find('.') == std::string::npos),
        "'", text, "' is not a size (bytes, or a number with KB, MB, GB, TB, KiB, MiB, GiB or TiB)");
  return uint64_t(x * u->second);
}

CLI::Validator byte_size(uint64_t lo) {
  return CLI::Validator(
      [lo](std::string& v) -> std::string {
        try {
          if (parse_byte_size(v) < lo) return v + " is below the minimum of " + std::to_string(lo) + " bytes";
        } catch (const EngineError& e) {
          return e.what();
        }
        return "";
      },
      "");
}

CLI::Validator number(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        if (v.empty() || *end != '\0' || !std::isfinite(x)) return "'" + v + "' is not a finite number";
        if (x < lo || x > hi) {
          char buf[96];
          std::snprintf(buf, sizeof buf, " is outside [%g, %g]", lo, hi);
          return v + buf;
        }
        return "";
      },
      "");
}

CLI::Validator number() { return number(-HUGE_VAL, HUGE_VAL); }

CLI::Validator one_of(std::vector<std::string> choices) {
  return CLI::Validator(
      [choices](std::string& v) -> std::string {
        if (std::find(choices.begin(), choices.end(), v) != choices.end()) return "";
        std::string list;
        for (size_t i = 0; i < choices.size(); ++i) list += (i ? (i + 1 == choices.size() ? " or " : ", ") : "") + choices[i];
        return "expected " + list + ", got '" + v + "'";
      },
      "");
}

CLI::Validator zero_or_one() { return one_of({"0", "1"}); }

OptionMap given(const CLI::App& app) {
  OptionMap out;
  for (const CLI::Option* o : app.get_options()) {
    if (o->count() == 0 || o == app.get_help_ptr()) continue;
    std::vector<std::string>& slot = out[o->get_single_name()];
    if (o->get_expected_max() == 0) slot = {""};  // a flag
    else slot = o->results();
  }
  return out;
}

std::vector<std::string> to_args(const CLI::App& app, const OptionMap& options) {
  std::vector<std::string> args;
  for (const auto& [name, values] : options) {
    const CLI::Option* o = app.get_option_no_throw("--" + name);
    if (o == nullptr) continue;  // an option a newer version no longer has: nothing to re-apply
    if (o->get_expected_max() == 0) {
      args.push_back("--" + name);
      continue;
    }
    for (const std::string& v : values) args.push_back("--" + name + "=" + v);
  }
  return args;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    if (e > b) out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

}  // namespace cli
