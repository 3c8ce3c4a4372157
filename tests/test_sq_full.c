/* io_uring with a full submission queue the kernel refuses. Finding no
 * free SQE, the backend submits the queue; when the kernel will not take
 * it, the operation that wanted the SQE fails with the kernel's error
 * instead of spinning the worker, and the cancels and closes that find no
 * SQE are owed and go in once the kernel takes the queue again.
 *
 * The kernel refuses deterministically: a ring set up disabled
 * (IORING_SETUP_R_DISABLED) fails every io_uring_enter with -EBADFD, and a
 * worker's ring whose enter descriptor points nowhere fails with -EINVAL
 * or -EBADF until it is put back. The passing refusals (-EINTR, -EAGAIN,
 * -EBUSY) that get a few more tries cannot be caused on demand, so their
 * retries are not tested here. */
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "keel-test.h"

#define KT_GUARD_MS 20000 /* no test body may take longer */
#include "kt-guard.h"

#include "internal.h"

#define RAW_ENTRIES 4
#define WORKER_ENTRIES 8 /* the worker's SQ: that many operations fill it */
#define READERS (WORKER_ENTRIES + 4)
#define SETTLE_MS 30

/* ---- keel__uring_sqe_after_submit on a ring of the test's own ------------------ */

static void ring_setup(struct io_uring *ring, unsigned flags) {
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = flags;
  int rc = io_uring_queue_init_params(RAW_ENTRIES, ring, &p);
  if (rc < 0) {
    fprintf(stderr, "# io_uring_queue_init_params: %s\n", strerror(-rc));
    skip();
  }
}

/* Fills the SQ with NOPs; the next io_uring_get_sqe finds none free. */
static void fill_with_nops(struct io_uring *ring) {
  for (unsigned i = 0; i < RAW_ENTRIES; i++) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    assert_non_null(sqe);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, i + 1);
  }
  assert_null(io_uring_get_sqe(ring));
}

/* Waits for the NOPs' CQEs, each with result 0. */
static void expect_nop_cqes(struct io_uring *ring) {
  for (unsigned i = 0; i < RAW_ENTRIES; i++) {
    struct io_uring_cqe *cqe;
    assert_int_equal(io_uring_wait_cqe(ring, &cqe), 0);
    assert_int_equal(cqe->res, 0);
    io_uring_cqe_seen(ring, cqe);
  }
}

/* The ordinary case: the kernel takes the batch, and an SQE is free. */
static void test_full_sq_is_submitted(void **state) {
  (void)state;
  struct io_uring ring;
  ring_setup(&ring, 0);
  fill_with_nops(&ring);
  int err = 1;
  struct io_uring_sqe *sqe = keel__uring_sqe_after_submit(&ring, &err);
  assert_non_null(sqe);
  assert_int_equal(err, 1); /* untouched on success */
  io_uring_prep_nop(sqe);
  expect_nop_cqes(&ring);
  io_uring_queue_exit(&ring);
}

/* liburing 2.3 declares io_uring_enable_rings but does not export it. */
static int enable_ring(struct io_uring *ring) {
  if (syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
    return -errno;
  return 0;
}

/* A lasting refusal fails at once, and the batch stays queued: once the
 * kernel takes SQEs, it submits them and an SQE is free again. */
static void test_refused_sq_fails(void **state) {
  (void)state;
  struct io_uring ring;
  ring_setup(&ring, IORING_SETUP_R_DISABLED);
  fill_with_nops(&ring);
  int err = 0;
  int64_t start = kt_mono_ns();
  assert_null(keel__uring_sqe_after_submit(&ring, &err));
  int64_t took_ms = (kt_mono_ns() - start) / KEEL_NS_PER_MS;
  assert_int_equal(err, -EBADFD);
  assert_true(took_ms < 1000);
  assert_int_equal(io_uring_sq_ready(&ring), RAW_ENTRIES);

  assert_int_equal(enable_ring(&ring), 0);
  err = 0;
  struct io_uring_sqe *sqe = keel__uring_sqe_after_submit(&ring, &err);
  assert_non_null(sqe);
  assert_int_equal(err, 0);
  io_uring_prep_nop(sqe);
  expect_nop_cqes(&ring);
  io_uring_queue_exit(&ring);
}

/* ---- A worker whose ring the kernel refuses for a while --------------------- */

typedef struct reader {
  keel_stream_t *stream;
  char buf[16];
  atomic_bool done;
  ssize_t result;
  bool parked; /* still in its read while the ring was refused */
} reader_t;

static int reader_task(void *arg) {
  reader_t *r = arg;
  r->result = keel_read(r->stream, r->buf, sizeof r->buf);
  atomic_store(&r->done, true);
  return 0;
}

typedef struct closer {
  keel_tcp_t *conn;          /* closed by the task, or */
  keel_listener_t *listener; /* this */
  atomic_bool done;
} closer_t;

static int closer_task(void *arg) {
  closer_t *c = arg;
  if (c->conn)
    keel_tcp_close(c->conn);
  else
    keel_listener_close(c->listener);
  atomic_store(&c->done, true);
  return 0;
}

typedef struct refusal {
  keel_listener_t *listener;
  keel_tcp_t *client[READERS], *server[READERS];
  reader_t readers[READERS];
  closer_t close_conn, close_listener;
  keel_scope_t *readers0, *readers_rest, *closers;
  struct io_uring *ring;
  int saved_enter_fd;
  /* What the tasks had done while the ring was refused. */
  int failed, parked, refused_err, odd_errs, parked_after_cancel;
  bool closers_done_early;
} refusal_t;

static int refusal_open(refusal_t *t) {
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&t->listener, addr, sizeof addr));
  for (int i = 0; i < READERS; i++) {
    CHECK_RC(keel_tcp_connect(addr, &t->client[i]));
    CHECK_RC(keel_tcp_accept(t->listener, &t->server[i]));
  }
  t->ring = keel__uring_ring(keel__worker_current());
  CHECK(t->ring != NULL);
  (void)keel_scope_open(NULL, &t->readers0);
  (void)keel_scope_open(NULL, &t->readers_rest);
  (void)keel_scope_open(NULL, &t->closers);
  CHECK(t->readers0 && t->readers_rest && t->closers);
  return 0;
}

/* Every io_uring_enter now fails (-EINVAL for a registered ring index out
 * of range, -EBADF otherwise): the kernel takes nothing until put back. */
static void refuse_ring(refusal_t *t) {
  t->saved_enter_fd = t->ring->enter_ring_fd;
  t->ring->enter_ring_fd = INT_MAX;
}

static void take_ring_back(refusal_t *t) { t->ring->enter_ring_fd = t->saved_enter_fd; }

/* Readers start while the ring is refused: those that found an SQE park,
 * the rest fail with the refusal. Records what happened, for checks made
 * once the ring works again. */
static int start_readers(refusal_t *t) {
  for (int i = 0; i < READERS; i++) {
    t->readers[i].stream = keel_tcp_stream(t->server[i]);
    CHECK_RC(keel_spawn(i == 0 ? t->readers0 : t->readers_rest, reader_task, &t->readers[i], NULL));
  }
  keel_sleep_ms(SETTLE_MS);
  for (int i = 0; i < READERS; i++) {
    reader_t *r = &t->readers[i];
    r->parked = !atomic_load(&r->done);
    if (r->parked) {
      t->parked++;
    } else if (t->failed++ == 0) {
      t->refused_err = (int)r->result;
    } else if (r->result != t->refused_err) {
      t->odd_errs++;
    }
  }
  return 0;
}

/* A close of reader 0's connection, of the listener (its multishot accept
 * is armed) and the cancel of the other readers, all with no SQE to be
 * had: they stay owed while the ring is refused. */
static int owe_cancels(refusal_t *t) {
  t->close_conn.conn = t->server[0];
  t->close_listener.listener = t->listener;
  CHECK_RC(keel_spawn(t->closers, closer_task, &t->close_conn, NULL));
  CHECK_RC(keel_spawn(t->closers, closer_task, &t->close_listener, NULL));
  keel_scope_cancel(t->readers_rest, KEEL_CANCEL_USER);
  keel_sleep_ms(SETTLE_MS);
  for (int i = 0; i < READERS; i++)
    t->parked_after_cancel += !atomic_load(&t->readers[i].done);
  t->closers_done_early = atomic_load(&t->close_conn.done) || atomic_load(&t->close_listener.done);
  return 0;
}

static int check_refused(const refusal_t *t) {
  CHECK(t->failed >= READERS - WORKER_ENTRIES);
  CHECK(t->parked >= 1);
  CHECK(t->refused_err == -EINVAL || t->refused_err == -EBADF);
  CHECK_EQ(t->odd_errs, 0);
  CHECK(t->readers[0].parked); /* the first reader found an SQE */
  CHECK_EQ(t->parked_after_cancel, t->parked);
  CHECK(!t->closers_done_early);
  return 0;
}

/* Once the ring takes SQEs again, the owed cancels go in: the reader whose
 * connection was closed gets -EBADF, the cancelled ones -ECANCELED. */
static int check_settled(refusal_t *t) {
  keel_scope_join(t->closers);
  keel_scope_join(t->readers0);
  keel_scope_join(t->readers_rest);
  CHECK(atomic_load(&t->close_conn.done) && atomic_load(&t->close_listener.done));
  CHECK_EQ(t->readers[0].result, -EBADF);
  for (int i = 1; i < READERS; i++) {
    reader_t *r = &t->readers[i];
    CHECK_EQ(r->result, r->parked ? -ECANCELED : t->refused_err);
  }
  /* The worker's ring works again. */
  static const char msg[] = "after";
  char got[sizeof msg];
  size_t n = 0;
  CHECK_RC(keel_write_all(keel_tcp_stream(t->client[1]), msg, sizeof msg, NULL));
  CHECK_RC(keel_read_exact(keel_tcp_stream(t->server[1]), got, sizeof got, &n));
  CHECK(memcmp(got, msg, sizeof msg) == 0);
  return 0;
}

static void refusal_close(refusal_t *t) {
  keel_scope_t *scopes[] = {t->readers0, t->readers_rest, t->closers};
  for (size_t i = 0; i < 3; i++)
    if (scopes[i])
      keel_scope_close(scopes[i]);
  for (int i = 0; i < READERS; i++) {
    if (t->client[i])
      keel_tcp_close(t->client[i]);
    if (t->server[i] && !(i == 0 && t->close_conn.conn))
      keel_tcp_close(t->server[i]);
  }
  if (t->listener && !t->close_listener.listener)
    keel_listener_close(t->listener);
}

/* Checks run only once the ring is back: a check failing while it is
 * refused would leave the guard's own cancels owed for good. */
static int refusal_main(void *arg) {
  (void)arg;
  refusal_t t;
  memset(&t, 0, sizeof t);
  int rc = refusal_open(&t);
  if (rc == 0) {
    refuse_ring(&t);
    rc = start_readers(&t);
    if (rc == 0)
      rc = owe_cancels(&t);
    take_ring_back(&t);
  }
  if (rc == 0)
    rc = check_refused(&t);
  if (rc == 0)
    rc = check_settled(&t);
  refusal_close(&t);
  return rc;
}

static void test_worker_ring_refused(void **state) {
  (void)state;
  if (!kt_backend_selected(KEEL_BACKEND_URING)) {
    fprintf(stderr, "# io_uring only\n");
    skip();
  }
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_URING;
  cfg.workers = 1;
  cfg.uring_entries = WORKER_ENTRIES;
  kt_body_t body = {refusal_main, NULL};
  assert_int_equal(keel_run(&cfg, kt_guard_main, &body), 0);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_sq_is_submitted),
      cmocka_unit_test(test_refused_sq_fails),
      cmocka_unit_test(test_worker_ring_refused),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
