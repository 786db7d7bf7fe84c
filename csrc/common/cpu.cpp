// rnncore: CPU feature detection (CPUID + XGETBV) and the process's ISA (see cpu.h).
#include "common/cpu.h"

#include <cstdlib>
#include <cstring>

#include <unistd.h>

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

namespace {

// One size with an optional K/M/G suffix; the parsed end is returned through *end.
bool parse_size(const char* p, const char** end, long* out) {
  char* stop = nullptr;
  const long long v = std::strtoll(p, &stop, 10);
  if (stop == p || v <= 0) return false;
  long long scale = 1;
  if (*stop == 'K' || *stop == 'k') scale = 1LL << 10, ++stop;
  else if (*stop == 'M' || *stop == 'm') scale = 1LL << 20, ++stop;
  else if (*stop == 'G' || *stop == 'g') scale = 1LL << 30, ++stop;
  if (v > (1LL << 40) / scale) return false;
  *out = static_cast<long>(v * scale);
  *end = stop;
  return true;
}

#if RNNCORE_X86_SIMD
// CPUID's deterministic cache parameters (leaf 4 on Intel, 0x8000001D on AMD): per-instance sizes.
bool cpuid_caches(CacheSizes* out) {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __cpuid(0, eax, ebx, ecx, edx);
  const bool amd = ebx == 0x68747541u;  // "Auth"enticAMD
  unsigned leaf = 4;
  if (amd) {
    __cpuid(0x80000000u, eax, ebx, ecx, edx);
    if (eax < 0x8000001Du) return false;
    leaf = 0x8000001Du;
  } else if (__get_cpuid_max(0, nullptr) < 4) {
    return false;
  }
  CacheSizes c;
  for (unsigned sub = 0; sub < 16; ++sub) {
    __cpuid_count(leaf, sub, eax, ebx, ecx, edx);
    const unsigned type = eax & 0x1Fu;  // 0 none, 1 data, 2 instruction, 3 unified
    if (type == 0) break;
    if (type == 2) continue;
    const unsigned level = (eax >> 5) & 0x7u;
    const long ways = ((ebx >> 22) & 0x3FFu) + 1, parts = ((ebx >> 12) & 0x3FFu) + 1;
    const long line = (ebx & 0xFFFu) + 1, sets = static_cast<long>(ecx) + 1;
    const long size = ways * parts * line * sets;
    if (level == 1) c.l1d = size;
    else if (level == 2) c.l2 = size;
    else if (level == 3) c.l3 = size;
  }
  if (c.l1d <= 0 || c.l2 <= 0) return false;
  if (c.l3 <= 0) c.l3 = c.l2;
  c.source = "cpuid";
  *out = c;
  return true;
}
#endif

CacheSizes detect_cache_sizes() {
  CacheSizes c;
  const char* env = std::getenv("RNNCORE_CACHE_SIZES");
  if (env != nullptr && *env != '\0' && parse_cache_sizes(env, &c)) {
    c.source = "env";
    return c;
  }
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l1 > 0 && l2 > 0) {
    c.l1d = l1;
    c.l2 = l2;
    c.l3 = l3 > 0 ? l3 : l2;
    c.source = "sysconf";
    return c;
  }
#endif
#if RNNCORE_X86_SIMD
  if (cpuid_caches(&c)) return c;
#endif
  c = CacheSizes{};
  c.l1d = 32L << 10;
  c.l2 = 512L << 10;
  c.l3 = 8L << 20;
  c.source = "default";
  return c;
}

}  // namespace

bool parse_cache_sizes(const char* text, CacheSizes* out) {
  long v[3] = {0, 0, 0};
  const char* p = text;
  for (int i = 0; i < 3; ++i) {
    const char* end = nullptr;
    if (!parse_size(p, &end, &v[i])) return false;
    p = end;
    if (i < 2) {
      if (*p != ',') return false;
      ++p;
    }
  }
  if (*p != '\0') return false;
  out->l1d = v[0];
  out->l2 = v[1];
  out->l3 = v[2];
  return true;
}

const CacheSizes& cache_sizes() {
  static const CacheSizes c = detect_cache_sizes();  // thread-safe one-time initialisation
  return c;
}

}  // namespace rnncore
