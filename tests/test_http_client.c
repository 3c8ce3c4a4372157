/* The HTTP client against keel's own server (keep-alive reuse, the
 * per-origin limit with callers waiting, chunked and Content-Length
 * bodies, streamed request bodies, HEAD, 1xx skipped, Connection: close,
 * the idle timeout and Keep-Alive: timeout=, deadlines, a client closed
 * under a call, two workers) and against raw servers in the test: a table
 * of malformed responses, and servers that close idle connections under
 * the client (the stale-connection retry: once, idempotent requests only),
 * in lab mode over many seeds. Runs on io_uring, epoll and the lab
 * network. */
#define KT_GUARD_MS 60000
#include "http-test.h"

/* ---- keel's server ---------------------------------------------------------- */

typedef struct load {
  int live, max; /* handlers in /sleep now, and the most at once */
} load_t;

static load_t load;

static long query_num(const char *q, const char *key) {
  const char *p = strstr(q, key);
  return p ? strtol(p + strlen(key) + 1, NULL, 10) : 0;
}

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
  return keel_http_finish(res);
}

static int sleepy(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  if (++load.live > load.max)
    load.max = load.live;
  int rc = keel_sleep_ms(query_num(keel_http_query(req), "ms"));
  load.live--;
  if (rc < 0)
    return rc;
  return keel_http_send(res, "slept", 5);
}

static int closing(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  keel_http_close_after(res);
  return keel_http_send(res, "bye", 3);
}

static int keepalive(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  char v[32];
  snprintf(v, sizeof v, "timeout=%ld, max=100", query_num(keel_http_query(req), "t"));
  keel_http_add_header(res, "Keep-Alive", v);
  return keel_http_send(res, "ka", 2);
}

static int big(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  size_t size = (size_t)query_num(keel_http_query(req), "size");
  char *body = keel_arena_alloc(keel_http_arena(req), size + 1);
  if (!body)
    return -ENOMEM;
  for (size_t i = 0; i < size; i++)
    body[i] = (char)('a' + i % 26);
  return keel_http_send(res, body, size);
}

static keel_http_router_t *router;

static void routes(void) {
  if (router)
    return;
  assert_int_equal(keel_http_router_open(&router), 0);
  assert_int_equal(keel_http_route(router, "GET", "/", 0, hello, NULL), 0);
  assert_int_equal(keel_http_route(router, "POST", "/echo", 0, echo, NULL), 0);
  assert_int_equal(keel_http_route(router, "PUT", "/echo", 0, echo, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/stream", 0, stream, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/sleep", 0, sleepy, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/close", 0, closing, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/ka", 0, keepalive, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/big", 0, big, NULL), 0);
}

static int start(kt_server_t *srv) {
  keel_http_server_opts_t o = {.handler = keel_http_router_handler, .ctx = router};
  return kt_server_start(srv, &o);
}

static const char *url_of(const kt_server_t *srv, const char *path, char *buf, size_t len) {
  snprintf(buf, len, "http://%s%s", srv->addr, path);
  return buf;
}

/* GETs (or sends req) and checks the status and, if want_body, the body;
 * reused (0, 1, -1: either) is checked too. */
static int fetch_check(keel_http_client_t *cl, const keel_http_call_opts_t *req, int status,
                       const char *want_body, int reused) {
  keel_http_call_t *call;
  CHECK_RC(keel_http_fetch(cl, req, &call));
  const void *body;
  size_t len;
  CHECK_RC(keel_http_call_body(call, &body, &len));
  CHECK_EQ(keel_http_call_status(call), status);
  if (want_body) {
    if (len != strlen(want_body) || memcmp(body, want_body, len) != 0)
      KT_FAIL("body \"%.*s\", wanted \"%s\"", (int)len, (const char *)body, want_body);
  }
  if (reused >= 0)
    CHECK_EQ(keel_http_call_reused(call), reused);
  keel_http_call_close(call);
  return 0;
}

static int get_check(keel_http_client_t *cl, const char *url, int status, const char *body,
                     int reused) {
  keel_http_call_opts_t req = {.url = url};
  return fetch_check(cl, &req, status, body, reused);
}

/* ---- Cases against keel's server ---------------------------------------------- */

typedef struct parts {
  const char *const *p;
  int i;
} parts_t;

static ssize_t next_part(void *ctx, void *buf, size_t len) {
  parts_t *s = ctx;
  if (!s->p[s->i])
    return 0;
  size_t n = strlen(s->p[s->i]);
  CHECK(n <= len);
  memcpy(buf, s->p[s->i++], n);
  return (ssize_t)n;
}

static int keepalive_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(NULL, &cl));
  char url[128];
  url_of(&srv, "/", url, sizeof url);
  for (int i = 0; i < 3; i++)
    CHECK_RC(get_check(cl, url, 200, "Hello, World!", i > 0));
  /* The runtime's default client keeps its own connections. */
  for (int i = 0; i < 2; i++)
    CHECK_RC(get_check(NULL, url, 200, "Hello, World!", i > 0));
  /* A Content-Length body read in pieces, and a chunked one. */
  keel_http_call_t *call;
  keel_http_call_opts_t req = {.url = url};
  CHECK_RC(keel_http_call_open(cl, &req, &call));
  CHECK_EQ(keel_http_call_content_length(call), 13);
  CHECK(strcmp(keel_http_call_header(call, "content-TYPE"), "text/plain") == 0);
  CHECK(strcmp(keel_http_call_reason(call), "OK") == 0);
  CHECK_EQ(keel_http_call_version(call), 11);
  char buf[8];
  CHECK_EQ(keel_http_call_read(call, buf, 5), 5);
  CHECK(memcmp(buf, "Hello", 5) == 0);
  CHECK_EQ(keel_http_call_read(call, buf, 8), 8);
  CHECK_EQ(keel_http_call_read(call, buf, 8), 0);
  CHECK_RC(keel_http_call_close(call));
  CHECK_RC(keel_http_client_close(cl));
  return kt_server_stop(&srv);
}

static int bodies_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(NULL, &cl));
  char url[128];
  CHECK_RC(get_check(cl, url_of(&srv, "/", url, sizeof url), 200, "Hello, World!", 0));
  keel_http_call_t *call;
  keel_http_call_opts_t req = {.url = url};
  url_of(&srv, "/stream?chunks=4&size=3", url, sizeof url);
  CHECK_RC(keel_http_call_open(cl, &req, &call));
  CHECK_EQ(keel_http_call_content_length(call), -1);
  CHECK(keel_http_call_reused(call));
  char body[64];
  size_t n = 0;
  ssize_t got;
  while ((got = keel_http_call_read(call, body + n, 2)) > 0)
    n += (size_t)got;
  CHECK_RC(got);
  CHECK_EQ(n, 12);
  CHECK(memcmp(body, "aaabbbcccddd", 12) == 0);
  CHECK_RC(keel_http_call_close(call));
  /* A large body (read straight into the caller's buffer). */
  url_of(&srv, "/big?size=300000", url, sizeof url);
  CHECK_RC(keel_http_fetch(cl, &req, &call));
  const void *data;
  size_t len;
  CHECK_RC(keel_http_call_body(call, &data, &len));
  CHECK_EQ(len, 300000);
  CHECK_EQ(((const char *)data)[299999], 'a' + 299999 % 26);
  keel_http_call_close(call);
  /* Bodies sent whole and streamed (chunked, and with a length). */
  url_of(&srv, "/echo", url, sizeof url);
  keel_http_call_opts_t post = {.method = "POST", .url = url, .body = "ping", .body_len = 4};
  CHECK_RC(fetch_check(cl, &post, 200, "ping", 1));
  static const char *const three[] = {"abc", "def", "ghi", NULL};
  parts_t parts = {three, 0};
  keel_http_call_opts_t put = {
      .method = "PUT", .url = url, .body_fn = next_part, .body_ctx = &parts};
  CHECK_RC(fetch_check(cl, &put, 200, "abcdefghi", 1));
  parts.i = 0;
  put.body_fn_length = 9;
  CHECK_RC(fetch_check(cl, &put, 200, "abcdefghi", 1));
  CHECK_RC(keel_http_client_close(cl));
  return kt_server_stop(&srv);
}

static int head_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  char url[128];
  url_of(&srv, "/", url, sizeof url);
  keel_http_call_opts_t req = {.method = "HEAD", .url = url};
  keel_http_call_t *call;
  CHECK_RC(keel_http_fetch(NULL, &req, &call));
  CHECK_EQ(keel_http_call_status(call), 200);
  CHECK(strcmp(keel_http_call_header(call, "Content-Length"), "13") == 0);
  CHECK_EQ(keel_http_call_content_length(call), 0);
  char b;
  CHECK_EQ(keel_http_call_read(call, &b, 1), 0);
  keel_http_call_close(call);
  /* No body came: the connection carries the next request cleanly. */
  CHECK_RC(get_check(NULL, url, 200, "Hello, World!", 1));
  return kt_server_stop(&srv);
}

typedef struct waiter {
  keel_http_client_t *cl;
  const char *url;
  int rc;
} waiter_t;

static int waiter_task(void *arg) {
  waiter_t *w = arg;
  w->rc = get_check(w->cl, w->url, 200, "slept", -1);
  return 0;
}

static int limit_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(&(keel_http_client_opts_t){.max_conns_per_origin = 2}, &cl));
  char url[128];
  url_of(&srv, "/sleep?ms=50", url, sizeof url);
  load = (load_t){0};
  waiter_t w[6];
  keel_scope_t *scope;
  CHECK_RC(keel_scope_open(NULL, &scope));
  int64_t t0 = keel_now_ns();
  for (int i = 0; i < 6; i++) {
    w[i] = (waiter_t){cl, url, -1};
    CHECK_RC(keel_spawn(scope, waiter_task, &w[i], NULL));
  }
  CHECK_RC(keel_scope_close(scope));
  for (int i = 0; i < 6; i++)
    CHECK_RC(w[i].rc);
  CHECK_EQ(load.max, 2);
  CHECK(keel_now_ns() - t0 >= 150 * KEEL_NS_PER_MS);
  /* With both connections busy, a caller whose deadline passes first
   * stops waiting with -ETIMEDOUT. */
  url_of(&srv, "/sleep?ms=300", url, sizeof url);
  CHECK_RC(keel_scope_open(NULL, &scope));
  for (int i = 0; i < 2; i++) {
    w[i] = (waiter_t){cl, url, -1};
    CHECK_RC(keel_spawn(scope, waiter_task, &w[i], NULL));
  }
  CHECK_RC(keel_sleep_ms(20));
  int64_t saved = keel_task_set_deadline(keel_now_ns() + 50 * KEEL_NS_PER_MS);
  keel_http_call_t *call;
  keel_http_call_opts_t req = {.url = url};
  CHECK_EQ(keel_http_call_open(cl, &req, &call), -ETIMEDOUT);
  keel_task_set_deadline(saved);
  CHECK_RC(keel_scope_close(scope));
  for (int i = 0; i < 2; i++)
    CHECK_RC(w[i].rc);
  CHECK_RC(keel_http_client_close(cl));
  return kt_server_stop(&srv);
}

static int close_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  char url[128], hello_url[128];
  url_of(&srv, "/close", url, sizeof url);
  url_of(&srv, "/", hello_url, sizeof hello_url);
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(NULL, &cl));
  CHECK_RC(get_check(cl, url, 200, "bye", 0));
  CHECK_RC(get_check(cl, hello_url, 200, "Hello, World!", 0));
  /* The request's own Connection: close. */
  keel_http_header_t h = {.name = "Connection", .value = "close"};
  keel_http_call_opts_t req = {.url = hello_url, .headers = &h, .nheaders = 1};
  CHECK_RC(fetch_check(cl, &req, 200, "Hello, World!", 1));
  CHECK_RC(get_check(cl, hello_url, 200, "Hello, World!", 0));
  CHECK_RC(keel_http_client_close(cl));
  return kt_server_stop(&srv);
}

static int idle_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  char url[128];
  url_of(&srv, "/", url, sizeof url);
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(&(keel_http_client_opts_t){.idle_timeout_ms = 200}, &cl));
  CHECK_RC(get_check(cl, url, 200, NULL, 0));
  CHECK_RC(keel_sleep_ms(50));
  CHECK_RC(get_check(cl, url, 200, NULL, 1));
  CHECK_RC(keel_sleep_ms(300));
  CHECK_RC(get_check(cl, url, 200, NULL, 0));
  CHECK_RC(keel_http_client_close(cl));
  /* Keep-Alive: timeout=2: the connection is kept a second, not 30. */
  url_of(&srv, "/ka?t=2", url, sizeof url);
  CHECK_RC(keel_http_client_open(NULL, &cl));
  CHECK_RC(get_check(cl, url, 200, "ka", 0));
  CHECK_RC(keel_sleep_ms(500));
  CHECK_RC(get_check(cl, url, 200, "ka", 1));
  CHECK_RC(keel_sleep_ms(1100));
  CHECK_RC(get_check(cl, url, 200, "ka", 0));
  /* timeout=0: not kept at all. */
  url_of(&srv, "/ka?t=0", url, sizeof url);
  CHECK_RC(get_check(cl, url, 200, "ka", -1));
  CHECK_RC(get_check(cl, url, 200, "ka", 0));
  CHECK_RC(keel_http_client_close(cl));
  return kt_server_stop(&srv);
}

static int deadline_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  char url[128];
  url_of(&srv, "/sleep?ms=5000", url, sizeof url);
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(NULL, &cl));
  int64_t t0 = keel_now_ns();
  int64_t saved = keel_task_set_deadline(t0 + 100 * KEEL_NS_PER_MS);
  keel_http_call_t *call;
  keel_http_call_opts_t req = {.url = url};
  CHECK_EQ(keel_http_fetch(cl, &req, &call), -ETIMEDOUT);
  keel_task_set_deadline(saved);
  CHECK_BETWEEN(keel_now_ns() - t0, 100 * KEEL_NS_PER_MS, 100 * KEEL_NS_PER_MS + kt_late_ns());
  /* The connection was given up, not pooled half-read. */
  url_of(&srv, "/", url, sizeof url);
  CHECK_RC(get_check(cl, url, 200, "Hello, World!", 0));
  /* keel_timeout around a call works the same. */
  CHECK_RC(keel_http_client_close(cl));
  return kt_server_stop(&srv);
}

typedef struct zeros {
  int calls;
  size_t left;
} zeros_t;

static ssize_t zeros(void *ctx, void *buf, size_t len) {
  zeros_t *z = ctx;
  if (z->calls++ == 0)
    z->left = 2 << 20;
  size_t n = len < z->left ? len : z->left;
  memset(buf, 0, n);
  z->left -= n;
  return (ssize_t)n;
}

static int continue_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  char url[128];
  url_of(&srv, "/echo", url, sizeof url);
  keel_http_header_t h = {.name = "Expect", .value = "100-continue"};
  keel_http_call_opts_t req = {
      .method = "POST", .url = url, .headers = &h, .nheaders = 1, .body = "abc", .body_len = 3};
  int64_t t0 = keel_now_ns();
  CHECK_RC(fetch_check(NULL, &req, 200, "abc", 0));
  /* The 100 came: the body did not wait for expect_timeout (1 s). */
  CHECK(keel_now_ns() - t0 < 900 * KEEL_NS_PER_MS + kt_late_ns());
  CHECK_RC(fetch_check(NULL, &req, 200, "abc", 1));
  /* A body the server refuses from its length alone (413 over its
   * max_body) is never sent, nor waited for. */
  zeros_t z = {0};
  keel_http_call_opts_t big = {.method = "POST",
                               .url = url,
                               .headers = &h,
                               .nheaders = 1,
                               .body_fn = zeros,
                               .body_ctx = &z,
                               .body_fn_length = 2 << 20};
  t0 = keel_now_ns();
  CHECK_RC(fetch_check(NULL, &big, 413, NULL, 1));
  CHECK(keel_now_ns() - t0 < 900 * KEEL_NS_PER_MS + kt_late_ns());
  CHECK_EQ(z.calls, 0);
  return kt_server_stop(&srv);
}

typedef struct on_worker {
  keel_http_client_t *cl;
  const char *url;
  int reused, rc;
} on_worker_t;

static int worker_task(void *arg) {
  on_worker_t *w = arg;
  w->rc = 0;
  for (int i = 0; i < 10; i++) {
    keel_http_call_t *call;
    keel_http_call_opts_t req = {.url = w->url};
    int rc = keel_http_fetch(w->cl, &req, &call);
    if (rc < 0) {
      w->rc = rc;
      return 0;
    }
    w->reused += keel_http_call_reused(call);
    keel_http_call_close(call);
  }
  return 0;
}

/* kt_server_start for two workers: the server announces its address from
 * whichever worker listens last, so the flag is atomic. */
static char mt_addr[KEEL_ADDRSTRLEN];
static atomic_bool mt_listening;

static void mt_on_listen(const keel_addr_t *addr, void *ctx) {
  (void)ctx;
  keel_addr_format(addr, mt_addr, sizeof mt_addr);
  atomic_store_explicit(&mt_listening, true, memory_order_release);
}

static int start_mt(kt_server_t *srv) {
  memset(srv, 0, sizeof *srv);
  srv->opts = (keel_http_server_opts_t){
      .handler = keel_http_router_handler, .ctx = router, .on_listen = mt_on_listen};
  atomic_store(&mt_listening, false);
  CHECK_RC(keel_scope_open(NULL, &srv->scope));
  CHECK_RC(keel_spawn(srv->scope, kt_server_task, srv, NULL));
  for (int i = 0; i < 5000 && !atomic_load_explicit(&mt_listening, memory_order_acquire); i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK(atomic_load_explicit(&mt_listening, memory_order_acquire));
  memcpy(srv->addr, mt_addr, sizeof srv->addr);
  return 0;
}

/* One client from two workers: each worker has a pool of its own. */
static int workers_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start_mt(&srv));
  char url[128];
  url_of(&srv, "/", url, sizeof url);
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(NULL, &cl));
  on_worker_t w[2] = {{cl, url, 0, -1}, {cl, url, 0, -1}};
  keel_scope_t *scope;
  CHECK_RC(keel_scope_open(NULL, &scope));
  for (int i = 0; i < 2; i++)
    CHECK_RC(
        keel_spawn(scope, worker_task, &w[i], &(keel_spawn_opts_t){.on_worker = KEEL_WORKER(i)}));
  CHECK_RC(keel_scope_close(scope));
  for (int i = 0; i < 2; i++) {
    CHECK_RC(w[i].rc);
    CHECK_EQ(w[i].reused, 9);
  }
  /* The default client too. */
  w[0] = (on_worker_t){NULL, url, 0, -1};
  w[1] = (on_worker_t){NULL, url, 0, -1};
  CHECK_RC(keel_scope_open(NULL, &scope));
  for (int i = 0; i < 2; i++)
    CHECK_RC(
        keel_spawn(scope, worker_task, &w[i], &(keel_spawn_opts_t){.on_worker = KEEL_WORKER(i)}));
  CHECK_RC(keel_scope_close(scope));
  for (int i = 0; i < 2; i++)
    CHECK_RC(w[i].rc);
  CHECK_RC(keel_http_client_close(cl));
  return kt_server_stop(&srv);
}

/* A client closed while a call is open: the call finishes, its pool goes
 * with it. */
static int client_close_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  CHECK_RC(start(&srv));
  char url[128];
  url_of(&srv, "/stream?chunks=2&size=4", url, sizeof url);
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(NULL, &cl));
  CHECK_RC(get_check(cl, url, 200, "aaaabbbb", 0));
  keel_http_call_t *call;
  keel_http_call_opts_t req = {.url = url};
  CHECK_RC(keel_http_call_open(cl, &req, &call));
  CHECK_RC(keel_http_client_close(cl));
  const void *body;
  size_t len;
  CHECK_RC(keel_http_call_body(call, &body, &len));
  CHECK_EQ(len, 8);
  CHECK_RC(keel_http_call_close(call));
  return kt_server_stop(&srv);
}

static int bad_requests_case(void *arg) {
  (void)arg;
  keel_http_call_t *call;
  static const struct {
    const char *url;
    int rc;
  } urls[] = {
      {"gopher://example.test/", -EPROTONOSUPPORT},
      {"ftp://example.test/", -EPROTONOSUPPORT},
      {"http://", -EINVAL},
      {"http://user@host/", -EINVAL},
      {"http://host:0/", -EINVAL},
      {"http://host:65536/", -EINVAL},
      {"http://host/a b", -EINVAL},
      {"example.test/", -EINVAL},
      {"http://[::1/", -EINVAL},
  };
  for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
    keel_http_call_opts_t req = {.url = urls[i].url};
    CHECK_EQ(keel_http_call_open(NULL, &req, &call), urls[i].rc);
  }
  static const keel_http_header_t bad[] = {
      {.name = "Content-Length", .value = "3"},
      {.name = "Transfer-Encoding", .value = "chunked"},
      {.name = "X-A", .value = "a\r\nb"},
      {.name = "X A", .value = "v"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    keel_http_call_opts_t req = {.url = "http://127.0.0.1:1/", .headers = &bad[i], .nheaders = 1};
    CHECK_EQ(keel_http_call_open(NULL, &req, &call), -EINVAL);
  }
  keel_http_call_opts_t req = {.method = "GE T", .url = "http://127.0.0.1:1/"};
  CHECK_EQ(keel_http_call_open(NULL, &req, &call), -EINVAL);
  return 0;
}

/* ---- A raw server ------------------------------------------------------------- */

#define OK_RESPONSE "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

enum policy {
  ANSWER,       /* OK_RESPONSE to every request */
  CANNED,       /* /case gets raw->canned (then close if raw->close_after); the rest OK */
  STALE_ONCE,   /* the first connection's second request: closed without an answer */
  STALE_ALWAYS, /* every request but the first connection's first: closed unanswered */
  CLOSE_IDLE,   /* answers, then closes (keep-alive advertised all the same) */
  STRAY,        /* answers, then sends two bytes nobody asked for */
  RANDOM_IDLE,  /* answers; an idle connection is closed after a random time */
};

typedef struct raw_server {
  keel_listener_t *l;
  keel_scope_t *scope;
  char addr[KEEL_ADDRSTRLEN];
  enum policy policy;
  const char *canned;
  size_t canned_len;
  bool close_after;
  int64_t idle_max_ns;
  int conns, requests, answered;
} raw_server_t;

typedef struct raw_conn {
  raw_server_t *srv;
  keel_tcp_t *tcp;
  int index;
} raw_conn_t;

/* Reads one request (head and Content-Length body). 1, or 0 at the end. */
static int raw_read_request(keel_bufstream_t *bs, char *path, size_t cap) {
  const void *start;
  ssize_t n = keel_bufstream_read_until(bs, "\r\n\r\n", 4, 65536, &start);
  if (n <= 0)
    return 0;
  char head[4096]; /* the buffered bytes have no NUL */
  snprintf(head, sizeof head, "%.*s", (int)n, (const char *)start);
  const char *sp = strchr(head, ' ');
  size_t plen = sp ? strcspn(sp + 1, " ") : 0;
  snprintf(path, cap, "%.*s", (int)(plen < cap ? plen : cap - 1), sp ? sp + 1 : "");
  const char *cl = strcasestr(head, "Content-Length:");
  size_t body = cl ? strtoul(cl + 15, NULL, 10) : 0;
  keel_bufstream_consume(bs, (size_t)n);
  char sink[256];
  while (body > 0) {
    size_t chunk = body < sizeof sink ? body : sizeof sink;
    if (keel_read_exact(keel_bufstream_stream(bs), sink, chunk, NULL) < 0)
      return 0;
    body -= chunk;
  }
  return 1;
}

/* What to send for request n of connection conn: NULL closes. */
static const char *raw_answer(raw_server_t *srv, int conn, int n, const char *path, size_t *len) {
  *len = sizeof OK_RESPONSE - 1;
  switch (srv->policy) {
  case CANNED:
    if (strcmp(path, "/case") == 0) {
      *len = srv->canned_len;
      return srv->canned;
    }
    return OK_RESPONSE;
  case STALE_ONCE:
    return conn == 0 && n == 1 ? NULL : OK_RESPONSE;
  case STALE_ALWAYS:
    return conn == 0 && n == 0 ? OK_RESPONSE : NULL;
  default:
    return OK_RESPONSE;
  }
}

static int raw_conn_task(void *arg) {
  raw_conn_t rc = *(raw_conn_t *)arg;
  free(arg);
  raw_server_t *srv = rc.srv;
  keel_bufstream_t *bs;
  if (keel_bufstream_open(keel_tcp_stream(rc.tcp), NULL, &bs) < 0) {
    keel_tcp_close(rc.tcp);
    return 0;
  }
  keel_stream_t *s = keel_bufstream_stream(bs);
  for (int n = 0;; n++) {
    /* Idle between requests: a new connection waits for its first. */
    if (srv->policy == RANDOM_IDLE && n > 0)
      keel_task_set_deadline(keel_now_ns() + 1 +
                             (int64_t)keel_random_below((uint64_t)srv->idle_max_ns));
    char path[64];
    int got = raw_read_request(bs, path, sizeof path);
    keel_task_set_deadline(0);
    if (!got)
      break;
    srv->requests++;
    size_t len;
    const char *answer = raw_answer(srv, rc.index, n, path, &len);
    if (!answer || keel_write_all(s, answer, len, NULL) < 0)
      break;
    srv->answered++;
    if (srv->policy == CLOSE_IDLE ||
        (srv->policy == CANNED && srv->close_after && strcmp(path, "/case") == 0))
      break;
    if (srv->policy == STRAY && (keel_sleep_ms(10) < 0 || keel_write_all(s, "XX", 2, NULL) < 0))
      break;
  }
  keel_close(s);
  return 0;
}

static int raw_accept_task(void *arg) {
  raw_server_t *srv = arg;
  for (;;) {
    keel_tcp_t *tcp;
    if (keel_tcp_accept(srv->l, &tcp) < 0)
      return 0;
    raw_conn_t *rc = malloc(sizeof *rc);
    if (!rc) {
      keel_tcp_close(tcp);
      continue;
    }
    *rc = (raw_conn_t){srv, tcp, srv->conns++};
    if (keel_spawn(srv->scope, raw_conn_task, rc, &(keel_spawn_opts_t){.name = "raw-conn"}) < 0) {
      free(rc);
      keel_tcp_close(tcp);
    }
  }
}

static int raw_start(raw_server_t *srv, enum policy policy) {
  memset(srv, 0, sizeof *srv);
  srv->policy = policy;
  CHECK_RC(kt_listen_loopback(&srv->l, srv->addr, sizeof srv->addr));
  CHECK_RC(keel_scope_open(NULL, &srv->scope));
  CHECK_RC(
      keel_spawn(srv->scope, raw_accept_task, srv, &(keel_spawn_opts_t){.name = "raw-accept"}));
  return 0;
}

static void raw_stop(raw_server_t *srv) {
  keel_scope_cancel(srv->scope, KEEL_CANCEL_USER);
  keel_scope_close(srv->scope);
  keel_listener_close(srv->l);
}

static const char *raw_url(const raw_server_t *srv, const char *path, char *buf, size_t len) {
  snprintf(buf, len, "http://%s%s", srv->addr, path);
  return buf;
}

/* ---- Malformed responses ------------------------------------------------------ */

#define S(lit) lit, sizeof lit - 1

typedef struct bad_case {
  const char *name;
  const char *bytes;
  size_t len;
  bool close_after; /* the server closes after sending them */
  int rc;           /* what keel_http_fetch returns */
} bad_case_t;

static const bad_case_t bad_cases[] = {
    {"duplicate Content-Length",
     S("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"), false, -EPROTO},
    {"Content-Length and Transfer-Encoding",
     S("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: "
       "chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
     false, -EPROTO},
    {"invalid Content-Length", S("HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok"), false,
     -EPROTO},
    {"negative Content-Length", S("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nok"), false,
     -EPROTO},
    {"bad chunk size",
     S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n"), false,
     -EPROTO},
    {"chunk without CRLF",
     S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX0\r\n\r\n"), false, -EPROTO},
    {"bare LF line ends", S("HTTP/1.1 200 OK\nContent-Length: 2\n\nok"), false, -EPROTO},
    {"bare LF in a field", S("HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 2\r\n\r\nok"), false,
     -EPROTO},
    {"bare CR in a field", S("HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok"), false,
     -EPROTO},
    {"NUL in a field", S("HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok"), false,
     -EPROTO},
    {"obs-fold", S("HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"), false,
     -EPROTO},
    {"empty field name", S("HTTP/1.1 200 OK\r\n: x\r\nContent-Length: 2\r\n\r\nok"), false,
     -EPROTO},
    {"space before the colon", S("HTTP/1.1 200 OK\r\nX-A : a\r\nContent-Length: 2\r\n\r\nok"),
     false, -EPROTO},
    {"two-digit status", S("HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok"), false, -EPROTO},
    {"HTTP/2.0 status line", S("HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), false, -EPROTO},
    {"not HTTP at all", S("SSH-2.0-OpenSSH_9.2\r\n"), false, -EPROTO},
    {"Transfer-Encoding: gzip", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok"), true,
     -EPROTO},
    {"Transfer-Encoding: gzip, chunked",
     S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"), false,
     -EPROTO},
    {"chunked in HTTP/1.0",
     S("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"), false,
     -EPROTO},
    {"101 not asked for",
     S("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"), false,
     -EPROTO},
    {"truncated head", S("HTTP/1.1 200 OK\r\nContent-Le"), true, -EPROTO},
    {"truncated Content-Length body", S("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"), true,
     -EPIPE},
    {"truncated chunked body", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"),
     true, -EPIPE},
    {"no reply at all", S(""), true, -ECONNRESET},
};

/* Well-formed, if unusual: the body, and whether the connection is kept. */
typedef struct good_case {
  const char *name;
  const char *bytes;
  size_t len;
  bool close_after;
  const char *body;
  bool kept;
} good_case_t;

static const good_case_t good_cases[] = {
    {"1xx skipped",
     S("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" OK_RESPONSE),
     false, "ok", true},
    {"304 with a length", S("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n"), false, "",
     true},
    {"204", S("HTTP/1.1 204 No Content\r\n\r\n"), false, "", true},
    {"no reason phrase", S("HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok"), false, "ok", true},
    {"chunked with extensions and trailers",
     S("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n1;a=b\r\no\r\n1\r\nk\r\n0\r\nX-T: "
       "1\r\n\r\n"),
     false, "ok", true},
    {"body up to the end", S("HTTP/1.1 200 OK\r\n\r\nuntil the end"), true, "until the end", false},
    {"HTTP/1.0", S("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"), false, "ok", false},
    {"HTTP/1.0 keep-alive",
     S("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"), false, "ok",
     true},
    {"Connection: close", S("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
     false, "ok", false},
    {"bytes past the response", S(OK_RESPONSE "JUNK"), false, "ok", false},
};

/* /ok, then /case with the bytes given, then /ok again: reused or not. */
static int canned_round(keel_http_client_t *cl, raw_server_t *srv, const char *name, int rc,
                        const char *body, bool kept) {
  char ok_url[128], case_url[128];
  raw_url(srv, "/ok", ok_url, sizeof ok_url);
  raw_url(srv, "/case", case_url, sizeof case_url);
  CHECK_RC(get_check(cl, ok_url, 200, "ok", -1));
  keel_http_call_t *call;
  keel_http_call_opts_t req = {.url = case_url};
  int got = keel_http_fetch(cl, &req, &call);
  if (got != rc)
    KT_FAIL("%s: %d (%s), wanted %d (%s)", name, got, keel_strerror(got), rc, keel_strerror(rc));
  if (got == 0) {
    const void *data;
    size_t len;
    CHECK_RC(keel_http_call_body(call, &data, &len));
    if (len != strlen(body) || memcmp(data, body, len) != 0)
      KT_FAIL("%s: body \"%.*s\"", name, (int)len, (const char *)data);
    keel_http_call_close(call);
  }
  keel_http_call_opts_t ok = {.url = ok_url};
  CHECK_RC(keel_http_fetch(cl, &ok, &call));
  if (keel_http_call_reused(call) != kept)
    KT_FAIL("%s: the next request %s the connection", name, kept ? "did not reuse" : "reused");
  keel_http_call_close(call);
  return 0;
}

/* A head over max_header_bytes, too many fields, a long chunk extension. */
static int big_heads(keel_http_client_t *cl, raw_server_t *srv) {
  /* Static: a server task may still be writing it after the round. */
  static char big[80 * 1024];
  size_t cap = sizeof big;
  int n = snprintf(big, cap, "HTTP/1.1 200 OK\r\nX-Big: ");
  memset(big + n, 'v', 70 * 1024);
  n += 70 * 1024;
  n += snprintf(big + n, cap - (size_t)n, "\r\nContent-Length: 2\r\n\r\nok");
  srv->canned = big;
  srv->canned_len = (size_t)n;
  srv->close_after = false;
  int rc = canned_round(cl, srv, "70 KiB head", -EMSGSIZE, NULL, false);
  n = snprintf(big, cap, "HTTP/1.1 200 OK\r\n");
  for (int i = 0; i < 150; i++)
    n += snprintf(big + n, cap - (size_t)n, "X-%d: v\r\n", i);
  n += snprintf(big + n, cap - (size_t)n, "Content-Length: 2\r\n\r\nok");
  srv->canned_len = (size_t)n;
  if (rc == 0)
    rc = canned_round(cl, srv, "150 fields", -EMSGSIZE, NULL, false);
  n = snprintf(big, cap, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=");
  memset(big + n, 'e', 4000);
  n += 4000;
  n += snprintf(big + n, cap - (size_t)n, "\r\nok\r\n0\r\n\r\n");
  srv->canned_len = (size_t)n;
  if (rc == 0)
    rc = canned_round(cl, srv, "4000-byte chunk extension", -EPROTO, NULL, false);
  return rc;
}

static int malformed_case(void *arg) {
  (void)arg;
  raw_server_t srv;
  CHECK_RC(raw_start(&srv, CANNED));
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(&(keel_http_client_opts_t){.max_conns_per_origin = 1}, &cl));
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const bad_case_t *b = &bad_cases[i];
    srv.canned = b->bytes;
    srv.canned_len = b->len;
    srv.close_after = b->close_after;
    CHECK_RC(canned_round(cl, &srv, b->name, b->rc, NULL, false));
  }
  for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
    const good_case_t *g = &good_cases[i];
    srv.canned = g->bytes;
    srv.canned_len = g->len;
    srv.close_after = g->close_after;
    CHECK_RC(canned_round(cl, &srv, g->name, 0, g->body, g->kept));
  }
  CHECK_RC(big_heads(cl, &srv));
  CHECK_RC(keel_http_client_close(cl));
  /* A body over max_body for the whole-body calls. */
  CHECK_RC(keel_http_client_open(&(keel_http_client_opts_t){.max_body = 8}, &cl));
  srv.canned = "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789";
  srv.canned_len = strlen(srv.canned);
  CHECK_RC(canned_round(cl, &srv, "over max_body", -EMSGSIZE, NULL, false));
  srv.canned = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n";
  srv.canned_len = strlen(srv.canned);
  CHECK_RC(canned_round(cl, &srv, "chunked over max_body", -EMSGSIZE, NULL, false));
  CHECK_RC(keel_http_client_close(cl));
  raw_stop(&srv);
  return 0;
}

/* ---- Mutated responses ---------------------------------------------------- */

/* Well-formed responses with a few bytes changed, inserted or dropped:
 * whatever the client makes of one (an error, a timeout, some response),
 * the next request on the same server gets its own response, whole: a
 * connection is never reused out of step. Lab mode, where a response that
 * leaves the client waiting costs virtual time only. */
static size_t mutate(char *dst, size_t cap, const char *src, size_t len) {
  static const char interesting[] = "\r\n :;,0129afAF-\t\x80\x00";
  size_t n = len < cap ? len : cap;
  memcpy(dst, src, n);
  for (int edits = 1 + (int)keel_random_below(3); edits > 0 && n > 0; edits--) {
    size_t at = (size_t)keel_random_below(n);
    char ch = keel_random_below(2) ? (char)keel_random_below(256)
                                   : interesting[keel_random_below(sizeof interesting - 1)];
    switch (keel_random_below(3)) {
    case 0:
      dst[at] = ch;
      break;
    case 1:
      if (n < cap) {
        memmove(dst + at + 1, dst + at, n - at);
        dst[at] = ch;
        n++;
      }
      break;
    default:
      memmove(dst + at, dst + at + 1, n - at - 1);
      n--;
    }
  }
  return n;
}

static int mutations_case(void *arg) {
  (void)arg;
  raw_server_t srv;
  CHECK_RC(raw_start(&srv, CANNED));
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(&(keel_http_client_opts_t){.max_conns_per_origin = 1}, &cl));
  char url[128], ok_url[128], buf[512];
  raw_url(&srv, "/case", url, sizeof url);
  raw_url(&srv, "/ok", ok_url, sizeof ok_url);
  size_t ngood = sizeof good_cases / sizeof good_cases[0];
  int outcomes[3] = {0}; /* responses, timeouts, errors */
  for (int i = 0; i < 300; i++) {
    const good_case_t *g = &good_cases[keel_random_below(ngood)];
    srv.canned = buf;
    srv.canned_len = mutate(buf, sizeof buf, g->bytes, g->len);
    srv.close_after = g->close_after;
    int64_t saved = keel_task_set_deadline(keel_now_ns() + KEEL_NS_PER_SEC);
    keel_http_call_t *call;
    keel_http_call_opts_t req = {.url = url};
    int rc = keel_http_fetch(cl, &req, &call);
    if (rc == 0)
      keel_http_call_close(call);
    keel_task_set_deadline(saved);
    outcomes[rc == 0 ? 0 : rc == -ETIMEDOUT ? 1 : 2]++;
    CHECK_RC(get_check(cl, ok_url, 200, "ok", -1));
  }
  CHECK_RC(keel_http_client_close(cl));
  raw_stop(&srv);
  if (getenv("KT_VERBOSE"))
    fprintf(stderr, "# mutations: %d responses, %d timeouts, %d errors\n", outcomes[0], outcomes[1],
            outcomes[2]);
  return 0;
}

/* ---- Stale connections ----------------------------------------------------- */

static int call_once(keel_http_client_t *cl, const keel_http_call_opts_t *req, bool *reused,
                     bool *retried) {
  keel_http_call_t *call;
  int rc = keel_http_fetch(cl, req, &call);
  if (rc < 0)
    return rc;
  *reused = keel_http_call_reused(call);
  *retried = keel_http_call_retried(call);
  keel_http_call_close(call);
  return 0;
}

static int stale_case(void *arg) {
  (void)arg;
  char url[128];
  bool reused, retried;
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(NULL, &cl));
  /* The server closes the first connection on its second request: the GET
   * goes again, once, on a new connection. */
  raw_server_t srv;
  CHECK_RC(raw_start(&srv, STALE_ONCE));
  keel_http_call_opts_t get = {.url = raw_url(&srv, "/", url, sizeof url)};
  CHECK_RC(call_once(cl, &get, &reused, &retried));
  CHECK(!reused && !retried);
  CHECK_RC(call_once(cl, &get, &reused, &retried));
  CHECK(!reused && retried);
  CHECK_EQ(srv.conns, 2);
  CHECK_EQ(srv.requests, 3);
  raw_stop(&srv);
  /* A POST is not sent again: it fails with a clear error. */
  CHECK_RC(raw_start(&srv, STALE_ONCE));
  get.url = raw_url(&srv, "/", url, sizeof url);
  keel_http_call_opts_t post = {.method = "POST", .url = url, .body = "x", .body_len = 1};
  CHECK_RC(call_once(cl, &get, &reused, &retried));
  CHECK_EQ(call_once(cl, &post, &reused, &retried), -ECONNRESET);
  CHECK_EQ(srv.conns, 1);
  CHECK_EQ(srv.requests, 2);
  raw_stop(&srv);
  /* Nor a PUT whose streamed body was started, nor anything with
   * no_retry. */
  CHECK_RC(keel_http_client_close(cl));
  CHECK_RC(keel_http_client_open(&(keel_http_client_opts_t){.no_retry = true}, &cl));
  CHECK_RC(raw_start(&srv, STALE_ONCE));
  get.url = raw_url(&srv, "/", url, sizeof url);
  CHECK_RC(call_once(cl, &get, &reused, &retried));
  CHECK_EQ(call_once(cl, &get, &reused, &retried), -ECONNRESET);
  CHECK_EQ(srv.conns, 1);
  raw_stop(&srv);
  CHECK_RC(keel_http_client_close(cl));
  /* At most once: the new connection fails too, and so does the call. */
  CHECK_RC(keel_http_client_open(NULL, &cl));
  CHECK_RC(raw_start(&srv, STALE_ALWAYS));
  get.url = raw_url(&srv, "/", url, sizeof url);
  CHECK_RC(call_once(cl, &get, &reused, &retried));
  CHECK_EQ(call_once(cl, &get, &reused, &retried), -ECONNRESET);
  CHECK_EQ(srv.conns, 2);
  CHECK_EQ(srv.requests, 3);
  raw_stop(&srv);
  CHECK_RC(keel_http_client_close(cl));
  return 0;
}

/* An idle connection the server closed, or that got stray bytes, is seen
 * before it is used: no retry needed, even for a POST. */
static int liveness_case(void *arg) {
  (void)arg;
  char url[128];
  bool reused, retried;
  static const enum policy policies[] = {CLOSE_IDLE, STRAY};
  for (size_t i = 0; i < 2; i++) {
    raw_server_t srv;
    CHECK_RC(raw_start(&srv, policies[i]));
    keel_http_call_opts_t get = {.url = raw_url(&srv, "/", url, sizeof url)};
    keel_http_call_opts_t post = {.method = "POST", .url = url, .body = "x", .body_len = 1};
    CHECK_RC(call_once(NULL, &get, &reused, &retried));
    CHECK_RC(keel_sleep_ms(50));
    CHECK_RC(call_once(NULL, &post, &reused, &retried));
    CHECK(!reused && !retried);
    CHECK_RC(keel_sleep_ms(50));
    CHECK_RC(call_once(NULL, &get, &reused, &retried));
    CHECK(!reused && !retried);
    CHECK_EQ(srv.conns, 3);
    raw_stop(&srv);
  }
  return 0;
}

typedef struct random_client {
  keel_http_client_t *cl;
  const char *url;
  int ok, retried, rc;
} random_client_t;

static int random_client_task(void *arg) {
  random_client_t *rc = arg;
  for (int i = 0; i < 50; i++) {
    if (keel_sleep_ms((int64_t)keel_random_below(25)) < 0)
      break;
    bool reused, retried;
    keel_http_call_opts_t get = {.url = rc->url};
    int r = call_once(rc->cl, &get, &reused, &retried);
    if (r < 0) {
      rc->rc = r;
      return 0;
    }
    rc->ok++;
    rc->retried += retried;
  }
  return 0;
}

/* The server closes idle connections at random moments, some just as a
 * request arrives: every GET succeeds. */
static int random_idle_case(void *arg) {
  (void)arg;
  char url[128];
  raw_server_t srv;
  /* In lab mode requests take a while to land, and come in pieces: the
   * server's idle deadline passes while one is on its way. */
  keel_lab_net_faults_t faults = {
      .conn = {.delay_max_ns = 3 * KEEL_NS_PER_MS, .short_permille = 300}};
  if (keel_lab_active())
    CHECK_RC(keel_lab_net_faults(&faults));
  CHECK_RC(raw_start(&srv, RANDOM_IDLE));
  srv.idle_max_ns = 20 * KEEL_NS_PER_MS;
  raw_url(&srv, "/", url, sizeof url);
  keel_http_client_t *cl;
  CHECK_RC(keel_http_client_open(NULL, &cl));
  random_client_t rc[2] = {{cl, url, 0, 0, 0}, {cl, url, 0, 0, 0}};
  keel_scope_t *scope;
  CHECK_RC(keel_scope_open(NULL, &scope));
  for (int i = 0; i < 2; i++)
    CHECK_RC(keel_spawn(scope, random_client_task, &rc[i], NULL));
  CHECK_RC(keel_scope_close(scope));
  for (int i = 0; i < 2; i++) {
    CHECK_RC(rc[i].rc);
    CHECK_EQ(rc[i].ok, 50);
  }
  /* Each answer went to one call: no request was answered twice. */
  CHECK_EQ(srv.answered, 100);
  CHECK_RC(keel_http_client_close(cl));
  raw_stop(&srv);
  if (keel_lab_active())
    CHECK_RC(keel_lab_net_faults(NULL));
  if (getenv("KT_VERBOSE"))
    fprintf(stderr, "# %s: %d retried, %d connections\n", keel_backend_name(),
            rc[0].retried + rc[1].retried, srv.conns);
  return 0;
}

/* ---- cmocka ---------------------------------------------------------------------- */

#define CASE(name)                        \
  static void test_##name(void **state) { \
    (void)state;                          \
    routes();                             \
    kt_run_body(name##_case, NULL, 1);    \
  }
CASE(keepalive)
CASE(bodies)
CASE(head)
CASE(limit)
CASE(close)
CASE(idle)
CASE(deadline)
CASE(continue)
CASE(client_close)
CASE(bad_requests)
CASE(malformed)
CASE(stale)
CASE(liveness)

static void test_workers(void **state) {
  (void)state;
  routes();
  kt_run_real_body(workers_case, NULL, 2);
}

static void test_mutations(void **state) {
  (void)state;
  kt_run_where(KT_ON_LAB, mutations_case, NULL, 1, 1, 32);
}

static void test_random_idle(void **state) {
  (void)state;
  kt_run_where(KT_ON_REAL | KT_ON_LAB, random_idle_case, NULL, 1, 1, 64);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_keepalive),    cmocka_unit_test(test_head),
      cmocka_unit_test(test_limit),        cmocka_unit_test(test_close),
      cmocka_unit_test(test_idle),         cmocka_unit_test(test_deadline),
      cmocka_unit_test(test_continue),     cmocka_unit_test(test_client_close),
      cmocka_unit_test(test_bad_requests), cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_stale),        cmocka_unit_test(test_liveness),
      cmocka_unit_test(test_workers),      cmocka_unit_test(test_random_idle),
      cmocka_unit_test(test_mutations),    cmocka_unit_test(test_bodies),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  keel_http_router_close(router);
  return kt_exit_status(failed);
}
