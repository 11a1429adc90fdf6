// gaussian_pair_form on CPU, tiled: no N x N matrix is ever stored.
//
// Forward: S is symmetric, so only tile pairs (I, J) with J >= I are visited; a tile's
// contribution T = sum_{i in I, j in J, i != j} k_ij phi_i phi_j^T enters S as T (diagonal
// tiles) or T + T^T (off-diagonal tiles). Tile pairs are spread over threads; each pair
// costs one single-threaded GEMM for the dot products, then the kernel values and the
// contraction with phi while the tile is still in cache.
// Backward: rows are split across threads; for each row tile I and every column tile J the
// same kernel tile gives grad_phi_I += K psi_J and A = 2 (phi_I psi_J^T) o K' (K' the
// c-weighted kernel), and grad_x_I += A x_J - rowsum(A) x_I through a GEMM.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../gaussian_pair_form.h"
#include "row_math.h"

namespace acsleuth {
namespace {

constexpr int64_t kTile = 256;

// y[j] = sum_b exp(-c_b max(sq_i + sq[j] - 2 dot[j], 0)); float rows use the vector kernel.
template <typename scalar_t>
void kernel_row(scalar_t sq_i, const scalar_t* sq, const scalar_t* dot, const scalar_t* c,
                int64_t n_bw, int64_t n, scalar_t* y) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    cpu::gaussian_kernel_row(sq_i, sq, dot, c, n_bw, n, y);
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const scalar_t d = std::max<scalar_t>(sq_i + sq[j] - 2 * dot[j], 0);
      scalar_t s = 0;
      for (int64_t b = 0; b < n_bw; ++b) s += std::exp(-c[b] * d);
      y[j] = s;
    }
  }
}

// Tile pairs (I, J), J >= I, numbered row by row: row I holds n_tiles - I pairs.
std::pair<int64_t, int64_t> tile_pair(int64_t p, int64_t n_tiles) {
  int64_t i = 0;
  while (p >= n_tiles - i) {
    p -= n_tiles - i;
    ++i;
  }
  return {i, i + p};
}

template <typename scalar_t>
at::Tensor forward_impl(const at::Tensor& x, const at::Tensor& phi,
                        const std::vector<double>& coeffs) {
  const int64_t n = x.size(0);
  const int64_t r = phi.size(1);
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  const int64_t n_pairs = n_tiles * (n_tiles + 1) / 2;
  const std::vector<scalar_t> c(coeffs.begin(), coeffs.end());
  const int64_t n_bw = static_cast<int64_t>(c.size());
  const auto sq = x.pow(2).sum(1).contiguous();
  const scalar_t* sq_p = sq.const_data_ptr<scalar_t>();
  const scalar_t* phi_p = phi.const_data_ptr<scalar_t>();

  const int64_t n_threads = at::get_num_threads();
  // Per-thread accumulators: diagonal-tile and off-diagonal-tile parts of S.
  std::vector<double> acc(static_cast<size_t>(n_threads * 2 * r * r), 0.0);
  at::parallel_for(0, n_pairs, 1, [&](int64_t p0, int64_t p1) {
    // Worker threads do not inherit the caller's dispatch state: skip autograd here too.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    double* diag = acc.data() + at::get_thread_num() * 2 * r * r;
    double* off = diag + r * r;
    auto dot_buf = at::empty({kTile * kTile}, x.options());
    std::vector<scalar_t> krow(kTile);
    std::vector<double> v(r);
    auto [ti, tj] = tile_pair(p0, n_tiles);
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i0 = ti * kTile, in = std::min(kTile, n - i0);
      const int64_t j0 = tj * kTile, jn = std::min(kTile, n - j0);
      at::Tensor dot = at::from_blob(static_cast<scalar_t*>(dot_buf.data_ptr()), {in, jn}, x.options());
      at::mm_out(dot, x.narrow(0, i0, in), x.narrow(0, j0, jn).t());
      const scalar_t* dot_p = dot.const_data_ptr<scalar_t>();
      double* out = ti == tj ? diag : off;
      for (int64_t a = 0; a < in; ++a) {
        const int64_t i = i0 + a;
        kernel_row(sq_p[i], sq_p + j0, dot_p + a * jn, c.data(), n_bw, jn, krow.data());
        if (ti == tj) krow[a] = 0;  // i == j
        std::fill(v.begin(), v.end(), 0.0);
        for (int64_t b = 0; b < jn; ++b) {
          const scalar_t* pj = phi_p + (j0 + b) * r;
          for (int64_t q = 0; q < r; ++q) v[q] += static_cast<double>(krow[b]) * pj[q];
        }
        const scalar_t* pi = phi_p + i * r;
        for (int64_t q1 = 0; q1 < r; ++q1)
          for (int64_t q2 = 0; q2 < r; ++q2) out[q1 * r + q2] += pi[q1] * v[q2];
      }
      if (++tj == n_tiles) tj = ++ti;
    }
  });

  std::vector<double> s(static_cast<size_t>(r * r), 0.0);
  for (int64_t t = 0; t < n_threads; ++t) {
    const double* diag = acc.data() + t * 2 * r * r;
    const double* off = diag + r * r;
    for (int64_t q1 = 0; q1 < r; ++q1)
      for (int64_t q2 = 0; q2 < r; ++q2)
        s[q1 * r + q2] += diag[q1 * r + q2] + off[q1 * r + q2] + off[q2 * r + q1];
  }
  return at::tensor(s, x.options().dtype(at::kDouble)).view({r, r}).to(x.scalar_type());
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> backward_impl(const at::Tensor& grad, const at::Tensor& x,
                                                 const at::Tensor& phi,
                                                 const std::vector<double>& coeffs) {
  const int64_t n = x.size(0);
  const int64_t r = phi.size(1);
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  const std::vector<scalar_t> c(coeffs.begin(), coeffs.end());
  const int64_t n_bw = static_cast<int64_t>(c.size());
  const auto sq = x.pow(2).sum(1).contiguous();
  const auto psi = at::mm(phi, grad + grad.t()).contiguous();
  auto grad_x = at::zeros_like(x);
  auto grad_phi = at::zeros_like(phi);
  const scalar_t* sq_p = sq.const_data_ptr<scalar_t>();
  const scalar_t* phi_p = phi.const_data_ptr<scalar_t>();
  const scalar_t* psi_p = psi.const_data_ptr<scalar_t>();
  scalar_t* gphi_p = grad_phi.data_ptr<scalar_t>();

  at::parallel_for(0, n_tiles, 1, [&](int64_t t0, int64_t t1) {
    // Worker threads do not inherit the caller's dispatch state: skip autograd here too.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto dot_buf = at::empty({kTile * kTile}, x.options());
    auto a_buf = at::empty({kTile * kTile}, x.options());
    std::vector<scalar_t> kb(static_cast<size_t>(kTile));
    std::vector<scalar_t> e_b(static_cast<size_t>(kTile));
    std::vector<double> rowsum(static_cast<size_t>(kTile));
    std::vector<double> gp(static_cast<size_t>(kTile * r));
    for (int64_t ti = t0; ti < t1; ++ti) {
      const int64_t i0 = ti * kTile, in = std::min(kTile, n - i0);
      const auto xi = x.narrow(0, i0, in);
      auto gxi = grad_x.narrow(0, i0, in);
      std::fill(rowsum.begin(), rowsum.end(), 0.0);
      std::fill(gp.begin(), gp.end(), 0.0);
      for (int64_t j0 = 0; j0 < n; j0 += kTile) {
        const int64_t jn = std::min(kTile, n - j0);
        const auto xj = x.narrow(0, j0, jn);
        at::Tensor dot = at::from_blob(static_cast<scalar_t*>(dot_buf.data_ptr()), {in, jn}, x.options());
        at::Tensor amat = at::from_blob(static_cast<scalar_t*>(a_buf.data_ptr()), {in, jn}, x.options());
        at::mm_out(dot, xi, xj.t());
        const scalar_t* dot_p = dot.const_data_ptr<scalar_t>();
        scalar_t* a_p = amat.data_ptr<scalar_t>();
        for (int64_t a = 0; a < in; ++a) {
          const int64_t i = i0 + a;
          const scalar_t* pi = phi_p + i * r;
          // Row a of A first holds K'_ij = sum_b c_b exp(-c_b d_ij); kb holds K_ij.
          scalar_t* arow = a_p + a * jn;
          std::fill(arow, arow + jn, scalar_t(0));
          std::fill(kb.begin(), kb.begin() + jn, scalar_t(0));
          for (int64_t bw = 0; bw < n_bw; ++bw) {
            kernel_row(sq_p[i], sq_p + j0, dot_p + a * jn, &c[bw], 1, jn, e_b.data());
            for (int64_t b = 0; b < jn; ++b) {
              kb[b] += e_b[b];
              arow[b] += c[bw] * e_b[b];
            }
          }
          double rs = 0.0;
          for (int64_t b = 0; b < jn; ++b) {
            const int64_t j = j0 + b;
            scalar_t* e = a_p + a * jn + b;
            if (j == i) {
              *e = 0;
              continue;
            }
            const scalar_t* pj = psi_p + j * r;
            double w = 0.0;
            for (int64_t q = 0; q < r; ++q) {
              w += static_cast<double>(pi[q]) * pj[q];
              gp[a * r + q] += static_cast<double>(kb[b]) * pj[q];
            }
            *e = static_cast<scalar_t>(2.0 * w * (*e));
            rs += *e;
          }
          rowsum[a] += rs;
        }
        gxi.addmm_(amat, xj);
      }
      for (int64_t a = 0; a < in; ++a) {
        for (int64_t q = 0; q < r; ++q) gphi_p[(i0 + a) * r + q] = gp[a * r + q];
      }
      auto rs = at::tensor(std::vector<double>(rowsum.begin(), rowsum.begin() + in),
                           x.options().dtype(at::kDouble))
                    .to(x.scalar_type());
      gxi.sub_(xi * rs.unsqueeze(1));
    }
  });
  return {grad_x, grad_phi};
}

void check_cpu_dtype(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "gaussian_pair_form: the CPU kernel takes float32 or float64, got ",
              x.scalar_type());
}

at::Tensor gaussian_pair_form_cpu(const at::Tensor& x, const at::Tensor& phi,
                                  at::ArrayRef<double> bandwidths) {
  detail::check_gaussian_pair_form_inputs(x, phi, bandwidths);
  check_cpu_dtype(x);
  const int64_t r = phi.size(1);
  if (x.size(0) < 2 || r == 0) return at::zeros({r, r}, x.options());
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gaussian_pair_form_cpu", [&] {
    out = forward_impl<scalar_t>(detail::centered(x), phi.contiguous(),
                                 detail::gaussian_coefficients(bandwidths));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gaussian_pair_form_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi,
    at::ArrayRef<double> bandwidths) {
  detail::check_gaussian_pair_form_inputs(x, phi, bandwidths);
  check_cpu_dtype(x);
  const int64_t r = phi.size(1);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == r && grad.size(1) == r,
              "gaussian_pair_form backward: grad must be ", r, " x ", r);
  if (x.size(0) < 2 || r == 0) return {at::zeros_like(x), at::zeros_like(phi)};
  std::tuple<at::Tensor, at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gaussian_pair_form_backward_cpu", [&] {
    out = backward_impl<scalar_t>(grad.to(x.scalar_type()).contiguous(), detail::centered(x),
                                  phi.contiguous(), detail::gaussian_coefficients(bandwidths));
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, CPU, m) {
  m.impl("gaussian_pair_form", &gaussian_pair_form_cpu);
  m.impl("_gaussian_pair_form_backward", &gaussian_pair_form_backward_cpu);
}

}  // namespace acsleuth
