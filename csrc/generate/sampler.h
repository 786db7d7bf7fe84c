// Token choice for autoregressive generation: temperature, top-k, top-p (nucleus), repetition
// penalty, greedy; and a small counter-free RNG per stream, so that a stream's text depends
// only on its seed and index, never on the thread count.
#pragma once

#include <cstdint>
#include <vector>

#include "common/defs.h"

namespace rnncore {

// xoshiro256** seeded through splitmix64 (public-domain algorithms by Vigna and Blackman).
class StreamRng {
 public:
  StreamRng() = default;
  StreamRng(std::uint64_t seed, std::uint64_t stream);
  std::uint64_t next();
  double uniform();  // in [0, 1), 53 random bits
  void get_state(std::uint64_t out[4]) const;
  void set_state(const std::uint64_t in[4]);

 private:
  std::uint64_t s_[4] = {0, 0, 0, 0};
};

struct SamplingOptions {
  double temperature = 1.0;         // 0 means greedy (argmax)
  index_t top_k = 0;                // keep the k most likely tokens; 0 keeps all
  double top_p = 1.0;               // keep the smallest set whose probability reaches p; 1 keeps all
  double repetition_penalty = 1.0;  // > 1 discourages tokens already seen (CTRL's rule)
};

// Scratch for choose_token, sized for a vocabulary of V.
struct SamplerScratch {
  std::vector<double> p;
  std::vector<index_t> order;
  void reserve(index_t V) {
    p.resize(static_cast<std::size_t>(V));
    order.resize(static_cast<std::size_t>(V));
  }
};

// rngs: (B) one generator per stream, each reseeded from (seed, b) alone, so a stream's draws
// depend on neither its batch nor the thread count.
void seed_streams(StreamRng* rngs, index_t B, std::uint64_t seed);

// seen: (B, V) the repetition penalty's flags; tokens: (B, P) ids, each in [0, V) (the
// bindings check). Sets seen[b, tokens[b, p]] = 1 for every b, p.
void mark_tokens_seen(std::uint8_t* seen, const std::int64_t* tokens, index_t B, index_t P, index_t V);

// logits: (V) scores of the next token (read only). seen: (V) 1 where the token already
// occurred in this stream (prime or generated), used by the repetition penalty; may be null.
// Returns the chosen token id, or -1 when the scores are not finite (a NaN or +inf, or all
// -inf: then no token has a probability; -inf alone is fine, it bans a token). Ties in
// greedy/top-k go to the lower id.
template <typename T>
index_t choose_token(const T* logits, const std::uint8_t* seen, index_t V, const SamplingOptions& opt, StreamRng& rng,
                     SamplerScratch& scratch);

// log-softmax of a row (double accumulation): out[v] = logits[v] - logsumexp(logits).
// Returns false (out then unspecified) when logsumexp is not finite: a NaN or +inf in the
// row, or every entry -inf.
template <typename T>
bool log_softmax_row(double* out, const T* logits, index_t V);

}  // namespace rnncore
