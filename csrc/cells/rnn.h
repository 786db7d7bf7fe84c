// Elman RNN cell, PyTorch's form: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu.
// Pointwise forward and backward side by side; the matrix products live in recurrent/.
#pragma once

#include "common/vmath.h"

namespace rnncore {

enum class Activation { Tanh, Relu };

template <typename T>
struct RNNCell {
  static constexpr int G = 1;

  // One row, units [lo, hi).
  // xg: (H) x-projection.  hg: (hs) W_hh h for units lo.. (hs = hi - lo).
  // bias: (H) b_ih + b_hh, or null when xg already holds the biases.
  // h: (H) new state, written at [lo, hi). h may not alias xg, hg or bias.
  static void forward(Activation act, const T* RNNCORE_RESTRICT xg, const T* RNNCORE_RESTRICT hg,
                      const T* RNNCORE_RESTRICT bias, T* RNNCORE_RESTRICT h, index_t lo, index_t hi) {
    if (bias) {
      for (index_t u = lo; u < hi; ++u) h[u] = xg[u] + (hg[u - lo] + bias[u]);
    } else {
      for (index_t u = lo; u < hi; ++u) h[u] = xg[u] + hg[u - lo];
    }
    if (act == Activation::Tanh) {
      vtanh(h + lo, h + lo, hi - lo);
    } else {
      for (index_t u = lo; u < hi; ++u) h[u] = h[u] > T(0) ? h[u] : T(0);
    }
  }

  // One row, units [lo, hi). Derivatives from the saved output h (d tanh = 1 - h^2).
  // dh_carry: (H) gradient from step t+1, read; dy: (H) gradient of this step's output or null.
  // dg: (H) gradient of the pre-activation, written (the same for the x and h products).
  static void backward(Activation act, const T* RNNCORE_RESTRICT h, const T* RNNCORE_RESTRICT dh_carry,
                       const T* RNNCORE_RESTRICT dy, T* RNNCORE_RESTRICT dg, index_t lo, index_t hi) {
    for (index_t u = lo; u < hi; ++u) {
      const T dh = dh_carry[u] + (dy ? dy[u] : T(0));
      // h = act(pre)
      dg[u] = act == Activation::Tanh ? dh * (T(1) - h[u] * h[u]) : (h[u] > T(0) ? dh : T(0));
    }
  }
};

}  // namespace rnncore
