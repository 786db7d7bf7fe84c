// rnncore GEMM: the once-per-process choice of kernel set (CPUID, RNNCORE_GEMM_KERNEL).
#include "gemm/kernels.h"

#include <cstdlib>
#include <cstring>

#include "common/cpu.h"

namespace rnncore {
namespace gemm_detail {

namespace {

Isa resolve_isa() {
  const CpuFeatures cpu = detect_cpu_features();
  Isa best = Isa::generic;
  if (cpu.avx2_fma && avx2_kernels_f32() != nullptr) best = Isa::avx2;
  if (cpu.avx512f && avx512_kernels_f32() != nullptr) best = Isa::avx512;
  const char* want = std::getenv("RNNCORE_GEMM_KERNEL");
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

template <>
const KernelSet<float>& active_kernels<float>() {
  static const KernelSet<float>* ks = active_isa() == Isa::avx512 ? avx512_kernels_f32()
                                      : active_isa() == Isa::avx2 ? avx2_kernels_f32()
                                                                  : generic_kernels_f32();
  return *ks;
}

template <>
const KernelSet<double>& active_kernels<double>() {
  static const KernelSet<double>* ks = active_isa() == Isa::avx512 ? avx512_kernels_f64()
                                       : active_isa() == Isa::avx2 ? avx2_kernels_f64()
                                                                   : generic_kernels_f64();
  return *ks;
}

}  // namespace gemm_detail
}  // namespace rnncore
