// Every acsleuth op schema, in one place. Implementations register per dispatch key in
// ops/cpu, ops/cuda and ops/autograd; Python registers the fake (meta) kernels.
#include <torch/library.h>

TORCH_LIBRARY(acsleuth, m) {
  // S = sum_{i != j} k(x_i, x_j) phi_i phi_j^T  with  k = sum_b exp(-|x_i - x_j|^2 / (2 s_b^2)).
  m.def("gaussian_pair_form(Tensor x, Tensor phi, float[] bandwidths) -> Tensor");
  m.def(
      "_gaussian_pair_form_backward(Tensor grad, Tensor x, Tensor phi, float[] bandwidths)"
      " -> (Tensor, Tensor)");
  // Linear kernel in closed form, one pass over x: (S, A = x^T phi, sq_i = |x_i|^2), where
  // S = A^T A - phi^T diag(sq) phi = sum_{i != j} (x_i . x_j) phi_i phi_j^T.
  m.def("linear_pair_form(Tensor x, Tensor phi) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_linear_pair_form_backward(Tensor grad, Tensor x, Tensor phi, Tensor a, Tensor sq,"
      " bool[2] output_mask) -> (Tensor, Tensor)");
  // (out, probs): out = normalize_l1(hard_shrink(softmax(z M^T / t))) M; probs = the softmax.
  m.def(
      "memory_attention(Tensor z, Tensor memory, float temperature, float shrink)"
      " -> (Tensor, Tensor)");
  m.def(
      "_memory_attention_backward(Tensor grad_out, Tensor z, Tensor memory, Tensor probs,"
      " float temperature, float shrink) -> (Tensor, Tensor)");
  // Streaming top-k similarity search; (values, int64 indices), both (N_q, k).
  m.def(
      "kin_topk(Tensor query, Tensor keys, int k, str metric, bool allow_tf32)"
      " -> (Tensor, Tensor)");
}
