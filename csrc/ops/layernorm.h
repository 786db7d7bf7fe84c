// Layer normalisation over the last C features of each row, as torch.nn.LayerNorm.
//
// Shape letters: N rows (every leading dimension flattened), C normalised features
// (the product of normalized_shape).
#pragma once

#include "common/defs.h"

namespace rnncore {

// y: (N, C) written, y = (x - mean) * rstd * gamma + beta.
// mean, rstd: (N) written, saved for backward (rstd = 1 / sqrt(biased variance + eps)).
// x: (N, C). gamma, beta: (C) or null (no elementwise affine: gamma = 1, beta = 0).
// y must not alias x.
template <typename T>
void layernorm_forward(T* y, T* mean, T* rstd, const T* x, const T* gamma, const T* beta, T eps, index_t N, index_t C,
                       int nthreads);

// dx: (N, C) written (added to when accumulate_dx). dgamma, dbeta: (C) *added to*, or null.
// dy: (N, C) gradient of y. x, mean, rstd, gamma: what the forward used and saved.
// Deterministic for any thread count.
template <typename T>
void layernorm_backward(T* dx, bool accumulate_dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* mean,
                        const T* rstd, const T* gamma, index_t N, index_t C, int nthreads);

}  // namespace rnncore
