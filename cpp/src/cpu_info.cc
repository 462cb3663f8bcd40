#include "sutra/cpu_info.h"

#include <thread>

namespace sutra {

CpuInfo cpu_info() {
  CpuInfo info;
  info.logical_cores = static_cast<int>(std::thread::hardware_concurrency());
#if defined(__x86_64__) || defined(__i386__)
  info.arch = sizeof(void*) == 8 ? "x86_64" : "x86";
  __builtin_cpu_init();
  // __builtin_cpu_supports needs string literals, hence the macro.
#define SUTRA_CPU_FEATURE(name, gcc_name) \
  info.features.emplace_back(name, __builtin_cpu_supports(gcc_name) != 0)
  SUTRA_CPU_FEATURE("sse4_2", "sse4.2");
  SUTRA_CPU_FEATURE("avx", "avx");
  SUTRA_CPU_FEATURE("avx2", "avx2");
  SUTRA_CPU_FEATURE("fma", "fma");
  SUTRA_CPU_FEATURE("f16c", "f16c");
  SUTRA_CPU_FEATURE("avx512f", "avx512f");
  SUTRA_CPU_FEATURE("avx512bw", "avx512bw");
  SUTRA_CPU_FEATURE("avx512_vnni", "avx512vnni");
  SUTRA_CPU_FEATURE("avx512_bf16", "avx512bf16");
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
  // CPU support only: the kernel must also grant AMX state (arch_prctl) before use.
  SUTRA_CPU_FEATURE("amx_tile", "amx-tile");
  SUTRA_CPU_FEATURE("amx_int8", "amx-int8");
  SUTRA_CPU_FEATURE("amx_bf16", "amx-bf16");
#endif
#undef SUTRA_CPU_FEATURE
#elif defined(__aarch64__)
  info.arch = "aarch64";
#else
  info.arch = "unknown";
#endif
  return info;
}

}  // namespace sutra
