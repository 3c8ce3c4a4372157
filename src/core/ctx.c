/* Fiber contexts: stack set-up for the assembly switch, or ucontext. */
#include <stdint.h>
#include <string.h>

#include "internal.h"

#if KEEL_CTX_ASM

void keel__ctx_trampoline(void);

#if defined(__x86_64__)
/* Frame popped by keel__ctx_switch, from the saved sp upwards:
 * [mxcsr|fpucw] r15 r14 r13 r12 rbx rbp ret. After `ret` into the
 * trampoline rsp is 16-byte aligned, so its `call` enters the entry
 * function with the alignment the ABI expects. */
void keel__ctx_make(keel__ctx_t *c, void *stack_lo, size_t size, void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)stack_lo + size) & ~(uintptr_t)15;
  uint64_t *sp = (uint64_t *)(top - 80);
  uint32_t csr[2] = {0x1F80, 0x037F}; /* default MXCSR and x87 control word */
  memcpy(&sp[0], csr, sizeof csr);
  sp[1] = 0;                          /* r15 */
  sp[2] = 0;                          /* r14 */
  sp[3] = (uint64_t)(uintptr_t)arg;   /* r13 */
  sp[4] = (uint64_t)(uintptr_t)entry; /* r12 */
  sp[5] = 0;                          /* rbx */
  sp[6] = 0;                          /* rbp: ends frame-pointer walks */
  sp[7] = (uint64_t)(uintptr_t)keel__ctx_trampoline;
  sp[8] = 0;
  sp[9] = 0;
  c->sp = sp;
}
#elif defined(__aarch64__)
/* Frame popped by keel__ctx_switch: x19..x30, d8..d15, then FPCR at offset
 * 160 (zero: round to nearest, the default) in 176 bytes. */
void keel__ctx_make(keel__ctx_t *c, void *stack_lo, size_t size, void (*entry)(void *), void *arg) {
  uintptr_t top = ((uintptr_t)stack_lo + size) & ~(uintptr_t)15;
  uint64_t *sp = (uint64_t *)(top - 176 - 16);
  memset(sp, 0, 176 + 16);
  sp[0] = (uint64_t)(uintptr_t)entry;                 /* x19 */
  sp[1] = (uint64_t)(uintptr_t)arg;                   /* x20 */
  sp[11] = (uint64_t)(uintptr_t)keel__ctx_trampoline; /* x30 (lr) */
  c->sp = sp;
}
#else
#error "no assembly context switch for this CPU; configure with -Dcontext=ucontext"
#endif

#else /* ucontext fallback */

/* makecontext passes int arguments only: split the pointers. */
static void ctx_entry(unsigned fn_hi, unsigned fn_lo, unsigned arg_hi, unsigned arg_lo) {
  void (*entry)(void *) = (void (*)(void *))(((uintptr_t)fn_hi << 32) | fn_lo);
  void *arg = (void *)(((uintptr_t)arg_hi << 32) | arg_lo);
  entry(arg);
  __builtin_trap();
}

void keel__ctx_make(keel__ctx_t *c, void *stack_lo, size_t size, void (*entry)(void *), void *arg) {
  uintptr_t f = (uintptr_t)entry, a = (uintptr_t)arg;
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = stack_lo;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = NULL;
  makecontext(&c->uc, (void (*)(void))ctx_entry, 4, (unsigned)(f >> 32), (unsigned)f,
              (unsigned)(a >> 32), (unsigned)a);
}

void keel__ctx_switch(keel__ctx_t *from, keel__ctx_t *to) { swapcontext(&from->uc, &to->uc); }

#endif
