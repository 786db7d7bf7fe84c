// One recurrent layer, one direction, over a whole batch of sequences: forward that saves
// what backward needs, and full backpropagation through time. Stacked and bidirectional
// networks are composed from these two calls (in Python, one call per layer and direction).
//
// Parameters follow PyTorch's layout: w_ih (G*H, I), w_hh (G*H, H), b_ih (G*H), b_hh (G*H);
// gates LSTM i,f,g,o; GRU r,z,n; RNN one gate. See cells/ for the equations.
//
// LSTM with projections (PyTorch's proj_size, LSTMP), P = proj_size > 0: the recurrent state
// and the output are h_t = W_hr m_t, m_t = o_t * tanh(c_t), P wide; w_hh is (G*H, P) and
// w_hr (P, H); c stays H wide. Below, R is the width of h: P with a projection, else H.
// A step then has a second phase: after the cells (sliced over the H units) a barrier, then
// each thread projects its own slice of the P outputs, h[:, plo:phi) = m W_hr[plo:phi)^T, and
// a barrier. Backward mirrors it: dm = dh W_hr (sliced over H, before the cells) and
// dh_prev = dgates W_hh (sliced over P); dW_hr = dh^T m is one GEMM over all steps.
//
// How it runs (see layout.h for the packed row order):
//   1. one GEMM computes the input projections of every step: gates (N, G*H) = X (N, I) W_ih^T;
//   2. the time loop runs inside one OpenMP region; each thread owns a slice of hidden units
//      with all their gates, multiplies h_prev by its own packed slice of W_hh, applies the
//      cell's pointwise update for its units, and the threads meet at one barrier per step;
//   3. backward sweeps time in reverse the same way, leaving the gate gradients of every step
//      in place of the saved gates; dW_ih, dW_hh and dX are then one GEMM each over all steps.
#pragma once

#include <cstdint>
#include <vector>

#include "cells/cell.h"
#include "common/buffer.h"
#include "gemm/gemm.h"
#include "quant/bf16_gemm.h"
#include "recurrent/layout.h"
#include "recurrent/projection.h"

namespace rnncore {

// One thread's share of the time loop: hidden units [lo, hi) and its packed slice of W_hh
// (with a projection also the projected units [plo, phi) and a packed slice of W_hr).
// Forward: w[g] = rows [g*H + lo, g*H + hi) of W_hh, packed transposed (H, hi - lo), one per
// gate. Backward: w[0] = columns [lo, hi) of the rows of W_hh whose gradient is the x-side
// one (all gates; GRU: r and z), w[1] = the same columns of W_hn (GRU only). Packed afresh on
// every call (the weights may have changed) by the thread that uses them, into memory kept
// from call to call. With a projection: forward w[g] is (P, units); wr = rows [plo, phi) of
// W_hr, transposed (H, phi - plo); backward w[0] = columns [plo, phi) of W_hh (G*H, phi - plo)
// and wr = columns [lo, hi) of W_hr (P, units).
template <typename T>
struct RecurrentSlice {
  index_t lo = 0, hi = 0;
  index_t plo = 0, phi = 0;  // projected units (projection only)
  PackedB<T> w[4];
  PackedB<T> wr;
  AlignedBuffer<T> scratch;  // forward: (B, G * units) h_prev W_hh^T, gate-major; backward: (units)
  AlignedBuffer<T> dbias;    // backward: the slice's bias-gradient sums, gate-major (GRU: + W_hn part)
  // Prepacked workspaces only (recurrent/stream.h): wi[g] = rows [g*H + lo, g*H + hi) of W_ih,
  // packed transposed (I, units), so the slice projects its own gate columns; cpad: (min, units)
  // scratch of the row-exact projection (projection.h).
  PackedB<T> wi[4];
  AlignedBuffer<T> cpad;
  // bf16 (ForwardArgs::bf16, float only, no projection): w16 replaces w as the same slices of the
  // weights in bf16 panels (rounded as they are packed); a16 holds the step's left operand packed
  // (quant/bf16_gemm.h).
  Bf16PackedB w16[4];
  AlignedBuffer<std::uint32_t> a16;
  // bf16 on a prepacked workspace (projections too): wi16 replaces wi, the slice's rows of W_ih in
  // bf16 panels, so the stream's input projection is the bf16 GEMM's (the same bits as the layer's).
  Bf16PackedB wi16[4];
};

// Everything a forward saves for its backward, plus backward's scratch. Sized once per shape:
// a workspace passed to the next forward of the same (or a smaller) shape reuses its memory.
template <typename T>
struct RecurrentWorkspace {
  CellKind kind = CellKind::LSTM;
  index_t steps = 0, B = 0, I = 0, H = 0;  // T, B, I, H of the forward
  index_t P = 0;                           // proj_size (0: none)
  bool has_h0 = false, has_c0 = false;
  bool ready = false;  // a forward has run and its backward has not
  SeqLayout layout;
  const T* x = nullptr;     // (N, I) inputs in packed row order: xp, or the caller's x when layout.identity
  AlignedBuffer<T> xp;      // (N, I) gathered inputs (only when !layout.identity)
  AlignedBuffer<T> gates;   // (N, G*H) activated gates; after backward, the x-side gate gradients
  AlignedBuffer<T> hs;      // (B + N, R) h0 (sorted order) then the state after each packed row
  AlignedBuffer<T> cs;      // (B + N, H) LSTM cell states, same rows
  AlignedBuffer<T> ms;      // (N, H) projection only: m = o * tanh(c) of each packed row
  AlignedBuffer<T> dhp;     // (N, P) projection only, backward: dL/dh of each packed row
  AlignedBuffer<T> dm;      // (B, H) projection only, backward: dL/dm of one step
  AlignedBuffer<T> hn;      // (N, H) GRU W_hn h + b_hn; after backward, its gradient
  AlignedBuffer<T> dh, dc;  // (B, R), (B, H) backward carries
  AlignedBuffer<T> hprev;   // (N, R) h_prev of each packed row (only when lengths differ)
  AlignedBuffer<T> dxp;     // (N, I) packed input gradients (only when !layout.identity)
  AlignedBuffer<T> bias;    // (G*H) the biases the cells add per step (cells/cell.h: fuse_biases)
  AlignedBuffer<double> gn; // (N, ceil(R / 8)) backward with grad_norms: sums of squares of dL/dh per 8 units
  std::vector<RecurrentSlice<T>> slices;  // the time loop's per-thread weights (forward, then backward)
  ProjectionScratch<T> proj;              // the row-exact input projection's packing and padding
  // Prepacked (set by recurrent/stream.h, forward only): the slices already hold W_hh, W_hr
  // and W_ih (wi) packed, `bias` holds the fused biases (has_bias), proj.xpad is sized; a
  // forward then packs nothing, projects inside the time loop's region (each slice its own
  // gate columns) and runs on exactly slices.size() threads. Never differentiated.
  bool prepacked = false;
  bool has_bias = false;
  // bf16 mixed precision (ForwardArgs::bf16). With projections, the forward's weights rounded to
  // bf16, kept for its backward: w_ih (G*H, I), then w_hh (G*H, R), then w_hr (P, H); empty
  // otherwise (the bf16 GEMM rounds the weights as it packs them).
  bool bf16 = false;
  AlignedBuffer<T> wbf;
  AlignedBuffer<std::uint32_t> x16;  // bf16 on a prepacked workspace: the chunk's inputs, packed once

  // Free what a call uses only while it runs (the slices' packed W_hh, the biases, backward's
  // scratch) and keep what backward reads (layout, x/xp, gates, hs, cs, hn). Backward packs its
  // own slices afresh, so a trimmed workspace differentiates exactly as an untrimmed one; a
  // single-step cell keeps G*H*H fewer values per saved step.
  void trim() {
    slices.clear();
    slices.shrink_to_fit();
    proj = ProjectionScratch<T>();  // the projection's packed W_ih and padding
    bias.release();
    dh.release();
    dc.release();
    hprev.release();
    dxp.release();
    dhp.release();
    dm.release();
    gn.release();
  }
};

struct RecurrentShape {
  CellKind kind = CellKind::LSTM;
  index_t steps = 0, B = 0, I = 0, H = 0;  // T, B, I, H
  index_t P = 0;                           // proj_size: 0, or in [1, H) for an LSTM
};

// w_ih: (G*H, I). w_hh: (G*H, R). b_ih, b_hh: (G*H) or null. w_hr: (P, H), only with P > 0.
template <typename T>
struct RecurrentWeights {
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  const T* w_hr = nullptr;
};

// Parameter gradients, each *added to* (the biases may be null), shaped like the weights.
template <typename T>
struct RecurrentGrads {
  T* dw_ih = nullptr;
  T* dw_hh = nullptr;
  T* db_ih = nullptr;
  T* db_hh = nullptr;
  T* dw_hr = nullptr;  // (P, H), only with P > 0
};

// x:  (T, B, I), must stay alive and unchanged until backward when all lengths are T and the
//     direction is forward (it is then used in place).
// h0: (B, R), c0: (B, H) or null (zeros; c0 only for LSTM). lengths: (B) in [0, T] or null.
// y:  (T, B, *) output; this layer writes columns [0, R) of each row (row stride ldy), zeros
//     where t >= length.
// hn: (B, R), cn: (B, H) final states (cn only for LSTM), at each sequence's own last step, or null.
// bf16 (float only): bfloat16 mixed precision, as PyTorch's autocast runs an RNN. Every operand
//     of every product is rounded to bf16 (quant/bf16.h: round_bf16) and the products are summed
//     in float32: the weights, x, h0 and each new h (so y and
//     h_n come out bf16-valued; with a projection also m = o * tanh(c)). The cell state, the
//     gates' pre-activations, the biases and the pointwise cell math stay float32. Its backward
//     rounds the gradients that enter products (the gate gradients, GRU's dL/d(W_hn h + b_hn),
//     a projection's dL/dh) and takes the bias gradients from those rounded values; the carries
//     dL/dh and dL/dc stay float32. Rounding passes gradients straight through. The products
//     run on the bf16 GEMM (quant/bf16_gemm.h: vdpbf16ps, or its exact emulation), which rounds
//     its operands as it packs them; with a projection the per-step products (and the
//     projection's) run on the float32 kernels over rounded copies (exact products, float32 sums).
template <typename T>
struct ForwardArgs {
  const T* x = nullptr;
  const T* h0 = nullptr;
  const T* c0 = nullptr;
  const std::int64_t* lengths = nullptr;
  bool reverse = false;
  T* y = nullptr;
  index_t ldy = 0;
  T* hn = nullptr;
  T* cn = nullptr;
  bool bf16 = false;
};

// dy: (T, B, *) gradient of y, columns [0, R) of each row (row stride lddy), or null.
// dhn (B, R), dcn (B, H): gradients of the final states, or null.
// dx: (T, B, I) input gradient, overwritten (or added to when accumulate_dx), zero where t >= length.
// dh0 (B, R), dc0 (B, H): gradients of the initial states (dc0 only for LSTM; either may be null).
// grad_norms (T, B) or null: overwritten with ||dL/dh_t|| of each sequence (the total gradient of
//     the state at time t: dy_t plus what flows back from t+1; the width-R h of the cell, i.e.
//     the projected one with P > 0), 0 where t >= length. Taken from the sweep itself: each slice
//     adds up the squares of its own units per block of 8 (blocks never straddle slices, so the
//     figures are the same on any thread count), the blocks are summed in order after the sweep.
template <typename T>
struct BackwardArgs {
  const T* dy = nullptr;
  index_t lddy = 0;
  const T* dhn = nullptr;
  const T* dcn = nullptr;
  T* dx = nullptr;
  bool accumulate_dx = false;
  T* dh0 = nullptr;
  T* dc0 = nullptr;
  double* grad_norms = nullptr;
};

// Throws std::invalid_argument for a length out of range, a projection (P > 0) on a cell
// other than LSTM or with P >= H, or bf16 with double or on a prepacked workspace.
template <typename T>
void recurrent_forward(RecurrentWorkspace<T>& ws, const RecurrentShape& shape, const RecurrentWeights<T>& w,
                       const ForwardArgs<T>& a, int nthreads);

// w: the weights the forward used.
template <typename T>
void recurrent_backward(RecurrentWorkspace<T>& ws, const RecurrentWeights<T>& w, const RecurrentGrads<T>& d,
                        const BackwardArgs<T>& a, int nthreads);

// The threads the time loop of a (kind, B, H[, P]) layer runs on when given nthreads.
int recurrence_threads(CellKind kind, index_t B, index_t H, int nthreads, index_t P = 0);

}  // namespace rnncore
