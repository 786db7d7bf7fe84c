// Autoregressive decoding of a language model, the whole loop in C++:
// embedding lookup -> every layer's cell step -> output projection -> token choice -> feed back.
//
// Model: Embedding (V, E) -> L unidirectional layers (RNN/LSTM/GRU, hidden H) -> Linear (V, R).
// R is the width of each layer's h: H, or P for an LSTM with projections (PyTorch's proj_size:
// h = W_hr (o * tanh(c)), W_hr (P, H), every layer projected to the same P).
// Each thread owns a slice of every layer's hidden units (with all their gates), of the
// projected units, and of the vocabulary; their weights are packed once, when the decoder is
// made, and stay hot in the thread's cache from token to token. At batch 1 every product is a
// GEMV. The threads meet at L + 2 barriers per token (after each layer, after the logits, after
// the choice), one more per layer with a projection (between its cells and its projection).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "common/buffer.h"
#include "gemm/gemm.h"
#include "generate/sampler.h"
#include "quant/lowp.h"
#include "recurrent/recurrent.h"

namespace rnncore {

// Pointers into the caller's arrays, which must outlive the decoder.
template <typename T>
struct LMWeights {
  CellKind kind = CellKind::LSTM;
  index_t V = 0, E = 0, H = 0;
  index_t P = 0;  // LSTM proj_size (0: none); R = P ? P : H
  int L = 0;
  const T* embedding = nullptr;                  // (V, E)
  std::vector<const T*> w_ih, w_hh, b_ih, b_hh;  // layer l: (G*H, E or R), (G*H, R), (G*H) or null
  std::vector<const T*> w_hr;                    // layer l: (P, H), only with P > 0
  const T* w_out = nullptr;                      // (V, R)
  const T* b_out = nullptr;                      // (V) or null
  // Reduced-precision weights (quant/lowp.h; float decoders only): with format int8 or bf16,
  // every matrix above but the embedding is given here instead, and its float pointer is null.
  WeightFormat format = WeightFormat::f32;
  std::vector<LowpWeight> q_ih, q_hh, q_hr;
  LowpWeight q_out;
};

struct Hypothesis {
  std::vector<std::int64_t> tokens;  // generated tokens (the end token included when it ended)
  double score = 0;                  // sum of log-probabilities
  double normalized = 0;             // score / length^alpha
  bool finished = false;             // ended with an end token
};

template <typename T>
class LMDecoder {
 public:
  // B streams; the state starts at zero and every stream's next input token at 0.
  LMDecoder(const LMWeights<T>& w, index_t B, int nthreads);

  index_t batch() const { return B_; }
  // The width R of h (P with projections, else H).
  index_t state_size() const { return R_; }
  // h: (L, B, R), c: (L, B, H), the state before the next input token is fed (c only for LSTM).
  T* h() { return h_[cur_].data(); }
  T* c() { return c_[cur_].data(); }
  // (B) the next input token of each stream.
  std::int64_t* next_token() { return token_.data(); }
  // (B) true once a stream emitted a stop token; it then produces no more tokens.
  std::uint8_t* done() { return done_.data(); }
  // Seed every stream's generator: stream b draws from (seed, b) alone.
  void seed(std::uint64_t seed) { seed_streams(rng_.data(), B_, seed); }
  // tokens: (B, P), each in [0, V): mark them as seen by their stream (for the repetition penalty).
  void mark_seen(const std::int64_t* tokens, index_t P) { mark_tokens_seen(seen_.data(), tokens, B_, P, w_.V); }

  // Called between chunks of steps of sample() and beam_search(), on the calling thread and
  // outside any parallel region (so it may, e.g., take the GIL to check for Ctrl-C); returning
  // false stops the loop there, with the decoder's state that after the last step run. A chunk
  // is a few million multiply-adds (a millisecond or so), whatever the model's size.
  using Poll = std::function<bool()>;

  // Up to n steps: feed each stream's next token, advance its state, choose its next token.
  // out: (B, n) chosen tokens, -1 after a stream is done; returns the steps run (fewer than n
  // when every stream is done, poll stopped it, or a step failed). stop: `n_stop` token ids
  // that end a stream (emitted, then done). A step whose logits are not finite (failed())
  // ends the loop; the state is then that after the failing step's input.
  index_t sample(std::int64_t* out, index_t n, const SamplingOptions& opt, const std::int64_t* stop, index_t n_stop,
                 const Poll& poll = nullptr);

  // Beam search from the state of stream 0 (the decoder's batch is the beam width k):
  // hypotheses ranked by score / length^alpha, at most n_best of them. Stops when n_best
  // hypotheses have ended (with a stop token) or after max_len tokens (then the live beams
  // are returned too, unfinished), or when poll stops it or a step fails (failed(); the
  // result is then meaningless). Each step keeps a back-pointer (parent beam, token) per beam;
  // the hypotheses' tokens are rebuilt from them at the end, so a step costs O(k V), not
  // O(k length).
  std::vector<Hypothesis> beam_search(index_t max_len, double alpha, index_t n_best, const std::int64_t* stop,
                                      index_t n_stop, const Poll& poll = nullptr);

  // After sample() or beam_search(): true when the last one stopped at a step whose logits
  // held NaN or +inf (or were all -inf); failed_stream() is the stream (beam) and failed_step()
  // the step, counted over every sample() of this decoder (beam_search: within the search).
  bool failed() const { return failed_stream_ >= 0; }
  index_t failed_stream() const { return failed_stream_; }
  index_t failed_step() const { return failed_step_; }

  // The logits of one step from the current state and next tokens, without choosing:
  // logits (B, V). Advances the state. (For tests and teacher forcing.)
  void step_logits(T* logits);

  // Teacher forcing over n steps from the current state: step s feeds tokens[b * n + s] (B, n)
  // to stream b. With targets (B, n), logprob[b * n + s] = log p(targets[b * n + s]) after that
  // step (in double); with logits, each step's (B, V) logits go to logits + s * B * V ((n, B, V)
  // in all); with neither, the output layer is skipped (reading a prime). The next input tokens
  // are then left as the last ones fed (set them before sampling). Returns the steps run: fewer
  // than n when a step's logits were not finite (targets only; failed() says where, and the
  // state is that after the failing step) or poll stopped the loop.
  index_t teacher_force(const std::int64_t* tokens, index_t n, const std::int64_t* targets, double* logprob, T* logits,
                        const Poll& poll = nullptr);
  // The same as teacher_force() with targets or logits, computed layer by layer over chunks of
  // steps: each layer's input products for a whole chunk in one multi-row product (VNNI int8
  // reads the weights once per 4 rows instead of once per row; the float GEMM once per chunk),
  // then its recurrence; the output layer once per chunk. For scoring text (nothing is fed
  // back). int8 and bf16 give teacher_force()'s values bit for bit (every row is its own
  // product); float may differ in the last bits (the GEMM's rounding depends on the row count).
  // A non-finite logit (targets only) is reported (failed()) for the first step and stream where
  // it occurs, but the state is then that after all n steps. The next input tokens are left as
  // the last ones fed. Returns the steps run (fewer when poll stopped it between chunks).
  index_t teacher_force_layers(const std::int64_t* tokens, index_t n, const std::int64_t* targets, double* logprob,
                               T* logits, const Poll& poll = nullptr);

 private:
  struct Slice {
    index_t lo = 0, hi = 0;    // hidden units
    index_t plo = 0, phi = 0;  // projected units (projection only)
    index_t v0 = 0, v1 = 0;    // vocabulary rows
    std::vector<PackedB<T>> w_ih, w_hh;
    std::vector<PackedB<T>> w_hr;  // layer l: rows [plo, phi) of W_hr, packed as the transpose (H, phi - plo)
    PackedB<T> w_out;
    std::vector<LowpMatrix> q_ih, q_hh, q_hr;  // the same rows in int8 or bf16 (those decoders only)
    LowpMatrix q_out;
    AlignedBuffer<unsigned char> ws;  // their products' workspace (one input vector at a time)
    AlignedBuffer<unsigned char> ws_rows;  // and for many rows (teacher_force_layers, made on first use)
    AlignedBuffer<T> gx_rows;             // (rows, G * units) input products of a chunk
    AlignedBuffer<T> gx, gh;  // (B, G * units) products of the slice
  };
  // One layer's step for one slice: reads state buffer `cur`, writes buffer 1 - cur.
  template <typename Cell>
  void layer_step(Slice& sl, int l, const T* in, index_t in_size, int cur);
  // A projected layer's second phase for one slice: h[:, plo:phi) = m W_hr[plo:phi)^T.
  void project_step(Slice& sl, int l, int cur);
  // C (B, n) = A (B, k) times a slice's weight: its packed float copy, or its int8/bf16 one when q.
  void product(Slice& sl, const PackedB<T>& w, const LowpMatrix* q, const T* A, index_t lda, T* C, index_t ldc);
  // The same for M rows of A (the float GEMM, or the reduced-precision multi-row product).
  void product_rows(Slice& sl, index_t M, const PackedB<T>& w, const LowpMatrix* q, const T* A, index_t lda, T* C,
                    index_t ldc);
  // One step of a layer's cells for one slice, from the slice's input products gx (B, G * units):
  // the recurrent product of hprev (B, R), then the cells, writing hcell (B, H: h, or m with a
  // projection) and cnew from cprev (LSTM only).
  template <typename Cell>
  void step_cells(Slice& sl, int l, const T* gx, const T* hprev, T* hcell, const T* cprev, T* cnew);
  using StepCells = void (LMDecoder::*)(Slice&, int, const T*, const T*, T*, const T*, T*);
  using LayerStep = void (LMDecoder::*)(Slice&, int, const T*, index_t, int);
  // The whole team's part of a step: every layer, then the logits (has L + 1 barriers).
  void run_layers_and_head(int tid, int team, int cur, bool head = true);
  void embed(index_t b);
  void pack_lowp_slice(Slice& sl, index_t hs);  // the slice's int8/bf16 weights (w_.format)

  LMWeights<T> w_;
  index_t B_;
  LayerStep layer_step_ = nullptr;             // layer_step<Cell> of w_.kind
  StepCells step_cells_ = nullptr;             // step_cells<Cell> of w_.kind
  std::vector<AlignedBuffer<T>> fused_bias_;   // layer l: (G*H) cells/cell.h fuse_biases
  std::vector<const T*> bias_, b_hn_;          // layer l: fused_bias_[l] or null; GRU's b_hn or null
  int G_, nt_;
  index_t R_ = 0;  // width of h
  std::vector<Slice> slices_;
  AlignedBuffer<T> h_[2], c_[2];  // (L, B, R), (L, B, H) double-buffered state
  AlignedBuffer<T> m_;            // (B, H) projection only: o * tanh(c) of the layer being stepped
  int cur_ = 0;
  AlignedBuffer<T> x_;            // (B, E) embedded input tokens
  AlignedBuffer<T> gates_;        // (B, G*H)
  AlignedBuffer<T> hn_;           // (B, H) GRU W_hn h + b_hn
  AlignedBuffer<T> logits_;       // (B, V)
  std::vector<std::int64_t> token_;
  std::vector<std::uint8_t> seen_, done_;
  std::vector<std::uint8_t> bad_;  // (B) 1 where this step's logits were not finite
  index_t poll_steps_ = 1;         // steps per chunk between polls
  index_t sampled_ = 0;            // steps run by sample() so far (for failed_step())
  index_t failed_stream_ = -1, failed_step_ = -1;
  std::vector<StreamRng> rng_;
  std::vector<SamplerScratch> scratch_;
};

}  // namespace rnncore
