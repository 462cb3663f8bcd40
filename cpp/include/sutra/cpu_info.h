// What the host CPU offers, for choosing kernels and for build/bug reports.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace sutra {

struct CpuInfo {
  std::string arch;                                   // "x86_64", "aarch64", ...
  int logical_cores = 0;                              // std::thread::hardware_concurrency()
  std::vector<std::pair<std::string, bool>> features; // in a stable order
};

CpuInfo cpu_info();

}  // namespace sutra
