// rnncore GEMM: the kernel set of the process's instruction set (common/cpu.h).
#include "gemm/kernels.h"

namespace rnncore {
namespace gemm_detail {

namespace {

template <typename KS>
const KS* pick(const KS* avx512, const KS* avx2, const KS* generic) {
  const Isa isa = active_isa();
  if (isa == Isa::avx512 && avx512 != nullptr) return avx512;
  if (isa >= Isa::avx2 && avx2 != nullptr) return avx2;
  return generic;
}

}  // namespace

template <>
const KernelSet<float>& active_kernels<float>() {
  static const KernelSet<float>* ks = pick(avx512_kernels_f32(), avx2_kernels_f32(), generic_kernels_f32());
  return *ks;
}

template <>
const KernelSet<double>& active_kernels<double>() {
  static const KernelSet<double>* ks = pick(avx512_kernels_f64(), avx2_kernels_f64(), generic_kernels_f64());
  return *ks;
}

}  // namespace gemm_detail
}  // namespace rnncore
