// The cell interface shared by every time loop (recurrent/, generate/).
//
// A cell type (cells/rnn.h, lstm.h, gru.h) is a struct template over the scalar T with
//   static constexpr int G;          gates per unit (RNN 1, GRU 3, LSTM 4)
//   static constexpr int kHGates;    gates whose h-side pre-activation is W_h* h_prev + b_h*
//                                    alone, so their b_hh folds into the x-side bias and their
//                                    gradient is the x-side one (GRU 2: its n gate holds
//                                    r * (W_hn h + b_hn); the others G)
//   static constexpr bool kHasCellState;  LSTM's c
//   static constexpr bool kSavesHn;       GRU's W_hn h_prev + b_hn, kept for backward
//   static constexpr bool kKeepsDh;       backward leaves a direct part of dL/dh_prev in
//                                         dh_carry (GRU: dh * z) that the h-side product adds to
//   static void forward(const CellStep<T>&, index_t H, index_t lo, index_t hi);
//   static void backward(const CellGradStep<T>&, index_t H, index_t lo, index_t hi);
// forward and backward work on one batch row and the calling thread's units [lo, hi).
// Pointers are at the start of the row (unit 0) except `hg`, which is at the slice's first
// unit. Members a cell does not use stay null. No pointer aliases another.
#pragma once

#include "common/defs.h"

namespace rnncore {

enum class CellKind { RNNTanh, RNNRelu, LSTM, GRU };

template <typename T>
struct CellStep {
  T* gates = nullptr;         // (G*H) x-projections in; the activated gates out (saved)
  const T* hg = nullptr;      // (G*hs) W_hh h_prev for the slice, gate-major: hg[k*hs + u - lo]
  const T* bias = nullptr;    // (G*H) fused biases (fuse_biases in cells/cell.h), or null
  const T* b_hn = nullptr;    // (H) GRU's b_hn, or null
  const T* h_prev = nullptr;  // (H)
  T* h = nullptr;             // (H) the new state
  const T* c_prev = nullptr;  // (H) LSTM
  T* c = nullptr;             // (H) LSTM: the new cell state
  T* hn = nullptr;            // (H) GRU: W_hn h_prev + b_hn, written (saved for backward)
};

template <typename T>
struct CellGradStep {
  T* gates = nullptr;         // (G*H) saved activations in; pre-activation gradients out
  const T* h_prev = nullptr;  // (H)
  const T* h = nullptr;       // (H) this step's saved output state
  const T* c_prev = nullptr;  // (H) LSTM
  const T* c = nullptr;       // (H) LSTM
  T* hn = nullptr;            // (H) GRU: saved W_hn h + b_hn in; its gradient out
  T* dh_carry = nullptr;      // (H) dL/dh from step t+1 (see kKeepsDh)
  const T* dy = nullptr;      // (H) gradient of this step's output, or null
  T* dc = nullptr;            // (H) LSTM: dL/dc from step t+1 in, dL/dc_prev out
  T* scratch = nullptr;       // (hi - lo) any values
};

}  // namespace rnncore
