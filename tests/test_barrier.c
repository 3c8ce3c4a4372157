/* Barrier: exactly one leader per generation, nobody passes before all
 * arrive, reuse over many generations on two workers, one party, bad
 * init; a cancelled or timed-out waiter leaves and no longer counts; a
 * waiter released by the trip and then cancelled still succeeds. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

static int settle(void) { return keel_sleep_ms(5); }

struct op {
  keel_barrier_t *b;
  int rc;
  atomic_bool done;
};

static int waiter_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_barrier_wait(op->b);
  atomic_store(&op->done, true);
  return 0;
}

static keel_scope_t *spawn_waiter(struct op *op, int worker) {
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_spawn_opts_t o = {.name = "party", .on_worker = worker};
  if (sc && keel_spawn(sc, waiter_task, op, &o) < 0) {
    keel_scope_close(sc);
    return NULL;
  }
  return sc;
}

#define PARTIES 4
#define GENERATIONS (400 / KT_SCALE)

struct gens {
  keel_barrier_t b;
  atomic_int arrived[GENERATIONS];
  atomic_int leaders[GENERATIONS];
};

static int gens_task(void *arg) {
  struct gens *g = arg;
  for (int gen = 0; gen < GENERATIONS; gen++) {
    atomic_fetch_add(&g->arrived[gen], 1);
    int rc = keel_barrier_wait(&g->b);
    CHECK(rc == 0 || rc == KEEL_BARRIER_LEADER);
    CHECK_EQ(atomic_load(&g->arrived[gen]), PARTIES); /* nobody passed early */
    if (rc == KEEL_BARRIER_LEADER)
      atomic_fetch_add(&g->leaders[gen], 1);
  }
  return 0;
}

static int generations_body(void *arg) {
  (void)arg;
  static struct gens g;
  memset(&g, 0, sizeof g);
  CHECK_RC(keel_barrier_init(&g.b, PARTIES));
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  for (int i = 0; i < PARTIES; i++) {
    keel_spawn_opts_t o = {.name = "party", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(sc, gens_task, &g, &o));
  }
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  for (int gen = 0; gen < GENERATIONS; gen++)
    CHECK_EQ(atomic_load(&g.leaders[gen]), 1);
  keel_barrier_destroy(&g.b);
  return 0;
}
static void test_one_leader_per_generation(void **state) {
  (void)state;
  kt_run_body(generations_body, NULL, 2);
}

static int edge_body(void *arg) {
  (void)arg;
  keel_barrier_t b;
  CHECK_EQ(keel_barrier_init(&b, 0), -EINVAL);
  CHECK_RC(keel_barrier_init(&b, 1));
  CHECK_EQ(keel_barrier_wait(&b), KEEL_BARRIER_LEADER);
  CHECK_EQ(keel_barrier_wait(&b), KEEL_BARRIER_LEADER);
  keel_barrier_destroy(&b);
  return 0;
}
static void test_edges(void **state) {
  (void)state;
  kt_run_body(edge_body, NULL, 1);
}

/* a arrives and is cancelled: it must no longer count, so b alone does not
 * trip the barrier; we then make the second party. */
static int cancel_body(void *arg) {
  (void)arg;
  keel_barrier_t b;
  CHECK_RC(keel_barrier_init(&b, 2));
  struct op x = {.b = &b}, y = {.b = &b};
  keel_scope_t *sx = spawn_waiter(&x, KEEL_WORKER(1));
  CHECK(sx);
  CHECK_RC(keel_sleep_ms(20));
  keel_scope_cancel(sx, KEEL_CANCEL_USER);
  keel_scope_close(sx);
  CHECK_EQ(x.rc, -ECANCELED);
  keel_scope_t *sy = spawn_waiter(&y, KEEL_WORKER(1));
  CHECK(sy);
  CHECK_RC(keel_sleep_ms(20));
  CHECK(!atomic_load(&y.done));
  int rc = keel_barrier_wait(&b);
  keel_scope_close(sy);
  CHECK_EQ(rc + y.rc, KEEL_BARRIER_LEADER); /* one leader, one 0 */
  /* A deadline too: our wait times out and leaves the count as it was. */
  int64_t t0 = kt_clock_ns();
  int64_t prev = keel_task_set_deadline(t0 + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_barrier_wait(&b), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  keel_task_set_deadline(prev);
  y = (struct op){.b = &b};
  sy = spawn_waiter(&y, KEEL_WORKER_CURRENT);
  CHECK(sy);
  CHECK_RC(settle());
  CHECK(!atomic_load(&y.done));
  CHECK_EQ(keel_barrier_wait(&b), KEEL_BARRIER_LEADER);
  keel_scope_close(sy);
  CHECK_EQ(y.rc, 0);
  keel_barrier_destroy(&b);
  return 0;
}
static void test_cancelled_waiter_no_longer_counts(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 2);
}

static int tripped_cancel_body(void *arg) {
  (void)arg;
  keel_barrier_t b;
  CHECK_RC(keel_barrier_init(&b, 2));
  struct op x = {.b = &b};
  keel_scope_t *sx = spawn_waiter(&x, KEEL_WORKER_CURRENT);
  CHECK(sx);
  CHECK_RC(settle());
  CHECK_EQ(keel_barrier_wait(&b), KEEL_BARRIER_LEADER); /* releases x ... */
  keel_scope_cancel(sx, KEEL_CANCEL_USER);              /* ... cancelled before it runs */
  keel_scope_close(sx);
  CHECK_EQ(x.rc, 0); /* the trip counted it: it succeeded */
  x = (struct op){.b = &b};
  sx = spawn_waiter(&x, KEEL_WORKER_CURRENT);
  CHECK(sx);
  CHECK_RC(settle());
  CHECK_EQ(keel_barrier_wait(&b), KEEL_BARRIER_LEADER); /* a fresh generation of 2 */
  keel_scope_close(sx);
  CHECK_EQ(x.rc, 0);
  keel_barrier_destroy(&b);
  return 0;
}
static void test_tripped_then_cancelled_succeeds(void **state) {
  (void)state;
  kt_run_body(tripped_cancel_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_leader_per_generation),
      cmocka_unit_test(test_edges),
      cmocka_unit_test(test_cancelled_waiter_no_longer_counts),
      cmocka_unit_test(test_tripped_then_cancelled_succeeds),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
