// rnncore: 8-lane float32 exp / sigmoid / tanh for AVX2+FMA, and masked loads and stores,
// shared by the array activations (common/vmath.cpp) and the fused cells (cells/). Same
// method and error bounds as vmath.h states; the scalar fallback in vmath.cpp uses the same
// constants, so every path computes the same function. Include only from .cpp files whose
// callers check active_isa() (common/cpu.h) first.
#pragma once

#include <cstdint>

#include "common/cpu.h"
#include "common/defs.h"

namespace rnncore {
namespace vmath_detail {

// exp(x) = 2^n * e^r, n = round(x / ln 2), r = x - n ln 2 split in two parts (Cody-Waite).
constexpr float kExpHi = 88.0f, kExpLo = -87.3365447504f;  // 2^n stays a normal float
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kE2 = 1.0f / 2, kE3 = 1.0f / 6, kE4 = 1.0f / 24, kE5 = 1.0f / 120, kE6 = 1.0f / 720,
                kE7 = 1.0f / 5040;
// tanh(x) / x on |x| < 0.5 as a polynomial in x^2.
constexpr float kT0 = 9.999999997e-01f, kT1 = -3.333332402e-01f, kT2 = 1.333289712e-01f, kT3 = -5.389287656e-02f,
                kT4 = 2.127224263e-02f, kT5 = -6.609499387e-03f;

}  // namespace vmath_detail
}  // namespace rnncore

#if RNNCORE_X86_SIMD
#include <immintrin.h>

namespace rnncore {
namespace vmath_detail {

RNNCORE_TARGET_AVX2 inline __m256 exp8(__m256 x) {
  // min/max return their second operand when either is NaN: keep x second so NaN survives.
  x = _mm256_min_ps(_mm256_set1_ps(kExpHi), x);
  x = _mm256_max_ps(_mm256_set1_ps(kExpLo), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(kE7);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kE6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kE5));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kE4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kE3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kE2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
}

RNNCORE_TARGET_AVX2 inline __m256 sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(one, _mm256_add_ps(one, e));
}

RNNCORE_TARGET_AVX2 inline __m256 tanh8(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 a = _mm256_andnot_ps(sign, x);
  // Small |x|: odd polynomial.
  const __m256 t = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(kT5);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kT4));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kT3));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kT2));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kT1));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(kT0));
  const __m256 small = _mm256_mul_ps(x, p);
  // Large |x|: 1 - 2 / (exp(2|x|) + 1), with the sign of x.
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = exp8(_mm256_add_ps(a, a));
  const __m256 big = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
  const __m256 signed_big = _mm256_or_ps(big, _mm256_and_ps(sign, x));
  const __m256 use_small = _mm256_cmp_ps(a, _mm256_set1_ps(0.5f), _CMP_LT_OQ);
  // NaN compares false -> big branch, whose exp8 carried the NaN through.
  return _mm256_blendv_ps(signed_big, small, use_small);
}

// Whole vectors, or the first lanes of `mask` (a tail).
template <bool kMasked>
RNNCORE_TARGET_AVX2 inline __m256 load8(const float* p, __m256i mask) {
  return kMasked ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
}
template <bool kMasked>
RNNCORE_TARGET_AVX2 inline void store8(float* p, __m256i mask, __m256 v) {
  if (kMasked) _mm256_maskstore_ps(p, mask, v);
  else _mm256_storeu_ps(p, v);
}

// The first `left` (< 8) lanes.
RNNCORE_TARGET_AVX2 inline __m256i tail_mask8(index_t left) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace vmath_detail
}  // namespace rnncore
#endif
