// Fibers for the emulator: a stack per emulated thread and a switch between execution contexts.
// On x86-64 the switch is a few instructions (saving the callee-saved registers); elsewhere, or
// with -DREALM_EMU_UCONTEXT, it is ucontext's swapcontext (portable, but a system call per switch).
#pragma once

#include <cstddef>

#if defined(__x86_64__) && !defined(REALM_EMU_UCONTEXT)
#define REALM_EMU_ASM_SWITCH 1
#else
#define REALM_EMU_ASM_SWITCH 0
#include <ucontext.h>
#endif

namespace realm_emu {

// Where a suspended fiber, or the scheduler, resumes.
struct Context {
#if REALM_EMU_ASM_SWITCH
  void* sp;
#else
  ucontext_t uc;
#endif
};

// Makes the first switch to `ctx` run `entry` on the given stack; `entry` must never return.
void context_start(Context& ctx, unsigned char* stack, size_t size, void (*entry)());

#if REALM_EMU_ASM_SWITCH
extern "C" void realm_emu_switch(void** save_sp, void* resume_sp);
// Saves the running context in `from` and resumes `to`.
inline void context_switch(Context& from, Context& to) { realm_emu_switch(&from.sp, to.sp); }
#else
inline void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// Anonymous memory, zero-filled and released with the object.
class Mapping {
 public:
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();
  bool map(size_t bytes);
  unsigned char* data() const { return base_; }

 protected:
  unsigned char* base_ = nullptr;
  size_t bytes_ = 0;
};

// The stacks of a launch's fibers: one mapping, with an inaccessible guard page below each stack
// so that an overflow crashes instead of corrupting the neighbouring fiber.
class Stacks : public Mapping {
 public:
  static constexpr size_t kStack = 128 * 1024;
  static constexpr size_t kGuard = 4096;
  bool allocate(unsigned count);
  unsigned char* stack(unsigned i) const { return base_ + i * (kGuard + kStack) + kGuard; }
};

}  // namespace realm_emu
