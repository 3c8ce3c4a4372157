/* Internal header: waits, the one way a task blocks (src/core/wait.c). */
#ifndef KEEL_WAIT_H
#define KEEL_WAIT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "keel/core.h"
#include "msg.h"
#include "queue.h"
#include "spin.h"
#include "timer-internal.h"

typedef struct keel__worker keel__worker_t;

/* ---- Waits: the one way a task blocks ----------------------------------- */

/* What a wait waits on, for the task dump (src/core/dump.c). Each wait
 * says it when it is set up; keel__wait_arm copies it into the task. */
typedef enum keel__wait_kind {
  KEEL__WAIT_NONE = 0,
  KEEL__WAIT_RECV,           /* bytes from a connection (fd, or a lab pipe's end) */
  KEEL__WAIT_SEND,           /* room to write to a connection */
  KEEL__WAIT_READABLE,       /* readiness without a buffer (wait_readable, tcp_park) */
  KEEL__WAIT_ACCEPT,         /* a connection on a listener */
  KEEL__WAIT_ACCEPT_BACKOFF, /* out of descriptors: before accepting again */
  KEEL__WAIT_CONNECT,
  KEEL__WAIT_CLOSE,     /* a close waiting for its descriptor's operations to end */
  KEEL__WAIT_TLS,       /* a TLS stream's turn: its handshake or a send under way */
  KEEL__WAIT_SLEEP,     /* until_ns */
  KEEL__WAIT_ALERT,     /* keel_alert_wait */
  KEEL__WAIT_JOIN,      /* the tasks of a scope (object: the scope) */
  KEEL__WAIT_CHAN_SEND, /* room in a channel */
  KEEL__WAIT_CHAN_RECV, /* an item in a channel */
  KEEL__WAIT_MUTEX,
  KEEL__WAIT_RWLOCK_READ,
  KEEL__WAIT_RWLOCK_WRITE,
  KEEL__WAIT_SEM,
  KEEL__WAIT_NOTIFY,
  KEEL__WAIT_BARRIER,
  KEEL__WAIT_ONCE,
  KEEL__WAIT_ONESHOT,
  KEEL__WAIT_WATCH,
  KEEL__WAIT_BROADCAST,
  KEEL__WAIT_BLOCKING,  /* a blocking-pool call (object: its function) */
  KEEL__WAIT_RESOLVE,   /* a host name, on the blocking pool */
  KEEL__WAIT_BATCH,     /* a batch queue: room, the batch's processing, or its shutdown */
  KEEL__WAIT_RATELIMIT, /* a rate limiter's tokens */
  KEEL__WAIT_KINDS
} keel__wait_kind_t;

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
  int64_t deadline_ns;       /* effective deadline when the wait began */
  void *data;                /* for the abort hook */
  ssize_t result;
  /* What it waits on (the task dump): the object's address, for its
   * identity only (never read through), and the descriptor, or -1. */
  const void *object;
  int fd;
  int until_result;   /* result when until_ns is reached first */
  int interrupted;    /* err passed to abort, 0 if none */
  unsigned cqe_flags; /* io_uring: the completion's flags */
  unsigned char kind; /* keel__wait_kind_t */
  bool done;
  bool shielded;  /* set by keel__wait_nocancel: only completion ends it */
  bool alertable; /* an input wait: a ring of the task's enabled alert ends it */
};

/* 0 if the current task may block, else -ECANCELED / -ETIMEDOUT. Call it
 * before starting an operation, so a cancelled task starts nothing. */
int keel__check_cancel(void);

/* Initialises w for the current task, which waits on object for the
 * reason kind (keel__wait_kind_t): the task dump shows them. */
void keel__wait_init(keel__wait_t *w, keel__wait_abort_fn abort, keel__wait_kind_t kind,
                     const void *object);
/* The descriptor a socket wait is on (the dump names its peer). */
static inline void keel__wait_on_fd(keel__wait_t *w, int fd) { w->fd = fd; }
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

/* True if a's ring is pending (src/core/alert.c). */
bool keel__alert_rung(const keel_alert_t *a);

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

/* Initialises xw for the current task (kind, object: keel__wait_init's).
 * lock may be NULL (no waiter list). */
void keel__xwait_init(keel__xwait_t *xw, keel__spinlock_t *lock, keel__wait_kind_t kind,
                      const void *object);
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

#endif
