/* TLS verification and configuration: each verification failure with its
 * errno and reason on the client and the alert on the server, mutual TLS
 * (required and optional), no version in common, and the errors of
 * keel_tls_ctx_open and keel_tls_open.
 *
 * The transports, the seeds and the certificates are tests/tls-test.h's;
 * without KEEL_TEST_CERTS the test is skipped. */
#define KT_GUARD_MS 240000
#include "tls-test.h"

#include "tls-internal.h" /* OpenSSL's alert codes */

/* ---- Verification -------------------------------------------------------------------- */

typedef struct verify_try {
  int server_cert;
  const char *name;
  int ca; /* the client's trust anchor */
  int c_rc;
  const char *c_reason;
  int s_rc; /* the alert the server receives */
  const char *s_reason;
  int s_alert;
} verify_try_t;

static const verify_try_t verify_tries[] = {
    {C_EXPIRED, "localhost", C_CA, -EKEYEXPIRED, "certificate has expired", -EKEYREJECTED,
     "alert received: certificate expired", SSL_AD_CERTIFICATE_EXPIRED},
    {C_WRONGHOST, "localhost", C_CA, -EKEYREJECTED, "hostname mismatch", -EKEYREJECTED,
     "alert received: bad certificate", SSL_AD_BAD_CERTIFICATE},
    {C_SELF, "localhost", C_CA, -EKEYREJECTED, "self-signed certificate", -EKEYREJECTED,
     "alert received: unknown CA", SSL_AD_UNKNOWN_CA},
    {C_SERVER, "localhost", C_SELF, -EKEYREJECTED, "unable to get local issuer certificate",
     -EKEYREJECTED, "alert received: unknown CA", SSL_AD_UNKNOWN_CA},
    {C_SERVER, "127.0.0.2", C_CA, -EKEYREJECTED, "IP address mismatch", -EKEYREJECTED,
     "alert received: bad certificate", SSL_AD_BAD_CERTIFICATE},
    {C_WRONGHOST, "127.0.0.1", C_CA, -EKEYREJECTED, "IP address mismatch", -EKEYREJECTED,
     "alert received: bad certificate", SSL_AD_BAD_CERTIFICATE},
    {C_SERVER, "127.0.0.1", C_CA, 0, "", 0, "", -1},
    {C_SERVER, "::1", C_CA, 0, "", 0, "", -1},
};

static int verify_one(tcase_t *tc, const verify_try_t *v, bool insecure) {
  keel_tls_ctx_opts_t so = server_opts(v->server_cert), co = client_opts();
  co.ca_file = cert_path[v->ca][0];
  co.insecure_no_verify = insecure;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, v->name, false));
  CHECK_RC(conn_handshake(tc, k));
  int c_want = insecure ? 0 : v->c_rc, s_want = insecure ? 0 : v->s_rc;
  if (k->c_rc != c_want || k->s_rc != s_want)
    KT_FAIL("%s %s%s: client %d (%s), server %d (%s)", cert_name[v->server_cert], v->name,
            insecure ? " (insecure)" : "", k->c_rc, keel_tls_reason(k->c), k->s_rc,
            keel_tls_reason(k->s));
  if (!insecure) {
    CHECK_RC(check_reason(k->c, v->c_reason));
    CHECK_RC(check_reason(k->s, v->s_reason));
    keel_tls_info_t info;
    CHECK_RC(keel_tls_info(k->s, &info));
    CHECK_EQ(info.alert_received, v->s_alert);
  }
  if (s_want) {
    char buf[8];
    CHECK_EQ(keel_read(k->ss, buf, sizeof buf), s_want); /* the failure sticks */
  }
  return 0;
}

/* Each failure with its errno and reason on the client, and the alert it
 * sent on the server; insecure_no_verify accepts them all. */
static int verify_case(tcase_t *tc) {
  for (size_t i = 0; i < sizeof verify_tries / sizeof verify_tries[0]; i++) {
    for (int insecure = 0; insecure < 2; insecure++) {
      CHECK_RC(verify_one(tc, &verify_tries[i], insecure));
      case_clear(tc);
    }
  }
  return 0;
}

/* ---- Mutual TLS ------------------------------------------------------------------------ */

/* Client: fails at its handshake or (TLS 1.3: the server checks our
 * certificate after our Finished) at its first read. */
static int client_fails(conn_t *k, int want, const char *reason) {
  int rc = k->c_rc;
  if (rc == 0) {
    char buf[8];
    rc = (int)keel_read(k->cs, buf, sizeof buf);
  }
  if (rc != want)
    KT_FAIL("client: %d (%s), expected %d", rc, keel_tls_reason(k->c), want);
  CHECK_RC(check_reason(k->c, reason));
  return 0;
}

static int mtls_refused(tcase_t *tc, const keel_tls_ctx_opts_t *co, const char *s_reason,
                        const char *c_reason) {
  CHECK_RC(ctx_open(tc, co, &tc->cctx));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake(tc, k));
  if (k->s_rc != -EKEYREJECTED)
    KT_FAIL("server: %d (%s)", k->s_rc, keel_tls_reason(k->s));
  CHECK_RC(check_reason(k->s, s_reason));
  CHECK_RC(client_fails(k, -EKEYREJECTED, c_reason));
  return 0;
}

/* The client's certificate and key from memory, and its CA too. */
static int mtls_accepted(tcase_t *tc) {
  char *cert = slurp(cert_path[C_CLIENT][0]), *key = slurp(cert_path[C_CLIENT][1]);
  char *ca = slurp(cert_path[C_CA][0]);
  keel_tls_ctx_opts_t co = {.cert = {.cert_pem = cert, .key_pem = key}, .ca_pem = ca};
  int rc = cert && key && ca ? ctx_open(tc, &co, &tc->cctx) : -ENOMEM;
  free(cert);
  free(key);
  free(ca);
  CHECK_RC(rc);
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(check_subject(k->s, "CN=keel-test-client"));
  CHECK(PEER_CERT(k->s));
  CHECK_RC(echo_through(tc, k->cs, k->ss, 3));
  return 0;
}

/* client_auth REQUIRE: no certificate, or one from another CA, fails on
 * both sides; ours passes and the server sees who we are. */
static int mtls_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.client_auth = KEEL_TLS_CLIENT_CERT_REQUIRE;
  so.ca_file = cert_path[C_CA][0];
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  CHECK_RC(mtls_refused(tc, &co, "peer did not return a certificate",
                        "alert received: certificate required"));
  case_clear(tc);
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  co.cert = cert_of(C_SELF);
  CHECK_RC(mtls_refused(tc, &co, "self-signed certificate", "alert received: unknown CA"));
  case_clear(tc);
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  CHECK_RC(mtls_accepted(tc));
  return 0;
}

/* client_auth OPTIONAL: a client without a certificate gets in. */
static int mtls_optional_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.client_auth = KEEL_TLS_CLIENT_CERT_OPTIONAL;
  so.ca_file = cert_path[C_CA][0];
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK(!PEER_CERT(k->s));
  CHECK_EQ(keel_tls_peer_subject(k->s, (char[64]){0}, 64), -ENOENT);
  CHECK_RC(echo_through(tc, k->ss, k->cs, 4));
  return 0;
}

/* ---- Versions -------------------------------------------------------------------------- */

/* No version in common, either way round: -EPROTONOSUPPORT on both. */
static int version_case(tcase_t *tc) {
  static const int ranges[2][4] = {
      /* server min, max; client min, max */
      {0, KEEL_TLS_1_2, KEEL_TLS_1_3, 0},
      {KEEL_TLS_1_3, 0, 0, KEEL_TLS_1_2},
  };
  for (int i = 0; i < 2; i++) {
    keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
    so.min_version = ranges[i][0];
    so.max_version = ranges[i][1];
    co.min_version = ranges[i][2];
    co.max_version = ranges[i][3];
    CHECK_RC(servers_ctx(tc, &so, &co));
    conn_t *k;
    CHECK_RC(conn_open(tc, &k, "localhost", false));
    CHECK_RC(conn_handshake(tc, k));
    if (k->c_rc != -EPROTONOSUPPORT || k->s_rc != -EPROTONOSUPPORT)
      KT_FAIL("range %d: client %d (%s), server %d (%s)", i, k->c_rc, keel_tls_reason(k->c),
              k->s_rc, keel_tls_reason(k->s));
    CHECK(*keel_tls_reason(k->c) && *keel_tls_reason(k->s));
    case_clear(tc);
  }
  return 0;
}

/* ---- Contexts ----------------------------------------------------------------------------- */

static int ctx_refused(const keel_tls_ctx_opts_t *o, int want) {
  keel_tls_ctx_t *ctx = NULL;
  char reason[KEEL_TLS_REASON_MAX];
  int rc = keel_tls_ctx_open(o, &ctx, reason, sizeof reason);
  if (rc != want)
    KT_FAIL("keel_tls_ctx_open: %d (%s), expected %d", rc, reason, want);
  CHECK(ctx == NULL && reason[0] != '\0');
  return 0;
}

/* keel_tls_ctx_open's own errors, each with a reason. */
static int ctx_errors_case(tcase_t *tc) {
  (void)tc;
  keel_tls_ctx_opts_t o = server_opts(C_SERVER);
  o.cert.key_file = "/nonexistent/key.pem";
  CHECK_RC(ctx_refused(&o, -ENOENT));
  o = server_opts(C_SERVER);
  o.cert.key_file = cert_path[C_OTHER][1];
  CHECK_RC(ctx_refused(&o, -EINVAL)); /* the key of another certificate */
  o = server_opts(C_SERVER);
  o.cert = (keel_tls_cert_t){.cert_pem = "not PEM", .key_file = cert_path[C_SERVER][1]};
  CHECK_RC(ctx_refused(&o, -EPROTO));
  o = server_opts(C_SERVER);
  o.cert = (keel_tls_cert_t){0};
  CHECK_RC(ctx_refused(&o, -EINVAL));
  o = server_opts(C_SERVER);
  o.client_auth = KEEL_TLS_CLIENT_CERT_REQUIRE; /* and no CA */
  CHECK_RC(ctx_refused(&o, -EINVAL));
  o = client_opts();
  o.max_version = 0x0302; /* TLS 1.1 */
  CHECK_RC(ctx_refused(&o, -EINVAL));
  o.max_version = 0;
  o.groups = "no-such-group";
  CHECK_RC(ctx_refused(&o, -EINVAL));
  o = client_opts();
  o.ca_file = "/nonexistent/ca.pem";
  CHECK_RC(ctx_refused(&o, -ENOENT));
  return 0;
}

/* A verifying client needs a server name; an insecure one does not. */
static int open_args_case(tcase_t *tc) {
  keel_tls_ctx_opts_t co = client_opts(), ico = {.insecure_no_verify = true};
  keel_tls_ctx_t *insecure;
  CHECK_RC(ctx_open(tc, &co, &tc->cctx));
  CHECK_RC(ctx_open(tc, &ico, &insecure));
  keel_stream_t *a, *b;
  CHECK_RC(keel_lab_pipe(NULL, &a, &b));
  keel_tls_t *t = (keel_tls_t *)1;
  int rc = keel_tls_open(tc->cctx, a, NULL, &t);
  keel_tls_t *t2 = NULL;
  int rc2 = keel_tls_open(insecure, a, NULL, &t2);
  if (rc2 == 0)
    keel_close(keel_tls_stream(t2));
  else
    keel_close(a);
  keel_close(b);
  CHECK_EQ(rc, -EINVAL);
  CHECK(t == NULL);
  CHECK_RC(rc2);
  CHECK_EQ(keel_tls_handshake(NULL), -EINVAL);
  CHECK_EQ(keel_tls_info(NULL, &(keel_tls_info_t){0}), -EINVAL);
  CHECK(keel_tls_stream(NULL) == NULL);
  return 0;
}

/* ---- cmocka ------------------------------------------------------------------------------- */

TEST(ctx_errors, run(ctx_errors_case, M_PIPE, 0))
TEST(open_args, run(open_args_case, M_PIPE, 0))
TEST(verify, run_handshakes(verify_case, M_PIPE | M_TCP, 0))
TEST(mtls, run_handshakes(mtls_case, M_ALL, 0))
TEST(mtls_optional, run_handshakes(mtls_optional_case, M_PIPE | M_TCP, 0))
TEST(version_mismatch, run_handshakes(version_case, M_ALL, 0))

int main(void) {
  if (!tls_test_init())
    return KT_SKIP_EXIT;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ctx_errors),    cmocka_unit_test(test_open_args),
      cmocka_unit_test(test_verify),        cmocka_unit_test(test_mtls),
      cmocka_unit_test(test_mtls_optional), cmocka_unit_test(test_version_mismatch),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
