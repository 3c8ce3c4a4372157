/* Circuit breaker: closed -> open after failure_threshold consecutive
 * failures -> after open_ns, half-open with exactly one probe -> closed on
 * its success, open again on its failure. A probe that never reports (its
 * task died, or the caller forgot) would keep the breaker half-open for
 * ever, so after open_ns without a verdict the next caller becomes the
 * probe; the replaced probe's verdict, when it comes, is ignored. Any
 * worker may use a breaker: a spinlock guards the state. */
#include "keel/flow.h"

#include <errno.h>
#include <stdlib.h>

#include "worker.h"

struct keel_breaker {
  keel__spinlock_t lock;
  keel_breaker_state_t state;
  unsigned threshold;
  unsigned failures; /* consecutive, while closed */
  int64_t open_ns;
  int64_t until_ns; /* open: when a probe may go; half-open: when the probe counts as lost */
  /* Bumped when the breaker opens and when a probe goes out. A call made
   * through keel_breaker_call carries the epoch it was allowed in, and its
   * report counts only in that epoch: a call allowed before the breaker
   * opened, or a probe that was replaced, says nothing about now. */
  uint64_t epoch;
};

#define UNTRACKED 0 /* a report through the public record functions */

static int64_t after(int64_t now, int64_t ns) {
  return ns > INT64_MAX - now ? INT64_MAX : now + ns;
}

int keel_breaker_open(unsigned failure_threshold, int64_t open_ns, keel_breaker_t **out) {
  *out = NULL;
  if (failure_threshold == 0 || open_ns < 0)
    return -EINVAL;
  keel_breaker_t *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  atomic_flag_clear(&b->lock.flag);
  b->state = KEEL_BREAKER_CLOSED;
  b->threshold = failure_threshold;
  b->open_ns = open_ns;
  b->epoch = 1;
  *out = b;
  return 0;
}

void keel_breaker_close(keel_breaker_t *b) { free(b); }

/* 0 with *ticket set to the epoch the call runs in, or -ECONNREFUSED. */
static int allow(keel_breaker_t *b, uint64_t *ticket) {
  int64_t now = keel_now_ns();
  int rc = 0;
  keel__spin_lock(&b->lock);
  if (b->state != KEEL_BREAKER_CLOSED) {
    if (now < b->until_ns) {
      rc = -ECONNREFUSED; /* still open, or the probe is out */
    } else {
      b->state = KEEL_BREAKER_HALF_OPEN;
      b->until_ns = after(now, b->open_ns);
      b->epoch++;
    }
  }
  *ticket = b->epoch;
  keel__spin_unlock(&b->lock);
  return rc;
}

int keel_breaker_allow(keel_breaker_t *b) {
  uint64_t ticket;
  return allow(b, &ticket);
}

static void open_locked(keel_breaker_t *b, int64_t now) {
  b->state = KEEL_BREAKER_OPEN;
  b->until_ns = after(now, b->open_ns);
  b->failures = 0;
  b->epoch++;
}

static void record(keel_breaker_t *b, bool ok, uint64_t ticket) {
  int64_t now = keel_now_ns();
  keel__spin_lock(&b->lock);
  if ((ticket == UNTRACKED || ticket == b->epoch) && b->state != KEEL_BREAKER_OPEN) {
    if (ok) {
      b->state = KEEL_BREAKER_CLOSED;
      b->failures = 0;
    } else if (b->state == KEEL_BREAKER_HALF_OPEN || ++b->failures >= b->threshold) {
      open_locked(b, now);
    }
  }
  keel__spin_unlock(&b->lock);
}

void keel_breaker_record_success(keel_breaker_t *b) { record(b, true, UNTRACKED); }
void keel_breaker_record_failure(keel_breaker_t *b) { record(b, false, UNTRACKED); }

/* A probe whose caller was cancelled said nothing about the service: hand
 * the probe to the next caller at once, unless it was replaced already. */
static void release_probe(keel_breaker_t *b, uint64_t ticket) {
  int64_t now = keel_now_ns();
  keel__spin_lock(&b->lock);
  if (b->state == KEEL_BREAKER_HALF_OPEN && ticket == b->epoch) {
    b->state = KEEL_BREAKER_OPEN;
    b->until_ns = now;
  }
  keel__spin_unlock(&b->lock);
}

int keel_breaker_call(keel_breaker_t *b, keel_task_fn fn, void *arg) {
  uint64_t ticket;
  int rc = allow(b, &ticket);
  if (rc < 0)
    return rc;
  rc = fn(arg);
  if (rc == -ECANCELED && keel_checkpoint() == -ECANCELED)
    release_probe(b, ticket);
  else
    record(b, rc >= 0, ticket);
  return rc;
}

keel_breaker_state_t keel_breaker_state(keel_breaker_t *b) {
  keel__spin_lock(&b->lock);
  keel_breaker_state_t s = b->state;
  keel__spin_unlock(&b->lock);
  return s;
}

unsigned keel_breaker_failures(keel_breaker_t *b) {
  keel__spin_lock(&b->lock);
  unsigned n = b->failures;
  keel__spin_unlock(&b->lock);
  return n;
}
