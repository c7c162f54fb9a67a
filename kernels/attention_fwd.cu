// Fused attention, forward (FlashAttention-2 structure):
//   out[i] = Σ_j dropout(softmax_j(scale · q_i · k_j)) v_j over keys j < len,  lse[i] = log Σ_j e^{...}
// for query rows i < len; rows at or past len are written as zeros (lse −∞).
//
// A block of 4 warps takes 64 query rows of one batch·head, 16 rows per warp, with the warp's q
// fragments in registers. K and V stream through shared memory in tiles of BN keys, double
// buffered with cp.async (the next tile loads while this one is used). Per tile a warp computes
// its 16 × BN scores with mma.m16n8k16, updates the online softmax in registers (running max and
// sum per row, the accumulator rescaled when the max grows), and multiplies the probabilities,
// repacked as 16-bit A fragments, into its 16 × D output accumulator. Key tiles past len are not
// visited; the last one's columns past len get probability 0.
#include "attention_common.cuh"

// Warps per block, and query rows per block (grid.y tiles the rows by it).
REALM_EXPORT constexpr int kFwdWarps = 4;
REALM_EXPORT constexpr int kFwdRows = 16 * kFwdWarps;

// Keys per tile: 64, or 32 for D = 128 (registers and the 48 KB of static shared memory).
template <int D>
constexpr int kFwdKeys = D == 128 ? 32 : 64;

template <typename T, int D>
REALM_DEVICE void attention_fwd(gptr<const T> q, gptr<const T> k, gptr<const T> v,
                                gptr<const unsigned> lens, gptr<T> out, gptr<float> lse,
                                unsigned heads, unsigned l, float scale, DropoutParams drop) {
  constexpr int BN = kFwdKeys<D>, LD = kPaddedRow<D>;
  REALM_SHARED(T, k_tiles, 2 * BN * LD);
  REALM_SHARED(T, v_tiles, 2 * BN * LD);
  const unsigned bh = blockIdx.x, q0 = blockIdx.y * kFwdRows;
  const unsigned len = min(static_cast<unsigned>(lens[bh / heads]), l);
  const size_t head = static_cast<size_t>(bh) * l * D;
  gptr<T> out_h = out + head;
  const unsigned lane = lane_id(), t = lane % 4;
  const unsigned row_lo = q0 + warp_id() * 16 + lane / 4, row_hi = row_lo + 8;

  if (q0 >= len) {  // only padding rows here: zeros, nothing else to do
    for (unsigned i = threadIdx.x; i < kFwdRows * D; i += blockDim.x) {
      const unsigned row = q0 + i / D;
      if (row < l) out_h[static_cast<size_t>(row) * D + i % D] = from_f32<T>(0.0f);
    }
    for (unsigned i = threadIdx.x; i < kFwdRows; i += blockDim.x) {
      if (q0 + i < l) lse[static_cast<size_t>(bh) * l + q0 + i] = -INFINITY;
    }
    return;
  }

  uint32_t qf[D / 16][4];
  load_a_rows<D>(qf, q + head, row_lo, len);
  float o[D / 8][4];
  REALM_UNROLL
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float max_lo = -INFINITY, max_hi = -INFINITY, sum_lo = 0.0f, sum_hi = 0.0f;

  const unsigned tiles = (len + BN - 1) / BN;
  load_tile<BN, D>(k_tiles, k + head, 0, len);
  load_tile<BN, D>(v_tiles, v + head, 0, len);
  cp_async_commit();
  for (unsigned j = 0; j < tiles; ++j) {
    const unsigned buf = (j % 2) * BN * LD;
    if (j + 1 < tiles) {
      const unsigned next = ((j + 1) % 2) * BN * LD;
      load_tile<BN, D>(k_tiles + next, k + head, (j + 1) * BN, len);
      load_tile<BN, D>(v_tiles + next, v + head, (j + 1) * BN, len);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();

    // Scores of this warp's 16 rows against the tile's keys.
    float s[BN / 8][4];
    REALM_UNROLL
    for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
    REALM_UNROLL
    for (int kk = 0; kk < D / 16; ++kk) {
      REALM_UNROLL
      for (int n = 0; n < BN / 8; n += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, b_rows_nk<LD>(k_tiles + buf, n * 8, kk * 16));
        Mma<T>::run(s[n], qf[kk], b);
        Mma<T>::run(s[n + 1], qf[kk], b + 2);
      }
    }

    // Online softmax: scale, mask keys past len, new row max, rescale what came before.
    float tile_lo = max_lo, tile_hi = max_hi;
    REALM_UNROLL
    for (int n = 0; n < BN / 8; ++n) {
      const unsigned col = j * BN + n * 8 + 2 * t;
      REALM_UNROLL
      for (int e = 0; e < 4; ++e) {
        s[n][e] = col + (e % 2) < len ? s[n][e] * scale : -INFINITY;
      }
      tile_lo = fmaxf(tile_lo, fmaxf(s[n][0], s[n][1]));
      tile_hi = fmaxf(tile_hi, fmaxf(s[n][2], s[n][3]));
    }
    tile_lo = quad_max(tile_lo);
    tile_hi = quad_max(tile_hi);
    const float alpha_lo = __expf(max_lo - tile_lo), alpha_hi = __expf(max_hi - tile_hi);
    max_lo = tile_lo;
    max_hi = tile_hi;
    sum_lo *= alpha_lo;
    sum_hi *= alpha_hi;
    REALM_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= alpha_lo;
      o[n][1] *= alpha_lo;
      o[n][2] *= alpha_hi;
      o[n][3] *= alpha_hi;
    }
    REALM_UNROLL
    for (int n = 0; n < BN / 8; ++n) {
      s[n][0] = __expf(s[n][0] - max_lo);
      s[n][1] = __expf(s[n][1] - max_lo);
      s[n][2] = __expf(s[n][2] - max_hi);
      s[n][3] = __expf(s[n][3] - max_hi);
      sum_lo += s[n][0] + s[n][1];
      sum_hi += s[n][2] + s[n][3];
      if (drop.threshold != 0) {  // after the sums: dropout acts on the normalised probabilities
        float m[2];
        const unsigned col = j * BN + n * 8 + 2 * t;
        dropout_pair(drop, bh, row_lo, col, m);
        s[n][0] *= m[0];
        s[n][1] *= m[1];
        dropout_pair(drop, bh, row_hi, col, m);
        s[n][2] *= m[0];
        s[n][3] *= m[1];
      }
    }

    // out += P V, P repacked as A fragments (16 keys per k-step).
    REALM_UNROLL
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[4];
      pack_a<T>(a, s[2 * kk], s[2 * kk + 1]);
      REALM_UNROLL
      for (int n = 0; n < D / 8; n += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, b_rows_kn<LD>(v_tiles + buf, kk * 16, n * 8));
        Mma<T>::run(o[n], a, b);
        Mma<T>::run(o[n + 1], a, b + 2);
      }
    }
    __syncthreads();  // this buffer is refilled two tiles from now
  }

  // Each lane summed its own columns: the row sums are the sums over the quad.
  sum_lo = quad_sum(sum_lo);
  sum_hi = quad_sum(sum_hi);
  gptr<uint32_t> out_pairs = gptr_cast<uint32_t>(out_h);
  REALM_UNROLL
  for (int half = 0; half < 2; ++half) {
    const unsigned row = half == 0 ? row_lo : row_hi;
    if (row >= l) continue;
    const bool valid = row < len;
    const float inv = 1.0f / (half == 0 ? sum_lo : sum_hi);
    REALM_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      const unsigned col = n * 8 + 2 * t;
      out_pairs[(static_cast<size_t>(row) * D + col) / 2] =
          valid ? Mma<T>::pack(o[n][2 * half] * inv, o[n][2 * half + 1] * inv) : 0u;
    }
    if (t == 0) {
      const float m = half == 0 ? max_lo : max_hi, sum = half == 0 ? sum_lo : sum_hi;
      lse[static_cast<size_t>(bh) * l + row] = valid ? m + __logf(sum) : -INFINITY;
    }
  }
}

#define REALM_ATTENTION_FWD(T, SUFFIX, D)                                                        \
  REALM_KERNEL(attention_fwd_d##D##_##SUFFIX, kFwdWarps * REALM_WARP,                            \
               (gptr<const T> q, gptr<const T> k, gptr<const T> v, gptr<const unsigned> lens,    \
                gptr<T> out, gptr<float> lse, REALM_ATTENTION_SCALARS)) {                        \
    attention_fwd<T, D>(q, k, v, lens, out, lse, REALM_ATTENTION_SCALAR_ARGS);                  \
  }

REALM_ATTENTION_FWD(__half, f16, 32)
REALM_ATTENTION_FWD(__half, f16, 64)
REALM_ATTENTION_FWD(__half, f16, 128)
REALM_ATTENTION_FWD(__nv_bfloat16, bf16, 32)
REALM_ATTENTION_FWD(__nv_bfloat16, bf16, 64)
REALM_ATTENTION_FWD(__nv_bfloat16, bf16, 128)
