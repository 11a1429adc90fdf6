// Gaussian pair form: the kernel-matrix x thin-matrix product behind the gamma_c MMD loss.
//
//   forward   S[a,b] = sum_{i != j} k_ij phi[i,a] phi[j,b]                         (r x r)
//             k_ij   = sum_b exp(-c_b d_ij),  d_ij = |x_i - x_j|^2,  c_b = 1 / (2 s_b^2)
//   backward  H = grad + grad^T,  psi = phi H                                        (N x r)
//             grad_phi[i] = sum_{j != i} k_ij psi[j]
//             A_ij        = 2 (phi_i . psi_j) sum_b c_b exp(-c_b d_ij)               (i != j)
//             grad_x[i]   = sum_j A_ij (x_j - x_i)
//
// No N x N matrix is ever stored: kernels work tile by tile with O(N r) extra memory
// (the CUDA backward adds a bounded workspace of row chunks).
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace acsleuth {

at::Tensor gaussian_pair_form(const at::Tensor& x, const at::Tensor& phi,
                              at::ArrayRef<double> bandwidths);

std::tuple<at::Tensor, at::Tensor> gaussian_pair_form_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi,
    at::ArrayRef<double> bandwidths);

namespace detail {
// Shape/dtype/device checks shared by every backend.
void check_gaussian_pair_form_inputs(const at::Tensor& x, const at::Tensor& phi,
                                     at::ArrayRef<double> bandwidths);
// x minus its column means, contiguous. k depends only on differences, so S and both
// gradients are unchanged, while |x_i|^2 + |x_j|^2 - 2 x_i.x_j no longer cancels away the
// precision of float32 inputs far from the origin.
at::Tensor centered(const at::Tensor& x);
// c_b = 1 / (2 s_b^2) for each bandwidth s_b.
std::vector<double> gaussian_coefficients(at::ArrayRef<double> bandwidths);
}  // namespace detail

}  // namespace acsleuth
