// linear_pair_form on CUDA. Every step is a memory-bound pass over x (G x r products with
// r = 2 and a row-norm reduction), which cuBLAS and ATen's reductions already run at memory
// bandwidth, so this backend composes them; no N x N or N x G temporary is created.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../linear_pair_form.h"

namespace acsleuth {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_pair_form_cuda(const at::Tensor& x,
                                                                     const at::Tensor& phi) {
  detail::check_linear_pair_form_inputs(x, phi);
  c10::cuda::CUDAGuard guard(x.device());
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto a = at::mm(phi.t().to(acc), x.to(acc)).t().contiguous();  // G x r
  const auto sq = at::linalg_vector_norm(x, 2, {1}, false, acc).square();
  return {detail::linear_pair_form_from_stats(a, phi, sq), a.to(x.scalar_type()),
          sq.to(x.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> linear_pair_form_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi, const at::Tensor& a,
    const at::Tensor& sq, std::array<bool, 2> output_mask) {
  detail::check_linear_pair_form_backward_inputs(grad, x, phi, a, sq);
  c10::cuda::CUDAGuard guard(x.device());
  const auto gr = grad.to(x.scalar_type());
  const auto h = gr + gr.t();
  const auto b = at::mm(a, h);  // G x r
  auto grad_x = at::empty({0}, x.options());
  auto grad_phi = at::empty({0}, x.options());
  if (output_mask[1]) {
    grad_phi = at::mm(x, b) - sq.unsqueeze(1) * at::mm(phi, h);
  }
  if (output_mask[0]) {
    const auto w = (at::mm(phi, gr) * phi).sum(1, true);
    grad_x = at::mm(phi, b.t()).addcmul_(x, w, -2);
  }
  return {grad_x, grad_phi};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, CUDA, m) {
  m.impl("linear_pair_form", &linear_pair_form_cuda);
  m.impl("_linear_pair_form_backward", &linear_pair_form_backward_cuda);
}

}  // namespace acsleuth
