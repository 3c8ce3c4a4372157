/* The HTTP server over a faulty lab network, 64 seeds, each run twice for
 * the same trace: small pipes, delays, and reads and writes that move only
 * part of the bytes split every request and response at random points, so
 * the parser resumes mid-token, bodies arrive in pieces and responses
 * leave in pieces. Every response must still be exactly right. A second
 * case adds dropped connections: a client then sees a reset or the end of
 * stream, never a wrong or misplaced response, and the server goes on.
 * Lab mode only: the faults are the lab network's. */
#define KT_GUARD_MS 600000 /* virtual time */
#include "http-test.h"

/* ThreadSanitizer runs fibers some 10x slower: fewer seeds there. */
#define SEEDS (KT_SCALE > 1 ? 16 : 64)
#define BIG 100000

static int hello(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  return keel_http_send(res, "Hello, World!", 13);
}

static int echo(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  const void *body;
  size_t len;
  int rc = keel_http_body(req, &body, &len);
  return rc < 0 ? rc : keel_http_send(res, body, len);
}

static int chunks(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  char buf[700];
  for (int i = 0; i < 10; i++) {
    memset(buf, '0' + i, sizeof buf);
    ssize_t n = keel_http_write(res, buf, sizeof buf);
    if (n < 0)
      return (int)n;
  }
  return keel_http_finish(res);
}

static keel_http_router_t *router;

static char *big_request(size_t *len) {
  size_t cap = BIG + 256;
  char *p = malloc(cap);
  if (!p)
    return NULL;
  int n = snprintf(p, cap, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", BIG);
  for (size_t i = 0; i < BIG; i++)
    p[n + i] = (char)('a' + i % 23);
  *len = (size_t)n + BIG;
  return p;
}

/* One client's conversation; every answer is checked. Returns 0, or the
 * error that ended it when drops are on (ok_to_drop). */
static int converse(kt_server_t *srv, bool ok_to_drop) {
  kt_conn_t c;
  kt_resp_t r;
  int rc = keel_tcp_connect(srv->addr, &c.tcp);
  if (rc < 0 && ok_to_drop)
    return rc;
  CHECK_RC(rc);
  CHECK_RC(keel_bufstream_open(keel_tcp_stream(c.tcp), NULL, &c.bs));
  c.s = keel_bufstream_stream(c.bs);
#define STEP(expr)              \
  do {                          \
    int e_ = (expr);            \
    if (e_ < 0 && ok_to_drop) { \
      kt_resp_free(&r);         \
      kt_disconnect(&c);        \
      return e_;                \
    }                           \
    CHECK_RC(e_);               \
  } while (0)
  memset(&r, 0, sizeof r);
  STEP(kt_try_send(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                       "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nT: v\r\n\r\n"
                       "GET /chunks HTTP/1.1\r\nHost: t\r\n\r\n"));
  STEP(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 200);
  CHECK(strcmp(r.body, "Hello, World!") == 0);
  kt_resp_free(&r);
  STEP(kt_response(&c, &r, false));
  CHECK(r.status == 200 && strcmp(r.body, "abcdefg") == 0);
  kt_resp_free(&r);
  STEP(kt_response(&c, &r, false));
  CHECK(r.status == 200 && r.chunked && r.body_len == 7000 && r.body[6999] == '9');
  kt_resp_free(&r);
  size_t len;
  char *big = big_request(&len);
  CHECK(big != NULL);
  int wrc = keel_write_all(c.s, big, len, NULL);
  free(big);
  STEP(wrc);
  STEP(kt_response(&c, &r, false));
  CHECK(r.status == 200 && r.body_len == BIG && r.body[BIG - 1] == (char)('a' + (BIG - 1) % 23));
  kt_resp_free(&r);
  STEP(kt_try_send(
      &c, "POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  STEP(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 100);
  kt_resp_free(&r);
  STEP(kt_try_send(&c, "ok"));
  STEP(kt_response(&c, &r, false));
  CHECK(r.status == 200 && strcmp(r.body, "ok") == 0);
  kt_resp_free(&r);
  /* A smuggling attempt: one 400, then the end. */
  STEP(kt_try_send(&c,
                   "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n"));
  STEP(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 400);
  kt_resp_free(&r);
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
#undef STEP
  return 0;
}

typedef struct run {
  bool drops;
  kt_server_t srv;
  int done, dropped;
} run_t;

static int client_task(void *arg) {
  run_t *run = arg;
  int rc = converse(&run->srv, run->drops);
  if (rc < 0)
    run->dropped++;
  else
    run->done++;
  return atomic_load(&kt_failed) ? -EPROTO : 0;
}

static int faults_body(void *arg) {
  run_t *run = arg;
  keel_lab_net_faults_t f = {
      .drop_permille = run->drops ? 1 : 0,
      .conn = {.capacity = 512, .delay_max_ns = 200 * 1000, .short_permille = 300},
  };
  CHECK_RC(keel_lab_net_faults(&f));
  keel_http_server_opts_t o = {.handler = keel_http_router_handler, .ctx = router};
  CHECK_RC(kt_server_start(&run->srv, &o));
  keel_scope_t *clients;
  CHECK_RC(keel_scope_open(NULL, &clients));
  for (int i = 0; i < 4; i++)
    CHECK_RC(keel_spawn(clients, client_task, run, NULL));
  CHECK_RC(keel_scope_join(clients));
  keel_scope_close(clients);
  CHECK_EQ(run->done + run->dropped, 4);
  if (!run->drops)
    CHECK_EQ(run->done, 4);
  keel_lab_trace_note((uint64_t)run->done << 8 | (uint64_t)run->dropped);
  return kt_server_stop(&run->srv);
}

static void run_seeds(bool drops) {
  int done = 0, dropped = 0;
  for (uint64_t seed = 1; seed <= SEEDS; seed++) {
    uint64_t trace[2];
    for (int i = 0; i < 2; i++) {
      run_t run = {.drops = drops};
      int rc = kt_run_guarded_lab_traced(seed, faults_body, &run, &trace[i]);
      if (rc != 0)
        fail_msg("seed %llu: %d (%s)", (unsigned long long)seed, rc, keel_strerror(rc));
      if (i == 0) {
        done += run.done;
        dropped += run.dropped;
      }
    }
    if (trace[0] != trace[1])
      fail_msg("seed %llu: two runs, two traces", (unsigned long long)seed);
  }
  printf("# %d seeds: %d conversations whole, %d cut by a dropped connection\n", SEEDS, done,
         dropped);
  if (drops && dropped == 0)
    fail_msg("no connection was dropped: the case tested nothing");
}

static void test_split_everywhere(void **state) {
  (void)state;
  if (!kt_backend_selected(KEEL_BACKEND_LAB))
    skip();
  run_seeds(false);
}

static void test_dropped_connections(void **state) {
  (void)state;
  if (!kt_backend_selected(KEEL_BACKEND_LAB))
    skip();
  run_seeds(true);
}

int main(void) {
  kt_select_backends();
  assert_int_equal(keel_http_router_open(&router), 0);
  assert_int_equal(keel_http_route(router, "GET", "/", 0, NULL, NULL), -EINVAL);
  assert_int_equal(keel_http_route(router, "GET", "/", 0, hello, NULL), 0);
  assert_int_equal(keel_http_route(router, "POST", "/echo", 0, echo, NULL), 0);
  assert_int_equal(keel_http_route(router, "GET", "/chunks", 0, chunks, NULL), 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_everywhere),
      cmocka_unit_test(test_dropped_connections),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  keel_http_router_close(router);
  return kt_exit_status(failed);
}
