/* Shields: cleanup code ignores its scopes' cancellation and deadlines,
 * is bounded by the shield's own deadline (or the drain budget when none
 * is given), can set per-task deadlines of its own, and can learn why it
 * is cleaning up. Timing is exact in lab mode; the real backends check the
 * same with tolerances that hold on a loaded machine. */
#include "kt-guard.h"

#define MS KEEL_NS_PER_MS

struct shield_case {
  keel_backend_t backend;
  int sleep_rc, after_rc;
  int64_t slept_ns, deadline_in_shield, deadline_after, default_bound;
  int64_t nested_bound, task_deadline_before, helper_slept_ns;
  int helper_join_rc;
  keel_cancel_reason_t seen_in, origin_in, seen_late;
};

static int sleep_helper(void *arg) {
  (void)arg;
  return keel_sleep_ms(5000);
}

static int cleanup_task(void *arg) {
  struct shield_case *c = arg;
  int64_t before = keel_now_ns() + 10000 * MS;
  keel_task_set_deadline(before);
  keel_sleep_ms(100000); /* cancelled by main */
  int64_t now = keel_now_ns();
  keel_shield_begin(now + 1000 * MS);
  c->seen_in = keel_cancelled();
  c->origin_in = keel_cancel_origin();
  /* A per-task deadline set inside the shield bounds what follows. */
  keel_task_set_deadline(now + 20 * MS);
  c->deadline_in_shield = keel_deadline() - now;
  int64_t t0 = keel_now_ns();
  c->sleep_rc = keel_sleep_ms(10000);
  c->slept_ns = keel_now_ns() - t0;
  /* A nested shield never outlasts the deadline around it. */
  keel_shield_begin(keel_now_ns() + 5000 * MS);
  c->nested_bound = keel_deadline() - now;
  keel_shield_end();
  c->seen_late = keel_cancelled(); /* the shield's per-task deadline passed */
  keel_shield_end();
  /* Helpers in a scope opened inside the shield are bound by the per-task
   * deadline set in it too. */
  keel_shield_begin(keel_now_ns() + 10000 * MS);
  keel_task_set_deadline(keel_now_ns() + 30 * MS);
  keel_scope_t *helpers = NULL;
  (void)keel_scope_open(NULL, &helpers);
  int64_t h0 = keel_now_ns();
  if (!helpers || keel_spawn(helpers, sleep_helper, NULL, NULL) < 0)
    return -ENOMEM;
  c->helper_join_rc = keel_scope_close(helpers);
  c->helper_slept_ns = keel_now_ns() - h0;
  keel_shield_end();
  /* The deadline from before the shield is back. */
  c->task_deadline_before = keel_task_set_deadline(0) == before;
  c->after_rc = keel_sleep_ms(1); /* cancelled again outside the shield */
  return 0;
}

static int default_bound_task(void *arg) {
  struct shield_case *c = arg;
  int64_t now = keel_now_ns();
  keel_shield_begin(0);
  c->default_bound = keel_deadline() - now;
  keel_shield_end();
  return 0;
}

static int shield_main(void *arg) {
  struct shield_case *c = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s || keel_spawn(s, cleanup_task, c, NULL) < 0)
    return -ENOMEM;
  keel_sleep_ms(5);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  (void)keel_scope_open(NULL, &s);
  if (!s || keel_spawn(s, default_bound_task, c, NULL) < 0)
    return -ENOMEM;
  keel_scope_close(s);
  return 0;
}

static void test_shield_deadlines(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct shield_case c = {.backend = b, .sleep_rc = 1, .after_rc = 1};
    assert_int_equal(kt_run(b, 1, shield_main, &c), 0);
    bool lab = b == KEEL_BACKEND_LAB;
    assert_int_equal(c.seen_in, KEEL_CANCEL_NONE);
    assert_int_equal(c.origin_in, KEEL_CANCEL_USER);
    assert_int_equal(c.sleep_rc, -ETIMEDOUT);
    if (lab) {
      assert_int_equal(c.deadline_in_shield, 20 * MS);
      assert_int_equal(c.slept_ns, 20 * MS);
      assert_int_equal(c.nested_bound, 20 * MS);
      assert_int_equal(c.default_bound, 5000 * MS); /* drain_timeout_ms */
    } else {
      assert_true(c.deadline_in_shield <= 20 * MS && c.deadline_in_shield > 0);
      /* Woken by the 20 ms deadline, not the 10 s sleep: on a loaded
       * machine the wake-up may be late, but not by seconds. */
      assert_true(c.slept_ns >= 15 * MS && c.slept_ns < 20 * MS + KT_LATE_NS);
      assert_true(c.nested_bound <= 20 * MS);
      assert_true(c.default_bound >= 5000 * MS && c.default_bound < 6000 * MS);
    }
    assert_int_equal(c.seen_late, KEEL_CANCEL_TIMEOUT);
    assert_int_equal(c.helper_join_rc, -ETIMEDOUT);
    if (lab)
      assert_int_equal(c.helper_slept_ns, 30 * MS);
    else
      assert_true(c.helper_slept_ns >= 25 * MS && c.helper_slept_ns < 30 * MS + KT_LATE_NS);
    assert_int_equal(c.task_deadline_before, 1);
    assert_int_equal(c.after_rc, -ECANCELED);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shield_deadlines),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
