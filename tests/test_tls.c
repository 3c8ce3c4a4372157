/* TLS streams: handshake and echo in TLS 1.3 and 1.2 and what both ends
 * agreed on, full duplex with verified bytes, a server certificate and key
 * from memory (Ed25519), SNI (wildcards too), ALPN, resumption and ticket
 * key rotation, and keel_tls_of through a buffered stream.
 *
 * The transports, the seeds and the certificates are tests/tls-test.h's;
 * without KEEL_TEST_CERTS the test is skipped. */
#define KT_GUARD_MS 240000
#include "tls-test.h"

/* ---- Cases: handshake, echo, info ----------------------------------------------------- */

static const char *const server_alpn[] = {"h2", "http/1.1", NULL};
static const char *const client_alpn[] = {"http/1.1", "h2", NULL};

/* What both ends agreed on. */
static int check_info(keel_tls_t *t, int version, const char *alpn, const char *sni) {
  keel_tls_info_t i;
  CHECK_RC(keel_tls_info(t, &i));
  CHECK_RC(check_str("version", i.version, version == KEEL_TLS_1_2 ? "TLSv1.2" : "TLSv1.3"));
  CHECK(i.cipher != NULL);
  if (version == KEEL_TLS_1_2)
    CHECK(strncmp(i.cipher, "ECDHE-ECDSA-", 12) == 0);
  else
    CHECK(strncmp(i.cipher, "TLS_", 4) == 0);
  CHECK_RC(check_str("alpn", i.alpn, alpn));
  CHECK_RC(check_str("server_name", i.server_name, sni));
  CHECK(!i.resumed && !i.peer_closed);
  CHECK_EQ(i.alert_received, -1);
  return 0;
}

/* The first read and write run the handshake; echo both ways; what was
 * agreed (arg: the client's max_version). */
static int echo_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.alpn = server_alpn;
  co.alpn = client_alpn;
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  keel_tls_info_t i;
  CHECK_RC(keel_tls_info(k->c, &i));
  CHECK(i.version == NULL && i.cipher == NULL); /* no handshake yet */
  CHECK_RC(echo_through(tc, k->cs, k->ss, 1));
  CHECK_RC(echo_through(tc, k->ss, k->cs, 2));
  CHECK_RC(check_info(k->c, tc->arg, "h2", "localhost"));
  CHECK_RC(check_info(k->s, tc->arg, "h2", "localhost"));
  CHECK_RC(check_subject(k->c, "CN=localhost"));
  CHECK(PEER_CERT(k->c));
  CHECK(!PEER_CERT(k->s)); /* none asked for */
  CHECK_EQ(keel_tls_peer_subject(k->s, (char[8]){0}, 8), -ENOENT);
  CHECK_EQ(strlen(keel_tls_reason(k->c)), 0);
  const char *transport = NULL;
  CHECK_RC(keel_stream_query(k->cs, KEEL_STREAM_Q_TRANSPORT, &transport, sizeof transport));
  CHECK_RC(check_str("transport", transport, tc->transport == T_TCP ? "tcp" : "lab-pipe"));
  return 0;
}

/* ---- Full duplex ------------------------------------------------------------------------- */

typedef struct flow {
  keel_stream_t *s;
  uint64_t total, done;
  unsigned salt;
  unsigned char *buf; /* the reader's */
} flow_t;

/* Writes the pattern in random pieces (write or a two-piece writev), then
 * shuts down writing: the peer's reader sees close_notify. */
static int flow_writer(void *arg) {
  flow_t *f = arg;
  while (f->done < f->total) {
    size_t n = 1 + (size_t)keel_random_below(PAT_SPAN);
    if (n > f->total - f->done)
      n = (size_t)(f->total - f->done);
    unsigned char *p = (unsigned char *)pat_at(f->done, f->salt);
    struct iovec iov[2] = {{p, n / 3}, {p + n / 3, n - n / 3}};
    ssize_t w = keel_random_below(2) ? keel_write(f->s, p, n) : keel_writev(f->s, iov, 2);
    CHECK_RC(w);
    CHECK(w > 0);
    f->done += (uint64_t)w;
  }
  CHECK_RC(keel_stream_shutdown(f->s, SHUT_WR));
  return 0;
}

/* Reads to the end in random sizes, checking every byte. */
static int flow_reader(void *arg) {
  flow_t *f = arg;
  for (;;) {
    ssize_t n = keel_read(f->s, f->buf, 1 + (size_t)keel_random_below(PAT_SPAN));
    CHECK_RC(n);
    if (n == 0)
      break;
    CHECK(f->done + (uint64_t)n <= f->total);
    if (memcmp(f->buf, pat_at(f->done, f->salt), (size_t)n) != 0)
      KT_FAIL("bytes %llu..%llu differ from what was written", (unsigned long long)f->done,
              (unsigned long long)f->done + (unsigned long long)n);
    f->done += (uint64_t)n;
  }
  CHECK_EQ(f->done, f->total);
  CHECK(PEER_CLOSED(keel_tls_of(f->s)));
  return 0;
}

static uint64_t duplex_bytes(int transport) {
  uint64_t mib = 1 << 20;
  if (keel_lab_active())
    return (transport == T_PIPE ? 4 : 2) * mib / (KT_SANITIZED ? 4 : 1);
  if (transport == T_TCP)
    return (KT_SANITIZED ? 16 : 100) * mib;
  return (transport == T_PIPE ? 8 : 2) * mib / (KT_SANITIZED ? 2 : 1);
}

/* On each end one task reads while another writes, both ways at once. */
static int duplex_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  uint64_t total = duplex_bytes(tc->transport);
  flow_t f[4] = {
      {.s = k->cs, .total = total, .salt = 10},
      {.s = k->ss, .total = total, .salt = 10},
      {.s = k->ss, .total = total, .salt = 11},
      {.s = k->cs, .total = total, .salt = 11},
  };
  static unsigned char bufs[2][PAT_SPAN];
  f[1].buf = bufs[0];
  f[3].buf = bufs[1];
  keel_scope_t *s[4];
  for (int i = 0; i < 4; i++) {
    s[i] = case_spawn(tc, i % 2 ? flow_reader : flow_writer, &f[i]);
    CHECK(s[i] != NULL);
  }
  for (int i = 0; i < 4; i++)
    CHECK_RC(case_join(tc, s[i]));
  CHECK_EQ(f[1].done, total);
  CHECK_EQ(f[3].done, total);
  return 0;
}

/* ---- SNI and ALPN ---------------------------------------------------------------------- */

typedef struct sni_try {
  const char *name;
  int c_rc;
  const char *subject; /* the certificate the server chose */
} sni_try_t;

/* One name: the verifying client's outcome; the certificate the server
 * chose, seen by a client that does not verify. */
static int sni_one(tcase_t *tc, const sni_try_t *try) {
  keel_tls_ctx_t *verifying = tc->cctx;
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, try->name, false));
  CHECK_RC(conn_handshake(tc, k));
  if (k->c_rc != try->c_rc)
    KT_FAIL("%s: %d (%s)", try->name, k->c_rc, keel_tls_reason(k->c));
  if (k->c_rc < 0) {
    CHECK_RC(check_reason(k->c, "hostname mismatch"));
    conn_close(k);
    tc->nconns = 0;
    tc->cctx = tc->ctxs[2]; /* the insecure one */
    CHECK_RC(conn_open(tc, &k, try->name, false));
    CHECK_RC(conn_handshake_ok(tc, k));
    tc->cctx = verifying;
  }
  CHECK_RC(check_subject(k->c, try->subject));
  keel_tls_info_t info;
  CHECK_RC(keel_tls_info(k->s, &info));
  CHECK(info.server_name && strcasecmp(info.server_name, try->name) == 0);
  return 0;
}

/* The server picks the certificate by the SNI name (exact, wildcard of one
 * label), the default one otherwise, which then fails the client's check. */
static int sni_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  keel_tls_cert_t more[] = {cert_of(C_OTHER), cert_of(C_WRONGHOST)};
  so.sni_certs = more;
  so.sni_count = 2;
  keel_tls_ctx_opts_t ico = {.insecure_no_verify = true};
  keel_tls_ctx_t *insecure;
  CHECK_RC(servers_ctx(tc, &so, &co));
  CHECK_RC(ctx_open(tc, &ico, &insecure)); /* tc->ctxs[2] */
  static const sni_try_t tries[] = {
      {"localhost", 0, "CN=localhost"},
      {"other.test", 0, "CN=other.test"},
      {"OTHER.test", 0, "CN=other.test"},
      {"x.wild.test", 0, "CN=other.test"},
      {"wrong.test", 0, "CN=wrong.test"},
      {"a.b.wild.test", -EKEYREJECTED, "CN=localhost"},
      {"nowhere.test", -EKEYREJECTED, "CN=localhost"},
  };
  for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
    CHECK_RC(sni_one(tc, &tries[i]));
    conn_close(&tc->conns[0]);
    tc->nconns = 0;
  }
  return 0;
}

static int alpn_try(tcase_t *tc, const char *const *alpn, const char *want) {
  conn_t *k;
  CHECK_RC(conn_raw(tc, &k, false));
  keel_tls_opts_t o = {.server_name = "localhost", .alpn = alpn};
  CHECK_RC(conn_wrap_server(tc, k));
  CHECK_RC(conn_wrap_client(tc, k, &o));
  CHECK_RC(conn_handshake_ok(tc, k));
  keel_tls_info_t ci, si;
  CHECK_RC(keel_tls_info(k->c, &ci));
  CHECK_RC(keel_tls_info(k->s, &si));
  CHECK_RC(check_str("client alpn", ci.alpn, want));
  CHECK_RC(check_str("server alpn", si.alpn, want));
  conn_close(k);
  tc->nconns = 0;
  return 0;
}

/* The server takes the first of its own protocols the client offers; a
 * client offering none speaks without; nothing in common fails both. */
static int alpn_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.alpn = server_alpn;
  co.alpn = client_alpn;
  CHECK_RC(servers_ctx(tc, &so, &co));
  CHECK_RC(alpn_try(tc, NULL, "h2"));
  static const char *const only_http1[] = {"http/1.1", NULL};
  CHECK_RC(alpn_try(tc, only_http1, "http/1.1"));
  keel_tls_ctx_opts_t plain = client_opts();
  CHECK_RC(ctx_open(tc, &plain, &tc->cctx));
  CHECK_RC(alpn_try(tc, NULL, NULL));
  static const char *const foreign[] = {"x-other", "spdy/3", NULL};
  conn_t *k;
  CHECK_RC(conn_raw(tc, &k, false));
  keel_tls_opts_t o = {.server_name = "localhost", .alpn = foreign};
  CHECK_RC(conn_wrap_server(tc, k));
  CHECK_RC(conn_wrap_client(tc, k, &o));
  CHECK_RC(conn_handshake(tc, k));
  CHECK_EQ(k->c_rc, -ENOPROTOOPT);
  CHECK_EQ(k->s_rc, -ENOPROTOOPT);
  CHECK_RC(check_reason(k->c, "alert received: no application protocol"));
  CHECK_EQ(keel_write(k->cs, "x", 1), -ENOPROTOOPT); /* it sticks */
  return 0;
}

/* ---- Resumption ------------------------------------------------------------------------ */

/* A connection with one exchange (a TLS 1.3 ticket comes after the
 * handshake: the client takes it in its read); whether it resumed, on
 * both ends, goes to *resumed (-1: the ends disagree). */
static int resume_try(tcase_t *tc, keel_tls_ctx_t *cctx, const char *key, int *resumed) {
  tc->cctx = cctx;
  conn_t *k;
  CHECK_RC(conn_raw(tc, &k, false));
  keel_tls_opts_t o = {.server_name = "localhost", .session_key = key};
  CHECK_RC(conn_wrap_server(tc, k));
  CHECK_RC(conn_wrap_client(tc, k, &o));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(write_str(k->cs, "ping"));
  CHECK_RC(read_str(k->ss, "ping"));
  CHECK_RC(write_str(k->ss, "pong"));
  CHECK_RC(read_str(k->cs, "pong"));
  bool c = RESUMED(k->c), s = RESUMED(k->s);
  *resumed = c == s ? c : -1;
  conn_close(k);
  tc->nconns = 0;
  return 0;
}

/* The client context's cache resumes the next connection to the same
 * origin (arg: the TLS version), not one to another session key, and a
 * context without a cache never resumes. */
static int resume_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts(), nco = client_opts();
  co.max_version = nco.max_version = tc->arg;
  nco.no_session_cache = true;
  keel_tls_ctx_t *cache, *none;
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  CHECK_RC(ctx_open(tc, &co, &cache));
  CHECK_RC(ctx_open(tc, &nco, &none));
  int r;
  CHECK_RC(resume_try(tc, cache, NULL, &r));
  CHECK_EQ(r, 0);
  CHECK_RC(resume_try(tc, cache, NULL, &r));
  CHECK_EQ(r, 1);
  CHECK_RC(resume_try(tc, cache, "localhost:443", &r));
  CHECK_EQ(r, 0);
  CHECK_RC(resume_try(tc, cache, "localhost:443", &r));
  CHECK_EQ(r, 1);
  CHECK_RC(resume_try(tc, none, NULL, &r));
  CHECK_EQ(r, 0);
  CHECK_RC(resume_try(tc, none, NULL, &r));
  CHECK_EQ(r, 0);
  return 0;
}

#define TICKET_LIFETIME_S 40

/* Lab mode, virtual time: a ticket resumes within its lifetime and no
 * longer once its key is gone (lifetime + a quarter after it was made). */
static int rotation_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.ticket_lifetime_s = TICKET_LIFETIME_S;
  co.max_version = tc->arg;
  keel_tls_ctx_t *within, *after;
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  CHECK_RC(ctx_open(tc, &co, &within));
  CHECK_RC(ctx_open(tc, &co, &after));
  int r;
  CHECK_RC(resume_try(tc, within, NULL, &r));
  CHECK_EQ(r, 0);
  CHECK_RC(keel_sleep_ms(TICKET_LIFETIME_S * 900));
  CHECK_RC(resume_try(tc, within, NULL, &r));
  CHECK_EQ(r, 1);
  CHECK_RC(resume_try(tc, after, NULL, &r)); /* a ticket under a key made just now */
  CHECK_EQ(r, 0);
  CHECK_RC(keel_sleep_ms(TICKET_LIFETIME_S * 1250 + 1000));
  CHECK_RC(resume_try(tc, after, NULL, &r));
  CHECK_EQ(r, 0);
  CHECK_RC(resume_try(tc, after, NULL, &r)); /* the fresh ticket does */
  CHECK_EQ(r, 1);
  return 0;
}

/* ---- Layers ------------------------------------------------------------------------------ */

/* keel_tls_of finds the TLS layer under a buffered stream (and none over
 * a plain stream); lines read through both. */
static int tls_of_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK(keel_tls_of(k->cs) == k->c);
  keel_bufstream_t *b;
  CHECK_RC(keel_bufstream_open(k->cs, NULL, &b));
  k->cs = keel_bufstream_stream(b);
  CHECK(keel_tls_of(k->cs) == k->c);
  CHECK(keel_tls_of(NULL) == NULL);
  keel_stream_t *a, *z;
  CHECK_RC(keel_lab_pipe(NULL, &a, &z));
  CHECK(keel_tls_of(a) == NULL);
  keel_close(a);
  keel_close(z);
  CHECK_RC(write_str(k->ss, "line one\r\nline two\r\n"));
  const void *line;
  CHECK_EQ(keel_bufstream_read_until(b, "\r\n", 2, 100, &line), 10);
  CHECK(memcmp(line, "line one\r\n", 10) == 0);
  keel_bufstream_consume(b, 10);
  CHECK_EQ(keel_bufstream_read_until(b, "\r\n", 2, 100, &line), 10);
  keel_bufstream_consume(b, 10);
  CHECK(PEER_CERT(keel_tls_of(k->cs)));
  return 0;
}

/* ---- Certificates from memory --------------------------------------------------------- */

/* A server certificate and key from memory; an Ed25519 certificate. */
static int server_pem_case(tcase_t *tc) {
  char *cert = slurp(cert_path[C_ED25519][0]), *key = slurp(cert_path[C_ED25519][1]);
  keel_tls_ctx_opts_t so = {.server = true, .cert = {.cert_pem = cert, .key_pem = key}};
  keel_tls_ctx_opts_t co = client_opts();
  int rc = cert && key ? servers_ctx(tc, &so, &co) : -ENOMEM;
  free(cert);
  free(key);
  CHECK_RC(rc);
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(check_subject(k->c, "CN=localhost"));
  CHECK_RC(echo_through(tc, k->cs, k->ss, 7));
  return 0;
}

static void run_rotation(void) {
  case_spec_t s13 = {rotation_case, M_PIPE, KEEL_TLS_1_3, false};
  case_spec_t s12 = {rotation_case, M_PIPE, KEEL_TLS_1_2, false};
  kt_run_where(KT_ON_LAB, run_case, &s13, 1, 1, LAB_SEEDS);
  kt_run_where(KT_ON_LAB, run_case, &s12, 1, 1, 4);
}

/* ---- cmocka ------------------------------------------------------------------------------- */

TEST(echo_tls13, run(echo_case, M_ALL, KEEL_TLS_1_3))
TEST(echo_tls12, run(echo_case, M_ALL, KEEL_TLS_1_2))
TEST(server_pem_ed25519, run(server_pem_case, M_PIPE | M_TCP, 0))
TEST(sni, run_handshakes(sni_case, M_ALL, 0))
TEST(alpn, run_handshakes(alpn_case, M_ALL, 0))
TEST(resume_tls13, run(resume_case, M_ALL, KEEL_TLS_1_3))
TEST(resume_tls12, run(resume_case, M_ALL, KEEL_TLS_1_2))
TEST(ticket_rotation, run_rotation())
TEST(tls_of, run(tls_of_case, M_PIPE | M_TCP, 0))
TEST(full_duplex_tls13, run(duplex_case, M_ALL, KEEL_TLS_1_3))
TEST(full_duplex_tls12, run(duplex_case, M_PIPE | M_TCP, KEEL_TLS_1_2))

int main(void) {
  if (!tls_test_init())
    return KT_SKIP_EXIT;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_echo_tls13),
      cmocka_unit_test(test_echo_tls12),
      cmocka_unit_test(test_server_pem_ed25519),
      cmocka_unit_test(test_sni),
      cmocka_unit_test(test_alpn),
      cmocka_unit_test(test_resume_tls13),
      cmocka_unit_test(test_resume_tls12),
      cmocka_unit_test(test_ticket_rotation),
      cmocka_unit_test(test_tls_of),
      cmocka_unit_test(test_full_duplex_tls13),
      cmocka_unit_test(test_full_duplex_tls12),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
