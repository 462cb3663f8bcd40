// How this copy of the core was built.
#pragma once

#include <string>

namespace sutra {

struct BuildInfo {
  std::string version;             // the package version from pyproject.toml
  std::string compiler;            // "GNU 12.2.0" or "GNU 12.2.0; NVIDIA 13.0.88"
  std::string cuda_architectures;  // CMake syntax, empty in a CPU-only build
};

BuildInfo build_info();

}  // namespace sutra
