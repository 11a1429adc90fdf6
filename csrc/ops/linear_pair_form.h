// Linear pair form: the gamma_c MMD loss's statistics for the linear kernel k = x_i . x_j,
// exact in O(N G) time and one pass over x.
//
//   forward   A = x^T phi (G x r),  sq_i = |x_i|^2,  S = A^T A - phi^T diag(sq) phi   (r x r)
//   backward  H = grad + grad^T,  B = A H (G x r),  w_i = phi_i^T grad phi_i
//             grad_phi[i] = x_i B - sq_i phi_i H
//             grad_x[i]   = B phi_i - 2 w_i x_i
// output_mask = (need grad_x, need grad_phi); an unneeded gradient comes back empty (0 elements).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <tuple>

namespace acsleuth {

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_pair_form(const at::Tensor& x,
                                                                const at::Tensor& phi);

std::tuple<at::Tensor, at::Tensor> linear_pair_form_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi, const at::Tensor& a,
    const at::Tensor& sq, std::array<bool, 2> output_mask);

namespace detail {
void check_linear_pair_form_inputs(const at::Tensor& x, const at::Tensor& phi);
// Also checks grad (r x r), a (G x r) and sq (N) against x and phi.
void check_linear_pair_form_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                            const at::Tensor& phi, const at::Tensor& a,
                                            const at::Tensor& sq);
// S = A^T A - phi^T diag(sq) phi, accumulated in float64 and returned in x's dtype.
at::Tensor linear_pair_form_from_stats(const at::Tensor& a, const at::Tensor& phi,
                                       const at::Tensor& sq);
}  // namespace detail

}  // namespace acsleuth
