// The input-feeding attentional decoder: forward and BPTT over the whole target sequence
// (see attn_decoder.h). One time loop, templated on the cell; the entry points switch on the
// kind once.
#include "recurrent/attn_decoder.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/parallel.h"
#include "gemm/gemm.h"
#include "gemm/kernels.h"

namespace rnncore {

namespace {

// Elements a thread of a pointwise pass over the batch rows should have.
constexpr double kMinRowWorkPerThread = 16384;

template <typename T>
void copy_or_zero(T* RNNCORE_RESTRICT dst, const T* RNNCORE_RESTRICT src, index_t n) {
  if (n <= 0) return;
  if (src) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
  else std::fill(dst, dst + n, T(0));
}

// Rows [0, B) of one step's cells, in parallel when the step is large enough. body(b, thread).
template <typename F>
void for_rows(index_t B, int nt, const F& body) {
  if (nt <= 1) {
    for (index_t b = 0; b < B; ++b) body(b, 0);
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(static)
  for (index_t b = 0; b < B; ++b) body(b, thread_id());
}

// C (M, N) = A (M, K) packed (K, N) + beta C, the rows split over threads when the product is
// large enough (each thread multiplies its own rows by the shared packed operand). The split
// falls on the microkernel's row tiles, so every row meets the same kernel on any thread
// count (a partial tile's kernel may round differently) and the results are bit-identical.
template <typename T>
void mul(index_t M, const T* A, index_t lda, const PackedB<T>& Bp, T beta, T* C, index_t ldc, int nthreads) {
  const int nt = gemm_threads(M, Bp.cols(), Bp.rows(), nthreads);
  if (nt <= 1) {
    gemm_packed<T>(M, A, lda, Bp, beta, C, ldc);
    return;
  }
  const index_t mr = gemm_detail::active_kernels<T>().mr;
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int k = 0; k < nt; ++k) {
    index_t lo = 0, hi = 0;
    split_range(M, nt, k, mr, &lo, &hi);
    if (hi > lo) gemm_packed<T>(hi - lo, A + lo * lda, lda, Bp, beta, C + lo * ldc, ldc);
  }
}

// Slots of AttnDecoderWorkspace::packed: 0 the feed columns of W_ih0, then per layer l
// 1 + 3l W_hh (x-side rows in backward), 2 + 3l W_ih (l > 0), 3 + 3l GRU's W_hn (backward).
inline std::size_t packed_index(index_t l, int which) { return static_cast<std::size_t>(1 + 3 * l + which); }

void check_shape(const AttnDecoderShape& s, index_t Hq, const char* fn) {
  if (s.L < 1) fail(std::string(fn) + ": num_layers must be >= 1, got " + std::to_string(s.L));
  if (Hq != s.H)
    fail(std::string(fn) + ": the attention's query size " + std::to_string(Hq) + " must equal hidden_size " +
         std::to_string(s.H));
}

template <typename Cell, typename T>
void forward_impl(AttnDecoderWorkspace<T>& ws, const AttnDecoderShape& shape, const AttnDecoderWeights<T>& w,
                  const AttnDecoderForwardArgs<T>& a, int nthreads) {
  constexpr int G = Cell::G;
  const index_t Tn = shape.steps, B = shape.B, E = shape.E, H = shape.H, L = shape.L, S = shape.S;
  const index_t GH = G * H, N = Tn * B;
  const AttentionWeights<T>& aw = w.attn;
  const index_t Hm = aw.Hm, Ho = aw.Ho, A = aw.A, K = aw.key_size();
  const index_t EF = E + Ho;  // layer 0's input width
  const bool additive = aw.kind == AttentionKind::Additive;
  ws.ready = false;
  ws.shape = shape;
  ws.attn_kind = aw.kind;
  ws.Hm = Hm;
  ws.Ho = Ho;
  ws.A = A;
  ws.K = K;
  ws.x = a.x;
  ws.memory = a.memory;
  ws.masks = L > 1 ? a.masks : nullptr;
  ws.lengths.assign(a.lengths, a.lengths + B);
  const std::int64_t* lengths = ws.lengths.data();
  FlushToZeroGuard ftz;

  // Everything allocated before the loop.
  ws.gates.resize(L);
  ws.hs.resize(L);
  ws.cs.resize(L);
  ws.hn.resize(L);
  ws.inputs.resize(L);
  ws.bias.resize(L);
  ws.has_bias.assign(L, 0);
  for (index_t l = 0; l < L; ++l) {
    ws.gates[l].resize(std::max<index_t>(1, N * GH));
    ws.hs[l].resize((Tn + 1) * B * H);
    copy_or_zero(ws.hs[l].data(), a.h0 ? a.h0 + l * B * H : nullptr, B * H);
    if (Cell::kHasCellState) {
      ws.cs[l].resize((Tn + 1) * B * H);
      copy_or_zero(ws.cs[l].data(), a.c0 ? a.c0 + l * B * H : nullptr, B * H);
    }
    if (Cell::kSavesHn) ws.hn[l].resize(std::max<index_t>(1, N * H));
    if (l > 0 && ws.masks) ws.inputs[l].resize(std::max<index_t>(1, N * H));
    ws.bias[l].resize(GH);
    ws.has_bias[l] = fuse_biases<Cell>(ws.bias[l].data(), w.b_ih[l], w.b_hh[l], H);
  }
  ws.feeds.resize((Tn + 1) * B * Ho);
  copy_or_zero(ws.feeds.data(), a.feed0, B * Ho);
  ws.alpha.resize(std::max<index_t>(1, N * S));
  ws.context.resize(std::max<index_t>(1, N * Hm));
  if (additive) ws.tanh.resize(std::max<index_t>(1, N * S * A));
  ws.hg.resize(std::max<index_t>(1, B * GH));
  const T* keys = a.memory;
  if (aw.kind != AttentionKind::Dot) {
    ws.keys.resize(std::max<index_t>(1, S * B * K));
    attention_keys<T>(ws.keys.data(), a.memory, aw, S, B, nthreads);
    keys = ws.keys.data();
  }
  // gates = in W^T: the transposed weights, packed once for every step
  ws.packed.resize(packed_index(L, 0));
  ws.packed[0].pack(true, Ho, GH, w.w_ih[0] + E, EF);
  for (index_t l = 0; l < L; ++l) {
    ws.packed[packed_index(l, 0)].pack(true, H, GH, w.w_hh[l], H);
    if (l > 0) ws.packed[packed_index(l, 1)].pack(true, H, GH, w.w_ih[l], H);
  }
  T* feeds = ws.feeds.data();
  T* hg = ws.hg.data();
  const int row_threads = threads_for(double(B) * GH, kMinRowWorkPerThread, nthreads);

  // in^0_t = [x_t ; feed_t]: the x part of every step in one GEMM, gates0 = X W_ih[:, :E]^T
  gemm<T>(false, true, N, GH, E, T(1), a.x, E, w.w_ih[0], EF, T(0), ws.gates[0].data(), GH, nthreads);

  for (index_t t = 0; t < Tn; ++t) {
    for (index_t l = 0; l < L; ++l) {
      T* g = ws.gates[l].data() + t * B * GH;
      if (l == 0) {
        // gates0 += feed_t W_ih[:, E:]^T
        mul<T>(B, feeds + t * B * Ho, Ho, ws.packed[0], T(1), g, GH, nthreads);
      } else {
        const T* below = ws.hs[l - 1].data() + (t + 1) * B * H;
        const T* in = below;
        if (ws.masks) {
          // in^l_t = h^{l-1}_t * mask[l-1, t]
          T* RNNCORE_RESTRICT dst = ws.inputs[l].data() + t * B * H;
          const T* RNNCORE_RESTRICT m = ws.masks + ((l - 1) * Tn + t) * B * H;
          for (index_t i = 0; i < B * H; ++i) dst[i] = below[i] * m[i];
          in = dst;
        }
        mul<T>(B, in, H, ws.packed[packed_index(l, 1)], T(0), g, GH, nthreads);
      }
      // hg = h^l_{t-1} W_hh^T
      const T* hprev = ws.hs[l].data() + t * B * H;
      T* hcur = ws.hs[l].data() + (t + 1) * B * H;
      mul<T>(B, hprev, H, ws.packed[packed_index(l, 0)], T(0), hg, GH, nthreads);
      const T* bias = ws.has_bias[l] ? ws.bias[l].data() : nullptr;
      const T* b_hn = b_hn_of<Cell>(w.b_hh[l], H);
      T* cs = Cell::kHasCellState ? ws.cs[l].data() : nullptr;
      T* hnl = Cell::kSavesHn ? ws.hn[l].data() : nullptr;
      for_rows(B, row_threads, [&](index_t b, int) {
        CellStep<T> st;
        st.gates = g + b * GH;
        st.hg = hg + b * GH;
        st.bias = bias;
        st.b_hn = b_hn;
        st.h_prev = hprev + b * H;
        st.h = hcur + b * H;
        if (Cell::kHasCellState) {
          st.c_prev = cs + (t * B + b) * H;
          st.c = cs + ((t + 1) * B + b) * H;
        }
        if (Cell::kSavesHn) st.hn = hnl + (t * B + b) * H;
        Cell::forward(st, H, 0, H);
      });
    }
    // attn_h_t, alpha_t = attention(h^{L-1}_t); feed_{t+1} = attn_h_t
    AttentionSaved<T> saved;
    if (additive) saved.tanh = ws.tanh.data() + t * B * S * A;
    attention_forward<T>(feeds + (t + 1) * B * Ho, ws.alpha.data() + t * B * S, ws.context.data() + t * B * Hm, saved,
                         ws.hs[L - 1].data() + (t + 1) * B * H, H, a.memory, keys, lengths, aw, 1, B, S, nthreads);
  }

  copy_or_zero(a.attn_h, feeds + B * Ho, N * Ho);
  copy_or_zero(a.alpha, ws.alpha.data(), N * S);
  for (index_t l = 0; l < L; ++l) {
    if (a.hn) copy_or_zero(a.hn + l * B * H, ws.hs[l].data() + Tn * B * H, B * H);
    if (Cell::kHasCellState && a.cn) copy_or_zero(a.cn + l * B * H, ws.cs[l].data() + Tn * B * H, B * H);
  }
  ws.ready = true;
}

template <typename Cell, typename T>
void backward_impl(AttnDecoderWorkspace<T>& ws, const AttnDecoderWeights<T>& w, const AttnDecoderGrads<T>& d,
                   const AttnDecoderBackwardArgs<T>& a, int nthreads) {
  constexpr int G = Cell::G;
  const AttnDecoderShape& shape = ws.shape;
  const index_t Tn = shape.steps, B = shape.B, E = shape.E, H = shape.H, L = shape.L, S = shape.S;
  const index_t GH = G * H, N = Tn * B, k_main = Cell::kHGates * H;
  const AttentionWeights<T>& aw = w.attn;
  const index_t Hm = ws.Hm, Ho = ws.Ho, A = ws.A, K = ws.K;
  const index_t EF = E + Ho;
  const bool additive = ws.attn_kind == AttentionKind::Additive, dot = ws.attn_kind == AttentionKind::Dot;
  const std::int64_t* lengths = ws.lengths.data();
  const T* memory = ws.memory;
  const T* keys = dot ? memory : ws.keys.data();
  const T* feeds = ws.feeds.data();
  FlushToZeroGuard ftz;

  ws.dh.resize(L * B * H);
  T* dh = ws.dh.data();
  copy_or_zero(dh, a.dhn, L * B * H);
  T* dc = nullptr;
  if (Cell::kHasCellState) {
    ws.dc.resize(L * B * H);
    dc = ws.dc.data();
    copy_or_zero(dc, a.dcn, L * B * H);
  }
  ws.dq.resize(B * H);
  ws.dy.resize(B * H);
  ws.dfeed.resize(std::max<index_t>(1, B * Ho));
  ws.dattn.resize(std::max<index_t>(1, B * Ho));
  T* dq = ws.dq.data();
  T* dyb = ws.dy.data();
  T* dfeed = ws.dfeed.data();
  T* dattn = ws.dattn.data();
  std::fill(dfeed, dfeed + B * Ho, T(0));  // feed_T has no consumer
  std::fill(a.dmemory, a.dmemory + S * B * Hm, T(0));
  T* dkeys = a.dmemory;  // dot: the keys are the memory
  if (!dot) {
    ws.dkeys.resize(std::max<index_t>(1, S * B * K));
    ws.dkeys.zero();
    dkeys = ws.dkeys.data();
  }
  // dgates W: the weights as they are (not transposed), packed once for every step
  ws.packed.resize(packed_index(L, 0));
  ws.packed[0].pack(false, GH, Ho, w.w_ih[0] + E, EF);
  for (index_t l = 0; l < L; ++l) {
    ws.packed[packed_index(l, 0)].pack(false, k_main, H, w.w_hh[l], H);
    if (l > 0) ws.packed[packed_index(l, 1)].pack(false, GH, H, w.w_ih[l], H);
    if (Cell::kSavesHn) ws.packed[packed_index(l, 2)].pack(false, H, H, w.w_hh[l] + k_main * H, H);
  }
  const int row_threads = threads_for(double(B) * GH, kMinRowWorkPerThread, nthreads);
  ws.dhcat.resize(std::max<index_t>(1, row_threads * H));  // the cells' scratch, H per thread

  for (index_t t = Tn - 1; t >= 0; --t) {
    // attn_h_t is the output at t and feed_{t+1}: both gradients
    const T* dout = a.d_attn_h ? a.d_attn_h + t * B * Ho : nullptr;
    for (index_t i = 0; i < B * Ho; ++i) dattn[i] = (dout ? dout[i] : T(0)) + dfeed[i];
    AttentionSaved<T> saved;
    if (additive) saved.tanh = ws.tanh.data() + t * B * S * A;
    // attn_h_t, alpha_t = attention(q = h^{L-1}_t)  =>  dq, dmemory, dkeys, attention weights
    attention_backward<T>(dq, H, false, a.dmemory, dkeys, d.attn, dattn, a.d_alpha ? a.d_alpha + t * B * S : nullptr,
                          saved, ws.hs[L - 1].data() + (t + 1) * B * H, H, memory, keys, lengths,
                          ws.alpha.data() + t * B * S, ws.context.data() + t * B * Hm, feeds + (t + 1) * B * Ho, aw, 1,
                          B, S, nthreads);
    const T* dyl = dq;  // gradient of this layer's h_t from above (attention, or the next layer's input)
    for (index_t l = L - 1; l >= 0; --l) {
      T* g = ws.gates[l].data() + t * B * GH;
      const T* hsl = ws.hs[l].data();
      const T* cs = Cell::kHasCellState ? ws.cs[l].data() : nullptr;
      T* hnl = Cell::kSavesHn ? ws.hn[l].data() : nullptr;
      T* dhl = dh + l * B * H;
      T* dcl = Cell::kHasCellState ? dc + l * B * H : nullptr;
      T* scratch = ws.dhcat.data();
      for_rows(B, row_threads, [&](index_t b, int thread) {
        CellGradStep<T> st;
        st.gates = g + b * GH;
        st.h_prev = hsl + (t * B + b) * H;
        st.h = hsl + ((t + 1) * B + b) * H;
        if (Cell::kHasCellState) {
          st.c_prev = cs + (t * B + b) * H;
          st.c = cs + ((t + 1) * B + b) * H;
          st.dc = dcl + b * H;
        }
        if (Cell::kSavesHn) st.hn = hnl + (t * B + b) * H;
        st.dh_carry = dhl + b * H;
        st.dy = dyl + b * H;
        st.scratch = scratch + thread * H;
        Cell::backward(st, H, 0, H);
      });
      // h-side gates = h_prev W_hh^T  =>  dh_prev = dgates_h W_hh (GRU: + its n part, kept in hn)
      mul<T>(B, g, GH, ws.packed[packed_index(l, 0)], Cell::kKeepsDh ? T(1) : T(0), dhl, H, nthreads);
      if (Cell::kSavesHn) mul<T>(B, hnl + t * B * H, H, ws.packed[packed_index(l, 2)], T(1), dhl, H, nthreads);
      if (l > 0) {
        // gates = in^l W_ih^T, in^l = h^{l-1} * mask  =>  dh^{l-1} (from above) = (dgates W_ih) * mask
        mul<T>(B, g, GH, ws.packed[packed_index(l, 1)], T(0), dyb, H, nthreads);
        if (ws.masks) {
          const T* RNNCORE_RESTRICT m = ws.masks + ((l - 1) * Tn + t) * B * H;
          for (index_t i = 0; i < B * H; ++i) dyb[i] *= m[i];
        }
        dyl = dyb;
      } else {
        // gates0 = [x ; feed_t] W_ih^T  =>  dfeed_t = dgates0 W_ih[:, E:]
        mul<T>(B, g, GH, ws.packed[0], T(0), dfeed, Ho, nthreads);
      }
    }
  }

  if (a.dfeed0) copy_or_zero(a.dfeed0, dfeed, B * Ho);
  if (a.dh0) copy_or_zero(a.dh0, dh, L * B * H);
  if (Cell::kHasCellState && a.dc0) copy_or_zero(a.dc0, dc, L * B * H);

  // Weight gradients, one GEMM each over all steps.
  for (index_t l = 0; l < L; ++l) {
    const T* g = ws.gates[l].data();
    const T* hsl = ws.hs[l].data();
    if (l == 0) {
      // gates0 = X W_ih[:, :E]^T + F W_ih[:, E:]^T  =>  dW_ih[:, :E] += dgates0^T X, dW_ih[:, E:] += dgates0^T F
      gemm<T>(true, false, GH, E, N, T(1), g, GH, ws.x, E, T(1), d.dw_ih[0], EF, nthreads);
      gemm<T>(true, false, GH, Ho, N, T(1), g, GH, feeds, Ho, T(1), d.dw_ih[0] + E, EF, nthreads);
    } else {
      const T* in = ws.masks ? ws.inputs[l].data() : ws.hs[l - 1].data() + B * H;
      gemm<T>(true, false, GH, H, N, T(1), g, GH, in, H, T(1), d.dw_ih[l], H, nthreads);
    }
    // h-side gates = h_prev W_hh^T  =>  dW_hh += dgates_h^T h_prev (h_prev of step t is block t of hs)
    gemm<T>(true, false, k_main, H, N, T(1), g, GH, hsl, H, T(1), d.dw_hh[l], H, nthreads);
    if (Cell::kSavesHn)
      gemm<T>(true, false, H, H, N, T(1), ws.hn[l].data(), H, hsl, H, T(1), d.dw_hh[l] + k_main * H, H, nthreads);
    // db_ih = column sums of the x-side gate gradients; db_hh the h-side ones (GRU's n part in hn)
    T* db_ih = d.db_ih[l];
    T* db_hh = d.db_hh[l];
    if (db_ih || db_hh) {
      ws.dhcat.resize(GH + H);
      T* RNNCORE_RESTRICT sum = ws.dhcat.data();
      std::fill(sum, sum + GH + H, T(0));
      for (index_t r = 0; r < N; ++r) {
        const T* RNNCORE_RESTRICT row = g + r * GH;
        for (index_t c = 0; c < GH; ++c) sum[c] += row[c];
        if (Cell::kSavesHn) {
          const T* RNNCORE_RESTRICT hrow = ws.hn[l].data() + r * H;
          for (index_t c = 0; c < H; ++c) sum[GH + c] += hrow[c];
        }
      }
      for (index_t c = 0; c < GH; ++c) {
        if (db_ih) db_ih[c] += sum[c];
        if (db_hh) db_hh[c] += c < k_main ? sum[c] : sum[GH + c - k_main];
      }
    }
  }
  // gates0 = X W_ih[:, :E]^T  =>  dX = dgates0 W_ih[:, :E]
  gemm<T>(false, false, N, E, GH, T(1), ws.gates[0].data(), GH, w.w_ih[0], EF, T(0), a.dx, E, nthreads);
  // keys = f(memory)  =>  dmemory += dkeys' part, and the W_in / W_k gradients
  if (!dot) attention_keys_backward<T>(a.dmemory, d.attn, dkeys, memory, aw, S, B, nthreads);
}

}  // namespace

template <typename T>
void attn_decoder_forward(AttnDecoderWorkspace<T>& ws, const AttnDecoderShape& shape,
                          const AttnDecoderWeights<T>& w, const AttnDecoderForwardArgs<T>& a, int nthreads) {
  check_shape(shape, w.attn.Hq, "attn_decoder_forward");
  with_cell(shape.kind, [&](auto tag) {
    forward_impl<typename decltype(tag)::template type<T>>(ws, shape, w, a, nthreads);
  });
}

template <typename T>
void attn_decoder_backward(AttnDecoderWorkspace<T>& ws, const AttnDecoderWeights<T>& w,
                           const AttnDecoderGrads<T>& d, const AttnDecoderBackwardArgs<T>& a, int nthreads) {
  if (!ws.ready)
    fail("attn_decoder_backward: no forward to differentiate (run forward first; backward runs once per forward)");
  ws.ready = false;  // the saved gates are overwritten by their gradients
  with_cell(ws.shape.kind, [&](auto tag) {
    backward_impl<typename decltype(tag)::template type<T>>(ws, w, d, a, nthreads);
  });
}

#define RNNCORE_INSTANTIATE(T)                                                                          \
  template void attn_decoder_forward<T>(AttnDecoderWorkspace<T>&, const AttnDecoderShape&,             \
                                        const AttnDecoderWeights<T>&, const AttnDecoderForwardArgs<T>&, int); \
  template void attn_decoder_backward<T>(AttnDecoderWorkspace<T>&, const AttnDecoderWeights<T>&,       \
                                         const AttnDecoderGrads<T>&, const AttnDecoderBackwardArgs<T>&, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
