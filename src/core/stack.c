/* Task stacks: mmap'd with a guard page, cached per worker with a shared
 * depot between the caches, and the SIGSEGV handler that turns a
 * guard-page hit into a message naming the task instead of silent
 * corruption.
 *
 * A stack is allocated by the spawning worker (so keel_spawn can fail
 * with -ENOMEM instead of a task that never runs) and freed by the worker
 * the task ended on. When tasks are spawned onto another worker, one cache
 * empties while the other fills: the full one moves half of its stacks to
 * the depot, the empty one takes a batch from it, one lock per batch, and
 * no stack is mapped or unmapped in the steady state.
 *
 * When a runtime ends, a few of its stacks are kept for the process's next
 * keel_run (tests, tools and fuzzers run many, and mapping, faulting in
 * and unmapping fresh stacks was most of a short run's cost): SPARE_MAX at
 * most, process-wide, a memory cache like malloc's, holding no loop
 * state. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#if KEEL_VALGRIND
#include <valgrind/valgrind.h>
#endif
#if KEEL_TSAN
void __tsan_destroy_fiber(void *fiber);
#endif
#if KEEL_ASAN
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#define UNPOISON(addr, size) __asan_unpoison_memory_region((addr), (size))
#else
#define UNPOISON(addr, size) ((void)(addr), (void)(size))
#endif

#define STACK_POOL_MAX 1024   /* per worker; then half goes to the depot */
#define DEPOT_BATCH 64        /* taken from the depot at once */
#define DEPOT_PER_WORKER 1024 /* the depot holds up to this times the workers */
#define SPARE_MAX 16          /* stacks kept between runtimes, process-wide */
#define ALTSTACK_SIZE (64 * 1024)
/* A frame larger than this below the guard page is still reported as an
 * overflow (a big local array can jump past the guard). */
#define OVERFLOW_SLACK (256 * 1024)

static size_t page_size(void) {
  static size_t page;
  if (!page)
    page = (size_t)sysconf(_SC_PAGESIZE);
  return page;
}

/* The stacks kept between runtimes (any size a runtime used). */
static pthread_mutex_t spare_lock = PTHREAD_MUTEX_INITIALIZER;
static keel__stack_t *spare;
static _Atomic size_t spare_len; /* read without the lock: whether to take it */

static size_t default_map_size(const keel__worker_t *w) {
  return ((w->rt->cfg.stack_size + page_size() - 1) & ~(page_size() - 1)) + page_size();
}

/* Moves up to n stacks from the depot to w's empty cache. */
static void depot_take(keel__worker_t *w, size_t n) {
  keel_runtime_t *rt = w->rt;
  keel__spin_lock(&rt->depot_lock);
  size_t len = atomic_load_explicit(&rt->depot_len, memory_order_relaxed);
  for (; n > 0 && rt->depot; n--, len--) {
    keel__stack_t *s = rt->depot;
    rt->depot = s->next;
    s->next = w->stack_pool;
    w->stack_pool = s;
    w->stack_pool_len++;
    w->stack_pool_dirty++;
  }
  atomic_store_explicit(&rt->depot_len, len, memory_order_relaxed);
  keel__spin_unlock(&rt->depot_lock);
}

/* Moves half of w's full cache to the depot, as far as it has room. */
static void depot_give(keel__worker_t *w) {
  keel_runtime_t *rt = w->rt;
  size_t max = (size_t)rt->nworkers * DEPOT_PER_WORKER;
  /* Full depot (and so a full cache after this): no lock per freed stack. */
  if (atomic_load_explicit(&rt->depot_len, memory_order_relaxed) >= max)
    return;
  keel__spin_lock(&rt->depot_lock);
  size_t len = atomic_load_explicit(&rt->depot_len, memory_order_relaxed);
  for (size_t n = STACK_POOL_MAX / 2; n > 0 && len < max; n--, len++) {
    keel__stack_t *s = w->stack_pool;
    w->stack_pool = s->next;
    w->stack_pool_len--;
    s->next = rt->depot;
    rt->depot = s;
  }
  atomic_store_explicit(&rt->depot_len, len, memory_order_relaxed);
  keel__spin_unlock(&rt->depot_lock);
}

/* A kept stack of map_size bytes, or NULL. */
static keel__stack_t *spare_take(size_t map_size) {
  if (!atomic_load_explicit(&spare_len, memory_order_relaxed))
    return NULL;
  pthread_mutex_lock(&spare_lock);
  keel__stack_t **p = &spare;
  while (*p && (*p)->map_size != map_size)
    p = &(*p)->next;
  keel__stack_t *s = *p;
  if (s) {
    *p = s->next;
    s->next = NULL;
    atomic_fetch_sub_explicit(&spare_len, 1, memory_order_relaxed);
  }
  pthread_mutex_unlock(&spare_lock);
  return s;
}

static int stack_get(keel__worker_t *w, size_t size, keel__stack_t **out) {
  size_t page = page_size();
  size_t usable = (size + page - 1) & ~(page - 1);
  if (!w->stack_pool && usable + page == default_map_size(w) &&
      atomic_load_explicit(&w->rt->depot_len, memory_order_relaxed) > 0)
    depot_take(w, DEPOT_BATCH);
  if (w->stack_pool && w->stack_pool->map_size == usable + page) {
    keel__stack_t *s = w->stack_pool;
    w->stack_pool = s->next;
    w->stack_pool_len--;
    if (w->stack_pool) /* last written by the worker that freed it, perhaps another */
      __builtin_prefetch(w->stack_pool);
    UNPOISON(s->lo, s->size); /* a finished task's frames left redzones */
    *out = s;
    return 0;
  }
  size_t map_size = usable + page;
  keel__stack_t *kept = spare_take(map_size);
  if (kept) {
    UNPOISON(kept->lo, kept->size);
    *out = kept;
    return 0;
  }
  char *map = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (map == MAP_FAILED)
    return -ENOMEM;
  if (mprotect(map, page, PROT_NONE) != 0) {
    munmap(map, map_size);
    return -ENOMEM;
  }
  /* The descriptor sits at the top of the mapping; the stack grows down
   * from just below it. */
  keel__stack_t *s = (keel__stack_t *)(map + map_size - sizeof(keel__stack_t));
  s = (keel__stack_t *)((uintptr_t)s & ~(uintptr_t)63);
  s->next = NULL;
  s->map = map;
  s->map_size = map_size;
  s->lo = map + page;
  s->size = (size_t)((char *)s - s->lo);
  s->tsan_fiber = NULL;
#if KEEL_VALGRIND
  s->valgrind_id = VALGRIND_STACK_REGISTER(s->lo, s->lo + s->size);
#else
  s->valgrind_id = 0;
#endif
  *out = s;
  return 0;
}

int keel__stack_alloc(keel__worker_t *w, size_t size, keel__stack_t **out) {
  int rc = stack_get(w, size, out);
  if (rc == 0)
    keel__queue_init(&(*out)->open_scopes);
  return rc;
}

static void stack_unmap(keel__stack_t *s) {
#if KEEL_VALGRIND
  VALGRIND_STACK_DEREGISTER(s->valgrind_id);
#endif
  /* ASan's shadow outlives the mapping: whatever is mapped here next
   * would inherit this stack's redzones. */
  UNPOISON(s->lo, s->size);
#if KEEL_TSAN
  if (s->tsan_fiber)
    __tsan_destroy_fiber(s->tsan_fiber);
#endif
  munmap(s->map, s->map_size);
}

/* A stack of a runtime that is ending: kept for the next if there is room,
 * else unmapped. */
static void stack_retire(keel__stack_t *s) {
#if KEEL_TSAN
  /* The next runtime's threads start it with a fresh fiber. */
  if (s->tsan_fiber)
    __tsan_destroy_fiber(s->tsan_fiber);
  s->tsan_fiber = NULL;
#endif
  pthread_mutex_lock(&spare_lock);
  bool keep = atomic_load_explicit(&spare_len, memory_order_relaxed) < SPARE_MAX;
  if (keep) {
    s->next = spare;
    spare = s;
    atomic_fetch_add_explicit(&spare_len, 1, memory_order_relaxed);
  }
  pthread_mutex_unlock(&spare_lock);
  if (!keep)
    stack_unmap(s);
}

void keel__stack_release(keel__worker_t *w, keel__stack_t *s) {
  if (s->map_size != default_map_size(w)) {
    stack_unmap(s);
    return;
  }
  if (w->stack_pool_len >= STACK_POOL_MAX)
    depot_give(w);
  if (w->stack_pool_len >= STACK_POOL_MAX) { /* the depot is full too */
    stack_unmap(s);
    return;
  }
  s->next = w->stack_pool;
  w->stack_pool = s;
  w->stack_pool_len++;
  w->stack_pool_dirty++;
}

bool keel__stack_pool_excess(const keel__worker_t *w) {
  return w->stack_pool_dirty > 0 || w->stack_pool_len > KEEL__STACK_POOL_KEEP ||
         atomic_load_explicit(&w->rt->depot_len, memory_order_relaxed) > 0;
}

/* The pages a burst of tasks touched stay resident in their pooled
 * stacks; an idle worker unmaps all but KEEL__STACK_POOL_KEEP of its own
 * and empties the depot, so that the memory of a burst goes back to the
 * system once it is over. The stacks it keeps give back all but their top
 * page (the descriptor and a task's first frames): only those put on the
 * pool since the last trim, which are on top. */
void keel__stack_pool_trim(keel__worker_t *w) {
  while (w->stack_pool_len > KEEL__STACK_POOL_KEEP) {
    keel__stack_t *s = w->stack_pool;
    w->stack_pool = s->next;
    w->stack_pool_len--;
    stack_unmap(s);
  }
  size_t page = page_size(), n = w->stack_pool_dirty;
  for (keel__stack_t *s = w->stack_pool; s && n > 0; s = s->next, n--) {
    char *top = (char *)((uintptr_t)s & ~(uintptr_t)(page - 1));
    if (top > s->lo)
      madvise(s->lo, (size_t)(top - s->lo), MADV_DONTNEED);
  }
  w->stack_pool_dirty = 0;
  keel_runtime_t *rt = w->rt;
  keel__spin_lock(&rt->depot_lock);
  keel__stack_t *depot = rt->depot;
  rt->depot = NULL;
  atomic_store_explicit(&rt->depot_len, 0, memory_order_relaxed);
  keel__spin_unlock(&rt->depot_lock);
  while (depot) {
    keel__stack_t *s = depot;
    depot = s->next;
    stack_unmap(s);
  }
}

long keel__resident_pages(void *addr, size_t len) {
  size_t page = page_size();
  char *p = addr, *end = p + len;
  unsigned char vec[256];
  long n = 0;
  while (p < end) {
    size_t pages = (size_t)(end - p + page - 1) / page;
    if (pages > sizeof vec)
      pages = sizeof vec;
    if (mincore(p, pages * page, vec) != 0)
      return -1;
    for (size_t i = 0; i < pages; i++)
      n += vec[i] & 1;
    p += pages * page;
  }
  return n;
}

long keel__stack_pool_resident(keel__worker_t *w) {
  size_t page = page_size();
  long n = 0;
  for (keel__stack_t *s = w->stack_pool; s; s = s->next) {
    char *top = (char *)((uintptr_t)s & ~(uintptr_t)(page - 1));
    long r = top > s->lo ? keel__resident_pages(s->lo, (size_t)(top - s->lo)) : 0;
    if (r < 0)
      return -1;
    n += r;
  }
  return n;
}

void keel__stack_pool_destroy(keel__worker_t *w) {
  while (w->stack_pool) {
    keel__stack_t *s = w->stack_pool;
    w->stack_pool = s->next;
    stack_retire(s);
  }
  w->stack_pool_len = 0;
  w->stack_pool_dirty = 0;
}

void keel__stack_depot_destroy(keel_runtime_t *rt) {
  while (rt->depot) {
    keel__stack_t *s = rt->depot;
    rt->depot = s->next;
    stack_retire(s);
  }
  atomic_store(&rt->depot_len, 0);
}

/* ---- Guard-page reporting ------------------------------------------------ */

/* Process-wide signal disposition (not loop state): the handler we replaced,
 * so faults that are not stack overflows go where they went before. */
static struct sigaction prev_segv;

static size_t fmt_append(char *buf, size_t at, size_t cap, const char *s) {
  while (*s && at < cap)
    buf[at++] = *s++;
  return at;
}

static size_t fmt_size(char *buf, size_t at, size_t cap, size_t v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v && n < (int)sizeof tmp);
  while (n > 0 && at < cap)
    buf[at++] = tmp[--n];
  return at;
}

static bool is_overflow(const keel_task_t *t, const char *addr) {
  if (!t || !t->stack)
    return false;
  const char *guard_hi = t->stack->lo;
  return addr < guard_hi && addr + OVERFLOW_SLACK >= t->stack->map;
}

static void segv_handler(int sig, siginfo_t *si, void *uctx) {
  keel__worker_t *w = keel__tls_worker;
  keel_task_t *t = w ? w->current : NULL;
  if (is_overflow(t, (const char *)si->si_addr)) {
    char msg[256];
    size_t n = fmt_append(msg, 0, sizeof msg - 1, "keel: stack overflow in task '");
    n = fmt_append(msg, n, sizeof msg - 1, t->name);
    n = fmt_append(msg, n, sizeof msg - 1, "' (stack size ");
    n = fmt_size(msg, n, sizeof msg - 1, t->stack->size);
    n = fmt_append(msg, n, sizeof msg - 1, " bytes); give it a larger stack_size\n");
    ssize_t rc = write(STDERR_FILENO, msg, n);
    (void)rc;
    signal(SIGSEGV, SIG_DFL); /* returning re-faults and the process dies */
    return;
  }
  if ((prev_segv.sa_flags & SA_SIGINFO) && prev_segv.sa_sigaction) {
    prev_segv.sa_sigaction(sig, si, uctx);
    return;
  }
  if (prev_segv.sa_handler != SIG_IGN && prev_segv.sa_handler != SIG_DFL && prev_segv.sa_handler) {
    prev_segv.sa_handler(sig);
    return;
  }
  signal(SIGSEGV, SIG_DFL);
}

/* Checked on every run: a test harness or the application may have put
 * its own handler in place since the last one. */
void keel__stack_guard_install(void) {
  struct sigaction cur;
  if (sigaction(SIGSEGV, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) &&
      cur.sa_sigaction == segv_handler)
    return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = segv_handler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  struct sigaction prev;
  if (sigaction(SIGSEGV, &sa, &prev) == 0)
    prev_segv = prev;
}

int keel__stack_guard_thread_init(keel__worker_t *w) {
  w->altstack =
      mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (w->altstack == MAP_FAILED) {
    w->altstack = NULL;
    return -ENOMEM;
  }
  stack_t ss = {.ss_sp = w->altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0};
  /* Worker 0 is the application's thread: its own alternate stack, if it
   * had one, comes back when the run ends. */
  if (sigaltstack(&ss, &w->prev_altstack) != 0) {
    munmap(w->altstack, ALTSTACK_SIZE);
    w->altstack = NULL;
    return -errno;
  }
  return 0;
}

void keel__stack_guard_thread_exit(keel__worker_t *w) {
  if (!w->altstack)
    return;
  stack_t off = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
  const stack_t *prev = &w->prev_altstack;
  sigaltstack(prev->ss_flags & SS_DISABLE || !prev->ss_sp ? &off : prev, NULL);
  munmap(w->altstack, ALTSTACK_SIZE);
  w->altstack = NULL;
}
