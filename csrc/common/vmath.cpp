// Vectorised float32 activations (see vmath.h for the method and the error bounds).
#include "common/vmath.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RNNCORE_VMATH_X86 1
#else
#define RNNCORE_VMATH_X86 0
#endif

namespace rnncore {

namespace {

// exp(x) = 2^n * e^r, n = round(x / ln 2), r = x - n ln 2 split in two parts (Cody-Waite).
constexpr float kExpHi = 88.0f, kExpLo = -87.3365447504f;  // 2^n stays a normal float
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kE2 = 1.0f / 2, kE3 = 1.0f / 6, kE4 = 1.0f / 24, kE5 = 1.0f / 120, kE6 = 1.0f / 720,
                kE7 = 1.0f / 5040;
// tanh(x) / x on |x| < 0.5 as a polynomial in x^2.
constexpr float kT0 = 9.999999997e-01f, kT1 = -3.333332402e-01f, kT2 = 1.333289712e-01f, kT3 = -5.389287656e-02f,
                kT4 = 2.127224263e-02f, kT5 = -6.609499387e-03f;

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

#if RNNCORE_VMATH_X86
#define RNNCORE_AVX2 __attribute__((target("avx2,fma")))

RNNCORE_AVX2 inline __m256 exp8(__m256 x) {
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

RNNCORE_AVX2 inline __m256 sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(one, _mm256_add_ps(one, e));
}

RNNCORE_AVX2 inline __m256 tanh8(__m256 x) {
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

template <__m256 (*F)(__m256)>
RNNCORE_AVX2 void apply8(float* y, const float* x, index_t n) {
  index_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, F(_mm256_loadu_ps(x + i)));
  if (i < n) {
    // The tail through the same vector code (masked), so a value's result never depends on
    // where it falls in the array.
    alignas(32) static const std::int32_t ramp[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)),
                                            _mm256_load_si256(reinterpret_cast<const __m256i*>(ramp)));
    const __m256 v = _mm256_maskload_ps(x + i, mask);
    _mm256_maskstore_ps(y + i, mask, F(v));
  }
}

// Loads and stores for the fused cells: whole vectors, or the first lanes of `mask` (tail).
template <bool kMasked>
RNNCORE_AVX2 inline __m256 load8(const float* p, __m256i mask) {
  return kMasked ? _mm256_maskload_ps(p, mask) : _mm256_loadu_ps(p);
}
template <bool kMasked>
RNNCORE_AVX2 inline void store8(float* p, __m256i mask, __m256 v) {
  if (kMasked) _mm256_maskstore_ps(p, mask, v);
  else _mm256_storeu_ps(p, v);
}

RNNCORE_AVX2 inline __m256i tail_mask(index_t left) {
  alignas(32) static const std::int32_t ramp[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)),
                            _mm256_load_si256(reinterpret_cast<const __m256i*>(ramp)));
}

// Eight LSTM units (see cells/lstm.h): pre = x + (W_hh h + b); i, f, o = sigmoid, g = tanh;
// c = f * c_prev + i * g; h = o * tanh(c).
template <bool kMasked>
RNNCORE_AVX2 inline void lstm8(float* g, index_t H, const float* hg, index_t hs, const float* b, const float* cp,
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

RNNCORE_AVX2 void lstm_forward_avx2(float* g, index_t H, const float* hg, index_t hs, const float* b,
                                    const float* cp, float* c, float* h, index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8)
    lstm8<false>(g + v, H, hg + v, hs, b ? b + v : nullptr, cp + v, c + v, h + v, all);
  if (v < n) lstm8<true>(g + v, H, hg + v, hs, b ? b + v : nullptr, cp + v, c + v, h + v, tail_mask(n - v));
}

// Eight GRU units (see cells/gru.h): r, z = sigmoid(x + (W_h h + b)); hn = W_hn h + b_hn;
// n = tanh((x_n + b_n) + r * hn); h = n + z * (h_prev - n).
template <bool kMasked>
RNNCORE_AVX2 inline void gru8(float* g, index_t H, const float* hg, index_t hs, const float* b, const float* bhn,
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

RNNCORE_AVX2 void gru_forward_avx2(float* g, index_t H, const float* hg, index_t hs, const float* b,
                                   const float* bhn, float* hn, const float* hp, float* h, index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8)
    gru8<false>(g + v, H, hg + v, hs, b ? b + v : nullptr, bhn ? bhn + v : nullptr, hn + v, hp + v, h + v, all);
  if (v < n)
    gru8<true>(g + v, H, hg + v, hs, b ? b + v : nullptr, bhn ? bhn + v : nullptr, hn + v, hp + v, h + v,
               tail_mask(n - v));
}

// Eight LSTM units backward (see LSTMCell::backward): the same products, left to right.
template <bool kMasked>
RNNCORE_AVX2 inline void lstm_back8(float* g, index_t H, const float* cp, const float* c, const float* dhc,
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

RNNCORE_AVX2 void lstm_backward_avx2(float* g, index_t H, const float* cp, const float* c, const float* dhc,
                                     const float* dy, float* dc, index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8) lstm_back8<false>(g + v, H, cp + v, c + v, dhc + v, dy ? dy + v : nullptr, dc + v, all);
  if (v < n) lstm_back8<true>(g + v, H, cp + v, c + v, dhc + v, dy ? dy + v : nullptr, dc + v, tail_mask(n - v));
}

// Eight GRU units backward (see GRUCell::backward): the same products, left to right.
template <bool kMasked>
RNNCORE_AVX2 inline void gru_back8(float* g, index_t H, float* hn, const float* hp, float* dhc, const float* dy,
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

RNNCORE_AVX2 void gru_backward_avx2(float* g, index_t H, float* hn, const float* hp, float* dhc, const float* dy,
                                    index_t n) {
  const __m256i all = _mm256_set1_epi32(-1);
  index_t v = 0;
  for (; v + 8 <= n; v += 8) gru_back8<false>(g + v, H, hn + v, hp + v, dhc + v, dy ? dy + v : nullptr, all);
  if (v < n) gru_back8<true>(g + v, H, hn + v, hp + v, dhc + v, dy ? dy + v : nullptr, tail_mask(n - v));
}

RNNCORE_AVX2 void vexp_avx2(float* y, const float* x, index_t n) { apply8<exp8>(y, x, n); }
RNNCORE_AVX2 void vsigmoid_avx2(float* y, const float* x, index_t n) { apply8<sigmoid8>(y, x, n); }
RNNCORE_AVX2 void vtanh_avx2(float* y, const float* x, index_t n) { apply8<tanh8>(y, x, n); }
#endif

using ArrayFn = void (*)(float*, const float*, index_t);

using LSTMFn = void (*)(float*, index_t, const float*, index_t, const float*, const float*, float*, float*, index_t);
using GRUFn = void (*)(float*, index_t, const float*, index_t, const float*, const float*, float*, const float*, float*,
                       index_t);

using LSTMBackFn = void (*)(float*, index_t, const float*, const float*, const float*, const float*, float*, index_t);
using GRUBackFn = void (*)(float*, index_t, float*, const float*, float*, const float*, index_t);

struct Kernels {
  ArrayFn exp, sigmoid, tanh;
  const char* name;
  LSTMFn lstm = nullptr;  // fused cells, when vectorised
  GRUFn gru = nullptr;
  LSTMBackFn lstm_back = nullptr;
  GRUBackFn gru_back = nullptr;
};

// RNNCORE_VMATH=generic in the environment forces the portable loop (for tests).
Kernels choose() {
#if RNNCORE_VMATH_X86
  const char* forced = std::getenv("RNNCORE_VMATH");
  const bool generic = forced != nullptr && std::strcmp(forced, "generic") == 0;
  __builtin_cpu_init();
  if (!generic && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {vexp_avx2, vsigmoid_avx2, vtanh_avx2, "avx2", lstm_forward_avx2, gru_forward_avx2,
            lstm_backward_avx2, gru_backward_avx2};
#endif
  return {vexp_generic, vsigmoid_generic, vtanh_generic, "generic"};
}

// Chosen once, from what the CPU supports; never changed afterwards.
const Kernels& kernels() {
  static const Kernels k = choose();
  return k;
}

}  // namespace

void vsigmoid(float* y, const float* x, index_t n) { kernels().sigmoid(y, x, n); }
void vtanh(float* y, const float* x, index_t n) { kernels().tanh(y, x, n); }
void vexp(float* y, const float* x, index_t n) { kernels().exp(y, x, n); }
const char* vmath_kernel() { return kernels().name; }

bool lstm_forward_fused(float* gates, index_t H, const float* hg, index_t hs, const float* bias,
                        const float* c_prev, float* c, float* h, index_t n) {
  const LSTMFn f = kernels().lstm;
  if (f == nullptr) return false;
  f(gates, H, hg, hs, bias, c_prev, c, h, n);
  return true;
}

bool gru_forward_fused(float* gates, index_t H, const float* hg, index_t hs, const float* bias, const float* b_hn,
                       float* hn, const float* h_prev, float* h, index_t n) {
  const GRUFn f = kernels().gru;
  if (f == nullptr) return false;
  f(gates, H, hg, hs, bias, b_hn, hn, h_prev, h, n);
  return true;
}

bool lstm_backward_fused(float* gates, index_t H, const float* c_prev, const float* c, const float* dh_carry,
                         const float* dy, float* dc, index_t n) {
  const LSTMBackFn f = kernels().lstm_back;
  if (f == nullptr) return false;
  f(gates, H, c_prev, c, dh_carry, dy, dc, n);
  return true;
}

bool gru_backward_fused(float* gates, index_t H, float* hn, const float* h_prev, float* dh_carry, const float* dy,
                        index_t n) {
  const GRUBackFn f = kernels().gru_back;
  if (f == nullptr) return false;
  f(gates, H, hn, h_prev, dh_carry, dy, n);
  return true;
}

}  // namespace rnncore
