// rnncore GEMM kernels for AVX-512F (512-bit): 6x32 float and 6x16 double register tiles.
// The same microkernel source as AVX2 (microkernel_body.h) over 512-bit vector operations;
// every vector function carries target("avx512f,avx2,fma") and is only reached after the
// CPU check in kernels.cpp. Non-x86 builds get null kernel sets.
#include <utility>

#include "common/cpu.h"
#include "gemm/kernels.h"

#if RNNCORE_X86_SIMD
#include <immintrin.h>

namespace rnncore {
namespace gemm_detail {
namespace avx512 {

#define RNNCORE_KTARGET RNNCORE_TARGET_AVX512

struct OpsF {
  using T = float;
  using V = __m512;
  static constexpr int W = 16;
  static constexpr int kAcc = 8;
  static RNNCORE_KTARGET RNNCORE_INLINE V zero() { return _mm512_setzero_ps(); }
  static RNNCORE_KTARGET RNNCORE_INLINE V set1(T s) { return _mm512_set1_ps(s); }
  static RNNCORE_KTARGET RNNCORE_INLINE V load(const T* p) { return _mm512_loadu_ps(p); }
  static RNNCORE_KTARGET RNNCORE_INLINE void store(T* p, V v) { _mm512_storeu_ps(p, v); }
  static RNNCORE_KTARGET RNNCORE_INLINE V bcast(const T* p) { return _mm512_set1_ps(*p); }
  static RNNCORE_KTARGET RNNCORE_INLINE V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static RNNCORE_KTARGET RNNCORE_INLINE V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static RNNCORE_KTARGET RNNCORE_INLINE V add(V a, V b) { return _mm512_add_ps(a, b); }
  static RNNCORE_KTARGET RNNCORE_INLINE T hsum(V v) {  // not hot: once per GEMV row
    alignas(64) T t[W];
    _mm512_store_ps(t, v);
    T s = T(0);
    for (int i = 0; i < W; ++i) s += t[i];
    return s;
  }
  static RNNCORE_KTARGET RNNCORE_INLINE T fma1(T a, T b, T c) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
  }
};

struct OpsD {
  using T = double;
  using V = __m512d;
  static constexpr int W = 8;
  static constexpr int kAcc = 8;
  static RNNCORE_KTARGET RNNCORE_INLINE V zero() { return _mm512_setzero_pd(); }
  static RNNCORE_KTARGET RNNCORE_INLINE V set1(T s) { return _mm512_set1_pd(s); }
  static RNNCORE_KTARGET RNNCORE_INLINE V load(const T* p) { return _mm512_loadu_pd(p); }
  static RNNCORE_KTARGET RNNCORE_INLINE void store(T* p, V v) { _mm512_storeu_pd(p, v); }
  static RNNCORE_KTARGET RNNCORE_INLINE V bcast(const T* p) { return _mm512_set1_pd(*p); }
  static RNNCORE_KTARGET RNNCORE_INLINE V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static RNNCORE_KTARGET RNNCORE_INLINE V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static RNNCORE_KTARGET RNNCORE_INLINE V add(V a, V b) { return _mm512_add_pd(a, b); }
  static RNNCORE_KTARGET RNNCORE_INLINE T hsum(V v) {  // not hot: once per GEMV row
    alignas(64) T t[W];
    _mm512_store_pd(t, v);
    T s = T(0);
    for (int i = 0; i < W; ++i) s += t[i];
    return s;
  }
  static RNNCORE_KTARGET RNNCORE_INLINE T fma1(T a, T b, T c) {
    return _mm_cvtsd_f64(_mm_fmadd_sd(_mm_set_sd(a), _mm_set_sd(b), _mm_set_sd(c)));
  }
};

#include "gemm/microkernel_body.h"

#undef RNNCORE_KTARGET

}  // namespace avx512

// Cache blocks from the host's caches (kernels.h: blocks_for_caches), read once at first use.
const KernelSet<float>* avx512_kernels_f32() {
  static const KernelSet<float> ks = [] {
    const Blocks b = blocks_for_caches(cache_sizes(), 6, 2 * avx512::OpsF::W, sizeof(float));
    return avx512::make_kernel_set<avx512::OpsF, 6, 2>(Isa::avx512, "avx512", b.mc, b.kc, b.nc);
  }();
  return &ks;
}
const KernelSet<double>* avx512_kernels_f64() {
  static const KernelSet<double> ks = [] {
    const Blocks b = blocks_for_caches(cache_sizes(), 6, 2 * avx512::OpsD::W, sizeof(double));
    return avx512::make_kernel_set<avx512::OpsD, 6, 2>(Isa::avx512, "avx512", b.mc, b.kc, b.nc);
  }();
  return &ks;
}

}  // namespace gemm_detail
}  // namespace rnncore

#else  // not x86-64

namespace rnncore {
namespace gemm_detail {
const KernelSet<float>* avx512_kernels_f32() { return nullptr; }
const KernelSet<double>* avx512_kernels_f64() { return nullptr; }
}  // namespace gemm_detail
}  // namespace rnncore

#endif
