// rnncore: the scalar float64 sigmoid (overflow-free).
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

}  // namespace rnncore
