// rnncore: activations over arrays, vectorised for float32, exact for float64.
//
// float32 (AVX2+FMA when the CPU has it, chosen once at run time; a portable loop otherwise):
//   exp:     Cody-Waite reduction by ln 2 and a degree-7 Taylor polynomial on |r| <= ln2/2;
//            max relative error 2e-7 on [-87.3, 88] (inputs are clamped to that range).
//   sigmoid: 1 / (1 + exp(-x)); max absolute error 1e-7, relative 3e-7.
//   tanh:    x * P(x^2) (degree-5 least-squares fit) for |x| < 0.5, else
//            sign(x) * (1 - 2 / (exp(2|x|) + 1)); max absolute error 2e-7, relative 4e-7.
//   NaN in gives NaN out. These bounds are checked against float64 by tests/test_vmath.py.
// float64 calls the C library per element (exact to about 1 ulp): it is the path gradient
// checks run on, where an approximation would swamp the finite differences.
//
// All functions take (out, in, n); out may equal in (in place).
#pragma once

#include <cmath>

#include "common/activations.h"
#include "common/defs.h"

namespace rnncore {

void vsigmoid(float* y, const float* x, index_t n);
void vtanh(float* y, const float* x, index_t n);
void vexp(float* y, const float* x, index_t n);
const char* vmath_kernel();  // "avx2" or "generic"

// Fused per-step cell updates for float32: one pass over the units, every gate in registers,
// with the same activations and the same order of additions as the cells' unfused loops (see
// cells/lstm.h and cells/gru.h for the equations and the arguments). Pointers are at the
// slice's first unit; gate k of `gates` and `bias` is k * H further on, of `hg` k * hs.
// `bias` and `b_hn` may be null. Each returns false, doing nothing, when the portable kernels
// are in use; the cell then runs its unfused loops.
bool lstm_forward_fused(float* gates, index_t H, const float* hg, index_t hs, const float* bias,
                        const float* c_prev, float* c, float* h, index_t n);
bool gru_forward_fused(float* gates, index_t H, const float* hg, index_t hs, const float* bias, const float* b_hn,
                       float* hn, const float* h_prev, float* h, index_t n);
// The backward steps likewise (`dy` may be null); same products in the same order as the loops.
bool lstm_backward_fused(float* gates, index_t H, const float* c_prev, const float* c, const float* dh_carry,
                         const float* dy, float* dc, index_t n);
bool gru_backward_fused(float* gates, index_t H, float* hn, const float* h_prev, float* dh_carry, const float* dy,
                        index_t n);

inline void vsigmoid(double* y, const double* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = sigmoid(x[i]);
}
inline void vtanh(double* y, const double* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}
inline void vexp(double* y, const double* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

}  // namespace rnncore
