// rnncore: activations over arrays, vectorised for float32, exact for float64.
//
// float32 (16 lanes with AVX-512F or 8 with AVX2+FMA as the process's ISA allows, common/cpu.h,
// the two bit-identical lane by lane; a portable scalar loop otherwise, same constants):
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
#include "common/cpu.h"
#include "common/defs.h"

namespace rnncore {

void vsigmoid(float* y, const float* x, index_t n);
void vtanh(float* y, const float* x, index_t n);
void vexp(float* y, const float* x, index_t n);
const char* vmath_kernel();  // "avx512", "avx2" or "generic"

// The float32 array activations of one instruction set, for tests and benchmarks that run
// every path the host supports in one process (the functions above use the process's).
struct VmathKernels {
  void (*exp)(float* y, const float* x, index_t n);
  void (*sigmoid)(float* y, const float* x, index_t n);
  void (*tanh)(float* y, const float* x, index_t n);
  const char* name;
};
const VmathKernels* vmath_kernels(Isa isa);  // null when this build or this CPU cannot run `isa`

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
