// LSTM cell, PyTorch's gate order i, f, g, o:
//   i = sigmoid(xi + hi)   f = sigmoid(xf + hf)   g = tanh(xg + hg)   o = sigmoid(xo + ho)
//   c' = f * c + i * g     h' = o * tanh(c')
// where x* = W_i* x + b_i* + b_h* and h* = W_h* h. Pointwise forward and backward side by side;
// each works on one row's slice of hidden units [lo, hi), gate by gate over contiguous runs so
// the activations are vectorised (common/vmath.h).
#pragma once

#include <type_traits>

#include "common/vmath.h"

namespace rnncore {

template <typename T>
struct LSTMCell {
  static constexpr int G = 4;

  // gates: (4H) x-projections in; the activated gates i, f, g, o out (saved).
  // hg: (4*hs) W_hh h_prev for this slice, gate-major (hg[k*hs + u - lo]).
  // bias: (4H) b_ih + b_hh, or null when the x-projections already hold the biases.
  // c_prev: (H), c: (H) new cell state, h: (H) new hidden state; written at [lo, hi).
  // No argument aliases another.
  static void forward(T* RNNCORE_RESTRICT gates, const T* RNNCORE_RESTRICT hg, const T* RNNCORE_RESTRICT bias,
                      const T* RNNCORE_RESTRICT c_prev, T* RNNCORE_RESTRICT c, T* RNNCORE_RESTRICT h, index_t H,
                      index_t lo, index_t hi) {
    const index_t hs = hi - lo;
    if constexpr (std::is_same<T, float>::value) {
      if (lstm_forward_fused(gates + lo, H, hg, hs, bias ? bias + lo : nullptr, c_prev + lo, c + lo, h + lo, hs))
        return;
    }
    T* RNNCORE_RESTRICT gi = gates + lo;
    T* RNNCORE_RESTRICT gf = gates + H + lo;
    T* RNNCORE_RESTRICT gg = gates + 2 * H + lo;
    T* RNNCORE_RESTRICT go = gates + 3 * H + lo;
    if (bias) {
      const T* RNNCORE_RESTRICT b = bias + lo;
      for (index_t v = 0; v < hs; ++v) {
        gi[v] += hg[v] + b[v];
        gf[v] += hg[hs + v] + b[H + v];
        gg[v] += hg[2 * hs + v] + b[2 * H + v];
        go[v] += hg[3 * hs + v] + b[3 * H + v];
      }
    } else {
      for (index_t v = 0; v < hs; ++v) {
        gi[v] += hg[v];
        gf[v] += hg[hs + v];
        gg[v] += hg[2 * hs + v];
        go[v] += hg[3 * hs + v];
      }
    }
    vsigmoid(gi, gi, hs);
    vsigmoid(gf, gf, hs);
    vtanh(gg, gg, hs);
    vsigmoid(go, go, hs);
    T* RNNCORE_RESTRICT cn = c + lo;
    T* RNNCORE_RESTRICT hn = h + lo;
    const T* RNNCORE_RESTRICT cp = c_prev + lo;
    for (index_t v = 0; v < hs; ++v) cn[v] = gf[v] * cp[v] + gi[v] * gg[v];
    vtanh(hn, cn, hs);
    for (index_t v = 0; v < hs; ++v) hn[v] *= go[v];
  }

  // gates: (4H) saved activations in; gradients of the pre-activations out (in place).
  // c_prev, c: (H) saved cell states. dh_carry: (H) dL/dh from step t+1. dy: (H) or null.
  // dc: (H) dL/dc from step t+1 in, dL/dc_prev out (in place). scratch: (hs) any values.
  static void backward(T* RNNCORE_RESTRICT gates, const T* RNNCORE_RESTRICT c_prev, const T* RNNCORE_RESTRICT c,
                       const T* RNNCORE_RESTRICT dh_carry, const T* RNNCORE_RESTRICT dy, T* RNNCORE_RESTRICT dc,
                       T* RNNCORE_RESTRICT scratch, index_t H, index_t lo, index_t hi) {
    const index_t hs = hi - lo;
    if constexpr (std::is_same<T, float>::value) {
      if (lstm_backward_fused(gates + lo, H, c_prev + lo, c + lo, dh_carry + lo, dy ? dy + lo : nullptr, dc + lo, hs))
        return;
    }
    T* RNNCORE_RESTRICT tc = scratch;
    vtanh(tc, c + lo, hs);
    T* RNNCORE_RESTRICT gi = gates + lo;
    T* RNNCORE_RESTRICT gf = gates + H + lo;
    T* RNNCORE_RESTRICT gg = gates + 2 * H + lo;
    T* RNNCORE_RESTRICT go = gates + 3 * H + lo;
    const T* RNNCORE_RESTRICT cp = c_prev + lo;
    const T* RNNCORE_RESTRICT dhc = dh_carry + lo;
    T* RNNCORE_RESTRICT dcv = dc + lo;
    const T* RNNCORE_RESTRICT dyv = dy ? dy + lo : nullptr;
    for (index_t v = 0; v < hs; ++v) {
      const T i = gi[v], f = gf[v], g = gg[v], o = go[v];
      const T dh = dhc[v] + (dyv ? dyv[v] : T(0));
      // h' = o * tanh(c')
      const T dct = dcv[v] + dh * o * (T(1) - tc[v] * tc[v]);
      // c' = f * c + i * g
      gi[v] = dct * g * i * (T(1) - i);
      gf[v] = dct * cp[v] * f * (T(1) - f);
      gg[v] = dct * i * (T(1) - g * g);
      go[v] = dh * tc[v] * o * (T(1) - o);
      dcv[v] = dct * f;
    }
  }
};

}  // namespace rnncore
