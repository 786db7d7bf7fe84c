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

index_t round_clamp(double v, index_t multiple, index_t lo, index_t hi) {
  const double capped = v < static_cast<double>(hi) ? v : static_cast<double>(hi);
  index_t r = static_cast<index_t>(capped) / multiple * multiple;
  if (r < lo) r = lo;
  if (r > hi) r = hi / multiple * multiple;
  return r;
}

}  // namespace

Blocks blocks_for_caches(const CacheSizes& caches, int mr, int nr, int elem) {
  Blocks b{};
  b.kc = round_clamp(0.5 * static_cast<double>(caches.l1d) / (static_cast<double>(nr) * elem), 16, 64, 512);
  const double k_bytes = static_cast<double>(b.kc) * elem;
  b.mc = round_clamp(kL2Share * static_cast<double>(caches.l2) / k_bytes, mr, mr, 1024 / mr * mr);
  b.nc = round_clamp(0.5 * static_cast<double>(caches.l3) / k_bytes, nr, 16 * static_cast<index_t>(nr), 4096);
  return b;
}

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
