// Autograd for linear_pair_form: S is differentiable; A and sq are saved statistics.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../linear_pair_form.h"

namespace acsleuth {
namespace {

class LinearPairFormFunction : public torch::autograd::Function<LinearPairFormFunction> {
 public:
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx,
                                              const at::Tensor& x, const at::Tensor& phi) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [s, a, sq] = linear_pair_form(x, phi);
    ctx->save_for_backward({x, phi, a, sq});
    ctx->mark_non_differentiable({a, sq});
    return {s, a, sq};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const std::array<bool, 2> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    auto [grad_x, grad_phi] =
        linear_pair_form_backward(grads[0], saved[0], saved[1], saved[2], saved[3], mask);
    return {mask[0] ? grad_x : at::Tensor(), mask[1] ? grad_phi : at::Tensor()};
  }
};

class LinearPairFormBackwardFunction
    : public torch::autograd::Function<LinearPairFormBackwardFunction> {
 public:
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext*,
                                              const at::Tensor& grad, const at::Tensor& x,
                                              const at::Tensor& phi, const at::Tensor& a,
                                              const at::Tensor& sq, std::array<bool, 2> mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_x, grad_phi] = linear_pair_form_backward(grad, x, phi, a, sq, mask);
    return {grad_x, grad_phi};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext*,
                                               torch::autograd::tensor_list) {
    TORCH_CHECK(false, "acsleuth: double backward of linear_pair_form is not supported");
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_pair_form_autograd(const at::Tensor& x,
                                                                         const at::Tensor& phi) {
  auto out = LinearPairFormFunction::apply(x, phi);
  return {out[0], out[1], out[2]};
}

std::tuple<at::Tensor, at::Tensor> linear_pair_form_backward_autograd(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi, const at::Tensor& a,
    const at::Tensor& sq, std::array<bool, 2> output_mask) {
  auto out = LinearPairFormBackwardFunction::apply(grad, x, phi, a, sq, output_mask);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, Autograd, m) {
  m.impl("linear_pair_form", &linear_pair_form_autograd);
  m.impl("_linear_pair_form_backward", &linear_pair_form_backward_autograd);
}

}  // namespace acsleuth
