/* Token bucket: starts full, try_acquire and its limits, refill in exact
 * virtual ns (lab mode) and in real time with a tolerance, the cap at
 * burst, deadline-aware acquire (fails at once when the tokens would come
 * too late), cancellation of a waiter, and two workers sharing one bucket
 * never getting more than rate allows. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#define MS KEEL_NS_PER_MS

/* The lab seed of the bodies that check exact virtual times. */
#define LAB_SEED 5

static void test_new_rejects_bad_options(void **state) {
  (void)state;
  keel_ratelimit_t *rl = (keel_ratelimit_t *)&rl;
  assert_int_equal(keel_ratelimit_open(0, 1, &rl), -EINVAL);
  assert_null(rl);
  assert_int_equal(keel_ratelimit_open(1, 0, &rl), -EINVAL);
  assert_int_equal(keel_ratelimit_open(KEEL_RATELIMIT_MAX_RATE + 1, 1, &rl), -EINVAL);
  assert_int_equal(keel_ratelimit_open(1, KEEL_RATELIMIT_MAX_BURST + 1, &rl), -EINVAL);
  assert_int_equal(keel_ratelimit_open(KEEL_RATELIMIT_MAX_RATE, KEEL_RATELIMIT_MAX_BURST, &rl), 0);
  assert_int_equal(keel_ratelimit_acquire(rl, 1), -EINVAL); /* outside a task */
  keel_ratelimit_close(rl);
  keel_ratelimit_close(NULL);
}

/* 1 token/s: none comes back during the test, unless a loaded machine holds
 * it up for a second; the checks that count on that are made only if not. */
static int try_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  int64_t t0 = keel_now_ns();
  CHECK_RC(keel_ratelimit_open(1, 3, &rl));
  CHECK_EQ(keel_ratelimit_available(rl), 3);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 0), 0);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 4), -EINVAL);
  CHECK_EQ(keel_ratelimit_acquire(rl, 4), -EINVAL);
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 2), 0);
  int too_many = keel_ratelimit_try_acquire(rl, 2);
  int last = keel_ratelimit_try_acquire(rl, 1);
  int none_left = keel_ratelimit_try_acquire(rl, 1);
  uint64_t available = keel_ratelimit_available(rl);
  if (kt_within(t0, KEEL_NS_PER_SEC)) {
    CHECK_EQ(too_many, -EAGAIN);
    CHECK_EQ(last, 0);
    CHECK_EQ(none_left, -EAGAIN);
    CHECK_EQ(available, 0);
  }
  CHECK_EQ(keel_ratelimit_acquire(rl, 0), 0);
  keel_ratelimit_close(rl);
  return 0;
}
static void test_try_acquire(void **state) {
  (void)state;
  kt_run_body(try_body, NULL, 1);
}

/* 10 tokens/s, burst 2: waits are 100 ms per missing token; exact in lab
 * mode, up to kt_late_ns() late in real time. */
static int refill_body(void *arg) {
  (void)arg;
  int64_t slack = kt_late_ns();
  keel_ratelimit_t *rl;
  int64_t t0 = keel_now_ns();
  CHECK_RC(keel_ratelimit_open(10, 2, &rl));
  CHECK_EQ(keel_ratelimit_acquire(rl, 2), 0);
  CHECK_BETWEEN(keel_now_ns() - t0, 0, slack); /* the bucket starts full */
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  CHECK_BETWEEN(keel_now_ns() - t0, 100 * MS, 100 * MS + slack);
  CHECK_EQ(keel_ratelimit_acquire(rl, 2), 0);
  CHECK_BETWEEN(keel_now_ns() - t0, 300 * MS, 300 * MS + slack);
  int rc = keel_ratelimit_try_acquire(rl, 1);
  if (kt_within(t0, 400 * MS)) /* the next token comes at +400 ms */
    CHECK_EQ(rc, -EAGAIN);
  /* A long idle period refills to burst, no further. */
  CHECK_RC(keel_sleep_ms(1000));
  CHECK_EQ(keel_ratelimit_available(rl), 2);
  int64_t t1 = keel_now_ns();
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 2), 0);
  rc = keel_ratelimit_try_acquire(rl, 1);
  if (kt_within(t1, 100 * MS))
    CHECK_EQ(rc, -EAGAIN);
  keel_ratelimit_close(rl);
  return 0;
}
static void test_refill(void **state) {
  (void)state;
  kt_run_body(refill_body, NULL, 1);
}

/* A partial refill never lifts the level above burst either. */
static int capped_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_open(10, 3, &rl)); /* full after 300 ms */
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), 0);
  CHECK_RC(keel_sleep_ms(250)); /* 2 + 2.5 tokens, capped at 3 */
  CHECK_EQ(keel_ratelimit_available(rl), 3);
  int64_t t0 = keel_now_ns();
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 3), 0);
  int rc = keel_ratelimit_try_acquire(rl, 1);
  if (kt_within(t0, 100 * MS)) /* none has come back yet */
    CHECK_EQ(rc, -EAGAIN);
  keel_ratelimit_close(rl);
  return 0;
}
static void test_partial_refill_capped(void **state) {
  (void)state;
  kt_run_body(capped_body, NULL, 1);
}

/* Lab: fractional refill accumulates exactly: at 3 tokens/s the first
 * token takes 333333334 ns (rounded up), three take exactly 1 s. */
static int fraction_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_open(3, 3, &rl));
  int64_t t0 = keel_now_ns();
  CHECK_EQ(keel_ratelimit_acquire(rl, 3), 0);
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  CHECK_EQ(keel_now_ns() - t0, 333333334);
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  CHECK_EQ(keel_ratelimit_acquire(rl, 1), 0);
  CHECK_EQ(keel_now_ns() - t0, KEEL_NS_PER_SEC);
  keel_ratelimit_close(rl);
  return 0;
}
static void test_lab_fractional_rate(void **state) {
  (void)state;
  kt_run_lab_body(fraction_body, NULL, LAB_SEED);
}

/* The tokens come in 10 s, the deadline is sooner: the call fails at once
 * (exactly in lab mode; in real time sooner than a wait for the deadline,
 * which is more than kt_late_ns() away, could end). */
static int deadline_body(void *arg) {
  (void)arg;
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_open(1, 10, &rl));
  CHECK_EQ(keel_ratelimit_acquire(rl, 10), 0);
  int64_t t0 = kt_clock_ns();
  int64_t prev = keel_task_set_deadline(t0 + 2 * kt_late_ns() + 50 * MS);
  CHECK_EQ(keel_ratelimit_acquire(rl, 10), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 0, kt_late_ns()); /* failed at once */
  keel_task_set_deadline(prev);
  keel_ratelimit_close(rl);
  return 0;
}
static void test_deadline_fails_at_once(void **state) {
  (void)state;
  kt_run_body(deadline_body, NULL, 1);
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
/* The waiter's tokens come in 10 s: the cancellation ends its wait long
 * before (at once in lab mode). */
static int cancel_body(void *arg) {
  (void)arg;
  struct waiter w = {NULL, 1};
  CHECK_RC(keel_ratelimit_open(1, 10, &w.rl));
  CHECK_EQ(keel_ratelimit_try_acquire(w.rl, 10), 0);
  int64_t emptied = keel_now_ns();
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  CHECK_RC(keel_spawn(s, waiter_task, &w, NULL));
  CHECK_RC(keel_sleep_ms(5));
  CHECK_EQ(w.rc, 1); /* still waiting */
  int64_t t0 = kt_clock_ns();
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  CHECK_BETWEEN(kt_clock_ns() - t0, 0, kt_late_ns());
  CHECK_EQ(w.rc, -ECANCELED);
  uint64_t available = keel_ratelimit_available(w.rl);
  if (kt_within(emptied, KEEL_NS_PER_SEC)) /* the cancelled waiter took nothing */
    CHECK_EQ(available, 0);
  keel_ratelimit_close(w.rl);
  return 0;
}
static void test_cancel_waiter(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 1);
}

/* Waiters are served in the order they came (lab: exact times). 10
 * tokens/s, burst 10, empty: a request for 10 at t0 is due at t0+1 s; one
 * for 1 at t0+1 ms must wait behind it (t0+1.1 s), not take the first
 * token to come back (t0+100 ms); try_acquire fails while they wait. A
 * cancelled head hands its place on: the one behind it is served as soon
 * as its own tokens exist. */
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
  CHECK_RC(keel_ratelimit_open(10, 10, &rl));
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 10), 0);
  int64_t t0 = keel_now_ns();
  struct timed_waiter big = {rl, 10, t0, 0, 1}, small = {rl, 1, t0 + 1 * MS, 0, 1};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
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

  /* Cancel the head, due at +500: b, behind it, is served at once from
   * the 2 tokens accrued, not at +600. */
  int64_t t1 = keel_now_ns();
  struct timed_waiter a = {rl, 5, t1, 0, 1}, b = {rl, 1, t1 + 1 * MS, 0, 1};
  keel_scope_t *sa = NULL;
  (void)keel_scope_open(NULL, &sa);
  (void)keel_scope_open(NULL, &s);
  CHECK(sa && s);
  CHECK_RC(keel_spawn(sa, timed_waiter_task, &a, NULL));
  CHECK_RC(keel_spawn(s, timed_waiter_task, &b, NULL));
  CHECK_RC(keel_sleep_until(t1 + 200 * MS));
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  keel_scope_close(sa);
  keel_scope_close(s);
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK_EQ(b.rc, 0);
  CHECK_EQ(b.done_at, t1 + 200 * MS);
  CHECK_EQ(keel_ratelimit_available(rl), 1); /* the other accrued token */
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), 0);
  keel_ratelimit_close(rl);
  return 0;
}
static void test_lab_waiters_in_order(void **state) {
  (void)state;
  kt_run_lab_body(fifo_body, NULL, LAB_SEED);
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
  CHECK_RC(keel_ratelimit_open(RATE, BURST, &sh.rl));
  int64_t t0 = kt_mono_ns();
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
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
  keel_ratelimit_close(sh.rl);
  return 0;
}
static void test_two_workers_share(void **state) {
  (void)state;
  kt_run_body(shared_body, NULL, 2);
}

/* ---- The line moves up when a waiter leaves ---------------------------------
 * 10 tokens/s, burst 10, all taken at t0. A, B and C ask for 10, 10 and 5,
 * 1 ns apart (that order); one of them is cancelled. Those behind it move
 * up at once: nobody keeps a wake-up time that counted the cancelled one
 * in the line. While anyone waits, try_acquire fails and available says 0
 * (5 tokens have accrued at t0+0.5 s, all promised). After C, a
 * try_acquire(1) at t0+1.8 s takes from what accrued since, and a
 * newcomer D asking 5 comes after that, at t0+2.1 s. Lab mode lands on
 * the exact ns over many seeds (a cancel in the very instant of a
 * hand-off may run before or after it: the times are the same); the real
 * backends get a tolerance. */
#define LINE_N 3
#define LINE_CANCELLED (-1)
#define LINE_SLACK KT_LATE_NS /* as late as a loaded machine may wake a task */
#define LINE_LAB_SEEDS 32
struct line_case {
  const char *name;
  int64_t cancel_at[LINE_N]; /* after t0, or 0: not cancelled */
  int64_t done_at[LINE_N];   /* expected success after t0, or LINE_CANCELLED */
};
static const struct line_case line_cases[] = {
    {"B cancelled while queued", {0, 500 * MS, 0}, {1000 * MS, LINE_CANCELLED, 1500 * MS}},
    {"B cancelled as A hands over", {0, 1000 * MS, 0}, {1000 * MS, LINE_CANCELLED, 1500 * MS}},
    {"head A cancelled", {500 * MS, 0, 0}, {LINE_CANCELLED, 1000 * MS, 1500 * MS}},
};
struct line_run {
  const struct line_case *c;
  int64_t slack; /* 0: exact (lab) */
};

/* when (absolute) is no earlier than want and at most slack later. */
static bool line_on_time(int64_t when, int64_t want, int64_t slack) {
  return when >= want && when <= want + slack;
}

static int line_body(void *arg) {
  const struct line_run *run = arg;
  const struct line_case *c = run->c;
  static const uint64_t need[LINE_N] = {10, 10, 5};
  keel_ratelimit_t *rl;
  CHECK_RC(keel_ratelimit_open(10, 10, &rl));
  int64_t t0 = keel_now_ns(); /* read before the bucket empties: lower bounds hold */
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 10), 0);
  struct timed_waiter w[LINE_N];
  keel_scope_t *s[LINE_N];
  for (int i = 0; i < LINE_N; i++) {
    w[i] = (struct timed_waiter){rl, need[i], t0 + i, 0, 1};
    s[i] = kt_spawn_in_scope(timed_waiter_task, &w[i], KEEL_WORKER_CURRENT);
    CHECK(s[i]);
  }
  for (int64_t at = 500 * MS; at <= 1000 * MS; at += 500 * MS) {
    CHECK_RC(keel_sleep_until(t0 + at));
    for (int i = 0; i < LINE_N; i++)
      if (c->cancel_at[i] == at)
        keel_scope_cancel(s[i], KEEL_CANCEL_USER);
    if (at == 500 * MS) {
      CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), -EAGAIN);
      CHECK_EQ(keel_ratelimit_available(rl), 0);
    }
  }
  for (int i = 0; i < LINE_N; i++) {
    keel_scope_close(s[i]);
    int64_t want = c->done_at[i];
    if (want == LINE_CANCELLED) {
      CHECK_EQ(w[i].rc, -ECANCELED);
      continue;
    }
    CHECK_EQ(w[i].rc, 0);
    if (!line_on_time(w[i].done_at, t0 + want, run->slack))
      KT_FAIL("%s: waiter %c served at t0%+lld ns, expected t0%+lld ns (slack %lld)", c->name,
              'A' + i, (long long)(w[i].done_at - t0), (long long)want, (long long)run->slack);
  }
  CHECK_RC(keel_sleep_until(t0 + 1800 * MS));
  CHECK_EQ(keel_ratelimit_try_acquire(rl, 1), 0); /* 3 tokens accrued since C */
  int64_t probe = keel_now_ns() - t0;
  CHECK_EQ(keel_ratelimit_acquire(rl, 5), 0); /* D */
  int64_t d_want = probe > 2100 * MS ? probe : 2100 * MS;
  int64_t d_at = keel_now_ns();
  if (d_at < t0 + 2100 * MS || d_at > t0 + d_want + run->slack)
    KT_FAIL("%s: D served at t0%+lld ns, expected t0+2.1 s (slack %lld)", c->name,
            (long long)(d_at - t0), (long long)run->slack);
  keel_ratelimit_close(rl);
  return 0;
}

static void test_lab_line_moves_up_on_cancel(void **state) {
  (void)state;
  if (!kt_backend_selected(KEEL_BACKEND_LAB))
    skip();
  for (size_t k = 0; k < sizeof line_cases / sizeof line_cases[0]; k++)
    for (uint64_t seed = 1; seed <= LINE_LAB_SEEDS; seed++) {
      struct line_run run = {&line_cases[k], 0};
      if (kt_run_guarded_lab(seed, line_body, &run) != 0)
        fail_msg("lab, seed %llu: %s", (unsigned long long)seed, line_cases[k].name);
    }
}

static void test_line_moves_up_on_cancel_real_time(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct line_run run = {&line_cases[0], LINE_SLACK};
    if (kt_run_guarded(b, 1, line_body, &run) != 0)
      fail_msg("[%s] %s", kt_backend_name(b), line_cases[0].name);
  }
}

/* ---- Churn: random arrivals, deadlines and cancellations ---------------------
 * Lab mode, many seeds: tasks arrive at random times (on the 10 ms grid
 * the tokens come on, so arrivals, hand-offs and cancellations meet in the
 * same instant) asking 1..3 tokens; some carry a deadline, some are
 * cancelled while queued, at the head, or as they are handed the head.
 * Checked: the ones served are served in the order they came; a deadline
 * either fails the call at once or is met (the up-front check counts the
 * whole line ahead, which only gets shorter); the bucket never grants more
 * than burst + rate * elapsed; and once everybody has gone nothing holds
 * the line: the bucket refills to burst. */
#define CHURN_TASKS 24
#define CHURN_CANCELS 10
#define CHURN_RATE 100
#define CHURN_BURST 4
#define CHURN_LAB_SEEDS 64
#define GRID (10 * MS)
struct churn {
  keel_ratelimit_t *rl;
  int64_t t0;
  uint64_t arrivals, served, granted;
};
struct churner {
  struct churn *ch;
  uint64_t n;
  int64_t start_at, deadline; /* deadline 0: none */
  uint64_t arrival, served;
  int64_t done_at;
  int rc;
};
static int churner_task(void *arg) {
  struct churner *x = arg;
  struct churn *ch = x->ch;
  if (keel_sleep_until(x->start_at) < 0) {
    x->rc = -ECANCELED; /* cancelled before it came */
    return 0;
  }
  if (x->deadline)
    keel_task_set_deadline(x->deadline);
  x->arrival = ch->arrivals++;
  x->rc = keel_ratelimit_acquire(ch->rl, x->n);
  x->done_at = keel_now_ns();
  if (x->rc != 0)
    return 0;
  x->served = ch->served++;
  ch->granted += x->n;
  /* burst + rate * elapsed, in billionths of a token: exact. */
  if ((__int128)ch->granted * KEEL_NS_PER_SEC >
      (__int128)CHURN_BURST * KEEL_NS_PER_SEC + (__int128)CHURN_RATE * (x->done_at - ch->t0))
    KT_FAIL("%llu tokens granted %lld ns after the start", (unsigned long long)ch->granted,
            (long long)(x->done_at - ch->t0));
  return 0;
}

static int churn_check(const struct churner *x, int n) {
  for (int i = 0; i < n; i++) {
    const struct churner *a = &x[i];
    if (a->rc == -ETIMEDOUT) {
      CHECK(a->deadline != 0);
      if (a->done_at != a->start_at)
        KT_FAIL("task %d: deadline t0%+lld hit after waiting (arrived t0%+lld, failed t0%+lld)", i,
                (long long)(a->deadline - a->start_at), (long long)(a->start_at - x->ch->t0),
                (long long)(a->done_at - x->ch->t0));
      continue;
    }
    if (a->rc != 0 && a->rc != -ECANCELED)
      KT_FAIL("task %d: acquire returned %d (%s)", i, a->rc, keel_strerror(a->rc));
    if (a->rc != 0)
      continue;
    CHECK(!a->deadline || a->done_at < a->deadline);
    for (int j = 0; j < n; j++)
      if (x[j].rc == 0 && x[j].arrival > a->arrival && x[j].served < a->served)
        KT_FAIL("task %d (arrival %llu) was served after task %d (arrival %llu)", i,
                (unsigned long long)a->arrival, j, (unsigned long long)x[j].arrival);
  }
  return 0;
}

static int churn_body(void *arg) {
  (void)arg;
  struct churn ch = {0};
  CHECK_RC(keel_ratelimit_open(CHURN_RATE, CHURN_BURST, &ch.rl));
  ch.t0 = keel_now_ns();
  struct churner x[CHURN_TASKS];
  keel_scope_t *s[CHURN_TASKS];
  for (int i = 0; i < CHURN_TASKS; i++) {
    int64_t start = ch.t0 + (int64_t)keel_random_below(20) * GRID;
    int64_t deadline = i % 4 == 3 ? start + (int64_t)keel_random_below(40) * GRID : 0;
    x[i] = (struct churner){&ch, 1 + keel_random_below(3), start, deadline, 0, 0, 0, 1};
    s[i] = kt_spawn_in_scope(churner_task, &x[i], KEEL_WORKER_CURRENT);
    CHECK(s[i]);
  }
  int64_t at = ch.t0;
  for (int k = 0; k < CHURN_CANCELS; k++) {
    at += (int64_t)keel_random_below(5) * GRID;
    CHECK_RC(keel_sleep_until(at));
    keel_scope_cancel(s[keel_random_below(CHURN_TASKS)], KEEL_CANCEL_USER);
  }
  for (int i = 0; i < CHURN_TASKS; i++)
    keel_scope_close(s[i]);
  CHECK_RC(churn_check(x, CHURN_TASKS));
  CHECK_RC(keel_sleep_ms(CHURN_BURST * 1000 / CHURN_RATE));
  CHECK_EQ(keel_ratelimit_available(ch.rl), CHURN_BURST);
  CHECK_EQ(keel_ratelimit_try_acquire(ch.rl, CHURN_BURST), 0);
  keel_ratelimit_close(ch.rl);
  return 0;
}

static void test_lab_churn_keeps_order(void **state) {
  (void)state;
  if (!kt_backend_selected(KEEL_BACKEND_LAB))
    skip();
  for (uint64_t seed = 1; seed <= CHURN_LAB_SEEDS; seed++)
    if (kt_run_guarded_lab(seed, churn_body, NULL) != 0)
      fail_msg("lab, seed %llu", (unsigned long long)seed);
}

/* ---- Two workers, real backends ---------------------------------------------
 * Waiters on both workers, each arriving well after the one before it
 * started asking, are served in the order they came (10 tokens/s, 2
 * each: every 200 ms). */
#define XORDER_N 6
#define XORDER_GAP (60 * MS)
struct xorder {
  keel_ratelimit_t *rl;
  atomic_int asked, served;
};
struct xwaiter {
  struct xorder *xo;
  int index, rc, served;
  int64_t done_at;
};
static int xwaiter_task(void *arg) {
  struct xwaiter *w = arg;
  /* Arrive after the one before has started asking. */
  while (atomic_load(&w->xo->asked) < w->index)
    CHECK_RC(keel_sleep_ms(1));
  if (w->index > 0)
    CHECK_RC(keel_sleep_ns(XORDER_GAP));
  atomic_fetch_add(&w->xo->asked, 1);
  w->rc = keel_ratelimit_acquire(w->xo->rl, 2);
  w->done_at = keel_now_ns();
  w->served = atomic_fetch_add(&w->xo->served, 1);
  return 0;
}
static int xorder_body(void *arg) {
  (void)arg;
  struct xorder xo = {NULL, 0, 0};
  CHECK_RC(keel_ratelimit_open(10, 2, &xo.rl));
  int64_t t0 = keel_now_ns();
  CHECK_EQ(keel_ratelimit_try_acquire(xo.rl, 2), 0);
  struct xwaiter w[XORDER_N];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < XORDER_N; i++) {
    w[i] = (struct xwaiter){&xo, i, 1, -1, 0};
    keel_spawn_opts_t o = {.name = "waiter", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(s, xwaiter_task, &w[i], &o));
  }
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  for (int i = 0; i < XORDER_N; i++) {
    CHECK_EQ(w[i].rc, 0);
    CHECK_EQ(w[i].served, i);
    CHECK(w[i].done_at >= t0 + (i + 1) * 200 * MS); /* never ahead of the rate */
  }
  keel_ratelimit_close(xo.rl);
  return 0;
}
static void test_two_workers_in_order(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    if (kt_run_guarded(b, 2, xorder_body, NULL) != 0)
      fail_msg("[%s]", kt_backend_name(b));
  }
}

/* Rounds of waiters on both workers, some with short deadlines, about a
 * third cancelled from worker 0 at a random moment (the ones on worker 1
 * across workers): queued, at the head, or being handed it. Every round
 * ends (no waiter is left without a turn), each result is one the waiter
 * could get, the bucket never outruns burst + rate * elapsed, and at the
 * end it refills to burst. */
#define RACE_ROUNDS (60 / KT_SCALE + 6)
#define RACE_TASKS 8
#define RACE_RATE 2000
#define RACE_BURST 4
struct race {
  keel_ratelimit_t *rl;
  atomic_ullong granted;
};
struct racer {
  struct race *r;
  uint64_t n;
  int64_t deadline;
  bool cancelled;
  int rc;
};
static int racer_task(void *arg) {
  struct racer *x = arg;
  if (x->deadline)
    keel_task_set_deadline(x->deadline);
  x->rc = keel_ratelimit_acquire(x->r->rl, x->n);
  if (x->rc == 0)
    atomic_fetch_add(&x->r->granted, x->n);
  return 0;
}
static int race_round(struct race *r) {
  struct racer x[RACE_TASKS];
  keel_scope_t *s[RACE_TASKS];
  int64_t now = keel_now_ns();
  for (int i = 0; i < RACE_TASKS; i++) {
    int64_t deadline = i % 4 == 3 ? now + 1 + (int64_t)keel_random_below(4 * MS) : 0;
    x[i] = (struct racer){r, 1 + keel_random_below(3), deadline, keel_random_below(3) == 0, 1};
    s[i] = kt_spawn_in_scope(racer_task, &x[i], KEEL_WORKER(i % 2));
    CHECK(s[i]);
  }
  CHECK_RC(keel_sleep_ns((int64_t)keel_random_below(3 * MS)));
  for (int i = 0; i < RACE_TASKS; i++)
    if (x[i].cancelled)
      keel_scope_cancel(s[i], KEEL_CANCEL_USER);
  int64_t t = kt_mono_ns();
  for (int i = 0; i < RACE_TASKS; i++)
    keel_scope_close(s[i]);
  if (kt_mono_ns() - t > 5 * KEEL_NS_PER_SEC)
    KT_FAIL("a round took %lld ms to end", (long long)((kt_mono_ns() - t) / MS));
  for (int i = 0; i < RACE_TASKS; i++) {
    int rc = x[i].rc;
    bool ok =
        rc == 0 || (rc == -ECANCELED && x[i].cancelled) || (rc == -ETIMEDOUT && x[i].deadline);
    if (!ok)
      KT_FAIL("waiter %d (%s%s) returned %d (%s)", i, x[i].cancelled ? "cancelled" : "",
              x[i].deadline ? " with a deadline" : "", rc, keel_strerror(rc));
  }
  return 0;
}
static int race_body(void *arg) {
  (void)arg;
  struct race r = {NULL, 0};
  int64_t t0 = kt_mono_ns();
  CHECK_RC(keel_ratelimit_open(RACE_RATE, RACE_BURST, &r.rl));
  for (int round = 0; round < RACE_ROUNDS; round++)
    CHECK_RC(race_round(&r));
  int64_t took = kt_mono_ns() - t0;
  unsigned long long granted = atomic_load(&r.granted);
  if ((__int128)granted * KEEL_NS_PER_SEC >
      (__int128)RACE_BURST * KEEL_NS_PER_SEC + (__int128)RACE_RATE * took)
    KT_FAIL("%llu tokens granted in %lld ns", granted, (long long)took);
  CHECK_RC(keel_sleep_ms(10)); /* burst comes back in 2 ms */
  CHECK_EQ(keel_ratelimit_available(r.rl), RACE_BURST);
  CHECK_EQ(keel_ratelimit_try_acquire(r.rl, RACE_BURST), 0);
  keel_ratelimit_close(r.rl);
  return 0;
}
static void test_two_workers_cancel_race(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    if (kt_run_guarded(b, 2, race_body, NULL) != 0)
      fail_msg("[%s]", kt_backend_name(b));
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_rejects_bad_options),
      cmocka_unit_test(test_try_acquire),
      cmocka_unit_test(test_refill),
      cmocka_unit_test(test_partial_refill_capped),
      cmocka_unit_test(test_lab_fractional_rate),
      cmocka_unit_test(test_deadline_fails_at_once),
      cmocka_unit_test(test_cancel_waiter),
      cmocka_unit_test(test_lab_waiters_in_order),
      cmocka_unit_test(test_two_workers_share),
      cmocka_unit_test(test_lab_line_moves_up_on_cancel),
      cmocka_unit_test(test_line_moves_up_on_cancel_real_time),
      cmocka_unit_test(test_lab_churn_keeps_order),
      cmocka_unit_test(test_two_workers_in_order),
      cmocka_unit_test(test_two_workers_cancel_race),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
