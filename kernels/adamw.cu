// Multi-tensor AdamW (decoupled weight decay, bias correction) with global-norm gradient
// clipping, the norm reduced on the device: three launches update every parameter, whatever
// their number.
//
// Every tensor is reached through one table in device memory (src/ops/adamw/launch.rs writes
// it), of 64-bit words, a pointer being the bytes of a gptr<T> (one word on a GPU, three under
// the emulator, which keeps its bounds checks):
//
//   header          stats (gptr<double>), m (gptr<float>), v (gptr<float>)
//   tensor e        theta (gptr<float>), grad (gptr<const float>), its moments' offset in m and
//                   v, its length n, its learning rate and its shrink (each the bits of an f32)
//   chunk c         tensor << 32 | index of the chunk within the tensor (kAdamwChunk elements)
//
// stats = [‖g‖², clip factor, the chunks' sums of squares...] (f64).
//   adamw_sumsq    block per chunk: its sum of squares (f32 within the chunk, a fixed tree)
//   adamw_norm     one block: ‖g‖² as the f64 sum of the chunks' sums in a fixed order (the
//                  result is the same on every run), and the clip factor
//   adamw_update   block per chunk, unless ‖g‖² is not finite (the step is skipped):
//                  g ← g · factor; m ← β₁ m + (1 − β₁) g; v ← β₂ v + (1 − β₂) g²;
//                  θ ← θ · shrink − lr · (m / bias1) / (√(v / bias2) + ε)
//                  (lr the tensor's own, e.g. a lower one for the retriever's towers; shrink =
//                  1 − lr · weight decay for a decayed tensor, else 1; both rounded on the host)
// In f32, with 1 − β₁ and 1 − β₂ rounded from f64 (1 − 0.999 in f32 would be 1.3e-5 off).
#include "realm.cuh"

REALM_EXPORT constexpr int kAdamwThreads = 256;
// Elements per chunk: the unit of work of a block and of the norm's partial sums.
REALM_EXPORT constexpr int kAdamwChunk = 4096;
// Words of the table before the first tensor, per tensor besides its two pointers.
REALM_EXPORT constexpr int kAdamwHeaderPointers = 3;
REALM_EXPORT constexpr int kAdamwTensorScalars = 4;

using Table = gptr<const unsigned long long>;

// The pointer whose bytes start at word `at` of the table.
template <typename T>
REALM_DEVICE gptr<T> table_pointer(Table table, unsigned at) {
  constexpr unsigned kWords = sizeof(gptr<T>) / sizeof(unsigned long long);
  unsigned long long words[kWords];
  for (unsigned w = 0; w < kWords; ++w) words[w] = table[at + w];
  gptr<T> p;
  __builtin_memcpy(&p, words, sizeof(p));
  return p;
}

constexpr unsigned kPointerWords = sizeof(gptr<float>) / sizeof(unsigned long long);
constexpr unsigned kTensorWords = 2 * kPointerWords + kAdamwTensorScalars;
constexpr unsigned kHeaderWords = kAdamwHeaderPointers * kPointerWords;

struct TensorEntry {
  gptr<float> theta;
  gptr<const float> grad;
  unsigned long long offset;
  unsigned long long n;
  float lr;
  float shrink;
};

REALM_DEVICE float f32_of_word(unsigned long long w) {
  const unsigned bits = static_cast<unsigned>(w);
  float x;
  __builtin_memcpy(&x, &bits, sizeof(x));
  return x;
}

REALM_DEVICE TensorEntry tensor_entry(Table table, unsigned e) {
  const unsigned at = kHeaderWords + e * kTensorWords;
  return {table_pointer<float>(table, at), table_pointer<const float>(table, at + kPointerWords),
          table[at + 2 * kPointerWords], table[at + 2 * kPointerWords + 1],
          f32_of_word(table[at + 2 * kPointerWords + 2]),
          f32_of_word(table[at + 2 * kPointerWords + 3])};
}

// The chunk's tensor and its [begin, end) range of elements.
struct Chunk {
  TensorEntry t;
  unsigned long long begin, end;
};

REALM_DEVICE Chunk chunk_of(Table table, unsigned tensors, unsigned c) {
  const unsigned long long word = table[kHeaderWords + tensors * kTensorWords + c];
  const TensorEntry t = tensor_entry(table, static_cast<unsigned>(word >> 32));
  const unsigned long long begin = (word & 0xffffffffull) * kAdamwChunk;
  const unsigned long long end = t.n - begin < kAdamwChunk ? t.n : begin + kAdamwChunk;
  return {t, begin, end};
}

// x - x is 0 for a finite x, NaN for ±inf and NaN.
REALM_DEVICE bool is_finite_f64(double x) { return x - x == 0.0; }

#define REALM_ADAMW_PARAMS                                                                      \
  (gptr<const unsigned long long> table, unsigned tensors, unsigned chunks, float beta1,          \
   float beta2, float one_minus_beta1, float one_minus_beta2, float eps, float inv_bias1,          \
   float inv_bias2, double max_norm)

REALM_KERNEL(adamw_sumsq, kAdamwThreads, REALM_ADAMW_PARAMS) {
  REALM_SHARED(float, scratch, 32);
  const gptr<double> stats = table_pointer<double>(table, 0);
  for (unsigned c = blockIdx.x; c < chunks; c += gridDim.x) {
    const Chunk ch = chunk_of(table, tensors, c);
    float s = 0.0f;
    for (unsigned long long i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x) {
      const float g = ch.t.grad[i];
      s += g * g;
    }
    s = block_reduce_sum(s, scratch);
    if (threadIdx.x == 0) stats[2 + c] = s;
  }
}

REALM_KERNEL(adamw_norm, kAdamwThreads, REALM_ADAMW_PARAMS) {
  REALM_SHARED(double, part, kAdamwThreads);
  const gptr<double> stats = table_pointer<double>(table, 0);
  double s = 0.0;
  for (unsigned c = threadIdx.x; c < chunks; c += blockDim.x) s += stats[2 + c];
  part[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x != 0) return;
  double sq = 0.0;
  for (unsigned t = 0; t < blockDim.x; ++t) sq += part[t];
  const double norm = sqrt(sq);
  // As train::optim::clip_factor: max_norm ≤ 0 or infinite means no clipping.
  const bool clip = max_norm > 0.0 && is_finite_f64(max_norm) && norm > max_norm;
  stats[0] = sq;
  stats[1] = clip ? max_norm / (norm + 1e-6) : 1.0;
}

REALM_KERNEL(adamw_update, kAdamwThreads, REALM_ADAMW_PARAMS) {
  const gptr<double> stats = table_pointer<double>(table, 0);
  if (!is_finite_f64(stats[0])) return;
  const float gs = static_cast<float>(stats[1]);
  const gptr<float> m = table_pointer<float>(table, kPointerWords);
  const gptr<float> v = table_pointer<float>(table, 2 * kPointerWords);
  for (unsigned c = blockIdx.x; c < chunks; c += gridDim.x) {
    const Chunk ch = chunk_of(table, tensors, c);
    const float lr = ch.t.lr, sh = ch.t.shrink;
    for (unsigned long long i = ch.begin + threadIdx.x; i < ch.end; i += blockDim.x) {
      const unsigned long long k = ch.t.offset + i;
      const float g = ch.t.grad[i] * gs;
      const float mi = beta1 * m[k] + one_minus_beta1 * g;
      const float vi = beta2 * v[k] + one_minus_beta2 * g * g;
      m[k] = mi;
      v[k] = vi;
      const float step = (mi * inv_bias1) / (sqrtf(vi * inv_bias2) + eps);
      ch.t.theta[i] = ch.t.theta[i] * sh - lr * step;
    }
  }
}
