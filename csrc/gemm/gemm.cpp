// Portable reference GEMM (to be replaced by the packed SIMD GEMM; the interface stays).
#include "gemm/gemm.h"

#include <algorithm>
#include <vector>

#include "common/parallel.h"

namespace rnncore {

namespace {

// C[rows m0..m1) = alpha * op(A) op(B) + beta * C with op(B) given as a row-major (K, N) panel.
template <typename T>
void gemm_rows(bool trans_a, index_t m0, index_t m1, index_t N, index_t K, T alpha, const T* A, index_t lda,
               const T* Bkn, index_t ldb, T beta, T* C, index_t ldc) {
  for (index_t i = m0; i < m1; ++i) {
    T* RNNCORE_RESTRICT c = C + i * ldc;
    if (beta == T(0)) {
      for (index_t j = 0; j < N; ++j) c[j] = T(0);
    } else if (beta != T(1)) {
      for (index_t j = 0; j < N; ++j) c[j] *= beta;
    }
    for (index_t k = 0; k < K; ++k) {
      const T a = alpha * (trans_a ? A[k * lda + i] : A[i * lda + k]);
      const T* RNNCORE_RESTRICT b = Bkn + k * ldb;
      for (index_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}

}  // namespace

template <typename T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc, int nthreads) {
  if (M <= 0 || N <= 0) return;
  std::vector<T> bt;
  const T* Bkn = B;
  index_t ldbk = ldb;
  if (trans_b) {
    bt.resize(static_cast<std::size_t>(K * N));
    for (index_t n = 0; n < N; ++n)
      for (index_t k = 0; k < K; ++k) bt[k * N + n] = B[n * ldb + k];
    Bkn = bt.data();
    ldbk = N;
  }
  if (nthreads <= 1 || M < 2) {
    gemm_rows(trans_a, 0, M, N, K, alpha, A, lda, Bkn, ldbk, beta, C, ldc);
    return;
  }
#pragma omp parallel num_threads(nthreads)
  {
    index_t m0, m1;
    split_range(M, num_threads_in_region(), thread_id(), 1, &m0, &m1);
    gemm_rows(trans_a, m0, m1, N, K, alpha, A, lda, Bkn, ldbk, beta, C, ldc);
  }
}

template <typename T>
void PackedB<T>::pack(bool trans_b, index_t K, index_t N, const T* B, index_t ldb) {
  K_ = K;
  N_ = N;
  data_.resize(K * N);
  for (index_t k = 0; k < K; ++k)
    for (index_t n = 0; n < N; ++n) data_[k * N + n] = trans_b ? B[n * ldb + k] : B[k * ldb + n];
}

template <typename T>
void gemm_packed(index_t M, const T* A, index_t lda, const PackedB<T>& B, T beta, T* C, index_t ldc) {
  gemm_rows(false, 0, M, B.cols(), B.rows(), T(1), A, lda, B.data(), B.cols(), beta, C, ldc);
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
