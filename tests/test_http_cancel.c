/* A request's handler runs in a scope that is cancelled when its client
 * goes away: the client's end of stream, its reset, or its half-close
 * seen while the handler waits cancel the handler at once (io_uring,
 * epoll, the lab network over 16 seeds). A client that stays gets its
 * answer; a client that goes away once the handler is done costs nothing,
 * and so does one that goes away just as it ends. A cancelled handler's
 * write, or its short end of a declared length, never takes the answers
 * queued before it down with it. */
#define KT_GUARD_MS 60000
#include "http-test.h"

#include <sys/socket.h>

typedef struct probe {
  int sleep_rc;    /* what the handler's wait returned */
  int64_t woke_at; /* when */
  int finished;    /* handlers that returned */
} probe_t;

static probe_t probe;

static int waiter(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  long ms = strtol(keel_http_query(req) + 3, NULL, 10); /* "ms=N" */
  probe.sleep_rc = keel_sleep_ms(ms);
  probe.woke_at = keel_now_ns();
  probe.finished++;
  if (probe.sleep_rc < 0)
    return probe.sleep_rc;
  return keel_http_send(res, "done", 4);
}

static keel_http_server_opts_t opts(void) {
  keel_http_server_opts_t o = {.handler = waiter};
  return o;
}

enum { GONE_CLOSE, GONE_RESET, GONE_SHUT_WR };

/* Resets the connection: SO_LINGER 0 on a socket, the lab's reset else. */
static int reset(kt_conn_t *c) {
  int fd = keel_tcp_fd(c->tcp);
  if (fd >= 0) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    CHECK_RC(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
  } else {
    CHECK_RC(keel_lab_pipe_reset(keel_tcp_stream(c->tcp)));
  }
  return 0;
}

static int gone(kt_server_t *srv, int how) {
  kt_conn_t c;
  probe = (probe_t){0};
  CHECK_RC(kt_connect(srv, &c));
  CHECK_RC(kt_send(&c, "GET /w?ms=20000 HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK_RC(keel_sleep_ms(50)); /* the handler is waiting now */
  CHECK_EQ(probe.finished, 0);
  int64_t t0 = keel_now_ns();
  if (how == GONE_SHUT_WR) {
    CHECK_RC(keel_stream_shutdown(c.s, SHUT_WR));
  } else {
    if (how == GONE_RESET)
      CHECK_RC(reset(&c));
    kt_disconnect(&c);
  }
  for (int i = 0; i < 10000 && probe.finished == 0; i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_EQ(probe.finished, 1);
  CHECK_EQ(probe.sleep_rc, -ECANCELED);
  CHECK_BETWEEN(probe.woke_at - t0, 0, 10 * KEEL_NS_PER_MS + kt_late_ns());
  if (how == GONE_SHUT_WR) {
    CHECK(kt_closed(&c)); /* no response: the server closed */
    kt_disconnect(&c);
  }
  return 0;
}

static int gone_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = opts();
  CHECK_RC(kt_server_start(&srv, &o));
  CHECK_RC(gone(&srv, GONE_CLOSE));
  CHECK_RC(gone(&srv, GONE_RESET));
  CHECK_RC(gone(&srv, GONE_SHUT_WR));
  return kt_server_stop(&srv);
}

/* A client that waits gets its answer, on the same connection again and
 * again: the watch must not misfire, nor keep the next request's bytes. */
static int stays_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = opts();
  CHECK_RC(kt_server_start(&srv, &o));
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  for (int i = 0; i < 3; i++) {
    probe = (probe_t){0};
    KT_EXCHANGE(&c, "GET /w?ms=30 HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
    CHECK(strcmp(r.body, "done") == 0);
    CHECK_EQ(probe.sleep_rc, 0);
    kt_resp_free(&r);
  }
  /* The next request sent while the handler waits: answered in order. */
  CHECK_RC(kt_send(&c, "GET /w?ms=50 HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK_RC(keel_sleep_ms(10));
  CHECK_RC(kt_send(&c, "GET /w?ms=0 HTTP/1.1\r\nHost: t\r\n\r\n"));
  for (int i = 0; i < 2; i++) {
    CHECK_RC(kt_response(&c, &r, false));
    CHECK_EQ(r.status, 200);
    kt_resp_free(&r);
  }
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

/* Clients that go away around the moment their handler ends: the
 * watch's end-of-stream read can complete in the loop iteration where the
 * handler ends and run after the connection's task has closed the
 * handler's scope (the server crashed there on io_uring). */
static int sleeper(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx; /* waiter's probe is one worker's: this runs on two */
  int rc = keel_sleep_ms(strtol(keel_http_query(req) + 3, NULL, 10));
  return rc < 0 ? rc : keel_http_send(res, "done", 4);
}

static int gone_as_done_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = {.handler = sleeper};
  CHECK_RC(kt_server_start(&srv, &o));
  for (int i = 0; i < 2000; i++) {
    kt_conn_t c;
    CHECK_RC(kt_connect(&srv, &c));
    CHECK_RC(kt_send(&c, "GET /w?ms=1 HTTP/1.1\r\nHost: t\r\n\r\n"));
    int64_t delay_ns = KEEL_NS_PER_MS / 2 + (i % 20) * KEEL_NS_PER_MS / 20; /* 0.5 .. 1.45 ms */
    CHECK_RC(keel_sleep_ns(delay_ns));
    kt_disconnect(&c);
  }
  kt_conn_t c;
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  KT_EXCHANGE(&c, "GET /w?ms=0 HTTP/1.1\r\nHost: t\r\n\r\n", &r, 200);
  kt_resp_free(&r);
  kt_disconnect(&c);
  return kt_server_stop(&srv);
}

/* A handler cancelled (its client gone, or its deadline) that writes
 * anyway, while the answer to the pipelined request before it is still
 * queued: that answer goes out whole (the cancelled write dropped it with
 * the queue, found by the http_chunked fuzz target). What follows is the
 * connection's end, or the late answer if its write went through first. */
static int late_writer(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  if (!strcmp(keel_http_path(req), "/quick"))
    return keel_http_send(res, "first", 5);
  int rc = keel_sleep_ms(20000);
  ssize_t n = keel_http_write(res, "late", 4);
  probe.sleep_rc = rc;
  probe.finished++;
  return n < 0 ? (int)n : 0;
}

/* The same, for a handler that declares a length, is cancelled and ends
 * its body short (keel_http_finish): the head it queued is cut short, the
 * answer before it goes out whole, then the connection closes. */
static int short_ender(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  if (!strcmp(keel_http_path(req), "/quick"))
    return keel_http_send(res, "first", 5);
  int rc = keel_sleep_ms(20000);
  int arc = keel_http_add_header(res, "Content-Length", "10");
  int frc = keel_http_finish(res);
  probe.sleep_rc = rc;
  probe.finished++;
  return arc < 0 ? arc : frc == -EPROTO ? 0 : (frc < 0 ? frc : -EBADMSG);
}

static int queued_ahead(kt_server_t *srv, bool shut_wr, bool short_end) {
  kt_conn_t c;
  kt_resp_t r;
  probe = (probe_t){0};
  CHECK_RC(kt_connect(srv, &c));
  CHECK_RC(kt_send(&c, "GET /quick HTTP/1.1\r\nHost: t\r\n\r\n"
                       "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"));
  if (shut_wr)
    CHECK_RC(keel_stream_shutdown(c.s, SHUT_WR));
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 200);
  CHECK(strcmp(r.body, "first") == 0);
  kt_resp_free(&r);
  int rc = kt_response(&c, &r, false);
  if (short_end) {
    CHECK(rc < 0);      /* a body of 10 declared, none sent: cut short */
  } else if (rc == 0) { /* the late write went out before its task saw the cancellation */
    CHECK_EQ(r.status, 200);
    CHECK(strcmp(r.body, "late") == 0);
  }
  kt_resp_free(&r);
  CHECK_EQ(probe.finished, 1);
  CHECK_EQ(probe.sleep_rc, shut_wr ? -ECANCELED : -ETIMEDOUT);
  kt_disconnect(&c);
  return 0;
}

static int queued_ahead_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = {.handler = late_writer, .request_timeout_ms = 100};
  CHECK_RC(kt_server_start(&srv, &o));
  CHECK_RC(queued_ahead(&srv, true, false));
  CHECK_RC(queued_ahead(&srv, false, false));
  return kt_server_stop(&srv);
}

static int short_end_case(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = {.handler = short_ender, .request_timeout_ms = 100};
  CHECK_RC(kt_server_start(&srv, &o));
  CHECK_RC(queued_ahead(&srv, true, true));
  CHECK_RC(queued_ahead(&srv, false, true));
  return kt_server_stop(&srv);
}

static void test_client_gone(void **state) {
  (void)state;
  kt_run_body(gone_case, NULL, 1);
}

static void test_client_gone_as_done(void **state) {
  (void)state;
  kt_run_body(gone_as_done_case, NULL, 2);
}

static void test_queued_ahead(void **state) {
  (void)state;
  kt_run_body(queued_ahead_case, NULL, 1);
}

static void test_short_end(void **state) {
  (void)state;
  kt_run_body(short_end_case, NULL, 1);
}

static void test_client_stays(void **state) {
  (void)state;
  kt_run_body(stays_case, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_client_gone),  cmocka_unit_test(test_client_gone_as_done),
      cmocka_unit_test(test_client_stays), cmocka_unit_test(test_queued_ahead),
      cmocka_unit_test(test_short_end),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
