/* Waits: the one way a task blocks. A wait ends exactly once, by
 * completion (an event, a CQE) or by interruption (cancellation, a
 * deadline) through its abort hook; the task stays parked until then. */
#include <errno.h>

#include "internal.h"

/* The wait's timer: its own end (a sleep) or the task's deadline. The
 * deadline is read again, since a scope's may have moved later. */
static void wait_timer_cb(keel__timer_t *tm) {
  keel__wait_t *w = keel__container_of(tm, keel__wait_t, timer);
  if (w->done)
    return;
  int64_t now = keel__now_ns();
  if (w->until_ns != KEEL_DEADLINE_NONE && w->until_ns <= now) {
    keel__wait_complete(w, w->until_result);
    return;
  }
  int64_t d = keel__task_deadline(w->task);
  if (d <= now) {
    keel__wait_interrupt(w, -ETIMEDOUT);
    return;
  }
  w->deadline_ns = d;
  w->task->wait_deadline_ns = d;
  int64_t fire = d < w->until_ns ? d : w->until_ns;
  keel__worker_t *wk = w->task->worker;
  keel__timer_start(&wk->wheel, &w->timer, keel__tick_of(wk, fire));
}

void keel__wait_init(keel__wait_t *w, keel__wait_abort_fn abort, keel__wait_kind_t kind,
                     const void *object) {
  w->task = keel__task_self();
  w->object = object;
  w->fd = -1;
  w->kind = (unsigned char)kind;
  keel__queue_init(&w->node);
  keel__timer_init(&w->timer, wait_timer_cb);
  w->abort = abort;
  w->until_ns = KEEL_DEADLINE_NONE;
  w->until_result = 0;
  w->deadline_ns = KEEL_DEADLINE_NONE;
  w->interrupted = 0;
  w->data = NULL;
  w->result = 0;
  w->cqe_flags = 0;
  w->done = false;
  w->shielded = false;
  w->alertable = false;
}

/* For the task dump, which may read the task (not w, on its stack) from
 * any thread: a few stores. The time is the worker's current tick, set
 * when the loop last polled, not a clock read: exact in lab mode, else at
 * most the time the tasks before this one ran in the same round late. */
static inline void wait_describe(keel_task_t *t, const keel__wait_t *w, const keel__worker_t *wk) {
  t->wait_kind = w->kind;
  t->wait_fd = w->fd;
  t->wait_until_set = w->until_ns != KEEL_DEADLINE_NONE;
  if (t->wait_until_set)
    t->wait_until_ns = w->until_ns;
  else
    t->wait_object = w->object;
  t->wait_since_tick = wk->wheel.now_ms;
  t->wait_deadline_ns = w->deadline_ns;
}

ssize_t keel__wait_block(keel__wait_t *w, int64_t until_ns, int until_result) {
  keel__wait_arm(w, until_ns, until_result);
  while (!w->done)
    keel__task_park();
  return keel__wait_finish(w);
}

void keel__wait_arm(keel__wait_t *w, int64_t until_ns, int until_result) {
  keel_task_t *t = w->task;
  keel__worker_t *wk = t->worker;
  w->until_ns = until_ns;
  w->until_result = until_result;
  if (!w->shielded) {
    w->deadline_ns = keel__task_deadline(t);
    int64_t fire = w->deadline_ns < until_ns ? w->deadline_ns : until_ns;
    if (fire != KEEL_DEADLINE_NONE)
      keel__timer_start(&wk->wheel, &w->timer, keel__tick_of(wk, fire));
  }
  t->wait = w;
  wait_describe(t, w, wk);
  /* Cancelled between the caller's check and here (another thread may
   * cancel at any time): interrupt now, not at the next event. The task is
   * still RUNNING, so an abort hook that completes the wait at once does
   * not queue it: queued, it would run again after returning from here. */
  if (!w->shielded && t->shield_depth == 0 &&
      atomic_load_explicit(&t->scope->cancel_reason, memory_order_relaxed))
    keel__wait_interrupt(w, keel__check_cancel());
  if (KEEL__UNLIKELY(t->alert != NULL) && w->alertable && !w->done && keel__alert_rung(t->alert))
    keel__wait_interrupt(w, -EINTR);
  if (!w->done)
    t->state = KEEL__TASK_BLOCKED;
}

ssize_t keel__wait_finish(keel__wait_t *w) {
  keel__timer_stop(&w->task->worker->wheel, &w->timer);
  w->task->wait = NULL;
  return w->result;
}

void keel__wait_complete(keel__wait_t *w, ssize_t result) {
  if (w->done)
    return;
  w->done = true;
  w->result = result;
  keel__task_ready(w->task);
}

void keel__wait_abort_dequeue(keel__wait_t *w, int err) {
  keel__queue_remove(&w->node);
  keel__wait_complete(w, err);
}

bool keel__waiters_wake_one(keel__queue_t *list, ssize_t result) {
  if (keel__queue_empty(list))
    return false;
  keel__queue_t *n = list->next;
  keel__queue_remove(n);
  keel__wait_complete(keel__container_of(n, keel__wait_t, node), result);
  return true;
}

void keel__waiters_wake_all(keel__queue_t *list, ssize_t result) {
  while (keel__waiters_wake_one(list, result))
    ;
}

void keel__wait_interrupt(keel__wait_t *w, int err) {
  if (w->done || w->interrupted || w->shielded)
    return;
  w->interrupted = err;
  if (w->abort)
    w->abort(w, err);
  else
    keel__wait_complete(w, err);
}

/* ---- Waits another thread may end ------------------------------------------ */

static void xwait_abort(keel__wait_t *w, int err) {
  keel__xwait_t *xw = keel__container_of(w, keel__xwait_t, wait);
  if (xw->lock)
    keel__spin_lock(xw->lock);
  int expect = KEEL__XWAIT_PARKED;
  bool won = atomic_compare_exchange_strong_explicit(&xw->state, &expect, KEEL__XWAIT_ABORTED,
                                                     memory_order_acq_rel, memory_order_acquire);
  if (won)
    keel__queue_remove(&w->node);
  if (xw->lock)
    keel__spin_unlock(xw->lock);
  if (won)
    keel__wait_complete(w, err);
  /* Lost: a waker claimed it and its result is on the way. */
}

static void xwait_deliver_msg(keel__worker_t *wk, keel__msg_t *m) {
  (void)wk;
  keel__xwait_t *xw = keel__container_of(m, keel__xwait_t, msg);
  keel__wait_complete(&xw->wait, xw->xresult);
}

void keel__xwait_init(keel__xwait_t *xw, keel__spinlock_t *lock, keel__wait_kind_t kind,
                      const void *object) {
  keel__wait_init(&xw->wait, xwait_abort, kind, object);
  xw->msg.fn = xwait_deliver_msg;
  xw->msg.next = NULL;
  xw->worker = keel__worker_current();
  xw->lock = lock;
  atomic_init(&xw->state, KEEL__XWAIT_PARKED);
  xw->xresult = 0;
}

ssize_t keel__xwait_block(keel__xwait_t *xw) {
  /* No until_ns: its timer would complete the wait behind the claim. */
  return keel__wait_block(&xw->wait, KEEL_DEADLINE_NONE, 0);
}

bool keel__xwait_claim(keel__xwait_t *xw) {
  int expect = KEEL__XWAIT_PARKED;
  return atomic_compare_exchange_strong_explicit(&xw->state, &expect, KEEL__XWAIT_CLAIMED,
                                                 memory_order_acq_rel, memory_order_acquire);
}

void keel__xwait_deliver(keel__xwait_t *xw, ssize_t result) {
  keel__worker_t *self = keel__worker_current();
  keel__worker_t *owner = xw->worker;
  if (self == owner) {
    keel__wait_complete(&xw->wait, result);
    return;
  }
  xw->xresult = result;
  if (self) {
    keel__worker_post(owner, &xw->msg);
    return;
  }
  /* A thread outside the runtime (blocking pool, batch processor): the
   * delivery may let the last task finish, and the runtime must not free
   * the worker while the post still reads it. The count goes up while the
   * task is still parked, so before the runtime can be ending. */
  keel_runtime_t *rt = owner->rt;
  atomic_fetch_add(&rt->foreign_posts, 1);
  keel__worker_post(owner, &xw->msg);
  atomic_fetch_sub(&rt->foreign_posts, 1);
}

keel__xwait_t *keel__xwait_pop(keel__queue_t *list) {
  while (!keel__queue_empty(list)) {
    keel__queue_t *n = list->next;
    keel__queue_remove(n);
    keel__xwait_t *xw = keel__container_of(n, keel__xwait_t, wait.node);
    if (keel__xwait_claim(xw))
      return xw;
  }
  return NULL;
}

size_t keel__xwait_claim_n(keel__queue_t *list, size_t max, keel__queue_t *claimed) {
  size_t n = 0;
  keel__xwait_t *xw;
  while (n < max && (xw = keel__xwait_pop(list)) != NULL) {
    keel__queue_insert_tail(claimed, &xw->wait.node);
    n++;
  }
  return n;
}

void keel__xwait_deliver_claimed(keel__queue_t *claimed) {
  while (!keel__queue_empty(claimed)) {
    keel__queue_t *n = claimed->next;
    keel__queue_remove(n);
    keel__xwait_t *xw = keel__container_of(n, keel__xwait_t, wait.node);
    keel__xwait_deliver(xw, xw->xresult);
  }
}
