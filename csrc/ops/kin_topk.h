// Streaming top-k similarity search (kin matching): for every query row, the k keys of
// highest similarity, sorted by decreasing value; ties go to the lower key index.
//
//   metric "dot":     s_ij = q_i . k_j
//   metric "cosine":  s_ij = q_i . k_j / (max(|q_i|, 1e-12) max(|k_j|, 1e-12))
//
// Keys are visited in tiles with a running top-k per query: memory is O((N_q + N_k) d + N_q k),
// never N_q x N_k. No gradient. allow_tf32 lets the CUDA backend use TF32 tensor cores.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>

namespace acsleuth {

constexpr int64_t kMaxTopK = 64;

std::tuple<at::Tensor, at::Tensor> kin_topk(const at::Tensor& query, const at::Tensor& keys,
                                            int64_t k, c10::string_view metric,
                                            bool allow_tf32);

namespace detail {
constexpr double kCosineEps = 1e-12;
// Checks inputs and returns true for the cosine metric, false for dot.
bool check_kin_topk_inputs(const at::Tensor& query, const at::Tensor& keys, int64_t k,
                           c10::string_view metric);
// 1 / max(|row|, eps) for every row, in float32 (or float64 for float64 input).
at::Tensor inverse_row_norms(const at::Tensor& x);
}  // namespace detail

}  // namespace acsleuth
