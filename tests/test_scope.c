/* Scopes: nesting, joins, cancellation with reasons, fail-fast, auto-join. */
#include <stdatomic.h>
#include <time.h>

#include "keel-test.h"

#define MS(ns) ((ns) / KEEL_NS_PER_MS)

/* How late a wake-up may be on io_uring and epoll on a loaded machine
 * (every core busy, a sanitizer's slowdown); the waits it bounds ask for
 * 10 s. The single-worker cases run in lab mode too, where they are timed
 * exactly (kt_clock_ns is virtual there). */
#define LATE_MS 2000

static keel_spawn_opts_t spawn_opts(keel_task_t **handle) {
  keel_spawn_opts_t o = {.on_worker = KEEL_WORKER_CURRENT, .handle = handle};
  return o;
}

/* Common state: tasks record what they saw, the test asserts afterwards. */
struct st {
  keel_scope_t *outer, *nested;
  keel_task_t *handle;
  keel_outcome_t outcome[4];
  keel_cancel_reason_t reason[4];
  int rc[8];
  int flag, flag_at_return, spawn_rc, join_rc, nested_join_rc;
  int release[8];
  size_t live[8];
  int worker;
  int64_t elapsed_ns;
};

static int sleep_10s_task(void *arg) {
  int *rc = arg;
  *rc = keel_sleep_ms(10000);
  return *rc;
}

static int set_flag_after_50ms_task(void *arg) {
  struct st *st = arg;
  keel_sleep_ms(50);
  st->flag = 1;
  return 0;
}

/* ---- Nested scopes --------------------------------------------------------- */

static int record_scope_task(void *arg) {
  struct st *st = arg;
  st->flag = keel_scope_current() == st->nested;
  return 0;
}

static int opener_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_scope_current() == st->outer;
  (void)keel_scope_open(NULL, &st->nested);
  if (!st->nested)
    return -ENOMEM;
  st->spawn_rc = keel_spawn(st->nested, record_scope_task, st, NULL);
  st->nested_join_rc = keel_scope_join(st->nested);
  keel_scope_close(st->nested);
  return 0;
}

static int nested_main(void *arg) {
  struct st *st = arg;
  (void)keel_scope_open(NULL, &st->outer);
  if (!st->outer)
    return -ENOMEM;
  int rc = keel_spawn(st->outer, opener_task, st, NULL);
  st->join_rc = keel_scope_join(st->outer);
  keel_scope_close(st->outer);
  return rc;
}

static void test_nested(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct st st = {.join_rc = -1, .nested_join_rc = -1, .spawn_rc = -1};
    assert_int_equal(kt_run(b, 1, nested_main, &st), 0);
    assert_int_equal(st.rc[0], 1); /* the opener runs in outer */
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.flag, 1); /* the child ran, in the nested scope */
    assert_int_equal(st.nested_join_rc, 0);
    assert_int_equal(st.join_rc, 0);
  }
}

/* ---- Join waits for grandchildren ---------------------------------------------- */

static int spawn_grandchild_task(void *arg) {
  struct st *st = arg;
  return keel_spawn(keel_scope_current(), set_flag_after_50ms_task, st, NULL);
}

static int grandchild_main(void *arg) {
  struct st *st = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  int64_t t0 = kt_clock_ns();
  st->spawn_rc = keel_spawn(s, spawn_grandchild_task, st, NULL);
  st->join_rc = keel_scope_join(s);
  st->flag_at_return = st->flag;
  st->elapsed_ns = kt_clock_ns() - t0;
  keel_scope_close(s);
  return 0;
}

static void test_join_waits_for_grandchildren(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.join_rc = -1};
    assert_int_equal(kt_run(b, 1, grandchild_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.join_rc, 0);
    assert_int_equal(st.flag_at_return, 1);
    if (b == KEEL_BACKEND_LAB)
      assert_int_equal(st.elapsed_ns, 50 * KEEL_NS_PER_MS);
    else
      assert_true(MS(st.elapsed_ns) >= 49);
  }
}

/* ---- Cancel propagation with reasons ------------------------------------------- */

/* Runs in outer: opens nested, spawns a sleeper into it and joins. */
static int nested_sleeper_parent(void *arg) {
  struct st *st = arg;
  (void)keel_scope_open(NULL, &st->nested);
  if (!st->nested)
    return -ENOMEM;
  keel_task_t *h = NULL;
  keel_spawn_opts_t o = spawn_opts(&h);
  st->rc[6] = keel_spawn(st->nested, sleep_10s_task, &st->rc[1], &o);
  st->nested_join_rc = keel_scope_join(st->nested);
  st->reason[1] = keel_scope_cancel_reason(st->nested);
  st->reason[2] = keel_cancelled();
  if (h)
    st->outcome[1] = keel_task_outcome(h);
  keel_scope_close(st->nested);
  return st->nested_join_rc;
}

static int propagate_main(void *arg) {
  struct st *st = arg;
  (void)keel_scope_open(NULL, &st->outer);
  if (!st->outer)
    return -ENOMEM;
  keel_task_t *h = NULL;
  keel_spawn_opts_t o = spawn_opts(&h);
  st->spawn_rc = keel_spawn(st->outer, sleep_10s_task, &st->rc[0], &o);
  st->spawn_rc |= keel_spawn(st->outer, nested_sleeper_parent, st, NULL);
  keel_sleep_ms(20);
  int64_t t0 = kt_clock_ns();
  keel_scope_cancel(st->outer, KEEL_CANCEL_USER);
  st->join_rc = keel_scope_join(st->outer);
  st->elapsed_ns = kt_clock_ns() - t0;
  st->reason[0] = keel_scope_cancel_reason(st->outer);
  if (h)
    st->outcome[0] = keel_task_outcome(h);
  keel_scope_close(st->outer);
  return 0;
}

static void test_cancel_propagation(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.join_rc = 1, .nested_join_rc = 1, .rc = {1, 1, [6] = 1}};
    assert_int_equal(kt_run(b, 1, propagate_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[6], 0);
    if (b == KEEL_BACKEND_LAB)
      assert_int_equal(st.elapsed_ns, 0); /* the 10 s sleeps ended at the cancel */
    else
      assert_true(MS(st.elapsed_ns) < LATE_MS);
    assert_int_equal(st.rc[0], -ECANCELED);
    assert_int_equal(st.rc[1], -ECANCELED);
    assert_int_equal(st.reason[0], KEEL_CANCEL_USER);
    assert_int_equal(st.outcome[0].kind, KEEL_OUTCOME_CANCELLED);
    assert_int_equal(st.outcome[0].reason, KEEL_CANCEL_USER);
    assert_int_equal(st.reason[1], KEEL_CANCEL_PARENT);
    assert_int_equal(st.outcome[1].kind, KEEL_OUTCOME_CANCELLED);
    assert_int_equal(st.outcome[1].reason, KEEL_CANCEL_PARENT);
    assert_int_equal(st.reason[2], KEEL_CANCEL_USER); /* the parent task sits in outer */
    assert_int_equal(st.nested_join_rc, -ECANCELED);
    assert_int_equal(st.join_rc, -ECANCELED);
  }
}

/* ---- Level-triggered cancellation ------------------------------------------------- */

static int level_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_sleep_ms(10000);
  int64_t t0 = kt_clock_ns();
  st->rc[1] = keel_sleep_ms(10000);
  st->rc[2] = keel_sleep_ms(0);
  st->rc[3] = keel_yield();
  st->rc[4] = keel_checkpoint();
  st->rc[5] = keel_sleep_until(keel_now_ns() + 10 * KEEL_NS_PER_SEC);
  st->elapsed_ns = kt_clock_ns() - t0;
  st->reason[0] = keel_cancelled();
  return 0;
}

static int level_main(void *arg) {
  struct st *st = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  st->spawn_rc = keel_spawn(s, level_task, st, NULL);
  keel_sleep_ms(20);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_level_triggered(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.rc = {1, 1, 1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, level_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    for (int i = 0; i < 6; i++)
      assert_int_equal(st.rc[i], -ECANCELED);
    if (b == KEEL_BACKEND_LAB)
      assert_int_equal(st.elapsed_ns, 0); /* none of them waited */
    else
      assert_true(MS(st.elapsed_ns) < LATE_MS);
    assert_int_equal(st.reason[0], KEEL_CANCEL_USER);
  }
}

/* ---- Fail-fast ----------------------------------------------------------------------- */

static int eio_after_10ms_task(void *arg) {
  (void)arg;
  keel_sleep_ms(10);
  return -EIO;
}

static int sleep_100ms_task(void *arg) {
  int *rc = arg;
  *rc = keel_sleep_ms(100);
  return *rc;
}

/* st->flag: the scope flags. Siblings sleep 10 s (fail-fast) or 100 ms. */
static int fail_fast_main(void *arg) {
  struct st *st = arg;
  keel_scope_opts_t so = {.flags = (unsigned)st->flag, .name = "ff"};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(&so, &s);
  if (!s)
    return -ENOMEM;
  keel_task_fn sibling = st->flag & KEEL_SCOPE_FAIL_FAST ? sleep_10s_task : sleep_100ms_task;
  keel_task_t *h[4] = {NULL};
  keel_spawn_opts_t o[4] = {spawn_opts(&h[0]), spawn_opts(&h[1]), spawn_opts(&h[2]),
                            spawn_opts(&h[3])};
  int64_t t0 = kt_clock_ns();
  st->spawn_rc = keel_spawn(s, eio_after_10ms_task, NULL, &o[0]);
  for (int i = 1; i < 4; i++)
    st->spawn_rc |= keel_spawn(s, sibling, &st->rc[i], &o[i]);
  st->join_rc = keel_scope_join(s);
  st->elapsed_ns = kt_clock_ns() - t0;
  st->reason[0] = keel_scope_cancel_reason(s);
  for (int i = 0; i < 4; i++)
    if (h[i])
      st->outcome[i] = keel_task_outcome(h[i]);
  keel_scope_close(s);
  return 0;
}

static void test_fail_fast(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.flag = KEEL_SCOPE_FAIL_FAST, .rc = {1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, fail_fast_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.join_rc, -EIO);
    /* the 10 s siblings were cancelled when the first failed, at 10 ms */
    if (b == KEEL_BACKEND_LAB)
      assert_int_equal(st.elapsed_ns, 10 * KEEL_NS_PER_MS);
    else
      assert_true(MS(st.elapsed_ns) < 10 + LATE_MS);
    assert_int_equal(st.reason[0], KEEL_CANCEL_FAIL_FAST);
    assert_int_equal(st.outcome[0].kind, KEEL_OUTCOME_ERROR);
    assert_int_equal(st.outcome[0].error, -EIO);
    for (int i = 1; i < 4; i++) {
      assert_int_equal(st.rc[i], -ECANCELED);
      assert_int_equal(st.outcome[i].kind, KEEL_OUTCOME_CANCELLED);
      assert_int_equal(st.outcome[i].reason, KEEL_CANCEL_FAIL_FAST);
    }
  }
}

static void test_without_fail_fast(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct st st = {.flag = 0, .rc = {1, 1, 1, 1}};
    assert_int_equal(kt_run(b, 1, fail_fast_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.join_rc, -EIO);
    if (b == KEEL_BACKEND_LAB)
      assert_int_equal(st.elapsed_ns, 100 * KEEL_NS_PER_MS);
    else
      assert_true(MS(st.elapsed_ns) >= 99);
    assert_int_equal(st.reason[0], KEEL_CANCEL_NONE);
    assert_int_equal(st.outcome[0].kind, KEEL_OUTCOME_ERROR);
    for (int i = 1; i < 4; i++) {
      assert_int_equal(st.rc[i], 0);
      assert_int_equal(st.outcome[i].kind, KEEL_OUTCOME_OK);
    }
  }
}

/* ---- A task returning with its scope still open ------------------------------------- */

static int leave_scope_open_task(void *arg) {
  struct st *st = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  st->spawn_rc = keel_spawn(s, set_flag_after_50ms_task, st, NULL);
  st->flag_at_return = st->flag;
  return 0; /* no join, no close: the runtime joins s first */
}

static int auto_join_main(void *arg) {
  struct st *st = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_task_t *h = NULL;
  keel_spawn_opts_t o = spawn_opts(&h);
  int rc = keel_spawn(s, leave_scope_open_task, st, &o);
  st->join_rc = keel_scope_join(s);
  st->rc[0] = st->flag; /* at the time join returned */
  if (h)
    st->outcome[0] = keel_task_outcome(h);
  keel_scope_close(s);
  return rc;
}

static void test_auto_join(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct st st = {.join_rc = -1, .spawn_rc = -1, .flag_at_return = -1};
    assert_int_equal(kt_run(b, 1, auto_join_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.flag_at_return, 0);
    assert_int_equal(st.rc[0], 1);
    assert_int_equal(st.join_rc, 0);
    assert_int_equal(st.outcome[0].kind, KEEL_OUTCOME_OK);
  }
}

/* ---- keel_scope_live --------------------------------------------------------------------- */

struct waiter {
  struct st *st;
  int index;
};

static int wait_release_task(void *arg) {
  struct waiter *w = arg;
  for (int i = 0; i < 10000 && !w->st->release[w->index]; i++)
    keel_sleep_ms(1);
  return 0;
}

/* Opens a nested scope with one waiter in it, then waits itself. */
static int live_opener_task(void *arg) {
  struct waiter *w = arg;
  (void)keel_scope_open(NULL, &w->st->nested);
  if (!w->st->nested)
    return -ENOMEM;
  w->st->rc[7] = keel_spawn(w->st->nested, wait_release_task, w + 1, NULL);
  return wait_release_task(w);
}

static int settle(void) { return keel_sleep_ms(20); }

static int live_main(void *arg) {
  struct st *st = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  struct waiter w[5];
  for (int i = 0; i < 5; i++)
    w[i] = (struct waiter){st, i};
  st->live[0] = keel_scope_live(s);
  for (int i = 0; i < 2; i++)
    st->spawn_rc |= keel_spawn(s, wait_release_task, &w[i], NULL);
  st->live[1] = keel_scope_live(s); /* 2 */
  st->spawn_rc |= keel_spawn(s, live_opener_task, &w[2], NULL);
  settle();
  st->live[2] = keel_scope_live(s);                            /* 3 tasks + nested */
  st->live[3] = st->nested ? keel_scope_live(st->nested) : 99; /* 1 */
  st->release[0] = 1;
  settle();
  st->live[4] = keel_scope_live(s); /* 2 tasks + nested */
  st->release[3] = 1;               /* the nested waiter */
  settle();
  st->live[5] = st->nested ? keel_scope_live(st->nested) : 99; /* 0 */
  for (int i = 0; i < 5; i++)
    st->release[i] = 1;
  st->join_rc = keel_scope_join(s);
  st->live[6] = keel_scope_live(s);
  keel_scope_close(s);
  return 0;
}

static void test_live(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct st st = {.join_rc = -1, .rc = {[7] = 1}};
    assert_int_equal(kt_run(b, 1, live_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[7], 0);
    assert_int_equal(st.live[0], 0);
    assert_int_equal(st.live[1], 2);
    assert_int_equal(st.live[2], 4);
    assert_int_equal(st.live[3], 1);
    assert_int_equal(st.live[4], 3);
    assert_int_equal(st.live[5], 0);
    assert_int_equal(st.join_rc, 0);
    assert_int_equal(st.live[6], 0);
  }
}

/* ---- Opening a scope inside a cancelled scope ------------------------------------------ */

static int open_in_cancelled_task(void *arg) {
  struct st *st = arg;
  st->rc[0] = keel_sleep_ms(10000);
  keel_scope_t *n = NULL;
  (void)keel_scope_open(NULL, &n);
  if (!n)
    return -ENOMEM;
  st->reason[0] = keel_scope_cancel_reason(n);
  st->rc[1] = keel_spawn(n, set_flag_after_50ms_task, st, NULL);
  st->rc[2] = keel_scope_join(n);
  keel_scope_close(n);
  return 0;
}

static int open_in_cancelled_main(void *arg) {
  struct st *st = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  st->spawn_rc = keel_spawn(s, open_in_cancelled_task, st, NULL);
  keel_sleep_ms(20);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_open_in_cancelled(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct st st = {.rc = {1, 1, 1}};
    assert_int_equal(kt_run(b, 1, open_in_cancelled_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.rc[0], -ECANCELED);
    assert_int_equal(st.reason[0], KEEL_CANCEL_PARENT);
    assert_int_equal(st.rc[1], -ECANCELED);
    assert_int_equal(st.flag, 0);
    assert_int_equal(st.rc[2], 0); /* empty: nothing failed or was cut short */
  }
}

/* ---- Cancellation reaches another worker --------------------------------------------- */

static int remote_sleeper_task(void *arg) {
  struct st *st = arg;
  st->worker = keel_worker_id();
  st->rc[0] = keel_sleep_ms(10000);
  return st->rc[0];
}

static int cross_worker_main(void *arg) {
  struct st *st = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_spawn_opts_t o = spawn_opts(NULL);
  o.on_worker = KEEL_WORKER(1);
  st->spawn_rc = keel_spawn(s, remote_sleeper_task, st, &o);
  keel_sleep_ms(50);
  int64_t t0 = kt_mono_ns();
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  st->join_rc = keel_scope_join(s);
  st->elapsed_ns = kt_mono_ns() - t0;
  st->rc[1] = keel_worker_id();
  keel_scope_close(s);
  return 0;
}

static void test_cancel_other_worker(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct st st = {.worker = -1, .rc = {1, 1}};
    assert_int_equal(kt_run(b, 2, cross_worker_main, &st), 0);
    assert_int_equal(st.spawn_rc, 0);
    assert_int_equal(st.worker, 1);
    assert_int_equal(st.rc[1], 0);
    assert_int_equal(st.rc[0], -ECANCELED);
    assert_int_equal(st.join_rc, -ECANCELED);
    assert_true(MS(st.elapsed_ns) < LATE_MS);
  }
}

/* ---- Joins racing the last child on another worker ------------------------------------- */

/* Each iteration opens a scope, spawns one child onto worker 1 or 2, joins
 * and closes it from worker 0, so the child's worker does its last
 * bookkeeping on the scope while the joiner may already be freeing it. A
 * finishing child used to read the scope after releasing its lock: a
 * joiner that found it quiescent then freed it under that read (ASan and
 * TSan report it; without them it is silent memory corruption). To land
 * the join inside that window, the joiner spins until the child is about to
 * return, then waits a varying few hundred cycles more before joining. */
#define RACE_ITERS 3000
#define RACE_SLEEP_ITERS 400 /* each sleeps up to ~2 ms: keep the test short */

struct join_race {
  atomic_int ran, misplaced;
  bool sleeping;
  int spawn_errors, join_errors, first_join_rc, stuck, iters;
  int64_t elapsed_ns;
};

struct race_child {
  struct join_race *jr;
  int worker, sleep_ms;
  atomic_int returning;
};

static int race_child_task(void *arg) {
  struct race_child *c = arg;
  if (keel_worker_id() != c->worker)
    atomic_fetch_add(&c->jr->misplaced, 1);
  if (c->sleep_ms >= 0 && keel_sleep_ms(c->sleep_ms) != 0)
    return -EPROTO;
  atomic_fetch_add(&c->jr->ran, 1);
  atomic_store(&c->returning, 1);
  return 0;
}

/* Busy-waits (no yield: the child runs on another worker) for the child to
 * reach its return, then spins `extra` more rounds. */
static bool spin_until_returning(struct race_child *c, int extra) {
  int64_t give_up = kt_mono_ns() + 10 * KEEL_NS_PER_SEC; /* the child's thread may wait for a CPU */
  for (unsigned n = 0; !atomic_load(&c->returning); n++)
    if ((n & 1023) == 0 && kt_mono_ns() > give_up)
      return false;
  for (volatile int k = 0; k < extra; k++)
    ;
  return true;
}

/* jr->sleeping: the child sleeps 0 or 1 ms (else it returns at once). */
static int join_race_main(void *arg) {
  struct join_race *jr = arg;
  int64_t t0 = kt_mono_ns();
  for (int i = 0; i < jr->iters; i++) {
    keel_scope_t *s = NULL;
    (void)keel_scope_open(NULL, &s);
    if (!s)
      return -ENOMEM;
    struct race_child c = {
        .jr = jr, .worker = i % 2 + 1, .sleep_ms = jr->sleeping ? i / 2 % 2 : -1};
    keel_spawn_opts_t o = spawn_opts(NULL);
    o.on_worker = KEEL_WORKER(c.worker);
    int rc = keel_spawn(s, race_child_task, &c, &o);
    jr->spawn_errors += rc != 0;
    if (rc == 0 && !spin_until_returning(&c, (i * 37) % 400))
      jr->stuck++;
    rc = keel_scope_join(s);
    if (rc != 0 && jr->join_errors++ == 0)
      jr->first_join_rc = rc;
    keel_scope_close(s);
  }
  jr->elapsed_ns = kt_mono_ns() - t0;
  return 0;
}

static void test_join_races_last_child(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    for (int sleeping = 0; sleeping < 2; sleeping++) {
      struct join_race jr = {.sleeping = sleeping,
                             .iters = sleeping ? RACE_SLEEP_ITERS : RACE_ITERS};
      assert_int_equal(kt_run(b, 3, join_race_main, &jr), 0);
      print_message("# %s: %d joins (%s) in %.1f ms\n", kt_backend_name(b), jr.iters,
                    sleeping ? "child sleeps 0-1 ms" : "child returns at once",
                    (double)jr.elapsed_ns / 1e6);
      assert_int_equal(jr.spawn_errors, 0);
      assert_int_equal(jr.stuck, 0);
      if (jr.join_errors)
        fail_msg("%d joins failed, the first with %d", jr.join_errors, jr.first_join_rc);
      assert_int_equal(atomic_load(&jr.ran), jr.iters);
      assert_int_equal(atomic_load(&jr.misplaced), 0);
    }
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_nested),
      cmocka_unit_test(test_join_waits_for_grandchildren),
      cmocka_unit_test(test_cancel_propagation),
      cmocka_unit_test(test_level_triggered),
      cmocka_unit_test(test_fail_fast),
      cmocka_unit_test(test_without_fail_fast),
      cmocka_unit_test(test_auto_join),
      cmocka_unit_test(test_live),
      cmocka_unit_test(test_open_in_cancelled),
      cmocka_unit_test(test_cancel_other_worker),
      cmocka_unit_test(test_join_races_last_child),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
