// CUDA gaussian_pair_form, forward and backward.
//
// Tiling (both passes): 64 x 64 tiles of the implicit N x N kernel matrix, one 256-thread
// block per 64-row tile. For each 64-column tile, x_I . x_J comes from tile_dot (features
// streamed through shared memory in chunks of 16, 4 x 4 register micro-tiles), then
// d_ij = |x_i|^2 + |x_j|^2 - 2 x_i . x_j (clamped at 0; the squared norms come from a small
// pre-kernel) and k_ij = sum_b exp(-c_b d_ij) are formed in registers, i == j and rows or
// columns past N give 0. The k tile goes to shared memory and is multiplied by the tile's
// 64 x r rows of phi (or psi), accumulating v_i = sum_j k_ij phi_j in registers.
//
// Forward: S is symmetric, so each block visits only about half of the column tiles
// (tile offsets mod T, see gpf_forward_kernel) and S = P + P^T. Column tiles are further
// split over gridDim.y so that small N still fills the GPU. Each block writes its r x r
// partial phi_I^T V_I to a workspace that at::sum reduces (deterministic, no atomics).
//
// Backward: psi = phi (grad + grad^T) with ATen. Rows are processed in chunks of R rows
// (R x N acc-dtype workspace <= 256 MB, at least one 64-row tile). The fused kernel writes
// A_ij = 2 (phi_i . psi_j) sum_b c_b exp(-c_b d_ij) for the chunk, plus per-split partial
// row sums of A and grad_phi rows; the host then sets A_ii = -sum_j A_ij and computes
// grad_x = A x with one at::mm per chunk (that is sum_j A_ij (x_j - x_i)).
//
// Limits: r <= 16 and at most 8 bandwidths (TORCH_CHECKed).
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../gaussian_pair_form.h"
#include "gaussian_pair_form.cuh"

namespace acsleuth {
namespace ops {

namespace {

using cuda::ceil_div;
using cuda::kTile;
using cuda::kTileThreads;

constexpr int64_t kWorkspaceBytes = int64_t{256} << 20;
constexpr int kBlocksPerSm = 2;  // grid target for the column-tile splits

template <typename acc_t>
cuda::GaussianCoeffs<acc_t> make_coeffs(at::ArrayRef<double> bandwidths) {
  const std::vector<double> c = detail::gaussian_coefficients(bandwidths);
  TORCH_CHECK(c.size() <= static_cast<size_t>(cuda::kGpfMaxBandwidths),
              "gaussian_pair_form (CUDA): at most ", cuda::kGpfMaxBandwidths,
              " bandwidths are supported, got ", c.size());
  cuda::GaussianCoeffs<acc_t> out{};
  out.count = static_cast<int>(c.size());
  for (size_t b = 0; b < c.size(); ++b) out.c[b] = static_cast<acc_t>(c[b]);
  return out;
}

void check_rank(int64_t r) {
  TORCH_CHECK(r <= cuda::kGpfMaxRank, "gaussian_pair_form (CUDA): phi may have at most ",
              cuda::kGpfMaxRank, " columns, got ", r);
}

// |x_i|^2 in the accumulation dtype.
template <typename scalar_t, typename acc_t>
at::Tensor row_sq_norms(const at::Tensor& x, cudaStream_t stream) {
  const int64_t n = x.size(0);
  const int64_t g = x.size(1);
  at::Tensor sq = at::empty({n}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  const int64_t rows_per_block = cuda::kGpfNormThreads / cuda::kWarpSize;
  const auto blocks = static_cast<unsigned>(ceil_div<int64_t>(n, rows_per_block));
  cuda::row_sq_norms_kernel<scalar_t, acc_t><<<blocks, cuda::kGpfNormThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), n, g, sq.data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return sq;
}

template <typename Kernel>
size_t prepare_smem(Kernel* kernel, size_t elem_bytes, int device) {
  const size_t bytes = static_cast<size_t>(cuda::GpfSmem::kSize) * elem_bytes;
  TORCH_CHECK(bytes <= cuda::max_smem_optin(device), "gaussian_pair_form (CUDA): needs ",
              bytes, " bytes of shared memory per block, more than this GPU offers");
  cuda::allow_dynamic_smem(kernel, bytes);
  return bytes;
}

at::Tensor gaussian_pair_form_kernel(const at::Tensor& x, const at::Tensor& phi,
                                     at::ArrayRef<double> bandwidths) {
  detail::check_gaussian_pair_form_inputs(x, phi, bandwidths);
  check_rank(phi.size(1));

  c10::cuda::CUDAGuard device_guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const int64_t n = x.size(0);
  const int64_t g = x.size(1);
  const int64_t r = phi.size(1);
  if (n == 0 || r == 0) return at::zeros({r, r}, phi.options());

  auto x_ = detail::centered(x);
  auto phi_ = phi.contiguous();
  const int device = x.get_device();
  const int64_t tiles = ceil_div<int64_t>(n, kTile);
  const int64_t min_offsets = 1 + (tiles - 1) / 2;
  const int64_t target = int64_t{kBlocksPerSm} * cuda::sm_count(device);
  const int64_t splits = std::clamp<int64_t>(ceil_div<int64_t>(target, tiles), 1, min_offsets);

  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gaussian_pair_form_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        const auto coeffs = make_coeffs<acc_t>(bandwidths);
        const auto acc_opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
        auto sq = row_sq_norms<scalar_t, acc_t>(x_, stream);
        auto partial = at::empty({tiles * splits, r, r}, acc_opts);

        auto kernel = cuda::gpf_forward_kernel<scalar_t, acc_t>;
        const size_t smem = prepare_smem(kernel, sizeof(acc_t), device);
        const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(splits));
        kernel<<<grid, kTileThreads, smem, stream>>>(
            x_.data_ptr<scalar_t>(), phi_.data_ptr<scalar_t>(), sq.data_ptr<acc_t>(), n, g,
            static_cast<int>(r), coeffs, partial.data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();

        auto p = partial.sum(0);
        out = (p + p.t()).to(x.scalar_type());
      });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gaussian_pair_form_backward_kernel(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& phi,
    at::ArrayRef<double> bandwidths) {
  detail::check_gaussian_pair_form_inputs(x, phi, bandwidths);
  check_rank(phi.size(1));
  const int64_t r = phi.size(1);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == r && grad.size(1) == r,
              "gaussian_pair_form backward: grad must be ", r, " x ", r, ", got ",
              grad.sizes());
  TORCH_CHECK(grad.device() == x.device(), "gaussian_pair_form backward: grad is on ",
              grad.device(), " but x is on ", x.device());

  c10::cuda::CUDAGuard device_guard(x.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const int64_t n = x.size(0);
  const int64_t g = x.size(1);
  if (n == 0 || r == 0) return {at::zeros_like(x), at::zeros_like(phi)};

  auto x_ = detail::centered(x);
  auto phi_ = phi.contiguous();
  const int device = x.get_device();
  const auto acc_type = at::toAccumulateType(x.scalar_type(), /*is_cuda=*/true);
  const auto acc_opts = x.options().dtype(acc_type);
  const int64_t elem = static_cast<int64_t>(c10::elementSize(acc_type));

  // Row chunk: R x N workspace within kWorkspaceBytes, a multiple of the tile, <= N.
  int64_t rows_cap = kWorkspaceBytes / (n * elem) / kTile * kTile;
  rows_cap = std::min(std::max<int64_t>(rows_cap, kTile), n);
  const int64_t col_tiles = ceil_div<int64_t>(n, kTile);
  const int64_t row_tiles = ceil_div<int64_t>(rows_cap, kTile);
  const int64_t target = int64_t{kBlocksPerSm} * cuda::sm_count(device);
  const int64_t splits = std::clamp<int64_t>(ceil_div<int64_t>(target, row_tiles), 1, col_tiles);

  auto h = grad.to(acc_type);
  auto psi = at::mm(phi_.to(acc_type), h + h.t()).contiguous();
  auto x_acc = x_.to(acc_type);  // x_ itself for float / double
  auto a_chunk = at::empty({rows_cap, n}, acc_opts);
  auto rowsum_part = at::empty({splits, rows_cap}, acc_opts);
  auto gphi_part = at::empty({splits, rows_cap, r}, acc_opts);
  auto grad_x = at::empty_like(x_);
  auto grad_phi = at::empty({n, r}, acc_opts);

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gaussian_pair_form_backward_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        const auto coeffs = make_coeffs<acc_t>(bandwidths);
        auto sq = row_sq_norms<scalar_t, acc_t>(x_, stream);
        auto kernel = cuda::gpf_backward_kernel<scalar_t, acc_t>;
        const size_t smem = prepare_smem(kernel, sizeof(acc_t), device);

        for (int64_t row0 = 0; row0 < n; row0 += rows_cap) {
          const int64_t rows = std::min(rows_cap, n - row0);
          const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(rows, kTile)),
                          static_cast<unsigned>(splits));
          kernel<<<grid, kTileThreads, smem, stream>>>(
              x_.data_ptr<scalar_t>(), phi_.data_ptr<scalar_t>(), psi.data_ptr<acc_t>(),
              sq.data_ptr<acc_t>(), n, g, static_cast<int>(r), coeffs, row0, rows, rows_cap,
              a_chunk.data_ptr<acc_t>(), rowsum_part.data_ptr<acc_t>(),
              gphi_part.data_ptr<acc_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();

          auto a = a_chunk.narrow(0, 0, rows);
          a.narrow(1, row0, rows).diagonal().copy_(rowsum_part.narrow(1, 0, rows).sum(0).neg_());
          grad_phi.narrow(0, row0, rows).copy_(gphi_part.narrow(1, 0, rows).sum(0));
          auto gx = grad_x.narrow(0, row0, rows);
          if (x_acc.scalar_type() == x_.scalar_type()) {
            at::mm_out(gx, a, x_acc);
          } else {
            gx.copy_(at::mm(a, x_acc));
          }
        }
      });
  return {grad_x, grad_phi.to(phi.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, CUDA, m) {
  m.impl("gaussian_pair_form", TORCH_FN(gaussian_pair_form_kernel));
  m.impl("_gaussian_pair_form_backward", TORCH_FN(gaussian_pair_form_backward_kernel));
}

}  // namespace ops
}  // namespace acsleuth
