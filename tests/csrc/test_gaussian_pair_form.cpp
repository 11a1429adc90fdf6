// gaussian_pair_form (CPU) against a dense ATen reference, forward and gradients.
//
// The reference builds the N x N kernel from explicit differences |x_i - x_j|^2 (no
// |x_i|^2 + |x_j|^2 - 2 x_i.x_j cancellation), masks the diagonal and contracts with phi; its
// gradients come from autograd through those ATen ops. float32 results are compared with the
// float64 reference evaluated on the same (upcast) inputs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/gaussian_pair_form.h"
#include "test_harness.h"

namespace {

using acsleuth_test::opts;
using acsleuth_test::rtol_for;
using acsleuth_test::tolerance;

using Bandwidths = std::vector<double>;

constexpr int64_t kTile = 256;  // CPU kernel tile (csrc/ops/cpu/gaussian_pair_form_kernel.cpp)

// S = phi^T (K - diag K) phi,  K = sum_b exp(-|x_i - x_j|^2 / (2 s_b^2)).
at::Tensor reference(const at::Tensor& x, const at::Tensor& phi, const Bandwidths& bw) {
  const auto d = (x.unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(-1);
  auto k = at::zeros_like(d);
  for (double s : bw) k = k + at::exp(d * (-0.5 / (s * s)));
  const auto off_diagonal = at::ones_like(d) - at::eye(x.size(0), d.options());
  return phi.t().mm(k * off_diagonal).mm(phi);
}

struct Shape {
  int64_t n, d, r;
};

// Sizes around the 256-row tile, plus the degenerate ones.
const std::vector<Shape> kShapes = {
    {1, 3, 2},           {2, 3, 2},     {3, 1, 1},           {5, 4, 1},
    {kTile - 1, 5, 3},   {kTile, 1, 1}, {kTile + 1, 3, 4},   {2 * kTile + 1, 6, 2},
};

// The float32 kernel forms d_ij as |x_i|^2 + |x_j|^2 - 2 x_i.x_j, so its relative error in
// k_ij is about eps32 |x|^2 / (2 s^2): float32 is swept with bandwidths that are not small
// against |x| (~1 here); the narrow 0.05 is swept in float64 only.
std::vector<Bandwidths> bandwidths_for(at::ScalarType dtype) {
  if (dtype == at::kDouble) return {{1.0}, {0.5, 1.0, 2.0, 4.0}, {0.05, 30.0}};
  return {{1.0}, {0.5, 1.0, 2.0, 4.0}, {30.0}};
}

// Forward and autograd gradients of the op versus the float64 reference.
void compare_with_reference(const Shape& s, const Bandwidths& bw, at::ScalarType dtype) {
  SCOPED_CONTEXT("n=", s.n, " d=", s.d, " r=", s.r, " bandwidths=", at::ArrayRef<double>(bw),
                 " dtype=", dtype);
  const auto x = (0.7 * at::randn({s.n, s.d}, opts(at::kDouble))).to(dtype);
  const auto phi = at::randn({s.n, s.r}, opts(at::kDouble)).to(dtype);
  const auto g = at::randn({s.r, s.r}, opts(at::kDouble)).to(dtype);

  const auto x_op = x.clone().requires_grad_();
  const auto phi_op = phi.clone().requires_grad_();
  const auto out = acsleuth::gaussian_pair_form(x_op, phi_op, bw);
  CHECK(out.scalar_type() == dtype);
  CHECK(out.requires_grad());
  const auto grads = torch::autograd::grad({out}, {x_op, phi_op}, {g});
  CHECK(grads[0].scalar_type() == dtype && grads[1].scalar_type() == dtype);

  const auto x64 = x.to(at::kDouble).requires_grad_();
  const auto phi64 = phi.to(at::kDouble).requires_grad_();
  const auto ref64 = reference(x64, phi64, bw);
  const auto grads64 = torch::autograd::grad({ref64}, {x64, phi64}, {g.to(at::kDouble)});

  // The same dense reference in the op's precision (float32 only).
  at::Tensor ref32;
  std::vector<at::Tensor> grads32(2);
  if (dtype != at::kDouble) {
    const auto x32 = x.clone().requires_grad_();
    const auto phi32 = phi.clone().requires_grad_();
    ref32 = reference(x32, phi32, bw);
    grads32 = torch::autograd::grad({ref32}, {x32, phi32}, {g});
  }

  CHECK_CLOSE(out, ref64, 0.0, tolerance(out, ref64, ref32));
  CHECK_CLOSE(grads[0], grads64[0], 0.0, tolerance(grads[0], grads64[0], grads32[0]));
  CHECK_CLOSE(grads[1], grads64[1], 0.0, tolerance(grads[1], grads64[1], grads32[1]));
}

void run_reference_sweep(at::ScalarType dtype) {
  torch::manual_seed(dtype == at::kDouble ? 1 : 2);
  for (const auto& s : kShapes) {
    for (const auto& bw : bandwidths_for(dtype)) compare_with_reference(s, bw, dtype);
  }
}

}  // namespace

TEST_CASE(forward_and_grad_match_reference_float64) { run_reference_sweep(at::kDouble); }

TEST_CASE(forward_and_grad_match_reference_float32) { run_reference_sweep(at::kFloat); }

// The backward op called directly (no autograd) against the reference's gradients.
TEST_CASE(backward_entry_point_matches_reference) {
  torch::manual_seed(3);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (int64_t n : {2L, kTile + 1}) {
      const Bandwidths bw = {0.7, 1.9};
      const auto x = at::randn({n, 4}, opts(dtype));
      const auto phi = at::randn({n, 3}, opts(dtype));
      const auto g = at::randn({3, 3}, opts(dtype));
      const auto [grad_x, grad_phi] = acsleuth::gaussian_pair_form_backward(g, x, phi, bw);
      const auto x_ref = x.to(at::kDouble).requires_grad_();
      const auto phi_ref = phi.to(at::kDouble).requires_grad_();
      const auto ref = torch::autograd::grad({reference(x_ref, phi_ref, bw)}, {x_ref, phi_ref},
                                             {g.to(at::kDouble)});
      CHECK_CLOSE_REL(grad_x, ref[0], rtol_for(dtype));
      CHECK_CLOSE_REL(grad_phi, ref[1], rtol_for(dtype));
    }
  }
}

// .backward() on a scalar loss accumulates into .grad, including when only one input
// requires a gradient.
TEST_CASE(backward_accumulates_grad_and_handles_partial_requires_grad) {
  torch::manual_seed(4);
  const Bandwidths bw = {1.3};
  const auto x = at::randn({40, 3}, opts(at::kDouble));
  const auto phi = at::randn({40, 2}, opts(at::kDouble));
  const auto w = at::randn({2, 2}, opts(at::kDouble));

  const auto x_ref = x.clone().requires_grad_();
  const auto phi_ref = phi.clone().requires_grad_();
  (reference(x_ref, phi_ref, bw) * w).sum().backward();

  {
    const auto xg = x.clone().requires_grad_();
    const auto pg = phi.clone().requires_grad_();
    (acsleuth::gaussian_pair_form(xg, pg, bw) * w).sum().backward();
    (acsleuth::gaussian_pair_form(xg, pg, bw) * w).sum().backward();  // accumulates
    CHECK_CLOSE_REL(xg.grad(), 2 * x_ref.grad(), 1e-10);
    CHECK_CLOSE_REL(pg.grad(), 2 * phi_ref.grad(), 1e-10);
  }
  {
    const auto pg = phi.clone().requires_grad_();
    (acsleuth::gaussian_pair_form(x, pg, bw) * w).sum().backward();
    CHECK_CLOSE_REL(pg.grad(), phi_ref.grad(), 1e-10);
  }
  {
    const auto xg = x.clone().requires_grad_();
    (acsleuth::gaussian_pair_form(xg, phi, bw) * w).sum().backward();
    CHECK_CLOSE_REL(xg.grad(), x_ref.grad(), 1e-10);
  }
  // No input requires grad: a plain tensor comes back.
  CHECK(!acsleuth::gaussian_pair_form(x, phi, bw).requires_grad());
}

TEST_CASE(non_contiguous_inputs) {
  torch::manual_seed(5);
  const Bandwidths bw = {0.8, 2.0};
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const auto x = at::randn({5, kTile + 3}, opts(dtype)).t();              // transposed
    const auto phi = at::randn({kTile + 3, 6}, opts(dtype)).slice(1, 0, 6, 2);  // strided
    CHECK(!x.is_contiguous() && !phi.is_contiguous());
    const auto xg = x.detach().requires_grad_();
    const auto pg = phi.detach().requires_grad_();
    const auto out = acsleuth::gaussian_pair_form(xg, pg, bw);
    const auto x_ref = x.to(at::kDouble).requires_grad_();
    const auto p_ref = phi.to(at::kDouble).requires_grad_();
    const auto expected = reference(x_ref, p_ref, bw);
    CHECK_CLOSE_REL(out, expected, rtol_for(dtype));
    const auto g = at::randn({3, 3}, opts(dtype)).t();  // non-contiguous upstream gradient
    const auto grads = torch::autograd::grad({out}, {xg, pg}, {g});
    const auto ref = torch::autograd::grad({expected}, {x_ref, p_ref}, {g.to(at::kDouble)});
    CHECK_CLOSE_REL(grads[0], ref[0], rtol_for(dtype));
    CHECK_CLOSE_REL(grads[1], ref[1], rtol_for(dtype));
  }
}

// N < 2 has no pairs; r = 0 gives an empty form. Gradients are zeros of the input shapes.
TEST_CASE(degenerate_sizes) {
  const Bandwidths bw = {1.0};
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (int64_t n : {0L, 1L}) {
      const auto x = at::randn({n, 3}, opts(dtype)).requires_grad_();
      const auto phi = at::randn({n, 2}, opts(dtype)).requires_grad_();
      const auto out = acsleuth::gaussian_pair_form(x, phi, bw);
      CHECK(out.sizes() == at::IntArrayRef({2, 2}));
      CHECK(out.scalar_type() == dtype);
      CHECK(at::equal(out, at::zeros({2, 2}, opts(dtype))));
      const auto grads = torch::autograd::grad({out}, {x, phi}, {at::ones({2, 2}, opts(dtype))});
      CHECK(grads[0].sizes() == x.sizes() && grads[1].sizes() == phi.sizes());
      if (n > 0) {
        CHECK(at::equal(grads[0], at::zeros_like(x)));
        CHECK(at::equal(grads[1], at::zeros_like(phi)));
      }
    }
    const auto x = at::randn({7, 3}, opts(dtype));
    const auto out = acsleuth::gaussian_pair_form(x, at::empty({7, 0}, opts(dtype)), bw);
    CHECK(out.sizes() == at::IntArrayRef({0, 0}));
  }
}

// S is symmetric and does not depend on the number of threads beyond rounding.
TEST_CASE(symmetric_and_thread_count_invariant) {
  torch::manual_seed(6);
  const Bandwidths bw = {0.6, 1.7};
  const auto x = at::randn({2 * kTile + 7, 4}, opts(at::kDouble));
  const auto phi = at::randn({2 * kTile + 7, 5}, opts(at::kDouble));
  const auto g = at::randn({5, 5}, opts(at::kDouble));
  const int saved = at::get_num_threads();
  std::vector<at::Tensor> outs, gxs, gps;
  for (int threads : {1, 2, 3}) {
    at::set_num_threads(threads);
    outs.push_back(acsleuth::gaussian_pair_form(x, phi, bw));
    auto [gx, gp] = acsleuth::gaussian_pair_form_backward(g, x, phi, bw);
    gxs.push_back(gx);
    gps.push_back(gp);
  }
  at::set_num_threads(saved);
  CHECK_CLOSE_REL(outs[0], outs[0].t(), 1e-12);
  for (size_t i = 1; i < outs.size(); ++i) {
    CHECK_CLOSE_REL(outs[i], outs[0], 1e-12);
    CHECK_CLOSE_REL(gxs[i], gxs[0], 1e-12);
    CHECK_CLOSE_REL(gps[i], gps[0], 1e-12);
  }
}

// k depends on differences only: translating every point leaves S unchanged (float64; see
// bandwidths_for for the float32 error growth with |x|).
TEST_CASE(translation_invariant_float64) {
  torch::manual_seed(7);
  const Bandwidths bw = {0.5, 2.0};
  const auto x = at::randn({kTile + 5, 8}, opts(at::kDouble));
  const auto phi = at::randn({kTile + 5, 3}, opts(at::kDouble));
  const auto shift = 10 * at::randn({1, 8}, opts(at::kDouble));
  CHECK_CLOSE_REL(acsleuth::gaussian_pair_form(x + shift, phi, bw),
                  acsleuth::gaussian_pair_form(x, phi, bw), 1e-10);
}

// Far-apart points: every kernel value underflows to zero, and so do the outputs.
TEST_CASE(far_apart_points_give_zero) {
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const auto x = (at::arange(300, opts(dtype)) * 1000).unsqueeze(1);
    const auto phi = at::ones({300, 2}, opts(dtype)).requires_grad_();
    const auto xg = x.clone().requires_grad_();
    const auto out = acsleuth::gaussian_pair_form(xg, phi, {1.0});
    CHECK(at::equal(out, at::zeros({2, 2}, opts(dtype))));
    const auto grads = torch::autograd::grad({out}, {xg, phi}, {at::ones({2, 2}, opts(dtype))});
    CHECK(at::equal(grads[0], at::zeros_like(x)));
    CHECK(at::equal(grads[1], at::zeros_like(phi)));
  }
}

TEST_CASE(double_backward_is_refused) {
  const auto x = at::randn({6, 2}, opts(at::kDouble)).requires_grad_();
  const auto phi = at::randn({6, 2}, opts(at::kDouble)).requires_grad_();
  const auto out = acsleuth::gaussian_pair_form(x, phi, {1.0});
  const auto grads = torch::autograd::grad({out.sum()}, {x, phi}, {}, /*retain_graph=*/true,
                                           /*create_graph=*/true);
  CHECK(grads[0].requires_grad());
  CHECK_THROWS(torch::autograd::grad({grads[0].sum()}, {x}));
}

TEST_CASE(bad_inputs_throw) {
  const auto x = at::randn({8, 3}, opts(at::kDouble));
  const auto phi = at::randn({8, 2}, opts(at::kDouble));
  const Bandwidths bw = {1.0};
  // Shapes.
  CHECK_THROWS(acsleuth::gaussian_pair_form(at::randn({8}, opts(at::kDouble)), phi, bw));
  CHECK_THROWS(acsleuth::gaussian_pair_form(x, at::randn({8}, opts(at::kDouble)), bw));
  CHECK_THROWS(acsleuth::gaussian_pair_form(at::randn({2, 8, 3}, opts(at::kDouble)), phi, bw));
  CHECK_THROWS(acsleuth::gaussian_pair_form(x, at::randn({9, 2}, opts(at::kDouble)), bw));
  // Dtypes.
  CHECK_THROWS(acsleuth::gaussian_pair_form(x, phi.to(at::kFloat), bw));
  CHECK_THROWS(acsleuth::gaussian_pair_form(x.to(at::kHalf), phi.to(at::kHalf), bw));
  CHECK_THROWS(acsleuth::gaussian_pair_form(x.to(at::kLong), phi.to(at::kLong), bw));
  // Bandwidths: none, non-positive, non-finite.
  CHECK_THROWS(acsleuth::gaussian_pair_form(x, phi, Bandwidths{}));
  CHECK_THROWS(acsleuth::gaussian_pair_form(x, phi, Bandwidths{0.0}));
  CHECK_THROWS(acsleuth::gaussian_pair_form(x, phi, Bandwidths{1.0, -2.0}));
  CHECK_THROWS(acsleuth::gaussian_pair_form(x, phi, Bandwidths{INFINITY}));
  CHECK_THROWS(acsleuth::gaussian_pair_form(x, phi, Bandwidths{NAN}));
  // Backward: the upstream gradient must be r x r.
  const auto o = opts(at::kDouble);
  CHECK_THROWS(acsleuth::gaussian_pair_form_backward(at::ones({3, 3}, o), x, phi, bw));
  CHECK_THROWS(acsleuth::gaussian_pair_form_backward(at::ones({2}, o), x, phi, bw));
  CHECK_THROWS(
      acsleuth::gaussian_pair_form_backward(at::ones({2, 2}, o), x, phi, Bandwidths{0.0}));
}

// A cloud of points far from the origin (offset 1e4 times its spread) and a cloud scaled by
// 1e-6 or 1e6 with bandwidths to match, on N = 1 and N around the 256-row tile: the kernel's
// centring keeps S finite and close to the dense reference built from explicit differences.
TEST_CASE(extreme_scales_and_offsets) {
  torch::manual_seed(61);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (double scale : {1e-6, 1.0, 1e6}) {
      for (int64_t n : {1L, kTile + 1}) {
        SCOPED_CONTEXT("dtype=", dtype, " scale=", scale, " n=", n);
        const auto x64 = (at::randn({n, 3}, opts(at::kDouble)) + (scale == 1.0 ? 1e4 : 0.0)) * scale;
        const auto x = x64.to(dtype);
        const auto phi = at::randn({n, 2}, opts(at::kDouble)).to(dtype);
        const Bandwidths bw = {0.5 * scale, 2.0 * scale};
        const auto x_op = x.clone().requires_grad_();
        const auto out = acsleuth::gaussian_pair_form(x_op, phi, bw);
        const auto grads = torch::autograd::grad({out}, {x_op}, {at::ones({2, 2}, opts(dtype))});
        CHECK(at::isfinite(out).all().item<bool>());
        CHECK(at::isfinite(grads[0]).all().item<bool>());
        const auto ref = reference(x.to(at::kDouble), phi.to(at::kDouble), bw);
        // Relative to |phi|^T K |phi|: rounding of d_ij is ~ulp |x - mean|^2 / s^2 per entry.
        const auto k_abs = reference(x.to(at::kDouble), phi.to(at::kDouble).abs(), bw);
        const double atol = (dtype == at::kDouble ? 1e-9 : 1e-3) * (k_abs.abs().max().item<double>() + 1e-300);
        CHECK_CLOSE(out, ref, 0.0, atol);
        if (n == 1) CHECK(at::equal(out, at::zeros({2, 2}, opts(dtype))));
      }
    }
  }
}
