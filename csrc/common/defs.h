// rnncore: common definitions for the C++ kernels.
//
// Dimension letters, used in every kernel comment after this point:
//   T  time steps          B  batch size           I  input features
//   H  hidden size         G  gates per cell (RNN 1, GRU 3, LSTM 4)
//   N  packed rows = sum of the sequence lengths (= T*B when no lengths are given)
// Arrays are row-major, last dimension fastest. Inside the engine sequences are
// time-major (T, B, F). Nothing under csrc/ except csrc/bindings knows about Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace rnncore {

using index_t = std::int64_t;

#if defined(__GNUC__) || defined(__clang__)
#define RNNCORE_RESTRICT __restrict__
#define RNNCORE_INLINE inline __attribute__((always_inline))
#else
#define RNNCORE_RESTRICT
#define RNNCORE_INLINE inline
#endif

// Errors raised by kernels for input that can only be checked inside them (e.g. a length
// outside [0, T]). The bindings translate std::invalid_argument into Python's ValueError.
[[noreturn]] inline void fail(const std::string& message) { throw std::invalid_argument(message); }

}  // namespace rnncore
