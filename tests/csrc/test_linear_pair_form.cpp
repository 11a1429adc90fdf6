// linear_pair_form (CPU) against a dense ATen reference, forward, statistics and gradients.
//
// The reference spells out S = phi^T (X X^T - diag(X X^T)) phi with ATen ops (the N x N Gram
// matrix with its diagonal masked out); its gradients come from autograd through those ops.
// The statistics are checked against A = X^T phi and sq_i = |x_i|^2. float32 results are
// compared with the float64 reference evaluated on the same (upcast) inputs.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/utils.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "ops/linear_pair_form.h"
#include "test_harness.h"

namespace {

using acsleuth_test::opts;
using acsleuth_test::rtol_for;
using acsleuth_test::tolerance;

// CPU kernel blocking (csrc/ops/cpu/linear_pair_form_kernel.cpp): rows are summed in blocks of
// kRowBlock, and for float32 with r = 2 four rows at a time.
constexpr int64_t kRowBlock = 64;

// S = phi^T (K - diag K) phi,  K = X X^T.
at::Tensor reference(const at::Tensor& x, const at::Tensor& phi) {
  const auto k = x.mm(x.t());
  const auto off_diagonal = at::ones_like(k) - at::eye(x.size(0), k.options());
  return phi.t().mm(k * off_diagonal).mm(phi);
}

double max_or_zero(const at::Tensor& t) {
  return t.numel() == 0 ? 0.0 : t.detach().max().to(at::kDouble).item<double>();
}

// The dense reference in the dtype of its inputs: S, the statistics, and the gradients of
// <g, S> through autograd.
struct Dense {
  at::Tensor s, a, sq, grad_x, grad_phi;
  Dense(const at::Tensor& x, const at::Tensor& phi, const at::Tensor& g) {
    const auto xr = x.detach().clone().requires_grad_();
    const auto pr = phi.detach().clone().requires_grad_();
    const auto out = reference(xr, pr);
    const auto grads = torch::autograd::grad({out}, {xr, pr}, {g.to(x.scalar_type())});
    s = out.detach();
    grad_x = grads[0];
    grad_phi = grads[1];
    a = x.detach().t().mm(phi.detach());
    sq = x.detach().pow(2).sum(1);
  }
};

// Sizes of the terms that cancel in the closed form (float64, from the reference's values):
// S = A^T A - phi^T diag(sq) phi, grad_phi[i] = x_i B - sq_i phi_i H,
// grad_x[i] = B phi_i - 2 w_i x_i with H = g + g^T, B = A H, w_i = phi_i^T g phi_i.
struct Noise {
  double s = 0, a = 0, sq = 0, grad_x = 0, grad_phi = 0;
  Noise(const at::Tensor& x64, const at::Tensor& phi64, const at::Tensor& g64) {
    const auto ax = x64.detach().abs(), ap = phi64.detach().abs(), ag = g64.abs();
    const auto sq = x64.detach().pow(2).sum(1, /*keepdim=*/true);
    const auto abs_a = ax.t().mm(ap);  // >= |A|
    const auto abs_h = ag + ag.t();
    const auto abs_b = abs_a.mm(abs_h);
    const auto abs_w = (ap.mm(ag) * ap).sum(1, /*keepdim=*/true);
    s = max_or_zero(abs_a.t().mm(abs_a) + ap.t().mm(ap * sq));
    a = max_or_zero(abs_a);
    this->sq = max_or_zero(sq);
    grad_phi = max_or_zero(ax.mm(abs_b) + sq * ap.mm(abs_h));
    grad_x = max_or_zero(ap.mm(abs_b.t()) + 2 * abs_w * ax);
  }
};

// The float64 reference, and for float32 the same reference in float32, on the same inputs.
struct Expected {
  Dense ref64;
  std::optional<Dense> ref32;
  Noise noise;
  Expected(const at::Tensor& x, const at::Tensor& phi, const at::Tensor& g)
      : ref64(x.to(at::kDouble), phi.to(at::kDouble), g.to(at::kDouble)),
        noise(x.to(at::kDouble), phi.to(at::kDouble), g.to(at::kDouble)) {
    if (x.scalar_type() != at::kDouble) ref32.emplace(x, phi, g);
  }
  at::Tensor r32(at::Tensor Dense::*field) const {
    return ref32 ? (*ref32).*field : at::Tensor();
  }

  void check_s(const at::Tensor& s) const {
    CHECK_CLOSE(s, ref64.s, 0.0, tolerance(s, ref64.s, r32(&Dense::s), noise.s));
  }
  void check_stats(const at::Tensor& a, const at::Tensor& sq) const {
    CHECK_CLOSE(a, ref64.a, 0.0, tolerance(a, ref64.a, r32(&Dense::a), noise.a));
    CHECK_CLOSE(sq, ref64.sq, 0.0, tolerance(sq, ref64.sq, r32(&Dense::sq), noise.sq));
  }
  void check_grad_x(const at::Tensor& gx) const {
    CHECK_CLOSE(gx, ref64.grad_x, 0.0,
                tolerance(gx, ref64.grad_x, r32(&Dense::grad_x), noise.grad_x));
  }
  void check_grad_phi(const at::Tensor& gp) const {
    CHECK_CLOSE(gp, ref64.grad_phi, 0.0,
                tolerance(gp, ref64.grad_phi, r32(&Dense::grad_phi), noise.grad_phi));
  }
};

struct Shape {
  int64_t n, g, r;
};

// N = 1..5 (no pairs, and around the 4-row r = 2 sweep), around the 64-row block, and two
// blocks plus a partial one; G = 1 and 17 (odd, past the 16 float lanes of the dot kernel);
// r = 1, 2 (the 4-row path), 3.
std::vector<Shape> sweep_shapes() {
  std::vector<Shape> shapes;
  for (int64_t n : {1L, 2L, 3L, 4L, 5L, kRowBlock - 1, kRowBlock, kRowBlock + 1,
                    2 * kRowBlock + 3}) {
    for (int64_t g : {1L, 17L}) {
      for (int64_t r : {1L, 2L, 3L}) shapes.push_back({n, g, r});
    }
  }
  return shapes;
}

void compare_with_reference(const Shape& sh, at::ScalarType dtype) {
  SCOPED_CONTEXT("n=", sh.n, " g=", sh.g, " r=", sh.r, " dtype=", dtype);
  const auto x = at::randn({sh.n, sh.g}, opts(at::kDouble)).to(dtype);
  const auto phi = at::randn({sh.n, sh.r}, opts(at::kDouble)).to(dtype);
  const auto g = at::randn({sh.r, sh.r}, opts(at::kDouble)).to(dtype);
  const Expected e(x, phi, g);

  // x and phi both require grad.
  {
    const auto x_op = x.clone().requires_grad_();
    const auto phi_op = phi.clone().requires_grad_();
    const auto [s, a, sq] = acsleuth::linear_pair_form(x_op, phi_op);
    CHECK(s.scalar_type() == dtype && a.scalar_type() == dtype && sq.scalar_type() == dtype);
    CHECK(s.sizes() == at::IntArrayRef({sh.r, sh.r}));
    CHECK(a.sizes() == at::IntArrayRef({sh.g, sh.r}));
    CHECK(sq.sizes() == at::IntArrayRef({sh.n}));
    CHECK(s.requires_grad());
    CHECK(!a.requires_grad() && !sq.requires_grad());  // saved statistics, not differentiable
    e.check_s(s);
    e.check_stats(a, sq);
    const auto grads = torch::autograd::grad({s}, {x_op, phi_op}, {g});
    CHECK(grads[0].scalar_type() == dtype && grads[1].scalar_type() == dtype);
    e.check_grad_x(grads[0]);
    e.check_grad_phi(grads[1]);
  }
  // Only phi requires grad: x gets no gradient.
  {
    SCOPED_CONTEXT("only phi requires grad");
    const auto x_op = x.clone();
    const auto phi_op = phi.clone().requires_grad_();
    const auto s = std::get<0>(acsleuth::linear_pair_form(x_op, phi_op));
    CHECK(s.requires_grad());
    s.backward(g);
    CHECK(!x_op.grad().defined());
    REQUIRE(phi_op.grad().defined());
    e.check_grad_phi(phi_op.grad());
  }
  // Only x requires grad.
  {
    SCOPED_CONTEXT("only x requires grad");
    const auto x_op = x.clone().requires_grad_();
    const auto phi_op = phi.clone();
    const auto s = std::get<0>(acsleuth::linear_pair_form(x_op, phi_op));
    s.backward(g);
    CHECK(!phi_op.grad().defined());
    REQUIRE(x_op.grad().defined());
    e.check_grad_x(x_op.grad());
  }
}

void run_reference_sweep(at::ScalarType dtype) {
  torch::manual_seed(dtype == at::kDouble ? 21 : 22);
  for (const auto& sh : sweep_shapes()) compare_with_reference(sh, dtype);
}

}  // namespace

TEST_CASE(forward_and_grad_match_reference_float64) { run_reference_sweep(at::kDouble); }

TEST_CASE(forward_and_grad_match_reference_float32) { run_reference_sweep(at::kFloat); }

// The backward op called directly (no autograd), with the forward's statistics, for each
// output mask: an unneeded gradient comes back with 0 elements.
TEST_CASE(backward_entry_point_output_mask) {
  torch::manual_seed(23);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (const Shape& sh : {Shape{5, 17, 2}, Shape{kRowBlock + 1, 17, 2},
                            Shape{2 * kRowBlock + 3, 17, 3}, Shape{4, 1, 1}}) {
      SCOPED_CONTEXT("n=", sh.n, " g=", sh.g, " r=", sh.r, " dtype=", dtype);
      const auto x = at::randn({sh.n, sh.g}, opts(dtype));
      const auto phi = at::randn({sh.n, sh.r}, opts(dtype));
      const auto g = at::randn({sh.r, sh.r}, opts(dtype));
      const auto [s, a, sq] = acsleuth::linear_pair_form(x, phi);
      CHECK(!s.requires_grad());
      const Expected e(x, phi, g);
      {
        const auto [gx, gp] = acsleuth::linear_pair_form_backward(g, x, phi, a, sq, {true, true});
        CHECK(gx.scalar_type() == dtype && gp.scalar_type() == dtype);
        e.check_grad_x(gx);
        e.check_grad_phi(gp);
      }
      {
        SCOPED_CONTEXT("mask {false, true}");
        const auto [gx, gp] =
            acsleuth::linear_pair_form_backward(g, x, phi, a, sq, {false, true});
        CHECK(gx.defined() && gx.numel() == 0);
        e.check_grad_phi(gp);
      }
      {
        SCOPED_CONTEXT("mask {true, false}");
        const auto [gx, gp] =
            acsleuth::linear_pair_form_backward(g, x, phi, a, sq, {true, false});
        CHECK(gp.defined() && gp.numel() == 0);
        e.check_grad_x(gx);
      }
    }
  }
}

// An upstream gradient with zero strides (as .sum().backward() produces) gives the same
// result as its contiguous copy, directly and through autograd.
TEST_CASE(backward_expanded_grad) {
  torch::manual_seed(24);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    for (int64_t r : {1L, 2L, 3L}) {
      SCOPED_CONTEXT("r=", r, " dtype=", dtype);
      const int64_t n = kRowBlock + 5, gf = 17;
      const auto x = at::randn({n, gf}, opts(dtype));
      const auto phi = at::randn({n, r}, opts(dtype));
      const auto [s, a, sq] = acsleuth::linear_pair_form(x, phi);
      std::vector<at::Tensor> expanded = {at::randn({}, opts(dtype)).expand({r, r})};  // (0, 0)
      if (r > 1) {  // a size-1 dimension keeps its stride when expanded to 1
        expanded.push_back(at::randn({1, r}, opts(dtype)).expand({r, r}));  // stride (0, 1)
        expanded.push_back(at::randn({r, 1}, opts(dtype)).expand({r, r}));  // stride (1, 0)
      }
      for (size_t k = 0; k < expanded.size(); ++k) {
        SCOPED_CONTEXT("expanded grad ", k, " strides=", expanded[k].strides());
        const auto& ge = expanded[k];
        const auto gc = ge.contiguous();
        CHECK(ge.stride(0) == 0 || ge.stride(1) == 0);
        for (const std::array<bool, 2> mask : {std::array<bool, 2>{true, true},
                                               std::array<bool, 2>{false, true}}) {
          const auto [gx_e, gp_e] = acsleuth::linear_pair_form_backward(ge, x, phi, a, sq, mask);
          const auto [gx_c, gp_c] = acsleuth::linear_pair_form_backward(gc, x, phi, a, sq, mask);
          CHECK(gx_e.sizes() == gx_c.sizes() && gp_e.sizes() == gp_c.sizes());
          CHECK(at::equal(gx_e, gx_c));
          CHECK(at::equal(gp_e, gp_c));
        }
        const Expected e(x, phi, gc);
        const auto [gx, gp] = acsleuth::linear_pair_form_backward(ge, x, phi, a, sq, {true, true});
        e.check_grad_x(gx);
        e.check_grad_phi(gp);
      }
      // Through autograd: S.sum() sends an expanded ones tensor back.
      const auto xg = x.clone().requires_grad_();
      const auto pg = phi.clone().requires_grad_();
      std::get<0>(acsleuth::linear_pair_form(xg, pg)).sum().backward();
      const Expected e(x, phi, at::ones({r, r}, opts(dtype)));
      e.check_grad_x(xg.grad());
      e.check_grad_phi(pg.grad());
    }
  }
}

// .backward() accumulates into .grad.
TEST_CASE(backward_accumulates_grad) {
  torch::manual_seed(25);
  const auto x = at::randn({40, 3}, opts(at::kDouble));
  const auto phi = at::randn({40, 2}, opts(at::kDouble));
  const auto w = at::randn({2, 2}, opts(at::kDouble));
  const auto x_ref = x.clone().requires_grad_();
  const auto phi_ref = phi.clone().requires_grad_();
  (reference(x_ref, phi_ref) * w).sum().backward();
  const auto xg = x.clone().requires_grad_();
  const auto pg = phi.clone().requires_grad_();
  (std::get<0>(acsleuth::linear_pair_form(xg, pg)) * w).sum().backward();
  (std::get<0>(acsleuth::linear_pair_form(xg, pg)) * w).sum().backward();
  CHECK_CLOSE_REL(xg.grad(), 2 * x_ref.grad(), 1e-10);
  CHECK_CLOSE_REL(pg.grad(), 2 * phi_ref.grad(), 1e-10);
  // No input requires grad: plain tensors come back.
  const auto [s, a, sq] = acsleuth::linear_pair_form(x, phi);
  CHECK(!s.requires_grad() && !a.requires_grad() && !sq.requires_grad());
}

TEST_CASE(non_contiguous_inputs) {
  torch::manual_seed(26);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    const int64_t n = kRowBlock + 7;
    const auto x = at::randn({9, n}, opts(dtype)).t();                     // transposed
    const auto phi = at::randn({n, 4}, opts(dtype)).slice(1, 0, 4, 2);     // strided, r = 2
    CHECK(!x.is_contiguous() && !phi.is_contiguous());
    const auto g = at::randn({2, 2}, opts(dtype)).t();  // non-contiguous upstream gradient
    const Expected e(x, phi, g);
    const auto xg = x.detach().requires_grad_();
    const auto pg = phi.detach().requires_grad_();
    const auto [s, a, sq] = acsleuth::linear_pair_form(xg, pg);
    e.check_s(s);
    e.check_stats(a, sq);
    const auto grads = torch::autograd::grad({s}, {xg, pg}, {g});
    e.check_grad_x(grads[0]);
    e.check_grad_phi(grads[1]);
  }
}

// N = 0 (no rows) and r = 0 (an empty form).
TEST_CASE(degenerate_sizes) {
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    {
      const auto x = at::randn({0, 3}, opts(dtype)).requires_grad_();
      const auto phi = at::randn({0, 2}, opts(dtype)).requires_grad_();
      const auto [s, a, sq] = acsleuth::linear_pair_form(x, phi);
      CHECK(at::equal(s, at::zeros({2, 2}, opts(dtype))));
      CHECK(at::equal(a, at::zeros({3, 2}, opts(dtype))));
      CHECK(sq.sizes() == at::IntArrayRef({0}));
      const auto grads = torch::autograd::grad({s}, {x, phi}, {at::ones({2, 2}, opts(dtype))});
      CHECK(grads[0].sizes() == x.sizes() && grads[1].sizes() == phi.sizes());
    }
    {
      const auto x = at::randn({7, 3}, opts(dtype));
      const auto [s, a, sq] = acsleuth::linear_pair_form(x, at::empty({7, 0}, opts(dtype)));
      CHECK(s.sizes() == at::IntArrayRef({0, 0}));
      CHECK(a.sizes() == at::IntArrayRef({3, 0}));
      CHECK_CLOSE_REL(sq, x.pow(2).sum(1), rtol_for(dtype));
    }
  }
}

// Results do not depend on the number of threads beyond rounding (the forward sums per-thread
// partial statistics).
TEST_CASE(thread_count_invariant) {
  torch::manual_seed(27);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    SCOPED_CONTEXT("dtype=", dtype);
    const auto x = at::randn({9 * kRowBlock + 13, 33}, opts(dtype));
    const auto phi = at::randn({9 * kRowBlock + 13, 2}, opts(dtype));
    const auto g = at::randn({2, 2}, opts(dtype));
    const double rtol = dtype == at::kDouble ? 1e-12 : 1e-5;
    const int saved = at::get_num_threads();
    std::vector<at::Tensor> ss, as, sqs, gxs, gps;
    for (int threads : {1, 2, 3}) {
      at::set_num_threads(threads);
      const auto [s, a, sq] = acsleuth::linear_pair_form(x, phi);
      const auto [gx, gp] = acsleuth::linear_pair_form_backward(g, x, phi, a, sq, {true, true});
      ss.push_back(s);
      as.push_back(a);
      sqs.push_back(sq);
      gxs.push_back(gx);
      gps.push_back(gp);
    }
    at::set_num_threads(saved);
    for (size_t i = 1; i < ss.size(); ++i) {
      SCOPED_CONTEXT("threads index ", i);
      CHECK_CLOSE_REL(ss[i], ss[0], rtol);
      CHECK_CLOSE_REL(as[i], as[0], rtol);
      CHECK(at::equal(sqs[i], sqs[0]));  // per row, no cross-thread sum
      CHECK_CLOSE_REL(gxs[i], gxs[0], rtol);
      CHECK_CLOSE_REL(gps[i], gps[0], rtol);
    }
  }
}

TEST_CASE(double_backward_is_refused) {
  const auto x = at::randn({6, 3}, opts(at::kDouble)).requires_grad_();
  const auto phi = at::randn({6, 2}, opts(at::kDouble)).requires_grad_();
  const auto s = std::get<0>(acsleuth::linear_pair_form(x, phi));
  const auto grads = torch::autograd::grad({s.sum()}, {x, phi}, {}, /*retain_graph=*/true,
                                           /*create_graph=*/true);
  CHECK(grads[0].requires_grad());
  CHECK_THROWS(torch::autograd::grad({grads[0].sum()}, {x}));
}

TEST_CASE(bad_inputs_throw) {
  const auto o = opts(at::kDouble);
  const auto x = at::randn({8, 3}, o);
  const auto phi = at::randn({8, 2}, o);
  // Shapes: x and phi 2-D, the same number of rows.
  CHECK_THROWS(acsleuth::linear_pair_form(at::randn({8}, o), phi));
  CHECK_THROWS(acsleuth::linear_pair_form(x, at::randn({8}, o)));
  CHECK_THROWS(acsleuth::linear_pair_form(at::randn({2, 8, 3}, o), phi));
  CHECK_THROWS(acsleuth::linear_pair_form(x, at::randn({9, 2}, o)));
  CHECK_THROWS(acsleuth::linear_pair_form(at::randn({7, 3}, o), phi));
  // Dtypes: equal, and float32 or float64.
  CHECK_THROWS(acsleuth::linear_pair_form(x, phi.to(at::kFloat)));
  CHECK_THROWS(acsleuth::linear_pair_form(x.to(at::kFloat), phi));
  CHECK_THROWS(acsleuth::linear_pair_form(x.to(at::kHalf), phi.to(at::kHalf)));
  CHECK_THROWS(acsleuth::linear_pair_form(x.to(at::kLong), phi.to(at::kLong)));
  // Through autograd too.
  CHECK_THROWS(acsleuth::linear_pair_form(x.clone().requires_grad_(), at::randn({9, 2}, o)));
  // Backward: the same input checks.
  const auto [s, a, sq] = acsleuth::linear_pair_form(x, phi);
  const auto g = at::ones({2, 2}, o);
  CHECK_THROWS(acsleuth::linear_pair_form_backward(g, x, at::randn({9, 2}, o), a, sq,
                                                   {true, true}));
  CHECK_THROWS(acsleuth::linear_pair_form_backward(g, at::randn({8}, o), phi, a, sq,
                                                   {true, true}));
  CHECK_THROWS(acsleuth::linear_pair_form_backward(g, x, phi.to(at::kFloat), a, sq,
                                                   {true, true}));
  // Backward: grad, a and sq must match x and phi (they used to be read out of bounds).
  CHECK_THROWS(acsleuth::linear_pair_form_backward(at::ones({1, 2}, o), x, phi, a, sq,
                                                   {true, true}));
  CHECK_THROWS(acsleuth::linear_pair_form_backward(g, x, phi, a, sq.narrow(0, 0, 2),
                                                   {true, true}));
  CHECK_THROWS(acsleuth::linear_pair_form_backward(g, x, phi, a.narrow(0, 0, 2), sq,
                                                   {true, true}));
}

// Rows spanning many decades of norm (1e-6 to 1e6 in float32, 1e-100 to 1e100 in float64),
// N = 1 and N not a multiple of the 64-row block or the 4-row sweep: S and the gradients are
// finite and within (N + G) ulp of |phi|^T |X| |X|^T |phi|, the size of the terms that the
// closed form subtracts (for N = 1, S = 0 up to that rounding: the diagonal is all there is).
TEST_CASE(extreme_magnitudes_and_odd_sizes) {
  torch::manual_seed(41);
  for (auto dtype : {at::kDouble, at::kFloat}) {
    const double decades = dtype == at::kDouble ? 200.0 : 12.0;
    const double ulp = dtype == at::kDouble ? std::numeric_limits<double>::epsilon()
                                            : std::numeric_limits<float>::epsilon();
    for (int64_t n : {1L, 3L, kRowBlock + 3, 2 * kRowBlock - 1}) {
      SCOPED_CONTEXT("dtype=", dtype, " n=", n);
      const int64_t g = 11, r = 2;
      const auto scale = at::pow(10.0, (at::rand({n, 1}, opts(at::kDouble)) - 0.5) * decades);
      const auto x = (at::randn({n, g}, opts(at::kDouble)) * scale).to(dtype);
      const auto phi = at::rand({n, r}, opts(at::kDouble)).to(dtype);
      const auto x_op = x.clone().requires_grad_();
      const auto phi_op = phi.clone().requires_grad_();
      const auto s = std::get<0>(acsleuth::linear_pair_form(x_op, phi_op));
      const auto grads = torch::autograd::grad({s}, {x_op, phi_op}, {at::ones({r, r}, opts(dtype))});
      const auto x64 = x.to(at::kDouble), phi64 = phi.to(at::kDouble);
      const auto bound = phi64.abs().t().mm(x64.abs().mm(x64.abs().t())).mm(phi64.abs());
      const double atol = 4 * (n + g) * ulp * bound.max().item<double>();
      CHECK(at::isfinite(s).all().item<bool>());
      CHECK(at::isfinite(grads[0]).all().item<bool>());
      CHECK(at::isfinite(grads[1]).all().item<bool>());
      CHECK_CLOSE(s, reference(x64, phi64), 0.0, atol);
    }
  }
}
