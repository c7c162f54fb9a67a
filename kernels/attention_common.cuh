// What attention_fwd.cu and attention_bwd.cu share: the tensor-core fragment plumbing (ldmatrix
// addresses, f32 accumulators packed back into 16-bit A fragments), the cp.async tile loader and
// the dropout mask.
//
// Tensors are [b, h, l, D] row-major in T (__half or __nv_bfloat16); one block works on one
// batch·head (blockIdx.x) and one tile of rows (blockIdx.y). Fragments follow the PTX ISA layout
// of mma.m16n8k16: with g = lane / 4 and t = lane % 4, an f32 accumulator c[4] of a 16 × 8 tile
// holds (row g, cols 2t, 2t+1) in c[0..2) and (row g + 8, same cols) in c[2..4).
#pragma once

#include "realm.cuh"
#include "realm/philox.cuh"

// Fully unrolled loops keep fragment arrays in registers (an indexed array would go to local
// memory, which the ptxas gate refuses).
#if defined(__CUDACC__)
#define REALM_UNROLL _Pragma("unroll")
#else
#define REALM_UNROLL
#endif

// Shared tiles are padded by 8 elements per row, so that the 8 rows one ldmatrix reads fall in
// different banks (and rows stay 16-byte aligned for cp.async).
template <int D>
constexpr int kPaddedRow = D + 8;

template <typename T>
struct Mma;

template <>
struct Mma<__half> {
  REALM_DEVICE static void run(float* d, const uint32_t* a, const uint32_t* b) {
    mma_m16n8k16_f16(d, a, b, d);
  }
  REALM_DEVICE static uint32_t pack(float lo, float hi) {
    return static_cast<uint32_t>(__half_as_ushort(__float2half_rn(lo))) |
           (static_cast<uint32_t>(__half_as_ushort(__float2half_rn(hi))) << 16);
  }
};

template <>
struct Mma<__nv_bfloat16> {
  REALM_DEVICE static void run(float* d, const uint32_t* a, const uint32_t* b) {
    mma_m16n8k16_bf16(d, a, b, d);
  }
  REALM_DEVICE static uint32_t pack(float lo, float hi) {
    return static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
           (static_cast<uint32_t>(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
  }
};

// Rows [r0, r0 + ROWS) of a head's [l, D] matrix into a shared tile of row stride kPaddedRow<D>:
// rows below `valid` by cp.async, the others zero-filled (keys and queries past the length are
// never read, so padding data, whatever it is, cannot reach a result). Every thread of the block
// calls it; the caller commits and waits.
template <int ROWS, int D, typename T>
REALM_DEVICE void load_tile(sptr<T> tile, gptr<const T> head, unsigned r0, unsigned valid) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  for (unsigned c = threadIdx.x; c < ROWS * kChunks; c += blockDim.x) {
    const unsigned r = c / kChunks, col = (c % kChunks) * 8;
    sptr<T> dst = tile + r * kPaddedRow<D> + col;
    if (r0 + r < valid) {
      cp_async_16(dst, head + static_cast<size_t>(r0 + r) * D + col);
    } else {
      sptr_cast<uint4>(dst)[0] = uint4{0u, 0u, 0u, 0u};
    }
  }
}

// ldmatrix row addresses (each lane supplies one 16-byte row) for a tile of row stride LD:
// A fragment (16 × 16, row-major) at (row0, col0).
template <int LD, typename T>
REALM_DEVICE sptr<T> a_rows(sptr<T> tile, unsigned row0, unsigned col0) {
  const unsigned lane = lane_id();
  return tile + (row0 + (lane % 8) + ((lane / 8) % 2) * 8) * LD + col0 + (lane / 16) * 8;
}
// B fragments of two adjacent 8-column tiles n0, n0 + 8 (x4) from a tile stored [n][k]
// (row = output column): registers 0, 1 for n0 and 2, 3 for n0 + 8.
template <int LD, typename T>
REALM_DEVICE sptr<T> b_rows_nk(sptr<T> tile, unsigned n0, unsigned k0) {
  const unsigned lane = lane_id(), m = lane / 8;
  return tile + (n0 + (m / 2) * 8 + lane % 8) * LD + k0 + (m % 2) * 8;
}
// The same from a tile stored [k][n], read with ldmatrix .trans.
template <int LD, typename T>
REALM_DEVICE sptr<T> b_rows_kn(sptr<T> tile, unsigned k0, unsigned n0) {
  const unsigned lane = lane_id(), m = lane / 8;
  return tile + (k0 + (m % 2) * 8 + lane % 8) * LD + n0 + (m / 2) * 8;
}

// A fragments of this warp's 16 rows (row_lo = first row + g) of a head's [l, D] matrix, read
// straight from global memory (each row once per block): frag[s] covers columns 16s .. 16s + 16.
// Rows at or past `rows` (the length: padding may hold anything, NaN included) read as zero.
template <int D, typename T>
REALM_DEVICE void load_a_rows(uint32_t (*frag)[4], gptr<const T> head, unsigned row_lo,
                              unsigned rows) {
  const unsigned t = lane_id() % 4;
  gptr<const uint32_t> pairs = gptr_cast<const uint32_t>(head);
  REALM_UNROLL
  for (int s = 0; s < D / 16; ++s) {
    REALM_UNROLL
    for (int half = 0; half < 2; ++half) {
      const unsigned row = row_lo + half * 8;
      REALM_UNROLL
      for (int kh = 0; kh < 2; ++kh) {
        const unsigned col = 16 * s + 8 * kh + 2 * t;
        frag[s][half + 2 * kh] = row < rows ? static_cast<uint32_t>(pairs[(static_cast<size_t>(row) * D + col) / 2]) : 0u;
      }
    }
  }
}

// The 16-bit A fragments of a 16 × 16 slice (columns 16s .. 16s + 16) of a warp's f32 accumulator
// tiles: the accumulator layout of two adjacent 8-column tiles is the A layout.
template <typename T>
REALM_DEVICE void pack_a(uint32_t* a, const float* lo, const float* hi) {
  a[0] = Mma<T>::pack(lo[0], lo[1]);
  a[1] = Mma<T>::pack(lo[2], lo[3]);
  a[2] = Mma<T>::pack(hi[0], hi[1]);
  a[3] = Mma<T>::pack(hi[2], hi[3]);
}

// Sum and max over the 4 lanes that share a row.
REALM_DEVICE float quad_sum(float v) {
  v += __shfl_xor_sync(REALM_FULL_MASK, v, 1);
  return v + __shfl_xor_sync(REALM_FULL_MASK, v, 2);
}
REALM_DEVICE float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(REALM_FULL_MASK, v, 1));
  return fmaxf(v, __shfl_xor_sync(REALM_FULL_MASK, v, 2));
}

// Dropout as in src/ops/attention/dropout.rs: Philox4x32-10 keyed by the seed, counter
// (row << 16 | column / 4, batch·head, offset low, offset high), word column % 4; the element is
// dropped when that word is below `threshold` and kept ones are multiplied by `scale`.
// threshold 0 = no dropout.
struct DropoutParams {
  unsigned seed_lo, seed_hi, offset_lo, offset_hi, threshold;
  float scale;
};

REALM_DEVICE Philox4 dropout_draws(const DropoutParams& d, unsigned bh, unsigned row,
                                   unsigned col) {
  return philox4x32_10(Philox4{{(row << 16) | (col / 4), bh, d.offset_lo, d.offset_hi}},
                       d.seed_lo, d.seed_hi);
}

// The multipliers of columns `col` and `col + 1` (col even) of `row`. Words are picked by
// selects, not by an index, which would put the draws in local memory.
REALM_DEVICE void dropout_pair(const DropoutParams& d, unsigned bh, unsigned row, unsigned col,
                               float* m) {
  const Philox4 r = dropout_draws(d, bh, row, col);
  const bool upper = (col & 2u) != 0;
  m[0] = (upper ? r.v[2] : r.v[0]) < d.threshold ? 0.0f : d.scale;
  m[1] = (upper ? r.v[3] : r.v[1]) < d.threshold ? 0.0f : d.scale;
}

// The multiplier of one element.
REALM_DEVICE float dropout_one(const DropoutParams& d, unsigned bh, unsigned row, unsigned col) {
  const Philox4 r = dropout_draws(d, bh, row, col);
  const unsigned lo = (col & 1u) ? r.v[1] : r.v[0], hi = (col & 1u) ? r.v[3] : r.v[2];
  return ((col & 2u) ? hi : lo) < d.threshold ? 0.0f : d.scale;
}

// The kernels' parameters after the tensors: heads, length, logit scale, dropout.
#define REALM_ATTENTION_SCALARS                                                        \
  unsigned heads, unsigned l, float scale, unsigned seed_lo, unsigned seed_hi,         \
      unsigned offset_lo, unsigned offset_hi, unsigned threshold, float keep_scale
#define REALM_ATTENTION_SCALAR_ARGS \
  heads, l, scale, DropoutParams{seed_lo, seed_hi, offset_lo, offset_hi, threshold, keep_scale}
