/* Retry with exponential backoff and full jitter: the sleep before attempt
 * k+1 is uniform in [0, min(cap, base * 2^k)]. Full jitter spreads clients
 * that failed together (a restarted backend) over the whole window instead
 * of letting them retry in lockstep. The total deadline is enforced as the
 * task's deadline, so it cuts attempts too, and no sleep is started that
 * would end at or after it: an attempt that could not begin is not worth
 * the wait. */
#include "keel/flow.h"

#include <errno.h>

#include "worker.h"

void keel_retry_opts_init(keel_retry_opts_t *o) {
  *o = (keel_retry_opts_t){
      .max_attempts = 5,
      .base_ns = 100 * KEEL_NS_PER_MS,
      .cap_ns = 10 * KEEL_NS_PER_SEC,
      .deadline_ns = KEEL_DEADLINE_NONE,
  };
}

int64_t keel_retry_ceiling_ns(int64_t base_ns, int64_t cap_ns, unsigned attempt) {
  if (base_ns <= 0 || cap_ns <= 0)
    return 0;
  /* base << attempt would overflow exactly when it would exceed cap
   * anyway: compare against cap shifted the other way. */
  if (attempt >= 63 || base_ns > (cap_ns >> attempt))
    return cap_ns;
  return base_ns << attempt;
}

static int64_t backoff_ns(const keel_retry_opts_t *o, unsigned attempt) {
  int64_t ceiling = keel_retry_ceiling_ns(o->base_ns, o->cap_ns, attempt);
  return (int64_t)keel_random_below((uint64_t)ceiling + 1);
}

static bool may_retry(const keel_retry_opts_t *o, int err) {
  if (o->should_retry)
    return o->should_retry(err, o->user);
  return err != -ECANCELED;
}

/* The attempts, under the total deadline already set as the task's. */
static int retry_loop(const keel_retry_opts_t *o, keel_task_fn fn, void *arg) {
  for (unsigned attempt = 0;; attempt++) {
    int rc = fn(arg);
    if (rc >= 0)
      return rc;
    int stop = keel_checkpoint();
    if (stop == -ECANCELED)
      return stop;
    /* stop == -ETIMEDOUT: a deadline passed during the attempt. */
    if (stop < 0 || attempt + 1 >= o->max_attempts || !may_retry(o, rc))
      return rc;
    int64_t delay = backoff_ns(o, attempt);
    int64_t now = keel_now_ns();
    if (delay >= keel_deadline() - now)
      return rc; /* the next attempt could not start before the deadline */
    if (o->on_retry)
      o->on_retry(attempt, delay, rc, o->user);
    stop = keel_sleep_until(now + delay);
    if (stop == 0) /* timers are coarse: the wake-up may come past a deadline */
      stop = keel_checkpoint();
    if (stop == -ECANCELED)
      return stop;
    if (stop < 0)
      return rc; /* no attempt starts at or after a deadline */
  }
}

int keel_retry(const keel_retry_opts_t *opts, keel_task_fn fn, void *arg) {
  keel_retry_opts_t d;
  keel_retry_opts_init(&d);
  if (opts) { /* a zero field takes its default */
    keel_retry_opts_t u = *opts;
    d.max_attempts = u.max_attempts ? u.max_attempts : d.max_attempts;
    d.base_ns = u.base_ns ? u.base_ns : d.base_ns;
    d.cap_ns = u.cap_ns ? u.cap_ns : d.cap_ns;
    d.deadline_ns = u.deadline_ns;
    d.should_retry = u.should_retry;
    d.on_retry = u.on_retry;
    d.user = u.user;
  }
  const keel_retry_opts_t *o = &d;
  if (!fn || o->base_ns < 0 || o->cap_ns < 0 || !keel__task_self())
    return -EINVAL;
  int64_t total = o->deadline_ns > 0 ? o->deadline_ns : KEEL_DEADLINE_NONE;
  /* Nest the total deadline in the task's own: the nearer one stays. */
  int64_t prev = keel_task_set_deadline(total);
  if (prev < total)
    keel_task_set_deadline(prev);
  int rc = keel_checkpoint();
  if (rc == 0)
    rc = retry_loop(o, fn, arg);
  keel_task_set_deadline(prev);
  return rc;
}
