// Input projections that round the same whatever the number of rows: gates (M, N) = X (M, K) W^T,
// row for row bit-identical to the same row computed in any other call (one step, a chunk, a
// whole sequence). A stream (recurrent/stream.h) fed chunk by chunk then equals one forward
// over the concatenated chunks, bit for bit.
//
// Why it is needed: the GEMM microkernel (gemm/microkernel_body.h) splits its k loop over U
// interleaved accumulator sets when its tile has few rows (R * NVMAX < kAcc), so a row computed
// in a 1-row tile sums its products in another order than the same row in a full MR-row tile;
// gemm() also takes a GEMV path for M == 1. Within a tile of at least `exact_min_rows()` rows
// the order is that of a full tile. The rule here: every row is computed by a microkernel
// tile of at least exact_min_rows() rows (never by the GEMV):
//   rows [0, main) directly (full MR tiles, the last one at least min rows tall),
//   rows [main, M) (fewer than min rows: a short tail, or all of a small M) copied into a
//   zero-padded (min, K) block `xpad`, computed as one tile into `cpad` and copied out.
// exact_min_rows() is probed once from the kernels themselves (not read off their constants),
// so a change of tile shapes keeps the rule; tests/test_stream.py checks the property.
// Dimension letters here are the GEMM's (gemm/kernels.h): M rows, K inputs, N outputs.
#pragma once

#include "common/buffer.h"
#include "gemm/gemm.h"

namespace rnncore {

// The fewest rows of a microkernel tile whose rows round like those of a full tile (1 where
// the tile height never matters), for the process's kernel set.
template <typename T>
index_t exact_min_rows();

// Rows [0, main) computed directly, rows [main, main + tail) through the padded block.
struct ExactSplit {
  index_t main = 0, tail = 0;
};
template <typename T>
ExactSplit exact_split(index_t M);

// xpad (exact_min_rows(), K) = rows [s.main, M) of X (row stride ldx), then zero rows.
template <typename T>
void fill_exact_pad(T* xpad, const T* X, index_t ldx, index_t K, const ExactSplit& s);

// C (M, N) = X (M, K) * W, W packed (K, N) (a PackedB of W^T), serial (safe in a parallel
// region). xpad: filled by fill_exact_pad for this split (unused when s.tail == 0);
// cpad: (exact_min_rows(), N) scratch. C must not alias X, W, xpad or cpad.
template <typename T>
void project_packed(const ExactSplit& s, const T* X, index_t ldx, const PackedB<T>& W, T* C, index_t ldc,
                    const T* xpad, T* cpad);

// Memory a whole-sequence projection keeps from call to call.
template <typename T>
struct ProjectionScratch {
  PackedB<T> w;
  AlignedBuffer<T> xpad, cpad;
};

// C (M, N) = X (M, K) W^T with W stored (N, K), on up to nthreads threads, by the rule above:
// gemm() alone when its own tiles already obey it (the usual large shapes), else W packed into
// s.w and the rows done by project_packed (gemm() for the bulk of a large M).
template <typename T>
void project_exact(index_t M, const T* X, index_t K, const T* W, index_t N, T* C, index_t ldc, int nthreads,
                   ProjectionScratch<T>& s);

}  // namespace rnncore
