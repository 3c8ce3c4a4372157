/* HTTPS: keel's HTTP server with a TLS context against keel's HTTP client
 * over https:// — requests on a verified connection and its reuse, the
 * handler's view of the TLS layer (version, ALPN, SNI), session resumption
 * on a new pooled connection, mutual TLS, verification failures with
 * their reason, bodies both ways, and connections that stall or send
 * garbage instead of a ClientHello (cut off; the server goes on). On
 * io_uring, epoll and the lab network (many seeds). Certificates come
 * from the directory in KEEL_TEST_CERTS (tests/tls/gen-certs.sh). */
#define KT_GUARD_MS 60000
#include <sys/stat.h>

#include "http-test.h"

static char certs[512];

static const char *cert_path(const char *name) {
  static char paths[8][600];
  static int next;
  char *p = paths[next++ % 8];
  snprintf(p, sizeof paths[0], "%s/%s", certs, name);
  return p;
}

/* ---- The server's side ------------------------------------------------------- */

/* Says what the handler sees of the TLS layer. */
static int whoami(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  keel_tls_t *t = keel_http_tls(req);
  if (!t)
    return keel_http_send(res, "plain", 5);
  keel_tls_info_t in;
  keel_tls_info(t, &in);
  char subject[200] = "-";
  (void)keel_tls_peer_subject(t, subject, sizeof subject);
  char body[512];
  int n =
      snprintf(body, sizeof body, "%s alpn=%s sni=%s resumed=%d peer=%s", in.version,
               in.alpn ? in.alpn : "-", in.server_name ? in.server_name : "-", in.resumed, subject);
  return keel_http_send(res, body, (size_t)n);
}

static int echo(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  const void *body;
  size_t len;
  int rc = keel_http_body(req, &body, &len);
  if (rc < 0)
    return rc;
  return keel_http_send(res, body, len);
}

static int route(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  if (strcmp(keel_http_path(req), "/echo") == 0)
    return echo(req, res, ctx);
  return whoami(req, res, ctx);
}

typedef struct server_cfg {
  const char *cert;
  keel_tls_client_auth_t client_auth;
  int64_t handshake_ms;
} server_cfg_t;

static int start(kt_server_t *srv, keel_tls_ctx_t **ctx, const server_cfg_t *sc) {
  static const char *const alpn[] = {"http/1.1", NULL};
  char cert[64], key[64];
  snprintf(cert, sizeof cert, "%s.pem", sc->cert ? sc->cert : "server");
  snprintf(key, sizeof key, "%s.key", sc->cert ? sc->cert : "server");
  keel_tls_ctx_opts_t to = {
      .server = true,
      .cert = {.cert_file = cert_path(cert), .key_file = cert_path(key)},
      .alpn = alpn,
      .client_auth = sc->client_auth,
      .ca_file = sc->client_auth ? cert_path("ca.pem") : NULL,
      .handshake_timeout_ms = sc->handshake_ms,
  };
  char why[KEEL_TLS_REASON_MAX];
  int rc = keel_tls_ctx_open(&to, ctx, why, sizeof why);
  if (rc < 0)
    KT_FAIL("server context: %s (%s)", why, keel_strerror(rc));
  keel_http_server_opts_t so = {.handler = route, .tls = *ctx};
  return kt_server_start(srv, &so);
}

static int stop(kt_server_t *srv, keel_tls_ctx_t *ctx) {
  int rc = kt_server_stop(srv);
  keel_tls_ctx_close(ctx);
  return rc;
}

/* ---- The client's side ------------------------------------------------------- */

typedef struct client_cfg {
  bool with_cert;
  bool no_reuse;
  const char *name; /* the URL's host; default localhost */
} client_cfg_t;

typedef struct client {
  keel_tls_ctx_t *ctx;
  keel_http_client_t *http;
  char resolve[128];
  const char *resolve_list[2];
  char url[160];
  char why[KEEL_TLS_REASON_MAX];
} client_t;

static int client_open(client_t *c, const kt_server_t *srv, const client_cfg_t *cc) {
  static const char *const alpn[] = {"http/1.1", NULL};
  keel_tls_ctx_opts_t to = {.ca_file = cert_path("ca.pem"), .alpn = alpn};
  if (cc->with_cert) {
    to.cert.cert_file = cert_path("client.pem");
    to.cert.key_file = cert_path("client.key");
  }
  CHECK_RC(keel_tls_ctx_open(&to, &c->ctx, NULL, 0));
  const char *port = strrchr(srv->addr, ':') + 1;
  const char *name = cc->name ? cc->name : "localhost";
  snprintf(c->resolve, sizeof c->resolve, "%s:%s:127.0.0.1", name, port);
  c->resolve_list[0] = c->resolve;
  c->resolve_list[1] = NULL;
  snprintf(c->url, sizeof c->url, "https://%s:%s", name, port);
  keel_http_client_opts_t ho = {
      .tls = c->ctx, .resolve = c->resolve_list, .idle_timeout_ms = cc->no_reuse ? -1 : 0};
  CHECK_RC(keel_http_client_open(&ho, &c->http));
  return 0;
}

static void client_close(client_t *c) {
  keel_http_client_close(c->http);
  keel_tls_ctx_close(c->ctx);
}

/* GET path: the status (or a negative errno) and the body into out. */
static int get(client_t *c, const char *path, char *out, size_t cap, bool *reused) {
  char url[256];
  snprintf(url, sizeof url, "%s%s", c->url, path);
  keel_http_call_opts_t req = {.url = url, .why = c->why, .why_len = sizeof c->why};
  c->why[0] = '\0';
  keel_http_call_t *call;
  int rc = keel_http_fetch(c->http, &req, &call);
  if (rc < 0)
    return rc;
  const void *body;
  size_t len;
  rc = keel_http_call_body(call, &body, &len);
  if (rc == 0) {
    rc = keel_http_call_status(call);
    snprintf(out, cap, "%.*s", (int)len, (const char *)body);
  }
  if (reused)
    *reused = keel_http_call_reused(call);
  keel_http_call_close(call);
  return rc;
}

/* ---- Cases -------------------------------------------------------------------- */

static int basic_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_tls_ctx_t *sctx;
  CHECK_RC(start(&srv, &sctx, &(server_cfg_t){0}));
  client_t c;
  CHECK_RC(client_open(&c, &srv, &(client_cfg_t){0}));
  char body[512];
  bool reused = true;
  CHECK_EQ(get(&c, "/", body, sizeof body, &reused), 200);
  CHECK(!reused);
  if (!strstr(body, "TLSv1.3 alpn=http/1.1 sni=localhost resumed=0 peer=-"))
    KT_FAIL("the handler saw: %s", body);
  CHECK_EQ(get(&c, "/", body, sizeof body, &reused), 200);
  CHECK(reused);
  client_close(&c);
  return stop(&srv, sctx);
}

/* A new connection to the same origin resumes the pooled session. */
static int resume_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_tls_ctx_t *sctx;
  CHECK_RC(start(&srv, &sctx, &(server_cfg_t){0}));
  client_t c;
  CHECK_RC(client_open(&c, &srv, &(client_cfg_t){.no_reuse = true}));
  char body[512];
  bool reused = true;
  CHECK_EQ(get(&c, "/", body, sizeof body, &reused), 200);
  CHECK(strstr(body, "resumed=0") != NULL);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ(get(&c, "/", body, sizeof body, &reused), 200);
    CHECK(!reused);
    if (!strstr(body, "resumed=1"))
      KT_FAIL("connection %d did not resume: %s", i + 2, body);
  }
  client_close(&c);
  return stop(&srv, sctx);
}

static int mtls_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_tls_ctx_t *sctx;
  CHECK_RC(start(&srv, &sctx, &(server_cfg_t){.client_auth = KEEL_TLS_CLIENT_CERT_REQUIRE}));
  client_t c;
  CHECK_RC(client_open(&c, &srv, &(client_cfg_t){.with_cert = true}));
  char body[512];
  CHECK_EQ(get(&c, "/", body, sizeof body, NULL), 200);
  if (!strstr(body, "CN=keel-test-client"))
    KT_FAIL("the handler saw: %s", body);
  client_close(&c);
  /* Without a certificate: the server refuses (TLS 1.3: after the
   * client's side of the handshake, so the request fails). */
  CHECK_RC(client_open(&c, &srv, &(client_cfg_t){0}));
  int rc = get(&c, "/", body, sizeof body, NULL);
  if (rc != -EKEYREJECTED && rc != -ECONNRESET && rc != -EPIPE)
    KT_FAIL("a client without a certificate got %d (%s)", rc, keel_strerror(rc));
  client_close(&c);
  return stop(&srv, sctx);
}

static int verify_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_tls_ctx_t *sctx;
  CHECK_RC(start(&srv, &sctx, &(server_cfg_t){0}));
  client_t c;
  CHECK_RC(client_open(&c, &srv, &(client_cfg_t){.name = "wrong.test"}));
  char body[64];
  CHECK_EQ(get(&c, "/", body, sizeof body, NULL), -EKEYREJECTED);
  if (!strstr(c.why, "hostname mismatch"))
    KT_FAIL("why: '%s'", c.why);
  client_close(&c);
  CHECK_RC(stop(&srv, sctx));
  /* A certificate no trusted CA signed. */
  CHECK_RC(start(&srv, &sctx, &(server_cfg_t){.cert = "selfsigned"}));
  CHECK_RC(client_open(&c, &srv, &(client_cfg_t){0}));
  CHECK_EQ(get(&c, "/", body, sizeof body, NULL), -EKEYREJECTED);
  if (!strstr(c.why, "self-signed") && !strstr(c.why, "issuer"))
    KT_FAIL("why: '%s'", c.why);
  client_close(&c);
  return stop(&srv, sctx);
}

/* Bodies both ways, larger than a record and than the buffers. */
static int bodies_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_tls_ctx_t *sctx;
  CHECK_RC(start(&srv, &sctx, &(server_cfg_t){0}));
  client_t c;
  CHECK_RC(client_open(&c, &srv, &(client_cfg_t){0}));
  size_t len = 300 * 1000;
  char *data = malloc(len);
  CHECK(data != NULL);
  for (size_t i = 0; i < len; i++)
    data[i] = (char)(i * 31 + i / 7);
  char url[256];
  snprintf(url, sizeof url, "%s/echo", c.url);
  keel_http_call_opts_t req = {.method = "POST", .url = url, .body = data, .body_len = len};
  keel_http_call_t *call;
  int rc = keel_http_fetch(c.http, &req, &call);
  const void *body = NULL;
  size_t got = 0;
  if (rc == 0)
    rc = keel_http_call_body(call, &body, &got);
  bool same = rc == 0 && got == len && memcmp(body, data, len) == 0;
  if (rc == 0)
    keel_http_call_close(call);
  free(data);
  CHECK_RC(rc);
  CHECK(same);
  client_close(&c);
  return stop(&srv, sctx);
}

/* A raw TCP client: reads until the server closes; the bytes it got. */
static ssize_t raw_until_closed(keel_tcp_t *tcp) {
  char buf[512];
  ssize_t total = 0, n;
  while ((n = keel_read(keel_tcp_stream(tcp), buf, sizeof buf)) > 0)
    total += n;
  return n == 0 || n == -ECONNRESET ? total : n;
}

/* A client that stalls in the handshake is cut off at the server's
 * handshake limit; one that sends garbage is closed at once; the server
 * serves others meanwhile. */
static int stall_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_tls_ctx_t *sctx;
  CHECK_RC(start(&srv, &sctx, &(server_cfg_t){.handshake_ms = 300}));
  keel_tcp_t *stalled, *garbage;
  CHECK_RC(keel_tcp_connect(srv.addr, &stalled));
  CHECK_RC(keel_tcp_connect(srv.addr, &garbage));
  /* Half a ClientHello's record header, then nothing. */
  CHECK_RC(keel_write_all(keel_tcp_stream(stalled), "\x16\x03\x01", 3, NULL));
  static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK_RC(keel_write_all(keel_tcp_stream(garbage), junk, sizeof junk - 1, NULL));
  int64_t t0 = keel_now_ns();
  CHECK_RC(raw_until_closed(garbage));
  client_t c;
  CHECK_RC(client_open(&c, &srv, &(client_cfg_t){0}));
  char body[512];
  CHECK_EQ(get(&c, "/", body, sizeof body, NULL), 200);
  CHECK_RC(raw_until_closed(stalled));
  int64_t waited = keel_now_ns() - t0;
  CHECK_BETWEEN(waited, 250 * KEEL_NS_PER_MS, 300 * KEEL_NS_PER_MS + kt_late_ns());
  keel_tcp_close(stalled);
  keel_tcp_close(garbage);
  client_close(&c);
  return stop(&srv, sctx);
}

#define CASE(name)                        \
  static void test_##name(void **state) { \
    (void)state;                          \
    kt_run_body(name##_case, NULL, 1);    \
  }
CASE(basic)
CASE(resume)
CASE(mtls)
CASE(verify)
CASE(bodies)
CASE(stall)

int main(void) {
  const char *dir = getenv("KEEL_TEST_CERTS");
  struct stat st;
  if (!dir || snprintf(certs, sizeof certs, "%s", dir) >= (int)sizeof certs ||
      stat(cert_path("client.key"), &st) != 0) {
    printf("# skipped: KEEL_TEST_CERTS does not name the test certificates "
           "(tests/tls/gen-certs.sh)\n");
    return 77;
  }
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic),  cmocka_unit_test(test_resume), cmocka_unit_test(test_mtls),
      cmocka_unit_test(test_verify), cmocka_unit_test(test_bodies), cmocka_unit_test(test_stall),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
