// Fused attention, backward (FlashAttention-2 structure, deterministic): three launches.
//
//   attention_bwd_dot:   delta[i] = Σ_d dout[i, d] · out[i, d]              (one warp per row)
//   attention_bwd_dkdv:  per block, 64 keys of one batch·head (16 per warp, kept in shared memory),
//                        streaming the queries, dout, lse and delta in tiles double buffered with
//                        cp.async: Sᵀ = K Qᵀ, Pᵀ = exp(scale Sᵀ − lse), dPᵀ = V doutᵀ,
//                        dSᵀ = Pᵀ ∘ (dPᵀ ∘ M − delta); dv += (Pᵀ ∘ M) dout, dk += scale dSᵀ q,
//                        both accumulated in registers and written once.
//   attention_bwd_dq:    per block, 64 queries (16 per warp, q and dout fragments in registers),
//                        streaming K and V like the forward: dq += scale dS k.
// dq gets its own pass (recomputing S and dP) instead of atomic adds into a shared f32 buffer:
// every gradient element is written by one thread, once, in a fixed order — bit-reproducible.
// Keys and queries at or past len are skipped; their gradient rows are written as zeros.
#include "attention_common.cuh"

// ---- delta ----

template <typename T>
REALM_DEVICE void attention_bwd_dot(gptr<const T> out, gptr<const T> grad,
                                    gptr<const unsigned> lens, gptr<float> delta, unsigned heads,
                                    unsigned l, unsigned dh, unsigned rows) {
  const unsigned row = blockIdx.x * (blockDim.x / REALM_WARP) + warp_id();
  if (row >= rows) return;
  const unsigned bh = row / l, i = row % l;
  const unsigned len = min(static_cast<unsigned>(lens[bh / heads]), l);
  float acc = 0.0f;
  if (i < len) {
    const size_t base = static_cast<size_t>(row) * dh;
    for (unsigned d = lane_id(); d < dh; d += REALM_WARP) {
      acc += to_f32(out[base + d]) * to_f32(grad[base + d]);
    }
  }
  acc = warp_reduce_sum(acc);
  if (lane_id() == 0) delta[row] = acc;
}

// ---- dk, dv ----

// Warps per block of dk/dv and dq, and keys per dk/dv block (grid.y tiles the keys by it).
REALM_EXPORT constexpr int kBwdWarps = 4;
REALM_EXPORT constexpr int kBwdKeys = 16 * kBwdWarps;
// Queries per streamed tile.
template <int D>
constexpr int kBwdQueries = D == 128 ? 32 : 64;

// The dynamic shared memory of attention_bwd_dkdv: K and V tiles, two buffers each of q and dout
// tiles (16-bit elements), then two buffers each of lse and delta (f32).
template <int D>
constexpr int kDkdvTileElems = (2 * kBwdKeys + 4 * kBwdQueries<D>)*kPaddedRow<D>;
template <int D>
REALM_EXPORT constexpr int kDkdvSmemBytes = kDkdvTileElems<D> * 2 + 4 * kBwdQueries<D> * 4;

template <typename T, int D>
REALM_DEVICE void attention_bwd_dkdv(gptr<const T> q, gptr<const T> k, gptr<const T> v,
                                     gptr<const T> grad, gptr<const unsigned> lens,
                                     gptr<const float> lse, gptr<const float> delta, gptr<T> dk,
                                     gptr<T> dv, unsigned heads, unsigned l, float scale,
                                     DropoutParams drop) {
  constexpr int BQ = kBwdQueries<D>, LD = kPaddedRow<D>;
  REALM_DYNAMIC_SHARED(T, smem);
  sptr<T> k_s = smem, v_s = smem + kBwdKeys * LD;
  sptr<T> q_s = smem + 2 * kBwdKeys * LD, dout_s = q_s + 2 * BQ * LD;
  sptr<float> lse_s = sptr_cast<float>(smem + kDkdvTileElems<D>), delta_s = lse_s + 2 * BQ;

  const unsigned bh = blockIdx.x, k0 = blockIdx.y * kBwdKeys;
  const unsigned len = min(static_cast<unsigned>(lens[bh / heads]), l);
  const size_t head = static_cast<size_t>(bh) * l * D;
  gptr<T> dk_h = dk + head, dv_h = dv + head;
  const unsigned lane = lane_id(), t = lane % 4, warp = warp_id();
  const unsigned key_lo = k0 + warp * 16 + lane / 4, key_hi = key_lo + 8;

  if (k0 >= len) {  // only padding keys: zero gradients
    for (unsigned i = threadIdx.x; i < kBwdKeys * D; i += blockDim.x) {
      const unsigned row = k0 + i / D;
      if (row < l) {
        dk_h[static_cast<size_t>(row) * D + i % D] = from_f32<T>(0.0f);
        dv_h[static_cast<size_t>(row) * D + i % D] = from_f32<T>(0.0f);
      }
    }
    return;
  }

  // Queries past len get lse = +inf (probability 0) and delta 0.
  auto load_queries = [&](unsigned tile, unsigned buf) {
    const unsigned i0 = tile * BQ;
    load_tile<BQ, D>(q_s + buf * BQ * LD, q + head, i0, len);
    load_tile<BQ, D>(dout_s + buf * BQ * LD, grad + head, i0, len);
    for (unsigned i = threadIdx.x; i < BQ; i += blockDim.x) {
      const bool valid = i0 + i < len;
      const size_t at = static_cast<size_t>(bh) * l + i0 + i;
      lse_s[buf * BQ + i] = valid ? static_cast<float>(lse[at]) : INFINITY;
      delta_s[buf * BQ + i] = valid ? static_cast<float>(delta[at]) : 0.0f;
    }
  };
  load_tile<kBwdKeys, D>(k_s, k + head, k0, len);
  load_tile<kBwdKeys, D>(v_s, v + head, k0, len);
  load_queries(0, 0);
  cp_async_commit();

  float dk_acc[D / 8][4], dv_acc[D / 8][4];
  REALM_UNROLL
  for (int n = 0; n < D / 8; ++n) {
    REALM_UNROLL
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = dv_acc[n][e] = 0.0f;
  }

  const unsigned tiles = (len + BQ - 1) / BQ;
  for (unsigned qt = 0; qt < tiles; ++qt) {
    const unsigned buf = qt % 2;
    if (qt + 1 < tiles) load_queries(qt + 1, 1 - buf);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    sptr<T> q_t = q_s + buf * BQ * LD, dout_t = dout_s + buf * BQ * LD;

    // Sᵀ = K_w qᵀ and dPᵀ = V_w doutᵀ: this warp's 16 keys against the tile's queries.
    float st[BQ / 8][4], dpt[BQ / 8][4];
    REALM_UNROLL
    for (int n = 0; n < BQ / 8; ++n) {
      REALM_UNROLL
      for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.0f;
    }
    REALM_UNROLL
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ka[4], va[4];
      ldmatrix_x4(ka, a_rows<LD>(k_s, warp * 16, kk * 16));
      ldmatrix_x4(va, a_rows<LD>(v_s, warp * 16, kk * 16));
      REALM_UNROLL
      for (int n = 0; n < BQ / 8; n += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, b_rows_nk<LD>(q_t, n * 8, kk * 16));
        Mma<T>::run(st[n], ka, b);
        Mma<T>::run(st[n + 1], ka, b + 2);
        ldmatrix_x4(b, b_rows_nk<LD>(dout_t, n * 8, kk * 16));
        Mma<T>::run(dpt[n], va, b);
        Mma<T>::run(dpt[n + 1], va, b + 2);
      }
    }

    // Pᵀ, and dSᵀ in place of dPᵀ; with dropout Pᵀ becomes Pᵀ ∘ M (what dv needs).
    REALM_UNROLL
    for (int n = 0; n < BQ / 8; ++n) {
      REALM_UNROLL
      for (int e = 0; e < 4; ++e) {
        const unsigned col = n * 8 + 2 * t + e % 2;
        const float l_col = lse_s[buf * BQ + col], d_col = delta_s[buf * BQ + col];
        const float p = __expf(st[n][e] * scale - l_col);
        const float m = drop.threshold != 0
                            ? dropout_one(drop, bh, qt * BQ + col, e < 2 ? key_lo : key_hi)
                            : 1.0f;
        dpt[n][e] = p * (dpt[n][e] * m - d_col);
        st[n][e] = p * m;
      }
    }

    // dv += (Pᵀ ∘ M) dout and dk += dSᵀ q, queries as the k dimension.
    REALM_UNROLL
    for (int kk = 0; kk < BQ / 16; ++kk) {
      uint32_t pa[4], dsa[4];
      pack_a<T>(pa, st[2 * kk], st[2 * kk + 1]);
      pack_a<T>(dsa, dpt[2 * kk], dpt[2 * kk + 1]);
      REALM_UNROLL
      for (int n = 0; n < D / 8; n += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, b_rows_kn<LD>(dout_t, kk * 16, n * 8));
        Mma<T>::run(dv_acc[n], pa, b);
        Mma<T>::run(dv_acc[n + 1], pa, b + 2);
        ldmatrix_x4_trans(b, b_rows_kn<LD>(q_t, kk * 16, n * 8));
        Mma<T>::run(dk_acc[n], dsa, b);
        Mma<T>::run(dk_acc[n + 1], dsa, b + 2);
      }
    }
    __syncthreads();  // this buffer is refilled two tiles from now
  }

  gptr<uint32_t> dk_pairs = gptr_cast<uint32_t>(dk_h), dv_pairs = gptr_cast<uint32_t>(dv_h);
  REALM_UNROLL
  for (int half = 0; half < 2; ++half) {
    const unsigned key = half == 0 ? key_lo : key_hi;
    if (key >= l) continue;
    const bool valid = key < len;
    REALM_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      const size_t at = (static_cast<size_t>(key) * D + n * 8 + 2 * t) / 2;
      dk_pairs[at] =
          valid ? Mma<T>::pack(dk_acc[n][2 * half] * scale, dk_acc[n][2 * half + 1] * scale) : 0u;
      dv_pairs[at] = valid ? Mma<T>::pack(dv_acc[n][2 * half], dv_acc[n][2 * half + 1]) : 0u;
    }
  }
}

// ---- dq ----

// Query rows per dq block (grid.y tiles the rows by it).
REALM_EXPORT constexpr int kDqRows = 16 * kBwdWarps;
// Threads per block of attention_bwd_dot: a warp per row.
REALM_EXPORT constexpr int kDotThreads = 256;

template <typename T, int D>
REALM_DEVICE void attention_bwd_dq(gptr<const T> q, gptr<const T> k, gptr<const T> v,
                                   gptr<const T> grad, gptr<const unsigned> lens,
                                   gptr<const float> lse, gptr<const float> delta, gptr<T> dq,
                                   unsigned heads, unsigned l, float scale, DropoutParams drop) {
  // The forward's key tiles: the same registers and shared memory budget.
  constexpr int BN = D == 128 ? 32 : 64, LD = kPaddedRow<D>;
  REALM_SHARED(T, k_tiles, 2 * BN * LD);
  REALM_SHARED(T, v_tiles, 2 * BN * LD);
  const unsigned bh = blockIdx.x, q0 = blockIdx.y * kDqRows;
  const unsigned len = min(static_cast<unsigned>(lens[bh / heads]), l);
  const size_t head = static_cast<size_t>(bh) * l * D;
  gptr<T> dq_h = dq + head;
  const unsigned lane = lane_id(), t = lane % 4;
  const unsigned row_lo = q0 + warp_id() * 16 + lane / 4, row_hi = row_lo + 8;

  if (q0 >= len) {
    for (unsigned i = threadIdx.x; i < kDqRows * D; i += blockDim.x) {
      const unsigned row = q0 + i / D;
      if (row < l) dq_h[static_cast<size_t>(row) * D + i % D] = from_f32<T>(0.0f);
    }
    return;
  }

  uint32_t qf[D / 16][4], gf[D / 16][4];
  load_a_rows<D>(qf, q + head, row_lo, len);
  load_a_rows<D>(gf, grad + head, row_lo, len);
  // Rows past len: probability 0 (lse +inf), their gradient is written as zero below.
  const size_t stats = static_cast<size_t>(bh) * l;
  const float lse_lo = row_lo < len ? static_cast<float>(lse[stats + row_lo]) : INFINITY;
  const float lse_hi = row_hi < len ? static_cast<float>(lse[stats + row_hi]) : INFINITY;
  const float delta_lo = row_lo < len ? static_cast<float>(delta[stats + row_lo]) : 0.0f;
  const float delta_hi = row_hi < len ? static_cast<float>(delta[stats + row_hi]) : 0.0f;
  float acc[D / 8][4];
  REALM_UNROLL
  for (int n = 0; n < D / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;

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

    float s[BN / 8][4], dp[BN / 8][4];
    REALM_UNROLL
    for (int n = 0; n < BN / 8; ++n) {
      REALM_UNROLL
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.0f;
    }
    REALM_UNROLL
    for (int kk = 0; kk < D / 16; ++kk) {
      REALM_UNROLL
      for (int n = 0; n < BN / 8; n += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, b_rows_nk<LD>(k_tiles + buf, n * 8, kk * 16));
        Mma<T>::run(s[n], qf[kk], b);
        Mma<T>::run(s[n + 1], qf[kk], b + 2);
        ldmatrix_x4(b, b_rows_nk<LD>(v_tiles + buf, n * 8, kk * 16));
        Mma<T>::run(dp[n], gf[kk], b);
        Mma<T>::run(dp[n + 1], gf[kk], b + 2);
      }
    }

    // dS = P ∘ (dP ∘ M − delta) in place of s.
    REALM_UNROLL
    for (int n = 0; n < BN / 8; ++n) {
      const unsigned col = j * BN + n * 8 + 2 * t;
      float m_lo[2] = {1.0f, 1.0f}, m_hi[2] = {1.0f, 1.0f};
      if (drop.threshold != 0) {
        dropout_pair(drop, bh, row_lo, col, m_lo);
        dropout_pair(drop, bh, row_hi, col, m_hi);
      }
      REALM_UNROLL
      for (int e = 0; e < 4; ++e) {
        const bool lo = e < 2;
        const float p =
            col + e % 2 < len ? __expf(s[n][e] * scale - (lo ? lse_lo : lse_hi)) : 0.0f;
        const float m = lo ? m_lo[e % 2] : m_hi[e % 2];
        s[n][e] = p * (dp[n][e] * m - (lo ? delta_lo : delta_hi));
      }
    }

    // dq += dS k, keys as the k dimension.
    REALM_UNROLL
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[4];
      pack_a<T>(a, s[2 * kk], s[2 * kk + 1]);
      REALM_UNROLL
      for (int n = 0; n < D / 8; n += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, b_rows_kn<LD>(k_tiles + buf, kk * 16, n * 8));
        Mma<T>::run(acc[n], a, b);
        Mma<T>::run(acc[n + 1], a, b + 2);
      }
    }
    __syncthreads();
  }

  gptr<uint32_t> dq_pairs = gptr_cast<uint32_t>(dq_h);
  REALM_UNROLL
  for (int half = 0; half < 2; ++half) {
    const unsigned row = half == 0 ? row_lo : row_hi;
    if (row >= l) continue;
    const bool valid = row < len;
    REALM_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      dq_pairs[(static_cast<size_t>(row) * D + n * 8 + 2 * t) / 2] =
          valid ? Mma<T>::pack(acc[n][2 * half] * scale, acc[n][2 * half + 1] * scale) : 0u;
    }
  }
}

#define REALM_ATTENTION_BWD_GRADS(T, SUFFIX, D)                                                  \
  REALM_KERNEL(attention_bwd_dkdv_d##D##_##SUFFIX, kBwdWarps * REALM_WARP,                       \
               (gptr<const T> q, gptr<const T> k, gptr<const T> v, gptr<const T> grad,           \
                gptr<const unsigned> lens, gptr<const float> lse, gptr<const float> delta,       \
                gptr<T> dk, gptr<T> dv, REALM_ATTENTION_SCALARS)) {                              \
    attention_bwd_dkdv<T, D>(q, k, v, grad, lens, lse, delta, dk, dv,                           \
                             REALM_ATTENTION_SCALAR_ARGS);                                       \
  }                                                                                              \
  REALM_KERNEL(attention_bwd_dq_d##D##_##SUFFIX, kBwdWarps * REALM_WARP,                         \
               (gptr<const T> q, gptr<const T> k, gptr<const T> v, gptr<const T> grad,           \
                gptr<const unsigned> lens, gptr<const float> lse, gptr<const float> delta,       \
                gptr<T> dq, REALM_ATTENTION_SCALARS)) {                                          \
    attention_bwd_dq<T, D>(q, k, v, grad, lens, lse, delta, dq, REALM_ATTENTION_SCALAR_ARGS);   \
  }

#define REALM_ATTENTION_BWD(T, SUFFIX)                                                           \
  REALM_KERNEL(attention_bwd_dot_##SUFFIX, kDotThreads,                                          \
               (gptr<const T> out, gptr<const T> grad, gptr<const unsigned> lens,                \
                gptr<float> delta, unsigned heads, unsigned l, unsigned dh, unsigned rows)) {    \
    attention_bwd_dot<T>(out, grad, lens, delta, heads, l, dh, rows);                           \
  }                                                                                              \
  REALM_ATTENTION_BWD_GRADS(T, SUFFIX, 32)                                                       \
  REALM_ATTENTION_BWD_GRADS(T, SUFFIX, 64)                                                       \
  REALM_ATTENTION_BWD_GRADS(T, SUFFIX, 128)

REALM_ATTENTION_BWD(__half, f16)
REALM_ATTENTION_BWD(__nv_bfloat16, bf16)
