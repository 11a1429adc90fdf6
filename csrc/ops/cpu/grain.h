// Task sizes for at::parallel_for in the CPU kernels.
#pragma once

#include <algorithm>
#include <cstdint>

namespace acsleuth::cpu {

// Least work (about one multiply-add each) worth a task of its own. Smaller tasks made a
// parallel region cost more than it saved, and when another process keeps the cores busy
// every region also waits for the workers the scheduler paused (issue 17).
constexpr int64_t kMinTaskWork = int64_t{1} << 18;

// Rows per task for rows costing `work_per_row` each: at least `at_least` rows, and enough
// rows that a task holds kMinTaskWork. A range of no more rows than this runs inline.
inline int64_t rows_per_task(int64_t work_per_row, int64_t at_least = 1) {
  const int64_t per_row = std::max<int64_t>(work_per_row, 1);
  return std::max(at_least, (kMinTaskWork + per_row - 1) / per_row);
}

}  // namespace acsleuth::cpu
