// The seq2seq decoding loop in C++ (see seq2seq_decoder.h).
#include "generate/seq2seq_decoder.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>

#include "cells/cell.h"
#include "common/parallel.h"
#include "common/vmath.h"

namespace rnncore {

namespace {

constexpr index_t kAlign = 8;
// Multiply-adds between two polls: a millisecond or so of work (as in generate/decoder.cpp).
constexpr double kPollWork = 1 << 22;

template <typename T>
void copy_n(T* dst, const T* src, index_t n) {
  if (n > 0) std::memcpy(dst, src, sizeof(T) * static_cast<std::size_t>(n));
}

template <typename T>
T dot(const T* a, const T* b, index_t n) {
  T s = 0;
  for (index_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// logsumexp of a row (max, then the sum of exp(x - max) in double; the exponentials through
// common/vmath.h's vexp, vectorised for float). NaN when the row holds a NaN or +inf or is all
// -inf (then no log-probability means anything). tmp: (V) scratch.
template <typename T>
double row_logsumexp(const T* x, index_t V, T* tmp) {
  T m = -std::numeric_limits<T>::infinity();
  for (index_t v = 0; v < V; ++v) m = x[v] > m ? x[v] : m;
  for (index_t v = 0; v < V; ++v) tmp[v] = x[v] - m;  // NaN for a NaN, for +inf, or when all are -inf
  vexp(tmp, tmp, V);
  double total = 0;
  for (index_t v = 0; v < V; ++v) total += static_cast<double>(tmp[v]);
  return static_cast<double>(m) + std::log(total);
}

// A retired hypothesis: it ended with eos at `step`, extending beam `parent` of its source.
struct Ended {
  index_t step, parent;
  std::int64_t token;
  double score;
};

}  // namespace

template <typename T>
Seq2SeqDecoder<T>::Seq2SeqDecoder(const Seq2SeqWeights<T>& w, int nthreads) : w_(w) {
  G_ = gate_count(w.kind);
  const index_t H = w.H, V = w.V, GH = G_ * H;
  Hm_ = w.has_attention ? w.attn.Hm : 0;
  K_ = w.has_attention ? w.attn.key_size() : 0;
  O_ = w.out_size();
  F_ = w.feed_size();
  X_ = w.E + F_;
  const index_t A = w.has_attention && w.attn.kind == AttentionKind::Additive ? w.attn.A : 0;
  const index_t Ho = w.has_attention ? w.attn.Ho : 0;
  fused_bias_.resize(static_cast<std::size_t>(w.L));
  bias_.assign(static_cast<std::size_t>(w.L), nullptr);
  b_hn_.assign(static_cast<std::size_t>(w.L), nullptr);
  with_cell(w.kind, [&](auto tag) {
    using Cell = typename decltype(tag)::template type<T>;
    layer_step_ = &Seq2SeqDecoder<T>::template layer_step<Cell>;
    for (int l = 0; l < w.L; ++l) {
      fused_bias_[l].resize(GH);
      if (fuse_biases<Cell>(fused_bias_[l].data(), w.b_ih[l], w.b_hh[l], H)) bias_[l] = fused_bias_[l].data();
      b_hn_[l] = b_hn_of<Cell>(w.b_hh[l], H);
    }
  });
  const index_t units = (std::max(H, V / 16) + kAlign - 1) / kAlign;
  nt_ = static_cast<int>(std::max<index_t>(1, std::min<index_t>(nthreads, units)));
  slices_.resize(static_cast<std::size_t>(nt_));
  AlignedBuffer<T> rows;
  for (int s = 0; s < nt_; ++s) {
    Slice& sl = slices_[s];
    split_range(H, nt_, s, kAlign, &sl.lo, &sl.hi);
    split_range(V, nt_, s, kAlign, &sl.v0, &sl.v1);
    split_range(A, nt_, s, kAlign, &sl.a0, &sl.a1);
    split_range(Ho, nt_, s, kAlign, &sl.o0, &sl.o1);
    const index_t hs = sl.hi - sl.lo;
    sl.w_ih.resize(static_cast<std::size_t>(w.L));
    sl.w_hh.resize(static_cast<std::size_t>(w.L));
    for (int l = 0; l < w.L && hs > 0; ++l) {
      const index_t in = l == 0 ? X_ : H;
      // The slice's rows of each weight, gate-major (G * hs, in), packed as the transpose.
      rows.resize(G_ * hs * std::max(in, H));
      for (int g = 0; g < G_; ++g)
        for (index_t u = sl.lo; u < sl.hi; ++u)
          copy_n(rows.data() + (g * hs + u - sl.lo) * in, w.w_ih[l] + (g * H + u) * in, in);
      sl.w_ih[l].pack(true, in, G_ * hs, rows.data(), in);
      for (int g = 0; g < G_; ++g)
        for (index_t u = sl.lo; u < sl.hi; ++u)
          copy_n(rows.data() + (g * hs + u - sl.lo) * H, w.w_hh[l] + (g * H + u) * H, H);
      sl.w_hh[l].pack(true, H, G_ * hs, rows.data(), H);
    }
    if (sl.a1 > sl.a0) sl.w_q.pack(true, H, sl.a1 - sl.a0, w.attn.w_q + sl.a0 * H, H);
    if (sl.o1 > sl.o0) sl.w_c.pack(true, Hm_ + H, sl.o1 - sl.o0, w.attn.w_out + sl.o0 * (Hm_ + H), Hm_ + H);
    if (sl.v1 > sl.v0) sl.w_out.pack(true, O_, sl.v1 - sl.v0, w.w_out + sl.v0 * O_, O_);
  }
}

template <typename T>
void Seq2SeqDecoder<T>::setup(const Seq2SeqSources<T>& src, index_t k) {
  src_ = src;
  k_ = k;
  const index_t B = src.B, S = src.S, R = B * k, H = w_.H, L = w_.L, GH = G_ * H;
  R_ = R;
  const index_t Ho = w_.has_attention ? w_.attn.Ho : 0;
  const index_t A = w_.has_attention && w_.attn.kind == AttentionKind::Additive ? w_.attn.A : 0;
  if (w_.has_attention && w_.attn.kind != AttentionKind::Dot) {
    // keys[s, b] = W_in^T m_s (general, K = Hq) or W_k m_s (additive, K = A): once per call.
    keys_.resize(S * B * K_);
    attention_keys<T>(keys_.data(), src.memory, w_.attn, S, B, nt_);
  }
  for (int i = 0; i < 2; ++i) {
    h_[i].resize(L * R * H);
    if (w_.kind == CellKind::LSTM) c_[i].resize(L * R * H);
    attn_h_[i].resize(R * Ho);
    attn_h_[i].zero();  // feed0 = 0
  }
  // Every row starts from its source's state.
  for (index_t l = 0; l < L; ++l) {
    for (index_t r = 0; r < R; ++r) {
      const index_t b = r / k;
      T* h = h_[0].data() + (l * R + r) * H;
      if (src.h0) copy_n(h, src.h0 + (l * B + b) * H, H);
      else std::fill(h, h + H, T(0));
      if (w_.kind == CellKind::LSTM) {
        T* c = c_[0].data() + (l * R + r) * H;
        if (src.c0) copy_n(c, src.c0 + (l * B + b) * H, H);
        else std::fill(c, c + H, T(0));
      }
    }
  }
  x_.resize(R * X_);
  x_.zero();
  gates_.resize(R * GH);
  hn_.resize(R * H);
  cq_.resize(R * (Hm_ + H));
  cq_.zero();
  qproj_.resize(R * A);
  logits_.resize(R * w_.V);
  alpha_.resize(R * S);
  scratch_.resize(nt_ * std::max<index_t>(A, 1));
  for (Slice& sl : slices_) {
    sl.gx.resize(R * G_ * (sl.hi - sl.lo));
    sl.gh.resize(R * G_ * (sl.hi - sl.lo));
  }
  live_.assign(static_cast<std::size_t>(R), 1);
  src_done_.assign(static_cast<std::size_t>(B), 0);
  double step_work = double(O_) * w_.V + w_.V;  // per row: the head, then the choice
  for (int l = 0; l < L; ++l) step_work += double(GH) * ((l == 0 ? X_ : H) + H);
  if (w_.has_attention) step_work += double(S) * (K_ + Hm_ + A) + double(A) * H + double(Ho) * (Hm_ + H);
  step_work *= double(R);
  poll_steps_ = static_cast<index_t>(std::max(1.0, std::min(1e9, kPollWork / std::max(1.0, step_work))));
}

template <typename T>
void Seq2SeqDecoder<T>::compact(Layout& lay) const {
  const index_t B = src_.B;
  lay.base.assign(static_cast<std::size_t>(B), -1);
  lay.src.resize(static_cast<std::size_t>(R_));
  index_t slot = 0;
  for (index_t b = 0; b < B; ++b) {
    if (src_done_[b]) continue;
    lay.base[b] = slot;
    for (index_t j = 0; j < k_; ++j) lay.src[static_cast<std::size_t>(slot++)] = b;
  }
  lay.rows = slot;
}

template <typename T>
void Seq2SeqDecoder<T>::embed_row(index_t r, std::int64_t tok, int cur) {
  T* x = x_.data() + r * X_;
  copy_n(x, w_.embedding + tok * w_.E, w_.E);
  if (F_ > 0) copy_n(x + w_.E, attn_h_[cur].data() + r * F_, F_);
}

template <typename T>
void Seq2SeqDecoder<T>::take_state(index_t r, index_t p, int cur) {
  const index_t H = w_.H, R = R_;
  for (index_t l = 0; l < w_.L; ++l) {
    copy_n(h_[cur].data() + (l * R + r) * H, h_[1 - cur].data() + (l * R + p) * H, H);
    if (w_.kind == CellKind::LSTM) copy_n(c_[cur].data() + (l * R + r) * H, c_[1 - cur].data() + (l * R + p) * H, H);
  }
  if (w_.has_attention) {
    const index_t Ho = w_.attn.Ho;
    copy_n(attn_h_[cur].data() + r * Ho, attn_h_[1 - cur].data() + p * Ho, Ho);
  }
}

template <typename T>
template <typename Cell>
void Seq2SeqDecoder<T>::layer_step(Slice& sl, int l, const T* in, index_t in_size, int cur, const Layout& lay) {
  const index_t H = w_.H, GH = G_ * H, hs = sl.hi - sl.lo, R = R_, rows = lay.rows;
  if (hs == 0 || rows == 0) return;
  const T* hprev = h_[cur].data() + l * R * H;
  T* hnew = h_[1 - cur].data() + l * R * H;
  gemm_packed<T>(rows, in, in_size, sl.w_ih[l], T(0), sl.gx.data(), G_ * hs);
  gemm_packed<T>(rows, hprev, H, sl.w_hh[l], T(0), sl.gh.data(), G_ * hs);
  for (index_t r = 0; r < rows; ++r) {
    if (!slot_live(lay, r)) continue;
    CellStep<T> st;
    st.gates = gates_.data() + r * GH;
    const T* gx = sl.gx.data() + r * G_ * hs;
    for (int g = 0; g < G_; ++g) copy_n(st.gates + g * H + sl.lo, gx + g * hs, hs);
    st.hg = sl.gh.data() + r * G_ * hs;
    st.bias = bias_[l];
    st.b_hn = b_hn_[l];
    st.h_prev = hprev + r * H;
    st.h = hnew + r * H;
    if (Cell::kHasCellState) {
      st.c_prev = c_[cur].data() + (l * R + r) * H;
      st.c = c_[1 - cur].data() + (l * R + r) * H;
    }
    if (Cell::kSavesHn) st.hn = hn_.data() + r * H;
    Cell::forward(st, H, sl.lo, sl.hi);
  }
}

// One query row (slot r) against its source b's memory: ops/attention.h's formulas with
// Tq = 1, reading column b of the memory and keys (so beams share them). Writes alpha (S) and
// cq_[r] = [context ; q].
template <typename T>
void Seq2SeqDecoder<T>::attend_row(index_t b, index_t r, const T* q, T* alpha, T* scratch) {
  const AttentionWeights<T>& aw = w_.attn;
  const index_t S = src_.S, B = src_.B, H = w_.H, Hm = Hm_, A = aw.A;
  const index_t len = src_.lengths ? src_.lengths[b] : S;
  const T* mem = src_.memory;
  for (index_t s = 0; s < len; ++s) {
    switch (aw.kind) {
      case AttentionKind::Dot:  // score_s = q . m_s
        alpha[s] = dot(q, mem + (s * B + b) * Hm, H);
        break;
      case AttentionKind::General:  // score_s = q . (W_in^T m_s)
        alpha[s] = dot(q, keys_.data() + (s * B + b) * K_, H);
        break;
      case AttentionKind::Additive: {  // score_s = v . tanh(W_q q + b_q + W_k m_s)
        const T* qp = qproj_.data() + r * A;
        const T* key = keys_.data() + (s * B + b) * A;
        for (index_t a = 0; a < A; ++a) scratch[a] = qp[a] + (aw.b_q ? aw.b_q[a] : T(0)) + key[a];
        vtanh(scratch, scratch, A);
        alpha[s] = dot(aw.v, scratch, A);
        break;
      }
    }
  }
  // alpha = softmax over s < len, exactly 0 past it.
  T m = alpha[0];
  for (index_t s = 1; s < len; ++s) m = std::max(m, alpha[s]);
  T total = 0;
  for (index_t s = 0; s < len; ++s) {
    alpha[s] = std::exp(alpha[s] - m);
    total += alpha[s];
  }
  for (index_t s = 0; s < len; ++s) alpha[s] /= total;
  for (index_t s = len; s < S; ++s) alpha[s] = T(0);
  // c = sum_s alpha_s m_s; cq = [c ; q]
  T* c = cq_.data() + r * (Hm + H);
  std::fill(c, c + Hm, T(0));
  for (index_t s = 0; s < len; ++s) {
    const T* ms = mem + (s * B + b) * Hm;
    const T a = alpha[s];
    for (index_t i = 0; i < Hm; ++i) c[i] += a * ms[i];
  }
  copy_n(c + Hm, q, H);
}

template <typename T>
void Seq2SeqDecoder<T>::run_step(int tid, int team, int cur, T* alpha_out, const Layout& lay) {
  const index_t H = w_.H, R = R_, V = w_.V, S = src_.S, rows = lay.rows;
  for (int l = 0; l < w_.L; ++l) {
    const T* in = l == 0 ? x_.data() : h_[1 - cur].data() + (l - 1) * R * H;
    const index_t in_size = l == 0 ? X_ : H;
    for (int s = tid; s < nt_; s += team) (this->*layer_step_)(slices_[s], l, in, in_size, cur, lay);
#pragma omp barrier
  }
  const T* top = h_[1 - cur].data() + (w_.L - 1) * R * H;
  const T* out_in = top;
  if (w_.has_attention) {
    const AttentionWeights<T>& aw = w_.attn;
    const index_t Ho = aw.Ho, A = aw.A;
    if (aw.kind == AttentionKind::Additive) {
      for (int s = tid; s < nt_; s += team) {  // W_q q for every row
        const Slice& sl = slices_[s];
        if (sl.a1 > sl.a0 && rows > 0) gemm_packed<T>(rows, top, H, sl.w_q, T(0), qproj_.data() + sl.a0, A);
      }
#pragma omp barrier
    }
    for (index_t r = tid; r < rows; r += team) {
      if (!slot_live(lay, r)) continue;
      const index_t b = lay.src[static_cast<std::size_t>(r)];
      attend_row(b, r, top + r * H, alpha_out + (b * k_ + r - lay.base[b]) * S,
                 scratch_.data() + tid * std::max<index_t>(A, 1));
    }
#pragma omp barrier
    T* attn_h = attn_h_[1 - cur].data();
    for (int s = tid; s < nt_; s += team) {  // attn_h = tanh(W_c [c ; q] + b_c)
      const Slice& sl = slices_[s];
      const index_t n = sl.o1 - sl.o0;
      if (n == 0 || rows == 0) continue;
      gemm_packed<T>(rows, cq_.data(), Hm_ + H, sl.w_c, T(0), attn_h + sl.o0, Ho);
      for (index_t r = 0; r < rows; ++r) {
        T* p = attn_h + r * Ho + sl.o0;
        if (aw.b_out)
          for (index_t i = 0; i < n; ++i) p[i] += aw.b_out[sl.o0 + i];
        vtanh(p, p, n);
      }
    }
#pragma omp barrier
    out_in = attn_h;
  }
  for (int s = tid; s < nt_; s += team) {
    const Slice& sl = slices_[s];
    if (sl.v1 == sl.v0 || rows == 0) continue;
    gemm_packed<T>(rows, out_in, O_, sl.w_out, T(0), logits_.data() + sl.v0, V);
    if (w_.b_out) {
      for (index_t r = 0; r < rows; ++r) {
        T* row = logits_.data() + r * V;
        for (index_t v = sl.v0; v < sl.v1; ++v) row[v] += w_.b_out[v];
      }
    }
  }
#pragma omp barrier
}

template <typename T>
bool Seq2SeqDecoder<T>::forced(T* logits, T* alpha, const std::int64_t* tokens, index_t Tt,
                               const Seq2SeqSources<T>& src, const Poll& poll) {
  setup(src, 1);
  const index_t B = src.B, V = w_.V, S = src.S;
  const int cur = 0;
  for (index_t r = 0; r < B && Tt > 0; ++r) embed_row(r, tokens[r], cur);
  Layout lay;  // every source, every step: slot b is source b
  compact(lay);
  FlushToZeroGuard ftz;
  for (index_t t0 = 0; t0 < Tt;) {
    const index_t t1 = std::min(Tt, t0 + poll_steps_);
#pragma omp parallel num_threads(nt_)
    {
      FlushToZeroGuard ftz_worker;
      const int tid = thread_id(), team = num_threads_in_region();
      for (index_t t = t0; t < t1; ++t) {
        run_step(tid, team, cur, alpha ? alpha + t * B * S : alpha_.data(), lay);
        for (index_t r = tid; r < B; r += team) {
          copy_n(logits + (t * B + r) * V, logits_.data() + r * V, V);
          take_state(r, r, cur);
          if (t + 1 < Tt) embed_row(r, tokens[(t + 1) * B + r], cur);
        }
#pragma omp barrier
      }
    }
    t0 = t1;
    if (t0 < Tt && poll && !poll()) return false;
  }
  return true;
}

template <typename T>
std::vector<std::vector<Seq2SeqHypothesis<T>>> Seq2SeqDecoder<T>::decode(const Seq2SeqSources<T>& src,
                                                                         const Seq2SeqOptions& opt, const Poll& poll) {
  failed_source_ = failed_step_ = -1;
  interrupted_ = false;
  const bool beam = opt.method == DecodeMethod::Beam;
  const index_t k = beam ? opt.beam_width : opt.method == DecodeMethod::Sample ? opt.n_best : 1;
  setup(src, k);
  const index_t B = src.B, R = R_, V = w_.V, S = src.S;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  index_t max_steps = 0;
  for (index_t b = 0; b < B; ++b) max_steps = std::max<index_t>(max_steps, src.max_len[b]);
  SamplingOptions sopt = opt.sampling;
  if (opt.method == DecodeMethod::Greedy) sopt.temperature = 0.0;
  std::vector<StreamRng> rng(static_cast<std::size_t>(R));
  seed_streams(rng.data(), R, opt.seed);
  // Per-thread scratch: the sampler's, a row of exponentials, the beam's top candidates.
  std::vector<SamplerScratch> sampler(static_cast<std::size_t>(nt_));
  std::vector<std::vector<T>> tmp(static_cast<std::size_t>(nt_));
  std::vector<std::vector<double>> top_val(static_cast<std::size_t>(nt_)), new_score(top_val);
  std::vector<std::vector<index_t>> top_idx(static_cast<std::size_t>(nt_)), parent(top_idx);
  for (int t = 0; t < nt_; ++t) {
    tmp[t].resize(static_cast<std::size_t>(V));
    if (beam) {
      top_val[t].resize(static_cast<std::size_t>(2 * k));
      top_idx[t].resize(static_cast<std::size_t>(2 * k));
      parent[t].resize(static_cast<std::size_t>(k));
      new_score[t].resize(static_cast<std::size_t>(k));
    } else {
      sampler[t].reserve(V);
    }
  }
  std::vector<double> score(static_cast<std::size_t>(R), 0.0);
  if (beam)  // every beam starts from its source's state; only beam 0 is alive, so no duplicates
    for (index_t r = 0; r < R; ++r)
      if (r % k != 0) {
        score[r] = neg_inf;
        live_[r] = 0;
      }
  std::vector<index_t> steps_done(static_cast<std::size_t>(B), 0);
  std::vector<std::vector<Ended>> ended(static_cast<std::size_t>(B));
  std::vector<std::uint8_t> bad(static_cast<std::size_t>(B), 0);
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(nt_));
  std::vector<std::uint8_t> erred(static_cast<std::size_t>(nt_), 0);
  // Back-pointers: after step t, row b*k + j is beam back_parent[t*R + b*k + j] of its source
  // at step t - 1 extended by back_token[...]; that parent's row computed step t's logits.
  std::vector<index_t> back_parent;
  std::vector<std::int64_t> back_token;
  std::vector<T> alpha_hist;  // (steps, R, S) with return_attention
  const int cur = 0;  // each step reads buffer 0, writes 1, and take_state gathers back into 0
  for (index_t r = 0; r < R; ++r) embed_row(r, src.bos, cur);

  // The choice for source b at `step` (one thread; touches only b's rows): its logits are in
  // slots now.base[b] + j, its next states go to slots next.base[b] + j.
  const auto choose = [&](index_t b, index_t step, int tid, const Layout& now, const Layout& next) {
    const index_t base = b * k, cs = now.base[b], ns_ = next.base[b];
    if (!beam) {
      bool any_live = false;
      for (index_t j = 0; j < k; ++j) {
        const index_t r = base + j;
        if (!live_[r]) continue;
        const T* lg = logits_.data() + (cs + j) * V;
        const index_t tok = choose_token(lg, nullptr, V, sopt, rng[r], sampler[tid]);
        const double lse = tok < 0 ? 0.0 : row_logsumexp(lg, V, tmp[tid].data());
        if (tok < 0 || !std::isfinite(lse)) {
          bad[b] = 1;
          return;
        }
        score[r] += static_cast<double>(lg[tok]) - lse;  // log_softmax(logits)[tok]
        back_parent[step * R + r] = j;
        back_token[step * R + r] = tok;
        if (tok == src.eos) {
          ended[b].push_back({step, j, static_cast<std::int64_t>(tok), score[r]});
          live_[r] = 0;
        } else {
          any_live = true;
          take_state(ns_ + j, cs + j, cur);
          embed_row(ns_ + j, tok, cur);
        }
      }
      if (!any_live || step + 1 >= src.max_len[b]) {
        src_done_[b] = 1;
        steps_done[b] = step + 1;
      }
      return;
    }
    // Beam: the candidates are the live beams extended by every token, scored
    // score_j + log_softmax(logits_j)[v]; only the best 2k are kept, in a sorted list that most
    // candidates leave at one comparison (ties: the lower index j * V + v first).
    double* tv = top_val[tid].data();
    index_t* ti = top_idx[tid].data();
    const index_t cap = 2 * k;
    index_t top = 0;
    for (index_t j = 0; j < k; ++j) {
      const index_t r = base + j;
      if (!live_[r]) continue;
      const T* lg = logits_.data() + (cs + j) * V;
      const double lse = row_logsumexp(lg, V, tmp[tid].data());
      if (!std::isfinite(lse)) {
        bad[b] = 1;
        return;
      }
      const double sc = score[r];
      for (index_t v = 0; v < V; ++v) {
        const double val = (static_cast<double>(lg[v]) - lse) + sc;
        if (top == cap && !(val > tv[cap - 1])) continue;
        index_t p = top < cap ? top++ : cap - 1;  // the slot it takes, then moved up past the worse ones
        for (; p > 0 && tv[p - 1] < val; --p) {
          tv[p] = tv[p - 1];
          ti[p] = ti[p - 1];
        }
        tv[p] = val;
        ti[p] = j * V + v;
      }
    }
    index_t alive = 0;
    bool best_ended = false;
    index_t* par = parent[tid].data();
    double* ns = new_score[tid].data();
    for (index_t i = 0; i < top && alive < k; ++i) {
      const index_t j = ti[i] / V, v = ti[i] % V;
      if (v == src.eos) {
        ended[b].push_back({step, j, static_cast<std::int64_t>(v), tv[i]});
        best_ended |= i == 0;
        continue;
      }
      par[alive] = j;
      ns[alive] = tv[i];
      back_parent[step * R + base + alive] = j;
      back_token[step * R + base + alive] = v;
      ++alive;
    }
    // Beam a's new state is its parent's stepped state (read from buffer 1, written to 0).
    for (index_t a = 0; a < k; ++a) {
      const index_t r = base + a;
      if (a < alive) {
        take_state(ns_ + a, cs + par[a], cur);
        embed_row(ns_ + a, back_token[step * R + r], cur);
        score[r] = ns[a];
        live_[r] = 1;
      } else {
        score[r] = neg_inf;
        live_[r] = 0;
      }
    }
    const bool enough = static_cast<index_t>(ended[b].size()) >= opt.n_best && best_ended;
    if (enough || alive == 0 || step + 1 >= src.max_len[b]) {
      src_done_[b] = 1;
      steps_done[b] = step + 1;
    }
  };

  const auto all_done = [&] {
    return std::all_of(src_done_.begin(), src_done_.end(), [](std::uint8_t x) { return x != 0; });
  };
  const auto any_bad = [&] {
    return std::any_of(bad.begin(), bad.end(), [](std::uint8_t x) { return x != 0; }) ||
           std::any_of(erred.begin(), erred.end(), [](std::uint8_t x) { return x != 0; });
  };
  index_t steps_run = 0;  // steps every live source completed
  // layouts[t % 2] places step t's rows; thread 0 makes the next one at the start of each step
  // (from the sources done then) while no thread reads it. Sized here: compact() then allocates nothing.
  Layout layouts[2];
  for (Layout& lay : layouts) {
    lay.base.resize(static_cast<std::size_t>(B));
    lay.src.resize(static_cast<std::size_t>(R));
  }
  compact(layouts[0]);
  FlushToZeroGuard ftz;
  for (index_t s0 = 0; s0 < max_steps && !all_done() && !any_bad();) {
    const index_t s1 = std::min(max_steps, s0 + poll_steps_);
    back_parent.resize(static_cast<std::size_t>(s1 * R), -1);
    back_token.resize(static_cast<std::size_t>(s1 * R), -1);
    if (opt.return_attention) alpha_hist.resize(static_cast<std::size_t>(s1 * R * S), T(0));
#pragma omp parallel num_threads(nt_)
    {
      FlushToZeroGuard ftz_worker;
      const int tid = thread_id(), team = num_threads_in_region();
      for (index_t step = s0; step < s1; ++step) {
        // src_done_, bad and erred were last written before the previous barrier.
        if (all_done() || any_bad()) break;
        const Layout& now = layouts[step % 2];
        Layout& next = layouts[(step + 1) % 2];
        if (tid == 0) compact(next);  // read only in this step's choice, after run_step's barriers
        run_step(tid, team, cur, opt.return_attention ? alpha_hist.data() + step * R * S : alpha_.data(), now);
        for (index_t b = tid; b < B; b += team) {
          if (src_done_[b]) continue;
          try {
            choose(b, step, tid, now, next);
          } catch (...) {
            errors[tid] = std::current_exception();
            erred[tid] = 1;
          }
        }
#pragma omp barrier
        if (tid == 0 && !any_bad()) steps_run = step + 1;
      }
    }
    for (int t = 0; t < nt_; ++t)
      if (errors[t]) std::rethrow_exception(errors[t]);
    s0 = s1;
    if (!all_done() && !any_bad() && s0 < max_steps && poll && !poll()) {
      interrupted_ = true;
      break;
    }
  }
  for (index_t b = 0; b < B; ++b) {
    if (bad[b] && failed_source_ < 0) {
      failed_source_ = b;
      failed_step_ = steps_run;
    }
    if (!src_done_[b]) steps_done[b] = steps_run;
  }

  // The hypotheses, rebuilt from the back-pointers.
  std::vector<std::vector<Seq2SeqHypothesis<T>>> out(static_cast<std::size_t>(B));
  const auto normalized = [&opt](double s, std::size_t len) {
    return opt.alpha == 0.0 ? s : s / std::pow(static_cast<double>(std::max<std::size_t>(len, 1)), opt.alpha);
  };
  // Tokens of beam j after step t (t + 1 of them) appended to hyp, with the attention of the
  // rows that computed them.
  const auto trace = [&](Seq2SeqHypothesis<T>& h, index_t b, index_t t, index_t j) {
    const std::size_t n = static_cast<std::size_t>(t + 1);
    h.hyp.tokens.assign(n, 0);
    if (opt.return_attention) h.attention.assign(n * static_cast<std::size_t>(S), T(0));
    for (; t >= 0; --t) {
      const index_t r = b * k + j;
      h.hyp.tokens[static_cast<std::size_t>(t)] = back_token[t * R + r];
      j = back_parent[t * R + r];
      if (opt.return_attention)
        copy_n(h.attention.data() + t * S, alpha_hist.data() + (t * R + b * k + j) * S, S);
    }
  };
  for (index_t b = 0; b < B; ++b) {
    std::vector<Seq2SeqHypothesis<T>>& hyps = out[b];
    for (const Ended& e : ended[b]) {
      Seq2SeqHypothesis<T> h;
      trace(h, b, e.step - 1, e.parent);
      h.hyp.tokens.push_back(e.token);
      if (opt.return_attention) {
        const T* a = alpha_hist.data() + (e.step * R + b * k + e.parent) * S;
        h.attention.insert(h.attention.end(), a, a + S);
      }
      h.hyp.score = e.score;
      h.hyp.finished = true;
      hyps.push_back(std::move(h));
    }
    if (static_cast<index_t>(hyps.size()) < opt.n_best && steps_done[b] > 0) {
      for (index_t j = 0; j < k; ++j) {
        if (!live_[b * k + j]) continue;
        Seq2SeqHypothesis<T> h;
        trace(h, b, steps_done[b] - 1, j);
        h.hyp.score = score[b * k + j];
        hyps.push_back(std::move(h));
      }
    }
    for (auto& h : hyps) h.hyp.normalized = normalized(h.hyp.score, h.hyp.tokens.size());
    std::stable_sort(hyps.begin(), hyps.end(), [](const Seq2SeqHypothesis<T>& a, const Seq2SeqHypothesis<T>& c) {
      return a.hyp.normalized > c.hyp.normalized;
    });
    if (static_cast<index_t>(hyps.size()) > opt.n_best) hyps.resize(static_cast<std::size_t>(opt.n_best));
  }
  return out;
}

template class Seq2SeqDecoder<float>;
template class Seq2SeqDecoder<double>;

}  // namespace rnncore
