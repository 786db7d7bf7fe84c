// The decoding loop of a language model in C++ (see decoder.h).
#include "generate/decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>

#include "cells/cell.h"
#include "common/parallel.h"

namespace rnncore {

namespace {

constexpr index_t kAlign = 8;
// Multiply-adds between two polls (Decoder::Poll): a millisecond or so of work, so that Ctrl-C
// is seen at once while the poll itself (a GIL round trip) costs well under 1%.
constexpr double kPollWork = 1 << 22;

// n elements from src to dst; nothing when n == 0 (with E = 0 or H = 0 a row's pointer may be
// null, and memcpy's must be valid even for zero bytes).
template <typename T>
void copy_n(T* dst, const T* src, index_t n) {
  if (n > 0) std::memcpy(dst, src, sizeof(T) * static_cast<std::size_t>(n));
}

bool is_stop(std::int64_t tok, const std::int64_t* stop, index_t n_stop) {
  for (index_t i = 0; i < n_stop; ++i)
    if (stop[i] == tok) return true;
  return false;
}

}  // namespace

template <typename T>
LMDecoder<T>::LMDecoder(const LMWeights<T>& w, index_t B, int nthreads) : w_(w), B_(B) {
  G_ = gate_count(w.kind);
  const index_t H = w.H, V = w.V, E = w.E, GH = G_ * H, P = w.P;
  R_ = P > 0 ? P : H;
  const index_t R = R_;
  // The one switch on the cell kind: the layer step for this cell, and its folded biases.
  fused_bias_.resize(static_cast<std::size_t>(w.L));
  bias_.assign(static_cast<std::size_t>(w.L), nullptr);
  b_hn_.assign(static_cast<std::size_t>(w.L), nullptr);
  with_cell(w.kind, [&](auto tag) {
    using Cell = typename decltype(tag)::template type<T>;
    layer_step_ = &LMDecoder<T>::template layer_step<Cell>;
    step_cells_ = &LMDecoder<T>::template step_cells<Cell>;
    for (int l = 0; l < w.L; ++l) {
      fused_bias_[l].resize(GH);
      if (fuse_biases<Cell>(fused_bias_[l].data(), w.b_ih[l], w.b_hh[l], H)) bias_[l] = fused_bias_[l].data();
      b_hn_[l] = b_hn_of<Cell>(w.b_hh[l], H);
    }
  });
  const index_t units = (H + kAlign - 1) / kAlign;
  nt_ = static_cast<int>(std::max<index_t>(1, std::min<index_t>(nthreads, units)));
  for (auto& buf : h_) {
    buf.resize(w.L * B * R);
    buf.zero();
  }
  if (P > 0) m_.resize(B * H);
  if (w.kind == CellKind::LSTM) {
    for (auto& buf : c_) {
      buf.resize(w.L * B * H);
      buf.zero();
    }
  }
  x_.resize(B * E);
  gates_.resize(B * GH);
  hn_.resize(B * H);
  logits_.resize(B * V);
  token_.assign(static_cast<std::size_t>(B), 0);
  seen_.assign(static_cast<std::size_t>(B * V), 0);
  done_.assign(static_cast<std::size_t>(B), 0);
  bad_.assign(static_cast<std::size_t>(B), 0);
  double step_work = double(V) * R + V;  // per stream: the head, then the choice
  for (int l = 0; l < w.L; ++l) step_work += double(GH) * ((l == 0 ? E : R) + R) + double(P) * H;
  step_work *= double(B);
  poll_steps_ = static_cast<index_t>(std::max(1.0, std::min(1e9, kPollWork / std::max(1.0, step_work))));
  rng_.resize(static_cast<std::size_t>(B));
  scratch_.resize(static_cast<std::size_t>(B));
  for (auto& s : scratch_) s.reserve(V);

  slices_.resize(static_cast<std::size_t>(nt_));
  AlignedBuffer<T> rows;
  for (int k = 0; k < nt_; ++k) {
    Slice& sl = slices_[k];
    split_range(H, nt_, k, kAlign, &sl.lo, &sl.hi);
    split_range(V, nt_, k, kAlign, &sl.v0, &sl.v1);
    if (P > 0) split_range(P, nt_, k, kAlign, &sl.plo, &sl.phi);
    const index_t hs = sl.hi - sl.lo;
    sl.w_ih.resize(static_cast<std::size_t>(w.L));
    sl.w_hh.resize(static_cast<std::size_t>(w.L));
    sl.w_hr.resize(static_cast<std::size_t>(P > 0 ? w.L : 0));
    if (w.format != WeightFormat::f32) {
      pack_lowp_slice(sl, hs);
    } else {
      for (int l = 0; l < w.L && hs > 0; ++l) {
        const index_t in = l == 0 ? E : R;
        // The slice's rows of each weight, gate-major (G * hs, in), packed as the transpose.
        rows.resize(G_ * hs * std::max(in, R));
        for (int g = 0; g < G_; ++g)
          for (index_t u = sl.lo; u < sl.hi; ++u)
            copy_n(rows.data() + (g * hs + u - sl.lo) * in, w.w_ih[l] + (g * H + u) * in, in);
        sl.w_ih[l].pack(true, in, G_ * hs, rows.data(), in);
        for (int g = 0; g < G_; ++g)
          for (index_t u = sl.lo; u < sl.hi; ++u)
            copy_n(rows.data() + (g * hs + u - sl.lo) * R, w.w_hh[l] + (g * H + u) * R, R);
        sl.w_hh[l].pack(true, R, G_ * hs, rows.data(), R);
      }
      for (int l = 0; P > 0 && l < w.L && sl.phi > sl.plo; ++l)
        sl.w_hr[l].pack(true, H, sl.phi - sl.plo, w.w_hr[l] + sl.plo * H, H);
      if (sl.v1 > sl.v0) sl.w_out.pack(true, R, sl.v1 - sl.v0, w.w_out + sl.v0 * R, R);
    }
    sl.gx.resize(B * G_ * hs);
    sl.gh.resize(B * G_ * hs);
  }
}

template <typename T>
void LMDecoder<T>::pack_lowp_slice(Slice& sl, index_t hs) {
  const LMWeights<T>& w = w_;
  const index_t H = w.H, E = w.E, R = R_, P = w.P, eb = element_bytes(w.format);
  std::vector<unsigned char> rows;
  std::vector<float> scales;
  index_t ws = 0;
  const auto bytes = [eb](const void* p, index_t offset) { return static_cast<const unsigned char*>(p) + offset * eb; };
  const auto gate_rows = [&](const LowpWeight& q, index_t in, LowpMatrix* out) {
    // the slice's rows of a (G*H, in) weight, gate-major (G * hs, in), with their scales
    rows.resize(static_cast<std::size_t>(G_ * hs * in * eb));
    scales.resize(static_cast<std::size_t>(G_ * hs));
    for (int g = 0; g < G_; ++g)
      for (index_t u = sl.lo; u < sl.hi; ++u) {
        const index_t r = g * hs + u - sl.lo;
        if (in > 0) std::memcpy(rows.data() + r * in * eb, bytes(q.data, (g * H + u) * in), static_cast<std::size_t>(in * eb));
        if (q.scale) scales[static_cast<std::size_t>(r)] = q.scale[g * H + u];
      }
    out->pack(w.format, G_ * hs, in, rows.data(), in, scales.data());
    ws = std::max(ws, out->workspace_bytes());
  };
  const auto rows_of = [&](const LowpWeight& q, index_t r0, index_t r1, index_t cols, LowpMatrix* out) {
    out->pack(w.format, r1 - r0, cols, bytes(q.data, r0 * cols), cols, q.scale ? q.scale + r0 : nullptr);
    ws = std::max(ws, out->workspace_bytes());
  };
  sl.q_ih.resize(static_cast<std::size_t>(w.L));
  sl.q_hh.resize(static_cast<std::size_t>(w.L));
  sl.q_hr.resize(static_cast<std::size_t>(P > 0 ? w.L : 0));
  for (int l = 0; l < w.L && hs > 0; ++l) {
    gate_rows(w.q_ih[l], l == 0 ? E : R, &sl.q_ih[l]);
    gate_rows(w.q_hh[l], R, &sl.q_hh[l]);
  }
  for (int l = 0; P > 0 && l < w.L && sl.phi > sl.plo; ++l) rows_of(w.q_hr[l], sl.plo, sl.phi, H, &sl.q_hr[l]);
  if (sl.v1 > sl.v0) rows_of(w.q_out, sl.v0, sl.v1, R, &sl.q_out);
  sl.ws.resize(ws);
}

template <typename T>
void LMDecoder<T>::product(Slice& sl, const PackedB<T>& w, const LowpMatrix* q, const T* A, index_t lda, T* C,
                           index_t ldc) {
  if constexpr (std::is_same<T, float>::value) {
    if (q != nullptr) {
      for (index_t b = 0; b < B_; ++b) q->gemv(A + b * lda, C + b * ldc, 0.0f, sl.ws.data());
      return;
    }
  }
  gemm_packed<T>(B_, A, lda, w, T(0), C, ldc);
}

template <typename T>
void LMDecoder<T>::product_rows(Slice& sl, index_t M, const PackedB<T>& w, const LowpMatrix* q, const T* A,
                                index_t lda, T* C, index_t ldc) {
  if constexpr (std::is_same<T, float>::value) {
    if (q != nullptr) {
      q->gemm(M, A, lda, C, ldc, sl.ws_rows.data());
      return;
    }
  }
  gemm_packed<T>(M, A, lda, w, T(0), C, ldc);
}

template <typename T>
void LMDecoder<T>::embed(index_t b) {
  copy_n(x_.data() + b * w_.E, w_.embedding + token_[b] * w_.E, w_.E);
}

template <typename T>
template <typename Cell>
void LMDecoder<T>::layer_step(Slice& sl, int l, const T* in, index_t in_size, int cur) {
  const index_t H = w_.H, R = R_, hs = sl.hi - sl.lo, B = B_;
  if (hs == 0) return;
  const bool q = w_.format != WeightFormat::f32;
  product(sl, sl.w_ih[l], q ? &sl.q_ih[l] : nullptr, in, in_size, sl.gx.data(), G_ * hs);
  T* hcell = w_.P > 0 ? m_.data() : h_[1 - cur].data() + l * B * R;  // with a projection the cell's output is m
  const bool c = Cell::kHasCellState;
  step_cells<Cell>(sl, l, sl.gx.data(), h_[cur].data() + l * B * R, hcell, c ? c_[cur].data() + l * B * H : nullptr,
                   c ? c_[1 - cur].data() + l * B * H : nullptr);
}

template <typename T>
template <typename Cell>
void LMDecoder<T>::step_cells(Slice& sl, int l, const T* gx_rows, const T* hprev, T* hcell, const T* cprev, T* cnew) {
  const index_t H = w_.H, R = R_, GH = G_ * H, hs = sl.hi - sl.lo, B = B_;
  if (hs == 0) return;
  const bool q = w_.format != WeightFormat::f32;
  product(sl, sl.w_hh[l], q ? &sl.q_hh[l] : nullptr, hprev, R, sl.gh.data(), G_ * hs);
  for (index_t b = 0; b < B; ++b) {
    CellStep<T> st;
    st.gates = gates_.data() + b * GH;
    const T* gx = gx_rows + b * G_ * hs;
    for (int g = 0; g < G_; ++g) copy_n(st.gates + g * H + sl.lo, gx + g * hs, hs);
    st.hg = sl.gh.data() + b * G_ * hs;
    st.bias = bias_[l];
    st.b_hn = b_hn_[l];
    st.h_prev = hprev + b * R;
    st.h = hcell + b * H;
    if (Cell::kHasCellState) {
      st.c_prev = cprev + b * H;
      st.c = cnew + b * H;
    }
    if (Cell::kSavesHn) st.hn = hn_.data() + b * H;
    Cell::forward(st, H, sl.lo, sl.hi);
  }
}

template <typename T>
void LMDecoder<T>::project_step(Slice& sl, int l, int cur) {
  if (sl.phi == sl.plo) return;
  // h = W_hr m  =>  h[:, plo:phi) = m (B, H) W_hr[plo:phi)^T
  product(sl, sl.w_hr[l], w_.format != WeightFormat::f32 ? &sl.q_hr[l] : nullptr, m_.data(), w_.H, h_[1 - cur].data() + l * B_ * R_ + sl.plo,
          R_);
}

template <typename T>
void LMDecoder<T>::run_layers_and_head(int tid, int team, int cur, bool head) {
  const index_t R = R_, V = w_.V, B = B_;
  for (int l = 0; l < w_.L; ++l) {
    const T* in = l == 0 ? x_.data() : h_[1 - cur].data() + (l - 1) * B * R;
    const index_t in_size = l == 0 ? w_.E : R;
    for (int k = tid; k < nt_; k += team) (this->*layer_step_)(slices_[k], l, in, in_size, cur);
#pragma omp barrier
    if (w_.P > 0) {
      for (int k = tid; k < nt_; k += team) project_step(slices_[k], l, cur);
#pragma omp barrier
    }
  }
  if (!head) return;
  const T* top = h_[1 - cur].data() + (w_.L - 1) * B * R;
  for (int k = tid; k < nt_; k += team) {
    Slice& sl = slices_[k];
    if (sl.v1 == sl.v0) continue;
    product(sl, sl.w_out, w_.format != WeightFormat::f32 ? &sl.q_out : nullptr, top, R, logits_.data() + sl.v0, V);
    if (w_.b_out) {
      for (index_t b = 0; b < B; ++b) {
        T* row = logits_.data() + b * V;
        for (index_t v = sl.v0; v < sl.v1; ++v) row[v] += w_.b_out[v];
      }
    }
  }
#pragma omp barrier
}

template <typename T>
index_t LMDecoder<T>::sample(std::int64_t* out, index_t n, const SamplingOptions& opt, const std::int64_t* stop,
                             index_t n_stop, const Poll& poll) {
  const index_t B = B_, V = w_.V;
  failed_stream_ = failed_step_ = -1;
  std::fill(bad_.begin(), bad_.end(), std::uint8_t(0));
  for (index_t b = 0; b < B; ++b) embed(b);
  const int cur0 = cur_;
  index_t steps_run = 0;  // steps whose every stream chose its token
  index_t fed = 0;        // steps whose input was fed: steps_run, or one more when a step failed
  bool ended = false;     // every stream done, or a step failed
  const auto all_done = [this] {
    return std::all_of(done_.begin(), done_.end(), [](std::uint8_t d) { return d != 0; });
  };
  FlushToZeroGuard ftz;
  // Chunks of poll_steps_ steps, one parallel region each, with poll() between them.
  while (steps_run < n && !ended) {
    const index_t s0 = steps_run, s1 = std::min(n, s0 + poll_steps_);
#pragma omp parallel num_threads(nt_)
    {
      FlushToZeroGuard ftz_worker;
      const int tid = thread_id(), team = num_threads_in_region();
      for (index_t s = s0; s < s1; ++s) {
        // done_ and bad_ were last written before the previous barrier: every thread reads the same.
        if (all_done()) break;
        const int cur = (cur0 + static_cast<int>(s % 2)) % 2;
        run_layers_and_head(tid, team, cur);
        for (index_t b = tid; b < B; b += team) {
          if (done_[b]) {
            out[b * n + s] = -1;
            continue;
          }
          const index_t tok = choose_token(logits_.data() + b * V, seen_.data() + b * V, V, opt, rng_[b], scratch_[b]);
          if (tok < 0) {  // logits not finite: nothing to choose from
            bad_[b] = 1;
            out[b * n + s] = -1;
            continue;
          }
          out[b * n + s] = tok;
          seen_[b * V + tok] = 1;
          token_[b] = tok;
          if (is_stop(tok, stop, n_stop)) done_[b] = 1;
          embed(b);
        }
#pragma omp barrier
        const bool failed = std::any_of(bad_.begin(), bad_.end(), [](std::uint8_t x) { return x != 0; });
        if (tid == 0) {
          fed = s + 1;
          if (!failed) steps_run = s + 1;
        }
        if (failed) break;
      }
    }
    ended = steps_run < s1 || all_done();
    if (!ended && steps_run < n && poll && !poll()) break;
  }
  for (index_t b = 0; b < B; ++b) {
    if (bad_[b] && failed_stream_ < 0) {
      failed_stream_ = b;
      failed_step_ = sampled_ + steps_run;
    }
    for (index_t s = steps_run; s < n; ++s) out[b * n + s] = -1;
  }
  cur_ = static_cast<int>((cur0 + fed) % 2);
  sampled_ += steps_run;
  return steps_run;
}

template <typename T>
void LMDecoder<T>::step_logits(T* logits) {
  for (index_t b = 0; b < B_; ++b) embed(b);
  FlushToZeroGuard ftz;
#pragma omp parallel num_threads(nt_)
  {
    FlushToZeroGuard ftz_worker;
    run_layers_and_head(thread_id(), num_threads_in_region(), cur_);
  }
  copy_n(logits, logits_.data(), B_ * w_.V);
  cur_ = 1 - cur_;
}

template <typename T>
index_t LMDecoder<T>::teacher_force(const std::int64_t* tokens, index_t n, const std::int64_t* targets,
                                    double* logprob, T* logits, const Poll& poll) {
  const index_t B = B_, V = w_.V;
  const bool head = targets != nullptr || logits != nullptr;
  failed_stream_ = failed_step_ = -1;
  std::fill(bad_.begin(), bad_.end(), std::uint8_t(0));
  index_t steps_run = 0;
  bool failed = false;
  FlushToZeroGuard ftz;
  while (steps_run < n && !failed) {
    const index_t s0 = steps_run, s1 = std::min(n, s0 + poll_steps_);
    const int cur0 = cur_;
#pragma omp parallel num_threads(nt_)
    {
      FlushToZeroGuard ftz_worker;
      const int tid = thread_id(), team = num_threads_in_region();
      for (index_t s = s0; s < s1; ++s) {
        const int cur = (cur0 + static_cast<int>((s - s0) % 2)) % 2;
        for (index_t b = tid; b < B; b += team) {
          token_[b] = tokens[b * n + s];
          embed(b);
        }
#pragma omp barrier
        run_layers_and_head(tid, team, cur, head);
        for (index_t b = tid; b < B && head; b += team) {
          const T* row = logits_.data() + b * V;
          if (logits) copy_n(logits + (s * B + b) * V, row, V);
          if (targets) {
            double mx = -std::numeric_limits<double>::infinity();
            for (index_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
            double sum = 0;
            for (index_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
            const double lp = static_cast<double>(row[targets[b * n + s]]) - mx - std::log(sum);
            if (!std::isfinite(mx) || !std::isfinite(lp) || std::isnan(sum)) bad_[b] = 1;
            logprob[b * n + s] = lp;
          }
        }
#pragma omp barrier
        const bool any_bad = std::any_of(bad_.begin(), bad_.end(), [](std::uint8_t x) { return x != 0; });
        if (tid == 0) steps_run = s + 1;
        if (any_bad) break;
      }
    }
    cur_ = static_cast<int>((cur0 + (steps_run - s0)) % 2);
    failed = std::any_of(bad_.begin(), bad_.end(), [](std::uint8_t x) { return x != 0; });
    if (failed) {
      for (index_t b = 0; b < B; ++b)
        if (bad_[b]) {
          failed_stream_ = b;
          failed_step_ = steps_run - 1;
          break;
        }
      break;
    }
    if (steps_run < n && poll && !poll()) break;
  }
  return steps_run;
}

template <typename T>
index_t LMDecoder<T>::teacher_force_layers(const std::int64_t* tokens, index_t n, const std::int64_t* targets,
                                           double* logprob, T* logits, const Poll& poll) {
  const index_t B = B_, V = w_.V, H = w_.H, R = R_, E = w_.E, L = w_.L;
  const bool proj = w_.P > 0, lstm = w_.kind == CellKind::LSTM, lowp = w_.format != WeightFormat::f32;
  failed_stream_ = failed_step_ = -1;
  if (n == 0) return 0;
  // Steps per chunk: up to 64, fewer when the chunk's logits would pass 8 MB (targets only; with
  // `logits` they are written in place).
  index_t C = std::min<index_t>(n, 64);
  if (logits == nullptr)
    C = std::max<index_t>(1, std::min<index_t>(C, (index_t(8) << 20) / std::max<index_t>(1, B * V * index_t(sizeof(T)))));
  const index_t rows = C * B, width = std::max(E, std::max(R, H));
  AlignedBuffer<T> buf[2], head;
  buf[0].resize(rows * width);
  buf[1].resize(rows * width);
  if (logits == nullptr) head.resize(rows * V);
  for (Slice& sl : slices_) {
    const index_t hs = sl.hi - sl.lo;
    sl.gx_rows.resize(rows * G_ * hs);
    if (lowp) {
      index_t ws = 0;
      for (int l = 0; l < L && hs > 0; ++l) ws = std::max(ws, sl.q_ih[l].multi_workspace_bytes());
      if (sl.v1 > sl.v0) ws = std::max(ws, sl.q_out.multi_workspace_bytes());
      sl.ws_rows.resize(ws);
    }
  }
  const int cur = cur_;  // every layer's state lives in h_[cur], c_[cur] between chunks
  index_t done = 0;
  FlushToZeroGuard ftz;
  while (done < n) {
    const index_t s0 = done, cn = std::min(C, n - s0), m = cn * B;
    T* out_logits = logits ? logits + s0 * B * V : head.data();
#pragma omp parallel num_threads(nt_)
    {
      FlushToZeroGuard ftz_worker;
      const int tid = thread_id(), team = num_threads_in_region();
      for (index_t r = tid; r < m; r += team)  // row (s, b) = s * B + b: the chunk's embedded inputs
        copy_n(buf[0].data() + r * E, w_.embedding + tokens[(r % B) * n + s0 + r / B] * E, E);
#pragma omp barrier
      int in = 0;
      index_t in_size = E;
      for (int l = 0; l < L; ++l) {
        const T* x = buf[in].data();
        T* y = buf[1 - in].data();
        for (int k = tid; k < nt_; k += team) {
          Slice& sl = slices_[k];
          const index_t hs = sl.hi - sl.lo;
          if (hs > 0)
            product_rows(sl, m, sl.w_ih[l], lowp ? &sl.q_ih[l] : nullptr, x, in_size, sl.gx_rows.data(), G_ * hs);
        }
        T* hstate = h_[cur].data() + l * B * R;
        T* cbuf[2] = {lstm ? c_[cur].data() + l * B * H : nullptr, lstm ? c_[1 - cur].data() + l * B * H : nullptr};
        for (index_t s = 0; s < cn; ++s) {
          const T* hprev = s == 0 ? hstate : y + (s - 1) * B * R;
          T* hcell = proj ? m_.data() : y + s * B * R;
          for (int k = tid; k < nt_; k += team) {
            Slice& sl = slices_[k];
            (this->*step_cells_)(sl, l, sl.gx_rows.data() + s * B * G_ * (sl.hi - sl.lo), hprev, hcell, cbuf[s % 2],
                                 cbuf[(s + 1) % 2]);
          }
#pragma omp barrier
          if (proj) {
            for (int k = tid; k < nt_; k += team) {
              Slice& sl = slices_[k];
              if (sl.phi > sl.plo)
                product(sl, sl.w_hr[l], lowp ? &sl.q_hr[l] : nullptr, m_.data(), H, y + s * B * R + sl.plo, R);
            }
#pragma omp barrier
          }
        }
        // The layer's state after the chunk back where the next chunk (and sample()) reads it:
        // h from the chunk's last row; c from whichever buffer the last step wrote.
        for (int k = tid; k < nt_; k += team) {
          const Slice& sl = slices_[k];
          const index_t c0 = proj ? sl.plo : sl.lo, c1 = proj ? sl.phi : sl.hi;
          for (index_t b = 0; b < B; ++b) {
            copy_n(hstate + b * R + c0, y + ((cn - 1) * B + b) * R + c0, c1 - c0);
            if (lstm && cn % 2 == 1) copy_n(cbuf[0] + b * H + sl.lo, cbuf[1] + b * H + sl.lo, sl.hi - sl.lo);
          }
        }
#pragma omp barrier
        in = 1 - in;
        in_size = R;
      }
      const T* top = buf[in].data();
      for (int k = tid; k < nt_; k += team) {
        Slice& sl = slices_[k];
        if (sl.v1 == sl.v0) continue;
        product_rows(sl, m, sl.w_out, lowp ? &sl.q_out : nullptr, top, R, out_logits + sl.v0, V);
        if (w_.b_out) {
          for (index_t r = 0; r < m; ++r) {
            T* row = out_logits + r * V;
            for (index_t v = sl.v0; v < sl.v1; ++v) row[v] += w_.b_out[v];
          }
        }
      }
#pragma omp barrier
      for (index_t r = tid; targets && r < m; r += team) {
        const index_t b = r % B, s = s0 + r / B;
        const T* row = out_logits + r * V;
        double mx = -std::numeric_limits<double>::infinity();
        for (index_t v = 0; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
        double sum = 0;
        for (index_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
        logprob[b * n + s] = static_cast<double>(row[targets[b * n + s]]) - mx - std::log(sum);
      }
    }
    if (targets && failed_stream_ < 0) {
      for (index_t s = s0; s < s0 + cn && failed_stream_ < 0; ++s)
        for (index_t b = 0; b < B; ++b)
          if (!std::isfinite(logprob[b * n + s])) {
            failed_stream_ = b;
            failed_step_ = s;
            break;
          }
    }
    done = s0 + cn;
    if (done < n && poll && !poll()) break;
  }
  for (index_t b = 0; b < B; ++b) token_[b] = tokens[b * n + done - 1];  // as teacher_force() leaves them
  return done;
}

template <typename T>
std::vector<Hypothesis> LMDecoder<T>::beam_search(index_t max_len, double alpha, index_t n_best,
                                                  const std::int64_t* stop, index_t n_stop, const Poll& poll) {
  const index_t k = B_, V = w_.V, H = w_.H, R = R_, L = w_.L;
  const bool lstm = w_.kind == CellKind::LSTM;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  failed_stream_ = failed_step_ = -1;
  // Every beam starts from stream 0's state; only beam 0 is alive, so no duplicates.
  for (index_t l = 0; l < L; ++l) {
    for (index_t b = 1; b < k; ++b) {
      copy_n(h_[cur_].data() + (l * k + b) * R, h_[cur_].data() + l * k * R, R);
      if (lstm) copy_n(c_[cur_].data() + (l * k + b) * H, c_[cur_].data() + l * k * H, H);
    }
  }
  for (index_t b = 0; b < k; ++b) {
    token_[b] = token_[0];
    embed(b);
  }
  std::vector<double> score(static_cast<std::size_t>(k), neg_inf), new_score(static_cast<std::size_t>(k));
  std::vector<double> cand(static_cast<std::size_t>(k * V));
  score[0] = 0;
  std::vector<index_t> order(static_cast<std::size_t>(k * V)), parent(static_cast<std::size_t>(k));
  // Back-pointers: after step t, live beam j is beam back_parent[t*k + j] of step t - 1
  // extended by back_token[t*k + j]. An ended hypothesis is (its step, its parent, its token).
  std::vector<index_t> back_parent;
  std::vector<std::int64_t> back_token;
  struct Ended {
    index_t step, parent;
    std::int64_t token;
    double score;
  };
  std::vector<Ended> ended;
  index_t steps_done = 0;  // advance() calls completed
  bool stop_search = false;
  std::exception_ptr error;  // nothing may leave the parallel region by an exception
  const int cur = cur_;
  // One step of bookkeeping, on one thread: rank the candidates, retire ended hypotheses,
  // record the survivors' back-pointers and gather their states.
  const auto advance = [&](index_t step) {
    // Candidates: every live beam extended by every token.
    index_t n_cand = 0;
    for (index_t b = 0; b < k; ++b) {
      if (score[b] == neg_inf) continue;
      if (!log_softmax_row(cand.data() + b * V, logits_.data() + b * V, V)) {
        failed_stream_ = b;  // logits not finite: no ranking means anything
        failed_step_ = step;
        stop_search = true;
        return;
      }
      for (index_t v = 0; v < V; ++v) {
        cand[b * V + v] += score[b];
        order[n_cand++] = b * V + v;
      }
    }
    const index_t top = std::min(n_cand, 2 * k);
    std::partial_sort(order.begin(), order.begin() + top, order.begin() + n_cand, [&cand](index_t a, index_t b) {
      return cand[a] > cand[b] || (cand[a] == cand[b] && a < b);
    });
    index_t alive = 0;
    std::fill(new_score.begin(), new_score.end(), neg_inf);
    back_parent.resize(static_cast<std::size_t>((step + 1) * k), -1);
    back_token.resize(static_cast<std::size_t>((step + 1) * k), -1);
    for (index_t i = 0; i < top && alive < k; ++i) {
      const index_t b = order[i] / V, v = order[i] % V;
      if (is_stop(v, stop, n_stop)) {
        ended.push_back({step, b, static_cast<std::int64_t>(v), cand[order[i]]});
        continue;
      }
      parent[alive] = b;
      new_score[alive] = cand[order[i]];
      back_parent[step * k + alive] = b;
      back_token[step * k + alive] = v;
      token_[alive] = v;
      ++alive;
    }
    // The new state of beam j is the stepped state of its parent: gather it back into
    // the buffer the step read from, so the next step reads it there again.
    for (index_t l = 0; l < L; ++l) {
      for (index_t j = 0; j < alive; ++j) {
        copy_n(h_[cur].data() + (l * k + j) * R, h_[1 - cur].data() + (l * k + parent[j]) * R, R);
        if (lstm)
          copy_n(c_[cur].data() + (l * k + j) * H, c_[1 - cur].data() + (l * k + parent[j]) * H, H);
      }
    }
    for (index_t j = 0; j < alive; ++j) embed(j);
    score.swap(new_score);
    steps_done = step + 1;
    stop_search = alive == 0 || static_cast<index_t>(ended.size()) >= n_best;
  };
  FlushToZeroGuard ftz;
  // Chunks of poll_steps_ steps, one parallel region each, with poll() between them.
  for (index_t s0 = 0; s0 < max_len && !stop_search;) {
    const index_t s1 = std::min(max_len, s0 + poll_steps_);
#pragma omp parallel num_threads(nt_)
    {
      FlushToZeroGuard ftz_worker;
      const int tid = thread_id(), team = num_threads_in_region();
      for (index_t step = s0; step < s1; ++step) {
        run_layers_and_head(tid, team, cur);
        if (tid == 0) {
          try {
            advance(step);
          } catch (...) {
            error = std::current_exception();
            stop_search = true;
          }
        }
#pragma omp barrier
        if (stop_search) break;
      }
    }
    if (error) std::rethrow_exception(error);
    s0 = s1;
    if (!stop_search && s0 < max_len && poll && !poll()) break;
  }
  // The tokens of live beam j after step t (t + 1 of them), from the back-pointers.
  const auto trace = [&](index_t t, index_t j) {
    std::vector<std::int64_t> tokens(static_cast<std::size_t>(t + 1));
    for (; t >= 0; --t) {
      tokens[static_cast<std::size_t>(t)] = back_token[t * k + j];
      j = back_parent[t * k + j];
    }
    return tokens;
  };
  const auto normalized = [alpha](double s, std::size_t len) {
    return alpha == 0.0 ? s : s / std::pow(static_cast<double>(std::max<std::size_t>(len, 1)), alpha);
  };
  std::vector<Hypothesis> finished;
  for (const Ended& e : ended) {
    Hypothesis hyp;
    hyp.tokens = trace(e.step - 1, e.parent);
    hyp.tokens.push_back(e.token);
    hyp.score = e.score;
    hyp.normalized = normalized(hyp.score, hyp.tokens.size());
    hyp.finished = true;
    finished.push_back(std::move(hyp));
  }
  if (static_cast<index_t>(finished.size()) < n_best) {
    for (index_t b = 0; b < k; ++b) {
      if (score[b] == neg_inf) continue;
      Hypothesis hyp;
      hyp.tokens = trace(steps_done - 1, b);
      hyp.score = score[b];
      hyp.normalized = normalized(hyp.score, hyp.tokens.size());
      finished.push_back(std::move(hyp));
    }
  }
  std::stable_sort(finished.begin(), finished.end(),
                   [](const Hypothesis& a, const Hypothesis& b) { return a.normalized > b.normalized; });
  if (static_cast<index_t>(finished.size()) > n_best) finished.resize(static_cast<std::size_t>(n_best));
  return finished;
}

template class LMDecoder<float>;
template class LMDecoder<double>;

}  // namespace rnncore
