// memory_attention (CPU) against a dense ATen reference, forward and gradients.
//
// The reference spells out csrc/ops/memory_attention.h with ATen ops (softmax, hard shrinkage,
// L1 renormalisation, readout); its gradients come from autograd through those ops. float32
// results are compared with the float64 reference evaluated on the same (upcast) inputs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "ops/memory_attention.h"
#include "test_harness.h"

namespace {

using acsleuth_test::opts;
using acsleuth_test::rtol_for;
using acsleuth_test::tolerance;

constexpr double kEps = 1e-12;  // shrinkage and normalisation epsilons of the header

// The header's formulas: a = softmax(z M^T / t), s = relu(a - l) a / (|a - l| + eps),
// w = s / max(sum s, eps), out = w M.
struct Reference {
  at::Tensor probs, weights, out;
  Reference(const at::Tensor& z, const at::Tensor& memory, double temperature, double shrink) {
    probs = at::softmax(z.mm(memory.t()) / temperature, 1);
    const auto u = probs - shrink;
    const auto s = at::relu(u) * probs / (u.abs() + kEps);
    weights = s / s.sum(1, /*keepdim=*/true).clamp_min(kEps);
    out = weights.mm(memory);
  }
};

std::tuple<at::Tensor, at::Tensor> reference(const at::Tensor& z, const at::Tensor& memory,
                                             double temperature, double shrink) {
  Reference r(z, memory, temperature, shrink);
  return {r.out, r.probs};
}

// Largest entry of |a| |b| (matrix product of absolute values), 0 when empty.
double abs_product_max(const at::Tensor& a, const at::Tensor& b) {
  const auto p = a.detach().abs().mm(b.detach().abs());
  return p.numel() == 0 ? 0.0 : p.max().item<double>();
}

struct Shape {
  int64_t batch, slots, p;
};

// Degenerate sizes, batches around the parallel grain (16 rows), a large memory.
const std::vector<Shape> kShapes = {
    {1, 1, 1},  {1, 5, 3},    {2, 7, 1},     {3, 2, 4},    {16, 9, 5},
    {17, 2000, 8}, {64, 50, 16}, {300, 200, 32},
};

struct Params {
  double temperature;
  double shrink_times_slots;  // shrink = this / slots, capped below 1
};

// No shrinkage; below and above the uniform weight 1 / slots; nearly everything pruned.
const std::vector<Params> kParams = {{1.0, 0.0}, {0.1, 0.5}, {5.0, 1.5}, {0.5, 1e9}};

double shrink_for(const Params& pr, int64_t slots) {
  return std::min(pr.shrink_times_slots / static_cast<double>(slots), 0.9);
}

void compare_with_reference(const Shape& s, double temperature, double shrink,
                            at::ScalarType dtype) {
  SCOPED_CONTEXT("batch=", s.batch, " slots=", s.slots, " p=", s.p, " temperature=",
                 temperature, " shrink=", shrink, " dtype=", dtype);
  const auto z = at::randn({s.batch, s.p}, opts(at::kDouble)).to(dtype);
  const auto memory = at::randn({s.slots, s.p}, opts(at::kDouble)).to(dtype);
  const auto g = at::randn({s.batch, s.p}, opts(at::kDouble)).to(dtype);

  const auto z_op = z.clone().requires_grad_();
  const auto m_op = memory.clone().requires_grad_();
  const auto [out, probs] = acsleuth::memory_attention(z_op, m_op, temperature, shrink);
  CHECK(out.scalar_type() == dtype && probs.scalar_type() == dtype);
  CHECK(out.sizes() == z.sizes());
  CHECK(probs.sizes() == at::IntArrayRef({s.batch, s.slots}));
  CHECK(out.requires_grad());
  CHECK(!probs.requires_grad());  // the softmax is returned for the backward, not for autograd
  const auto grads = torch::autograd::grad({out}, {z_op, m_op}, {g});

  const auto z64 = z.to(at::kDouble).requires_grad_();
  const auto m64 = memory.to(at::kDouble).requires_grad_();
  const auto g64 = g.to(at::kDouble);
  const Reference ref(z64, m64, temperature, shrink);
  const auto& out64 = ref.out;
  const auto& probs64 = ref.probs;
  const auto grads64 = torch::autograd::grad({out64}, {z64, m64}, {g64});
  // grad_z and grad_memory can cancel to exactly zero (when each row keeps at most one slot,
  // out is that slot whatever z is), leaving only rounding noise in both op and reference,
  // relative to the size of the chain before cancellation: |g| |M|^T / t for the logits
  // gradient, times |M| (grad_z) or |z| (grad_memory).
  const double chain = abs_product_max(g64, m64.t()) / temperature;
  const double scale_z = chain * (m64.numel() ? m64.detach().abs().max().item<double>() : 0.0);
  const double scale_m =
      std::max(abs_product_max(ref.weights.t(), g64),
               chain * (z64.numel() ? z64.detach().abs().max().item<double>() : 0.0));

  at::Tensor out32, probs32;
  std::vector<at::Tensor> grads32(2);
  if (dtype != at::kDouble) {
    const auto z32 = z.clone().requires_grad_();
    const auto m32 = memory.clone().requires_grad_();
    std::tie(out32, probs32) = reference(z32, m32, temperature, shrink);
    grads32 = torch::autograd::grad({out32}, {z32, m32}, {g});
  }

  CHECK_CLOSE(probs, probs64, 0.0, tolerance(probs, probs64, probs32));
  CHECK_CLOSE(out, out64, 0.0, tolerance(out, out64, out32));
  CHECK_CLOSE(grads[0], grads64[0], 0.0, tolerance(grads[0], grads64[0], grads32[0], scale_z));
  CHECK_CLOSE(grads[1], grads64[1], 0.0, tolerance(grads[1], grads64[1], grads32[1], scale_m));
}

void run_reference_sweep(at::ScalarType dtype) {
  torch::manual_seed(dtype == at::kDouble ? 11 : 12);
  for (const auto& s : kShapes) {
    for (const auto& pr : kParams) {
      compare_with_reference(s, pr.temperature, shrink_for(pr, s.slots), dtype);
    }
  }
}

}  // namespace

TEST_CASE(forward_and_grad_match_reference_float64) { run_reference_sweep(at::kDouble); }

TEST_CASE(forward_and_grad_match_reference_float32) { run_reference_sweep(at::kFloat); }

// The backward op called directly, with the probs of the forward, against the reference.
TEST_CASE(backward_entry_point_matches_reference) {
  torch::manual_seed(13);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    const double t = 0.3, l = 0.02;
    const auto z = at::randn({33, 6}, opts(dtype));
    const auto memory = at::randn({40, 6}, opts(dtype));
    const auto g = at::randn({33, 6}, opts(dtype));
    const auto probs = std::get<1>(acsleuth::memory_attention(z, memory, t, l));
    const auto [grad_z, grad_memory] =
        acsleuth::memory_attention_backward(g, z, memory, probs, t, l);
    const auto z64 = z.to(at::kDouble).requires_grad_();
    const auto m64 = memory.to(at::kDouble).requires_grad_();
    const auto ref = torch::autograd::grad({std::get<0>(reference(z64, m64, t, l))}, {z64, m64},
                                           {g.to(at::kDouble)});
    CHECK(grad_z.scalar_type() == dtype && grad_memory.scalar_type() == dtype);
    CHECK_CLOSE_REL(grad_z, ref[0], rtol_for(dtype));
    CHECK_CLOSE_REL(grad_memory, ref[1], rtol_for(dtype));
  }
}

TEST_CASE(backward_accumulates_grad_and_handles_partial_requires_grad) {
  torch::manual_seed(14);
  const double t = 0.5, l = 0.01;
  const auto z = at::randn({20, 4}, opts(at::kDouble));
  const auto memory = at::randn({30, 4}, opts(at::kDouble));
  const auto w = at::randn({20, 4}, opts(at::kDouble));

  const auto z_ref = z.clone().requires_grad_();
  const auto m_ref = memory.clone().requires_grad_();
  (std::get<0>(reference(z_ref, m_ref, t, l)) * w).sum().backward();

  {
    const auto zg = z.clone().requires_grad_();
    const auto mg = memory.clone().requires_grad_();
    (std::get<0>(acsleuth::memory_attention(zg, mg, t, l)) * w).sum().backward();
    (std::get<0>(acsleuth::memory_attention(zg, mg, t, l)) * w).sum().backward();
    CHECK_CLOSE_REL(zg.grad(), 2 * z_ref.grad(), 1e-10);
    CHECK_CLOSE_REL(mg.grad(), 2 * m_ref.grad(), 1e-10);
  }
  {
    const auto zg = z.clone().requires_grad_();
    (std::get<0>(acsleuth::memory_attention(zg, memory, t, l)) * w).sum().backward();
    CHECK_CLOSE_REL(zg.grad(), z_ref.grad(), 1e-10);
  }
  {
    const auto mg = memory.clone().requires_grad_();
    (std::get<0>(acsleuth::memory_attention(z, mg, t, l)) * w).sum().backward();
    CHECK_CLOSE_REL(mg.grad(), m_ref.grad(), 1e-10);
  }
  CHECK(!std::get<0>(acsleuth::memory_attention(z, memory, t, l)).requires_grad());
}

TEST_CASE(non_contiguous_inputs) {
  torch::manual_seed(15);
  const double t = 0.7, l = 0.05;
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    const auto z = at::randn({8, 37}, opts(dtype)).t();                 // 37 x 8, transposed
    const auto memory = at::randn({25, 16}, opts(dtype)).slice(1, 0, 16, 2);  // 25 x 8, strided
    CHECK(!z.is_contiguous() && !memory.is_contiguous());
    const auto zg = z.detach().requires_grad_();
    const auto mg = memory.detach().requires_grad_();
    const auto [out, probs] = acsleuth::memory_attention(zg, mg, t, l);
    const auto z64 = z.to(at::kDouble).requires_grad_();
    const auto m64 = memory.to(at::kDouble).requires_grad_();
    const auto [out64, probs64] = reference(z64, m64, t, l);
    CHECK_CLOSE_REL(out, out64, rtol_for(dtype));
    CHECK_CLOSE_REL(probs, probs64, rtol_for(dtype));
    const auto g = at::randn({8, 37}, opts(dtype)).t();  // non-contiguous upstream gradient
    const auto grads = torch::autograd::grad({out}, {zg, mg}, {g});
    const auto ref = torch::autograd::grad({out64}, {z64, m64}, {g.to(at::kDouble)});
    CHECK_CLOSE_REL(grads[0], ref[0], rtol_for(dtype));
    CHECK_CLOSE_REL(grads[1], ref[1], rtol_for(dtype));
  }
}

// A flat softmax under a high threshold: every weight is pruned, the output and both
// gradients are exactly zero (no division blows up).
TEST_CASE(everything_pruned_gives_zero) {
  torch::manual_seed(16);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    const auto z = at::randn({10, 4}, opts(dtype)).requires_grad_();
    const auto memory = at::randn({50, 4}, opts(dtype)).requires_grad_();
    const auto [out, probs] = acsleuth::memory_attention(z, memory, 100.0, 0.5);
    CHECK(probs.max().item<double>() < 0.5);
    CHECK(at::equal(out, at::zeros_like(out)));
    const auto grads = torch::autograd::grad({out}, {z, memory}, {at::ones_like(out)});
    CHECK(at::equal(grads[0], at::zeros_like(z)));
    CHECK(at::equal(grads[1], at::zeros_like(memory)));
  }
}

// One slot: the softmax is 1, the output is that slot for every row, and z gets no gradient.
TEST_CASE(single_slot) {
  torch::manual_seed(17);
  const auto z = at::randn({5, 3}, opts(at::kDouble)).requires_grad_();
  const auto memory = at::randn({1, 3}, opts(at::kDouble)).requires_grad_();
  const auto [out, probs] = acsleuth::memory_attention(z, memory, 0.2, 0.5);
  CHECK(at::equal(probs, at::ones({5, 1}, opts(at::kDouble))));
  CHECK_CLOSE_REL(out, memory.detach().expand({5, 3}), 1e-10);
  const auto g = at::randn({5, 3}, opts(at::kDouble));
  const auto grads = torch::autograd::grad({out}, {z, memory}, {g});
  CHECK_CLOSE(grads[0], at::zeros_like(z), 0.0, 1e-12);
  CHECK_CLOSE_REL(grads[1], g.sum(0, /*keepdim=*/true), 1e-10);
}

TEST_CASE(empty_batch) {
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const auto z = at::randn({0, 3}, opts(dtype)).requires_grad_();
    const auto memory = at::randn({4, 3}, opts(dtype)).requires_grad_();
    const auto [out, probs] = acsleuth::memory_attention(z, memory, 1.0, 0.1);
    CHECK(out.sizes() == at::IntArrayRef({0, 3}));
    CHECK(probs.sizes() == at::IntArrayRef({0, 4}));
    const auto grads = torch::autograd::grad({out.sum()}, {z, memory}, {}, std::nullopt,
                                             false, /*allow_unused=*/true);
    CHECK(!grads[0].defined() || grads[0].sizes() == z.sizes());
    CHECK(!grads[1].defined() || at::equal(grads[1], at::zeros_like(memory)));
  }
}

TEST_CASE(thread_count_invariant) {
  torch::manual_seed(18);
  const double t = 0.4, l = 0.004;
  const auto z = at::randn({301, 12}, opts(at::kDouble));
  const auto memory = at::randn({150, 12}, opts(at::kDouble));
  const auto g = at::randn({301, 12}, opts(at::kDouble));
  const int saved = at::get_num_threads();
  std::vector<at::Tensor> outs, gzs, gms;
  for (int threads : {1, 2, 3}) {
    at::set_num_threads(threads);
    const auto [out, probs] = acsleuth::memory_attention(z, memory, t, l);
    const auto [gz, gm] = acsleuth::memory_attention_backward(g, z, memory, probs, t, l);
    outs.push_back(out);
    gzs.push_back(gz);
    gms.push_back(gm);
  }
  at::set_num_threads(saved);
  for (size_t i = 1; i < outs.size(); ++i) {
    CHECK_CLOSE_REL(outs[i], outs[0], 1e-12);
    CHECK_CLOSE_REL(gzs[i], gzs[0], 1e-12);
    CHECK_CLOSE_REL(gms[i], gms[0], 1e-12);
  }
}

TEST_CASE(double_backward_is_refused) {
  const auto z = at::randn({4, 3}, opts(at::kDouble)).requires_grad_();
  const auto memory = at::randn({6, 3}, opts(at::kDouble)).requires_grad_();
  const auto out = std::get<0>(acsleuth::memory_attention(z, memory, 0.5, 0.05));
  const auto grads = torch::autograd::grad({out.sum()}, {z, memory}, {}, /*retain_graph=*/true,
                                           /*create_graph=*/true);
  CHECK(grads[0].requires_grad());
  CHECK_THROWS(torch::autograd::grad({grads[0].sum()}, {z}));
}

TEST_CASE(bad_inputs_throw) {
  const auto o = opts(at::kDouble);
  const auto z = at::randn({4, 3}, o);
  const auto memory = at::randn({6, 3}, o);
  // Shapes.
  CHECK_THROWS(acsleuth::memory_attention(at::randn({3}, o), memory, 1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(z, at::randn({3}, o), 1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(at::randn({2, 4, 3}, o), memory, 1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(z, at::randn({6, 4}, o), 1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(z, at::randn({0, 3}, o), 1.0, 0.1));
  // Dtypes.
  CHECK_THROWS(acsleuth::memory_attention(z, memory.to(at::kFloat), 1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(z.to(at::kHalf), memory.to(at::kHalf), 1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(z.to(at::kLong), memory.to(at::kLong), 1.0, 0.1));
  // Temperature must be finite and > 0.
  CHECK_THROWS(acsleuth::memory_attention(z, memory, 0.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(z, memory, -1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(z, memory, INFINITY, 0.1));
  CHECK_THROWS(acsleuth::memory_attention(z, memory, NAN, 0.1));
  // Shrink must be in [0, 1).
  CHECK_THROWS(acsleuth::memory_attention(z, memory, 1.0, -0.1));
  CHECK_THROWS(acsleuth::memory_attention(z, memory, 1.0, 1.0));
  CHECK_THROWS(acsleuth::memory_attention(z, memory, 1.0, NAN));
  // Backward: probs must be batch x slots; the same checks apply.
  const auto g = at::randn({4, 3}, o);
  CHECK_THROWS(acsleuth::memory_attention_backward(g, z, memory, at::ones({4, 5}, o), 1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention_backward(g, z, memory, at::ones({6, 4}, o), 1.0, 0.1));
  CHECK_THROWS(acsleuth::memory_attention_backward(g, z, memory, at::ones({4, 6}, o), 0.0, 0.1));
}

// Tiny temperatures: logits / t reach ~1e6, so the softmax saturates to a one-hot on the best
// slot; the output is that slot (a duplicated best slot splits its weight evenly between two
// equal rows: the same output), with no NaN or inf in the output, probs or gradients. Batches
// below and above the 16-row parallel grain, an odd number of slots.
TEST_CASE(tiny_temperature_saturates_without_nan) {
  torch::manual_seed(31);
  constexpr int64_t kSlots = 41, kP = 6;
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (double t : {1e-4, 1e-6}) {
      for (int64_t batch : {1L, 17L}) {
        SCOPED_CONTEXT("dtype=", dtype, " t=", t, " batch=", batch);
        auto m64 = at::randn({kSlots, kP}, opts(at::kDouble));
        m64.select(0, kSlots - 1).copy_(m64.select(0, 0));  // an exact duplicate of slot 0
        const auto z64 = 10 * at::randn({batch, kP}, opts(at::kDouble));
        const auto z = z64.to(dtype).requires_grad_();
        const auto memory = m64.to(dtype).requires_grad_();
        const auto [out, probs] = acsleuth::memory_attention(z, memory, t, 0.01);
        CHECK(at::isfinite(out).all().item<bool>());
        CHECK(at::isfinite(probs).all().item<bool>());
        // Best distinct slot (the duplicate left out) where it wins by far more than t.
        const auto zr = z.detach().to(at::kDouble), mr = memory.detach().to(at::kDouble);
        const auto logits = zr.mm(mr.narrow(0, 0, kSlots - 1).t());
        const auto [top, best] = logits.topk(2, 1);
        const auto gap = top.select(1, 0) - top.select(1, 1);
        const auto decisive = (gap > 50 * t + 1e-4 * top.select(1, 0).abs()).nonzero().squeeze(1);
        CHECK_CLOSE(out.detach().index_select(0, decisive),
                    mr.index_select(0, best.select(1, 0).index_select(0, decisive)), 0.0,
                    16 * rtol_for(dtype));
        const auto grads = torch::autograd::grad({out}, {z, memory}, {at::ones_like(out)});
        CHECK(at::isfinite(grads[0]).all().item<bool>());
        CHECK(at::isfinite(grads[1]).all().item<bool>());
      }
    }
  }
}

// Memory rows spanning 12 (float32) or 100 (float64) decades of norm at a moderate
// temperature after scaling z: output and gradients stay finite and match the reference.
TEST_CASE(extreme_magnitudes_stay_finite) {
  torch::manual_seed(32);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    const double decades = dtype == at::kDouble ? 100.0 : 12.0;
    const auto scale = at::pow(10.0, (at::rand({33, 1}, opts(at::kDouble)) - 0.5) * decades);
    const auto m64 = at::randn({33, 5}, opts(at::kDouble)) * scale;
    const auto z64 = at::randn({19, 5}, opts(at::kDouble)) / m64.abs().max();
    const auto z = z64.to(dtype).requires_grad_();
    const auto memory = m64.to(dtype).requires_grad_();
    const auto [out, probs] = acsleuth::memory_attention(z, memory, 0.3, 0.01);
    CHECK(at::isfinite(out).all().item<bool>());
    const auto [out_ref, probs_ref] =
        reference(z.detach().to(at::kDouble), memory.detach().to(at::kDouble), 0.3, 0.01);
    CHECK_CLOSE_REL(probs, probs_ref, 64 * rtol_for(dtype));
    const auto grads = torch::autograd::grad({out}, {z, memory}, {at::ones_like(out)});
    CHECK(at::isfinite(grads[0]).all().item<bool>());
    CHECK(at::isfinite(grads[1]).all().item<bool>());
  }
}
