/* Alerts: a wake-up other tasks and threads ring, which cuts short the
 * owner's input wait (a read, a readiness wait, a sleep) while it has the
 * alert enabled. The state word holds the pending ring, a message in
 * flight to the owner's worker, and the owner's close; whichever of the
 * close and the message comes last frees the alert. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

enum { ALERT_RUNG = 1u, ALERT_POSTED = 2u, ALERT_CLOSED = 4u };

struct keel_alert {
  keel_task_t *owner;
  keel__worker_t *worker;
  _Atomic unsigned state;
  keel__msg_t msg;
};

bool keel__alert_rung(const keel_alert_t *a) {
  return atomic_load_explicit(&a->state, memory_order_acquire) & ALERT_RUNG;
}

/* On the owner's worker: a ring reaches the owner's current wait. */
static void alert_local(keel_alert_t *a) {
  keel_task_t *t = a->owner;
  if (t->alert != a || t->state != KEEL__TASK_BLOCKED)
    return;
  keel__wait_t *w = t->wait;
  if (w && w->alertable && !w->done)
    keel__wait_interrupt(w, -EINTR);
}

static void alert_msg(keel__worker_t *wk, keel__msg_t *m) {
  (void)wk;
  keel_alert_t *a = keel__container_of(m, keel_alert_t, msg);
  unsigned s = atomic_fetch_and_explicit(&a->state, ~ALERT_POSTED, memory_order_acq_rel);
  if (s & ALERT_CLOSED)
    free(a);
  else
    alert_local(a);
}

int keel_alert_open(keel_alert_t **out) {
  keel_task_t *t = keel__task_self();
  if (!out || !t)
    return -EINVAL;
  keel_alert_t *a = calloc(1, sizeof *a);
  if (!a)
    return -ENOMEM;
  a->owner = t;
  a->worker = t->worker;
  atomic_init(&a->state, 0);
  a->msg.fn = alert_msg;
  *out = a;
  return 0;
}

void keel_alert_close(keel_alert_t *a) {
  if (!a)
    return;
  if (a->owner->alert == a)
    a->owner->alert = NULL;
  unsigned s = atomic_fetch_or_explicit(&a->state, ALERT_CLOSED, memory_order_acq_rel);
  if (!(s & ALERT_POSTED))
    free(a);
}

void keel_alert_ring(keel_alert_t *a) {
  unsigned s = atomic_load_explicit(&a->state, memory_order_relaxed);
  if (s & ALERT_RUNG)
    return; /* pending: the owner takes it before it waits again */
  s = atomic_fetch_or_explicit(&a->state, ALERT_RUNG, memory_order_acq_rel);
  if (s & ALERT_RUNG)
    return;
  if (keel__worker_current() == a->worker) {
    alert_local(a);
    return;
  }
  s = atomic_fetch_or_explicit(&a->state, ALERT_POSTED, memory_order_acq_rel);
  if (!(s & ALERT_POSTED))
    keel__worker_post(a->worker, &a->msg);
}

bool keel_alert_take(keel_alert_t *a) {
  return atomic_fetch_and_explicit(&a->state, ~ALERT_RUNG, memory_order_acq_rel) & ALERT_RUNG;
}

bool keel_alert_pending(const keel_alert_t *a) { return keel__alert_rung(a); }

void keel_alert_enable(keel_alert_t *a) { a->owner->alert = a; }

void keel_alert_disable(keel_alert_t *a) {
  if (a->owner->alert == a)
    a->owner->alert = NULL;
}

int keel_alert_wait(keel_alert_t *a, int64_t until_ns) {
  int rc = keel__check_cancel();
  if (rc)
    return rc;
  if (!keel__alert_rung(a) && (until_ns == KEEL_DEADLINE_NONE || until_ns > keel__now_ns())) {
    keel_task_t *t = a->owner;
    keel_alert_t *was = t->alert;
    t->alert = a;
    keel__wait_t w;
    keel__wait_init(&w, NULL, KEEL__WAIT_ALERT, a);
    w.alertable = true;
    rc = (int)keel__wait_block(&w, until_ns, 0);
    t->alert = was;
    if (rc < 0 && rc != -EINTR)
      return rc;
  }
  return keel_alert_take(a) ? 1 : 0;
}
