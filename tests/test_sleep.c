/* Sleeping: accuracy, zero and past durations, many sleepers, cancellation. */
#include <time.h>

#include "keel-test.h"

/* On io_uring and epoll a sleep never ends early, but may end late: on a
 * loaded machine (every core busy, a sanitizer's slowdown) the woken
 * thread waits for a CPU. The upper bounds there allow LATE_MS; lab mode's
 * virtual time is exact and is checked exactly. */
#define LATE_MS 2000

/* ---- Accuracy -------------------------------------------------------------------- */

static const int64_t durations_ms[] = {10, 50, 100};
#define NDURATIONS 3

struct accuracy {
  int rc[3][NDURATIONS];
  int64_t elapsed_ns[3][NDURATIONS];
};

static int accuracy_main(void *arg) {
  struct accuracy *a = arg;
  for (int i = 0; i < NDURATIONS; i++) {
    int64_t ms = durations_ms[i];
    int64_t t0 = kt_clock_ns();
    a->rc[0][i] = keel_sleep_ms(ms);
    int64_t t1 = kt_clock_ns();
    a->rc[1][i] = keel_sleep_ns(ms * KEEL_NS_PER_MS);
    int64_t t2 = kt_clock_ns();
    a->rc[2][i] = keel_sleep_until(keel_now_ns() + ms * KEEL_NS_PER_MS);
    int64_t t3 = kt_clock_ns();
    a->elapsed_ns[0][i] = t1 - t0;
    a->elapsed_ns[1][i] = t2 - t1;
    a->elapsed_ns[2][i] = t3 - t2;
  }
  return 0;
}

static void test_accuracy(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct accuracy a;
    memset(&a, 0xff, sizeof a);
    assert_int_equal(kt_run(b, 1, accuracy_main, &a), 0);
    for (int kind = 0; kind < 3; kind++) {
      for (int i = 0; i < NDURATIONS; i++) {
        int64_t want_ns = durations_ms[i] * KEEL_NS_PER_MS;
        int64_t got_ns = a.elapsed_ns[kind][i];
        assert_int_equal(a.rc[kind][i], 0);
        /* sleep_until's target is on keel's clock, not ours: allow 1 ms */
        int64_t floor_ns = kind == 2 ? want_ns - KEEL_NS_PER_MS : want_ns;
        int64_t ceil_ns = b == KEEL_BACKEND_LAB ? want_ns + 1 : want_ns + LATE_MS * KEEL_NS_PER_MS;
        if (b == KEEL_BACKEND_LAB)
          floor_ns = want_ns;
        if (got_ns < floor_ns || got_ns >= ceil_ns)
          fail_msg("[%s] sleep kind %d of %lld ms took %.3f ms", kt_backend_name(b), kind,
                   (long long)durations_ms[i], (double)got_ns / 1e6);
      }
    }
  }
}

/* ---- Zero, negative and past ------------------------------------------------------- */

struct instant {
  int rc[5];
  int64_t elapsed_ns;
};

static int instant_main(void *arg) {
  struct instant *in = arg;
  int64_t t0 = kt_clock_ns();
  in->rc[0] = keel_sleep_ms(0);
  in->rc[1] = keel_sleep_ms(-5);
  in->rc[2] = keel_sleep_ns(0);
  in->rc[3] = keel_sleep_until(keel_now_ns() - KEEL_NS_PER_SEC);
  in->rc[4] = keel_yield();
  in->elapsed_ns = kt_clock_ns() - t0;
  return 0;
}

static void test_zero_negative_past(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct instant in = {.rc = {1, 1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, instant_main, &in), 0);
    for (int i = 0; i < 5; i++)
      assert_int_equal(in.rc[i], 0);
    if (b == KEEL_BACKEND_LAB)
      assert_int_equal(in.elapsed_ns, 0); /* none of them waited */
    else
      assert_true(in.elapsed_ns < LATE_MS * KEEL_NS_PER_MS);
  }
}

/* ---- Many concurrent sleepers ------------------------------------------------------------ */

/* Under TSan, where a fiber costs milliseconds, a tenth of them. */
#define SLEEPERS (1000 / KT_SCALE)

struct sleepers;
struct sleeper {
  struct sleepers *all;
  int64_t ms;
  int64_t elapsed_ns;
  int rc;
};

struct sleepers {
  struct sleeper s[SLEEPERS];
  int woke, spawned, join_rc;
  int asleep, most_asleep; /* at once */
  int64_t total_ns;
};

static int sleeper_task(void *arg) {
  struct sleeper *s = arg;
  int64_t t0 = kt_clock_ns();
  if (++s->all->asleep > s->all->most_asleep)
    s->all->most_asleep = s->all->asleep;
  s->rc = keel_sleep_ms(s->ms);
  s->all->asleep--;
  s->elapsed_ns = kt_clock_ns() - t0;
  s->all->woke++;
  return s->rc;
}

static int sleepers_main(void *arg) {
  struct sleepers *all = arg;
  keel_scope_t *scope = NULL;
  (void)keel_scope_open(NULL, &scope);
  if (!scope)
    return -ENOMEM;
  int64_t t0 = kt_clock_ns();
  for (int i = 0; i < SLEEPERS; i++)
    all->spawned += keel_spawn(scope, sleeper_task, &all->s[i], NULL) == 0;
  all->join_rc = keel_scope_join(scope);
  all->total_ns = kt_clock_ns() - t0;
  keel_scope_close(scope);
  return 0;
}

static void test_many_sleepers(void **state) {
  (void)state;
  srand(12345);
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct sleepers *all = calloc(1, sizeof *all);
    assert_non_null(all);
    int64_t longest_ms = 0, sum_ms = 0;
    for (int i = 0; i < SLEEPERS; i++) {
      all->s[i] = (struct sleeper){.all = all, .ms = 1 + rand() % 100, .rc = 1};
      longest_ms = all->s[i].ms > longest_ms ? all->s[i].ms : longest_ms;
      sum_ms += all->s[i].ms;
    }
    assert_int_equal(kt_run(b, 1, sleepers_main, all), 0);
    assert_int_equal(all->spawned, SLEEPERS);
    assert_int_equal(all->woke, SLEEPERS);
    assert_int_equal(all->join_rc, 0);
    for (int i = 0; i < SLEEPERS; i++) {
      const struct sleeper *s = &all->s[i];
      assert_int_equal(s->rc, 0);
      if (s->elapsed_ns < s->ms * KEEL_NS_PER_MS)
        fail_msg("[%s] sleeper %d woke early: %.3f ms of %lld", kt_backend_name(b), i,
                 (double)s->elapsed_ns / 1e6, (long long)s->ms);
      if (b == KEEL_BACKEND_LAB)
        assert_int_equal(s->elapsed_ns, s->ms * KEEL_NS_PER_MS);
    }
    if (b != KEEL_BACKEND_LAB)
      print_message("# [%s] %d sleepers, at most %d at once, %.1f ms in all\n", kt_backend_name(b),
                    SLEEPERS, all->most_asleep, (double)all->total_ns / 1e6);
    /* They slept concurrently, not one after another: every one had started
     * its sleep before the first woke (lab mode, where no time passes while
     * tasks run, and in practice the real backends: a 1 ms sleeper could only
     * wake first if starting the others took longer than that). */
    if (all->most_asleep < SLEEPERS / 2)
      fail_msg("[%s] at most %d of %d sleepers asleep at once", kt_backend_name(b),
               all->most_asleep, SLEEPERS);
    if (b == KEEL_BACKEND_LAB) {
      assert_int_equal(all->most_asleep, SLEEPERS);
      assert_int_equal(all->total_ns, longest_ms * KEEL_NS_PER_MS);
    } else {
      /* one after another they would take the sum (~50 ms each); together,
       * the longest and the cost of starting them all (a few ms each under
       * TSan on a loaded machine) */
      assert_true(all->total_ns < sum_ms * KEEL_NS_PER_MS / 2);
    }
    free(all);
  }
}

/* ---- A far sleep that is cancelled ---------------------------------------------------------- */

struct far {
  int rc, cancelled_rc[3], spawn_rc;
  int64_t cancel_ns, woke_ns;
};

static int far_task(void *arg) {
  struct far *f = arg;
  f->rc = keel_sleep_ms(3600 * 1000);
  f->woke_ns = kt_clock_ns();
  /* still cancelled: durations <= 0 report it too */
  f->cancelled_rc[0] = keel_sleep_ms(0);
  f->cancelled_rc[1] = keel_sleep_ms(10);
  f->cancelled_rc[2] = keel_sleep_until(keel_now_ns() - KEEL_NS_PER_SEC);
  return f->rc;
}

static int far_main(void *arg) {
  struct far *f = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  f->spawn_rc = keel_spawn(s, far_task, f, NULL);
  keel_sleep_ms(20);
  f->cancel_ns = kt_clock_ns();
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_far_sleep_cancelled(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct far f = {.rc = 1, .cancelled_rc = {1, 1, 1}};
    assert_int_equal(kt_run(b, 1, far_main, &f), 0);
    assert_int_equal(f.spawn_rc, 0);
    assert_int_equal(f.rc, -ECANCELED);
    if (b == KEEL_BACKEND_LAB)
      assert_int_equal(f.woke_ns, f.cancel_ns); /* woken at the cancel's instant */
    else
      assert_true(f.woke_ns - f.cancel_ns < LATE_MS * KEEL_NS_PER_MS);
    for (int i = 0; i < 3; i++)
      assert_int_equal(f.cancelled_rc[i], -ECANCELED);
  }
}

/* ---- Yield lets the others run ------------------------------------------------------------- */

struct yielder {
  int rc[3], other_ran_before_return, counter, spawn_rc;
};

static int bump_task(void *arg) {
  struct yielder *y = arg;
  y->counter++;
  return 0;
}

static int yield_main(void *arg) {
  struct yielder *y = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  y->spawn_rc = keel_spawn(s, bump_task, y, NULL);
  for (int i = 0; i < 3; i++)
    y->rc[i] = keel_yield();
  y->other_ran_before_return = y->counter;
  keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_yield(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct yielder y = {.rc = {1, 1, 1}};
    assert_int_equal(kt_run(b, 1, yield_main, &y), 0);
    assert_int_equal(y.spawn_rc, 0);
    for (int i = 0; i < 3; i++)
      assert_int_equal(y.rc[i], 0);
    assert_int_equal(y.other_ran_before_return, 1);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_accuracy),      cmocka_unit_test(test_zero_negative_past),
      cmocka_unit_test(test_many_sleepers), cmocka_unit_test(test_far_sleep_cancelled),
      cmocka_unit_test(test_yield),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
