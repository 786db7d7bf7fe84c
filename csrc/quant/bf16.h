// rnncore: bfloat16 weights for inference (issue 16): the matrices stored as bf16 (the top 16
// bits of a float32, rounded to nearest even), each product's input vector rounded to bf16 at
// every call, the products summed in float32.
//
// The sum, per output row, is defined in the order of AVX-512-BF16's vdpbf16ps, so that every
// kernel gives the same bits: k is taken in pairs (2g, 2g + 1); even pairs go to one partial sum
// and odd pairs to another (two independent chains), and each pair adds x[2g+1] w[2g+1] first, then
// x[2g] w[2g], each addition rounded to float32 (a bf16 x bf16 product is exact in float32);
// y = partial_even + partial_odd. Denormals are flushed (the decoder runs with FTZ/DAZ, as
// vdpbf16ps always does); on such values the kernels may differ, nowhere else.
// Kernels, chosen by RNNCORE_ISA and the CPU:
//   avx512 with AVX-512-BF16  vdpbf16ps;
//   avx2 (and avx512 without BF16)  bf16 widened to float32 by a shift, then multiply and add;
//   generic  the same in scalar code.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/buffer.h"
#include "common/defs.h"

namespace rnncore {

// float32 -> bf16 rounded to nearest even (NaN stays a quiet NaN; a denormal becomes a signed zero),
// and back (exact). Written without branches, so that loops over them vectorise; the one rounding
// every bf16 path uses (the decoder's weights, round_bf16, the bf16 GEMM's packing).
inline std::uint16_t to_bf16(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  const std::uint32_t exp = u & 0x7F800000u, man = u & 0x007FFFFFu;
  const std::uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t nan = (u >> 16) | 0x0040u;
  const std::uint32_t zero = (u >> 16) & 0x8000u;
  return static_cast<std::uint16_t>(exp == 0 ? zero : (exp == 0x7F800000u && man != 0 ? nan : rounded));
}
inline float from_bf16(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
void to_bf16(index_t n, const float* x, std::uint16_t* out);
// x rounded to bf16 and widened back, as float32 (out may be x): the value a bf16 operand has. The
// bf16 mixed-precision layers (recurrent/recurrent.h) round every GEMM operand with it.
void round_bf16(index_t n, const float* x, float* out);

// The name of the bf16 product kernel this process runs: "avx512bf16", "avx2" or "generic".
const char* bf16_kernel_name();

// A bf16 weight matrix (N, K) packed for the product with one vector: blocks of 16 rows, k in
// pairs: element ((nb * Kp / 2 + g) * 16 + r) * 2 + j holds W[16 nb + r, 2 g + j]; padding is zero.
class Bf16Matrix {
 public:
  void pack(index_t N, index_t K, const std::uint16_t* w, index_t ldw);
  index_t rows() const { return N_; }
  index_t cols() const { return K_; }
  // Workspace bytes of gemv() (the rounded input and the padded sums).
  index_t workspace_bytes() const;
  // y (N) = W x, x rounded to bf16; beta 0 writes y, 1 adds to it. ws: workspace_bytes(), 64-aligned.
  void gemv(const float* x, float* y, float beta, void* ws) const;
  // Y (M, N) (row stride ldy) = W X^T for M vectors X (M, K) (row stride ldx), each row the same
  // bits as gemv(); with vdpbf16ps each block of 16 weight rows is read once per 4 vectors.
  // ws: multi_workspace_bytes(), 64-byte aligned.
  static constexpr index_t kMultiRows = 64;
  index_t multi_workspace_bytes() const;
  void gemm(index_t M, const float* X, index_t ldx, float* Y, index_t ldy, void* ws) const;
  // The raw sums (padded rows, 16 * ceil(N / 16)) of W xb for an already rounded xb (Kp values).
  void gemv_sums(const std::uint16_t* xb, float* sums) const;
  index_t padded_cols() const { return Kp_; }
  index_t padded_rows() const { return Np_; }

 private:
  index_t N_ = 0, K_ = 0, Np_ = 0, Kp_ = 0;
  AlignedBuffer<std::uint16_t> data_;
};

}  // namespace rnncore
