// Global attention of a decoder over an encoder's memory bank (Luong et al. 2015; Bahdanau et
// al. 2015), masked to each source's own length, forward and backward side by side.
//
// Shape letters: Tq queries per sequence (target steps; 1 inside a time loop), B batch, S source
// positions, Hq query width (the decoder's h), Hm memory width (the encoder's D*H), A additive
// units, Ho attentional-state width, K key width (Hm for dot, Hq for general, A for additive).
// Every array is time-major, like the rest of the engine: queries (Tq, B, Hq), memory (S, B, Hm).
//
// For query q = q[t, b] and memory m_s = memory[s, b], s < lengths[b]:
//   dot:      score_s = q . m_s                                   (Hq == Hm)
//   general:  score_s = q . (W_in^T m_s) = (W_in q) . m_s          W_in (Hm, Hq)
//   additive: score_s = v . tanh(W_q q + b_q + W_k m_s)            W_q (A, Hq), b_q (A) or null,
//                                                                  W_k (A, Hm), v (A)
//   alpha = softmax over s < lengths[b] (exactly 0 at s >= lengths[b])
//   context c = sum_s alpha_s m_s                                  (Hm)
//   attn_h = tanh(W_out [c ; q] + b_out)                           W_out (Ho, Hm + Hq), b_out (Ho) or null
// Parameter names and layouts are OpenNMT-py's GlobalAttention: linear_in.weight = W_in,
// linear_query.{weight,bias} = W_q, b_q, linear_context.weight = W_k, v.weight = v (1, A),
// linear_out.{weight,bias} = W_out, b_out.
//
// The keys (everything that depends on the memory alone) are computed once per source batch by
// attention_keys and reused by every query (all target steps, every decoding step, every beam):
//   dot: keys = memory (the caller passes memory itself; K = Hm)
//   general: keys[s, b] = W_in^T m_s (K = Hq);  additive: keys[s, b] = W_k m_s (K = A).
#pragma once

#include <cstdint>

#include "common/defs.h"

namespace rnncore {

enum class AttentionKind { Dot, General, Additive };

// Pointers into the caller's arrays (null where a kind has no such weight).
template <typename T>
struct AttentionWeights {
  AttentionKind kind = AttentionKind::General;
  index_t Hq = 0, Hm = 0, A = 0, Ho = 0;  // A only for additive
  const T* w_in = nullptr;                // general: (Hm, Hq)
  const T* w_q = nullptr;                 // additive: (A, Hq)
  const T* b_q = nullptr;                 // additive: (A) or null
  const T* w_k = nullptr;                 // additive: (A, Hm)
  const T* v = nullptr;                   // additive: (A)
  const T* w_out = nullptr;               // (Ho, Hm + Hq)
  const T* b_out = nullptr;               // (Ho) or null
  index_t key_size() const { return kind == AttentionKind::Dot ? Hm : kind == AttentionKind::General ? Hq : A; }
};

// Gradients of the same weights, each *added into* (null: not wanted, or the kind has none).
template <typename T>
struct AttentionGrads {
  T* w_in = nullptr;
  T* w_q = nullptr;
  T* b_q = nullptr;
  T* w_k = nullptr;
  T* v = nullptr;
  T* w_out = nullptr;
  T* b_out = nullptr;
};

// keys: (S, B, K) written (not for dot, whose keys are the memory). memory: (S, B, Hm).
template <typename T>
void attention_keys(T* keys, const T* memory, const AttentionWeights<T>& w, index_t S, index_t B, int nthreads);

// The backward of attention_keys: dmemory (S, B, Hm) and the W_in / W_k gradients *added into*
// from dkeys (S, B, K). For dot it adds dkeys into dmemory.
template <typename T>
void attention_keys_backward(T* dmemory, const AttentionGrads<T>& g, const T* dkeys, const T* memory,
                             const AttentionWeights<T>& w, index_t S, index_t B, int nthreads);

// What attention_forward saves for attention_backward besides its outputs (additive only:
// the tanh of every (query, position) pair, so backward does not recompute it; written 0 at
// s >= lengths[b]).
template <typename T>
struct AttentionSaved {
  T* tanh = nullptr;  // additive: (Tq, B, S, A), written by forward; null for dot/general
};

// attn_h: (Tq, B, Ho) written. alpha: (Tq, B, S) written (0 at s >= lengths[b]).
// context: (Tq, B, Hm) written. q: (Tq, B, Hq). memory: (S, B, Hm). keys: attention_keys's
// (for dot: memory). lengths: (B) each in [1, S] (checked by the caller). saved: see above.
// q_stride: the row stride of q in elements between consecutive (t, b) rows (Hq when q is
// dense; larger when q is a slice of a wider buffer). Rows of q are index t * B + b.
template <typename T>
void attention_forward(T* attn_h, T* alpha, T* context, const AttentionSaved<T>& saved, const T* q,
                       index_t q_stride, const T* memory, const T* keys, const std::int64_t* lengths,
                       const AttentionWeights<T>& w, index_t Tq, index_t B, index_t S, int nthreads);

// dq: (Tq, B, Hq) written (or added into when accumulate_dq; row stride dq_stride like q).
// dmemory: (S, B, Hm) added into (the context's part; 0 stays 0 at s >= lengths[b]).
// dkeys: (S, B, K) added into (dot: pass dmemory itself, which then gets both parts).
// The backward allocates one workspace per call (N (Ho + Hm + S) elements, + N A for additive,
// N = Tq B); the forward allocates nothing itself (its GEMMs pack their operands as usual).
// g: weight gradients added into. d_attn_h: (Tq, B, Ho). d_alpha: (Tq, B, S) extra gradient
// of alpha, or null. The rest: exactly what the forward was given and wrote.
template <typename T>
void attention_backward(T* dq, index_t dq_stride, bool accumulate_dq, T* dmemory, T* dkeys,
                        const AttentionGrads<T>& g, const T* d_attn_h, const T* d_alpha,
                        const AttentionSaved<T>& saved, const T* q, index_t q_stride, const T* memory,
                        const T* keys, const std::int64_t* lengths, const T* alpha, const T* context,
                        const T* attn_h, const AttentionWeights<T>& w, index_t Tq, index_t B, index_t S,
                        int nthreads);

}  // namespace rnncore
