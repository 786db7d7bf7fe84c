// Softmax + cross-entropy fused: the loss and its gradient with respect to the logits in one
// sweep over each row, with no separate probability array (PyTorch's F.cross_entropy with
// class-index targets and ignore_index, plus an optional per-row weight mask).
//
// Shape letters: N rows (every leading dimension flattened), V classes (the vocabulary).
#pragma once

#include <cstdint>

#include "common/defs.h"

namespace rnncore {

enum class Reduction { None, Mean, Sum };

// What a call found. Nothing is written when bad_target or bad_weight is set.
struct CrossEntropyResult {
  double loss = 0;          // the reduced loss (Mean, Sum); 0 for Reduction::None
  double total_weight = 0;  // sum of the counted rows' weights: the mean's denominator
  index_t counted = 0;      // rows that count (target != ignore_index and weight != 0)
  index_t bad_target = -1;  // first row of weight != 0 whose target is outside [0, V) and not ignore_index
  index_t bad_weight = -1;  // first row whose weight is negative, NaN or infinite
  index_t nonfinite = -1;   // first counted row whose loss is NaN or infinite
  index_t overflow = -1;    // first counted row whose loss is finite but weight * loss is not
  bool total_overflow = false;  // the total weight of the counted rows is not finite
  bool sum_overflow = false;    // every row's weighted loss is finite, their sum (or mean) is not
};

// losses: (N) written: each row's weighted loss w[n] * (logsumexp(logits[n]) - logits[n, t]),
//         0 for rows that do not count.
// dlogits: (N, V) written: d(reduced loss)/d(logits) (Reduction::None: each row's own loss),
//          zero rows for rows that do not count; or null.
// probs: (N, V) written: softmax of every row (counted or not); or null.
// logits: (N, V). targets: (N) int64 class indices or ignore_index.
// weights: (N) per-row weights >= 0 (a 0/1 mask of valid steps), or null for all 1.
// Mean divides by the total weight of the counted rows (PyTorch's rule); when no row counts
// the loss is 0 and the gradient is zero (PyTorch would give NaN).
// Targets and weights are checked before anything is written. A NaN or infinite loss is
// reported in `nonfinite`, a finite one that overflows once weighted (or summed) in
// `overflow`, `total_overflow` or `sum_overflow` (the outputs are then written but meaningless).
// Deterministic for any thread count (row losses are summed in row order in double).
template <typename T>
CrossEntropyResult cross_entropy_fused(T* losses, T* dlogits, T* probs, const T* logits, const std::int64_t* targets,
                                       const T* weights, std::int64_t ignore_index, Reduction reduction, index_t N,
                                       index_t V, int nthreads);

}  // namespace rnncore
