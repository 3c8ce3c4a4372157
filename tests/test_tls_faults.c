/* TLS streams against hostile peers and faulty transports: a client that
 * stalls mid-handshake and one that sends garbage (another connection is
 * served meanwhile), truncation against an unclean end and a half-close, a
 * reset inside a record, and messages echoed over transports that reset
 * now and then.
 *
 * The transports, the relay, the seeds and the certificates are
 * tests/tls-test.h's; without KEEL_TEST_CERTS the test is skipped. */
#define KT_GUARD_MS 240000
#include "tls-test.h"

/* ---- Hostile clients ------------------------------------------------------------------- */

static int hs_client_task(void *arg) {
  conn_t *k = arg;
  k->c_rc = keel_tls_handshake(k->c);
  return 0;
}

/* A second connection, served in full while the first one is stuck. */
static int serve_other(tcase_t *tc, conn_t **out) {
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(echo_through(tc, k->cs, k->ss, 5));
  *out = k;
  return 0;
}

/* A client whose ClientHello stops after 100 bytes is cut off at the
 * server's handshake limit, exactly in lab mode; another connection is
 * served meanwhile. */
static int stall_case(tcase_t *tc) {
  int64_t limit_ms = keel_lab_active() ? 2000 : 1000;
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.handshake_timeout_ms = limit_ms;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *a, *b;
  CHECK_RC(conn_raw(tc, &a, true));
  relay_arm(a, C2S, 100, AT_STALL);
  int64_t t0 = keel_now_ns();
  CHECK_RC(conn_wrap_server(tc, a));
  keel_tls_opts_t o = {.server_name = "localhost"};
  CHECK_RC(conn_wrap_client(tc, a, &o));
  keel_scope_t *sa = case_spawn(tc, hs_server_task, a), *ca = case_spawn(tc, hs_client_task, a);
  CHECK(sa && ca);
  CHECK_RC(serve_other(tc, &b));
  CHECK(b->s_done_ns < t0 + limit_ms * KEEL_NS_PER_MS);
  CHECK_RC(case_join(tc, sa));
  CHECK_EQ(a->s_rc, -ETIMEDOUT);
  CHECK_RC(check_reason(a->s, "handshake timeout"));
  CHECK_BETWEEN(a->s_done_ns - t0, limit_ms * KEEL_NS_PER_MS,
                limit_ms * KEEL_NS_PER_MS + kt_late_ns());
  CHECK_EQ(a->dir[C2S].passed, 100);
  /* The server lets go: the client hears the end. */
  keel_close(a->ss);
  a->ss = NULL;
  CHECK_RC(case_join(tc, ca));
  CHECK_EQ(a->c_rc, -ECONNRESET);
  return 0;
}

/* Text instead of a ClientHello: that connection fails (-EPROTO, for
 * every later call too), another one is served meanwhile. */
static int garbage_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  CHECK_RC(servers_ctx(tc, &so, &co));
  static const struct {
    const char *bytes;
    size_t len;
  } junk[] = {
      {"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", 35},
      {"\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9}, /* a ClientHello of nothing */
      {"\x17\x03\x03\x00\x10sixteen bytes...", 21},
  };
  for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
    conn_t *a, *b;
    CHECK_RC(conn_raw(tc, &a, false));
    CHECK_RC(conn_wrap_server(tc, a));
    keel_scope_t *sa = case_spawn(tc, hs_server_task, a);
    CHECK(sa != NULL);
    CHECK_RC(keel_write_all(a->c_inner, junk[i].bytes, junk[i].len, NULL));
    CHECK_RC(serve_other(tc, &b));
    CHECK_RC(case_join(tc, sa));
    if (a->s_rc != -EPROTO)
      KT_FAIL("junk %zu: %d (%s)", i, a->s_rc, keel_tls_reason(a->s));
    CHECK(*keel_tls_reason(a->s));
    CHECK_EQ(keel_write(a->ss, "x", 1), -EPROTO);
    CHECK_EQ(keel_read(a->ss, (char[4]){0}, 4), -EPROTO);
    case_clear(tc);
    CHECK_RC(servers_ctx(tc, &so, &co));
  }
  return 0;
}

/* ---- The end of the stream ---------------------------------------------------------------- */

/* The inner stream ends 8 bytes into a record: truncation. */
static int truncated_case(tcase_t *tc) {
  conn_t *k;
  CHECK_RC(relayed_conn(tc, &k));
  relay_arm(k, S2C, 8, AT_EOF);
  CHECK_RC(write_str(k->ss, "hello, world"));
  char buf[64];
  ssize_t n = keel_read(k->cs, buf, sizeof buf);
  CHECK_EQ(n, -EPROTO);
  CHECK_RC(check_reason(k->c, "truncated"));
  CHECK(!PEER_CLOSED(k->c));
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), -EPROTO);
  return 0;
}

/* A reset 8 bytes into a record: the read fails with the reset. */
static int reset_record_case(tcase_t *tc) {
  conn_t *k;
  CHECK_RC(relayed_conn(tc, &k));
  relay_arm(k, S2C, 8, AT_RESET);
  CHECK_RC(write_str(k->ss, "hello, world"));
  char buf[64];
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), -ECONNRESET);
  return 0;
}

/* The inner stream ends between records, without close_notify: an
 * ordinary end, which peer_closed tells from a clean close. */
static int unclean_end_case(tcase_t *tc) {
  conn_t *k;
  CHECK_RC(relayed_conn(tc, &k));
  CHECK_RC(write_str(k->ss, "hello"));
  CHECK_RC(read_str(k->cs, "hello"));
  relay_cut_now(k, AT_EOF);
  char buf[64];
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), 0);
  CHECK(!PEER_CLOSED(k->c));
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), 0);
  return 0;
}

/* shutdown(SHUT_WR) is close_notify: the peer reads 0 (peer_closed) and
 * can still write back, and then close the other way. */
static int half_close_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(write_str(k->ss, "last words"));
  CHECK_RC(keel_stream_shutdown(k->ss, SHUT_WR));
  CHECK_RC(read_str(k->cs, "last words"));
  char buf[64];
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), 0);
  CHECK(PEER_CLOSED(k->c));
  CHECK(!PEER_CLOSED(k->s));
  CHECK_RC(write_str(k->cs, "reply after the peer's close"));
  CHECK_RC(read_str(k->ss, "reply after the peer's close"));
  CHECK_RC(keel_stream_shutdown(k->cs, SHUT_WR));
  CHECK_EQ(keel_read(k->ss, buf, sizeof buf), 0);
  CHECK(PEER_CLOSED(k->s));
  return 0;
}

/* ---- Faults --------------------------------------------------------------------------------- */

/* The echo's far end, tolerant: the transport resets now and then. */
static int fault_echo_task(void *arg) {
  echo_t *e = arg;
  char buf[8192];
  for (;;) {
    ssize_t n = keel_read(e->s, buf, sizeof buf);
    if (n == -ECONNRESET || n == -EPIPE || n == 0)
      return 0;
    CHECK_RC(n);
    ssize_t w = keel_write_all(e->s, buf, (size_t)n, NULL);
    if (w == -ECONNRESET || w == -EPIPE)
      return 0;
    CHECK_RC(w);
  }
}

static bool reset_errno(ssize_t rc) { return rc == -ECONNRESET || rc == -EPIPE; }

static int fault_runs, fault_cut; /* runs, and those a reset cut short */

/* Messages echoed over a transport that resets: each either comes back
 * whole and right, or the stream fails with the reset, never with bytes
 * that are not the peer's. */
static int faults_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  echo_t e = {k->ss, 0};
  fault_runs++;
  keel_scope_t *es = case_spawn(tc, fault_echo_task, &e);
  CHECK(es != NULL);
  /* One message at a time, small enough for the pipes: the echo's reply
   * must fit while the client is still writing. */
  static unsigned char back[900];
  uint64_t off = 0;
  for (int i = 0; i < 60; i++) {
    size_t n = 1 + (size_t)keel_random_below(sizeof back);
    int rc = keel_write_all(k->cs, pat_at(off, 30), n, NULL);
    if (rc == 0)
      rc = keel_read_exact(k->cs, back, n, NULL);
    if (rc < 0) {
      if (!reset_errno(rc))
        KT_FAIL("message %d: %d (%s) %s", i, rc, keel_strerror(rc), keel_tls_reason(k->c));
      fault_cut++;
      break;
    }
    CHECK(memcmp(back, pat_at(off, 30), n) == 0);
    off += n;
  }
  close_client(k);
  CHECK_RC(case_join(tc, es));
  return 0;
}

static void run_faults(void) {
  run_spec((case_spec_t){faults_case, M_FAULTY | M_TCP, 0, true}, LAB_SEEDS);
  fprintf(stderr, "# %d of %d connections were cut by a reset\n", fault_cut, fault_runs);
}

/* ---- cmocka ------------------------------------------------------------------------------- */

TEST(stall, run(stall_case, M_ALL, 0))
TEST(garbage, run(garbage_case, M_ALL, 0))
TEST(truncated, run(truncated_case, M_ALL, KEEL_TLS_1_3); run(truncated_case, M_PIPE, KEEL_TLS_1_2))
TEST(reset_in_record, run(reset_record_case, M_ALL, KEEL_TLS_1_3))
TEST(unclean_end, run(unclean_end_case, M_ALL, KEEL_TLS_1_3);
     run(unclean_end_case, M_PIPE, KEEL_TLS_1_2))
TEST(half_close, run(half_close_case, M_ALL, KEEL_TLS_1_3))
TEST(faults, run_faults())

int main(void) {
  if (!tls_test_init())
    return KT_SKIP_EXIT;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_stall),       cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_truncated),   cmocka_unit_test(test_reset_in_record),
      cmocka_unit_test(test_unclean_end), cmocka_unit_test(test_half_close),
      cmocka_unit_test(test_faults),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
