// rnncore: one weight matrix in a reduced precision for the decoding loop (generate/decoder.h):
// int8 (quant/int8.h) or bf16 (quant/bf16.h), behind one product call.
#pragma once

#include <cstdint>

#include "quant/bf16.h"
#include "quant/int8.h"

namespace rnncore {

enum class WeightFormat : int { f32 = 0, int8 = 1, bf16 = 2 };

// A reduced-precision matrix as the caller holds it: int8 `data` (rows, cols) with `scale` (rows),
// or bf16 bits `data` (rows, cols) with no scale.
struct LowpWeight {
  const void* data = nullptr;
  const float* scale = nullptr;
};

inline index_t element_bytes(WeightFormat f) { return f == WeightFormat::bf16 ? 2 : f == WeightFormat::int8 ? 1 : 4; }

class LowpMatrix {
 public:
  // Rows of w (N, K) with row stride ldw elements; scale (N) for int8.
  void pack(WeightFormat f, index_t N, index_t K, const void* w, index_t ldw, const float* scale) {
    f_ = f;
    if (f == WeightFormat::int8) i8_.pack(N, K, static_cast<const std::int8_t*>(w), ldw, scale);
    else b16_.pack(N, K, static_cast<const std::uint16_t*>(w), ldw);
  }
  index_t workspace_bytes() const {
    return f_ == WeightFormat::int8 ? (i8_.xq_size() + 63) / 64 * 64 + 4 * i8_.acc_size() : b16_.workspace_bytes();
  }
  // Workspace bytes of gemm().
  index_t multi_workspace_bytes() const {
    return f_ == WeightFormat::int8 ? i8_.multi_workspace_bytes() : b16_.multi_workspace_bytes();
  }
  // Y (M, N) = X (M, K) W^T, row by row as gemv() (the same bits); ws: multi_workspace_bytes().
  void gemm(index_t M, const float* X, index_t ldx, float* Y, index_t ldy, void* ws) const {
    if (f_ == WeightFormat::int8) i8_.gemm(M, X, ldx, Y, ldy, ws);
    else b16_.gemm(M, X, ldx, Y, ldy, ws);
  }
  // y (N) = W x (+ y when beta is 1); ws: workspace_bytes(), 64-byte aligned.
  void gemv(const float* x, float* y, float beta, void* ws) const {
    if (f_ == WeightFormat::int8) {
      auto* xq = static_cast<std::uint8_t*>(ws);
      auto* acc = reinterpret_cast<std::int32_t*>(xq + (i8_.xq_size() + 63) / 64 * 64);
      i8_.gemv(x, y, beta, xq, acc);
    } else {
      b16_.gemv(x, y, beta, ws);
    }
  }

 private:
  WeightFormat f_ = WeightFormat::int8;
  Int8Matrix i8_;
  Bf16Matrix b16_;
};

}  // namespace rnncore
