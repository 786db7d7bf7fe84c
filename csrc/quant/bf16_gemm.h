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

#include "common/buffer.h"
#include "common/defs.h"

namespace rnncore {

void gemm_bf16(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const float* A, index_t lda,
               const float* B, index_t ldb, float beta, float* C, index_t ldc, int nthreads);

// op(B) (K, N) packed once into bf16 panels for many products with different left operands (a
// recurrent slice's weights, reused at every step): all of K in one block.
class Bf16PackedB {
 public:
  void reserve(index_t K, index_t N);  // allocates (may throw std::bad_alloc)
  void fill(bool trans_b, const float* B, index_t ldb) noexcept;  // packs op(B) of the reserved shape
  index_t rows() const { return K_; }
  index_t cols() const { return N_; }
  const std::uint32_t* data() const { return data_.data(); }

 private:
  index_t K_ = 0, N_ = 0;
  AlignedBuffer<std::uint32_t> data_;
};

// The per-step products: A (M, K) (row stride lda) packed once into `apack` (bf16_apack_size(M, K)
// values, 64-byte aligned), then C (M, N) = A * B + beta * C for any B of K rows packed above,
// serial (for a parallel region's thread), the same bits as gemm_bf16 on the same operands.
index_t bf16_apack_size(index_t M, index_t K);
void pack_a_bf16(index_t M, index_t K, const float* A, index_t lda, std::uint32_t* apack) noexcept;
void gemm_bf16_prepacked(index_t M, const std::uint32_t* apack, const Bf16PackedB& B, float beta, float* C,
                         index_t ldc) noexcept;

// "avx512bf16", "avx2" or "generic": the kernel gemm_bf16 runs in this process.
const char* gemm_bf16_kernel_name();

// Is vdpbf16ps there (AVX-512 F, BW and BF16, and the OS saves the ZMM state)?
bool cpu_has_avx512_bf16();

}  // namespace rnncore
