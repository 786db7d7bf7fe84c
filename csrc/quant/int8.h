// rnncore: dynamic int8 quantization for inference (issue 16), the scheme of ONNX Runtime's
// DynamicQuantizeLSTM / MatMulInteger:
//
//   weights      symmetric s8 per output row: scale_n = max_k |W[n, k]| / 127,
//                q[n, k] = clamp(round(W[n, k] / scale_n), -127, 127)   (a zero row: scale 1, q 0)
//   activations  u8 with a zero point, chosen per vector at every call (DynamicQuantizeLinear):
//                lo = min(0, min x), hi = max(0, max x), s = (hi - lo) / 255 (s = 1 when hi == lo),
//                zp = round(-lo / s), xq[k] = clamp(round(x[k] / s) + zp, 0, 255)
//   product      acc[n] = sum_k xq[k] * q[n, k] in int32 (exact: no rounding, no saturation);
//                y[n] = float(acc[n] - zp * rowsum[n]) * (s * scale_n),  rowsum[n] = sum_k q[n, k]
// `round` is round-half-to-even everywhere (IEEE's default, as numpy's np.round and ONNX's Round).
//
// Every kernel computes the same exact int32 sums and shares the float steps before and after
// them (quantize_u8, the epilogue), so every ISA path gives the same bits as the others and as a
// numpy reference written from the formulas above (tests/test_quant.py checks all three).
// Kernels, chosen by the engine's one switch (common/cpu.h, RNNCORE_ISA):
//   avx512 with AVX-512-VNNI  vpdpbusd: four u8 x s8 products summed into each int32 lane;
//   avx2 (and avx512 without VNNI)  u8 and s8 widened to s16 (vpmovzxbw / vpmovsxbw), then
//                vpmaddwd: exact. vpmaddubsw, the usual AVX2 int8 product, is not used: it sums
//                two u8 x s8 products into a *saturating* s16, and 2 * 255 * 127 = 64770 does not fit;
//   generic      plain int32 loops.
// The int32 sums cannot overflow while K <= kMaxInt8K (255 * 128 * K < 2^31: weights may hold -128
// when given ready-made, though quantize_rows_s8 never makes it).
#pragma once

#include <cstdint>

#include "common/buffer.h"
#include "common/defs.h"

namespace rnncore {

constexpr index_t kQRows = 16;   // rows of one packed block (one zmm of int32 sums)
constexpr index_t kQGroup = 4;   // consecutive k of one row in one 32-bit lane
constexpr index_t kMaxInt8K = 65793;

// Rows of W (N, K), row stride ldw, into q (N, K) (row stride ldq) and scale (N), as above.
void quantize_rows_s8(index_t N, index_t K, const float* W, index_t ldw, std::int8_t* q, index_t ldq, float* scale);

struct U8Params {
  float scale = 1;
  std::int32_t zero_point = 0;
};
// x (K) into xq (K) as above. A vector holding NaN or an infinity gets scale NaN (xq is then
// meaningless), so that every output computed from it is NaN and the caller's non-finite check
// sees it.
U8Params quantize_u8(index_t K, const float* x, std::uint8_t* xq);

// The name of the int8 product kernel this process runs: "vnni512", "avx2" or "generic".
const char* int8_kernel_name();

// A quantized weight matrix (N, K) packed for the product with one activation vector:
// blocks of kQRows rows, k grouped by kQGroup: byte ((nb * Kp / 4 + g) * 16 + r) * 4 + j holds
// q[16 nb + r, 4 g + j]; rows past N and columns past K are zero.
class Int8Matrix {
 public:
  // q (N, K) with row stride ldq, scale (N). Throws std::invalid_argument when K > kMaxInt8K.
  void pack(index_t N, index_t K, const std::int8_t* q, index_t ldq, const float* scale);
  index_t rows() const { return N_; }
  index_t cols() const { return K_; }
  // Workspace sizes of gemv(): xq bytes and acc int32s.
  index_t xq_size() const { return Kp_; }
  index_t acc_size() const { return Np_; }
  // acc (acc_size()) = packed rows * xq (xq_size() bytes; entries past K are ignored).
  void gemv_acc(const std::uint8_t* xq, std::int32_t* acc) const;
  // y (N) = the dequantized product with x (K), x quantized into xq; beta 0 writes y, 1 adds to it.
  void gemv(const float* x, float* y, float beta, std::uint8_t* xq, std::int32_t* acc) const;
  // Y (M, N) (row stride ldy) = the same for M vectors X (M, K) (row stride ldx), each quantized on
  // its own, so every row equals gemv()'s bit for bit; the weights are read once per kMultiRows
  // vectors (VNNI) instead of once per vector. ws: multi_workspace_bytes(), 64-byte aligned.
  static constexpr index_t kMultiRows = 64;
  index_t multi_workspace_bytes() const;
  void gemm(index_t M, const float* X, index_t ldx, float* Y, index_t ldy, void* ws) const;

 private:
  index_t N_ = 0, K_ = 0, Np_ = 0, Kp_ = 0;
  AlignedBuffer<std::int8_t> data_;
  AlignedBuffer<float> scale_;
  AlignedBuffer<std::int32_t> rowsum_;
};

}  // namespace rnncore
