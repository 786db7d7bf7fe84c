// rnncore: the bf16 matrix product of bfloat16 mixed precision (recurrent/recurrent.h: bf16).
//
//   C (M, N) = op(A) (M, K) * op(B) (K, N) + beta * C,   beta 0 (C not read) or 1
//
// Row-major as gemm/gemm.h: op(A) = A (M, K), or A^T when trans_a (A stored (K, M)); op(B) = B
// (K, N), or B^T when trans_b (B stored (N, K)). A and B are float32; each element is rounded to
// bf16 (nearest even, denormals to zero; quant/bf16.h) as it is packed, so bf16-valued inputs
// lose nothing.
//
// The sum of every element of C has one fixed order: c = beta * C; then for each pair of k,
// p = 0, 1, ...: c += a[2p+1] b[2p+1], then c += a[2p] b[2p], each addition rounded to float32
// (a product of two bf16 is exact in float32; an odd K pads a zero). That is the order of
// AVX-512-BF16's vdpbf16ps, so every kernel, cache blocking and thread count gives the same
// bits (denormal products aside: vdpbf16ps flushes them), and a float32 numpy loop over the
// pairs reproduces them exactly.
// Kernels, by RNNCORE_ISA and the CPU: avx512bf16 (vdpbf16ps: 32 multiply-adds per instruction,
// twice float32's FMA); avx2 (bf16 widened to float32 by a shift, two FMAs per pair; also AVX-512
// hosts without BF16); generic (scalar, the same order).
#pragma once

#include <cstdint>

#include "common/defs.h"

namespace rnncore {

void gemm_bf16(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const float* A, index_t lda,
               const float* B, index_t ldb, float beta, float* C, index_t ldc, int nthreads);

// "avx512bf16", "avx2" or "generic": the kernel gemm_bf16 runs in this process.
const char* gemm_bf16_kernel_name();

// Is vdpbf16ps there (AVX-512 F, BW and BF16, and the OS saves the ZMM state)?
bool cpu_has_avx512_bf16();

}  // namespace rnncore
