// The emulator's internal state: one Launch per running kernel launch (on the launching thread),
// its fibers (one per thread of a block) and its warps. Not part of the kernel-facing layer.
#pragma once

#include <utility>
#include <vector>

#include "fiber.hpp"
#include "realm/device_emu.hpp"

namespace realm_emu {

enum class State : unsigned char { ready, barrier, collective, exited };

// A cp.async issued by a thread: its 16 bytes are read at issue and land at the covering wait.
struct AsyncCopy {
  unsigned char* dst;
  unsigned group;
  unsigned char bytes[16];
};

struct Fiber {
  Context ctx;
  uint3 tid;
  unsigned index;  // linear thread index in the block: lane = index % 32, warp = index / 32
  State state;
  Loc site;  // the __syncthreads or warp collective it waits at
  std::vector<AsyncCopy> copies;
  unsigned committed;  // cp.async groups committed so far; new copies join group `committed`
};

// One lane's operands and results in the warp collective in progress.
struct LaneIo {
  uint64_t value;  // shuffle operand
  int b, width;    // shuffle lane / delta / lane mask, and segment width
  bool pred;       // vote operand
  uint32_t in[10];  // mma fragments a[4], b[2], c[4] (c as f32 bits)
  uintptr_t row, row_begin, row_end;  // ldmatrix row address and its shared array
  uint64_t result;  // shuffle or vote result
  uint32_t out[4];  // ldmatrix registers or mma d (f32 bits)
};

// A warp collective some lanes of a warp wait at (a warp may have several, in divergent
// branches).
struct Collective {
  unsigned mask;
  unsigned arrived;
  Op op;
  unsigned tag;  // what else must agree: shuffle operand size, ldmatrix count and .trans
  Loc site;
};

struct Warp {
  unsigned exists;  // the lanes this warp has in the block
  unsigned pending;  // how many of `waits` are in use
  Collective waits[32];
  LaneIo lane[32];
};

struct Launch {
  const char* kernel;
  Entry body;
  unsigned threads;  // per block
  size_t dyn_bytes;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  Stacks stacks;
  Mapping shared;  // data then state bytes, see kSharedLimit
  size_t shared_used;  // bytes of the arena in use: dynamic first, then the static arrays
  std::vector<std::pair<const void*, size_t>> sites;  // static shared array: call site, offset
  std::vector<unsigned> queue;  // ready fibers, a ring of `threads` slots
  unsigned head, queued;
  Context scheduler;
  unsigned at_barrier, barrier_first;
  Loc barrier_site;
  unsigned exited;
  unsigned mma_model;  // RealmEmuLaunch::mma_model
  char* err;
  size_t err_len;
  bool faulted;
};

extern thread_local Launch* tl_launch;
extern thread_local Fiber* tl_fiber;

// Records a fault of thread `who` in the current block (the first fault of a launch wins).
void report(const Fiber& who, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
// Records a fault and abandons the running fiber: the scheduler ends the launch.
[[noreturn]] void fail(const Fiber& who, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
[[noreturn]] void fail_shared(const Fiber& who, SharedFault what, uintptr_t addr, size_t bytes,
                              uintptr_t begin, uintptr_t end);

// Suspends the running fiber `f` in state `s` until another fiber wakes it.
void block_on(Launch& L, Fiber& f, State s, Loc site);
void wake(Launch& L, Fiber& f);

// "__shfl_xor_sync", "ldmatrix.x4.trans", ...
const char* op_name(Op op, unsigned tag);
// "kernels/foo.cu" rather than the absolute path the build used.
const char* short_path(const char* file);
// "3, 16-31": the lanes of a bit set.
void lanes_text(unsigned bits, char* buf, size_t n);

}  // namespace realm_emu
