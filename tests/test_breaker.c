/* Circuit breaker: consecutive failures open it (a success resets the
 * count), open refuses with -ECONNREFUSED for exactly open_ns (lab mode:
 * exact virtual ns; real time: checked while the machine keeps up), exactly
 * one half-open probe (also among concurrent callers), the probe's success
 * closes and its failure re-opens, a lost probe is replaced, a cancelled
 * probe hands over at once, keel_breaker_call, and probes never overlap
 * across two workers. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#define MS KEEL_NS_PER_MS

/* The lab seed of the bodies that check exact virtual times. */
#define LAB_SEED 9

static void test_new_rejects_bad_options(void **state) {
  (void)state;
  keel_breaker_t *b = (keel_breaker_t *)&b;
  assert_int_equal(keel_breaker_open(0, MS, &b), -EINVAL);
  assert_null(b);
  assert_int_equal(keel_breaker_open(1, -1, &b), -EINVAL);
  assert_int_equal(keel_breaker_open(1, 0, &b), 0);
  assert_int_equal(keel_breaker_state(b), KEEL_BREAKER_CLOSED);
  keel_breaker_close(b);
  keel_breaker_close(NULL);
}

/* allow() must refuse until end_ns; checked only if the call certainly
 * came before it (in real time it may come late, and then be let through:
 * *got_probe says so, and the caller does not ask for the probe again). */
static int refused_before(keel_breaker_t *b, int64_t end_ns, bool *got_probe) {
  int rc = keel_breaker_allow(b);
  if (keel_now_ns() < end_ns)
    CHECK_EQ(rc, -ECONNREFUSED);
  *got_probe = rc == 0;
  return 0;
}

static void fail_times(keel_breaker_t *b, int n) {
  for (int i = 0; i < n; i++)
    keel_breaker_record_failure(b);
}

static int threshold_body(void *arg) {
  (void)arg;
  keel_breaker_t *b;
  CHECK_RC(keel_breaker_open(3, 10000 * MS, &b));
  fail_times(b, 2);
  CHECK_EQ(keel_breaker_failures(b), 2);
  keel_breaker_record_success(b); /* only consecutive failures count */
  CHECK_EQ(keel_breaker_failures(b), 0);
  fail_times(b, 2);
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_CLOSED);
  CHECK_EQ(keel_breaker_allow(b), 0);
  keel_breaker_record_failure(b);
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_OPEN);
  CHECK_EQ(keel_breaker_allow(b), -ECONNREFUSED);
  /* Late outcomes of calls let through before it opened change nothing. */
  keel_breaker_record_success(b);
  keel_breaker_record_failure(b);
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_OPEN);
  CHECK_EQ(keel_breaker_allow(b), -ECONNREFUSED);
  keel_breaker_close(b);
  return 0;
}
static void test_opens_after_consecutive_failures(void **state) {
  (void)state;
  kt_run_body(threshold_body, NULL, 1);
}

/* The open period, the single probe, re-opening and closing; open period
 * 100 ms. Lab mode asks 1 ns before each end (exact); real time asks a
 * margin before it, and checks the refusal if it still came in time. */
static int cycle_body(void *arg) {
  (void)arg;
  const int64_t slack = keel_lab_active() ? 0 : 30 * MS;
  const int64_t open_ns = 100 * MS;
  keel_breaker_t *b;
  CHECK_RC(keel_breaker_open(2, open_ns, &b));
  fail_times(b, 2);
  int64_t opened = keel_now_ns();
  CHECK_RC(keel_sleep_until(opened + open_ns / 2));
  keel_breaker_record_failure(b); /* a late call's failure: no longer open */
  CHECK_RC(keel_sleep_until(opened + open_ns - 1 - slack));
  bool got_probe;
  CHECK_RC(refused_before(b, opened + open_ns, &got_probe)); /* 1 ns before the end (lab) */
  CHECK_RC(keel_sleep_until(opened + open_ns));
  if (!got_probe)
    CHECK_EQ(keel_breaker_allow(b), 0); /* the probe */
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_HALF_OPEN);
  CHECK_EQ(keel_breaker_allow(b), -ECONNREFUSED); /* only one */
  CHECK_RC(keel_sleep_ms(10));
  CHECK_RC(refused_before(b, opened + 2 * open_ns, &got_probe)); /* the probe is not lost yet */
  keel_breaker_record_failure(b);                                /* the probe failed: open again */
  int64_t reopened = keel_now_ns();
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_OPEN);
  CHECK_RC(keel_sleep_until(reopened + open_ns - 1 - slack));
  CHECK_RC(refused_before(b, reopened + open_ns, &got_probe));
  CHECK_RC(keel_sleep_until(reopened + open_ns));
  if (!got_probe)
    CHECK_EQ(keel_breaker_allow(b), 0);
  keel_breaker_record_success(b); /* the probe succeeded: closed */
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_CLOSED);
  CHECK_EQ(keel_breaker_allow(b), 0);
  CHECK_EQ(keel_breaker_allow(b), 0);
  keel_breaker_record_failure(b); /* the count started again from 0 */
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_CLOSED);
  keel_breaker_close(b);
  return 0;
}
static void test_open_half_open_cycle(void **state) {
  (void)state;
  kt_run_body(cycle_body, NULL, 1);
}

/* A probe that never reports is replaced after open_ns. */
static int lost_probe_body(void *arg) {
  (void)arg;
  keel_breaker_t *b;
  CHECK_RC(keel_breaker_open(1, 20 * MS, &b));
  keel_breaker_record_failure(b);
  CHECK_RC(keel_sleep_ms(25));
  bool got_probe;
  int64_t t = keel_now_ns();
  CHECK_EQ(keel_breaker_allow(b), 0); /* this probe is lost */
  CHECK_RC(refused_before(b, t + 20 * MS, &got_probe));
  CHECK_RC(keel_sleep_ms(25));
  t = keel_now_ns();
  CHECK_EQ(keel_breaker_allow(b), 0); /* the lost probe is replaced */
  CHECK_RC(refused_before(b, t + 20 * MS, &got_probe));
  (void)got_probe; /* a late call was let through as the next probe: fine here */
  keel_breaker_close(b);
  return 0;
}
static void test_lost_probe_replaced(void **state) {
  (void)state;
  kt_run_body(lost_probe_body, NULL, 1);
}

/* ---- keel_breaker_call --------------------------------------------------------- */

struct call {
  keel_breaker_t *b;
  int result;                /* what fn returns */
  int64_t ms;                /* fn sleeps this long first */
  int calls;                 /* how often fn ran */
  int rc;                    /* what keel_breaker_call returned */
  int64_t asked_ns, done_ns; /* when the call was made; when fn returned */
};
static int call_fn(void *arg) {
  struct call *c = arg;
  c->calls++;
  if (c->ms > 0) {
    int rc = keel_sleep_ms(c->ms);
    if (rc < 0)
      return rc;
  }
  c->done_ns = keel_now_ns();
  return c->result;
}
static int caller_task(void *arg) {
  struct call *c = arg;
  c->asked_ns = keel_now_ns();
  c->rc = keel_breaker_call(c->b, call_fn, c);
  return 0;
}

static int call_body(void *arg) {
  (void)arg;
  keel_breaker_t *b;
  CHECK_RC(keel_breaker_open(2, 100 * MS, &b));
  struct call c = {.b = b, .result = 5};
  CHECK_EQ(keel_breaker_call(b, call_fn, &c), 5);
  c.result = -EIO;
  CHECK_EQ(keel_breaker_call(b, call_fn, &c), -EIO);
  CHECK_EQ(keel_breaker_call(b, call_fn, &c), -EIO);
  CHECK_EQ(c.calls, 3);
  CHECK_EQ(keel_breaker_call(b, call_fn, &c), -ECONNREFUSED);
  CHECK_EQ(c.calls, 3); /* refused: fn not called */
  CHECK_RC(keel_sleep_ms(110));

  /* Five concurrent callers when half-open: one probe runs (20 ms), four
   * refused. In real time, only if every caller asked before the probe
   * ended and within the 100 ms after which it counts as lost: a slow
   * build can start the others after it (they then find it closed). */
  int64_t asked = keel_now_ns();
  struct call cs[5];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < 5; i++) {
    cs[i] = (struct call){.b = b, .result = 1, .ms = 20};
    CHECK_RC(keel_spawn(s, caller_task, &cs[i], NULL));
  }
  keel_scope_close(s);
  int ran = 0, refused = 0;
  int64_t first_done = INT64_MAX, last_asked = 0;
  for (int i = 0; i < 5; i++) {
    ran += cs[i].calls;
    refused += cs[i].rc == -ECONNREFUSED;
    if (cs[i].calls > 0 && cs[i].done_ns < first_done)
      first_done = cs[i].done_ns;
    if (cs[i].asked_ns > last_asked)
      last_asked = cs[i].asked_ns;
  }
  if (last_asked < first_done && kt_within(asked, 100 * MS)) {
    CHECK_EQ(ran, 1);
    CHECK_EQ(refused, 4);
  }
  CHECK(ran >= 1);
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_CLOSED); /* the probe succeeded */
  keel_breaker_close(b);
  return 0;
}
static void test_call_and_single_probe(void **state) {
  (void)state;
  kt_run_body(call_body, NULL, 1);
}

/* The probe's caller is cancelled: no verdict, and the next caller may
 * probe at once instead of after open_ns. */
static int cancelled_probe_body(void *arg) {
  (void)arg;
  keel_breaker_t *b;
  CHECK_RC(keel_breaker_open(1, 20 * MS, &b));
  keel_breaker_record_failure(b);
  CHECK_RC(keel_sleep_ms(25));
  struct call probe = {.b = b, .result = 0, .ms = 100000};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  CHECK_RC(keel_spawn(s, caller_task, &probe, NULL));
  CHECK_RC(keel_sleep_ms(2));
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_HALF_OPEN);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  CHECK_EQ(probe.rc, -ECANCELED);
  CHECK_EQ(probe.calls, 1);
  CHECK(keel_breaker_state(b) != KEEL_BREAKER_CLOSED); /* no success recorded */
  int64_t t = keel_now_ns();
  CHECK_EQ(keel_breaker_allow(b), 0); /* the next probe, at once */
  bool got_probe;
  CHECK_RC(refused_before(b, t + 20 * MS, &got_probe));
  keel_breaker_close(b);
  return 0;
}
static void test_cancelled_probe_hands_over(void **state) {
  (void)state;
  kt_run_body(cancelled_probe_body, NULL, 1);
}

/* A probe out longer than open_ns is replaced; its late verdict or its
 * cancellation must neither close nor re-open the breaker while the new
 * probe is out, or two probes would run at once. Lab mode: exact times. */
struct timed_call {
  struct call c;
  int64_t start_at; /* virtual time the call starts */
};
static int timed_caller(void *arg) {
  struct timed_call *t = arg;
  if (keel_sleep_until(t->start_at) < 0)
    return -1;
  return caller_task(&t->c);
}
static int superseded_probe_body(void *arg) {
  (void)arg;
  keel_breaker_t *b;
  CHECK_RC(keel_breaker_open(1, 100 * MS, &b));
  int64_t t0 = keel_now_ns();
  keel_breaker_record_failure(b); /* open until t0+100 */
  /* P1: probe at +100, succeeds at +300 (lost, so replaceable, from +200).
   * P2: probe at +250, fails at +400. */
  struct timed_call p1 = {{.b = b, .result = 0, .ms = 200}, t0 + 100 * MS};
  struct timed_call p2 = {{.b = b, .result = -EIO, .ms = 150}, t0 + 250 * MS};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  CHECK_RC(keel_spawn(s, timed_caller, &p1, NULL));
  CHECK_RC(keel_spawn(s, timed_caller, &p2, NULL));
  CHECK_RC(keel_sleep_until(t0 + 310 * MS));
  CHECK_EQ(p1.c.rc, 0);                                    /* P1 ran and reported success */
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_HALF_OPEN); /* ignored: P2 is out */
  CHECK_EQ(keel_breaker_allow(b), -ECONNREFUSED);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  CHECK_EQ(keel_now_ns(), t0 + 400 * MS);
  CHECK_EQ(p2.c.rc, -EIO);
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_OPEN); /* P2's failure counted */
  CHECK_EQ(keel_breaker_allow(b), -ECONNREFUSED);

  /* A replaced probe that is cancelled hands nothing over. */
  struct timed_call p3 = {{.b = b, .result = 0, .ms = 100000}, t0 + 500 * MS};
  struct timed_call p4 = {{.b = b, .result = 0, .ms = 100}, t0 + 610 * MS};
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  keel_scope_t *s3 = NULL;
  (void)keel_scope_open(NULL, &s3);
  CHECK(s3);
  CHECK_RC(keel_spawn(s3, timed_caller, &p3, NULL));
  CHECK_RC(keel_spawn(s, timed_caller, &p4, NULL));
  CHECK_RC(keel_sleep_until(t0 + 620 * MS));
  CHECK_EQ(p3.c.calls, 1);
  CHECK_EQ(p4.c.calls, 1); /* P3 was lost at +600: P4 probes */
  keel_scope_cancel(s3, KEEL_CANCEL_USER);
  keel_scope_close(s3);
  CHECK_EQ(p3.c.rc, -ECANCELED);
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_HALF_OPEN);
  CHECK_EQ(keel_breaker_allow(b), -ECONNREFUSED); /* P4 is still the only probe */
  keel_scope_close(s);
  CHECK_EQ(p4.c.rc, 0);
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_CLOSED);

  /* A call allowed while closed that fails after the breaker opened and a
   * probe went out does not re-open it. */
  keel_breaker_t *b2;
  CHECK_RC(keel_breaker_open(1, 50 * MS, &b2));
  struct call slow = {.b = b2, .result = -EIO, .ms = 80};
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  CHECK_RC(keel_spawn(s, caller_task, &slow, NULL));
  CHECK_RC(keel_yield());
  int64_t t1 = keel_now_ns();
  keel_breaker_record_failure(b2); /* open until t1+50 */
  CHECK_RC(keel_sleep_until(t1 + 60 * MS));
  CHECK_EQ(keel_breaker_allow(b2), 0); /* the probe, out until t1+110 */
  keel_scope_close(s);                 /* slow fails at t1+80 */
  CHECK_EQ(slow.rc, -EIO);
  CHECK_EQ(keel_breaker_state(b2), KEEL_BREAKER_HALF_OPEN);
  keel_breaker_record_success(b2);
  CHECK_EQ(keel_breaker_state(b2), KEEL_BREAKER_CLOSED);
  keel_breaker_close(b2);
  keel_breaker_close(b);
  return 0;
}
static void test_replaced_probe_has_no_say(void **state) {
  (void)state;
  kt_run_lab_body(superseded_probe_body, NULL, LAB_SEED);
}

/* open_ns near INT64_MAX: no overflow (UBSan), the breaker just stays open. */
static int huge_open_body(void *arg) {
  (void)arg;
  keel_breaker_t *b;
  CHECK_RC(keel_breaker_open(1, INT64_MAX, &b));
  keel_breaker_record_failure(b);
  CHECK_RC(keel_sleep_ms(1000));
  CHECK_EQ(keel_breaker_allow(b), -ECONNREFUSED);
  struct call c = {.b = b, .result = 0};
  CHECK_EQ(keel_breaker_call(b, call_fn, &c), -ECONNREFUSED);
  CHECK_EQ(keel_breaker_state(b), KEEL_BREAKER_OPEN);
  keel_breaker_close(b);
  CHECK_RC(keel_breaker_open(1, INT64_MAX - 1, &b));
  CHECK_EQ(keel_breaker_allow(b), 0);
  keel_breaker_record_failure(b);
  CHECK_EQ(keel_breaker_allow(b), -ECONNREFUSED);
  keel_breaker_close(b);
  return 0;
}
static void test_huge_open_period(void **state) {
  (void)state;
  kt_run_lab_body(huge_open_body, NULL, LAB_SEED);
}

/* ---- Two workers ---------------------------------------------------------------- */

/* Every call is a probe (threshold 1, always failing, open 5 ms); callers
 * on both workers hammer it for a while. A probe may only start while
 * another is out once that one is lost (out for open_ns): a probe starting
 * within half of that after the previous one asked (a time taken before
 * its keel_breaker_call, so a caller delayed on its way in cannot make it
 * look later) means two probes were let through. */
#define HAMMER_OPEN_NS (5 * MS)
#define HAMMER_NS (5000 * MS) /* at most; it stops after three probes */
struct hammer {
  keel_breaker_t *b;
  int64_t until;
  atomic_int inflight;
  atomic_int probes;
  atomic_int overlaps;
  _Atomic int64_t last_asked; /* when the latest probe's caller asked */
};
struct hammer_call {
  struct hammer *h;
  int64_t asked;
};
static int probe_fn(void *arg) {
  struct hammer_call *c = arg;
  struct hammer *h = c->h;
  int64_t now = keel_now_ns();
  int before = atomic_fetch_add(&h->inflight, 1);
  int64_t prev = atomic_exchange(&h->last_asked, c->asked);
  if (before > 0 && now - prev < HAMMER_OPEN_NS / 2)
    atomic_fetch_add(&h->overlaps, 1);
  atomic_fetch_add(&h->probes, 1);
  keel_yield();
  atomic_fetch_sub(&h->inflight, 1);
  return -EIO;
}
static int hammer_task(void *arg) {
  struct hammer *h = arg;
  while (atomic_load(&h->probes) < 3 && kt_mono_ns() < h->until) {
    struct hammer_call c = {h, keel_now_ns()};
    int rc = keel_breaker_call(h->b, probe_fn, &c);
    CHECK(rc == -EIO || rc == -ECONNREFUSED);
    CHECK_RC(keel_yield());
  }
  return 0;
}
static int hammer_body(void *arg) {
  (void)arg;
  struct hammer h = {.b = NULL};
  CHECK_RC(keel_breaker_open(1, HAMMER_OPEN_NS, &h.b));
  keel_breaker_record_failure(h.b);
  h.until = kt_mono_ns() + HAMMER_NS;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int w = 0; w < 2; w++)
    for (int i = 0; i < 3; i++) {
      keel_spawn_opts_t o = {.name = "hammer", .on_worker = KEEL_WORKER(w)};
      CHECK_RC(keel_spawn(s, hammer_task, &h, &o));
    }
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  CHECK(atomic_load(&h.probes) >= 3);
  CHECK_EQ(atomic_load(&h.overlaps), 0);
  keel_breaker_close(h.b);
  return 0;
}
static void test_two_workers_one_probe_at_a_time(void **state) {
  (void)state;
  kt_run_body(hammer_body, NULL, 2);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_rejects_bad_options),
      cmocka_unit_test(test_opens_after_consecutive_failures),
      cmocka_unit_test(test_open_half_open_cycle),
      cmocka_unit_test(test_lost_probe_replaced),
      cmocka_unit_test(test_call_and_single_probe),
      cmocka_unit_test(test_cancelled_probe_hands_over),
      cmocka_unit_test(test_replaced_probe_has_no_say),
      cmocka_unit_test(test_huge_open_period),
      cmocka_unit_test(test_two_workers_one_probe_at_a_time),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
