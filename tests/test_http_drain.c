/* The drain: when keel_http_serve's scope is cancelled (as on SIGTERM),
 * the requests in flight finish with their whole bodies and Connection:
 * close, idle keep-alive connections close at once, the listeners stop
 * accepting, and keel_http_serve returns 0 (io_uring, epoll, the lab
 * network over 16 seeds). */
#define KT_GUARD_MS 60000
#include "http-test.h"

#define IN_FLIGHT 3
#define SLEEP_MS 300
#define BODY_LEN 20000

static int slow(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  int rc = keel_sleep_ms(SLEEP_MS);
  if (rc < 0)
    return rc;
  static char body[BODY_LEN];
  memset(body, 'z', sizeof body);
  return keel_http_send(res, body, sizeof body);
}

static int fast(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  return keel_http_send(res, "ok", 2);
}

typedef struct client {
  kt_server_t *srv;
  kt_conn_t c;
  kt_resp_t r;
  int rc;
  bool closed;
  int64_t closed_at;
} client_t;

static int in_flight(void *arg) {
  client_t *cl = arg;
  cl->rc = kt_send(&cl->c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
  if (cl->rc == 0)
    cl->rc = kt_response(&cl->c, &cl->r, false);
  cl->closed = kt_closed(&cl->c);
  return 0;
}

static int idle(void *arg) {
  client_t *cl = arg;
  cl->closed = kt_closed(&cl->c);
  cl->closed_at = keel_now_ns();
  return 0;
}

static int drain_case(void *arg) {
  (void)arg;
  keel_http_router_t *r;
  CHECK_RC(keel_http_router_open(&r));
  CHECK_RC(keel_http_route(r, "GET", "/slow", 0, slow, NULL));
  CHECK_RC(keel_http_route(r, "GET", "/fast", 0, fast, NULL));
  keel_http_server_opts_t o = {.handler = keel_http_router_handler, .ctx = r};
  kt_server_t srv;
  CHECK_RC(kt_server_start(&srv, &o));
  client_t *cl = calloc(IN_FLIGHT + 1, sizeof *cl); /* responses are large for a stack */
  CHECK(cl != NULL);
  keel_scope_t *clients;
  CHECK_RC(keel_scope_open(NULL, &clients));
  for (int i = 0; i <= IN_FLIGHT; i++) {
    CHECK_RC(kt_connect(&srv, &cl[i].c));
    cl[i].srv = &srv;
  }
  /* The idle one has had a request: it sits between requests. */
  kt_resp_t fr;
  KT_EXCHANGE(&cl[IN_FLIGHT].c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", &fr, 200);
  kt_resp_free(&fr);
  for (int i = 0; i < IN_FLIGHT; i++)
    CHECK_RC(keel_spawn(clients, in_flight, &cl[i], NULL));
  CHECK_RC(keel_spawn(clients, idle, &cl[IN_FLIGHT], NULL));
  CHECK_RC(keel_sleep_ms(50)); /* every handler waits now */
  int64_t t0 = keel_now_ns();
  CHECK_RC(kt_server_stop(&srv)); /* returns once drained */
  int64_t drained = keel_now_ns() - t0;
  CHECK_RC(keel_scope_join(clients));
  keel_scope_close(clients);
  for (int i = 0; i < IN_FLIGHT; i++) {
    CHECK_RC(cl[i].rc);
    CHECK_EQ(cl[i].r.status, 200);
    CHECK_EQ(cl[i].r.body_len, BODY_LEN);
    CHECK(strcmp(kt_field(&cl[i].r, "Connection"), "close") == 0);
    CHECK(cl[i].closed);
    kt_resp_free(&cl[i].r);
    kt_disconnect(&cl[i].c);
  }
  /* The idle connection closed at once, not after the slow requests. */
  CHECK(cl[IN_FLIGHT].closed);
  CHECK_BETWEEN(cl[IN_FLIGHT].closed_at - t0, 0, 100 * KEEL_NS_PER_MS + kt_late_ns());
  kt_disconnect(&cl[IN_FLIGHT].c);
  CHECK_BETWEEN(drained, (SLEEP_MS - 60) * KEEL_NS_PER_MS,
                SLEEP_MS * KEEL_NS_PER_MS + kt_late_ns());
  /* Nobody listens any more. */
  keel_tcp_t *late;
  int rc = keel_tcp_connect(srv.addr, &late);
  if (rc == 0)
    keel_tcp_close(late);
  CHECK_EQ(rc, -ECONNREFUSED);
  keel_http_router_close(r);
  free(cl);
  return 0;
}

/* A request whose bytes reached the server just before the drain began,
 * before its connection's task read them: it is in flight too, and gets
 * its whole answer (with Connection: close), not a closed connection. */
static int arrived_case(void *arg) {
  (void)arg;
  keel_http_router_t *r;
  CHECK_RC(keel_http_router_open(&r));
  CHECK_RC(keel_http_route(r, "GET", "/fast", 0, fast, NULL));
  keel_http_server_opts_t o = {.handler = keel_http_router_handler, .ctx = r};
  kt_server_t srv;
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  CHECK_RC(kt_connect(&srv, &c));
  kt_resp_t *resp = calloc(1, sizeof *resp);
  CHECK(resp != NULL);
  KT_EXCHANGE(&c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n", resp, 200);
  kt_resp_free(resp);
  CHECK_RC(keel_sleep_ms(20)); /* the connection is parked, idle */
  CHECK_RC(kt_send(&c, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n"));
  /* Where the bytes wait for the parked task (the socket, keel's buffer,
   * the lab pipe), the drain now begins before the task reads them. */
  keel_scope_cancel(srv.scope, KEEL_CANCEL_USER);
  CHECK_RC(kt_response(&c, resp, false));
  CHECK_EQ(resp->status, 200);
  CHECK(strcmp(resp->body, "ok") == 0);
  CHECK(strcmp(kt_field(resp, "Connection"), "close") == 0);
  kt_resp_free(resp);
  free(resp);
  CHECK(kt_closed(&c));
  kt_disconnect(&c);
  CHECK_RC(kt_server_stop(&srv));
  keel_http_router_close(r);
  return 0;
}

static void test_arrived(void **state) {
  (void)state;
  kt_run_body(arrived_case, NULL, 1);
}

static void test_drain(void **state) {
  (void)state;
  kt_run_body(drain_case, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_drain), cmocka_unit_test(test_arrived)};
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
