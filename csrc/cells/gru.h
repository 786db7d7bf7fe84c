// GRU cell, PyTorch's gate order r, z, n, reset applied after the hidden product:
//   r = sigmoid(xr + hr)   z = sigmoid(xz + hz)   n = tanh(xn + r * (W_hn h + b_hn))
//   h' = (1 - z) * n + z * h
// where xr = W_ir x + b_ir + b_hr, xz likewise, xn = W_in x + b_in; hr = W_hr h, hz = W_hz h.
// Pointwise forward and backward side by side, over one row's units [lo, hi).
#pragma once

#include <type_traits>

#include "common/vmath.h"

namespace rnncore {

template <typename T>
struct GRUCell {
  static constexpr int G = 3;

  // gates: (3H) x-projections in; activated r, z, n out (saved).
  // hg: (3*hs) W_hh h_prev for this slice, gate-major.
  // bias: (3H) the x-side biases (b_ir + b_hr, b_iz + b_hz, b_in), or null when the
  // x-projections already hold them. b_hn: (H) or null.
  // hn: (H) W_hn h_prev + b_hn, saved for backward. h_prev: (H). h: (H) new state.
  // No argument aliases another.
  static void forward(T* RNNCORE_RESTRICT gates, const T* RNNCORE_RESTRICT hg, const T* RNNCORE_RESTRICT bias,
                      const T* RNNCORE_RESTRICT b_hn, T* RNNCORE_RESTRICT hn, const T* RNNCORE_RESTRICT h_prev,
                      T* RNNCORE_RESTRICT h, index_t H, index_t lo, index_t hi) {
    const index_t hs = hi - lo;
    if constexpr (std::is_same<T, float>::value) {
      if (gru_forward_fused(gates + lo, H, hg, hs, bias ? bias + lo : nullptr, b_hn ? b_hn + lo : nullptr, hn + lo,
                            h_prev + lo, h + lo, hs))
        return;
    }
    T* RNNCORE_RESTRICT gr = gates + lo;
    T* RNNCORE_RESTRICT gz = gates + H + lo;
    T* RNNCORE_RESTRICT gn = gates + 2 * H + lo;
    T* RNNCORE_RESTRICT hnv = hn + lo;
    if (bias) {
      const T* RNNCORE_RESTRICT b = bias + lo;
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
    const T* RNNCORE_RESTRICT hp = h_prev + lo;
    T* RNNCORE_RESTRICT hv = h + lo;
    for (index_t v = 0; v < hs; ++v) hv[v] = gn[v] + gz[v] * (hp[v] - gn[v]);
  }

  // gates: (3H) saved r, z, n in; out: gradients of the x-side pre-activations
  //   (dr_pre, dz_pre, dn_pre), used for dW_ih, db_ih and dx.
  // hn: (H) saved W_hn h + b_hn in; out: dn_pre * r, the gradient of W_hn h + b_hn.
  // The h-side gradients are then (dr_pre, dz_pre, hn) (used for dW_hh, db_hh, dh_prev).
  // h_prev: (H). dh_carry: (H) in; out: the local part of dL/dh_prev, dh * z. dy: (H) or null.
  static void backward(T* RNNCORE_RESTRICT gates, T* RNNCORE_RESTRICT hn, const T* RNNCORE_RESTRICT h_prev,
                       T* RNNCORE_RESTRICT dh_carry, const T* RNNCORE_RESTRICT dy, index_t H, index_t lo, index_t hi) {
    if constexpr (std::is_same<T, float>::value) {
      if (gru_backward_fused(gates + lo, H, hn + lo, h_prev + lo, dh_carry + lo, dy ? dy + lo : nullptr, hi - lo))
        return;
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
