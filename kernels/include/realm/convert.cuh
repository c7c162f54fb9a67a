// Loads and stores of the element types our kernels accept, computing in f32.
#pragma once

REALM_DEVICE float to_f32(float v) { return v; }
REALM_DEVICE float to_f32(__half v) { return __half2float(v); }
REALM_DEVICE float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
REALM_DEVICE T from_f32(float v);
template <>
REALM_DEVICE float from_f32<float>(float v) {
  return v;
}
template <>
REALM_DEVICE __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}
template <>
REALM_DEVICE __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
