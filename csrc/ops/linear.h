// Fully connected layer y = x W^T + b, PyTorch's layout (W is (O, I)).
//
// Shape letters: N rows (every leading dimension flattened), I in_features, O out_features.
#pragma once

#include "common/defs.h"

namespace rnncore {

// y: (N, O) written. x: (N, I). w: (O, I). b: (O) or null. y must not alias x or w.
template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* b, index_t N, index_t I, index_t O, int nthreads);

// dx: (N, I) written (added to when accumulate_dx), or null to skip the input gradient.
// dw: (O, I) *added to*. db: (O) *added to*, or null (no bias).
// dy: (N, O) gradient of y. x, w: what the forward used.
template <typename T>
void linear_backward(T* dx, bool accumulate_dx, T* dw, T* db, const T* dy, const T* x, const T* w, index_t N,
                     index_t I, index_t O, int nthreads);

}  // namespace rnncore
