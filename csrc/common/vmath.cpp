// Vectorised float32 activations (see vmath.h for the method and the error bounds).
// GCC 12 warns -Wmaybe-uninitialized inside its own AVX-512 intrinsics (_mm512_min_ps and
// others pass _mm512_undefined_ps() as the unused merge source; GCC bug 105593, fixed in 13).
// The pragma must precede the first include of <immintrin.h> to cover the header's lines.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "common/vmath.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/cpu.h"
#include "common/vmath_avx2.h"
#include "common/vmath_avx512.h"

namespace rnncore {

namespace {

using namespace vmath_detail;

inline float exp_scalar(float x) {
  if (x != x) return x;
  x = x > kExpHi ? kExpHi : (x < kExpLo ? kExpLo : x);
  const float n = std::nearbyint(x * kLog2e);
  const float r = (x - n * kLn2Hi) - n * kLn2Lo;
  float p = kE7;
  p = p * r + kE6;
  p = p * r + kE5;
  p = p * r + kE4;
  p = p * r + kE3;
  p = p * r + kE2;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  std::int32_t bits = (static_cast<std::int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid_scalar(float x) { return 1.0f / (1.0f + exp_scalar(-x)); }

inline float tanh_scalar(float x) {
  const float a = x < 0 ? -x : x;
  if (a < 0.5f) {
    const float t = x * x;
    float p = kT5;
    p = p * t + kT4;
    p = p * t + kT3;
    p = p * t + kT2;
    p = p * t + kT1;
    p = p * t + kT0;
    return x * p;
  }
  if (x != x) return x;
  const float r = 1.0f - 2.0f / (exp_scalar(2.0f * a) + 1.0f);
  return x < 0 ? -r : r;
}

void vexp_generic(float* y, const float* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = exp_scalar(x[i]);
}
void vsigmoid_generic(float* y, const float* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = sigmoid_scalar(x[i]);
}
void vtanh_generic(float* y, const float* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = tanh_scalar(x[i]);
}

#if RNNCORE_X86_SIMD
template <__m256 (*F)(__m256)>
RNNCORE_TARGET_AVX2 void apply8(float* y, const float* x, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, F(_mm256_loadu_ps(x + i)));
  if (i < n) {
    // The tail through the same vector code (masked), so a value's result never depends on
    // where it falls in the array.
    const __m256i mask = tail_mask8(n - i);
    _mm256_maskstore_ps(y + i, mask, F(_mm256_maskload_ps(x + i, mask)));
  }
}

RNNCORE_TARGET_AVX2 void vexp_avx2(float* y, const float* x, index_t n) { apply8<exp8>(y, x, n); }
RNNCORE_TARGET_AVX2 void vsigmoid_avx2(float* y, const float* x, index_t n) { apply8<sigmoid8>(y, x, n); }
RNNCORE_TARGET_AVX2 void vtanh_avx2(float* y, const float* x, index_t n) { apply8<tanh8>(y, x, n); }

template <__m512 (*F)(__m512)>
RNNCORE_TARGET_AVX512 void apply16(float* y, const float* x, index_t n) {
  index_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, F(_mm512_loadu_ps(x + i)));
  if (i < n) {  // the tail through the same vector code, as apply8
    const __mmask16 mask = tail_mask16(n - i);
    _mm512_mask_storeu_ps(y + i, mask, F(_mm512_maskz_loadu_ps(mask, x + i)));
  }
}

RNNCORE_TARGET_AVX512 void vexp_avx512(float* y, const float* x, index_t n) { apply16<exp16>(y, x, n); }
RNNCORE_TARGET_AVX512 void vsigmoid_avx512(float* y, const float* x, index_t n) { apply16<sigmoid16>(y, x, n); }
RNNCORE_TARGET_AVX512 void vtanh_avx512(float* y, const float* x, index_t n) { apply16<tanh16>(y, x, n); }

constexpr VmathKernels kAvx512 = {vexp_avx512, vsigmoid_avx512, vtanh_avx512, "avx512"};
constexpr VmathKernels kAvx2 = {vexp_avx2, vsigmoid_avx2, vtanh_avx2, "avx2"};
#endif
constexpr VmathKernels kGeneric = {vexp_generic, vsigmoid_generic, vtanh_generic, "generic"};

// Chosen once, from the process's ISA (common/cpu.h); never changed afterwards.
const VmathKernels& kernels() {
  static const VmathKernels& k = *vmath_kernels(active_isa());
  return k;
}

}  // namespace

void vsigmoid(float* y, const float* x, index_t n) { kernels().sigmoid(y, x, n); }
void vtanh(float* y, const float* x, index_t n) { kernels().tanh(y, x, n); }
void vexp(float* y, const float* x, index_t n) { kernels().exp(y, x, n); }
const char* vmath_kernel() { return kernels().name; }

const VmathKernels* vmath_kernels(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_supported_isa())) return nullptr;
#if RNNCORE_X86_SIMD
  if (isa == Isa::avx512) return &kAvx512;
  if (isa == Isa::avx2) return &kAvx2;
#endif
  return isa == Isa::generic ? &kGeneric : nullptr;
}

}  // namespace rnncore
