#include "kin_topk.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace acsleuth {

std::tuple<at::Tensor, at::Tensor> kin_topk(const at::Tensor& query, const at::Tensor& keys,
                                            int64_t k, c10::string_view metric,
                                            bool allow_tf32) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("acsleuth::kin_topk", "")
                       .typed<decltype(kin_topk)>();
  return op.call(query, keys, k, metric, allow_tf32);
}

namespace detail {

bool check_kin_topk_inputs(const at::Tensor& query, const at::Tensor& keys, int64_t k,
                           c10::string_view metric) {
  TORCH_CHECK(query.dim() == 2, "kin_topk: query must be 2-D (cells x d), got ",
              query.dim(), "-D");
  TORCH_CHECK(keys.dim() == 2, "kin_topk: keys must be 2-D (cells x d), got ", keys.dim(),
              "-D");
  TORCH_CHECK(query.size(1) == keys.size(1), "kin_topk: query has ", query.size(1),
              " features but keys have ", keys.size(1));
  TORCH_CHECK(query.scalar_type() == keys.scalar_type(), "kin_topk: query is ",
              query.scalar_type(), " but keys are ", keys.scalar_type());
  TORCH_CHECK(query.device() == keys.device(), "kin_topk: query is on ", query.device(),
              " but keys are on ", keys.device());
  TORCH_CHECK(k >= 1 && k <= kMaxTopK, "kin_topk: k must be in [1, ", kMaxTopK, "], got ", k);
  TORCH_CHECK(k <= keys.size(0), "kin_topk: k = ", k, " but there are only ", keys.size(0),
              " keys; lower k or add keys");
  TORCH_CHECK(metric == "cosine" || metric == "dot",
              "kin_topk: metric must be 'cosine' or 'dot', got '", std::string(metric), "'");
  return metric == "cosine";
}

at::Tensor inverse_row_norms(const at::Tensor& x) {
  auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return x.to(acc).norm(2, {1}).clamp_min(kCosineEps).reciprocal();
}

}  // namespace detail
}  // namespace acsleuth
