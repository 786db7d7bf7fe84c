// rnncore: CPU feature detection (CPUID + XGETBV) and the process's ISA (see cpu.h).
#include "common/cpu.h"

#include <cstdlib>
#include <cstring>

#if RNNCORE_X86_SIMD
#include <cpuid.h>
#endif

namespace rnncore {

CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if RNNCORE_X86_SIMD
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool fma = (ecx >> 12) & 1u, osxsave = (ecx >> 27) & 1u, avx = (ecx >> 28) & 1u;
  if (!osxsave || !avx) return f;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool ymm_state = (xcr0_lo & 0x6u) == 0x6u;    // SSE | AVX (YMM upper halves)
  const bool zmm_state = (xcr0_lo & 0xE6u) == 0xE6u;  // + opmask | ZMM_Hi256 | Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool avx2 = (ebx >> 5) & 1u, avx512f = (ebx >> 16) & 1u;
  f.avx2_fma = ymm_state && avx2 && fma;
  f.avx512f = f.avx2_fma && zmm_state && avx512f;
#endif
  return f;
}

Isa best_supported_isa() {
  const CpuFeatures cpu = detect_cpu_features();
  if (cpu.avx512f) return Isa::avx512;
  if (cpu.avx2_fma) return Isa::avx2;
  return Isa::generic;
}

namespace {

Isa resolve_isa() {
  const Isa best = best_supported_isa();
  const char* want = std::getenv("RNNCORE_ISA");
  if (want == nullptr || *want == '\0') return best;
  Isa requested = best;  // an unknown name keeps the automatic choice
  if (std::strcmp(want, "generic") == 0) requested = Isa::generic;
  else if (std::strcmp(want, "avx2") == 0) requested = Isa::avx2;
  else if (std::strcmp(want, "avx512") == 0) requested = Isa::avx512;
  return static_cast<int>(requested) < static_cast<int>(best) ? requested : best;
}

}  // namespace

Isa active_isa() {
  static const Isa isa = resolve_isa();  // thread-safe one-time initialisation
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace rnncore
