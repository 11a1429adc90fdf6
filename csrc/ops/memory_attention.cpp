#include "memory_attention.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace acsleuth {

std::tuple<at::Tensor, at::Tensor> memory_attention(const at::Tensor& z,
                                                    const at::Tensor& memory,
                                                    double temperature, double shrink) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("acsleuth::memory_attention", "")
                       .typed<decltype(memory_attention)>();
  return op.call(z, memory, temperature, shrink);
}

std::tuple<at::Tensor, at::Tensor> memory_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& z, const at::Tensor& memory,
    const at::Tensor& probs, double temperature, double shrink) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("acsleuth::_memory_attention_backward", "")
                       .typed<decltype(memory_attention_backward)>();
  return op.call(grad_out, z, memory, probs, temperature, shrink);
}

namespace detail {

void check_memory_attention_inputs(const at::Tensor& z, const at::Tensor& memory,
                                   double temperature, double shrink) {
  TORCH_CHECK(z.dim() == 2, "memory_attention: z must be 2-D (batch x p), got ", z.dim(),
              "-D");
  TORCH_CHECK(memory.dim() == 2, "memory_attention: memory must be 2-D (slots x p), got ",
              memory.dim(), "-D");
  TORCH_CHECK(z.size(1) == memory.size(1), "memory_attention: z has ", z.size(1),
              " features but memory has ", memory.size(1));
  TORCH_CHECK(memory.size(0) > 0, "memory_attention: memory has no slots");
  TORCH_CHECK(z.scalar_type() == memory.scalar_type(), "memory_attention: z is ",
              z.scalar_type(), " but memory is ", memory.scalar_type());
  TORCH_CHECK(z.device() == memory.device(), "memory_attention: z is on ", z.device(),
              " but memory is on ", memory.device());
  TORCH_CHECK(temperature > 0.0 && std::isfinite(temperature),
              "memory_attention: temperature must be finite and > 0, got ", temperature);
  TORCH_CHECK(shrink >= 0.0 && shrink < 1.0,
              "memory_attention: shrink must be in [0, 1), got ", shrink);
}

}  // namespace detail
}  // namespace acsleuth
