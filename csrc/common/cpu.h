// rnncore: run-time CPU feature detection (CPUID + XGETBV), for choosing SIMD kernels.
//
// The build uses no -march flag, so the compiler may only assume x86-64 (SSE2) everywhere;
// code that uses AVX2/FMA or AVX-512 is compiled with function-level target attributes and
// is only called when these checks pass. A feature counts as present when both the CPU
// reports it (CPUID) and the operating system saves the matching register state (XCR0),
// so a hypervisor that hides AVX-512 state is respected.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

namespace rnncore {

struct CpuFeatures {
  bool avx2_fma = false;  // AVX2 and FMA3, with YMM state enabled by the OS
  bool avx512f = false;   // AVX-512 Foundation, with opmask/ZMM state enabled by the OS
};

inline CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool fma = (ecx >> 12) & 1u, osxsave = (ecx >> 27) & 1u, avx = (ecx >> 28) & 1u;
  if (!osxsave || !avx) return f;
  unsigned xcr0_lo = 0, xcr0_hi = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  const bool ymm_state = (xcr0_lo & 0x6u) == 0x6u;     // SSE | AVX (YMM upper halves)
  const bool zmm_state = (xcr0_lo & 0xE6u) == 0xE6u;   // + opmask | ZMM_Hi256 | Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool avx2 = (ebx >> 5) & 1u, avx512f = (ebx >> 16) & 1u;
  f.avx2_fma = ymm_state && avx2 && fma;
  f.avx512f = f.avx2_fma && zmm_state && avx512f;
#endif
  return f;
}

}  // namespace rnncore
