// linear_pair_form on CPU: one pass over x in each direction, parallel over row blocks.
// Forward: per row, |x_i|^2 and A += x_i^T phi_i while the row is in L1; each thread sums a
// block of kRowBlock rows in the working precision, then adds it to float64 accumulators.
// Backward: per row, grad_phi needs x_i . B_q (r dot products) and grad_x is r axpys.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../linear_pair_form.h"
#include "grain.h"
#include "row_math.h"

namespace acsleuth {
namespace {

constexpr int64_t kRowBlock = 64;

template <typename scalar_t>
scalar_t row_dot(const scalar_t* x, const scalar_t* y, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return cpu::dot(x, y, n);
  } else {
    scalar_t s = 0;
    for (int64_t j = 0; j < n; ++j) s += x[j] * y[j];
    return s;
  }
}

template <typename scalar_t>
void row_axpy(scalar_t a, const scalar_t* x, int64_t n, scalar_t* y) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    cpu::axpy(a, x, n, y);
  } else {
    for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
  }
}

// Returns A^T (r x G, float64) and fills sq.
template <typename scalar_t>
at::Tensor forward_stats(const at::Tensor& x, const at::Tensor& phi, at::Tensor& sq) {
  const int64_t n = x.size(0), g = x.size(1), r = phi.size(1);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* pp = phi.const_data_ptr<scalar_t>();
  scalar_t* sqp = sq.data_ptr<scalar_t>();
  const int64_t n_threads = at::get_num_threads();
  std::vector<double> acc(static_cast<size_t>(n_threads * r * g), 0.0);
  const int64_t grain = cpu::rows_per_task((r + 1) * g, kRowBlock);
  at::parallel_for(0, n, grain, [&](int64_t i0, int64_t i1) {
    double* mine = acc.data() + at::get_thread_num() * r * g;
    std::vector<scalar_t> block(static_cast<size_t>(r * g));
    for (int64_t b0 = i0; b0 < i1; b0 += kRowBlock) {
      std::fill(block.begin(), block.end(), scalar_t(0));
      const int64_t b1 = std::min(b0 + kRowBlock, i1);
      int64_t i = b0;
      if constexpr (std::is_same_v<scalar_t, float>) {
        // r = 2 (the gamma_c case): four rows per sweep of the accumulator block.
        for (; r == 2 && i + 4 <= b1; i += 4) {
          for (int64_t t = 0; t < 4; ++t) sqp[i + t] = row_dot(xp + (i + t) * g, xp + (i + t) * g, g);
          cpu::accumulate_4rows_r2(xp + i * g, g, pp + i * 2, g, block.data(), block.data() + g);
        }
      }
      for (; i < b1; ++i) {
        const scalar_t* xi = xp + i * g;
        sqp[i] = row_dot(xi, xi, g);
        for (int64_t q = 0; q < r; ++q) row_axpy(pp[i * r + q], xi, g, block.data() + q * g);
      }
      for (int64_t t = 0; t < r * g; ++t) mine[t] += block[t];
    }
  });
  auto at_ = at::zeros({r, g}, x.options().dtype(at::kDouble));
  double* out = at_.data_ptr<double>();
  for (int64_t t = 0; t < n_threads; ++t)
    for (int64_t e = 0; e < r * g; ++e) out[e] += acc[t * r * g + e];
  return at_;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_pair_form_cpu(const at::Tensor& x_in,
                                                                    const at::Tensor& phi_in) {
  detail::check_linear_pair_form_inputs(x_in, phi_in);
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "linear_pair_form: the CPU kernel takes float32 or float64, got ",
              x_in.scalar_type());
  const auto x = x_in.contiguous();
  const auto phi = phi_in.contiguous();
  auto sq = at::empty({x.size(0)}, x.options());
  at::Tensor a_t;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_pair_form_cpu", [&] {
    a_t = forward_stats<scalar_t>(x, phi, sq);
  });
  auto a = a_t.t().to(x.scalar_type()).contiguous();
  return {detail::linear_pair_form_from_stats(a_t.t(), phi, sq), a, sq};
}

template <typename scalar_t>
void backward_rows(const at::Tensor& x, const at::Tensor& phi, const at::Tensor& sq,
                   const at::Tensor& b_t, const at::Tensor& h, const at::Tensor& gr,
                   std::array<bool, 2> output_mask, at::Tensor& grad_x, at::Tensor& grad_phi) {
  const int64_t n = x.size(0), g = x.size(1), r = phi.size(1);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* pp = phi.const_data_ptr<scalar_t>();
  const scalar_t* sqp = sq.const_data_ptr<scalar_t>();
  const scalar_t* bp = b_t.const_data_ptr<scalar_t>();
  const scalar_t* hp = h.const_data_ptr<scalar_t>();
  const scalar_t* gp = gr.const_data_ptr<scalar_t>();
  const int64_t grain = cpu::rows_per_task((r + 1) * g, kRowBlock);
  at::parallel_for(0, n, grain, [&](int64_t i0, int64_t i1) {
    if (output_mask[1]) {
      std::vector<scalar_t> xb(static_cast<size_t>(kRowBlock * r));  // x_i . B_q per row
      for (int64_t c0 = i0; c0 < i1; c0 += kRowBlock) {
        const int64_t c1 = std::min(c0 + kRowBlock, i1);
        int64_t i = c0;
        if constexpr (std::is_same_v<scalar_t, float>) {
          for (; r == 2 && i + 4 <= c1; i += 4) {
            cpu::dot_4rows_2cols(xp + i * g, g, bp, bp + g, g, xb.data() + (i - c0) * 2);
          }
        }
        for (; i < c1; ++i) {
          for (int64_t q = 0; q < r; ++q) {
            xb[(i - c0) * r + q] = row_dot(xp + i * g, bp + q * g, g);
          }
        }
        for (i = c0; i < c1; ++i) {
          const scalar_t* pi = pp + i * r;
          scalar_t* out = grad_phi.data_ptr<scalar_t>() + i * r;
          for (int64_t q = 0; q < r; ++q) {
            scalar_t ph = 0;
            for (int64_t t = 0; t < r; ++t) ph += pi[t] * hp[t * r + q];
            out[q] = xb[(i - c0) * r + q] - sqp[i] * ph;
          }
        }
      }
    }
    if (output_mask[0]) {
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* xi = xp + i * g;
        const scalar_t* pi = pp + i * r;
        scalar_t w = 0;
        for (int64_t q1 = 0; q1 < r; ++q1)
          for (int64_t q2 = 0; q2 < r; ++q2) w += pi[q1] * gp[q1 * r + q2] * pi[q2];
        scalar_t* out = grad_x.data_ptr<scalar_t>() + i * g;
        for (int64_t j = 0; j < g; ++j) out[j] = -2 * w * xi[j];
        for (int64_t q = 0; q < r; ++q) row_axpy(pi[q], bp + q * g, g, out);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> linear_pair_form_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x_in, const at::Tensor& phi_in,
    const at::Tensor& a, const at::Tensor& sq_in, std::array<bool, 2> output_mask) {
  detail::check_linear_pair_form_backward_inputs(grad, x_in, phi_in, a, sq_in);
  const auto x = x_in.contiguous();
  const auto phi = phi_in.contiguous();
  const auto sq = sq_in.contiguous();
  const auto gr = grad.to(x.scalar_type()).contiguous();  // may arrive expanded or strided
  const auto h = (gr + gr.t()).contiguous();
  const auto b_t = at::mm(a, h).t().contiguous();  // B^T, r x G
  auto grad_x = output_mask[0] ? at::empty_like(x) : at::empty({0}, x.options());
  auto grad_phi = output_mask[1] ? at::empty_like(phi) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_pair_form_backward_cpu", [&] {
    backward_rows<scalar_t>(x, phi, sq, b_t, h, gr, output_mask, grad_x, grad_phi);
  });
  return {grad_x, grad_phi};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, CPU, m) {
  m.impl("linear_pair_form", &linear_pair_form_cpu);
  m.impl("_linear_pair_form_backward", &linear_pair_form_backward_cpu);
}

}  // namespace acsleuth
