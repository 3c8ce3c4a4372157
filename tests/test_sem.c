/* Semaphore: try variants and bad arguments, FIFO (a big request is not
 * overtaken by smaller ones), a cancelled head lets those behind it go,
 * deadlines, permits handed to a task cancelled before it ran go on, and
 * a limit shared by tasks on two workers. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

static int settle(void) { return keel_sleep_ms(5); }

/* Acquires n permits and keeps them (the test counts them). */
struct op {
  keel_sem_t *s;
  uint64_t n;
  int rc;
  atomic_bool done;
};

static int acquirer_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_sem_acquire(op->s, op->n);
  atomic_store(&op->done, true);
  return 0;
}

static keel_scope_t *spawn_op(struct op *op, int worker) {
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_spawn_opts_t o = {.name = "acquirer", .on_worker = worker};
  if (sc && keel_spawn(sc, acquirer_task, op, &o) < 0) {
    keel_scope_close(sc);
    return NULL;
  }
  return sc;
}

static int basic_body(void *arg) {
  (void)arg;
  keel_sem_t s;
  keel_sem_init(&s, 3);
  CHECK_EQ(keel_sem_try_acquire(&s, 2), 0);
  CHECK_EQ(keel_sem_try_acquire(&s, 2), -EAGAIN);
  CHECK_EQ(keel_sem_available(&s), 1);
  CHECK_EQ(keel_sem_acquire(&s, 1), 0);
  CHECK_EQ(keel_sem_available(&s), 0);
  keel_sem_release(&s, 3);
  CHECK_EQ(keel_sem_available(&s), 3);
  CHECK_EQ(keel_sem_acquire(&s, 0), -EINVAL);
  CHECK_EQ(keel_sem_try_acquire(&s, 0), -EINVAL);
  CHECK_EQ(keel_sem_acquire(&s, KEEL_SEM_MAX + 1), -EINVAL);
  keel_sem_destroy(&s);
  return 0;
}
static void test_basic(void **state) {
  (void)state;
  kt_run_body(basic_body, NULL, 1);
}

static int fifo_body(void *arg) {
  (void)arg;
  static keel_sem_t s; /* static: a failed check returns with tasks using it */
  static struct op big, small;
  keel_sem_init(&s, 0);
  big = (struct op){.s = &s, .n = 3};
  small = (struct op){.s = &s, .n = 1};
  keel_scope_t *sb = spawn_op(&big, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *ss = spawn_op(&small, KEEL_WORKER_CURRENT);
  CHECK(sb && ss);
  CHECK_RC(settle());
  keel_sem_release(&s, 1);
  CHECK_RC(settle());
  /* One permit would satisfy the small request, but the big one is first. */
  CHECK(!atomic_load(&big.done) && !atomic_load(&small.done));
  CHECK_EQ(keel_sem_try_acquire(&s, 1), -EAGAIN); /* nor may we overtake */
  keel_sem_release(&s, 2);
  CHECK_RC(settle());
  CHECK(atomic_load(&big.done));
  CHECK_EQ(big.rc, 0);
  CHECK(!atomic_load(&small.done));
  keel_sem_release(&s, 1);
  keel_scope_close(sb);
  keel_scope_close(ss);
  CHECK_EQ(small.rc, 0);
  CHECK_EQ(keel_sem_available(&s), 0);
  keel_sem_destroy(&s);
  return 0;
}
static void test_fifo_big_request_not_starved(void **state) {
  (void)state;
  kt_run_body(fifo_body, NULL, 1);
}

/* The big request at the head is cancelled: the small one behind it fits
 * in the permits already there and must get them without a new release. */
static int cancel_head_body(void *arg) {
  (void)arg;
  keel_sem_t s;
  keel_sem_init(&s, 1);
  struct op big = {.s = &s, .n = 3}, small = {.s = &s, .n = 1};
  keel_scope_t *sb = spawn_op(&big, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *ss = spawn_op(&small, KEEL_WORKER_CURRENT);
  CHECK(sb && ss);
  CHECK_RC(settle());
  CHECK(!atomic_load(&small.done));
  keel_scope_cancel(sb, KEEL_CANCEL_USER);
  keel_scope_close(sb);
  CHECK_EQ(big.rc, -ECANCELED);
  keel_scope_close(ss);
  CHECK_EQ(small.rc, 0);
  CHECK_EQ(keel_sem_available(&s), 0);
  keel_sem_release(&s, 1);
  CHECK_EQ(keel_sem_try_acquire(&s, 1), 0); /* no waiter left behind */
  keel_sem_destroy(&s);
  return 0;
}
static void test_cancelled_head_lets_others_go(void **state) {
  (void)state;
  kt_run_body(cancel_head_body, NULL, 1);
}

static int deadline_body(void *arg) {
  (void)arg;
  keel_sem_t s;
  keel_sem_init(&s, 0);
  int64_t t0 = kt_clock_ns();
  int64_t prev = keel_task_set_deadline(t0 + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_sem_acquire(&s, 1), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  keel_task_set_deadline(prev);
  keel_sem_release(&s, 1);
  CHECK_EQ(keel_sem_available(&s), 1); /* the timed-out waiter took nothing */
  CHECK_EQ(keel_sem_try_acquire(&s, 1), 0);
  keel_sem_destroy(&s);
  return 0;
}
static void test_deadline_timedout(void **state) {
  (void)state;
  kt_run_body(deadline_body, NULL, 1);
}

static int handoff_cancel_body(void *arg) {
  (void)arg;
  static keel_sem_t s; /* static: a failed check returns with tasks using it */
  static struct op a, b;
  keel_sem_init(&s, 0);
  a = (struct op){.s = &s, .n = 1};
  b = (struct op){.s = &s, .n = 1};
  keel_scope_t *sa = spawn_op(&a, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sb = spawn_op(&b, KEEL_WORKER_CURRENT);
  CHECK(sa && sb);
  CHECK_RC(settle());
  keel_sem_release(&s, 1);                 /* hands the permit to a ... */
  keel_scope_cancel(sa, KEEL_CANCEL_USER); /* ... cancelled before it runs */
  CHECK_RC(settle());
  CHECK(atomic_load(&a.done) && atomic_load(&b.done));
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK_EQ(b.rc, 0);
  CHECK_EQ(keel_sem_available(&s), 0);
  keel_scope_close(sa);
  keel_scope_close(sb);
  keel_sem_destroy(&s);
  return 0;
}
static void test_handoff_then_cancel_passes_on(void **state) {
  (void)state;
  kt_run_body(handoff_cancel_body, NULL, 1);
}

/* ---- Two workers ------------------------------------------------------------------- */

#define LIMIT 3
#define ROUNDS (5000 / KT_SCALE)

struct limited {
  keel_sem_t s;
  atomic_int inside, max_inside;
  atomic_long total;
};

static int limited_task(void *arg) {
  struct limited *l = arg;
  for (int i = 0; i < ROUNDS; i++) {
    CHECK_RC(keel_sem_acquire(&l->s, 1 + (uint64_t)(i % 2)));
    int now = atomic_fetch_add(&l->inside, 1 + i % 2) + 1 + i % 2;
    int max = atomic_load(&l->max_inside);
    while (now > max && !atomic_compare_exchange_weak(&l->max_inside, &max, now))
      ;
    if (i % 16 == 0)
      keel_yield();
    atomic_fetch_sub(&l->inside, 1 + i % 2);
    atomic_fetch_add(&l->total, 1);
    keel_sem_release(&l->s, 1 + (uint64_t)(i % 2));
  }
  return 0;
}

static int two_workers_body(void *arg) {
  (void)arg;
  struct limited l = {.inside = 0};
  keel_sem_init(&l.s, LIMIT);
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  for (int i = 0; i < 8; i++) {
    keel_spawn_opts_t o = {.name = "limited", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(sc, limited_task, &l, &o));
  }
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK_EQ(atomic_load(&l.total), 8L * ROUNDS);
  CHECK(atomic_load(&l.max_inside) <= LIMIT);
  CHECK_EQ(keel_sem_available(&l.s), LIMIT);
  keel_sem_destroy(&l.s);
  return 0;
}
static void test_two_workers_limit(void **state) {
  (void)state;
  kt_run_body(two_workers_body, NULL, 2);
}

static int cross_cancel_body(void *arg) {
  (void)arg;
  keel_sem_t s;
  keel_sem_init(&s, 0);
  struct op a = {.s = &s, .n = 2}, b = {.s = &s, .n = 1};
  keel_scope_t *sa = spawn_op(&a, KEEL_WORKER(1));
  CHECK_RC(keel_sleep_ms(20));
  keel_scope_t *sb = spawn_op(&b, KEEL_WORKER(1));
  CHECK(sa && sb);
  CHECK_RC(keel_sleep_ms(20));
  keel_sem_release(&s, 1);
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  keel_scope_close(sa);
  keel_scope_close(sb); /* b gets the permit once a has left */
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK_EQ(b.rc, 0);
  CHECK_EQ(keel_sem_available(&s), 0);
  keel_sem_destroy(&s);
  return 0;
}
static void test_cross_worker_cancel(void **state) {
  (void)state;
  kt_run_body(cross_cancel_body, NULL, 2);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic),
      cmocka_unit_test(test_fifo_big_request_not_starved),
      cmocka_unit_test(test_cancelled_head_lets_others_go),
      cmocka_unit_test(test_deadline_timedout),
      cmocka_unit_test(test_handoff_then_cancel_passes_on),
      cmocka_unit_test(test_two_workers_limit),
      cmocka_unit_test(test_cross_worker_cancel),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
