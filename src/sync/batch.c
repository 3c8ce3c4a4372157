/* The batch queue: submitters on any worker copy items into a ring of
 * slots and park; one processor thread takes them in batches (max_batch
 * items, or whatever came within batch_timeout of the first) and hands
 * each submitter its own result.
 *
 * Slot indices are free-running: [done, taken) is the batch being
 * processed, [taken, end) is queued, end - done <= capacity. Each parked
 * submitter's keel__xwait_t sits on queued_waiters in slot order, under
 * q->lock (the xwait's lock), so a submitter cancelled while queued leaves
 * that list and the processor, finding no waiter for a slot, skips the
 * item: the processor never reads a submitter that has gone. Taking a
 * batch claims its waiters: they can no longer be interrupted and wait for
 * their result, so an item is processed and reported, or never processed.
 *
 * The processor sleeps on a condition variable, since the spinlock cannot
 * be waited on; submitters signal it only when it asked (wake_at).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker.h"
#include "keel/blocking.h"

/* Every wait on the queue's lists (room, queued, close) is one of these. */
typedef struct batch_waiter {
  keel__xwait_t xw;
  size_t slot;    /* queued: free-running slot index of its item */
  int64_t result; /* queued: the entry's result */
} batch_waiter_t;

struct keel_batch {
  keel__spinlock_t lock;
  size_t done, taken, end;      /* free-running slot indices, under lock */
  bool closed;                  /* under lock */
  bool exited;                  /* processor finished the drain, under lock */
  size_t wake_at;               /* queued count that wakes the processor; 0: asleep not */
  keel__queue_t queued_waiters; /* submitters with a queued item, slot order */
  keel__queue_t room_waiters;   /* submitters waiting for a free slot */
  keel__queue_t close_waiters;  /* closers waiting for the drain */
  pthread_mutex_t sleep_lock;   /* with sleep_cond: the processor's sleep */
  pthread_cond_t sleep_cond;
  pthread_t thread;
  _Atomic uint64_t batches;
  keel_batch_opts_t opts;
  unsigned char *slots;           /* capacity * item_size */
  keel_batch_entry_t *entries;    /* max_batch: the batch handed to process */
  batch_waiter_t **batch_waiters; /* max_batch: whom each entry reports to */
};

static void *batch_thread(void *arg);

static unsigned char *slot_item(keel_batch_t *q, size_t slot) {
  return q->slots + (slot % q->opts.capacity) * q->opts.item_size;
}

static bool opts_valid(const keel_batch_opts_t *o) {
  return o && o->item_size > 0 && o->max_batch > 0 && o->capacity >= o->max_batch &&
         o->batch_timeout_ns >= 0 && o->process && o->capacity <= SIZE_MAX / o->item_size &&
         o->max_batch <= SIZE_MAX / sizeof(keel_batch_entry_t);
}

static void batch_destroy(keel_batch_t *q) {
  pthread_cond_destroy(&q->sleep_cond);
  pthread_mutex_destroy(&q->sleep_lock);
  free(q->batch_waiters);
  free(q->entries);
  free(q->slots);
  free(q);
}

static void batch_init_sync(keel_batch_t *q) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* batch_timeout is monotonic */
  pthread_cond_init(&q->sleep_cond, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&q->sleep_lock, NULL);
  keel__queue_init(&q->queued_waiters);
  keel__queue_init(&q->room_waiters);
  keel__queue_init(&q->close_waiters);
}

int keel_batch_open(const keel_batch_opts_t *opts, keel_batch_t **out) {
  *out = NULL;
  if (!opts_valid(opts))
    return -EINVAL;
  keel_batch_t *q = calloc(1, sizeof *q);
  if (!q)
    return -ENOMEM;
  q->opts = *opts;
  batch_init_sync(q);
  q->slots = malloc(opts->capacity * opts->item_size);
  q->entries = malloc(opts->max_batch * sizeof *q->entries);
  q->batch_waiters = malloc(opts->max_batch * sizeof *q->batch_waiters);
  int rc = -ENOMEM;
  if (!q->slots || !q->entries || !q->batch_waiters)
    goto fail;
  /* Signals belong to the runtime's signal thread, not the processor. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = -pthread_create(&q->thread, NULL, batch_thread, q);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0)
    goto fail;
  pthread_setname_np(q->thread, "keel-batch");
  *out = q;
  return 0;
fail:
  batch_destroy(q);
  return rc;
}

/* ---- Waking the processor ------------------------------------------------------ */

/* Under q->lock: whether the processor sleeps waiting for what just
 * happened (a closing, or enough queued items). Clears the request, so
 * one signal is sent per sleep. */
static bool processor_wants_wake(keel_batch_t *q) {
  if (q->wake_at == 0 || (!q->closed && q->end - q->taken < q->wake_at))
    return false;
  q->wake_at = 0;
  return true;
}

/* Taking sleep_lock orders the signal after the processor's cond_wait
 * began (it holds sleep_lock from asking until it waits). */
static void processor_wake(keel_batch_t *q) {
  pthread_mutex_lock(&q->sleep_lock);
  pthread_cond_signal(&q->sleep_cond);
  pthread_mutex_unlock(&q->sleep_lock);
}

/* ---- Waits ------------------------------------------------------------------------ */

static void waiter_init(keel_batch_t *q, batch_waiter_t *bw) {
  keel__xwait_init(&bw->xw, &q->lock, KEEL__WAIT_BATCH, q);
}

/* For a claimed waiter; bw is not touched once the delivery is posted. */
static void waiter_deliver(batch_waiter_t *bw) { keel__xwait_deliver(&bw->xw, 0); }

/* Returns 0 once woken, or the interruption. */
static int waiter_block(batch_waiter_t *bw) { return (int)keel__xwait_block(&bw->xw); }

/* ---- Submitting --------------------------------------------------------------------- */

/* Parks on list (under q->lock, released here) until woken (0: look again)
 * or interrupted. */
static int park_on(keel_batch_t *q, keel__queue_t *list, batch_waiter_t *bw) {
  waiter_init(q, bw);
  keel__queue_insert_tail(list, &bw->xw.wait.node);
  keel__spin_unlock(&q->lock);
  return waiter_block(bw);
}

/* Under q->lock (released here): copies item into the next slot, queues
 * the submitter and parks until its batch is processed. */
static int enqueue_and_wait(keel_batch_t *q, const void *item, batch_waiter_t *bw) {
  bw->slot = q->end++;
  bw->result = 0;
  memcpy(slot_item(q, bw->slot), item, q->opts.item_size);
  waiter_init(q, bw);
  keel__queue_insert_tail(&q->queued_waiters, &bw->xw.wait.node);
  bool wake = processor_wants_wake(q);
  keel__spin_unlock(&q->lock);
  if (wake)
    processor_wake(q);
  return waiter_block(bw);
}

int keel_batch_submit(keel_batch_t *q, const void *item, int64_t *result) {
  if (!keel__task_self())
    return -EINVAL;
  int rc = keel__check_cancel();
  if (rc < 0)
    return rc;
  batch_waiter_t bw;
  for (;;) {
    keel__spin_lock(&q->lock);
    if (q->closed) {
      keel__spin_unlock(&q->lock);
      return -EPIPE;
    }
    /* Room first: a submitter woken for room takes it even if cancelled
     * since (its queued wait then ends at once), so no wake-up is lost. */
    if (q->end - q->done < q->opts.capacity)
      break;
    if ((rc = keel__check_cancel()) < 0) {
      keel__spin_unlock(&q->lock);
      return rc;
    }
    rc = park_on(q, &q->room_waiters, &bw);
    if (rc < 0)
      return rc;
  }
  rc = enqueue_and_wait(q, item, &bw);
  if (rc == 0 && result)
    *result = bw.result;
  return rc;
}

/* ---- Closing ----------------------------------------------------------------------- */

int keel_batch_shutdown(keel_batch_t *q) {
  keel__queue_t claimed;
  keel__queue_init(&claimed);
  keel__spin_lock(&q->lock);
  q->closed = true;
  keel__xwait_claim_n(&q->room_waiters, SIZE_MAX, &claimed); /* they will see closed */
  bool wake = processor_wants_wake(q);
  int rc = 0;
  bool wait = !q->exited && keel__task_self() && (rc = keel__check_cancel()) == 0;
  batch_waiter_t bw;
  if (wait) {
    waiter_init(q, &bw);
    keel__queue_insert_tail(&q->close_waiters, &bw.xw.wait.node);
  }
  keel__spin_unlock(&q->lock);
  keel__xwait_deliver_claimed(&claimed);
  if (wake)
    processor_wake(q);
  return wait ? waiter_block(&bw) : rc;
}

void keel_batch_close(keel_batch_t *q) {
  if (!q)
    return;
  keel__spin_lock(&q->lock);
  bool closed = q->closed;
  keel__spin_unlock(&q->lock);
  if (!closed) {
    keel__spin_lock(&q->lock);
    q->closed = true;
    bool wake = processor_wants_wake(q);
    keel__spin_unlock(&q->lock);
    if (wake)
      processor_wake(q);
  }
  pthread_join(q->thread, NULL);
  batch_destroy(q);
}

uint64_t keel_batch_batches(const keel_batch_t *q) {
  return atomic_load_explicit(&q->batches, memory_order_relaxed);
}

size_t keel_batch_pending(keel_batch_t *q) {
  keel__spin_lock(&q->lock);
  size_t n = q->end - q->done;
  keel__spin_unlock(&q->lock);
  return n;
}

/* ---- The processor ------------------------------------------------------------------- */

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * KEEL_NS_PER_SEC + ts.tv_nsec;
}

/* Sleeps until woken (or until_ns, if not NONE), asking to be woken when
 * want items are queued. Called and returns with sleep_lock held. */
static void processor_sleep(keel_batch_t *q, size_t want, int64_t until_ns) {
  keel__spin_lock(&q->lock);
  bool ready = q->closed || q->end - q->taken >= want;
  if (!ready)
    q->wake_at = want;
  keel__spin_unlock(&q->lock);
  if (ready)
    return;
  if (until_ns == KEEL_DEADLINE_NONE) {
    pthread_cond_wait(&q->sleep_cond, &q->sleep_lock);
  } else {
    struct timespec ts = {.tv_sec = until_ns / KEEL_NS_PER_SEC,
                          .tv_nsec = until_ns % KEEL_NS_PER_SEC};
    pthread_cond_timedwait(&q->sleep_cond, &q->sleep_lock, &ts);
  }
  keel__spin_lock(&q->lock);
  q->wake_at = 0;
  keel__spin_unlock(&q->lock);
}

/* Queued items, read under the lock. */
static size_t queued(keel_batch_t *q, bool *closed) {
  keel__spin_lock(&q->lock);
  size_t n = q->end - q->taken;
  *closed = q->closed;
  keel__spin_unlock(&q->lock);
  return n;
}

/* Waits for a first item, then for max_batch items or batch_timeout.
 * Returns false when closed and drained: the processor is done. */
static bool wait_for_batch(keel_batch_t *q) {
  bool closed;
  pthread_mutex_lock(&q->sleep_lock);
  while (queued(q, &closed) == 0 && !closed)
    processor_sleep(q, 1, KEEL_DEADLINE_NONE);
  if (queued(q, &closed) == 0) {
    pthread_mutex_unlock(&q->sleep_lock);
    return false;
  }
  int64_t now = mono_ns();
  int64_t until = q->opts.batch_timeout_ns > INT64_MAX - now ? INT64_MAX /* saturate */
                                                             : now + q->opts.batch_timeout_ns;
  while (queued(q, &closed) < q->opts.max_batch && !closed && mono_ns() < until)
    processor_sleep(q, q->opts.max_batch, until);
  pthread_mutex_unlock(&q->sleep_lock);
  return true;
}

/* Takes up to max_batch queued slots, claiming the waiters still there:
 * a slot without one belongs to a submitter that left, and is skipped.
 * Returns the number of entries; *slots gets the number of slots taken. */
static size_t take_batch(keel_batch_t *q, size_t *slots) {
  size_t n = 0;
  keel__spin_lock(&q->lock);
  size_t k = q->end - q->taken;
  if (k > q->opts.max_batch)
    k = q->opts.max_batch;
  for (size_t slot = q->taken; slot < q->taken + k; slot++) {
    if (keel__queue_empty(&q->queued_waiters))
      break;
    batch_waiter_t *bw = keel__container_of(q->queued_waiters.next, batch_waiter_t, xw.wait.node);
    if (bw->slot != slot)
      continue;
    keel__xwait_pop(&q->queued_waiters); /* claims bw: listed waits are claimable */
    q->batch_waiters[n] = bw;
    q->entries[n].item = slot_item(q, slot);
    q->entries[n].result = 0;
    n++;
  }
  q->taken += k;
  keel__spin_unlock(&q->lock);
  *slots = k;
  return n;
}

/* Reports each entry's result to its submitter, then frees the batch's
 * slots and wakes as many submitters waiting for room. */
static void finish_batch(keel_batch_t *q, size_t n, size_t slots) {
  for (size_t i = 0; i < n; i++) {
    q->batch_waiters[i]->result = q->entries[i].result;
    waiter_deliver(q->batch_waiters[i]);
  }
  keel__queue_t claimed;
  keel__queue_init(&claimed);
  keel__spin_lock(&q->lock);
  q->done += slots;
  keel__xwait_claim_n(&q->room_waiters, slots, &claimed);
  keel__spin_unlock(&q->lock);
  keel__xwait_deliver_claimed(&claimed);
}

static void *batch_thread(void *arg) {
  keel_batch_t *q = arg;
  while (wait_for_batch(q)) {
    size_t slots;
    size_t n = take_batch(q, &slots);
    if (n > 0) {
      q->opts.process(q->opts.ctx, q->entries, n);
      atomic_fetch_add_explicit(&q->batches, 1, memory_order_relaxed);
    }
    finish_batch(q, n, slots);
  }
  keel__queue_t claimed;
  keel__queue_init(&claimed);
  keel__spin_lock(&q->lock);
  q->exited = true;
  keel__xwait_claim_n(&q->close_waiters, SIZE_MAX, &claimed);
  keel__spin_unlock(&q->lock);
  keel__xwait_deliver_claimed(&claimed);
  return NULL;
}
