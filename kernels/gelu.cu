// GELU, elementwise, forward and backward, f32 arithmetic whatever the storage type:
//
//   erf form (HF "gelu"):       y = x Φ(x),           dy/dx = Φ(x) + x φ(x)
//   tanh form (HF "gelu_new"):  y = x σ(2u),          u = √(2/π) (x + 0.044715 x³)
//                               dy/dx = σ(2u) + 2 x u' σ(2u) (1 − σ(2u))
//
// Φ is computed as erfc(−x/√2) / 2, exact to a few ulp also in the negative tail where
// (1 + erf) / 2 cancels; 0.5 (1 + tanh u) is σ(2u) = 1 / (1 + e^(−2u)), which does not cancel
// either. One thread per element, a grid-stride loop.
#include "realm.cuh"

// Threads per block of every kernel here (src/ops/nn launches with it).
REALM_EXPORT constexpr int kGeluThreads = 256;

#define REALM_SQRT1_2 0.70710678118654752f
#define REALM_INV_SQRT_2PI 0.39894228040143268f
#define REALM_SQRT_2_PI 0.79788456080286536f
#define REALM_GELU_CUBIC 0.044715f

// Φ(x), the standard normal CDF.
REALM_DEVICE float normal_cdf(float x) { return 0.5f * erfcf(-x * REALM_SQRT1_2); }

// The derivative d/dx (x Φ(x)).
REALM_DEVICE float gelu_erf_slope(float x) {
  return normal_cdf(x) + x * REALM_INV_SQRT_2PI * expf(-0.5f * x * x);
}

// The value and slope of the tanh form: σ(2u) with e = e^(−2u), and σ(1 − σ) = σ (e σ), which is
// 0 where e overflows (σ = 0).
REALM_DEVICE float gelu_tanh(float x) {
  const float u = REALM_SQRT_2_PI * (x + REALM_GELU_CUBIC * x * x * x);
  return x / (1.0f + expf(-2.0f * u));
}

REALM_DEVICE float gelu_tanh_slope(float x) {
  const float u = REALM_SQRT_2_PI * (x + REALM_GELU_CUBIC * x * x * x);
  const float du = REALM_SQRT_2_PI * (1.0f + 3.0f * REALM_GELU_CUBIC * x * x);
  const float e = expf(-2.0f * u);
  const float s = 1.0f / (1.0f + e);
  const float ds = s == 0.0f ? 0.0f : s * (e * s);
  return s + 2.0f * x * du * ds;
}

template <bool TANH, typename T>
REALM_DEVICE void gelu_fwd(gptr<const T> x, gptr<T> y, unsigned long long n) {
  const size_t step = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const float v = to_f32(x[i]);
    y[i] = from_f32<T>(TANH ? gelu_tanh(v) : v * normal_cdf(v));
  }
}

template <bool TANH, typename T>
REALM_DEVICE void gelu_bwd(gptr<const T> x, gptr<const T> dy, gptr<T> dx, unsigned long long n) {
  const size_t step = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const float v = to_f32(x[i]);
    dx[i] = from_f32<T>(to_f32(dy[i]) * (TANH ? gelu_tanh_slope(v) : gelu_erf_slope(v)));
  }
}

#define REALM_GELU_KERNELS(T, SUFFIX, FORM, TANH)                                                 \
  REALM_KERNEL(gelu_fwd_##FORM##_##SUFFIX, kGeluThreads,                                         \
               (gptr<const T> x, gptr<T> y, unsigned long long n)) {                              \
    gelu_fwd<TANH, T>(x, y, n);                                                                   \
  }                                                                                               \
  REALM_KERNEL(gelu_bwd_##FORM##_##SUFFIX, kGeluThreads,                                         \
               (gptr<const T> x, gptr<const T> dy, gptr<T> dx, unsigned long long n)) {           \
    gelu_bwd<TANH, T>(x, dy, dx, n);                                                              \
  }

REALM_GELU_KERNELS(float, f32, erf, false)
REALM_GELU_KERNELS(float, f32, tanh, true)
REALM_GELU_KERNELS(__half, f16, erf, false)
REALM_GELU_KERNELS(__half, f16, tanh, true)
REALM_GELU_KERNELS(__nv_bfloat16, bf16, erf, false)
REALM_GELU_KERNELS(__nv_bfloat16, bf16, tanh, true)
