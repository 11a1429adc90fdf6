// Small device and host helpers shared by the acsleuth CUDA kernels.
//
// The 64 x 64 dot-product tile (tile_dot) is the GEMM core of gaussian_pair_form and
// kin_topk: 256 threads as a 16 x 16 grid, each owning a 4 x 4 register micro-tile with
// rows ty + 16 m and columns tx + 16 n (strided, so shared-memory reads stay conflict free).
// The feature dimension is streamed through shared memory in chunks of 16, stored k-major
// ([chunk][row], row stride kTile + 1 to spread the transposing stores over the banks).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <limits>

namespace acsleuth::cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr size_t kDefaultSmemBytes = 48 * 1024;

template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// Element i of p, converted to the accumulation type (float, double, Half, BFloat16 sources).
template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t load_as(const scalar_t* __restrict__ p, int64_t i) {
  return static_cast<acc_t>(p[i]);
}

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o >>= 1) {
    const T other = __shfl_xor_sync(kFullMask, v, o);
    v = other > v ? other : v;
  }
  return v;
}

// ---- 64 x 64 dot-product tile -------------------------------------------------------------

constexpr int kTile = 64;
constexpr int kTileChunk = 16;
constexpr int kTileThreads = 256;
constexpr int kTileLd = kTile + 1;
constexpr int kMicro = 4;
constexpr int kTileSide = kTile / kMicro;                // 16 threads per side
constexpr int kTileChunkElems = kTileChunk * kTileLd;    // one operand chunk in shared memory
static_assert(kTileSide * kTileSide == kTileThreads, "thread grid must cover the tile");

// Rows [row0, row0 + kTile) x features [k0, k0 + kTileChunk) of the row-major (rows x d)
// matrix src into dst[kk * kTileLd + row]; rows >= row_end and features >= d read as 0.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_tile_chunk(acc_t* dst, const scalar_t* __restrict__ src,
                                                int64_t row0, int64_t row_end, int64_t d,
                                                int64_t k0) {
#pragma unroll
  for (int t = 0; t < kTile * kTileChunk / kTileThreads; ++t) {
    const int l = static_cast<int>(threadIdx.x) + t * kTileThreads;
    const int row = l / kTileChunk;
    const int kk = l % kTileChunk;
    const int64_t gr = row0 + row;
    const int64_t gk = k0 + kk;
    dst[kk * kTileLd + row] =
        (gr < row_end && gk < d) ? load_as<acc_t>(src, gr * d + gk) : acc_t(0);
  }
}

// acc[m][n] = a[a0 + ty + 16 m] . b[b0 + tx + 16 n] over d features, rows past a_end / b_end
// counting as zero. sa and sb hold kTileChunkElems each. Must be reached by the whole block;
// it synchronises before returning, so sa and sb are free again afterwards. With d == 0 it
// does no synchronisation at all.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void tile_dot(const scalar_t* __restrict__ a, int64_t a0,
                                         int64_t a_end, const scalar_t* __restrict__ b,
                                         int64_t b0, int64_t b_end, int64_t d, acc_t* sa,
                                         acc_t* sb, acc_t (&acc)[kMicro][kMicro]) {
  const int tx = static_cast<int>(threadIdx.x) % kTileSide;
  const int ty = static_cast<int>(threadIdx.x) / kTileSide;
#pragma unroll
  for (int m = 0; m < kMicro; ++m)
#pragma unroll
    for (int n = 0; n < kMicro; ++n) acc[m][n] = acc_t(0);

  for (int64_t k0 = 0; k0 < d; k0 += kTileChunk) {
    load_tile_chunk(sa, a, a0, a_end, d, k0);
    load_tile_chunk(sb, b, b0, b_end, d, k0);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTileChunk; ++kk) {
      acc_t av[kMicro];
      acc_t bv[kMicro];
#pragma unroll
      for (int m = 0; m < kMicro; ++m) av[m] = sa[kk * kTileLd + ty + kTileSide * m];
#pragma unroll
      for (int n = 0; n < kMicro; ++n) bv[n] = sb[kk * kTileLd + tx + kTileSide * n];
#pragma unroll
      for (int m = 0; m < kMicro; ++m)
#pragma unroll
        for (int n = 0; n < kMicro; ++n) acc[m][n] = fma(av[m], bv[n], acc[m][n]);
    }
    __syncthreads();
  }
}

// ---- host helpers ---------------------------------------------------------------------------

inline int sm_count(int device) {
  int v = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, device));
  return v;
}

inline size_t max_smem_optin(int device) {
  int v = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return static_cast<size_t>(v);
}

// Lets `kernel` launch with `bytes` of dynamic shared memory (opt-in above 48 KB).
template <typename Kernel>
inline void allow_dynamic_smem(Kernel* kernel, size_t bytes) {
  if (bytes > kDefaultSmemBytes) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  }
}

}  // namespace acsleuth::cuda
