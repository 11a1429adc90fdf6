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

}  // namespace acsleuth::cpu
