/* Bounded task pool: never more than the limit run at once (spawners and
 * tasks on two workers), spawn waits for a slot while try_spawn says
 * -EAGAIN, a spawner cancelled or timed out while waiting spawns nothing,
 * a failed spawn gives its slot back, the CPU default, and a pool that
 * spawns into a caller's scope. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

/* Work that counts how many run at once. */
struct load {
  keel_pool_t *pool;
  atomic_int running, max_running, finished;
  atomic_int over_limit; /* keel_pool_running above the limit, seen inside */
};

static int work_task(void *arg) {
  struct load *l = arg;
  int now = atomic_fetch_add(&l->running, 1) + 1;
  int max = atomic_load(&l->max_running);
  while (now > max && !atomic_compare_exchange_weak(&l->max_running, &max, now))
    ;
  if (keel_pool_running(l->pool) > keel_pool_limit(l->pool))
    atomic_fetch_add(&l->over_limit, 1);
  keel_sleep_ms(1);
  atomic_fetch_sub(&l->running, 1);
  atomic_fetch_add(&l->finished, 1);
  return 0;
}

#define LIMIT 3
#define PER_SPAWNER (60 / KT_SCALE + 6)

static int spawner_task(void *arg) {
  struct load *l = arg;
  for (int i = 0; i < PER_SPAWNER; i++) {
    keel_spawn_opts_t o = {.name = "work", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_pool_spawn(l->pool, work_task, l, &o));
  }
  return 0;
}

static int limit_body(void *arg) {
  (void)arg;
  struct load l = {.running = 0};
  CHECK_RC(keel_pool_open(NULL, LIMIT, &l.pool));
  CHECK_EQ(keel_pool_limit(l.pool), LIMIT);
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  for (int i = 0; i < 2; i++) {
    keel_spawn_opts_t o = {.name = "spawner", .on_worker = KEEL_WORKER(i)};
    CHECK_RC(keel_spawn(sc, spawner_task, &l, &o));
  }
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK_RC(keel_pool_join(l.pool));
  CHECK_EQ(atomic_load(&l.finished), 2 * PER_SPAWNER);
  CHECK(atomic_load(&l.max_running) <= LIMIT);
  CHECK_EQ(atomic_load(&l.max_running), LIMIT); /* and the slots were all used */
  CHECK_EQ(atomic_load(&l.over_limit), 0);
  CHECK_EQ(keel_pool_running(l.pool), 0);
  keel_pool_close(l.pool);
  return 0;
}
static void test_never_more_than_limit(void **state) {
  (void)state;
  kt_run_body(limit_body, NULL, 2);
}

/* A task that holds its slot until notified. */
static int holder_task(void *arg) { return keel_notify_wait(arg); }

struct spawner {
  keel_pool_t *pool;
  atomic_int *calls;
  int rc;
  atomic_bool done;
};

static int count_task(void *arg) {
  atomic_fetch_add((atomic_int *)arg, 1);
  return 0;
}

static int one_spawn_task(void *arg) {
  struct spawner *sp = arg;
  sp->rc = keel_pool_spawn(sp->pool, count_task, sp->calls, NULL);
  atomic_store(&sp->done, true);
  return 0;
}

static keel_scope_t *spawn_spawner(struct spawner *sp, int worker) {
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_spawn_opts_t o = {.name = "spawner", .on_worker = worker};
  if (sc && keel_spawn(sc, one_spawn_task, sp, &o) < 0) {
    keel_scope_close(sc);
    return NULL;
  }
  return sc;
}

static int waits_body(void *arg) {
  (void)arg;
  keel_pool_t *p;
  keel_notify_t release;
  keel_notify_init(&release);
  atomic_int calls = 0;
  CHECK_RC(keel_pool_open(NULL, 1, &p));
  CHECK_RC(keel_pool_spawn(p, holder_task, &release, NULL));
  CHECK_EQ(keel_pool_try_spawn(p, count_task, &calls, NULL), -EAGAIN);
  struct spawner sp = {.pool = p, .calls = &calls};
  keel_scope_t *sc = spawn_spawner(&sp, KEEL_WORKER(1));
  CHECK(sc);
  CHECK_RC(keel_sleep_ms(20));
  CHECK(!atomic_load(&sp.done)); /* no slot: it waits */
  keel_notify_one(&release);
  keel_scope_close(sc);
  CHECK_EQ(sp.rc, 0);
  CHECK_RC(keel_pool_join(p));
  CHECK_EQ(atomic_load(&calls), 1);
  CHECK_EQ(keel_pool_try_spawn(p, count_task, &calls, NULL), 0);
  CHECK_RC(keel_pool_close(p));
  CHECK_EQ(atomic_load(&calls), 2);
  return 0;
}
static void test_spawn_waits_for_a_slot(void **state) {
  (void)state;
  kt_run_body(waits_body, NULL, 2);
}

static int cancel_body(void *arg) {
  (void)arg;
  keel_pool_t *p;
  keel_notify_t release;
  keel_notify_init(&release);
  atomic_int calls = 0;
  CHECK_RC(keel_pool_open(NULL, 1, &p));
  CHECK_RC(keel_pool_spawn(p, holder_task, &release, NULL));
  struct spawner a = {.pool = p, .calls = &calls}, b = {.pool = p, .calls = &calls};
  keel_scope_t *sa = spawn_spawner(&a, KEEL_WORKER(1));
  CHECK(sa);
  CHECK_RC(keel_sleep_ms(20));
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  keel_scope_close(sa);
  CHECK_EQ(a.rc, -ECANCELED);
  /* A deadline: the same, with -ETIMEDOUT. */
  keel_scope_opts_t so = {.deadline_ns = keel_now_ns() + 20 * KEEL_NS_PER_MS};
  keel_scope_t *sb = NULL;
  (void)keel_scope_open(&so, &sb);
  CHECK(sb);
  CHECK_RC(keel_spawn(sb, one_spawn_task, &b, NULL));
  keel_scope_close(sb);
  CHECK_EQ(b.rc, -ETIMEDOUT);
  CHECK_EQ(keel_pool_running(p), 1); /* only the holder */
  keel_notify_one(&release);
  CHECK_RC(keel_pool_join(p));
  CHECK_EQ(atomic_load(&calls), 0); /* nothing was spawned */
  CHECK_EQ(keel_pool_running(p), 0);
  keel_pool_close(p);
  return 0;
}
static void test_cancelled_spawner_spawns_nothing(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 2);
}

static int failed_spawn_body(void *arg) {
  (void)arg;
  keel_pool_t *p;
  atomic_int calls = 0;
  keel_scope_t *parent = NULL;
  (void)keel_scope_open(NULL, &parent);
  CHECK(parent);
  CHECK_RC(keel_pool_open(parent, 1, &p));
  CHECK(keel_pool_scope(p) == parent);
  keel_spawn_opts_t bad = {.on_worker = KEEL_WORKER(7)};
  CHECK_EQ(keel_pool_spawn(p, count_task, &calls, &bad), -EINVAL);
  CHECK_EQ(keel_pool_running(p), 0); /* the slot came back */
  keel_scope_cancel(parent, KEEL_CANCEL_USER);
  CHECK_EQ(keel_pool_spawn(p, count_task, &calls, NULL), -ECANCELED);
  CHECK_EQ(keel_pool_running(p), 0);
  keel_pool_close(p);
  keel_scope_close(parent);
  CHECK_EQ(atomic_load(&calls), 0);
  return 0;
}
static void test_failed_spawn_returns_slot(void **state) {
  (void)state;
  kt_run_body(failed_spawn_body, NULL, 1);
}

/* A task whose stack cannot be mapped: the spawn fails and the slot comes
 * back (it used to be lost for good, and join/close then hung). */
static int unmappable_body(void *arg) {
  (void)arg;
  atomic_int calls = 0;
  keel_scope_t *parent = NULL;
  (void)keel_scope_open(NULL, &parent);
  CHECK(parent);
  keel_pool_t *own, *in_parent;
  CHECK_RC(keel_pool_open(NULL, 1, &own));
  CHECK_RC(keel_pool_open(parent, 1, &in_parent));
  struct rlimit old;
  if (!kt_as_limit_begin(&old)) {
    fprintf(stderr, "# address-space cap unavailable (sanitizer build): skipped\n");
  } else {
    keel_spawn_opts_t o = {.name = "huge", .stack_size = KT_UNMAPPABLE_STACK};
    int rc1 = keel_pool_spawn(own, count_task, &calls, &o);
    int rc2 = keel_pool_spawn(in_parent, count_task, &calls, &o);
    kt_as_limit_end(&old);
    CHECK_EQ(rc1, -ENOMEM);
    CHECK_EQ(rc2, -ENOMEM);
  }
  CHECK_EQ(keel_pool_running(own), 0);
  CHECK_EQ(keel_pool_running(in_parent), 0);
  CHECK_RC(keel_pool_try_spawn(own, count_task, &calls, NULL));
  CHECK_RC(keel_pool_try_spawn(in_parent, count_task, &calls, NULL));
  CHECK_RC(keel_pool_join(own));
  CHECK_RC(keel_pool_join(in_parent));
  CHECK_RC(keel_pool_close(own));
  CHECK_RC(keel_pool_close(in_parent));
  keel_scope_close(parent);
  CHECK_EQ(atomic_load(&calls), 2);
  return 0;
}
static void test_unmappable_stack_returns_slot(void **state) {
  (void)state;
  kt_run_body(unmappable_body, NULL, 1);
}

/* keel_pool_close in cleanup code whose shield deadline has passed still
 * waits for the pool's tasks, parked: it used to retry without parking, so
 * a pool task on the same worker never ran again. */
static int sleeper_task(void *arg) {
  atomic_int *done = arg;
  int rc = keel_sleep_ms(50);
  atomic_fetch_add(done, 1);
  return rc;
}
static int expired_shield_body(void *arg) {
  (void)arg;
  atomic_int done = 0;
  keel_scope_t *parent = NULL;
  (void)keel_scope_open(NULL, &parent);
  CHECK(parent);
  keel_pool_t *p;
  CHECK_RC(keel_pool_open(parent, 2, &p));
  CHECK_RC(keel_pool_spawn(p, sleeper_task, &done, NULL));
  CHECK_RC(keel_pool_spawn(p, sleeper_task, &done, NULL));
  keel_shield_begin(keel_now_ns() + 10 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_sleep_ms(20), -ETIMEDOUT); /* the shield's deadline has passed */
  keel_pool_close(p);
  keel_shield_end();
  CHECK_EQ(atomic_load(&done), 2);
  keel_scope_close(parent);
  return 0;
}
static void test_close_in_expired_shield_waits(void **state) {
  (void)state;
  kt_run_body(expired_shield_body, NULL, 1);
}

static int parent_body(void *arg) {
  (void)arg;
  struct load l = {.running = 0};
  keel_scope_t *parent = NULL;
  (void)keel_scope_open(NULL, &parent);
  CHECK(parent);
  CHECK_RC(keel_pool_open(parent, 2, &l.pool));
  for (int i = 0; i < 10; i++)
    CHECK_RC(keel_pool_spawn(l.pool, work_task, &l, NULL));
  CHECK_RC(keel_pool_join(l.pool));
  CHECK_EQ(atomic_load(&l.finished), 10);
  CHECK(atomic_load(&l.max_running) <= 2);
  for (int i = 0; i < 4; i++)
    CHECK_RC(keel_pool_spawn(l.pool, work_task, &l, NULL));
  keel_pool_close(l.pool); /* waits for them */
  CHECK_EQ(atomic_load(&l.finished), 14);
  keel_scope_close(parent);
  return 0;
}
static void test_parent_scope(void **state) {
  (void)state;
  kt_run_body(parent_body, NULL, 1);
}

static int default_limit_body(void *arg) {
  (void)arg;
  keel_pool_t *p;
  CHECK_RC(keel_pool_open(NULL, 0, &p));
  CHECK_EQ(keel_pool_limit(p), sysconf(_SC_NPROCESSORS_ONLN));
  keel_pool_close(p);
  return 0;
}
static void test_default_limit_cpus(void **state) {
  (void)state;
  kt_run_body(default_limit_body, NULL, 1);
}

/* Only the task that opened a pool with its own scope closes it: another
 * task gets -EPERM and the pool stays usable. */
static int close_elsewhere(void *arg) { return keel_pool_close(arg) == -EPERM ? 0 : -EPROTO; }

static int close_opener_body(void *arg) {
  (void)arg;
  keel_pool_t *p;
  atomic_int calls = 0;
  CHECK_RC(keel_pool_open(NULL, 2, &p));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  CHECK_RC(keel_spawn(sc, close_elsewhere, p, NULL));
  CHECK_RC(keel_scope_close(sc));
  CHECK_RC(keel_pool_spawn(p, count_task, &calls, NULL));
  CHECK_RC(keel_pool_close(p));
  CHECK_EQ(atomic_load(&calls), 1);
  CHECK_RC(keel_pool_close(NULL));
  return 0;
}

static void test_close_by_opener_only(void **state) {
  (void)state;
  kt_run_body(close_opener_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_close_by_opener_only),
      cmocka_unit_test(test_never_more_than_limit),
      cmocka_unit_test(test_spawn_waits_for_a_slot),
      cmocka_unit_test(test_cancelled_spawner_spawns_nothing),
      cmocka_unit_test(test_failed_spawn_returns_slot),
      cmocka_unit_test(test_parent_scope),
      cmocka_unit_test(test_unmappable_stack_returns_slot),
      cmocka_unit_test(test_close_in_expired_shield_waits),
      cmocka_unit_test(test_default_limit_cpus),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
