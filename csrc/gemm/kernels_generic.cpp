// rnncore GEMM kernels in portable scalar C++ (any CPU): 4x4 register tiles.
// "Vectors" are single elements (W = 1); the compiler may still vectorise what it can for
// the baseline ISA. Also the reference for the vector-ops contract of microkernel_body.h.
#include <utility>

#include "gemm/kernels.h"

namespace rnncore {
namespace gemm_detail {
namespace generic {

#define RNNCORE_KTARGET

template <typename TT>
struct ScalarOps {
  using T = TT;
  using V = TT;
  static constexpr int W = 1;
  static constexpr int kAcc = 1;
  static RNNCORE_INLINE V zero() { return T(0); }
  static RNNCORE_INLINE V set1(T s) { return s; }
  static RNNCORE_INLINE V load(const T* p) { return *p; }
  static RNNCORE_INLINE void store(T* p, V v) { *p = v; }
  static RNNCORE_INLINE V bcast(const T* p) { return *p; }
  static RNNCORE_INLINE V fma(V a, V b, V c) { return a * b + c; }
  static RNNCORE_INLINE V mul(V a, V b) { return a * b; }
  static RNNCORE_INLINE V add(V a, V b) { return a + b; }
  static RNNCORE_INLINE T hsum(V v) { return v; }
  static RNNCORE_INLINE T fma1(T a, T b, T c) { return a * b + c; }  // same as fma: one lane
};
using OpsF = ScalarOps<float>;
using OpsD = ScalarOps<double>;

#include "gemm/microkernel_body.h"

#undef RNNCORE_KTARGET

}  // namespace generic

const KernelSet<float>* generic_kernels_f32() {
  static const KernelSet<float> ks =
      generic::make_kernel_set<generic::OpsF, 4, 4>(Isa::generic, "generic", 128, 256, 4096);
  return &ks;
}
const KernelSet<double>* generic_kernels_f64() {
  static const KernelSet<double> ks =
      generic::make_kernel_set<generic::OpsD, 4, 4>(Isa::generic, "generic", 64, 256, 4096);
  return &ks;
}

}  // namespace gemm_detail
}  // namespace rnncore
