// The portability layer every kernel in kernels/*.cu is written against.
//
// Under nvcc (__CUDACC__) the names below map to CUDA intrinsics and inline PTX
// (realm/device_cuda.cuh). With REALM_EMULATE (host C++, feature `emulate`) they map to the CPU
// emulator runtime (realm/device_emu.hpp), which runs the same kernel source block by block with
// the threads of a block as fibers, bounds-checks global memory, tracks uninitialised shared
// memory and reports barriers or warp collectives that not every thread reaches.
//
// The contract, identical on both sides:
//   REALM_KERNEL(name, max_threads, (params...)) { body }
//       an extern "C" kernel with __launch_bounds__(max_threads) whose body sees `params` as
//       named parameters. The kernel itself takes one argument, its family's parameter struct
//       `realm_abi::<name>`, which build.rs generates from this declaration into realm_abi.h
//       together with the Rust mirror (docs/architecture.md). Under the emulator the launcher is
//       `extern "C" int realm_emu_launch_<name>(const RealmEmuLaunch*, const realm_abi::<name>*)`.
//       Parameters are gptr<[const] X> or scalars X (unsigned, int, float, double, __half, ...).
//   REALM_EXPORT constexpr int kName = <integer expression>;
//       (or `template <int P> REALM_EXPORT constexpr int kName = ...;`) a constant the Rust
//       side gets as `NAME` (or `const fn name(p)`) in kernels::abi::<module>.
//   gptr<T>                       global-memory pointer: p[i], p + i, *p, gptr_cast<U>(p)
//   sptr<T>                       shared-memory pointer: the same operations, sptr_cast<U>(p)
//   REALM_SHARED(T, name, N)      a static shared array of N elements, visible as sptr<T> name
//   REALM_DYNAMIC_SHARED(T, name) the launch's dynamic shared memory, as sptr<T> name
//   threadIdx, blockIdx, blockDim, gridDim, __syncthreads()
//   __shfl_sync/__shfl_xor_sync/__shfl_down_sync/__shfl_up_sync (float, int, unsigned),
//   __ballot_sync, __any_sync, __all_sync (the mask must name every lane that executes the call)
//   atomic_add(gptr<float>|gptr<int>|gptr<unsigned>|sptr<...>, v), atomic_max(gptr<int>|sptr<int>, v)
//   load_cg(gptr<T>)              a global load past L1 (ld.global.cg): sees other blocks' atomics
//   __half, __nv_bfloat16, __half2float, __float2half_rn, __bfloat162float, __float2bfloat16_rn
//   __float_as_uint, __uint_as_float, __float_as_int, __int_as_float
//   cp_async_16(sptr<T> dst, gptr<const T> src), cp_async_commit(), cp_async_wait<N>()
//   ldmatrix_x1/x2/x4(uint32_t* r, sptr<T> row), ldmatrix_x1/x2/x4_trans(...)
//       each lane passes the address of the 16-byte row it supplies (PTX ISA ldmatrix layout)
//   mma_m16n8k16_f16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4])
//   mma_m16n8k16_bf16(...)        same, bf16 inputs; fragments as in the PTX ISA (mma.m16n8k16)
#pragma once

#if defined(__CUDACC__)
#include "realm/device_cuda.cuh"
#elif defined(REALM_EMULATE)
#include "realm/device_emu.hpp"
#else
#error "realm.cuh: compile with nvcc, or as host C++ with -DREALM_EMULATE"
#endif

// Marks a constexpr integer that build.rs exports to Rust (see above).
#define REALM_EXPORT

#include "realm_abi.h"
#include "realm/collectives.cuh"
#include "realm/rows.cuh"
#include "realm/convert.cuh"
