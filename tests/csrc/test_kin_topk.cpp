// kin_topk (CPU) against a dense ATen reference: the full similarity matrix in float64, sorted
// with a stable descending sort, so ties keep the lower key index first.
//
// Values are compared with a tolerance. Indices are compared exactly wherever the reference
// has no near-tie in the first k + 1 places of a row (elsewhere rounding may legitimately swap
// keys); every row is also checked for consistency: valid distinct indices, values sorted
// descending, each value equal to the reference similarity of its key, equal values in
// ascending key order. Exact ties are tested on inputs whose similarities are exact in
// floating point (small integers, +-1 entries), where the order must match exactly.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "ops/kin_topk.h"
#include "test_harness.h"

namespace {

using acsleuth_test::opts;
using acsleuth_test::rtol_for;

constexpr int64_t kQueryBlock = 512;  // CPU kernel: query rows per block
constexpr int64_t kKeyTile = 1024;    // CPU kernel: key rows per tile

// Dense similarities in float64: q k^T, rows normalised by max(|row|, 1e-12) for cosine.
at::Tensor similarities(const at::Tensor& query, const at::Tensor& keys,
                        const std::string& metric) {
  auto q = query.to(at::kDouble);
  auto k = keys.to(at::kDouble);
  if (metric == "cosine") {
    q = q / q.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
    k = k / k.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
  }
  return q.mm(k.t());
}

// The dense similarities (float64) and each row sorted by a stable descending sort; the
// reference answer for any k is the first k columns of the sorted pair.
struct Reference {
  at::Tensor sims, values, indices;
  Reference(const at::Tensor& query, const at::Tensor& keys, const std::string& metric)
      : sims(similarities(query, keys, metric)) {
    std::tie(values, indices) = sims.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true);
  }
};

// Checks one kin_topk result against the reference.
void check_result(const at::Tensor& values, const at::Tensor& indices, const Reference& ref,
                  int64_t k, double rtol) {
  const int64_t nq = ref.sims.size(0), nk = ref.sims.size(1);
  REQUIRE(values.sizes() == at::IntArrayRef({nq, k}));
  REQUIRE(indices.sizes() == at::IntArrayRef({nq, k}));
  REQUIRE(indices.scalar_type() == at::kLong);
  if (nq == 0) return;
  const double atol = acsleuth_test::scaled_atol(ref.sims, rtol);

  // Values: the k largest similarities, in order.
  CHECK_CLOSE(values, ref.values.narrow(1, 0, k), 0.0, atol);
  // Indices: in range, distinct within a row, and pointing at keys with those similarities.
  REQUIRE(indices.min().item<int64_t>() >= 0 && indices.max().item<int64_t>() < nk);
  if (k > 1) {
    const auto sorted = std::get<0>(indices.sort(1));
    CHECK((sorted.narrow(1, 1, k - 1) != sorted.narrow(1, 0, k - 1)).all().item<bool>());
    // Sorted descending; equal values keep ascending key order.
    const auto v0 = values.narrow(1, 0, k - 1), v1 = values.narrow(1, 1, k - 1);
    const auto i0 = indices.narrow(1, 0, k - 1), i1 = indices.narrow(1, 1, k - 1);
    CHECK((v0 >= v1).all().item<bool>());
    CHECK(((v0 != v1) | (i0 < i1)).all().item<bool>());
  }
  CHECK_CLOSE(ref.sims.gather(1, indices), values, 0.0, atol);

  // Exact indices on rows without a near-tie among the first min(k + 1, nk) reference values.
  const int64_t m = std::min(k + 1, nk);
  auto clear = at::ones({nq}, at::TensorOptions().dtype(at::kBool));
  if (m > 1) {
    const auto top = ref.values.narrow(1, 0, m);
    clear = (top.narrow(1, 0, m - 1) - top.narrow(1, 1, m - 1) > 8 * atol).all(1);
  }
  const auto rows = clear.nonzero().squeeze(1);
  CHECK_CLOSE(indices.index_select(0, rows), ref.indices.narrow(1, 0, k).index_select(0, rows),
              0.0, 0.0);
}

struct Case {
  int64_t nq, nk, d;
};

// Query counts around the 512-row block and key counts around the 1024-row tile (d = 7), one
// three-block x three-tile case, and the extreme feature sizes on two shapes.
std::vector<Case> sweep_cases() {
  std::vector<Case> cases;
  for (int64_t nq : {1L, kQueryBlock - 1, kQueryBlock, kQueryBlock + 1}) {
    for (int64_t nk : {1L, 2L, kKeyTile - 1, kKeyTile, kKeyTile + 1, 2 * kKeyTile + 1}) {
      cases.push_back({nq, nk, 7});
    }
  }
  cases.push_back({2 * kQueryBlock + 1, 2 * kKeyTile + 1, 7});
  for (int64_t d : {1L, 33L}) {
    cases.push_back({2, 70, d});
    cases.push_back({kQueryBlock + 1, kKeyTile + 1, d});
  }
  return cases;
}

void run_random_sweep(at::ScalarType dtype) {
  torch::manual_seed(dtype == at::kDouble ? 21 : 22);
  for (const std::string metric : {"cosine", "dot"}) {
    for (const auto& c : sweep_cases()) {
      const auto q = at::randn({c.nq, c.d}, opts(at::kDouble)).to(dtype);
      const auto keys = at::randn({c.nk, c.d}, opts(at::kDouble)).to(dtype);
      const Reference ref(q, keys, metric);
      for (int64_t k : {1L, 2L, 5L, acsleuth::kMaxTopK, c.nk}) {
        if (k > c.nk || k > acsleuth::kMaxTopK) continue;
        SCOPED_CONTEXT("metric=", metric, " nq=", c.nq, " nk=", c.nk, " d=", c.d, " k=", k,
                       " dtype=", dtype);
        const auto [values, indices] = acsleuth::kin_topk(q, keys, k, metric, false);
        CHECK(values.scalar_type() == dtype);
        check_result(values, indices, ref, k, rtol_for(dtype));
      }
    }
  }
}

// Exact comparison with the reference where every similarity is exact in floating point.
void check_exact(const at::Tensor& q, const at::Tensor& keys, int64_t k,
                 const std::string& metric) {
  const auto [values, indices] = acsleuth::kin_topk(q, keys, k, metric, false);
  const Reference ref(q, keys, metric);
  CHECK(at::equal(values.to(at::kDouble), ref.values.narrow(1, 0, k)));
  CHECK(at::equal(indices, ref.indices.narrow(1, 0, k)));
}

}  // namespace

TEST_CASE(random_inputs_match_reference_float64) { run_random_sweep(at::kDouble); }

TEST_CASE(random_inputs_match_reference_float32) { run_random_sweep(at::kFloat); }

// Small-integer data: many exactly equal similarities (duplicate keys included), across key
// tiles and query blocks. Ties must come out in ascending key order, exactly as the stable sort.
TEST_CASE(ties_from_integer_data_dot) {
  torch::manual_seed(23);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const auto q = at::randint(-3, 4, {kQueryBlock + 3, 3}, opts(at::kDouble)).to(dtype);
    const auto keys = at::randint(-3, 4, {2 * kKeyTile + 5, 3}, opts(at::kDouble)).to(dtype);
    for (int64_t k : {1L, 2L, 17L, acsleuth::kMaxTopK}) {
      SCOPED_CONTEXT("k=", k, " dtype=", dtype);
      check_exact(q, keys, k, "dot");
    }
  }
}

// +-1 entries in 4 dimensions: norms are exactly 2, so cosine similarities are exact too.
TEST_CASE(ties_from_sign_data_cosine) {
  torch::manual_seed(24);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const auto q = (2 * at::randint(0, 2, {300, 4}, opts(at::kDouble)) - 1).to(dtype);
    const auto keys = (2 * at::randint(0, 2, {kKeyTile + 40, 4}, opts(at::kDouble)) - 1).to(dtype);
    for (int64_t k : {1L, 3L, 64L}) {
      SCOPED_CONTEXT("k=", k, " dtype=", dtype);
      check_exact(q, keys, k, "cosine");
    }
  }
}

// One best key duplicated in three tiles: all three copies, lowest index first.
TEST_CASE(duplicate_best_key_across_tiles) {
  torch::manual_seed(25);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (const std::string metric : {"dot", "cosine"}) {
      SCOPED_CONTEXT("metric=", metric, " dtype=", dtype);
      auto keys = at::rand({2500, 4}, opts(dtype)) * 0.5;  // entries in [0, 0.5)
      const auto best = at::tensor({4.0, 0.0, 0.0, 0.0}, opts(dtype));
      for (int64_t j : {2100L, 20L, kKeyTile}) keys[j] = best;
      const auto q = at::tensor({1.0, 0.0, 0.0, 0.0}, opts(dtype)).unsqueeze(0);
      const double top = metric == "dot" ? 4.0 : 1.0;
      for (int64_t k : {1L, 2L, 3L, 4L}) {
        const auto [values, indices] = acsleuth::kin_topk(q, keys, k, metric, false);
        const std::vector<int64_t> expected = {20, kKeyTile, 2100};
        for (int64_t i = 0; i < std::min<int64_t>(k, 3); ++i) {
          CHECK(indices[0][i].item<int64_t>() == expected[i]);
          CHECK(values[0][i].item<double>() == top);
        }
        if (k == 4) CHECK(values[0][3].item<double>() < top);
      }
    }
  }
}

// A zero query (cosine): every similarity is 0, so the answer is keys 0..k-1. Zero keys score 0.
TEST_CASE(zero_vectors_cosine) {
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    const auto keys = at::randn({kKeyTile + 9, 5}, opts(dtype));
    const auto [values, indices] =
        acsleuth::kin_topk(at::zeros({2, 5}, opts(dtype)), keys, 10, "cosine", false);
    CHECK(at::equal(values, at::zeros({2, 10}, opts(dtype))));
    CHECK(at::equal(indices, at::arange(10, opts(at::kLong)).expand({2, 10})));

    // Keys that all point away from the query, plus zero keys at 7 and 1030: the zero keys win.
    auto away = -at::rand({kKeyTile + 9, 5}, opts(dtype)) - 0.1;
    away[7].zero_();
    away[kKeyTile + 6].zero_();
    const auto q = at::ones({1, 5}, opts(dtype));
    const auto [v2, i2] = acsleuth::kin_topk(q, away, 2, "cosine", false);
    CHECK(i2[0][0].item<int64_t>() == 7 && i2[0][1].item<int64_t>() == kKeyTile + 6);
    CHECK(v2[0][0].item<double>() == 0.0 && v2[0][1].item<double>() == 0.0);
  }
}

// k = number of keys: every key comes back, sorted.
TEST_CASE(k_equals_number_of_keys) {
  torch::manual_seed(26);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (int64_t nk : {1L, 2L, 9L, acsleuth::kMaxTopK}) {
      for (const std::string metric : {"dot", "cosine"}) {
        SCOPED_CONTEXT("nk=", nk, " metric=", metric, " dtype=", dtype);
        const auto q = at::randn({kQueryBlock + 1, 6}, opts(dtype));
        const auto keys = at::randn({nk, 6}, opts(dtype));
        const auto [values, indices] = acsleuth::kin_topk(q, keys, nk, metric, false);
        check_result(values, indices, Reference(q, keys, metric), nk, rtol_for(dtype));
        CHECK(at::equal(std::get<0>(indices.sort(1)),
                        at::arange(nk, opts(at::kLong)).expand({kQueryBlock + 1, nk})));
      }
    }
  }
}

// A key with a NaN has a NaN similarity, which never enters the top-k.
TEST_CASE(nan_key_is_never_returned) {
  torch::manual_seed(27);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (const std::string metric : {"dot", "cosine"}) {
      SCOPED_CONTEXT("metric=", metric, " dtype=", dtype);
      auto keys = at::randn({kKeyTile + 2, 3}, opts(dtype));
      keys[5][1] = NAN;
      keys[kKeyTile + 1][0] = NAN;
      const auto q = at::randn({40, 3}, opts(dtype));
      for (int64_t k : {1L, 8L}) {
        const auto [values, indices] = acsleuth::kin_topk(q, keys, k, metric, false);
        CHECK(!(indices == 5).any().item<bool>());
        CHECK(!(indices == kKeyTile + 1).any().item<bool>());
        CHECK(!values.isnan().any().item<bool>());
      }
    }
  }
}

TEST_CASE(empty_query_and_non_contiguous_inputs) {
  torch::manual_seed(28);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    const auto keys = at::randn({30, 4}, opts(dtype));
    const auto [v0, i0] = acsleuth::kin_topk(at::empty({0, 4}, opts(dtype)), keys, 3, "dot", false);
    CHECK(v0.sizes() == at::IntArrayRef({0, 3}) && i0.sizes() == at::IntArrayRef({0, 3}));

    const auto q = at::randn({4, 300}, opts(dtype)).t();                       // 300 x 4
    const auto kt = at::randn({kKeyTile + 1, 8}, opts(dtype)).slice(1, 0, 8, 2);  // strided
    CHECK(!q.is_contiguous() && !kt.is_contiguous());
    for (const std::string metric : {"dot", "cosine"}) {
      const auto [values, indices] = acsleuth::kin_topk(q, kt, 6, metric, false);
      check_result(values, indices, Reference(q, kt, metric), 6, rtol_for(dtype));
    }
  }
}

// allow_tf32 only concerns CUDA; thread count changes nothing either.
TEST_CASE(tf32_flag_and_thread_count_invariant) {
  torch::manual_seed(29);
  const auto q = at::randn({2 * kQueryBlock + 3, 16}, opts(at::kFloat));
  const auto keys = at::randn({kKeyTile + 100, 16}, opts(at::kFloat));
  const auto [v_ref, i_ref] = acsleuth::kin_topk(q, keys, 10, "cosine", false);
  const auto [v_tf32, i_tf32] = acsleuth::kin_topk(q, keys, 10, "cosine", true);
  CHECK(at::equal(v_ref, v_tf32) && at::equal(i_ref, i_tf32));
  const int saved = at::get_num_threads();
  for (int threads : {1, 3}) {
    at::set_num_threads(threads);
    const auto [v, i] = acsleuth::kin_topk(q, keys, 10, "cosine", false);
    CHECK(at::equal(v, v_ref) && at::equal(i, i_ref));
  }
  at::set_num_threads(saved);
}

TEST_CASE(bad_inputs_throw) {
  const auto o = opts(at::kFloat);
  const auto q = at::randn({5, 3}, o);
  const auto keys = at::randn({10, 3}, o);
  // k out of range.
  CHECK_THROWS(acsleuth::kin_topk(q, keys, 11, "dot", false));
  CHECK_THROWS(acsleuth::kin_topk(q, keys, 0, "dot", false));
  CHECK_THROWS(acsleuth::kin_topk(q, keys, -1, "dot", false));
  CHECK_THROWS(acsleuth::kin_topk(q, at::randn({100, 3}, o), acsleuth::kMaxTopK + 1, "dot", false));
  CHECK_THROWS(acsleuth::kin_topk(q, at::empty({0, 3}, o), 1, "dot", false));
  // Shapes.
  CHECK_THROWS(acsleuth::kin_topk(q, at::randn({10, 4}, o), 2, "dot", false));
  CHECK_THROWS(acsleuth::kin_topk(at::randn({3}, o), keys, 2, "dot", false));
  CHECK_THROWS(acsleuth::kin_topk(q, at::randn({10}, o), 2, "cosine", false));
  CHECK_THROWS(acsleuth::kin_topk(at::randn({2, 5, 3}, o), keys, 2, "dot", false));
  // Dtypes.
  CHECK_THROWS(acsleuth::kin_topk(q, keys.to(at::kDouble), 2, "dot", false));
  CHECK_THROWS(acsleuth::kin_topk(q.to(at::kHalf), keys.to(at::kHalf), 2, "dot", false));
  CHECK_THROWS(acsleuth::kin_topk(q.to(at::kLong), keys.to(at::kLong), 2, "dot", false));
  // Metric.
  CHECK_THROWS(acsleuth::kin_topk(q, keys, 2, "euclidean", false));
  CHECK_THROWS(acsleuth::kin_topk(q, keys, 2, "", false));
}

// Row norms spanning 12 decades (1e-6 to 1e6), some all-zero rows and exact duplicate keys,
// on sizes that are not multiples of the query block or the key tile: cosine is unaffected
// by the scale, dot products up to 1e12 stay finite, and every row passes the consistency
// checks of check_result (ties in ascending key order).
TEST_CASE(huge_and_tiny_norms) {
  torch::manual_seed(51);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (const std::string metric : {"cosine", "dot"}) {
      SCOPED_CONTEXT("dtype=", dtype, " metric=", metric);
      const int64_t nq = kQueryBlock + 3, nk = kKeyTile + 5, d = 5;
      auto q = at::randn({nq, d}, opts(at::kDouble)) *
               at::pow(10.0, at::rand({nq, 1}, opts(at::kDouble)) * 12 - 6);
      auto keys = at::randn({nk, d}, opts(at::kDouble)) *
                  at::pow(10.0, at::rand({nk, 1}, opts(at::kDouble)) * 12 - 6);
      q.narrow(0, 0, 2).zero_();
      keys.narrow(0, 7, 3).zero_();
      keys.narrow(0, kKeyTile, 5).copy_(keys.narrow(0, 0, 5));  // duplicates across tiles
      q = q.to(dtype);
      keys = keys.to(dtype);
      const Reference ref(q, keys, metric);
      for (int64_t k : {1L, 3L, acsleuth::kMaxTopK}) {
        SCOPED_CONTEXT("k=", k);
        const auto [values, indices] = acsleuth::kin_topk(q, keys, k, metric, false);
        CHECK(at::isfinite(values).all().item<bool>());
        check_result(values, indices, ref, k, 4 * rtol_for(dtype));
      }
    }
  }
}
