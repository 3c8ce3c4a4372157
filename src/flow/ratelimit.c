/* Token bucket. Tokens are counted in billionths (units), so refilling
 * rate tokens per second adds exactly rate units per nanosecond: integer
 * arithmetic, no drift, and the wait for a deficit is an exact ceiling
 * division (in lab mode a waiter wakes at the very nanosecond its tokens
 * exist).
 *
 * Waiters are served in the order they came without a wait list: a caller
 * that must wait takes its tokens on credit at once, driving the level
 * below zero, and sleeps until refilling has paid the debt back. Whoever
 * comes later finds the debt and waits behind it, so a large request is
 * never overtaken by small ones. A waiter that is cancelled gives its
 * tokens back. Any worker may use a bucket: a spinlock guards the few
 * instructions of bookkeeping. The level is 128-bit: a queue of waiters
 * each owing up to 10^18 units cannot overflow it. */
#include "keel/flow.h"

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

#define UNITS_PER_TOKEN 1000000000

__extension__ typedef __int128 units_t;

struct keel_ratelimit {
  keel__spinlock_t lock;
  uint64_t rate;    /* tokens per second = units per ns */
  uint64_t burst;   /* tokens */
  units_t capacity; /* burst in units */
  units_t level;    /* units at last_ns; below zero: owed to waiting callers */
  int64_t last_ns;  /* when level was brought up to date */
  bool started;     /* the clock starts at first use (lab clocks start in keel_run) */
};

int keel_ratelimit_new(uint64_t rate_per_sec, uint64_t burst, keel_ratelimit_t **out) {
  *out = NULL;
  if (rate_per_sec == 0 || burst == 0 || rate_per_sec > KEEL_RATELIMIT_MAX_RATE ||
      burst > KEEL_RATELIMIT_MAX_BURST)
    return -EINVAL;
  keel_ratelimit_t *rl = calloc(1, sizeof *rl);
  if (!rl)
    return -ENOMEM;
  atomic_flag_clear(&rl->lock.flag);
  rl->rate = rate_per_sec;
  rl->burst = burst;
  rl->capacity = (units_t)burst * UNITS_PER_TOKEN;
  rl->level = rl->capacity;
  *out = rl;
  return 0;
}

void keel_ratelimit_free(keel_ratelimit_t *rl) { free(rl); }

/* Under the lock: adds what accrued since last_ns, up to capacity. Workers
 * read the clock before taking the lock, so now may be a little behind
 * last_ns. */
static void refill_locked(keel_ratelimit_t *rl, int64_t now) {
  if (!rl->started) {
    rl->started = true;
    rl->last_ns = now;
    return;
  }
  if (now <= rl->last_ns)
    return;
  units_t level = rl->level + (units_t)(now - rl->last_ns) * rl->rate;
  rl->last_ns = now;
  rl->level = level < rl->capacity ? level : rl->capacity;
}

/* Takes n tokens: 0 (they were there), 1 (taken on credit: *wait_ns until
 * the debt is paid, which is below limit_ns), or -EAGAIN (the wait would
 * not be below limit_ns: nothing taken). */
static int take(keel_ratelimit_t *rl, uint64_t n, int64_t now, int64_t limit_ns, int64_t *wait_ns) {
  units_t need = (units_t)n * UNITS_PER_TOKEN;
  int rc = 0;
  keel__spin_lock(&rl->lock);
  refill_locked(rl, now);
  units_t after = rl->level - need;
  if (after < 0) {
    units_t wait = (-after + rl->rate - 1) / rl->rate;
    rc = wait < limit_ns ? 1 : -EAGAIN;
    if (rc == 1)
      *wait_ns = (int64_t)wait;
  }
  if (rc >= 0)
    rl->level = after;
  keel__spin_unlock(&rl->lock);
  return rc;
}

/* A cancelled waiter's tokens go back to the bucket. */
static void give_back(keel_ratelimit_t *rl, uint64_t n) {
  int64_t now = keel_now_ns();
  keel__spin_lock(&rl->lock);
  refill_locked(rl, now);
  units_t level = rl->level + (units_t)n * UNITS_PER_TOKEN;
  rl->level = level < rl->capacity ? level : rl->capacity;
  keel__spin_unlock(&rl->lock);
}

int keel_ratelimit_try_acquire(keel_ratelimit_t *rl, uint64_t n) {
  if (n > rl->burst)
    return -EINVAL;
  if (n == 0)
    return 0;
  int64_t unused;
  return take(rl, n, keel_now_ns(), 0, &unused) == 0 ? 0 : -EAGAIN;
}

int keel_ratelimit_acquire(keel_ratelimit_t *rl, uint64_t n) {
  if (n > rl->burst || !keel__task_self())
    return -EINVAL;
  if (n == 0)
    return 0;
  int rc = keel_checkpoint();
  if (rc < 0)
    return rc;
  int64_t now = keel_now_ns();
  int64_t wait;
  /* Tokens that would come at or after the deadline: fail now, take nothing. */
  rc = take(rl, n, now, keel_deadline() - now, &wait);
  if (rc <= 0)
    return rc == 0 ? 0 : -ETIMEDOUT;
  rc = keel_sleep_until(now + wait);
  if (rc < 0)
    give_back(rl, n);
  return rc;
}

uint64_t keel_ratelimit_available(keel_ratelimit_t *rl) {
  int64_t now = keel_now_ns();
  keel__spin_lock(&rl->lock);
  refill_locked(rl, now);
  uint64_t tokens = rl->level > 0 ? (uint64_t)(rl->level / UNITS_PER_TOKEN) : 0;
  keel__spin_unlock(&rl->lock);
  return tokens;
}
