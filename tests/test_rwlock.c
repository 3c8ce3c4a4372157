/* Read-write lock: try variants, a waiting writer holds back new readers,
 * a writer is not starved by a stream of overlapping readers, queued
 * readers enter together, a cancelled writer at the head lets readers
 * behind it in, deadlines, a lock handed to a task cancelled before it ran
 * goes on, and readers and writers on two workers. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

static int settle(void) { return keel_sleep_ms(5); }

/* Takes the lock, holds it until told to let go (or at once if hold is
 * false), and records the order in which holders got it. */
struct op {
  keel_rwlock_t *l;
  bool write;
  bool hold;
  int id;
  int *order, *norder;
  int rc;
  atomic_bool got, release, done;
};

static int lock_task(void *arg) {
  struct op *op = arg;
  op->rc = op->write ? keel_rwlock_write_lock(op->l) : keel_rwlock_read_lock(op->l);
  if (op->rc == 0) {
    if (op->order)
      op->order[(*op->norder)++] = op->id;
    atomic_store(&op->got, true);
    while (op->hold && !atomic_load(&op->release))
      keel_sleep_ms(1);
    if (op->write)
      keel_rwlock_unlock_write(op->l);
    else
      keel_rwlock_unlock_read(op->l);
  }
  atomic_store(&op->done, true);
  return 0;
}

static keel_scope_t *spawn_op(struct op *op, int worker) {
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_spawn_opts_t o = {.name = op->write ? "writer" : "reader", .on_worker = worker};
  if (sc && keel_spawn(sc, lock_task, op, &o) < 0) {
    keel_scope_close(sc);
    return NULL;
  }
  return sc;
}

static int basic_body(void *arg) {
  (void)arg;
  keel_rwlock_t l;
  keel_rwlock_init(&l);
  CHECK_EQ(keel_rwlock_read_lock(&l), 0);
  CHECK_EQ(keel_rwlock_try_read_lock(&l), 0);
  CHECK_EQ(keel_rwlock_try_write_lock(&l), -EBUSY);
  keel_rwlock_unlock_read(&l);
  keel_rwlock_unlock_read(&l);
  CHECK_EQ(keel_rwlock_try_write_lock(&l), 0);
  CHECK_EQ(keel_rwlock_try_read_lock(&l), -EBUSY);
  CHECK_EQ(keel_rwlock_try_write_lock(&l), -EBUSY);
  keel_rwlock_unlock_write(&l);
  CHECK_EQ(keel_rwlock_write_lock(&l), 0);
  keel_rwlock_unlock_write(&l);
  keel_rwlock_destroy(&l);
  return 0;
}
static void test_basic(void **state) {
  (void)state;
  kt_run_body(basic_body, NULL, 1);
}

/* We read; a writer waits; a later reader must wait behind the writer. */
static int writer_preference_body(void *arg) {
  (void)arg;
  keel_rwlock_t l;
  keel_rwlock_init(&l);
  int order[2], norder = 0;
  struct op w = {.l = &l, .write = true, .id = 1, .order = order, .norder = &norder};
  struct op r = {.l = &l, .id = 2, .order = order, .norder = &norder};
  CHECK_EQ(keel_rwlock_read_lock(&l), 0);
  keel_scope_t *sw = spawn_op(&w, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sr = spawn_op(&r, KEEL_WORKER_CURRENT);
  CHECK(sw && sr);
  CHECK_RC(settle());
  CHECK(!atomic_load(&w.got) && !atomic_load(&r.got));
  CHECK_EQ(keel_rwlock_try_read_lock(&l), -EBUSY);
  keel_rwlock_unlock_read(&l);
  keel_scope_close(sw);
  keel_scope_close(sr);
  CHECK_EQ(w.rc, 0);
  CHECK_EQ(r.rc, 0);
  CHECK_EQ(norder, 2);
  CHECK_EQ(order[0], 1);
  CHECK_EQ(order[1], 2);
  keel_rwlock_destroy(&l);
  return 0;
}
static void test_waiting_writer_holds_back_readers(void **state) {
  (void)state;
  kt_run_body(writer_preference_body, NULL, 1);
}

/* Readers overlap so the lock is never free of them; a writer must still
 * get in (within a deadline, not the guard's: 10 s, far more than a loaded
 * machine needs to run the 1 ms read sections ahead of it). */
struct stream {
  keel_rwlock_t l;
  atomic_bool stop;
  atomic_long reads;
};

static int stream_reader(void *arg) {
  struct stream *st = arg;
  while (!atomic_load(&st->stop)) {
    CHECK_RC(keel_rwlock_read_lock(&st->l));
    atomic_fetch_add(&st->reads, 1);
    keel_sleep_ms(1);
    keel_rwlock_unlock_read(&st->l);
  }
  return 0;
}

static int stream_body(void *arg) {
  (void)arg;
  struct stream st = {.reads = 0};
  keel_rwlock_init(&st.l);
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  for (int i = 0; i < 6; i++) {
    keel_spawn_opts_t o = {.name = "reader", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(sc, stream_reader, &st, &o));
  }
  CHECK_RC(keel_sleep_ms(20));
  CHECK(atomic_load(&st.reads) > 0);
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 10 * KEEL_NS_PER_SEC);
  CHECK_EQ(keel_rwlock_write_lock(&st.l), 0);
  keel_task_set_deadline(prev);
  atomic_store(&st.stop, true);
  keel_rwlock_unlock_write(&st.l);
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  keel_rwlock_destroy(&st.l);
  return 0;
}
static void test_writer_not_starved_by_reader_stream(void **state) {
  (void)state;
  kt_run_body(stream_body, NULL, 2);
}

static int readers_together_body(void *arg) {
  (void)arg;
  keel_rwlock_t l;
  keel_rwlock_init(&l);
  struct op r[3];
  keel_scope_t *sc[3];
  CHECK_EQ(keel_rwlock_write_lock(&l), 0);
  for (int i = 0; i < 3; i++) {
    r[i] = (struct op){.l = &l, .hold = true};
    CHECK(sc[i] = spawn_op(&r[i], KEEL_WORKER_CURRENT));
  }
  CHECK_RC(settle());
  keel_rwlock_unlock_write(&l);
  CHECK_RC(settle());
  for (int i = 0; i < 3; i++) /* all three hold it at once */
    CHECK(atomic_load(&r[i].got));
  CHECK_EQ(keel_rwlock_try_write_lock(&l), -EBUSY);
  for (int i = 0; i < 3; i++) {
    atomic_store(&r[i].release, true);
    keel_scope_close(sc[i]);
  }
  CHECK_EQ(keel_rwlock_try_write_lock(&l), 0);
  keel_rwlock_unlock_write(&l);
  keel_rwlock_destroy(&l);
  return 0;
}
static void test_queued_readers_enter_together(void **state) {
  (void)state;
  kt_run_body(readers_together_body, NULL, 1);
}

/* We read; a writer waits, a reader waits behind it. The writer is
 * cancelled: the reader must get in alongside us at once. */
static int cancel_writer_body(void *arg) {
  (void)arg;
  keel_rwlock_t l;
  keel_rwlock_init(&l);
  struct op w = {.l = &l, .write = true}, r = {.l = &l};
  CHECK_EQ(keel_rwlock_read_lock(&l), 0);
  keel_scope_t *sw = spawn_op(&w, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sr = spawn_op(&r, KEEL_WORKER_CURRENT);
  CHECK(sw && sr);
  CHECK_RC(settle());
  CHECK(!atomic_load(&r.got));
  keel_scope_cancel(sw, KEEL_CANCEL_USER);
  keel_scope_close(sw);
  CHECK_EQ(w.rc, -ECANCELED);
  keel_scope_close(sr); /* while we still read */
  CHECK_EQ(r.rc, 0);
  keel_rwlock_unlock_read(&l);
  CHECK_EQ(keel_rwlock_try_write_lock(&l), 0);
  keel_rwlock_unlock_write(&l);
  keel_rwlock_destroy(&l);
  return 0;
}
static void test_cancelled_writer_lets_readers_in(void **state) {
  (void)state;
  kt_run_body(cancel_writer_body, NULL, 1);
}

static int deadline_body(void *arg) {
  (void)arg;
  keel_rwlock_t l;
  keel_rwlock_init(&l);
  struct op r = {.l = &l}, w = {.l = &l, .write = true};
  CHECK_EQ(keel_rwlock_write_lock(&l), 0);
  int64_t t0 = kt_clock_ns();
  keel_scope_opts_t so = {.deadline_ns = t0 + 20 * KEEL_NS_PER_MS};
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(&so, &sc);
  CHECK(sc);
  CHECK_RC(keel_spawn(sc, lock_task, &r, NULL));
  CHECK_RC(keel_spawn(sc, lock_task, &w, NULL));
  keel_scope_close(sc);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * KEEL_NS_PER_MS, 20 * KEEL_NS_PER_MS + kt_late_ns());
  CHECK_EQ(r.rc, -ETIMEDOUT);
  CHECK_EQ(w.rc, -ETIMEDOUT);
  keel_rwlock_unlock_write(&l);
  CHECK_EQ(keel_rwlock_try_write_lock(&l), 0); /* nothing taken, nobody queued */
  keel_rwlock_unlock_write(&l);
  keel_rwlock_destroy(&l);
  return 0;
}
static void test_deadline_timedout(void **state) {
  (void)state;
  kt_run_body(deadline_body, NULL, 1);
}

static int handoff_cancel_body(void *arg) {
  (void)arg;
  static keel_rwlock_t l; /* static: a failed check returns with tasks using it */
  static struct op a, b;
  keel_rwlock_init(&l);
  a = (struct op){.l = &l, .write = true};
  b = (struct op){.l = &l, .write = true};
  CHECK_EQ(keel_rwlock_write_lock(&l), 0);
  keel_scope_t *sa = spawn_op(&a, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sb = spawn_op(&b, KEEL_WORKER_CURRENT);
  CHECK(sa && sb);
  CHECK_RC(settle());
  keel_rwlock_unlock_write(&l);            /* hands it to a ... */
  keel_scope_cancel(sa, KEEL_CANCEL_USER); /* ... cancelled before it runs */
  CHECK_RC(settle());
  CHECK(atomic_load(&a.done) && atomic_load(&b.done));
  CHECK_EQ(a.rc, -ECANCELED);
  CHECK_EQ(b.rc, 0);
  keel_scope_close(sa);
  keel_scope_close(sb);
  CHECK_EQ(keel_rwlock_try_write_lock(&l), 0);
  keel_rwlock_unlock_write(&l);
  keel_rwlock_destroy(&l);
  return 0;
}
static void test_handoff_then_cancel_passes_on(void **state) {
  (void)state;
  kt_run_body(handoff_cancel_body, NULL, 1);
}

/* ---- Two workers ---------------------------------------------------------------------- */

#define ROUNDS (5000 / KT_SCALE)

struct pair {
  keel_rwlock_t l;
  long a, b; /* plain; writers keep a == b */
  atomic_long torn;
};

static int pair_writer(void *arg) {
  struct pair *p = arg;
  for (int i = 0; i < ROUNDS; i++) {
    CHECK_RC(keel_rwlock_write_lock(&p->l));
    p->a++;
    if (i % 32 == 0)
      keel_yield();
    p->b++;
    keel_rwlock_unlock_write(&p->l);
  }
  return 0;
}

static int pair_reader(void *arg) {
  struct pair *p = arg;
  for (int i = 0; i < ROUNDS; i++) {
    CHECK_RC(keel_rwlock_read_lock(&p->l));
    long a = p->a;
    if (i % 32 == 0)
      keel_yield();
    if (a != p->b)
      atomic_fetch_add(&p->torn, 1);
    keel_rwlock_unlock_read(&p->l);
  }
  return 0;
}

static int two_workers_body(void *arg) {
  (void)arg;
  struct pair p = {.a = 0};
  keel_rwlock_init(&p.l);
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  for (int i = 0; i < 8; i++) {
    keel_spawn_opts_t o = {.name = "rw", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(sc, i < 4 ? pair_writer : pair_reader, &p, &o));
  }
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK_EQ(p.a, 4L * ROUNDS);
  CHECK_EQ(p.b, 4L * ROUNDS);
  CHECK_EQ(atomic_load(&p.torn), 0);
  keel_rwlock_destroy(&p.l);
  return 0;
}
static void test_two_workers(void **state) {
  (void)state;
  kt_run_body(two_workers_body, NULL, 2);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic),
      cmocka_unit_test(test_waiting_writer_holds_back_readers),
      cmocka_unit_test(test_writer_not_starved_by_reader_stream),
      cmocka_unit_test(test_queued_readers_enter_together),
      cmocka_unit_test(test_cancelled_writer_lets_readers_in),
      cmocka_unit_test(test_deadline_timedout),
      cmocka_unit_test(test_handoff_then_cancel_passes_on),
      cmocka_unit_test(test_two_workers),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
