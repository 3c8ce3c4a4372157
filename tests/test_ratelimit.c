/* Token bucket: starts full, try_acquire and its limits, refill in exact
 * virtual ns (lab mode) and in real time with a tolerance, the cap at
 * burst, deadline-aware acquire (fails at once when the tokens would come
 * too late), cancellation of a waiter, and two workers sharing one bucket
 * never getting more than rate allows. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#define BACKEND KEEL_BACKEND_EPOLL
#define MS KEEL_NS_PER_MS

static void run_body(keel_task_fn fn, void *arg) {
  assert_int_equal(kt_run_guarded(BACKEND, 1, fn, arg), 0);
}

/* Lab mode: one worker and a virtual clock, so times are exact. */
static void run_lab(keel_task_fn fn, void *arg) {
  assert_int_equal(kt_run_guarded_lab(5, fn, arg), 0);
}

static void test_new_rejects_bad_options(void **state) {
  (void)state;
  keel_ratelimit_t *rl = (keel_ratelimit_t *)&rl;
  assert_int_equal(keel_ratelimit_new(0, 1, &rl), -EINVAL);
  assert_null(rl);
  assert_int_equal(keel_ratelimit_new(1, 0, &rl), -EINVAL);
  assert_int_equal(keel_ratelimit_new(KEEL_RATELIMIT_MAX_RATE + 1, 1, &rl), -EINVAL);
  assert_int_equal(keel_ratelimit_new(1, KEEL_RATELIMIT_MAX_BURST + 1, &rl), -EINVAL);
  assert_int_equal(keel_ratelimit_new(KEEL_RATELIMIT_MAX_RATE, KEEL_RATELIMIT_MAX_BURST, &rl), 0);
  assert_int_equal(keel_ratelimit_acquire(rl, 1), -EINVAL); /* outside a task */
  keel_ratelimit_free(rl);
  keel_ratelimit_free(NULL);
}

static int try_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_new(1, 3, &rl)); /* 1 token/s: no refill during the test */
  CHECK_EQ(keel_ratelimit_available(rl), 3);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 0), 0);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 4), -EINVAL);
  CHECK_EQ(keel_ratelimit_acquire(rl, 4), -EINVAL);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 2), 0);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 2), -EAGAIN);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), 0);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), -EAGAIN);
  CHECK_EQ(keel_ratelimit_available(rl), 0);
  CHECK_EQ(keel_ratelimit_acquire(rl, 0), 0);
  keel_ratelimit_free(rl);
  return 0;
}
static void test_try_acquire(void **state) {
  (void)state;
  run_body(try_body, NULL);
}

/* 10 tokens/s, burst 2: waits are 100 ms per missing token. slack 0:
 * exact (lab); else the real-time tolerance. */
static int refill_body(void *arg) {
  int64_t slack = *(int64_t *)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_new(10, 2, &rl));
  int64_t t0 = keel_now_ns();
  CHECK_EQ(keel_ratelimit_acquire(rl, 2), 0);
  CHECK(keel_now_ns() - t0 <= slack); /* the bucket starts full */
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  int64_t t1 = keel_now_ns() - t0;
  CHECK(t1 >= 100 * MS && t1 <= 100 * MS + slack);
  CHECK_EQ(keel_ratelimit_acquire(rl, 2), 0);
  int64_t t2 = keel_now_ns() - t0;
  CHECK(t2 >= 300 * MS && t2 <= 300 * MS + slack);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), -EAGAIN);
  /* A long idle period refills to burst, no further. */
  CHECK_RC(keel_sleep_ms(1000));
  CHECK_EQ(keel_ratelimit_available(rl), 2);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 2), 0);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), -EAGAIN);
  keel_ratelimit_free(rl);
  return 0;
}
static void test_lab_refill_exact(void **state) {
  (void)state;
  int64_t slack = 0;
  run_lab(refill_body, &slack);
}
static void test_refill_real_time(void **state) {
  (void)state;
  int64_t slack = 250 * MS;
  run_body(refill_body, &slack);
}

/* A partial refill never lifts the level above burst either. */
static int capped_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_new(10, 3, &rl)); /* full after 300 ms */
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), 0);
  CHECK_RC(keel_sleep_ms(250)); /* 2 + 2.5 tokens, capped at 3 */
  CHECK_EQ(keel_ratelimit_available(rl), 3);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 3), 0);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), -EAGAIN);
  keel_ratelimit_free(rl);
  return 0;
}
static void test_partial_refill_capped(void **state) {
  (void)state;
  run_body(capped_body, NULL);
}

/* Lab: fractional refill accumulates exactly: at 3 tokens/s the first
 * token takes 333333334 ns (rounded up), three take exactly 1 s. */
static int fraction_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_new(3, 3, &rl));
  int64_t t0 = keel_now_ns();
  CHECK_EQ(keel_ratelimit_acquire(rl, 3), 0);
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  CHECK_EQ(keel_now_ns() - t0, 333333334);
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  CHECK_EQ(keel_now_ns() - t0, KEEL_NS_PER_SEC);
  keel_ratelimit_free(rl);
  return 0;
}
static void test_lab_fractional_rate(void **state) {
  (void)state;
  run_lab(fraction_body, NULL);
}

static int deadline_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_new(1, 1, &rl));
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 50 * MS);
  int64_t t0 = kt_mono_ns();
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), -ETIMEDOUT); /* the token comes in 1 s */
  CHECK(kt_mono_ns() - t0 < 40 * MS);                  /* failed at once */
  keel_task_set_deadline(prev);
  keel_ratelimit_free(rl);
  return 0;
}
static void test_deadline_fails_at_once(void **state) {
  (void)state;
  run_body(deadline_body, NULL);
}

struct waiter {
  keel_ratelimit_t *rl;
  int rc;
};
static int waiter_task(void *arg) {
  struct waiter *w = arg;
  w->rc = keel_ratelimit_acquire(w->rl, 1);
  return 0;
}
static int cancel_body(void *arg) {
  (void)arg;
  struct waiter w = {NULL, 1};
  CHECK_RC(keel_ratelimit_new(1, 1, &w.rl));
  CHECK_EQ(keel_ratelimit_try_acquire(w.rl, 1), 0);
  keel_scope_t *s = keel_scope_open(NULL);
  CHECK(s);
  CHECK_RC(keel_spawn(s, waiter_task, &w, NULL));
  CHECK_RC(keel_sleep_ms(5));
  CHECK_EQ(w.rc, 1); /* still waiting */
  int64_t t0 = kt_mono_ns();
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  CHECK(kt_mono_ns() - t0 < 500 * MS);
  CHECK_EQ(w.rc, -ECANCELED);
  CHECK_EQ(keel_ratelimit_available(w.rl), 0); /* the cancelled waiter took nothing */
  keel_ratelimit_free(w.rl);
  return 0;
}
static void test_cancel_waiter(void **state) {
  (void)state;
  run_body(cancel_body, NULL);
}

/* Waiters are served in the order they came (lab: exact times). 10
 * tokens/s, burst 10, empty: a request for 10 at t0 is due at t0+1 s; one
 * for 1 at t0+1 ms must wait behind it (t0+1.1 s), not take the first
 * token to come back (t0+100 ms); try_acquire fails while they wait. A
 * cancelled waiter's tokens go back: the one behind it still wakes at its
 * time, and the tokens are there for the next caller. */
struct timed_waiter {
  keel_ratelimit_t *rl;
  uint64_t n;
  int64_t start_at, done_at;
  int rc;
};
static int timed_waiter_task(void *arg) {
  struct timed_waiter *w = arg;
  CHECK_RC(keel_sleep_until(w->start_at));
  w->rc = keel_ratelimit_acquire(w->rl, w->n);
  w->done_at = keel_now_ns();
  return 0;
}
static int fifo_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_new(10, 10, &rl));
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 10), 0);
  int64_t t0 = keel_now_ns();
  struct timed_waiter big = {rl, 10, t0, 0, 1}, small = {rl, 1, t0 + 1 * MS, 0, 1};
  keel_scope_t *s = keel_scope_open(NULL);
  CHECK(s);
  CHECK_RC(keel_spawn(s, timed_waiter_task, &big, NULL));
  CHECK_RC(keel_spawn(s, timed_waiter_task, &small, NULL));
  CHECK_RC(keel_sleep_until(t0 + 500 * MS));
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), -EAGAIN); /* 5 tokens accrued, all owed */
  CHECK_EQ(keel_ratelimit_available(rl), 0);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  CHECK_EQ(big.rc, 0);
  CHECK_EQ(small.rc, 0);
  CHECK_EQ(big.done_at, t0 + 1000 * MS);
  CHECK_EQ(small.done_at, t0 + 1100 * MS);
  CHECK_EQ(keel_ratelimit_available(rl), 0);

  /* Cancel a waiter owing 5 tokens: they come back. */
  int64_t t1 = keel_now_ns();
  struct timed_waiter a = {rl, 5, t1, 0, 1}, b = {rl, 1, t1 + 1 * MS, 0, 1};
  keel_scope_t *sa = keel_scope_open(NULL);
  s = keel_scope_open(NULL);
  CHECK(sa && s);
  CHECK_RC(keel_spawn(sa, timed_waiter_task, &a, NULL));
  CHECK_RC(keel_spawn(s, timed_waiter_task, &b, NULL));
  CHECK_RC(keel_sleep_until(t1 + 200 * MS)); /* a is due at +500, b at +600 */
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  keel_scope_close(sa);
  CHECK_EQ(a.rc, -ECANCELED);
  /* accrued 2 tokens, owed 6, given back 5: one token is there now */
  CHECK_EQ(keel_ratelimit_available(rl), 1);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), 0);
  keel_scope_close(s);
  CHECK_EQ(b.rc, 0);
  CHECK_EQ(b.done_at, t1 + 600 * MS); /* it keeps its time */
  keel_ratelimit_free(rl);
  return 0;
}
static void test_lab_waiters_in_order(void **state) {
  (void)state;
  run_lab(fifo_body, NULL);
}

/* Two workers, four tasks each, share one bucket: the tokens granted can
 * never outrun burst + rate * elapsed. */
#define RATE 2000
#define BURST 10
#define PER_TASK (25 / KT_SCALE + 5)
#define TASKS_PER_WORKER 4
struct shared {
  keel_ratelimit_t *rl;
  atomic_int granted;
};
static int consumer(void *arg) {
  struct shared *sh = arg;
  for (int i = 0; i < PER_TASK; i++) {
    CHECK_RC(keel_ratelimit_acquire(sh->rl, 1));
    atomic_fetch_add(&sh->granted, 1);
  }
  return 0;
}
static int shared_body(void *arg) {
  (void)arg;
  struct shared sh = {NULL, 0};
  CHECK_RC(keel_ratelimit_new(RATE, BURST, &sh.rl));
  int64_t t0 = kt_mono_ns();
  keel_scope_t *s = keel_scope_open(NULL);
  CHECK(s);
  for (int w = 0; w < 2; w++)
    for (int i = 0; i < TASKS_PER_WORKER; i++) {
      keel_spawn_opts_t o = {.name = "consumer", .on_worker = KEEL_WORKER(w)};
      CHECK_RC(keel_spawn(s, consumer, &sh, &o));
    }
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  int64_t took = kt_mono_ns() - t0;
  int total = 2 * TASKS_PER_WORKER * PER_TASK;
  CHECK_EQ(atomic_load(&sh.granted), total);
  /* No more than burst + rate * elapsed tokens: elapsed >= (total - burst) / rate. */
  int64_t min_ns = (int64_t)(total - BURST) * KEEL_NS_PER_SEC / RATE;
  if (took < min_ns)
    KT_FAIL("granted %d tokens in %lld ns, the rate allows that only after %lld ns", total,
            (long long)took, (long long)min_ns);
  CHECK(took < min_ns + 5000 * MS);
  keel_ratelimit_free(sh.rl);
  return 0;
}
static void test_two_workers_share(void **state) {
  (void)state;
  assert_int_equal(kt_run_guarded(BACKEND, 2, shared_body, NULL), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_rejects_bad_options), cmocka_unit_test(test_try_acquire),
      cmocka_unit_test(test_lab_refill_exact),        cmocka_unit_test(test_refill_real_time),
      cmocka_unit_test(test_partial_refill_capped),   cmocka_unit_test(test_lab_fractional_rate),
      cmocka_unit_test(test_deadline_fails_at_once),  cmocka_unit_test(test_cancel_waiter),
      cmocka_unit_test(test_lab_waiters_in_order),    cmocka_unit_test(test_two_workers_share),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
