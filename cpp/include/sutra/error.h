// Error model of the core: std::invalid_argument for bad arguments (Python ValueError),
// sutra::Error for everything else that fails at run time (Python sutra._core.SutraError).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace sutra {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {

template <typename T>
std::string to_text(const T& value) {
  std::ostringstream text;
  text << value;
  return text.str();
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
#define SUTRA_CHECK(condition, argument, expected, actual)                                   \
  do {                                                                                       \
    if (!(condition)) {                                                                      \
      ::sutra::detail::throw_invalid_argument((argument), (expected),                        \
                                              ::sutra::detail::to_text(actual));             \
    }                                                                                        \
  } while (0)
