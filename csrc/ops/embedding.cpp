// Embedding lookup: forward gather and backward scatter-add, side by side (see embedding.h).
#include "ops/embedding.h"

#include <algorithm>
#include <cstring>

#include "common/parallel.h"

namespace rnncore {

namespace {

// Table entries a thread should touch, to pay for waking it.
constexpr double kMinPerThread = 1 << 14;

}  // namespace

index_t embedding_first_bad_id(const std::int64_t* ids, index_t N, index_t V, int nthreads) {
  // Each thread finds the first bad id of its chunk; the smallest position wins.
  index_t first = N;
#pragma omp parallel num_threads(threads_for(double(N), kMinPerThread, nthreads)) reduction(min : first)
  {
    index_t n0, n1;
    split_range(N, num_threads_in_region(), thread_id(), 1, &n0, &n1);
    for (index_t n = n0; n < n1; ++n) {
      if (ids[n] < 0 || ids[n] >= V) {
        first = std::min(first, n);
        break;
      }
    }
  }
  return first < N ? first : -1;
}

// out[n, :] = weight[ids[n], :]
template <typename T>
index_t embedding_forward(T* out, const T* weight, const std::int64_t* ids, index_t N, index_t V, index_t E,
                          int nthreads) {
  const index_t bad = embedding_first_bad_id(ids, N, V, nthreads);
  if (bad >= 0 || E == 0) return bad;  // (E = 0: nothing to copy, and no row pointer to copy from)
#pragma omp parallel for num_threads(threads_for(double(N * E), kMinPerThread, nthreads)) schedule(static)
  for (index_t n = 0; n < N; ++n) {
    std::memcpy(out + n * E, weight + ids[n] * E, static_cast<std::size_t>(E) * sizeof(T));
  }
  return -1;
}

template <typename T>
index_t embedding_backward(T* dweight, const T* dout, const std::int64_t* ids, index_t padding_idx, index_t N,
                           index_t V, index_t E, int nthreads) {
  const index_t bad = embedding_first_bad_id(ids, N, V, nthreads);
  if (bad >= 0) return bad;
  // forward: out[n, :] = weight[ids[n], :]  =>  dweight[ids[n], :] += dout[n, :]
  // Repeated ids add into the same row, so threads split the columns, not the ids: no two
  // threads ever write the same element, and every element sums its terms in id order.
  const int nt =
      static_cast<int>(std::max<index_t>(1, std::min<index_t>(threads_for(double(N * E), kMinPerThread, nthreads), E / 8)));
#pragma omp parallel num_threads(nt)
  {
    index_t c0, c1;
    split_range(E, num_threads_in_region(), thread_id(), 8, &c0, &c1);
    for (index_t n = 0; n < N; ++n) {
      const index_t v = ids[n];
      if (v == padding_idx) continue;
      T* RNNCORE_RESTRICT d = dweight + v * E;
      const T* RNNCORE_RESTRICT g = dout + n * E;
      for (index_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  }
  return -1;
}

#define RNNCORE_INSTANTIATE(T)                                                                                  \
  template index_t embedding_forward<T>(T*, const T*, const std::int64_t*, index_t, index_t, index_t, int);     \
  template index_t embedding_backward<T>(T*, const T*, const std::int64_t*, index_t, index_t, index_t, index_t, \
                                         int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
