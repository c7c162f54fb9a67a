// The portability layer on the host (REALM_EMULATE): the names of realm/device_cuda.cuh, backed by
// the CPU emulator runtime of kernels/emulator/. A launch runs its blocks one after another (or
// several at once, each on its own OS thread: `block_threads`) and the threads of a block as
// cooperatively scheduled fibers; every memory access below is checked.
//
// Differences a kernel author can notice:
//   - sptr<T>::operator[] returns a proxy (it tells reads from writes, to catch reads of shared
//     memory no thread wrote). Write `T v = s[i];` or `static_cast<T>(s[i])`, not `auto v = s[i];`
//     (that keeps the proxy and reads later).
//   - __expf/__logf are the exact expf/logf; mma sums its exact products in f32, in k order
//     (or truncates as tensor cores do: mma_model, docs/emulator.md).
//   - __half and __nv_bfloat16 have no implicit conversions: use the conversion functions.
#pragma once

#include <atomic>
#include <cmath>
#include <compare>
#include <concepts>
#include <cstddef>
#include <cstring>
#include <source_location>
#include <stdint.h>
#include <type_traits>

// The launch configuration, as `EmuLaunch` in src/kernels/abi.rs.
struct RealmEmuLaunch {
  unsigned grid[3];
  unsigned block[3];
  unsigned dyn_smem;
  unsigned block_threads;  // blocks run at once, each on its own OS thread (0 or 1: one by one)
  unsigned mma_model;      // 0: exact products summed in f32; 1: truncating (docs/emulator.md)
  char* err;
  size_t err_len;
};

struct uint3 {
  unsigned x, y, z;
};
// The current fiber's indices: set by the scheduler whenever it switches fibers.
extern thread_local constinit uint3 threadIdx, blockIdx, blockDim, gridDim;

struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__
#define __launch_bounds__(...)
#define REALM_DEVICE inline

namespace realm_emu {

using Loc = std::source_location;

// Per block: at most this much shared memory (static + dynamic), as on sm_80/sm_90.
inline constexpr size_t kSharedLimit = 227 * 1024;
// The shared arena holds the data in [0, kSharedLimit) and one state byte per data byte right
// after it, so the state of any shared address p is at p + kSharedLimit.
enum ShadowState : unsigned char { kUnwritten = 0, kWritten = 1, kInFlight = 2 };

enum class SharedFault { out_of_bounds, misaligned, unwritten, in_flight_read, in_flight_write };

enum class Op : unsigned char {
  shfl_idx,
  shfl_xor,
  shfl_down,
  shfl_up,
  ballot,
  any,
  all,
  ldmatrix,
  mma_f16,
  mma_bf16
};

// ---- the runtime (kernels/emulator/) ----
struct Entry {
  void (*fn)(void*);
  void* arg;
};
int launch(const RealmEmuLaunch* cfg, const char* kernel, unsigned max_threads, Entry body);

[[noreturn]] void global_fault(uintptr_t addr, size_t bytes, size_t align, uintptr_t begin,
                               uintptr_t end);
[[noreturn]] void shared_fault(SharedFault what, uintptr_t addr, size_t bytes, uintptr_t begin,
                               uintptr_t end);
void* static_shared(const void* site, size_t bytes, size_t align);
void* dynamic_shared(size_t* bytes);
void syncthreads(Loc loc);

uint64_t shuffle(Op op, unsigned mask, uint64_t value, unsigned bytes, int b, int width, Loc loc);
unsigned vote(Op op, unsigned mask, bool pred, Loc loc);
void ldmatrix(unsigned count, bool trans, uint32_t* r, uintptr_t row, uintptr_t begin,
              uintptr_t end, Loc loc);
void mma_m16n8k16(Op op, float* d, const uint32_t* a, const uint32_t* b, const float* c, Loc loc);

void cp_async(uintptr_t dst, uintptr_t dst_begin, uintptr_t dst_end, uintptr_t src,
              uintptr_t src_begin, uintptr_t src_end);
void cp_async_commit();
void cp_async_wait(int pending);

// Type-erases a kernel launcher's lambda for launch().
template <typename F>
Entry erase(F& body) {
  return {[](void* p) { (*static_cast<F*>(p))(); }, &body};
}

// ---- bounds-carrying pointers ----
enum class Space { global, shared };

// Address arithmetic in uintptr_t: kernels may form pointers outside their buffer (only
// dereferencing one is a fault), which raw pointer arithmetic would make undefined.
template <typename T, std::integral I>
uintptr_t advance(const T* p, I i) {
  return reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(i) * sizeof(T);
}

inline bool out_of_bounds(uintptr_t a, size_t bytes, uintptr_t begin, uintptr_t end) {
  return a - begin > end - begin || end - a < bytes;
}

template <typename T>
class SRef;

// gptr<T> and sptr<T>: a position and the [begin, end) bounds of the buffer (or shared array) it
// points into. Trivially copyable and exactly three pointers: gptr<T> crosses the C ABI as Rust's
// EmuPtr.
template <typename T, Space S>
struct Ptr {
  T* ptr;
  T* begin;
  T* end;

  // The address of element i, after the checks that do not depend on reading or writing.
  template <std::integral I>
  T* at(I i) const {
    const uintptr_t a = advance(ptr, i);
    const uintptr_t lo = reinterpret_cast<uintptr_t>(begin), hi = reinterpret_cast<uintptr_t>(end);
    if constexpr (S == Space::global) {
      if (out_of_bounds(a, sizeof(T), lo, hi) || a % alignof(T) != 0) [[unlikely]]
        global_fault(a, sizeof(T), alignof(T), lo, hi);
    } else {
      if (out_of_bounds(a, sizeof(T), lo, hi)) [[unlikely]]
        shared_fault(SharedFault::out_of_bounds, a, sizeof(T), lo, hi);
      if (a % alignof(T) != 0) [[unlikely]]
        shared_fault(SharedFault::misaligned, a, sizeof(T), lo, hi);
    }
    return reinterpret_cast<T*>(a);
  }

  template <std::integral I>
  decltype(auto) operator[](I i) const {
    if constexpr (S == Space::global) {
      return *at(i);
    } else {
      return SRef<T>(at(i), begin, end);
    }
  }
  decltype(auto) operator*() const { return (*this)[0]; }
  // Through `->` on shared memory the emulator cannot tell a read from a write: it checks a read.
  T* operator->() const {
    if constexpr (S == Space::shared) static_cast<std::remove_cv_t<T>>((*this)[0]);
    return at(0);
  }

  // sptr<T> -> sptr<const T>, gptr<T> -> gptr<const T>
  operator Ptr<const T, S>() const
    requires(!std::is_const_v<T>)
  {
    return {ptr, begin, end};
  }

  template <std::integral I>
  Ptr operator+(I i) const {
    return {reinterpret_cast<T*>(advance(ptr, i)), begin, end};
  }
  template <std::integral I>
  Ptr operator-(I i) const {
    const uintptr_t a = reinterpret_cast<uintptr_t>(ptr) - static_cast<uintptr_t>(i) * sizeof(T);
    return {reinterpret_cast<T*>(a), begin, end};
  }
  template <std::integral I>
  Ptr& operator+=(I i) {
    return *this = *this + i;
  }
  template <std::integral I>
  Ptr& operator-=(I i) {
    return *this = *this - i;
  }
  Ptr& operator++() { return *this += 1; }
  Ptr& operator--() { return *this -= 1; }
  ptrdiff_t operator-(const Ptr& o) const {
    return (reinterpret_cast<intptr_t>(ptr) - reinterpret_cast<intptr_t>(o.ptr)) /
           static_cast<intptr_t>(sizeof(T));
  }
  bool operator==(const Ptr& o) const { return ptr == o.ptr; }
  auto operator<=>(const Ptr& o) const { return ptr <=> o.ptr; }
};

static_assert(std::is_trivially_copyable_v<Ptr<float, Space::global>> &&
                  std::is_standard_layout_v<Ptr<float, Space::global>> &&
                  sizeof(Ptr<float, Space::global>) == 3 * sizeof(void*),
              "gptr<T> must stay layout-identical to EmuPtr in src/emulator.rs");

template <std::integral I, typename T, Space S>
Ptr<T, S> operator+(I i, Ptr<T, S> p) {
  return p + i;
}

inline unsigned char* shadow_of(const void* p) {
  return const_cast<unsigned char*>(static_cast<const unsigned char*>(p)) + kSharedLimit;
}

// One element of shared memory: converting it to T is a read (every byte must have been written
// since the block started, and no cp.async may still be filling it); assigning is a write.
template <typename T>
class SRef {
  using V = std::remove_cv_t<T>;

 public:
  SRef(T* p, T* begin, T* end) : p_(p), begin_(begin), end_(end) {}
  SRef& operator=(const SRef& o) { return *this = static_cast<V>(o); }

  operator V() const {
    const unsigned char* s = shadow_of(p_);
    for (size_t k = 0; k < sizeof(T); ++k) {
      if (s[k] != kWritten) [[unlikely]]
        fail(s[k] == kUnwritten ? SharedFault::unwritten : SharedFault::in_flight_read);
    }
    V v;
    std::memcpy(&v, p_, sizeof(T));
    return v;
  }

  SRef& operator=(const V& v)
    requires(!std::is_const_v<T>)
  {
    unsigned char* s = shadow_of(p_);
    for (size_t k = 0; k < sizeof(T); ++k) {
      if (s[k] == kInFlight) [[unlikely]]
        fail(SharedFault::in_flight_write);
    }
    std::memset(s, kWritten, sizeof(T));
    std::memcpy(p_, &v, sizeof(T));
    return *this;
  }

  template <typename U>
  SRef& operator+=(const U& v) {
    return *this = static_cast<V>(static_cast<V>(*this) + v);
  }
  template <typename U>
  SRef& operator-=(const U& v) {
    return *this = static_cast<V>(static_cast<V>(*this) - v);
  }
  template <typename U>
  SRef& operator*=(const U& v) {
    return *this = static_cast<V>(static_cast<V>(*this) * v);
  }
  template <typename U>
  SRef& operator|=(const U& v) {
    return *this = static_cast<V>(static_cast<V>(*this) | v);
  }

 private:
  [[noreturn]] void fail(SharedFault what) const {
    shared_fault(what, reinterpret_cast<uintptr_t>(p_), sizeof(T),
                 reinterpret_cast<uintptr_t>(begin_), reinterpret_cast<uintptr_t>(end_));
  }

  T* p_;
  T* begin_;
  T* end_;
};

template <typename T>
Ptr<T, Space::shared> static_shared_array(const void* site, size_t n) {
  constexpr size_t align = alignof(T) > 16 ? alignof(T) : 16;
  T* p = static_cast<T*>(static_shared(site, n * sizeof(T), align));
  return {p, p, reinterpret_cast<T*>(advance(p, n))};
}

template <typename T>
Ptr<T, Space::shared> dynamic_shared_array() {
  size_t bytes = 0;
  T* p = static_cast<T*>(dynamic_shared(&bytes));
  T* end = reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(p) + bytes);
  return {p, p, end};
}

template <typename T>
T shuffle_as(Op op, unsigned mask, T var, int b, int width, Loc loc) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "shuffles move 32- or 64-bit values (read a shared proxy into a T first)");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = shuffle(op, mask, bits, sizeof(T), b, width, loc);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

template <typename T>
concept AtomicAddable = std::same_as<T, float> || std::same_as<T, int> || std::same_as<T, unsigned>;

// Integers wrap as on the GPU.
template <typename T>
T wrapping_add(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<unsigned>(a) + static_cast<unsigned>(b));
  } else {
    return a + b;
  }
}

}  // namespace realm_emu

template <typename T>
using gptr = realm_emu::Ptr<T, realm_emu::Space::global>;
template <typename T>
using sptr = realm_emu::Ptr<T, realm_emu::Space::shared>;

// Reinterprets the pointee type, keeping the buffer's byte bounds.
template <typename U, typename T>
gptr<U> gptr_cast(gptr<T> p) {
  return {reinterpret_cast<U*>(p.ptr), reinterpret_cast<U*>(p.begin), reinterpret_cast<U*>(p.end)};
}
template <typename U, typename T>
sptr<U> sptr_cast(sptr<T> p) {
  return {reinterpret_cast<U*>(p.ptr), reinterpret_cast<U*>(p.begin), reinterpret_cast<U*>(p.end)};
}

// ---- kernels and launchers ----
// Declares the kernel's body, defines its launcher (which takes the family's parameter struct of
// realm_abi.h and runs the grid, calling the body with the struct's fields), then opens the
// body's definition.
#define REALM_KERNEL(name, max_threads, params)                                               \
  static void name##_body params;                                                           \
  extern "C" int realm_emu_launch_##name(const RealmEmuLaunch* realm_cfg,                   \
                                         const realm_abi::name* realm_params) {             \
    const realm_abi::name realm_p = *realm_params;                                          \
    auto realm_body = [&] { name##_body(REALM_ABI_ARGS_##name(realm_p)); };                 \
    return ::realm_emu::launch(realm_cfg, #name, max_threads, ::realm_emu::erase(realm_body)); \
  }                                                                                         \
  static void name##_body params

// A per-block shared array, keyed by its call site (a function-local static's address).
#define REALM_SHARED(T, name, N)  \
  static char name##_site;        \
  sptr<T> name = ::realm_emu::static_shared_array<T>(&name##_site, N)

#define REALM_DYNAMIC_SHARED(T, name) sptr<T> name = ::realm_emu::dynamic_shared_array<T>()

// ---- barriers and warp collectives (the call site is recorded for fault messages) ----
inline void __syncthreads(realm_emu::Loc loc = realm_emu::Loc::current()) {
  realm_emu::syncthreads(loc);
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32,
              realm_emu::Loc loc = realm_emu::Loc::current()) {
  return realm_emu::shuffle_as(realm_emu::Op::shfl_idx, mask, var, src_lane, width, loc);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32,
                  realm_emu::Loc loc = realm_emu::Loc::current()) {
  return realm_emu::shuffle_as(realm_emu::Op::shfl_xor, mask, var, lane_mask, width, loc);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                   realm_emu::Loc loc = realm_emu::Loc::current()) {
  return realm_emu::shuffle_as(realm_emu::Op::shfl_down, mask, var, static_cast<int>(delta), width,
                               loc);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                 realm_emu::Loc loc = realm_emu::Loc::current()) {
  return realm_emu::shuffle_as(realm_emu::Op::shfl_up, mask, var, static_cast<int>(delta), width,
                               loc);
}

inline unsigned __ballot_sync(unsigned mask, int pred,
                              realm_emu::Loc loc = realm_emu::Loc::current()) {
  return realm_emu::vote(realm_emu::Op::ballot, mask, pred != 0, loc);
}
inline int __any_sync(unsigned mask, int pred, realm_emu::Loc loc = realm_emu::Loc::current()) {
  return static_cast<int>(realm_emu::vote(realm_emu::Op::any, mask, pred != 0, loc));
}
inline int __all_sync(unsigned mask, int pred, realm_emu::Loc loc = realm_emu::Loc::current()) {
  return static_cast<int>(realm_emu::vote(realm_emu::Op::all, mask, pred != 0, loc));
}

// ---- atomics ----
// On global memory real atomics (relaxed, as the GPU's), since blocks may run on several OS
// threads at once; on shared memory a plain read-modify-write, as the fibers of a block never run
// at the same time.
template <realm_emu::AtomicAddable T, realm_emu::Space S>
T atomic_add(realm_emu::Ptr<T, S> p, std::type_identity_t<T> v) {
  if constexpr (S == realm_emu::Space::global) {
    // Signed integers wrap in an atomic add, as on the GPU.
    return std::atomic_ref<T>(*p.at(0)).fetch_add(v, std::memory_order_relaxed);
  } else {
    auto&& ref = *p;
    const T old = ref;
    ref = realm_emu::wrapping_add(old, v);
    return old;
  }
}
template <realm_emu::Space S>
int atomic_max(realm_emu::Ptr<int, S> p, int v) {
  if constexpr (S == realm_emu::Space::global) {
    std::atomic_ref<int> ref(*p.at(0));
    int old = ref.load(std::memory_order_relaxed);
    while (old < v && !ref.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
    }
    return old;
  } else {
    auto&& ref = *p;
    const int old = ref;
    ref = old > v ? old : v;
    return old;
  }
}

// ld.global.cg: an atomic load, so that it sees what blocks running on other threads stored.
template <typename T>
std::remove_const_t<T> load_cg(gptr<T> p) {
  using V = std::remove_const_t<T>;
  return std::atomic_ref<V>(*const_cast<V*>(p.at(0))).load(std::memory_order_relaxed);
}

// ---- 16-bit floats: bit-exact round-to-nearest-even conversions ----
struct __half {
  unsigned short __x;
};
struct __nv_bfloat16 {
  unsigned short __x;
};

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline int __float_as_int(float f) { return static_cast<int>(__float_as_uint(f)); }
inline float __int_as_float(int i) { return __uint_as_float(static_cast<unsigned>(i)); }

// NaN becomes the canonical 0x7fff, as the GPU's cvt.rn.f16.f32 and CUDA's host code produce.
inline __half __float2half_rn(float f) {
  const unsigned x = __float_as_uint(f);
  const unsigned sign = (x >> 16) & 0x8000u;
  const unsigned ax = x & 0x7fffffffu;
  unsigned short h;
  if (ax > 0x7f800000u) {
    h = 0x7fff;
  } else if (ax >= 0x477ff000u) {  // >= 65520: rounds to infinity
    h = static_cast<unsigned short>(sign | 0x7c00u);
  } else if (ax >= 0x38800000u) {  // normal in f16: rebias the exponent, round off 13 bits
    const unsigned r = ax - 0x38000000u;
    h = static_cast<unsigned short>(sign | ((r + 0x0fffu + ((r >> 13) & 1u)) >> 13));
  } else if (ax > 0x33000000u) {  // subnormal in f16: units of 2^-24
    const unsigned e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
    const unsigned shift = 126u - e;  // 14..24
    unsigned q = m >> shift;
    const unsigned rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    h = static_cast<unsigned short>(sign | q);
  } else {  // at most half the smallest subnormal: rounds to (signed) zero
    h = static_cast<unsigned short>(sign);
  }
  return __half{h};
}
inline __half __float2half(float f) { return __float2half_rn(f); }

inline float __half2float(__half h) {
  const unsigned sign = static_cast<unsigned>(h.__x & 0x8000u) << 16;
  const unsigned e = (h.__x >> 10) & 0x1fu, m = h.__x & 0x3ffu;
  if (e == 0x1f) {  // infinity, or NaN (quieted, as conversions do)
    return __uint_as_float(sign | 0x7f800000u | (m << 13) | (m != 0 ? 0x400000u : 0u));
  }
  if (e != 0) return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
  // zero or subnormal: m * 2^-24 is exact in f32
  const float v = static_cast<float>(m) * 0x1p-24f;
  return sign ? -v : v;
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  const unsigned x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
  return __nv_bfloat16{static_cast<unsigned short>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 b) {
  return __uint_as_float(static_cast<unsigned>(b.__x) << 16);
}

inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16{u}; }

// ---- math: CUDA's device functions over <cmath> (the fast intrinsics are exact here) ----
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// CUDA's global min/max: mixed signedness converts as C++ arithmetic does (min(int, unsigned) is
// unsigned), floating point follows fminf/fmaxf.
template <typename A, typename B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) {
    return std::fmin(static_cast<C>(a), static_cast<C>(b));
  } else {
    return static_cast<C>(a) < static_cast<C>(b) ? static_cast<C>(a) : static_cast<C>(b);
  }
}
template <typename A, typename B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>) {
    return std::fmax(static_cast<C>(a), static_cast<C>(b));
  } else {
    return static_cast<C>(a) > static_cast<C>(b) ? static_cast<C>(a) : static_cast<C>(b);
  }
}

// ---- cp.async: the copy is taken when issued and lands in shared memory at the
// cp_async_wait that covers its group; reading or writing the destination before then faults ----
template <typename T>
void cp_async_16(sptr<T> dst, std::type_identity_t<gptr<const T>> src) {
  realm_emu::cp_async(reinterpret_cast<uintptr_t>(dst.ptr), reinterpret_cast<uintptr_t>(dst.begin),
           reinterpret_cast<uintptr_t>(dst.end), reinterpret_cast<uintptr_t>(src.ptr),
           reinterpret_cast<uintptr_t>(src.begin), reinterpret_cast<uintptr_t>(src.end));
}
inline void cp_async_commit() { realm_emu::cp_async_commit(); }
template <int N>
void cp_async_wait() {
  realm_emu::cp_async_wait(N);
}

// ---- ldmatrix (warp collective): each lane passes the 16-byte row it supplies ----
#define REALM_EMU_LDMATRIX(fn, count, trans)                                          \
  template <typename T>                                                              \
  void fn(uint32_t* r, sptr<T> row, realm_emu::Loc loc = realm_emu::Loc::current()) { \
    realm_emu::ldmatrix(count, trans, r, reinterpret_cast<uintptr_t>(row.ptr),         \
                        reinterpret_cast<uintptr_t>(row.begin),                        \
                        reinterpret_cast<uintptr_t>(row.end), loc);                    \
  }
REALM_EMU_LDMATRIX(ldmatrix_x1, 1, false)
REALM_EMU_LDMATRIX(ldmatrix_x2, 2, false)
REALM_EMU_LDMATRIX(ldmatrix_x4, 4, false)
REALM_EMU_LDMATRIX(ldmatrix_x1_trans, 1, true)
REALM_EMU_LDMATRIX(ldmatrix_x2_trans, 2, true)
REALM_EMU_LDMATRIX(ldmatrix_x4_trans, 4, true)
#undef REALM_EMU_LDMATRIX

// ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 (warp collective) ----
inline void mma_m16n8k16_f16(float* d, const uint32_t* a, const uint32_t* b, const float* c,
                             realm_emu::Loc loc = realm_emu::Loc::current()) {
  realm_emu::mma_m16n8k16(realm_emu::Op::mma_f16, d, a, b, c, loc);
}
inline void mma_m16n8k16_bf16(float* d, const uint32_t* a, const uint32_t* b, const float* c,
                              realm_emu::Loc loc = realm_emu::Loc::current()) {
  realm_emu::mma_m16n8k16(realm_emu::Op::mma_bf16, d, a, b, c, loc);
}
