// rnncore: the engine's only matrix product.
//
//   C (M, N) = alpha * op(A) (M, K) * op(B) (K, N) + beta * C
//
// Row-major. op(A) = A stored (M, K) with row stride lda, or A^T when trans_a (A stored (K, M)).
// op(B) = B stored (K, N) with row stride ldb, or B^T when trans_b (B stored (N, K)).
// beta == 0 writes C without reading it (NaN/Inf already in C does not propagate).
// C must not alias A or B. nthreads >= 1; with nthreads == 1 the call is serial in the
// calling thread, so it is safe inside an OpenMP parallel region.
// Instantiated for float (the fast path) and double (exact gradient checks).
#pragma once

#include "common/buffer.h"
#include "common/defs.h"

namespace rnncore {

template <typename T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc, int nthreads);

// The threads gemm(M, N, K, ..., nthreads) runs on: fewer than nthreads when the product is
// too small for each thread to pay for itself.
int gemm_threads(index_t M, index_t N, index_t K, int nthreads);

// op(B) (K, N) packed once for many products with different left operands: the recurrent
// weights, reused at every time step. The packed layout is private to the GEMM.
template <typename T>
class PackedB {
 public:
  void pack(bool trans_b, index_t K, index_t N, const T* B, index_t ldb) {
    reserve(K, N);
    fill(trans_b, B, ldb);
  }
  // The same in two steps: reserve() allocates (and may throw std::bad_alloc); fill() packs
  // op(B) of the reserved shape without allocating or throwing, so it can run inside a
  // parallel region (e.g. on the thread that will use the packed weights).
  void reserve(index_t K, index_t N);
  void fill(bool trans_b, const T* B, index_t ldb) noexcept;
  index_t rows() const { return K_; }  // K
  index_t cols() const { return N_; }  // N
  const T* data() const { return data_.data(); }

 private:
  index_t K_ = 0, N_ = 0;
  AlignedBuffer<T> data_;
};

// C (M, N) = A (M, K) * packed (K, N) + beta * C; serial, for use inside a parallel region.
template <typename T>
void gemm_packed(index_t M, const T* A, index_t lda, const PackedB<T>& B, T beta, T* C, index_t ldc);

}  // namespace rnncore
