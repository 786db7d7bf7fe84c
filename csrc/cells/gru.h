// GRU cell, PyTorch's gate order r, z, n, reset applied after the hidden product:
//   r = sigmoid(xr + hr)   z = sigmoid(xz + hz)   n = tanh(xn + r * (W_hn h + b_hn))
//   h' = (1 - z) * n + z * h
// where xr = W_ir x + b_ir + b_hr, xz likewise, xn = W_in x + b_in; hr = W_hr h, hz = W_hz h.
// Pointwise forward and backward side by side (the interface is in cells/step.h); the float32
// path runs the fused kernels of cells/fused.h when the ISA has them (same products, same order).
#pragma once

#include <type_traits>

#include "cells/fused.h"
#include "cells/step.h"
#include "common/vmath.h"

namespace rnncore {

template <typename T>
struct GRUCell {
  static constexpr int G = 3;
  static constexpr int kHGates = 2;
  static constexpr bool kHasCellState = false;
  static constexpr bool kSavesHn = true;
  static constexpr bool kKeepsDh = true;

  // Reads gates (x-projections), hg, bias (the x-side biases b_ir + b_hr, b_iz + b_hz, b_in),
  // b_hn, h_prev; writes gates (r, z, n), hn (W_hn h_prev + b_hn), h.
  static void forward(const CellStep<T>& s, index_t H, index_t lo, index_t hi) {
    forward_with(fused_cell_kernels(), s, H, lo, hi);
  }
  // The same with the fused kernels `k` (float32), or the portable loops when k is null.
  static void forward_with(const FusedCellKernels* k, const CellStep<T>& s, index_t H, index_t lo, index_t hi) {
    const index_t hs = hi - lo;
    const T* RNNCORE_RESTRICT hg = s.hg;
    const T* RNNCORE_RESTRICT b_hn = s.b_hn;
    if constexpr (std::is_same<T, float>::value) {
      if (k) {
        k->gru_forward(s.gates + lo, H, hg, hs, s.bias ? s.bias + lo : nullptr, b_hn ? b_hn + lo : nullptr, s.hn + lo,
                       s.h_prev + lo, s.h + lo, hs);
        return;
      }
    }
    T* RNNCORE_RESTRICT gr = s.gates + lo;
    T* RNNCORE_RESTRICT gz = s.gates + H + lo;
    T* RNNCORE_RESTRICT gn = s.gates + 2 * H + lo;
    T* RNNCORE_RESTRICT hnv = s.hn + lo;
    if (s.bias) {
      const T* RNNCORE_RESTRICT b = s.bias + lo;
      for (index_t v = 0; v < hs; ++v) {
        gr[v] += hg[v] + b[v];
        gz[v] += hg[hs + v] + b[H + v];
        gn[v] += b[2 * H + v];
      }
    } else {
      for (index_t v = 0; v < hs; ++v) {
        gr[v] += hg[v];
        gz[v] += hg[hs + v];
      }
    }
    for (index_t v = 0; v < hs; ++v) hnv[v] = hg[2 * hs + v] + (b_hn ? b_hn[lo + v] : T(0));
    vsigmoid(gr, gr, hs);
    vsigmoid(gz, gz, hs);
    for (index_t v = 0; v < hs; ++v) gn[v] += gr[v] * hnv[v];
    vtanh(gn, gn, hs);
    const T* RNNCORE_RESTRICT hp = s.h_prev + lo;
    T* RNNCORE_RESTRICT hv = s.h + lo;
    for (index_t v = 0; v < hs; ++v) hv[v] = gn[v] + gz[v] * (hp[v] - gn[v]);
  }

  // Reads gates (saved r, z, n), hn (saved W_hn h + b_hn), h_prev, dh_carry, dy. Writes:
  //   gates: the gradients of the x-side pre-activations (dr_pre, dz_pre, dn_pre), used for
  //          dW_ih, db_ih and dx;
  //   hn:    dn_pre * r, the gradient of W_hn h + b_hn. The h-side gradients are then
  //          (dr_pre, dz_pre, hn), used for dW_hh, db_hh and dh_prev;
  //   dh_carry: the direct part of dL/dh_prev, dh * z (kKeepsDh).
  static void backward(const CellGradStep<T>& s, index_t H, index_t lo, index_t hi) {
    backward_with(fused_cell_kernels(), s, H, lo, hi);
  }
  static void backward_with(const FusedCellKernels* k, const CellGradStep<T>& s, index_t H, index_t lo, index_t hi) {
    T* RNNCORE_RESTRICT gates = s.gates;
    T* RNNCORE_RESTRICT hn = s.hn;
    T* RNNCORE_RESTRICT dh_carry = s.dh_carry;
    const T* RNNCORE_RESTRICT h_prev = s.h_prev;
    const T* RNNCORE_RESTRICT dy = s.dy;
    if constexpr (std::is_same<T, float>::value) {
      if (k) {
        k->gru_backward(gates + lo, H, hn + lo, h_prev + lo, dh_carry + lo, dy ? dy + lo : nullptr, hi - lo);
        return;
      }
    }
    for (index_t u = lo; u < hi; ++u) {
      const T r = gates[u], z = gates[H + u], n = gates[2 * H + u];
      const T dh = dh_carry[u] + (dy ? dy[u] : T(0));
      // h' = (1 - z) * n + z * h
      const T dn_pre = dh * (T(1) - z) * (T(1) - n * n);
      const T dz_pre = dh * (h_prev[u] - n) * z * (T(1) - z);
      // n = tanh(xn + r * hn)
      const T dr_pre = dn_pre * hn[u] * r * (T(1) - r);
      gates[u] = dr_pre;
      gates[H + u] = dz_pre;
      gates[2 * H + u] = dn_pre;
      hn[u] = dn_pre * r;
      dh_carry[u] = dh * z;
    }
  }
};

}  // namespace rnncore
