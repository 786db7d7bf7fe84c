// rnncore GEMM: the microkernels and GEMV kernels, written once over a small vector-ops
// interface and compiled once per ISA. NOT a normal header (no include guard): it is
// included by kernels_<isa>.cpp inside namespace rnncore::gemm_detail::<isa>, after
//   RNNCORE_KTARGET   the function attribute enabling the ISA (empty for generic code)
//   OpsF, OpsD        vector operations on float / double, each with:
//     T, V            element and vector type;  W  elements per vector
//     kAcc            accumulators wanted in flight (FMA latency x FMA ports)
//     zero(), set1(s), load(p) (unaligned), store(p, v) (unaligned), bcast(p) = set1(*p),
//     fma(a, b, c) = a * b + c, mul(a, b), add(a, b), hsum(v) = sum of lanes,
//     fma1(a, b, c) the scalar operation that matches one lane of fma (fused iff fma is)
// Every function that touches vectors carries RNNCORE_KTARGET, so the AVX2 and AVX-512
// copies only ever run after the CPU check in kernels.cpp.
// Dimension legend: see gemm/kernels.h (M, N, K, MR, NR, KC, W).

// ---------------------------------------------------------------------------------------
// Microkernel, shape: C (R, NV*W) = alpha * A (R, kc) * B (kc, NV*W) + beta * C.
//   A (i, k) at a[i * rs_a + k * cs_a]  (packed panel: rs_a = 1, cs_a = R; row-major: lda, 1);
//   kPackedA: A is a packed panel (the strides passed are ignored and taken as 1, R)
//   B row k at b + k * ldb              (packed panel: ldb = NR, zero-padded past N)
//   only the first n_valid columns of C are written; beta == 0 never reads C.
// Aliasing: a and b may alias each other (read only); c must alias neither.
// With few tiles (R * NVMAX < kAcc) the k loop is split over U interleaved accumulator sets
// so that enough independent FMAs are in flight; they are summed at the end. U depends on
// the row count and the full panel width only, never on this tile's width, so an element's
// summation order does not depend on where a column split (e.g. a thread's slice) ends.
template <class O, int R, int NV, bool kPackedA, int NVMAX>
RNNCORE_KTARGET void ukernel(index_t kc, const typename O::T* a, index_t rs_a, index_t cs_a,
                             const typename O::T* b, index_t ldb, typename O::T alpha, typename O::T beta,
                             typename O::T* RNNCORE_RESTRICT c, index_t ldc, int n_valid) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int W = O::W;
  constexpr int kTiles = R * NVMAX;
  constexpr int kWant = (O::kAcc + kTiles - 1) / kTiles;
  constexpr int U = kWant < 1 ? 1 : (kWant > 4 ? 4 : kWant);
  // A packed panel: strides known at compile time (the caller passes rs_a = 1, cs_a = R).
  if (kPackedA) {
    rs_a = 1;
    cs_a = R;
  }

  V acc[U][R][NV];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[u][i][v] = O::zero();

  const T* ap[R];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) ap[i] = a + i * rs_a;
  // The C tile is only touched after the k loop: start fetching it now (first and last
  // element of each row, which covers a 64-byte row in at most two lines).
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + (NV * W - 1), 1, 3);
  }

  index_t k = 0, ka = 0;
  const index_t k_main = kc - kc % U;
#pragma GCC unroll 2
  for (; k < k_main; k += U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      V bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) bv[v] = O::load(b + v * W);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i) {
        const V av = O::bcast(ap[i] + ka);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[u][i][v] = O::fma(av, bv[v], acc[u][i][v]);
      }
      b += ldb;
      ka += cs_a;
    }
  }
  for (; k < kc; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = O::load(b + v * W);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const V av = O::bcast(ap[i] + ka);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[0][i][v] = O::fma(av, bv[v], acc[0][i][v]);
    }
    b += ldb;
    ka += cs_a;
  }
#pragma GCC unroll 4
  for (int u = 1; u < U; ++u)
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[0][i][v] = O::add(acc[0][i][v], acc[u][i][v]);

  // Store: C = alpha * acc + beta * C, as mul then fma; the partial-width path does the
  // same two roundings per element, so a column's result does not depend on its tile.
  const V valpha = O::set1(alpha);
  if (n_valid == NV * W) {
    if (beta == T(0)) {
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) O::store(c + i * ldc + v * W, O::mul(valpha, acc[0][i][v]));
    } else {
      const V vbeta = O::set1(beta);
#pragma GCC unroll 8
      for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          T* cp = c + i * ldc + v * W;
          O::store(cp, O::fma(vbeta, O::load(cp), O::mul(valpha, acc[0][i][v])));
        }
    }
  } else {
    alignas(64) T tile[R][NV * W];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) O::store(&tile[i][v * W], O::mul(valpha, acc[0][i][v]));
    for (int i = 0; i < R; ++i) {
      T* cp = c + i * ldc;
      if (beta == T(0)) {
        for (int j = 0; j < n_valid; ++j) cp[j] = tile[i][j];
      } else {
        for (int j = 0; j < n_valid; ++j) cp[j] = O::fma1(beta, cp[j], tile[i][j]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// GEMV, shape: y (n) = alpha * x (K) * B (K, n) + beta * y   (op(A) has one row, op(B) = B)
//   x[k] at x[k * incx]; B row k at B + k * ldb; y contiguous.
// Aliasing: x and B are read only and may alias each other; y must alias neither.
// Streams B once, eight rows at a time, into an L1-resident chunk of y accumulators. Each
// y[j] is summed in the same order (k ascending, one fma per k) whatever its position, so
// splitting n over threads does not change results.
template <class O>
RNNCORE_KTARGET void gemv_n(index_t K, index_t n, const typename O::T* x, index_t incx, const typename O::T* B,
                            index_t ldb, typename O::T alpha, typename O::T beta, typename O::T* RNNCORE_RESTRICT y) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int W = O::W;
  constexpr index_t kChunk = 8192 / sizeof(T);  // 8 KB of accumulators
  alignas(64) T acc[kChunk];
  for (index_t j0 = 0; j0 < n; j0 += kChunk) {
    const index_t nb = n - j0 < kChunk ? n - j0 : kChunk;
    const index_t nbv = nb - nb % W;
    for (index_t j = 0; j < nb; ++j) acc[j] = T(0);
    index_t k = 0;
    for (; k + 8 <= K; k += 8) {
      T xs[8];
      V av[8];
      const T* bk[8];
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) {
        xs[r] = x[(k + r) * incx];
        av[r] = O::set1(xs[r]);
        bk[r] = B + (k + r) * ldb + j0;
      }
      index_t j = 0;
      for (; j < nbv; j += W) {
        V s = O::load(acc + j);
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) s = O::fma(av[r], O::load(bk[r] + j), s);
        O::store(acc + j, s);
      }
      for (; j < nb; ++j) {
        T s = acc[j];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) s = O::fma1(xs[r], bk[r][j], s);
        acc[j] = s;
      }
    }
    for (; k < K; ++k) {
      const T x0 = x[k * incx];
      const V a0 = O::set1(x0);
      const T* b0 = B + k * ldb + j0;
      index_t j = 0;
      for (; j < nbv; j += W) O::store(acc + j, O::fma(a0, O::load(b0 + j), O::load(acc + j)));
      for (; j < nb; ++j) acc[j] = O::fma1(x0, b0[j], acc[j]);
    }
    T* yc = y + j0;
    if (beta == T(0)) {
      for (index_t j = 0; j < nb; ++j) yc[j] = alpha * acc[j];
    } else {
      for (index_t j = 0; j < nb; ++j) yc[j] = O::fma1(beta, yc[j], alpha * acc[j]);
    }
  }
}

// ---------------------------------------------------------------------------------------
// GEMV, shape: y (n) = alpha * B (n, K) * x (K) + beta * y   (op(A) has one row, op(B) = B^T)
//   x contiguous; B row j at B + j * ldb; y contiguous.
// Aliasing: x and B are read only and may alias each other; y must alias neither.
// ROWS rows of B at a time, two vector accumulators per row; each row's sum is formed the
// same way whatever ROWS is, so results do not depend on the grouping or thread split.
template <class O, int ROWS>
RNNCORE_KTARGET RNNCORE_INLINE void gemv_t_rows(index_t K, const typename O::T* x, const typename O::T* B,
                                                index_t ldb, typename O::T alpha, typename O::T beta,
                                                typename O::T* y) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr int W = O::W;
  V s0[ROWS], s1[ROWS];
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r) s0[r] = s1[r] = O::zero();
  index_t k = 0;
  for (; k + 2 * W <= K; k += 2 * W) {
    const V x0 = O::load(x + k), x1 = O::load(x + k + W);
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      s0[r] = O::fma(O::load(B + r * ldb + k), x0, s0[r]);
      s1[r] = O::fma(O::load(B + r * ldb + k + W), x1, s1[r]);
    }
  }
  if (k + W <= K) {
    const V x0 = O::load(x + k);
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) s0[r] = O::fma(O::load(B + r * ldb + k), x0, s0[r]);
    k += W;
  }
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r) {
    T t = O::hsum(O::add(s0[r], s1[r]));
    for (index_t kk = k; kk < K; ++kk) t = O::fma1(B[r * ldb + kk], x[kk], t);
    y[r] = beta == T(0) ? alpha * t : O::fma1(beta, y[r], alpha * t);
  }
}

template <class O>
RNNCORE_KTARGET void gemv_t(index_t K, index_t n, const typename O::T* x, const typename O::T* B, index_t ldb,
                            typename O::T alpha, typename O::T beta, typename O::T* RNNCORE_RESTRICT y) {
  index_t j = 0;
  for (; j + 4 <= n; j += 4) gemv_t_rows<O, 4>(K, x, B + j * ldb, ldb, alpha, beta, y + j);
  for (; j < n; ++j) gemv_t_rows<O, 1>(K, x, B + j * ldb, ldb, alpha, beta, y + j);
}

// ---------------------------------------------------------------------------------------
// The kernel set: block sizes and the table of microkernels for every tile shape
// (R = 1..MR rows, NV = 1..NR/W vectors); entries past MR or NR/W stay null.
template <class O, int R, int... NVm1>
void fill_row(KernelSet<typename O::T>& ks, std::integer_sequence<int, NVm1...>) {
  constexpr int kNVMax = static_cast<int>(sizeof...(NVm1));
  ((ks.ukernel[R - 1][NVm1] = &ukernel<O, R, NVm1 + 1, true, kNVMax>), ...);
  ((ks.ukernel_rows[R - 1][NVm1] = &ukernel<O, R, NVm1 + 1, false, kNVMax>), ...);
}

template <class O, int NVMAX, int... Rm1>
void fill_table(KernelSet<typename O::T>& ks, std::integer_sequence<int, Rm1...>) {
  (fill_row<O, Rm1 + 1>(ks, std::make_integer_sequence<int, NVMAX>{}), ...);
}

template <class O, int MR, int NVMAX>
KernelSet<typename O::T> make_kernel_set(Isa isa, const char* name, index_t mc, index_t kc, index_t nc) {
  static_assert(MR <= kMaxMR && NVMAX <= kMaxNV, "tile larger than the kernel table");
  KernelSet<typename O::T> ks{};
  ks.isa = isa;
  ks.name = name;
  ks.mr = MR;
  ks.nr = NVMAX * O::W;
  ks.w = O::W;
  ks.mc = mc;
  ks.kc = kc;
  ks.nc = nc;
  fill_table<O, NVMAX>(ks, std::make_integer_sequence<int, MR>{});
  ks.gemv_n = &gemv_n<O>;
  ks.gemv_t = &gemv_t<O>;
  return ks;
}
