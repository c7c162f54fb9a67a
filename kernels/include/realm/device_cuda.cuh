// The portability layer under nvcc: thin names over CUDA intrinsics and the PTX this project uses.
// The only file (with device_emu.hpp, its host twin) allowed to hold inline PTX.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define REALM_KERNEL(name, max_threads, params, args) \
  extern "C" __global__ void __launch_bounds__(max_threads) name params

#define REALM_DEVICE __device__ __forceinline__

template <typename T>
using gptr = T*;
template <typename T>
using sptr = T*;

template <typename U, typename T>
REALM_DEVICE U* gptr_cast(T* p) {
  return reinterpret_cast<U*>(p);
}
template <typename U, typename T>
REALM_DEVICE U* sptr_cast(T* p) {
  return reinterpret_cast<U*>(p);
}

// 16-byte aligned, as under the emulator: cp.async and ldmatrix need 16-byte aligned rows.
#define REALM_SHARED(T, name, N)                \
  __shared__ __align__(16) T name##_storage[N]; \
  sptr<T> name = name##_storage

#define REALM_DYNAMIC_SHARED(T, name)                              \
  extern __shared__ __align__(16) unsigned char realm_dyn_smem[]; \
  sptr<T> name = reinterpret_cast<T*>(realm_dyn_smem)

REALM_DEVICE float atomic_add(float* p, float v) { return atomicAdd(p, v); }
REALM_DEVICE int atomic_add(int* p, int v) { return atomicAdd(p, v); }
REALM_DEVICE unsigned atomic_add(unsigned* p, unsigned v) { return atomicAdd(p, v); }
REALM_DEVICE int atomic_max(int* p, int v) { return atomicMax(p, v); }

// ---- cp.async (sm_80+): 16-byte global -> shared copies, grouped and awaited ----
template <typename T>
REALM_DEVICE void cp_async_16(T* smem_dst, const T* gmem_src) {
  unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src));
}
REALM_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
REALM_DEVICE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- ldmatrix: 8x8 b16 matrices from shared memory, one 16-byte row address per lane ----
template <typename T>
REALM_DEVICE unsigned smem_addr(const T* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
template <typename T>
REALM_DEVICE void ldmatrix_x1(uint32_t* r, const T* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(smem_addr(row)));
}
template <typename T>
REALM_DEVICE void ldmatrix_x2(uint32_t* r, const T* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row)));
}
template <typename T>
REALM_DEVICE void ldmatrix_x4(uint32_t* r, const T* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}
template <typename T>
REALM_DEVICE void ldmatrix_x1_trans(uint32_t* r, const T* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(smem_addr(row)));
}
template <typename T>
REALM_DEVICE void ldmatrix_x2_trans(uint32_t* r, const T* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_addr(row)));
}
template <typename T>
REALM_DEVICE void ldmatrix_x4_trans(uint32_t* r, const T* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(row)));
}

// ---- mma.sync m16n8k16, f32 accumulators ----
REALM_DEVICE void mma_m16n8k16_f16(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}
REALM_DEVICE void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}
