// Device code of kin_topk (see kin_topk_kernel.cu for the scheme).
#pragma once

#include <climits>

#include "common.cuh"

namespace acsleuth::cuda {

constexpr int kTopkMax = 64;                         // two list slots per lane
constexpr int kTopkWarps = kTileThreads / kWarpSize;  // 8 warps per block
constexpr int kTopkQueriesPerWarp = kTile / kTopkWarps;
constexpr int kTopkEmptyIndex = INT_MAX;             // sentinel: loses to every real key

// Shared-memory layout of the fused kernel, in acc_t elements.
struct TopkSmem {
  static constexpr int kQ = 0;                          // query chunk
  static constexpr int kK = kQ + kTileChunkElems;       // key chunk
  static constexpr int kS = kK + kTileChunkElems;       // scores [kTile][kTileLd]
  static constexpr int kInvQ = kS + kTile * kTileLd;    // 1 / |q| (cosine) or 1
  static constexpr int kInvK = kInvQ + kTile;           // 1 / |k| (cosine) or 1
  static constexpr int kSize = kInvK + kTile;
};

// (va, ia) ranks before (vb, ib): larger value first, then lower index.
template <typename acc_t>
__device__ __forceinline__ bool ranks_before(acc_t va, int ia, acc_t vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

template <typename acc_t>
__device__ __forceinline__ acc_t nan_to_neg_inf(acc_t v) {
  return isnan(v) ? neg_inf<acc_t>() : v;
}

// A sorted top-k list spread over one warp: lane l holds entries l and l + 32.
// Entries >= k are scratch. All members must be called by the whole warp with the same k.
template <typename acc_t>
struct WarpTopK {
  acc_t v0, v1;
  int i0, i1;
  acc_t tv;  // entry k - 1, the admission threshold
  int ti;

  __device__ __forceinline__ void reset() {
    v0 = v1 = tv = neg_inf<acc_t>();
    i0 = i1 = ti = kTopkEmptyIndex;
  }

  __device__ __forceinline__ void refresh_threshold(int k) {
    const int last = k - 1;
    if (last < kWarpSize) {
      tv = __shfl_sync(kFullMask, v0, last);
      ti = __shfl_sync(kFullMask, i0, last);
    } else {
      tv = __shfl_sync(kFullMask, v1, last - kWarpSize);
      ti = __shfl_sync(kFullMask, i1, last - kWarpSize);
    }
  }

  // Loads entries [0, k) from v / idx (acc_t / int32) and refreshes the threshold.
  __device__ __forceinline__ void load(const acc_t* __restrict__ v, const int* __restrict__ idx,
                                       int k, int lane) {
    reset();
    if (lane < k) {
      v0 = v[lane];
      i0 = idx[lane];
    }
    if (lane + kWarpSize < k) {
      v1 = v[lane + kWarpSize];
      i1 = idx[lane + kWarpSize];
    }
    refresh_threshold(k);
  }

  template <typename out_t, typename index_t>
  __device__ __forceinline__ void store(out_t* __restrict__ v, index_t* __restrict__ idx, int k,
                                        int lane) const {
    if (lane < k) {
      v[lane] = static_cast<out_t>(v0);
      idx[lane] = static_cast<index_t>(i0);
    }
    if (lane + kWarpSize < k) {
      v[lane + kWarpSize] = static_cast<out_t>(v1);
      idx[lane + kWarpSize] = static_cast<index_t>(i1);
    }
  }

  // Inserts (cv, ci), which must rank before the current threshold entry.
  __device__ __forceinline__ void insert(acc_t cv, int ci, int k, int lane) {
    const bool b0 = lane < k && ranks_before(v0, i0, cv, ci);
    const bool b1 = lane + kWarpSize < k && ranks_before(v1, i1, cv, ci);
    const int pos = __popc(__ballot_sync(kFullMask, b0)) + __popc(__ballot_sync(kFullMask, b1));
    const acc_t up_v0 = __shfl_up_sync(kFullMask, v0, 1);
    const int up_i0 = __shfl_up_sync(kFullMask, i0, 1);
    const acc_t up_v1 = __shfl_up_sync(kFullMask, v1, 1);
    const int up_i1 = __shfl_up_sync(kFullMask, i1, 1);
    const acc_t last_v0 = __shfl_sync(kFullMask, v0, kWarpSize - 1);
    const int last_i0 = __shfl_sync(kFullMask, i0, kWarpSize - 1);
    if (lane == pos) {
      v0 = cv;
      i0 = ci;
    } else if (lane > pos) {
      v0 = up_v0;
      i0 = up_i0;
    }
    const int e1 = lane + kWarpSize;
    if (e1 == pos) {
      v1 = cv;
      i1 = ci;
    } else if (e1 > pos) {
      v1 = lane == 0 ? last_v0 : up_v1;
      i1 = lane == 0 ? last_i0 : up_i1;
    }
    refresh_threshold(k);
  }

  // Offers one candidate per lane (ignored where !valid), in lane order.
  __device__ __forceinline__ void offer(acc_t cv, int ci, bool valid, int k, int lane) {
    unsigned mask = __ballot_sync(kFullMask, valid && ranks_before(cv, ci, tv, ti));
    while (mask != 0u) {
      const int src = __ffs(mask) - 1;
      mask &= mask - 1u;
      const acc_t v = __shfl_sync(kFullMask, cv, src);
      const int i = __shfl_sync(kFullMask, ci, src);
      if (ranks_before(v, i, tv, ti)) insert(v, i, k, lane);
    }
  }
};

// Fused scores + running top-k. Block (bq, s) owns queries [64 bq, 64 bq + 64) and the key
// tiles [KT s / S, KT (s + 1) / S). Each 64 x 64 score tile goes to shared memory (row
// stride 65), then warp w merges rows 8 w .. 8 w + 7 into its eight register-resident lists.
// With one split the lists go straight to (out_v, out_i); otherwise to the partials
// part_v / part_i, laid out [split][query][k].
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTileThreads)
    kin_topk_tile_kernel(const scalar_t* __restrict__ query, const scalar_t* __restrict__ keys,
                         const acc_t* __restrict__ inv_q, const acc_t* __restrict__ inv_k,
                         int64_t nq, int64_t nk, int64_t d, int k, acc_t* __restrict__ part_v,
                         int* __restrict__ part_i, scalar_t* __restrict__ out_v,
                         int64_t* __restrict__ out_i) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* scores = smem + TopkSmem::kS;
  acc_t* sinv_q = smem + TopkSmem::kInvQ;
  acc_t* sinv_k = smem + TopkSmem::kInvK;

  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % kTileSide;
  const int ty = tid / kTileSide;
  const int lane = tid % kWarpSize;
  const int warp = tid / kWarpSize;
  const bool cosine = inv_q != nullptr;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t key_tiles = ceil_div<int64_t>(nk, kTile);
  const int64_t t_begin = key_tiles * blockIdx.y / gridDim.y;
  const int64_t t_end = key_tiles * (blockIdx.y + 1) / gridDim.y;

  if (tid < kTile) {
    const int64_t q = q0 + tid;
    sinv_q[tid] = (cosine && q < nq) ? inv_q[q] : acc_t(1);
  }

  WarpTopK<acc_t> lists[kTopkQueriesPerWarp];
#pragma unroll
  for (int qq = 0; qq < kTopkQueriesPerWarp; ++qq) lists[qq].reset();

  for (int64_t t = t_begin; t < t_end; ++t) {
    const int64_t j0 = t * kTile;
    __syncthreads();  // previous score tile merged; sinv_k free
    if (tid < kTile) {
      const int64_t j = j0 + tid;
      sinv_k[tid] = (cosine && j < nk) ? inv_k[j] : acc_t(1);
    }
    __syncthreads();

    acc_t dot[kMicro][kMicro];
    tile_dot(query, q0, nq, keys, j0, nk, d, smem + TopkSmem::kQ, smem + TopkSmem::kK, dot);
#pragma unroll
    for (int m = 0; m < kMicro; ++m) {
      const int li = ty + kTileSide * m;
#pragma unroll
      for (int c = 0; c < kMicro; ++c) {
        const int lj = tx + kTileSide * c;
        // Rank by the value that will be returned (rounded to the input dtype), so that
        // returned ties are always in ascending key order.
        const scalar_t rounded = static_cast<scalar_t>(dot[m][c] * sinv_q[li] * sinv_k[lj]);
        scores[li * kTileLd + lj] = nan_to_neg_inf(static_cast<acc_t>(rounded));
      }
    }
    __syncthreads();

    const int valid = static_cast<int>(nk - j0 < kTile ? nk - j0 : kTile);
#pragma unroll
    for (int qq = 0; qq < kTopkQueriesPerWarp; ++qq) {
      const int row = warp * kTopkQueriesPerWarp + qq;
      if (q0 + row < nq) {  // warp-uniform
        const acc_t* srow = scores + row * kTileLd;
        const int jj = static_cast<int>(j0);
        lists[qq].offer(lane < valid ? srow[lane] : acc_t(0), jj + lane, lane < valid, k, lane);
        const int l1 = lane + kWarpSize;
        lists[qq].offer(l1 < valid ? srow[l1] : acc_t(0), jj + l1, l1 < valid, k, lane);
      }
    }
  }

#pragma unroll
  for (int qq = 0; qq < kTopkQueriesPerWarp; ++qq) {
    const int64_t q = q0 + warp * kTopkQueriesPerWarp + qq;
    if (q < nq) {
      if (gridDim.y == 1) {
        lists[qq].store(out_v + q * k, out_i + q * k, k, lane);
      } else {
        const int64_t base = (static_cast<int64_t>(blockIdx.y) * nq + q) * k;
        lists[qq].store(part_v + base, part_i + base, k, lane);
      }
    }
  }
}

// Merges `splits` partial lists per query ([split][query][k]); one warp per query.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTileThreads)
    kin_topk_merge_splits_kernel(const acc_t* __restrict__ part_v, const int* __restrict__ part_i,
                                 int64_t splits, int64_t nq, int k, scalar_t* __restrict__ out_v,
                                 int64_t* __restrict__ out_i) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * kTopkWarps + threadIdx.x / kWarpSize;
  if (q >= nq) return;  // warp-uniform; no block-level synchronisation below
  WarpTopK<acc_t> list;
  list.reset();
  for (int64_t s = 0; s < splits; ++s) {
    const int64_t base = (s * nq + q) * k;
    const int l1 = lane + kWarpSize;
    list.offer(lane < k ? part_v[base + lane] : acc_t(0), lane < k ? part_i[base + lane] : 0,
               lane < k, k, lane);
    list.offer(l1 < k ? part_v[base + l1] : acc_t(0), l1 < k ? part_i[base + l1] : 0, l1 < k, k,
               lane);
  }
  list.store(out_v + q * k, out_i + q * k, k, lane);
}

// TF32 path: merges one (qc x kc) chunk of raw dot products (queries [q0, q0 + qc), keys
// [j0, j0 + kc)) into the running lists state_v / state_i ([nq][k]); one warp per query.
// `first` starts from empty lists, `last` writes the final (out_v, out_i) instead of state.
__global__ void __launch_bounds__(kTileThreads)
    kin_topk_merge_scores_kernel(const float* __restrict__ dots, const float* __restrict__ inv_q,
                                 const float* __restrict__ inv_k, int64_t q0, int64_t qc,
                                 int64_t j0, int64_t kc, int k, bool first, bool last,
                                 float* __restrict__ state_v, int* __restrict__ state_i,
                                 float* __restrict__ out_v, int64_t* __restrict__ out_i) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t lq = static_cast<int64_t>(blockIdx.x) * kTopkWarps + threadIdx.x / kWarpSize;
  if (lq >= qc) return;  // warp-uniform; no block-level synchronisation below
  const int64_t q = q0 + lq;
  const bool cosine = inv_q != nullptr;
  const float sq = cosine ? inv_q[q] : 1.0f;
  WarpTopK<float> list;
  if (first) {
    list.reset();
  } else {
    list.load(state_v + q * k, state_i + q * k, k, lane);
  }
  const float* row = dots + lq * kc;
  for (int64_t c0 = 0; c0 < kc; c0 += kWarpSize) {
    const int64_t c = c0 + lane;
    const bool valid = c < kc;
    float v = 0.0f;
    if (valid) v = nan_to_neg_inf(row[c] * sq * (cosine ? inv_k[j0 + c] : 1.0f));
    list.offer(v, static_cast<int>(j0 + c), valid, k, lane);
  }
  if (last) {
    list.store(out_v + q * k, out_i + q * k, k, lane);
  } else {
    list.store(state_v + q * k, state_i + q * k, k, lane);
  }
}

}  // namespace acsleuth::cuda
