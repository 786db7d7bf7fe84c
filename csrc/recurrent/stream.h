// A recurrent network run one chunk (or one step) at a time, keeping its state: the
// streaming entry for low-latency inference. Unidirectional, stacked, any cell (LSTM with
// projections included).
//
// Built once from the weights of every layer: each layer's W_ih, W_hh (and W_hr) are packed
// once into its time-loop slices (recurrent.h, RecurrentWorkspace::prepacked), the biases fused
// once, and every buffer a chunk of up to `capacity` steps needs is sized at construction, so
// feed() neither packs nor allocates (allocations() counts any allocation it makes; it stays
// put after construction while chunks fit). load_weights() repacks after the weights change.
//
// feed() of chunks x_1, x_2, ... equals, bit for bit, one whole-sequence forward of the layer
// over their concatenation (same thread count or not): the time loop is the layer's own, and
// the input projections are row-exact (projection.h; in bf16 the bf16 GEMM, whose bits do not
// depend on how the rows are blocked).
//
// Shapes: x (T, B, I) with I the first layer's input size; y (T, B, R); state h (L, B, R),
// c (L, B, H) (LSTM only); R = P with projections, else H. Threads: the stream's time loops
// run on recurrence_threads(kind, B, H, nthreads, P) threads (1: no parallel region at all).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "recurrent/recurrent.h"

namespace rnncore {

// One layer's weights (PyTorch layout, as in recurrent.h); biases and w_hr may be null.
template <typename T>
struct StreamLayerWeights {
  const T* w_ih = nullptr;  // (G*H, I_l)
  const T* w_hh = nullptr;  // (G*H, R)
  const T* b_ih = nullptr;  // (G*H)
  const T* b_hh = nullptr;  // (G*H)
  const T* w_hr = nullptr;  // (P, H), only with P > 0
};

template <typename T>
class Stream {
 public:
  // in_sizes: I of each layer (layer l > 0 reads R features). batch >= 1, capacity >= 1
  // (steps per chunk). Throws std::invalid_argument on bad sizes.
  // bf16 (float only): bfloat16 mixed precision as the layer's forward with ForwardArgs::bf16 runs
  // it (recurrent.h), bit for bit: the weights packed as bf16 panels (with projections, the
  // per-step weights as rounded float32 panels), x and each h rounded.
  Stream(CellKind kind, index_t H, index_t P, std::vector<index_t> in_sizes, index_t batch, index_t capacity,
         int nthreads, bool bf16 = false);

  // Pack the weights (one entry per layer) and fuse the biases; the state is kept.
  void load_weights(const std::vector<StreamLayerWeights<T>>& w);
  // Size every buffer for chunks of up to `capacity` steps (never shrinks).
  void reserve(index_t capacity);
  // y (steps, B, R) = the network over x (steps, B, I_0), from and into the carried state.
  // 1 <= steps <= capacity(); y must not alias x. Throws std::invalid_argument otherwise.
  void feed(const T* x, index_t steps, T* y);
  void reset();  // zero state

  T* h(index_t layer) { return layers_[layer]->h.data(); }  // (B, R)
  T* c(index_t layer) { return layers_[layer]->c.data(); }  // (B, H), LSTM only
  CellKind kind() const { return kind_; }
  index_t layers() const { return static_cast<index_t>(layers_.size()); }
  index_t batch() const { return B_; }
  index_t capacity() const { return capacity_; }
  index_t hidden() const { return H_; }
  index_t state_width() const { return R_; }
  index_t input_size(index_t layer) const { return layers_[layer]->I; }
  int threads() const { return nt_; }
  bool loaded() const { return loaded_; }
  bool bf16() const { return bf16_; }
  // Allocations feed() has made (buffer growth), over the stream's life.
  std::int64_t allocations() const { return allocations_; }

 private:
  struct Layer {
    index_t I = 0;
    RecurrentWorkspace<T> ws;
    AlignedBuffer<T> h, c;    // carried state (B, R), (B, H)
    AlignedBuffer<T> out;     // (capacity, B, R) output of a layer below the last
    AlignedBuffer<T> b_hh;    // GRU: a copy of b_hh (the cell reads its b_hn part per step)
    bool has_b_hh = false;
  };
  CellKind kind_;
  index_t H_, P_, R_, B_, capacity_ = 0;
  int nthreads_, nt_ = 1;
  bool loaded_ = false;
  bool bf16_ = false;
  std::int64_t allocations_ = 0;
  std::vector<std::unique_ptr<Layer>> layers_;
};

}  // namespace rnncore
