#include "recurrent/layout.h"

#include <algorithm>
#include <numeric>
#include <string>

namespace rnncore {

void SeqLayout::build(index_t T_, index_t B_, const std::int64_t* lengths, bool reverse_) {
  T = T_;
  B = B_;
  reverse = reverse_;
  len.assign(static_cast<std::size_t>(B), T);
  if (lengths != nullptr) {
    for (index_t b = 0; b < B; ++b) {
      const std::int64_t L = lengths[b];
      if (L < 0 || L > T) {
        fail("lengths[" + std::to_string(b) + "] must be in [0, T] = [0, " + std::to_string(T) + "], got " +
             std::to_string(L));
      }
      len[b] = L;
    }
  }
  perm.resize(static_cast<std::size_t>(B));
  std::iota(perm.begin(), perm.end(), index_t(0));
  std::stable_sort(perm.begin(), perm.end(), [this](index_t a, index_t b) { return len[a] > len[b]; });
  full = std::all_of(len.begin(), len.end(), [this](index_t L) { return L == T; });
  identity = full && !reverse;
  count.assign(static_cast<std::size_t>(T), 0);
  offset.assign(static_cast<std::size_t>(T + 1), 0);
  index_t active = B;
  for (index_t s = 0; s < T; ++s) {
    while (active > 0 && len[perm[active - 1]] <= s) --active;
    count[s] = active;
    offset[s + 1] = offset[s] + active;
  }
}

}  // namespace rnncore
