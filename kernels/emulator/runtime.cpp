// The emulator's launch and scheduler: blocks run one after another on the launching thread (or,
// with `block_threads` > 1, several at once, each worker thread taking the next block of the
// launch's order), the threads of a block as fibers. A fiber runs until it waits (at __syncthreads or a warp
// collective) or exits; the last thread to reach a barrier or a collective releases the others and
// carries on. When no fiber can run and the block is not finished, some thread waits for one that
// will never come: that is reported as a fault, never a hang.
#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "runtime.hpp"

thread_local constinit uint3 threadIdx{}, blockIdx{}, blockDim{}, gridDim{};

namespace realm_emu {

thread_local Launch* tl_launch = nullptr;
thread_local Fiber* tl_fiber = nullptr;

namespace {

void vreport(const Fiber& who, const char* fmt, va_list ap) {
  Launch& L = *tl_launch;
  const bool first = !L.faulted;
  L.faulted = true;
  if (!first || L.err_len == 0) return;
  const int n = snprintf(L.err, L.err_len, "kernel `%s`: block (%u,%u,%u), thread (%u,%u,%u): ",
                         L.kernel, blockIdx.x, blockIdx.y, blockIdx.z, who.tid.x, who.tid.y,
                         who.tid.z);
  if (n >= 0 && static_cast<size_t>(n) < L.err_len) vsnprintf(L.err + n, L.err_len - n, fmt, ap);
}

void launch_error(const RealmEmuLaunch* cfg, const char* kernel, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
void launch_error(const RealmEmuLaunch* cfg, const char* kernel, const char* fmt, ...) {
  if (cfg->err_len == 0) return;
  const int n = snprintf(cfg->err, cfg->err_len, "kernel `%s`: invalid launch: ", kernel);
  if (n < 0 || static_cast<size_t>(n) >= cfg->err_len) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cfg->err + n, cfg->err_len - n, fmt, ap);
  va_end(ap);
}

bool same_site(const Loc& a, const Loc& b) {
  return a.line() == b.line() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

// Every fiber starts here, on its own stack.
void fiber_main() {
  Launch& L = *tl_launch;
  L.body.fn(L.body.arg);
  Fiber& f = *tl_fiber;
  f.state = State::exited;
  ++L.exited;
  context_switch(f.ctx, L.scheduler);
  __builtin_unreachable();  // an exited fiber is never resumed
}

// Nothing can run but the block is not finished: name a thread that waits in vain and why.
void report_deadlock(Launch& L) {
  char lanes[160], why[256];
  for (unsigned wi = 0; wi < L.warps.size(); ++wi) {
    const Warp& w = L.warps[wi];
    if (w.pending == 0) continue;
    const Collective& c = w.waits[0];
    const unsigned missing = c.mask & ~c.arrived;
    const Fiber& absent = L.fibers[wi * 32 + __builtin_ctz(missing)];
    const Fiber& waiter = L.fibers[wi * 32 + __builtin_ctz(c.arrived)];
    if (absent.state == State::exited) {
      snprintf(why, sizeof why, "has exited");
    } else {
      snprintf(why, sizeof why, "waits at %s (%s:%u)",
               absent.state == State::barrier ? "__syncthreads" : "another warp collective",
               short_path(absent.site.file_name()), absent.site.line());
    }
    lanes_text(missing, lanes, sizeof lanes);
    report(waiter,
           "warp collective never completes: warp %u waits at %s (%s:%u) with mask %#010x, but "
           "lane(s) %s never arrive (thread (%u,%u,%u) %s)",
           wi, op_name(c.op, c.tag), short_path(c.site.file_name()), c.site.line(), c.mask, lanes,
           absent.tid.x, absent.tid.y, absent.tid.z, why);
    return;
  }
  // No collective pending, so every live thread waits at the barrier: others have exited.
  for (const Fiber& f : L.fibers) {
    if (f.state == State::exited) {
      report(f,
             "barrier not reached by every thread: this thread exited while %u of the block's %u "
             "threads wait at __syncthreads (%s:%u)",
             L.at_barrier, L.threads, short_path(L.barrier_site.file_name()),
             L.barrier_site.line());
      return;
    }
  }
}

bool run_block(Launch& L) {
  std::memset(L.shared.data() + kSharedLimit, kUnwritten, L.shared_used);
  L.at_barrier = 0;
  L.exited = 0;
  L.head = 0;
  L.queued = 0;
  for (Warp& w : L.warps) w.pending = 0;
  for (Fiber& f : L.fibers) {
    f.copies.clear();
    f.committed = 0;
    context_start(f.ctx, L.stacks.stack(f.index), Stacks::kStack, fiber_main);
    wake(L, f);
  }
  while (L.queued != 0) {
    Fiber& f = L.fibers[L.queue[L.head]];
    L.head = (L.head + 1) % L.threads;
    --L.queued;
    tl_fiber = &f;
    threadIdx = f.tid;
    context_switch(L.scheduler, f.ctx);
    if (L.faulted) return false;
  }
  if (L.exited == L.threads) return true;
  report_deadlock(L);
  return false;
}

}  // namespace

void report(const Fiber& who, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(who, fmt, ap);
  va_end(ap);
}

void fail(const Fiber& who, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(who, fmt, ap);
  va_end(ap);
  context_switch(tl_fiber->ctx, tl_launch->scheduler);
  __builtin_unreachable();  // a faulted launch never resumes its fibers
}

void block_on(Launch& L, Fiber& f, State s, Loc site) {
  f.state = s;
  f.site = site;
  context_switch(f.ctx, L.scheduler);
}

void wake(Launch& L, Fiber& f) {
  f.state = State::ready;
  L.queue[(L.head + L.queued) % L.threads] = f.index;
  ++L.queued;
}

const char* short_path(const char* file) {
  const char* k = std::strstr(file, "kernels/");
  return k != nullptr ? k : file;
}

void lanes_text(unsigned bits, char* buf, size_t n) {
  size_t used = 0;
  buf[0] = 0;
  for (unsigned lane = 0; lane < 32 && used < n; ++lane) {
    if (!(bits >> lane & 1u)) continue;
    unsigned last = lane;
    while (last + 1 < 32 && (bits >> (last + 1) & 1u)) ++last;
    const char* sep = used == 0 ? "" : ", ";
    const int w = last == lane ? snprintf(buf + used, n - used, "%s%u", sep, lane)
                               : snprintf(buf + used, n - used, "%s%u-%u", sep, lane, last);
    if (w < 0) break;
    used += static_cast<size_t>(w);
    lane = last;
  }
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t gcd(uint64_t a, uint64_t b) {
  while (b != 0) {
    const uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// The order blocks run in: block i of the launch is linear block (a i + c) mod n, with a
// coprime to n (a permutation) and a, c drawn from a seed, so that a kernel relying on blocks
// running in index order (or one whose blocks race) shows it. The seed is REALM_EMU_SEED (0 when
// unset) mixed with the calling thread's launch count: the same test runs the same orders.
struct BlockOrder {
  uint64_t n, a, c;
  uint64_t at(uint64_t i) const {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * i + c) % n);
  }
};

BlockOrder block_order(uint64_t n) {
  static const uint64_t base = [] {
    const char* v = std::getenv("REALM_EMU_SEED");
    return v != nullptr ? std::strtoull(v, nullptr, 10) : 0ull;
  }();
  thread_local uint64_t launches = 0;
  uint64_t state = base ^ (0x51ed2701u + launches++ * 0x2545f4914f6cdd1dull);
  uint64_t a = splitmix64(state) % n;
  while (gcd(a, n) != 1) a = (a + 1) % n;  // a = 1 is coprime to every n
  return BlockOrder{n, a, splitmix64(state) % n};
}

namespace {

// A worker's launch state: `threads` fibers, their stacks and the shared memory arena.
bool prepare(Launch& L, const RealmEmuLaunch* cfg, const char* kernel, Entry body,
             unsigned threads, char* err) {
  L.kernel = kernel;
  L.body = body;
  L.threads = threads;
  L.dyn_bytes = cfg->dyn_smem;
  L.mma_model = cfg->mma_model;
  L.shared_used = (L.dyn_bytes + 15) / 16 * 16;
  L.err = err;
  L.err_len = cfg->err_len;
  if (!L.stacks.allocate(L.threads) || !L.shared.map(2 * kSharedLimit)) return false;
  L.fibers.resize(L.threads);
  L.queue.resize(L.threads);
  L.warps.resize((L.threads + 31) / 32);
  for (unsigned i = 0; i < L.threads; ++i) {
    Fiber& f = L.fibers[i];
    f.index = i;
    f.tid = {i % cfg->block[0], i / cfg->block[0] % cfg->block[1],
             i / (cfg->block[0] * cfg->block[1])};
  }
  for (unsigned wi = 0; wi < L.warps.size(); ++wi) {
    const unsigned lanes = L.threads - wi * 32 < 32 ? L.threads - wi * 32 : 32;
    L.warps[wi].exists = lanes == 32 ? ~0u : (1u << lanes) - 1u;
  }
  return true;
}

}  // namespace

int launch(const RealmEmuLaunch* cfg, const char* kernel, unsigned max_threads, Entry body) {
  if (cfg->err_len != 0) cfg->err[0] = 0;
  const unsigned long long threads =
      1ull * cfg->block[0] * cfg->block[1] * cfg->block[2];
  for (int i = 0; i < 3; ++i) {
    if (cfg->grid[i] == 0 || cfg->block[i] == 0) {
      launch_error(cfg, kernel, "grid (%u,%u,%u) and block (%u,%u,%u) must have no zero dimension",
                   cfg->grid[0], cfg->grid[1], cfg->grid[2], cfg->block[0], cfg->block[1],
                   cfg->block[2]);
      return 1;
    }
  }
  if (threads > 1024) {
    launch_error(cfg, kernel, "a block of %llu threads (at most 1024)", threads);
    return 1;
  }
  if (threads > max_threads) {
    launch_error(cfg, kernel, "a block of %llu threads exceeds the kernel's __launch_bounds__(%u)",
                 threads, max_threads);
    return 1;
  }
  if (cfg->block[2] > 64 || cfg->grid[1] > 65535 || cfg->grid[2] > 65535) {
    launch_error(cfg, kernel, "block z (at most 64) or grid y/z (at most 65535) too large");
    return 1;
  }
  if (cfg->dyn_smem > kSharedLimit) {
    launch_error(cfg, kernel, "%u bytes of dynamic shared memory (at most 227 KiB = %zu bytes)",
                 cfg->dyn_smem, kSharedLimit);
    return 1;
  }

  const uint64_t blocks = 1ull * cfg->grid[0] * cfg->grid[1] * cfg->grid[2];
  const unsigned workers = static_cast<unsigned>(
      std::min<uint64_t>(blocks, cfg->block_threads > 1 ? cfg->block_threads : 1));
  const BlockOrder order = block_order(blocks);
  // Each worker has its own fibers, stacks, shared memory and message buffer; they share the
  // next position in `order` and the first fault.
  std::vector<std::unique_ptr<Launch>> launches(workers);
  std::vector<std::vector<char>> messages(workers, std::vector<char>(cfg->err_len + 1));
  for (unsigned w = 0; w < workers; ++w) {
    launches[w] = std::make_unique<Launch>();
    if (!prepare(*launches[w], cfg, kernel, body, static_cast<unsigned>(threads),
                 messages[w].data())) {
      launch_error(cfg, kernel, "cannot map %llu fiber stacks and the shared memory arena",
                   threads);
      return 1;
    }
  }
  std::atomic<uint64_t> next{0};
  std::atomic<int> first_fault{-1};
  auto work = [&](unsigned w) {
    Launch& L = *launches[w];
    tl_launch = &L;
    gridDim = {cfg->grid[0], cfg->grid[1], cfg->grid[2]};
    blockDim = {cfg->block[0], cfg->block[1], cfg->block[2]};
    const uint64_t gx = cfg->grid[0], gxy = gx * cfg->grid[1];
    for (uint64_t i; first_fault.load() < 0 && (i = next.fetch_add(1)) < blocks;) {
      const uint64_t b = order.at(i);
      blockIdx = {static_cast<unsigned>(b % gx), static_cast<unsigned>(b % gxy / gx),
                  static_cast<unsigned>(b / gxy)};
      if (!run_block(L)) {
        int none = -1;
        first_fault.compare_exchange_strong(none, static_cast<int>(w));
        break;
      }
    }
    tl_launch = nullptr;
    tl_fiber = nullptr;
  };
  std::vector<std::thread> others;
  for (unsigned w = 1; w < workers; ++w) others.emplace_back(work, w);
  work(0);
  for (std::thread& t : others) t.join();
  const int faulted = first_fault.load();
  if (faulted < 0) return 0;
  if (cfg->err_len != 0) std::memcpy(cfg->err, messages[faulted].data(), cfg->err_len);
  return 1;
}

// ---- barriers ----

void syncthreads(Loc loc) {
  Launch& L = *tl_launch;
  Fiber& f = *tl_fiber;
  if (L.at_barrier == 0) {
    L.barrier_site = loc;
    L.barrier_first = f.index;
  } else if (!same_site(loc, L.barrier_site)) {
    const Fiber& o = L.fibers[L.barrier_first];
    fail(f,
         "barrier not reached by every thread: this thread waits at __syncthreads (%s:%u) while "
         "thread (%u,%u,%u) waits at a different __syncthreads (%s:%u)",
         short_path(loc.file_name()), loc.line(), o.tid.x, o.tid.y, o.tid.z,
         short_path(L.barrier_site.file_name()), L.barrier_site.line());
  }
  if (++L.at_barrier == L.threads) {
    L.at_barrier = 0;
    for (Fiber& o : L.fibers) {
      if (o.state == State::barrier) wake(L, o);
    }
    return;
  }
  block_on(L, f, State::barrier, loc);
}

// ---- memory faults ----

void global_fault(uintptr_t addr, size_t bytes, size_t align, uintptr_t begin, uintptr_t end) {
  const Fiber& f = *tl_fiber;
  const long long offset = static_cast<long long>(addr - begin);
  const long long elems = static_cast<long long>((end - begin) / bytes);
  if (out_of_bounds(addr, bytes, begin, end)) {
    fail(f,
         "global memory access out of bounds: element %lld (byte offset %lld, %zu-byte elements) "
         "of a buffer of %lld elements at %#lx..%#lx",
         offset / static_cast<long long>(bytes), offset, bytes, elems,
         static_cast<unsigned long>(begin), static_cast<unsigned long>(end));
  }
  if ((addr - begin) % align != 0) {
    fail(f, "misaligned global access: a %zu-byte element at byte offset %lld of its buffer",
         bytes, offset);
  }
  fail(f,
       "the host buffer at %#lx is not %zu-byte aligned, as every GPU allocation is: the kernel "
       "reads %zu-byte elements from it",
       static_cast<unsigned long>(begin), align, bytes);
}

void fail_shared(const Fiber& who, SharedFault what, uintptr_t addr, size_t bytes, uintptr_t begin,
                 uintptr_t end) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(tl_launch->shared.data());
  const long long element = static_cast<long long>(addr - begin) / static_cast<long long>(bytes);
  const long long elems = static_cast<long long>((end - begin) / bytes);
  const unsigned long lo = begin - base, hi = end - base;
  switch (what) {
    case SharedFault::out_of_bounds:
      fail(who,
           "shared memory access out of bounds: element %lld (%zu-byte elements) of a shared array "
           "of %lld elements (shared bytes %lu..%lu)",
           element, bytes, elems, lo, hi);
    case SharedFault::misaligned:
      fail(who, "misaligned shared access: a %zu-byte element at byte %lld of its shared array",
           bytes, static_cast<long long>(addr - begin));
    case SharedFault::unwritten:
      fail(who,
           "read of uninitialised shared memory: element %lld (%zu-byte elements) of a shared array "
           "of %lld elements (shared bytes %lu..%lu) was not written since the block started "
           "(a missing __syncthreads?)",
           element, bytes, elems, lo, hi);
    case SharedFault::in_flight_read:
      fail(who,
           "read of shared memory before the cp.async filling it was waited for (cp_async_wait): "
           "element %lld (%zu-byte elements) of a shared array of %lld elements",
           element, bytes, elems);
    case SharedFault::in_flight_write:
      fail(who,
           "write to shared memory while a cp.async into it is in flight: element %lld "
           "(%zu-byte elements) of a shared array of %lld elements",
           element, bytes, elems);
  }
  __builtin_unreachable();
}

void shared_fault(SharedFault what, uintptr_t addr, size_t bytes, uintptr_t begin, uintptr_t end) {
  fail_shared(*tl_fiber, what, addr, bytes, begin, end);
}

// ---- shared memory ----

void* static_shared(const void* site, size_t bytes, size_t align) {
  Launch& L = *tl_launch;
  for (const auto& [key, offset] : L.sites) {
    if (key == site) return L.shared.data() + offset;
  }
  const size_t offset = (L.shared_used + align - 1) / align * align;
  if (offset + bytes > kSharedLimit) {
    fail(*tl_fiber,
         "shared memory exhausted: a %zu-byte shared array on top of %zu bytes in use (%zu of them "
         "dynamic) exceeds 227 KiB per block",
         bytes, L.shared_used, L.dyn_bytes);
  }
  L.sites.emplace_back(site, offset);
  L.shared_used = offset + bytes;
  return L.shared.data() + offset;
}

void* dynamic_shared(size_t* bytes) {
  *bytes = tl_launch->dyn_bytes;
  return tl_launch->shared.data();
}

// ---- cp.async ----

void cp_async(uintptr_t dst, uintptr_t dst_begin, uintptr_t dst_end, uintptr_t src,
              uintptr_t src_begin, uintptr_t src_end) {
  Fiber& f = *tl_fiber;
  // Alignment of the address itself, as the hardware requires: a view that starts inside a
  // buffer (an offset tensor) is misaligned even at its first element.
  if (out_of_bounds(src, 16, src_begin, src_end) || src % 16 != 0) {
    global_fault(src, 16, 16, src_begin, src_end);
  }
  if (out_of_bounds(dst, 16, dst_begin, dst_end)) {
    shared_fault(SharedFault::out_of_bounds, dst, 16, dst_begin, dst_end);
  }
  if (dst % 16 != 0) shared_fault(SharedFault::misaligned, dst, 16, dst_begin, dst_end);
  unsigned char* state = shadow_of(reinterpret_cast<void*>(dst));
  for (int k = 0; k < 16; ++k) {
    if (state[k] == kInFlight) shared_fault(SharedFault::in_flight_write, dst, 16, dst_begin, dst_end);
  }
  AsyncCopy c{reinterpret_cast<unsigned char*>(dst), f.committed, {}};
  std::memcpy(c.bytes, reinterpret_cast<const void*>(src), 16);
  std::memset(state, kInFlight, 16);
  f.copies.push_back(c);
}

void cp_async_commit() { ++tl_fiber->committed; }

// Lands every copy of the groups committed before the newest `pending` ones.
void cp_async_wait(int pending) {
  Fiber& f = *tl_fiber;
  std::erase_if(f.copies, [&](const AsyncCopy& c) {
    if (c.group + static_cast<unsigned>(pending) >= f.committed) return false;
    std::memcpy(c.dst, c.bytes, 16);
    std::memset(shadow_of(c.dst), kWritten, 16);
    return true;
  });
}

}  // namespace realm_emu
