// Exact inner-product top-k over an f16 index (ops::mips_top_k): a fused scan-and-select kernel
// and a merge kernel. Semantics are those of src/ops/mips/mod.rs: queries and index in f16, the
// score of a document is the f64 sum, in order of the dimension, of the exact products; results
// sorted by that score descending, equal scores by id ascending; exclude[q] never returned.
//
// mips_scan_d128 / mips_scan_d256 (d ≤ 128 / ≤ 256, a multiple of 8), grid (query batches, slices)
// - A block of W warps (W = 1..4, 32·W threads) takes a batch of 16·W queries and one slice of the
//   index; each warp owns 16 queries and keeps their mma A fragments in registers for the whole
//   slice. Tiles of NT documents stream into shared memory with cp.async, double-buffered, each
//   row's 16-byte chunks XOR-swizzled by (row mod 8) so that ldmatrix reads are conflict-free: the
//   index is read once per query batch, and the blocks of all batches for one slice are
//   neighbours in the grid, so they run together and share the slice's tiles in L2. A warp
//   computes its 16 × NT score tile with mma.m16n8k16 (f16 in, f32 accumulate).
// - Selection is fused: a score at or above its query's threshold θ (and not the excluded document)
//   is appended, (id, f32 score), to the query's candidate list for this slice in global memory
//   (capacity cap = 2k + 2·NT). Before a list could overflow on the next tile the block compacts it
//   (all threads, one query at a time): a radix select over the order-preserving bits of the f32
//   scores finds the k-th best f32 score t; θ becomes t − 2E (E: the query's f32 error bound, see
//   mod.rs) and the list keeps the scores ≥ θ. When near-ties keep more than (cap + k) / 2 — e.g.
//   duplicate documents — the candidates are rescored in f64 and a 96-bit radix select on
//   (f64 score, ~id) keeps exactly the top k; θ becomes (k-th f64 score) − E. Thresholds are shared
//   by the slices of a query through an atomic max in global memory and re-read every tile past L1
//   (load_cg: a plain load could keep a stale L1 copy and miss other slices' progress). Large
//   k costs list space and a few compactions, never per-thread heaps or sorted insertion.
// mips_merge, one block per query
// - Rescores in f64 the candidates of every slice whose f32 score reaches the final shared θ (the
//   CPU's operations in the CPU's order, so scores are bit-identical), selects the exact top k with
//   the 96-bit radix select, bitonic-sorts them in a global scratch of p2 = next power of two ≥ k
//   entries and writes the f64 scores and ids, padded with (−inf, u32::MAX) where a query has
//   fewer than k documents.
//
// Why the thresholds are safe: if a list holds k entries with f32 score ≥ t, the final k-th best f64
// score is ≥ t − E, and a document with f32 score < t − 2E has f64 score < t − E; so it cannot be
// in the top k, not even by a tie. The same holds across slices, hence the shared θ.
#include "realm.cuh"

#define MIPS_NO_ID 0xffffffffu
// Queries per warp (the mma M dimension), and at most this many warps per scan block.
REALM_EXPORT constexpr int kMipsWarpQueries = 16;
REALM_EXPORT constexpr int kMipsMaxWarps = 4;
// Documents per tile of the scan for a (padded) dimension of at most D: 64, or 32 for D = 256
// (registers and shared memory).
template <int D>
REALM_EXPORT constexpr int kMipsScanTile = D <= 128 ? 64 : 32;
// Threads per block of the merge.
REALM_EXPORT constexpr int kMipsMergeThreads = 256;

// ---- order-preserving keys ----

// a < b as floats <=> f32_key(a) < f32_key(b) as unsigned.
REALM_DEVICE unsigned f32_key(float f) {
  const unsigned b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
REALM_DEVICE float key_f32(unsigned k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// a < b as floats <=> f32_ordered(a) < f32_ordered(b) as int (for atomic_max); an involution.
REALM_DEVICE int f32_ordered(float f) {
  const int i = __float_as_int(f);
  return i >= 0 ? i : (i ^ 0x7fffffff);
}
REALM_DEVICE float ordered_f32(int i) { return __int_as_float(i >= 0 ? i : (i ^ 0x7fffffff)); }

// The 96-bit result order key of (f64 score, id): larger = earlier in the results (higher score,
// then lower id). Words most significant first.
struct Key3 {
  unsigned w[3];
};
REALM_DEVICE Key3 result_key(double score, unsigned id) {
  unsigned long long b;
  memcpy(&b, &score, sizeof b);
  b = (b >> 63) ? ~b : (b | (1ull << 63));
  return Key3{{static_cast<unsigned>(b >> 32), static_cast<unsigned>(b), ~id}};
}
REALM_DEVICE double key_score(const unsigned* w) {
  unsigned long long b = (static_cast<unsigned long long>(w[0]) << 32) | w[1];
  b = (b >> 63) ? (b & ~(1ull << 63)) : ~b;
  double s;
  memcpy(&s, &b, sizeof s);
  return s;
}
REALM_DEVICE bool key_less(const Key3& a, const unsigned* b) {
  if (a.w[0] != b[0]) return a.w[0] < b[0];
  if (a.w[1] != b[1]) return a.w[1] < b[1];
  return a.w[2] < b[2];
}

// The largest float ≤ x: thresholds only ever keep more.
REALM_DEVICE float f32_down(double x) {
  float f = static_cast<float>(x);
  if (static_cast<double>(f) > x) f = nextafterf(f, -INFINITY);
  return f;
}

// The exact score: Σ_i x_i q_i in f64, in order of i (the products of f16 values are exact, so a
// fused multiply-add gives the same sum), with −0 made +0.
REALM_DEVICE double exact_score(gptr<const __half> x, gptr<const __half> q, unsigned d) {
  double s = 0.0;
  for (unsigned i = 0; i < d; ++i) {
    s += static_cast<double>(__half2float(x[i])) * static_cast<double>(__half2float(q[i]));
  }
  return s + 0.0;
}

// ---- block-wide building blocks (every thread of the block must call them) ----

REALM_DEVICE unsigned popcount(unsigned x) {
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  return (((x + (x >> 4)) & 0x0f0f0f0fu) * 0x01010101u) >> 24;
}

// This thread's rank among the block's threads with `flag` set (in thread order), and their total.
// `warp_counts`: 32 unsigned of shared scratch.
REALM_DEVICE unsigned block_rank(bool flag, sptr<unsigned> warp_counts, unsigned& total) {
  const unsigned lane = lane_id(), warp = warp_id(), warps = blockDim.x / REALM_WARP;
  const unsigned ballot = __ballot_sync(REALM_FULL_MASK, flag);
  if (lane == 0) warp_counts[warp] = popcount(ballot);
  __syncthreads();
  unsigned before = 0, sum = 0;
  for (unsigned w = 0; w < warps; ++w) {
    const unsigned c = warp_counts[w];
    before += w < warp ? c : 0u;
    sum += c;
  }
  __syncthreads();
  total = sum;
  return before + popcount(ballot & ((1u << lane) - 1u));
}

// The `need`-th largest (1-based) of the W-word keys that `visit` produces, into out[0..W).
// visit(f) calls f(const unsigned* key) for this thread's share of the keys. 8-bit digits, most
// significant first, one pass over the keys per digit. `hist`: 256 ints, `ctl`: W + 1 unsigned.
template <int W, typename Visit>
REALM_DEVICE void radix_select(Visit visit, unsigned need, sptr<int> hist, sptr<unsigned> ctl,
                               unsigned* out) {
  if (threadIdx.x == 0) {
#pragma unroll
    for (int w = 0; w < W; ++w) ctl[w] = 0u;
    ctl[W] = need;
  }
  // Unrolled, so that the word index is a constant and the keys stay in registers.
#pragma unroll
  for (int p = 0; p < 4 * W; ++p) {
    const int w = p / 4, shift = 24 - 8 * (p % 4);
    const unsigned high = (p % 4 == 0) ? 0u : (0xffffffffu << (shift + 8));
    for (unsigned b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    unsigned prefix[W];
#pragma unroll
    for (int i = 0; i < W; ++i) prefix[i] = ctl[i];
    visit([&](const unsigned* key) {
#pragma unroll
      for (int i = 0; i < w; ++i) {
        if (key[i] != prefix[i]) return;
      }
      if ((key[w] & high) != (prefix[w] & high)) return;
      atomic_add(hist + static_cast<int>((key[w] >> shift) & 255u), 1);
    });
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned left = ctl[W];
      int b = 255;
      for (; b > 0; --b) {
        const unsigned c = static_cast<unsigned>(static_cast<int>(hist[b]));
        if (c >= left) break;
        left -= c;
      }
      ctl[w] = static_cast<unsigned>(ctl[w]) | (static_cast<unsigned>(b) << shift);
      ctl[W] = left;
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < W; ++i) out[i] = ctl[i];
  __syncthreads();
}

// Keeps, in order and in place, the entries [0, count) of a candidate list for which
// keep(i, id, score) holds; returns how many. Each chunk is read before any of it is written, and
// writes only go to positions already read.
template <typename Keep>
REALM_DEVICE unsigned compact_list(gptr<unsigned> ids, gptr<float> s32, unsigned count, Keep keep,
                                   sptr<unsigned> scratch) {
  unsigned out = 0;
  for (unsigned base = 0; base < count; base += blockDim.x) {
    const unsigned i = base + threadIdx.x;
    unsigned id = 0;
    float s = 0.0f;
    bool kept = false;
    if (i < count) {
      id = ids[i];
      s = s32[i];
      kept = keep(i, id, s);
    }
    unsigned total;
    const unsigned r = block_rank(kept, scratch, total);
    if (kept) {
      ids[out + r] = id;
      s32[out + r] = s;
    }
    out += total;
  }
  return out;
}

// ---- the scan ----

// One block's view of its candidate lists.
struct Lists {
  gptr<unsigned> ids;
  gptr<float> s32;
  gptr<double> s64;
  unsigned slices, slice, cap, q0;
  // Start of query-in-batch i's list for this slice.
  REALM_DEVICE size_t base(unsigned i) const {
    return (static_cast<size_t>(q0 + i) * slices + slice) * cap;
  }
};

// Shrinks query-in-batch i's list (count[i] > k entries) and raises its threshold; `exact` allows
// the f64 fallback for near-ties.
REALM_DEVICE void compact_query(unsigned i, bool exact, const Lists& l, unsigned k,
                                gptr<const __half> index, gptr<const __half> queries, unsigned d,
                                sptr<float> theta, sptr<float> marg, sptr<int> count,
                                gptr<int> theta_g, sptr<int> hist, sptr<unsigned> ctl,
                                sptr<unsigned> scratch) {
  const size_t base = l.base(i);
  const unsigned q = l.q0 + i;
  gptr<unsigned> ids = l.ids + base;
  gptr<float> s32 = l.s32 + base;
  gptr<double> s64 = l.s64 + base;
  unsigned c = static_cast<unsigned>(static_cast<int>(count[i]));
  const double e = static_cast<float>(marg[i]);
  float th = theta[i];
  if (c > k) {
    unsigned t;
    radix_select<1>(
        [&](auto f) {
          for (unsigned j = threadIdx.x; j < c; j += blockDim.x) {
            const unsigned key = f32_key(s32[j]);
            f(&key);
          }
        },
        k, hist, ctl, &t);
    th = fmaxf(th, f32_down(static_cast<double>(key_f32(t)) - 2.0 * e));
  }
  c = compact_list(ids, s32, c, [&](unsigned, unsigned, float s) { return s >= th; }, scratch);
  if (exact && c > (l.cap + k) / 2) {
    gptr<const __half> qrow = queries + static_cast<size_t>(q) * d;
    for (unsigned j = threadIdx.x; j < c; j += blockDim.x) {
      s64[j] = exact_score(index + static_cast<size_t>(ids[j]) * d, qrow, d);
    }
    __syncthreads();
    unsigned t[3];
    radix_select<3>(
        [&](auto f) {
          for (unsigned j = threadIdx.x; j < c; j += blockDim.x) {
            const Key3 key = result_key(s64[j], ids[j]);
            f(key.w);
          }
        },
        k, hist, ctl, t);
    c = compact_list(
        ids, s32, c,
        [&](unsigned j, unsigned id, float) { return !key_less(result_key(s64[j], id), t); },
        scratch);
    th = fmaxf(th, f32_down(key_score(t) - e));
  }
  if (threadIdx.x == 0) {
    count[i] = static_cast<int>(c);
    theta[i] = th;
    atomic_max(theta_g + q, f32_ordered(th));
  }
  __syncthreads();
}

template <int KS, int NT>
REALM_DEVICE void scan_slice(gptr<const __half> index, unsigned n, unsigned d,
                            gptr<const __half> queries, unsigned nq, gptr<const float> margin,
                            gptr<const unsigned> exclude, unsigned k, unsigned slice_len,
                            unsigned cap, gptr<unsigned> cand_ids, gptr<float> cand_s32,
                            gptr<double> cand_s64, gptr<unsigned> cand_count,
                            gptr<int> theta_g) {
  constexpr unsigned DS = KS * 16;      // shared row stride in halves (a multiple of 64)
  constexpr unsigned CHUNKS = DS / 8;   // 16-byte chunks per shared row
  constexpr unsigned BATCH = kMipsWarpQueries * kMipsMaxWarps;
  REALM_SHARED(__half, tiles, 2 * NT * DS);
  REALM_SHARED(float, theta, BATCH);
  REALM_SHARED(float, marg, BATCH);
  REALM_SHARED(unsigned, excl, BATCH);
  REALM_SHARED(int, count, BATCH);
  REALM_SHARED(int, hist, 256);
  REALM_SHARED(unsigned, ctl, 4);
  REALM_SHARED(unsigned, scratch, 32);

  const unsigned warps = blockDim.x / REALM_WARP, qb = kMipsWarpQueries * warps;
  const unsigned warp = warp_id(), lane = lane_id(), g = lane / 4, t4 = lane % 4;
  const Lists lists{cand_ids, cand_s32, cand_s64, gridDim.y, blockIdx.y, cap, blockIdx.x * qb};
  const unsigned begin = min(n, blockIdx.y * slice_len), end = min(n, begin + slice_len);
  const unsigned ntiles = (end - begin + NT - 1) / NT;
  const unsigned ksteps = (d + 15) / 16, dchunks = d / 8;

  for (unsigned i = threadIdx.x; i < qb; i += blockDim.x) {
    const unsigned q = lists.q0 + i;
    // Rows past the last query never take candidates.
    theta[i] = q < nq ? -INFINITY : INFINITY;
    marg[i] = q < nq ? static_cast<float>(margin[q]) : 0.0f;
    excl[i] = q < nq ? static_cast<unsigned>(exclude[q]) : MIPS_NO_ID;
    count[i] = 0;
  }
  // cp.async never writes a row's chunks past d: zero them once in both stages.
  const __half zero = __float2half_rn(0.0f);
  for (unsigned e = threadIdx.x; e < 2 * NT * CHUNKS; e += blockDim.x) {
    const unsigned row = e / CHUNKS, c = e % CHUNKS;
    if (c >= dchunks) {
      sptr<__half> dst = tiles + row * DS + (c ^ (row & 7u)) * 8;
      for (int j = 0; j < 8; ++j) dst[j] = zero;
    }
  }

  // This warp's 16 queries as mma A fragments (row-major 16 × 16 per k-step; zero past nq and d).
  uint32_t a[KS][4];
#pragma unroll
  for (int s = 0; s < KS; ++s) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const unsigned q = lists.q0 + warp * kMipsWarpQueries + g + (r & 1) * 8;
      const unsigned col = s * 16 + t4 * 2 + (r >> 1) * 8;
      a[s][r] = (q < nq && col < d)
                    ? static_cast<uint32_t>(
                          gptr_cast<const uint32_t>(queries + static_cast<size_t>(q) * d + col)[0])
                    : 0u;
    }
  }

  // Tile `tile` of the slice into stage `stage`: rows past the slice are zero.
  auto load_tile = [&](unsigned stage, unsigned tile) {
    const unsigned row0 = begin + tile * NT, rows = min(NT, end - row0);
    sptr<__half> st = tiles + stage * NT * DS;
    for (unsigned e = threadIdx.x; e < NT * dchunks; e += blockDim.x) {
      const unsigned r = e / dchunks, c = e % dchunks;
      sptr<__half> dst = st + r * DS + (c ^ (r & 7u)) * 8;
      if (r < rows) {
        cp_async_16(dst, index + static_cast<size_t>(row0 + r) * d + c * 8);
      } else {
        for (int j = 0; j < 8; ++j) dst[j] = zero;
      }
    }
    cp_async_commit();
  };

  if (ntiles > 0) load_tile(0, 0);
  for (unsigned tile = 0; tile < ntiles; ++tile) {
    if (tile + 1 < ntiles) {
      load_tile((tile + 1) & 1, tile + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    float acc[NT / 8][4];
#pragma unroll
    for (int j = 0; j < NT / 8; ++j) {
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[j][r] = 0.0f;
    }
    sptr<__half> st = tiles + (tile & 1) * NT * DS;
    const unsigned m = lane / 8, lr = lane % 8;
#pragma unroll
    for (int s = 0; s < KS; ++s) {
      if (s < static_cast<int>(ksteps)) {
#pragma unroll
        for (int j = 0; j < NT / 16; ++j) {
          // Lanes 8m..8m+7 address matrix m: documents of n-tile 2j + m/2, k-chunk 2s + m%2.
          const unsigned row = j * 16 + (m / 2) * 8 + lr, chunk = 2 * s + (m & 1);
          uint32_t b[4];
          ldmatrix_x4(b, st + row * DS + (chunk ^ (row & 7u)) * 8);
          mma_m16n8k16_f16(acc[2 * j], a[s], b, acc[2 * j]);
          mma_m16n8k16_f16(acc[2 * j + 1], a[s], b + 2, acc[2 * j + 1]);
        }
      }
    }

    // C fragment: acc[j][r] is query g + 8·(r/2), document 8j + 2·t4 + r%2 of the tile.
    const unsigned row0 = begin + tile * NT;
#pragma unroll
    for (int j = 0; j < NT / 8; ++j) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const unsigned i = warp * kMipsWarpQueries + g + (r >> 1) * 8;
        const unsigned doc = row0 + j * 8 + t4 * 2 + (r & 1);
        const float sc = acc[j][r];
        if (doc < end && sc >= static_cast<float>(theta[i]) &&
            doc != static_cast<unsigned>(excl[i])) {
          // Below cap by construction (compactions leave room for a tile); the bound only
          // keeps a broken invariant from writing into the next list.
          const unsigned pos = static_cast<unsigned>(atomic_add(count + i, 1));
          if (pos < cap) {
            cand_ids[lists.base(i) + pos] = doc;
            cand_s32[lists.base(i) + pos] = sc;
          }
        }
      }
    }
    __syncthreads();

    // A list that could overflow on the next tile is compacted now.
    for (unsigned i = 0; i < qb; ++i) {
      if (static_cast<unsigned>(static_cast<int>(count[i])) > cap - NT) {
        compact_query(i, true, lists, k, index, queries, d, theta, marg, count, theta_g, hist, ctl,
                      scratch);
      }
    }
    // The best threshold any slice of each query has found.
    for (unsigned i = threadIdx.x; i < qb; i += blockDim.x) {
      if (lists.q0 + i < nq) {
        theta[i] = fmaxf(theta[i], ordered_f32(load_cg(theta_g + (lists.q0 + i))));
      }
    }
    // (the next tile's first barrier orders these updates before their use)
  }
  __syncthreads();

  // Final: each list cut to about k and the best shared threshold; its length published.
  for (unsigned i = threadIdx.x; i < qb; i += blockDim.x) {
    if (lists.q0 + i < nq) {
      theta[i] = fmaxf(theta[i], ordered_f32(load_cg(theta_g + (lists.q0 + i))));
    }
  }
  __syncthreads();
  for (unsigned i = 0; i < qb && lists.q0 + i < nq; ++i) {
    compact_query(i, false, lists, k, index, queries, d, theta, marg, count, theta_g, hist, ctl,
                  scratch);
    if (threadIdx.x == 0) {
      cand_count[static_cast<size_t>(lists.q0 + i) * gridDim.y + blockIdx.y] =
          static_cast<unsigned>(static_cast<int>(count[i]));
    }
  }
}

// ---- the merge ----

// a before b in the results: higher score, then lower id.
REALM_DEVICE bool before(double sa, unsigned ia, double sb, unsigned ib) {
  return sa > sb || (sa == sb && ia < ib);
}

// Sorts p2 (a power of two) entries into result order, in place in global memory.
REALM_DEVICE void bitonic_sort(gptr<double> s, gptr<unsigned> id, unsigned p2) {
  for (unsigned size = 2; size <= p2; size <<= 1) {
    for (unsigned stride = size / 2; stride > 0; stride >>= 1) {
      for (unsigned t = threadIdx.x; t < p2 / 2; t += blockDim.x) {
        const unsigned i = 2 * t - (t & (stride - 1)), j = i + stride;
        // Runs whose bit `size` is clear end in result order, the others reversed.
        const bool forward = (i & size) == 0;
        const double si = s[i], sj = s[j];
        const unsigned ii = id[i], ij = id[j];
        if (forward ? before(sj, ij, si, ii) : before(si, ii, sj, ij)) {
          s[i] = sj;
          s[j] = si;
          id[i] = ij;
          id[j] = ii;
        }
      }
      __syncthreads();
    }
  }
}

REALM_DEVICE void merge_query(gptr<const __half> index, unsigned n, unsigned d,
                             gptr<const __half> queries, gptr<const unsigned> exclude, unsigned k,
                             unsigned slices, unsigned cap, gptr<const unsigned> cand_ids,
                             gptr<const float> cand_s32, gptr<double> cand_s64,
                             gptr<const unsigned> cand_count, gptr<const int> theta_g, unsigned p2,
                             gptr<double> sort_s, gptr<unsigned> sort_id, gptr<double> out_s,
                             gptr<unsigned> out_id) {
  REALM_SHARED(int, hist, 256);
  REALM_SHARED(unsigned, ctl, 4);
  REALM_SHARED(unsigned, found, 1);
  const unsigned q = blockIdx.x;
  const float th = ordered_f32(theta_g[q]);
  const unsigned kq = min(k, n - (exclude[q] < n ? 1u : 0u));
  gptr<const __half> qrow = queries + static_cast<size_t>(q) * d;
  // f(at) for this thread's share of the candidates that reach θ, over all slices.
  auto each = [&](auto f) {
    for (unsigned s = 0; s < slices; ++s) {
      const unsigned c = cand_count[static_cast<size_t>(q) * slices + s];
      const size_t base = (static_cast<size_t>(q) * slices + s) * cap;
      for (unsigned j = threadIdx.x; j < c; j += blockDim.x) {
        if (cand_s32[base + j] >= th) f(base + j);
      }
    }
  };
  each([&](size_t at) {
    cand_s64[at] = exact_score(index + static_cast<size_t>(cand_ids[at]) * d, qrow, d);
  });
  gptr<double> ss = sort_s + static_cast<size_t>(q) * p2;
  gptr<unsigned> si = sort_id + static_cast<size_t>(q) * p2;
  for (unsigned j = threadIdx.x; j < p2; j += blockDim.x) {
    ss[j] = -INFINITY;
    si[j] = MIPS_NO_ID;
  }
  if (threadIdx.x == 0) found[0] = 0u;
  __syncthreads();
  if (kq > 0) {
    unsigned t[3];
    radix_select<3>(
        [&](auto f) {
          each([&](size_t at) {
            const Key3 key = result_key(cand_s64[at], cand_ids[at]);
            f(key.w);
          });
        },
        kq, hist, ctl, t);
    each([&](size_t at) {
      if (!key_less(result_key(cand_s64[at], cand_ids[at]), t)) {
        const unsigned pos = atomic_add(found, 1u);
        if (pos < p2) {
          ss[pos] = cand_s64[at];
          si[pos] = cand_ids[at];
        }
      }
    });
    __syncthreads();
  }
  bitonic_sort(ss, si, p2);
  for (unsigned j = threadIdx.x; j < k; j += blockDim.x) {
    out_s[static_cast<size_t>(q) * k + j] = ss[j];
    out_id[static_cast<size_t>(q) * k + j] = si[j];
  }
}

// The scan for a padded dimension of at most D: D / 16 mma k-steps, kMipsScanTile<D> documents
// per tile.
#define MIPS_SCAN_KERNEL(D)                                                                    \
  REALM_KERNEL(mips_scan_d##D, kMipsMaxWarps * REALM_WARP,                                   \
               (gptr<const __half> index, unsigned n, unsigned d, gptr<const __half> queries, \
                unsigned nq, gptr<const float> margin, gptr<const unsigned> exclude,          \
                unsigned k, unsigned slice_len, unsigned cap, gptr<unsigned> cand_ids,        \
                gptr<float> cand_s32, gptr<double> cand_s64, gptr<unsigned> cand_count,       \
                gptr<int> theta_g)) {                                                         \
    scan_slice<D / 16, kMipsScanTile<D>>(index, n, d, queries, nq, margin, exclude, k,       \
                                          slice_len, cap, cand_ids, cand_s32, cand_s64,       \
                                          cand_count, theta_g);                              \
  }

MIPS_SCAN_KERNEL(128)
MIPS_SCAN_KERNEL(256)

REALM_KERNEL(mips_merge, kMipsMergeThreads,
             (gptr<const __half> index, unsigned n, unsigned d, gptr<const __half> queries,
              gptr<const unsigned> exclude, unsigned k, unsigned slices, unsigned cap,
              gptr<const unsigned> cand_ids, gptr<const float> cand_s32, gptr<double> cand_s64,
              gptr<const unsigned> cand_count, gptr<const int> theta_g, unsigned p2,
              gptr<double> sort_s, gptr<unsigned> sort_id, gptr<double> out_s,
              gptr<unsigned> out_id)) {
  merge_query(index, n, d, queries, exclude, k, slices, cap, cand_ids, cand_s32, cand_s64,
             cand_count, theta_g, p2, sort_s, sort_id, out_s, out_id);
}
