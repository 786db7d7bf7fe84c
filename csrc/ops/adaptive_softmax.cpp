// Adaptive softmax, forward and backward fused (see adaptive_softmax.h).
#include "ops/adaptive_softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/buffer.h"
#include "common/parallel.h"
#include "gemm/gemm.h"

namespace rnncore {

namespace {

// Rows of z (n, K) in place -> softmax; returns into lp[r] the log-probability of column
// cols[r]; with weights, z becomes w[r] * (softmax - onehot(cols[r])) (the row loss's gradient).
template <typename T>
void softmax_rows(T* z, index_t n, index_t K, const std::int64_t* cols, T* lp, const T* w, int nthreads) {
  const int nt = threads_for(double(n * K), 1 << 13, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (index_t r = 0; r < n; ++r) {
    T* row = z + r * K;
    T m = -std::numeric_limits<T>::infinity();
    for (index_t k = 0; k < K; ++k) m = std::max(m, row[k]);
    const T target = row[cols[r]];
    double s = 0;
    for (index_t k = 0; k < K; ++k) s += std::exp(static_cast<double>(row[k] - m));
    // log p = z_t - max - log sum exp(z - max)
    lp[r] = static_cast<T>(static_cast<double>(target - m) - std::log(s));
    if (!w) continue;
    const T f = w[r], inv = static_cast<T>(1.0 / s);
    for (index_t k = 0; k < K; ++k) row[k] = f * std::exp(row[k] - m) * inv;
    row[cols[r]] -= f;
  }
}

}  // namespace

template <typename T>
index_t adaptive_softmax_fused(T* output, T* dx, T* dhead_w, T* dhead_b, const T* x, const std::int64_t* targets,
                               const T* row_weights, const T* head_w, const T* head_b,
                               const std::vector<AdaptiveCluster<T>>& clusters, const std::vector<index_t>& cutoffs,
                               index_t N, index_t I, int nthreads) {
  const index_t C = static_cast<index_t>(clusters.size());
  const index_t S = cutoffs[0], V = cutoffs[static_cast<std::size_t>(C)], Hs = S + C;
  for (index_t n = 0; n < N; ++n)
    if (targets[n] < 0 || targets[n] >= V) return n;
  const bool grad = row_weights != nullptr;

  // Head: logits L (N, Hs) = x W_head^T + b; head target = t (shortlist) or S + cluster.
  AlignedBuffer<T> L(N * Hs);
  std::vector<std::int64_t> head_t(static_cast<std::size_t>(N));
  std::vector<std::vector<index_t>> rows(static_cast<std::size_t>(C));
  for (index_t n = 0; n < N; ++n) {
    const std::int64_t t = targets[n];
    if (t < S) {
      head_t[static_cast<std::size_t>(n)] = t;
      continue;
    }
    const index_t c = static_cast<index_t>(std::upper_bound(cutoffs.begin(), cutoffs.end(), t) - cutoffs.begin()) - 1;
    head_t[static_cast<std::size_t>(n)] = S + c;
    rows[static_cast<std::size_t>(c)].push_back(n);
  }
  if (N > 0) {
    gemm<T>(false, true, N, Hs, I, T(1), x, I, head_w, I, T(0), L.data(), Hs, nthreads);
    if (head_b)
      for (index_t n = 0; n < N; ++n)
        for (index_t k = 0; k < Hs; ++k) L.data()[n * Hs + k] += head_b[k];
  }
  softmax_rows<T>(L.data(), N, Hs, head_t.data(), output, row_weights, nthreads);
  if (grad && N > 0) {
    // L = x W_head^T + b  ->  dW_head += G^T x, db += sum_n G, dx = G W_head
    gemm<T>(true, false, Hs, I, N, T(1), L.data(), Hs, x, I, T(1), dhead_w, I, nthreads);
    if (dhead_b)
      for (index_t n = 0; n < N; ++n)
        for (index_t k = 0; k < Hs; ++k) dhead_b[k] += L.data()[n * Hs + k];
    gemm<T>(false, false, N, I, Hs, T(1), L.data(), Hs, head_w, I, T(0), dx, I, nthreads);
  }

  // Clusters: only the rows whose targets fall in each.
  for (index_t c = 0; c < C; ++c) {
    const std::vector<index_t>& r = rows[static_cast<std::size_t>(c)];
    const index_t n = static_cast<index_t>(r.size());
    if (n == 0) continue;
    const AdaptiveCluster<T>& cl = clusters[static_cast<std::size_t>(c)];
    const index_t h = cl.h, o = cl.o, lo = cutoffs[static_cast<std::size_t>(c)];
    AlignedBuffer<T> xs(n * I), z(n * h), Z(n * o), lp(n), w(grad ? n : 0);
    std::vector<std::int64_t> t(static_cast<std::size_t>(n));
    for (index_t j = 0; j < n; ++j) {
      const index_t row = r[static_cast<std::size_t>(j)];
      std::copy(x + row * I, x + (row + 1) * I, xs.data() + j * I);
      t[static_cast<std::size_t>(j)] = targets[row] - lo;
      if (grad) w.data()[j] = row_weights[row];
    }
    // z = xs P^T (n, h); Z = z O^T (n, o)
    gemm<T>(false, true, n, h, I, T(1), xs.data(), I, cl.proj, I, T(0), z.data(), h, nthreads);
    gemm<T>(false, true, n, o, h, T(1), z.data(), h, cl.out, h, T(0), Z.data(), o, nthreads);
    softmax_rows<T>(Z.data(), n, o, t.data(), lp.data(), grad ? w.data() : nullptr, nthreads);
    for (index_t j = 0; j < n; ++j) output[r[static_cast<std::size_t>(j)]] += lp.data()[j];
    if (!grad) continue;
    // Z = z O^T -> dO += G^T z, dz = G O
    gemm<T>(true, false, o, h, n, T(1), Z.data(), o, z.data(), h, T(1), cl.dout, h, nthreads);
    AlignedBuffer<T> dz(n * h), dxs(n * I);
    gemm<T>(false, false, n, h, o, T(1), Z.data(), o, cl.out, h, T(0), dz.data(), h, nthreads);
    // z = xs P^T -> dP += dz^T xs, dxs = dz P
    gemm<T>(true, false, h, I, n, T(1), dz.data(), h, xs.data(), I, T(1), cl.dproj, I, nthreads);
    gemm<T>(false, false, n, I, h, T(1), dz.data(), h, cl.proj, I, T(0), dxs.data(), I, nthreads);
    for (index_t j = 0; j < n; ++j) {
      T* d = dx + r[static_cast<std::size_t>(j)] * I;
      const T* s = dxs.data() + j * I;
      for (index_t k = 0; k < I; ++k) d[k] += s[k];
    }
  }
  return -1;
}

#define RNNCORE_INSTANTIATE(T)                                                                                     \
  template index_t adaptive_softmax_fused<T>(T*, T*, T*, T*, const T*, const std::int64_t*, const T*, const T*,   \
                                             const T*, const std::vector<AdaptiveCluster<T>>&,                     \
                                             const std::vector<index_t>&, index_t, index_t, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
