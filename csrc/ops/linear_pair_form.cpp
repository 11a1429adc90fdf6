#include "linear_pair_form.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace acsleuth {

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_pair_form(const at::Tensor& x,
                                                                const at::Tensor& phi) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("acsleuth::linear_pair_form", "")
                       .typed<decltype(linear_pair_form)>();
  return op.call(x, phi);
}

std::tuple<at::Tensor, at::Tensor> linear_pair_form_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi, const at::Tensor& a,
    const at::Tensor& sq, std::array<bool, 2> output_mask) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("acsleuth::_linear_pair_form_backward", "")
                       .typed<decltype(linear_pair_form_backward)>();
  return op.call(grad, x, phi, a, sq, output_mask);
}

namespace detail {

void check_linear_pair_form_inputs(const at::Tensor& x, const at::Tensor& phi) {
  TORCH_CHECK(x.dim() == 2, "linear_pair_form: x must be 2-D (cells x features), got ",
              x.dim(), "-D");
  TORCH_CHECK(phi.dim() == 2, "linear_pair_form: phi must be 2-D (cells x r), got ", phi.dim(),
              "-D");
  TORCH_CHECK(x.size(0) == phi.size(0), "linear_pair_form: x has ", x.size(0),
              " rows but phi has ", phi.size(0));
  TORCH_CHECK(x.scalar_type() == phi.scalar_type(), "linear_pair_form: x is ", x.scalar_type(),
              " but phi is ", phi.scalar_type(), "; cast one of them");
  TORCH_CHECK(x.device() == phi.device(), "linear_pair_form: x is on ", x.device(),
              " but phi is on ", phi.device());
}

void check_linear_pair_form_backward_inputs(const at::Tensor& grad, const at::Tensor& x,
                                            const at::Tensor& phi, const at::Tensor& a,
                                            const at::Tensor& sq) {
  check_linear_pair_form_inputs(x, phi);
  const int64_t n = x.size(0), g = x.size(1), r = phi.size(1);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == r && grad.size(1) == r,
              "linear_pair_form backward: grad must be ", r, " x ", r, ", got ", grad.sizes());
  TORCH_CHECK(a.dim() == 2 && a.size(0) == g && a.size(1) == r,
              "linear_pair_form backward: a must be ", g, " x ", r, ", got ", a.sizes());
  TORCH_CHECK(sq.dim() == 1 && sq.size(0) == n, "linear_pair_form backward: sq must have ", n,
              " entries, got ", sq.sizes());
  for (const auto* t : {&grad, &a, &sq}) {
    TORCH_CHECK(t->device() == x.device(), "linear_pair_form backward: all inputs must be on ",
                x.device());
  }
}

at::Tensor linear_pair_form_from_stats(const at::Tensor& a, const at::Tensor& phi,
                                       const at::Tensor& sq) {
  const auto a64 = a.to(at::kDouble);
  const auto phi64 = phi.to(at::kDouble);
  auto s = at::mm(a64.t(), a64) - at::mm(phi64.t(), phi64 * sq.to(at::kDouble).unsqueeze(1));
  return s.to(phi.scalar_type());
}

}  // namespace detail
}  // namespace acsleuth
