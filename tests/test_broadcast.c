/* Broadcast: every receiver gets every message in order (several
 * receivers on two workers; one send wakes every waiter), a new receiver
 * starts at the next message, a lagging receiver learns the exact number
 * it missed and continues from the oldest kept, close drains then -EPIPE
 * (and wakes waiters on another worker), freeing while receivers drain,
 * recv cancelled or timed out (cursor unmoved, other waiters still woken)
 * and a stress of receivers whose waits keep timing out, woken across
 * workers, with no lost wake-up. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#include <stdatomic.h>

/* Lets every ready task run until it blocks. */
static int settle(void) { return keel_sleep_ms(10); }

static keel_broadcast_t *open_int(size_t capacity) {
  keel_broadcast_t *b = NULL;
  return keel_broadcast_open(sizeof(int), capacity, &b) == 0 ? b : NULL;
}

static keel_broadcast_rx_t *subscribe(keel_broadcast_t *b) {
  keel_broadcast_rx_t *rx = NULL;
  return keel_broadcast_subscribe(b, &rx) == 0 ? rx : NULL;
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

#define CHECK_RECV(rx, want)                             \
  do {                                                   \
    int got_ = -1;                                       \
    CHECK_EQ(keel_broadcast_recv((rx), &got_, NULL), 0); \
    CHECK_EQ(got_, (want));                              \
  } while (0)

/* A task receiving once and recording the outcome. */
struct rx_op {
  keel_broadcast_rx_t *rx;
  int value;
  int rc;
  atomic_bool done;
};

static int recv_once_task(void *arg) {
  struct rx_op *op = arg;
  op->rc = keel_broadcast_recv(op->rx, &op->value, NULL);
  atomic_store(&op->done, true);
  return 0;
}

/* ---- Basics ----------------------------------------------------------------------- */

static int basics_body(void *arg) {
  (void)arg;
  keel_broadcast_t *b = open_int(4);
  CHECK(b);
  CHECK_EQ(keel_broadcast_send(b, &(int){0}), 0); /* nobody subscribed */
  keel_broadcast_rx_t *r1 = subscribe(b);
  CHECK(r1);
  CHECK_EQ(keel_broadcast_send(b, &(int){1}), 1);
  keel_broadcast_rx_t *r2 = subscribe(b); /* starts after 1 */
  CHECK(r2);
  CHECK_EQ(keel_broadcast_receivers(b), 2);
  CHECK_EQ(keel_broadcast_send(b, &(int){2}), 2);
  CHECK_EQ(keel_broadcast_pending(r1), 2);
  CHECK_EQ(keel_broadcast_pending(r2), 1);
  CHECK_RECV(r1, 1);
  CHECK_RECV(r1, 2);
  CHECK_RECV(r2, 2);
  int v;
  CHECK_EQ(keel_broadcast_try_recv(r1, &v, NULL), -EAGAIN);
  CHECK_EQ(keel_broadcast_try_recv(r2, &v, NULL), -EAGAIN);
  keel_broadcast_unsubscribe(r2);
  CHECK_EQ(keel_broadcast_receivers(b), 1);
  CHECK_EQ(keel_broadcast_send(b, &(int){3}), 1);
  CHECK_RECV(r1, 3);
  keel_broadcast_unsubscribe(r1);
  keel_broadcast_close(b);
  return 0;
}
static void test_basics_and_subscribe_at_next(void **state) {
  (void)state;
  kt_run_body(basics_body, NULL, 1);
}

static void test_open_rejects_bad_options(void **state) {
  (void)state;
  keel_broadcast_t *b = (keel_broadcast_t *)&b;
  assert_int_equal(keel_broadcast_open(0, 4, &b), -EINVAL);
  assert_null(b);
  assert_int_equal(keel_broadcast_open(4, 0, &b), -EINVAL);
  assert_int_equal(keel_broadcast_open(SIZE_MAX / 2, 4, &b), -EINVAL);
  assert_int_equal(keel_broadcast_open(4, 4, &b), 0);
  assert_int_equal(keel_broadcast_capacity(b), 4);
  keel_broadcast_close(b);
}

/* ---- Every receiver gets every message ------------------------------------------- */

#define FANOUT_RX 4
#define FANOUT_CAP 16

struct fanout {
  keel_broadcast_t *b;
  keel_broadcast_rx_t *rx[FANOUT_RX];
  int messages;
  int received[FANOUT_RX];
  int rc[FANOUT_RX];
};

struct fanout_rx {
  struct fanout *f;
  int index;
};

static int fanout_receiver(void *arg) {
  struct fanout_rx *me = arg;
  struct fanout *f = me->f;
  keel_broadcast_rx_t *rx = f->rx[me->index];
  int v, rc, want = 0;
  while ((rc = keel_broadcast_recv(rx, &v, NULL)) == 0) {
    if (v != want)
      KT_FAIL("receiver %d: got %d, want %d", me->index, v, want);
    want++;
  }
  f->received[me->index] = want;
  f->rc[me->index] = rc;
  keel_broadcast_unsubscribe(rx);
  return 0;
}

/* Paced so that no receiver falls a full ring behind: then each must get
 * every message, without a lag report. */
static int fanout_sender(void *arg) {
  struct fanout *f = arg;
  for (int i = 0; i < f->messages; i++) {
    for (int r = 0; r < FANOUT_RX; r++)
      while (keel_broadcast_pending(f->rx[r]) >= FANOUT_CAP)
        CHECK_RC(keel_yield());
    CHECK_EQ(keel_broadcast_send(f->b, &i), FANOUT_RX);
  }
  CHECK_EQ(keel_broadcast_shutdown(f->b), 0);
  return 0;
}

static int fanout_body(void *arg) {
  (void)arg;
  struct fanout f = {.messages = 20000 / KT_SCALE};
  f.b = open_int(FANOUT_CAP);
  CHECK(f.b);
  for (int r = 0; r < FANOUT_RX; r++)
    CHECK((f.rx[r] = subscribe(f.b)));
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  struct fanout_rx me[FANOUT_RX];
  for (int r = 0; r < FANOUT_RX; r++) {
    me[r] = (struct fanout_rx){&f, r};
    keel_spawn_opts_t so = {.name = "rx", .on_worker = KEEL_WORKER(r % 2)};
    CHECK_RC(keel_spawn(s, fanout_receiver, &me[r], &so));
  }
  keel_spawn_opts_t so = {.name = "tx", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(s, fanout_sender, &f, &so));
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  for (int r = 0; r < FANOUT_RX; r++) {
    CHECK_EQ(f.received[r], f.messages);
    CHECK_EQ(f.rc[r], -EPIPE);
  }
  keel_broadcast_close(f.b);
  return 0;
}
static void test_every_receiver_gets_every_message(void **state) {
  (void)state;
  kt_run_body(fanout_body, NULL, 2);
}

/* One send wakes every waiting receiver, on both workers. */
static int wake_all_body(void *arg) {
  (void)arg;
  enum { N = 4 };
  keel_broadcast_t *b = open_int(4);
  CHECK(b);
  struct rx_op ops[N];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < N; i++) {
    ops[i] = (struct rx_op){.rx = subscribe(b), .value = -1};
    CHECK(ops[i].rx);
    keel_spawn_opts_t so = {.name = "rx", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(s, recv_once_task, &ops[i], &so));
  }
  CHECK_RC(settle());
  for (int i = 0; i < N; i++)
    CHECK(!atomic_load(&ops[i].done));
  CHECK_EQ(keel_broadcast_send(b, &(int){5}), N);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  for (int i = 0; i < N; i++) {
    CHECK_EQ(ops[i].rc, 0);
    CHECK_EQ(ops[i].value, 5);
    keel_broadcast_unsubscribe(ops[i].rx);
  }
  keel_broadcast_close(b);
  return 0;
}
static void test_send_wakes_every_waiter(void **state) {
  (void)state;
  kt_run_body(wake_all_body, NULL, 2);
}

/* ---- Lagging -------------------------------------------------------------------------- */

static int lag_body(void *arg) {
  (void)arg;
  enum { CAP = 8 };
  keel_broadcast_t *b = open_int(CAP);
  CHECK(b);
  keel_broadcast_rx_t *slow = subscribe(b);
  CHECK(slow);
  for (int i = 0; i < CAP + 5; i++)
    CHECK_EQ(keel_broadcast_send(b, &i), 1);
  keel_broadcast_rx_t *fresh = subscribe(b);
  CHECK(fresh);
  CHECK_EQ(keel_broadcast_pending(slow), CAP + 5);
  uint64_t missed = 0;
  int v = -1;
  CHECK_EQ(keel_broadcast_recv(slow, &v, &missed), -EOVERFLOW);
  CHECK_EQ(missed, 5);
  CHECK_EQ(v, -1); /* nothing copied */
  /* continues from the oldest kept */
  for (int i = 5; i < CAP + 5; i++)
    CHECK_RECV(slow, i);
  CHECK_EQ(keel_broadcast_try_recv(slow, &v, &missed), -EAGAIN);
  /* behind again, by more than a whole ring; try_recv reports it too */
  for (int i = CAP + 5; i < 3 * CAP + 8; i++)
    CHECK_EQ(keel_broadcast_send(b, &i), 2);
  CHECK_EQ(keel_broadcast_try_recv(slow, &v, &missed), -EOVERFLOW);
  CHECK_EQ(missed, CAP + 3);
  CHECK_EQ(keel_broadcast_try_recv(slow, &v, NULL), 0);
  CHECK_EQ(v, 2 * CAP + 8);
  /* the fresh receiver lagged as much: its own exact count */
  CHECK_EQ(keel_broadcast_recv(fresh, &v, &missed), -EOVERFLOW);
  CHECK_EQ(missed, CAP + 3);
  CHECK_RECV(fresh, 2 * CAP + 8);
  keel_broadcast_unsubscribe(slow);
  keel_broadcast_unsubscribe(fresh);
  keel_broadcast_close(b);
  return 0;
}
static void test_lagging_receiver_learns_missed(void **state) {
  (void)state;
  kt_run_body(lag_body, NULL, 1);
}

/* ---- Close ------------------------------------------------------------------------------ */

static int close_body(void *arg) {
  (void)arg;
  keel_broadcast_t *b = open_int(4);
  CHECK(b);
  keel_broadcast_rx_t *rx = subscribe(b), *waiter = subscribe(b);
  CHECK(rx && waiter);
  for (int i = 1; i <= 3; i++)
    CHECK_EQ(keel_broadcast_send(b, &i), 2);
  CHECK_RECV(waiter, 1);
  CHECK_RECV(waiter, 2);
  CHECK_RECV(waiter, 3);
  struct rx_op op = {.rx = waiter, .value = -1};
  keel_scope_t *s = spawn_on(1, recv_once_task, &op); /* waits on worker 1 */
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!atomic_load(&op.done));
  CHECK_EQ(keel_broadcast_shutdown(b), 0);
  CHECK_EQ(keel_broadcast_shutdown(b), 0);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  CHECK_EQ(op.rc, -EPIPE);
  CHECK_EQ(keel_broadcast_send(b, &(int){4}), -EPIPE);
  keel_broadcast_rx_t *late = NULL;
  CHECK_EQ(keel_broadcast_subscribe(b, &late), -EPIPE);
  CHECK(!late);
  CHECK_RECV(rx, 1); /* drains */
  CHECK_RECV(rx, 2);
  CHECK_RECV(rx, 3);
  int v;
  CHECK_EQ(keel_broadcast_recv(rx, &v, NULL), -EPIPE);
  CHECK_EQ(keel_broadcast_try_recv(rx, &v, NULL), -EPIPE);
  keel_broadcast_unsubscribe(rx);
  keel_broadcast_unsubscribe(waiter);
  keel_broadcast_close(b);
  return 0;
}
static void test_close_drains_then_epipe(void **state) {
  (void)state;
  kt_run_body(close_body, NULL, 2);
}

/* The opener frees while a receiver on another worker has yet to drain:
 * the receiver still gets everything, and its unsubscribe frees. */
static int drain_task(void *arg) {
  keel_broadcast_rx_t *rx = arg;
  CHECK_RC(keel_sleep_ms(10));
  for (int i = 0; i < 3; i++)
    CHECK_RECV(rx, i);
  int v;
  CHECK_EQ(keel_broadcast_recv(rx, &v, NULL), -EPIPE);
  keel_broadcast_unsubscribe(rx);
  return 0;
}

static int free_first_body(void *arg) {
  (void)arg;
  keel_broadcast_t *b = open_int(4);
  CHECK(b);
  keel_broadcast_rx_t *rx = subscribe(b);
  CHECK(rx);
  keel_scope_t *s = spawn_on(1, drain_task, rx);
  CHECK(s);
  for (int i = 0; i < 3; i++)
    CHECK_EQ(keel_broadcast_send(b, &i), 1);
  keel_broadcast_close(b);
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  return 0;
}
static void test_free_while_receivers_drain(void **state) {
  (void)state;
  kt_run_body(free_first_body, NULL, 2);
}

/* ---- Cancellation and deadlines ------------------------------------------------------------ */

/* Two receivers wait on worker 1; one is cancelled. Its cursor has not
 * moved (the message sent next is still its to receive), and the other
 * still wakes for it. */
static int cancel_body(void *arg) {
  (void)arg;
  keel_broadcast_t *b = open_int(4);
  CHECK(b);
  keel_broadcast_rx_t *r1 = subscribe(b), *r2 = subscribe(b);
  CHECK(r1 && r2);
  struct rx_op o1 = {.rx = r1, .value = -1}, o2 = {.rx = r2, .value = -1};
  keel_scope_t *s1 = spawn_on(1, recv_once_task, &o1);
  keel_scope_t *s2 = spawn_on(1, recv_once_task, &o2);
  CHECK(s1 && s2);
  CHECK_RC(settle());
  keel_scope_cancel(s1, KEEL_CANCEL_USER);
  keel_scope_join(s1);
  keel_scope_close(s1);
  CHECK_EQ(o1.rc, -ECANCELED);
  CHECK_EQ(o1.value, -1);
  CHECK_EQ(keel_broadcast_send(b, &(int){42}), 2);
  CHECK_RC(keel_scope_join(s2));
  keel_scope_close(s2);
  CHECK_EQ(o2.rc, 0);
  CHECK_EQ(o2.value, 42);
  CHECK_RECV(r1, 42);
  keel_broadcast_unsubscribe(r1);
  keel_broadcast_unsubscribe(r2);
  keel_broadcast_close(b);
  return 0;
}
static void test_recv_cancelled(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 2);
}

static int deadline_body(void *arg) {
  (void)arg;
  keel_broadcast_t *b = open_int(4);
  CHECK(b);
  keel_broadcast_rx_t *rx = subscribe(b);
  CHECK(rx);
  int v = -1;
  int64_t t0 = kt_clock_ns();
  int64_t prev = keel_task_set_deadline(t0 + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_broadcast_recv(rx, &v, NULL), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  keel_task_set_deadline(prev);
  CHECK_EQ(keel_broadcast_send(b, &(int){7}), 1);
  CHECK_RECV(rx, 7);
  keel_broadcast_unsubscribe(rx);
  keel_broadcast_close(b);
  return 0;
}
static void test_recv_deadline(void **state) {
  (void)state;
  kt_run_body(deadline_body, NULL, 1);
}

/* Receivers on worker 0 whose waits keep ending by short deadlines (every
 * other recv) or not at all, while a sender on worker 1 sends: each
 * must still get every message in order, and every send and the close
 * must wake them (a lost wake-up hangs the test). */
struct stress {
  keel_broadcast_t *b;
  keel_broadcast_rx_t *rx[2];
  int messages;
  int timeouts[2];
};

struct stress_rx {
  struct stress *st;
  int index;
};

static int stress_receiver(void *arg) {
  struct stress_rx *me = arg;
  keel_broadcast_rx_t *rx = me->st->rx[me->index];
  int want = 0;
  for (int n = 0;; n++) {
    int64_t prev = KEEL_DEADLINE_NONE;
    if (n & 1)
      prev = keel_task_set_deadline(keel_now_ns() + (int64_t)keel_random_below(2000000));
    int v = -1;
    int rc = keel_broadcast_recv(rx, &v, NULL);
    if (n & 1)
      keel_task_set_deadline(prev);
    if (rc == -ETIMEDOUT && (n & 1)) { /* its own deadline (or the guard's: fails next) */
      me->st->timeouts[me->index]++;
      continue;
    }
    if (rc == -EPIPE)
      break;
    CHECK_EQ(rc, 0);
    CHECK_EQ(v, want);
    want++;
  }
  CHECK_EQ(want, me->st->messages);
  keel_broadcast_unsubscribe(rx);
  return 0;
}

/* In lockstep: each message is sent once both receivers have received
 * the previous one, so each send lands while they park (or have parked);
 * a wake-up lost there leaves this loop waiting forever. */
static int stress_sender(void *arg) {
  struct stress *st = arg;
  for (int i = 0; i < st->messages; i++) {
    /* spin, not yield: react to the take within nanoseconds */
    for (int r = 0; r < 2; r++)
      for (int spins = 0; keel_broadcast_pending(st->rx[r]) > 0; spins++)
        if (spins > 10000)
          CHECK_RC(keel_yield());
    /* then land anywhere in the receivers' way to parking */
    for (int spin = (int)keel_random_below(3000); spin > 0; spin--)
      __asm__ __volatile__("" ::: "memory");
    if (keel_random_below(64) == 0)
      CHECK_RC(keel_sleep_ms(1));
    CHECK_RC(keel_broadcast_send(st->b, &i));
  }
  keel_broadcast_shutdown(st->b);
  return 0;
}

static int stress_body(void *arg) {
  (void)arg;
  struct stress st = {.messages = 10000 / KT_SCALE};
  st.b = open_int(8);
  CHECK(st.b);
  for (int r = 0; r < 2; r++)
    CHECK((st.rx[r] = subscribe(st.b)));
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  struct stress_rx me[2] = {{&st, 0}, {&st, 1}};
  for (int r = 0; r < 2; r++) {
    keel_spawn_opts_t so = {.name = "rx", .on_worker = KEEL_WORKER(0)};
    CHECK_RC(keel_spawn(s, stress_receiver, &me[r], &so));
  }
  keel_spawn_opts_t so = {.name = "tx", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(s, stress_sender, &st, &so));
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  printf("# %d messages; recv timeouts: %d, %d\n", st.messages, st.timeouts[0], st.timeouts[1]);
  keel_broadcast_close(st.b);
  return 0;
}
static void test_timeouts_lose_no_wakeup(void **state) {
  (void)state;
  kt_run_body(stress_body, NULL, 2);
}

/* A recv that would wait outside a task: -EINVAL, cursor unmoved. */
static void test_recv_outside_task(void **state) {
  (void)state;
  keel_broadcast_t *b;
  keel_broadcast_rx_t *rx;
  assert_int_equal(keel_broadcast_open(sizeof(int), 4, &b), 0);
  assert_int_equal(keel_broadcast_subscribe(b, &rx), 0);
  int v = 0;
  assert_int_equal(keel_broadcast_recv(rx, &v, NULL), -EINVAL);
  int sent = 7;
  assert_int_equal(keel_broadcast_send(b, &sent), 1);
  assert_int_equal(keel_broadcast_recv(rx, &v, NULL), 0);
  assert_int_equal(v, 7);
  keel_broadcast_unsubscribe(rx);
  keel_broadcast_close(b);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_recv_outside_task),
      cmocka_unit_test(test_basics_and_subscribe_at_next),
      cmocka_unit_test(test_open_rejects_bad_options),
      cmocka_unit_test(test_every_receiver_gets_every_message),
      cmocka_unit_test(test_send_wakes_every_waiter),
      cmocka_unit_test(test_lagging_receiver_learns_missed),
      cmocka_unit_test(test_close_drains_then_epipe),
      cmocka_unit_test(test_free_while_receivers_drain),
      cmocka_unit_test(test_recv_cancelled),
      cmocka_unit_test(test_recv_deadline),
      cmocka_unit_test(test_timeouts_lose_no_wakeup),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
