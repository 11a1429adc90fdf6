// Autograd for gaussian_pair_form: forward and backward both go through the dispatcher, so
// every backend (CPU, CUDA) gets gradients from this one registration.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../gaussian_pair_form.h"

namespace acsleuth {
namespace {

class GaussianPairFormFunction
    : public torch::autograd::Function<GaussianPairFormFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& phi, std::vector<double> bandwidths) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, phi});
    ctx->saved_data["bandwidths"] = bandwidths;
    return gaussian_pair_form(x, phi, bandwidths);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    auto bandwidths = ctx->saved_data["bandwidths"].toDoubleVector();
    auto [grad_x, grad_phi] =
        gaussian_pair_form_backward(grads[0], saved[0], saved[1], bandwidths);
    return {grad_x, grad_phi, at::Tensor()};
  }
};

// The backward of the backward is not implemented: fail loudly instead of returning zeros.
class GaussianPairFormBackwardFunction
    : public torch::autograd::Function<GaussianPairFormBackwardFunction> {
 public:
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx,
                                              const at::Tensor& grad, const at::Tensor& x,
                                              const at::Tensor& phi,
                                              std::vector<double> bandwidths) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_x, grad_phi] = gaussian_pair_form_backward(grad, x, phi, bandwidths);
    return {grad_x, grad_phi};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext*,
                                               torch::autograd::tensor_list) {
    TORCH_CHECK(false, "acsleuth: double backward of gaussian_pair_form is not supported");
  }
};

at::Tensor gaussian_pair_form_autograd(const at::Tensor& x, const at::Tensor& phi,
                                       at::ArrayRef<double> bandwidths) {
  return GaussianPairFormFunction::apply(x, phi, bandwidths.vec());
}

std::tuple<at::Tensor, at::Tensor> gaussian_pair_form_backward_autograd(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi,
    at::ArrayRef<double> bandwidths) {
  auto out = GaussianPairFormBackwardFunction::apply(grad, x, phi, bandwidths.vec());
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, Autograd, m) {
  m.impl("gaussian_pair_form", &gaussian_pair_form_autograd);
  m.impl("_gaussian_pair_form_backward", &gaussian_pair_form_backward_autograd);
}

}  // namespace acsleuth
