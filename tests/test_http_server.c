/* The HTTP/1.1 server over a raw client, on io_uring, epoll and the lab
 * network (16 seeds): keep-alive, pipelining, HTTP/1.0, HEAD, chunked
 * bodies both ways, 100-continue, the Date field, every limit and
 * timeout, requests and connections per limit, unread bodies, handler
 * errors, the request deadline and the router. */
#define KT_GUARD_MS 60000
#include "http-test.h"

/* ---- Handlers ------------------------------------------------------------------ */

static int hello(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  keel_http_add_header(res, "Content-Type", "text/plain");
  return keel_http_send(res, "Hello, World!", 13);
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

static long query_num(const char *q, const char *key) {
  const char *p = strstr(q, key);
  return p ? strtol(p + strlen(key) + 1, NULL, 10) : 0;
}

static int stream(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  long chunks = query_num(keel_http_query(req), "chunks"),
       size = query_num(keel_http_query(req), "size");
  char buf[256];
  for (long i = 0; i < chunks; i++) {
    memset(buf, 'a' + (int)i, (size_t)size);
    ssize_t n = keel_http_write(res, buf, (size_t)size);
    if (n < 0)
      return (int)n;
  }
  keel_http_add_trailer(res, "X-Chunks", "done");
  return keel_http_finish(res);
}

/* Answers without reading the body. */
static int unread(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  return keel_http_send(res, "ok", 2);
}

static int fail_eio(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)res, (void)ctx;
  return -EIO;
}

static int silent(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)res, (void)ctx;
  return 0;
}

/* Streams a chunk, then fails: the client must see the body cut short. */
static int stream_fail(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  keel_http_write(res, "part", 4);
  return -EIO;
}

static int sleepy(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  int rc = keel_sleep_ms(query_num(keel_http_query(req), "ms"));
  if (rc < 0)
    return rc;
  return keel_http_send(res, "slept", 5);
}

/* Echoes the request line's parts and a field, to check the parsing. */
static int inspect(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  char body[512];
  const char *x = keel_http_header(req, "x-TEST");
  int n = snprintf(body, sizeof body, "%s|%s|%s|%s|%d|%zu|%s", keel_http_method(req),
                   keel_http_target(req), keel_http_path(req), keel_http_query(req),
                   keel_http_version(req), keel_http_header_count(req), x ? x : "-");
  return keel_http_send(res, body, (size_t)n);
}

static keel_http_router_t *router;

static void routes(void) {
  if (router)
    return;
  assert_int_equal(keel_http_router_open(&router), 0);
  assert_int_equal(keel_http_route(router, "GET", "/", 0, hello, NULL), 0);
  assert_int_equal(keel_http_route(router, "POST", "/echo", 0, echo, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/stream", 0, stream, NULL), 0);
  assert_int_equal(keel_http_route(router, "POST", "/unread", 0, unread, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/eio", 0, fail_eio, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/silent", 0, silent, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/stream-fail", 0, stream_fail, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/sleep", 0, sleepy, NULL), 0);
  assert_int_equal(
      keel_http_route(router, NULL, "/inspect/", KEEL_HTTP_ROUTE_PREFIX, inspect, NULL), 0);
  assert_int_equal(keel_http_route(router, NULL, "/inspect/", KEEL_HTTP_ROUTE_PREFIX, hello, NULL),
                   -EEXIST);
  assert_int_equal(keel_http_route(router, "GET", "nope", 0, hello, NULL), -EINVAL);
}

static keel_http_server_opts_t base_opts(void) {
  keel_http_server_opts_t o = {.handler = keel_http_router_handler, .ctx = router};
  return o;
}

/* ---- Cases ---------------------------------------------------------------------- */

static bool date_ok(const char *d) {
  /* "Sun, 06 Dec 2026 05:14:52 GMT" */
  return d && strlen(d) == 29 && d[3] == ',' && strcmp(d + 25, " GMT") == 0;
}

static int keepalive_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  CHECK_RC(kt_connect(&srv, &c));
  for (int i = 0; i < 3; i++) {
    kt_resp_t r;
    KT_EXCHANGE(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
    CHECK(strcmp(r.body, "Hello, World!") == 0);
    CHECK(kt_field(&r, "Connection") == NULL);
    CHECK(date_ok(kt_field(&r, "Date")));
    CHECK(strcmp(kt_field(&r, "Content-Type"), "text/plain") == 0);
    kt_resp_free(&r);
  }
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int pipeline_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  CHECK_RC(kt_connect(&srv, &c));
  CHECK_RC(kt_send(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                       "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde"
                       "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /inspect/a?b=c HTTP/1.1\r\nHost: t\r\nX-Test:  v w \r\n\r\n"));
  kt_resp_t r;
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 200);
  CHECK(strcmp(r.body, "Hello, World!") == 0);
  kt_resp_free(&r);
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 200);
  CHECK(strcmp(r.body, "abcde") == 0);
  kt_resp_free(&r);
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 404);
  kt_resp_free(&r);
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 200);
  CHECK(strcmp(r.body, "GET|/inspect/a?b=c|/inspect/a|b=c|11|2|v w") == 0);
  kt_resp_free(&r);
  /* A batch long enough that its arena is recycled in the middle (the
   * bodies are copied into it), then a request with a deadline: it must
   * count from when the batch arrived, not from the clock's origin. */
  size_t body = 4000, n = 24, len = 0, cap = n * (body + 128) + 128;
  char *batch = malloc(cap);
  CHECK(batch != NULL);
  for (size_t i = 0; i < n; i++) {
    len += (size_t)snprintf(batch + len, cap - len,
                            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n", body);
    memset(batch + len, 'a' + (int)(i % 26), body);
    len += body;
  }
  len += (size_t)snprintf(batch + len, cap - len, "GET /sleep?ms=5 HTTP/1.1\r\nHost: t\r\n\r\n");
  int wrc = keel_write_all(c.s, batch, len, NULL);
  free(batch);
  CHECK_RC(wrc);
  for (size_t i = 0; i <= n; i++) {
    CHECK_RC(kt_response(&c, &r, false));
    CHECK_EQ(r.status, 200);
    CHECK_EQ(r.body_len, i < n ? body : 5);
    kt_resp_free(&r);
  }
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int http10_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  KT_EXCHANGE(&c, "GET / HTTP/1.0\r\n\r\n", &r, 200);
  CHECK(strcmp(kt_field(&r, "Connection"), "close") == 0);
  kt_resp_free(&r);
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
  CHECK_RC(kt_connect(&srv, &c));
  for (int i = 0; i < 2; i++) {
    KT_EXCHANGE(&c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r, 200);
    CHECK(strcmp(kt_field(&r, "Connection"), "keep-alive") == 0);
    kt_resp_free(&r);
  }
  /* A streamed body without a length, to HTTP/1.0: ends with the connection. */
  CHECK_RC(kt_send(&c, "GET /stream?chunks=2&size=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
  CHECK_RC(kt_response(&c, &r, true));
  CHECK_EQ(r.status, 200);
  CHECK(kt_field(&r, "Transfer-Encoding") == NULL);
  CHECK(strcmp(kt_field(&r, "Connection"), "close") == 0);
  kt_resp_free(&r);
  char body[16];
  CHECK_RC(keel_read_exact(c.s, body, 6, NULL));
  CHECK(memcmp(body, "aaabbb", 6) == 0);
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int head_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  CHECK_RC(kt_send(&c, "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK_RC(kt_response(&c, &r, true));
  CHECK_EQ(r.status, 200);
  CHECK(strcmp(kt_field(&r, "Content-Length"), "13") == 0);
  kt_resp_free(&r);
  /* No body bytes came: the next response starts right there. */
  KT_EXCHANGE(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  kt_resp_free(&r);
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int chunked_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  KT_EXCHANGE(&c,
              "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n",
              &r, 200);
  CHECK(strcmp(r.body, "hello 0123456789") == 0);
  kt_resp_free(&r);
  KT_EXCHANGE(&c, "GET /stream?chunks=3&size=5 HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  CHECK(r.chunked);
  CHECK(strcmp(r.body, "aaaaabbbbbccccc") == 0);
  kt_resp_free(&r);
  KT_EXCHANGE(&c, "GET /stream?chunks=0&size=5 HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  CHECK(r.chunked);
  CHECK_EQ(r.body_len, 0);
  kt_resp_free(&r);
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int continue_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  CHECK_RC(kt_send(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                       "Content-Length: 4\r\n\r\n"));
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 100);
  kt_resp_free(&r);
  KT_EXCHANGE(&c, "body", &r, 200);
  CHECK(strcmp(r.body, "body") == 0);
  kt_resp_free(&r);
  /* Answered without reading the body the client holds back for a 100:
   * the connection closes rather than wait for a body that may not come. */
  KT_EXCHANGE(
      &c, "POST /unread HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
      &r, 200);
  CHECK(strcmp(kt_field(&r, "Connection"), "close") == 0);
  kt_resp_free(&r);
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
  CHECK_RC(kt_connect(&srv, &c));
  /* An unknown expectation: 417 and the end. */
  KT_EXCHANGE(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: fast\r\nContent-Length: 1\r\n\r\nx",
              &r, 417);
  CHECK(strcmp(kt_field(&r, "Connection"), "close") == 0);
  kt_resp_free(&r);
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

/* One request on a fresh connection; the server must answer want and
 * close. */
static int refused(kt_server_t *srv, const char *req, int want) {
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(srv, &c));
  KT_EXCHANGE(&c, req, &r, want);
  CHECK(strcmp(kt_field(&r, "Connection"), "close") == 0);
  kt_resp_free(&r);
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
  return 0;
}

static int limits_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  o.max_url = 64;
  o.max_header_bytes = 512;
  o.max_headers = 5;
  o.max_body = 100;
  CHECK_RC(kt_server_start(&srv, &o));
  char req[2048];
  snprintf(req, sizeof req, "GET /%0100d HTTP/1.1\r\nHost: t\r\n\r\n", 0);
  CHECK_RC(refused(&srv, req, 414));
  snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: %0600d\r\n\r\n", 0);
  CHECK_RC(refused(&srv, req, 431));
  CHECK_RC(refused(
      &srv, "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", 431));
  CHECK_RC(refused(&srv, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n", 413));
  /* A chunked body found over the limit while it is read. */
  CHECK_RC(refused(&srv,
                   "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
                   "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
                   "0\r\n\r\n",
                   413));
  /* At the limits: accepted. */
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n%0100d",
           7);
  KT_EXCHANGE(&c, req, &r, 200);
  CHECK_EQ(r.body_len, 100);
  kt_resp_free(&r);
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

typedef struct slow_reader {
  kt_conn_t *c;
  kt_resp_t r;
  int rc;
  int64_t at;
  bool done;
} slow_reader_t;

static int slow_reader(void *arg) {
  slow_reader_t *sr = arg;
  sr->rc = kt_response(sr->c, &sr->r, false);
  sr->at = keel_now_ns();
  sr->done = true;
  return 0;
}

/* Timeouts: keep-alive idle, the header block (a client trickling bytes),
 * a stalled body. Lab mode checks the times exactly. */
static int timeouts_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  o.keepalive_timeout_ms = 200;
  o.header_timeout_ms = 300;
  o.body_timeout_ms = 200;
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  KT_EXCHANGE(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  kt_resp_free(&r);
  int64_t t0 = keel_now_ns();
  CHECK(kt_closed(&c)); /* idle: closed after keepalive_timeout_ms */
  CHECK_BETWEEN(keel_now_ns() - t0, 150 * KEEL_NS_PER_MS, 200 * KEEL_NS_PER_MS + kt_late_ns());
  kt_disconnect(&c);

  /* Slowloris: one byte every 50 ms; the whole head must come in 300 ms.
   * A reader task notes when the 408 comes while the writer trickles. */
  CHECK_RC(kt_connect(&srv, &c));
  const char *slow = "GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
  slow_reader_t sr = {.c = &c};
  t0 = keel_now_ns();
  keel_scope_t *rs = kt_spawn_in_scope(slow_reader, &sr, KEEL_WORKER_CURRENT);
  CHECK(rs != NULL);
  size_t sent = 0;
  for (; slow[sent] && !sr.done && keel_now_ns() - t0 < 1000 * KEEL_NS_PER_MS; sent++) {
    if (keel_write(c.s, slow + sent, 1) != 1)
      break;
    CHECK_RC(keel_sleep_ms(50));
  }
  keel_scope_join(rs);
  keel_scope_close(rs);
  CHECK(slow[sent] != '\0'); /* it was cut off before the end */
  CHECK_RC(sr.rc);
  CHECK_EQ(sr.r.status, 408);
  CHECK_BETWEEN(sr.at - t0, 250 * KEEL_NS_PER_MS, 350 * KEEL_NS_PER_MS + kt_late_ns());
  kt_resp_free(&sr.r);
  kt_disconnect(&c);

  /* A body that stops coming: the handler's read times out, 408. */
  CHECK_RC(kt_connect(&srv, &c));
  CHECK_RC(kt_send(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab"));
  t0 = keel_now_ns();
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 408);
  CHECK_BETWEEN(keel_now_ns() - t0, 150 * KEEL_NS_PER_MS, 200 * KEEL_NS_PER_MS + kt_late_ns());
  kt_resp_free(&r);
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int max_requests_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  o.max_requests = 3;
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  for (int i = 1; i <= 3; i++) {
    KT_EXCHANGE(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
    const char *conn = kt_field(&r, "Connection");
    CHECK(i < 3 ? conn == NULL : conn != NULL && strcmp(conn, "close") == 0);
    kt_resp_free(&r);
  }
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int max_conns_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  o.max_conns = 2;
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c[3];
  kt_resp_t r;
  for (int i = 0; i < 2; i++) {
    CHECK_RC(kt_connect(&srv, &c[i]));
    KT_EXCHANGE(&c[i], "GET / HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
    kt_resp_free(&r);
  }
  /* Over the limit: accepted and closed at once, without a response. */
  CHECK_RC(kt_connect(&srv, &c[2]));
  (void)kt_send(&c[2], "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  CHECK(kt_closed(&c[2]));
  kt_disconnect(&c[2]);
  /* One closes: room for another. */
  kt_disconnect(&c[0]);
  int ok = 0;
  for (int attempt = 0; attempt < 200 && !ok; attempt++) {
    CHECK_RC(kt_connect(&srv, &c[2]));
    if (kt_send(&c[2], "GET / HTTP/1.1\r\nHost: t\r\n\r\n") == 0 &&
        kt_response(&c[2], &r, false) == 0) {
      ok = r.status == 200;
      kt_resp_free(&r);
    }
    kt_disconnect(&c[2]);
    if (!ok)
      CHECK_RC(keel_sleep_ms(5));
  }
  CHECK(ok);
  kt_disconnect(&c[1]);
  return kt_server_stop(&srv);
}

static int unread_body_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  /* A small body the handler did not read is drained: the connection goes on. */
  KT_EXCHANGE(&c,
              "POST /unread HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n0123456789abcdefghij",
              &r, 200);
  CHECK(kt_field(&r, "Connection") == NULL);
  kt_resp_free(&r);
  KT_EXCHANGE(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  kt_resp_free(&r);
  /* A large one is not: the response says close. */
  CHECK_RC(kt_send(&c, "POST /unread HTTP/1.1\r\nHost: t\r\nContent-Length: 900000\r\n\r\n"));
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 200);
  CHECK(strcmp(kt_field(&r, "Connection"), "close") == 0);
  kt_resp_free(&r);
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int handler_errors_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  o.request_timeout_ms = 100;
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(refused(&srv, "GET /eio HTTP/1.1\r\nHost: t\r\n\r\n", 500));
  CHECK_RC(refused(&srv, "GET /silent HTTP/1.1\r\nHost: t\r\n\r\n", 500));
  /* Past the request deadline: the handler is cancelled, 503. */
  int64_t t0 = keel_now_ns();
  CHECK_RC(refused(&srv, "GET /sleep?ms=10000 HTTP/1.1\r\nHost: t\r\n\r\n", 503));
  CHECK_BETWEEN(keel_now_ns() - t0, 90 * KEEL_NS_PER_MS, 100 * KEEL_NS_PER_MS + kt_late_ns());
  /* A streamed body cut short: no last chunk, the connection ends. */
  CHECK_RC(kt_connect(&srv, &c));
  CHECK_RC(kt_send(&c, "GET /stream-fail HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK(kt_response(&c, &r, false) < 0);
  kt_resp_free(&r);
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

static int router_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = base_opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  KT_EXCHANGE(&c, "DELETE /echo HTTP/1.1\r\nHost: t\r\n\r\n", &r, 405);
  CHECK(strcmp(kt_field(&r, "Allow"), "POST") == 0);
  kt_resp_free(&r);
  KT_EXCHANGE(&c, "PUT /inspect/x/y HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  CHECK(strncmp(r.body, "PUT|/inspect/x/y|", 17) == 0);
  kt_resp_free(&r);
  KT_EXCHANGE(&c, "GET /inspect HTTP/1.1\r\nHost: t\r\n\r\n", &r, 404);
  kt_resp_free(&r);
  /* Absolute-form targets route by their path. */
  KT_EXCHANGE(&c, "GET http://t/inspect/q?z=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  CHECK(strcmp(r.body, "GET|http://t/inspect/q?z=1|/inspect/q|z=1|11|1|-") == 0);
  kt_resp_free(&r);
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

/* ---- cmocka ---------------------------------------------------------------------- */

#define CASE(name)                        \
  static void test_##name(void **state) { \
    (void)state;                          \
    routes();                             \
    kt_run_body(name##_case, NULL, 1);    \
  }
CASE(keepalive)
CASE(pipeline)
CASE(http10)
CASE(head)
CASE(chunked)
CASE(continue)
CASE(limits)
CASE(timeouts)
CASE(max_requests)
CASE(max_conns)
CASE(unread_body)
CASE(handler_errors)
CASE(router)

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keepalive),    cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_http10),       cmocka_unit_test(test_head),
      cmocka_unit_test(test_chunked),      cmocka_unit_test(test_continue),
      cmocka_unit_test(test_limits),       cmocka_unit_test(test_timeouts),
      cmocka_unit_test(test_max_requests), cmocka_unit_test(test_max_conns),
      cmocka_unit_test(test_unread_body),  cmocka_unit_test(test_handler_errors),
      cmocka_unit_test(test_router),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  keel_http_router_close(router);
  return kt_exit_status(failed);
}
