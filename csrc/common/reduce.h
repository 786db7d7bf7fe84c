// rnncore: column sums (bias gradients), shared by the linear and recurrent kernels.
#pragma once

#include <algorithm>

#include "common/parallel.h"

namespace rnncore {

// out (cols) += sum over the rows of a (rows, cols) with row stride lda.
// Deterministic for any thread count: threads own column slices and add rows in order.
// Small sums run on the calling thread only.
template <typename T>
void add_column_sums(T* out, const T* a, index_t rows, index_t cols, index_t lda, int nthreads) {
  const index_t by_size = rows * cols < (1 << 15) ? 1 : nthreads;
  const int nt = static_cast<int>(std::max<index_t>(1, std::min<index_t>(by_size, cols / 16)));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    index_t c0, c1;
    split_range(cols, num_threads_in_region(), thread_id(), 16, &c0, &c1);
    for (index_t r = 0; r < rows; ++r) {
      const T* RNNCORE_RESTRICT row = a + r * lda;
      for (index_t c = c0; c < c1; ++c) out[c] += row[c];
    }
  }
}

}  // namespace rnncore
