// rnncore GEMM internals: the per-ISA kernel sets and the run-time choice between them.
//
// Dimension legend (GEMM letters, not the recurrent ones of common/defs.h):
//   M, N, K   C (M, N) += op(A) (M, K) * op(B) (K, N)
//   MR, NR    rows / columns of one register tile of C (the microkernel's output)
//   MC, KC, NC  cache blocks: op(A) (MC, KC) block packed to L2, op(B) (KC, NC) block in
//               L3, a (KC, NR) micro-panel of B in L1 (GotoBLAS / BLIS loop order)
//   W         SIMD width in elements (8 floats for AVX2, 16 for AVX-512, 1 for generic)
//
// Packed layouts (all produced in gemm.cpp, consumed by the microkernels):
//   A micro-panel: R <= MR rows x kc, k-major: a[k * R + i]  (row stride 1, column stride R)
//   B micro-panel: kc x NR, k-major: b[k * NR + j], columns past N zero-filled.
// A microkernel may also read an *unpacked* row-major A (row stride lda, column stride 1):
// gemm_packed does that, so it needs no workspace.
#pragma once

#include "common/cpu.h"
#include "common/defs.h"

namespace rnncore {
namespace gemm_detail {

using ::rnncore::Isa;  // common/cpu.h
using ::rnncore::active_isa;
using ::rnncore::isa_name;

constexpr int kMaxMR = 8;  // largest MR of any kernel set
constexpr int kMaxNV = 4;  // largest NR / W of any kernel set

// C tile (R, nvec * W) = alpha * A-panel (R, kc) * B-panel (kc, nvec * W) + beta * C tile,
// writing only the first n_valid <= nvec * W columns of C; beta == 0 does not read C.
// a: element (i, k) at a[i * rs_a + k * cs_a]; b: row k at b + k * ldb (W-aligned not needed).
// C must not alias a or b.
template <typename T>
using Microkernel = void (*)(index_t kc, const T* a, index_t rs_a, index_t cs_a, const T* b, index_t ldb, T alpha,
                             T beta, T* c, index_t ldc, int n_valid);

// y (n) = alpha * x (K) * B (K, n) + beta * y; x[k] at x[k * incx], B row stride ldb.
// y must not alias x or B.
template <typename T>
using GemvN = void (*)(index_t K, index_t n, const T* x, index_t incx, const T* B, index_t ldb, T alpha, T beta, T* y);

// y (n) = alpha * B (n, K) * x (K) + beta * y; x contiguous, B row stride ldb.
// y must not alias x or B.
template <typename T>
using GemvT = void (*)(index_t K, index_t n, const T* x, const T* B, index_t ldb, T alpha, T beta, T* y);

template <typename T>
struct KernelSet {
  Isa isa;
  const char* name;
  int mr, nr, w;              // tile rows, tile columns, SIMD width (nr is a multiple of w)
  index_t mc, kc, nc;         // cache blocks (mc multiple of mr, nc multiple of nr)
  Microkernel<T> ukernel[kMaxMR][kMaxNV];       // packed A panel: [rows - 1][ceil(columns / w) - 1]
  Microkernel<T> ukernel_rows[kMaxMR][kMaxNV];  // A read in place with any (rs_a, cs_a)
  GemvN<T> gemv_n;
  GemvT<T> gemv_t;
};

// Cache blocks (see the legend above) for an MR x NR register tile of `elem`-byte elements, derived
// from the host's per-core cache sizes (common/cpu.h: cache_sizes()), so a CPU with a larger L1 or
// L2 gets deeper or taller blocks without a rebuild:
//   kc: the (KC, NR) B micro-panel fills half of L1d (the other half holds the A rows and C tile);
//   mc: the packed (MC, KC) A block takes kL2Share (a quarter) of L2, leaving room for the B
//       panels streaming through (on a 512 KB L2 with AVX2 that is the fixed 126-144 rows of
//       earlier builds; a 1-2 MB L2 gets 336-678 rows);
//   nc: the (KC, NC) B block takes half of L3.
// Each is rounded down to its multiple (16, MR, NR) and clamped to [64, 512], [MR, 1024] and
// [16 NR, 4096]. The AVX2 and AVX-512 sets use this; the generic set keeps fixed blocks.
struct Blocks {
  index_t mc, kc, nc;
};
constexpr double kL2Share = 0.25;
Blocks blocks_for_caches(const CacheSizes& caches, int mr, int nr, int elem);

// Kernel sets compiled into this build: nullptr when an ISA is not compiled in (non-x86).
// The caller must check the CPU before using anything but the generic set.
const KernelSet<float>* generic_kernels_f32();
const KernelSet<double>* generic_kernels_f64();
const KernelSet<float>* avx2_kernels_f32();
const KernelSet<double>* avx2_kernels_f64();
const KernelSet<float>* avx512_kernels_f32();
const KernelSet<double>* avx512_kernels_f64();

// The kernel set of the process's ISA (common/cpu.h: active_isa()), chosen on first use.
template <typename T>
const KernelSet<T>& active_kernels();

}  // namespace gemm_detail
}  // namespace rnncore
