#include "fiber.hpp"

#include <sys/mman.h>

#include <cstdint>

namespace realm_emu {

#if REALM_EMU_ASM_SWITCH
// realm_emu_switch(save_sp, resume_sp): pushes the System V callee-saved registers and the SSE/x87
// control words, stores rsp in *save_sp, then pops the same frame from resume_sp and returns into
// the resumed context. realm_emu_fiber_start is where a fresh fiber's first switch "returns":
// context_start leaves the entry function in r13.
asm(R"(
  .pushsection .text
  .globl realm_emu_switch
  .hidden realm_emu_switch
  .type realm_emu_switch, @function
realm_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size realm_emu_switch, .-realm_emu_switch

  .globl realm_emu_fiber_start
  .hidden realm_emu_fiber_start
  .type realm_emu_fiber_start, @function
realm_emu_fiber_start:
  callq *%r13
  ud2
  .size realm_emu_fiber_start, .-realm_emu_fiber_start
  .popsection
)");

extern "C" void realm_emu_fiber_start();

void context_start(Context& ctx, unsigned char* stack, size_t size, void (*entry)()) {
  // The frame realm_emu_switch pops, top down: padding that leaves rsp 16-byte aligned at the
  // call in realm_emu_fiber_start, the return address, rbp rbx r12 r13 r14 r15, control words.
  const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t{15};
  uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 10;
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(fpcw));
  frame[0] = mxcsr | static_cast<uint64_t>(fpcw) << 32;
  frame[1] = 0;                                              // r15
  frame[2] = 0;                                              // r14
  frame[3] = reinterpret_cast<uint64_t>(entry);              // r13
  frame[4] = 0;                                              // r12
  frame[5] = 0;                                              // rbx
  frame[6] = 0;                                              // rbp
  frame[7] = reinterpret_cast<uint64_t>(&realm_emu_fiber_start);  // return address
  ctx.sp = frame;
}
#else
void context_start(Context& ctx, unsigned char* stack, size_t size, void (*entry)()) {
  getcontext(&ctx.uc);
  ctx.uc.uc_stack.ss_sp = stack;
  ctx.uc.uc_stack.ss_size = size;
  ctx.uc.uc_link = nullptr;
  makecontext(&ctx.uc, entry, 0);
}
#endif

Mapping::~Mapping() {
  if (base_ != nullptr) munmap(base_, bytes_);
}

bool Mapping::map(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return false;
  base_ = static_cast<unsigned char*>(p);
  bytes_ = bytes;
  return true;
}

bool Stacks::allocate(unsigned count) {
  if (!map(count * (kGuard + kStack))) return false;
  for (unsigned i = 0; i < count; ++i) {
    if (mprotect(stack(i) - kGuard, kGuard, PROT_NONE) != 0) return false;
  }
  return true;
}

}  // namespace realm_emu
