// rnncore: the bf16 matrix product (see bf16_gemm.h).
//
// Blocking (GotoBLAS order, one level): K in blocks of kKCP pairs; per block every thread packs
// its share of op(B) into kNR-wide panels and of op(A) into kMR-tall panels (bf16 pairs), then the
// threads split the (row block of kMC, column panel) tiles: a row block's packed A (kMC x kKCP
// pairs, 128 KB) stays in L2 while the B panels (kKCP pairs x kNR, 32 KB) pass through L1.
// Packed layouts, in bf16 pairs (one 32-bit lane: element 2p in the low half, 2p + 1 in the high):
//   A panel: [p][i], i < kMR           (a lane per row and pair: what the kernels broadcast)
//   B panel: [p][j], j < kNR           (kNR lanes per pair: two zmm)
// Rows, columns and the k pair past the ends are zero, so every kernel computes whole tiles and
// stores only the valid part.
#include "quant/bf16_gemm.h"

#include <algorithm>
#include <cstring>

#include "common/buffer.h"
#include "common/cpu.h"
#include "common/parallel.h"
#include "gemm/gemm.h"
#include "quant/bf16.h"

#if RNNCORE_X86_SIMD
#include <immintrin.h>
#define RNNCORE_TARGET_BF16_512 __attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma")))
#endif

namespace rnncore {

namespace {

constexpr index_t kMR = 8;     // rows of a register tile
constexpr index_t kNR = 32;    // columns of a register tile: two zmm of float32
constexpr index_t kKCP = 256;  // k pairs per cache block
constexpr index_t kMC = 128;   // rows per L2 block (a multiple of kMR)

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// bf16 bits of x (quant/bf16.h: to_bf16) in the low half of a pair lane.
inline std::uint32_t bf16_bits(float x) { return to_bf16(x); }

// A pair lane's half (bits16 < 2^16) widened to float32.
inline float widen(std::uint32_t bits16) { return from_bf16(static_cast<std::uint16_t>(bits16)); }

#if RNNCORE_X86_SIMD

// to_bf16 of 8 floats at once (the same formula), each in the low half of its 32-bit lane.
RNNCORE_TARGET_AVX2 inline __m256i bf16_bits8(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i exp = _mm256_and_si256(u, _mm256_set1_epi32(0x7F800000));
  const __m256i man = _mm256_and_si256(u, _mm256_set1_epi32(0x007FFFFF));
  const __m256i top = _mm256_srli_epi32(u, 16);
  const __m256i odd = _mm256_and_si256(top, _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), odd)), 16);
  const __m256i nan = _mm256_or_si256(top, _mm256_set1_epi32(0x0040));
  const __m256i zero = _mm256_and_si256(top, _mm256_set1_epi32(0x8000));
  const __m256i is_zero = _mm256_cmpeq_epi32(exp, _mm256_setzero_si256());
  const __m256i is_nan = _mm256_andnot_si256(_mm256_cmpeq_epi32(man, _mm256_setzero_si256()),
                                             _mm256_cmpeq_epi32(exp, _mm256_set1_epi32(0x7F800000)));
  __m256i r = _mm256_blendv_epi8(rounded, nan, is_nan);
  return _mm256_blendv_epi8(r, zero, is_zero);
}

// out[j] = bits(lo[j]) | bits(hi[j]) << 16, j < n (a multiple of 8).
RNNCORE_TARGET_AVX2 void pair_rows_avx2(const float* lo, const float* hi, index_t n, std::uint32_t* out) {
  for (index_t j = 0; j < n; j += 8) {
    const __m256i a = bf16_bits8(_mm256_loadu_ps(lo + j)), b = bf16_bits8(_mm256_loadu_ps(hi + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j), _mm256_or_si256(a, _mm256_slli_epi32(b, 16)));
  }
}

// 8 rows (row r at src + r * lds, contiguous over k), npairs pairs from k = 0 (npairs a multiple
// of 8): out[p * stride + r] = bits(row_r[2p]) | bits(row_r[2p + 1]) << 16.
RNNCORE_TARGET_AVX2 void pair_cols_avx2(const float* src, index_t lds, index_t npairs, std::uint32_t* out,
                                        index_t stride) {
  for (index_t p = 0; p < npairs; p += 8) {
    __m256i v[8];
    for (int r = 0; r < 8; ++r) {  // row r: 16 floats -> 8 pairs, in order
      const float* s = src + r * lds + 2 * p;
      const __m256i a = bf16_bits8(_mm256_loadu_ps(s)), b = bf16_bits8(_mm256_loadu_ps(s + 8));
      v[r] = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
    }
    // 8 x 8 transpose of 32-bit lanes: t[p] = (v[0][p], ..., v[7][p])
    __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    __m256i t4 = _mm256_unpacklo_epi32(v[4], v[5]), t5 = _mm256_unpackhi_epi32(v[4], v[5]);
    __m256i t6 = _mm256_unpacklo_epi32(v[6], v[7]), t7 = _mm256_unpackhi_epi32(v[6], v[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    const __m256i w[8] = {_mm256_permute2x128_si256(u0, u4, 0x20), _mm256_permute2x128_si256(u1, u5, 0x20),
                          _mm256_permute2x128_si256(u2, u6, 0x20), _mm256_permute2x128_si256(u3, u7, 0x20),
                          _mm256_permute2x128_si256(u0, u4, 0x31), _mm256_permute2x128_si256(u1, u5, 0x31),
                          _mm256_permute2x128_si256(u2, u6, 0x31), _mm256_permute2x128_si256(u3, u7, 0x31)};
    for (int q = 0; q < 8; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (p + q) * stride), w[q]);
  }
}

#endif  // RNNCORE_X86_SIMD

// Whether the packers may use AVX2 (any x86 path but generic; the bits are the same either way).
bool simd_packing() {
#if RNNCORE_X86_SIMD
  static const bool on = active_isa() != Isa::generic;
  return on;
#else
  return false;
#endif
}

// kLanes source lines whose pairs of k are adjacent (line l at src + l * ld, read from k0 up to
// kend) into lane l of each pair row of a panel (pair p's row at dst + p * kLanes); lines from
// `valid` on and k from kend on are zero.
template <index_t kLanes>
void pack_adjacent_pairs(const float* src, index_t ld, index_t valid, index_t k0, index_t kend, index_t kcp,
                         std::uint32_t* RNNCORE_RESTRICT dst) {
  index_t done = 0;  // pairs packed by the vector code (lines in groups of 8)
#if RNNCORE_X86_SIMD
  if (valid == kLanes && simd_packing()) {
    done = std::max<index_t>(0, (kend - k0) / 2) / 8 * 8;
    for (index_t g = 0; g < kLanes; g += 8) pair_cols_avx2(src + g * ld + k0, ld, done, dst + g, kLanes);
  }
#endif
  for (index_t l = 0; l < kLanes; ++l) {
    std::uint32_t* d = dst + l;
    if (l >= valid) {
      for (index_t p = 0; p < kcp; ++p) d[p * kLanes] = 0;
      continue;
    }
    const float* s = src + l * ld;
    index_t p = done;
    for (; k0 + 2 * p + 1 < kend; ++p) d[p * kLanes] = bf16_bits(s[k0 + 2 * p]) | (bf16_bits(s[k0 + 2 * p + 1]) << 16);
    for (; p < kcp; ++p) d[p * kLanes] = k0 + 2 * p < kend ? bf16_bits(s[k0 + 2 * p]) : 0u;
  }
}

// A panel r of the block of pairs [p0, p0 + kcp): rows i0 + [0, kMR) of op(A).
void pack_a_panel(bool trans_a, const float* A, index_t lda, index_t M, index_t K, index_t i0, index_t p0,
                  index_t kcp, std::uint32_t* RNNCORE_RESTRICT dst) {
  const index_t rows = std::min<index_t>(kMR, M - i0);
  const index_t k0 = 2 * p0, kend = std::min<index_t>(K, 2 * (p0 + kcp));
  if (!trans_a) {  // op(A)(i, k) = A[i * lda + k]: each row's pairs are adjacent
    pack_adjacent_pairs<kMR>(A + i0 * lda, lda, rows, k0, kend, kcp, dst);
    return;
  }
  // op(A)(i, k) = A[k * lda + i]: rows of A are contiguous over i
  for (index_t p = 0; p < kcp; ++p) {
    const index_t k = k0 + 2 * p;
    std::uint32_t* d = dst + p * kMR;
    const float* lo = k < kend ? A + k * lda + i0 : nullptr;
    const float* hi = k + 1 < kend ? A + (k + 1) * lda + i0 : nullptr;
#if RNNCORE_X86_SIMD
    if (lo && hi && rows == kMR && simd_packing()) {
      pair_rows_avx2(lo, hi, kMR, d);
      continue;
    }
#endif
    for (index_t i = 0; i < kMR; ++i) {
      std::uint32_t v = 0;
      if (i < rows) v = (lo ? bf16_bits(lo[i]) : 0u) | ((hi ? bf16_bits(hi[i]) : 0u) << 16);
      d[i] = v;
    }
  }
}

// B panel of columns j0 + [0, kNR) of op(B), pairs [p0, p0 + kcp).
void pack_b_panel(bool trans_b, const float* B, index_t ldb, index_t N, index_t K, index_t j0, index_t p0,
                  index_t kcp, std::uint32_t* RNNCORE_RESTRICT dst) {
  const index_t cols = std::min<index_t>(kNR, N - j0);
  const index_t k0 = 2 * p0, kend = std::min<index_t>(K, 2 * (p0 + kcp));
  if (!trans_b) {  // op(B)(k, j) = B[k * ldb + j]: rows of B are contiguous over j
    for (index_t p = 0; p < kcp; ++p) {
      const index_t k = k0 + 2 * p;
      std::uint32_t* d = dst + p * kNR;
      const float* lo = k < kend ? B + k * ldb + j0 : nullptr;
      const float* hi = k + 1 < kend ? B + (k + 1) * ldb + j0 : nullptr;
      if (lo && hi && cols == kNR) {
#if RNNCORE_X86_SIMD
        if (simd_packing()) {
          pair_rows_avx2(lo, hi, kNR, d);
          continue;
        }
#endif
        for (index_t j = 0; j < kNR; ++j) d[j] = bf16_bits(lo[j]) | (bf16_bits(hi[j]) << 16);
        continue;
      }
      for (index_t j = 0; j < kNR; ++j) {
        std::uint32_t v = 0;
        if (j < cols) v = (lo ? bf16_bits(lo[j]) : 0u) | ((hi ? bf16_bits(hi[j]) : 0u) << 16);
        d[j] = v;
      }
    }
    return;
  }
  // op(B)(k, j) = B[j * ldb + k]: each column's pairs are adjacent
  pack_adjacent_pairs<kNR>(B + j0 * ldb, ldb, cols, k0, kend, kcp, dst);
}

// C tile (rows <= kMR, cols <= kNR) = [C +] A panel * B panel over kcp pairs.
using TileKernel = void (*)(index_t kcp, const std::uint32_t* a, const std::uint32_t* b, float* c, index_t ldc,
                            index_t rows, index_t cols, bool accumulate);

void tile_generic(index_t kcp, const std::uint32_t* a, const std::uint32_t* b, float* c, index_t ldc, index_t rows,
                  index_t cols, bool accumulate) {
  float acc[kMR][kNR];
  for (index_t i = 0; i < kMR; ++i)
    for (index_t j = 0; j < kNR; ++j) acc[i][j] = accumulate && i < rows && j < cols ? c[i * ldc + j] : 0.0f;
  for (index_t p = 0; p < kcp; ++p) {
    for (index_t i = 0; i < kMR; ++i) {
      const std::uint32_t av = a[p * kMR + i];
      const float a_lo = widen(av & 0xFFFFu), a_hi = widen(av >> 16);
      for (index_t j = 0; j < kNR; ++j) {
        const std::uint32_t bv = b[p * kNR + j];
        float t = acc[i][j];
        t = t + a_hi * widen(bv >> 16);  // the odd element first, as vdpbf16ps (products exact)
        t = t + a_lo * widen(bv & 0xFFFFu);
        acc[i][j] = t;
      }
    }
  }
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < cols; ++j) c[i * ldc + j] = acc[i][j];
}

#if RNNCORE_X86_SIMD

// 8 columns at a time (4 passes over the tile): 8 accumulators, the pair split into its odd
// (high) and even (low) halves by a mask and a shift, two FMAs per pair; FMA of an exact product
// rounds once, as vdpbf16ps's addition does.
RNNCORE_TARGET_AVX2 void tile_avx2(index_t kcp, const std::uint32_t* a, const std::uint32_t* b, float* c,
                                   index_t ldc, index_t rows, index_t cols, bool accumulate) {
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (index_t q = 0; q < kNR / 8; ++q) {
    const index_t c0 = q * 8;
    if (c0 >= cols) break;
    const index_t nc = std::min<index_t>(8, cols - c0);
    __m256 acc[kMR];
    alignas(32) float tmp[8];
    for (index_t i = 0; i < kMR; ++i) {
      if (accumulate && i < rows) {
        if (nc == 8) {
          acc[i] = _mm256_loadu_ps(c + i * ldc + c0);
        } else {
          for (index_t j = 0; j < 8; ++j) tmp[j] = j < nc ? c[i * ldc + c0 + j] : 0.0f;
          acc[i] = _mm256_load_ps(tmp);
        }
      } else {
        acc[i] = _mm256_setzero_ps();
      }
    }
    for (index_t p = 0; p < kcp; ++p) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + p * kNR + c0));
      const __m256 b_hi = _mm256_castsi256_ps(_mm256_and_si256(v, hi_mask));
      const __m256 b_lo = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
      const std::uint32_t* ap = a + p * kMR;
#pragma GCC unroll 8
      for (index_t i = 0; i < kMR; ++i) {
        const __m256 a_hi = _mm256_set1_ps(widen(ap[i] >> 16));
        const __m256 a_lo = _mm256_set1_ps(widen(ap[i] & 0xFFFFu));
        acc[i] = _mm256_fmadd_ps(a_hi, b_hi, acc[i]);
        acc[i] = _mm256_fmadd_ps(a_lo, b_lo, acc[i]);
      }
    }
#pragma GCC unroll 8
    for (index_t i = 0; i < kMR; ++i) {  // unrolled: see tile_bf16_512
      if (i >= rows) continue;
      if (nc == 8) {
        _mm256_storeu_ps(c + i * ldc + c0, acc[i]);
      } else {
        _mm256_store_ps(tmp, acc[i]);
        for (index_t j = 0; j < nc; ++j) c[i * ldc + c0 + j] = tmp[j];
      }
    }
  }
}

RNNCORE_TARGET_BF16_512 void tile_bf16_512(index_t kcp, const std::uint32_t* a, const std::uint32_t* b, float* c,
                                           index_t ldc, index_t rows, index_t cols, bool accumulate) {
  const __mmask16 m0 = cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << cols) - 1u);
  const __mmask16 m1 = cols >= 32 ? __mmask16(0xFFFF) : cols > 16 ? __mmask16((1u << (cols - 16)) - 1u) : __mmask16(0);
  __m512 acc0[kMR], acc1[kMR];
#pragma GCC unroll 8
  for (index_t i = 0; i < kMR; ++i) {
    if (accumulate && i < rows) {
      acc0[i] = _mm512_maskz_loadu_ps(m0, c + i * ldc);
      acc1[i] = _mm512_maskz_loadu_ps(m1, c + i * ldc + 16);
    } else {
      acc0[i] = _mm512_setzero_ps();
      acc1[i] = _mm512_setzero_ps();
    }
  }
  for (index_t p = 0; p < kcp; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b + p * kNR);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(b + p * kNR + 16);
    const std::uint32_t* ap = a + p * kMR;
#pragma GCC unroll 8
    for (index_t i = 0; i < kMR; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(ap[i]));
      acc0[i] = _mm512_dpbf16_ps(acc0[i], av, b0);
      acc1[i] = _mm512_dpbf16_ps(acc1[i], av, b1);
    }
  }
  // Unrolled over all kMR rows (the accumulators stay in registers; a loop to `rows` would spill
  // them to the stack first).
#pragma GCC unroll 8
  for (index_t i = 0; i < kMR; ++i) {
    if (i < rows) {
      _mm512_mask_storeu_ps(c + i * ldc, m0, acc0[i]);
      _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc1[i]);
    }
  }
}

// The per-step products of small batches (gemm_bf16_prepacked, rows < kMR): the tile kernels
// above compute all kMR rows of a panel, so one row wastes 7/8 of the work, and the few chains of
// dependent sums left then wait on the instruction latency. These kernels compute only R rows and
// take NP column panels at once, so that R x NP x (lanes) independent sums hide the latency. Each
// element's sum keeps the one order (pair after pair, the odd product first): the same bits.
// a: the row panel ([p][i], i < kMR); b: NP panels, panel g at b + g * bstride ([p][j], j < kNR);
// c: R rows x cols (cols <= NP * kNR; the panels past cols are zero-padded and never stored).

template <int R, int NP>
RNNCORE_TARGET_BF16_512 void narrow_bf16_512(index_t kcp, const std::uint32_t* a, const std::uint32_t* b,
                                             index_t bstride, float* c, index_t ldc, index_t cols, bool accumulate) {
  constexpr int V = 2 * NP;  // 16-lane vectors across the panels
  __mmask16 m[V];
  for (int v = 0; v < V; ++v) {
    const index_t n = cols - 16 * v;
    m[v] = n >= 16 ? __mmask16(0xFFFF) : n > 0 ? __mmask16((1u << n) - 1u) : __mmask16(0);
  }
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v)
      acc[i][v] = accumulate ? _mm512_maskz_loadu_ps(m[v], c + i * ldc + 16 * v) : _mm512_setzero_ps();
  for (index_t p = 0; p < kcp; ++p) {
    __m512bh bv[V];
#pragma GCC unroll 8
    for (int g = 0; g < NP; ++g) {
      bv[2 * g] = (__m512bh)_mm512_load_si512(b + g * bstride + p * kNR);
      bv[2 * g + 1] = (__m512bh)_mm512_load_si512(b + g * bstride + p * kNR + 16);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[p * kMR + i]));
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], av, bv[v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v)
      if (m[v]) _mm512_mask_storeu_ps(c + i * ldc + 16 * v, m[v], acc[i][v]);
}

// The emulation's (tile_avx2's arithmetic) R rows x NP panels, 8 columns per accumulator.
template <int R, int NP>
RNNCORE_TARGET_AVX2 void narrow_avx2(index_t kcp, const std::uint32_t* a, const std::uint32_t* b, index_t bstride,
                                     float* c, index_t ldc, index_t cols, bool accumulate) {
  constexpr int V = 4 * NP;  // 8-lane vectors across the panels
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m256 acc[R][V];
  alignas(32) float tmp[8];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) {
      const index_t n = std::min<index_t>(8, cols - 8 * v);
      if (!accumulate || n <= 0) {
        acc[i][v] = _mm256_setzero_ps();
      } else if (n == 8) {
        acc[i][v] = _mm256_loadu_ps(c + i * ldc + 8 * v);
      } else {
        for (index_t j = 0; j < 8; ++j) tmp[j] = j < n ? c[i * ldc + 8 * v + j] : 0.0f;
        acc[i][v] = _mm256_load_ps(tmp);
      }
    }
  for (index_t p = 0; p < kcp; ++p) {
    __m256 a_hi[R], a_lo[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      a_hi[i] = _mm256_set1_ps(widen(a[p * kMR + i] >> 16));
      a_lo[i] = _mm256_set1_ps(widen(a[p * kMR + i] & 0xFFFFu));
    }
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      const __m256i w = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + (v / 4) * bstride + p * kNR + (v % 4) * 8));
      const __m256 b_hi = _mm256_castsi256_ps(_mm256_and_si256(w, hi_mask));
      const __m256 b_lo = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        acc[i][v] = _mm256_fmadd_ps(a_hi[i], b_hi, acc[i][v]);
        acc[i][v] = _mm256_fmadd_ps(a_lo[i], b_lo, acc[i][v]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < V; ++v) {
      const index_t n = std::min<index_t>(8, cols - 8 * v);
      if (n == 8) {
        _mm256_storeu_ps(c + i * ldc + 8 * v, acc[i][v]);
      } else if (n > 0) {
        _mm256_store_ps(tmp, acc[i][v]);
        for (index_t j = 0; j < n; ++j) c[i * ldc + 8 * v + j] = tmp[j];
      }
    }
}

#endif  // RNNCORE_X86_SIMD

// rows (< kMR) rows of C, all N columns, from a row panel and the packed B; false: not for this
// many rows (the tile kernel serves them). nullptr: the tile kernel serves every small batch.
using NarrowKernel = bool (*)(index_t rows, index_t kcp, const std::uint32_t* a, const std::uint32_t* b, index_t N,
                              float* c, index_t ldc, bool accumulate);

struct Kernel {
  TileKernel tile;
  NarrowKernel narrow;
  const char* name;
};

#if RNNCORE_X86_SIMD

// Panels in groups of NP, then of NP / 2, ... (a few panels: as many chains as there are), then one
// at a time; bstride = kcp * kNR (a panel).
template <int R, int NP, template <int, int> class Fn>
void narrow_panels(index_t kcp, const std::uint32_t* a, const std::uint32_t* b, index_t N, float* c, index_t ldc,
                   bool accumulate, index_t q = 0) {
  const index_t npan = ceil_div(N, kNR), bstride = kcp * kNR;
  for (; q + NP <= npan; q += NP)
    Fn<R, NP>::run(kcp, a, b + q * bstride, bstride, c + q * kNR, ldc, std::min<index_t>(NP * kNR, N - q * kNR),
                   accumulate);
  if constexpr (NP > 1) narrow_panels<R, NP / 2, Fn>(kcp, a, b, N, c, ldc, accumulate, q);
}

template <int R, int NP>
struct Bf16Narrow {
  static void run(index_t kcp, const std::uint32_t* a, const std::uint32_t* b, index_t bstride, float* c, index_t ldc,
                  index_t cols, bool accumulate) {
    narrow_bf16_512<R, NP>(kcp, a, b, bstride, c, ldc, cols, accumulate);
  }
};

template <int R, int NP>
struct Avx2Narrow {
  static void run(index_t kcp, const std::uint32_t* a, const std::uint32_t* b, index_t bstride, float* c, index_t ldc,
                  index_t cols, bool accumulate) {
    narrow_avx2<R, NP>(kcp, a, b, bstride, c, ldc, cols, accumulate);
  }
};

// Chains per row: 2 x NP vectors; the NP for each R keeps at least 8 independent sums in flight.
bool narrow_bf16(index_t rows, index_t kcp, const std::uint32_t* a, const std::uint32_t* b, index_t N, float* c,
                 index_t ldc, bool accumulate) {
  switch (rows) {
    case 1: narrow_panels<1, 4, Bf16Narrow>(kcp, a, b, N, c, ldc, accumulate); break;
    case 2: narrow_panels<2, 2, Bf16Narrow>(kcp, a, b, N, c, ldc, accumulate); break;
    case 3: narrow_panels<3, 2, Bf16Narrow>(kcp, a, b, N, c, ldc, accumulate); break;
    case 4: narrow_panels<4, 2, Bf16Narrow>(kcp, a, b, N, c, ldc, accumulate); break;
    case 5: narrow_panels<5, 1, Bf16Narrow>(kcp, a, b, N, c, ldc, accumulate); break;
    case 6: narrow_panels<6, 1, Bf16Narrow>(kcp, a, b, N, c, ldc, accumulate); break;
    default: narrow_panels<7, 1, Bf16Narrow>(kcp, a, b, N, c, ldc, accumulate); break;
  }
  return true;
}

// AVX2 has 16 vector registers: one row takes two panels (8 sums), two rows one; from three rows
// on, the tile kernel (8 sums per pass) is as good.
bool narrow_emulated(index_t rows, index_t kcp, const std::uint32_t* a, const std::uint32_t* b, index_t N, float* c,
                     index_t ldc, bool accumulate) {
  if (rows == 1) narrow_panels<1, 2, Avx2Narrow>(kcp, a, b, N, c, ldc, accumulate);
  else if (rows == 2) narrow_panels<2, 1, Avx2Narrow>(kcp, a, b, N, c, ldc, accumulate);
  return rows <= 2;
}

#endif  // RNNCORE_X86_SIMD

Kernel choose_kernel() {
#if RNNCORE_X86_SIMD
  const Isa isa = active_isa();
  if (isa == Isa::avx512 && cpu_has_avx512_bf16()) return {tile_bf16_512, narrow_bf16, "avx512bf16"};
  if (isa == Isa::avx512 || isa == Isa::avx2) return {tile_avx2, narrow_emulated, "avx2"};
#endif
  return {tile_generic, nullptr, "generic"};
}

const Kernel& kernel() {
  static const Kernel k = choose_kernel();
  return k;
}

}  // namespace

const char* gemm_bf16_kernel_name() { return kernel().name; }

void Bf16PackedB::reserve(index_t K, index_t N) {
  K_ = K;
  N_ = N;
  data_.resize(std::max<index_t>(1, ceil_div(N, kNR) * ceil_div(K, 2) * kNR));
}

void Bf16PackedB::fill(bool trans_b, const float* B, index_t ldb) noexcept {
  const index_t KP = ceil_div(K_, 2);
  for (index_t q = 0; q * kNR < N_; ++q) pack_b_panel(trans_b, B, ldb, N_, K_, q * kNR, 0, KP, data_.data() + q * KP * kNR);
}

namespace {

// An empty C, or K = 0 (C = beta * C: zeros for beta 0): done, nothing to multiply.
bool empty_product(index_t M, index_t N, index_t K, float beta, float* C, index_t ldc) {
  if (M <= 0 || N <= 0) return true;
  if (K > 0) return false;
  if (beta == 0.0f)
    for (index_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
  return true;
}

}  // namespace

index_t bf16_apack_size(index_t M, index_t K) { return std::max<index_t>(1, ceil_div(M, kMR) * kMR * ceil_div(K, 2)); }

void pack_a_bf16(index_t M, index_t K, const float* A, index_t lda, std::uint32_t* apack) noexcept {
  const index_t KP = ceil_div(K, 2);
  for (index_t r = 0; r * kMR < M; ++r) pack_a_panel(false, A, lda, M, K, r * kMR, 0, KP, apack + r * KP * kMR);
}

void gemm_bf16_prepacked(index_t M, const std::uint32_t* apack, const Bf16PackedB& B, float beta, float* C,
                         index_t ldc) noexcept {
  const index_t K = B.rows(), N = B.cols(), KP = ceil_div(K, 2);
  if (empty_product(M, N, K, beta, C, ldc)) return;
  const Kernel& k = kernel();
  const TileKernel tile = k.tile;
  const bool accumulate = beta != 0.0f;
  if (M < kMR && k.narrow && k.narrow(M, KP, apack, B.data(), N, C, ldc, accumulate))
    return;  // a small batch: only its rows (one row panel)
  for (index_t q = 0; q * kNR < N; ++q) {
    const index_t cols = std::min<index_t>(kNR, N - q * kNR);
    for (index_t r = 0; r * kMR < M; ++r)
      tile(KP, apack + r * KP * kMR, B.data() + q * KP * kNR, C + r * kMR * ldc + q * kNR, ldc,
           std::min<index_t>(kMR, M - r * kMR), cols, accumulate);
  }
}

void gemm_bf16(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const float* A, index_t lda,
               const float* B, index_t ldb, float beta, float* C, index_t ldc, int nthreads) {
  if (empty_product(M, N, K, beta, C, ldc)) return;
  const TileKernel tile = kernel().tile;
  const index_t KP = ceil_div(K, 2), kcp_max = std::min(kKCP, KP);
  const index_t npan = ceil_div(N, kNR), mpan = ceil_div(M, kMR);
  const index_t panels_per_block = kMC / kMR, mblocks = ceil_div(mpan, panels_per_block);
  AlignedBuffer<std::uint32_t> bpack(npan * kcp_max * kNR);
  AlignedBuffer<std::uint32_t> apack(mpan * kcp_max * kMR);
  std::uint32_t* bp = bpack.data();
  std::uint32_t* ap = apack.data();
  const int nt = gemm_threads(M, N, K, nthreads);
  for (index_t p0 = 0; p0 < KP; p0 += kKCP) {
    const index_t kcp = std::min(kKCP, KP - p0);
    const bool accumulate = p0 > 0 || beta != 0.0f;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (index_t t = 0; t < npan + mpan; ++t) {  // the B panels, then the A panels
      if (t < npan) pack_b_panel(trans_b, B, ldb, N, K, t * kNR, p0, kcp, bp + t * kcp * kNR);
      else pack_a_panel(trans_a, A, lda, M, K, (t - npan) * kMR, p0, kcp, ap + (t - npan) * kcp * kMR);
    }
#pragma omp parallel for collapse(2) num_threads(nt) schedule(static) if (nt > 1)
    for (index_t mb = 0; mb < mblocks; ++mb)
      for (index_t q = 0; q < npan; ++q) {
        FlushToZeroGuard ftz;  // per thread (MXCSR is not shared): vdpbf16ps always flushes
        const index_t r_end = std::min(mpan, (mb + 1) * panels_per_block);
        const index_t cols = std::min<index_t>(kNR, N - q * kNR);
        for (index_t r = mb * panels_per_block; r < r_end; ++r) {
          const index_t rows = std::min<index_t>(kMR, M - r * kMR);
          tile(kcp, ap + r * kcp * kMR, bp + q * kcp * kNR, C + r * kMR * ldc + q * kNR, ldc, rows, cols, accumulate);
        }
      }
  }
}

}  // namespace rnncore
