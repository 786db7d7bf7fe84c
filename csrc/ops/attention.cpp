// Global attention, forward and backward side by side (the contract and the formulas are in
// attention.h; the shape letters too).
//
// How the work is laid out:
//   - Products over every (t, b) row at once are one GEMM each: W_q q (additive), and the two
//     halves of W_out [c ; q] (no concatenated buffer: W_out's column blocks are read in place
//     with its row stride Hm + Hq), and their gradients.
//   - Products that pair one batch row's queries with the same row's memory (scores and
//     context) run per batch row b, the rows b split between the threads. With Tq > 1 they are
//     GEMMs on strided views of the time-major arrays (row t of batch row b is at t * B + b, so
//     the row stride is B times the dense one: no copies); with Tq == 1 (a decoding step) they
//     are direct loops.
//   - The forward allocates nothing itself: alpha is the score buffer, and the additive
//     projection W_q q is parked in the tanh slot of the last source position of its row
//     (saved.tanh (Tq, B, S, A)), read there while the slots s < lengths[b] are filled (the
//     last one in place, element by element), and zeroed when that position is past the row's
//     length. The backward allocates one workspace per call (dz, d context, d scores and, for
//     additive, d W_q q).
//   - Past each source's length: alpha, the saved tanh, the score gradients are written 0; the
//     memory and key gradients of those positions are never touched (they stay what they were).
#include "ops/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <new>

#include "common/buffer.h"
#include "common/parallel.h"
#include "common/reduce.h"
#include "common/vmath.h"
#include "gemm/gemm.h"

namespace rnncore {

namespace {

// Multiply-adds a thread should have, to pay for waking it.
constexpr double kMinPerThread = 1 << 15;

// x . y over n elements, eight partial sums so the loop vectorises without -ffast-math.
template <typename T>
RNNCORE_INLINE T dot(const T* RNNCORE_RESTRICT x, const T* RNNCORE_RESTRICT y, index_t n) {
  T s[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) s[k] += x[i + k] * y[i + k];
  for (int k = 0; i < n; ++i, ++k) s[k] += x[i] * y[i];
  return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// y += a x over n elements.
template <typename T>
RNNCORE_INLINE void axpy(T a, const T* RNNCORE_RESTRICT x, T* RNNCORE_RESTRICT y, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// row (S) holds scores at s < len: softmax over them in place, exact zeros at s >= len.
template <typename T>
void masked_softmax(T* row, index_t len, index_t S) {
  T m = -std::numeric_limits<T>::infinity();
  for (index_t s = 0; s < len; ++s) m = std::max(m, row[s]);
  for (index_t s = 0; s < len; ++s) row[s] -= m;
  vexp(row, row, len);
  T sum = T(0);
  for (index_t s = 0; s < len; ++s) sum += row[s];
  const T inv = T(1) / sum;
  for (index_t s = 0; s < len; ++s) row[s] *= inv;
  std::fill(row + len, row + S, T(0));
}

// Runs body(b) for b in [0, B) on nt threads; an exception inside (std::bad_alloc from a
// GEMM's small packing buffers) is caught in the region and rethrown after it.
template <typename F>
void for_batch_rows(index_t B, int nt, const F& body) {
  std::atomic<bool> failed{false};
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
  for (index_t b = 0; b < B; ++b) {
    if (failed.load(std::memory_order_relaxed)) continue;
    try {
      body(b);
    } catch (...) {
      failed.store(true, std::memory_order_relaxed);
    }
  }
  if (failed.load()) throw std::bad_alloc();
}

template <typename T>
void parallel_tanh(T* y, index_t n, int nthreads) {
  const int nt = threads_for(double(n), 1 << 14, nthreads);
  if (nt <= 1) {
    vtanh(y, y, n);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    index_t i0, i1;
    split_range(n, num_threads_in_region(), thread_id(), 64, &i0, &i1);
    if (i1 > i0) vtanh(y + i0, y + i0, i1 - i0);
  }
}

}  // namespace

// keys: (S, B, K) written (not for dot). memory: (S, B, Hm).
template <typename T>
void attention_keys(T* keys, const T* memory, const AttentionWeights<T>& w, index_t S, index_t B, int nthreads) {
  const index_t SB = S * B;
  if (SB <= 0) return;
  if (w.kind == AttentionKind::General) {
    // keys[s, b] = W_in^T m_s: keys (SB, Hq) = memory (SB, Hm) W_in (Hm, Hq)
    gemm<T>(false, false, SB, w.Hq, w.Hm, T(1), memory, w.Hm, w.w_in, w.Hq, T(0), keys, w.Hq, nthreads);
  } else if (w.kind == AttentionKind::Additive) {
    // keys[s, b] = W_k m_s: keys (SB, A) = memory (SB, Hm) W_k^T (Hm, A)
    gemm<T>(false, true, SB, w.A, w.Hm, T(1), memory, w.Hm, w.w_k, w.Hm, T(0), keys, w.A, nthreads);
  }
}

template <typename T>
void attention_keys_backward(T* dmemory, const AttentionGrads<T>& g, const T* dkeys, const T* memory,
                             const AttentionWeights<T>& w, index_t S, index_t B, int nthreads) {
  const index_t SB = S * B, Hq = w.Hq, Hm = w.Hm, A = w.A;
  if (SB <= 0) return;
  if (w.kind == AttentionKind::Dot) {
    // keys = memory
    if (dmemory != nullptr && dkeys != dmemory)
      for (index_t i = 0; i < SB * Hm; ++i) dmemory[i] += dkeys[i];
  } else if (w.kind == AttentionKind::General) {
    // keys (SB, Hq) = memory (SB, Hm) W_in (Hm, Hq)
    if (dmemory != nullptr) gemm<T>(false, true, SB, Hm, Hq, T(1), dkeys, Hq, w.w_in, Hq, T(1), dmemory, Hm, nthreads);
    if (g.w_in != nullptr) gemm<T>(true, false, Hm, Hq, SB, T(1), memory, Hm, dkeys, Hq, T(1), g.w_in, Hq, nthreads);
  } else {
    // keys (SB, A) = memory (SB, Hm) W_k^T (Hm, A)
    if (dmemory != nullptr) gemm<T>(false, false, SB, Hm, A, T(1), dkeys, A, w.w_k, Hm, T(1), dmemory, Hm, nthreads);
    if (g.w_k != nullptr) gemm<T>(true, false, A, Hm, SB, T(1), dkeys, A, memory, Hm, T(1), g.w_k, Hm, nthreads);
  }
}

template <typename T>
void attention_forward(T* attn_h, T* alpha, T* context, const AttentionSaved<T>& saved, const T* q,
                       index_t q_stride, const T* memory, const T* keys, const std::int64_t* lengths,
                       const AttentionWeights<T>& w, index_t Tq, index_t B, index_t S, int nthreads) {
  const index_t N = Tq * B, Hq = w.Hq, Hm = w.Hm, A = w.A, Ho = w.Ho, K = w.key_size(), Wc = Hm + Hq;
  if (N <= 0 || S <= 0) return;
  const bool additive = w.kind == AttentionKind::Additive;
  T* const U = saved.tanh;  // additive: (Tq, B, S, A)

  if (additive) {
    // W_q q for every row, parked in the tanh slot of position S-1: (N, A) with row stride S*A
    gemm<T>(false, true, N, A, Hq, T(1), q, q_stride, w.w_q, Hq, T(0), U + (S - 1) * A, S * A, nthreads);
  }

  const double per_row = double(Tq) * double(S) * double(additive ? 2 * A + Hm : K + Hm);
  const int nt = static_cast<int>(std::min<index_t>(B, threads_for(per_row * double(B), kMinPerThread, nthreads)));
  for_batch_rows(B, nt, [&](index_t b) {
    const index_t len = lengths[b];
    // scores into alpha
    if (additive) {
      // score_s = v . tanh(W_q q + b_q + W_k m_s)
      for (index_t t = 0; t < Tq; ++t) {
        const index_t r = t * B + b;
        T* u = U + r * S * A;
        const T* qp = u + (S - 1) * A;  // W_q q, overwritten last (in place) when len == S
        for (index_t s = 0; s < len; ++s) {
          const T* k = keys + (s * B + b) * A;
          T* us = u + s * A;
          if (w.b_q != nullptr)
            for (index_t a = 0; a < A; ++a) us[a] = qp[a] + w.b_q[a] + k[a];
          else
            for (index_t a = 0; a < A; ++a) us[a] = qp[a] + k[a];
        }
        vtanh(u, u, len * A);
        std::fill(u + len * A, u + S * A, T(0));
        T* sc = alpha + r * S;
        for (index_t s = 0; s < len; ++s) sc[s] = dot(w.v, u + s * A, A);
      }
    } else if (Tq == 1) {
      // score_s = q . key_s (dot: key = m_s; general: key = W_in^T m_s)
      const T* qb = q + b * q_stride;
      T* sc = alpha + b * S;
      for (index_t s = 0; s < len; ++s) sc[s] = dot(qb, keys + (s * B + b) * K, K);
    } else {
      // scores_b (Tq, len) = Q_b (Tq, K) keys_b^T (K, len)
      gemm<T>(false, true, Tq, len, K, T(1), q + b * q_stride, B * q_stride, keys + b * K, B * K, T(0),
              alpha + b * S, B * S, 1);
    }
    for (index_t t = 0; t < Tq; ++t) masked_softmax(alpha + (t * B + b) * S, len, S);
    // c = sum_s alpha_s m_s
    if (Tq == 1) {
      T* c = context + b * Hm;
      std::fill(c, c + Hm, T(0));
      const T* al = alpha + b * S;
      for (index_t s = 0; s < len; ++s) axpy(al[s], memory + (s * B + b) * Hm, c, Hm);
    } else {
      // C_b (Tq, Hm) = alpha_b (Tq, len) M_b (len, Hm)
      gemm<T>(false, false, Tq, Hm, len, T(1), alpha + b * S, B * S, memory + b * Hm, B * Hm, T(0), context + b * Hm,
              B * Hm, 1);
    }
  });

  // attn_h = tanh(W_out[:, :Hm] c + W_out[:, Hm:] q + b_out)
  T beta = T(0);
  if (w.b_out != nullptr) {
    for (index_t r = 0; r < N; ++r) std::copy(w.b_out, w.b_out + Ho, attn_h + r * Ho);
    beta = T(1);
  }
  gemm<T>(false, true, N, Ho, Hm, T(1), context, Hm, w.w_out, Wc, beta, attn_h, Ho, nthreads);
  gemm<T>(false, true, N, Ho, Hq, T(1), q, q_stride, w.w_out + Hm, Wc, T(1), attn_h, Ho, nthreads);
  parallel_tanh(attn_h, N * Ho, nthreads);
}

template <typename T>
void attention_backward(T* dq, index_t dq_stride, bool accumulate_dq, T* dmemory, T* dkeys,
                        const AttentionGrads<T>& g, const T* d_attn_h, const T* d_alpha,
                        const AttentionSaved<T>& saved, const T* q, index_t q_stride, const T* memory,
                        const T* keys, const std::int64_t* lengths, const T* alpha, const T* context,
                        const T* attn_h, const AttentionWeights<T>& w, index_t Tq, index_t B, index_t S,
                        int nthreads) {
  const index_t N = Tq * B, Hq = w.Hq, Hm = w.Hm, A = w.A, Ho = w.Ho, K = w.key_size(), Wc = Hm + Hq;
  if (N <= 0 || S <= 0) return;
  const bool additive = w.kind == AttentionKind::Additive;
  const T* const U = saved.tanh;

  // One workspace: dz (N, Ho), dc (N, Hm), ds (N, S), additive dqp (N, A).
  AlignedBuffer<T> work(N * (Ho + Hm + S) + (additive ? N * A : 0));
  T* const dz = work.data();
  T* const dc = dz + N * Ho;
  T* const ds = dc + N * Hm;
  T* const dqp = ds + N * S;

  // attn_h = tanh(z)  ->  dz = d_attn_h (1 - attn_h^2)
  {
    const index_t n = N * Ho;
    const int nt = threads_for(double(n), 1 << 15, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (index_t i = 0; i < n; ++i) dz[i] = d_attn_h[i] * (T(1) - attn_h[i] * attn_h[i]);
  }
  // z = W_out[:, :Hm] c + W_out[:, Hm:] q + b_out
  if (g.w_out != nullptr) {
    gemm<T>(true, false, Ho, Hm, N, T(1), dz, Ho, context, Hm, T(1), g.w_out, Wc, nthreads);
    gemm<T>(true, false, Ho, Hq, N, T(1), dz, Ho, q, q_stride, T(1), g.w_out + Hm, Wc, nthreads);
  }
  if (g.b_out != nullptr) add_column_sums(g.b_out, dz, N, Ho, Ho, nthreads);
  gemm<T>(false, false, N, Hm, Ho, T(1), dz, Ho, w.w_out, Wc, T(0), dc, Hm, nthreads);
  if (dq != nullptr)
    gemm<T>(false, false, N, Hq, Ho, T(1), dz, Ho, w.w_out + Hm, Wc, accumulate_dq ? T(1) : T(0), dq, dq_stride,
            nthreads);

  const double per_row = double(Tq) * double(S) * double(additive ? 2 * A + 2 * Hm : 2 * K + 2 * Hm);
  const int nt = static_cast<int>(std::min<index_t>(B, threads_for(per_row * double(B), kMinPerThread, nthreads)));
  for_batch_rows(B, nt, [&](index_t b) {
    const index_t len = lengths[b];
    // c = sum_s alpha_s m_s  ->  dalpha_s = dc . m_s;  dm_s += alpha_s dc
    if (Tq == 1) {
      const T* dcb = dc + b * Hm;
      const T* al = alpha + b * S;
      T* d = ds + b * S;
      for (index_t s = 0; s < len; ++s) {
        d[s] = dot(dcb, memory + (s * B + b) * Hm, Hm);
        if (dmemory != nullptr) axpy(al[s], dcb, dmemory + (s * B + b) * Hm, Hm);
      }
    } else {
      // dalpha_b (Tq, len) = dC_b (Tq, Hm) M_b^T (Hm, len);  dM_b (len, Hm) += alpha_b^T (len, Tq) dC_b
      gemm<T>(false, true, Tq, len, Hm, T(1), dc + b * Hm, B * Hm, memory + b * Hm, B * Hm, T(0), ds + b * S, B * S,
              1);
      if (dmemory != nullptr)
        gemm<T>(true, false, len, Hm, Tq, T(1), alpha + b * S, B * S, dc + b * Hm, B * Hm, T(1), dmemory + b * Hm,
                B * Hm, 1);
    }
    // alpha = softmax(score) over s < len  ->  dscore_s = alpha_s (dalpha_s - sum_j alpha_j dalpha_j)
    for (index_t t = 0; t < Tq; ++t) {
      const index_t r = t * B + b;
      T* d = ds + r * S;
      const T* al = alpha + r * S;
      if (d_alpha != nullptr)
        for (index_t s = 0; s < len; ++s) d[s] += d_alpha[r * S + s];
      const T m = dot(al, d, len);
      for (index_t s = 0; s < len; ++s) d[s] = al[s] * (d[s] - m);
      std::fill(d + len, d + S, T(0));
    }
    if (!additive) {
      // score_s = q . key_s  ->  dq += sum_s dscore_s key_s;  dkey_s += dscore_s q
      if (Tq == 1) {
        const T* d = ds + b * S;
        const T* qb = q + b * q_stride;
        for (index_t s = 0; s < len; ++s) {
          const T* k = keys + (s * B + b) * K;
          if (dq != nullptr) axpy(d[s], k, dq + b * dq_stride, K);
          if (dkeys != nullptr) axpy(d[s], qb, dkeys + (s * B + b) * K, K);
        }
      } else {
        // dQ_b (Tq, K) += dS_b (Tq, len) keys_b (len, K);  dkeys_b (len, K) += dS_b^T (len, Tq) Q_b
        if (dq != nullptr)
          gemm<T>(false, false, Tq, K, len, T(1), ds + b * S, B * S, keys + b * K, B * K, T(1), dq + b * dq_stride,
                  B * dq_stride, 1);
        if (dkeys != nullptr)
          gemm<T>(true, false, len, K, Tq, T(1), ds + b * S, B * S, q + b * q_stride, B * q_stride, T(1),
                  dkeys + b * K, B * K, 1);
      }
    } else {
      // score_s = v . u_s, u_s = tanh(W_q q + b_q + key_s)
      //   ->  du_s = dscore_s v (1 - u_s^2);  d(W_q q) = sum_s du_s;  dkey_s += du_s
      for (index_t t = 0; t < Tq; ++t) {
        const index_t r = t * B + b;
        const T* d = ds + r * S;
        const T* u = U + r * S * A;
        T* dp = dqp + r * A;
        std::fill(dp, dp + A, T(0));
        for (index_t s = 0; s < len; ++s) {
          const T f = d[s];
          const T* us = u + s * A;
          if (dkeys != nullptr) {
            T* dk = dkeys + (s * B + b) * A;
            for (index_t a = 0; a < A; ++a) {
              const T du = f * w.v[a] * (T(1) - us[a] * us[a]);
              dp[a] += du;
              dk[a] += du;
            }
          } else {
            for (index_t a = 0; a < A; ++a) dp[a] += f * w.v[a] * (T(1) - us[a] * us[a]);
          }
        }
      }
    }
  });

  if (additive) {
    // score = v . u  ->  dv (1, A) += dS (1, N*S) U (N*S, A)  (both exactly 0 past each length)
    if (g.v != nullptr) gemm<T>(false, false, 1, A, N * S, T(1), ds, N * S, U, A, T(1), g.v, A, nthreads);
    // p = W_q q + b_q  ->  dW_q += dp^T q;  db_q += sum_rows dp;  dq += dp W_q
    if (g.w_q != nullptr) gemm<T>(true, false, A, Hq, N, T(1), dqp, A, q, q_stride, T(1), g.w_q, Hq, nthreads);
    if (g.b_q != nullptr) add_column_sums(g.b_q, dqp, N, A, A, nthreads);
    if (dq != nullptr) gemm<T>(false, false, N, Hq, A, T(1), dqp, A, w.w_q, Hq, T(1), dq, dq_stride, nthreads);
  }
}

#define RNNCORE_INSTANTIATE(T)                                                                                       \
  template void attention_keys<T>(T*, const T*, const AttentionWeights<T>&, index_t, index_t, int);                  \
  template void attention_keys_backward<T>(T*, const AttentionGrads<T>&, const T*, const T*,                        \
                                           const AttentionWeights<T>&, index_t, index_t, int);                       \
  template void attention_forward<T>(T*, T*, T*, const AttentionSaved<T>&, const T*, index_t, const T*, const T*,   \
                                     const std::int64_t*, const AttentionWeights<T>&, index_t, index_t, index_t,    \
                                     int);                                                                           \
  template void attention_backward<T>(T*, index_t, bool, T*, T*, const AttentionGrads<T>&, const T*, const T*,      \
                                      const AttentionSaved<T>&, const T*, index_t, const T*, const T*,              \
                                      const std::int64_t*, const T*, const T*, const T*, const AttentionWeights<T>&, \
                                      index_t, index_t, index_t, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
