// The fused float32 cell steps for AVX-512F (see cells/fused.h): every gate of sixteen units
// in registers, the last partial vector under a __mmask16. The same products in the same order
// as the AVX2 kernels (cells/fused_avx2.cpp) and the portable loops of cells/lstm.h, gru.h and
// rnn.h; every function carries target("avx512f,avx2,fma") and is only reached when the CPU
// has AVX-512F (fused_cell_kernels in cells/fused.cpp checks it).
// GCC 12 warns -Wmaybe-uninitialized inside its own AVX-512 intrinsics (_mm512_min_ps and
// others pass _mm512_undefined_ps() as the unused merge source; GCC bug 105593, fixed in 13).
// The pragma must precede the first include of <immintrin.h> to cover the header's lines.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "cells/fused.h"

#include "common/cpu.h"
#include "common/vmath_avx512.h"

namespace rnncore {

#if RNNCORE_X86_SIMD
namespace {

using namespace vmath_detail;

// Sixteen LSTM units (see cells/lstm.h): pre = x + (W_hh h + b); i, f, o = sigmoid, g = tanh;
// c = f * c_prev + i * g; h = o * tanh(c).
template <bool kMasked>
RNNCORE_TARGET_AVX512 inline void lstm16(float* g, index_t H, const float* hg, index_t hs, const float* b,
                                         const float* cp, float* c, float* h, __mmask16 m) {
  __m512 pre[4];
  for (int k = 0; k < 4; ++k) {
    __m512 hk = load16<kMasked>(hg + k * hs, m);
    if (b) hk = _mm512_add_ps(hk, load16<kMasked>(b + k * H, m));
    pre[k] = _mm512_add_ps(load16<kMasked>(g + k * H, m), hk);
  }
  const __m512 i = sigmoid16(pre[0]), f = sigmoid16(pre[1]), gg = tanh16(pre[2]), o = sigmoid16(pre[3]);
  store16<kMasked>(g, m, i);
  store16<kMasked>(g + H, m, f);
  store16<kMasked>(g + 2 * H, m, gg);
  store16<kMasked>(g + 3 * H, m, o);
  const __m512 cn = _mm512_add_ps(_mm512_mul_ps(f, load16<kMasked>(cp, m)), _mm512_mul_ps(i, gg));
  store16<kMasked>(c, m, cn);
  store16<kMasked>(h, m, _mm512_mul_ps(tanh16(cn), o));
}

RNNCORE_TARGET_AVX512 void lstm_forward_avx512(float* g, index_t H, const float* hg, index_t hs, const float* b,
                                               const float* cp, float* c, float* h, index_t n) {
  index_t v = 0;
  for (; v + 16 <= n; v += 16)
    lstm16<false>(g + v, H, hg + v, hs, b ? b + v : nullptr, cp + v, c + v, h + v, 0xFFFF);
  if (v < n) lstm16<true>(g + v, H, hg + v, hs, b ? b + v : nullptr, cp + v, c + v, h + v, tail_mask16(n - v));
}

// Sixteen GRU units (see cells/gru.h): r, z = sigmoid(x + (W_h h + b)); hn = W_hn h + b_hn;
// n = tanh((x_n + b_n) + r * hn); h = n + z * (h_prev - n).
template <bool kMasked>
RNNCORE_TARGET_AVX512 inline void gru16(float* g, index_t H, const float* hg, index_t hs, const float* b,
                                        const float* bhn, float* hn, const float* hp, float* h, __mmask16 m) {
  __m512 hr = load16<kMasked>(hg, m), hz = load16<kMasked>(hg + hs, m), xn = load16<kMasked>(g + 2 * H, m);
  if (b) {
    hr = _mm512_add_ps(hr, load16<kMasked>(b, m));
    hz = _mm512_add_ps(hz, load16<kMasked>(b + H, m));
    xn = _mm512_add_ps(xn, load16<kMasked>(b + 2 * H, m));
  }
  const __m512 r = sigmoid16(_mm512_add_ps(load16<kMasked>(g, m), hr));
  const __m512 z = sigmoid16(_mm512_add_ps(load16<kMasked>(g + H, m), hz));
  __m512 hnv = load16<kMasked>(hg + 2 * hs, m);
  if (bhn) hnv = _mm512_add_ps(hnv, load16<kMasked>(bhn, m));
  store16<kMasked>(hn, m, hnv);
  const __m512 nv = tanh16(_mm512_add_ps(xn, _mm512_mul_ps(r, hnv)));
  store16<kMasked>(g, m, r);
  store16<kMasked>(g + H, m, z);
  store16<kMasked>(g + 2 * H, m, nv);
  store16<kMasked>(h, m, _mm512_add_ps(nv, _mm512_mul_ps(z, _mm512_sub_ps(load16<kMasked>(hp, m), nv))));
}

RNNCORE_TARGET_AVX512 void gru_forward_avx512(float* g, index_t H, const float* hg, index_t hs, const float* b,
                                              const float* bhn, float* hn, const float* hp, float* h, index_t n) {
  index_t v = 0;
  for (; v + 16 <= n; v += 16)
    gru16<false>(g + v, H, hg + v, hs, b ? b + v : nullptr, bhn ? bhn + v : nullptr, hn + v, hp + v, h + v, 0xFFFF);
  if (v < n)
    gru16<true>(g + v, H, hg + v, hs, b ? b + v : nullptr, bhn ? bhn + v : nullptr, hn + v, hp + v, h + v,
                tail_mask16(n - v));
}

// Sixteen RNN units (see cells/rnn.h): h = act(xg + (hg + b)), act = tanh or relu (h > 0 ? h : 0,
// so NaN gives 0 as in the portable loop: a zero-masking move, no branch).
template <bool kRelu, bool kMasked>
RNNCORE_TARGET_AVX512 inline void rnn16(const float* xg, const float* hg, const float* b, float* h, __mmask16 m) {
  __m512 hk = load16<kMasked>(hg, m);
  if (b) hk = _mm512_add_ps(hk, load16<kMasked>(b, m));
  const __m512 pre = _mm512_add_ps(load16<kMasked>(xg, m), hk);
  store16<kMasked>(
      h, m, kRelu ? _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(pre, _mm512_setzero_ps(), _CMP_GT_OQ), pre) : tanh16(pre));
}

template <bool kRelu>
RNNCORE_TARGET_AVX512 void rnn_forward_avx512(const float* xg, const float* hg, const float* b, float* h,
                                              index_t n) {
  index_t v = 0;
  for (; v + 16 <= n; v += 16) rnn16<kRelu, false>(xg + v, hg + v, b ? b + v : nullptr, h + v, 0xFFFF);
  if (v < n) rnn16<kRelu, true>(xg + v, hg + v, b ? b + v : nullptr, h + v, tail_mask16(n - v));
}

// Sixteen LSTM units backward (see cells/lstm.h): the same products, left to right.
template <bool kMasked>
RNNCORE_TARGET_AVX512 inline void lstm_back16(float* g, index_t H, const float* cp, const float* c, const float* dhc,
                                              const float* dy, float* dc, __mmask16 m) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 tc = tanh16(load16<kMasked>(c, m));
  const __m512 i = load16<kMasked>(g, m), f = load16<kMasked>(g + H, m), gg = load16<kMasked>(g + 2 * H, m),
               o = load16<kMasked>(g + 3 * H, m);
  __m512 dh = load16<kMasked>(dhc, m);
  if (dy) dh = _mm512_add_ps(dh, load16<kMasked>(dy, m));
  // h' = o * tanh(c')
  const __m512 dct = _mm512_add_ps(load16<kMasked>(dc, m),
                                   _mm512_mul_ps(_mm512_mul_ps(dh, o), _mm512_sub_ps(one, _mm512_mul_ps(tc, tc))));
  // c' = f * c + i * g
  store16<kMasked>(g, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dct, gg), i), _mm512_sub_ps(one, i)));
  store16<kMasked>(g + H, m,
                   _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dct, load16<kMasked>(cp, m)), f), _mm512_sub_ps(one, f)));
  store16<kMasked>(g + 2 * H, m, _mm512_mul_ps(_mm512_mul_ps(dct, i), _mm512_sub_ps(one, _mm512_mul_ps(gg, gg))));
  store16<kMasked>(g + 3 * H, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dh, tc), o), _mm512_sub_ps(one, o)));
  store16<kMasked>(dc, m, _mm512_mul_ps(dct, f));
}

RNNCORE_TARGET_AVX512 void lstm_backward_avx512(float* g, index_t H, const float* cp, const float* c, const float* dhc,
                                                const float* dy, float* dc, index_t n) {
  index_t v = 0;
  for (; v + 16 <= n; v += 16)
    lstm_back16<false>(g + v, H, cp + v, c + v, dhc + v, dy ? dy + v : nullptr, dc + v, 0xFFFF);
  if (v < n)
    lstm_back16<true>(g + v, H, cp + v, c + v, dhc + v, dy ? dy + v : nullptr, dc + v, tail_mask16(n - v));
}

// Sixteen GRU units backward (see cells/gru.h): the same products, left to right.
template <bool kMasked>
RNNCORE_TARGET_AVX512 inline void gru_back16(float* g, index_t H, float* hn, const float* hp, float* dhc,
                                             const float* dy, __mmask16 m) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 r = load16<kMasked>(g, m), z = load16<kMasked>(g + H, m), nv = load16<kMasked>(g + 2 * H, m);
  __m512 dh = load16<kMasked>(dhc, m);
  if (dy) dh = _mm512_add_ps(dh, load16<kMasked>(dy, m));
  // h' = (1 - z) * n + z * h
  const __m512 dn = _mm512_mul_ps(_mm512_mul_ps(dh, _mm512_sub_ps(one, z)), _mm512_sub_ps(one, _mm512_mul_ps(nv, nv)));
  const __m512 dz = _mm512_mul_ps(
      _mm512_mul_ps(_mm512_mul_ps(dh, _mm512_sub_ps(load16<kMasked>(hp, m), nv)), z), _mm512_sub_ps(one, z));
  // n = tanh(xn + r * hn)
  const __m512 dr =
      _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dn, load16<kMasked>(hn, m)), r), _mm512_sub_ps(one, r));
  store16<kMasked>(g, m, dr);
  store16<kMasked>(g + H, m, dz);
  store16<kMasked>(g + 2 * H, m, dn);
  store16<kMasked>(hn, m, _mm512_mul_ps(dn, r));
  store16<kMasked>(dhc, m, _mm512_mul_ps(dh, z));
}

RNNCORE_TARGET_AVX512 void gru_backward_avx512(float* g, index_t H, float* hn, const float* hp, float* dhc,
                                               const float* dy, index_t n) {
  index_t v = 0;
  for (; v + 16 <= n; v += 16) gru_back16<false>(g + v, H, hn + v, hp + v, dhc + v, dy ? dy + v : nullptr, 0xFFFF);
  if (v < n) gru_back16<true>(g + v, H, hn + v, hp + v, dhc + v, dy ? dy + v : nullptr, tail_mask16(n - v));
}

// Sixteen RNN units backward: dg = dh * (1 - h * h) (tanh) or (h > 0 ? dh : 0) (relu, a
// zero-masking move, no branch).
template <bool kRelu, bool kMasked>
RNNCORE_TARGET_AVX512 inline void rnn_back16(float* dg, const float* h, const float* dhc, const float* dy,
                                             __mmask16 m) {
  const __m512 hv = load16<kMasked>(h, m);
  __m512 dh = load16<kMasked>(dhc, m);
  if (dy) dh = _mm512_add_ps(dh, load16<kMasked>(dy, m));
  // h = act(pre)
  store16<kMasked>(dg, m,
                   kRelu ? _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(hv, _mm512_setzero_ps(), _CMP_GT_OQ), dh)
                         : _mm512_mul_ps(dh, _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_mul_ps(hv, hv))));
}

template <bool kRelu>
RNNCORE_TARGET_AVX512 void rnn_backward_avx512(float* dg, const float* h, const float* dhc, const float* dy,
                                               index_t n) {
  index_t v = 0;
  for (; v + 16 <= n; v += 16) rnn_back16<kRelu, false>(dg + v, h + v, dhc + v, dy ? dy + v : nullptr, 0xFFFF);
  if (v < n) rnn_back16<kRelu, true>(dg + v, h + v, dhc + v, dy ? dy + v : nullptr, tail_mask16(n - v));
}

constexpr FusedCellKernels kAvx512 = {lstm_forward_avx512,          gru_forward_avx512,
                                      rnn_forward_avx512<false>,    rnn_forward_avx512<true>,
                                      lstm_backward_avx512,         gru_backward_avx512,
                                      rnn_backward_avx512<false>,   rnn_backward_avx512<true>,
                                      "avx512"};

}  // namespace

const FusedCellKernels* fused_cells_avx512() { return &kAvx512; }

#else  // no x86 SIMD

const FusedCellKernels* fused_cells_avx512() { return nullptr; }

#endif

}  // namespace rnncore
