// Fused optimizer updates and gradient-norm reductions (see optim.h for the rules and shapes).
//
// Every kernel is one pass over its arrays. The loop bodies are branch-free apart from
// loop-invariant flags (which the compiler unswitches), so they vectorise; nothing in them
// can throw, so running them inside an OpenMP region is safe.
#include "optim/optim.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "common/parallel.h"

namespace rnncore {

namespace {

// Elements per thread below which another thread costs more than it saves.
constexpr double kMinPerThread = 1 << 15;
// Block of a reduction: partial sums are taken per block, then added in block order.
constexpr index_t kReduceBlock = index_t(1) << 13;
// Chunk boundaries fall on a multiple of this (a cache line of doubles or floats).
constexpr index_t kAlign = 16;

// Run body(begin, end) over [0, N) split into one contiguous chunk per thread. `body` must
// not throw (it runs inside an OpenMP region).
template <typename F>
void for_chunks(index_t N, int nthreads, const F& body) {
  const int nt = threads_for(double(N), kMinPerThread, nthreads);
  if (nt <= 1) {
    body(index_t(0), N);
    return;
  }
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
  {
    index_t b, e;
    split_range(N, num_threads_in_region(), thread_id(), kAlign, &b, &e);
    if (b < e) body(b, e);
  }
#else
  body(index_t(0), N);
#endif
}

// torch.lerp's formula: a + w * (b - a) for w < 0.5 (kLow), else b - (b - a) * (1 - w).
template <bool kLow, typename T>
RNNCORE_INLINE T lerp(T a, T b, T w, T one_minus_w) {
  if constexpr (kLow) return a + w * (b - a);
  else return b - (b - a) * one_minus_w;
}

// torch.maximum: the larger, NaN if either is NaN. Branch-free (compiles to a blend).
template <typename T>
RNNCORE_INLINE T maximum(T a, T b) {
  const T m = a > b ? a : b;
  return (a != a) ? a : ((b != b) ? b : m);
}

// Call f(std::bool_constant<b>{}...) with the run-time flags as compile-time constants, so the
// loop inside f is compiled once per combination with no branch in its body (it vectorises).
template <typename F>
void with_flags(const F& f) {
  f();
}
template <typename F, typename... Rest>
void with_flags(const F& f, bool flag, Rest... rest) {
  if (flag) with_flags([&](auto... c) { f(std::true_type{}, c...); }, rest...);
  else with_flags([&](auto... c) { f(std::false_type{}, c...); }, rest...);
}

}  // namespace

// Each kernel below is a loop over [b, e) in a function of its own, with restrict pointer
// parameters and its scalars by value: GCC honours restrict only on parameters, and only then
// proves the stores cannot change the scalars, which the loop needs to vectorise.

// -- SGD ----------------------------------------------------------------------------------

namespace {

template <typename T>
struct SGDScalars {
  T lr, wd, mom, keep, sign;
};

template <typename T, bool kDecay, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_range(T* RNNCORE_RESTRICT p, T* RNNCORE_RESTRICT buf, const T* RNNCORE_RESTRICT g, index_t b, index_t e,
               const SGDScalars<T> s) {
  const T lr = s.lr, wd = s.wd, mom = s.mom, keep = s.keep, sign = s.sign;
  for (index_t i = b; i < e; ++i) {
    T d = sign * g[i];
    if constexpr (kDecay) d = d + wd * p[i];  // grad.add(param, alpha=weight_decay)
    if constexpr (kMomentum) {
      T m;
      if constexpr (kFirst) m = d;  // buf = grad.clone()
      else m = buf[i] * mom + keep * d;  // buf.mul_(momentum).add_(grad, alpha=1-dampening)
      buf[i] = m;
      if constexpr (kNesterov) d = d + mom * m;  // grad.add(buf, alpha=momentum)
      else d = m;
    }
    p[i] = p[i] + (-lr) * d;  // param.add_(grad, alpha=-lr)
  }
}

}  // namespace

template <typename T>
void sgd_step(T* p, T* buf, const T* g, index_t N, const SGDOptions& o, int nthreads) {
  const SGDScalars<T> s{T(o.lr), T(o.weight_decay), T(o.momentum), T(1.0 - o.dampening),
                        o.maximize ? T(-1) : T(1)};
  const bool momentum = o.momentum != 0.0 && buf != nullptr;
  with_flags(
      [&](auto kDecay, auto kMomentum, auto kFirst, auto kNesterov) {
        for_chunks(N, nthreads, [&](index_t b, index_t e) {
          sgd_range<T, kDecay, kMomentum, kFirst, kNesterov>(p, buf, g, b, e, s);
        });
      },
      o.weight_decay != 0.0, momentum, momentum && o.first, momentum && o.nesterov);
}

// -- Adam / AdamW ---------------------------------------------------------------------------

namespace {

template <typename T>
struct AdamScalars {
  T step_size, bc2_sqrt, eps, wd, shrink, w1, w1c, b2, c2, sign;
};

template <typename T, bool kDecay, bool kDecoupled, bool kAms, bool kLow>
void adam_range(T* RNNCORE_RESTRICT p, T* RNNCORE_RESTRICT m, T* RNNCORE_RESTRICT v, T* RNNCORE_RESTRICT vmax,
                const T* RNNCORE_RESTRICT g, index_t b, index_t e, const AdamScalars<T> s) {
  const T step_size = s.step_size, bc2_sqrt = s.bc2_sqrt, eps = s.eps, wd = s.wd, shrink = s.shrink;
  const T w1 = s.w1, w1c = s.w1c, b2 = s.b2, c2 = s.c2, sign = s.sign;
  for (index_t i = b; i < e; ++i) {
    T gi = sign * g[i];
    T pi = p[i];
    if constexpr (kDecay && kDecoupled) pi = pi * shrink;    // param.mul_(1 - lr * weight_decay)
    if constexpr (kDecay && !kDecoupled) gi = gi + wd * pi;  // grad.add(param, alpha=weight_decay)
    const T mi = lerp<kLow>(m[i], gi, w1, w1c);  // exp_avg.lerp_(grad, 1 - beta1)
    const T vi = v[i] * b2 + c2 * gi * gi;      // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    m[i] = mi;
    v[i] = vi;
    T sq = vi;
    if constexpr (kAms) {
      sq = maximum(vmax[i], vi);  // torch.maximum(max_exp_avg_sq, exp_avg_sq)
      vmax[i] = sq;
    }
    const T denom = std::sqrt(sq) / bc2_sqrt + eps;  // (v.sqrt() / bias_correction2_sqrt).add_(eps)
    p[i] = pi + (-step_size) * (mi / denom);         // param.addcdiv_(exp_avg, denom, value=-step_size)
  }
}

}  // namespace

template <typename T>
void adam_step(T* p, T* m, T* v, T* vmax, const T* g, index_t N, const AdamOptions& o, int nthreads) {
  // Scalars exactly as PyTorch forms them in Python (double), then rounded once to T.
  const double t = static_cast<double>(o.step);
  const double bias_correction1 = 1.0 - std::pow(o.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(o.beta2, t);
  const AdamScalars<T> s{T(o.lr / bias_correction1), T(std::pow(bias_correction2, 0.5)), T(o.eps),
                         T(o.weight_decay),         T(1.0 - o.lr * o.weight_decay),      T(1.0 - o.beta1),
                         T(1.0 - (1.0 - o.beta1)),  T(o.beta2),                          T(1.0 - o.beta2),
                         o.maximize ? T(-1) : T(1)};
  with_flags(
      [&](auto kDecay, auto kDecoupled, auto kAms, auto kLow) {
        for_chunks(N, nthreads, [&](index_t b, index_t e) {
          adam_range<T, kDecay, kDecoupled, kAms, kLow>(p, m, v, vmax, g, b, e, s);
        });
      },
      o.weight_decay != 0.0, o.decoupled, o.amsgrad && vmax != nullptr, (1.0 - o.beta1) < 0.5);
}

// -- RMSprop --------------------------------------------------------------------------------

namespace {

template <typename T>
struct RMSpropScalars {
  T lr, alpha, c, cc, eps, wd, mom, sign;
};

template <typename T, bool kDecay, bool kCentered, bool kMomentum, bool kLow>
void rmsprop_range(T* RNNCORE_RESTRICT p, T* RNNCORE_RESTRICT sq, T* RNNCORE_RESTRICT ga, T* RNNCORE_RESTRICT buf,
                   const T* RNNCORE_RESTRICT g, index_t b, index_t e, const RMSpropScalars<T> s) {
  const T lr = s.lr, alpha = s.alpha, c = s.c, cc = s.cc, eps = s.eps, wd = s.wd, mom = s.mom, sign = s.sign;
  for (index_t i = b; i < e; ++i) {
    T gi = sign * g[i];
    if constexpr (kDecay) gi = gi + wd * p[i];
    const T si = sq[i] * alpha + c * gi * gi;  // square_avg.mul_(alpha).addcmul_(grad, grad, 1 - alpha)
    sq[i] = si;
    T avg;
    if constexpr (kCentered) {
      const T a = lerp<kLow>(ga[i], gi, c, cc);  // grad_avg.lerp_(grad, 1 - alpha)
      ga[i] = a;
      avg = std::sqrt(si + T(-1) * a * a);  // square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
    } else {
      avg = std::sqrt(si);
    }
    avg = avg + eps;
    if constexpr (kMomentum) {
      const T bi = buf[i] * mom + gi / avg;  // buf.mul_(momentum).addcdiv_(grad, avg)
      buf[i] = bi;
      p[i] = p[i] + (-lr) * bi;  // param.add_(buf, alpha=-lr)
    } else {
      p[i] = p[i] + (-lr) * (gi / avg);  // param.addcdiv_(grad, avg, value=-lr)
    }
  }
}

}  // namespace

template <typename T>
void rmsprop_step(T* p, T* sq, T* ga, T* buf, const T* g, index_t N, const RMSpropOptions& o, int nthreads) {
  const RMSpropScalars<T> s{T(o.lr),  T(o.alpha),        T(1.0 - o.alpha), T(1.0 - (1.0 - o.alpha)),
                            T(o.eps), T(o.weight_decay), T(o.momentum),    o.maximize ? T(-1) : T(1)};
  with_flags(
      [&](auto kDecay, auto kCentered, auto kMomentum, auto kLow) {
        for_chunks(N, nthreads, [&](index_t b, index_t e) {
          rmsprop_range<T, kDecay, kCentered, kMomentum, kLow>(p, sq, ga, buf, g, b, e, s);
        });
      },
      o.weight_decay != 0.0, o.centered && ga != nullptr, o.momentum > 0.0 && buf != nullptr, (1.0 - o.alpha) < 0.5);
}

// -- Adagrad --------------------------------------------------------------------------------

namespace {

template <typename T>
struct AdagradScalars {
  T clr, eps, wd, sign;
};

template <typename T, bool kDecay>
void adagrad_range(T* RNNCORE_RESTRICT p, T* RNNCORE_RESTRICT sum, const T* RNNCORE_RESTRICT g, index_t b, index_t e,
                   const AdagradScalars<T> s) {
  const T clr = s.clr, eps = s.eps, wd = s.wd, sign = s.sign;
  for (index_t i = b; i < e; ++i) {
    T gi = sign * g[i];
    if constexpr (kDecay) gi = gi + wd * p[i];
    const T si = sum[i] + T(1) * gi * gi;  // state_sum.addcmul_(grad, grad, value=1)
    sum[i] = si;
    const T std_ = std::sqrt(si) + eps;   // state_sum.sqrt().add_(eps)
    p[i] = p[i] + (-clr) * (gi / std_);  // param.addcdiv_(grad, std, value=-clr)
  }
}

}  // namespace

template <typename T>
void adagrad_step(T* p, T* sum, const T* g, index_t N, const AdagradOptions& o, int nthreads) {
  const AdagradScalars<T> s{T(o.lr / (1.0 + static_cast<double>(o.step - 1) * o.lr_decay)), T(o.eps),
                            T(o.weight_decay), o.maximize ? T(-1) : T(1)};
  with_flags(
      [&](auto kDecay) {
        for_chunks(N, nthreads, [&](index_t b, index_t e) { adagrad_range<T, kDecay>(p, sum, g, b, e, s); });
      },
      o.weight_decay != 0.0);
}

// -- Norms and clipping ---------------------------------------------------------------------

namespace {

// One block of norm_power_sum: sum |x|^p (kind 1: p = 1, 2: p = 2, 0: general) or max |x| (kind 3).
template <typename T>
double block_power_sum(const T* RNNCORE_RESTRICT x, index_t n, double p, int kind) {
  if (kind == 3) {
    double mx = 0.0;
    int nan = 0;
#pragma omp simd reduction(max : mx) reduction(| : nan)
    for (index_t i = 0; i < n; ++i) {
      const double a = std::fabs(static_cast<double>(x[i]));
      mx = a > mx ? a : mx;
      nan |= (a != a);
    }
    return nan ? std::numeric_limits<double>::quiet_NaN() : mx;
  }
  double s = 0.0;
  if (kind == 2) {
#pragma omp simd reduction(+ : s)
    for (index_t i = 0; i < n; ++i) {
      const double a = static_cast<double>(x[i]);
      s += a * a;
    }
  } else if (kind == 1) {
#pragma omp simd reduction(+ : s)
    for (index_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(x[i]));
  } else {
    for (index_t i = 0; i < n; ++i) s += std::pow(std::fabs(static_cast<double>(x[i])), p);
  }
  return s;
}

template <typename T>
void scale_range(T* RNNCORE_RESTRICT x, index_t b, index_t e, const T c) {
  for (index_t i = b; i < e; ++i) x[i] = x[i] * c;
}

template <typename T>
void clamp_range(T* RNNCORE_RESTRICT x, index_t b, index_t e, const T lo, const T hi) {
  for (index_t i = b; i < e; ++i) x[i] = std::min(std::max(x[i], lo), hi);  // NaN stays NaN
}

}  // namespace

template <typename T>
double norm_power_sum(const T* x, index_t N, double p, int nthreads) {
  const int kind = std::isinf(p) ? 3 : p == 2.0 ? 2 : p == 1.0 ? 1 : 0;
  const index_t blocks = (N + kReduceBlock - 1) / kReduceBlock;
  if (blocks <= 1) return N > 0 ? block_power_sum(x, N, p, kind) : 0.0;
  std::vector<double> partial(static_cast<std::size_t>(blocks));
  const int nt = threads_for(double(N), kMinPerThread, nthreads);
  (void)nt;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
#endif
  for (index_t k = 0; k < blocks; ++k) {
    const index_t b = k * kReduceBlock, e = std::min(N, b + kReduceBlock);
    partial[static_cast<std::size_t>(k)] = block_power_sum(x + b, e - b, p, kind);
  }
  double total = 0.0;
  bool nan = false;
  for (const double s : partial) {
    nan = nan || s != s;
    total = kind == 3 ? std::max(total, s) : total + s;
  }
  return nan ? std::numeric_limits<double>::quiet_NaN() : total;
}

double norm_power_sum(const std::vector<ArraySpan>& arrays, double p, int nthreads) {
  const bool inf = std::isinf(p);
  double total = 0.0;
  bool nan = false;
  for (const ArraySpan& a : arrays) {
    const double s = a.f64 ? norm_power_sum(static_cast<const double*>(a.data), a.N, p, nthreads)
                           : norm_power_sum(static_cast<const float*>(a.data), a.N, p, nthreads);
    nan = nan || s != s;
    total = inf ? std::max(total, s) : total + s;
  }
  return nan ? std::numeric_limits<double>::quiet_NaN() : total;
}

template <typename T>
void scale_inplace(T* x, index_t N, double scale, int nthreads) {
  const T c = T(scale);
  for_chunks(N, nthreads, [&](index_t b, index_t e) { scale_range(x, b, e, c); });
}

template <typename T>
void clamp_inplace(T* x, index_t N, double lo, double hi, int nthreads) {
  const T l = T(lo), h = T(hi);
  for_chunks(N, nthreads, [&](index_t b, index_t e) { clamp_range(x, b, e, l, h); });
}

void scale_inplace(const std::vector<MutableArraySpan>& arrays, double scale, int nthreads) {
  for (const MutableArraySpan& a : arrays) {
    if (a.f64) scale_inplace(static_cast<double*>(a.data), a.N, scale, nthreads);
    else scale_inplace(static_cast<float*>(a.data), a.N, scale, nthreads);
  }
}

void clamp_inplace(const std::vector<MutableArraySpan>& arrays, double lo, double hi, int nthreads) {
  for (const MutableArraySpan& a : arrays) {
    if (a.f64) clamp_inplace(static_cast<double*>(a.data), a.N, lo, hi, nthreads);
    else clamp_inplace(static_cast<float*>(a.data), a.N, lo, hi, nthreads);
  }
}

#define RNNCORE_INSTANTIATE_OPTIM(T)                                                                       \
  template void sgd_step<T>(T*, T*, const T*, index_t, const SGDOptions&, int);                            \
  template void adam_step<T>(T*, T*, T*, T*, const T*, index_t, const AdamOptions&, int);                  \
  template void rmsprop_step<T>(T*, T*, T*, T*, const T*, index_t, const RMSpropOptions&, int);            \
  template void adagrad_step<T>(T*, T*, const T*, index_t, const AdagradOptions&, int);                    \
  template double norm_power_sum<T>(const T*, index_t, double, int);                                       \
  template void scale_inplace<T>(T*, index_t, double, int);                                                \
  template void clamp_inplace<T>(T*, index_t, double, double, int);

RNNCORE_INSTANTIATE_OPTIM(float)
RNNCORE_INSTANTIATE_OPTIM(double)

#undef RNNCORE_INSTANTIATE_OPTIM

}  // namespace rnncore
