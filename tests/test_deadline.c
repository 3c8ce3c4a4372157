/* Deadlines: scope deadlines, inheritance, task deadlines, shields. */
#include <time.h>

#include "keel-test.h"

/* How late a wake-up may be on io_uring and epoll on a loaded machine
 * (every core busy, a sanitizer's slowdown). Lab mode's virtual time is
 * exact and is checked exactly. Where a case needs one wait to end before
 * another deadline, the two are a second or more apart, so that a stalled
 * thread does not reorder them on the real backends. */
#define LATE_MS 2000

static int64_t ms_since(int64_t t0) { return (kt_clock_ns() - t0) / KEEL_NS_PER_MS; }

static int64_t in_ms(int64_t ms) { return keel_now_ns() + ms * KEEL_NS_PER_MS; }

/* Elapsed milliseconds are checked exactly in lab mode, and as
 * [want - 1, want + LATE_MS) on the real backends: the 1 ms covers the two
 * clock reads straddling the deadline's own. */
#define assert_elapsed(b, ms, want)                                                          \
  do {                                                                                       \
    int64_t e_ = (ms), w_ = (want);                                                          \
    int64_t lo_ = (b) == KEEL_BACKEND_LAB ? w_ : w_ - 1;                                     \
    int64_t hi_ = (b) == KEEL_BACKEND_LAB ? w_ + 1 : w_ + LATE_MS;                           \
    if (e_ < lo_ || e_ >= hi_)                                                               \
      fail_msg("[%s] elapsed %lld ms, want [%lld, %lld)", kt_backend_name(b), (long long)e_, \
               (long long)lo_, (long long)hi_);                                              \
  } while (0)

/* A wait that ends at once (a deadline already past, a level-triggered
 * one): no time passes in lab mode; less than LATE_MS on the real
 * backends, far from the 5-10 s the waits asked for. */
#define assert_at_once(b, ms)                                                         \
  do {                                                                                \
    int64_t e_ = (ms);                                                                \
    if ((b) == KEEL_BACKEND_LAB ? e_ != 0 : e_ >= LATE_MS)                            \
      fail_msg("[%s] took %lld ms, want at once", kt_backend_name(b), (long long)e_); \
  } while (0)

struct st {
  int64_t outer_ms, nested_ms; /* inputs: scope deadlines relative to t0 */
  int64_t outer_dl, nested_dl, seen_dl, t0;
  int64_t dl[8];
  int64_t elapsed[8];
  int rc[8];
  int spawn_rc;
  keel_cancel_reason_t reason;
  keel_outcome_t outcome;
};

/* Runs fn(st) as one task in a scope with the given deadline (0: none);
 * cancel_after_ms >= 0 cancels the scope (user) after that long. */
static int run_in_scope(struct st *st, keel_task_fn fn, int64_t deadline_ns, int cancel_after_ms) {
  keel_scope_opts_t so = {.deadline_ns = deadline_ns};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(&so, &s);
  if (!s)
    return -ENOMEM;
  keel_task_t *h = NULL;
  keel_spawn_opts_t o = {.on_worker = KEEL_WORKER_CURRENT, .handle = &h};
  st->spawn_rc = keel_spawn(s, fn, st, &o);
  if (cancel_after_ms >= 0) {
    keel_sleep_ms(cancel_after_ms);
    keel_scope_cancel(s, KEEL_CANCEL_USER);
  }
  keel_scope_join(s);
  if (h)
    st->outcome = keel_task_outcome(h);
  keel_scope_close(s);
  return 0;
}

/* ---- A scope deadline ends a blocking sleep -------------------------------------- */

static int sleeper_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_sleep_ms(10000);
  st->elapsed[0] = ms_since(st->t0);
  st->reason = keel_cancelled();
  return st->rc[0];
}

static int scope_deadline_main(void *arg) {
  struct st *st = arg;
  st->t0 = kt_clock_ns();
  return run_in_scope(st, sleeper_task, in_ms(100), -1);
}

static void test_scope_deadline(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1}};
    assert_int_equal(kt_run(b, 1, scope_deadline_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[0], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[0], 100);
    assert_int_equal(st.reason, KEEL_CANCEL_TIMEOUT);
    assert_int_equal(st.outcome.kind, KEEL_OUTCOME_CANCELLED);
    assert_int_equal(st.outcome.reason, KEEL_CANCEL_TIMEOUT);
    assert_int_equal(st.outcome.error, -ETIMEDOUT);
  }
}

/* keel_scope_set_deadline, and a deadline already past when the scope opens. */
static int set_deadline_main(void *arg) {
  struct st *st = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  st->t0 = kt_clock_ns();
  keel_scope_set_deadline(s, in_ms(80));
  st->spawn_rc = keel_spawn(s, sleeper_task, st, NULL);
  keel_scope_join(s);
  keel_scope_close(s);
  st->rc[1] = st->rc[0];
  st->elapsed[1] = st->elapsed[0];
  st->t0 = kt_clock_ns();
  return run_in_scope(st, sleeper_task, in_ms(-1), -1);
}

static void test_set_deadline_and_past_deadline(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1}};
    assert_int_equal(kt_run(b, 1, set_deadline_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[1], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[1], 80);
    assert_int_equal(st.rc[0], -ETIMEDOUT);
    assert_at_once(b, st.elapsed[0]);
  }
}

/* ---- Inheritance: the nearest deadline of the enclosing scopes applies --------------- */

static int nested_sleeper_task(void *arg) {
  struct st *st = arg;
  st->seen_dl = keel_deadline();
  st->rc[0] = keel_sleep_ms(10000);
  st->elapsed[0] = ms_since(st->t0);
  return st->rc[0];
}

/* Runs in the outer scope: opens the nested one and sleeps in it. */
static int open_nested_task(void *arg) {
  struct st *st = arg;
  keel_scope_opts_t so = {.deadline_ns = st->nested_dl};
  keel_scope_t *n = NULL;
  (void)keel_scope_open(&so, &n);
  if (!n)
    return -ENOMEM;
  st->rc[1] = keel_spawn(n, nested_sleeper_task, st, NULL);
  keel_scope_join(n);
  keel_scope_close(n);
  return 0;
}

static int inherit_main(void *arg) {
  struct st *st = arg;
  st->t0 = kt_clock_ns();
  int64_t now = keel_now_ns();
  st->outer_dl = now + st->outer_ms * KEEL_NS_PER_MS;
  st->nested_dl = now + st->nested_ms * KEEL_NS_PER_MS;
  return run_in_scope(st, open_nested_task, st->outer_dl, -1);
}

static void check_inherit(int64_t outer_ms, int64_t nested_ms) {
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.outer_ms = outer_ms, .nested_ms = nested_ms, .rc = {1, 1}};
    assert_int_equal(kt_run(b, 1, inherit_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[1], 0);
    int64_t want = outer_ms < nested_ms ? st.outer_dl : st.nested_dl;
    assert_int_equal(st.seen_dl, want);
    assert_int_equal(st.rc[0], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[0], outer_ms < nested_ms ? outer_ms : nested_ms);
  }
}

static void test_inherit_outer_earlier(void **state) {
  (void)state;
  check_inherit(100, 1000);
}

static void test_inherit_nested_earlier(void **state) {
  (void)state;
  check_inherit(1000, 100);
}

/* ---- Task deadlines ------------------------------------------------------------------- */

static int task_deadline_task(void *arg) {
  struct st *st = arg;
  int64_t scope_dl = st->outer_dl;
  int64_t earlier = scope_dl - 5 * KEEL_NS_PER_SEC, later = scope_dl + 5 * KEEL_NS_PER_SEC;
  st->dl[0] = keel_deadline();                            /* the scope's */
  st->dl[1] = keel_task_set_deadline(earlier);            /* none before */
  st->dl[2] = keel_deadline();                            /* earlier */
  st->dl[3] = keel_task_set_deadline(later);              /* earlier */
  st->dl[4] = keel_deadline();                            /* min: the scope's */
  st->dl[5] = keel_task_set_deadline(KEEL_DEADLINE_NONE); /* later */
  st->dl[6] = keel_deadline();                            /* the scope's */
  /* An idle timeout around one blocking call, then restored. */
  int64_t t0 = kt_clock_ns();
  int64_t prev = keel_task_set_deadline(in_ms(50));
  st->rc[0] = keel_sleep_ms(5000);
  st->elapsed[0] = ms_since(t0);
  keel_task_set_deadline(prev);
  st->rc[1] = keel_sleep_ms(10);
  return 0;
}

static int task_deadline_main(void *arg) {
  struct st *st = arg;
  st->outer_dl = in_ms(10000);
  return run_in_scope(st, task_deadline_task, st->outer_dl, -1);
}

static void test_task_deadline(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1}};
    assert_int_equal(kt_run(b, 1, task_deadline_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    int64_t earlier = st.outer_dl - 5 * KEEL_NS_PER_SEC, later = st.outer_dl + 5 * KEEL_NS_PER_SEC;
    assert_int_equal(st.dl[0], st.outer_dl);
    assert_int_equal(st.dl[1], KEEL_DEADLINE_NONE);
    assert_int_equal(st.dl[2], earlier);
    assert_int_equal(st.dl[3], earlier);
    assert_int_equal(st.dl[4], st.outer_dl);
    assert_int_equal(st.dl[5], later);
    assert_int_equal(st.dl[6], st.outer_dl);
    assert_int_equal(st.rc[0], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[0], 50);
    assert_int_equal(st.rc[1], 0);
  }
}

static int no_deadline_main(void *arg) {
  int64_t *dl = arg;
  *dl = keel_deadline();
  return 0;
}

static void test_no_deadline(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    int64_t dl = 0;
    assert_int_equal(kt_run(b, 1, no_deadline_main, &dl), 0);
    assert_int_equal(dl, KEEL_DEADLINE_NONE);
  }
}

/* ---- Level: every blocking point after the deadline times out --------------------------- */

static int level_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_sleep_ms(5000);
  int64_t t0 = kt_clock_ns();
  st->rc[1] = keel_sleep_ms(10000);
  st->rc[2] = keel_sleep_ms(0);
  st->rc[3] = keel_yield();
  st->rc[4] = keel_checkpoint();
  st->rc[5] = keel_sleep_until(in_ms(10000));
  st->elapsed[0] = ms_since(t0);
  return 0;
}

/* A CPU-bound loop sees the deadline through keel_checkpoint. */
static int spin_task(void *arg) {
  struct st *st = arg;
  /* Elapsed from when the 50 ms deadline was set (before the spawn), so
   * spawn latency is not counted as the deadline firing early. */
  int64_t t0 = keel_deadline() - 50 * KEEL_NS_PER_MS;
  int rc;
  while ((rc = keel_checkpoint()) == 0 && ms_since(t0) < 5000) {
  }
  st->rc[6] = rc;
  st->elapsed[1] = ms_since(t0);
  return rc;
}

/* In lab mode time stands still while a task runs, so a CPU-bound loop
 * never reaches a deadline there: the spin part is for the real backends. */
static int level_main(void *arg) {
  struct st *st = arg;
  run_in_scope(st, level_task, in_ms(50), -1);
  if (keel_lab_active())
    return 0;
  return run_in_scope(st, spin_task, in_ms(50), -1);
}

static void test_level_after_deadline(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1, 1, 1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, level_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    for (int i = 0; i < 6; i++)
      assert_int_equal(st.rc[i], -ETIMEDOUT);
    assert_at_once(b, st.elapsed[0]);
    if (b == KEEL_BACKEND_LAB)
      continue;
    assert_int_equal(st.rc[6], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[1], 50);
  }
}

/* ---- Shields ------------------------------------------------------------------------------ */

/* Cleanup inside a shield may spawn helpers: a scope opened there is
 * shielded too (its tasks are not born cancelled) and bounded by the
 * shield's deadline. */
static int flush_helper(void *arg) {
  struct st *st = arg;
  st->rc[5] = keel_sleep_ms(30);    /* a short flush completes */
  st->rc[6] = keel_sleep_ms(10000); /* a stuck one ends at the shield deadline */
  st->elapsed[2] = ms_since(st->t0);
  return 0;
}

static int shield_spawn_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_sleep_ms(10000); /* cancelled */
  st->t0 = kt_clock_ns();
  keel_shield_begin(in_ms(1000));
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  st->rc[1] = s ? keel_spawn(s, flush_helper, st, NULL) : -ENOMEM;
  st->rc[2] = s ? keel_scope_join(s) : -ENOMEM;
  keel_scope_close(s);
  keel_shield_end();
  st->rc[3] = keel_sleep_ms(10);
  return 0;
}

static int shield_spawn_main(void *arg) { return run_in_scope(arg, shield_spawn_task, 0, 20); }

static void test_shield_spawns_cleanup_task(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1, 1, 1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, shield_spawn_main, &st), 0);
    assert_int_equal(st.rc[0], -ECANCELED);
    assert_int_equal(st.rc[1], 0);
    assert_int_equal(st.rc[5], 0);
    assert_int_equal(st.rc[6], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[2], 1000);
    assert_int_equal(st.rc[3], -ECANCELED);
  }
}

static int shield_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_sleep_ms(10000); /* cancelled */
  int64_t t0 = kt_clock_ns();
  keel_shield_begin(in_ms(1000));
  st->rc[1] = keel_checkpoint();
  st->rc[2] = keel_sleep_ms(50); /* cleanup can block */
  st->elapsed[0] = ms_since(t0);
  st->rc[3] = keel_sleep_ms(5000); /* but only until the shield's deadline */
  st->elapsed[1] = ms_since(t0);
  keel_shield_end();
  st->rc[4] = keel_sleep_ms(10);
  return 0;
}

static int shield_main(void *arg) { return run_in_scope(arg, shield_task, 0, 20); }

static void test_shield(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, shield_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[0], -ECANCELED);
    assert_int_equal(st.rc[1], 0);
    assert_int_equal(st.rc[2], 0);
    assert_elapsed(b, st.elapsed[0], 50);
    assert_int_equal(st.rc[3], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[1], 1000);
    assert_int_equal(st.rc[4], -ECANCELED);
  }
}

static int nested_shield_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_sleep_ms(10000); /* cancelled */
  int64_t t0 = kt_clock_ns();
  keel_shield_begin(in_ms(1200));
  keel_shield_begin(in_ms(100));
  st->rc[1] = keel_sleep_ms(5000); /* the inner deadline */
  st->elapsed[0] = ms_since(t0);
  keel_shield_end();
  st->rc[2] = keel_sleep_ms(50); /* still shielded by the outer one */
  st->rc[3] = keel_sleep_ms(5000);
  st->elapsed[1] = ms_since(t0);
  keel_shield_end();
  st->rc[4] = keel_sleep_ms(10);
  return 0;
}

static int nested_shield_main(void *arg) { return run_in_scope(arg, nested_shield_task, 0, 20); }

static void test_nested_shields(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, nested_shield_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[0], -ECANCELED);
    assert_int_equal(st.rc[1], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[0], 100);
    assert_int_equal(st.rc[2], 0);
    assert_int_equal(st.rc[3], -ETIMEDOUT);
    assert_elapsed(b, st.elapsed[1], 1200);
    assert_int_equal(st.rc[4], -ECANCELED);
  }
}

/* A shield also holds off the scope's deadline. */
static int shield_deadline_task(void *arg) {
  struct st *st = arg;
  keel_shield_begin(in_ms(1000));
  st->rc[0] = keel_sleep_ms(150); /* past the scope's 50 ms deadline */
  keel_shield_end();
  st->rc[1] = keel_sleep_ms(10);
  return 0;
}

static int shield_deadline_main(void *arg) {
  return run_in_scope(arg, shield_deadline_task, in_ms(50), -1);
}

static void test_shield_holds_off_scope_deadline(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1}};
    assert_int_equal(kt_run(b, 1, shield_deadline_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[0], 0);
    assert_int_equal(st.rc[1], -ETIMEDOUT);
  }
}

/* ---- Deadlines moved later; shield scopes joined by a cancelled task ------------------ */

/* keel_scope_set_deadline moving a deadline later reaches a task already
 * blocked, whose timer was armed for the old deadline: the sleep must not
 * end with -ETIMEDOUT at the old 1000 ms (nor the outcome be an error). */
static int extend_sleeper(void *arg) {
  struct st *st = arg;
  int64_t t0 = kt_clock_ns();
  st->rc[0] = keel_sleep_ms(1200);
  st->elapsed[0] = ms_since(t0);
  return st->rc[0];
}

static int extend_main(void *arg) {
  struct st *st = arg;
  keel_scope_opts_t so = {.deadline_ns = in_ms(1000)};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(&so, &s);
  if (!s)
    return -ENOMEM;
  keel_task_t *h = NULL;
  keel_spawn_opts_t o = {.handle = &h};
  st->spawn_rc = keel_spawn(s, extend_sleeper, st, &o);
  keel_sleep_ms(10);
  keel_scope_set_deadline(s, in_ms(10000)); /* the sleeper is blocked now */
  st->rc[1] = keel_scope_join(s);
  if (h)
    st->outcome = keel_task_outcome(h);
  keel_scope_close(s);
  return 0;
}

static void test_later_deadline_reaches_blocked_task(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1}};
    assert_int_equal(kt_run(b, 1, extend_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[0], 0);
    assert_elapsed(b, st.elapsed[0], 1200);
    assert_int_equal(st.rc[1], 0);
    assert_int_equal(st.outcome.kind, KEEL_OUTCOME_OK);
  }
}

/* A KEEL_SCOPE_SHIELD scope opened for cleanup by a task that is already
 * cancelled (or is cancelled while joining it): enclosing cancellation does
 * not reach in, so joining it must not cancel it (reason parent) and cut the
 * cleanup child's sleep short; only its own deadline bounds it. */
static int shield_scope_child(void *arg) {
  struct st *st = arg;
  st->rc[1] = keel_sleep_ms(50);
  return st->rc[1];
}

static int shield_scope_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_sleep_ms(10000); /* cancelled */
  keel_scope_opts_t so = {.flags = KEEL_SCOPE_SHIELD, .deadline_ns = in_ms(1000)};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(&so, &s);
  if (!s)
    return -ENOMEM;
  st->rc[2] = keel_spawn(s, shield_scope_child, st, NULL);
  st->rc[3] = keel_scope_join(s);
  st->reason = keel_scope_cancel_reason(s);
  keel_scope_close(s);
  return 0;
}

static int shield_scope_main(void *arg) { return run_in_scope(arg, shield_scope_task, 0, 20); }

static void test_shield_scope_join_not_cancelled(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, shield_scope_main, &st), 0);
    assert_int_equal(st.rc[0], -ECANCELED);
    assert_int_equal(st.rc[2], 0);
    assert_int_equal(st.rc[1], 0);
    assert_int_equal(st.rc[3], 0);
    assert_int_equal(st.reason, KEEL_CANCEL_NONE);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scope_deadline),
      cmocka_unit_test(test_set_deadline_and_past_deadline),
      cmocka_unit_test(test_inherit_outer_earlier),
      cmocka_unit_test(test_inherit_nested_earlier),
      cmocka_unit_test(test_task_deadline),
      cmocka_unit_test(test_no_deadline),
      cmocka_unit_test(test_level_after_deadline),
      cmocka_unit_test(test_shield),
      cmocka_unit_test(test_shield_spawns_cleanup_task),
      cmocka_unit_test(test_nested_shields),
      cmocka_unit_test(test_shield_holds_off_scope_deadline),
      cmocka_unit_test(test_later_deadline_reaches_blocked_task),
      cmocka_unit_test(test_shield_scope_join_not_cancelled),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
