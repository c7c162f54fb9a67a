// Conformance kernels for the portability layer: each exercises a few primitives on inputs whose
// results are exact, so src/conformance.rs can compare them bit for bit with a Rust model of the
// PTX ISA, under the emulator and on a GPU alike. Every kernel takes 32-bit words in and writes
// 32-bit words out (typed views through gptr_cast), so they form one family: one parameter struct
// (kernels::abi::conformance::Conformance), the kernel chosen by its Variant.
#include "realm.cuh"

// 64 threads: every shuffle flavour, with segment widths and out-of-segment sources.
REALM_KERNEL(conformance_shuffle, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  const unsigned t = threadIdx.x, lane = lane_id();
  const int v = static_cast<int>(input[t]);
  gptr<unsigned> o = out + t * 12;
  o[0] = static_cast<unsigned>(__shfl_sync(REALM_FULL_MASK, v, static_cast<int>((lane * 7 + 3) % 32)));
  o[1] = static_cast<unsigned>(__shfl_sync(REALM_FULL_MASK, v, static_cast<int>(lane) + 5, 16));
  o[2] = static_cast<unsigned>(__shfl_sync(REALM_FULL_MASK, v, 37 - static_cast<int>(lane), 8));
  o[3] = static_cast<unsigned>(__shfl_xor_sync(REALM_FULL_MASK, v, 5));
  o[4] = static_cast<unsigned>(__shfl_xor_sync(REALM_FULL_MASK, v, 12, 8));
  o[5] = static_cast<unsigned>(__shfl_down_sync(REALM_FULL_MASK, v, 3));
  o[6] = static_cast<unsigned>(__shfl_down_sync(REALM_FULL_MASK, v, 3, 8));
  o[7] = static_cast<unsigned>(__shfl_up_sync(REALM_FULL_MASK, v, 3));
  o[8] = static_cast<unsigned>(__shfl_up_sync(REALM_FULL_MASK, v, 5, 16));
  o[9] = __float_as_uint(__shfl_xor_sync(REALM_FULL_MASK, static_cast<float>(v) * 0.5f, 9));
  o[10] = __shfl_down_sync(REALM_FULL_MASK, input[t] ^ 0x80000000u, 1);
  unsigned partial = 0xdeadbeefu;
  if (lane < 16) partial = __shfl_xor_sync(0x0000ffffu, input[t] + 1u, 3);
  o[11] = partial;
}

// 64 threads: ballot, any and all, with the full mask and with a partial one.
REALM_KERNEL(conformance_vote, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  const unsigned t = threadIdx.x, lane = lane_id();
  const unsigned x = input[t];
  gptr<unsigned> o = out + t * 6;
  o[0] = __ballot_sync(REALM_FULL_MASK, x % 3 == 0);
  o[1] = static_cast<unsigned>(__any_sync(REALM_FULL_MASK, x == 40));
  o[2] = static_cast<unsigned>(__all_sync(REALM_FULL_MASK, x < 50));
  o[3] = static_cast<unsigned>(__all_sync(REALM_FULL_MASK, x < 1000));
  unsigned partial = 0xdeadbeefu;
  if (lane >= 8 && lane < 24) partial = __ballot_sync(0x00ffff00u, x & 1u);
  o[4] = partial;
  o[5] = static_cast<unsigned>(__any_sync(REALM_FULL_MASK, 0));
}

// 2 blocks of 256: the warp and block reductions of collectives.cuh on small integers (exact in
// any order). Per block: block sum and max, then the 8 warp sums and 8 warp maxima; then every
// thread's copy of the block sum and max.
REALM_KERNEL(conformance_reduce, 256, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(float, scratch, 32);
  const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  const float x = __uint_as_float(input[i]);
  const float ws = warp_reduce_sum(x), wm = warp_reduce_max(x);
  const float bs = block_reduce_sum(x, scratch), bm = block_reduce_max(x, scratch);
  gptr<unsigned> o = out + blockIdx.x * 18;
  if (t == 0) {
    o[0] = __float_as_uint(bs);
    o[1] = __float_as_uint(bm);
  }
  if (lane_id() == 0) {
    o[2 + warp_id()] = __float_as_uint(ws);
    o[10 + warp_id()] = __float_as_uint(wm);
  }
  out[36 + 2 * i] = __float_as_uint(bs);
  out[36 + 2 * i + 1] = __float_as_uint(bm);
}

// 64 blocks of 256, 20 barriers: rounds of exchanging values through a shared tile.
REALM_KERNEL(conformance_barrier, 256, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(unsigned, tile, 256);
  const unsigned t = threadIdx.x;
  unsigned v = input[blockIdx.x * 256 + t];
  for (unsigned round = 0; round < 10; ++round) {
    tile[t] = v;
    __syncthreads();
    v = tile[(t + 1 + round) % 256] * 3u + tile[255 - t];
    __syncthreads();
  }
  out[blockIdx.x * 256 + t] = v;
}

// 3 blocks of 96 with in[0] words of dynamic shared memory next to a static counter: fill,
// reverse, and a shared atomic sum per block.
REALM_KERNEL(conformance_dynamic_smem, 128, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_DYNAMIC_SHARED(unsigned, buf);
  REALM_SHARED(unsigned, total, 1);
  const unsigned n = input[0], t = threadIdx.x;
  if (t == 0) total[0] = 0u;
  for (unsigned i = t; i < n; i += blockDim.x) {
    buf[i] = input[1 + i];
    buf[i] += blockIdx.x;
  }
  __syncthreads();
  gptr<unsigned> o = out + blockIdx.x * (n + 1);
  for (unsigned i = t; i < n; i += blockDim.x) o[i] = buf[n - 1 - i];
  atomic_add(total, static_cast<unsigned>(buf[t]));
  __syncthreads();
  if (t == 0) o[n] = total[0];
}

// 4 blocks of 128 on signed values: global int sum and max, float sum, unsigned tickets (each
// thread gets a distinct one), and per-block shared sum and max.
// out: [0] int sum, [1] int max, [2] float sum, [3] ticket counter, [4..8) shared sums,
// [8..12) shared maxima, [12..524) tickets.
REALM_KERNEL(conformance_atomics, 128, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(int, ssum, 1);
  REALM_SHARED(int, smax, 1);
  const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  const int x = static_cast<int>(input[i]);
  if (t == 0) {
    ssum[0] = 0;
    smax[0] = -2147483647 - 1;
  }
  __syncthreads();
  gptr<int> iout = gptr_cast<int>(out);
  atomic_add(iout, x);
  atomic_max(iout + 1, x);
  atomic_add(gptr_cast<float>(out) + 2, static_cast<float>(x));
  out[12 + i] = atomic_add(out + 3, 1u);
  atomic_add(ssum, x);
  atomic_max(smax, x);
  __syncthreads();
  if (t == 0) {
    iout[4 + blockIdx.x] = ssum[0];
    iout[8 + blockIdx.x] = smax[0];
  }
}

// Two blocks of 64 threads: every thread atomic_max's its input into its block's cell, and after
// the barrier reads the cell back past L1 (load_cg). out: [0, 2) the cells (starting at
// INT_MIN), [2, 130) what each thread read.
REALM_KERNEL(conformance_load_cg, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  gptr<int> cells = gptr_cast<int>(out);
  atomic_max(cells + blockIdx.x, static_cast<int>(input[i]));
  __syncthreads();
  out[2 + i] = static_cast<unsigned>(load_cg(cells + blockIdx.x));
}

// 64 threads, one value each: f32 -> f16 and bf16 (round to nearest even) stored through 16-bit
// views, then read back and widened. out: [0, 32) f16, [32, 64) bf16, [64, 128) f16 -> f32,
// [128, 192) bf16 -> f32.
REALM_KERNEL(conformance_convert, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  const unsigned t = threadIdx.x;
  const float x = __uint_as_float(input[t]);
  gptr<__half> h = gptr_cast<__half>(out);
  gptr<__nv_bfloat16> b = gptr_cast<__nv_bfloat16>(out + 32);
  h[t] = __float2half_rn(x);
  b[t] = __float2bfloat16_rn(x);
  out[64 + t] = __float_as_uint(__half2float(h[t]));
  out[128 + t] = __float_as_uint(__bfloat162float(b[t]));
}

// 64 threads: two groups of 16-byte cp.async copies; the first group is read after
// cp_async_wait<1>, the second after cp_async_wait<0>.
REALM_KERNEL(conformance_cp_async, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(unsigned, tile, 512);
  const unsigned t = threadIdx.x;
  cp_async_16(tile + t * 4, input + t * 4);
  cp_async_commit();
  cp_async_16(tile + 256 + t * 4, input + 256 + t * 4);
  cp_async_commit();
  cp_async_wait<1>();
  __syncthreads();
  out[t] = tile[(t * 5 + 7) % 256];
  cp_async_wait<0>();
  __syncthreads();
  out[64 + t] = tile[256 + (t * 5 + 7) % 256];
}

// One warp: four 8x8 matrices of 16-bit values in shared memory (matrix i at element 64 i),
// loaded by every ldmatrix form. Lane l supplies row (3 (l % 8)) % 8 of matrix l / 8, so the
// rows a matrix is made of are not in memory order. out: 14 words per lane.
REALM_KERNEL(conformance_ldmatrix, 32, (gptr<const unsigned> input, gptr<unsigned> out)) {
  REALM_SHARED(unsigned short, tile, 256);
  const unsigned lane = threadIdx.x;
  gptr<const unsigned short> src = gptr_cast<const unsigned short>(input);
  for (unsigned k = 0; k < 8; ++k) tile[lane * 8 + k] = src[lane * 8 + k];
  __syncthreads();
  sptr<unsigned short> row = tile + 64 * (lane / 8) + 8 * ((lane % 8) * 3 % 8);
  gptr<unsigned> o = out + lane * 14;
  uint32_t r[4];
  ldmatrix_x1(r, row);
  o[0] = r[0];
  ldmatrix_x2(r, row);
  o[1] = r[0];
  o[2] = r[1];
  ldmatrix_x4(r, row);
  for (unsigned i = 0; i < 4; ++i) o[3 + i] = r[i];
  ldmatrix_x1_trans(r, row);
  o[7] = r[0];
  ldmatrix_x2_trans(r, row);
  o[8] = r[0];
  o[9] = r[1];
  ldmatrix_x4_trans(r, row);
  for (unsigned i = 0; i < 4; ++i) o[10 + i] = r[i];
}

REALM_DEVICE uint32_t pack_b16(gptr<const unsigned short> m, unsigned lo, unsigned hi) {
  return static_cast<uint32_t>(m[lo]) | static_cast<uint32_t>(m[hi]) << 16;
}

REALM_DEVICE void store_c_fragment(gptr<unsigned> d_out, const float* d, unsigned g, unsigned t) {
  d_out[g * 8 + t] = __float_as_uint(d[0]);
  d_out[g * 8 + t + 1] = __float_as_uint(d[1]);
  d_out[(g + 8) * 8 + t] = __float_as_uint(d[2]);
  d_out[(g + 8) * 8 + t + 1] = __float_as_uint(d[3]);
}

// One warp: D = A B + C for A 16x16 (row-major), B 16x8 (stored [k][n], row-major), C 16x8 f32,
// with fragments built per the PTX layout from global memory, and again loaded from shared
// memory with ldmatrix (A by .x4, B by .x2.trans). in: A bits (128 words), B bits (64 words),
// C (128 words); out: D from the direct fragments, then D from the ldmatrix ones (row-major).
template <bool BF16>
REALM_DEVICE void mma_case(gptr<const unsigned> input, gptr<unsigned> out) {
  REALM_SHARED(unsigned short, a_s, 256);
  REALM_SHARED(unsigned short, b_s, 128);
  const unsigned lane = threadIdx.x, g = lane / 4, t = 2 * (lane % 4);
  gptr<const unsigned short> a = gptr_cast<const unsigned short>(input);
  gptr<const unsigned short> b = a + 256;
  gptr<const float> c = gptr_cast<const float>(input + 192);
  uint32_t af[4] = {pack_b16(a, g * 16 + t, g * 16 + t + 1),
                    pack_b16(a, (g + 8) * 16 + t, (g + 8) * 16 + t + 1),
                    pack_b16(a, g * 16 + t + 8, g * 16 + t + 9),
                    pack_b16(a, (g + 8) * 16 + t + 8, (g + 8) * 16 + t + 9)};
  uint32_t bf[2] = {pack_b16(b, t * 8 + g, (t + 1) * 8 + g),
                    pack_b16(b, (t + 8) * 8 + g, (t + 9) * 8 + g)};
  const float cf[4] = {c[g * 8 + t], c[g * 8 + t + 1], c[(g + 8) * 8 + t],
                       c[(g + 8) * 8 + t + 1]};
  float d[4];
  if constexpr (BF16) {
    mma_m16n8k16_bf16(d, af, bf, cf);
  } else {
    mma_m16n8k16_f16(d, af, bf, cf);
  }
  store_c_fragment(out, d, g, t);

  for (unsigned k = 0; k < 8; ++k) a_s[lane * 8 + k] = a[lane * 8 + k];
  for (unsigned k = 0; k < 4; ++k) b_s[lane * 4 + k] = b[lane * 4 + k];
  __syncthreads();
  ldmatrix_x4(af, a_s + (lane % 16) * 16 + (lane / 16) * 8);
  ldmatrix_x2_trans(bf, b_s + (lane % 16) * 8);
  if constexpr (BF16) {
    mma_m16n8k16_bf16(d, af, bf, cf);
  } else {
    mma_m16n8k16_f16(d, af, bf, cf);
  }
  store_c_fragment(out + 128, d, g, t);
}

REALM_KERNEL(conformance_mma_f16, 32, (gptr<const unsigned> input, gptr<unsigned> out)) {
  mma_case<false>(input, out);
}
REALM_KERNEL(conformance_mma_bf16, 32, (gptr<const unsigned> input, gptr<unsigned> out)) {
  mma_case<true>(input, out);
}

// Grid (2,3,2) of blocks (8,4,2): every index and dimension, and a shuffle across the rows of a
// 2-d block (warps are formed from the linear thread index). out: 4 words per thread, at
// (linear block * 64 + linear thread) * 4.
REALM_KERNEL(conformance_indices, 64, (gptr<const unsigned> input, gptr<unsigned> out)) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  gptr<unsigned> o = out + (b * 64 + t) * 4;
  o[0] = threadIdx.x | threadIdx.y << 8 | threadIdx.z << 16;
  o[1] = blockIdx.x | blockIdx.y << 8 | blockIdx.z << 16;
  o[2] = blockDim.x | blockDim.y << 8 | blockDim.z << 16 | gridDim.x << 20 | gridDim.y << 24 |
         gridDim.z << 28;
  o[3] = __shfl_xor_sync(REALM_FULL_MASK, t + input[0], 9);
}

// y[i] = fma(alpha, x[i], y[i]) computed in f32 and rounded to T, for i < n (a grid-stride loop):
// FMA's single rounding and the conversions to f16/bf16, on every element type.
template <typename T>
REALM_DEVICE void axpy(gptr<const T> x, gptr<T> y, float alpha, unsigned n) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    y[i] = from_f32<T>(fmaf(alpha, to_f32(x[i]), to_f32(y[i])));
  }
}

#define REALM_CONFORMANCE_AXPY(T, SUFFIX)                                                  \
  REALM_KERNEL(conformance_axpy_##SUFFIX, 256,                                              \
               (gptr<const T> x, gptr<T> y, float alpha, unsigned n)) {                     \
    axpy<T>(x, y, alpha, n);                                                                \
  }

REALM_CONFORMANCE_AXPY(float, f32)
REALM_CONFORMANCE_AXPY(__half, f16)
REALM_CONFORMANCE_AXPY(__nv_bfloat16, bf16)
