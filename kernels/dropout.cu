// Dropout of hidden states by a counter-based mask (the model's residual-branch dropout):
//
//   out[i] = x[i] * (draw(i) < threshold ? 0 : scale)
//   draw(i) = word i % 4 of Philox4x32-10, key (key0, key1), counter [i / 4, stream, step0, step1]
//
// The mask `ops::dropout` draws on the CPU (src/ops/dropout/cpu.rs) from the same function, so the
// native CPU, the emulator and a GPU agree bit for bit; the product is taken in f32 and rounded
// to T once, as candle's `x * mask` in T does. The backward is the same op on the gradient. One
// thread per group of four elements, grid-stride over the groups.
#include "realm.cuh"
#include "realm/philox.cuh"

REALM_EXPORT constexpr int kDropoutThreads = 256;

template <typename T>
REALM_DEVICE void dropout_apply(gptr<const T> x, gptr<T> out, unsigned n, unsigned key0,
                                unsigned key1, unsigned stream, unsigned step0, unsigned step1,
                                unsigned threshold, float scale) {
  const unsigned groups = n / 4 + (n % 4 != 0);
  for (unsigned g = blockIdx.x * blockDim.x + threadIdx.x; g < groups;
       g += gridDim.x * blockDim.x) {
    const Philox4 d = philox4x32_10(Philox4{{g, stream, step0, step1}}, key0, key1);
    for (unsigned w = 0; w < 4; ++w) {
      const unsigned i = g * 4 + w;
      if (i < n) out[i] = from_f32<T>(to_f32(x[i]) * (d.v[w] < threshold ? 0.0f : scale));
    }
  }
}

#define REALM_DROPOUT_KERNEL(T, SUFFIX)                                                          \
  REALM_KERNEL(dropout_##SUFFIX, kDropoutThreads,                                                \
               (gptr<const T> x, gptr<T> out, unsigned n, unsigned key0, unsigned key1,           \
                unsigned stream, unsigned step0, unsigned step1, unsigned threshold,              \
                float scale)) {                                                                   \
    dropout_apply<T>(x, out, n, key0, key1, stream, step0, step1, threshold, scale);             \
  }

REALM_DROPOUT_KERNEL(float, f32)
REALM_DROPOUT_KERNEL(__half, f16)
REALM_DROPOUT_KERNEL(__nv_bfloat16, bf16)
