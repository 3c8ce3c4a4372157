/* Watch: one value slot with a version counter bumped by every send, and
 * per receiver the version it saw last. Everything is under one spinlock,
 * since senders and receivers may be on different workers; the value is
 * copied in and out inside it (no torn reads), so keep it small.
 *
 * A receiver waiting for a newer version parks on a keel__xwait in the
 * waiters list; a send or close claims every parked waiter under the lock
 * and delivers "look again" after unlocking. A cancelled receiver has
 * either left the list under the lock or was claimed and will look; its
 * seen version only moves when it copies the value out, so a cancelled
 * wait loses nothing: the newer version is still there for the next call.
 *
 * Freeing: the opener's handle and each receiver keep the object; the
 * last of keel_watch_close and keel_watch_unsubscribe frees it. */
#include "keel/watch.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sync-internal.h"

struct keel_watch {
  keel__spinlock_t lock;
  bool closed;
  bool opener_gone;      /* keel_watch_close was called */
  size_t receivers;      /* subscribed */
  uint64_t version;      /* 0: the initial value; +1 per send */
  keel__queue_t waiters; /* xwaits of receivers waiting for a newer version */
  size_t elem_size;
  unsigned char value[];
};

struct keel_watch_rx {
  keel_watch_t *w;
  uint64_t seen; /* the version this receiver copied out last, under w->lock */
};

int keel_watch_open(size_t elem_size, const void *initial, keel_watch_t **out) {
  *out = NULL;
  if (elem_size == 0 || elem_size > SIZE_MAX - sizeof(keel_watch_t))
    return -EINVAL;
  keel_watch_t *w = calloc(1, sizeof *w + elem_size);
  if (!w)
    return -ENOMEM;
  w->lock = (keel__spinlock_t){ATOMIC_FLAG_INIT};
  keel__queue_init(&w->waiters);
  w->elem_size = elem_size;
  if (initial)
    memcpy(w->value, initial, elem_size);
  *out = w;
  return 0;
}

/* ---- Waking (as in broadcast.c) ------------------------------------------------ */

/* ---- Sending and closing ----------------------------------------------------------- */

int keel_watch_send(keel_watch_t *w, const void *value) {
  keel__queue_t claimed;
  keel__queue_init(&claimed);
  keel__spin_lock(&w->lock);
  if (w->closed) {
    keel__spin_unlock(&w->lock);
    return -EPIPE;
  }
  memcpy(w->value, value, w->elem_size);
  w->version++;
  int receivers = w->receivers > INT_MAX ? INT_MAX : (int)w->receivers;
  if (!keel__queue_empty(&w->waiters))
    keel__xwait_claim_n(&w->waiters, SIZE_MAX, &claimed);
  keel__spin_unlock(&w->lock);
  keel__xwait_deliver_claimed(&claimed);
  return receivers;
}

/* Closes (if not yet) and, if drop, gives up the opener's handle. Returns
 * true if the caller must free w: nothing else holds it. */
static bool close_impl(keel_watch_t *w, bool drop) {
  keel__queue_t claimed;
  keel__queue_init(&claimed);
  keel__spin_lock(&w->lock);
  w->closed = true;
  keel__xwait_claim_n(&w->waiters, SIZE_MAX, &claimed);
  if (drop)
    w->opener_gone = true;
  bool last = w->opener_gone && w->receivers == 0;
  keel__spin_unlock(&w->lock);
  keel__xwait_deliver_claimed(&claimed);
  return last;
}

int keel_watch_shutdown(keel_watch_t *w) {
  (void)close_impl(w, false);
  return 0;
}

void keel_watch_close(keel_watch_t *w) {
  if (w && close_impl(w, true))
    free(w);
}

void keel_watch_load(keel_watch_t *w, void *value) {
  keel__spin_lock(&w->lock);
  memcpy(value, w->value, w->elem_size);
  keel__spin_unlock(&w->lock);
}

/* ---- Receivers ------------------------------------------------------------------------ */

int keel_watch_subscribe(keel_watch_t *w, keel_watch_rx_t **out) {
  *out = NULL;
  keel_watch_rx_t *rx = malloc(sizeof *rx);
  if (!rx)
    return -ENOMEM;
  rx->w = w;
  keel__spin_lock(&w->lock);
  rx->seen = w->version;
  w->receivers++;
  keel__spin_unlock(&w->lock);
  *out = rx;
  return 0;
}

void keel_watch_unsubscribe(keel_watch_rx_t *rx) {
  if (!rx)
    return;
  keel_watch_t *w = rx->w;
  keel__spin_lock(&w->lock);
  assert(w->receivers > 0);
  w->receivers--;
  bool last = w->opener_gone && w->receivers == 0;
  keel__spin_unlock(&w->lock);
  free(rx);
  if (last)
    free(w);
}

int keel_watch_get(keel_watch_rx_t *rx, void *value) {
  keel_watch_t *w = rx->w;
  keel__spin_lock(&w->lock);
  memcpy(value, w->value, w->elem_size);
  int newer = w->version != rx->seen;
  rx->seen = w->version;
  keel__spin_unlock(&w->lock);
  return newer;
}

/* Looks for a version newer than rx's last seen, waiting for one if
 * may_block. Found: copies it into value and marks it seen if value is
 * not NULL, and returns 1. Else 0 (not found, may not block), -EPIPE
 * (closed), -ECANCELED or -ETIMEDOUT. */
static int find_newer(keel_watch_rx_t *rx, void *value, bool may_block) {
  keel_watch_t *w = rx->w;
  for (;;) {
    keel__spin_lock(&w->lock);
    int rc = 0;
    bool wait = false;
    if (w->version != rx->seen) {
      if (value) {
        memcpy(value, w->value, w->elem_size);
        rx->seen = w->version;
      }
      rc = 1;
    } else if (w->closed) {
      rc = -EPIPE;
    } else if (may_block) {
      rc = keel__sync_may_wait(); /* -EINVAL outside a task */
      wait = rc == 0;
    }
    if (!wait) {
      keel__spin_unlock(&w->lock);
      return rc;
    }
    assert(keel__task_self());
    keel__xwait_t xw;
    keel__xwait_init(&xw, &w->lock, KEEL__WAIT_WATCH, w);
    keel__queue_insert_tail(&w->waiters, &xw.wait.node);
    keel__spin_unlock(&w->lock);
    /* 0: a send or close (look again); else interrupted, off the list */
    rc = (int)keel__xwait_block(&xw);
    if (rc < 0)
      return rc;
  }
}

int keel_watch_changed(keel_watch_rx_t *rx) {
  int rc = find_newer(rx, NULL, true);
  return rc > 0 ? 0 : rc;
}

int keel_watch_has_changed(keel_watch_rx_t *rx) { return find_newer(rx, NULL, false); }

int keel_watch_recv(keel_watch_rx_t *rx, void *value) {
  assert(value);
  int rc = find_newer(rx, value, true);
  return rc > 0 ? 0 : rc;
}

size_t keel_watch_receivers(keel_watch_t *w) {
  keel__spin_lock(&w->lock);
  size_t n = w->receivers;
  keel__spin_unlock(&w->lock);
  return n;
}
