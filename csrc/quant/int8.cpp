// rnncore: dynamic int8 quantization and the u8 x s8 product kernels (see int8.h).
#include "quant/int8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/cpu.h"

#if RNNCORE_X86_SIMD
#include <cpuid.h>
#include <immintrin.h>
#define RNNCORE_TARGET_VNNI512 __attribute__((target("avx512f,avx512vnni,avx2,fma")))
#endif

namespace rnncore {

namespace {

// Round half to even for |v| < 2^22 under the default rounding mode, without a libm call (so
// the loops vectorise on any x86-64): adding 1.5 * 2^23 leaves no fraction bits.
inline float round_even(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

inline index_t round_up(index_t n, index_t m) { return (n + m - 1) / m * m; }

// -- the kernels: acc (Np) = packed (Np, Kp) * xq (Kp) -------------------------------------------

void acc_generic(index_t nblocks, index_t groups, const std::int8_t* w, const std::uint8_t* xq, std::int32_t* acc) {
  for (index_t nb = 0; nb < nblocks; ++nb) {
    std::int32_t s[kQRows] = {};
    const std::int8_t* p = w + nb * groups * kQRows * kQGroup;
    for (index_t g = 0; g < groups; ++g, p += kQRows * kQGroup) {
      const std::uint8_t* x = xq + g * kQGroup;
      for (index_t r = 0; r < kQRows; ++r)
        for (index_t j = 0; j < kQGroup; ++j) s[r] += std::int32_t(x[j]) * std::int32_t(p[r * kQGroup + j]);
    }
    std::memcpy(acc + nb * kQRows, s, sizeof(s));
  }
}

#if RNNCORE_X86_SIMD

RNNCORE_TARGET_AVX2 void acc_avx2(index_t nblocks, index_t groups, const std::int8_t* w, const std::uint8_t* xq,
                                  std::int32_t* acc) {
  for (index_t nb = 0; nb < nblocks; ++nb) {
    // a[c]: rows 4c .. 4c+3, two lanes each (k 0-1 and k 2-3 of every group)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const std::int8_t* p = w + nb * groups * kQRows * kQGroup;
    for (index_t g = 0; g < groups; ++g, p += kQRows * kQGroup) {
      std::int32_t x4;
      std::memcpy(&x4, xq + g * kQGroup, 4);
      // the group's 4 activations as s16, repeated over the register
      const __m256i x = _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(x4)));
      const __m128i* q = reinterpret_cast<const __m128i*>(p);
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128(q + 0)), x));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128(q + 1)), x));
      a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128(q + 2)), x));
      a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_load_si128(q + 3)), x));
    }
    // hadd pairs lanes: [a0 r0 r1 | a0 r2 r3 interleaved with a1] -> rows in order after a permute
    const __m256i h01 = _mm256_hadd_epi32(a0, a1);  // r0 r1 r4 r5 | r2 r3 r6 r7
    const __m256i h23 = _mm256_hadd_epi32(a2, a3);  // r8 r9 r12 r13 | r10 r11 r14 r15
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + nb * kQRows), _mm256_permutevar8x32_epi32(h01, order));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + nb * kQRows + 8), _mm256_permutevar8x32_epi32(h23, order));
  }
}

RNNCORE_TARGET_VNNI512 void acc_vnni512(index_t nblocks, index_t groups, const std::int8_t* w,
                                        const std::uint8_t* xq, std::int32_t* acc) {
  // Two row blocks at a time, two accumulators each (even and odd groups): four independent
  // vpdpbusd chains, each of which the next block's loads overlap.
  index_t nb = 0;
  const index_t stride = groups * kQRows * kQGroup;
  for (; nb + 2 <= nblocks; nb += 2) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, b0 = a0, b1 = a0;
    const std::int8_t* p = w + nb * stride;
    const std::int8_t* q = p + stride;
    index_t g = 0;
    for (; g + 2 <= groups; g += 2) {
      std::int32_t x0, x1;
      std::memcpy(&x0, xq + g * kQGroup, 4);
      std::memcpy(&x1, xq + (g + 1) * kQGroup, 4);
      const __m512i v0 = _mm512_set1_epi32(x0), v1 = _mm512_set1_epi32(x1);
      a0 = _mm512_dpbusd_epi32(a0, v0, _mm512_load_si512(p + g * 64));
      a1 = _mm512_dpbusd_epi32(a1, v1, _mm512_load_si512(p + g * 64 + 64));
      b0 = _mm512_dpbusd_epi32(b0, v0, _mm512_load_si512(q + g * 64));
      b1 = _mm512_dpbusd_epi32(b1, v1, _mm512_load_si512(q + g * 64 + 64));
    }
    if (g < groups) {
      std::int32_t x0;
      std::memcpy(&x0, xq + g * kQGroup, 4);
      const __m512i v0 = _mm512_set1_epi32(x0);
      a0 = _mm512_dpbusd_epi32(a0, v0, _mm512_load_si512(p + g * 64));
      b0 = _mm512_dpbusd_epi32(b0, v0, _mm512_load_si512(q + g * 64));
    }
    _mm512_storeu_si512(acc + nb * kQRows, _mm512_add_epi32(a0, a1));
    _mm512_storeu_si512(acc + (nb + 1) * kQRows, _mm512_add_epi32(b0, b1));
  }
  for (; nb < nblocks; ++nb) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    const std::int8_t* p = w + nb * stride;
    index_t g = 0;
    for (; g + 2 <= groups; g += 2) {
      std::int32_t x0, x1;
      std::memcpy(&x0, xq + g * kQGroup, 4);
      std::memcpy(&x1, xq + (g + 1) * kQGroup, 4);
      a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(x0), _mm512_load_si512(p + g * 64));
      a1 = _mm512_dpbusd_epi32(a1, _mm512_set1_epi32(x1), _mm512_load_si512(p + g * 64 + 64));
    }
    if (g < groups) {
      std::int32_t x0;
      std::memcpy(&x0, xq + g * kQGroup, 4);
      a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(x0), _mm512_load_si512(p + g * 64));
    }
    _mm512_storeu_si512(acc + nb * kQRows, _mm512_add_epi32(a0, a1));
  }
}

// acc (m rows, stride ldacc) = packed * xq (m rows, stride ldx): for each block of 16 weight rows
// (16 Kp bytes, kept in L1), four vectors at a time.
RNNCORE_TARGET_VNNI512 void acc_vnni512_multi(index_t nblocks, index_t groups, const std::int8_t* w,
                                              const std::uint8_t* xq, index_t ldx, index_t m, std::int32_t* acc,
                                              index_t ldacc) {
  const index_t stride = groups * kQRows * kQGroup;
  for (index_t nb = 0; nb < nblocks; ++nb) {
    const std::int8_t* p = w + nb * stride;
    index_t i = 0;
    for (; i + 4 <= m; i += 4) {
      const std::uint8_t* x0 = xq + i * ldx;
      const std::uint8_t* x1 = x0 + ldx;
      const std::uint8_t* x2 = x1 + ldx;
      const std::uint8_t* x3 = x2 + ldx;
      __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
      for (index_t g = 0; g < groups; ++g) {
        const __m512i wv = _mm512_load_si512(p + g * 64);
        std::int32_t v0, v1, v2, v3;
        std::memcpy(&v0, x0 + g * kQGroup, 4);
        std::memcpy(&v1, x1 + g * kQGroup, 4);
        std::memcpy(&v2, x2 + g * kQGroup, 4);
        std::memcpy(&v3, x3 + g * kQGroup, 4);
        a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(v0), wv);
        a1 = _mm512_dpbusd_epi32(a1, _mm512_set1_epi32(v1), wv);
        a2 = _mm512_dpbusd_epi32(a2, _mm512_set1_epi32(v2), wv);
        a3 = _mm512_dpbusd_epi32(a3, _mm512_set1_epi32(v3), wv);
      }
      _mm512_storeu_si512(acc + i * ldacc + nb * kQRows, a0);
      _mm512_storeu_si512(acc + (i + 1) * ldacc + nb * kQRows, a1);
      _mm512_storeu_si512(acc + (i + 2) * ldacc + nb * kQRows, a2);
      _mm512_storeu_si512(acc + (i + 3) * ldacc + nb * kQRows, a3);
    }
    for (; i < m; ++i) {
      const std::uint8_t* x0 = xq + i * ldx;
      __m512i a0 = _mm512_setzero_si512();
      for (index_t g = 0; g < groups; ++g) {
        std::int32_t v0;
        std::memcpy(&v0, x0 + g * kQGroup, 4);
        a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(v0), _mm512_load_si512(p + g * 64));
      }
      _mm512_storeu_si512(acc + i * ldacc + nb * kQRows, a0);
    }
  }
}

bool cpu_has_avx512_vnni() {
  if (!detect_cpu_features().avx512f) return false;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  return (ecx >> 11) & 1u;
}

#endif  // RNNCORE_X86_SIMD

using AccKernel = void (*)(index_t, index_t, const std::int8_t*, const std::uint8_t*, std::int32_t*);

using MultiKernel = void (*)(index_t, index_t, const std::int8_t*, const std::uint8_t*, index_t, index_t,
                             std::int32_t*, index_t);

struct Int8Kernel {
  AccKernel acc;
  const char* name;
  MultiKernel multi;  // null: one acc() call per vector
};

Int8Kernel choose_kernel() {
#if RNNCORE_X86_SIMD
  const Isa isa = active_isa();
  if (isa == Isa::avx512 && cpu_has_avx512_vnni()) return {acc_vnni512, "vnni512", acc_vnni512_multi};
  if (isa == Isa::avx512 || isa == Isa::avx2) return {acc_avx2, "avx2", nullptr};
#endif
  return {acc_generic, "generic", nullptr};
}

const Int8Kernel& kernel() {
  static const Int8Kernel k = choose_kernel();  // decided once, as active_isa() is
  return k;
}

}  // namespace

const char* int8_kernel_name() { return kernel().name; }

void quantize_rows_s8(index_t N, index_t K, const float* W, index_t ldw, std::int8_t* q, index_t ldq, float* scale) {
  for (index_t n = 0; n < N; ++n) {
    const float* w = W + n * ldw;
    float amax = 0;
    for (index_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(w[k]));
    if (!std::isfinite(amax)) fail("quantize_rows_s8: row " + std::to_string(n) + " holds NaN or an infinity");
    const float s = amax > 0 ? amax / 127.0f : 1.0f;
    scale[n] = s;
    std::int8_t* out = q + n * ldq;
    for (index_t k = 0; k < K; ++k) {
      const float r = std::min(127.0f, std::max(-127.0f, round_even(w[k] / s)));
      out[k] = static_cast<std::int8_t>(static_cast<int>(r));
    }
  }
}

namespace {

U8Params quantize_u8_scalar(index_t K, const float* x, std::uint8_t* xq) {
  float lo = 0, hi = 0;
  bool finite = true;
  for (index_t k = 0; k < K; ++k) {
    const float v = x[k];
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    finite &= std::isfinite(v);
  }
  U8Params p;
  if (!finite) {
    p.scale = std::nanf("");
    std::memset(xq, 0, static_cast<std::size_t>(K));
    return p;
  }
  p.scale = hi > lo ? (hi - lo) / 255.0f : 1.0f;
  const float zp = std::min(255.0f, std::max(0.0f, round_even(-lo / p.scale)));
  p.zero_point = static_cast<std::int32_t>(zp);
  for (index_t k = 0; k < K; ++k) {
    const float r = std::min(255.0f, std::max(0.0f, round_even(x[k] / p.scale) + zp));
    xq[k] = static_cast<std::uint8_t>(static_cast<int>(r));
  }
  return p;
}

#if RNNCORE_X86_SIMD
// The same steps 8 at a time: min/max, division, the magic-number rounding and the clamps are
// exact IEEE operations in either form, so the bytes are the scalar loop's.
RNNCORE_TARGET_AVX2 U8Params quantize_u8_avx2(index_t K, const float* x, std::uint8_t* xq) {
  __m256 lo = _mm256_setzero_ps(), hi = lo, unordered = lo;
  index_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  alignas(32) float l8[8], h8[8];
  _mm256_store_ps(l8, lo);
  _mm256_store_ps(h8, hi);
  float l = 0, h = 0;
  for (int i = 0; i < 8; ++i) {
    l = l8[i] < l ? l8[i] : l;
    h = h8[i] > h ? h8[i] : h;
  }
  bool finite = _mm256_movemask_ps(unordered) == 0;
  for (; k < K; ++k) {
    l = x[k] < l ? x[k] : l;
    h = x[k] > h ? x[k] : h;
    finite &= !std::isnan(x[k]);
  }
  if (!finite || !std::isfinite(l) || !std::isfinite(h)) return quantize_u8_scalar(K, x, xq);  // the NaN result
  U8Params p;
  p.scale = h > l ? (h - l) / 255.0f : 1.0f;
  const float zp = std::min(255.0f, std::max(0.0f, round_even(-l / p.scale)));
  p.zero_point = static_cast<std::int32_t>(zp);
  const __m256 s = _mm256_set1_ps(p.scale), z = _mm256_set1_ps(zp), magic = _mm256_set1_ps(12582912.0f);
  const __m256 top = _mm256_set1_ps(255.0f), bottom = _mm256_setzero_ps();
  for (k = 0; k + 8 <= K; k += 8) {
    __m256 r = _mm256_div_ps(_mm256_loadu_ps(x + k), s);
    r = _mm256_sub_ps(_mm256_add_ps(r, magic), magic);
    r = _mm256_min_ps(top, _mm256_max_ps(bottom, _mm256_add_ps(r, z)));
    const __m256i i32 = _mm256_cvttps_epi32(r);
    const __m128i i16 = _mm_packus_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(xq + k), _mm_packus_epi16(i16, i16));
  }
  for (; k < K; ++k) {
    const float r = std::min(255.0f, std::max(0.0f, round_even(x[k] / p.scale) + zp));
    xq[k] = static_cast<std::uint8_t>(static_cast<int>(r));
  }
  return p;
}
#endif

}  // namespace

U8Params quantize_u8(index_t K, const float* x, std::uint8_t* xq) {
#if RNNCORE_X86_SIMD
  if (active_isa() != Isa::generic) return quantize_u8_avx2(K, x, xq);
#endif
  return quantize_u8_scalar(K, x, xq);
}

void Int8Matrix::pack(index_t N, index_t K, const std::int8_t* q, index_t ldq, const float* scale) {
  if (K > kMaxInt8K)
    fail("int8 weights: rows of " + std::to_string(K) + " values are more than the int32 sums hold (at most " +
         std::to_string(kMaxInt8K) + ")");
  N_ = N;
  K_ = K;
  Np_ = round_up(std::max<index_t>(N, 1), kQRows);
  Kp_ = round_up(std::max<index_t>(K, 1), kQGroup);
  data_.resize(Np_ * Kp_);
  data_.zero();
  scale_.resize(Np_);
  rowsum_.resize(Np_);
  const index_t groups = Kp_ / kQGroup, full = K / kQGroup;
  std::int8_t* dst = data_.data();
  for (index_t n = 0; n < Np_; ++n) {
    std::int32_t sum = 0;
    if (n < N) {
      const std::int8_t* row = q + n * ldq;
      // row n's groups of 4 go 64 bytes apart (one group of 16 rows), in its block
      std::int8_t* out = dst + (n / kQRows) * groups * kQRows * kQGroup + (n % kQRows) * kQGroup;
      for (index_t g = 0; g < full; ++g) std::memcpy(out + g * kQRows * kQGroup, row + g * kQGroup, kQGroup);
      for (index_t k = full * kQGroup; k < K; ++k) out[full * kQRows * kQGroup + k % kQGroup] = row[k];
      for (index_t k = 0; k < K; ++k) sum += row[k];
    }
    rowsum_.data()[n] = sum;
    scale_.data()[n] = n < N ? scale[n] : 0.0f;
  }
}

void Int8Matrix::gemv_acc(const std::uint8_t* xq, std::int32_t* acc) const {
  kernel().acc(Np_ / kQRows, Kp_ / kQGroup, data_.data(), xq, acc);
}

void Int8Matrix::gemv(const float* x, float* y, float beta, std::uint8_t* xq, std::int32_t* acc) const {
  const U8Params p = quantize_u8(K_, x, xq);
  for (index_t k = K_; k < Kp_; ++k) xq[k] = 0;  // the pad columns' weights are zero; keep them defined
  gemv_acc(xq, acc);
  const float* s = scale_.data();
  const std::int32_t* rs = rowsum_.data();
  if (beta == 0.0f) {
    for (index_t n = 0; n < N_; ++n) y[n] = static_cast<float>(acc[n] - p.zero_point * rs[n]) * (p.scale * s[n]);
  } else {
    for (index_t n = 0; n < N_; ++n) y[n] += static_cast<float>(acc[n] - p.zero_point * rs[n]) * (p.scale * s[n]);
  }
}

index_t Int8Matrix::multi_workspace_bytes() const {
  return kMultiRows * ((Kp_ + 63) / 64 * 64) + kMultiRows * Np_ * 4 + 64;
}

void Int8Matrix::gemm(index_t M, const float* X, index_t ldx, float* Y, index_t ldy, void* ws) const {
  const index_t ldq = (Kp_ + 63) / 64 * 64;
  auto* xq = static_cast<std::uint8_t*>(ws);
  auto* acc = reinterpret_cast<std::int32_t*>(xq + kMultiRows * ldq);
  const float* s = scale_.data();
  const std::int32_t* rs = rowsum_.data();
  U8Params p[kMultiRows];
  for (index_t m0 = 0; m0 < M; m0 += kMultiRows) {
    const index_t m = std::min(kMultiRows, M - m0);
    for (index_t i = 0; i < m; ++i) {
      std::uint8_t* row = xq + i * ldq;
      p[i] = quantize_u8(K_, X + (m0 + i) * ldx, row);
      for (index_t k = K_; k < Kp_; ++k) row[k] = 0;
    }
    if (kernel().multi) {
      kernel().multi(Np_ / kQRows, Kp_ / kQGroup, data_.data(), xq, ldq, m, acc, Np_);
    } else {
      for (index_t i = 0; i < m; ++i) gemv_acc(xq + i * ldq, acc + i * Np_);
    }
    for (index_t i = 0; i < m; ++i) {  // gemv()'s epilogue, row by row
      const std::int32_t* a = acc + i * Np_;
      float* y = Y + (m0 + i) * ldy;
      for (index_t n = 0; n < N_; ++n) y[n] = static_cast<float>(a[n] - p[i].zero_point * rs[n]) * (p[i].scale * s[n]);
    }
  }
}

}  // namespace rnncore
