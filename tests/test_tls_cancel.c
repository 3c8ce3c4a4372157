/* TLS streams and parked tasks: cancelled writes (the shield, then the
 * poison) and reads, close under a parked reader and writer, one reader
 * and one writer at a time, and no buffer held while a task waits on an
 * idle stream.
 *
 * The transports, the relay, the seeds and the certificates are
 * tests/tls-test.h's; without KEEL_TEST_CERTS the test is skipped. */
#define KT_GUARD_MS 240000
#include "tls-test.h"

#include "tls-internal.h" /* the TLS stream's buffers (idle memory) */

/* ---- Cancellation ------------------------------------------------------------------------- */

/* Writes the pattern until a write fails; what the cancelled write
 * returned and when go to cancelled_rc / returned_ns. */
typedef struct stuffer {
  keel_stream_t *s;
  uint64_t written;
  bool cancelled;       /* set by the test when it cancels */
  ssize_t cancelled_rc; /* the first write that returned after that */
  int64_t returned_ns;
  ssize_t last_rc;
} stuffer_t;

static int stuffer_task(void *arg) {
  stuffer_t *w = arg;
  for (;;) {
    ssize_t n = keel_write(w->s, pat_at(w->written, 20), PAT_SPAN);
    if (w->cancelled && w->returned_ns == 0) {
      w->cancelled_rc = n;
      w->returned_ns = keel_now_ns();
    }
    w->last_rc = n;
    if (n <= 0)
      return 0;
    w->written += (uint64_t)n;
  }
}

/* Reads to the end (or an error, in *end), checking the pattern. */
typedef struct drain {
  keel_stream_t *s;
  int64_t delay_ms;
  uint64_t got;
  ssize_t end;
  unsigned char buf[PAT_SPAN];
} drain_t;

static int drain_task(void *arg) {
  drain_t *d = arg;
  CHECK_RC(keel_sleep_ms(d->delay_ms));
  for (;;) {
    ssize_t n = keel_read(d->s, d->buf, sizeof d->buf);
    if (n <= 0) {
      d->end = n;
      return 0;
    }
    if (memcmp(d->buf, pat_at(d->got, 20), (size_t)n) != 0)
      KT_FAIL("bytes %llu..+%zd are not what was written", (unsigned long long)d->got, n);
    d->got += (uint64_t)n;
  }
}

/* Real TCP: a fixed buffer (no autotuning), so that a writer the peer
 * does not read from stays stuck. */
static void fix_buffers(keel_stream_t *s, int which) {
  int fd = -1, size = 64 * 1024;
  if (keel_stream_query(s, KEEL_STREAM_Q_FD, &fd, sizeof fd) == 0)
    setsockopt(fd, SOL_SOCKET, which, &size, sizeof size);
}

/* Starts a writer on the client and returns once it is stuck: the server
 * reads nothing. */
static int stuff(tcase_t *tc, conn_t **k, stuffer_t *w, keel_scope_t **ws) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.no_tickets = true; /* unread, a ticket would make the client's close an RST */
  CHECK_RC(servers_ctx(tc, &so, &co));
  CHECK_RC(conn_raw(tc, k, false));
  fix_buffers((*k)->c_inner, SO_SNDBUF);
  fix_buffers((*k)->s_inner, SO_RCVBUF);
  keel_tls_opts_t o = {.server_name = "localhost"};
  CHECK_RC(conn_wrap_server(tc, *k));
  CHECK_RC(conn_wrap_client(tc, *k, &o));
  CHECK_RC(conn_handshake_ok(tc, *k));
  *w = (stuffer_t){.s = (*k)->cs};
  CHECK((*ws = case_spawn(tc, stuffer_task, w)) != NULL);
  for (uint64_t before = UINT64_MAX; before != w->written;) {
    before = w->written;
    CHECK_RC(keel_sleep_ms(keel_lab_active() ? 10 : 100));
  }
  return 0;
}

static void stuffer_cancel(stuffer_t *w, keel_scope_t *ws) {
  w->cancelled = true;
  keel_scope_cancel(ws, KEEL_CANCEL_USER);
}

/* The peer reads again inside the shield: the cancelled write finishes
 * its records and returns its count; the peer gets exactly the bytes
 * the writes reported, then close_notify. */
static int cancel_write_shield_case(tcase_t *tc) {
  conn_t *k;
  stuffer_t w;
  keel_scope_t *ws;
  CHECK_RC(stuff(tc, &k, &w, &ws));
  stuffer_cancel(&w, ws);
  int64_t t0 = keel_now_ns();
  static drain_t d;
  d = (drain_t){.s = k->ss, .delay_ms = 50};
  keel_scope_t *ds = case_spawn(tc, drain_task, &d);
  CHECK(ds != NULL);
  CHECK_RC(case_join(tc, ws));
  CHECK(w.cancelled_rc > 0);
  CHECK_EQ(w.last_rc, -ECANCELED);
  CHECK(w.returned_ns - t0 < KEEL_TLS_FLUSH_SHIELD_MS * KEEL_NS_PER_MS);
  if (keel_lab_active())
    CHECK(w.returned_ns - t0 >= 50 * KEEL_NS_PER_MS); /* it waited for the reader */
  CHECK_RC(tls_rc(k->cs, close_client(k), "close"));
  CHECK_RC(case_join(tc, ds));
  CHECK_EQ(d.end, 0);
  CHECK_EQ(d.got, w.written);
  CHECK(PEER_CLOSED(k->s));
  return 0;
}

/* The peer never reads: after the shield the writing side is poisoned
 * (-ENOTRECOVERABLE, with a reason), reading goes on, and what the peer
 * finally reads is a prefix of what was written, then the cut. */
static int cancel_write_poison_case(tcase_t *tc) {
  conn_t *k;
  stuffer_t w;
  keel_scope_t *ws;
  CHECK_RC(stuff(tc, &k, &w, &ws));
  stuffer_cancel(&w, ws);
  int64_t t0 = keel_now_ns();
  CHECK_RC(case_join(tc, ws));
  CHECK_EQ(w.cancelled_rc, -ENOTRECOVERABLE);
  int64_t shield = KEEL_TLS_FLUSH_SHIELD_MS * KEEL_NS_PER_MS;
  CHECK_BETWEEN(w.returned_ns - t0, shield, shield + kt_late_ns());
  CHECK_RC(check_reason(k->c, "half sent"));
  CHECK_EQ(keel_write(k->cs, "x", 1), -ENOTRECOVERABLE);
  CHECK_EQ(keel_stream_shutdown(k->cs, SHUT_WR), -ENOTRECOVERABLE);
  CHECK_RC(write_str(k->ss, "reads go on"));
  CHECK_RC(read_str(k->cs, "reads go on"));
  CHECK_RC(tls_rc(k->cs, close_client(k), "close"));
  static drain_t d;
  d = (drain_t){.s = k->ss};
  CHECK_RC(drain_task(&d));
  CHECK(d.got >= w.written); /* what the writes reported, and maybe more */
  CHECK(d.end == -EPROTO || d.end == 0);
  CHECK(!PEER_CLOSED(k->s));
  if (d.end == -EPROTO)
    CHECK_RC(check_reason(k->s, "truncated"));
  return 0;
}

typedef struct reader {
  keel_stream_t *s;
  bool started;
  ssize_t rc;
  char buf[64];
} reader_t;

static int reader_task(void *arg) {
  reader_t *r = arg;
  r->started = true;
  r->rc = keel_read(r->s, r->buf, sizeof r->buf);
  return 0;
}

/* Starts a reader and returns once it is parked. */
static keel_scope_t *start_reader(tcase_t *tc, reader_t *r, keel_stream_t *s) {
  *r = (reader_t){.s = s, .rc = 1};
  keel_scope_t *sc = case_spawn(tc, reader_task, r);
  while (sc && !r->started && keel_yield() == 0)
    ;
  if (sc)
    keel_sleep_ms(1);
  return sc;
}

/* A read cancelled with 8 bytes of a record received loses nothing; a
 * read whose deadline passes neither. */
static int cancel_read_case(tcase_t *tc) {
  conn_t *k;
  CHECK_RC(relayed_conn(tc, &k));
  relay_arm(k, S2C, 8, AT_STALL);
  static reader_t r;
  keel_scope_t *rs = start_reader(tc, &r, k->cs);
  CHECK(rs != NULL);
  CHECK_RC(write_str(k->ss, "hello, world"));
  while (k->dir[S2C].passed < k->dir[S2C].cut)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_sleep_ms(5));
  keel_scope_cancel(rs, KEEL_CANCEL_USER);
  CHECK_RC(case_join(tc, rs));
  CHECK_EQ(r.rc, -ECANCELED);
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 5 * KEEL_NS_PER_MS);
  ssize_t n = keel_read(k->cs, r.buf, sizeof r.buf);
  keel_task_set_deadline(prev);
  CHECK_EQ(n, -ETIMEDOUT);
  k->dir[S2C].cut = SIZE_MAX;
  CHECK_RC(read_str(k->cs, "hello, world"));
  return 0;
}

/* Closing the stream under a parked reader and a parked writer wakes both
 * with -EBADF; the stream is freed once they are out (ASan checks). */
static int close_parked_case(tcase_t *tc) {
  conn_t *k;
  stuffer_t w;
  keel_scope_t *ws;
  CHECK_RC(stuff(tc, &k, &w, &ws));
  static reader_t r;
  keel_scope_t *rs = start_reader(tc, &r, k->cs);
  CHECK(rs != NULL);
  CHECK_RC(tls_rc(k->cs, close_client(k), "close"));
  CHECK_RC(case_join(tc, rs));
  CHECK_RC(case_join(tc, ws));
  CHECK_EQ(r.rc, -EBADF);
  CHECK_EQ(w.last_rc, -EBADF);
  return 0;
}

/* One reader and one writer at a time (-EBUSY), full duplex meanwhile. */
static int busy_case(tcase_t *tc) {
  conn_t *k;
  stuffer_t w;
  keel_scope_t *ws;
  CHECK_RC(stuff(tc, &k, &w, &ws));
  CHECK_EQ(keel_write(k->cs, "x", 1), -EBUSY);
  static reader_t r;
  keel_scope_t *rs = start_reader(tc, &r, k->cs);
  CHECK(rs != NULL);
  CHECK_EQ(keel_read(k->cs, r.buf, sizeof r.buf), -EBUSY);
  CHECK_RC(write_str(k->ss, "to the parked reader"));
  CHECK_RC(case_join(tc, rs));
  CHECK_EQ(r.rc, strlen("to the parked reader"));
  CHECK(memcmp(r.buf, "to the parked reader", (size_t)r.rc) == 0);
  stuffer_cancel(&w, ws);
  static drain_t d;
  d = (drain_t){.s = k->ss};
  keel_scope_t *ds = case_spawn(tc, drain_task, &d);
  CHECK(ds != NULL);
  CHECK_RC(case_join(tc, ws));
  CHECK(w.cancelled_rc > 0);
  CHECK_RC(keel_stream_shutdown(k->cs, SHUT_WR));
  CHECK_RC(case_join(tc, ds));
  CHECK_EQ(d.end, 0);
  CHECK_EQ(d.got, w.written);
  return 0;
}

/* ---- Idle memory ------------------------------------------------------------------------- */

typedef struct waiter {
  keel_stream_t *s;
  bool started;
  int rc;
} waiter_t;

static int waiter_task(void *arg) {
  waiter_t *w = arg;
  w->started = true;
  w->rc = keel_stream_wait_readable(w->s);
  return 0;
}

static int check_idle(keel_tls_t *t) {
  struct keel_tls *in = (struct keel_tls *)t;
  CHECK(in->rbuf == NULL);
  CHECK(in->wbuf == NULL);
  return 0;
}

/* After an exchange, a task parked in keel_stream_wait_readable holds no
 * buffer of keel's (and has given OpenSSL's back); the bytes that wake it
 * are read whole. */
static int idle_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(echo_through(tc, k->cs, k->ss, 6));
  waiter_t wc = {.s = k->cs}, wsv = {.s = k->ss};
  keel_scope_t *s1 = case_spawn(tc, waiter_task, &wc), *s2 = case_spawn(tc, waiter_task, &wsv);
  CHECK(s1 && s2);
  CHECK_RC(keel_sleep_ms(5));
  CHECK(wc.started && wsv.started);
  CHECK_RC(check_idle(k->c));
  CHECK_RC(check_idle(k->s));
  CHECK_RC(write_str(k->ss, "wake up"));
  CHECK_RC(case_join(tc, s1));
  CHECK_EQ(wc.rc, 0);
  CHECK_RC(read_str(k->cs, "wake up"));
  CHECK_RC(check_idle(k->c));
  CHECK_RC(write_str(k->cs, "you too"));
  CHECK_RC(case_join(tc, s2));
  CHECK_EQ(wsv.rc, 0);
  CHECK_RC(read_str(k->ss, "you too"));
  CHECK_RC(check_idle(k->s));
  return 0;
}

/* ---- cmocka ------------------------------------------------------------------------------- */

TEST(cancel_write_shield, run(cancel_write_shield_case, M_ALL, 0))
TEST(cancel_write_poison, run(cancel_write_poison_case, M_ALL, 0))
TEST(cancel_read, run(cancel_read_case, M_ALL, KEEL_TLS_1_3))
TEST(close_parked, run(close_parked_case, M_ALL, 0))
TEST(one_reader_one_writer, run(busy_case, M_ALL, 0))
TEST(idle_memory, run(idle_case, M_ALL, KEEL_TLS_1_3); run(idle_case, M_PIPE, KEEL_TLS_1_2))

int main(void) {
  if (!tls_test_init())
    return KT_SKIP_EXIT;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cancel_write_shield),   cmocka_unit_test(test_cancel_write_poison),
      cmocka_unit_test(test_cancel_read),           cmocka_unit_test(test_close_parked),
      cmocka_unit_test(test_one_reader_one_writer), cmocka_unit_test(test_idle_memory),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
