// One recurrent layer over a whole sequence: forward and BPTT backward (see recurrent.h).
#include "recurrent/recurrent.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "common/parallel.h"
#include "gemm/gemm.h"

namespace rnncore {

namespace {

// Hidden units per slice are a multiple of this (a SIMD register of floats).
constexpr index_t kUnitAlign = 8;

// Threads for the time loop: no more than there are unit slices, and one when a step is too
// small for a second thread to pay for its barrier (about 16K multiply-adds per step).
int recurrence_threads(index_t B, index_t G, index_t H, int nthreads) {
  if (B * G * H * H < (index_t(1) << 14)) return 1;
  const index_t slices = (H + kUnitAlign - 1) / kUnitAlign;
  return static_cast<int>(std::max<index_t>(1, std::min<index_t>(nthreads, slices)));
}

// Copies and elementwise passes over fewer elements than this run on the calling thread.
bool worth_threads(index_t elements, int nthreads) { return nthreads > 1 && elements >= (index_t(1) << 16); }

template <typename T>
void copy_row(T* RNNCORE_RESTRICT dst, const T* RNNCORE_RESTRICT src, index_t n) {
  std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
}

}  // namespace

template <typename T>
void recurrent_forward(RecurrentWorkspace<T>& ws, T* y, index_t ldy, T* hn_out, T* cn_out, const T* x, const T* h0,
                       const T* c0, const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh,
                       const std::int64_t* lengths, bool reverse, CellKind kind, index_t Tn, index_t B, index_t I,
                       index_t H, int nthreads) {
  const int G = gate_count(kind);
  const index_t GH = G * H;
  ws.ready = false;
  ws.kind = kind;
  ws.steps = Tn;
  ws.B = B;
  ws.I = I;
  ws.H = H;
  ws.has_h0 = h0 != nullptr;
  ws.has_c0 = c0 != nullptr;
  SeqLayout& L = ws.layout;
  L.build(Tn, B, lengths, reverse);
  const index_t N = L.rows();
  const bool lstm = kind == CellKind::LSTM, gru = kind == CellKind::GRU;
  const Activation act = kind == CellKind::RNNRelu ? Activation::Relu : Activation::Tanh;
  const bool copy_parallel = worth_threads(Tn * B * (I + G * H), nthreads);
  FlushToZeroGuard ftz;

  // Inputs in packed row order.
  if (L.identity) {
    ws.x = x;
  } else {
    ws.xp.resize(N * I);
    T* xp = ws.xp.data();
#pragma omp parallel for num_threads(nthreads) schedule(static) if (copy_parallel)
    for (index_t s = 0; s < Tn; ++s)
      for (index_t j = 0; j < L.count[s]; ++j) copy_row(xp + (L.offset[s] + j) * I, x + L.source_row(s, j) * I, I);
    ws.x = xp;
  }

  // 1. Input projections of every step in one GEMM. The biases are added per step by the
  // cells (as b_ih + b_hh, summed once here), which saves a pass over all the gates.
  ws.gates.resize(N * GH);
  T* gates = ws.gates.data();
  gemm<T>(false, true, N, GH, I, T(1), ws.x, I, w_ih, I, T(0), gates, GH, nthreads);
  const T* bias = nullptr;
  if (b_ih != nullptr || b_hh != nullptr) {
    // GRU keeps b_hn apart: it sits inside r * (W_hn h + b_hn).
    const index_t hh_cols = gru ? 2 * H : GH;
    ws.bias.resize(GH);
    for (index_t c = 0; c < GH; ++c)
      ws.bias[c] = (b_ih ? b_ih[c] : T(0)) + (b_hh && c < hh_cols ? b_hh[c] : T(0));
    bias = ws.bias.data();
  }
  const T* b_hn = (gru && b_hh) ? b_hh + 2 * H : nullptr;

  // States: rows [0, B) hold the initial state in sorted order.
  ws.hs.resize((B + N) * H);
  T* hs = ws.hs.data();
  T* cs = nullptr;
  for (index_t j = 0; j < B; ++j) {
    if (h0) copy_row(hs + j * H, h0 + L.perm[j] * H, H);
    else std::fill(hs + j * H, hs + (j + 1) * H, T(0));
  }
  if (lstm) {
    ws.cs.resize((B + N) * H);
    cs = ws.cs.data();
    for (index_t j = 0; j < B; ++j) {
      if (c0) copy_row(cs + j * H, c0 + L.perm[j] * H, H);
      else std::fill(cs + j * H, cs + (j + 1) * H, T(0));
    }
  }
  T* hnl = nullptr;
  if (gru) {
    ws.hn.resize(N * H);
    hnl = ws.hn.data();
  }

  // 2. The recurrence: each slice of hidden units [lo, hi) is owned by one thread, with all
  // its gates. Everything a thread needs is allocated here, before the parallel region, so
  // nothing inside it can throw; each thread packs its own slice of W_hh (so it starts out in
  // that core's cache) and only ever reads its own, so no barrier is needed after packing.
  const int nt = recurrence_threads(B, G, H, nthreads);
  ws.slices.resize(static_cast<std::size_t>(nt));
  for (int k = 0; k < nt; ++k) {
    RecurrentSlice<T>& sl = ws.slices[k];
    split_range(H, nt, k, kUnitAlign, &sl.lo, &sl.hi);
    const index_t n_units = sl.hi - sl.lo;
    for (int g = 0; g < G; ++g) sl.w[g].reserve(H, n_units);
    sl.scratch.resize(std::max<index_t>(1, B * G * n_units));
  }
  RecurrentSlice<T>* slices = ws.slices.data();
  StepBarrier step_barrier(nt);
#pragma omp parallel num_threads(nt)
  {
    FlushToZeroGuard ftz_worker;
    const int team = num_threads_in_region();
    for (int k = thread_id(); k < nt; k += team) {
      RecurrentSlice<T>& sl = slices[k];
      // Gate g's rows [g*H + lo, g*H + hi) of W_hh, as the transposed (H, units) operand.
      if (sl.hi > sl.lo)
        for (int g = 0; g < G; ++g) sl.w[g].fill(true, w_hh + (g * H + sl.lo) * H, H);
    }
    for (index_t s = 0; s < Tn; ++s) {
      const index_t n = L.count[s];
      if (n == 0) break;  // count is non-increasing: every thread stops at the same step
      const index_t prev = s == 0 ? 0 : B + L.offset[s - 1];  // first row of h_prev
      const index_t cur = B + L.offset[s];                    // first row of this step's states
      for (int k = thread_id(); k < nt; k += team) {
        RecurrentSlice<T>& sl = slices[k];
        const index_t lo = sl.lo, hi = sl.hi, n_units = hi - lo;
        if (n_units == 0) continue;
        T* hg = sl.scratch.data();
        for (int g = 0; g < G; ++g) gemm_packed<T>(n, hs + prev * H, H, sl.w[g], T(0), hg + g * n_units, G * n_units);
        for (index_t j = 0; j < n; ++j) {
          T* g = gates + (L.offset[s] + j) * GH;
          const T* hgj = hg + j * G * n_units;
          if (lstm) {
            LSTMCell<T>::forward(g, hgj, bias, cs + (prev + j) * H, cs + (cur + j) * H, hs + (cur + j) * H, H, lo,
                                 hi);
          } else if (gru) {
            GRUCell<T>::forward(g, hgj, bias, b_hn, hnl + (L.offset[s] + j) * H, hs + (prev + j) * H,
                                hs + (cur + j) * H, H, lo, hi);
          } else {
            RNNCell<T>::forward(act, g, hgj, bias, hs + (cur + j) * H, lo, hi);
          }
          // The output row, in the caller's layout, while the new state is in cache.
          copy_row(y + L.source_row(s, j) * ldy + lo, hs + (cur + j) * H + lo, n_units);
        }
      }
      step_barrier.wait_in_region();
    }
  }

  // The time loop wrote every output row within its sequence; zeros past each sequence's end.
  if (!L.full) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (copy_parallel)
    for (index_t t = 0; t < Tn; ++t) {
      for (index_t b = 0; b < B; ++b)
        if (t >= L.len[b]) std::fill(y + (t * B + b) * ldy, y + (t * B + b) * ldy + H, T(0));
    }
  }
  for (index_t j = 0; j < B; ++j) {
    const index_t len = L.len[L.perm[j]];
    const index_t row = len == 0 ? j : B + L.offset[len - 1] + j;
    if (hn_out) copy_row(hn_out + L.perm[j] * H, hs + row * H, H);
    if (lstm && cn_out) copy_row(cn_out + L.perm[j] * H, cs + row * H, H);
  }
  ws.ready = true;
}

template <typename T>
void recurrent_backward(RecurrentWorkspace<T>& ws, T* dx, bool accumulate_dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh,
                        T* db_ih, T* db_hh, const T* dy, index_t lddy, const T* dhn, const T* dcn, const T* w_ih,
                        const T* w_hh, int nthreads) {
  if (!ws.ready) fail("recurrent_backward: no forward to differentiate (run forward first; backward runs once per forward)");
  ws.ready = false;  // the saved gates are overwritten by their gradients below
  const CellKind kind = ws.kind;
  const int G = gate_count(kind);
  const index_t Tn = ws.steps, B = ws.B, I = ws.I, H = ws.H, GH = G * H;
  const SeqLayout& L = ws.layout;
  const index_t N = L.rows();
  const bool lstm = kind == CellKind::LSTM, gru = kind == CellKind::GRU;
  const Activation act = kind == CellKind::RNNRelu ? Activation::Relu : Activation::Tanh;
  T* gates = ws.gates.data();
  const T* hs = ws.hs.data();
  const T* cs = lstm ? ws.cs.data() : nullptr;
  T* hnl = gru ? ws.hn.data() : nullptr;
  const bool copy_parallel = worth_threads(Tn * B * (I + G * H), nthreads);
  FlushToZeroGuard ftz;

  // Carries from the future, in sorted order; sequences that end at step s find dL/dh_n here.
  ws.dh.resize(B * H);
  T* dh = ws.dh.data();
  for (index_t j = 0; j < B; ++j) {
    if (dhn) copy_row(dh + j * H, dhn + L.perm[j] * H, H);
    else std::fill(dh + j * H, dh + (j + 1) * H, T(0));
  }
  T* dc = nullptr;
  if (lstm) {
    ws.dc.resize(B * H);
    dc = ws.dc.data();
    for (index_t j = 0; j < B; ++j) {
      if (dcn) copy_row(dc + j * H, dcn + L.perm[j] * H, H);
      else std::fill(dc + j * H, dc + (j + 1) * H, T(0));
    }
  }

  // 3. The reverse sweep, sliced over hidden units like the forward. A slice multiplies the
  // step's h-side gate gradients by its columns of W_hh: dh_prev[:, lo:hi] = dgates_h W_hh[:, lo:hi].
  // GRU multiplies its n-gate part separately (its h-side gradient lives in hn).
  const int nt = recurrence_threads(B, G, H, nthreads);
  const index_t k_main = gru ? 2 * H : GH;
  ws.slices.resize(static_cast<std::size_t>(nt));
  for (int k = 0; k < nt; ++k) {
    RecurrentSlice<T>& sl = ws.slices[k];
    split_range(H, nt, k, kUnitAlign, &sl.lo, &sl.hi);
    sl.w[0].reserve(k_main, sl.hi - sl.lo);
    if (gru) sl.w[1].reserve(H, sl.hi - sl.lo);
    sl.scratch.resize(std::max<index_t>(1, sl.hi - sl.lo));
    sl.dbias.resize(std::max<index_t>(1, (gru ? G + 1 : G) * (sl.hi - sl.lo)));
    sl.dbias.zero();
  }
  // The bias gradients are column sums of the gate gradients; each thread adds up its own
  // units' columns during the sweep, while the rows are in cache, instead of a pass over all
  // the gates afterwards. Per element the order (steps from last to first, rows in order)
  // does not depend on the thread count.
  const bool want_db = db_ih != nullptr || db_hh != nullptr;
  RecurrentSlice<T>* slices = ws.slices.data();
  StepBarrier step_barrier(nt);
#pragma omp parallel num_threads(nt)
  {
    FlushToZeroGuard ftz_worker;
    const int team = num_threads_in_region();
    for (int k = thread_id(); k < nt; k += team) {  // each thread packs the slices it multiplies by
      RecurrentSlice<T>& sl = slices[k];
      if (sl.hi == sl.lo) continue;
      sl.w[0].fill(false, w_hh + sl.lo, H);
      if (gru) sl.w[1].fill(false, w_hh + 2 * H * H + sl.lo, H);
    }
    for (index_t s = Tn - 1; s >= 0; --s) {
      const index_t n = L.count[s];
      if (n == 0) continue;
      const index_t prev = s == 0 ? 0 : B + L.offset[s - 1];
      const index_t cur = B + L.offset[s];
      for (int k = thread_id(); k < nt; k += team) {
        const index_t lo = slices[k].lo, hi = slices[k].hi;
        for (index_t j = 0; lo < hi && j < n; ++j) {
          const index_t r = L.offset[s] + j;
          const T* dyj = dy ? dy + L.source_row(s, j) * lddy : nullptr;
          T* g = gates + r * GH;
          if (lstm) {
            LSTMCell<T>::backward(g, cs + (prev + j) * H, cs + (cur + j) * H, dh + j * H, dyj, dc + j * H,
                                  slices[k].scratch.data(), H, lo, hi);
          } else if (gru) {
            GRUCell<T>::backward(g, hnl + r * H, hs + (prev + j) * H, dh + j * H, dyj, H, lo, hi);
          } else {
            RNNCell<T>::backward(act, hs + (cur + j) * H, dh + j * H, dyj, g, lo, hi);
          }
          if (want_db) {
            const index_t units = hi - lo;
            T* RNNCORE_RESTRICT acc = slices[k].dbias.data();
            for (int q = 0; q < G; ++q) {
              const T* RNNCORE_RESTRICT col = g + q * H + lo;
              T* RNNCORE_RESTRICT a = acc + q * units;
              for (index_t u = 0; u < units; ++u) a[u] += col[u];
            }
            if (gru) {
              const T* RNNCORE_RESTRICT col = hnl + r * H + lo;
              T* RNNCORE_RESTRICT a = acc + G * units;
              for (index_t u = 0; u < units; ++u) a[u] += col[u];
            }
          }
        }
      }
      step_barrier.wait_in_region();
      for (int k = thread_id(); k < nt; k += team) {
        const index_t lo = slices[k].lo, hi = slices[k].hi;
        if (lo == hi) continue;
        gemm_packed<T>(n, gates + L.offset[s] * GH, GH, slices[k].w[0], gru ? T(1) : T(0), dh + lo, H);
        if (gru) gemm_packed<T>(n, hnl + L.offset[s] * H, H, slices[k].w[1], T(1), dh + lo, H);
      }
    }
  }

  // dL/dh0 (and c0): rows of sequences of length 0 still hold dL/dh_n, as they should.
  for (index_t j = 0; j < B; ++j) {
    if (dh0) copy_row(dh0 + L.perm[j] * H, dh + j * H, H);
    if (lstm && dc0) copy_row(dc0 + L.perm[j] * H, dc + j * H, H);
  }
  if (N == 0) {
    if (!accumulate_dx) std::fill(dx, dx + Tn * B * I, T(0));
    return;
  }

  // 4. Weight gradients, one GEMM each over all steps.
  // gates = X W_ih^T  =>  dW_ih += dgates^T X
  gemm<T>(true, false, GH, I, N, T(1), gates, GH, ws.x, I, T(1), dw_ih, I, nthreads);
  // h-side gates = h_prev W_hh^T  =>  dW_hh += dgates_h^T h_prev
  const T* hprev = hs;  // all lengths T: h_prev of packed row r is row r of hs
  if (!L.full) {
    ws.hprev.resize(N * H);
    T* hp = ws.hprev.data();
#pragma omp parallel for num_threads(nthreads) schedule(static) if (copy_parallel)
    for (index_t s = 0; s < Tn; ++s) {
      const index_t prev = s == 0 ? 0 : B + L.offset[s - 1];
      for (index_t j = 0; j < L.count[s]; ++j) copy_row(hp + (L.offset[s] + j) * H, hs + (prev + j) * H, H);
    }
    hprev = hp;
  }
  if (gru) {
    gemm<T>(true, false, 2 * H, H, N, T(1), gates, GH, hprev, H, T(1), dw_hh, H, nthreads);
    gemm<T>(true, false, H, H, N, T(1), hnl, H, hprev, H, T(1), dw_hh + 2 * H * H, H, nthreads);
  } else {
    gemm<T>(true, false, GH, H, N, T(1), gates, GH, hprev, H, T(1), dw_hh, H, nthreads);
  }
  // db_ih = sums of the x-side gate gradients; db_hh = those of the h-side ones (the same
  // columns, except GRU's n part, which is the gradient of W_hn h + b_hn).
  for (int k = 0; want_db && k < nt; ++k) {
    const RecurrentSlice<T>& sl = slices[k];
    const index_t units = sl.hi - sl.lo;
    const T* acc = sl.dbias.data();
    for (int q = 0; q < G; ++q)
      for (index_t u = 0; u < units; ++u) {
        const index_t c = q * H + sl.lo + u;
        if (db_ih) db_ih[c] += acc[q * units + u];
        if (db_hh) db_hh[c] += (gru && q == 2) ? acc[G * units + u] : acc[q * units + u];
      }
  }

  // gates = X W_ih^T  =>  dX = dgates W_ih
  if (L.identity) {
    gemm<T>(false, false, N, I, GH, T(1), gates, GH, w_ih, I, accumulate_dx ? T(1) : T(0), dx, I, nthreads);
  } else {
    ws.dxp.resize(N * I);
    T* dxp = ws.dxp.data();
    gemm<T>(false, false, N, I, GH, T(1), gates, GH, w_ih, I, T(0), dxp, I, nthreads);
    if (!accumulate_dx) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (copy_parallel)
      for (index_t t = 0; t < Tn; ++t)
        for (index_t b = 0; b < B; ++b)
          if (t >= L.len[b]) std::fill(dx + (t * B + b) * I, dx + (t * B + b + 1) * I, T(0));
    }
#pragma omp parallel for num_threads(nthreads) schedule(static) if (copy_parallel)
    for (index_t s = 0; s < Tn; ++s) {
      for (index_t j = 0; j < L.count[s]; ++j) {
        T* RNNCORE_RESTRICT d = dx + L.source_row(s, j) * I;
        const T* RNNCORE_RESTRICT p = dxp + (L.offset[s] + j) * I;
        if (accumulate_dx)
          for (index_t c = 0; c < I; ++c) d[c] += p[c];
        else
          copy_row(d, p, I);
      }
    }
  }
}

#define RNNCORE_INSTANTIATE(T)                                                                                    \
  template void recurrent_forward<T>(RecurrentWorkspace<T>&, T*, index_t, T*, T*, const T*, const T*, const T*,     \
                                     const T*, const T*, const T*, const T*, const std::int64_t*, bool, CellKind,  \
                                     index_t, index_t, index_t, index_t, int);                                     \
  template void recurrent_backward<T>(RecurrentWorkspace<T>&, T*, bool, T*, T*, T*, T*, T*, T*, const T*, index_t, \
                                      const T*, const T*, const T*, const T*, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
