// Device code of gaussian_pair_form (see gaussian_pair_form_kernel.cu for the scheme).
#pragma once

#include "common.cuh"

namespace acsleuth::cuda {

constexpr int kGpfMaxRank = 16;
constexpr int kGpfMaxBandwidths = 8;
constexpr int kGpfRankLd = kGpfMaxRank + 1;  // odd row stride: conflict-free column reads
constexpr int kGpfRowsPerThread = kTile * kGpfMaxRank / kTileThreads;  // (row, a) slots: 4
constexpr int kGpfNormThreads = 256;

template <typename acc_t>
struct GaussianCoeffs {
  acc_t c[kGpfMaxBandwidths];
  int count;
};

// Shared-memory layout, in acc_t elements.
struct GpfSmem {
  static constexpr int kXa = 0;                                  // x rows I, one chunk
  static constexpr int kXb = kXa + kTileChunkElems;              // x rows J, one chunk
  static constexpr int kK = kXb + kTileChunkElems;               // kernel tile [kTile][kTileLd]
  static constexpr int kRowsI = kK + kTile * kTileLd;            // phi_I [kTile][kGpfRankLd]
  static constexpr int kRowsJ = kRowsI + kTile * kGpfRankLd;     // phi_J or psi_J
  static constexpr int kSqI = kRowsJ + kTile * kGpfRankLd;       // |x_i|^2
  static constexpr int kSqJ = kSqI + kTile;                      // |x_j|^2
  static constexpr int kSize = kSqJ + kTile;
};

// out[i] = |x_i|^2, one warp per row.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kGpfNormThreads)
    row_sq_norms_kernel(const scalar_t* __restrict__ x, int64_t n, int64_t g,
                        acc_t* __restrict__ out) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kGpfNormThreads / kWarpSize) +
                      static_cast<int64_t>(threadIdx.x) / kWarpSize;
  if (row >= n) return;
  acc_t s = 0;
  for (int64_t c = lane; c < g; c += kWarpSize) {
    const acc_t v = load_as<acc_t>(x, row * g + c);
    s = fma(v, v, s);
  }
  s = warp_sum(s);
  if (lane == 0) out[row] = s;
}

// dst[row * kGpfRankLd + a] = src[(row0 + row) * r + a] for the tile's rows (0 past row_end).
template <typename src_t, typename acc_t>
__device__ __forceinline__ void load_rank_rows(acc_t* dst, const src_t* __restrict__ src,
                                               int64_t row0, int64_t row_end, int r) {
  for (int e = static_cast<int>(threadIdx.x); e < kTile * r; e += kTileThreads) {
    const int row = e / r;
    const int a = e % r;
    const int64_t gr = row0 + row;
    dst[row * kGpfRankLd + a] = gr < row_end ? load_as<acc_t>(src, gr * r + a) : acc_t(0);
  }
}

template <typename acc_t>
__device__ __forceinline__ void load_sq(acc_t* dst, const acc_t* __restrict__ sq, int64_t row0,
                                        int64_t row_end) {
  if (threadIdx.x < kTile) {
    const int64_t gr = row0 + threadIdx.x;
    dst[threadIdx.x] = gr < row_end ? sq[gr] : acc_t(0);
  }
}

// Squared distance from the dot product, clamped at 0 against cancellation.
template <typename acc_t>
__device__ __forceinline__ acc_t sq_distance(acc_t sqi, acc_t sqj, acc_t dot) {
  const acc_t d = sqi + sqj - acc_t(2) * dot;
  return d > acc_t(0) ? d : acc_t(0);
}

// v[t] += sum_j ks[row][j] * rows_j[j][a] for this thread's (row, a) slots, e = tid + 256 t.
template <typename acc_t>
__device__ __forceinline__ void accumulate_kernel_rows(const acc_t* ks, const acc_t* rows_j,
                                                       int r, acc_t (&v)[kGpfRowsPerThread]) {
#pragma unroll
  for (int t = 0; t < kGpfRowsPerThread; ++t) {
    const int e = static_cast<int>(threadIdx.x) + t * kTileThreads;
    if (e < kTile * r) {
      const int row = e / r;
      const int a = e % r;
      acc_t s = 0;
#pragma unroll 16
      for (int j = 0; j < kTile; ++j) s = fma(ks[row * kTileLd + j], rows_j[j * kGpfRankLd + a], s);
      v[t] += s;
    }
  }
}

// Forward. Block (ti, s) owns row tile ti and the column-tile offsets o in its share of
// [0, n_off): J = (ti + o) mod T. Offsets 1..(T-1)/2 (and T/2 for ti < T/2 when T is even)
// cover every unordered tile pair once; offset 0 is the diagonal tile, weighted 1/2.
// partial[block] = sum_{i in I} phi_i v_i^T with v_i = sum_j w k_ij phi_j, so that
// S = P + P^T where P sums all partials.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTileThreads)
    gpf_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ phi,
                       const acc_t* __restrict__ sq, int64_t n, int64_t g, int r,
                       GaussianCoeffs<acc_t> coeffs, acc_t* __restrict__ partial) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* ks = smem + GpfSmem::kK;
  acc_t* phi_i = smem + GpfSmem::kRowsI;
  acc_t* phi_j = smem + GpfSmem::kRowsJ;
  acc_t* sq_i = smem + GpfSmem::kSqI;
  acc_t* sq_j = smem + GpfSmem::kSqJ;

  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % kTileSide;
  const int ty = tid / kTileSide;
  const int64_t tiles = ceil_div<int64_t>(n, kTile);
  const int64_t ti = blockIdx.x;
  const int64_t i0 = ti * kTile;
  const int64_t n_off = 1 + (tiles - 1) / 2 + ((tiles % 2 == 0 && ti < tiles / 2) ? 1 : 0);
  const int64_t off_begin = n_off * blockIdx.y / gridDim.y;
  const int64_t off_end = n_off * (blockIdx.y + 1) / gridDim.y;

  load_rank_rows(phi_i, phi, i0, n, r);
  load_sq(sq_i, sq, i0, n);

  acc_t v[kGpfRowsPerThread];
#pragma unroll
  for (int t = 0; t < kGpfRowsPerThread; ++t) v[t] = 0;

  for (int64_t off = off_begin; off < off_end; ++off) {
    const int64_t j0 = ((ti + off) % tiles) * kTile;
    const acc_t weight = off == 0 ? acc_t(0.5) : acc_t(1);
    __syncthreads();  // previous tile's ks / phi_j fully consumed
    load_rank_rows(phi_j, phi, j0, n, r);
    load_sq(sq_j, sq, j0, n);
    __syncthreads();

    acc_t dot[kMicro][kMicro];
    tile_dot(x, i0, n, x, j0, n, g, smem + GpfSmem::kXa, smem + GpfSmem::kXb, dot);

#pragma unroll
    for (int m = 0; m < kMicro; ++m) {
      const int li = ty + kTileSide * m;
      const int64_t i = i0 + li;
#pragma unroll
      for (int c = 0; c < kMicro; ++c) {
        const int lj = tx + kTileSide * c;
        const int64_t j = j0 + lj;
        acc_t kv = 0;
        if (i < n && j < n && i != j) {
          const acc_t d = sq_distance(sq_i[li], sq_j[lj], dot[m][c]);
#pragma unroll
          for (int b = 0; b < kGpfMaxBandwidths; ++b)
            if (b < coeffs.count) kv += exp_acc(-coeffs.c[b] * d);
          kv *= weight;
        }
        ks[li * kTileLd + lj] = kv;
      }
    }
    __syncthreads();
    accumulate_kernel_rows(ks, phi_j, r, v);
  }

  // Block partial P = phi_I^T V_I, with V_I staged in the (now free) kernel tile.
  __syncthreads();
  acc_t* vs = ks;
#pragma unroll
  for (int t = 0; t < kGpfRowsPerThread; ++t) {
    const int e = tid + t * kTileThreads;
    if (e < kTile * r) vs[(e / r) * kGpfRankLd + e % r] = v[t];
  }
  __syncthreads();
  if (tid < r * r) {
    const int a = tid / r;
    const int b = tid % r;
    acc_t s = 0;
    for (int i = 0; i < kTile; ++i) s = fma(phi_i[i * kGpfRankLd + a], vs[i * kGpfRankLd + b], s);
    const int64_t block = static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x;
    partial[block * r * r + tid] = s;
  }
}

// Backward over the row chunk [row0, row0 + rows). Block (bi, s) owns row tile bi of the
// chunk and column tiles [T s / S, T (s + 1) / S). For its rows it writes
//   a_chunk[i - row0][j]         = A_ij (0 on the diagonal),
//   rowsum_part[s][i - row0]     = sum_j A_ij over its column tiles,
//   gphi_part[s][i - row0][a]    = sum_j k_ij psi[j][a] over its column tiles.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kTileThreads)
    gpf_backward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ phi,
                        const acc_t* __restrict__ psi, const acc_t* __restrict__ sq, int64_t n,
                        int64_t g, int r, GaussianCoeffs<acc_t> coeffs, int64_t row0,
                        int64_t rows, int64_t rows_cap, acc_t* __restrict__ a_chunk,
                        acc_t* __restrict__ rowsum_part, acc_t* __restrict__ gphi_part) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* ks = smem + GpfSmem::kK;
  acc_t* phi_i = smem + GpfSmem::kRowsI;
  acc_t* psi_j = smem + GpfSmem::kRowsJ;
  acc_t* sq_i = smem + GpfSmem::kSqI;
  acc_t* sq_j = smem + GpfSmem::kSqJ;

  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % kTileSide;
  const int ty = tid / kTileSide;
  const int64_t tiles = ceil_div<int64_t>(n, kTile);
  const int64_t li0 = static_cast<int64_t>(blockIdx.x) * kTile;  // first local row
  const int64_t i0 = row0 + li0;
  const int64_t i_end = row0 + rows;
  const int64_t t_begin = tiles * blockIdx.y / gridDim.y;
  const int64_t t_end = tiles * (blockIdx.y + 1) / gridDim.y;

  load_rank_rows(phi_i, phi, i0, i_end, r);
  load_sq(sq_i, sq, i0, i_end);

  acc_t v[kGpfRowsPerThread];
#pragma unroll
  for (int t = 0; t < kGpfRowsPerThread; ++t) v[t] = 0;
  acc_t rowsum[kMicro];
#pragma unroll
  for (int m = 0; m < kMicro; ++m) rowsum[m] = 0;

  for (int64_t tj = t_begin; tj < t_end; ++tj) {
    const int64_t j0 = tj * kTile;
    __syncthreads();  // previous tile's ks / psi_j fully consumed
    load_rank_rows(psi_j, psi, j0, n, r);
    load_sq(sq_j, sq, j0, n);
    __syncthreads();

    acc_t dot[kMicro][kMicro];
    tile_dot(x, i0, i_end, x, j0, n, g, smem + GpfSmem::kXa, smem + GpfSmem::kXb, dot);

    // pp[m][c] = phi_i . psi_j over the r columns.
    acc_t pp[kMicro][kMicro];
#pragma unroll
    for (int m = 0; m < kMicro; ++m)
#pragma unroll
      for (int c = 0; c < kMicro; ++c) pp[m][c] = 0;
    for (int a = 0; a < r; ++a) {
      acc_t pv[kMicro];
      acc_t qv[kMicro];
#pragma unroll
      for (int m = 0; m < kMicro; ++m) pv[m] = phi_i[(ty + kTileSide * m) * kGpfRankLd + a];
#pragma unroll
      for (int c = 0; c < kMicro; ++c) qv[c] = psi_j[(tx + kTileSide * c) * kGpfRankLd + a];
#pragma unroll
      for (int m = 0; m < kMicro; ++m)
#pragma unroll
        for (int c = 0; c < kMicro; ++c) pp[m][c] = fma(pv[m], qv[c], pp[m][c]);
    }

#pragma unroll
    for (int m = 0; m < kMicro; ++m) {
      const int li = ty + kTileSide * m;
      const int64_t i = i0 + li;
#pragma unroll
      for (int c = 0; c < kMicro; ++c) {
        const int lj = tx + kTileSide * c;
        const int64_t j = j0 + lj;
        acc_t kv = 0;
        acc_t av = 0;
        if (i < i_end && j < n && i != j) {
          const acc_t d = sq_distance(sq_i[li], sq_j[lj], dot[m][c]);
          acc_t kc = 0;
#pragma unroll
          for (int b = 0; b < kGpfMaxBandwidths; ++b) {
            if (b < coeffs.count) {
              const acc_t e = exp_acc(-coeffs.c[b] * d);
              kv += e;
              kc = fma(coeffs.c[b], e, kc);
            }
          }
          av = acc_t(2) * pp[m][c] * kc;
        }
        if (i < i_end && j < n) a_chunk[(i - row0) * n + j] = av;
        rowsum[m] += av;
        ks[li * kTileLd + lj] = kv;
      }
    }
    __syncthreads();
    accumulate_kernel_rows(ks, psi_j, r, v);
  }

  // Row sums: the 16 threads sharing a row are 16 consecutive lanes of one warp.
#pragma unroll
  for (int m = 0; m < kMicro; ++m) {
#pragma unroll
    for (int o = kTileSide / 2; o > 0; o >>= 1) {
      rowsum[m] += __shfl_xor_sync(kFullMask, rowsum[m], o);
    }
    const int64_t li = li0 + ty + kTileSide * m;
    if (tx == 0 && li < rows) rowsum_part[blockIdx.y * rows_cap + li] = rowsum[m];
  }
#pragma unroll
  for (int t = 0; t < kGpfRowsPerThread; ++t) {
    const int e = tid + t * kTileThreads;
    if (e < kTile * r) {
      const int64_t li = li0 + e / r;
      if (li < rows) gphi_part[(blockIdx.y * rows_cap + li) * r + e % r] = v[t];
    }
  }
}

}  // namespace acsleuth::cuda
