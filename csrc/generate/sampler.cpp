#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace rnncore {

namespace {

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

StreamRng::StreamRng(std::uint64_t seed, std::uint64_t stream) {
  std::uint64_t x = seed ^ (0xd1b54a32d192ed03ULL * (stream + 1));
  for (auto& s : s_) s = splitmix64(x);
}

std::uint64_t StreamRng::next() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double StreamRng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

void StreamRng::get_state(std::uint64_t out[4]) const { std::copy(s_, s_ + 4, out); }
void StreamRng::set_state(const std::uint64_t in[4]) { std::copy(in, in + 4, s_); }

void seed_streams(StreamRng* rngs, index_t B, std::uint64_t seed) {
  for (index_t b = 0; b < B; ++b) rngs[b] = StreamRng(seed, static_cast<std::uint64_t>(b));
}

void mark_tokens_seen(std::uint8_t* seen, const std::int64_t* tokens, index_t B, index_t P, index_t V) {
  for (index_t b = 0; b < B; ++b)
    for (index_t p = 0; p < P; ++p) seen[b * V + tokens[b * P + p]] = 1;
}

template <typename T>
bool log_softmax_row(double* out, const T* logits, index_t V) {
  double m = -std::numeric_limits<double>::infinity();
  for (index_t v = 0; v < V; ++v) m = std::max(m, static_cast<double>(logits[v]));
  double s = 0;
  for (index_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(logits[v]) - m);
  const double lse = m + std::log(s);  // NaN for a NaN or +inf anywhere, or all -inf
  if (!std::isfinite(lse)) return false;
  for (index_t v = 0; v < V; ++v) out[v] = static_cast<double>(logits[v]) - lse;
  return true;
}

template <typename T>
index_t choose_token(const T* logits, const std::uint8_t* seen, index_t V, const SamplingOptions& opt, StreamRng& rng,
                     SamplerScratch& scratch) {
  double* p = scratch.p.data();
  // Scores after the repetition penalty: a seen token's positive score is divided by the
  // penalty, a negative one multiplied, so either way it becomes less likely. On the way, a
  // flag for any NaN or infinite score (z - z is then NaN), checked closely only when set.
  const bool penalize = seen != nullptr && opt.repetition_penalty != 1.0;
  int special = 0;
  for (index_t v = 0; v < V; ++v) {
    double z = static_cast<double>(logits[v]);
    if (penalize && seen[v]) z = z > 0 ? z / opt.repetition_penalty : z * opt.repetition_penalty;
    p[v] = z;
    special |= !(z - z == 0.0);
  }
  if (special) {
    // -inf bans a token; a NaN or +inf, or nothing but -inf, leaves nothing to choose from.
    bool finite = false;
    for (index_t v = 0; v < V; ++v) {
      if (p[v] != p[v] || p[v] == std::numeric_limits<double>::infinity()) return -1;
      finite |= p[v] > -std::numeric_limits<double>::infinity();
    }
    if (!finite) return -1;
  }
  if (opt.temperature <= 0.0) {
    index_t best = 0;
    for (index_t v = 1; v < V; ++v)
      if (p[v] > p[best]) best = v;
    return best;
  }
  // Candidates in order of decreasing score (ties: lower id first); only as many as needed.
  index_t* order = scratch.order.data();
  std::iota(order, order + V, index_t(0));
  const auto better = [p](index_t a, index_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); };
  index_t n = V;
  if (opt.top_k > 0 && opt.top_k < V) {
    n = opt.top_k;
    std::partial_sort(order, order + n, order + V, better);
  } else if (opt.top_p < 1.0) {
    std::sort(order, order + V, better);
  } else {
    std::nth_element(order, order, order + V, better);  // just the maximum in front
  }
  // Softmax over the candidates at this temperature.
  const double m = p[order[0]];
  double total = 0;
  for (index_t i = 0; i < n; ++i) {
    const double e = std::exp((p[order[i]] - m) / opt.temperature);
    p[order[i]] = e;
    total += e;
  }
  if (opt.top_p < 1.0) {
    // order[0, n) is sorted by score, hence by probability. The nucleus: the shortest prefix whose probability reaches top_p (at least one token).
    double acc = 0;
    index_t keep = 0;
    while (keep < n) {
      acc += p[order[keep]];
      ++keep;
      if (acc >= opt.top_p * total) break;
    }
    n = keep;
    total = acc;
  }
  const double u = rng.uniform() * total;
  double acc = 0;
  for (index_t i = 0; i < n; ++i) {
    acc += p[order[i]];
    if (u < acc) return order[i];
  }
  return order[n - 1];  // u landed on the rounding edge of the last candidate
}

template index_t choose_token<float>(const float*, const std::uint8_t*, index_t, const SamplingOptions&, StreamRng&,
                                     SamplerScratch&);
template index_t choose_token<double>(const double*, const std::uint8_t*, index_t, const SamplingOptions&, StreamRng&,
                                      SamplerScratch&);
template bool log_softmax_row<float>(double*, const float*, index_t);
template bool log_softmax_row<double>(double*, const double*, index_t);

}  // namespace rnncore
