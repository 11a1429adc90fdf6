#include "gaussian_pair_form.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace acsleuth {

at::Tensor gaussian_pair_form(const at::Tensor& x, const at::Tensor& phi,
                              at::ArrayRef<double> bandwidths) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("acsleuth::gaussian_pair_form", "")
                       .typed<decltype(gaussian_pair_form)>();
  return op.call(x, phi, bandwidths);
}

std::tuple<at::Tensor, at::Tensor> gaussian_pair_form_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi,
    at::ArrayRef<double> bandwidths) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("acsleuth::_gaussian_pair_form_backward", "")
                       .typed<decltype(gaussian_pair_form_backward)>();
  return op.call(grad, x, phi, bandwidths);
}

namespace detail {

void check_gaussian_pair_form_inputs(const at::Tensor& x, const at::Tensor& phi,
                                     at::ArrayRef<double> bandwidths) {
  TORCH_CHECK(x.dim() == 2, "gaussian_pair_form: x must be 2-D (cells x features), got ",
              x.dim(), "-D");
  TORCH_CHECK(phi.dim() == 2, "gaussian_pair_form: phi must be 2-D (cells x r), got ",
              phi.dim(), "-D");
  TORCH_CHECK(x.size(0) == phi.size(0), "gaussian_pair_form: x has ", x.size(0),
              " rows but phi has ", phi.size(0));
  TORCH_CHECK(x.scalar_type() == phi.scalar_type(), "gaussian_pair_form: x is ",
              x.scalar_type(), " but phi is ", phi.scalar_type(), "; cast one of them");
  TORCH_CHECK(x.device() == phi.device(), "gaussian_pair_form: x is on ", x.device(),
              " but phi is on ", phi.device());
  TORCH_CHECK(!bandwidths.empty(), "gaussian_pair_form: give at least one bandwidth");
  for (double s : bandwidths) {
    TORCH_CHECK(s > 0.0 && std::isfinite(s),
                "gaussian_pair_form: bandwidths must be finite and > 0, got ", s);
  }
}

at::Tensor centered(const at::Tensor& x) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return (x - x.mean({0}, /*keepdim=*/true, acc).to(x.scalar_type())).contiguous();
}

std::vector<double> gaussian_coefficients(at::ArrayRef<double> bandwidths) {
  std::vector<double> c;
  c.reserve(bandwidths.size());
  for (double s : bandwidths) c.push_back(0.5 / (s * s));
  return c;
}

}  // namespace detail
}  // namespace acsleuth
