// rnncore: 16-lane float32 exp / sigmoid / tanh for AVX-512F, and masked loads and stores,
// shared by the array activations (common/vmath.cpp) and the fused cells (cells/). The same
// constants and the same sequence of operations as the 8-lane versions of common/vmath_avx2.h
// (min/max with x second so NaN survives, round-to-nearest, the Cody-Waite split, the Horner
// chains as fused multiply-adds, an exact division, the small/large blend of tanh), so each
// lane's result equals AVX2's bit for bit (tests/test_cells_isa.py checks it). A tail is a
// __mmask16 of its first lanes: masked-off lanes are neither read nor written. Uses AVX-512F
// only (what active_isa() == avx512 promises); include only from .cpp files whose callers
// check active_isa() (common/cpu.h) first.
#pragma once

#include "common/cpu.h"
#include "common/defs.h"
#include "common/vmath_avx2.h"  // the constants (vmath_detail::kExpHi ...)

#if RNNCORE_X86_SIMD
#include <immintrin.h>

namespace rnncore {
namespace vmath_detail {

RNNCORE_TARGET_AVX512 inline __m512 exp16(__m512 x) {
  // min/max return their second operand when either is NaN: keep x second so NaN survives.
  x = _mm512_min_ps(_mm512_set1_ps(kExpHi), x);
  x = _mm512_max_ps(_mm512_set1_ps(kExpLo), x);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_set1_ps(kE7);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kE6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kE5));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kE4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kE3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kE2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

RNNCORE_TARGET_AVX512 inline __m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
  return _mm512_div_ps(one, _mm512_add_ps(one, e));
}

// Sign-bit logic on float vectors through the integer view (AVX-512F has no and_ps/or_ps;
// those are AVX-512DQ).
RNNCORE_TARGET_AVX512 inline __m512 abs16(__m512 x) {
  return _mm512_castsi512_ps(_mm512_and_epi32(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}
RNNCORE_TARGET_AVX512 inline __m512 copysign16(__m512 magnitude, __m512 x) {  // magnitude >= 0
  const __m512i sign = _mm512_and_epi32(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm512_castsi512_ps(_mm512_or_epi32(_mm512_castps_si512(magnitude), sign));
}

RNNCORE_TARGET_AVX512 inline __m512 tanh16(__m512 x) {
  const __m512 a = abs16(x);
  // Small |x|: odd polynomial.
  const __m512 t = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(kT5);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kT4));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kT3));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kT2));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kT1));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(kT0));
  const __m512 small = _mm512_mul_ps(x, p);
  // Large |x|: 1 - 2 / (exp(2|x|) + 1), with the sign of x.
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp16(_mm512_add_ps(a, a));
  const __m512 big = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
  const __mmask16 use_small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.5f), _CMP_LT_OQ);
  // NaN compares false -> big branch, whose exp16 carried the NaN through.
  return _mm512_mask_blend_ps(use_small, copysign16(big, x), small);
}

// Whole vectors, or the lanes of `mask` (a tail: masked-off lanes read as 0, are not written).
template <bool kMasked>
RNNCORE_TARGET_AVX512 inline __m512 load16(const float* p, __mmask16 mask) {
  return kMasked ? _mm512_maskz_loadu_ps(mask, p) : _mm512_loadu_ps(p);
}
template <bool kMasked>
RNNCORE_TARGET_AVX512 inline void store16(float* p, __mmask16 mask, __m512 v) {
  if (kMasked) _mm512_mask_storeu_ps(p, mask, v);
  else _mm512_storeu_ps(p, v);
}

// The first `left` (< 16) lanes.
inline __mmask16 tail_mask16(index_t left) {
  return static_cast<__mmask16>((1u << static_cast<unsigned>(left)) - 1u);
}

}  // namespace vmath_detail
}  // namespace rnncore
#endif
