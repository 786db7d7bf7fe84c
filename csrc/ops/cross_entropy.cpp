// Softmax + cross-entropy, forward and backward fused (see cross_entropy.h).
#include "ops/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "common/vmath.h"

namespace rnncore {

template <typename T>
CrossEntropyResult cross_entropy_fused(T* losses, T* dlogits, T* probs, const T* logits, const std::int64_t* targets,
                                       const T* weights, std::int64_t ignore_index, Reduction reduction, index_t N,
                                       index_t V, int nthreads) {
  CrossEntropyResult r;
  // 1. Check targets and weights, and find the mean's denominator, before writing anything.
  double total = 0;
  for (index_t n = 0; n < N; ++n) {
    const std::int64_t t = targets[n];
    const double w = weights ? static_cast<double>(weights[n]) : 1.0;
    if (!(w >= 0) || !std::isfinite(w)) {
      r.bad_weight = n;
      return r;
    }
    // A masked-out position (weight 0) may hold any target: padding needs no valid label.
    if (w != 0 && t != ignore_index && (t < 0 || t >= V)) {
      r.bad_target = n;
      return r;
    }
    if (t != ignore_index && w != 0) {
      total += w;
      ++r.counted;
    }
  }
  r.total_weight = total;
  const T scale = reduction == Reduction::Mean ? (total > 0 ? static_cast<T>(1.0 / total) : T(0)) : T(1);

  // 2. Rows in parallel. For a counted row with target t, weight w, and e_v = exp(x_v - max):
  //      loss = log(sum e) + max - x_t
  //      dloss/dx_v = scale * w * (e_v / sum e - [v == t])
  //    e_v is written straight into dlogits (or probs) and rescaled in place: one exp per
  //    element, no probability array.
  const int nt = threads_for(double(N * V), 1 << 13, nthreads);  // elements per thread, to pay for it
  r.total_overflow = !std::isfinite(total);
  index_t first_nonfinite = N, first_overflow = N;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(min : first_nonfinite, first_overflow)
  for (index_t n = 0; n < N; ++n) {
    const T* RNNCORE_RESTRICT x = logits + n * V;
    const std::int64_t t = targets[n];
    const T w = weights ? weights[n] : T(1);
    const bool counts = t != ignore_index && w != T(0);
    T* RNNCORE_RESTRICT g = dlogits ? dlogits + n * V : nullptr;
    T* RNNCORE_RESTRICT p = probs ? probs + n * V : nullptr;
    if (!counts) {
      losses[n] = T(0);
      if (g) std::fill(g, g + V, T(0));
      if (!p) continue;
    }
    T m = -std::numeric_limits<T>::infinity();
    for (index_t v = 0; v < V; ++v) m = std::max(m, x[v]);
    // (std::max skips a NaN, but exp(NaN - m) brings it back into the sum, and an infinite
    // max gives inf - inf = NaN: either way the loss comes out NaN and is reported.)
    T* e = counts && g ? g : p;  // where the exponentials go first, or null for the loss alone
    double s = 0;
    if (e) {
      for (index_t v = 0; v < V; ++v) e[v] = x[v] - m;
      vexp(e, e, V);  // vectorised for float32 (common/vmath.h)
      for (index_t v = 0; v < V; ++v) s += static_cast<double>(e[v]);
    } else {
      for (index_t v = 0; v < V; ++v) s += static_cast<double>(std::exp(x[v] - m));
    }
    const T inv = static_cast<T>(1.0 / s);
    if (p && p != e)
      for (index_t v = 0; v < V; ++v) p[v] = e[v] * inv;
    if (!counts) {
      for (index_t v = 0; v < V; ++v) p[v] *= inv;  // here e == p
      continue;
    }
    // loss = logsumexp(x) - x_t
    const T loss = static_cast<T>(std::log(s)) + m - x[t];
    losses[n] = w * loss;
    if (!std::isfinite(loss)) first_nonfinite = std::min(first_nonfinite, n);
    else if (!std::isfinite(losses[n])) first_overflow = std::min(first_overflow, n);  // w * loss past T's range
    if (g) {
      const T f = scale * w;
      // dx_v = f * softmax_v - f * [v == t]
      for (index_t v = 0; v < V; ++v) g[v] *= f * inv;
      g[t] -= f;
    }
    if (p && p == e)
      for (index_t v = 0; v < V; ++v) p[v] *= inv;
  }
  r.nonfinite = first_nonfinite < N ? first_nonfinite : -1;
  r.overflow = first_overflow < N ? first_overflow : -1;

  // 3. The reduced loss, summed in row order (deterministic).
  if (reduction != Reduction::None) {
    double sum = 0;
    for (index_t n = 0; n < N; ++n) sum += static_cast<double>(losses[n]);
    r.loss = reduction == Reduction::Mean ? (total > 0 ? sum / total : 0.0) : sum;
    // finite rows whose sum (in double) overflows, or whose mean does (a tiny total weight)
    r.sum_overflow = r.nonfinite < 0 && r.overflow < 0 && !r.total_overflow && !std::isfinite(r.loss);
  }
  return r;
}

#define RNNCORE_INSTANTIATE(T)                                                                                \
  template CrossEntropyResult cross_entropy_fused<T>(T*, T*, T*, const T*, const std::int64_t*, const T*,     \
                                                     std::int64_t, Reduction, index_t, index_t, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
