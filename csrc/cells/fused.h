// Fused per-step cell updates for float32: one pass over the units, every gate in registers,
// with the same activations and the same order of additions as the cells' portable loops (see
// cells/lstm.h and cells/gru.h for the equations and the arguments). Pointers are at the
// slice's first unit; gate k of `gates` and `bias` is k * H further on, of `hg` k * hs.
// `bias`, `b_hn` and `dy` may be null. Each returns false, doing nothing, when the process's
// ISA (common/cpu.h) has no fused kernels; the cell then runs its portable loops.
#pragma once

#include "common/defs.h"

namespace rnncore {

bool lstm_forward_fused(float* gates, index_t H, const float* hg, index_t hs, const float* bias,
                        const float* c_prev, float* c, float* h, index_t n);
bool gru_forward_fused(float* gates, index_t H, const float* hg, index_t hs, const float* bias, const float* b_hn,
                       float* hn, const float* h_prev, float* h, index_t n);
bool lstm_backward_fused(float* gates, index_t H, const float* c_prev, const float* c, const float* dh_carry,
                         const float* dy, float* dc, index_t n);
bool gru_backward_fused(float* gates, index_t H, float* hn, const float* h_prev, float* dh_carry, const float* dy,
                        index_t n);

}  // namespace rnncore
