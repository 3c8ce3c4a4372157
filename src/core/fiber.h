/* Internal header: fiber contexts and task stacks (src/core/ctx*.{c,S}, stack.c). */
#ifndef KEEL_FIBER_H
#define KEEL_FIBER_H

#include <stddef.h>

#include "keel-config.h"
#include "keel/core.h"
#include "queue.h"

#if !KEEL_CTX_ASM
#include <ucontext.h>
#endif

typedef struct keel__worker keel__worker_t;

/* ---- Fiber contexts and stacks ----------------------------------------- */

typedef struct keel__ctx {
#if KEEL_CTX_ASM
  void *sp;
#else
  ucontext_t uc;
#endif
} keel__ctx_t;

/* Prepares c to run entry(arg) on [stack_lo, stack_lo + size). */
void keel__ctx_make(keel__ctx_t *c, void *stack_lo, size_t size, void (*entry)(void *), void *arg);
/* Saves the current context in from and resumes to. */
void keel__ctx_switch(keel__ctx_t *from, keel__ctx_t *to);

/* Starts loading the frame a switch to c will pop. A task made ready runs
 * a little later, after the rest of the batch of completions: with
 * thousands of connections its stack has left the cache by then, and the
 * switch would otherwise stall on it. */
static inline void keel__ctx_prefetch(const keel__ctx_t *c) {
#if KEEL_CTX_ASM
  /* The switch frame and the few frames above it (park, wait, the I/O
   * call), which the task touches as soon as it resumes. */
  for (int line = 0; line < 8; line++)
    __builtin_prefetch((const char *)c->sp + 64 * line);
#else
  (void)c;
#endif
}

/* A task stack: one mmap with a PROT_NONE guard page at the low end. The
 * descriptor lives at the top of the mapping itself, so pooling and
 * allocating a stack costs no malloc. */
#define KEEL__SHIELD_MAX 8 /* shields nested in one task */

typedef struct keel__stack {
  struct keel__stack *next; /* pool link */
  char *map;                /* start of the mapping (guard page) */
  size_t map_size;
  char *lo;    /* lowest usable byte (just above the guard page) */
  size_t size; /* usable bytes below the descriptor */
  unsigned valgrind_id;
  /* ThreadSanitizer: the fiber of the tasks that run on this stack, made
   * once and kept with it (making one maps and clears hundreds of KiB). */
  void *tsan_fiber;
  /* The shields of the task running on this stack (keel_shield_begin):
   * each one's deadline and the task's deadline from before it. */
  int64_t shield_deadline[KEEL__SHIELD_MAX];
  int64_t shield_saved_deadline[KEEL__SHIELD_MAX];
  /* The scopes the task running on this stack opened and has not closed
   * (a task parks without its stack only with none). */
  keel__queue_t open_scopes;
} keel__stack_t;

#define KEEL__STACK_MIN (16 * 1024)
#define KEEL__STACK_MAX ((size_t)1 << 30)

int keel__stack_alloc(keel__worker_t *w, size_t size, keel__stack_t **out);
void keel__stack_release(keel__worker_t *w, keel__stack_t *s);
void keel__stack_pool_destroy(keel__worker_t *w);
/* Stacks a worker keeps pooled through an idle spell. */
#define KEEL__STACK_POOL_KEEP 64
/* Whether w pools more than that, or stacks used since its last trim, or
 * the depot holds any. */
bool keel__stack_pool_excess(const keel__worker_t *w);
/* Unmaps w's pooled stacks beyond KEEL__STACK_POOL_KEEP and the depot's,
 * and gives back the pages the kept ones' tasks touched. */
void keel__stack_pool_trim(keel__worker_t *w);
/* For tests: the resident pages of w's pooled stacks below their top
 * page (mincore), or -1. */
long keel__stack_pool_resident(keel__worker_t *w);
/* For tests: the resident pages of [addr, addr + len), addr page-aligned
 * (mincore), or -1. */
long keel__resident_pages(void *addr, size_t len);
/* Unmaps the stacks in the runtime's shared depot (after the workers). */
void keel__stack_depot_destroy(keel_runtime_t *rt);
/* Per-thread SIGSEGV alternate stack, and the process-wide handler that
 * names the task whose guard page was hit. */
int keel__stack_guard_thread_init(keel__worker_t *w);
void keel__stack_guard_thread_exit(keel__worker_t *w);
void keel__stack_guard_install(void);

#endif
