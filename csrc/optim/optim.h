// Fused optimizer updates and gradient-norm reductions over one parameter array.
//
// Letters: N elements of one parameter array (any shape, flattened; row-major, contiguous).
//
// Each *_step updates one parameter in place from its gradient and its state arrays in a
// single pass over memory (one read of p, g and the state, one write of p and the state):
// the Python optimizer loops over parameters, the kernel over elements. The update rules are
// PyTorch's single-tensor ones (torch/optim/{sgd,adam,rmsprop,adagrad}.py), operation for
// operation, so a float64 trajectory matches PyTorch's to rounding. Hyper-parameters come
// in as double and are rounded once to T; arithmetic runs in T.
//
// Aliasing: p, g and every state array are distinct, non-overlapping (the bindings check);
// g is read only. Every array has N elements.
//
// Threads: elements are split into contiguous chunks, one per thread; the result does not
// depend on the thread count. Small arrays run on the calling thread.
#pragma once

#include <vector>

#include "common/defs.h"

namespace rnncore {

// -- SGD ----------------------------------------------------------------------------------
//   g' = (maximize ? -g : g) + weight_decay * p
//   buf = first ? g' : momentum * buf + (1 - dampening) * g'        (when momentum != 0)
//   d   = nesterov ? g' + momentum * buf : buf                       (g' when momentum == 0)
//   p  -= lr * d
struct SGDOptions {
  double lr = 1e-3, momentum = 0.0, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false, maximize = false;
  bool first = false;  // the momentum buffer is uninitialised: set it to g'
};

// p: (N) read-write. buf: (N) momentum buffer, read-write (null when momentum == 0). g: (N).
template <typename T>
void sgd_step(T* p, T* buf, const T* g, index_t N, const SGDOptions& o, int nthreads);

// -- Adam / AdamW ---------------------------------------------------------------------------
//   step t counts this update (t >= 1)
//   AdamW: p *= 1 - lr * weight_decay          Adam: g' = g + weight_decay * p
//   m = lerp(m, g', 1 - beta1);  v = beta2 * v + (1 - beta2) * g' * g'
//   amsgrad: vmax = max(vmax, v), used in place of v below
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
  bool decoupled = false;  // AdamW
  bool amsgrad = false, maximize = false;
  std::int64_t step = 1;
};

// p: (N) read-write. m, v: (N) first and second moments, read-write. vmax: (N) running max of
// v, read-write (null unless amsgrad). g: (N).
template <typename T>
void adam_step(T* p, T* m, T* v, T* vmax, const T* g, index_t N, const AdamOptions& o, int nthreads);

// -- RMSprop --------------------------------------------------------------------------------
//   g' = (maximize ? -g : g) + weight_decay * p
//   sq = alpha * sq + (1 - alpha) * g' * g'
//   centered: ga = lerp(ga, g', 1 - alpha); avg = sqrt(sq - ga * ga) + eps, else sqrt(sq) + eps
//   momentum > 0: buf = momentum * buf + g' / avg; p -= lr * buf, else p -= lr * g' / avg
struct RMSpropOptions {
  double lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
  bool centered = false, maximize = false;
};

// p: (N) read-write. sq: (N) mean square, read-write. ga: (N) mean gradient, read-write (null
// unless centered). buf: (N) momentum buffer, read-write (null unless momentum > 0). g: (N).
template <typename T>
void rmsprop_step(T* p, T* sq, T* ga, T* buf, const T* g, index_t N, const RMSpropOptions& o, int nthreads);

// -- Adagrad --------------------------------------------------------------------------------
//   g' = (maximize ? -g : g) + weight_decay * p
//   clr = lr / (1 + (t - 1) * lr_decay)
//   sum += g' * g';  p -= clr * g' / (sqrt(sum) + eps)
struct AdagradOptions {
  double lr = 1e-2, lr_decay = 0.0, weight_decay = 0.0, eps = 1e-10;
  bool maximize = false;
  std::int64_t step = 1;
};

// p: (N) read-write. sum: (N) accumulated squares, read-write. g: (N).
template <typename T>
void adagrad_step(T* p, T* sum, const T* g, index_t N, const AdagradOptions& o, int nthreads);

// -- Norms and clipping ---------------------------------------------------------------------
// The power sum of x's absolute values, accumulated in double: sum |x|^p for a finite p > 0
// (p = 1 and p = 2 have fast paths), or max |x| when p is +inf. NaN anywhere gives NaN.
// The summation order is fixed (blocks of a set size, then the blocks in order), so the
// result does not depend on the thread count. x: (N).
template <typename T>
double norm_power_sum(const T* x, index_t N, double p, int nthreads);

// One array of a reduction over several: N elements of float64 (f64) or float32.
struct ArraySpan {
  const void* data;
  index_t N;
  bool f64;
};

// norm_power_sum over all the arrays together: the per-array results are combined in list
// order (added, or their max for p = inf). NaN anywhere gives NaN.
double norm_power_sum(const std::vector<ArraySpan>& arrays, double p, int nthreads);

// x *= scale, in place. x: (N).
template <typename T>
void scale_inplace(T* x, index_t N, double scale, int nthreads);

// x = min(max(x, lo), hi), in place; NaN stays NaN. x: (N).
template <typename T>
void clamp_inplace(T* x, index_t N, double lo, double hi, int nthreads);

// One array of an in-place operation over several: N elements of float64 (f64) or float32.
struct MutableArraySpan {
  void* data;
  index_t N;
  bool f64;
};

// scale_inplace / clamp_inplace applied to every array of the list, in list order (the
// gradient clipping of clip_grad_norm_ / clip_grad_value_). No two arrays may overlap.
void scale_inplace(const std::vector<MutableArraySpan>& arrays, double scale, int nthreads);
void clamp_inplace(const std::vector<MutableArraySpan>& arrays, double lo, double hi, int nthreads);

}  // namespace rnncore
