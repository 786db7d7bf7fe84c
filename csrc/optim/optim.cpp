// Fused optimizer updates and gradient-norm reductions (see optim.h for the rules and shapes).
//
// Every kernel is one pass over its arrays. The loop bodies are branch-free apart from
// loop-invariant flags (which the compiler unswitches), so they vectorise; nothing in them
// can throw, so running them inside an OpenMP region is safe.
#include "optim/optim.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/parallel.h"

namespace rnncore {

namespace {

// Elements per thread below which another thread costs more than it saves.
constexpr index_t kMinPerThread = index_t(1) << 15;
// Block of a reduction: partial sums are taken per block, then added in block order.
constexpr index_t kReduceBlock = index_t(1) << 13;
// Chunk boundaries fall on a multiple of this (a cache line of doubles or floats).
constexpr index_t kAlign = 16;

int threads_for(index_t N, int nthreads) {
  const index_t useful = std::max<index_t>(1, N / kMinPerThread);
  return static_cast<int>(std::max<index_t>(1, std::min<index_t>(nthreads, useful)));
}

// Run body(begin, end) over [0, N) split into one contiguous chunk per thread. `body` must
// not throw (it runs inside an OpenMP region).
template <typename F>
void for_chunks(index_t N, int nthreads, const F& body) {
  const int nt = threads_for(N, nthreads);
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

// torch.lerp's formula: a + w * (b - a) for w < 0.5, else b - (b - a) * (1 - w).
template <typename T>
RNNCORE_INLINE T lerp(T a, T b, T w, T one_minus_w, bool low) {
  return low ? a + w * (b - a) : b - (b - a) * one_minus_w;
}

}  // namespace

// -- SGD ----------------------------------------------------------------------------------

template <typename T>
void sgd_step(T* RNNCORE_RESTRICT p, T* RNNCORE_RESTRICT buf, const T* RNNCORE_RESTRICT g, index_t N,
              const SGDOptions& o, int nthreads) {
  const T lr = T(o.lr), wd = T(o.weight_decay), mom = T(o.momentum), keep = T(1.0 - o.dampening);
  const T sign = o.maximize ? T(-1) : T(1);
  const bool decay = o.weight_decay != 0.0;
  if (o.momentum == 0.0 || buf == nullptr) {
    for_chunks(N, nthreads, [&](index_t b, index_t e) {
      for (index_t i = b; i < e; ++i) {
        T d = sign * g[i];
        if (decay) d = d + wd * p[i];  // grad.add(param, alpha=weight_decay)
        p[i] = p[i] + (-lr) * d;       // param.add_(grad, alpha=-lr)
      }
    });
    return;
  }
  const bool first = o.first, nesterov = o.nesterov;
  for_chunks(N, nthreads, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      T d = sign * g[i];
      if (decay) d = d + wd * p[i];
      const T m = first ? d : buf[i] * mom + keep * d;  // buf.mul_(momentum).add_(grad, alpha=1-dampening)
      buf[i] = m;
      d = nesterov ? d + mom * m : m;  // grad.add(buf, alpha=momentum) or buf
      p[i] = p[i] + (-lr) * d;
    }
  });
}

// -- Adam / AdamW ---------------------------------------------------------------------------

template <typename T>
void adam_step(T* RNNCORE_RESTRICT p, T* RNNCORE_RESTRICT m, T* RNNCORE_RESTRICT v, T* RNNCORE_RESTRICT vmax,
               const T* RNNCORE_RESTRICT g, index_t N, const AdamOptions& o, int nthreads) {
  // Scalars exactly as PyTorch forms them in Python (double), then rounded once to T.
  const double t = static_cast<double>(o.step);
  const double bias_correction1 = 1.0 - std::pow(o.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(o.beta2, t);
  const T step_size = T(o.lr / bias_correction1);
  const T bc2_sqrt = T(std::pow(bias_correction2, 0.5));
  const T eps = T(o.eps), wd = T(o.weight_decay), shrink = T(1.0 - o.lr * o.weight_decay);
  const T w1 = T(1.0 - o.beta1), w1c = T(1.0 - (1.0 - o.beta1)), b2 = T(o.beta2), c2 = T(1.0 - o.beta2);
  const bool low = (1.0 - o.beta1) < 0.5;
  const T sign = o.maximize ? T(-1) : T(1);
  const bool decay = o.weight_decay != 0.0, decoupled = o.decoupled, ams = o.amsgrad && vmax != nullptr;
  for_chunks(N, nthreads, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      T gi = sign * g[i];
      T pi = p[i];
      if (decay) {
        if (decoupled) pi = pi * shrink;  // param.mul_(1 - lr * weight_decay)
        else gi = gi + wd * pi;           // grad.add(param, alpha=weight_decay)
      }
      const T mi = lerp(m[i], gi, w1, w1c, low);  // exp_avg.lerp_(grad, 1 - beta1)
      const T vi = v[i] * b2 + c2 * gi * gi;      // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
      m[i] = mi;
      v[i] = vi;
      T s = vi;
      if (ams) {
        const T prev = vmax[i];
        s = (vi > prev || vi != vi) ? vi : prev;  // torch.maximum (NaN propagates)
        vmax[i] = s;
      }
      const T denom = std::sqrt(s) / bc2_sqrt + eps;  // (v.sqrt() / bias_correction2_sqrt).add_(eps)
      p[i] = pi + (-step_size) * (mi / denom);        // param.addcdiv_(exp_avg, denom, value=-step_size)
    }
  });
}

// -- RMSprop --------------------------------------------------------------------------------

template <typename T>
void rmsprop_step(T* RNNCORE_RESTRICT p, T* RNNCORE_RESTRICT sq, T* RNNCORE_RESTRICT ga, T* RNNCORE_RESTRICT buf,
                  const T* RNNCORE_RESTRICT g, index_t N, const RMSpropOptions& o, int nthreads) {
  const T lr = T(o.lr), alpha = T(o.alpha), c = T(1.0 - o.alpha), cc = T(1.0 - (1.0 - o.alpha));
  const bool low = (1.0 - o.alpha) < 0.5;
  const T eps = T(o.eps), wd = T(o.weight_decay), mom = T(o.momentum);
  const T sign = o.maximize ? T(-1) : T(1);
  const bool decay = o.weight_decay != 0.0;
  const bool centered = o.centered && ga != nullptr, use_momentum = o.momentum > 0.0 && buf != nullptr;
  for_chunks(N, nthreads, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      T gi = sign * g[i];
      if (decay) gi = gi + wd * p[i];
      const T s = sq[i] * alpha + c * gi * gi;  // square_avg.mul_(alpha).addcmul_(grad, grad, 1 - alpha)
      sq[i] = s;
      T avg;
      if (centered) {
        const T a = lerp(ga[i], gi, c, cc, low);  // grad_avg.lerp_(grad, 1 - alpha)
        ga[i] = a;
        avg = std::sqrt(s + T(-1) * a * a);  // square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
      } else {
        avg = std::sqrt(s);
      }
      avg = avg + eps;
      if (use_momentum) {
        const T bi = buf[i] * mom + gi / avg;  // buf.mul_(momentum).addcdiv_(grad, avg)
        buf[i] = bi;
        p[i] = p[i] + (-lr) * bi;  // param.add_(buf, alpha=-lr)
      } else {
        p[i] = p[i] + (-lr) * (gi / avg);  // param.addcdiv_(grad, avg, value=-lr)
      }
    }
  });
}

// -- Adagrad --------------------------------------------------------------------------------

template <typename T>
void adagrad_step(T* RNNCORE_RESTRICT p, T* RNNCORE_RESTRICT sum, const T* RNNCORE_RESTRICT g, index_t N,
                  const AdagradOptions& o, int nthreads) {
  const T clr = T(o.lr / (1.0 + static_cast<double>(o.step - 1) * o.lr_decay));
  const T eps = T(o.eps), wd = T(o.weight_decay);
  const T sign = o.maximize ? T(-1) : T(1);
  const bool decay = o.weight_decay != 0.0;
  for_chunks(N, nthreads, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      T gi = sign * g[i];
      if (decay) gi = gi + wd * p[i];
      const T s = sum[i] + T(1) * gi * gi;  // state_sum.addcmul_(grad, grad, value=1)
      sum[i] = s;
      const T std_ = std::sqrt(s) + eps;   // state_sum.sqrt().add_(eps)
      p[i] = p[i] + (-clr) * (gi / std_);  // param.addcdiv_(grad, std, value=-clr)
    }
  });
}

// -- Norms and clipping ---------------------------------------------------------------------

namespace {

// One block of norm_power_sum: sum |x|^p (kind 1: p = 1, 2: p = 2, 0: general) or max |x| (kind 3).
template <typename T>
double block_power_sum(const T* RNNCORE_RESTRICT x, index_t n, double p, int kind) {
  if (kind == 3) {
    double mx = 0.0;
    index_t nan = 0;
    for (index_t i = 0; i < n; ++i) {
      const double a = std::fabs(static_cast<double>(x[i]));
      mx = a > mx ? a : mx;
      nan += (a != a);
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

}  // namespace

template <typename T>
double norm_power_sum(const T* x, index_t N, double p, int nthreads) {
  const int kind = std::isinf(p) ? 3 : p == 2.0 ? 2 : p == 1.0 ? 1 : 0;
  const index_t blocks = (N + kReduceBlock - 1) / kReduceBlock;
  if (blocks <= 1) return N > 0 ? block_power_sum(x, N, p, kind) : 0.0;
  std::vector<double> partial(static_cast<std::size_t>(blocks));
  const int nt = threads_for(N, nthreads);
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
  for_chunks(N, nthreads, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) x[i] = x[i] * c;
  });
}

template <typename T>
void clamp_inplace(T* x, index_t N, double lo, double hi, int nthreads) {
  const T l = T(lo), h = T(hi);
  for_chunks(N, nthreads, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      const T v = x[i];
      x[i] = v < l ? l : (v > h ? h : v);  // NaN compares false both ways and stays
    }
  });
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
