// The softmax over retrieved documents and REALM's marginal log-likelihood, forward and backward.
//
//   doc_softmax:  p[r, z] = softmax_z(x[r, z])                           x: [rows, k]
//   mll:          out[r, j] = logsumexp_z(log_softmax(x[r, :])_z + c[r, z, j])
//                                                                      x: [rows, k], c: [rows, k, m]
// -inf marks an absent candidate. A row with no finite logit has p = 0, out = -inf and zero
// gradients; a (row, j) whose joint is -inf (no candidate can produce it) has out = -inf and zero
// gradients. Nothing here produces NaN from finite or -inf inputs.
//
// One "row group" of threads handles one row (realm/rows.cuh): a warp when k is small, the whole
// block when k is large. Arithmetic is f32 whatever the storage type.
#include "realm.cuh"

// exp(v - max) that is 0 for v = -inf, also when max is -inf.
REALM_DEVICE float exp_shifted(float v, float max) { return v == -INFINITY ? 0.0f : expf(v - max); }

// A row's log-sum-exp kept as its two parts, so that log-probabilities come out as
// (x - max) - log_sum: x - (max + log_sum) would round at the scale of the logits (about 2.4e-4
// at 3000) where the plain f32 composition (log_softmax, then logsumexp) does not.
struct RowLse {
  float max;      // -inf for a row with no finite value
  float sum;      // sum_z exp(x_z - max)
  float log_sum;  // its log
};

// log x_z - logsumexp(x): -inf for an absent candidate and for every entry of an empty row.
REALM_DEVICE float log_prob(float v, RowLse lse) {
  return (v == -INFINITY || lse.max == -INFINITY) ? -INFINITY : (v - lse.max) - lse.log_sum;
}

// The log-sum-exp of x[0..k) over the row group: every thread of the group gets it.
template <int ROW_THREADS, typename T>
REALM_DEVICE RowLse row_logsumexp(gptr<const T> x, unsigned k, unsigned rank, unsigned stride,
                                  sptr<float> scratch) {
  float m = -INFINITY;
  for (unsigned z = rank; z < k; z += stride) m = fmaxf(m, to_f32(x[z]));
  m = row_max<ROW_THREADS>(m, scratch);
  float s = 0.0f;
  for (unsigned z = rank; z < k; z += stride) s += exp_shifted(to_f32(x[z]), m);
  s = row_sum<ROW_THREADS>(s, scratch);
  return RowLse{m, s, m == -INFINITY ? 0.0f : logf(s)};
}

template <int ROW_THREADS, typename T>
REALM_DEVICE void doc_softmax_fwd(gptr<const T> x, gptr<T> p, unsigned rows, unsigned k) {
  REALM_SHARED(float, scratch, 32);
  unsigned row, rank, stride;
  row_of_thread<ROW_THREADS>(row, rank, stride);
  if (row >= rows) return;
  gptr<const T> xr = x + static_cast<size_t>(row) * k;
  gptr<T> pr = p + static_cast<size_t>(row) * k;
  const RowLse lse = row_logsumexp<ROW_THREADS>(xr, k, rank, stride, scratch);
  // exp(x - max) times 1 / sum, as the CPU computes it.
  const float inv = lse.max == -INFINITY ? 0.0f : 1.0f / lse.sum;
  for (unsigned z = rank; z < k; z += stride) {
    pr[z] = from_f32<T>(exp_shifted(to_f32(xr[z]), lse.max) * inv);
  }
}

// dx = p * (g - sum_z p g)
template <int ROW_THREADS, typename T>
REALM_DEVICE void doc_softmax_bwd(gptr<const T> p, gptr<const T> g, gptr<T> dx, unsigned rows,
                                  unsigned k) {
  REALM_SHARED(float, scratch, 32);
  unsigned row, rank, stride;
  row_of_thread<ROW_THREADS>(row, rank, stride);
  if (row >= rows) return;
  const size_t base = static_cast<size_t>(row) * k;
  float dot = 0.0f;
  for (unsigned z = rank; z < k; z += stride) dot += to_f32(p[base + z]) * to_f32(g[base + z]);
  dot = row_sum<ROW_THREADS>(dot, scratch);
  for (unsigned z = rank; z < k; z += stride) {
    const float pz = to_f32(p[base + z]);
    dx[base + z] = from_f32<T>(pz == 0.0f ? 0.0f : pz * (to_f32(g[base + z]) - dot));
  }
}

// out[r, j] = logsumexp_z(log_softmax(x[r, :])_z + c[r, z, j]); rows = b * m row pairs. The
// log-prior is formed first, as the composition does, so large logits cancel exactly.
template <int ROW_THREADS, typename T>
REALM_DEVICE void mll_fwd(gptr<const T> x, gptr<const T> c, gptr<T> out, unsigned b, unsigned k,
                          unsigned m) {
  REALM_SHARED(float, scratch, 32);
  unsigned pair, rank, stride;
  row_of_thread<ROW_THREADS>(pair, rank, stride);
  if (pair >= b * m) return;
  const unsigned r = pair / m, j = pair % m;
  gptr<const T> xr = x + static_cast<size_t>(r) * k;
  gptr<const T> cr = c + static_cast<size_t>(r) * k * m + j;
  const RowLse prior = row_logsumexp<ROW_THREADS>(xr, k, rank, stride, scratch);
  float mx = -INFINITY;
  for (unsigned z = rank; z < k; z += stride) {
    mx = fmaxf(mx, log_prob(to_f32(xr[z]), prior) + to_f32(cr[static_cast<size_t>(z) * m]));
  }
  mx = row_max<ROW_THREADS>(mx, scratch);
  float s = 0.0f;
  for (unsigned z = rank; z < k; z += stride) {
    s += exp_shifted(log_prob(to_f32(xr[z]), prior) + to_f32(cr[static_cast<size_t>(z) * m]), mx);
  }
  s = row_sum<ROW_THREADS>(s, scratch);
  if (rank == 0) out[pair] = from_f32<T>(mx == -INFINITY ? -INFINITY : mx + logf(s));
}

// Gradients of mll for one row r, given og[r, j] = (out[r, j], g[r, j]) interleaved (the forward
// output and the incoming gradient), packed as grad[r, z, 0..m) = d/dc and grad[r, z, m] = d/dx:
//   posterior[z, j] = exp(log_softmax(x)_z + c[z, j] - out[j])
//   d/dc[z, j] = g[j] posterior[z, j],   d/dx[z] = sum_j g[j] (posterior[z, j] - prior[z])
// with every term of a j whose out[j] is -inf left out (its gradient is zero).
template <int ROW_THREADS, typename T>
REALM_DEVICE void mll_bwd(gptr<const T> x, gptr<const T> c, gptr<const T> og, gptr<T> grad,
                          unsigned b, unsigned k, unsigned m) {
  REALM_SHARED(float, scratch, 32);
  unsigned r, rank, stride;
  row_of_thread<ROW_THREADS>(r, rank, stride);
  if (r >= b) return;
  gptr<const T> xr = x + static_cast<size_t>(r) * k;
  const RowLse lse = row_logsumexp<ROW_THREADS>(xr, k, rank, stride, scratch);
  for (unsigned z = rank; z < k; z += stride) {
    const float log_prior = log_prob(to_f32(xr[z]), lse);
    const bool present = log_prior != -INFINITY;
    const float prior = present ? expf(log_prior) : 0.0f;
    const size_t cz = (static_cast<size_t>(r) * k + z) * m;
    const size_t gz = (static_cast<size_t>(r) * k + z) * (m + 1);
    float dx = 0.0f;
    for (unsigned j = 0; j < m; ++j) {
      const float oj = to_f32(og[(static_cast<size_t>(r) * m + j) * 2]);
      const float gj = to_f32(og[(static_cast<size_t>(r) * m + j) * 2 + 1]);
      float post = 0.0f;
      if (oj != -INFINITY && present) {
        const float czj = to_f32(c[cz + j]);
        post = czj == -INFINITY ? 0.0f : expf(log_prior + czj - oj);
      }
      grad[gz + j] = from_f32<T>(oj == -INFINITY ? 0.0f : gj * post);
      if (oj != -INFINITY) dx += gj * (post - prior);
    }
    grad[gz + m] = from_f32<T>(dx);
  }
}

// Threads per block of every kernel here (src/ops/doc_softmax launches with it).
REALM_EXPORT constexpr int kDocSoftmaxThreads = 256;

#define REALM_DOC_SOFTMAX_KERNELS(T, SUFFIX, RT, VARIANT)                                         \
  REALM_KERNEL(doc_softmax_fwd_##VARIANT##_##SUFFIX, kDocSoftmaxThreads,                         \
               (gptr<const T> x, gptr<T> p, unsigned rows, unsigned k)) {                         \
    doc_softmax_fwd<RT, T>(x, p, rows, k);                                                        \
  }                                                                                               \
  REALM_KERNEL(doc_softmax_bwd_##VARIANT##_##SUFFIX, kDocSoftmaxThreads,                         \
               (gptr<const T> p, gptr<const T> g, gptr<T> dx, unsigned rows, unsigned k)) {       \
    doc_softmax_bwd<RT, T>(p, g, dx, rows, k);                                                    \
  }                                                                                               \
  REALM_KERNEL(mll_fwd_##VARIANT##_##SUFFIX, kDocSoftmaxThreads,                                 \
               (gptr<const T> x, gptr<const T> c, gptr<T> out, unsigned b, unsigned k,            \
                unsigned m)) {                                                                    \
    mll_fwd<RT, T>(x, c, out, b, k, m);                                                           \
  }                                                                                               \
  REALM_KERNEL(mll_bwd_##VARIANT##_##SUFFIX, kDocSoftmaxThreads,                                 \
               (gptr<const T> x, gptr<const T> c, gptr<const T> og, gptr<T> grad, unsigned b,     \
                unsigned k, unsigned m)) {                                                        \
    mll_bwd<RT, T>(x, c, og, grad, b, k, m);                                                      \
  }

REALM_DOC_SOFTMAX_KERNELS(float, f32, 32, warp)
REALM_DOC_SOFTMAX_KERNELS(float, f32, 0, block)
REALM_DOC_SOFTMAX_KERNELS(__half, f16, 32, warp)
REALM_DOC_SOFTMAX_KERNELS(__half, f16, 0, block)
REALM_DOC_SOFTMAX_KERNELS(__nv_bfloat16, bf16, 32, warp)
REALM_DOC_SOFTMAX_KERNELS(__nv_bfloat16, bf16, 0, block)
