// Fully connected layer: forward and backward side by side, all products through gemm().
#include "ops/linear.h"

#include <algorithm>

#include "common/parallel.h"
#include "common/reduce.h"
#include "gemm/gemm.h"

namespace rnncore {

namespace {

// Multiply-adds a thread should have, to pay for waking it.
constexpr double kMinPerThread = 1 << 15;

}  // namespace

template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, index_t N, index_t I, index_t O, int nthreads) {
  if (N <= 0 || O <= 0) return;
  nthreads = threads_for(double(N * I) * O, kMinPerThread, nthreads);
  T beta = T(0);
  if (b != nullptr) {
    // y = b broadcast over rows, then the product adds to it.
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (index_t n = 0; n < N; ++n) std::copy(b, b + O, y + n * O);
    beta = T(1);
  }
  // y (N, O) += x (N, I) w^T (I, O)
  gemm<T>(false, true, N, O, I, T(1), x, I, w, I, beta, y, O, nthreads);
}

template <typename T>
void linear_backward(T* dx, bool accumulate_dx, T* dw, T* db, const T* dy, const T* x, const T* w, index_t N,
                     index_t I, index_t O, int nthreads) {
  nthreads = threads_for(double(N * I) * O, kMinPerThread, nthreads);
  // forward: y = x w^T + b
  // dw (O, I) += dy^T (O, N) x (N, I)
  gemm<T>(true, false, O, I, N, T(1), dy, O, x, I, T(1), dw, I, nthreads);
  // db (O) += sum over rows of dy
  if (db != nullptr) add_column_sums(db, dy, N, O, O, nthreads);
  // dx (N, I) = dy (N, O) w (O, I)
  if (dx != nullptr) gemm<T>(false, false, N, I, O, T(1), dy, O, w, I, accumulate_dx ? T(1) : T(0), dx, I, nthreads);
}

#define RNNCORE_INSTANTIATE(T)                                                                                   \
  template void linear_forward<T>(T*, const T*, const T*, const T*, index_t, index_t, index_t, int);             \
  template void linear_backward<T>(T*, bool, T*, T*, const T*, const T*, const T*, index_t, index_t, index_t, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
