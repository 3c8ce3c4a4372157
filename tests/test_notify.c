/* Notify: notify_one stores one permit when nobody waits, wakes waiters in
 * order; notify_all wakes every current waiter and stores nothing;
 * cancellation and deadlines of a waiter; a notify_one that picked a task
 * cancelled before it ran goes on (to the next waiter, or into the
 * permit); a notify from a thread outside the runtime; ping-pong between
 * two workers. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#include <pthread.h>

static int settle(void) { return keel_sleep_ms(5); }

struct op {
  keel_notify_t *n;
  int rc;
  atomic_bool done;
};

static int waiter_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_notify_wait(op->n);
  atomic_store(&op->done, true);
  return 0;
}

static keel_scope_t *spawn_waiter(struct op *op, int worker) {
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_spawn_opts_t o = {.name = "waiter", .on_worker = worker};
  if (sc && keel_spawn(sc, waiter_task, op, &o) < 0) {
    keel_scope_close(sc);
    return NULL;
  }
  return sc;
}

/* Waits at most ms: 0 if notified, -ETIMEDOUT if not. */
static int wait_for(keel_notify_t *n, int ms) {
  int64_t prev = keel_task_set_deadline(keel_now_ns() + ms * KEEL_NS_PER_MS);
  int rc = keel_notify_wait(n);
  keel_task_set_deadline(prev);
  return rc;
}

static int permit_body(void *arg) {
  (void)arg;
  keel_notify_t n;
  keel_notify_init(&n);
  keel_notify_one(&n);
  CHECK_EQ(keel_notify_wait(&n), 0); /* the stored permit */
  keel_notify_one(&n);
  keel_notify_one(&n); /* still one permit */
  CHECK_EQ(wait_for(&n, 10), 0);
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(wait_for(&n, 20), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  keel_notify_destroy(&n);
  return 0;
}
static void test_one_stores_a_single_permit(void **state) {
  (void)state;
  kt_run_body(permit_body, NULL, 1);
}

static int one_in_order_body(void *arg) {
  (void)arg;
  keel_notify_t n;
  keel_notify_init(&n);
  struct op a = {.n = &n}, b = {.n = &n};
  keel_scope_t *sa = spawn_waiter(&a, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sb = spawn_waiter(&b, KEEL_WORKER_CURRENT);
  CHECK(sa && sb);
  CHECK_RC(settle());
  keel_notify_one(&n);
  CHECK_RC(settle());
  CHECK(atomic_load(&a.done) && !atomic_load(&b.done));
  keel_notify_one(&n);
  keel_scope_close(sa);
  keel_scope_close(sb);
  CHECK_EQ(a.rc, 0);
  CHECK_EQ(b.rc, 0);
  CHECK_EQ(wait_for(&n, 10), -ETIMEDOUT); /* both went to waiters */
  keel_notify_destroy(&n);
  return 0;
}
static void test_one_wakes_in_order(void **state) {
  (void)state;
  kt_run_body(one_in_order_body, NULL, 1);
}

/* Waiters 0 and 2 wait on this worker, which ran them up to their wait:
 * one notify_all wakes both. Waiter 1 waits on worker 1, which a loaded
 * machine may run late, so whether it waits yet is unknown: a notify_all
 * sent once it waits must wake it, and none may leave a permit. */
static int all_body(void *arg) {
  (void)arg;
  keel_notify_t n;
  keel_notify_init(&n);
  keel_notify_all(&n); /* nobody waits: nothing happens, nothing stored */
  CHECK_EQ(wait_for(&n, 10), -ETIMEDOUT);
  struct op w[3];
  keel_scope_t *sc[3];
  for (int i = 0; i < 3; i++) {
    w[i] = (struct op){.n = &n};
    CHECK(sc[i] = spawn_waiter(&w[i], KEEL_WORKER(i % 2)));
  }
  CHECK_RC(settle());
  keel_notify_all(&n);
  CHECK_RC(settle());
  CHECK(atomic_load(&w[0].done) && atomic_load(&w[2].done));
  while (!atomic_load(&w[1].done)) {
    keel_notify_all(&n);
    CHECK_RC(keel_sleep_ms(1));
  }
  for (int i = 0; i < 3; i++) {
    keel_scope_close(sc[i]);
    CHECK_EQ(w[i].rc, 0);
  }
  CHECK_EQ(wait_for(&n, 10), -ETIMEDOUT);
  keel_notify_destroy(&n);
  return 0;
}
static void test_all_wakes_current_waiters_only(void **state) {
  (void)state;
  kt_run_body(all_body, NULL, 2);
}

static int cancel_body(void *arg) {
  (void)arg;
  keel_notify_t n;
  keel_notify_init(&n);
  struct op a = {.n = &n};
  keel_scope_t *sa = spawn_waiter(&a, KEEL_WORKER_CURRENT);
  CHECK(sa);
  CHECK_RC(settle());
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  keel_scope_close(sa);
  CHECK_EQ(a.rc, -ECANCELED);
  keel_notify_one(&n); /* nobody waits any more: stored */
  CHECK_EQ(wait_for(&n, 10), 0);
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(wait_for(&n, 20), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  keel_notify_one(&n);
  CHECK_EQ(wait_for(&n, 10), 0); /* the timed-out waiter left too */
  keel_notify_destroy(&n);
  return 0;
}
static void test_cancel_and_deadline_leave(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 1);
}

static int woken_cancel_body(void *arg) {
  (void)arg;
  static keel_notify_t n; /* static: a failed check returns with tasks using it */
  static struct op a, b;
  keel_notify_init(&n);
  a = (struct op){.n = &n};
  b = (struct op){.n = &n};
  keel_scope_t *sa = spawn_waiter(&a, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sb = spawn_waiter(&b, KEEL_WORKER_CURRENT);
  CHECK(sa && sb);
  CHECK_RC(settle());
  keel_notify_one(&n);                     /* picks a ... */
  keel_scope_cancel(sa, KEEL_CANCEL_USER); /* ... cancelled before it runs */
  CHECK_RC(settle());
  CHECK(atomic_load(&a.done) && atomic_load(&b.done));
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK_EQ(b.rc, 0);
  keel_scope_close(sa);
  keel_scope_close(sb);
  /* Alone: the notification it cannot take is stored for the next wait. */
  sa = spawn_waiter(&a, KEEL_WORKER_CURRENT);
  CHECK(sa);
  CHECK_RC(settle());
  keel_notify_one(&n);
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  keel_scope_close(sa);
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK_EQ(wait_for(&n, 10), 0);
  keel_notify_destroy(&n);
  return 0;
}
static void test_woken_then_cancelled_passes_on(void **state) {
  (void)state;
  kt_run_body(woken_cancel_body, NULL, 1);
}

/* A thread outside the runtime notifies a parked task. */
static void *notifier_thread(void *arg) {
  usleep(10 * 1000);
  keel_notify_one(arg);
  return NULL;
}

static int foreign_body(void *arg) {
  (void)arg;
  keel_notify_t n;
  keel_notify_init(&n);
  pthread_t th;
  CHECK_EQ(pthread_create(&th, NULL, notifier_thread, &n), 0);
  int rc = keel_notify_wait(&n); /* a lost notification: the guard ends it */
  pthread_join(th, NULL);
  CHECK_EQ(rc, 0);
  keel_notify_destroy(&n);
  return 0;
}
/* A real thread: not for lab mode, whose virtual clock would reach the
 * guard's deadline before the thread runs. */
static void test_notify_from_foreign_thread(void **state) {
  (void)state;
  kt_run_real_body(foreign_body, NULL, 1);
}

/* ---- Two workers ---------------------------------------------------------------------- */

#define ROUNDS (5000 / KT_SCALE)

struct pingpong {
  keel_notify_t ping, pong;
  long pongs; /* plain: ordered by the notifications */
};

static int ponger(void *arg) {
  struct pingpong *pp = arg;
  for (int i = 0; i < ROUNDS; i++) {
    CHECK_RC(keel_notify_wait(&pp->ping));
    pp->pongs++;
    keel_notify_one(&pp->pong);
  }
  return 0;
}

static int pingpong_body(void *arg) {
  (void)arg;
  struct pingpong pp = {.pongs = 0};
  keel_notify_init(&pp.ping);
  keel_notify_init(&pp.pong);
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  keel_spawn_opts_t o = {.name = "ponger", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(sc, ponger, &pp, &o));
  for (int i = 0; i < ROUNDS; i++) {
    keel_notify_one(&pp.ping);
    CHECK_RC(keel_notify_wait(&pp.pong));
    CHECK_EQ(pp.pongs, i + 1);
  }
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  keel_notify_destroy(&pp.ping);
  keel_notify_destroy(&pp.pong);
  return 0;
}
static void test_two_workers_pingpong(void **state) {
  (void)state;
  kt_run_body(pingpong_body, NULL, 2);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_stores_a_single_permit),
      cmocka_unit_test(test_one_wakes_in_order),
      cmocka_unit_test(test_all_wakes_current_waiters_only),
      cmocka_unit_test(test_cancel_and_deadline_leave),
      cmocka_unit_test(test_woken_then_cancelled_passes_on),
      cmocka_unit_test(test_notify_from_foreign_thread),
      cmocka_unit_test(test_two_workers_pingpong),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
