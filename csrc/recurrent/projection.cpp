// Row-exact input projections (see projection.h).
#include "recurrent/projection.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "gemm/kernels.h"

namespace rnncore {

namespace {

// A deterministic spread of values with varied magnitudes, so that two summation orders of
// a few hundred products differ in some element.
template <typename T>
void fill_probe(std::vector<T>& v, std::uint32_t seed) {
  std::uint32_t s = seed;
  for (T& x : v) {
    s = s * 1664525u + 1013904223u;
    const double u = double(s >> 8) / double(1u << 24) - 0.5;
    x = T(u * double(1 + (s & 7)));
  }
}

template <typename T>
index_t probe_min_rows() {
  const auto& ks = gemm_detail::active_kernels<T>();
  const index_t MR = ks.mr, K = ks.kc + 13, N = 2 * ks.nr + 3;  // two K blocks, a partial panel
  std::vector<T> a(static_cast<std::size_t>(MR * K)), b(static_cast<std::size_t>(K * N));
  fill_probe(a, 12345u);
  fill_probe(b, 67890u);
  PackedB<T> pb;
  pb.pack(false, K, N, b.data(), N);
  std::vector<T> ref(static_cast<std::size_t>(MR * N)), c(static_cast<std::size_t>(MR * N));
  gemm_packed<T>(MR, a.data(), K, pb, T(0), ref.data(), N);
  for (index_t R = MR - 1; R >= 1; --R) {
    gemm_packed<T>(R, a.data(), K, pb, T(0), c.data(), N);  // rows 0..R-1 in one R-row tile
    if (std::memcmp(c.data(), ref.data(), static_cast<std::size_t>(R * N) * sizeof(T)) != 0) return R + 1;
  }
  return 1;
}

// Below this many rows a short tail is handled by packing W once and running every row
// through project_packed, rather than gemm() on the bulk plus a second packing for the tail.
constexpr index_t kBulkRows = 256;

}  // namespace

template <typename T>
index_t exact_min_rows() {
  static const index_t rows = probe_min_rows<T>();  // a property of the process's kernel set
  return rows;
}

template <typename T>
ExactSplit exact_split(index_t M) {
  const index_t mr = gemm_detail::active_kernels<T>().mr, mn = exact_min_rows<T>();
  if (M < mn) return {0, M};
  const index_t r = M % mr;
  if (r == 0 || r >= mn) return {M, 0};
  return {M - r, r};
}

template <typename T>
void fill_exact_pad(T* xpad, const T* X, index_t ldx, index_t K, const ExactSplit& s) {
  if (s.tail == 0) return;
  const index_t mn = exact_min_rows<T>();
  for (index_t i = 0; i < mn; ++i) {
    T* dst = xpad + i * K;
    if (i < s.tail) {
      if (K > 0) std::memcpy(dst, X + (s.main + i) * ldx, static_cast<std::size_t>(K) * sizeof(T));
    } else {
      std::fill(dst, dst + K, T(0));
    }
  }
}

template <typename T>
void project_packed(const ExactSplit& s, const T* X, index_t ldx, const PackedB<T>& W, T* C, index_t ldc,
                    const T* xpad, T* cpad) {
  const index_t N = W.cols();
  if (s.main > 0) gemm_packed<T>(s.main, X, ldx, W, T(0), C, ldc);
  if (s.tail == 0) return;
  const index_t mn = exact_min_rows<T>();
  gemm_packed<T>(mn, xpad, W.rows(), W, T(0), cpad, N);
  for (index_t i = 0; i < s.tail; ++i)
    if (N > 0) std::memcpy(C + (s.main + i) * ldc, cpad + i * N, static_cast<std::size_t>(N) * sizeof(T));
}

template <typename T>
void project_exact(index_t M, const T* X, index_t K, const T* W, index_t N, T* C, index_t ldc, int nthreads,
                   ProjectionScratch<T>& s) {
  if (M <= 0 || N <= 0) return;
  const ExactSplit sp = exact_split<T>(M);
  if (sp.tail == 0 && M >= 2) {  // gemm()'s own tiles obey the rule (M == 1 would take its GEMV path)
    gemm<T>(false, true, M, N, K, T(1), X, K, W, K, T(0), C, ldc, nthreads);
    return;
  }
  const index_t mn = exact_min_rows<T>();
  s.xpad.resize(std::max<index_t>(1, mn * K));
  s.cpad.resize(std::max<index_t>(1, mn * N));
  fill_exact_pad<T>(s.xpad.data(), X, K, K, sp);
  s.w.pack(true, K, N, W, K);
  if (sp.main >= kBulkRows) {  // the bulk on gemm()'s threads and cache blocking, the tail padded
    gemm<T>(false, true, sp.main, N, K, T(1), X, K, W, K, T(0), C, ldc, nthreads);
    project_packed<T>({0, sp.tail}, X + sp.main * K, K, s.w, C + sp.main * ldc, ldc, s.xpad.data(), s.cpad.data());
    return;
  }
  project_packed<T>(sp, X, K, s.w, C, ldc, s.xpad.data(), s.cpad.data());
}

#define RNNCORE_INSTANTIATE(T)                                                                                 \
  template index_t exact_min_rows<T>();                                                                       \
  template ExactSplit exact_split<T>(index_t);                                                                \
  template void fill_exact_pad<T>(T*, const T*, index_t, index_t, const ExactSplit&);                        \
  template void project_packed<T>(const ExactSplit&, const T*, index_t, const PackedB<T>&, T*, index_t,      \
                                  const T*, T*);                                                              \
  template void project_exact<T>(index_t, const T*, index_t, const T*, index_t, T*, index_t, int,             \
                                 ProjectionScratch<T>&);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
