/* Token bucket. Tokens are counted in billionths (units), so refilling
 * rate tokens per second adds exactly rate units per nanosecond: integer
 * arithmetic, no drift, and the wait for a deficit is an exact ceiling
 * division (in lab mode a waiter wakes at the very nanosecond its tokens
 * exist).
 *
 * Callers that must wait form a line, served in the order they came. Only
 * the head of the line sleeps, on a timer, until its own tokens exist;
 * then it takes them and hands the head role to the next caller in line.
 * Nobody takes tokens on credit, so a caller that leaves the line gives
 * nothing back and changes nobody's wake-up time: a queued caller that is
 * cancelled just leaves the list; a head that is cancelled (or cancelled
 * in the moment it was handed the role) passes the role on, and the new
 * head works out its time from the level as it is. While anyone waits,
 * try_acquire and a newcomer never overtake: what accrues belongs to the
 * line, so available() says 0.
 *
 * While the line is not empty the level is not capped at burst: a head
 * that wakes late (timer ticks, a busy worker) still finds every token that
 * accrued since its tokens were due, so lateness does not add up down the
 * line, and the up-front deadline check (which counts the head's need, the
 * queue's and the caller's own at the refill rate) holds exactly. The cap
 * is applied at each hand-off.
 *
 * Any worker may use a bucket: the line is a keel sync waiter list (its
 * spinlock guards the bookkeeping too), the head role is handed over by
 * claiming the next waiter, so it wakes on its own worker. */
#include "keel/flow.h"

#include <errno.h>
#include <stdlib.h>

#include "../sync/sync-internal.h"

#define UNITS_PER_TOKEN 1000000000

__extension__ typedef __int128 units_t;

struct keel_ratelimit {
  keel__waitq_t line; /* callers behind the head, in arrival order; its lock guards all */
  uint64_t rate;      /* tokens per second = units per ns */
  uint64_t burst;     /* tokens */
  units_t capacity;   /* burst in units */
  units_t level;      /* units at last_ns; above capacity only while a head is late */
  int64_t last_ns;    /* when level was brought up to date */
  uint64_t head_need; /* tokens the head of the line waits for; 0: nobody waits */
  units_t queued;     /* tokens the callers behind the head ask for */
  bool started;       /* the clock starts at first use (lab clocks start in keel_run) */
};

/* A caller queued behind the head; super.need is its tokens. */
typedef struct rl_waiter {
  keel__sync_waiter_t super;
  keel_ratelimit_t *rl;
} rl_waiter_t;

int keel_ratelimit_open(uint64_t rate_per_sec, uint64_t burst, keel_ratelimit_t **out) {
  *out = NULL;
  if (rate_per_sec == 0 || burst == 0 || rate_per_sec > KEEL_RATELIMIT_MAX_RATE ||
      burst > KEEL_RATELIMIT_MAX_BURST)
    return -EINVAL;
  keel_ratelimit_t *rl = calloc(1, sizeof *rl);
  if (!rl)
    return -ENOMEM;
  keel__waitq_init(&rl->line);
  rl->rate = rate_per_sec;
  rl->burst = burst;
  rl->capacity = (units_t)burst * UNITS_PER_TOKEN;
  rl->level = rl->capacity;
  *out = rl;
  return 0;
}

void keel_ratelimit_close(keel_ratelimit_t *rl) { free(rl); }

/* Under the lock: adds what accrued since last_ns, up to capacity unless
 * someone waits. Workers read the clock before taking the lock, so now may
 * be a little behind last_ns. */
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
  rl->level = rl->head_need || level < rl->capacity ? level : rl->capacity;
}

/* Nanoseconds until the level covers tokens (0: it does now). */
static units_t wait_for(const keel_ratelimit_t *rl, units_t tokens) {
  units_t missing = tokens * UNITS_PER_TOKEN - rl->level;
  return missing > 0 ? (missing + rl->rate - 1) / rl->rate : 0;
}

/* Under the lock, the head gone (served, cancelled, out of time): the
 * first caller in line becomes the head, claimed into wake to be told so;
 * with nobody in line, the line is empty and the cap applies again. */
static void next_head_locked(keel_ratelimit_t *rl, keel__queue_t *wake) {
  keel__sync_waiter_t *next = keel__waitq_head(&rl->line);
  if (!next) {
    rl->head_need = 0;
    if (rl->level > rl->capacity)
      rl->level = rl->capacity;
    return;
  }
  rl->queued -= next->need;
  rl->head_need = next->need;
  /* Keep what the line still needs (a head that woke late left tokens
   * for those behind it); only what nobody waits for is capped away. */
  units_t line = ((units_t)rl->head_need + rl->queued) * UNITS_PER_TOKEN;
  units_t cap = line > rl->capacity ? line : rl->capacity;
  if (rl->level > cap)
    rl->level = cap;
  keel__sync_claim(wake, next, 0);
}

/* The head leaves without its tokens: the next caller takes over. */
static void leave_head(keel_ratelimit_t *rl) {
  keel__queue_t wake;
  keel__queue_init(&wake);
  int64_t now = keel_now_ns();
  keel__waitq_lock(&rl->line);
  refill_locked(rl, now);
  next_head_locked(rl, &wake);
  keel__waitq_unlock(&rl->line);
  keel__xwait_deliver_claimed(&wake);
}

/* As the head of the line: sleeps until n tokens exist, takes them and
 * hands the head role on. The wait is worked out again after each sleep,
 * so a clock read a little early costs one more short sleep, never a
 * token too many. */
static int lead(keel_ratelimit_t *rl, uint64_t n) {
  for (;;) {
    keel__queue_t wake;
    keel__queue_init(&wake);
    int64_t now = keel_now_ns();
    keel__waitq_lock(&rl->line);
    refill_locked(rl, now);
    units_t wait = wait_for(rl, n);
    if (wait == 0) {
      rl->level -= (units_t)n * UNITS_PER_TOKEN;
      next_head_locked(rl, &wake);
    }
    keel__waitq_unlock(&rl->line);
    if (wait == 0) {
      keel__xwait_deliver_claimed(&wake);
      return 0;
    }
    int rc = keel_sleep_until(now + (int64_t)wait);
    if (rc < 0) {
      leave_head(rl);
      return rc;
    }
  }
}

/* A queued caller left the line (cancelled, out of time): those behind it
 * move up; the head's time never depended on it. */
static void waiter_left(void *obj, keel__queue_t *wake) {
  rl_waiter_t *w = obj;
  (void)wake;
  w->rl->queued -= w->super.need;
}

static void waiter_abort(keel__wait_t *w, int err) { keel__sync_abort(w, err, waiter_left); }

int keel_ratelimit_try_acquire(keel_ratelimit_t *rl, uint64_t n) {
  if (n > rl->burst)
    return -EINVAL;
  if (n == 0)
    return 0;
  int64_t now = keel_now_ns();
  int rc = -EAGAIN;
  keel__waitq_lock(&rl->line);
  refill_locked(rl, now);
  if (!rl->head_need && wait_for(rl, n) == 0) {
    rl->level -= (units_t)n * UNITS_PER_TOKEN;
    rc = 0;
  }
  keel__waitq_unlock(&rl->line);
  return rc;
}

int keel_ratelimit_acquire(keel_ratelimit_t *rl, uint64_t n) {
  if (n > rl->burst || !keel__task_self())
    return -EINVAL;
  if (n == 0)
    return 0;
  int rc = keel_checkpoint();
  if (rc < 0)
    return rc;
  int64_t deadline = keel_deadline();
  int64_t now = keel_now_ns();
  keel__waitq_lock(&rl->line);
  refill_locked(rl, now);
  units_t ahead = rl->head_need + rl->queued;
  units_t wait = wait_for(rl, ahead + n);
  if (ahead == 0 && wait == 0) {
    rl->level -= (units_t)n * UNITS_PER_TOKEN;
    keel__waitq_unlock(&rl->line);
    return 0;
  }
  /* Tokens that could only come at or after the deadline, with the line
   * ahead served first: fail now, take nothing, stay out of the line. */
  if (wait >= (units_t)deadline - now) {
    keel__waitq_unlock(&rl->line);
    return -ETIMEDOUT;
  }
  if (ahead == 0) {
    rl->head_need = n;
    keel__waitq_unlock(&rl->line);
    return lead(rl, n);
  }
  rl->queued += n;
  rl_waiter_t w = {.rl = rl};
  rc = (int)keel__sync_park(&rl->line, &w.super, n, &w, waiter_abort, KEEL__WAIT_RATELIMIT);
  if (rc < 0)
    return rc; /* it has left the line */
  /* Handed the head role, then cancelled before running: pass it on. */
  rc = keel__check_cancel();
  if (rc < 0) {
    leave_head(rl);
    return rc;
  }
  return lead(rl, n);
}

uint64_t keel_ratelimit_available(keel_ratelimit_t *rl) {
  int64_t now = keel_now_ns();
  keel__waitq_lock(&rl->line);
  refill_locked(rl, now);
  uint64_t tokens = rl->head_need ? 0 : (uint64_t)(rl->level / UNITS_PER_TOKEN);
  keel__waitq_unlock(&rl->line);
  return tokens;
}
