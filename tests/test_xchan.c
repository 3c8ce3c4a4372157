/* Shared (cross-worker) channels: a stream of a million messages between
 * producers and consumers on two workers (none lost or duplicated, FIFO per
 * producer); close while receivers on the other worker wait; a wake racing
 * the cancellation of its receiver; deadlines; every policy and order;
 * two-phase sends across workers; a plain thread sending; a worker's own
 * channel refusing the other worker's commit. Both backends: the wake-ups
 * cross threads through the backends' wake paths. */
#define KT_GUARD_MS 25000
#include "kt-guard.h"

#include <pthread.h>

static keel_chan_t *open_shared(size_t cap, keel_chan_policy_t policy, keel_chan_order_t order) {
  keel_chan_opts_t o = {.elem_size = sizeof(int),
                        .capacity = cap,
                        .policy = policy,
                        .order = order,
                        .flags = KEEL_CHAN_SHARED};
  keel_chan_t *c = NULL;
  return keel_chan_open(&o, &c) == 0 ? c : NULL;
}

/* Lets the tasks on both workers run until they block. */
static int settle(void) { return keel_sleep_ms(10); }

static int send_int(keel_chan_t *c, int v) { return keel_chan_send(c, &v); }

#define CHECK_RECV(c, want)                  \
  do {                                       \
    int got_ = -1;                           \
    CHECK_EQ(keel_chan_recv((c), &got_), 0); \
    CHECK_EQ(got_, (want));                  \
  } while (0)

/* One send, receive or reserve+commit on another worker; read after join. */
struct op {
  keel_chan_t *c;
  int value;
  int rc;
};

static int sender_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_chan_send(op->c, &op->value);
  return 0;
}

static int receiver_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_chan_recv(op->c, &op->value);
  return 0;
}

static int reserver_task(void *arg) {
  struct op *op = arg;
  keel_chan_slot_t slot;
  op->rc = keel_chan_reserve(op->c, &slot);
  if (op->rc >= 0)
    keel_chan_commit(op->c, &slot, &op->value);
  return 0;
}

/* Spawns fn(arg) on worker 1 in a scope of its own (to cancel it alone). */
static keel_scope_t *spawn_on_1(keel_task_fn fn, void *arg) {
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  keel_spawn_opts_t so = {.name = "w1", .on_worker = KEEL_WORKER(1)};
  if (s && keel_spawn(s, fn, arg, &so) < 0) {
    keel_scope_close(s);
    return NULL;
  }
  return s;
}

static int join_close(keel_scope_t *s) {
  int rc = keel_scope_join(s);
  keel_scope_close(s);
  return rc;
}

static void run_both(keel_task_fn fn) {
  KT_FOR_EACH_BACKEND(b) {
    fprintf(stderr, "# %s\n", kt_backend_name(b));
    assert_int_equal(kt_run_guarded(b, 2, fn, NULL), 0);
  }
}

/* ---- A million messages -------------------------------------------------------- */

#define STREAM_PRODUCERS 4 /* two on each worker */
#define STREAM_CONSUMERS 4 /* two on each worker */
#define STREAM_MSGS (1000000 / KT_SCALE)
#define PER_PRODUCER (STREAM_MSGS / STREAM_PRODUCERS)

typedef struct stream_msg {
  int producer;
  int seq;
} stream_msg_t;

struct stream {
  keel_chan_t *c;
  atomic_int next_producer;
  atomic_long received;
  _Atomic unsigned char seen[STREAM_MSGS];
};

/* Every eighth message goes through reserve+commit, the rest through send. */
static int stream_producer(void *arg) {
  struct stream *st = arg;
  stream_msg_t m = {.producer = atomic_fetch_add(&st->next_producer, 1)};
  for (m.seq = 0; m.seq < PER_PRODUCER; m.seq++) {
    if ((m.seq & 7) == 0) {
      keel_chan_slot_t slot;
      CHECK_EQ(keel_chan_reserve(st->c, &slot), 0);
      CHECK_EQ(keel_chan_commit(st->c, &slot, &m), 0);
    } else {
      CHECK_EQ(keel_chan_send(st->c, &m), 0);
    }
  }
  return 0;
}

/* A consumer sees each producer's messages in sending order: its receives
 * are a subsequence of the channel's FIFO order. */
static int stream_consumer(void *arg) {
  struct stream *st = arg;
  int last[STREAM_PRODUCERS];
  for (int i = 0; i < STREAM_PRODUCERS; i++)
    last[i] = -1;
  stream_msg_t m;
  long n = 0;
  int rc;
  while ((rc = keel_chan_recv(st->c, &m)) == 0) {
    CHECK(m.producer >= 0 && m.producer < STREAM_PRODUCERS);
    CHECK(m.seq > last[m.producer] && m.seq < PER_PRODUCER);
    last[m.producer] = m.seq;
    atomic_fetch_add_explicit(&st->seen[m.producer * PER_PRODUCER + m.seq], 1,
                              memory_order_relaxed);
    n++;
  }
  CHECK_EQ(rc, -EPIPE);
  atomic_fetch_add(&st->received, n);
  return 0;
}

static int stream_body(void *arg) {
  (void)arg;
  struct stream *st = calloc(1, sizeof *st);
  CHECK(st);
  keel_chan_opts_t o = {
      .elem_size = sizeof(stream_msg_t), .capacity = 64, .flags = KEEL_CHAN_SHARED};
  CHECK_EQ(keel_chan_open(&o, &st->c), 0);
  keel_scope_t *cons = NULL;
  (void)keel_scope_open(NULL, &cons);
  keel_scope_t *prod = NULL;
  (void)keel_scope_open(NULL, &prod);
  CHECK(cons && prod);
  for (int i = 0; i < STREAM_CONSUMERS; i++) {
    keel_spawn_opts_t so = {.name = "consumer", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(cons, stream_consumer, st, &so));
  }
  for (int i = 0; i < STREAM_PRODUCERS; i++) {
    keel_spawn_opts_t so = {.name = "producer", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(prod, stream_producer, st, &so));
  }
  CHECK_EQ(join_close(prod), 0);
  CHECK_EQ(keel_chan_shutdown(st->c), 0);
  CHECK_EQ(join_close(cons), 0);
  CHECK_EQ(atomic_load(&st->received), STREAM_MSGS);
  for (int i = 0; i < STREAM_MSGS; i++)
    if (atomic_load(&st->seen[i]) != 1)
      KT_FAIL("message %d of producer %d seen %d times", i % PER_PRODUCER, i / PER_PRODUCER,
              atomic_load(&st->seen[i]));
  keel_chan_close(st->c);
  free(st);
  return 0;
}
static void test_stream_two_workers_none_lost(void **state) {
  (void)state;
  run_both(stream_body);
}

/* ---- Close ------------------------------------------------------------------------ */

struct drain {
  keel_chan_t *c;
  int got, sum, rc;
};

static int drain_task(void *arg) {
  struct drain *d = arg;
  int v;
  while ((d->rc = keel_chan_recv(d->c, &v)) == 0) {
    d->got++;
    d->sum += v;
  }
  return 0;
}

/* Receivers parked on worker 1 drain what was sent before close, then all
 * end with -EPIPE; a sender and a reserver parked there end with -EPIPE. */
static int close_remote_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_shared(8, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  keel_chan_t *full = open_shared(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c && full);
  CHECK_EQ(send_int(full, 1), 0);
  struct drain d[3] = {{.c = c}, {.c = c}, {.c = c}};
  struct op snd = {.c = full, .value = 2}, rsv = {.c = full, .value = 3};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  keel_spawn_opts_t so = {.name = "w1", .on_worker = KEEL_WORKER(1)};
  for (int i = 0; i < 3; i++)
    CHECK_RC(keel_spawn(s, drain_task, &d[i], &so));
  CHECK_RC(keel_spawn(s, sender_task, &snd, &so));
  CHECK_RC(keel_spawn(s, reserver_task, &rsv, &so));
  CHECK_RC(settle());
  for (int i = 1; i <= 5; i++)
    CHECK_EQ(send_int(c, i), 0);
  CHECK_RC(settle()); /* drained: all three wait again */
  CHECK_EQ(send_int(c, 6), 0);
  CHECK_EQ(send_int(c, 7), 0); /* wakes two; close must wake the third */
  CHECK_EQ(keel_chan_shutdown(c), 0);
  CHECK_EQ(keel_chan_shutdown(full), 0);
  CHECK_EQ(send_int(c, 8), -EPIPE);
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(d[0].got + d[1].got + d[2].got, 7);
  CHECK_EQ(d[0].sum + d[1].sum + d[2].sum, 28);
  for (int i = 0; i < 3; i++)
    CHECK_EQ(d[i].rc, -EPIPE);
  CHECK_EQ(snd.rc, -EPIPE);
  CHECK_EQ(rsv.rc, -EPIPE);
  CHECK_RECV(full, 1); /* queued before close: still delivered */
  keel_chan_close(c);
  keel_chan_close(full);
  return 0;
}
static void test_close_remote_receivers_drain_then_epipe(void **state) {
  (void)state;
  run_both(close_remote_body);
}

/* A slot reserved before close keeps the receiver on worker 1 waiting; the
 * commit reaches it, and the abort of the last slot ends the next one. */
static int close_reserved_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_shared(2, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  keel_chan_slot_t a, b;
  CHECK_EQ(keel_chan_reserve(c, &a), 0);
  CHECK_EQ(keel_chan_reserve(c, &b), 0);
  CHECK_EQ(keel_chan_shutdown(c), 0);
  struct op r = {.c = c, .value = -1};
  keel_scope_t *s = spawn_on_1(receiver_task, &r);
  CHECK(s);
  CHECK_RC(settle());
  CHECK_EQ(keel_chan_commit(c, &a, &(int){7}), 0);
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(r.rc, 0);
  CHECK_EQ(r.value, 7);
  s = spawn_on_1(receiver_task, &r);
  CHECK(s);
  CHECK_RC(settle());
  CHECK_EQ(keel_chan_abort(c, &b), 0);
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(r.rc, -EPIPE);
  keel_chan_close(c);
  return 0;
}
static void test_close_reserved_slots_still_delivered(void **state) {
  (void)state;
  run_both(close_reserved_body);
}

/* ---- A wake racing a cancellation ------------------------------------------------ */

struct canceller {
  keel_scope_t *victim;
  int yields;
};

static int canceller_task(void *arg) {
  struct canceller *k = arg;
  for (int i = 0; i < k->yields; i++)
    keel_yield();
  keel_scope_cancel(k->victim, KEEL_CANCEL_USER);
  return 0;
}

/* Receiver r1 (and in odd rounds r2 behind it) waits on worker 1; worker 0
 * sends one item while r1 is cancelled, from worker 1 or worker 0, in a
 * random order. Either r1 was claimed first and takes the item, or its
 * cancellation won and the wake passes to r2 (which must get the item
 * without help from a close), or the item stays queued for a later recv:
 * exactly one gets it, never none. */
static int cancel_won_rounds;

static int wake_cancel_round(int round) {
  keel_chan_t *c = open_shared(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  bool two = round & 1;
  struct op r1 = {.c = c, .value = -1}, r2 = {.c = c, .value = -1};
  keel_scope_t *s1 = spawn_on_1(receiver_task, &r1);
  CHECK(s1);
  CHECK_RC(keel_sleep_ms(1));
  keel_scope_t *s2 = two ? spawn_on_1(receiver_task, &r2) : NULL;
  CHECK(s2 || !two);
  CHECK_RC(keel_sleep_ms(1));
  struct canceller k = {.victim = s1, .yields = (int)keel_random_below(4)};
  keel_scope_t *sk = (round & 2) ? spawn_on_1(canceller_task, &k) : NULL;
  for (int i = (int)keel_random_below(4); i > 0; i--)
    keel_yield();
  if (!sk)
    keel_scope_cancel(s1, KEEL_CANCEL_USER);
  CHECK_EQ(send_int(c, 42), 0);
  if (sk)
    join_close(sk);
  join_close(s1);
  CHECK(r1.rc == 0 || r1.rc == -ECANCELED);
  cancel_won_rounds += r1.rc == -ECANCELED;
  int got = r1.rc == 0 && r1.value == 42;
  if (two) {
    if (r1.rc == 0) {
      CHECK_EQ(keel_chan_shutdown(c), 0); /* ends r2 */
    } else {
      /* the wake must have passed to r2: no close to rescue it */
      keel_scope_set_deadline(s2, keel_now_ns() + 2 * KEEL_NS_PER_SEC);
    }
    join_close(s2);
    got += r2.rc == 0 && r2.value == 42;
  }
  int v = -1;
  if (keel_chan_try_recv(c, &v) == 0)
    got += v == 42;
  CHECK_EQ(got, 1);
  keel_chan_close(c);
  return 0;
}

static int wake_cancel_body(void *arg) {
  (void)arg;
  cancel_won_rounds = 0;
  for (int round = 0; round < 120; round++)
    if (wake_cancel_round(round) != 0)
      return -EPROTO;
  fprintf(stderr, "# the cancellation won %d of 120 rounds\n", cancel_won_rounds);
  return 0;
}
static void test_wake_racing_cancel_not_lost(void **state) {
  (void)state;
  run_both(wake_cancel_body);
}

/* A cancelled receiver on worker 1 has left the list: the item goes to the
 * receiver behind it, woken from worker 0. */
static int cancel_leaves_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_shared(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  struct op r1 = {.c = c, .value = -1}, r2 = {.c = c, .value = -1};
  keel_scope_t *s1 = spawn_on_1(receiver_task, &r1);
  CHECK_RC(settle());
  keel_scope_t *s2 = spawn_on_1(receiver_task, &r2);
  CHECK(s1 && s2);
  CHECK_RC(settle());
  keel_scope_cancel(s1, KEEL_CANCEL_USER);
  join_close(s1);
  CHECK_EQ(r1.rc, -ECANCELED);
  CHECK_EQ(send_int(c, 5), 0);
  CHECK_EQ(join_close(s2), 0);
  CHECK_EQ(r2.rc, 0);
  CHECK_EQ(r2.value, 5);
  keel_chan_close(c);
  return 0;
}
static void test_cancelled_remote_receiver_leaves_list(void **state) {
  (void)state;
  run_both(cancel_leaves_body);
}

/* ---- Deadlines -------------------------------------------------------------------- */

static int timed_ops_task(void *arg) {
  keel_chan_t *c = arg; /* capacity 1, empty */
  int v = -1;
  /* t0 before the deadline is set: a thread preempted between the two
   * would otherwise see less than 20 ms pass */
  int64_t t0 = kt_mono_ns();
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_chan_recv(c, &v), -ETIMEDOUT);
  CHECK(kt_mono_ns() - t0 >= 20 * KEEL_NS_PER_MS);
  keel_task_set_deadline(prev);
  CHECK_EQ(send_int(c, 1), 0);
  keel_task_set_deadline(keel_now_ns() + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(send_int(c, 2), -ETIMEDOUT);
  keel_chan_slot_t slot;
  CHECK_EQ(keel_chan_reserve(c, &slot), -ETIMEDOUT);
  keel_task_set_deadline(prev);
  return 0;
}

/* Timed-out waits on worker 1 left their lists and took nothing: worker 0
 * sees exactly the one item, and the room is whole again. */
static int deadline_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_shared(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  keel_scope_t *s = spawn_on_1(timed_ops_task, c);
  CHECK(s);
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(keel_chan_len(c), 1);
  CHECK_RECV(c, 1);
  CHECK_EQ(keel_chan_try_send(c, &(int){3}), 0);
  CHECK_EQ(keel_chan_try_send(c, &(int){4}), -EAGAIN);
  struct op r = {.c = c};
  s = spawn_on_1(receiver_task, &r);
  CHECK(s);
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(r.rc, 0);
  CHECK_EQ(r.value, 3);
  keel_chan_close(c);
  return 0;
}
static void test_deadline_cross_worker(void **state) {
  (void)state;
  run_both(deadline_body);
}

/* ---- Policies and orders, shared ---------------------------------------------------- */

static int fill_task(void *arg) {
  struct op *op = arg; /* sends 1..value */
  for (int i = 1; i <= op->value; i++) {
    op->rc = send_int(op->c, i);
    if (op->rc < 0)
      return 0;
  }
  return 0;
}

static int policy_block_body(void) {
  keel_chan_t *c = open_shared(2, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  struct op f = {.c = c, .value = 6}; /* blocks after two, woken by our receives */
  keel_scope_t *s = spawn_on_1(fill_task, &f);
  CHECK(s);
  for (int i = 1; i <= 6; i++)
    CHECK_RECV(c, i);
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(f.rc, 0);
  keel_chan_close(c);
  return 0;
}

static int policy_drop_body(keel_chan_policy_t policy, int first_kept) {
  keel_chan_t *c = open_shared(2, policy, KEEL_CHAN_FIFO);
  CHECK(c);
  struct op f = {.c = c, .value = 4};
  keel_scope_t *s = spawn_on_1(fill_task, &f);
  CHECK(s);
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(f.rc, KEEL_CHAN_DROPPED);
  CHECK_EQ(keel_chan_dropped(c), 2);
  CHECK_RECV(c, first_kept);
  CHECK_RECV(c, first_kept + 1);
  CHECK(keel_chan_is_empty(c));
  keel_chan_close(c);
  return 0;
}

static int policy_grow_body(keel_chan_order_t order) {
  keel_chan_t *c = open_shared(2, KEEL_CHAN_GROW, order);
  CHECK(c);
  struct op f = {.c = c, .value = 1000};
  keel_scope_t *s = spawn_on_1(fill_task, &f);
  CHECK(s);
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(f.rc, 0);
  CHECK(keel_chan_capacity(c) >= 1000);
  for (int i = 1; i <= 1000; i++)
    CHECK_RECV(c, order == KEEL_CHAN_LIFO ? 1001 - i : i);
  keel_chan_close(c);
  return 0;
}

static int priority_sender_task(void *arg) {
  keel_chan_t *c = arg;
  static const int keys[] = {5, -3, 9, 0, -3, 7};
  for (int i = 0; i < 6; i++)
    CHECK_EQ(keel_chan_send_key(c, keys[i], &(int){keys[i] * 100 + i}), 0);
  return 0;
}

/* Sent on worker 1, received on worker 0 smallest key first, ties FIFO. */
static int priority_body(void) {
  keel_chan_t *c = open_shared(6, KEEL_CHAN_BLOCK, KEEL_CHAN_PRIORITY);
  CHECK(c);
  keel_scope_t *s = spawn_on_1(priority_sender_task, c);
  CHECK(s);
  CHECK_EQ(join_close(s), 0);
  static const int want[] = {-299, -296, 3, 500, 705, 902};
  for (int i = 0; i < 6; i++)
    CHECK_RECV(c, want[i]);
  keel_chan_close(c);
  return 0;
}

static int policies_body(void *arg) {
  (void)arg;
  CHECK_EQ(policy_block_body(), 0);
  CHECK_EQ(policy_drop_body(KEEL_CHAN_DROP_NEWEST, 1), 0);
  CHECK_EQ(policy_drop_body(KEEL_CHAN_DROP_OLDEST, 3), 0);
  CHECK_EQ(policy_grow_body(KEEL_CHAN_FIFO), 0);
  CHECK_EQ(policy_grow_body(KEEL_CHAN_LIFO), 0);
  CHECK_EQ(priority_body(), 0);
  return 0;
}
static void test_each_policy_shared(void **state) {
  (void)state;
  run_both(policies_body);
}

/* ---- Two-phase sends, plain threads, a worker's own channel ------------------------ */

struct slot_op {
  keel_chan_t *c;
  keel_chan_slot_t *slot;
  int rc;
};

static int commit_task(void *arg) {
  struct slot_op *op = arg;
  op->rc = keel_chan_commit(op->c, op->slot, &(int){11});
  return 0;
}

static int abort_task(void *arg) {
  struct slot_op *op = arg;
  op->rc = keel_chan_abort(op->c, op->slot);
  return 0;
}

static int run_slot_op_on_1(keel_task_fn fn, struct slot_op *op) {
  keel_scope_t *s = spawn_on_1(fn, op);
  CHECK(s);
  CHECK_EQ(join_close(s), 0);
  return 0;
}

/* Shared: a slot reserved on worker 0 is committed or aborted on worker 1,
 * and a reserver parked on worker 1 gets the room of an abort. Not shared:
 * worker 1's commit and abort return -EXDEV and leave the slot held. */
static int slots_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_shared(1, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  keel_chan_slot_t slot;
  struct slot_op op = {.c = c, .slot = &slot};
  CHECK_EQ(keel_chan_reserve(c, &slot), 0);
  CHECK_EQ(run_slot_op_on_1(commit_task, &op), 0);
  CHECK_EQ(op.rc, 0);
  CHECK(slot.chan == NULL);
  CHECK_RECV(c, 11);
  CHECK_EQ(keel_chan_reserve(c, &slot), 0);
  struct op rsv = {.c = c, .value = 12};
  keel_scope_t *s = spawn_on_1(reserver_task, &rsv);
  CHECK(s);
  CHECK_RC(settle());
  CHECK_EQ(keel_chan_abort(c, &slot), 0); /* the room passes to worker 1 */
  CHECK_EQ(join_close(s), 0);
  CHECK_EQ(rsv.rc, 0);
  CHECK_RECV(c, 12);
  keel_chan_close(c);

  keel_chan_opts_t lo = {.elem_size = sizeof(int), .capacity = 1};
  CHECK_EQ(keel_chan_open(&lo, &c), 0);
  op.c = c;
  CHECK_EQ(keel_chan_reserve(c, &slot), 0);
  CHECK_EQ(run_slot_op_on_1(commit_task, &op), 0);
  CHECK_EQ(op.rc, -EXDEV);
  CHECK_EQ(run_slot_op_on_1(abort_task, &op), 0);
  CHECK_EQ(op.rc, -EXDEV);
  CHECK(slot.chan == c && keel_chan_is_full(c) && keel_chan_is_empty(c));
  CHECK_EQ(keel_chan_commit(c, &slot, &(int){13}), 0);
  CHECK_RECV(c, 13);
  keel_chan_close(c);
  return 0;
}
static void test_slots_across_workers(void **state) {
  (void)state;
  run_both(slots_body);
}

#define THREAD_MSGS 10000

/* A plain thread: try_send, and send (which cannot park there: -EAGAIN
 * when full), feeding a receiver parked on worker 1. */
static void *plain_sender(void *arg) {
  keel_chan_t *c = arg;
  intptr_t bad = 0;
  for (int i = 0; i < THREAD_MSGS; i++) {
    int rc;
    while ((rc = (i & 1) ? keel_chan_send(c, &i) : keel_chan_try_send(c, &i)) == -EAGAIN)
      sched_yield();
    bad += rc != 0;
  }
  bad += keel_chan_shutdown(c) != 0;
  return (void *)bad;
}

static int plain_thread_body(void *arg) {
  (void)arg;
  keel_chan_t *c = open_shared(4, KEEL_CHAN_BLOCK, KEEL_CHAN_FIFO);
  CHECK(c);
  struct drain d = {.c = c};
  keel_scope_t *s = spawn_on_1(drain_task, &d);
  CHECK(s);
  pthread_t th;
  CHECK_EQ(pthread_create(&th, NULL, plain_sender, c), 0);
  CHECK_EQ(join_close(s), 0);
  void *bad = NULL;
  CHECK_EQ(pthread_join(th, &bad), 0);
  CHECK(bad == NULL);
  CHECK_EQ(d.rc, -EPIPE);
  CHECK_EQ(d.got, THREAD_MSGS);
  CHECK_EQ(d.sum, THREAD_MSGS * (THREAD_MSGS - 1) / 2);
  keel_chan_close(c);
  return 0;
}
static void test_plain_thread_sender(void **state) {
  (void)state;
  run_both(plain_thread_body);
}

static void test_open_flags(void **state) {
  (void)state;
  keel_chan_t *c = (keel_chan_t *)&c;
  keel_chan_opts_t o = {.elem_size = 4, .capacity = 4, .flags = 2};
  assert_int_equal(keel_chan_open(&o, &c), -EINVAL);
  assert_null(c);
  o.flags = KEEL_CHAN_SHARED;
  assert_int_equal(keel_chan_open(&o, &c), 0);
  /* opened outside any worker, shared: usable here by try-variants */
  assert_int_equal(keel_chan_try_send(c, &(int){1}), 0);
  int v = 0;
  assert_int_equal(keel_chan_recv(c, &v), 0);
  assert_int_equal(v, 1);
  assert_int_equal(keel_chan_recv(c, &v), -EAGAIN);
  keel_chan_close(c);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stream_two_workers_none_lost),
      cmocka_unit_test(test_close_remote_receivers_drain_then_epipe),
      cmocka_unit_test(test_close_reserved_slots_still_delivered),
      cmocka_unit_test(test_wake_racing_cancel_not_lost),
      cmocka_unit_test(test_cancelled_remote_receiver_leaves_list),
      cmocka_unit_test(test_deadline_cross_worker),
      cmocka_unit_test(test_each_policy_shared),
      cmocka_unit_test(test_slots_across_workers),
      cmocka_unit_test(test_plain_thread_sender),
      cmocka_unit_test(test_open_flags),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
