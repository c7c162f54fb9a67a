// LayerNorm over the last dimension, forward and backward, with f32 statistics whatever the
// storage type of x (f32, f16, bf16) and f32 scale w and shift b:
//
//   y[r, j] = (x[r, j] - mean_r) * rstd_r * w[j] + b[j],   rstd_r = 1 / sqrt(var_r + eps)
//
// with the biased variance of the centred row (two passes over the row: no cancellation; the
// mean itself taken relative to the row's first value, see RowStats).
// The backward, with x̂ = (x - mean) * rstd and g = dy * w:
//
//   dx[r, j] = rstd * (g - mean_j(g) - x̂ * mean_j(g x̂)),   dw[j] = Σ_r dy x̂,   db[j] = Σ_r dy
//
// dx is written in f32 into rows [0, rows) of `out` [rows + 2, h]; dw and db go to rows `rows`
// and `rows + 1`. The sums over rows are deterministic: block p sums its fixed range of rows into
// partials[p] (no atomics), and layer_norm_bwd_reduce adds the partials in block order.
#include "realm.cuh"

// Threads per block of every kernel here (src/ops/nn launches with it).
REALM_EXPORT constexpr int kLayerNormThreads = 256;
// The widest row accepted: the backward keeps a block's partial dw and db, 2 h floats, in
// dynamic shared memory (128 KiB at this width).
REALM_EXPORT constexpr int kLayerNormMaxHidden = 16384;
static_assert(2 * kLayerNormMaxHidden * sizeof(float) <= 227 * 1024,
              "the backward's partial sums fit in a block's shared memory");

// A row's statistics. The mean is taken of x - x[0] (exact for the values near x[0] that a large
// mean gives, by Sterbenz's lemma), so that a row far from 0 keeps its precision: the mean of x
// itself rounds at the scale of |x| (6e-5 at 1000) before the cancellation in x - mean.
struct RowStats {
  float shift;  // x[0]
  float mean;   // the mean of x - shift
  float rstd;   // 1 / sqrt(var + eps)
};

REALM_DEVICE float centred(float v, RowStats st) { return (v - st.shift) - st.mean; }

// The row's statistics over the row group (two passes over the row).
template <int ROW_THREADS, typename T>
REALM_DEVICE RowStats row_stats(gptr<const T> xr, unsigned h, float eps, unsigned rank,
                                unsigned stride, sptr<float> scratch) {
  const float n = static_cast<float>(h);
  RowStats st{to_f32(xr[0]), 0.0f, 0.0f};
  float s = 0.0f;
  for (unsigned j = rank; j < h; j += stride) s += to_f32(xr[j]) - st.shift;
  st.mean = row_sum<ROW_THREADS>(s, scratch) / n;
  float q = 0.0f;
  for (unsigned j = rank; j < h; j += stride) {
    const float d = centred(to_f32(xr[j]), st);
    q += d * d;
  }
  st.rstd = 1.0f / sqrtf(row_sum<ROW_THREADS>(q, scratch) / n + eps);
  return st;
}

template <int ROW_THREADS, typename T>
REALM_DEVICE void layer_norm_fwd(gptr<const T> x, gptr<const float> w, gptr<const float> b,
                                 gptr<T> y, unsigned rows, unsigned h, float eps) {
  REALM_SHARED(float, scratch, 32);
  unsigned row, rank, stride;
  row_of_thread<ROW_THREADS>(row, rank, stride);
  if (row >= rows) return;
  const size_t base = static_cast<size_t>(row) * h;
  const RowStats st = row_stats<ROW_THREADS>(x + base, h, eps, rank, stride, scratch);
  for (unsigned j = rank; j < h; j += stride) {
    y[base + j] = from_f32<T>(centred(to_f32(x[base + j]), st) * st.rstd * w[j] + b[j]);
  }
}

// Block p: rows [p * rows_per_part, (p + 1) * rows_per_part), one after another, each by the
// whole block. Thread t owns columns j ≡ t (mod blockDim.x) of the block's partial sums.
template <typename T>
REALM_DEVICE void layer_norm_bwd(gptr<const T> x, gptr<const float> w, gptr<const T> dy,
                                 gptr<float> out, gptr<float> partials, unsigned rows, unsigned h,
                                 unsigned rows_per_part, float eps) {
  REALM_SHARED(float, scratch, 32);
  REALM_DYNAMIC_SHARED(float, acc);  // [dw | db], 2 h
  const unsigned t = threadIdx.x, stride = blockDim.x;
  for (unsigned j = t; j < h; j += stride) {
    acc[j] = 0.0f;
    acc[h + j] = 0.0f;
  }
  const float n = static_cast<float>(h);
  const unsigned first = blockIdx.x * rows_per_part;
  const unsigned last = rows - first < rows_per_part ? rows : first + rows_per_part;
  for (unsigned r = first; r < last; ++r) {
    const size_t base = static_cast<size_t>(r) * h;
    const RowStats st = row_stats<0>(x + base, h, eps, t, stride, scratch);
    float sg = 0.0f, sgx = 0.0f;
    for (unsigned j = t; j < h; j += stride) {
      const float g = to_f32(dy[base + j]) * w[j];
      sg += g;
      sgx += g * (centred(to_f32(x[base + j]), st) * st.rstd);
    }
    const float m1 = block_reduce_sum(sg, scratch) / n;
    const float m2 = block_reduce_sum(sgx, scratch) / n;
    for (unsigned j = t; j < h; j += stride) {
      const float d = to_f32(dy[base + j]);
      const float xh = centred(to_f32(x[base + j]), st) * st.rstd;
      out[base + j] = st.rstd * (d * w[j] - m1 - xh * m2);
      acc[j] = static_cast<float>(acc[j]) + d * xh;
      acc[h + j] = static_cast<float>(acc[h + j]) + d;
    }
  }
  const size_t part = static_cast<size_t>(blockIdx.x) * 2 * h;
  for (unsigned j = t; j < h; j += stride) {
    partials[part + j] = acc[j];
    partials[part + h + j] = acc[h + j];
  }
}

#define REALM_LAYER_NORM_KERNELS(T, SUFFIX)                                                       \
  REALM_KERNEL(layer_norm_fwd_warp_##SUFFIX, kLayerNormThreads,                                  \
               (gptr<const T> x, gptr<const float> w, gptr<const float> b, gptr<T> y,             \
                unsigned rows, unsigned h, float eps)) {                                          \
    layer_norm_fwd<32, T>(x, w, b, y, rows, h, eps);                                              \
  }                                                                                               \
  REALM_KERNEL(layer_norm_fwd_block_##SUFFIX, kLayerNormThreads,                                 \
               (gptr<const T> x, gptr<const float> w, gptr<const float> b, gptr<T> y,             \
                unsigned rows, unsigned h, float eps)) {                                          \
    layer_norm_fwd<0, T>(x, w, b, y, rows, h, eps);                                               \
  }                                                                                               \
  REALM_KERNEL(layer_norm_bwd_##SUFFIX, kLayerNormThreads,                                       \
               (gptr<const T> x, gptr<const float> w, gptr<const T> dy, gptr<float> out,          \
                gptr<float> partials, unsigned rows, unsigned h, unsigned rows_per_part,          \
                float eps)) {                                                                     \
    layer_norm_bwd<T>(x, w, dy, out, partials, rows, h, rows_per_part, eps);                      \
  }

REALM_LAYER_NORM_KERNELS(float, f32)
REALM_LAYER_NORM_KERNELS(__half, f16)
REALM_LAYER_NORM_KERNELS(__nv_bfloat16, bf16)

// out[rows + c, j] for c in {0, 1}: the partial sums of `parts` blocks added in block order.
REALM_KERNEL(layer_norm_bwd_reduce, kLayerNormThreads,
             (gptr<const float> partials, gptr<float> out, unsigned parts, unsigned rows,
              unsigned h)) {
  const unsigned j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= 2 * h) return;
  float s = 0.0f;
  for (unsigned p = 0; p < parts; ++p) s += partials[static_cast<size_t>(p) * 2 * h + j];
  out[static_cast<size_t>(rows) * h + j] = s;
}
