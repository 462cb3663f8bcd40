// Error model of the core: std::invalid_argument for bad arguments (Python ValueError),
// sutra::Error for everything else that fails at run time (Python sutra._core.SutraError).
#pragma once

#include <stdexcept>
#include <string>

namespace sutra {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace sutra
