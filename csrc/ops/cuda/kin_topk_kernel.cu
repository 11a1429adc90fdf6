// CUDA kin_topk: streaming top-k similarity search.
//
// Exact path (default, and every dtype other than float32): a fused kernel. A 256-thread
// block owns 64 queries and walks 64-key tiles; tile_dot computes the 64 x 64 dot products
// (features streamed through shared memory in chunks of 16, 4 x 4 register micro-tiles,
// FMA in the accumulation dtype), scaled by 1 / (|q| |k|) for cosine. The scored tile goes
// to shared memory (row stride 65), and each warp merges 8 of its rows into 8 top-k lists
// kept in registers (WarpTopK: lane l holds entries l and l + 32, k <= 64). A candidate is
// admitted only if it beats the k-th entry (ballot), then inserted by a warp-wide shift.
// Order is value descending, then key index ascending, on the scores rounded to the input
// dtype (the values returned); NaN scores count as -inf.
// When there are too few query tiles to fill the GPU, the key tiles are split over
// gridDim.y and a second kernel merges the per-split lists with the same WarpTopK.
//
// TF32 path (allow_tf32 with float32 inputs): raw dot products of (query chunk x key chunk)
// come from at::mm with TF32 enabled only for this call, into a workspace of at most 256 MB;
// a merge kernel (one warp per query, same WarpTopK) folds each chunk into running lists
// kept in global memory between key chunks.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <tuple>

#include "../kin_topk.h"
#include "kin_topk.cuh"

namespace acsleuth {
namespace ops {

namespace {

using cuda::ceil_div;
using cuda::kTile;
using cuda::kTileThreads;

constexpr int64_t kWorkspaceFloats = (int64_t{256} << 20) / static_cast<int64_t>(sizeof(float));
constexpr int64_t kMinKeyChunk = 4096;
constexpr int kBlocksPerSm = 2;
constexpr int64_t kMinTilesPerSplit = 4;

static_assert(cuda::kTopkMax >= kMaxTopK, "WarpTopK must hold kMaxTopK entries");

// Enables TF32 cuBLAS matmuls while alive (process-global setting, like torch.backends).
// When TF32 is off on entry, it is switched on with setAllowTF32CuBLAS(true) and the exit
// restores both the legacy flag (off) and the previous CUDA matmul fp32 precision.
class AllowTF32Scope {
 public:
  AllowTF32Scope()
      : previous_(at::globalContext().float32Precision(at::Float32Backend::CUDA,
                                                        at::Float32Op::MATMUL)),
        changed_(previous_ != at::Float32Precision::TF32) {
    if (changed_) at::globalContext().setAllowTF32CuBLAS(true);
  }
  ~AllowTF32Scope() {
    if (changed_) {
      at::globalContext().setAllowTF32CuBLAS(false);
      at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL,
                                              previous_);
    }
  }
  AllowTF32Scope(const AllowTF32Scope&) = delete;
  AllowTF32Scope& operator=(const AllowTF32Scope&) = delete;

 private:
  at::Float32Precision previous_;
  bool changed_;
};

void topk_fused(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& inv_q,
                const at::Tensor& inv_k, int64_t k, at::Tensor& values, at::Tensor& indices,
                cudaStream_t stream) {
  const int64_t nq = query.size(0);
  const int64_t nk = keys.size(0);
  const int64_t d = query.size(1);
  const int device = query.get_device();
  const int64_t q_tiles = ceil_div<int64_t>(nq, kTile);
  const int64_t key_tiles = ceil_div<int64_t>(nk, kTile);
  const int64_t target = int64_t{kBlocksPerSm} * cuda::sm_count(device);
  const int64_t max_splits = std::max<int64_t>(1, key_tiles / kMinTilesPerSplit);
  const int64_t splits = std::clamp<int64_t>(ceil_div<int64_t>(target, q_tiles), 1, max_splits);

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, query.scalar_type(), "kin_topk_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        const auto acc_opts = query.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
        at::Tensor part_v;
        at::Tensor part_i;
        if (splits > 1) {
          part_v = at::empty({splits, nq, k}, acc_opts);
          part_i = at::empty({splits, nq, k}, query.options().dtype(at::kInt));
        }
        const acc_t* inv_q_ptr = inv_q.defined() ? inv_q.data_ptr<acc_t>() : nullptr;
        const acc_t* inv_k_ptr = inv_k.defined() ? inv_k.data_ptr<acc_t>() : nullptr;

        auto kernel = cuda::kin_topk_tile_kernel<scalar_t, acc_t>;
        const size_t smem = static_cast<size_t>(cuda::TopkSmem::kSize) * sizeof(acc_t);
        TORCH_CHECK(smem <= cuda::max_smem_optin(device), "kin_topk (CUDA): needs ", smem,
                    " bytes of shared memory per block, more than this GPU offers");
        cuda::allow_dynamic_smem(kernel, smem);
        const dim3 grid(static_cast<unsigned>(q_tiles), static_cast<unsigned>(splits));
        kernel<<<grid, kTileThreads, smem, stream>>>(
            query.data_ptr<scalar_t>(), keys.data_ptr<scalar_t>(), inv_q_ptr, inv_k_ptr, nq, nk,
            d, static_cast<int>(k), splits > 1 ? part_v.data_ptr<acc_t>() : nullptr,
            splits > 1 ? part_i.data_ptr<int>() : nullptr, values.data_ptr<scalar_t>(),
            indices.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();

        if (splits > 1) {
          const auto blocks = static_cast<unsigned>(ceil_div<int64_t>(nq, cuda::kTopkWarps));
          cuda::kin_topk_merge_splits_kernel<scalar_t, acc_t><<<blocks, kTileThreads, 0, stream>>>(
                  part_v.data_ptr<acc_t>(), part_i.data_ptr<int>(), splits, nq,
                  static_cast<int>(k), values.data_ptr<scalar_t>(), indices.data_ptr<int64_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
}

void topk_tf32(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& inv_q,
               const at::Tensor& inv_k, int64_t k, at::Tensor& values, at::Tensor& indices,
               cudaStream_t stream) {
  const int64_t nq = query.size(0);
  const int64_t nk = keys.size(0);
  // Chunks: qc x kc floats <= kWorkspaceFloats, key chunks of at least kMinKeyChunk.
  const int64_t kc_max =
      std::min(nk, std::max(kMinKeyChunk, kWorkspaceFloats / std::max<int64_t>(nq, 1)));
  const int64_t qc_max = std::min(nq, std::max<int64_t>(1, kWorkspaceFloats / kc_max));
  auto dots = at::empty({qc_max * kc_max}, query.options());
  const bool single_key_chunk = kc_max >= nk;
  at::Tensor state_v;
  at::Tensor state_i;
  if (!single_key_chunk) {
    state_v = at::empty({nq, k}, query.options());
    state_i = at::empty({nq, k}, query.options().dtype(at::kInt));
  }
  const float* inv_q_ptr = inv_q.defined() ? inv_q.data_ptr<float>() : nullptr;
  const float* inv_k_ptr = inv_k.defined() ? inv_k.data_ptr<float>() : nullptr;

  AllowTF32Scope tf32;
  for (int64_t q0 = 0; q0 < nq; q0 += qc_max) {
    const int64_t qc = std::min(qc_max, nq - q0);
    const auto q_chunk = query.narrow(0, q0, qc);
    for (int64_t j0 = 0; j0 < nk; j0 += kc_max) {
      const int64_t kc = std::min(kc_max, nk - j0);
      auto out = dots.narrow(0, 0, qc * kc).view({qc, kc});
      at::mm_out(out, q_chunk, keys.narrow(0, j0, kc).t());
      const auto blocks = static_cast<unsigned>(ceil_div<int64_t>(qc, cuda::kTopkWarps));
      cuda::kin_topk_merge_scores_kernel<<<blocks, kTileThreads, 0, stream>>>(
          out.data_ptr<float>(), inv_q_ptr, inv_k_ptr, q0, qc, j0, kc, static_cast<int>(k),
          j0 == 0, j0 + kc >= nk, single_key_chunk ? nullptr : state_v.data_ptr<float>(),
          single_key_chunk ? nullptr : state_i.data_ptr<int>(), values.data_ptr<float>(),
          indices.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
}

std::tuple<at::Tensor, at::Tensor> kin_topk_kernel(const at::Tensor& query,
                                                   const at::Tensor& keys, int64_t k,
                                                   c10::string_view metric, bool allow_tf32) {
  const bool cosine = detail::check_kin_topk_inputs(query, keys, k, metric);
  TORCH_CHECK(keys.size(0) <= INT_MAX - kTile, "kin_topk (CUDA): at most ", INT_MAX - kTile,
              " keys are supported, got ", keys.size(0));

  c10::cuda::CUDAGuard device_guard(query.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const int64_t nq = query.size(0);
  auto values = at::empty({nq, k}, query.options());
  auto indices = at::empty({nq, k}, query.options().dtype(at::kLong));
  if (nq == 0) return {values, indices};

  auto q = query.contiguous();
  auto kk = keys.contiguous();
  at::Tensor inv_q;
  at::Tensor inv_k;
  if (cosine) {
    inv_q = detail::inverse_row_norms(q).contiguous();
    inv_k = detail::inverse_row_norms(kk).contiguous();
  }
  if (allow_tf32 && q.scalar_type() == at::kFloat) {
    topk_tf32(q, kk, inv_q, inv_k, k, values, indices, stream);
  } else {
    topk_fused(q, kk, inv_q, inv_k, k, values, indices, stream);
  }
  return {values, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(acsleuth, CUDA, m) {
  m.impl("kin_topk", TORCH_FN(kin_topk_kernel));
}

}  // namespace ops
}  // namespace acsleuth
