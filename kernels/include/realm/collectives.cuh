// Warp and block collectives written once on top of the layer's primitives, so the same code runs
// under nvcc and under the emulator.
#pragma once

#define REALM_FULL_MASK 0xffffffffu
#define REALM_WARP 32

REALM_DEVICE unsigned lane_id() { return threadIdx.x % REALM_WARP; }
REALM_DEVICE unsigned warp_id() { return threadIdx.x / REALM_WARP; }

REALM_DEVICE float warp_reduce_max(float v) {
  for (int offset = REALM_WARP / 2; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(REALM_FULL_MASK, v, offset));
  }
  return v;
}

REALM_DEVICE float warp_reduce_sum(float v) {
  for (int offset = REALM_WARP / 2; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(REALM_FULL_MASK, v, offset);
  }
  return v;
}

// Block-wide reductions for blockDim.x a multiple of 32 (at most 1024 threads). `scratch` holds at
// least 32 floats of shared memory; every thread of the block must call these (they hold barriers),
// and every thread receives the result.
REALM_DEVICE float block_reduce_max(float v, sptr<float> scratch) {
  const unsigned warps = blockDim.x / REALM_WARP;
  v = warp_reduce_max(v);
  if (lane_id() == 0) scratch[warp_id()] = v;
  __syncthreads();
  float r = lane_id() < warps ? static_cast<float>(scratch[lane_id()]) : -INFINITY;
  r = warp_reduce_max(r);
  __syncthreads();  // scratch may be reused by the caller right away
  return r;
}

REALM_DEVICE float block_reduce_sum(float v, sptr<float> scratch) {
  const unsigned warps = blockDim.x / REALM_WARP;
  v = warp_reduce_sum(v);
  if (lane_id() == 0) scratch[warp_id()] = v;
  __syncthreads();
  float r = lane_id() < warps ? static_cast<float>(scratch[lane_id()]) : 0.0f;
  r = warp_reduce_sum(r);
  __syncthreads();
  return r;
}
