// kin_topk on CPU. Queries are split into blocks of kQueryBlock rows across threads; each
// thread multiplies its block by key tiles of kKeyTile rows (one single-threaded GEMM per
// tile, small enough to stay in cache) and folds the tile into its running top-k at once.
// Cosine similarity normalises copies of both inputs first, so huge norms cannot overflow.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>

#include "../kin_topk.h"
#include "row_math.h"
#include "topk_merge.h"

namespace acsleuth {
namespace {

constexpr int64_t kQueryBlock = 512;
constexpr int64_t kKeyTile = 1024;

template <typename scalar_t>
void fold_tile(const scalar_t* tile, int64_t rows, int64_t cols, int64_t key0, int64_t k,
               scalar_t* vals, int64_t* idx) {
  for (int64_t i = 0; i < rows; ++i) {
    const scalar_t* s = tile + i * cols;
    scalar_t* v = vals + i * k;
    int64_t* ix = idx + i * k;
    if (k == 1) {
      scalar_t best;
      if constexpr (std::is_same_v<scalar_t, float>) {
        best = cpu::row_max(s, cols);
      } else {
        best = -std::numeric_limits<scalar_t>::infinity();
        for (int64_t j = 0; j < cols; ++j) best = s[j] > best ? s[j] : best;
      }
      if (best > v[0]) {
        int64_t j = 0;
        while (!(s[j] == best)) ++j;
        v[0] = best;
        ix[0] = key0 + j;
      }
      continue;
    }
    for (int64_t j = 0; j < cols; ++j) cpu::topk_insert(v, ix, k, s[j], key0 + j);
  }
}

template <typename scalar_t>
void kin_topk_impl(const at::Tensor& query, const at::Tensor& keys, int64_t k,
                   at::Tensor& values, at::Tensor& indices) {
  const int64_t nq = query.size(0);
  const int64_t nk = keys.size(0);
  const int64_t n_blocks = (nq + kQueryBlock - 1) / kQueryBlock;
  scalar_t* vals = values.data_ptr<scalar_t>();
  int64_t* idx = indices.data_ptr<int64_t>();
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    // Worker threads do not inherit the caller's dispatch state: skip autograd here too.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto buffer = at::empty({kQueryBlock * kKeyTile}, query.options());
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t q0 = b * kQueryBlock;
      const int64_t qn = std::min(kQueryBlock, nq - q0);
      const auto q = query.narrow(0, q0, qn);
      for (int64_t k0 = 0; k0 < nk; k0 += kKeyTile) {
        const int64_t kn = std::min(kKeyTile, nk - k0);
        at::Tensor tile = at::from_blob(static_cast<scalar_t*>(buffer.data_ptr()), {qn, kn}, query.options());
        at::mm_out(tile, q, keys.narrow(0, k0, kn).t());
        fold_tile(tile.const_data_ptr<scalar_t>(), qn, kn, k0, k, vals + q0 * k,
                  idx + q0 * k);
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> kin_topk_cpu(const at::Tensor& query, const at::Tensor& keys,
                                                int64_t k, c10::string_view metric,
                                                bool /*allow_tf32*/) {
  const bool cosine = detail::check_kin_topk_inputs(query, keys, k, metric);
  TORCH_CHECK(query.scalar_type() == at::kFloat || query.scalar_type() == at::kDouble,
              "kin_topk: the CPU kernel takes float32 or float64, got ", query.scalar_type());
  auto values = at::full({query.size(0), k}, -std::numeric_limits<double>::infinity(),
                         query.options());
  auto indices = at::full({query.size(0), k}, -1, query.options().dtype(at::kLong));
  if (query.size(0) == 0 || keys.size(0) == 0) return {values, indices};
  auto q = query.contiguous();
  auto kk = keys.contiguous();
  if (cosine) {
    q = q * detail::inverse_row_norms(q).to(q.scalar_type()).unsqueeze(1);
    kk = kk * detail::inverse_row_norms(kk).to(kk.scalar_type()).unsqueeze(1);
  }
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "kin_topk_cpu", [&] {
    kin_topk_impl<scalar_t>(q, kk, k, values, indices);
  });
  return {values, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, CPU, m) { m.impl("kin_topk", &kin_topk_cpu); }

}  // namespace acsleuth
