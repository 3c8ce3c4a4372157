/* keel_retry: the backoff schedule (attempt k+1 starts exactly at the
 * failure of attempt k plus the delay on_retry reported, each delay within
 * [0, min(cap, base << k)]) in lab mode in exact virtual time and in real
 * time with a tolerance; replay with the same lab seed; the total deadline
 * (no sleep past it, attempts cut by it, the caller's nearer deadline);
 * should_retry; cancellation during an attempt and during a backoff sleep;
 * the task deadline restored; the ceiling's overflow guard; bad options. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#define MS KEEL_NS_PER_MS
#define MAX_TRACE 64

/* What the attempts and the observer saw. */
struct trace {
  int64_t work_ms;                  /* each attempt sleeps this long, then fails */
  int succeed_on;                   /* attempt number (1-based) that succeeds; 0: none */
  int fail_with;                    /* the error attempts fail with (0: -EIO) */
  keel_scope_t *cancel_in_observer; /* on_retry cancels this scope */
  int attempts;
  atomic_int began; /* attempts begun (read from another worker) */
  int64_t start[MAX_TRACE], fail[MAX_TRACE];
  int retries;
  unsigned retry_attempt[MAX_TRACE];
  int64_t delay[MAX_TRACE];
  int retry_err[MAX_TRACE];
};

static int attempt_fn(void *arg) {
  struct trace *t = arg;
  int k = t->attempts++;
  if (k >= MAX_TRACE)
    return -E2BIG;
  t->start[k] = keel_now_ns();
  atomic_fetch_add(&t->began, 1);
  if (t->work_ms > 0) {
    int rc = keel_sleep_ms(t->work_ms);
    if (rc < 0)
      return rc;
  }
  t->fail[k] = keel_now_ns();
  if (k + 1 == t->succeed_on)
    return 99;
  return t->fail_with ? t->fail_with : -EIO;
}

static void observe(unsigned attempt, int64_t delay_ns, int err, void *user) {
  struct trace *t = user;
  if (t->retries < MAX_TRACE) {
    t->retry_attempt[t->retries] = attempt;
    t->delay[t->retries] = delay_ns;
    t->retry_err[t->retries] = err;
  }
  t->retries++;
  if (t->cancel_in_observer)
    keel_scope_cancel(t->cancel_in_observer, KEEL_CANCEL_USER);
}

static void opts_for(keel_retry_opts_t *o, struct trace *t, unsigned max, int64_t base,
                     int64_t cap) {
  keel_retry_opts_init(o);
  o->max_attempts = max;
  o->base_ns = base;
  o->cap_ns = cap;
  o->on_retry = observe;
  o->user = t;
}

/* Checks the schedule: attempt k+1 began within [delay, delay + slack]
 * after attempt k failed (slack 0: exactly), each delay in bounds. The
 * slack is kt_late_ns(): none in lab mode. */
static int check_schedule(const struct trace *t, const keel_retry_opts_t *o, int64_t slack) {
  /* In real time a sleep may end late, past the deadline: then the last
   * planned retry never started. */
  CHECK(t->retries == t->attempts - 1 || (slack > 0 && t->retries == t->attempts));
  for (int k = 0; k < t->retries; k++) {
    CHECK_EQ(t->retry_attempt[k], k);
    CHECK_EQ(t->retry_err[k], t->fail_with ? t->fail_with : -EIO);
    CHECK(t->delay[k] >= 0);
    CHECK(t->delay[k] <= keel_retry_ceiling_ns(o->base_ns, o->cap_ns, (unsigned)k));
    if (k + 1 == t->attempts)
      break;
    int64_t gap = t->start[k + 1] - t->fail[k];
    if (gap < t->delay[k] || gap > t->delay[k] + slack)
      KT_FAIL("attempt %d began %lld ns after the failure, delay %lld (slack %lld)", k + 1,
              (long long)gap, (long long)t->delay[k], (long long)slack);
  }
  return 0;
}

/* ---- The schedule -------------------------------------------------------------- */

/* arg: the trace, reset first (it holds what the last run saw). */
static int schedule_body(void *arg) {
  struct trace *t = arg;
  memset(t, 0, sizeof *t);
  t->work_ms = 7;
  keel_retry_opts_t o;
  opts_for(&o, t, 6, 10 * MS, 50 * MS);
  CHECK_EQ(keel_retry(&o, attempt_fn, t), -EIO);
  CHECK_EQ(t->attempts, 6);
  return check_schedule(t, &o, kt_late_ns());
}
static void test_schedule(void **state) {
  (void)state;
  static struct trace t;
  kt_run_body(schedule_body, &t, 1);
}

/* The same lab seed gives the same delays; another seed others. */
static void test_lab_same_seed_replays(void **state) {
  (void)state;
  static struct trace a, b, other;
  kt_run_lab_body(schedule_body, &a, 11);
  kt_run_lab_body(schedule_body, &b, 11);
  kt_run_lab_body(schedule_body, &other, 12);
  assert_int_equal(a.retries, 5);
  assert_int_equal(b.retries, 5);
  assert_memory_equal(a.delay, b.delay, 5 * sizeof a.delay[0]);
  assert_memory_equal(a.start, b.start, 6 * sizeof a.start[0]);
  assert_memory_not_equal(a.delay, other.delay, 5 * sizeof a.delay[0]);
}

/* ---- The total deadline -------------------------------------------------------- */

static int deadline_body(void *arg) {
  (void)arg;
  struct trace t = {0};
  /* Attempts fail at once (no blocking): only a sleep could meet the
   * deadline, and none may be started that would. */
  keel_retry_opts_t o;
  opts_for(&o, &t, 1000, 40 * MS, 1000 * MS);
  int64_t before = keel_deadline();
  o.deadline_ns = keel_now_ns() + 100 * MS;
  int rc = keel_retry(&o, attempt_fn, &t);
  int64_t end = keel_now_ns();
  CHECK_EQ(rc, -EIO); /* the last error, not -ETIMEDOUT */
  CHECK(end <= o.deadline_ns + kt_late_ns());
  CHECK(t.attempts >= 1);
  for (int k = 0; k < t.attempts && k < MAX_TRACE; k++)
    CHECK(t.start[k] < o.deadline_ns);
  for (int k = 0; k < t.retries; k++) /* no sleep planned past the deadline */
    CHECK(t.fail[k] + t.delay[k] < o.deadline_ns);
  /* The task's own deadline is back as it was. */
  CHECK_EQ(keel_deadline(), before);
  return check_schedule(&t, &o, kt_late_ns());
}
static void test_total_deadline(void **state) {
  (void)state;
  kt_run_body(deadline_body, NULL, 1);
}

/* The caller's own deadline is nearer than the total: it wins, and the task
 * deadline is restored afterwards. */
static int caller_deadline_body(void *arg) {
  (void)arg;
  struct trace t = {.work_ms = 2};
  keel_retry_opts_t o;
  opts_for(&o, &t, 1000, 5 * MS, 5 * MS);
  int64_t t0 = kt_clock_ns();
  o.deadline_ns = t0 + 10000 * MS;
  int64_t mine = t0 + 30 * MS;
  int64_t prev = keel_task_set_deadline(mine);
  int rc = keel_retry(&o, attempt_fn, &t);
  CHECK(rc == -EIO || rc == -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 0, 30 * MS + kt_late_ns()); /* not the 10 s total */
  CHECK(t.attempts >= 1);
  CHECK_EQ(keel_task_set_deadline(prev), mine); /* restored to the caller's */
  return 0;
}
static void test_caller_deadline_nearer(void **state) {
  (void)state;
  kt_run_body(caller_deadline_body, NULL, 1);
}

/* ---- Success, predicates, limits ----------------------------------------------- */

static bool not_einval(int err, void *user) {
  (void)user;
  return err != -EINVAL;
}

static int success_body(void *arg) {
  (void)arg;
  struct trace t = {.succeed_on = 3};
  keel_retry_opts_t o;
  opts_for(&o, &t, 5, 2 * MS, 4 * MS);
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(keel_retry(&o, attempt_fn, &t), 99);
  CHECK_EQ(t.attempts, 3);
  CHECK(kt_clock_ns() - t0 >= t.delay[0] + t.delay[1]);
  CHECK_RC(check_schedule(&t, &o, kt_late_ns()));

  struct trace refused = {.fail_with = -EINVAL};
  opts_for(&o, &refused, 5, MS, MS);
  o.should_retry = not_einval;
  CHECK_EQ(keel_retry(&o, attempt_fn, &refused), -EINVAL);
  CHECK_EQ(refused.attempts, 1);
  CHECK_EQ(refused.retries, 0);

  struct trace once = {0};
  opts_for(&o, &once, 1, MS, MS);
  CHECK_EQ(keel_retry(&o, attempt_fn, &once), -EIO);
  CHECK_EQ(once.attempts, 1);

  /* By default -ECANCELED from fn (not the caller's) is not retried. */
  struct trace cancelled = {.fail_with = -ECANCELED};
  opts_for(&o, &cancelled, 5, MS, MS);
  CHECK_EQ(keel_retry(&o, attempt_fn, &cancelled), -ECANCELED);
  CHECK_EQ(cancelled.attempts, 1);
  return 0;
}
static void test_success_and_predicates(void **state) {
  (void)state;
  kt_run_body(success_body, NULL, 1);
}

/* ---- Cancellation -------------------------------------------------------------- */

struct retrier {
  struct trace t;
  int rc;
  int64_t returned_ns;
};

/* Cancelled during the backoff sleep (the observer cancels just before it
 * starts): -ECANCELED at once, no further attempt. The delay is up to 10 s
 * (the guard's deadline is 20 s: keel_retry plans no sleep past it). */
static int retry_cancel_in_sleep(void *arg) {
  struct retrier *r = arg;
  r->t.cancel_in_observer = keel_scope_current();
  keel_retry_opts_t o;
  opts_for(&o, &r->t, 100, 10000 * MS, 10000 * MS);
  r->rc = keel_retry(&o, attempt_fn, &r->t);
  return 0;
}
/* Cancelled during an attempt: fn's -ECANCELED ends it. */
static int retry_cancel_in_attempt(void *arg) {
  struct retrier *r = arg;
  r->t.work_ms = 100000;
  keel_retry_opts_t o;
  opts_for(&o, &r->t, 100, MS, MS);
  r->rc = keel_retry(&o, attempt_fn, &r->t);
  r->returned_ns = kt_clock_ns();
  return 0;
}

static int cancel_in_sleep_body(void *arg) {
  (void)arg;
  struct retrier r = {.rc = 1};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  int64_t t0 = kt_clock_ns();
  CHECK_RC(keel_spawn(s, retry_cancel_in_sleep, &r, NULL));
  keel_scope_close(s);
  CHECK_EQ(r.rc, -ECANCELED);
  CHECK_EQ(r.t.attempts, 1);
  CHECK_EQ(r.t.retries, 1);
  CHECK_BETWEEN(kt_clock_ns() - t0, 0, kt_late_ns());
  return 0;
}
static void test_cancellation_in_sleep(void **state) {
  (void)state;
  kt_run_body(cancel_in_sleep_body, NULL, 1);
}

/* Cancelled from worker 0 while the attempt runs on worker 1. */
static int cancel_in_attempt_body(void *arg) {
  (void)arg;
  struct retrier r2 = {.rc = 1};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  keel_spawn_opts_t so = {.on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(s, retry_cancel_in_attempt, &r2, &so));
  while (atomic_load(&r2.t.began) == 0)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_sleep_ms(2));
  int64_t cancelled_at = kt_clock_ns();
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  CHECK_EQ(r2.rc, -ECANCELED);
  CHECK_EQ(r2.t.attempts, 1);
  CHECK_EQ(r2.t.retries, 0);
  CHECK_BETWEEN(r2.returned_ns - cancelled_at, 0, kt_late_ns()); /* not the 100 s attempt */
  return 0;
}
static void test_cancellation_in_attempt(void **state) {
  (void)state;
  kt_run_body(cancel_in_attempt_body, NULL, 2);
}

/* ---- The ceiling and the options ----------------------------------------------- */

static void test_ceiling_no_overflow(void **state) {
  (void)state;
  assert_int_equal(keel_retry_ceiling_ns(100, 1000, 0), 100);
  assert_int_equal(keel_retry_ceiling_ns(100, 1000, 3), 800);
  assert_int_equal(keel_retry_ceiling_ns(100, 1000, 4), 1000);
  assert_int_equal(keel_retry_ceiling_ns(1, INT64_MAX, 62), INT64_C(1) << 62);
  assert_int_equal(keel_retry_ceiling_ns(1, INT64_MAX, 63), INT64_MAX);
  assert_int_equal(keel_retry_ceiling_ns(1, INT64_MAX, 200), INT64_MAX);
  assert_int_equal(keel_retry_ceiling_ns(INT64_MAX / 2 + 1, INT64_MAX, 1), INT64_MAX);
  assert_int_equal(keel_retry_ceiling_ns(3 * KEEL_NS_PER_SEC, INT64_MAX, 40), INT64_MAX);
  assert_int_equal(keel_retry_ceiling_ns(0, 1000, 3), 0);
}

static int bad_opts_body(void *arg) {
  (void)arg;
  struct trace t = {0};
  keel_retry_opts_t o;
  opts_for(&o, &t, 3, -1, MS);
  CHECK_EQ(keel_retry(&o, attempt_fn, &t), -EINVAL);
  opts_for(&o, &t, 3, MS, MS);
  CHECK_EQ(keel_retry(&o, NULL, &t), -EINVAL);
  CHECK_EQ(t.attempts, 0);
  /* Zero fields are defaults: 0 attempts means 5. */
  opts_for(&o, &t, 0, MS, MS);
  CHECK_EQ(keel_retry(&o, attempt_fn, &t), -EIO);
  CHECK_EQ(t.attempts, 5);
  t.attempts = 0;
  /* A total deadline already passed: nothing runs. */
  o.deadline_ns = keel_now_ns() - 1;
  CHECK_EQ(keel_retry(&o, attempt_fn, &t), -ETIMEDOUT);
  CHECK_EQ(t.attempts, 0);
  return 0;
}
static void test_bad_options(void **state) {
  (void)state;
  kt_run_body(bad_opts_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_schedule),
      cmocka_unit_test(test_lab_same_seed_replays),
      cmocka_unit_test(test_total_deadline),
      cmocka_unit_test(test_caller_deadline_nearer),
      cmocka_unit_test(test_success_and_predicates),
      cmocka_unit_test(test_cancellation_in_sleep),
      cmocka_unit_test(test_cancellation_in_attempt),
      cmocka_unit_test(test_ceiling_no_overflow),
      cmocka_unit_test(test_bad_options),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
