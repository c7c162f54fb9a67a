// Row groups: the threads that share one row of a row-wise kernel (softmax, LayerNorm). A row
// group is a warp (ROW_THREADS == 32, blockDim.x / 32 rows per block) for short rows, or the
// whole block (ROW_THREADS == 0, one row per block) for long ones.
#pragma once

// Row-group reductions; the block variant needs 32 floats of shared scratch and a uniform call.
template <int ROW_THREADS>
REALM_DEVICE float row_max(float v, sptr<float> scratch) {
  if constexpr (ROW_THREADS == 32) {
    return warp_reduce_max(v);
  } else {
    return block_reduce_max(v, scratch);
  }
}

template <int ROW_THREADS>
REALM_DEVICE float row_sum(float v, sptr<float> scratch) {
  if constexpr (ROW_THREADS == 32) {
    return warp_reduce_sum(v);
  } else {
    return block_reduce_sum(v, scratch);
  }
}

// This thread's row and its rank inside the row group; the row may be past the end (warp variant
// on the last block), in which case the whole warp idles together.
template <int ROW_THREADS>
REALM_DEVICE void row_of_thread(unsigned& row, unsigned& rank, unsigned& stride) {
  if constexpr (ROW_THREADS == 32) {
    row = blockIdx.x * (blockDim.x / 32) + warp_id();
    rank = lane_id();
    stride = 32;
  } else {
    row = blockIdx.x;
    rank = threadIdx.x;
    stride = blockDim.x;
  }
}
