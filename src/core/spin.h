/* Internal header: a spinlock for short critical sections. */
#ifndef KEEL_SPIN_H
#define KEEL_SPIN_H

#include <stdatomic.h>
#include <stdbool.h>

/* ---- Spinlock (short critical sections only) ------------------------------ */

typedef struct keel__spinlock {
  atomic_flag flag;
} keel__spinlock_t;

static inline void keel__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}
static inline void keel__spin_lock(keel__spinlock_t *l) {
  while (atomic_flag_test_and_set_explicit(&l->flag, memory_order_acquire))
    keel__cpu_relax();
}
/* True if it took the lock; false, at once, if another holds it. */
static inline bool keel__spin_trylock(keel__spinlock_t *l) {
  return !atomic_flag_test_and_set_explicit(&l->flag, memory_order_acquire);
}
static inline void keel__spin_unlock(keel__spinlock_t *l) {
  atomic_flag_clear_explicit(&l->flag, memory_order_release);
}

#endif
