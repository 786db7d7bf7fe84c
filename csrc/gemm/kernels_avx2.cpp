// rnncore GEMM kernels for AVX2 + FMA (256-bit): 6x16 float and 6x8 double register tiles.
// Compiled without -march: every vector function carries target("avx2,fma") and is only
// reached after the CPU check in kernels.cpp. Non-x86 builds get null kernel sets.
#include <utility>

#include "common/cpu.h"
#include "gemm/kernels.h"

#if RNNCORE_X86_SIMD
#include <immintrin.h>

namespace rnncore {
namespace gemm_detail {
namespace avx2 {

#define RNNCORE_KTARGET RNNCORE_TARGET_AVX2

struct OpsF {
  using T = float;
  using V = __m256;
  static constexpr int W = 8;
  static constexpr int kAcc = 8;  // 2 FMA pipes x 4 cycles latency
  static RNNCORE_KTARGET RNNCORE_INLINE V zero() { return _mm256_setzero_ps(); }
  static RNNCORE_KTARGET RNNCORE_INLINE V set1(T s) { return _mm256_set1_ps(s); }
  static RNNCORE_KTARGET RNNCORE_INLINE V load(const T* p) { return _mm256_loadu_ps(p); }
  static RNNCORE_KTARGET RNNCORE_INLINE void store(T* p, V v) { _mm256_storeu_ps(p, v); }
  static RNNCORE_KTARGET RNNCORE_INLINE V bcast(const T* p) { return _mm256_broadcast_ss(p); }
  static RNNCORE_KTARGET RNNCORE_INLINE V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static RNNCORE_KTARGET RNNCORE_INLINE V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static RNNCORE_KTARGET RNNCORE_INLINE V add(V a, V b) { return _mm256_add_ps(a, b); }
  static RNNCORE_KTARGET RNNCORE_INLINE T hsum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static RNNCORE_KTARGET RNNCORE_INLINE T fma1(T a, T b, T c) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
  }
};

struct OpsD {
  using T = double;
  using V = __m256d;
  static constexpr int W = 4;
  static constexpr int kAcc = 8;
  static RNNCORE_KTARGET RNNCORE_INLINE V zero() { return _mm256_setzero_pd(); }
  static RNNCORE_KTARGET RNNCORE_INLINE V set1(T s) { return _mm256_set1_pd(s); }
  static RNNCORE_KTARGET RNNCORE_INLINE V load(const T* p) { return _mm256_loadu_pd(p); }
  static RNNCORE_KTARGET RNNCORE_INLINE void store(T* p, V v) { _mm256_storeu_pd(p, v); }
  static RNNCORE_KTARGET RNNCORE_INLINE V bcast(const T* p) { return _mm256_broadcast_sd(p); }
  static RNNCORE_KTARGET RNNCORE_INLINE V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static RNNCORE_KTARGET RNNCORE_INLINE V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static RNNCORE_KTARGET RNNCORE_INLINE V add(V a, V b) { return _mm256_add_pd(a, b); }
  static RNNCORE_KTARGET RNNCORE_INLINE T hsum(V v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
  }
  static RNNCORE_KTARGET RNNCORE_INLINE T fma1(T a, T b, T c) {
    return _mm_cvtsd_f64(_mm_fmadd_sd(_mm_set_sd(a), _mm_set_sd(b), _mm_set_sd(c)));
  }
};

#include "gemm/microkernel_body.h"

#undef RNNCORE_KTARGET

}  // namespace avx2

// Cache blocks from the host's caches (kernels.h: blocks_for_caches), read once at first use.
const KernelSet<float>* avx2_kernels_f32() {
  static const KernelSet<float> ks = [] {
    const Blocks b = blocks_for_caches(cache_sizes(), 6, 2 * avx2::OpsF::W, sizeof(float));
    return avx2::make_kernel_set<avx2::OpsF, 6, 2>(Isa::avx2, "avx2", b.mc, b.kc, b.nc);
  }();
  return &ks;
}
const KernelSet<double>* avx2_kernels_f64() {
  static const KernelSet<double> ks = [] {
    const Blocks b = blocks_for_caches(cache_sizes(), 6, 2 * avx2::OpsD::W, sizeof(double));
    return avx2::make_kernel_set<avx2::OpsD, 6, 2>(Isa::avx2, "avx2", b.mc, b.kc, b.nc);
  }();
  return &ks;
}

}  // namespace gemm_detail
}  // namespace rnncore

#else  // not x86-64

namespace rnncore {
namespace gemm_detail {
const KernelSet<float>* avx2_kernels_f32() { return nullptr; }
const KernelSet<double>* avx2_kernels_f64() { return nullptr; }
}  // namespace gemm_detail
}  // namespace rnncore

#endif
