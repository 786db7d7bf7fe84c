// rnncore: scalar activations used by the cell kernels.
//
// float64 uses the C library (exact to ~1 ulp): it is the path gradient checks run on.
// float32 uses the same definitions; the vectorised versions replace these per cell loop.
#pragma once

#include <cmath>

#include "common/defs.h"

namespace rnncore {

template <typename T>
RNNCORE_INLINE T sigmoid(T x) {
  // Written so that neither branch overflows: exp of a non-positive number only.
  if (x >= T(0)) {
    const T e = std::exp(-x);
    return T(1) / (T(1) + e);
  }
  const T e = std::exp(x);
  return e / (T(1) + e);
}

template <typename T>
RNNCORE_INLINE T tanh_(T x) {
  return std::tanh(x);
}

template <typename T>
RNNCORE_INLINE T relu(T x) {
  return x > T(0) ? x : T(0);
}

}  // namespace rnncore
