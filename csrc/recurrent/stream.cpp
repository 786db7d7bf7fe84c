// The streaming network (see stream.h).
#include "recurrent/stream.h"

#include <algorithm>
#include <string>
#include <type_traits>

#include "common/parallel.h"
#include "quant/bf16.h"
#include "quant/bf16_gemm.h"

namespace rnncore {

namespace {

// The time loop's unit alignment (recurrent.cpp: kUnitAlign); slices must split H as the
// layer forward splits it, which recurrent.cpp does with the same constant.
constexpr index_t kUnitAlign = 8;

std::string num(index_t v) { return std::to_string(v); }

}  // namespace

template <typename T>
Stream<T>::Stream(CellKind kind, index_t H, index_t P, std::vector<index_t> in_sizes, index_t batch,
                  index_t capacity, int nthreads, bool bf16)
    : kind_(kind), H_(H), P_(P), R_(P > 0 ? P : H), B_(batch), nthreads_(nthreads), bf16_(bf16) {
  const char* fn = "Stream";
  if (bf16 && !std::is_same_v<T, float>) fail(std::string(fn) + ": bf16 needs float32 weights, got float64");
  if (H < 1) fail(std::string(fn) + ": hidden_size must be >= 1, got " + num(H));
  if (P < 0 || P >= H || (P > 0 && kind != CellKind::LSTM))
    fail(std::string(fn) + ": proj_size must be 0, or in [1, hidden_size) for an lstm cell, got " + num(P));
  if (in_sizes.empty()) fail(std::string(fn) + ": needs at least one layer");
  if (batch < 1) fail(std::string(fn) + ": batch_size must be >= 1, got " + num(batch));
  if (capacity < 1) fail(std::string(fn) + ": capacity must be >= 1, got " + num(capacity));
  if (nthreads < 1) fail(std::string(fn) + ": threads must be >= 1, got " + std::to_string(nthreads));
  nt_ = recurrence_threads(kind, batch, H, nthreads, P);
  const index_t G = gate_count(kind), mn = exact_min_rows<T>();
  for (std::size_t l = 0; l < in_sizes.size(); ++l) {
    const index_t I = in_sizes[l];
    if (I < 0 || (l > 0 && I != R_))
      fail(std::string(fn) + ": layer " + std::to_string(l) + " must read " + (l > 0 ? num(R_) : ">= 0") +
           " features, got " + num(I));
    auto layer = std::make_unique<Layer>();
    layer->I = I;
    RecurrentWorkspace<T>& ws = layer->ws;
    ws.prepacked = true;
    ws.slices.resize(static_cast<std::size_t>(nt_));
    for (int k = 0; k < nt_; ++k) {  // the split recurrent.cpp's forward makes for nt_ threads
      RecurrentSlice<T>& sl = ws.slices[k];
      split_range(H, nt_, k, kUnitAlign, &sl.lo, &sl.hi);
      const index_t units = sl.hi - sl.lo;
      for (index_t g = 0; g < G; ++g) {
        if (bf16) {
          sl.wi16[g].reserve(I, units);
          if (P == 0) sl.w16[g].reserve(R_, units);
          else sl.w[g].reserve(R_, units);
        } else {
          sl.w[g].reserve(R_, units);
          sl.wi[g].reserve(I, units);
        }
      }
      if (bf16 && P == 0) sl.a16.resize(bf16_apack_size(batch, R_));
      sl.scratch.resize(std::max<index_t>(1, batch * G * units));
      sl.cpad.resize(std::max<index_t>(1, mn * units));
      if (P > 0) {
        split_range(P, nt_, k, kUnitAlign, &sl.plo, &sl.phi);
        sl.wr.reserve(H, sl.phi - sl.plo);
      }
    }
    ws.bias.resize(G * H);
    ws.proj.xpad.resize(std::max<index_t>(1, mn * I));
    layer->h.resize(batch * R_);
    layer->c.resize(kind == CellKind::LSTM ? batch * H : 1);
    layer->b_hh.resize(G * H);
    layers_.push_back(std::move(layer));
  }
  reserve(capacity);
  reset();
}

template <typename T>
void Stream<T>::reserve(index_t capacity) {
  if (capacity < 1) fail("Stream.reserve: capacity must be >= 1, got " + num(capacity));
  if (capacity <= capacity_) return;
  const index_t G = gate_count(kind_), N = capacity * B_;
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = *layers_[l];
    RecurrentWorkspace<T>& ws = L.ws;
    ws.gates.resize(N * G * H_);
    ws.hs.resize((B_ + N) * R_);
    if (kind_ == CellKind::LSTM) ws.cs.resize((B_ + N) * H_);
    if (kind_ == CellKind::GRU) ws.hn.resize(N * H_);
    if (P_ > 0) ws.ms.resize(N * H_);
    ws.layout.build(capacity, B_, nullptr, false);  // the layout's vectors reach their capacity
    if (bf16_) ws.x16.resize(bf16_apack_size(N, L.I));
    if (l + 1 < layers_.size()) L.out.resize(N * R_);
  }
  capacity_ = capacity;
}

template <typename T>
void Stream<T>::load_weights(const std::vector<StreamLayerWeights<T>>& w) {
  if (w.size() != layers_.size())
    fail("Stream.load_weights: needs the weights of " + num(layers()) + " layers, got " + num(index_t(w.size())));
  const index_t G = gate_count(kind_);
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = *layers_[l];
    const StreamLayerWeights<T>& lw = w[l];
    // bf16 with projections: the per-step products run on float32 panels of the rounded weights,
    // as the layer's forward runs them (recurrent.cpp: round_weights).
    AlignedBuffer<T> rounded;
    const T* w_hh = lw.w_hh;
    const T* w_hr = lw.w_hr;
    if (bf16_ && P_ > 0) {
      const index_t n_hh = G * H_ * R_, n_hr = P_ * H_;
      rounded.resize(n_hh + n_hr);
      if constexpr (std::is_same_v<T, float>) {
        round_bf16(n_hh, lw.w_hh, rounded.data());
        round_bf16(n_hr, lw.w_hr, rounded.data() + n_hh);
      }
      w_hh = rounded.data();
      w_hr = rounded.data() + n_hh;
    }
    for (RecurrentSlice<T>& sl : L.ws.slices) {
      if (sl.hi > sl.lo)
        for (index_t g = 0; g < G; ++g) {
          const T* hh = w_hh + (g * H_ + sl.lo) * R_;
          const T* ih = lw.w_ih + (g * H_ + sl.lo) * L.I;
          if constexpr (std::is_same_v<T, float>) {
            if (bf16_) {
              sl.wi16[g].fill(true, ih, L.I);
              if (P_ == 0) sl.w16[g].fill(true, hh, R_);
              else sl.w[g].fill(true, hh, R_);
              continue;
            }
          }
          sl.w[g].fill(true, hh, R_);
          sl.wi[g].fill(true, ih, L.I);
        }
      if (P_ > 0 && sl.phi > sl.plo) sl.wr.fill(true, w_hr + sl.plo * H_, H_);
    }
    with_cell(kind_, [&](auto tag) {
      using Cell = typename decltype(tag)::template type<T>;
      L.ws.has_bias = fuse_biases<Cell>(L.ws.bias.data(), lw.b_ih, lw.b_hh, H_);
    });
    L.has_b_hh = lw.b_hh != nullptr;
    if (L.has_b_hh) std::copy(lw.b_hh, lw.b_hh + G * H_, L.b_hh.data());
  }
  loaded_ = true;
}

template <typename T>
void Stream<T>::reset() {
  for (auto& L : layers_) {
    L->h.zero();
    L->c.zero();
  }
}

template <typename T>
void Stream<T>::feed(const T* x, index_t steps, T* y) {
  if (!loaded_) fail("Stream.feed: no weights loaded (call load_weights first)");
  if (steps < 1 || steps > capacity_)
    fail("Stream.feed: a chunk must have 1 to capacity = " + num(capacity_) + " steps, got " + num(steps) +
         " (reserve() a larger capacity)");
  const std::int64_t before = buffer_allocations();
  const bool lstm = kind_ == CellKind::LSTM;
  const T* in = x;
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = *layers_[l];
    const bool last = l + 1 == layers_.size();
    T* out = last ? y : L.out.data();
    const SeqLayout& lay = L.ws.layout;
    const std::size_t caps[4] = {lay.len.capacity(), lay.perm.capacity(), lay.count.capacity(), lay.offset.capacity()};
    RecurrentWeights<T> w;
    w.b_hh = L.has_b_hh ? L.b_hh.data() : nullptr;  // GRU's b_hn; the fused biases are in ws.bias
    ForwardArgs<T> a;
    a.x = in;
    a.h0 = L.h.data();
    a.c0 = lstm ? L.c.data() : nullptr;
    a.y = out;
    a.ldy = R_;
    a.hn = L.h.data();  // read into the workspace before the final state is written back
    a.cn = lstm ? L.c.data() : nullptr;
    a.bf16 = bf16_;
    recurrent_forward<T>(L.ws, {kind_, steps, B_, L.I, H_, P_}, w, a, nthreads_);
    const std::size_t now[4] = {lay.len.capacity(), lay.perm.capacity(), lay.count.capacity(), lay.offset.capacity()};
    for (int i = 0; i < 4; ++i) allocations_ += now[i] != caps[i];
    in = out;
  }
  allocations_ += buffer_allocations() - before;
}

template class Stream<float>;
template class Stream<double>;

}  // namespace rnncore
