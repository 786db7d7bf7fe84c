// Mean squared error, forward and backward fused: the loss and its gradient with respect to the
// prediction in one sweep (PyTorch's F.mse_loss, plus an optional weight per position or per
// element: a 0/1 mask of valid steps of a ragged batch).
//
// Shape letters: N positions (every leading dimension flattened: (T, B, F) -> N = T*B rows of F),
// F features per position.
#pragma once

#include "common/defs.h"
#include "ops/cross_entropy.h"  // Reduction

namespace rnncore {

// What a call found. Nothing is written when bad_weight or nonfinite_input is set.
struct MSEResult {
  double loss = 0;             // the reduced loss (Mean, Sum); 0 for Reduction::None
  double total_weight = 0;     // the mean's denominator: sum of the weights of every element
  index_t bad_weight = -1;     // first weight that is negative, NaN or infinite (flat index into the weights)
  index_t nonfinite_input = -1;   // first element (flat) where the input is NaN or infinite
  index_t nonfinite_target = -1;  // first element (flat) where the target is NaN or infinite
  bool overflow = false;       // every input is finite, but a squared error, the sum or a gradient is not
};

// losses: (N, F) written: w * (input - target)^2 per element, or null (not needed for Mean/Sum).
// dinput: (N, F) written: d(reduced loss)/d(input) (Reduction::None: of each element's own loss),
//         or null.
// input, target: (N, F). weights: (N) one weight per position (weight_per_row), or (N, F) one
//   per element, each >= 0 and finite; or null for all 1.
// Mean divides by the total weight over all elements (a position weight counts F times: PyTorch's
// mean over the unmasked elements); when it is 0 the loss is 0 and the gradient zero.
// Inputs, targets and weights are checked before anything is written (a NaN in a masked-out
// position is an error too: padding must be finite).
// Deterministic for any thread count (element losses are summed per row in row order, in double).
template <typename T>
MSEResult mse_fused(T* losses, T* dinput, const T* input, const T* target, const T* weights, bool weight_per_row,
                    Reduction reduction, index_t N, index_t F, int nthreads);

}  // namespace rnncore
