// Fused per-step cell updates for float32: one pass over the units, every gate in registers,
// with the same activations and the same order of additions as the cells' portable loops (see
// cells/lstm.h, cells/gru.h and cells/rnn.h for the equations and the arguments). Pointers are
// at the slice's first unit; gate k of `gates` and `bias` is k * H further on, of `hg` k * hs.
// `bias`, `b_hn` and `dy` may be null. n is the slice's unit count (hs).
//
// One kernel set per instruction set (cells/fused_avx2.cpp: 8 lanes, fused_avx512.cpp: 16
// lanes, the same products in the same order); the process's set is chosen once through
// active_isa() (common/cpu.h), and the generic ISA has none (the cells run their portable loops).
#pragma once

#include "common/cpu.h"
#include "common/defs.h"

namespace rnncore {

struct FusedCellKernels {
  // LSTM: gates (4H) x-projections in, i f g o out; c, h (n) out.
  void (*lstm_forward)(float* gates, index_t H, const float* hg, index_t hs, const float* bias, const float* c_prev,
                       float* c, float* h, index_t n);
  // GRU: gates (3H) x-projections in, r z n out; hn (n) = W_hn h + b_hn out; h (n) out.
  void (*gru_forward)(float* gates, index_t H, const float* hg, index_t hs, const float* bias, const float* b_hn,
                      float* hn, const float* h_prev, float* h, index_t n);
  // RNN: h (n) = act(xg + (hg + bias)); xg is read only.
  void (*rnn_tanh_forward)(const float* xg, const float* hg, const float* bias, float* h, index_t n);
  void (*rnn_relu_forward)(const float* xg, const float* hg, const float* bias, float* h, index_t n);
  // LSTM: gates (4H) saved activations in, pre-activation gradients out; dc in and out.
  void (*lstm_backward)(float* gates, index_t H, const float* c_prev, const float* c, const float* dh_carry,
                        const float* dy, float* dc, index_t n);
  // GRU: gates (3H) saved r z n in, (dr, dz, dn) out; hn in, dn * r out; dh_carry in, dh * z out.
  void (*gru_backward)(float* gates, index_t H, float* hn, const float* h_prev, float* dh_carry, const float* dy,
                       index_t n);
  // RNN: dg (n) = (dh_carry + dy) * act'(h), from the saved output h.
  void (*rnn_tanh_backward)(float* dg, const float* h, const float* dh_carry, const float* dy, index_t n);
  void (*rnn_relu_backward)(float* dg, const float* h, const float* dh_carry, const float* dy, index_t n);
  const char* name;  // "avx512" or "avx2"
};

const FusedCellKernels* fused_cells_avx2();    // null in a build without x86 SIMD
const FusedCellKernels* fused_cells_avx512();  // null in a build without x86 SIMD
// The set for `isa`, or null (generic, or more than this CPU supports).
const FusedCellKernels* fused_cell_kernels(Isa isa);
// The process's set (fused_cell_kernels(active_isa()), fixed at first use), or null.
const FusedCellKernels* fused_cell_kernels();
const char* fused_cells_kernel();  // its name, or "generic"

}  // namespace rnncore
