// Decoding for the attentional encoder-decoder, the whole loop in C++: greedy, sampling and
// beam search over a batch of sources, and a teacher-forced run that returns every step's logits.
//
// Shape letters: S source positions, B sources, k rows per source (the beam width; 1 for
// greedy; n_best independent samples for sampling), R = B * k decoder rows, L layers, H hidden,
// E embedding, Hm memory width, Ho attentional-state width, A additive units, K key width,
// V vocabulary, O = Ho with attention (H without), F = Ho with input feeding (0 without).
//
// Rows: row r = b * k + j is beam (or sample) j of source b. The memory (S, B, Hm) and its keys
// (S, B, K) are computed once per call and every row reads its source's column b = r / k of
// them: nothing is copied per beam. One step, for every live row r:
//   x = [embedding[tok_r] ; attn_h_prev_r]      (E + F)  (input feeding: OpenNMT-py's order)
//   h^0 = cell_0(x, h^0_prev) ... h^{L-1} = cell_{L-1}(h^{L-2}, h^{L-1}_prev)
//   attention on q = h^{L-1} over memory[:len_b, b] (ops/attention.h's math, one query per row):
//     alpha (S) 0 past len_b; c = sum_s alpha_s memory[s, b]; attn_h = tanh(W_c [c ; q] + b_c)
//   logits = W_out (attn_h, or h^{L-1} without attention) + b_out     (V)
// then the choice: greedy argmax, a sample (generate/sampler.h), or the beam's ranking.
//
// Threads: as in generate/decoder.h, each thread owns a slice of the hidden units (all their
// gates), of the additive units, of the attentional units and of the vocabulary, packed once
// when the decoder is made; the per-row attention and the choice split rows (sources for a
// beam) over the team. Barriers per step: L after the layers, 1-3 for the attention, 1 after
// the logits, 1 after the choice.
//
// Beam search per source (k = beam width): the candidates are the live beams extended by every
// token (k * V), ranked by score (sum of log-probabilities); of the top 2k, those ending with
// eos retire as finished hypotheses and the best k others stay live. A back-pointer (parent
// beam, token) per row and step rebuilds the tokens at the end. A source stops when it has
// n_best finished hypotheses and this step's best candidate ended (OpenNMT-py's rule: every
// live beam then scores below a finished one, so with alpha = 0 and nothing pruned the search
// is exact), when no beam is left, or after its max_len steps (its live beams are then returned
// too, unfinished, when fewer than n_best finished). Hypotheses are ranked by
// score / len^alpha (len counts the eos).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "common/buffer.h"
#include "gemm/gemm.h"
#include "generate/decoder.h"
#include "generate/sampler.h"
#include "ops/attention.h"

namespace rnncore {

// Pointers into the caller's arrays, which must outlive the decoder.
template <typename T>
struct Seq2SeqWeights {
  CellKind kind = CellKind::LSTM;
  index_t V = 0, E = 0, H = 0;
  int L = 0;
  bool has_attention = false;
  bool input_feed = false;  // needs attention
  AttentionWeights<T> attn;  // Hq == H
  const T* embedding = nullptr;                  // (V, E)
  std::vector<const T*> w_ih, w_hh, b_ih, b_hh;  // layer l: (G*H, E + F or H), (G*H, H), (G*H) or null
  const T* w_out = nullptr;                      // (V, O)
  const T* b_out = nullptr;                      // (V) or null
  index_t out_size() const { return has_attention ? attn.Ho : H; }
  index_t feed_size() const { return input_feed ? attn.Ho : 0; }
};

enum class DecodeMethod { Greedy, Sample, Beam };

struct Seq2SeqOptions {
  DecodeMethod method = DecodeMethod::Greedy;
  index_t beam_width = 1;   // rows per source with Beam
  index_t n_best = 1;       // hypotheses per source (Sample: that many independent samples)
  double alpha = 0.0;       // length penalty: normalized = score / len^alpha
  SamplingOptions sampling;  // Sample only (Greedy forces temperature 0)
  std::uint64_t seed = 0;    // Sample: row r draws from (seed, r) alone
  bool return_attention = false;
};

// One call's sources (pointers into the caller's arrays).
template <typename T>
struct Seq2SeqSources {
  index_t S = 0, B = 0;
  const T* memory = nullptr;             // (S, B, Hm); unused without attention
  const std::int64_t* lengths = nullptr;  // (B) each in [1, S], or null (all S)
  const T* h0 = nullptr;                 // (L, B, H), or null (zeros)
  const T* c0 = nullptr;                 // (L, B, H) LSTM, or null (zeros)
  const std::int64_t* max_len = nullptr;  // (B) each >= 1: decoding steps per source
  std::int64_t bos = 0, eos = 0;
};

template <typename T>
struct Seq2SeqHypothesis {
  Hypothesis hyp;
  std::vector<T> attention;  // (len, S) with return_attention (0 past the source's length)
};

template <typename T>
class Seq2SeqDecoder {
 public:
  using value_type = T;
  Seq2SeqDecoder(const Seq2SeqWeights<T>& w, int nthreads);

  // See Decoder::Poll in generate/decoder.h: called between chunks of steps, outside any
  // parallel region; returning false stops the loop (the result is then what was reached).
  using Poll = std::function<bool()>;

  // Per source, up to n_best hypotheses, best (highest normalized) first. Greedy: one per
  // source. A step whose logits are not finite stops the loop (failed()).
  std::vector<std::vector<Seq2SeqHypothesis<T>>> decode(const Seq2SeqSources<T>& src, const Seq2SeqOptions& opt,
                                                        const Poll& poll = nullptr);

  // Teacher forcing: tokens (Tt, B) fed one step at a time (the first is usually bos);
  // logits (Tt, B, V) written; alpha (Tt, B, S) written when not null (attention only).
  // src.max_len and bos/eos are not read. Returns false when poll stopped it.
  bool forced(T* logits, T* alpha, const std::int64_t* tokens, index_t Tt, const Seq2SeqSources<T>& src,
              const Poll& poll = nullptr);

  // After decode(): true when it stopped at a step whose logits held NaN or +inf (or were all
  // -inf); failed_source()/failed_step() say where.
  bool failed() const { return failed_source_ >= 0; }
  index_t failed_source() const { return failed_source_; }
  index_t failed_step() const { return failed_step_; }
  bool interrupted() const { return interrupted_; }

 private:
  struct Slice {
    index_t lo = 0, hi = 0;  // hidden units
    index_t a0 = 0, a1 = 0;  // additive units
    index_t o0 = 0, o1 = 0;  // attentional units (Ho)
    index_t v0 = 0, v1 = 0;  // vocabulary rows
    std::vector<PackedB<T>> w_ih, w_hh;
    PackedB<T> w_q, w_c, w_out;  // W_q rows [a0, a1); W_c (linear_out) rows [o0, o1); W_out rows [v0, v1)
    AlignedBuffer<T> gx, gh;     // (R, G * units)
  };
  // Where the rows live in the state buffers for one step: finished sources give their slots
  // up, so the products run over the live sources' rows only. Slots [base[b], base[b] + k) hold
  // source b's rows (base[b] = -1: none); src[slot] is the slot's source; rows slots in use.
  struct Layout {
    std::vector<index_t> base, src;
    index_t rows = 0;
  };
  template <typename Cell>
  void layer_step(Slice& sl, int l, const T* in, index_t in_size, int cur, const Layout& lay);
  using LayerStep = void (Seq2SeqDecoder::*)(Slice&, int, const T*, index_t, int, const Layout&);
  // One step's layers, attention and logits for the whole team over lay's slots; alpha_out:
  // (R, S) this step's attention, indexed by logical row b * k + j.
  void run_step(int tid, int team, int cur, T* alpha_out, const Layout& lay);
  void attend_row(index_t b, index_t r, const T* q, T* alpha, T* scratch);
  // Whether slot r's step matters (its source is not done and its beam is live).
  bool slot_live(const Layout& lay, index_t r) const {
    const index_t b = lay.src[static_cast<std::size_t>(r)];
    return !src_done_[b] && live_[b * k_ + r - lay.base[b]];
  }
  // The layout giving every source not done its k slots, in source order.
  void compact(Layout& lay) const;
  // Prepare buffers and the initial state for R = B * k rows.
  void setup(const Seq2SeqSources<T>& src, index_t k);
  // Row r's next input: x[r] = [embedding[tok] ; attn_h[cur][r]].
  void embed_row(index_t r, std::int64_t tok, int cur);
  // Row r's state in buffer cur := row p's stepped state in buffer 1 - cur.
  void take_state(index_t r, index_t p, int cur);

  Seq2SeqWeights<T> w_;
  LayerStep layer_step_ = nullptr;
  std::vector<AlignedBuffer<T>> fused_bias_;
  std::vector<const T*> bias_, b_hn_;
  int G_ = 1, nt_ = 1;
  index_t Hm_ = 0, K_ = 0, O_ = 0, F_ = 0, X_ = 0;  // memory, key, output-layer input, feed, layer-0 input widths
  std::vector<Slice> slices_;
  // Per call.
  Seq2SeqSources<T> src_;
  index_t R_ = 0, k_ = 1;
  AlignedBuffer<T> keys_;                      // (S, B, K) general/additive
  AlignedBuffer<T> h_[2], c_[2], attn_h_[2];   // (L, R, H), (L, R, H), (R, Ho)
  AlignedBuffer<T> x_, gates_, hn_, cq_, qproj_, logits_, alpha_, scratch_;
  std::vector<std::uint8_t> live_;      // (R) logical rows b * k + j whose step matters
  std::vector<std::uint8_t> src_done_;  // (B) sources whose search ended
  index_t poll_steps_ = 1;
  index_t failed_source_ = -1, failed_step_ = -1;
  bool interrupted_ = false;
};

}  // namespace rnncore
