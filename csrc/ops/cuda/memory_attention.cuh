// Device code of memory_attention (see memory_attention_kernel.cu for the scheme).
#pragma once

#include "common.cuh"

namespace acsleuth::cuda {

constexpr int kMaRows = 16;     // rows of z per block
constexpr int kMaCols = 64;     // memory slots (phase 1) or output features (phase 3) per tile
constexpr int kMaChunk = 16;    // reduction chunk staged in shared memory
constexpr int kMaThreads = 256;
constexpr int kMaWarps = kMaThreads / kWarpSize;
constexpr int kMaRowGroups = kMaThreads / kMaCols;      // 4: thread rows rg + 4 m
constexpr int kMaMicro = kMaRows / kMaRowGroups;        // 4 rows per thread
constexpr int kMaZLd = kMaRows + 1;
constexpr int kMaMLd = kMaCols + 1;
static_assert(kMaRows * kMaChunk == kMaThreads, "one z element per thread per chunk");

// Shared memory of the fused kernel, in acc_t elements; the logit rows come first.
__host__ __device__ constexpr int64_t ma_smem_elems(int64_t n_mem) {
  return kMaRows * n_mem + kMaChunk * kMaZLd + kMaChunk * kMaMLd;
}

// One row, by one warp: buf holds the logits (already divided by t) on entry and the
// weights w on exit; probs receives the softmax a.
//   s_k = relu(a_k - l) a_k / (|a_k - l| + shrink_eps),  w = s / max(sum s, norm_eps)
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void attention_row(acc_t* buf, int64_t n_mem,
                                              scalar_t* __restrict__ probs, acc_t shrink,
                                              acc_t shrink_eps, acc_t norm_eps, int lane) {
  acc_t mx = neg_inf<acc_t>();
  for (int64_t k = lane; k < n_mem; k += kWarpSize) mx = buf[k] > mx ? buf[k] : mx;
  mx = warp_max(mx);
  acc_t sum = 0;
  for (int64_t k = lane; k < n_mem; k += kWarpSize) {
    const acc_t e = exp_acc(buf[k] - mx);
    buf[k] = e;
    sum += e;
  }
  sum = warp_sum(sum);
  acc_t total = 0;
  for (int64_t k = lane; k < n_mem; k += kWarpSize) {
    const acc_t a = buf[k] / sum;
    probs[k] = static_cast<scalar_t>(a);
    const acc_t u = a - shrink;
    const acc_t s = u > acc_t(0) ? u * a / (u + shrink_eps) : acc_t(0);
    buf[k] = s;
    total += s;
  }
  total = warp_sum(total);
  const acc_t denom = total > norm_eps ? total : norm_eps;
  for (int64_t k = lane; k < n_mem; k += kWarpSize) buf[k] /= denom;
}

// Fused forward, one block per kMaRows rows of z. Thread (rg, c) = (tid / 64, tid % 64)
// owns rows rg + 4 m of the block and column c of the current 64-wide tile.
//   phase 1: logits[row][slot] = z_row . M_slot / t for all slots, into shared memory
//   phase 2: warp w turns rows w and w + 8 into probs (global) and weights (in place)
//   phase 3: out = w M, 64 features at a time, slots streamed in chunks of 16
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaThreads)
    memory_attention_fused_kernel(const scalar_t* __restrict__ z,
                                  const scalar_t* __restrict__ mem, int64_t b, int64_t p,
                                  int64_t n_mem, acc_t temperature, acc_t shrink,
                                  acc_t shrink_eps, acc_t norm_eps, scalar_t* __restrict__ out,
                                  scalar_t* __restrict__ probs) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* logits = reinterpret_cast<acc_t*>(smem_raw);  // [kMaRows][n_mem]
  acc_t* zs = logits + kMaRows * n_mem;                 // [kMaChunk][kMaZLd]
  acc_t* ms = zs + kMaChunk * kMaZLd;                   // [kMaChunk][kMaMLd]

  const int tid = static_cast<int>(threadIdx.x);
  const int c = tid % kMaCols;
  const int rg = tid / kMaCols;
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * kMaRows;

  // Phase 1.
  for (int64_t n0 = 0; n0 < n_mem; n0 += kMaCols) {
    acc_t acc[kMaMicro];
#pragma unroll
    for (int m = 0; m < kMaMicro; ++m) acc[m] = 0;
    for (int64_t k0 = 0; k0 < p; k0 += kMaChunk) {
      __syncthreads();  // previous chunk consumed
      {
        const int row = tid / kMaChunk;
        const int kk = tid % kMaChunk;
        const int64_t gr = b0 + row;
        const int64_t gk = k0 + kk;
        zs[kk * kMaZLd + row] = (gr < b && gk < p) ? load_as<acc_t>(z, gr * p + gk) : acc_t(0);
      }
#pragma unroll
      for (int t = 0; t < kMaCols * kMaChunk / kMaThreads; ++t) {
        const int l = tid + t * kMaThreads;
        const int slot = l / kMaChunk;
        const int kk = l % kMaChunk;
        const int64_t gs = n0 + slot;
        const int64_t gk = k0 + kk;
        ms[kk * kMaMLd + slot] =
            (gs < n_mem && gk < p) ? load_as<acc_t>(mem, gs * p + gk) : acc_t(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kMaChunk; ++kk) {
        const acc_t mv = ms[kk * kMaMLd + c];
#pragma unroll
        for (int m = 0; m < kMaMicro; ++m)
          acc[m] = fma(zs[kk * kMaZLd + rg + kMaRowGroups * m], mv, acc[m]);
      }
    }
    if (n0 + c < n_mem) {
#pragma unroll
      for (int m = 0; m < kMaMicro; ++m)
        logits[(rg + kMaRowGroups * m) * n_mem + n0 + c] = acc[m] / temperature;
    }
  }
  __syncthreads();

  // Phase 2.
  const int lane = tid % kWarpSize;
  for (int row = tid / kWarpSize; row < kMaRows; row += kMaWarps) {
    const int64_t gr = b0 + row;
    if (gr < b) {
      attention_row(logits + row * n_mem, n_mem, probs + gr * n_mem, shrink, shrink_eps, norm_eps,
                    lane);
    }
  }

  // Phase 3 (the first __syncthreads below also publishes phase 2's weights).
  for (int64_t p0 = 0; p0 < p; p0 += kMaCols) {
    acc_t acc[kMaMicro];
#pragma unroll
    for (int m = 0; m < kMaMicro; ++m) acc[m] = 0;
    for (int64_t k0 = 0; k0 < n_mem; k0 += kMaChunk) {
      __syncthreads();
#pragma unroll
      for (int t = 0; t < kMaCols * kMaChunk / kMaThreads; ++t) {
        const int l = tid + t * kMaThreads;
        const int kk = l / kMaCols;
        const int col = l % kMaCols;
        const int64_t gs = k0 + kk;
        const int64_t gc = p0 + col;
        ms[kk * kMaMLd + col] =
            (gs < n_mem && gc < p) ? load_as<acc_t>(mem, gs * p + gc) : acc_t(0);
      }
      __syncthreads();
      const int kk_end = static_cast<int>(n_mem - k0 < kMaChunk ? n_mem - k0 : kMaChunk);
      for (int kk = 0; kk < kk_end; ++kk) {
        const acc_t mv = ms[kk * kMaMLd + c];
#pragma unroll
        for (int m = 0; m < kMaMicro; ++m)
          acc[m] = fma(logits[(rg + kMaRowGroups * m) * n_mem + k0 + kk], mv, acc[m]);
      }
    }
    if (p0 + c < p) {
#pragma unroll
      for (int m = 0; m < kMaMicro; ++m) {
        const int64_t gr = b0 + rg + kMaRowGroups * m;
        if (gr < b) out[gr * p + p0 + c] = static_cast<scalar_t>(acc[m]);
      }
    }
  }
}

// Fallback for memory banks too large for shared memory: logits (b x n_mem, acc dtype,
// already divided by t) become the weights in place; one warp per row.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaThreads)
    memory_attention_rows_kernel(acc_t* __restrict__ logits, int64_t b, int64_t n_mem,
                                 acc_t shrink, acc_t shrink_eps, acc_t norm_eps,
                                 scalar_t* __restrict__ probs) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMaWarps + threadIdx.x / kWarpSize;
  if (row >= b) return;  // warp-uniform; no block-level synchronisation below
  attention_row(logits + row * n_mem, n_mem, probs + row * n_mem, shrink, shrink_eps, norm_eps,
                lane);
}

// Backward row kernel, one warp per row: from the saved probs a and gw = g M^T, writes
// w (recomputed) and gl, the gradient of the logits z M^T (the 1 / t included).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMaThreads)
    memory_attention_backward_rows_kernel(const scalar_t* __restrict__ probs,
                                          const acc_t* __restrict__ gw, int64_t b,
                                          int64_t n_mem, acc_t temperature, acc_t shrink,
                                          acc_t shrink_eps, acc_t norm_eps,
                                          acc_t* __restrict__ w, acc_t* __restrict__ gl) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kMaWarps + threadIdx.x / kWarpSize;
  if (row >= b) return;  // warp-uniform; no block-level synchronisation below
  const scalar_t* a_row = probs + row * n_mem;
  const acc_t* gw_row = gw + row * n_mem;
  acc_t* w_row = w + row * n_mem;
  acc_t* gl_row = gl + row * n_mem;

  auto shrunk = [&](acc_t a) {
    const acc_t u = a - shrink;
    return u > acc_t(0) ? u * a / (u + shrink_eps) : acc_t(0);
  };

  acc_t total = 0;
  for (int64_t k = lane; k < n_mem; k += kWarpSize) total += shrunk(load_as<acc_t>(a_row, k));
  total = warp_sum(total);
  const acc_t denom = total > norm_eps ? total : norm_eps;

  acc_t gw_dot_w = 0;
  for (int64_t k = lane; k < n_mem; k += kWarpSize) {
    const acc_t wk = shrunk(load_as<acc_t>(a_row, k)) / denom;
    w_row[k] = wk;
    gw_dot_w = fma(gw_row[k], wk, gw_dot_w);
  }
  gw_dot_w = warp_sum(gw_dot_w);

  const bool normalised = total > norm_eps;
  acc_t a_dot_ga = 0;
  for (int64_t k = lane; k < n_mem; k += kWarpSize) {
    const acc_t a = load_as<acc_t>(a_row, k);
    const acc_t gs = normalised ? (gw_row[k] - gw_dot_w) / total : gw_row[k] / norm_eps;
    acc_t ga = 0;
    if (a > shrink) {
      const acc_t u = a - shrink;
      const acc_t ue = u + shrink_eps;
      ga = gs * ((u + a) * ue - u * a) / (ue * ue);
    }
    gl_row[k] = ga;
    a_dot_ga = fma(a, ga, a_dot_ga);
  }
  a_dot_ga = warp_sum(a_dot_ga);

  for (int64_t k = lane; k < n_mem; k += kWarpSize) {
    const acc_t a = load_as<acc_t>(a_row, k);
    gl_row[k] = a * (gl_row[k] - a_dot_ga) / temperature;
  }
}

}  // namespace acsleuth::cuda
