/* Channels: overflow policies, LIFO, close, try variants, cancellation and
 * deadlines of blocked senders/receivers/reservers, two-phase send, many
 * producers and consumers, use from another worker. */
#define KT_GUARD_MS 20000
#define KT_BODY_LAB_SEEDS 32 /* lab mode: many interleavings of each body */
#include "kt-guard.h"

/* Lets every ready task run until it blocks. */
static int settle(void) { return keel_sleep_ms(5); }

static keel_chan_t *open_chan(size_t cap, keel_chan_policy_t policy, keel_chan_order_t order) {
  keel_chan_opts_t o = {
      .elem_size = sizeof(int), .capacity = cap, .policy = policy, .order = order};
  keel_chan_t *c = NULL;
  return keel_chan_open(&o, &c) == 0 ? c : NULL;
}

static int send_int(keel_chan_t *c, int v) { return keel_chan_send(c, &v); }
static int try_send_int(keel_chan_t *c, int v) { return keel_chan_try_send(c, &v); }

#define CHECK_RECV(c, want)                  \
  do {                                       \
    int got_ = -1;                           \
    CHECK_EQ(keel_chan_recv((c), &got_), 0); \
    CHECK_EQ(got_, (want));                  \
  } while (0)

/* A task that sends or receives one item on a channel and records the result. */
struct op {
  keel_chan_t *c;
  int value;
  int rc;
  bool done;
};

static int sender_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_chan_send(op->c, &op->value);
  op->done = true;
  return 0;
}

static int receiver_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_chan_recv(op->c, &op->value);
  op->done = true;
  return 0;
}

static int reserver_task(void *arg) {
  struct op *op = arg;
  keel_chan_slot_t slot;
  op->rc = keel_chan_reserve(op->c, &slot);
  if (op->rc >= 0)
    keel_chan_commit(op->c, &slot, &op->value);
  op->done = true;
  return 0;
}

/* ---- Overflow policies ------------------------------------------------------ */

static int block_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(2, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  CHECK_EQ(send_int(c, 1), 0);
  CHECK_EQ(send_int(c, 2), 0);
  CHECK(keel_chan_is_full(c));
  struct op op = {.c = c, .value = 3};
  keel_scope_t *s = kt_spawn_in_scope(sender_task, &op, KEEL_WORKER_CURRENT);
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!op.done); /* full: the sender waits */
  CHECK_RECV(c, 1);
  CHECK_RC(settle());
  CHECK(op.done);
  CHECK_EQ(op.rc, 0);
  keel_scope_close(s);
  CHECK_RECV(c, 2);
  CHECK_RECV(c, 3);
  CHECK(keel_chan_is_empty(c));
  keel_chan_close(c);
  return 0;
}
static void test_policy_block(void **state) {
  (void)state;
  kt_run_body(block_body, NULL, 1);
}

static int drop_newest_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(2, KEEL_CHAN_DROP_NEWEST, KEEL_CHAN_FIFO);
  CHECK(c);
  CHECK_EQ(send_int(c, 1), 0);
  CHECK_EQ(send_int(c, 2), 0);
  CHECK_EQ(send_int(c, 3), KEEL_CHAN_DROPPED);
  CHECK_EQ(try_send_int(c, 4), KEEL_CHAN_DROPPED);
  CHECK_EQ(keel_chan_dropped(c), 2);
  CHECK_EQ(keel_chan_len(c), 2);
  CHECK_RECV(c, 1);
  CHECK_RECV(c, 2);
  keel_chan_close(c);
  return 0;
}
static void test_policy_drop_newest(void **state) {
  (void)state;
  kt_run_body(drop_newest_body, NULL, 1);
}

static int drop_oldest_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(2, KEEL_CHAN_DROP_OLDEST, KEEL_CHAN_FIFO);
  CHECK(c);
  CHECK_EQ(send_int(c, 1), 0);
  CHECK_EQ(send_int(c, 2), 0);
  CHECK_EQ(send_int(c, 3), KEEL_CHAN_DROPPED);
  CHECK_EQ(send_int(c, 4), KEEL_CHAN_DROPPED);
  CHECK_EQ(keel_chan_dropped(c), 2);
  CHECK_EQ(keel_chan_len(c), 2);
  CHECK_RECV(c, 3);
  CHECK_RECV(c, 4);
  keel_chan_close(c);
  return 0;
}
static void test_policy_drop_oldest(void **state) {
  (void)state;
  kt_run_body(drop_oldest_body, NULL, 1);
}

static int grow_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(2, KEEL_CHAN_GROW, KEEL_CHAN_FIFO);
  CHECK(c);
  CHECK_EQ(send_int(c, 0), 0);
  CHECK_EQ(send_int(c, 1), 0);
  CHECK_RECV(c, 0);
  /* the ring has wrapped: growing must keep the order */
  for (int i = 2; i < 100; i++)
    CHECK_EQ(send_int(c, i), 0);
  CHECK_EQ(keel_chan_len(c), 99);
  CHECK(keel_chan_capacity(c) >= 99);
  CHECK_EQ(keel_chan_dropped(c), 0);
  for (int i = 1; i < 100; i++)
    CHECK_RECV(c, i);
  keel_chan_close(c);
  return 0;
}
static void test_policy_grow(void **state) {
  (void)state;
  kt_run_body(grow_body, NULL, 1);
}

/* ---- LIFO --------------------------------------------------------------------- */

static int lifo_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(4, KEEL_CHAN_BLOCK, KEEL_CHAN_LIFO);
  CHECK(c);
  for (int i = 1; i <= 4; i++)
    CHECK_EQ(send_int(c, i), 0);
  CHECK_EQ(try_send_int(c, 5), -EAGAIN);
  CHECK_RECV(c, 4);
  CHECK_RECV(c, 3);
  CHECK_EQ(send_int(c, 9), 0);
  CHECK_RECV(c, 9);
  CHECK_RECV(c, 2);
  CHECK_RECV(c, 1);
  keel_chan_close(c);

  c = open_chan(1, KEEL_CHAN_GROW, KEEL_CHAN_LIFO);
  CHECK(c);
  for (int i = 0; i < 50; i++)
    CHECK_EQ(send_int(c, i), 0);
  for (int i = 49; i >= 0; i--)
    CHECK_RECV(c, i);
  keel_chan_close(c);
  return 0;
}
static void test_lifo_order(void **state) {
  (void)state;
  kt_run_body(lifo_body, NULL, 1);
}

static void test_open_rejects_bad_options(void **state) {
  (void)state;
  keel_chan_t *c = (keel_chan_t *)&c;
  keel_chan_opts_t o = {
      .elem_size = 4, .capacity = 4, .policy = KEEL_CHAN_DROP_NEWEST, .order = KEEL_CHAN_LIFO};
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  assert_null(c);
  o.policy = KEEL_CHAN_DROP_OLDEST;
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  o.policy = KEEL_CHAN_BLOCK;
  o.capacity = 0;
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  o.capacity = 4;
  o.elem_size = 0;
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  o.elem_size = 4;
  assert_int_equal(keel_chan_open(&o, &c), 0);
  keel_chan_close(c);
}

/* ---- Close ------------------------------------------------------------------------ */

static int close_drain_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(4, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  CHECK_EQ(send_int(c, 1), 0);
  CHECK_EQ(send_int(c, 2), 0);
  CHECK_EQ(keel_chan_shutdown(c), 0);
  CHECK_EQ(send_int(c, 3), -EPIPE);
  CHECK_EQ(try_send_int(c, 3), -EPIPE);
  keel_chan_slot_t slot;
  CHECK_EQ(keel_chan_reserve(c, &slot), -EPIPE);
  CHECK_RECV(c, 1);
  CHECK_RECV(c, 2);
  int v;
  CHECK_EQ(keel_chan_recv(c, &v), -EPIPE);
  CHECK_EQ(keel_chan_try_recv(c, &v), -EPIPE);
  keel_chan_close(c);
  return 0;
}
static void test_close_drains_then_epipe(void **state) {
  (void)state;
  kt_run_body(close_drain_body, NULL, 1);
}

static int close_wakes_body(void *arg) {
  (void)arg;
  keel_chan_t *full = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  keel_chan_t *empty = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(full && empty);
  CHECK_EQ(send_int(full, 1), 0);
  struct op snd = {.c = full, .value = 2}, rsv = {.c = full, .value = 3}, rcv = {.c = empty};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  CHECK_RC(keel_spawn(s, sender_task, &snd, NULL));
  CHECK_RC(keel_spawn(s, reserver_task, &rsv, NULL));
  CHECK_RC(keel_spawn(s, receiver_task, &rcv, NULL));
  CHECK_RC(settle());
  CHECK(!snd.done && !rsv.done && !rcv.done);
  CHECK_EQ(keel_chan_shutdown(full), 0);
  CHECK_EQ(keel_chan_shutdown(empty), 0);
  CHECK_RC(keel_scope_join(s));
  keel_scope_close(s);
  CHECK_EQ(snd.rc, -EPIPE);
  CHECK_EQ(rsv.rc, -EPIPE);
  CHECK_EQ(rcv.rc, -EPIPE);
  CHECK_RECV(full, 1); /* the item sent before close is still delivered */
  keel_chan_close(full);
  keel_chan_close(empty);
  return 0;
}
static void test_close_wakes_blocked(void **state) {
  (void)state;
  kt_run_body(close_wakes_body, NULL, 1);
}

/* Receivers wait on a closed, empty channel while a reservation made
 * before close is outstanding. Committing it delivers the item to one and
 * ends the other with -EPIPE: the last reservation settling wakes them all,
 * whether it is committed or aborted. */
static int commit_after_close_body(void *arg) {
  (void)arg;
  for (int abort_it = 0; abort_it < 2; abort_it++) {
    keel_chan_t *c = open_chan(2, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
    CHECK(c);
    keel_chan_slot_t slot;
    CHECK_EQ(keel_chan_reserve(c, &slot), 0);
    CHECK_EQ(keel_chan_shutdown(c), 0);
    struct op r1 = {.c = c, .value = -1}, r2 = {.c = c, .value = -1};
    keel_scope_t *s = NULL;
    (void)keel_scope_open(NULL, &s);
    CHECK(s);
    CHECK_RC(keel_spawn(s, receiver_task, &r1, NULL));
    CHECK_RC(keel_spawn(s, receiver_task, &r2, NULL));
    CHECK_RC(settle());
    CHECK(!r1.done && !r2.done); /* the reservation may still be committed */
    int v = 7;
    if (abort_it)
      CHECK_RC(keel_chan_abort(c, &slot));
    else
      CHECK_RC(keel_chan_commit(c, &slot, &v));
    CHECK_RC(keel_scope_join(s));
    keel_scope_close(s);
    int got = (r1.rc == 0) + (r2.rc == 0), piped = (r1.rc == -EPIPE) + (r2.rc == -EPIPE);
    CHECK_EQ(got, abort_it ? 0 : 1);
    CHECK_EQ(piped, abort_it ? 2 : 1);
    if (!abort_it)
      CHECK_EQ(r1.rc == 0 ? r1.value : r2.value, 7);
    keel_chan_close(c);
  }
  return 0;
}
static void test_commit_after_close_ends_receivers(void **state) {
  (void)state;
  kt_run_body(commit_after_close_body, NULL, 1);
}

/* ---- Try variants -------------------------------------------------------------------- */

static int try_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  int v = -1;
  CHECK_EQ(keel_chan_try_recv(c, &v), -EAGAIN);
  CHECK_EQ(try_send_int(c, 7), 0);
  CHECK_EQ(try_send_int(c, 8), -EAGAIN);
  CHECK_EQ(keel_chan_len(c), 1);
  CHECK_EQ(keel_chan_try_recv(c, &v), 0);
  CHECK_EQ(v, 7);
  CHECK_EQ(keel_chan_try_recv(c, &v), -EAGAIN);
  keel_chan_close(c);
  return 0;
}
static void test_try_variants_eagain(void **state) {
  (void)state;
  kt_run_body(try_body, NULL, 1);
}

/* ---- Cancellation and deadlines ----------------------------------------------------- */

/* Two receivers wait; the first is cancelled and must leave the list, so
 * the next item goes to the second. */
static int recv_cancel_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  struct op r1 = {.c = c, .value = -1}, r2 = {.c = c, .value = -1};
  keel_scope_t *s1 = kt_spawn_in_scope(receiver_task, &r1, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *s2 = kt_spawn_in_scope(receiver_task, &r2, KEEL_WORKER_CURRENT);
  CHECK(s1 && s2);
  CHECK_RC(settle());
  keel_scope_cancel(s1, KEEL_CANCEL_USER);
  keel_scope_join(s1);
  keel_scope_close(s1);
  CHECK_EQ(r1.rc, -ECANCELED);
  CHECK_EQ(r1.value, -1);
  CHECK_EQ(send_int(c, 42), 0);
  CHECK_RC(settle());
  CHECK(r2.done);
  CHECK_EQ(r2.rc, 0);
  CHECK_EQ(r2.value, 42);
  keel_scope_close(s2);
  CHECK(keel_chan_is_empty(c));
  keel_chan_close(c);
  return 0;
}
static void test_recv_cancelled_leaves_waiters(void **state) {
  (void)state;
  kt_run_body(recv_cancel_body, NULL, 1);
}

/* The wake for an item lands on a receiver cancelled before it runs: the
 * item must reach exactly one receiver, never vanish. */
static int wake_then_cancel_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  struct op r1 = {.c = c, .value = -1}, r2 = {.c = c, .value = -1};
  keel_scope_t *s1 = kt_spawn_in_scope(receiver_task, &r1, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *s2 = kt_spawn_in_scope(receiver_task, &r2, KEEL_WORKER_CURRENT);
  CHECK(s1 && s2);
  CHECK_RC(settle());
  CHECK_EQ(send_int(c, 42), 0);            /* wakes r1 ... */
  keel_scope_cancel(s1, KEEL_CANCEL_USER); /* ... which is cancelled before it runs */
  CHECK_RC(settle());
  CHECK(keel_chan_is_empty(c)); /* someone took it, while the other still waits */
  keel_chan_shutdown(c);        /* ends whichever receiver did not get the item */
  keel_scope_join(s1);
  keel_scope_join(s2);
  keel_scope_close(s1);
  keel_scope_close(s2);
  int got = (r1.rc == 0 && r1.value == 42) + (r2.rc == 0 && r2.value == 42);
  CHECK_EQ(got, 1);
  CHECK(keel_chan_is_empty(c));
  keel_chan_close(c);
  return 0;
}
static void test_wake_then_cancel_not_lost(void **state) {
  (void)state;
  kt_run_body(wake_then_cancel_body, NULL, 1);
}

static int send_cancel_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  CHECK_EQ(send_int(c, 1), 0);
  struct op s1o = {.c = c, .value = 10}, s2o = {.c = c, .value = 20};
  keel_scope_t *s1 = kt_spawn_in_scope(sender_task, &s1o, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *s2 = kt_spawn_in_scope(sender_task, &s2o, KEEL_WORKER_CURRENT);
  CHECK(s1 && s2);
  CHECK_RC(settle());
  keel_scope_cancel(s1, KEEL_CANCEL_USER);
  keel_scope_join(s1);
  keel_scope_close(s1);
  CHECK_EQ(s1o.rc, -ECANCELED);
  CHECK_RECV(c, 1); /* room: must go to the second sender */
  CHECK_RC(settle());
  CHECK(s2o.done);
  CHECK_EQ(s2o.rc, 0);
  keel_scope_close(s2);
  CHECK_RECV(c, 20);
  CHECK(keel_chan_is_empty(c));
  keel_chan_close(c);
  return 0;
}
static void test_send_cancelled_leaves_waiters(void **state) {
  (void)state;
  kt_run_body(send_cancel_body, NULL, 1);
}

static int deadline_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  int v = -1;
  int64_t t0 = kt_clock_ns();
  int64_t prev = keel_task_set_deadline(t0 + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_chan_recv(c, &v), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  keel_task_set_deadline(prev);
  CHECK_EQ(send_int(c, 1), 0);
  keel_task_set_deadline(keel_now_ns() + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(send_int(c, 2), -ETIMEDOUT);
  keel_chan_slot_t slot;
  CHECK_EQ(keel_chan_reserve(c, &slot), -ETIMEDOUT);
  keel_task_set_deadline(prev);
  CHECK_EQ(keel_chan_len(c), 1); /* nothing sent by the timed-out send */
  CHECK_RECV(c, 1);
  CHECK_EQ(try_send_int(c, 3), 0); /* and nothing reserved */
  keel_chan_close(c);
  return 0;
}
static void test_deadline_timedout(void **state) {
  (void)state;
  kt_run_body(deadline_body, NULL, 1);
}

/* ---- Two-phase send ------------------------------------------------------------------ */

static int reserve_cancel_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  CHECK_EQ(send_int(c, 1), 0);
  struct op r = {.c = c, .value = 5};
  keel_scope_t *s = kt_spawn_in_scope(reserver_task, &r, KEEL_WORKER_CURRENT);
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!r.done);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_join(s);
  keel_scope_close(s);
  CHECK_EQ(r.rc, -ECANCELED);
  CHECK_RECV(c, 1);
  /* no slot leaked: the whole capacity is free again */
  CHECK_EQ(keel_chan_capacity(c), 1);
  CHECK(!keel_chan_is_full(c));
  CHECK_EQ(try_send_int(c, 2), 0);
  CHECK_EQ(try_send_int(c, 3), -EAGAIN);
  CHECK_RECV(c, 2);
  keel_chan_close(c);
  return 0;
}
static void test_reserve_cancelled_no_leak(void **state) {
  (void)state;
  kt_run_body(reserve_cancel_body, NULL, 1);
}

static int reserve_abort_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  keel_chan_slot_t slot;
  CHECK_EQ(keel_chan_reserve(c, &slot), 0);
  CHECK(keel_chan_is_full(c)); /* the reserved slot is taken */
  CHECK(keel_chan_is_empty(c));
  CHECK_EQ(try_send_int(c, 9), -EAGAIN);
  struct op snd = {.c = c, .value = 7};
  keel_scope_t *s = kt_spawn_in_scope(sender_task, &snd, KEEL_WORKER_CURRENT);
  CHECK(s);
  CHECK_RC(settle());
  CHECK(!snd.done);
  keel_chan_abort(c, &slot); /* the room passes to the blocked sender */
  CHECK_RC(settle());
  CHECK(snd.done);
  CHECK_EQ(snd.rc, 0);
  keel_scope_close(s);
  CHECK_RECV(c, 7);
  /* reserve then commit */
  CHECK_EQ(keel_chan_reserve(c, &slot), 0);
  keel_chan_commit(c, &slot, &(int){8});
  CHECK_RECV(c, 8);
  keel_chan_close(c);
  return 0;
}
static void test_reserve_abort_passes_room(void **state) {
  (void)state;
  kt_run_body(reserve_abort_body, NULL, 1);
}

/* ---- Many producers and consumers ------------------------------------------------------ */

#define PRODUCERS 8
#define CONSUMERS 4
#define ITEMS 100000

struct mpmc {
  keel_chan_t *c;
  int next_producer;
  unsigned char seen[ITEMS];
  int received;
};

static int producer_task(void *arg) {
  struct mpmc *m = arg;
  int id = m->next_producer++;
  for (int i = id; i < ITEMS; i += PRODUCERS) {
    int rc = keel_chan_send(m->c, &i);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static int consumer_task(void *arg) {
  struct mpmc *m = arg;
  int v;
  int rc;
  while ((rc = keel_chan_recv(m->c, &v)) == 0) {
    if (v < 0 || v >= ITEMS)
      return -ERANGE;
    m->seen[v]++;
    m->received++;
  }
  return rc == -EPIPE ? 0 : rc;
}

static int mpmc_body(void *arg) {
  (void)arg;
  struct mpmc *m = calloc(1, sizeof *m);
  CHECK(m);
  m->c = open_chan(64, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(m->c);
  keel_scope_t *cons = NULL;
  (void)keel_scope_open(NULL, &cons);
  keel_scope_t *prod = NULL;
  (void)keel_scope_open(NULL, &prod);
  CHECK(cons && prod);
  for (int i = 0; i < CONSUMERS; i++)
    CHECK_RC(keel_spawn(cons, consumer_task, m, NULL));
  for (int i = 0; i < PRODUCERS; i++)
    CHECK_RC(keel_spawn(prod, producer_task, m, NULL));
  CHECK_EQ(keel_scope_join(prod), 0);
  keel_scope_close(prod);
  CHECK_EQ(keel_chan_shutdown(m->c), 0);
  CHECK_EQ(keel_scope_join(cons), 0);
  keel_scope_close(cons);
  CHECK_EQ(m->received, ITEMS);
  for (int i = 0; i < ITEMS; i++)
    if (m->seen[i] != 1)
      KT_FAIL("item %d seen %d times", i, m->seen[i]);
  keel_chan_close(m->c);
  free(m);
  return 0;
}
static void test_many_producers_consumers(void **state) {
  (void)state;
  kt_run_body(mpmc_body, NULL, 1);
}

/* ---- Another worker ------------------------------------------------------------------------ */

static int other_worker_task(void *arg) {
  keel_chan_t *c = arg;
  int v = 1;
  keel_chan_slot_t slot;
  CHECK_EQ(keel_chan_send(c, &v), -EXDEV);
  CHECK_EQ(keel_chan_try_send(c, &v), -EXDEV);
  CHECK_EQ(keel_chan_recv(c, &v), -EXDEV);
  CHECK_EQ(keel_chan_try_recv(c, &v), -EXDEV);
  CHECK_EQ(keel_chan_reserve(c, &slot), -EXDEV);
  CHECK_EQ(keel_chan_shutdown(c), -EXDEV);
  return 0;
}

static int exdev_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_chan(4, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  CHECK_EQ(send_int(c, 1), 0);
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  keel_spawn_opts_t so = {.name = "other", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(s, other_worker_task, c, &so));
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  CHECK_RECV(c, 1); /* still usable on its own worker */
  keel_chan_close(c);
  return 0;
}
static void test_other_worker_exdev(void **state) {
  (void)state;
  kt_run_body(exdev_body, NULL, 2);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_policy_block),
      cmocka_unit_test(test_policy_drop_newest),
      cmocka_unit_test(test_policy_drop_oldest),
      cmocka_unit_test(test_policy_grow),
      cmocka_unit_test(test_lifo_order),
      cmocka_unit_test(test_open_rejects_bad_options),
      cmocka_unit_test(test_close_drains_then_epipe),
      cmocka_unit_test(test_close_wakes_blocked),
      cmocka_unit_test(test_try_variants_eagain),
      cmocka_unit_test(test_recv_cancelled_leaves_waiters),
      cmocka_unit_test(test_wake_then_cancel_not_lost),
      cmocka_unit_test(test_send_cancelled_leaves_waiters),
      cmocka_unit_test(test_deadline_timedout),
      cmocka_unit_test(test_reserve_cancelled_no_leak),
      cmocka_unit_test(test_reserve_abort_passes_room),
      cmocka_unit_test(test_commit_after_close_ends_receivers),
      cmocka_unit_test(test_many_producers_consumers),
      cmocka_unit_test(test_other_worker_exdev),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
