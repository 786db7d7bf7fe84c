// rnncore: bf16 weights and their product kernels (see bf16.h).
#include "quant/bf16.h"

#include <algorithm>
#include <cstring>

#include "common/cpu.h"
#include "quant/bf16_gemm.h"

#if RNNCORE_X86_SIMD
#include <cpuid.h>
#include <immintrin.h>
#define RNNCORE_TARGET_BF16_512 __attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma")))
#endif

namespace rnncore {

void to_bf16(index_t n, const float* x, std::uint16_t* out) {
  for (index_t i = 0; i < n; ++i) out[i] = to_bf16(x[i]);
}

void round_bf16(index_t n, const float* x, float* out) {
  for (index_t i = 0; i < n; ++i) out[i] = from_bf16(to_bf16(x[i]));
}

namespace {

constexpr index_t kRows = 16;

inline index_t round_up(index_t n, index_t m) { return (n + m - 1) / m * m; }

// sums (16 * nblocks) = packed W * xb, in bf16.h's order.
void sums_generic(index_t nblocks, index_t groups, const std::uint16_t* w, const std::uint16_t* xb, float* sums) {
  for (index_t nb = 0; nb < nblocks; ++nb) {
    float s[2][kRows] = {};
    const std::uint16_t* p = w + nb * groups * kRows * 2;
    for (index_t g = 0; g < groups; ++g, p += kRows * 2) {
      const float x0 = from_bf16(xb[2 * g]), x1 = from_bf16(xb[2 * g + 1]);
      float* acc = s[g & 1];
      for (index_t r = 0; r < kRows; ++r) {
        float a = acc[r];
        a = a + x1 * from_bf16(p[2 * r + 1]);
        a = a + x0 * from_bf16(p[2 * r]);
        acc[r] = a;
      }
    }
    for (index_t r = 0; r < kRows; ++r) sums[nb * kRows + r] = s[0][r] + s[1][r];
  }
}

#if RNNCORE_X86_SIMD

RNNCORE_TARGET_AVX2 void sums_avx2(index_t nblocks, index_t groups, const std::uint16_t* w, const std::uint16_t* xb,
                                   float* sums) {
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (index_t nb = 0; nb < nblocks; ++nb) {
    __m256 a[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
    const std::uint16_t* p = w + nb * groups * kRows * 2;
    for (index_t g = 0; g < groups; ++g, p += kRows * 2) {
      const __m256 x0 = _mm256_set1_ps(from_bf16(xb[2 * g])), x1 = _mm256_set1_ps(from_bf16(xb[2 * g + 1]));
      const int par = static_cast<int>(g & 1);
      for (int h = 0; h < 2; ++h) {  // rows 8h .. 8h + 7: their (even, odd) pairs as 32-bit lanes
        const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(p) + h);
        const __m256 w_odd = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
        const __m256 w_even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        // the products are exact, so a contracted multiply-add would round the same way
        a[par][h] = _mm256_add_ps(a[par][h], _mm256_mul_ps(x1, w_odd));
        a[par][h] = _mm256_add_ps(a[par][h], _mm256_mul_ps(x0, w_even));
      }
    }
    _mm256_storeu_ps(sums + nb * kRows, _mm256_add_ps(a[0][0], a[1][0]));
    _mm256_storeu_ps(sums + nb * kRows + 8, _mm256_add_ps(a[0][1], a[1][1]));
  }
}

RNNCORE_TARGET_BF16_512 void sums_bf16_512(index_t nblocks, index_t groups, const std::uint16_t* w,
                                           const std::uint16_t* xb, float* sums) {
  const index_t stride = groups * kRows * 2;
  index_t nb = 0;
  for (; nb + 2 <= nblocks; nb += 2) {  // two row blocks: four independent chains
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
    const std::uint16_t* p = w + nb * stride;
    const std::uint16_t* q = p + stride;
    index_t g = 0;
    for (; g + 2 <= groups; g += 2) {
      std::int32_t x0, x1;
      std::memcpy(&x0, xb + 2 * g, 4);
      std::memcpy(&x1, xb + 2 * g + 2, 4);
      const __m512bh v0 = (__m512bh)_mm512_set1_epi32(x0), v1 = (__m512bh)_mm512_set1_epi32(x1);
      a0 = _mm512_dpbf16_ps(a0, v0, (__m512bh)_mm512_load_si512(p + g * 32));
      a1 = _mm512_dpbf16_ps(a1, v1, (__m512bh)_mm512_load_si512(p + g * 32 + 32));
      b0 = _mm512_dpbf16_ps(b0, v0, (__m512bh)_mm512_load_si512(q + g * 32));
      b1 = _mm512_dpbf16_ps(b1, v1, (__m512bh)_mm512_load_si512(q + g * 32 + 32));
    }
    if (g < groups) {
      std::int32_t x0;
      std::memcpy(&x0, xb + 2 * g, 4);
      const __m512bh v0 = (__m512bh)_mm512_set1_epi32(x0);
      a0 = _mm512_dpbf16_ps(a0, v0, (__m512bh)_mm512_load_si512(p + g * 32));
      b0 = _mm512_dpbf16_ps(b0, v0, (__m512bh)_mm512_load_si512(q + g * 32));
    }
    _mm512_storeu_ps(sums + nb * kRows, _mm512_add_ps(a0, a1));
    _mm512_storeu_ps(sums + (nb + 1) * kRows, _mm512_add_ps(b0, b1));
  }
  for (; nb < nblocks; ++nb) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    const std::uint16_t* p = w + nb * stride;
    for (index_t g = 0; g < groups; ++g) {
      std::int32_t x0;
      std::memcpy(&x0, xb + 2 * g, 4);
      const __m512bh v = (__m512bh)_mm512_set1_epi32(x0);
      if (g & 1) a1 = _mm512_dpbf16_ps(a1, v, (__m512bh)_mm512_load_si512(p + g * 32));
      else a0 = _mm512_dpbf16_ps(a0, v, (__m512bh)_mm512_load_si512(p + g * 32));
    }
    _mm512_storeu_ps(sums + nb * kRows, _mm512_add_ps(a0, a1));
  }
}

// sums (m rows, stride lds) for m rounded vectors xb (stride ldx): per block of 16 weight rows
// (kept in L1), four vectors at a time, each with its two chains (even and odd pairs) as in
// sums_bf16_512, so every row gets the single-vector kernel's bits.
RNNCORE_TARGET_BF16_512 void sums_bf16_512_multi(index_t nblocks, index_t groups, const std::uint16_t* w,
                                                 const std::uint16_t* xb, index_t ldx, index_t m, float* sums,
                                                 index_t lds) {
  const index_t stride = groups * kRows * 2;
  for (index_t nb = 0; nb < nblocks; ++nb) {
    const std::uint16_t* p = w + nb * stride;
    index_t i = 0;
    for (; i + 4 <= m; i += 4) {
      __m512 a[4][2];
      for (auto& ai : a) ai[0] = ai[1] = _mm512_setzero_ps();
      for (index_t g = 0; g < groups; ++g) {
        const __m512bh wv = (__m512bh)_mm512_load_si512(p + g * 32);
        const int par = static_cast<int>(g & 1);
        for (int j = 0; j < 4; ++j) {
          std::int32_t x;
          std::memcpy(&x, xb + (i + j) * ldx + 2 * g, 4);
          a[j][par] = _mm512_dpbf16_ps(a[j][par], (__m512bh)_mm512_set1_epi32(x), wv);
        }
      }
      for (int j = 0; j < 4; ++j) _mm512_storeu_ps(sums + (i + j) * lds + nb * kRows, _mm512_add_ps(a[j][0], a[j][1]));
    }
    for (; i < m; ++i) {
      __m512 a0 = _mm512_setzero_ps(), a1 = a0;
      for (index_t g = 0; g < groups; ++g) {
        std::int32_t x;
        std::memcpy(&x, xb + i * ldx + 2 * g, 4);
        const __m512bh v = (__m512bh)_mm512_set1_epi32(x);
        if (g & 1) a1 = _mm512_dpbf16_ps(a1, v, (__m512bh)_mm512_load_si512(p + g * 32));
        else a0 = _mm512_dpbf16_ps(a0, v, (__m512bh)_mm512_load_si512(p + g * 32));
      }
      _mm512_storeu_ps(sums + i * lds + nb * kRows, _mm512_add_ps(a0, a1));
    }
  }
}

bool has_bf16_instructions() {
  if (!detect_cpu_features().avx512f) return false;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const bool bw = (ebx >> 30) & 1u;
  if (eax < 1) return false;  // leaf 7's highest subleaf
  __cpuid_count(7, 1, eax, ebx, ecx, edx);
  return bw && ((eax >> 5) & 1u);
}

#endif  // RNNCORE_X86_SIMD

using SumsKernel = void (*)(index_t, index_t, const std::uint16_t*, const std::uint16_t*, float*);

using MultiKernel = void (*)(index_t, index_t, const std::uint16_t*, const std::uint16_t*, index_t, index_t, float*,
                             index_t);

struct Bf16Kernel {
  SumsKernel sums;
  const char* name;
  MultiKernel multi;  // null: one sums() call per vector
};

Bf16Kernel choose_kernel() {
#if RNNCORE_X86_SIMD
  const Isa isa = active_isa();
  if (isa == Isa::avx512 && has_bf16_instructions()) return {sums_bf16_512, "avx512bf16", sums_bf16_512_multi};
  if (isa == Isa::avx512 || isa == Isa::avx2) return {sums_avx2, "avx2", nullptr};
#endif
  return {sums_generic, "generic", nullptr};
}

const Bf16Kernel& kernel() {
  static const Bf16Kernel k = choose_kernel();
  return k;
}

}  // namespace

bool cpu_has_avx512_bf16() {
#if RNNCORE_X86_SIMD
  return has_bf16_instructions();
#else
  return false;
#endif
}

const char* bf16_kernel_name() { return kernel().name; }

void Bf16Matrix::pack(index_t N, index_t K, const std::uint16_t* w, index_t ldw) {
  N_ = N;
  K_ = K;
  Np_ = round_up(std::max<index_t>(N, 1), kRows);
  Kp_ = round_up(std::max<index_t>(K, 1), 2);
  data_.resize(Np_ * Kp_);
  data_.zero();
  const index_t groups = Kp_ / 2, full = K / 2;
  for (index_t n = 0; n < N; ++n) {
    const std::uint16_t* row = w + n * ldw;
    std::uint16_t* out = data_.data() + (n / kRows) * groups * kRows * 2 + (n % kRows) * 2;
    for (index_t g = 0; g < full; ++g) std::memcpy(out + g * kRows * 2, row + 2 * g, 4);
    if (K % 2) out[full * kRows * 2] = row[K - 1];
  }
}

index_t Bf16Matrix::workspace_bytes() const { return round_up(Kp_ * 2, 64) + Np_ * 4; }

void Bf16Matrix::gemv_sums(const std::uint16_t* xb, float* sums) const {
  kernel().sums(Np_ / kRows, Kp_ / 2, data_.data(), xb, sums);
}

void Bf16Matrix::gemv(const float* x, float* y, float beta, void* ws) const {
  auto* xb = static_cast<std::uint16_t*>(ws);
  auto* sums = reinterpret_cast<float*>(static_cast<unsigned char*>(ws) + round_up(Kp_ * 2, 64));
  to_bf16(K_, x, xb);
  for (index_t k = K_; k < Kp_; ++k) xb[k] = 0;
  gemv_sums(xb, sums);
  if (beta == 0.0f) std::copy(sums, sums + N_, y);
  else for (index_t n = 0; n < N_; ++n) y[n] += sums[n];
}

index_t Bf16Matrix::multi_workspace_bytes() const { return kMultiRows * round_up(Kp_ * 2, 64) + kMultiRows * Np_ * 4; }

void Bf16Matrix::gemm(index_t M, const float* X, index_t ldx, float* Y, index_t ldy, void* ws) const {
  const index_t ldb = round_up(Kp_ * 2, 64) / 2;  // uint16 per rounded row
  auto* xb = static_cast<std::uint16_t*>(ws);
  auto* sums = reinterpret_cast<float*>(static_cast<unsigned char*>(ws) + kMultiRows * ldb * 2);
  for (index_t m0 = 0; m0 < M; m0 += kMultiRows) {
    const index_t m = std::min(kMultiRows, M - m0);
    for (index_t i = 0; i < m; ++i) {
      std::uint16_t* row = xb + i * ldb;
      to_bf16(K_, X + (m0 + i) * ldx, row);
      for (index_t k = K_; k < Kp_; ++k) row[k] = 0;
    }
    if (kernel().multi) {
      kernel().multi(Np_ / kRows, Kp_ / 2, data_.data(), xb, ldb, m, sums, Np_);
    } else {
      for (index_t i = 0; i < m; ++i) gemv_sums(xb + i * ldb, sums + i * Np_);
    }
    for (index_t i = 0; i < m; ++i) std::copy(sums + i * Np_, sums + i * Np_ + N_, Y + (m0 + i) * ldy);
  }
}

}  // namespace rnncore
