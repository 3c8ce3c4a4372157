/* WebSocket over a faulty lab network, 64 seeds, each run twice for the
 * same trace: small pipes, delays, and reads and writes that move only
 * part of the bytes split every handshake and frame at random points
 * (header, extended length, mask key, payload, inside UTF-8 code points),
 * with both server styles and with permessage-deflate. Every echo must be
 * exact. A second case adds dropped connections (a reset mid-frame): a
 * client then sees an error, never a wrong message, and the server goes
 * on serving the others. Lab mode only: the faults are the lab network's. */
#define KT_GUARD_MS 600000 /* virtual time */
#include "http-test.h"

#define SEEDS (KT_SCALE > 1 ? 16 : 64)
#define CLIENTS 4

typedef struct run {
  bool drops, sequential, deflate;
  keel_ws_opts_t ws;
  kt_server_t srv;
  int done, dropped;
} run_t;

static int echo_msg(keel_ws_t *ws, int op, const void *data, size_t len, void *ctx) {
  (void)ctx;
  return keel_ws_send(ws, op, data, len);
}

static int handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  run_t *run = ctx;
  if (!run->sequential)
    return keel_ws_accept(req, res, &run->ws, NULL) < 0 && !keel_http_responded(res) ? -EPROTO : 0;
  keel_ws_opts_t o = run->ws;
  o.on_message = NULL;
  keel_ws_t *ws;
  int rc = keel_ws_accept(req, res, &o, &ws);
  if (rc < 0)
    return keel_http_responded(res) ? 0 : rc;
  const void *d;
  size_t n;
  while ((rc = keel_ws_recv(ws, &d, &n)) > 0)
    if (keel_ws_send(ws, rc, d, n) < 0)
      break;
  keel_ws_close(ws, 0, NULL);
  return 0;
}

/* Text with multi-byte code points, so that splits land inside them. */
static char *message(size_t n, unsigned salt) {
  static const char *const pieces[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "z"};
  char *p = malloc(n + 4);
  size_t len = 0;
  while (len < n) {
    const char *s = pieces[(len * 7 + salt) % 5];
    size_t k = strlen(s);
    if (len + k > n)
      s = "y", k = 1;
    memcpy(p + len, s, k);
    len += k;
  }
  p[len] = 0;
  return p;
}

/* Returns 0 after every echo checked, the error that ended it when drops
 * are on, or fails the test. */
static int converse(run_t *run) {
  char url[128];
  snprintf(url, sizeof url, "ws://%s/", run->srv.addr);
  keel_ws_opts_t co = {0};
  co.deflate.enable = run->deflate;
  keel_ws_t *ws;
  int rc = keel_ws_connect(url, &co, &ws);
  if (rc < 0) {
    CHECK(run->drops);
    return rc;
  }
  static const size_t sizes[] = {0, 5, 125, 126, 700, 5000, 70000};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && rc >= 0; i++) {
    char *m = message(sizes[i], (unsigned)(i + keel_random_below(5)));
    size_t len = strlen(m);
    if (i % 2)
      rc = keel_ws_send(ws, KEEL_WS_TEXT, m, len);
    else {
      size_t cut = len / 3;
      rc = keel_ws_send_part(ws, KEEL_WS_TEXT, m, cut, false);
      if (rc >= 0)
        rc = keel_ws_send_part(ws, KEEL_WS_CONTINUATION, m + cut, len - cut, true);
    }
    if (rc >= 0 && i == 3)
      rc = keel_ws_ping(ws, "p", 1);
    const void *d;
    size_t n;
    if (rc >= 0) {
      rc = keel_ws_recv(ws, &d, &n);
      if (rc > 0) {
        CHECK_EQ(rc, KEEL_WS_TEXT);
        CHECK_EQ(n, len);
        CHECK(memcmp(d, m, n) == 0);
      } else if (rc == 0) {
        rc = -EPIPE; /* closed under us: only a drop does that */
      }
    }
    free(m);
  }
  if (rc < 0) {
    CHECK(run->drops);
    keel_ws_close(ws, 0, NULL);
    return rc;
  }
  const void *d;
  size_t n;
  rc = keel_ws_shutdown(ws, KEEL_WS_NORMAL, NULL);
  if (rc == 0)
    rc = keel_ws_recv(ws, &d, &n);
  keel_ws_close(ws, 0, NULL);
  if (rc < 0) {
    CHECK(run->drops);
    return rc;
  }
  CHECK_EQ(rc, 0);
  return 0;
}

static int client_task(void *arg) {
  run_t *run = arg;
  int rc = converse(run);
  if (atomic_load(&kt_failed))
    return -EPROTO;
  if (rc < 0)
    run->dropped++;
  else
    run->done++;
  return 0;
}

static int faults_body(void *arg) {
  run_t *run = arg;
  keel_lab_net_faults_t f = {
      .drop_permille = run->drops ? 1 : 0,
      .conn = {.capacity = 512, .delay_max_ns = 200 * 1000, .short_permille = 300},
  };
  CHECK_RC(keel_lab_net_faults(&f));
  run->ws.on_message = echo_msg;
  run->ws.deflate.enable = run->deflate;
  keel_http_server_opts_t o = {.handler = handler, .ctx = run};
  CHECK_RC(kt_server_start(&run->srv, &o));
  keel_scope_t *clients;
  CHECK_RC(keel_scope_open(NULL, &clients));
  for (int i = 0; i < CLIENTS; i++)
    CHECK_RC(keel_spawn(clients, client_task, run, NULL));
  CHECK_RC(keel_scope_join(clients));
  keel_scope_close(clients);
  CHECK_EQ(run->done + run->dropped, CLIENTS);
  if (!run->drops)
    CHECK_EQ(run->done, CLIENTS);
  keel_lab_trace_note((uint64_t)run->done << 8 | (uint64_t)run->dropped);
  return kt_server_stop(&run->srv);
}

static void run_seeds(bool drops, bool sequential, bool deflate) {
  int done = 0, dropped = 0;
  for (uint64_t seed = 1; seed <= SEEDS; seed++) {
    uint64_t trace[2];
    for (int i = 0; i < 2; i++) {
      run_t run = {.drops = drops, .sequential = sequential, .deflate = deflate};
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

#define CASE(name, drops, seq, deflate)         \
  static void test_##name(void **state) {       \
    (void)state;                                \
    if (!kt_backend_selected(KEEL_BACKEND_LAB)) \
      skip();                                   \
    run_seeds(drops, seq, deflate);             \
  }
CASE(split_per_message, false, false, false)
CASE(split_sequential, false, true, false)
CASE(split_deflate, false, false, true)
CASE(dropped, true, false, false)
CASE(dropped_sequential, true, true, false)
CASE(dropped_deflate, true, false, true)

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_per_message),  cmocka_unit_test(test_split_sequential),
      cmocka_unit_test(test_split_deflate),      cmocka_unit_test(test_dropped),
      cmocka_unit_test(test_dropped_sequential), cmocka_unit_test(test_dropped_deflate),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
