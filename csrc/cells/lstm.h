// LSTM cell, PyTorch's gate order i, f, g, o:
//   i = sigmoid(xi + hi)   f = sigmoid(xf + hf)   g = tanh(xg + hg)   o = sigmoid(xo + ho)
//   c' = f * c + i * g     h' = o * tanh(c')
// where x* = W_i* x + b_i* + b_h* and h* = W_h* h. Pointwise forward and backward side by side
// (the interface is in cells/step.h); each works gate by gate over contiguous runs so the
// activations are vectorised (common/vmath.h). The float32 path runs the fused kernels of
// cells/fused.h when the ISA has them: the same products in the same order, in one pass.
#pragma once

#include <type_traits>

#include "cells/fused.h"
#include "cells/step.h"
#include "common/vmath.h"

namespace rnncore {

template <typename T>
struct LSTMCell {
  static constexpr int G = 4;
  static constexpr int kHGates = 4;
  static constexpr bool kHasCellState = true;
  static constexpr bool kSavesHn = false;
  static constexpr bool kKeepsDh = false;

  // Reads gates (x-projections), hg, bias, c_prev; writes gates (i, f, g, o), c, h.
  static void forward(const CellStep<T>& s, index_t H, index_t lo, index_t hi) {
    forward_with(fused_cell_kernels(), s, H, lo, hi);
  }
  // The same with the fused kernels `k` (float32), or the portable loops when k is null.
  static void forward_with(const FusedCellKernels* k, const CellStep<T>& s, index_t H, index_t lo, index_t hi) {
    const index_t hs = hi - lo;
    const T* RNNCORE_RESTRICT hg = s.hg;
    if constexpr (std::is_same<T, float>::value) {
      if (k) {
        k->lstm_forward(s.gates + lo, H, hg, hs, s.bias ? s.bias + lo : nullptr, s.c_prev + lo, s.c + lo, s.h + lo,
                        hs);
        return;
      }
    }
    T* RNNCORE_RESTRICT gi = s.gates + lo;
    T* RNNCORE_RESTRICT gf = s.gates + H + lo;
    T* RNNCORE_RESTRICT gg = s.gates + 2 * H + lo;
    T* RNNCORE_RESTRICT go = s.gates + 3 * H + lo;
    if (s.bias) {
      const T* RNNCORE_RESTRICT b = s.bias + lo;
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
    T* RNNCORE_RESTRICT cn = s.c + lo;
    T* RNNCORE_RESTRICT hn = s.h + lo;
    const T* RNNCORE_RESTRICT cp = s.c_prev + lo;
    for (index_t v = 0; v < hs; ++v) cn[v] = gf[v] * cp[v] + gi[v] * gg[v];
    vtanh(hn, cn, hs);
    for (index_t v = 0; v < hs; ++v) hn[v] *= go[v];
  }

  // Reads gates (saved activations), c_prev, c, dh_carry, dy; writes gates (gradients of the
  // pre-activations, the same for the x and h products), dc (dL/dc_prev, in place); uses scratch.
  static void backward(const CellGradStep<T>& s, index_t H, index_t lo, index_t hi) {
    backward_with(fused_cell_kernels(), s, H, lo, hi);
  }
  static void backward_with(const FusedCellKernels* k, const CellGradStep<T>& s, index_t H, index_t lo, index_t hi) {
    const index_t hs = hi - lo;
    if constexpr (std::is_same<T, float>::value) {
      if (k) {
        k->lstm_backward(s.gates + lo, H, s.c_prev + lo, s.c + lo, s.dh_carry + lo, s.dy ? s.dy + lo : nullptr,
                         s.dc + lo, hs);
        return;
      }
    }
    T* RNNCORE_RESTRICT tc = s.scratch;
    vtanh(tc, s.c + lo, hs);
    T* RNNCORE_RESTRICT gi = s.gates + lo;
    T* RNNCORE_RESTRICT gf = s.gates + H + lo;
    T* RNNCORE_RESTRICT gg = s.gates + 2 * H + lo;
    T* RNNCORE_RESTRICT go = s.gates + 3 * H + lo;
    const T* RNNCORE_RESTRICT cp = s.c_prev + lo;
    const T* RNNCORE_RESTRICT dhc = s.dh_carry + lo;
    T* RNNCORE_RESTRICT dcv = s.dc + lo;
    const T* RNNCORE_RESTRICT dyv = s.dy ? s.dy + lo : nullptr;
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
