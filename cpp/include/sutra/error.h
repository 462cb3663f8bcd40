// Error model of the core: std::invalid_argument for bad arguments (Python ValueError),
// sutra::Error for everything else that fails at run time (Python sutra._core.SutraError).
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace sutra {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A long call stopped early because its caller asked it to (Ctrl-C between passes).
class Interrupted : public Error {
 public:
  using Error::Error;
};

namespace detail {

// Values in messages, formatted without iostreams: an ostream insertion in an error path
// crashed a GCC 13 -O3 build of the extension on one machine (bench/results/gpu_tests_h200.md).
inline std::string to_text(const std::string& value) { return value; }
inline std::string to_text(const char* value) { return value; }
template <typename T>
std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, std::string> to_text(T value) {
  return std::to_string(value);
}
inline std::string to_text(bool value) { return value ? "true" : "false"; }
inline std::string to_text(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

[[noreturn]] inline void throw_invalid_argument(const char* argument, const std::string& expected,
                                                const std::string& actual) {
  throw std::invalid_argument(std::string(argument) + " must be " + expected + ", got " + actual);
}

}  // namespace detail
}  // namespace sutra

/// Argument check at an API boundary: throws std::invalid_argument (Python ValueError) reading
/// "<argument> must be <expected>, got <actual>", e.g.
///   SUTRA_CHECK(head_dim == 64 || head_dim == 128, "head_dim", "64 or 128", head_dim);
/// `expected` is a string; `actual` anything with operator<<. Evaluated only on failure.
#define SUTRA_CHECK(condition, argument, expected, actual)                       \
  do {                                                                           \
    if (!(condition)) {                                                          \
      ::sutra::detail::throw_invalid_argument((argument), (expected),            \
                                              ::sutra::detail::to_text(actual)); \
    }                                                                            \
  } while (0)
