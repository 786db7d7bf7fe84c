// The fused float32 cell steps for AVX2+FMA (see cells/fused.h): every gate of eight units
// in registers, a masked tail for the last partial vector. The products come in the same
// order as the portable loops of cells/lstm.h, cells/gru.h and cells/rnn.h.
#include "cells/fused.h"

#include "common/cpu.h"
#include "common/vmath_avx2.h"

namespace rnncore {

#if RNNCORE_X86_SIMD
namespace {

using namespace vmath_detail;

// Eight LSTM units (see cells/lstm.h): pre = x + (W_hh h + b); i, f, o = sigmoid, g = tanh;
// c = f * c_prev + i * g; h = o * tanh(c).
template <bool kMasked>
RNNCORE_TARGET_AVX2 inline void lstm8(float* g, index_t H, const float* hg, index_t hs, const float* b, const float* cp,
                               float* c, float* h, __m256i m) {
  __m256 pre[4];
  for (int k = 0; k < 4; ++k) {
    __m256 hk = load8<kMasked>(hg + k * hs, m);
    if (b) hk = _mm256_add_ps(hk, load8<kMasked>(b + k * H, m));
    pre[k] = _mm256_add_ps(load8<kMasked>(g + k * H, m), hk);
  }
  const __m256 i = sigmoid8(pre[0]), f = sigmoid8(pre[1]), gg = tanh8(pre[2]), o = sigmoid8(pre[3]);
  store8<kMasked>(g, m, i);
  store8<kMasked>(g + H, m, f);
  store8<kMasked>(g + 2 * H, m, gg);
  store8<kMasked>(g + 3 * H, m, o);
  const __m256 cn = _mm256_add_ps(_mm256_mul_ps(f, load8<kMasked>(cp, m)), _mm256_mul_ps(i, gg));
  store8<kMasked>(c, m, cn);
  store8<kMasked>(h, m, _mm256_mul_ps(tanh8(cn), o));
}

RNNCORE_TARGET_AVX2 void lstm_forward_avx2(float* g, index_t H, const float* hg, index_t hs, const float* b,
                                    const float* cp, float* c, float* h, index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8)
    lstm8<false>(g + v, H, hg + v, hs, b ? b + v : nullptr, cp + v, c + v, h + v, all);
  if (v < n) lstm8<true>(g + v, H, hg + v, hs, b ? b + v : nullptr, cp + v, c + v, h + v, tail_mask8(n - v));
}

// Eight GRU units (see cells/gru.h): r, z = sigmoid(x + (W_h h + b)); hn = W_hn h + b_hn;
// n = tanh((x_n + b_n) + r * hn); h = n + z * (h_prev - n).
template <bool kMasked>
RNNCORE_TARGET_AVX2 inline void gru8(float* g, index_t H, const float* hg, index_t hs, const float* b, const float* bhn,
                              float* hn, const float* hp, float* h, __m256i m) {
  __m256 hr = load8<kMasked>(hg, m), hz = load8<kMasked>(hg + hs, m), xn = load8<kMasked>(g + 2 * H, m);
  if (b) {
    hr = _mm256_add_ps(hr, load8<kMasked>(b, m));
    hz = _mm256_add_ps(hz, load8<kMasked>(b + H, m));
    xn = _mm256_add_ps(xn, load8<kMasked>(b + 2 * H, m));
  }
  const __m256 r = sigmoid8(_mm256_add_ps(load8<kMasked>(g, m), hr));
  const __m256 z = sigmoid8(_mm256_add_ps(load8<kMasked>(g + H, m), hz));
  __m256 hnv = load8<kMasked>(hg + 2 * hs, m);
  if (bhn) hnv = _mm256_add_ps(hnv, load8<kMasked>(bhn, m));
  store8<kMasked>(hn, m, hnv);
  const __m256 nv = tanh8(_mm256_add_ps(xn, _mm256_mul_ps(r, hnv)));
  store8<kMasked>(g, m, r);
  store8<kMasked>(g + H, m, z);
  store8<kMasked>(g + 2 * H, m, nv);
  store8<kMasked>(h, m, _mm256_add_ps(nv, _mm256_mul_ps(z, _mm256_sub_ps(load8<kMasked>(hp, m), nv))));
}

RNNCORE_TARGET_AVX2 void gru_forward_avx2(float* g, index_t H, const float* hg, index_t hs, const float* b,
                                   const float* bhn, float* hn, const float* hp, float* h, index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8)
    gru8<false>(g + v, H, hg + v, hs, b ? b + v : nullptr, bhn ? bhn + v : nullptr, hn + v, hp + v, h + v, all);
  if (v < n)
    gru8<true>(g + v, H, hg + v, hs, b ? b + v : nullptr, bhn ? bhn + v : nullptr, hn + v, hp + v, h + v,
               tail_mask8(n - v));
}

// Eight LSTM units backward (see cells/lstm.h): the same products, left to right.
template <bool kMasked>
RNNCORE_TARGET_AVX2 inline void lstm_back8(float* g, index_t H, const float* cp, const float* c, const float* dhc,
                                    const float* dy, float* dc, __m256i m) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 tc = tanh8(load8<kMasked>(c, m));
  const __m256 i = load8<kMasked>(g, m), f = load8<kMasked>(g + H, m), gg = load8<kMasked>(g + 2 * H, m),
               o = load8<kMasked>(g + 3 * H, m);
  __m256 dh = load8<kMasked>(dhc, m);
  if (dy) dh = _mm256_add_ps(dh, load8<kMasked>(dy, m));
  const __m256 dct = _mm256_add_ps(load8<kMasked>(dc, m),
                                   _mm256_mul_ps(_mm256_mul_ps(dh, o), _mm256_sub_ps(one, _mm256_mul_ps(tc, tc))));
  store8<kMasked>(g, m, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dct, gg), i), _mm256_sub_ps(one, i)));
  store8<kMasked>(g + H, m,
                  _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dct, load8<kMasked>(cp, m)), f), _mm256_sub_ps(one, f)));
  store8<kMasked>(g + 2 * H, m, _mm256_mul_ps(_mm256_mul_ps(dct, i), _mm256_sub_ps(one, _mm256_mul_ps(gg, gg))));
  store8<kMasked>(g + 3 * H, m, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dh, tc), o), _mm256_sub_ps(one, o)));
  store8<kMasked>(dc, m, _mm256_mul_ps(dct, f));
}

RNNCORE_TARGET_AVX2 void lstm_backward_avx2(float* g, index_t H, const float* cp, const float* c, const float* dhc,
                                     const float* dy, float* dc, index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8) lstm_back8<false>(g + v, H, cp + v, c + v, dhc + v, dy ? dy + v : nullptr, dc + v, all);
  if (v < n) lstm_back8<true>(g + v, H, cp + v, c + v, dhc + v, dy ? dy + v : nullptr, dc + v, tail_mask8(n - v));
}

// Eight GRU units backward (see cells/gru.h): the same products, left to right.
template <bool kMasked>
RNNCORE_TARGET_AVX2 inline void gru_back8(float* g, index_t H, float* hn, const float* hp, float* dhc, const float* dy,
                                   __m256i m) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 r = load8<kMasked>(g, m), z = load8<kMasked>(g + H, m), nv = load8<kMasked>(g + 2 * H, m);
  __m256 dh = load8<kMasked>(dhc, m);
  if (dy) dh = _mm256_add_ps(dh, load8<kMasked>(dy, m));
  const __m256 dn = _mm256_mul_ps(_mm256_mul_ps(dh, _mm256_sub_ps(one, z)), _mm256_sub_ps(one, _mm256_mul_ps(nv, nv)));
  const __m256 dz = _mm256_mul_ps(
      _mm256_mul_ps(_mm256_mul_ps(dh, _mm256_sub_ps(load8<kMasked>(hp, m), nv)), z), _mm256_sub_ps(one, z));
  const __m256 dr = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dn, load8<kMasked>(hn, m)), r), _mm256_sub_ps(one, r));
  store8<kMasked>(g, m, dr);
  store8<kMasked>(g + H, m, dz);
  store8<kMasked>(g + 2 * H, m, dn);
  store8<kMasked>(hn, m, _mm256_mul_ps(dn, r));
  store8<kMasked>(dhc, m, _mm256_mul_ps(dh, z));
}

RNNCORE_TARGET_AVX2 void gru_backward_avx2(float* g, index_t H, float* hn, const float* hp, float* dhc, const float* dy,
                                    index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8) gru_back8<false>(g + v, H, hn + v, hp + v, dhc + v, dy ? dy + v : nullptr, all);
  if (v < n) gru_back8<true>(g + v, H, hn + v, hp + v, dhc + v, dy ? dy + v : nullptr, tail_mask8(n - v));
}

// Eight RNN units (see cells/rnn.h): h = act(xg + (hg + b)), act = tanh or relu (h > 0 ? h : 0,
// so NaN gives 0 as in the portable loop).
template <bool kRelu, bool kMasked>
RNNCORE_TARGET_AVX2 inline void rnn8(const float* xg, const float* hg, const float* b, float* h, __m256i m) {
  __m256 hk = load8<kMasked>(hg, m);
  if (b) hk = _mm256_add_ps(hk, load8<kMasked>(b, m));
  const __m256 pre = _mm256_add_ps(load8<kMasked>(xg, m), hk);
  store8<kMasked>(h, m, kRelu ? _mm256_and_ps(pre, _mm256_cmp_ps(pre, _mm256_setzero_ps(), _CMP_GT_OQ)) : tanh8(pre));
}

template <bool kRelu>
RNNCORE_TARGET_AVX2 void rnn_forward_avx2(const float* xg, const float* hg, const float* b, float* h, index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8) rnn8<kRelu, false>(xg + v, hg + v, b ? b + v : nullptr, h + v, all);
  if (v < n) rnn8<kRelu, true>(xg + v, hg + v, b ? b + v : nullptr, h + v, tail_mask8(n - v));
}

// Eight RNN units backward: dg = dh * (1 - h * h) (tanh) or (h > 0 ? dh : 0) (relu, a mask,
// no branch).
template <bool kRelu, bool kMasked>
RNNCORE_TARGET_AVX2 inline void rnn_back8(float* dg, const float* h, const float* dhc, const float* dy, __m256i m) {
  const __m256 hv = load8<kMasked>(h, m);
  __m256 dh = load8<kMasked>(dhc, m);
  if (dy) dh = _mm256_add_ps(dh, load8<kMasked>(dy, m));
  store8<kMasked>(dg, m,
                  kRelu ? _mm256_and_ps(dh, _mm256_cmp_ps(hv, _mm256_setzero_ps(), _CMP_GT_OQ))
                        : _mm256_mul_ps(dh, _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_mul_ps(hv, hv))));
}

template <bool kRelu>
RNNCORE_TARGET_AVX2 void rnn_backward_avx2(float* dg, const float* h, const float* dhc, const float* dy, index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8) rnn_back8<kRelu, false>(dg + v, h + v, dhc + v, dy ? dy + v : nullptr, all);
  if (v < n) rnn_back8<kRelu, true>(dg + v, h + v, dhc + v, dy ? dy + v : nullptr, tail_mask8(n - v));
}

constexpr FusedCellKernels kAvx2 = {lstm_forward_avx2,         gru_forward_avx2,        rnn_forward_avx2<false>,
                                    rnn_forward_avx2<true>,    lstm_backward_avx2,      gru_backward_avx2,
                                    rnn_backward_avx2<false>,  rnn_backward_avx2<true>, "avx2"};

}  // namespace

const FusedCellKernels* fused_cells_avx2() { return &kAvx2; }

#else  // no x86 SIMD: the cells run their portable loops

const FusedCellKernels* fused_cells_avx2() { return nullptr; }

#endif

}  // namespace rnncore
