// Running top-k of one query row, fed candidates in ascending key order.
// Values stay sorted descending; a candidate must beat the current k-th value strictly, so on
// ties the earlier (lower) key index stays ahead. NaN never enters (all comparisons fail).
#pragma once

#include <cstdint>

namespace acsleuth::cpu {

template <typename scalar_t>
inline void topk_insert(scalar_t* vals, int64_t* idx, int64_t k, scalar_t v, int64_t j) {
  if (!(v > vals[k - 1])) return;
  int64_t pos = k - 1;
  while (pos > 0 && v > vals[pos - 1]) {
    vals[pos] = vals[pos - 1];
    idx[pos] = idx[pos - 1];
    --pos;
  }
  vals[pos] = v;
  idx[pos] = j;
}

}  // namespace acsleuth::cpu
