/* Faults at scale, in lab mode: 10,000 clients at once (half HTTP, half
 * WebSocket) against one server over the lab network with dropped
 * connections, refused and hanging connects and reads and writes that move
 * only part of the bytes. Every client ends in one of two ways: its
 * conversation whole and every answer right, or a clean error (reset, end
 * of stream, refused, timed out) — never a wrong answer, a hang or a
 * crash. Then, with the faults off, the server still answers; every
 * WebSocket it held is closed (its metrics say none is open) and its
 * handlers are gone. Seeds replay: two runs of a seed, one trace. */
#define KT_GUARD_MS 3600000 /* virtual time */
#include "http-test.h"

#define CLIENTS (10000 / KT_SCALE)
#define SEEDS (KT_SANITIZED ? 1 : 2)
/* Runs of a seed, whose traces must agree (one under the sanitizers: the
 * default build checks the replay). */
#define REPLAYS (KT_SANITIZED ? 1 : 2)

static int hello(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  if (!strcmp(keel_http_path(req), "/ws")) {
    keel_ws_t *ws;
    int rc = keel_ws_accept(req, res, NULL, &ws);
    if (rc < 0)
      return keel_http_responded(res) ? 0 : rc;
    const void *data;
    size_t len;
    while ((rc = keel_ws_recv(ws, &data, &len)) > 0)
      if (keel_ws_send(ws, rc, data, len) < 0)
        break;
    keel_ws_close(ws, 0, NULL);
    return 0;
  }
  if (!strcmp(keel_http_path(req), "/metrics"))
    return keel_http_metrics_handler(req, res, NULL);
  const void *body;
  size_t len;
  int rc = keel_http_body(req, &body, &len);
  if (rc < 0)
    return rc;
  return len ? keel_http_send(res, body, len) : keel_http_send(res, "Hello, World!", 13);
}

typedef struct run {
  kt_server_t srv;
  int whole, cut, refused, timed_out;
} run_t;

/* An error a fault may cause; anything else is a failure. */
static bool clean_error(int rc) {
  return rc == -ECONNRESET || rc == -EPIPE || rc == -ECONNREFUSED || rc == -ETIMEDOUT ||
         rc == -ECONNABORTED;
}

static int http_client(run_t *run) {
  kt_conn_t c = {0};
  kt_resp_t r = {0};
  int rc = keel_tcp_connect(run->srv.addr, &c.tcp);
  if (rc == 0 && (rc = keel_bufstream_open(keel_tcp_stream(c.tcp), NULL, &c.bs)) == 0)
    c.s = keel_bufstream_stream(c.bs);
  if (rc == 0)
    rc = kt_try_send(&c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"
                         "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                         "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
  if (rc == 0 && (rc = kt_response(&c, &r, false)) == 0)
    CHECK(r.status == 200 && !strcmp(r.body, "Hello, World!"));
  kt_resp_free(&r);
  if (rc == 0 && (rc = kt_response(&c, &r, false)) == 0)
    CHECK(r.status == 200 && !strcmp(r.body, "abcdefg"));
  kt_resp_free(&r);
  if (c.tcp && !c.s)
    keel_tcp_close(c.tcp);
  kt_disconnect(&c);
  return rc;
}

static int ws_client(run_t *run) {
  char url[128];
  snprintf(url, sizeof url, "ws://%s/ws", run->srv.addr);
  keel_ws_t *ws;
  int rc = keel_ws_connect(url, NULL, &ws);
  if (rc < 0)
    return rc;
  for (int i = 0; i < 3 && rc == 0; i++) {
    char msg[32];
    int n = snprintf(msg, sizeof msg, "message %d", i);
    const void *data;
    size_t len;
    if ((rc = keel_ws_send(ws, KEEL_WS_TEXT, msg, (size_t)n)) < 0)
      break;
    rc = keel_ws_recv(ws, &data, &len);
    if (rc == KEEL_WS_TEXT) {
      CHECK(len == (size_t)n && !memcmp(data, msg, len));
      rc = 0;
    } else if (rc == 0) {
      rc = -EPIPE; /* closed under it: the peer's close after a fault */
    }
  }
  int crc = keel_ws_close(ws, 0, NULL);
  return rc < 0 ? rc : crc == 0 || clean_error(crc) ? 0 : crc;
}

typedef struct client {
  run_t *run;
  bool ws;
} client_t;

static int client_task(void *arg) {
  client_t *cl = arg;
  run_t *run = cl->run;
  int rc = cl->ws ? ws_client(run) : http_client(run);
  if (rc == 0)
    run->whole++;
  else if (rc == -ECONNREFUSED)
    run->refused++;
  else if (rc == -ETIMEDOUT)
    run->timed_out++;
  else if (clean_error(rc))
    run->cut++;
  else
    CHECK_EQ(rc, 0); /* a wrong answer or an unexpected error */
  return atomic_load(&kt_failed) ? -EPROTO : 0;
}

static int scale_body(void *arg) {
  run_t *run = arg;
  keel_lab_net_faults_t f = {
      .refuse_permille = 5,
      .hang_permille = 5,
      .drop_permille = 2,
      .conn = {.capacity = 256, .delay_max_ns = 2 * 1000 * 1000, .short_permille = 300},
  };
  CHECK_RC(keel_lab_net_faults(&f));
  keel_http_server_opts_t o = {.handler = hello, .max_conns = 2 * CLIENTS};
  CHECK_RC(kt_server_start(&run->srv, &o));
  static client_t clients[CLIENTS];
  keel_scope_t *sc;
  /* A hanging connect waits for the clients' deadline. */
  keel_scope_opts_t so = {.deadline_ns = keel_now_ns() + 60 * KEEL_NS_PER_SEC};
  CHECK_RC(keel_scope_open(&so, &sc));
  for (int i = 0; i < CLIENTS; i++) {
    clients[i] = (client_t){.run = run, .ws = i % 2};
    keel_spawn_opts_t sp = {.name = clients[i].ws ? "ws-client" : "http-client"};
    CHECK_RC(keel_spawn(sc, client_task, &clients[i], &sp));
  }
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK_EQ(run->whole + run->cut + run->refused + run->timed_out, CLIENTS);
  /* Faults off: the server answers, and holds no WebSocket any more. */
  CHECK_RC(keel_lab_net_faults(NULL));
  kt_conn_t c = {0};
  kt_resp_t r;
  CHECK_RC(kt_connect(&run->srv, &c));
  KT_EXCHANGE(&c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  const char *active = strstr(r.body, "\nkeel_ws_connections_active ");
  CHECK(active != NULL);
  CHECK_EQ(atoi(active + strlen("\nkeel_ws_connections_active ")), 0);
  kt_resp_free(&r);
  kt_disconnect(&c);
  keel_lab_trace_note((uint64_t)run->whole << 32 | (uint64_t)run->cut << 16 |
                      (uint64_t)(run->refused + run->timed_out));
  return kt_server_stop(&run->srv);
}

static void test_ten_thousand_faulty_clients(void **state) {
  (void)state;
  if (!kt_backend_selected(KEEL_BACKEND_LAB))
    skip();
  for (uint64_t seed = 1; seed <= SEEDS; seed++) {
    uint64_t trace[2] = {0, 0};
    run_t runs[2];
    for (int i = 0; i < REPLAYS; i++) {
      runs[i] = (run_t){0};
      int rc = kt_run_guarded_lab_traced(seed, scale_body, &runs[i], &trace[i]);
      if (rc != 0)
        fail_msg("seed %llu: %d (%s)", (unsigned long long)seed, rc, keel_strerror(rc));
    }
    if (REPLAYS > 1 && trace[0] != trace[1])
      fail_msg("seed %llu: two runs, two traces", (unsigned long long)seed);
    run_t *run = &runs[0];
    printf("# seed %llu: %d clients: %d whole, %d cut by a drop, %d refused, %d timed out\n",
           (unsigned long long)seed, CLIENTS, run->whole, run->cut, run->refused, run->timed_out);
    if (run->cut == 0 || run->refused == 0 || run->whole < CLIENTS / 2)
      fail_msg("seed %llu: the faults did not happen as drawn", (unsigned long long)seed);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ten_thousand_faulty_clients),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
