/* Circuit breaker: closed -> open after failure_threshold consecutive
 * failures -> after open_ns, half-open with exactly one probe -> closed on
 * its success, open again on its failure. A probe that never reports (its
 * task died, or the caller forgot) would keep the breaker half-open for
 * ever, so after open_ns without a verdict the next caller becomes the
 * probe. Any worker may use a breaker: a spinlock guards the state. */
#include "keel/flow.h"

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

struct keel_breaker {
  keel__spinlock_t lock;
  keel_breaker_state_t state;
  unsigned threshold;
  unsigned failures; /* consecutive, while closed */
  int64_t open_ns;
  int64_t since_ns; /* open: when it opened; half-open: when the probe went out */
};

int keel_breaker_new(unsigned failure_threshold, int64_t open_ns, keel_breaker_t **out) {
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
  *out = b;
  return 0;
}

void keel_breaker_free(keel_breaker_t *b) { free(b); }

/* 0 (and *probe set when this caller is the half-open probe), or
 * -ECONNREFUSED. */
static int allow(keel_breaker_t *b, bool *probe) {
  int64_t now = keel_now_ns();
  int rc = 0;
  *probe = false;
  keel__spin_lock(&b->lock);
  if (b->state != KEEL_BREAKER_CLOSED) {
    if (now - b->since_ns < b->open_ns) {
      rc = -ECONNREFUSED; /* still open, or the probe is out */
    } else {
      b->state = KEEL_BREAKER_HALF_OPEN;
      b->since_ns = now;
      *probe = true;
    }
  }
  keel__spin_unlock(&b->lock);
  return rc;
}

int keel_breaker_allow(keel_breaker_t *b) {
  bool probe;
  return allow(b, &probe);
}

void keel_breaker_record_success(keel_breaker_t *b) {
  keel__spin_lock(&b->lock);
  if (b->state != KEEL_BREAKER_OPEN) {
    b->state = KEEL_BREAKER_CLOSED;
    b->failures = 0;
  }
  keel__spin_unlock(&b->lock);
}

void keel_breaker_record_failure(keel_breaker_t *b) {
  int64_t now = keel_now_ns();
  keel__spin_lock(&b->lock);
  if (b->state == KEEL_BREAKER_HALF_OPEN ||
      (b->state == KEEL_BREAKER_CLOSED && ++b->failures >= b->threshold)) {
    b->state = KEEL_BREAKER_OPEN;
    b->since_ns = now;
    b->failures = 0;
  }
  keel__spin_unlock(&b->lock);
}

/* A probe whose caller was cancelled said nothing about the service: hand
 * the probe to the next caller at once. */
static void release_probe(keel_breaker_t *b) {
  int64_t now = keel_now_ns();
  keel__spin_lock(&b->lock);
  if (b->state == KEEL_BREAKER_HALF_OPEN) {
    b->state = KEEL_BREAKER_OPEN;
    b->since_ns = now - b->open_ns;
  }
  keel__spin_unlock(&b->lock);
}

int keel_breaker_call(keel_breaker_t *b, keel_task_fn fn, void *arg) {
  bool probe;
  int rc = allow(b, &probe);
  if (rc < 0)
    return rc;
  rc = fn(arg);
  if (rc >= 0) {
    keel_breaker_record_success(b);
  } else if (rc == -ECANCELED && keel_checkpoint() == -ECANCELED) {
    if (probe)
      release_probe(b);
  } else {
    keel_breaker_record_failure(b);
  }
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
