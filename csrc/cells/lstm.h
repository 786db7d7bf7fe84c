// LSTM cell, PyTorch's gate order i, f, g, o:
//   i = sigmoid(xi + hi)   f = sigmoid(xf + hf)   g = tanh(xg + hg)   o = sigmoid(xo + ho)
//   c' = f * c + i * g     h' = o * tanh(c')
// where x* = W_i* x + b_i* + b_h* and h* = W_h* h. Pointwise forward and backward side by side.
#pragma once

#include "common/activations.h"

namespace rnncore {

template <typename T>
struct LSTMCell {
  static constexpr int G = 4;

  // One row, units [lo, hi); hs = hi - lo.
  // gates: (4H) x-projections with biases in; the activated gates i, f, g, o out (saved).
  // hg: (4*hs) W_hh h_prev for this slice, gate-major (hg[k*hs + u - lo]).
  // c_prev: (H), c: (H) new cell state, h: (H) new hidden state; written at [lo, hi).
  static void forward(T* RNNCORE_RESTRICT gates, const T* RNNCORE_RESTRICT hg, const T* RNNCORE_RESTRICT c_prev,
                      T* RNNCORE_RESTRICT c, T* RNNCORE_RESTRICT h, index_t H, index_t lo, index_t hi) {
    const index_t hs = hi - lo;
    for (index_t u = lo; u < hi; ++u) {
      const index_t v = u - lo;
      const T i = sigmoid(gates[u] + hg[v]);
      const T f = sigmoid(gates[H + u] + hg[hs + v]);
      const T g = tanh_(gates[2 * H + u] + hg[2 * hs + v]);
      const T o = sigmoid(gates[3 * H + u] + hg[3 * hs + v]);
      const T cn = f * c_prev[u] + i * g;
      gates[u] = i;
      gates[H + u] = f;
      gates[2 * H + u] = g;
      gates[3 * H + u] = o;
      c[u] = cn;
      h[u] = o * tanh_(cn);
    }
  }

  // One row, units [lo, hi).
  // gates: (4H) saved activations in; gradients of the pre-activations out (in place).
  // c_prev, c: (H) saved cell states. dh_carry: (H) dL/dh from step t+1. dy: (H) or null.
  // dc: (H) dL/dc from step t+1 in, dL/dc_prev out (in place).
  static void backward(T* RNNCORE_RESTRICT gates, const T* RNNCORE_RESTRICT c_prev, const T* RNNCORE_RESTRICT c,
                       const T* RNNCORE_RESTRICT dh_carry, const T* RNNCORE_RESTRICT dy, T* RNNCORE_RESTRICT dc,
                       index_t H, index_t lo, index_t hi) {
    for (index_t u = lo; u < hi; ++u) {
      const T i = gates[u], f = gates[H + u], g = gates[2 * H + u], o = gates[3 * H + u];
      const T dh = dh_carry[u] + (dy ? dy[u] : T(0));
      const T tc = tanh_(c[u]);
      // h' = o * tanh(c')
      const T dct = dc[u] + dh * o * (T(1) - tc * tc);
      // c' = f * c + i * g
      gates[u] = dct * g * i * (T(1) - i);
      gates[H + u] = dct * c_prev[u] * f * (T(1) - f);
      gates[2 * H + u] = dct * i * (T(1) - g * g);
      gates[3 * H + u] = dh * tc * o * (T(1) - o);
      dc[u] = dct * f;
    }
  }
};

}  // namespace rnncore
