/* Token bucket. Tokens are counted in billionths (units), so refilling
 * rate tokens per second adds exactly rate units per nanosecond: integer
 * arithmetic, no drift, and the wait for a deficit is an exact ceiling
 * division (in lab mode a waiter wakes at the very nanosecond its tokens
 * exist). Any worker may use a bucket: a spinlock guards the few
 * instructions of bookkeeping; waiting is a plain sleep outside the lock,
 * after which the waiter looks again. */
#include "keel/flow.h"

#include <errno.h>
#include <stdlib.h>

#include "internal.h"

#define UNITS_PER_TOKEN UINT64_C(1000000000)

struct keel_ratelimit {
  keel__spinlock_t lock;
  uint64_t rate;     /* tokens per second = units per ns */
  uint64_t burst;    /* tokens */
  uint64_t capacity; /* burst in units */
  uint64_t level;    /* units available at last_ns */
  int64_t last_ns;   /* when level was brought up to date */
  int64_t fill_ns;   /* time to fill an empty bucket: longer gaps add no more */
  bool started;      /* the clock starts at first use (lab clocks start in keel_run) */
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
  rl->capacity = burst * UNITS_PER_TOKEN;
  rl->level = rl->capacity;
  rl->fill_ns = (int64_t)((rl->capacity + rate_per_sec - 1) / rate_per_sec);
  *out = rl;
  return 0;
}

void keel_ratelimit_free(keel_ratelimit_t *rl) { free(rl); }

/* Under the lock: adds what accrued since last_ns. Workers read the clock
 * before taking the lock, so now may be a little behind last_ns. */
static void refill_locked(keel_ratelimit_t *rl, int64_t now) {
  if (!rl->started) {
    rl->started = true;
    rl->last_ns = now;
    return;
  }
  if (now <= rl->last_ns)
    return;
  int64_t elapsed = now - rl->last_ns;
  rl->last_ns = now;
  if (elapsed >= rl->fill_ns) {
    rl->level = rl->capacity;
    return;
  }
  /* elapsed < fill_ns, so this stays below capacity + rate: no overflow. */
  uint64_t level = rl->level + (uint64_t)elapsed * rl->rate;
  rl->level = level < rl->capacity ? level : rl->capacity;
}

/* Takes n tokens and returns 0, or returns how many ns until they exist. */
static int64_t take_or_wait(keel_ratelimit_t *rl, uint64_t n, int64_t now) {
  uint64_t need = n * UNITS_PER_TOKEN;
  keel__spin_lock(&rl->lock);
  refill_locked(rl, now);
  uint64_t level = rl->level;
  if (level >= need)
    rl->level = level - need;
  keel__spin_unlock(&rl->lock);
  if (level >= need)
    return 0;
  return (int64_t)((need - level + rl->rate - 1) / rl->rate);
}

int keel_ratelimit_try_acquire(keel_ratelimit_t *rl, uint64_t n) {
  if (n > rl->burst)
    return -EINVAL;
  if (n == 0)
    return 0;
  return take_or_wait(rl, n, keel_now_ns()) == 0 ? 0 : -EAGAIN;
}

int keel_ratelimit_acquire(keel_ratelimit_t *rl, uint64_t n) {
  if (n > rl->burst || !keel__task_self())
    return -EINVAL;
  if (n == 0)
    return 0;
  for (;;) {
    int rc = keel_checkpoint();
    if (rc < 0)
      return rc;
    int64_t now = keel_now_ns();
    int64_t wait = take_or_wait(rl, n, now);
    if (wait == 0)
      return 0;
    if (wait >= keel_deadline() - now) /* a deadline has passed at now >= deadline */
      return -ETIMEDOUT;               /* the tokens would come too late: fail now */
    rc = keel_sleep_until(now + wait);
    if (rc < 0)
      return rc;
  }
}

uint64_t keel_ratelimit_available(keel_ratelimit_t *rl) {
  int64_t now = keel_now_ns();
  keel__spin_lock(&rl->lock);
  refill_locked(rl, now);
  uint64_t tokens = rl->level / UNITS_PER_TOKEN;
  keel__spin_unlock(&rl->lock);
  return tokens;
}
