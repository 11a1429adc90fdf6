// Memory-bank attention of the anomaly generator (MemAE style), forward and backward.
//
//   forward   a   = softmax(z M^T / t)                                  probs, (B x N_mem)
//             s_k = relu(a_k - l) a_k / (|a_k - l| + 1e-12)             hard shrinkage
//             w   = s / max(sum_k s_k, 1e-12)                           L1 renormalisation
//             out = w M                                                 (B x p)
//   backward  gw = g M^T;  S = sum_k s_k
//             gs_k = (gw_k - sum_l gw_l w_l) / S        if S > 1e-12, else gw_k / 1e-12
//             ga_k = gs_k [(u + a)(u + e) - u a] / (u + e)^2  with u = a_k - l, e = 1e-12,
//                    if a_k > l, else 0
//             gl_k = a_k (ga_k - sum_l a_l ga_l) / t
//             grad_z = gl M;  grad_memory = w^T g + gl^T z
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace acsleuth {

// Returns (out, probs): probs is the softmax, kept for the backward pass.
std::tuple<at::Tensor, at::Tensor> memory_attention(const at::Tensor& z,
                                                    const at::Tensor& memory,
                                                    double temperature, double shrink);

std::tuple<at::Tensor, at::Tensor> memory_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& z, const at::Tensor& memory,
    const at::Tensor& probs, double temperature, double shrink);

namespace detail {
constexpr double kShrinkEps = 1e-12;
constexpr double kNormEps = 1e-12;
void check_memory_attention_inputs(const at::Tensor& z, const at::Tensor& memory,
                                   double temperature, double shrink);
}  // namespace detail

}  // namespace acsleuth
