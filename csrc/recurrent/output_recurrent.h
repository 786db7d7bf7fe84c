// The output-recurrent network of Goodfellow et al.'s figure 10.4, run free: each step reads
// the network's own previous output (no ground truth), the whole sequence in one call.
//
// Shape letters: T time steps, B batch, I input size, H hidden size, O output size.
//
//   h_t = tanh(W_ih x_t + W_oh y_{t-1} + b_h),   y_{-1} = y0
//   y_t = W_ho h_t + b_o
//
// Teacher forcing (training) needs no kernel of its own: with y_{t-1} the ground truth every step
// is independent, three batched GEMMs (rnncore/nn/output_recurrent.py). Free running is a true
// recurrence, but its only path from one step to the next goes through the O-wide output, so a
// step costs two thin GEMMs (B x O x H and B x H x O) after one big input projection over all
// T*B rows; folding it into a tanh RNN (W_hh = W_oh W_ho) would cost H*H memory and B*H*H work a
// step instead of 2*B*H*O.
#pragma once

#include "common/defs.h"

namespace rnncore {

// y: (T, B, O) written, the outputs. h: (T, B, H) written, the hidden states (workspace the
// caller may keep or drop). x: (T, B, I). w_ih: (H, I). w_oh: (H, O). b_h: (H) or null.
// w_ho: (O, H). b_o: (O) or null. y0: (B, O) the output before the first step, or null for 0.
// scratch: (B, H) workspace. No argument aliases another. T >= 0 (T = 0 writes nothing).
template <typename T>
void output_recurrent_free_run(T* y, T* h, T* scratch, const T* x, const T* w_ih, const T* w_oh, const T* b_h,
                               const T* w_ho, const T* b_o, const T* y0, index_t steps, index_t B, index_t I,
                               index_t H, index_t O, int nthreads);

}  // namespace rnncore
