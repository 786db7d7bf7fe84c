// One recurrent layer over a whole sequence: forward and BPTT backward (see recurrent.h).
// One time loop, templated on the cell (cells/step.h); the entry points switch on the kind once.
#include "recurrent/recurrent.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/parallel.h"
#include "gemm/gemm.h"
#include "quant/bf16.h"
#include "quant/bf16_gemm.h"

namespace rnncore {

namespace {

// Hidden units per slice are a multiple of this (a SIMD register of floats).
constexpr index_t kUnitAlign = 8;

// grad_norms: the sums of squares of dL/dh = carry + dy (dy may be null) over units [lo, hi)
// of one row, one per block of kUnitAlign units, into out[block]. lo is a multiple of
// kUnitAlign (split_range), so a block lies in one slice and its sum does not depend on the
// thread count.
template <typename T>
void block_sumsq(double* RNNCORE_RESTRICT out, const T* RNNCORE_RESTRICT carry, const T* RNNCORE_RESTRICT dy,
                 index_t lo, index_t hi) {
  for (index_t b0 = lo; b0 < hi; b0 += kUnitAlign) {
    const index_t b1 = std::min(hi, b0 + kUnitAlign);
    double sum = 0;
    for (index_t u = b0; u < b1; ++u) {
      const double v = dy ? double(carry[u] + dy[u]) : double(carry[u]);
      sum += v * v;
    }
    out[b0 / kUnitAlign] = sum;
  }
}

// Multiply-adds per step a thread of the time loop should have, to pay for its barrier.
constexpr double kMinStepMacsPerThread = 8192;
// Elements a thread of a copy or elementwise pass should have.
constexpr double kMinCopyPerThread = 32768;

// n elements from src to dst; nothing when n == 0 (a layer with H = 0 or I = 0 has null rows,
// and memcpy's pointers must be valid even for zero bytes).
template <typename T>
void copy_row(T* RNNCORE_RESTRICT dst, const T* RNNCORE_RESTRICT src, index_t n) {
  if (n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
}

template <typename T>
void fill_rows(T* dst, const T* src, const SeqLayout& L, index_t B, index_t H) {
  for (index_t j = 0; j < B; ++j) {
    if (src) copy_row(dst + j * H, src + L.perm[j] * H, H);
    else std::fill(dst + j * H, dst + (j + 1) * H, T(0));
  }
}

// bf16 mixed precision (recurrent.h: ForwardArgs::bf16): v[0, n) rounded to bf16 in place. Only
// float layers run in bf16 (recurrent_forward refuses double), so the double instance does nothing.
template <typename T>
inline void round_operand(T* v, index_t n) {
  if constexpr (std::is_same_v<T, float>) {
    if (n > 0) round_bf16(n, v, v);
  }
}

// The whole-sequence products (the input projection, the weight gradients, dX): gemm(), or with
// bf16 the bf16 GEMM (quant/bf16_gemm.h), which rounds its operands as it packs them.
template <typename T>
void big_gemm(bool bf16, bool trans_a, bool trans_b, index_t M, index_t N, index_t K, const T* A, index_t lda,
              const T* B, index_t ldb, T beta, T* C, index_t ldc, int nthreads) {
  if constexpr (std::is_same_v<T, float>) {
    if (bf16) {
      gemm_bf16(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc, nthreads);
      return;
    }
  }
  gemm<T>(trans_a, trans_b, M, N, K, T(1), A, lda, B, ldb, beta, C, ldc, nthreads);
}

// The bf16-valued copy of the weights that a bf16 LSTM with projections multiplies by on the
// float32 kernels (its per-step products; the backward reuses it), in ws.wbf: w_ih (G*H, I),
// w_hh (G*H, R), w_hr (P, H); returns the weights with those pointers. Without projections every
// product that reads the weights is a bf16 one, which rounds them as it packs: no copy.
template <typename T>
RecurrentWeights<T> round_weights(RecurrentWorkspace<T>& ws, const RecurrentWeights<T>& w, index_t GH, index_t I,
                                  index_t R, index_t P, index_t H, int nthreads) {
  const index_t n_ih = GH * I, n_hh = GH * R, n_hr = P * H;
  ws.wbf.resize(std::max<index_t>(1, n_ih + n_hh + n_hr));
  T* q = ws.wbf.data();
  const T* src[3] = {w.w_ih, w.w_hh, w.w_hr};
  const index_t begin[3] = {0, n_ih, n_ih + n_hh}, count[3] = {n_ih, n_hh, n_hr};
  constexpr index_t kChunk = 16384;
  const int nt = threads_for(double(n_ih + n_hh + n_hr), kMinCopyPerThread, nthreads);
  for (int m = 0; m < 3; ++m) {
    if (count[m] == 0) continue;
    const index_t chunks = (count[m] + kChunk - 1) / kChunk;
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (index_t c = 0; c < chunks; ++c) {
      const index_t lo = c * kChunk, n = std::min(kChunk, count[m] - lo);
      copy_row(q + begin[m] + lo, src[m] + lo, n);
      round_operand(q + begin[m] + lo, n);
    }
  }
  RecurrentWeights<T> r = w;
  r.w_ih = q;
  r.w_hh = q + n_ih;
  r.w_hr = P > 0 ? q + n_ih + n_hh : nullptr;
  return r;
}

// kProj: an LSTM with projections (recurrent.h); only LSTMCell is instantiated with it. With
// kProj false every line is the plain layer's (R = H), so its speed is unchanged.
template <typename Cell, bool kProj, typename T>
void forward_impl(RecurrentWorkspace<T>& ws, const RecurrentShape& shape, const RecurrentWeights<T>& w,
                  const ForwardArgs<T>& a, int nthreads) {
  constexpr int G = Cell::G;
  const index_t Tn = shape.steps, B = shape.B, I = shape.I, H = shape.H, GH = G * H;
  const index_t P = kProj ? shape.P : 0, R = kProj ? P : H;  // R: the width of h
  ws.ready = false;
  ws.kind = shape.kind;
  ws.steps = Tn;
  ws.B = B;
  ws.I = I;
  ws.H = H;
  ws.P = P;
  ws.has_h0 = a.h0 != nullptr;
  ws.has_c0 = a.c0 != nullptr;
  const bool bf16 = a.bf16;
  ws.bf16 = bf16;
  SeqLayout& L = ws.layout;
  L.build(Tn, B, a.lengths, a.reverse);
  const index_t N = L.rows();
  const int copy_threads = threads_for(double(Tn * B * (I + GH)), kMinCopyPerThread, nthreads);
  FlushToZeroGuard ftz;
  // (A prepacked workspace has packed rounded weights already: recurrent/stream.h.)
  const bool round_copy = bf16 && kProj && !ws.prepacked;
  const RecurrentWeights<T> wq = round_copy ? round_weights(ws, w, GH, I, R, P, H, nthreads) : w;
  if (!round_copy) ws.wbf.release();

  // Inputs in packed row order. With bf16 only the bf16 GEMM reads them (the input projection and
  // dW_ih), and it rounds as it packs: no rounded copy.
  if (L.identity) {
    ws.x = a.x;
  } else {
    ws.xp.resize(N * I);
    T* xp = ws.xp.data();
#pragma omp parallel for num_threads(copy_threads) schedule(static) if (copy_threads > 1)
    for (index_t s = 0; s < Tn; ++s)
      for (index_t j = 0; j < L.count[s]; ++j) copy_row(xp + (L.offset[s] + j) * I, a.x + L.source_row(s, j) * I, I);
    ws.x = xp;
  }

  // 1. Input projections of every step in one GEMM. The biases are added per step by the
  // cells (folded once here), which saves a pass over all the gates.
  ws.gates.resize(N * GH);
  T* gates = ws.gates.data();
  // Row-exact (projection.h): each row rounds as it would in any other call, so a stream fed
  // chunk by chunk equals this whole-sequence forward bit for bit.
  const bool prepacked = ws.prepacked;
  ExactSplit split;
  if (bf16 && !prepacked) {  // the bf16 GEMM's bits do not depend on the blocking: row-exact as it is
    big_gemm<T>(true, false, true, N, GH, I, ws.x, I, wq.w_ih, I, T(0), gates, GH, nthreads);
    ws.bias.resize(GH);
    ws.has_bias = fuse_biases<Cell>(ws.bias.data(), w.b_ih, w.b_hh, H);
  } else if (bf16) {  // a bf16 stream: the chunk packed once, each slice multiplies its own columns
    if constexpr (std::is_same_v<T, float>) {
      ws.x16.resize(bf16_apack_size(N, I));
      pack_a_bf16(N, I, ws.x, I, ws.x16.data());
    }
  } else if (!prepacked) {
    project_exact<T>(N, ws.x, I, wq.w_ih, GH, gates, GH, nthreads, ws.proj);
    ws.bias.resize(GH);
    ws.has_bias = fuse_biases<Cell>(ws.bias.data(), w.b_ih, w.b_hh, H);
  } else {  // the slices project their own columns in the region below
    split = exact_split<T>(N);
    fill_exact_pad<T>(ws.proj.xpad.data(), ws.x, I, I, split);
  }
  const T* bias = ws.has_bias ? ws.bias.data() : nullptr;
  const T* xpad = ws.proj.xpad.data();
  const T* b_hn = b_hn_of<Cell>(w.b_hh, H);

  // States: rows [0, B) hold the initial state in sorted order.
  ws.hs.resize((B + N) * R);
  T* hs = ws.hs.data();
  fill_rows(hs, a.h0, L, B, R);
  if (bf16) round_operand(hs, B * R);
  T* cs = nullptr;
  if (Cell::kHasCellState) {
    ws.cs.resize((B + N) * H);
    cs = ws.cs.data();
    fill_rows(cs, a.c0, L, B, H);
  }
  T* hnl = nullptr;
  if (Cell::kSavesHn) {
    ws.hn.resize(N * H);
    hnl = ws.hn.data();
  }
  T* ms = nullptr;
  if (kProj) {
    ws.ms.resize(std::max<index_t>(1, N * H));
    ms = ws.ms.data();
  }

  // 2. The recurrence: each slice of hidden units [lo, hi) is owned by one thread, with all
  // its gates. Everything a thread needs is allocated here, before the parallel region, so
  // nothing inside it can throw; each thread packs its own slice of W_hh (so it starts out in
  // that core's cache) and only ever reads its own, so no barrier is needed after packing.
  const int nt = prepacked ? static_cast<int>(ws.slices.size()) : recurrence_threads(shape.kind, B, H, nthreads, P);
  // bf16 steps on the bf16 kernels (the projection's second product stays on the float32 ones)
  const bool step16 = std::is_same_v<T, float> && bf16 && !kProj;
  if (!prepacked) {
    ws.slices.resize(static_cast<std::size_t>(nt));
    for (int k = 0; k < nt; ++k) {
      RecurrentSlice<T>& sl = ws.slices[k];
      split_range(H, nt, k, kUnitAlign, &sl.lo, &sl.hi);
      const index_t n_units = sl.hi - sl.lo;
      if (step16) sl.a16.resize(bf16_apack_size(B, R));
      for (int g = 0; g < G; ++g) {
        if (step16) sl.w16[g].reserve(R, n_units);
        else sl.w[g].reserve(R, n_units);
      }
      sl.scratch.resize(std::max<index_t>(1, B * G * n_units));
      if (kProj) {
        split_range(P, nt, k, kUnitAlign, &sl.plo, &sl.phi);
        sl.wr.reserve(H, sl.phi - sl.plo);
      }
    }
  }
  RecurrentSlice<T>* slices = ws.slices.data();
  const T* w_hh = wq.w_hh;
  const T* w_hr = wq.w_hr;
  run_team(nt, [&](int team, StepBarrier& step_barrier) {
    for (int k = thread_id(); k < nt; k += team) {
      RecurrentSlice<T>& sl = slices[k];
      if (prepacked) {  // this slice's gate columns of every step's input projection
        if (sl.hi > sl.lo)
          for (int g = 0; g < G; ++g) {
            if constexpr (std::is_same_v<T, float>) {
              if (bf16) {
                gemm_bf16_prepacked(N, ws.x16.data(), sl.wi16[g], 0.0f, gates + g * H + sl.lo, GH);
                continue;
              }
            }
            project_packed<T>(split, ws.x, I, sl.wi[g], gates + g * H + sl.lo, GH, xpad, sl.cpad.data());
          }
        continue;
      }
      // Gate g's rows [g*H + lo, g*H + hi) of W_hh, as the transposed (R, units) operand.
      if (sl.hi > sl.lo)
        for (int g = 0; g < G; ++g) {
          if constexpr (std::is_same_v<T, float>) {
            if (step16) {
              sl.w16[g].fill(true, w_hh + (g * H + sl.lo) * R, R);
              continue;
            }
          }
          sl.w[g].fill(true, w_hh + (g * H + sl.lo) * R, R);
        }
      // Rows [plo, phi) of W_hr, as the transposed (H, phi - plo) operand.
      if (kProj && sl.phi > sl.plo) sl.wr.fill(true, w_hr + sl.plo * H, H);
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
        if constexpr (std::is_same_v<T, float>) {
          if (step16) {
            pack_a_bf16(n, R, hs + prev * R, R, sl.a16.data());
            for (int g = 0; g < G; ++g) gemm_bf16_prepacked(n, sl.a16.data(), sl.w16[g], 0.0f, hg + g * n_units, G * n_units);
          }
        }
        if (!step16)
          for (int g = 0; g < G; ++g) gemm_packed<T>(n, hs + prev * R, R, sl.w[g], T(0), hg + g * n_units, G * n_units);
        for (index_t j = 0; j < n; ++j) {
          CellStep<T> st;
          st.gates = gates + (L.offset[s] + j) * GH;
          st.hg = hg + j * G * n_units;
          st.bias = bias;
          st.b_hn = b_hn;
          st.h_prev = hs + (prev + j) * R;
          // With a projection the cell's output is m = o * tanh(c), projected below.
          st.h = kProj ? ms + (L.offset[s] + j) * H : hs + (cur + j) * H;
          if (Cell::kHasCellState) {
            st.c_prev = cs + (prev + j) * H;
            st.c = cs + (cur + j) * H;
          }
          if (Cell::kSavesHn) st.hn = hnl + (L.offset[s] + j) * H;
          Cell::forward(st, H, lo, hi);
          if (bf16) round_operand(st.h + lo, n_units);  // h (or m): the next product's operand
          // The output row, in the caller's layout, while the new state is in cache.
          if (!kProj) copy_row(a.y + L.source_row(s, j) * a.ldy + lo, st.h + lo, n_units);
        }
      }
      if (kProj) {
        step_barrier.wait_in_region();  // every unit of m is ready
        // h = W_hr m  =>  h[:, plo:phi) = m (n, H) W_hr[plo:phi)^T
        for (int k = thread_id(); k < nt; k += team) {
          RecurrentSlice<T>& sl = slices[k];
          const index_t plo = sl.plo, pu = sl.phi - sl.plo;
          if (pu == 0) continue;
          gemm_packed<T>(n, ms + L.offset[s] * H, H, sl.wr, T(0), hs + cur * R + plo, R);
          for (index_t j = 0; j < n; ++j) {
            if (bf16) round_operand(hs + (cur + j) * R + plo, pu);
            copy_row(a.y + L.source_row(s, j) * a.ldy + plo, hs + (cur + j) * R + plo, pu);
          }
        }
      }
      step_barrier.wait_in_region();
    }
  });

  // The time loop wrote every output row within its sequence; zeros past each sequence's end.
  if (!L.full) {
#pragma omp parallel for num_threads(copy_threads) schedule(static) if (copy_threads > 1)
    for (index_t t = 0; t < Tn; ++t) {
      for (index_t b = 0; b < B; ++b)
        if (t >= L.len[b]) std::fill(a.y + (t * B + b) * a.ldy, a.y + (t * B + b) * a.ldy + R, T(0));
    }
  }
  for (index_t j = 0; j < B; ++j) {
    const index_t len = L.len[L.perm[j]];
    const index_t row = len == 0 ? j : B + L.offset[len - 1] + j;
    if (a.hn) copy_row(a.hn + L.perm[j] * R, hs + row * R, R);
    if (Cell::kHasCellState && a.cn) copy_row(a.cn + L.perm[j] * H, cs + row * H, H);
  }
  ws.ready = true;
}

template <typename Cell, bool kProj, typename T>
void backward_impl(RecurrentWorkspace<T>& ws, const RecurrentWeights<T>& w, const RecurrentGrads<T>& d,
                   const BackwardArgs<T>& a, int nthreads) {
  constexpr int G = Cell::G;
  const index_t Tn = ws.steps, B = ws.B, I = ws.I, H = ws.H, GH = G * H;
  const index_t P = kProj ? ws.P : 0, R = kProj ? P : H;
  const SeqLayout& L = ws.layout;
  const index_t N = L.rows();
  T* gates = ws.gates.data();
  const T* hs = ws.hs.data();
  const T* cs = Cell::kHasCellState ? ws.cs.data() : nullptr;
  T* hnl = Cell::kSavesHn ? ws.hn.data() : nullptr;
  const T* ms = kProj ? ws.ms.data() : nullptr;
  const int copy_threads = threads_for(double(Tn * B * (I + GH)), kMinCopyPerThread, nthreads);
  FlushToZeroGuard ftz;
  // bf16 with projections: the forward's rounded weights (round_weights).
  const bool bf16 = ws.bf16;
  RecurrentWeights<T> wq = w;
  if (bf16 && kProj) {
    wq.w_ih = ws.wbf.data();
    wq.w_hh = ws.wbf.data() + GH * I;
    wq.w_hr = kProj ? ws.wbf.data() + GH * I + GH * R : nullptr;
  }

  // Carries from the future, in sorted order; sequences that end at step s find dL/dh_n here.
  ws.dh.resize(B * R);
  T* dh = ws.dh.data();
  fill_rows(dh, a.dhn, L, B, R);
  T* dc = nullptr;
  if (Cell::kHasCellState) {
    ws.dc.resize(B * H);
    dc = ws.dc.data();
    fill_rows(dc, a.dcn, L, B, H);
  }
  T* dhp = nullptr;
  T* dm = nullptr;
  if (kProj) {
    ws.dhp.resize(std::max<index_t>(1, N * P));
    dhp = ws.dhp.data();
    ws.dm.resize(B * H);
    dm = ws.dm.data();
  }
  // grad_norms: per packed row, the sums of squares of dL/dh per block of kUnitAlign units.
  const index_t gn_blocks = (R + kUnitAlign - 1) / kUnitAlign;
  double* gn = nullptr;
  if (a.grad_norms) {
    ws.gn.resize(std::max<index_t>(1, N * gn_blocks));
    gn = ws.gn.data();
  }

  // 3. The reverse sweep, sliced over hidden units like the forward. A slice multiplies the
  // step's h-side gate gradients by its columns of W_hh: dh_prev[:, lo:hi] = dgates_h W_hh[:, lo:hi].
  // GRU multiplies its n-gate part separately (its h-side gradient lives in hn). With a
  // projection the h columns are the P projected ones, sliced as [plo, phi).
  const int nt = recurrence_threads(ws.kind, B, H, nthreads, P);
  const index_t k_main = Cell::kHGates * H;
  const bool step16 = std::is_same_v<T, float> && bf16 && !kProj;  // as in the forward
  ws.slices.resize(static_cast<std::size_t>(nt));
  for (int k = 0; k < nt; ++k) {
    RecurrentSlice<T>& sl = ws.slices[k];
    split_range(H, nt, k, kUnitAlign, &sl.lo, &sl.hi);
    if (kProj) {
      split_range(P, nt, k, kUnitAlign, &sl.plo, &sl.phi);
      sl.w[0].reserve(k_main, sl.phi - sl.plo);
      sl.wr.reserve(P, sl.hi - sl.lo);
    } else if (step16) {
      sl.w16[0].reserve(k_main, sl.hi - sl.lo);
      sl.a16.resize(bf16_apack_size(B, k_main));
    } else {
      sl.w[0].reserve(k_main, sl.hi - sl.lo);
    }
    if (Cell::kSavesHn) {
      if (step16) sl.w16[1].reserve(H, sl.hi - sl.lo);
      else sl.w[1].reserve(H, sl.hi - sl.lo);
    }
    sl.scratch.resize(std::max<index_t>(1, sl.hi - sl.lo));
    sl.dbias.resize(std::max<index_t>(1, (Cell::kSavesHn ? G + 1 : G) * (sl.hi - sl.lo)));
    sl.dbias.zero();
  }
  // The bias gradients are column sums of the gate gradients; each thread adds up its own
  // units' columns during the sweep, while the rows are in cache, instead of a pass over all
  // the gates afterwards. Per element the order (steps from last to first, rows in order)
  // does not depend on the thread count.
  const bool want_db = d.db_ih != nullptr || d.db_hh != nullptr;
  RecurrentSlice<T>* slices = ws.slices.data();
  const T* w_hh = wq.w_hh;
  const T* w_hr = wq.w_hr;
  run_team(nt, [&](int team, StepBarrier& step_barrier) {
    for (int k = thread_id(); k < nt; k += team) {  // each thread packs the slices it multiplies by
      RecurrentSlice<T>& sl = slices[k];
      if (kProj) {
        if (sl.phi > sl.plo) sl.w[0].fill(false, w_hh + sl.plo, R);
        if (sl.hi > sl.lo) sl.wr.fill(false, w_hr + sl.lo, H);
        continue;
      }
      if (sl.hi == sl.lo) continue;
      if constexpr (std::is_same_v<T, float>) {
        if (step16) {
          sl.w16[0].fill(false, w_hh + sl.lo, H);
          if (Cell::kSavesHn) sl.w16[1].fill(false, w_hh + k_main * H + sl.lo, H);
          continue;
        }
      }
      sl.w[0].fill(false, w_hh + sl.lo, H);
      if (Cell::kSavesHn) sl.w[1].fill(false, w_hh + k_main * H + sl.lo, H);
    }
    for (index_t s = Tn - 1; s >= 0; --s) {
      const index_t n = L.count[s];
      if (n == 0) continue;
      const index_t prev = s == 0 ? 0 : B + L.offset[s - 1];
      const index_t cur = B + L.offset[s];
      if (kProj) {
        // dL/dh of this step's rows, columns [plo, phi): the carry (written by this same
        // slice's product below, one step later) plus dy.
        for (int k = thread_id(); k < nt; k += team) {
          const index_t plo = slices[k].plo, pu = slices[k].phi - slices[k].plo;
          for (index_t j = 0; pu > 0 && j < n; ++j) {
            T* RNNCORE_RESTRICT dst = dhp + (L.offset[s] + j) * R + plo;
            const T* RNNCORE_RESTRICT src = dh + j * R + plo;
            if (a.dy) {
              const T* RNNCORE_RESTRICT dyv = a.dy + L.source_row(s, j) * a.lddy + plo;
              for (index_t u = 0; u < pu; ++u) dst[u] = src[u] + dyv[u];
            } else {
              copy_row(dst, src, pu);
            }
            if (gn) block_sumsq<T>(gn + (L.offset[s] + j) * gn_blocks, dst - plo, nullptr, plo, plo + pu);
            if (bf16) round_operand(dst, pu);  // an operand of dm and of dW_hr
          }
        }
        step_barrier.wait_in_region();  // every column of dL/dh is ready
      }
      for (int k = thread_id(); k < nt; k += team) {
        const index_t lo = slices[k].lo, hi = slices[k].hi;
        // h = W_hr m  =>  dm[:, lo:hi) = dh (n, P) W_hr[:, lo:hi)
        if (kProj && lo < hi) gemm_packed<T>(n, dhp + L.offset[s] * R, R, slices[k].wr, T(0), dm + lo, H);
        for (index_t j = 0; lo < hi && j < n; ++j) {
          const index_t r = L.offset[s] + j;
          CellGradStep<T> st;
          st.gates = gates + r * GH;
          st.h_prev = hs + (prev + j) * R;
          st.h = kProj ? ms + r * H : hs + (cur + j) * H;
          if (Cell::kHasCellState) {
            st.c_prev = cs + (prev + j) * H;
            st.c = cs + (cur + j) * H;
            st.dc = dc + j * H;
          }
          if (Cell::kSavesHn) st.hn = hnl + r * H;
          if (kProj) {
            st.dh_carry = dm + j * H;  // dL/dm: the cell's output is m
            st.dy = nullptr;
          } else {
            st.dh_carry = dh + j * H;
            st.dy = a.dy ? a.dy + L.source_row(s, j) * a.lddy : nullptr;
          }
          st.scratch = slices[k].scratch.data();
          // dL/dh_t before the cell consumes it (GRU overwrites its carry)
          if (!kProj && gn) block_sumsq<T>(gn + r * gn_blocks, st.dh_carry, st.dy, lo, hi);
          Cell::backward(st, H, lo, hi);
          if (bf16) {  // the gate gradients (GRU: and dL/d(W_hn h + b_hn)) enter the products
            for (int q = 0; q < G; ++q) round_operand(st.gates + q * H + lo, hi - lo);
            if (Cell::kSavesHn) round_operand(st.hn + lo, hi - lo);
          }
          if (want_db) {
            const index_t units = hi - lo;
            T* RNNCORE_RESTRICT acc = slices[k].dbias.data();
            for (int q = 0; q < G; ++q) {
              const T* RNNCORE_RESTRICT col = st.gates + q * H + lo;
              T* RNNCORE_RESTRICT sum = acc + q * units;
              for (index_t u = 0; u < units; ++u) sum[u] += col[u];
            }
            if (Cell::kSavesHn) {
              const T* RNNCORE_RESTRICT col = st.hn + lo;
              T* RNNCORE_RESTRICT sum = acc + G * units;
              for (index_t u = 0; u < units; ++u) sum[u] += col[u];
            }
          }
        }
      }
      step_barrier.wait_in_region();
      for (int k = thread_id(); k < nt; k += team) {
        if (kProj) {
          // gates_h = h_prev W_hh^T  =>  dh_prev[:, plo:phi) = dgates W_hh[:, plo:phi)
          const index_t plo = slices[k].plo;
          if (slices[k].phi > plo) gemm_packed<T>(n, gates + L.offset[s] * GH, GH, slices[k].w[0], T(0), dh + plo, R);
          continue;
        }
        const index_t lo = slices[k].lo, hi = slices[k].hi;
        if (lo == hi) continue;
        if constexpr (std::is_same_v<T, float>) {
          if (step16) {
            RecurrentSlice<T>& sl = slices[k];
            pack_a_bf16(n, k_main, gates + L.offset[s] * GH, GH, sl.a16.data());
            gemm_bf16_prepacked(n, sl.a16.data(), sl.w16[0], Cell::kKeepsDh ? 1.0f : 0.0f, dh + lo, H);
            if (Cell::kSavesHn) {
              pack_a_bf16(n, H, hnl + L.offset[s] * H, H, sl.a16.data());
              gemm_bf16_prepacked(n, sl.a16.data(), sl.w16[1], 1.0f, dh + lo, H);
            }
            continue;
          }
        }
        gemm_packed<T>(n, gates + L.offset[s] * GH, GH, slices[k].w[0], Cell::kKeepsDh ? T(1) : T(0), dh + lo, H);
        if (Cell::kSavesHn) gemm_packed<T>(n, hnl + L.offset[s] * H, H, slices[k].w[1], T(1), dh + lo, H);
      }
    }
  });

  // ||dL/dh_t||: the blocks of each packed row summed in order, scattered to (t, b).
  if (a.grad_norms) {
    std::fill(a.grad_norms, a.grad_norms + Tn * B, 0.0);
    for (index_t s = 0; s < Tn; ++s)
      for (index_t j = 0; j < L.count[s]; ++j) {
        const double* blk = gn + (L.offset[s] + j) * gn_blocks;
        double sum = 0;
        for (index_t q = 0; q < gn_blocks; ++q) sum += blk[q];
        a.grad_norms[L.source_row(s, j)] = std::sqrt(sum);
      }
  }

  // dL/dh0 (and c0): rows of sequences of length 0 still hold dL/dh_n, as they should.
  for (index_t j = 0; j < B; ++j) {
    if (a.dh0) copy_row(a.dh0 + L.perm[j] * R, dh + j * R, R);
    if (Cell::kHasCellState && a.dc0) copy_row(a.dc0 + L.perm[j] * H, dc + j * H, H);
  }
  T* dx = a.dx;
  if (N == 0) {
    if (!a.accumulate_dx) std::fill(dx, dx + Tn * B * I, T(0));
    return;
  }

  // 4. Weight gradients, one GEMM each over all steps.
  // gates = X W_ih^T  =>  dW_ih += dgates^T X
  big_gemm<T>(bf16, true, false, GH, I, N, gates, GH, ws.x, I, T(1), d.dw_ih, I, nthreads);
  // h-side gates = h_prev W_hh^T  =>  dW_hh += dgates_h^T h_prev
  const T* hprev = hs;  // all lengths T: h_prev of packed row r is row r of hs
  if (!L.full) {
    ws.hprev.resize(N * R);
    T* hp = ws.hprev.data();
#pragma omp parallel for num_threads(copy_threads) schedule(static) if (copy_threads > 1)
    for (index_t s = 0; s < Tn; ++s) {
      const index_t prev = s == 0 ? 0 : B + L.offset[s - 1];
      for (index_t j = 0; j < L.count[s]; ++j) copy_row(hp + (L.offset[s] + j) * R, hs + (prev + j) * R, R);
    }
    hprev = hp;
  }
  big_gemm<T>(bf16, true, false, k_main, R, N, gates, GH, hprev, R, T(1), d.dw_hh, R, nthreads);
  if (Cell::kSavesHn) big_gemm<T>(bf16, true, false, H, H, N, hnl, H, hprev, H, T(1), d.dw_hh + k_main * H, H, nthreads);
  // h = W_hr m  =>  dW_hr += dh^T m
  if (kProj) big_gemm<T>(bf16, true, false, P, H, N, dhp, R, ms, H, T(1), d.dw_hr, H, nthreads);
  // db_ih = sums of the x-side gate gradients; db_hh = those of the h-side ones (the same
  // columns, except GRU's n part, which is the gradient of W_hn h + b_hn).
  for (int k = 0; want_db && k < nt; ++k) {
    const RecurrentSlice<T>& sl = slices[k];
    const index_t units = sl.hi - sl.lo;
    const T* acc = sl.dbias.data();
    for (int q = 0; q < G; ++q)
      for (index_t u = 0; u < units; ++u) {
        const index_t c = q * H + sl.lo + u;
        if (d.db_ih) d.db_ih[c] += acc[q * units + u];
        if (d.db_hh) d.db_hh[c] += q >= Cell::kHGates ? acc[G * units + u] : acc[q * units + u];
      }
  }

  // gates = X W_ih^T  =>  dX = dgates W_ih
  if (L.identity) {
    big_gemm<T>(bf16, false, false, N, I, GH, gates, GH, wq.w_ih, I, a.accumulate_dx ? T(1) : T(0), dx, I, nthreads);
  } else {
    ws.dxp.resize(N * I);
    T* dxp = ws.dxp.data();
    big_gemm<T>(bf16, false, false, N, I, GH, gates, GH, wq.w_ih, I, T(0), dxp, I, nthreads);
    if (!a.accumulate_dx) {
#pragma omp parallel for num_threads(copy_threads) schedule(static) if (copy_threads > 1)
      for (index_t t = 0; t < Tn; ++t)
        for (index_t b = 0; b < B; ++b)
          if (t >= L.len[b]) std::fill(dx + (t * B + b) * I, dx + (t * B + b + 1) * I, T(0));
    }
#pragma omp parallel for num_threads(copy_threads) schedule(static) if (copy_threads > 1)
    for (index_t s = 0; s < Tn; ++s) {
      for (index_t j = 0; j < L.count[s]; ++j) {
        T* RNNCORE_RESTRICT dst = dx + L.source_row(s, j) * I;
        const T* RNNCORE_RESTRICT p = dxp + (L.offset[s] + j) * I;
        if (a.accumulate_dx)
          for (index_t c = 0; c < I; ++c) dst[c] += p[c];
        else
          copy_row(dst, p, I);
      }
    }
  }
}

void check_projection(CellKind kind, index_t H, index_t P, const char* fn) {
  if (P == 0) return;
  if (kind != CellKind::LSTM)
    fail(std::string(fn) + ": proj_size is only for lstm cells, got " + std::to_string(P) + " for " +
         cell_kind_name(kind));
  if (P < 0 || P >= H)
    fail(std::string(fn) + ": proj_size must be in [0, hidden_size) = [0, " + std::to_string(H) + "), got " +
         std::to_string(P));
}

}  // namespace

// No more threads than there are unit slices, and one when a step is too small for a second
// thread to pay for its barrier.
// A projected LSTM step does G*H*P + P*H multiply-adds per row instead of G*H*H.
int recurrence_threads(CellKind kind, index_t B, index_t H, int nthreads, index_t P) {
  const index_t slices = (H + kUnitAlign - 1) / kUnitAlign;
  const double macs = P > 0 ? double(gate_count(kind)) * H * P + double(P) * H : double(gate_count(kind)) * H * H;
  const int nt = threads_for(double(B) * macs, kMinStepMacsPerThread, nthreads);
  return static_cast<int>(std::max<index_t>(1, std::min<index_t>(nt, slices)));
}

template <typename T>
void recurrent_forward(RecurrentWorkspace<T>& ws, const RecurrentShape& shape, const RecurrentWeights<T>& w,
                       const ForwardArgs<T>& a, int nthreads) {
  check_projection(shape.kind, shape.H, shape.P, "recurrent_forward");
  if (a.bf16 && !std::is_same_v<T, float>) fail("recurrent_forward: bf16 needs float32 (master) weights and inputs, got float64");
  if (shape.P > 0) {
    forward_impl<LSTMCell<T>, true>(ws, shape, w, a, nthreads);
    return;
  }
  with_cell(shape.kind, [&](auto tag) {
    forward_impl<typename decltype(tag)::template type<T>, false>(ws, shape, w, a, nthreads);
  });
}

template <typename T>
void recurrent_backward(RecurrentWorkspace<T>& ws, const RecurrentWeights<T>& w, const RecurrentGrads<T>& d,
                        const BackwardArgs<T>& a, int nthreads) {
  if (!ws.ready) fail("recurrent_backward: no forward to differentiate (run forward first; backward runs once per forward)");
  ws.ready = false;  // the saved gates are overwritten by their gradients
  if (ws.P > 0) {
    backward_impl<LSTMCell<T>, true>(ws, w, d, a, nthreads);
    return;
  }
  with_cell(ws.kind, [&](auto tag) {
    backward_impl<typename decltype(tag)::template type<T>, false>(ws, w, d, a, nthreads);
  });
}

#define RNNCORE_INSTANTIATE(T)                                                                                   \
  template void recurrent_forward<T>(RecurrentWorkspace<T>&, const RecurrentShape&, const RecurrentWeights<T>&, \
                                     const ForwardArgs<T>&, int);                                               \
  template void recurrent_backward<T>(RecurrentWorkspace<T>&, const RecurrentWeights<T>&,                       \
                                      const RecurrentGrads<T>&, const BackwardArgs<T>&, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
