// The output-recurrent network run free (see output_recurrent.h).
#include "recurrent/output_recurrent.h"

#include <algorithm>

#include "common/vmath.h"
#include "ops/linear.h"

namespace rnncore {

template <typename T>
void output_recurrent_free_run(T* y, T* h, T* scratch, const T* x, const T* w_ih, const T* w_oh, const T* b_h,
                               const T* w_ho, const T* b_o, const T* y0, index_t steps, index_t B, index_t I,
                               index_t H, index_t O, int nthreads) {
  if (steps == 0 || B == 0) return;
  // 1. The input projection of every step at once: h[t] = W_ih x_t + b_h  (T*B x I x H, one GEMM).
  linear_forward<T>(h, x, w_ih, b_h, steps * B, I, H, nthreads);
  for (index_t t = 0; t < steps; ++t) {
    T* ht = h + t * B * H;
    T* yt = y + t * B * O;
    // 2. h_t = tanh(W_ih x_t + W_oh y_{t-1} + b_h), y_{-1} = y0 (zeros when null)
    const T* prev = t > 0 ? yt - B * O : y0;
    if (prev) {
      linear_forward<T>(scratch, prev, w_oh, nullptr, B, O, H, nthreads);
      for (index_t k = 0; k < B * H; ++k) ht[k] += scratch[k];
    }
    vtanh(ht, ht, B * H);
    // 3. y_t = W_ho h_t + b_o
    linear_forward<T>(yt, ht, w_ho, b_o, B, H, O, nthreads);
  }
}

#define RNNCORE_INSTANTIATE(T)                                                                                \
  template void output_recurrent_free_run<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*,      \
                                             const T*, const T*, index_t, index_t, index_t, index_t, index_t, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
