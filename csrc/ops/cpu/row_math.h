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

// sum_j x[j] y[j] (float accumulation in 16 independent lanes).
float dot(const float* x, const float* y, int64_t n);

// y[j] += a x[j] for j < n.
void axpy(float a, const float* x, int64_t n, float* y);

// For 4 rows x_t = x + t * stride (t < 4) and phi4 = their 4 x 2 weights, row-major:
// b0[j] += sum_t phi4[t][0] x_t[j] and b1[j] += sum_t phi4[t][1] x_t[j] for j < n.
void accumulate_4rows_r2(const float* x, int64_t stride, const float* phi4, int64_t n,
                         float* b0, float* b1);

// d[2 t + q] = x_t . y_q for 4 rows x_t = x + t * stride and the two vectors y_0, y_1.
void dot_4rows_2cols(const float* x, int64_t stride, const float* y0, const float* y1,
                     int64_t n, float* d);

}  // namespace acsleuth::cpu
