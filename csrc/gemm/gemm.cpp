// rnncore GEMM drivers: packing, cache blocking and threading around the microkernels.
//
// Dimension legend: see gemm/kernels.h (M, N, K; MR, NR tile; MC, KC, NC blocks; W).
//
// gemm() follows GotoBLAS / BLIS:
//   for jc in N by NC:                      B block (KC, NC)   -> L3 (shared by threads)
//     for pc in K by KC:                    pack op(B)[pc, jc] into NR-wide micro-panels
//       for ic in M by MC:                  pack op(A)[ic, pc] into MR-tall micro-panels -> L2
//         for jr in NC by NR:               B micro-panel (KC, NR) -> L1
//           for ir in MC by MR:  microkernel C (MR, NR) += A panel * B panel
// Threads form a tm x tn grid: thread (it, jt) owns rows [m0, m1) of C (multiples of MR)
// and NR-panels [p0, p1) of every NC block. With tm == 1 (the usual choice) each thread
// packs its own B panels just before first use, so no barrier is needed; with tm > 1 the
// tm threads of a column group share their B panels: they pack them together, then
// synchronise. Every C element is summed in the same order whatever the thread grid, so
// results do not depend on nthreads.
//
// M == 1 (a row vector times a matrix) streams B once through the GEMV kernels instead.
#include "gemm/gemm.h"

#include <algorithm>

#include "common/parallel.h"
#include "gemm/kernels.h"

namespace rnncore {

namespace {

using gemm_detail::active_kernels;
using gemm_detail::KernelSet;

index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// C (M, N) = beta * C; beta == 0 writes zeros without reading C.
template <typename T>
void scale_c(index_t M, index_t N, T beta, T* C, index_t ldc) {
  if (beta == T(1)) return;
  for (index_t i = 0; i < M; ++i) {
    T* RNNCORE_RESTRICT c = C + i * ldc;
    if (beta == T(0)) std::fill(c, c + N, T(0));
    else
      for (index_t j = 0; j < N; ++j) c[j] *= beta;
  }
}

// Pack op(A) rows [i0, i0 + mc), columns [k0, k0 + kc) into MR-tall micro-panels:
// panel p (rows i0 + p*MR ..) at dst + p*MR*kc holds R = min(MR, rows left) rows, k-major
// (dst[k * R + i]). dst must not alias A.
template <typename T, int MR>
void pack_a_block_t(bool trans_a, const T* A, index_t lda, index_t i0, index_t mc, index_t k0, index_t kc,
                    T* RNNCORE_RESTRICT dst) {
  for (index_t ip = 0; ip < mc; ip += MR) {
    const index_t r = std::min<index_t>(MR, mc - ip);
    T* RNNCORE_RESTRICT d = dst + ip * kc;
    if (!trans_a) {  // op(A)(i, k) = A[i * lda + k]: R row streams
      const T* s = A + (i0 + ip) * lda + k0;
      if (r == MR) {
        const T* rows[MR];
        for (int i = 0; i < MR; ++i) rows[i] = s + i * lda;
        for (index_t k = 0; k < kc; ++k)
          for (int i = 0; i < MR; ++i) d[k * MR + i] = rows[i][k];
      } else {
        for (index_t k = 0; k < kc; ++k)
          for (index_t i = 0; i < r; ++i) d[k * r + i] = s[i * lda + k];
      }
    } else {  // op(A)(i, k) = A[k * lda + i]: contiguous R elements per k
      const T* s = A + k0 * lda + i0 + ip;
      if (r == MR) {
        for (index_t k = 0; k < kc; ++k)
          for (int i = 0; i < MR; ++i) d[k * MR + i] = s[k * lda + i];
      } else {
        for (index_t k = 0; k < kc; ++k)
          for (index_t i = 0; i < r; ++i) d[k * r + i] = s[k * lda + i];
      }
    }
  }
}

template <typename T>
void pack_a_block(int mr, bool trans_a, const T* A, index_t lda, index_t i0, index_t mc, index_t k0, index_t kc,
                  T* dst) {
  switch (mr) {
    case 4: pack_a_block_t<T, 4>(trans_a, A, lda, i0, mc, k0, kc, dst); break;
    case 6: pack_a_block_t<T, 6>(trans_a, A, lda, i0, mc, k0, kc, dst); break;
    case 8: pack_a_block_t<T, 8>(trans_a, A, lda, i0, mc, k0, kc, dst); break;
    default: pack_a_block_t<T, 1>(trans_a, A, lda, i0, mc, k0, kc, dst); break;
  }
}

// Pack op(B) rows [k0, k0 + kc), columns [j0, j0 + ncols) into ceil(ncols / NR)
// micro-panels, panel q at dst + q * stride: dst[k * NR + j], columns past ncols zero-filled.
// Without transpose the rows of B are read left to right across all the panels (long
// sequential runs the hardware prefetcher follows, instead of one 64-byte piece per row and
// page). dst must not alias B.
constexpr index_t kPrefetchRows = 8;

template <typename T, int NR>
void pack_b_panels_t(bool trans_b, const T* B, index_t ldb, index_t k0, index_t kc, index_t j0, index_t ncols,
                     T* RNNCORE_RESTRICT dst, index_t stride) {
  const index_t full = ncols / NR, rem = ncols - full * NR;
  if (!trans_b) {  // op(B)(k, j) = B[k * ldb + j]: contiguous rows
    for (index_t k = 0; k < kc; ++k) {
      const T* s = B + (k0 + k) * ldb + j0;
      T* d = dst + k * NR;
      // Rows are ldb apart (often several pages): fetch the row kPrefetchRows ahead.
      const T* ahead = k + kPrefetchRows < kc ? s + kPrefetchRows * ldb : s;
      for (index_t q = 0; q < full; ++q) {
        __builtin_prefetch(ahead + q * NR, 0, 3);
        for (int j = 0; j < NR; ++j) d[q * stride + j] = s[q * NR + j];
      }
      if (rem > 0) {
        for (index_t j = 0; j < rem; ++j) d[full * stride + j] = s[full * NR + j];
        for (index_t j = rem; j < NR; ++j) d[full * stride + j] = T(0);
      }
    }
    return;
  }
  // op(B)(k, j) = B[j * ldb + k]: each panel transposes NR row streams, 8 k at a time.
  for (index_t q = 0; q * NR < ncols; ++q) {
    const index_t nv = std::min<index_t>(NR, ncols - q * NR);
    const T* s = B + (j0 + q * NR) * ldb + k0;
    T* d = dst + q * stride;
    index_t k = 0;
    for (; k + 8 <= kc; k += 8) {
      for (index_t j = 0; j < nv; ++j)
        for (int kk = 0; kk < 8; ++kk) d[(k + kk) * NR + j] = s[j * ldb + k + kk];
      for (index_t j = nv; j < NR; ++j)
        for (int kk = 0; kk < 8; ++kk) d[(k + kk) * NR + j] = T(0);
    }
    for (; k < kc; ++k) {
      for (index_t j = 0; j < nv; ++j) d[k * NR + j] = s[j * ldb + k];
      for (index_t j = nv; j < NR; ++j) d[k * NR + j] = T(0);
    }
  }
}

template <typename T>
void pack_b_panels(int nr, bool trans_b, const T* B, index_t ldb, index_t k0, index_t kc, index_t j0, index_t ncols,
                   T* dst, index_t stride) {
  switch (nr) {
    case 4: pack_b_panels_t<T, 4>(trans_b, B, ldb, k0, kc, j0, ncols, dst, stride); break;
    case 8: pack_b_panels_t<T, 8>(trans_b, B, ldb, k0, kc, j0, ncols, dst, stride); break;
    case 16: pack_b_panels_t<T, 16>(trans_b, B, ldb, k0, kc, j0, ncols, dst, stride); break;
    case 32: pack_b_panels_t<T, 32>(trans_b, B, ldb, k0, kc, j0, ncols, dst, stride); break;
    default: pack_b_panels_t<T, 1>(trans_b, B, ldb, k0, kc, j0, ncols, dst, stride); break;  // nr is one of above
  }
}

template <typename T>
struct GemmArgs {
  bool trans_a, trans_b;
  index_t M, N, K;
  T alpha;
  const T* A;
  index_t lda;
  const T* B;
  index_t ldb;
  T beta;
  T* C;
  index_t ldc;
};

// B micro-panels packed at a time when each thread packs its own (about 128 KB: in L2).
constexpr index_t kPackGroup = 8;

// Thread grid tm x tn (tm * tn == team) minimising the largest per-thread share of tiles;
// ties go to more column groups (tn), which need no barriers.
void choose_grid(index_t M, index_t N, int mr, int nr, int team, int* tm, int* tn) {
  const index_t mp = ceil_div(M, mr), np = ceil_div(N, nr);
  index_t best = -1;
  *tm = 1;
  *tn = team;
  for (int a = 1; a <= team; ++a) {
    if (team % a != 0) continue;
    const int b = team / a;
    const index_t cost = ceil_div(mp, a) * ceil_div(np, b);
    if (best < 0 || cost < best) {
      best = cost;
      *tm = a;
      *tn = b;
    }
  }
}

// One thread's share of gemm (see the loop nest at the top). abuf: this thread's (MC, KC)
// A block; bbuf: the team's (KC, NC) B block, at least team * kPackGroup panels long.
// With tm > 1 every thread of the team must call this (it contains barriers); with
// tm == 1 threads are independent. Aliasing: abuf, bbuf and C are pairwise distinct.
template <typename T>
void gemm_thread(const KernelSet<T>& ks, const GemmArgs<T>& g, T* abuf, T* bbuf, int tid, int tm, int tn) {
  const int MR = ks.mr, NR = ks.nr, W = ks.w;
  const int it = tid / tn, jt = tid % tn;
  index_t m0, m1;
  split_range(g.M, tm, it, MR, &m0, &m1);
  const bool shared_b = tm > 1;
  // Panel p of the B block lives at bbuf + p * panel_stride whatever the current kc, so
  // threads in different K blocks never write into each other's panels.
  const index_t panel_stride = std::min(ks.kc, g.K) * NR;
  // When this thread's rows fit in one MC block every B panel is used right after it is
  // packed and never again: then each thread cycles through its own kPackGroup panel
  // slots (slot block `tid` of bbuf), which stay in L2, instead of the block layout.
  const bool rotate_b = !shared_b && m1 - m0 <= ks.mc;
  T* own_b = bbuf + tid * kPackGroup * panel_stride;
  for (index_t jc = 0; jc < g.N; jc += ks.nc) {
    const index_t nc = std::min(ks.nc, g.N - jc);
    index_t p0, p1;
    split_range(ceil_div(nc, NR), tn, jt, 1, &p0, &p1);
    for (index_t pc = 0; pc < g.K; pc += ks.kc) {
      const index_t kc = std::min(ks.kc, g.K - pc);
      const T beta = pc == 0 ? g.beta : T(1);
      if (shared_b) {
        index_t q0, q1;
        split_range(p1 - p0, tm, it, 1, &q0, &q1);
        if (q1 > q0) {
          const index_t j0 = (p0 + q0) * NR;
          pack_b_panels(NR, g.trans_b, g.B, g.ldb, pc, kc, jc + j0, std::min(nc, (p0 + q1) * NR) - j0,
                        bbuf + (p0 + q0) * panel_stride, panel_stride);
        }
#pragma omp barrier
      }
      for (index_t ic = m0; ic < m1; ic += ks.mc) {
        const index_t mc = std::min(ks.mc, m1 - ic);
        pack_a_block(MR, g.trans_a, g.A, g.lda, ic, mc, pc, kc, abuf);
        for (index_t p = p0; p < p1; ++p) {
          const index_t j = p * NR;
          const int nv = static_cast<int>(std::min<index_t>(NR, nc - j));
          T* bp = rotate_b ? own_b + (p - p0) % kPackGroup * panel_stride : bbuf + p * panel_stride;
          if (!shared_b && ic == m0 && (p - p0) % kPackGroup == 0) {  // pack the next group, still in L2 when used
            const index_t pe = std::min(p1, p + kPackGroup);
            pack_b_panels(NR, g.trans_b, g.B, g.ldb, pc, kc, jc + j, std::min(nc, pe * NR) - j, bp, panel_stride);
          }
          const int nvec = (nv + W - 1) / W;
          for (index_t ir = 0; ir < mc; ir += MR) {
            const int r = static_cast<int>(std::min<index_t>(MR, mc - ir));
            ks.ukernel[r - 1][nvec - 1](kc, abuf + ir * kc, 1, r, bp, NR, g.alpha, beta,
                                        g.C + (ic + ir) * g.ldc + jc + j, g.ldc, nv);
          }
        }
      }
      if (shared_b) {
#pragma omp barrier
      }
    }
  }
}

// M == 1: C row (N) = alpha * op(A) row (K) * op(B) + beta * C, columns [j0, j1).
// x: op(A)'s row, x[k] at x[k * incx] (contiguous when trans_b).
template <typename T>
void gemv_cols(const KernelSet<T>& ks, const GemmArgs<T>& g, const T* x, index_t incx, index_t j0, index_t j1) {
  if (j1 <= j0) return;
  if (!g.trans_b)
    ks.gemv_n(g.K, j1 - j0, x, incx, g.B + j0, g.ldb, g.alpha, g.beta, g.C + j0);
  else
    ks.gemv_t(g.K, j1 - j0, x, g.B + j0 * g.ldb, g.ldb, g.alpha, g.beta, g.C + j0);
}

// Below this many multiply-adds a second thread costs more than it saves.
constexpr double kMinFlopsPerThread = 2.0e5;

template <typename T>
void gemm_impl(const GemmArgs<T>& g, int nthreads) {
  const KernelSet<T>& ks = active_kernels<T>();
  const int nt = gemm_threads(g.M, g.N, g.K, nthreads);

  if (g.M == 1) {
    AlignedBuffer<T> xbuf;
    const T* x = g.A;
    index_t incx = g.trans_a ? g.lda : 1;  // op(A) (1, K): A (1, K) or A stored (K, 1)
    if (g.trans_b && incx != 1) {          // gemv_t wants a contiguous x
      xbuf.resize(g.K);
      for (index_t k = 0; k < g.K; ++k) xbuf[k] = x[k * incx];
      x = xbuf.data();
      incx = 1;
    }
    if (nt == 1) {
      gemv_cols(ks, g, x, incx, 0, g.N);
      return;
    }
#pragma omp parallel num_threads(nt)
    {
      index_t j0, j1;
      split_range(g.N, num_threads_in_region(), thread_id(), 64, &j0, &j1);
      gemv_cols(ks, g, x, incx, j0, j1);
    }
    return;
  }

  // Workspaces, allocated before any parallel region (allocation may throw).
  const index_t kc = std::min(ks.kc, g.K);
  const index_t mc = std::min(ks.mc, ceil_div(g.M, ks.mr) * ks.mr);
  const index_t nc = std::min(ks.nc, ceil_div(g.N, ks.nr) * ks.nr);
  const index_t a_stride = ceil_div(mc * kc, 16) * 16;  // keep each thread's block 64-byte aligned
  AlignedBuffer<T> abuf(a_stride * nt);
  AlignedBuffer<T> bbuf(std::max(kc * nc, nt * kPackGroup * kc * ks.nr));

  if (nt == 1) {
    gemm_thread(ks, g, abuf.data(), bbuf.data(), 0, 1, 1);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int team = num_threads_in_region(), tid = thread_id();
    int tm, tn;
    choose_grid(g.M, std::min(g.N, ks.nc), ks.mr, ks.nr, team, &tm, &tn);
    gemm_thread(ks, g, abuf.data() + tid * a_stride, bbuf.data(), tid, tm, tn);
  }
}

}  // namespace

int gemm_threads(index_t M, index_t N, index_t K, int nthreads) {
  return threads_for(static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K), kMinFlopsPerThread,
                     nthreads);
}

template <typename T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc, int nthreads) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  const GemmArgs<T> g{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  gemm_impl(g, nthreads < 1 ? 1 : nthreads);
}

// Layout of the packed op(B) (K, N): K in blocks of KC rows; block pc (rows pc..pc+kc)
// starts at data + pc * Npad (Npad = N rounded up to NR) and holds Npad / NR micro-panels
// of (kc, NR), panel p at + p * kc * NR, k-major, zero-filled past N.
template <typename T>
void PackedB<T>::reserve(index_t K, index_t N) {
  const KernelSet<T>& ks = active_kernels<T>();
  K_ = K < 0 ? 0 : K;
  N_ = N < 0 ? 0 : N;
  data_.resize(std::max<index_t>(1, K_ * ceil_div(N_, ks.nr) * ks.nr));
}

template <typename T>
void PackedB<T>::fill(bool trans_b, const T* B, index_t ldb) noexcept {
  const KernelSet<T>& ks = active_kernels<T>();
  const index_t NR = ks.nr, npad = ceil_div(N_, NR) * NR;
  for (index_t pc = 0; pc < K_; pc += ks.kc) {
    const index_t kc = std::min(ks.kc, K_ - pc);
    pack_b_panels(ks.nr, trans_b, B, ldb, pc, kc, 0, N_, data_.data() + pc * npad, kc * NR);
  }
}

// Shape: C (M, N) = A (M, K) * packed (K, N) + beta * C, serial. A is read in place (row
// stride lda) by the microkernels, so no workspace is needed: safe in a parallel region.
// For each KC block and each B micro-panel (in L1), all MR-row tiles of C are updated, so
// the packed B is streamed once per call. C must not alias A or the packed B.
template <typename T>
void gemm_packed(index_t M, const T* A, index_t lda, const PackedB<T>& B, T beta, T* C, index_t ldc) {
  const index_t K = B.rows(), N = B.cols();
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  const KernelSet<T>& ks = active_kernels<T>();
  const int MR = ks.mr, NR = ks.nr, W = ks.w;
  const index_t npanels = ceil_div(N, NR), npad = npanels * NR;
  for (index_t pc = 0; pc < K; pc += ks.kc) {
    const index_t kc = std::min(ks.kc, K - pc);
    const T b = pc == 0 ? beta : T(1);
    const T* block = B.data() + pc * npad;
    for (index_t p = 0; p < npanels; ++p) {
      const index_t j = p * NR;
      const int nv = static_cast<int>(std::min<index_t>(NR, N - j));
      const T* bp = block + p * kc * NR;
      const int nvec = (nv + W - 1) / W;
      for (index_t ir = 0; ir < M; ir += MR) {
        const int r = static_cast<int>(std::min<index_t>(MR, M - ir));
        ks.ukernel_rows[r - 1][nvec - 1](kc, A + ir * lda + pc, lda, 1, bp, NR, T(1), b, C + ir * ldc + j, ldc, nv);
      }
    }
  }
}

template void gemm<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t, const float*,
                          index_t, float, float*, index_t, int);
template void gemm<double>(bool, bool, index_t, index_t, index_t, double, const double*, index_t, const double*,
                           index_t, double, double*, index_t, int);
template class PackedB<float>;
template class PackedB<double>;
template void gemm_packed<float>(index_t, const float*, index_t, const PackedB<float>&, float, float*, index_t);
template void gemm_packed<double>(index_t, const double*, index_t, const PackedB<double>&, double, double*,
                                  index_t);

}  // namespace rnncore
