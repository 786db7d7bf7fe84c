// Elman RNN cell, PyTorch's form: h' = act(W_ih x + b_ih + W_hh h + b_hh), act = tanh or relu.
// Pointwise forward and backward side by side (the interface is in cells/step.h); the matrix
// products live in the time loops. The float32 path runs the fused kernels of cells/fused.h
// when the ISA has them (the same sums in the same order, activation in the same pass).
#pragma once

#include <type_traits>

#include "cells/fused.h"
#include "cells/step.h"
#include "common/vmath.h"

namespace rnncore {

enum class Activation { Tanh, Relu };

template <typename T, Activation kAct>
struct RNNCell {
  static constexpr int G = 1;
  static constexpr int kHGates = 1;
  static constexpr bool kHasCellState = false;
  static constexpr bool kSavesHn = false;
  static constexpr bool kKeepsDh = false;

  // Reads gates (the x-projection, left unchanged), hg, bias; writes h.
  static void forward(const CellStep<T>& s, index_t H, index_t lo, index_t hi) {
    forward_with(fused_cell_kernels(), s, H, lo, hi);
  }
  // The same with the fused kernels `k` (float32), or the portable loops when k is null.
  static void forward_with(const FusedCellKernels* k, const CellStep<T>& s, index_t, index_t lo, index_t hi) {
    if constexpr (std::is_same<T, float>::value) {
      if (k) {
        (kAct == Activation::Tanh ? k->rnn_tanh_forward : k->rnn_relu_forward)(
            s.gates + lo, s.hg, s.bias ? s.bias + lo : nullptr, s.h + lo, hi - lo);
        return;
      }
    }
    const T* RNNCORE_RESTRICT xg = s.gates;
    const T* RNNCORE_RESTRICT hg = s.hg;
    const T* RNNCORE_RESTRICT bias = s.bias;
    T* RNNCORE_RESTRICT h = s.h;
    if (bias) {
      for (index_t u = lo; u < hi; ++u) h[u] = xg[u] + (hg[u - lo] + bias[u]);
    } else {
      for (index_t u = lo; u < hi; ++u) h[u] = xg[u] + hg[u - lo];
    }
    if (kAct == Activation::Tanh) {
      vtanh(h + lo, h + lo, hi - lo);
    } else {
      for (index_t u = lo; u < hi; ++u) h[u] = h[u] > T(0) ? h[u] : T(0);
    }
  }

  // Reads h (the saved output: d tanh = 1 - h^2), dh_carry, dy; writes gates (the gradient of
  // the pre-activation, the same for the x and h products).
  static void backward(const CellGradStep<T>& s, index_t H, index_t lo, index_t hi) {
    backward_with(fused_cell_kernels(), s, H, lo, hi);
  }
  static void backward_with(const FusedCellKernels* k, const CellGradStep<T>& s, index_t, index_t lo, index_t hi) {
    if constexpr (std::is_same<T, float>::value) {
      if (k) {
        (kAct == Activation::Tanh ? k->rnn_tanh_backward : k->rnn_relu_backward)(
            s.gates + lo, s.h + lo, s.dh_carry + lo, s.dy ? s.dy + lo : nullptr, hi - lo);
        return;
      }
    }
    const T* RNNCORE_RESTRICT h = s.h;
    const T* RNNCORE_RESTRICT dh_carry = s.dh_carry;
    const T* RNNCORE_RESTRICT dy = s.dy;
    T* RNNCORE_RESTRICT dg = s.gates;
    // The test of dy outside the loops, and relu's select in a pass of its own over dg: with the
    // add and the select in one loop GCC sinks the add into a branch per unit (it may not
    // speculate an FP add under -ftrapping-math) and the loop stays scalar and mispredicts on
    // the sign of h; as written every loop vectorises (2.5-9x faster, bench/RESULTS.md).
    if (dy) {
      for (index_t u = lo; u < hi; ++u) dg[u] = dh_carry[u] + dy[u];
    } else {
      for (index_t u = lo; u < hi; ++u) dg[u] = dh_carry[u] + T(0);
    }
    // h = act(pre)
    for (index_t u = lo; u < hi; ++u) dg[u] = d_act(h[u], dg[u]);
  }

  // h = act(pre): dL/dpre from the saved output h and dL/dh.
  static RNNCORE_INLINE T d_act(T h, T dh) {
    return kAct == Activation::Tanh ? dh * (T(1) - h * h) : (h > T(0) ? dh : T(0));
  }
};

template <typename T>
using RNNTanhCell = RNNCell<T, Activation::Tanh>;
template <typename T>
using RNNReluCell = RNNCell<T, Activation::Relu>;

}  // namespace rnncore
