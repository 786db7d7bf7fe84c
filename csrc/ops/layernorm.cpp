// Layer normalisation: forward and backward side by side (see layernorm.h).
#include "ops/layernorm.h"

#include <algorithm>
#include <cmath>

#include "common/parallel.h"

namespace rnncore {

namespace {

// Elements a thread should have, to pay for waking it.
constexpr double kMinPerThread = 1 << 13;

}  // namespace

template <typename T>
void layernorm_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta, T eps, index_t N, index_t C,
                       int nthreads) {
#pragma omp parallel for num_threads(threads_for(double(N * C), kMinPerThread, nthreads)) schedule(static)
  for (index_t n = 0; n < N; ++n) {
    const T* RNNCORE_RESTRICT xr = x + n * C;
    // Two passes (mean, then centred squares): no cancellation for rows with a large mean.
    T s = T(0);
    for (index_t c = 0; c < C; ++c) s += xr[c];
    const T m = s / T(C);
    T v = T(0);
    for (index_t c = 0; c < C; ++c) {
      const T d = xr[c] - m;
      v += d * d;
    }
    const T r = T(1) / std::sqrt(v / T(C) + eps);
    mean[n] = m;
    rstd[n] = r;
    T* yr = y + n * C;
    for (index_t c = 0; c < C; ++c) {
      const T xhat = (xr[c] - m) * r;
      yr[c] = gamma ? xhat * gamma[c] + (beta ? beta[c] : T(0)) : xhat + (beta ? beta[c] : T(0));
    }
  }
}

template <typename T>
void layernorm_backward(T* dx, bool accumulate_dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                        const T* rstd, const T* gamma, index_t N, index_t C, int nthreads) {
  const int nt = threads_for(double(N * C), kMinPerThread, nthreads);
  // forward: xhat = (x - mean) * rstd; y = xhat * gamma + beta
  // dxhat = dy * gamma;  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
  if (dx != nullptr) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (index_t n = 0; n < N; ++n) {
      const T* RNNCORE_RESTRICT xr = x + n * C;
      const T* RNNCORE_RESTRICT g = dy + n * C;
      const T m = mean[n], r = rstd[n];
      T sum_d = T(0), sum_dx = T(0);
      for (index_t c = 0; c < C; ++c) {
        const T d = gamma ? g[c] * gamma[c] : g[c];
        sum_d += d;
        sum_dx += d * (xr[c] - m) * r;
      }
      const T mean_d = sum_d / T(C), mean_dx = sum_dx / T(C);
      T* RNNCORE_RESTRICT out = dx + n * C;
      for (index_t c = 0; c < C; ++c) {
        const T d = gamma ? g[c] * gamma[c] : g[c];
        const T v = r * (d - mean_d - (xr[c] - m) * r * mean_dx);
        out[c] = accumulate_dx ? out[c] + v : v;
      }
    }
  }
  if (dgamma == nullptr && dbeta == nullptr) return;
  // dgamma += sum over rows of dy * xhat; dbeta += sum over rows of dy. Threads own columns.
  const int ntc = static_cast<int>(std::max<index_t>(1, std::min<index_t>(nt, C / 16)));
#pragma omp parallel num_threads(ntc)
  {
    index_t c0, c1;
    split_range(C, num_threads_in_region(), thread_id(), 16, &c0, &c1);
    for (index_t n = 0; n < N; ++n) {
      const T* RNNCORE_RESTRICT xr = x + n * C;
      const T* RNNCORE_RESTRICT g = dy + n * C;
      const T m = mean[n], r = rstd[n];
      if (dgamma)
        for (index_t c = c0; c < c1; ++c) dgamma[c] += g[c] * (xr[c] - m) * r;
      if (dbeta)
        for (index_t c = c0; c < c1; ++c) dbeta[c] += g[c];
    }
  }
}

#define RNNCORE_INSTANTIATE(T)                                                                                 \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, T, index_t, index_t, int);      \
  template void layernorm_backward<T>(T*, bool, T*, T*, const T*, const T*, const T*, const T*, const T*, index_t, \
                                      index_t, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
