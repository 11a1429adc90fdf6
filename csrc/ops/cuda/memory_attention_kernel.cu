// CUDA memory_attention, forward and backward.
//
// Forward, fused (memory_attention_fused_kernel): one 256-thread block per 16 rows of z.
// The block's 16 x N_mem logits live in dynamic shared memory. Phase 1 streams 64-slot
// tiles of M (and the z rows) through shared memory in feature chunks of 16 and writes
// z M^T / t; phase 2 does, per row and per warp, the max-subtracted softmax (probs go to
// global memory), the hard shrinkage and the L1 renormalisation in place; phase 3 streams
// M again (16 slots x 64 features at a time) for out = w M.
// Fallback, when 16 x N_mem logits do not fit in shared memory: logits = z M^T / t with
// at::mm in the accumulation dtype, the same per-row code in a warp-per-row kernel, and
// out = w M with at::mm (these matmuls follow the global TF32 setting for float32).
//
// Backward: the four GEMMs (gw = g M^T, grad_z = gl M, grad_M = w^T g + gl^T z) are
// at::mm / at::addmm in the accumulation dtype; one warp-per-row kernel recomputes s, S and
// w from the saved probs and turns gw into gl (the logits gradient, 1 / t included).
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../memory_attention.h"
#include "memory_attention.cuh"

namespace acsleuth {
namespace ops {

namespace {

using cuda::ceil_div;

std::tuple<at::Tensor, at::Tensor> memory_attention_kernel(const at::Tensor& z,
                                                           const at::Tensor& memory,
                                                           double temperature, double shrink) {
  detail::check_memory_attention_inputs(z, memory, temperature, shrink);

  c10::cuda::CUDAGuard device_guard(z.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const int64_t b = z.size(0);
  const int64_t p = z.size(1);
  const int64_t n_mem = memory.size(0);
  auto out = at::empty({b, p}, z.options());
  auto probs = at::empty({b, n_mem}, z.options());
  if (b == 0) return {out, probs};

  auto z_ = z.contiguous();
  auto mem_ = memory.contiguous();
  const int device = z.get_device();
  const size_t smem_limit = cuda::max_smem_optin(device);

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, z.scalar_type(), "memory_attention_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        const auto t = static_cast<acc_t>(temperature);
        const auto l = static_cast<acc_t>(shrink);
        const auto eps_shrink = static_cast<acc_t>(detail::kShrinkEps);
        const auto eps_norm = static_cast<acc_t>(detail::kNormEps);
        const size_t smem = static_cast<size_t>(cuda::ma_smem_elems(n_mem)) * sizeof(acc_t);

        if (smem <= smem_limit) {
          auto kernel = cuda::memory_attention_fused_kernel<scalar_t, acc_t>;
          cuda::allow_dynamic_smem(kernel, smem);
          const auto blocks = static_cast<unsigned>(ceil_div<int64_t>(b, cuda::kMaRows));
          kernel<<<blocks, cuda::kMaThreads, smem, stream>>>(
              z_.data_ptr<scalar_t>(), mem_.data_ptr<scalar_t>(), b, p, n_mem, t, l,
              eps_shrink, eps_norm, out.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        } else {
          const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
          auto mem_acc = mem_.to(acc_type);
          auto w = at::mm(z_.to(acc_type), mem_acc.t()).div_(temperature).contiguous();
          const auto blocks = static_cast<unsigned>(ceil_div<int64_t>(b, cuda::kMaWarps));
          cuda::memory_attention_rows_kernel<scalar_t, acc_t>
              <<<blocks, cuda::kMaThreads, 0, stream>>>(w.data_ptr<acc_t>(), b, n_mem, l,
                                                        eps_shrink, eps_norm,
                                                        probs.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          out.copy_(at::mm(w, mem_acc));
        }
      });
  return {out, probs};
}

std::tuple<at::Tensor, at::Tensor> memory_attention_backward_kernel(
    const at::Tensor& grad_out, const at::Tensor& z, const at::Tensor& memory,
    const at::Tensor& probs, double temperature, double shrink) {
  detail::check_memory_attention_inputs(z, memory, temperature, shrink);
  TORCH_CHECK(grad_out.sizes() == z.sizes(), "memory_attention backward: grad_out must be ",
              z.sizes(), ", got ", grad_out.sizes());
  TORCH_CHECK(probs.dim() == 2 && probs.size(0) == z.size(0) && probs.size(1) == memory.size(0),
              "memory_attention backward: probs must be ", z.size(0), " x ", memory.size(0),
              ", got ", probs.sizes());
  TORCH_CHECK(probs.scalar_type() == z.scalar_type(), "memory_attention backward: probs is ",
              probs.scalar_type(), " but z is ", z.scalar_type());
  TORCH_CHECK(grad_out.device() == z.device() && probs.device() == z.device(),
              "memory_attention backward: grad_out, probs and z must be on one device");

  c10::cuda::CUDAGuard device_guard(z.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const int64_t b = z.size(0);
  const int64_t n_mem = memory.size(0);
  if (b == 0) return {at::zeros_like(z), at::zeros_like(memory)};

  const auto acc_type = at::toAccumulateType(z.scalar_type(), /*is_cuda=*/true);
  auto probs_ = probs.contiguous();
  auto g = grad_out.to(acc_type);
  auto z_acc = z.to(acc_type);
  auto mem_acc = memory.to(acc_type);
  auto gw = at::mm(g, mem_acc.t()).contiguous();
  auto w = at::empty({b, n_mem}, gw.options());
  auto gl = at::empty({b, n_mem}, gw.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, z.scalar_type(), "memory_attention_backward_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        const auto blocks = static_cast<unsigned>(ceil_div<int64_t>(b, cuda::kMaWarps));
        cuda::memory_attention_backward_rows_kernel<scalar_t, acc_t>
            <<<blocks, cuda::kMaThreads, 0, stream>>>(
                probs_.data_ptr<scalar_t>(), gw.data_ptr<acc_t>(), b, n_mem,
                static_cast<acc_t>(temperature), static_cast<acc_t>(shrink),
                static_cast<acc_t>(detail::kShrinkEps), static_cast<acc_t>(detail::kNormEps),
                w.data_ptr<acc_t>(), gl.data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });

  auto grad_z = at::mm(gl, mem_acc);
  auto grad_mem = at::addmm(at::mm(w.t(), g), gl.t(), z_acc);
  return {grad_z.to(z.scalar_type()), grad_mem.to(memory.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, CUDA, m) {
  m.impl("memory_attention", TORCH_FN(memory_attention_kernel));
  m.impl("_memory_attention_backward", TORCH_FN(memory_attention_backward_kernel));
}

}  // namespace ops
}  // namespace acsleuth
