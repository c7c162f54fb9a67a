// Deliberately broken kernels (emulator only, never compiled by nvcc): each must make the
// emulator report a fault naming the kernel, block, thread and what went wrong
// (tests/kernels/emulator_faults.rs). All take 32-bit words in and out, like the conformance kernels.
#include "realm.cuh"

// Launched as 2 blocks of 32 on a 48-element output: thread (16,0,0) of block (1,0,0) writes
// element 48.
REALM_KERNEL(fault_oob_write, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = input[0];
}

// Thread 0 reads element -1 of its input.
REALM_KERNEL(fault_oob_read, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  out[threadIdx.x] = input[static_cast<int>(threadIdx.x) - 1];
}

// No __syncthreads between writing the tile and reading a neighbour's element: thread 0 reads
// element 1 before thread 1 has written it.
REALM_KERNEL(fault_missing_sync, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(unsigned, tile, 64);
  const unsigned t = threadIdx.x;
  tile[t] = input[t];
  out[t] = tile[(t + 1) % blockDim.x];
}

// Only the first 16 threads reach the barrier; thread 16 exits.
REALM_KERNEL(fault_divergent_barrier, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(unsigned, tile, 64);
  const unsigned t = threadIdx.x;
  if (t < 16) {
    tile[t] = input[t];
    __syncthreads();
    out[t] = tile[15 - t];
  }
}

// Odd and even threads wait at different __syncthreads.
REALM_KERNEL(fault_barrier_sites, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = input[threadIdx.x];
}

// Lanes 16-31 exit, the others shuffle with the full mask.
REALM_KERNEL(fault_shfl_exited, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  const unsigned t = threadIdx.x;
  if (lane_id() >= 16) return;
  out[t] = __shfl_xor_sync(REALM_FULL_MASK, input[t], 1);
}

// Lanes 0-15 shuffle among themselves (mask 0xffff) but read lanes 16-31.
REALM_KERNEL(fault_shfl_outside_mask, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  const unsigned t = threadIdx.x;
  if (lane_id() < 16) out[t] = __shfl_sync(0x0000ffffu, input[t], static_cast<int>(lane_id()) + 16);
}

// Even lanes shuffle while odd lanes vote.
REALM_KERNEL(fault_mismatched_collective, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  const unsigned t = threadIdx.x;
  if (t % 2 == 0) {
    out[t] = __shfl_xor_sync(REALM_FULL_MASK, input[t], 2);
  } else {
    out[t] = __ballot_sync(REALM_FULL_MASK, 1);
  }
}

// A 32-element shared array written by 64 threads: thread 32 is out of bounds.
REALM_KERNEL(fault_shared_oob, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(float, s, 32);
  const unsigned t = threadIdx.x;
  s[t] = static_cast<float>(input[t]);
  __syncthreads();
  out[t] = __float_as_uint(s[t % 32]);
}

// A cp.async destination read after the barrier but without cp_async_wait.
REALM_KERNEL(fault_cp_async_no_wait, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(unsigned, tile, 256);
  const unsigned t = threadIdx.x;
  cp_async_16(tile + t * 4, input + t * 4);
  cp_async_commit();
  __syncthreads();
  out[t] = tile[t * 4];
}
