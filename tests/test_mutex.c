/* Task mutex: try_lock, FIFO hand-off without barging, cancellation and
 * deadlines of a waiter (removed, lock not taken), a lock handed to a task
 * cancelled before it ran goes on to the next waiter, an exact counter
 * hammered from two workers, a waiter on another worker cancelled, and
 * the debug assertion on unlock by a non-owner. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

/* Lets every ready task run until it blocks. */
static int settle(void) { return keel_sleep_ms(5); }

struct op {
  keel_mutex_t *m;
  int id;
  int *order; /* ids appended when the lock is taken */
  int *norder;
  int rc;
  atomic_bool done;
};

/* Locks, records its turn, holds the lock over a yield, unlocks. */
static int locker_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_mutex_lock(op->m);
  if (op->rc == 0) {
    if (op->order)
      op->order[(*op->norder)++] = op->id;
    keel_yield();
    keel_mutex_unlock(op->m);
  }
  atomic_store(&op->done, true);
  return 0;
}

/* Cancels its own scope, then locks. */
static int cancelled_locker_task(void *arg) {
  struct op *op = arg;
  keel_scope_cancel(keel_scope_current(), KEEL_CANCEL_USER);
  op->rc = keel_mutex_lock(op->m);
  if (op->rc == 0)
    keel_mutex_unlock(op->m);
  return 0;
}

static int basic_body(void *arg) {
  (void)arg;
  keel_mutex_t m;
  keel_mutex_init(&m);
  CHECK_EQ(keel_mutex_lock(&m), 0);
  CHECK_EQ(keel_mutex_try_lock(&m), -EBUSY);
  keel_mutex_unlock(&m);
  CHECK_EQ(keel_mutex_try_lock(&m), 0);
  keel_mutex_unlock(&m);
  /* A free mutex is taken even by a cancelled task (cleanup needs it). */
  struct op op = {.m = &m, .rc = 1};
  keel_scope_t *s = kt_spawn_in_scope(cancelled_locker_task, &op, KEEL_WORKER_CURRENT);
  CHECK(s);
  keel_scope_close(s);
  CHECK_EQ(op.rc, 0);
  keel_mutex_destroy(&m);
  return 0;
}
static void test_basic(void **state) {
  (void)state;
  kt_run_body(basic_body, NULL, 1);
}

static int fifo_body(void *arg) {
  (void)arg;
  keel_mutex_t m;
  keel_mutex_init(&m);
  int order[3], norder = 0;
  struct op ops[3];
  keel_scope_t *s[3];
  CHECK_EQ(keel_mutex_lock(&m), 0);
  for (int i = 0; i < 3; i++) {
    ops[i] = (struct op){.m = &m, .id = i, .order = order, .norder = &norder};
    s[i] = kt_spawn_in_scope(locker_task, &ops[i], KEEL_WORKER_CURRENT);
    CHECK(s[i]);
    CHECK_RC(settle()); /* queued in this order */
  }
  keel_mutex_unlock(&m);
  /* Handed to the first waiter: nobody may barge in before it runs. */
  CHECK_EQ(keel_mutex_try_lock(&m), -EBUSY);
  for (int i = 0; i < 3; i++) {
    keel_scope_close(s[i]);
    CHECK_EQ(ops[i].rc, 0);
  }
  CHECK_EQ(norder, 3);
  for (int i = 0; i < 3; i++)
    CHECK_EQ(order[i], i);
  CHECK_EQ(keel_mutex_try_lock(&m), 0);
  keel_mutex_unlock(&m);
  keel_mutex_destroy(&m);
  return 0;
}
static void test_fifo_handoff(void **state) {
  (void)state;
  kt_run_body(fifo_body, NULL, 1);
}

static int cancel_body(void *arg) {
  (void)arg;
  keel_mutex_t m;
  keel_mutex_init(&m);
  CHECK_EQ(keel_mutex_lock(&m), 0);
  struct op a = {.m = &m}, b = {.m = &m};
  keel_scope_t *sa = kt_spawn_in_scope(locker_task, &a, KEEL_WORKER_CURRENT);
  CHECK(sa);
  CHECK_RC(settle());
  keel_scope_t *sb = kt_spawn_in_scope(locker_task, &b, KEEL_WORKER_CURRENT);
  CHECK(sb);
  CHECK_RC(settle());
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  keel_scope_close(sa);
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK(!atomic_load(&b.done));
  keel_mutex_unlock(&m); /* the cancelled waiter left: b gets it */
  keel_scope_close(sb);
  CHECK_EQ(b.rc, 0);
  CHECK_EQ(keel_mutex_try_lock(&m), 0);
  keel_mutex_unlock(&m);
  keel_mutex_destroy(&m);
  return 0;
}
static void test_cancel_leaves_waiters(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 1);
}

static int deadline_body(void *arg) {
  (void)arg;
  keel_mutex_t m;
  keel_mutex_init(&m);
  struct op a = {.m = &m};
  CHECK_EQ(keel_mutex_lock(&m), 0);
  int64_t t0 = kt_clock_ns();
  keel_scope_t *sa = NULL;
  (void)keel_scope_open(&(keel_scope_opts_t){.deadline_ns = t0 + 20 * KEEL_NS_PER_MS}, &sa);
  CHECK(sa);
  CHECK_RC(keel_spawn(sa, locker_task, &a, NULL));
  keel_scope_close(sa);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  CHECK_EQ(a.rc, -ETIMEDOUT);
  keel_mutex_unlock(&m); /* the timed-out waiter left: the lock is free */
  CHECK_EQ(keel_mutex_try_lock(&m), 0);
  keel_mutex_unlock(&m);
  keel_mutex_destroy(&m);
  return 0;
}
static void test_deadline_timedout(void **state) {
  (void)state;
  kt_run_body(deadline_body, NULL, 1);
}

/* The lock is handed to a, which is cancelled before it runs: a returns
 * -ECANCELED without the lock, and the lock must reach b. */
static int handoff_cancel_body(void *arg) {
  (void)arg;
  static keel_mutex_t m; /* static: a failed check returns with tasks using it */
  static struct op a, b;
  keel_mutex_init(&m);
  CHECK_EQ(keel_mutex_lock(&m), 0);
  a = (struct op){.m = &m};
  b = (struct op){.m = &m};
  keel_scope_t *sa = kt_spawn_in_scope(locker_task, &a, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sb = kt_spawn_in_scope(locker_task, &b, KEEL_WORKER_CURRENT);
  CHECK(sa && sb);
  CHECK_RC(settle());
  keel_mutex_unlock(&m);                   /* hands it to a ... */
  keel_scope_cancel(sa, KEEL_CANCEL_USER); /* ... cancelled before it runs */
  CHECK_RC(settle());
  CHECK(atomic_load(&a.done) && atomic_load(&b.done));
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK_EQ(b.rc, 0);
  keel_scope_close(sa);
  keel_scope_close(sb);
  CHECK_EQ(keel_mutex_try_lock(&m), 0);
  keel_mutex_unlock(&m);
  keel_mutex_destroy(&m);
  return 0;
}
static void test_handoff_then_cancel_passes_on(void **state) {
  (void)state;
  kt_run_body(handoff_cancel_body, NULL, 1);
}

/* ---- Two workers ----------------------------------------------------------------- */

#define HAMMER_TASKS 4
#define HAMMER_ROUNDS (20000 / KT_SCALE)

struct hammer {
  keel_mutex_t m;
  long counter; /* plain: the mutex is its only protection */
};

static int hammer_task(void *arg) {
  struct hammer *h = arg;
  for (int i = 0; i < HAMMER_ROUNDS; i++) {
    CHECK_RC(keel_mutex_lock(&h->m));
    long v = h->counter;
    if (i % 64 == 0)
      keel_yield(); /* park others on the lock now and then */
    h->counter = v + 1;
    keel_mutex_unlock(&h->m);
  }
  return 0;
}

static int hammer_body(void *arg) {
  (void)arg;
  struct hammer h = {.counter = 0};
  keel_mutex_init(&h.m);
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < 2 * HAMMER_TASKS; i++) {
    keel_spawn_opts_t o = {.name = "hammer", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(s, hammer_task, &h, &o));
  }
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  CHECK_EQ(h.counter, 2L * HAMMER_TASKS * HAMMER_ROUNDS);
  keel_mutex_destroy(&h.m);
  return 0;
}
static void test_two_workers_exact_count(void **state) {
  (void)state;
  kt_run_body(hammer_body, NULL, 2);
}

/* Waiters on the other worker: one cancelled while waiting, one handed the
 * lock across workers. */
static int cross_cancel_body(void *arg) {
  (void)arg;
  keel_mutex_t m;
  keel_mutex_init(&m);
  CHECK_EQ(keel_mutex_lock(&m), 0);
  struct op a = {.m = &m}, b = {.m = &m};
  keel_scope_t *sa = kt_spawn_in_scope(locker_task, &a, KEEL_WORKER(1));
  CHECK_RC(keel_sleep_ms(20));
  keel_scope_t *sb = kt_spawn_in_scope(locker_task, &b, KEEL_WORKER(1));
  CHECK(sa && sb);
  CHECK_RC(keel_sleep_ms(20));
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  keel_scope_close(sa);
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK(!atomic_load(&b.done));
  keel_mutex_unlock(&m);
  keel_scope_close(sb);
  CHECK_EQ(b.rc, 0);
  CHECK_EQ(keel_mutex_try_lock(&m), 0);
  keel_mutex_unlock(&m);
  keel_mutex_destroy(&m);
  return 0;
}
static void test_cross_worker_cancel(void **state) {
  (void)state;
  kt_run_body(cross_cancel_body, NULL, 2);
}

/* ---- Misuse ------------------------------------------------------------------------ */

#ifndef NDEBUG
static keel_mutex_t misuse_m;
static int misuse_unlocker(void *arg) {
  (void)arg;
  keel_mutex_unlock(&misuse_m); /* not the owner: asserts */
  return 0;
}
static int misuse_main(void *arg) {
  (void)arg;
  keel_mutex_init(&misuse_m);
  keel_mutex_lock(&misuse_m);
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  keel_spawn(s, misuse_unlocker, NULL, NULL);
  keel_scope_close(s);
  return 0;
}
/* The first selected backend is as good as any: the assertion is the same. */
static int misuse_child(void) {
  return kt_run(kt_backend_next(KT_BACKEND_NONE, true), 1, misuse_main, NULL);
}
#endif

static void test_unlock_by_non_owner_asserts(void **state) {
  (void)state;
#ifdef NDEBUG
  skip();
#else
  int status = 0;
  char *err = kt_run_child(misuse_child, 10, &status, NULL);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
  assert_non_null(strstr(err, "does not hold the mutex"));
  free(err);
#endif
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic),
      cmocka_unit_test(test_fifo_handoff),
      cmocka_unit_test(test_cancel_leaves_waiters),
      cmocka_unit_test(test_deadline_timedout),
      cmocka_unit_test(test_handoff_then_cancel_passes_on),
      cmocka_unit_test(test_two_workers_exact_count),
      cmocka_unit_test(test_cross_worker_cancel),
      cmocka_unit_test(test_unlock_by_non_owner_asserts),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
