// Row-wise float kernels shared by the CPU ops. Each is compiled for AVX-512, AVX2 and a
// baseline, and the loader picks the best one for the machine (GCC target_clones).
#pragma once

#include <cstdint>

namespace acsleuth::cpu {

// exp(x) for x <= 0 to ~2 ulp, vectorisable (Cody-Waite reduction + degree-6 polynomial).
float exp_nonpositive(float x);

// y[j] = sum_b exp(-c[b] * max(sq_i + sq[j] - 2 dot[j], 0)) for j < n: one row of a
// multi-bandwidth Gaussian kernel tile computed from a dot-product tile.
void gaussian_kernel_row(float sq_i, const float* sq, const float* dot, const float* c,
                         int64_t n_bandwidths, int64_t n, float* y);

// Largest value of x[0..n); NaN entries are ignored (returns -inf if all are NaN).
float row_max(const float* x, int64_t n);

// x[j] = exp((x[j] - shift) * scale) for j < n, returning the sum; requires x[j] <= shift.
float exp_shifted_inplace(float* x, int64_t n, float shift, float scale);

}  // namespace acsleuth::cpu
