// Errors: every failure on bad input throws EngineError with a message that names the file and
// the field. Binaries catch it in main(), print "error: ..." and exit 1; tests assert on the text.
#pragma once
#include <stdexcept>
#include <string>

struct EngineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Usage: check(cond, path, ": tensor '", name, "' has shape ", ...). Arguments are streamed.
#include <sstream>
template <typename... Args>
[[noreturn]] inline void fail(const Args&... args) {
  std::ostringstream s;
  (s << ... << args);
  throw EngineError(s.str());
}
template <typename... Args>
inline void check(bool ok, const Args&... args) {
  if (!ok) fail(args...);
}
