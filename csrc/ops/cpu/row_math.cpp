#include "row_math.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ACSLEUTH_CLONES \
  __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define ACSLEUTH_CLONES
#endif

namespace acsleuth::cpu {

namespace {

inline float exp_nonpositive_inline(float x) {
  // exp(x) = 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2.
  const float xc = std::max(x, -87.0f);
  const float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  const float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return x < -87.0f ? 0.0f : p * scale;
}

}  // namespace

float exp_nonpositive(float x) { return exp_nonpositive_inline(x); }

ACSLEUTH_CLONES
void gaussian_kernel_row(float sq_i, const float* sq, const float* dot, const float* c,
                         int64_t n_bandwidths, int64_t n, float* y) {
  for (int64_t j = 0; j < n; ++j) {
    const float d = std::max(sq_i + sq[j] - 2.0f * dot[j], 0.0f);
    y[j] = exp_nonpositive_inline(-c[0] * d);
  }
  for (int64_t b = 1; b < n_bandwidths; ++b) {
    const float cb = c[b];
    for (int64_t j = 0; j < n; ++j) {
      const float d = std::max(sq_i + sq[j] - 2.0f * dot[j], 0.0f);
      y[j] += exp_nonpositive_inline(-cb * d);
    }
  }
}

ACSLEUTH_CLONES
float row_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

ACSLEUTH_CLONES
float exp_shifted_inplace(float* x, int64_t n, float shift, float scale) {
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    x[j] = exp_nonpositive_inline((x[j] - shift) * scale);
    sum += x[j];
  }
  return sum;
}

ACSLEUTH_CLONES
float dot(const float* x, const float* y, int64_t n) {
  constexpr int kLanes = 16;
  float lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int t = 0; t < kLanes; ++t) lanes[t] += x[j + t] * y[j + t];
  }
  float s = 0.0f;
  for (int t = 0; t < kLanes; ++t) s += lanes[t];
  for (; j < n; ++j) s += x[j] * y[j];
  return s;
}

ACSLEUTH_CLONES
void axpy(float a, const float* __restrict__ x, int64_t n, float* __restrict__ y) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

ACSLEUTH_CLONES
void accumulate_4rows_r2(const float* x, int64_t stride, const float* phi4, int64_t n,
                         float* b0_, float* b1_) {
  const float* __restrict__ x0 = x;
  const float* __restrict__ x1 = x + stride;
  const float* __restrict__ x2 = x + 2 * stride;
  const float* __restrict__ x3 = x + 3 * stride;
  float* __restrict__ b0 = b0_;
  float* __restrict__ b1 = b1_;
  const float p00 = phi4[0], p01 = phi4[1], p10 = phi4[2], p11 = phi4[3];
  const float p20 = phi4[4], p21 = phi4[5], p30 = phi4[6], p31 = phi4[7];
  for (int64_t j = 0; j < n; ++j) {
    b0[j] += p00 * x0[j] + p10 * x1[j] + p20 * x2[j] + p30 * x3[j];
    b1[j] += p01 * x0[j] + p11 * x1[j] + p21 * x2[j] + p31 * x3[j];
  }
}

ACSLEUTH_CLONES
void dot_4rows_2cols(const float* x, int64_t stride, const float* y0, const float* y1,
                     int64_t n, float* d) {
  constexpr int kLanes = 8;
  float acc[8][kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float a = y0[j + l], b = y1[j + l];
      for (int t = 0; t < 4; ++t) {
        const float v = x[t * stride + j + l];
        acc[2 * t][l] += v * a;
        acc[2 * t + 1][l] += v * b;
      }
    }
  }
  for (int e = 0; e < 8; ++e) {
    float s = 0.0f;
    for (int l = 0; l < kLanes; ++l) s += acc[e][l];
    d[e] = s;
  }
  for (; j < n; ++j) {
    for (int t = 0; t < 4; ++t) {
      d[2 * t] += x[t * stride + j] * y0[j];
      d[2 * t + 1] += x[t * stride + j] * y1[j];
    }
  }
}

}  // namespace acsleuth::cpu
