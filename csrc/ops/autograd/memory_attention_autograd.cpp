// Autograd for memory_attention, apart from compute: the backward is its own dispatched op.
#include <torch/autograd.h>
#include <torch/library.h>

#include "../memory_attention.h"

namespace acsleuth {
namespace {

class MemoryAttentionFunction : public torch::autograd::Function<MemoryAttentionFunction> {
 public:
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext* ctx,
                                              const at::Tensor& z, const at::Tensor& memory,
                                              double temperature, double shrink) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, probs] = memory_attention(z, memory, temperature, shrink);
    ctx->save_for_backward({z, memory, probs});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["shrink"] = shrink;
    ctx->mark_non_differentiable({probs});
    return {out, probs};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [grad_z, grad_memory] = memory_attention_backward(
        grads[0], saved[0], saved[1], saved[2], ctx->saved_data["temperature"].toDouble(),
        ctx->saved_data["shrink"].toDouble());
    return {grad_z, grad_memory, at::Tensor(), at::Tensor()};
  }
};

class MemoryAttentionBackwardFunction
    : public torch::autograd::Function<MemoryAttentionBackwardFunction> {
 public:
  static torch::autograd::tensor_list forward(torch::autograd::AutogradContext*,
                                              const at::Tensor& grad_out, const at::Tensor& z,
                                              const at::Tensor& memory, const at::Tensor& probs,
                                              double temperature, double shrink) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_z, grad_memory] =
        memory_attention_backward(grad_out, z, memory, probs, temperature, shrink);
    return {grad_z, grad_memory};
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext*,
                                               torch::autograd::tensor_list) {
    TORCH_CHECK(false, "acsleuth: double backward of memory_attention is not supported");
  }
};

std::tuple<at::Tensor, at::Tensor> memory_attention_autograd(const at::Tensor& z,
                                                             const at::Tensor& memory,
                                                             double temperature, double shrink) {
  auto out = MemoryAttentionFunction::apply(z, memory, temperature, shrink);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> memory_attention_backward_autograd(
    const at::Tensor& grad_out, const at::Tensor& z, const at::Tensor& memory,
    const at::Tensor& probs, double temperature, double shrink) {
  auto out = MemoryAttentionBackwardFunction::apply(grad_out, z, memory, probs, temperature,
                                                    shrink);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, Autograd, m) {
  m.impl("memory_attention", &memory_attention_autograd);
  m.impl("_memory_attention_backward", &memory_attention_backward_autograd);
}

}  // namespace acsleuth
