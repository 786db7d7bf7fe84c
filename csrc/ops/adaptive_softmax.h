// Adaptive softmax (Grave et al. 2017; torch.nn.AdaptiveLogSoftmaxWithLoss), forward and
// backward fused: each row's head softmax, and for the rows whose targets fall in cluster i,
// that cluster's two projections and softmax; the (N, V) softmax is never formed.
//
// Shape letters: N rows, I in_features, V classes, S shortlist (cutoffs[0]), C clusters,
// Hs = S + C head outputs; cluster i covers [cutoffs[i], cutoffs[i+1]) (cutoffs[C] = V) with
// h_i projection units and o_i = cutoffs[i+1] - cutoffs[i] classes.
#pragma once

#include <cstdint>
#include <vector>

#include "common/defs.h"

namespace rnncore {

// One cluster's weights, and their gradients (null when not computing gradients).
template <typename T>
struct AdaptiveCluster {
  const T* proj = nullptr;  // (h, I)
  const T* out = nullptr;   // (o, h)
  T* dproj = nullptr;       // (h, I) added into
  T* dout = nullptr;        // (o, h) added into
  index_t h = 0, o = 0;
};

// output: (N) written: log p(target[n] | x[n]).
// dx: (N, I) written: d(sum_n w[n] * -output[n]) / dx, when row_weights is given; else unused.
// dhead_w: (Hs, I), dhead_b: (Hs) or null: added into, when row_weights is given.
// x: (N, I). targets: (N) int64 in [0, V). row_weights: (N) or null (output only, no gradient).
// head_w: (Hs, I); head_b: (Hs) or null. clusters: C entries (gradients added into when
// row_weights is given). cutoffs: C + 1 values, cutoffs[0] = S, cutoffs[C] = V.
// Returns the first row whose target is outside [0, V) (nothing written), or -1.
template <typename T>
index_t adaptive_softmax_fused(T* output, T* dx, T* dhead_w, T* dhead_b, const T* x, const std::int64_t* targets,
                               const T* row_weights, const T* head_w, const T* head_b,
                               const std::vector<AdaptiveCluster<T>>& clusters, const std::vector<index_t>& cutoffs,
                               index_t N, index_t I, int nthreads);

}  // namespace rnncore
