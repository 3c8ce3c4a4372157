/* Internal header: kernel structures shared by src/core and src/net. */
#ifndef KEEL_INTERNAL_H
#define KEEL_INTERNAL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "keel-config.h"
#include "keel/core.h"
#include "timer-internal.h"

#if !KEEL_CTX_ASM
#include <ucontext.h>
#endif

#define keel__container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define KEEL__LIKELY(x) __builtin_expect(!!(x), 1)
#define KEEL__UNLIKELY(x) __builtin_expect(!!(x), 0)

typedef struct keel__worker keel__worker_t;

/* ---- Intrusive circular queue (libuv style) ---------------------------- */

typedef struct keel__queue {
  struct keel__queue *next, *prev;
} keel__queue_t;

static inline void keel__queue_init(keel__queue_t *q) { q->next = q->prev = q; }
static inline bool keel__queue_empty(const keel__queue_t *q) { return q->next == q; }
static inline void keel__queue_insert_tail(keel__queue_t *h, keel__queue_t *q) {
  q->next = h;
  q->prev = h->prev;
  q->prev->next = q;
  h->prev = q;
}
static inline void keel__queue_remove(keel__queue_t *q) {
  q->prev->next = q->next;
  q->next->prev = q->prev;
  q->next = q->prev = q;
}

/* ---- Spinlock for scope bookkeeping (short critical sections only) ------ */

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
static inline void keel__spin_unlock(keel__spinlock_t *l) {
  atomic_flag_clear_explicit(&l->flag, memory_order_release);
}

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
} keel__stack_t;

#define KEEL__STACK_MIN (16 * 1024)
#define KEEL__STACK_MAX ((size_t)1 << 30)

int keel__stack_alloc(keel__worker_t *w, size_t size, keel__stack_t **out);
void keel__stack_release(keel__worker_t *w, keel__stack_t *s);
void keel__stack_pool_destroy(keel__worker_t *w);
/* Unmaps the stacks in the runtime's shared depot (after the workers). */
void keel__stack_depot_destroy(keel_runtime_t *rt);
/* Per-thread SIGSEGV alternate stack, and the process-wide handler that
 * names the task whose guard page was hit. */
int keel__stack_guard_thread_init(keel__worker_t *w);
void keel__stack_guard_thread_exit(keel__worker_t *w);
void keel__stack_guard_install(void);

/* ---- Cross-worker messages (lock-free MPSC) ----------------------------- */

typedef struct keel__msg keel__msg_t;
typedef void (*keel__msg_fn)(keel__worker_t *w, keel__msg_t *m);
struct keel__msg {
  keel__msg_t *next;
  keel__msg_fn fn;
};

/* Posts m to worker w's inbox and wakes w if it sleeps. Any thread. */
void keel__worker_post(keel__worker_t *w, keel__msg_t *m);

/* ---- Waits: the one way a task blocks ----------------------------------- */

typedef struct keel__wait keel__wait_t;
/* Called once, on the owning worker, when cancellation or a deadline hits a
 * blocked task (err is -ECANCELED or -ETIMEDOUT). It must arrange for
 * keel__wait_complete to be called: at once (nothing in flight) or later
 * (an io_uring op is being cancelled and its CQE is awaited). */
typedef void (*keel__wait_abort_fn)(keel__wait_t *w, int err);

struct keel__wait {
  keel_task_t *task;
  keel__queue_t node; /* in a list of waiters (descriptor, accept queue) */
  keel__timer_t timer;
  keel__wait_abort_fn abort; /* NULL: complete with err at once */
  int64_t until_ns;          /* the operation's own end (sleep), or NONE */
  int until_result;          /* result when until_ns is reached first */
  int64_t deadline_ns;       /* effective deadline when the wait began */
  int interrupted;           /* err passed to abort, 0 if none */
  void *data;                /* for the abort hook */
  ssize_t result;
  unsigned cqe_flags; /* io_uring: the completion's flags */
  bool done;
  bool shielded; /* set by keel__wait_nocancel: only completion ends it */
};

/* 0 if the current task may block, else -ECANCELED / -ETIMEDOUT. Call it
 * before starting an operation, so a cancelled task starts nothing. */
int keel__check_cancel(void);

/* Initialises w for the current task. */
void keel__wait_init(keel__wait_t *w, keel__wait_abort_fn abort);
/* Parks the current task until w completes; arms a timer for the nearest of
 * the task's effective deadline and until_ns. Returns w->result. The caller
 * has checked keel__check_cancel first. */
ssize_t keel__wait_block(keel__wait_t *w, int64_t until_ns, int until_result);
/* keel__wait_block in two halves, for a task that does not stay on its
 * stack while it waits: arm (timer, cancellation check; the task is
 * BLOCKED unless w already ended), and finish once w has ended. */
void keel__wait_arm(keel__wait_t *w, int64_t until_ns, int until_result);
ssize_t keel__wait_finish(keel__wait_t *w);
/* Completes w with result (owning worker only); readies its task. */
void keel__wait_complete(keel__wait_t *w, ssize_t result);
/* Interrupts w with err (-ECANCELED/-ETIMEDOUT) through its abort hook. */
void keel__wait_interrupt(keel__wait_t *w, int err);
/* Abort hook for a wait queued on a waiter list: leaves the list and
 * completes with err. */
void keel__wait_abort_dequeue(keel__wait_t *w, int err);
/* Completes every wait on the list (in order) with result. */
void keel__waiters_wake_all(keel__queue_t *list, ssize_t result);
/* Completes the first wait on the list; false if the list is empty. */
bool keel__waiters_wake_one(keel__queue_t *list, ssize_t result);

/* ---- Waits another thread may end ------------------------------------------ */

/* A wait that a task on another worker, or any thread (a blocking-pool
 * thread), may complete: the wait plus the message that carries the result
 * to the owning worker. Exactly one of the two sides wins it:
 *   - a waker claims it (PARKED -> CLAIMED) and the task gets the result;
 *   - the owner's abort hook (cancellation, deadline) takes it
 *     (PARKED -> ABORTED) and the task gets -ECANCELED / -ETIMEDOUT at once.
 * Once claimed, a wait can no longer be interrupted: the result is on its
 * way, so no wake-up is lost. A waker that loses (ABORTED) passes its
 * wake-up on (to the next waiter), or disposes of its result itself.
 *
 * For waiter lists shared between workers, `lock` guards the list the
 * wait's node is on: claiming and aborting both happen under it, so a
 * claimed wait has always left the list and an aborted one leaves it. */
enum { KEEL__XWAIT_PARKED, KEEL__XWAIT_CLAIMED, KEEL__XWAIT_ABORTED };

typedef struct keel__xwait {
  keel__wait_t wait;
  keel__msg_t msg;
  keel__worker_t *worker;
  keel__spinlock_t *lock; /* guards the list wait.node is on; NULL: no list */
  _Atomic int state;
  ssize_t xresult;
} keel__xwait_t;

/* Initialises xw for the current task. lock may be NULL (no waiter list). */
void keel__xwait_init(keel__xwait_t *xw, keel__spinlock_t *lock);
/* Parks until claimed and delivered, or interrupted by cancellation or a
 * deadline (use keel_task_set_deadline for a timed wait). The caller has
 * checked keel__check_cancel first. Returns the result. */
ssize_t keel__xwait_block(keel__xwait_t *xw);
/* Claims xw (PARKED -> CLAIMED); false if it was aborted. Caller holds
 * xw->lock if there is one; a claimed wait must then be removed from its
 * list by the caller (keel__xwait_pop does both) and delivered. */
bool keel__xwait_claim(keel__xwait_t *xw);
/* Delivers result to a claimed xw: at once on its own worker, else by a
 * message to it. Any thread; xw must not be touched afterwards. */
void keel__xwait_deliver(keel__xwait_t *xw, ssize_t result);
/* Under the list's lock: removes and claims the first wait on the list
 * that can still be claimed (skipping none: aborted waits have already
 * left it). Returns NULL if the list is empty. Deliver it afterwards,
 * inside or outside the lock. */
keel__xwait_t *keel__xwait_pop(keel__queue_t *list);
/* Under the list's lock: pops and claims up to max waits (SIZE_MAX: all)
 * onto claimed, in order, for keel__xwait_deliver_claimed once the lock is
 * dropped. Returns how many. */
size_t keel__xwait_claim_n(keel__queue_t *list, size_t max, keel__queue_t *claimed);
/* Delivers to every wait on claimed its xresult (0 unless the claimer set
 * it), emptying the list. Each task may return, and its wait vanish with
 * its stack, as soon as it is delivered: its node leaves the list first. */
void keel__xwait_deliver_claimed(keel__queue_t *claimed);

/* ---- Tasks --------------------------------------------------------------- */

enum keel__task_state {
  KEEL__TASK_NEW,
  KEEL__TASK_READY,
  KEEL__TASK_RUNNING,
  KEEL__TASK_BLOCKED,
  KEEL__TASK_DONE,
};

#define KEEL__SHIELD_MAX 8
#define KEEL__NAME_MAX 32

struct keel_task {
  keel__ctx_t ctx;
  keel__worker_t *worker;
  keel_scope_t *scope;
  keel__queue_t scope_node; /* scope->tasks, under the scope lock */
  keel__queue_t ready_node; /* worker ready queues */
  keel__stack_t *stack;
  size_t stack_size;
  keel_task_fn fn;
  void *arg;
  atomic_int refs; /* running + handle + pending interrupt message */
  int state;
  keel__wait_t *wait;  /* when BLOCKED */
  int64_t deadline_ns; /* per task; inside a shield, set within the shield */
  int shield_depth;
  int64_t shield_deadline[KEEL__SHIELD_MAX];
  int64_t shield_saved_deadline[KEEL__SHIELD_MAX]; /* deadline_ns before each shield */
  keel_outcome_t outcome;
  keel__queue_t open_scopes; /* scopes this task opened and has not closed */
  keel__msg_t start_msg;     /* spawn onto another worker */
  keel__msg_t interrupt_msg; /* cross-worker cancellation */
  atomic_bool interrupt_pending;
  void *asan_fake_stack;
  void *tsan_fiber;
  bool has_handle;
  bool shedding; /* giving its stack back: parked until restart_wait ends */
  /* keel__task_restart_after: what runs on a fresh stack when the wait ends */
  keel__wait_t *restart_wait;
  int (*restart_hook)(keel__wait_t *w, void *hook_arg);
  void *restart_hook_arg;
  uint64_t lab_id; /* lab mode: spawn order, for the trace */
  char name[KEEL__NAME_MAX];
};

/* The current task gives its stack back to the worker's pool and stays
 * parked, stackless, until w (armed by the caller with keel__wait_arm)
 * ends; then, on a fresh stack, hook(w, hook_arg) finishes the operation
 * and the task goes on in fn(arg) as if newly spawned (same scope, name,
 * handle, per-task deadline). Never returns. */
_Noreturn void keel__task_restart_after(keel__wait_t *w, int (*hook)(keel__wait_t *, void *),
                                        void *hook_arg, keel_task_fn fn, void *arg);

/* Makes t runnable on its worker (owning worker only). */
void keel__task_ready(keel_task_t *t);
/* Cancellation reached t's scope: wake it if blocked (any thread). */
void keel__task_interrupt(keel_task_t *t);
void keel__task_unref(keel_task_t *t);
/* The error a blocking point in t returns now (0, -ECANCELED, -ETIMEDOUT)
 * and the reason behind it. */
int keel__task_cancel_err(keel_task_t *t, keel_cancel_reason_t *reason);
int64_t keel__task_deadline(keel_task_t *t);

/* ---- Scopes ---------------------------------------------------------------- */

struct keel_scope {
  keel_scope_t *parent;
  keel__queue_t child_node; /* parent->children, under the parent's lock */
  keel__queue_t children;
  keel__queue_t tasks;       /* live tasks */
  keel__queue_t finished;    /* finished tasks that have handles */
  keel__queue_t opener_node; /* opener task's open_scopes */
  keel_task_t *opener;
  keel__spinlock_t lock;
  size_t live; /* live tasks + nested scopes, under lock */
  /* The reason the scope was cancelled (KEEL_CANCEL_PARENT: an enclosing
   * scope was); a scope whose ancestor is cancelled counts as cancelled
   * even before the mark reaches it (keel__scope_cancelled). */
  _Atomic int cancel_reason;
  _Atomic int64_t deadline_ns;
  unsigned flags;
  bool is_root;
  /* Under lock. Set in the same critical section that sees the last unit
   * finish with the opener joining (or finds none left), so no task can
   * slip in between; cleared when the opener spawns into it again. */
  bool joined;
  int first_error;         /* of the first child that failed, under lock */
  int first_cancel;        /* -ECANCELED/-ETIMEDOUT of the first child cut short */
  keel__wait_t *join_wait; /* the opener parked in join, under lock */
  keel__wait_t *join_wake; /* the joiner join_msg wakes */
  keel__msg_t join_msg;    /* wakes a joiner on another worker */
  keel_runtime_t *rt;
  char name[KEEL__NAME_MAX];
};

/* Puts t in s for a spawn by the current task: -ECANCELED if s (or a scope
 * it is nested in) is cancelled, -EPIPE if s was joined and the caller is
 * not its opener. */
int keel__scope_add_task(keel_scope_t *s, keel_task_t *t);
/* The reason s counts as cancelled: its own mark, KEEL_CANCEL_PARENT when
 * only an enclosing scope (up to a shield) is cancelled, or NONE. */
keel_cancel_reason_t keel__scope_cancelled(const keel_scope_t *s);
/* Where the cancellation s is under began: the first reason up the chain
 * that is not KEEL_CANCEL_PARENT (PARENT if there is none), or NONE. */
keel_cancel_reason_t keel__scope_cancel_origin(const keel_scope_t *s);
void keel__scope_task_done(keel_scope_t *s, keel_task_t *t);
keel_scope_t *keel__scope_new_root(keel_runtime_t *rt);
void keel__scope_free(keel_scope_t *s);
void keel__scope_dump(keel_scope_t *s, int depth);

/* ---- Backends -------------------------------------------------------------- */

/* io_uring multishot accept: the kernel keeps accepting and keel queues
 * the descriptors until a task asks for them. Listeners only. */
#define KEEL__ACCEPTQ_MIN 64
typedef struct keel__acceptq {
  int fd;                   /* the listening socket */
  bool armed;               /* a multishot accept is in flight */
  bool closing;             /* listener closing: accepted fds are closed */
  int err;                  /* an error to hand to the next accept (e.g. -EMFILE) */
  keel__queue_t waiters;    /* tasks waiting in accept, first come first served */
  keel__wait_t *close_wait; /* the closer waiting for the final CQE */
  unsigned head, tail;      /* free-running; cap is a power of two */
  unsigned cap;
  int *fds;
} keel__acceptq_t;

/* Per-descriptor state shared by TCP and the backends. */
typedef struct keel__io {
  int fd;
  keel__worker_t *worker;
  bool registered;          /* epoll: added to the interest list */
  bool rd_ready, wr_ready;  /* epoll: may read/write without waiting for an edge */
  bool rd_hup, wr_hup;      /* epoll: hang-up or error seen: calls never wait again */
  keel__queue_t rd_waiters; /* epoll: tasks waiting for readability */
  keel__queue_t wr_waiters; /* epoll: tasks waiting for writability */
  bool rd_drained;          /* io_uring: the last recv left nothing queued */
  unsigned short uses;      /* io_uring: operations so far, until registered */
  int slot;                 /* io_uring: registered file index, or -1 */
  unsigned inflight;        /* io_uring: operations submitted, not yet retired */
  keel__wait_t *close_wait; /* io_uring: the closer waiting for them */
  keel__acceptq_t *acceptq;
} keel__io_t;

typedef struct keel__backend_ops {
  const char *name;
  int (*init)(keel__worker_t *w);
  void (*destroy)(keel__worker_t *w);
  /* Waits up to timeout_ns (< 0: no limit, 0: do not block) and handles a
   * bounded batch of completions. */
  void (*poll)(keel__worker_t *w, int64_t timeout_ns);
  /* Wakes w's poll from another thread. */
  void (*wake)(keel__worker_t *w);
  /* Task-side I/O. Each blocks the calling task and returns a count, a fd or
   * a negative errno, honouring cancellation and deadlines. */
  ssize_t (*recv)(keel__io_t *io, void *buf, size_t len);
  ssize_t (*readv)(keel__io_t *io, const struct iovec *iov, int iovcnt);
  ssize_t (*send)(keel__io_t *io, const void *buf, size_t len);
  ssize_t (*writev)(keel__io_t *io, const struct iovec *iov, int iovcnt);
  int (*accept)(keel__io_t *io);
  int (*connect)(keel__io_t *io, const struct sockaddr *sa, socklen_t len);
  /* Readiness without a buffer: arm_readable initialises w for the current
   * task and starts waiting for a read that would not park (bytes, end of
   * stream or an error), without parking (w may end at once); after w has
   * ended, readable_done retires it and returns 0 or a negative errno. */
  void (*arm_readable)(keel__io_t *io, keel__wait_t *w);
  int (*readable_done)(keel__io_t *io, keel__wait_t *w);
  /* Releases backend state of io before its fd is closed. */
  void (*io_close)(keel__io_t *io);
} keel__backend_ops_t;

extern const keel__backend_ops_t keel__uring_ops;
extern const keel__backend_ops_t keel__epoll_ops;
extern const keel__backend_ops_t keel__lab_ops;

/* io_uring, with ring's SQ full: submits the batch and returns a free SQE,
 * or NULL with the negative errno in *err once the kernel has refused it
 * (at once for a lasting error; after a few tries for -EINTR, -EAGAIN and
 * -EBUSY). */
struct io_uring;
struct io_uring_sqe;
struct io_uring_sqe *keel__uring_sqe_after_submit(struct io_uring *ring, int *err);
/* The ring of worker w, or NULL if w does not run io_uring. For tests
 * that make the kernel refuse its submissions for a while. */
struct io_uring *keel__uring_ring(keel__worker_t *w);

void keel__io_init(keel__io_t *io, int fd);

/* ---- Workers and the runtime --------------------------------------------- */

#define KEEL__IO_BUDGET 256

struct keel__worker {
  keel_runtime_t *rt;
  int id;
  pthread_t thread;
  keel__ctx_t sched_ctx;
  keel_task_t *current;
  keel_task_t *dead; /* finished task whose stack is released after switching */
  keel_task_t *shed; /* task that parked without its stack: released the same way */
  keel__queue_t ready;
  keel__queue_t ready_cancel; /* cancelled tasks run first */
  keel__wheel_t wheel;
  const keel__backend_ops_t *ops;
  void *backend;
  _Atomic(keel__msg_t *) inbox;
  atomic_bool sleeping;
  int wake_fd;
  bool stop;
  keel__msg_t stop_msg;
  keel__stack_t *stack_pool;
  size_t stack_pool_len;
  void *buf_cache; /* buffered streams' free read buffers (src/net/bufstream.c) */
  size_t buf_cache_len;
  size_t tasks;          /* live tasks on this worker */
  int run_budget;        /* task runs left before the next poll */
  int64_t inbox_last_ns; /* when messages last arrived (idle spinning) */
  bool inbox_fresh;      /* messages drained since inbox_last_ns was set */
  void *altstack;
  stack_t prev_altstack;
  void *asan_fake_stack;
  void *tsan_sched_fiber;
  int init_result;
  struct keel__lab *lab; /* lab mode's virtual clock and trace; NULL otherwise */
  uint64_t rng[2];       /* keel_random: xoroshiro128+, seeded per worker */
  const void *sched_stack_lo;
  size_t sched_stack_size;
};

struct keel_runtime {
  keel_config_t cfg;
  int nworkers;
  keel__worker_t *workers;
  keel_scope_t *root;
  const keel__backend_ops_t *ops;
  keel_task_fn main_fn;
  void *main_arg;
  int main_result;
  atomic_int shutting_down;
  pthread_mutex_t start_lock; /* workers report their set-up */
  pthread_cond_t start_cond;
  int started_workers;
  pthread_t signal_thread;
  bool have_signal_thread;
  int signal_fd;    /* handle_signals: the read end of the pipe the handler writes */
  int signal_wr_fd; /* its write end */
  int signal_stop_fd;
  struct sigaction signal_prev[2]; /* SIGINT's and SIGTERM's dispositions before keel_run */
  atomic_bool drain_armed;         /* keel_shutdown started the drain deadline */
  keel__msg_t drain_msg;
  keel__timer_t drain_timer;       /* on worker 0 */
  uint64_t lab_seed;               /* lab mode's seed */
  atomic_int foreign_posts;        /* keel__xwait_deliver calls from outside the workers */
  pthread_mutex_t blocking_lock;   /* guards starting the blocking pool */
  struct keel__blocking *blocking; /* the blocking pool, started on first use */
  /* Stacks between the workers' caches: a worker that frees more than it
   * spawns (the target of cross-worker spawns) hands batches to one that
   * spawns more than it frees. */
  keel__spinlock_t depot_lock;
  keel__stack_t *depot;
  atomic_size_t depot_len; /* written under depot_lock; read without to skip an empty depot */
};

/* Stops the blocking pool's threads (if started) once every worker thread
 * has ended, before the workers are destroyed: waits for running functions
 * and disposes of their results. */
void keel__blocking_shutdown(keel_runtime_t *rt);

/* The worker running on this thread (NULL outside workers). */
extern _Thread_local keel__worker_t *keel__tls_worker;

static inline keel__worker_t *keel__worker_current(void) { return keel__tls_worker; }
static inline keel_task_t *keel__task_self(void) {
  keel__worker_t *w = keel__tls_worker;
  return w ? w->current : NULL;
}

int keel__worker_init(keel__worker_t *w, keel_runtime_t *rt, int id);
void keel__worker_destroy(keel__worker_t *w);
/* Frees the read buffers w keeps for buffered streams. */
void keel__bufstream_cache_destroy(keel__worker_t *w);
void keel__worker_loop(keel__worker_t *w);
/* Runs every message in w's inbox, in posting order (w's own thread, not
 * from a task). */
void keel__worker_drain_inbox(keel__worker_t *w);
/* Switches from the current task back to the scheduler. */
void keel__task_park(void);
/* Called when the root scope becomes quiescent: stops every worker. */
void keel__runtime_quiescent(keel_runtime_t *rt);

int64_t keel__now_ns(void);

/* xoroshiro128+ state helpers (src/core/random.c). */
void keel__rng_seed(uint64_t s[2], uint64_t seed);
void keel__rng_seed_random(uint64_t s[2]);
uint64_t keel__rng_next(uint64_t s[2]);
static inline int64_t keel__ns_to_ms_ceil(int64_t ns) {
  return ns / KEEL_NS_PER_MS + (ns % KEEL_NS_PER_MS != 0);
}

/* ---- Lab mode (src/core/lab.c) ------------------------------------------------ */

/* One worker; time is virtual and stands still while tasks run. */
typedef struct keel__lab {
  int64_t now_ns;
  uint64_t seed;
  uint64_t trace_hash; /* FNV-1a over the scheduling events */
  uint64_t trace_events;
  uint64_t next_task_id;
  keel_task_t *yielder; /* just yielded: not drawn next while another is ready */
  bool deadlock_reported;
  /* The in-memory network (src/net/labnet.c), made on first use. The
   * kernel does not know its type: net_free frees it, and every listener
   * and connection still open, when the lab state goes. */
  void *net;
  void (*net_free)(void *net);
} keel__lab_t;

/* Lab events folded into the trace. */
enum {
  KEEL__LAB_EV_RUN = 1,
  KEEL__LAB_EV_SPAWN,
  KEEL__LAB_EV_CLOCK,
  KEEL__LAB_EV_USER,
  KEEL__LAB_EV_NET /* the lab network: a listen, connect or accept and its outcome */
};
void keel__lab_trace(keel__lab_t *lab, unsigned kind, uint64_t a, uint64_t b);
/* Removes and returns a ready task drawn by the seeded generator. */
keel_task_t *keel__lab_pop_ready(keel__worker_t *w);
uint64_t keel__lab_seed_from(const keel_config_t *cfg);

/* Timer ticks: 1 ms on the real backends; 1 ns in lab mode, so virtual
 * time lands exactly on each deadline. */
static inline int64_t keel__tick_of(const keel__worker_t *w, int64_t ns) {
  return KEEL__UNLIKELY(w->lab != NULL) ? ns : keel__ns_to_ms_ceil(ns);
}
static inline int64_t keel__tick_floor(const keel__worker_t *w, int64_t ns) {
  return KEEL__UNLIKELY(w->lab != NULL) ? ns : ns / KEEL_NS_PER_MS;
}
static inline int64_t keel__tick_to_ns(const keel__worker_t *w, int64_t tick) {
  return KEEL__UNLIKELY(w->lab != NULL) ? tick : tick * KEEL_NS_PER_MS;
}

void keel__set_name(char *dst, const char *src, const char *dflt);

#endif
