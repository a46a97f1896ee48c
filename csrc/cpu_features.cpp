#include "cpu_features.h"

#include <cstdlib>

namespace jepa {

namespace {

bool detect() {
  const char* off = std::getenv("JEPA_CPU_DISABLE_AVX2");
  if (off != nullptr && off[0] != '\0' && !(off[0] == '0' && off[1] == '\0')) return false;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

}  // namespace

bool cpu_avx2_fma_f16c() {
  static const bool ok = detect();
  return ok;
}

}  // namespace jepa
