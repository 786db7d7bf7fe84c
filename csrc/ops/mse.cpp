// Mean squared error, forward and backward fused (see mse.h).
#include "ops/mse.h"

#include <cmath>
#include <vector>

#include "common/parallel.h"

namespace rnncore {

template <typename T>
MSEResult mse_fused(T* losses, T* dinput, const T* input, const T* target, const T* weights, bool weight_per_row,
                    Reduction reduction, index_t N, index_t F, int nthreads) {
  MSEResult r;
  const index_t NF = N * F;
  // 1. Check everything and find the mean's denominator before writing anything.
  const index_t W = weights ? (weight_per_row ? N : NF) : 0;
  double total = weights ? 0.0 : static_cast<double>(NF);
  for (index_t k = 0; k < W; ++k) {
    const double w = static_cast<double>(weights[k]);
    if (!(w >= 0) || !std::isfinite(w)) {
      r.bad_weight = k;
      return r;
    }
    total += weight_per_row ? w * static_cast<double>(F) : w;
  }
  for (index_t k = 0; k < NF; ++k) {
    if (!std::isfinite(input[k])) {
      r.nonfinite_input = k;
      return r;
    }
    if (!std::isfinite(target[k])) {
      r.nonfinite_target = k;
      return r;
    }
  }
  r.total_weight = total;
  if (!std::isfinite(total)) {
    r.overflow = true;
    return r;
  }
  const double scale = reduction == Reduction::Mean ? (total > 0 ? 1.0 / total : 0.0) : 1.0;

  // 2. Rows in parallel. For an element with weight w and e = input - target:
  //      loss = w * e^2;   dloss/dinput = scale * 2 * w * e
  std::vector<double> row_sums(static_cast<std::size_t>(N), 0.0);
  const int nt = threads_for(double(NF), 1 << 14, nthreads);
  int bad = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(| : bad)
  for (index_t n = 0; n < N; ++n) {
    const T* RNNCORE_RESTRICT x = input + n * F;
    const T* RNNCORE_RESTRICT y = target + n * F;
    T* RNNCORE_RESTRICT l = losses ? losses + n * F : nullptr;
    T* RNNCORE_RESTRICT g = dinput ? dinput + n * F : nullptr;
    double s = 0;
    for (index_t f = 0; f < F; ++f) {
      const T w = weights ? (weight_per_row ? weights[n] : weights[n * F + f]) : T(1);
      const T e = x[f] - y[f];
      const T le = w * e * e;  // loss = w * (input - target)^2
      if (!std::isfinite(le)) bad = 1;
      if (l) l[f] = le;
      // dinput = scale * 2 * w * (input - target)
      // (in double: scale alone may be past T's range when the total weight is tiny)
      if (g) {
        g[f] = static_cast<T>(scale * 2.0 * static_cast<double>(w) * static_cast<double>(e));
        if (!std::isfinite(g[f])) bad = 1;  // e.g. w * e^2 fits T but 2 * w * e does not
      }
      s += static_cast<double>(le);
    }
    row_sums[static_cast<std::size_t>(n)] = s;
  }
  // 3. The reduced loss, summed in row order (deterministic).
  double sum = 0;
  for (index_t n = 0; n < N; ++n) sum += row_sums[static_cast<std::size_t>(n)];
  if (reduction != Reduction::None) r.loss = sum * scale;
  r.overflow = bad != 0 || (reduction != Reduction::None && !std::isfinite(sum * scale));
  return r;
}

#define RNNCORE_INSTANTIATE(T)                                                                                 \
  template MSEResult mse_fused<T>(T*, T*, const T*, const T*, const T*, bool, Reduction, index_t, index_t, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
