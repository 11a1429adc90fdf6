// memory_attention on CPU. The GEMMs run on the whole batch (multi-threaded BLAS); everything
// between them — scaling, softmax, hard shrinkage, L1 renormalisation and, backward, their
// chained derivatives — is one fused pass per row, so no intermediate B x N_mem tensor is
// written beyond the saved softmax and one work buffer.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "../memory_attention.h"
#include "grain.h"
#include "row_math.h"

namespace acsleuth {
namespace {

constexpr double kShrinkEps = detail::kShrinkEps;
constexpr int64_t kWorkPerSlot = 8;  // softmax, shrinkage and normalisation of one slot
constexpr double kNormEps = detail::kNormEps;

// logits -> probs (softmax of logits / t). Returns nothing; rows are independent.
template <typename scalar_t>
void softmax_row(const scalar_t* logits, int64_t n, double inv_t, scalar_t* probs) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    std::copy(logits, logits + n, probs);
    const float m = cpu::row_max(probs, n);
    const float sum = cpu::exp_shifted_inplace(probs, n, m, static_cast<float>(inv_t));
    const float inv = 1.0f / sum;
    for (int64_t k = 0; k < n; ++k) probs[k] *= inv;
  } else {
    scalar_t m = logits[0];
    for (int64_t k = 1; k < n; ++k) m = logits[k] > m ? logits[k] : m;
    scalar_t sum = 0;
    for (int64_t k = 0; k < n; ++k) {
      probs[k] = std::exp((logits[k] - m) * inv_t);
      sum += probs[k];
    }
    for (int64_t k = 0; k < n; ++k) probs[k] /= sum;
  }
}

// probs -> shrunk, L1-normalised weights w. Returns the L1 norm S before clamping.
template <typename scalar_t>
double shrink_row(const scalar_t* a, int64_t n, double lam, scalar_t* w) {
  double s = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    const double u = static_cast<double>(a[k]) - lam;
    const double v = u > 0 ? u * a[k] / (std::abs(u) + kShrinkEps) : 0.0;
    w[k] = static_cast<scalar_t>(v);
    s += v;
  }
  const double inv = 1.0 / std::max(s, kNormEps);
  for (int64_t k = 0; k < n; ++k) w[k] = static_cast<scalar_t>(w[k] * inv);
  return s;
}

std::tuple<at::Tensor, at::Tensor> memory_attention_cpu(const at::Tensor& z,
                                                        const at::Tensor& memory,
                                                        double temperature, double shrink) {
  detail::check_memory_attention_inputs(z, memory, temperature, shrink);
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble,
              "memory_attention: the CPU kernel takes float32 or float64, got ",
              z.scalar_type());
  const int64_t b = z.size(0), slots = memory.size(0);
  if (b == 0) return {at::empty_like(z), at::empty({0, slots}, z.options())};
  auto logits = at::mm(z, memory.t());
  auto probs = at::empty_like(logits);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "memory_attention_cpu", [&] {
    scalar_t* l = logits.data_ptr<scalar_t>();
    scalar_t* p = probs.data_ptr<scalar_t>();
    const int64_t grain = cpu::rows_per_task(kWorkPerSlot * slots, 16);
    at::parallel_for(0, b, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        softmax_row(l + r * slots, slots, 1.0 / temperature, p + r * slots);
        shrink_row(p + r * slots, slots, shrink, l + r * slots);  // weights overwrite logits
      }
    });
  });
  return {at::mm(logits, memory), probs};
}

std::tuple<at::Tensor, at::Tensor> memory_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& z, const at::Tensor& memory,
    const at::Tensor& probs, double temperature, double shrink) {
  detail::check_memory_attention_inputs(z, memory, temperature, shrink);
  const int64_t b = z.size(0), slots = memory.size(0);
  TORCH_CHECK(probs.sizes() == at::IntArrayRef({b, slots}),
              "memory_attention backward: probs must be ", b, " x ", slots);
  if (b == 0) return {at::zeros_like(z), at::zeros_like(memory)};
  const auto g = grad_out.contiguous();
  const auto a = probs.contiguous();
  auto gw = at::mm(g, memory.t());  // becomes the logits gradient in place
  auto w = at::empty_like(gw);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "memory_attention_backward_cpu", [&] {
    const scalar_t* ap = a.const_data_ptr<scalar_t>();
    scalar_t* gp = gw.data_ptr<scalar_t>();
    scalar_t* wp = w.data_ptr<scalar_t>();
    const double lam = shrink;
    const int64_t grain = cpu::rows_per_task(kWorkPerSlot * slots, 16);
    at::parallel_for(0, b, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const scalar_t* ar = ap + r * slots;
        scalar_t* gr = gp + r * slots;
        scalar_t* wr = wp + r * slots;
        const double s = shrink_row(ar, slots, lam, wr);
        double gw_dot_w = 0.0;
        for (int64_t k = 0; k < slots; ++k) gw_dot_w += static_cast<double>(gr[k]) * wr[k];
        // ga_k = dL/da_k through the normalisation and the shrinkage.
        double a_dot_ga = 0.0;
        for (int64_t k = 0; k < slots; ++k) {
          const double gs = s > kNormEps ? (gr[k] - gw_dot_w) / s : gr[k] / kNormEps;
          const double u = static_cast<double>(ar[k]) - lam;
          double ga = 0.0;
          if (u > 0) {
            const double den = u + kShrinkEps;
            ga = gs * ((u + ar[k]) * den - u * ar[k]) / (den * den);
          }
          gr[k] = static_cast<scalar_t>(ga);
          a_dot_ga += ar[k] * ga;
        }
        for (int64_t k = 0; k < slots; ++k) {
          gr[k] = static_cast<scalar_t>(ar[k] * (gr[k] - a_dot_ga) / temperature);
        }
      }
    });
  });
  auto grad_z = at::mm(gw, memory);
  auto grad_memory = at::mm(w.t(), g).addmm_(gw.t(), z);
  return {grad_z, grad_memory};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, CPU, m) {
  m.impl("memory_attention", &memory_attention_cpu);
  m.impl("_memory_attention_backward", &memory_attention_backward_cpu);
}

}  // namespace acsleuth
