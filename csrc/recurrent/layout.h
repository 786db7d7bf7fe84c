// How a batch of variable-length sequences is laid out inside the recurrent kernels.
//
// Sequences are sorted by length, longest first (stable), so the sequences still running at
// step s are always a prefix of that order: count[s] of them. The rows of every per-step
// buffer are packed step after step: row offset[s] + j is sorted sequence j at step s, and
// N = offset[T] = the sum of the lengths. No padded row is ever computed.
//
// A forward layer visits time t = s; a reverse layer visits t = len - 1 - s, i.e. it
// reverses each sequence within its own length.
//
// `identity` means packed row r is exactly row r of the caller's (T, B, F) array (all lengths
// equal T and the direction is forward), so inputs and input gradients need no gather.
// `full` means every sequence has length T (then offset[s] = s * B in either direction).
#pragma once

#include <vector>

#include "common/defs.h"

namespace rnncore {

struct SeqLayout {
  index_t T = 0, B = 0;
  bool reverse = false, identity = true, full = true;
  std::vector<index_t> len;     // (B) length of each sequence, caller's order
  std::vector<index_t> perm;    // (B) perm[j]: caller's batch index of sorted sequence j
  std::vector<index_t> count;   // (T) sequences still running at step s (non-increasing)
  std::vector<index_t> offset;  // (T + 1) first packed row of step s; offset[T] = N

  // lengths: (B) values in [0, T], or null for "all T". Throws std::invalid_argument otherwise.
  void build(index_t T_, index_t B_, const std::int64_t* lengths, bool reverse_);

  index_t rows() const { return offset[T]; }
  // Time index of sorted sequence j at step s.
  index_t time(index_t s, index_t j) const { return reverse ? len[perm[j]] - 1 - s : s; }
  // Row of the caller's (T, B, F) array that packed row (s, j) stands for.
  index_t source_row(index_t s, index_t j) const { return time(s, j) * B + perm[j]; }
};

}  // namespace rnncore
