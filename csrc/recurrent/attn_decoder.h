// Luong's input-feeding attentional decoder (Luong et al. 2015, section 3.3; OpenNMT-py's
// InputFeedRNNDecoder): L stacked unidirectional layers of one cell kind whose first layer reads
// [x_t ; attn_h_{t-1}], the top layer's h_t querying global attention over a memory bank, the
// attentional state attn_h_t being both the output at t and the feed of step t+1. The whole
// loop, forward and BPTT, is one call each.
//
// Shape letters: T target steps, B batch, E input (embedding) width, H hidden size, L layers,
// G gates (cells/step.h), S source positions, Hm memory width, Ho attentional-state width
// (ops/attention.h), K key width, N = T * B rows.
//
// Step t (feed_0 = feed0, or zeros):
//   in^0_t = [x_t ; feed_t]                     W_ih_l0 (G*H, E + Ho), x columns first
//   h^l_t  = cell(in^l_t, h^l_{t-1})             in^l_t = h^{l-1}_t * mask[l-1, t] for l > 0
//   attn_h_t, alpha_t = attention(q = h^{L-1}_t, memory, lengths)      (ops/attention.h, Tq = 1)
//   feed_{t+1} = attn_h_t
//
// How it runs:
//   forward: the keys once (attention_keys); the x part of layer 0's projection for all T steps
//   in one GEMM; then per step: the feed part and W_hh products (GEMMs over the batch), the
//   cells' pointwise update (rows in parallel), the next layer's input projection, attention.
//   backward: t = T-1..0: d attn_h_t = grad_attn_h[t] + the feed gradient from step t+1;
//   attention_backward gives d(top h_t); each layer's cell backward top to bottom, the W_hh
//   products for the carries, the input gradients handed down (layer 0: the feed gradient of
//   step t). Then dW_ih (x and feed parts), dW_hh, the biases and dx: one GEMM each over all
//   steps; dkeys folded into dmemory and the attention weights by attention_keys_backward.
#pragma once

#include <cstdint>
#include <vector>

#include "cells/cell.h"
#include "common/buffer.h"
#include "gemm/gemm.h"
#include "ops/attention.h"

namespace rnncore {

struct AttnDecoderShape {
  CellKind kind = CellKind::LSTM;
  index_t steps = 0, B = 0, E = 0, H = 0, L = 1;  // T, B, E, H, L
  index_t S = 0;                                 // source positions
};

// Per layer l: w_ih[l] (G*H, E + Ho) for l = 0, (G*H, H) above; w_hh[l] (G*H, H);
// b_ih[l], b_hh[l] (G*H) or null. attn: the attention (attn.Hq == H).
template <typename T>
struct AttnDecoderWeights {
  std::vector<const T*> w_ih, w_hh, b_ih, b_hh;
  AttentionWeights<T> attn;
};

// Gradients, each *added into*, shaped like the weights (biases may be null).
template <typename T>
struct AttnDecoderGrads {
  std::vector<T*> dw_ih, dw_hh, db_ih, db_hh;
  AttentionGrads<T> attn;
};

// x: (T, B, E), kept alive and unchanged by the caller until backward (used in place).
// memory: (S, B, Hm), likewise. lengths: (B) in [1, S] (checked by the caller).
// h0, c0: (L, B, H) or null (zeros; c0 LSTM only). feed0: (B, Ho) or null (zeros).
// masks: (L-1, T, B, H) inter-layer dropout multipliers (already scaled by 1/keep), or null.
// Outputs: attn_h (T, B, Ho), alpha (T, B, S), hn, cn (L, B, H) (cn LSTM only; either may be null).
template <typename T>
struct AttnDecoderForwardArgs {
  const T* x = nullptr;
  const T* memory = nullptr;
  const std::int64_t* lengths = nullptr;
  const T* h0 = nullptr;
  const T* c0 = nullptr;
  const T* feed0 = nullptr;
  const T* masks = nullptr;
  T* attn_h = nullptr;
  T* alpha = nullptr;
  T* hn = nullptr;
  T* cn = nullptr;
};

// d_attn_h: (T, B, Ho) or null; d_alpha: (T, B, S) or null; dhn, dcn: (L, B, H) or null.
// Outputs, all written: dx (T, B, E), dmemory (S, B, Hm) (exactly 0 at s >= lengths[b]),
// dh0, dc0 (L, B, H) (dc0 LSTM only; either may be null), dfeed0 (B, Ho) or null.
template <typename T>
struct AttnDecoderBackwardArgs {
  const T* d_attn_h = nullptr;
  const T* d_alpha = nullptr;
  const T* dhn = nullptr;
  const T* dcn = nullptr;
  T* dx = nullptr;
  T* dmemory = nullptr;
  T* dh0 = nullptr;
  T* dc0 = nullptr;
  T* dfeed0 = nullptr;
};

// What forward saves for backward (sized once per shape, reused by the next forward).
template <typename T>
struct AttnDecoderWorkspace {
  AttnDecoderShape shape;
  AttentionKind attn_kind = AttentionKind::General;
  index_t Hm = 0, Ho = 0, A = 0, K = 0;
  bool ready = false;  // a forward has run and its backward has not
  const T* x = nullptr;
  const T* memory = nullptr;
  const T* masks = nullptr;
  std::vector<std::int64_t> lengths;         // (B)
  std::vector<AlignedBuffer<T>> gates;       // L x (N, G*H): activated gates; after backward their gradients
  std::vector<AlignedBuffer<T>> hs;          // L x ((T+1) B, H): h0 then h_t of every step
  std::vector<AlignedBuffer<T>> cs;          // L x ((T+1) B, H): LSTM cell states, same rows
  std::vector<AlignedBuffer<T>> hn;          // L x (N, H): GRU W_hn h + b_hn; after backward its gradient
  std::vector<AlignedBuffer<T>> inputs;      // L x (N, H): in^l_t for l > 0 with dropout masks (else unused)
  std::vector<AlignedBuffer<T>> bias;        // L x (G*H): fused biases (fuse_biases)
  std::vector<char> has_bias;                // L
  AlignedBuffer<T> feeds;                    // ((T+1) B, Ho): feed0 then attn_h_t of every step
  AlignedBuffer<T> alpha;                    // (T, B, S)
  AlignedBuffer<T> context;                  // (T, B, Hm)
  AlignedBuffer<T> tanh;                     // additive: (T, B, S, A)
  AlignedBuffer<T> keys;                     // (S, B, K), not for dot (keys = memory)
  AlignedBuffer<T> hg;                       // (B, G*H) one step's h_prev W_hh^T
  // The per-step products' right operands, packed once per call (the weights may change
  // between calls): forward W_ih0[:, E:]^T, W_hh^T, W_ih^T (l > 0); backward W_ih0[:, E:],
  // W_hh's x-side rows, GRU's W_hn, W_ih (l > 0). Index: see attn_decoder.cpp (packed_index).
  std::vector<PackedB<T>> packed;
  // backward scratch
  AlignedBuffer<T> dh, dc;                   // L x (B, H) carries
  AlignedBuffer<T> dq, dy, dfeed, dattn;     // (B, H), (B, H), (B, Ho), (B, Ho)
  AlignedBuffer<T> dkeys;                    // (S, B, K)
  AlignedBuffer<T> dhcat;                    // (N, H) scratch for the GRU/bias sums
};

// Throws std::invalid_argument for inconsistent sizes (attn.Hq != H, L < 1).
template <typename T>
void attn_decoder_forward(AttnDecoderWorkspace<T>& ws, const AttnDecoderShape& shape,
                          const AttnDecoderWeights<T>& w, const AttnDecoderForwardArgs<T>& a, int nthreads);

// w: the weights the forward used. Throws std::invalid_argument when no forward is ready.
template <typename T>
void attn_decoder_backward(AttnDecoderWorkspace<T>& ws, const AttnDecoderWeights<T>& w,
                           const AttnDecoderGrads<T>& d, const AttnDecoderBackwardArgs<T>& a, int nthreads);

}  // namespace rnncore
