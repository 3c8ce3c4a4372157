/* Watch: the latest value wins (a receiver may skip values but always
 * sees the last one, on both workers), changed()/has_changed/get/recv
 * semantics, one send wakes every waiter, close wakes waiters with -EPIPE
 * and keeps the last value readable, freeing while receivers remain,
 * changed() cancelled or timed out without losing the newer version, and
 * a lockstep stress of timed-out waits with no lost wake-up. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#include <stdatomic.h>

/* Lets every ready task run until it blocks. */
static int settle(void) { return keel_sleep_ms(10); }

static keel_watch_t *open_int(int initial) {
  keel_watch_t *w = NULL;
  return keel_watch_open(sizeof(int), &initial, &w) == 0 ? w : NULL;
}

static keel_watch_rx_t *subscribe(keel_watch_t *w) {
  keel_watch_rx_t *rx = NULL;
  return keel_watch_subscribe(w, &rx) == 0 ? rx : NULL;
}

/* Spawns fn(arg) on worker `worker` in a scope of its own (cancellable alone). */
static keel_scope_t *spawn_on(int worker, keel_task_fn fn, void *arg) {
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  keel_spawn_opts_t so = {.name = "peer", .on_worker = KEEL_WORKER(worker)};
  if (s && keel_spawn(s, fn, arg, &so) < 0) {
    keel_scope_close(s);
    return NULL;
  }
  return s;
}

/* A task waiting once in changed (value NULL) or recv, recording the outcome. */
struct rx_op {
  keel_watch_rx_t *rx;
  bool use_recv;
  int value;
  int rc;
  atomic_bool done;
};

static int wait_once_task(void *arg) {
  struct rx_op *op = arg;
  op->rc = op->use_recv ? keel_watch_recv(op->rx, &op->value) : keel_watch_changed(op->rx);
  atomic_store(&op->done, true);
  return 0;
}

/* ---- Semantics on one worker --------------------------------------------------------- */

static int latest_body(void *arg) {
  (void)arg;
  keel_watch_t *w = open_int(10);
  CHECK(w);
  keel_watch_rx_t *rx = subscribe(w);
  CHECK(rx);
  int v = -1;
  CHECK_EQ(keel_watch_get(rx, &v), 0); /* the value at subscribe counts as seen */
  CHECK_EQ(v, 10);
  CHECK_EQ(keel_watch_send(w, &(int){1}), 1);
  CHECK_EQ(keel_watch_send(w, &(int){2}), 1);
  CHECK_EQ(keel_watch_send(w, &(int){3}), 1);
  CHECK_EQ(keel_watch_get(rx, &v), 1); /* newer: the latest, 1 and 2 skipped */
  CHECK_EQ(v, 3);
  CHECK_EQ(keel_watch_get(rx, &v), 0);
  CHECK_EQ(v, 3);
  keel_watch_load(w, &v);
  CHECK_EQ(v, 3);
  keel_watch_t *z = NULL;
  CHECK_EQ(keel_watch_open(sizeof(int), NULL, &z), 0); /* NULL initial: zeroes */
  keel_watch_load(z, &v);
  CHECK_EQ(v, 0);
  keel_watch_close(z);
  keel_watch_unsubscribe(rx);
  keel_watch_close(w);
  return 0;
}
static void test_latest_value_wins(void **state) {
  (void)state;
  kt_run_body(latest_body, NULL, 1);
}

static void test_open_rejects_zero_size(void **state) {
  (void)state;
  keel_watch_t *w = (keel_watch_t *)&w;
  assert_int_equal(keel_watch_open(0, NULL, &w), -EINVAL);
  assert_null(w);
}

static int changed_body(void *arg) {
  (void)arg;
  keel_watch_t *w = open_int(0);
  CHECK(w);
  keel_watch_rx_t *rx = subscribe(w);
  CHECK(rx);
  CHECK_EQ(keel_watch_has_changed(rx), 0);
  CHECK_EQ(keel_watch_send(w, &(int){1}), 1);
  CHECK_EQ(keel_watch_has_changed(rx), 1);
  CHECK_EQ(keel_watch_changed(rx), 0);     /* at once: a newer version exists */
  CHECK_EQ(keel_watch_has_changed(rx), 1); /* changed does not mark it seen */
  int v = -1;
  CHECK_EQ(keel_watch_get(rx, &v), 1);
  CHECK_EQ(v, 1);
  CHECK_EQ(keel_watch_has_changed(rx), 0);
  /* now changed waits, until the next send */
  struct rx_op op = {.rx = rx};
  keel_scope_t *s = spawn_on(0, wait_once_task, &op);
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!atomic_load(&op.done));
  CHECK_EQ(keel_watch_send(w, &(int){2}), 1);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  CHECK_EQ(op.rc, 0);
  /* recv: waits for newer, copies and marks it seen in one step */
  CHECK_EQ(keel_watch_recv(rx, &v), 0);
  CHECK_EQ(v, 2);
  CHECK_EQ(keel_watch_has_changed(rx), 0);
  /* a receiver subscribed now has seen version 2 */
  keel_watch_rx_t *late = subscribe(w);
  CHECK(late);
  CHECK_EQ(keel_watch_has_changed(late), 0);
  CHECK_EQ(keel_watch_receivers(w), 2);
  keel_watch_unsubscribe(late);
  keel_watch_unsubscribe(rx);
  keel_watch_close(w);
  return 0;
}
static void test_changed_semantics(void **state) {
  (void)state;
  kt_run_body(changed_body, NULL, 1);
}

/* ---- Across workers ------------------------------------------------------------------- */

/* One send wakes every waiter, on both workers. */
static int wake_all_body(void *arg) {
  (void)arg;
  enum { N = 4 };
  keel_watch_t *w = open_int(0);
  CHECK(w);
  struct rx_op ops[N];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < N; i++) {
    ops[i] = (struct rx_op){.rx = subscribe(w), .use_recv = true, .value = -1};
    CHECK(ops[i].rx);
    keel_spawn_opts_t so = {.name = "rx", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(s, wait_once_task, &ops[i], &so));
  }
  CHECK_RC(settle());
  for (int i = 0; i < N; i++)
    CHECK(!atomic_load(&ops[i].done));
  CHECK_EQ(keel_watch_send(w, &(int){5}), N);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  for (int i = 0; i < N; i++) {
    CHECK_EQ(ops[i].rc, 0);
    CHECK_EQ(ops[i].value, 5);
    keel_watch_unsubscribe(ops[i].rx);
  }
  keel_watch_close(w);
  return 0;
}
static void test_send_wakes_every_waiter(void **state) {
  (void)state;
  kt_run_body(wake_all_body, NULL, 2);
}

/* A sender on worker 1 sends 1..N, yielding and pausing now and then; receivers on
 * both workers follow with recv (and some with changed + get). Each sees
 * strictly increasing values and always the final one, then -EPIPE. */
struct follow {
  keel_watch_t *w;
  int last;
};

struct follower {
  struct follow *f;
  keel_watch_rx_t *rx;
  bool split; /* changed + get instead of recv */
  int seen;   /* distinct values observed */
  int final;
};

static int follower_task(void *arg) {
  struct follower *me = arg;
  int prev = 0, v = -1, rc;
  for (;;) {
    if (me->split) {
      rc = keel_watch_changed(me->rx);
      if (rc == 0)
        CHECK_EQ(keel_watch_get(me->rx, &v), 1);
    } else {
      rc = keel_watch_recv(me->rx, &v);
    }
    if (rc == -EPIPE)
      break;
    CHECK_EQ(rc, 0);
    if (v <= prev)
      KT_FAIL("went back or repeated: %d after %d", v, prev);
    prev = v;
    me->seen++;
  }
  me->final = prev;
  keel_watch_unsubscribe(me->rx);
  return 0;
}

static int follow_sender(void *arg) {
  struct follow *f = arg;
  for (int i = 1; i <= f->last; i++) {
    CHECK_RC(keel_watch_send(f->w, &i));
    uint64_t r = keel_random_below(256);
    if (r == 0) /* let the receivers on worker 0 catch up, and wait */
      CHECK_RC(keel_sleep_ms(1));
    else if (r < 16)
      CHECK_RC(keel_yield());
  }
  return keel_watch_shutdown(f->w);
}

static int follow_body(void *arg) {
  (void)arg;
  enum { N = 4 };
  struct follow f = {.last = 20000 / KT_SCALE};
  f.w = open_int(0);
  CHECK(f.w);
  struct follower fl[N];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < N; i++) {
    fl[i] = (struct follower){.f = &f, .rx = subscribe(f.w), .split = i >= 2};
    CHECK(fl[i].rx);
    keel_spawn_opts_t so = {.name = "rx", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(s, follower_task, &fl[i], &so));
  }
  keel_spawn_opts_t so = {.name = "tx", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(s, follow_sender, &f, &so));
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  for (int i = 0; i < N; i++) {
    CHECK_EQ(fl[i].final, f.last);
    printf("# receiver %d saw %d of %d values\n", i, fl[i].seen, f.last);
  }
  keel_watch_close(f.w);
  return 0;
}
static void test_final_value_always_seen(void **state) {
  (void)state;
  kt_run_body(follow_body, NULL, 2);
}

/* Receivers on worker 0 alternate waits bounded by short deadlines with
 * unbounded ones; a sender on worker 1 sends the next value once both
 * have received the previous one, spinning so that the send lands while
 * they park. A wake-up lost there leaves the sender waiting forever. */
struct lockstep {
  keel_watch_t *w;
  int last;
  atomic_int got[2]; /* the last value each receiver received */
  keel_watch_rx_t *rx[2];
  int timeouts[2];
};

struct lockstep_rx {
  struct lockstep *ls;
  int index;
};

static int lockstep_receiver(void *arg) {
  struct lockstep_rx *me = arg;
  struct lockstep *ls = me->ls;
  for (int n = 0;; n++) {
    int64_t prev = KEEL_DEADLINE_NONE;
    if (n & 1)
      prev = keel_task_set_deadline(keel_now_ns() + (int64_t)keel_random_below(2000000));
    int v = -1;
    int rc = keel_watch_recv(ls->rx[me->index], &v);
    if (n & 1)
      keel_task_set_deadline(prev);
    if (rc == -ETIMEDOUT && (n & 1)) { /* its own deadline (or the guard's: fails next) */
      ls->timeouts[me->index]++;
      continue;
    }
    if (rc == -EPIPE)
      break;
    CHECK_EQ(rc, 0);
    atomic_store(&ls->got[me->index], v);
  }
  CHECK_EQ(atomic_load(&ls->got[me->index]), ls->last);
  keel_watch_unsubscribe(ls->rx[me->index]);
  return 0;
}

static int lockstep_sender(void *arg) {
  struct lockstep *ls = arg;
  for (int i = 1; i <= ls->last; i++) {
    CHECK_RC(keel_watch_send(ls->w, &i));
    for (int r = 0; r < 2; r++)
      for (int spins = 0; atomic_load(&ls->got[r]) != i; spins++)
        if (spins > 10000)
          CHECK_RC(keel_yield());
    for (int spin = (int)keel_random_below(3000); spin > 0; spin--)
      __asm__ __volatile__("" ::: "memory");
  }
  return keel_watch_shutdown(ls->w);
}

static int lockstep_body(void *arg) {
  (void)arg;
  struct lockstep ls = {.last = 10000 / KT_SCALE};
  ls.w = open_int(0);
  CHECK(ls.w);
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  struct lockstep_rx me[2] = {{&ls, 0}, {&ls, 1}};
  for (int r = 0; r < 2; r++) {
    CHECK((ls.rx[r] = subscribe(ls.w)));
    keel_spawn_opts_t so = {.name = "rx", .on_worker = KEEL_WORKER(0)};
    CHECK_RC(keel_spawn(s, lockstep_receiver, &me[r], &so));
  }
  keel_spawn_opts_t so = {.name = "tx", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(s, lockstep_sender, &ls, &so));
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  printf("# %d values; recv timeouts: %d, %d\n", ls.last, ls.timeouts[0], ls.timeouts[1]);
  keel_watch_close(ls.w);
  return 0;
}
static void test_timeouts_lose_no_wakeup(void **state) {
  (void)state;
  kt_run_body(lockstep_body, NULL, 2);
}

/* ---- Close and freeing ------------------------------------------------------------------- */

static int close_body(void *arg) {
  (void)arg;
  keel_watch_t *w = open_int(0);
  CHECK(w);
  keel_watch_rx_t *rx = subscribe(w), *waiter = subscribe(w);
  CHECK(rx && waiter);
  struct rx_op op = {.rx = waiter};
  keel_scope_t *s = spawn_on(1, wait_once_task, &op);
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!atomic_load(&op.done));
  CHECK_EQ(keel_watch_send(w, &(int){7}), 2);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  CHECK_EQ(op.rc, 0);
  int v = -1;
  CHECK_EQ(keel_watch_get(waiter, &v), 1);
  op = (struct rx_op){.rx = waiter};
  s = spawn_on(1, wait_once_task, &op);
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!atomic_load(&op.done));
  CHECK_EQ(keel_watch_shutdown(w), 0);
  CHECK_EQ(keel_watch_shutdown(w), 0);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  CHECK_EQ(op.rc, -EPIPE); /* the waiter wakes with -EPIPE */
  CHECK_EQ(keel_watch_send(w, &(int){8}), -EPIPE);
  /* a version not seen yet is still reported before -EPIPE */
  CHECK_EQ(keel_watch_has_changed(rx), 1);
  CHECK_EQ(keel_watch_changed(rx), 0);
  CHECK_EQ(keel_watch_get(rx, &v), 1);
  CHECK_EQ(v, 7);
  CHECK_EQ(keel_watch_changed(rx), -EPIPE);
  CHECK_EQ(keel_watch_has_changed(rx), -EPIPE);
  CHECK_EQ(keel_watch_recv(rx, &v), -EPIPE);
  CHECK_EQ(keel_watch_get(rx, &v), 0); /* the last value stays readable */
  CHECK_EQ(v, 7);
  keel_watch_rx_t *late = subscribe(w);
  CHECK(late);
  CHECK_EQ(keel_watch_get(late, &v), 0);
  CHECK_EQ(v, 7);
  keel_watch_unsubscribe(late);
  keel_watch_unsubscribe(rx);
  keel_watch_unsubscribe(waiter);
  keel_watch_close(w);
  return 0;
}
static void test_close_wakes_and_keeps_value(void **state) {
  (void)state;
  kt_run_body(close_body, NULL, 2);
}

/* The opener frees first; a receiver on another worker still reads the
 * last value, gets -EPIPE, and its unsubscribe frees. */
static int reader_task(void *arg) {
  keel_watch_rx_t *rx = arg;
  int v = -1;
  CHECK_EQ(keel_watch_recv(rx, &v), 0);
  CHECK_EQ(v, 3);
  CHECK_EQ(keel_watch_changed(rx), -EPIPE);
  CHECK_EQ(keel_watch_get(rx, &v), 0);
  CHECK_EQ(v, 3);
  keel_watch_unsubscribe(rx);
  return 0;
}

static int free_first_body(void *arg) {
  (void)arg;
  keel_watch_t *w = open_int(0);
  CHECK(w);
  keel_watch_rx_t *rx = subscribe(w);
  CHECK(rx);
  CHECK_EQ(keel_watch_send(w, &(int){3}), 1);
  keel_watch_close(w);
  keel_scope_t *s = spawn_on(1, reader_task, rx);
  CHECK(s);
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  return 0;
}
static void test_free_while_receivers_remain(void **state) {
  (void)state;
  kt_run_body(free_first_body, NULL, 2);
}

/* ---- Cancellation and deadlines ------------------------------------------------------------ */

/* A cancelled changed() leaves the waiters (the send after it must not
 * touch its dead wait), the other waiter still wakes, and the version sent
 * after the cancellation is still reported as newer. */
static int cancel_body(void *arg) {
  (void)arg;
  keel_watch_t *w = open_int(0);
  CHECK(w);
  keel_watch_rx_t *r1 = subscribe(w), *r2 = subscribe(w);
  CHECK(r1 && r2);
  struct rx_op o1 = {.rx = r1}, o2 = {.rx = r2, .use_recv = true};
  keel_scope_t *s1 = spawn_on(1, wait_once_task, &o1);
  keel_scope_t *s2 = spawn_on(1, wait_once_task, &o2);
  CHECK(s1 && s2);
  CHECK_RC(settle());
  keel_scope_cancel(s1, KEEL_CANCEL_USER);
  keel_scope_join(s1);
  keel_scope_close(s1);
  CHECK_EQ(o1.rc, -ECANCELED);
  CHECK_EQ(keel_watch_send(w, &(int){4}), 2);
  CHECK_RC(keel_scope_join(s2));
  keel_scope_close(s2);
  CHECK_EQ(o2.rc, 0);
  CHECK_EQ(o2.value, 4);
  CHECK_EQ(keel_watch_has_changed(r1), 1);
  CHECK_EQ(keel_watch_changed(r1), 0);
  keel_watch_unsubscribe(r1);
  keel_watch_unsubscribe(r2);
  keel_watch_close(w);
  return 0;
}
static void test_changed_cancelled(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 2);
}

static int deadline_body(void *arg) {
  (void)arg;
  keel_watch_t *w = open_int(0);
  CHECK(w);
  keel_watch_rx_t *rx = subscribe(w);
  CHECK(rx);
  int v = -1;
  int64_t t0 = kt_clock_ns();
  int64_t prev = keel_task_set_deadline(t0 + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_watch_changed(rx), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  keel_task_set_deadline(keel_now_ns() + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_watch_recv(rx, &v), -ETIMEDOUT);
  CHECK_EQ(v, -1);
  keel_task_set_deadline(prev);
  CHECK_EQ(keel_watch_send(w, &(int){6}), 1);
  CHECK_EQ(keel_watch_recv(rx, &v), 0);
  CHECK_EQ(v, 6);
  keel_watch_unsubscribe(rx);
  keel_watch_close(w);
  return 0;
}
static void test_changed_deadline(void **state) {
  (void)state;
  kt_run_body(deadline_body, NULL, 1);
}

/* changed/recv that would wait outside a task: -EINVAL. */
static void test_wait_outside_task(void **state) {
  (void)state;
  keel_watch_t *w;
  keel_watch_rx_t *rx;
  int v = 1;
  assert_int_equal(keel_watch_open(sizeof(int), &v, &w), 0);
  assert_int_equal(keel_watch_subscribe(w, &rx), 0);
  assert_int_equal(keel_watch_changed(rx), -EINVAL);
  assert_int_equal(keel_watch_recv(rx, &v), -EINVAL);
  int next = 2;
  keel_watch_send(w, &next);
  assert_int_equal(keel_watch_recv(rx, &v), 0);
  assert_int_equal(v, 2);
  keel_watch_unsubscribe(rx);
  keel_watch_close(w);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wait_outside_task),
      cmocka_unit_test(test_latest_value_wins),
      cmocka_unit_test(test_open_rejects_zero_size),
      cmocka_unit_test(test_changed_semantics),
      cmocka_unit_test(test_send_wakes_every_waiter),
      cmocka_unit_test(test_final_value_always_seen),
      cmocka_unit_test(test_timeouts_lose_no_wakeup),
      cmocka_unit_test(test_close_wakes_and_keeps_value),
      cmocka_unit_test(test_free_while_receivers_remain),
      cmocka_unit_test(test_changed_cancelled),
      cmocka_unit_test(test_changed_deadline),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
