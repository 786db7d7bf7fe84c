// Embedding lookup: a gather forward and a scatter-add backward.
//
// Shape letters (see common/defs.h): N ids (any leading shape, flattened), V rows of the
// table (the vocabulary), E embedding size.
#pragma once

#include <cstdint>

#include "common/defs.h"

namespace rnncore {

// Returns the flat position of the first id outside [0, V), or -1 when every id is valid.
// ids: (N) int64.
index_t embedding_first_bad_id(const std::int64_t* ids, index_t N, index_t V, int nthreads);

// out: (N, E) written, row n = weight[ids[n]].
// weight: (V, E) the table. ids: (N) int64.
// Checks every id before writing anything: returns -1 on success, else the flat position of
// the first id outside [0, V) (and `out` is untouched).
template <typename T>
index_t embedding_forward(T* out, const T* weight, const std::int64_t* ids, index_t N, index_t V, index_t E,
                          int nthreads);

// dweight: (V, E) *added to*: row v += sum of dout[n] over the n with ids[n] == v, except
// the row padding_idx (pass -1 for none), which receives nothing.
// dout: (N, E) gradient of the forward's out. ids: (N) the forward's ids.
// Deterministic for any thread count (threads own column slices of the table and visit the
// ids in order). Same id check and return value as the forward; nothing is added on failure.
template <typename T>
index_t embedding_backward(T* dweight, const T* dout, const std::int64_t* ids, index_t padding_idx, index_t N,
                           index_t V, index_t E, int nthreads);

}  // namespace rnncore
