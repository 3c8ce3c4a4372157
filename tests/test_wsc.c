/* The reconnecting WebSocket client against a keel WebSocket server of a
 * small text protocol, on io_uring, epoll and the lab network (exact
 * virtual times, many seeds): requests, updates and resume points; a
 * disconnect fails exactly the requests of its epoch; late answers never
 * reach a later request with the same id; auth and resubscribe on the same
 * socket, one connection at a time; backoff with and without jitter, the
 * reset of its count, max attempts; auth failure; pong timeout; control
 * before data; the last release ends the client within 1 s; subscription
 * reference counts; idempotent re-sends; event back-pressure.
 *
 * The protocol (text frames, words separated by spaces):
 *   client: "auth TOKEN", "sub TOPIC [FROM]", "unsub TOPIC",
 *           "req ID METHOD [ARG]" (echo ARG; sleep ARG ms; never; late2:
 *           answered only from the server's second connection on), "x ..."
 *   server: "auth ok CONN" | "auth no", "subok TOPIC", "unsubok TOPIC",
 *           "res ID ARG", "err ID", "upd TOPIC SEQ", "sys ..." */
#define KT_GUARD_MS 120000
#include "http-test.h"

#include <pthread.h>
#include <stdarg.h>

#define CHECK_STR(a, b)                                                   \
  do {                                                                    \
    const char *a_ = (a), *b_ = (b);                                      \
    if (!a_ || strcmp(a_, b_) != 0)                                       \
      KT_FAIL("%s == \"%s\" failed: \"%s\"", #a, b_, a_ ? a_ : "(null)"); \
  } while (0)

/* ---- The server ------------------------------------------------------------------- */

#define MAXC 64
#define LOGN 512

typedef struct fsrv {
  kt_server_t http;
  const char *token;
  bool reject; /* answer 503 to upgrades */
  bool deaf;   /* handlers stop reading (no pongs) */
  int conns;   /* upgrades accepted */
  int live, max_live;
  int attempts; /* upgrade requests, accepted or not */
  int64_t attempt_at[64];
  keel_ws_t *ws[MAXC + 1]; /* by connection number, while open */
  char subs[MAXC + 1][8];  /* topics subscribed, one letter each */
  int close_code[MAXC + 1];
  char log[LOGN][48]; /* "N: message" */
  int nlog;
  pthread_mutex_t mu; /* the log and the counts: the server may run on another worker */
} fsrv_t;

static void logf_(fsrv_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(fsrv_t *s, const char *fmt, ...) {
  pthread_mutex_lock(&s->mu);
  if (s->nlog < LOGN) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->log[s->nlog++], sizeof s->log[0], fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&s->mu);
}

static int fsend(keel_ws_t *ws, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fsend(keel_ws_t *ws, const char *fmt, ...) {
  char buf[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return keel_ws_send(ws, KEEL_WS_TEXT, buf, (size_t)n);
}

static int fsrv_handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  fsrv_t *s = ctx;
  if (s->attempts < 64)
    s->attempt_at[s->attempts] = keel_now_ns();
  s->attempts++;
  if (s->reject) {
    keel_http_set_status(res, 503);
    return keel_http_send(res, "down\n", 5);
  }
  keel_ws_t *ws;
  keel_ws_opts_t wo = {0};
  int rc = keel_ws_accept(req, res, &wo, &ws);
  if (rc < 0)
    return keel_http_responded(res) ? 0 : rc;
  pthread_mutex_lock(&s->mu);
  int n = ++s->conns;
  if (n <= MAXC) {
    s->ws[n] = ws;
    if (++s->live > s->max_live)
      s->max_live = s->live;
  }
  pthread_mutex_unlock(&s->mu);
  if (n > MAXC)
    return keel_ws_close(ws, 1011, NULL), 0;
  const void *data;
  size_t len;
  bool authed = false;
  while (!s->deaf && (rc = keel_ws_recv(ws, &data, &len)) > 0) {
    char msg[128], a[32] = "", b[32] = "", d[32] = "";
    snprintf(msg, sizeof msg, "%.*s", (int)(len < 127 ? len : 127), (const char *)data);
    logf_(s, "%d: %s", n, msg);
    unsigned long long id = 0;
    int count = 0;
    if (strncmp(msg, "x say ", 6) == 0) { /* the server says what it is told */
      rc = fsend(ws, "%s", msg + 6);
    } else if (sscanf(msg, "x pub %31s %d", a, &count) == 2) { /* from this connection's worker */
      for (int k = 1; k <= count && rc >= 0; k++)
        rc = strchr(s->subs[n], a[0]) ? fsend(ws, "upd %c %d", a[0], k) : 0;
    } else if (sscanf(msg, "auth %31s", a) == 1) {
      authed = strcmp(a, s->token) == 0;
      rc = authed ? fsend(ws, "auth ok %d", n) : fsend(ws, "auth no");
    } else if (!authed) {
      rc = fsend(ws, "sys refused");
    } else if (sscanf(msg, "sub %31s", a) == 1) {
      size_t k = strlen(s->subs[n]);
      if (k < 7)
        s->subs[n][k] = a[0];
      rc = fsend(ws, "subok %s", a);
    } else if (sscanf(msg, "unsub %31s", a) == 1) {
      char *p = strchr(s->subs[n], a[0]);
      if (p)
        memmove(p, p + 1, strlen(p));
      rc = fsend(ws, "unsubok %s", a);
    } else if (sscanf(msg, "req %llu %31s %31s", &id, b, d) >= 2) {
      if (strcmp(b, "echo") == 0)
        rc = fsend(ws, "res %llu %s", id, d);
      else if (strcmp(b, "sleep") == 0)
        rc = keel_sleep_ms(atoi(d)) < 0 ? -1 : fsend(ws, "res %llu slept", id);
      else if (strcmp(b, "late2") == 0)
        rc = n >= 2 ? fsend(ws, "res %llu on%d", id, n) : 0;
      else if (strcmp(b, "fail") == 0)
        rc = fsend(ws, "err %llu", id);
      else
        rc = 0; /* never */
    }
    if (rc < 0)
      break;
  }
  while (s->deaf && keel_sleep_ms(100) == 0 && s->ws[n])
    ;
  pthread_mutex_lock(&s->mu);
  s->close_code[n] = keel_ws_close_code(ws);
  s->ws[n] = NULL;
  s->subs[n][0] = '\0';
  s->live--;
  pthread_mutex_unlock(&s->mu);
  keel_ws_close(ws, 0, NULL);
  return 0;
}

static int fsrv_start(fsrv_t *s) {
  memset(s, 0, sizeof *s);
  pthread_mutex_init(&s->mu, NULL);
  s->token = "t0k";
  keel_http_server_opts_t o = {.handler = fsrv_handler, .ctx = s};
  return kt_server_start(&s->http, &o);
}

/* Drops every connection abruptly (no close frame). */
static void fsrv_drop(fsrv_t *s) {
  for (int i = 1; i <= MAXC; i++)
    if (s->ws[i])
      keel_stream_shutdown(keel_ws_stream(s->ws[i]), SHUT_RDWR);
}

static void fsrv_publish(fsrv_t *s, char topic, uint64_t seq) {
  for (int i = 1; i <= MAXC; i++)
    if (s->ws[i] && strchr(s->subs[i], topic))
      fsend(s->ws[i], "upd %c %llu", topic, (unsigned long long)seq);
}

static bool logged(fsrv_t *s, const char *line) {
  bool found = false;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->nlog && !found; i++)
    found = strcmp(s->log[i], line) == 0;
  pthread_mutex_unlock(&s->mu);
  return found;
}

static int count_logged(fsrv_t *s, const char *prefix) {
  int k = 0;
  pthread_mutex_lock(&s->mu);
  for (int i = 0; i < s->nlog; i++)
    k += strncmp(s->log[i], prefix, strlen(prefix)) == 0;
  pthread_mutex_unlock(&s->mu);
  return k;
}

/* ---- The protocol, client side ------------------------------------------------------ */

typedef struct cproto {
  const char *token;
  int auths;
} cproto_t;

static int p_auth(void *ctx, keel_wsc_out_t *o) {
  cproto_t *p = ctx;
  p->auths++;
  return keel_wsc_out_printf(o, "auth %s", p->token) < 0 ? -ENOMEM : 1;
}

static int p_sub(void *ctx, const char *topic, const uint64_t *from, keel_wsc_out_t *o) {
  (void)ctx;
  int rc = from ? keel_wsc_out_printf(o, "sub %s %llu", topic, (unsigned long long)*from)
                : keel_wsc_out_printf(o, "sub %s", topic);
  return rc < 0 ? rc : 1;
}

static int p_unsub(void *ctx, const char *topic, keel_wsc_out_t *o) {
  (void)ctx;
  return keel_wsc_out_printf(o, "unsub %s", topic) < 0 ? -ENOMEM : 1;
}

static int p_classify(void *ctx, int op, const void *data, size_t len, keel_wsc_msg_t *m) {
  (void)ctx;
  (void)op;
  char msg[128];
  snprintf(msg, sizeof msg, "%.*s", (int)(len < 127 ? len : 127), (const char *)data);
  unsigned long long id, seq;
  if (strncmp(msg, "auth ok", 7) == 0)
    m->kind = KEEL_WSC_AUTH_OK;
  else if (strncmp(msg, "auth no", 7) == 0) {
    m->kind = KEEL_WSC_AUTH_FAILED;
    m->reason = "bad token";
    m->reason_len = 9;
  } else if (sscanf(msg, "res %llu", &id) == 1) {
    m->kind = KEEL_WSC_RESPONSE;
    m->id = id;
  } else if (sscanf(msg, "err %llu", &id) == 1) {
    m->kind = KEEL_WSC_RESPONSE;
    m->id = id;
    m->error = true;
  } else if (sscanf(msg, "upd %*c %llu", &seq) == 1) {
    m->kind = KEEL_WSC_UPDATE;
    m->topic = (const char *)data + 4;
    m->topic_len = 1;
    m->seq = seq;
    m->has_seq = true;
  } else if (strncmp(msg, "subok", 5) == 0 || strncmp(msg, "unsubok", 7) == 0)
    m->kind = KEEL_WSC_IGNORE;
  else if (strncmp(msg, "sys", 3) == 0)
    m->kind = KEEL_WSC_SYSTEM;
  else if (strncmp(msg, "bad", 3) == 0)
    return -EPROTO;
  else
    m->kind = KEEL_WSC_UNKNOWN;
  return 0;
}

typedef struct fixture {
  fsrv_t srv;
  cproto_t cp;
  keel_wsc_proto_t proto;
  keel_wsc_opts_t opts;
  char url[128];
  keel_wsc_t *c;
} fixture_t;

static int fx_open(fixture_t *f) {
  CHECK_RC(fsrv_start(&f->srv));
  f->cp = (cproto_t){.token = "t0k"};
  f->proto = (keel_wsc_proto_t){.ctx = &f->cp,
                                .auth = p_auth,
                                .subscribe = p_sub,
                                .unsubscribe = p_unsub,
                                .classify = p_classify};
  snprintf(f->url, sizeof f->url, "ws://%s/", f->srv.http.addr);
  f->opts.url = f->url;
  f->opts.events = true;
  f->opts.backoff_initial_ms = 100;
  f->opts.backoff_max_ms = 1000;
  f->opts.no_jitter = true;
  return 0;
}

static int fx_start(fixture_t *f) { return keel_wsc_open(NULL, &f->opts, &f->proto, &f->c); }

static int fx_close(fixture_t *f) {
  if (f->c)
    keel_wsc_release(f->c);
  f->c = NULL;
  CHECK_RC(keel_sleep_ms(1100)); /* the owner ends within 1 s */
  pthread_mutex_lock(&f->srv.mu);
  int max_live = f->srv.max_live;
  pthread_mutex_unlock(&f->srv.mu);
  CHECK(max_live <= 1); /* never two connections at once */
  kt_server_stop(&f->srv.http);
  pthread_mutex_destroy(&f->srv.mu);
  return 0;
}

/* The next event of type want (others skipped, message data freed). */
static int next_of(keel_wsc_t *c, keel_wsc_event_type_t want, keel_wsc_event_t *ev) {
  for (;;) {
    int rc = keel_wsc_event(c, ev);
    if (rc < 0)
      return rc;
    if (ev->type == KEEL_WSC_EV_MESSAGE)
      free(ev->data);
    if (ev->type == want)
      return 0;
  }
}

static int req(keel_wsc_t *c, uint64_t id, const char *method, const char *arg, char *resp,
               size_t cap, keel_wsc_req_t *out) {
  char msg[96];
  int n = snprintf(msg, sizeof msg, "req %llu %s %s", (unsigned long long)id, method, arg);
  keel_wsc_req_t r = {.id = id, .data = msg, .len = (size_t)n, .resp = resp, .resp_cap = cap};
  if (out) {
    r.idempotent = out->idempotent;
    r.timeout_ms = out->timeout_ms;
  }
  int rc = keel_wsc_request(c, &r);
  if (rc >= 0 && cap > r.resp_len)
    resp[r.resp_len] = '\0';
  if (out)
    *out = r;
  return rc;
}

/* ---- Requests, updates, resubscribe with the resume point ------------------------------- */

typedef struct bg {
  keel_wsc_t *c;
  uint64_t id;
  const char *method;
  int rc;
  keel_wsc_req_t r;
  bool done;
} bg_t;

static int bg_req(void *arg) {
  bg_t *b = arg;
  char resp[64];
  b->rc = req(b->c, b->id, b->method, "x", resp, sizeof resp, &b->r);
  b->done = true;
  return 0;
}

static int basic_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  CHECK_RC(fx_start(&f));
  keel_wsc_event_t ev;
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  CHECK_EQ(ev.epoch, 1u);
  char resp[64];
  keel_wsc_req_t r = {0};
  CHECK_RC(req(f.c, 1, "echo", "hello", resp, sizeof resp, &r));
  CHECK_STR(resp, "res 1 hello");
  CHECK_EQ(r.epoch, 1u);
  CHECK_EQ(r.sends, 1u);
  CHECK_EQ(req(f.c, 2, "fail", "-", resp, sizeof resp, NULL), -EREMOTEIO);
  CHECK_EQ(req(f.c, 3, "echo", "a-long-answer", resp, 4, &r), -EMSGSIZE);
  CHECK_EQ(r.resp_len, strlen("res 3 a-long-answer"));
  keel_wsc_sub_t *sa;
  CHECK_RC(keel_wsc_subscribe(f.c, "a", &sa));
  CHECK_STR(keel_wsc_sub_topic(sa), "a");
  /* The subscribe is out once a request sent after it is answered. */
  CHECK_RC(req(f.c, 4, "echo", "sync", resp, sizeof resp, NULL));
  CHECK(logged(&f.srv, "1: sub a"));
  fsrv_publish(&f.srv, 'a', 1);
  fsrv_publish(&f.srv, 'a', 2);
  keel_wsc_update_t u;
  CHECK_EQ(keel_wsc_sub_recv(sa, resp, sizeof resp, &u), 7);
  CHECK(u.has_seq && u.seq == 1 && u.epoch == 1);
  CHECK_EQ(keel_wsc_sub_recv(sa, resp, sizeof resp, &u), 7);
  CHECK_EQ(u.seq, 2u);
  /* A disconnect: the pending request of epoch 1 fails, nothing else. */
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  bg_t b = {.c = f.c, .id = 10, .method = "never"};
  CHECK_RC(keel_spawn(sc, bg_req, &b, NULL));
  while (!logged(&f.srv, "1: req 10 never x"))
    CHECK_RC(keel_sleep_ms(1));
  fsrv_drop(&f.srv);
  CHECK_RC(keel_scope_join(sc));
  CHECK_EQ(b.rc, -ECONNRESET);
  CHECK_EQ(b.r.epoch, 1u);
  CHECK_STR(b.r.why, "disconnected");
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_DISCONNECTED, &ev));
  CHECK_EQ(ev.epoch, 1u);
  CHECK_EQ(ev.delay_ms, 100); /* the first failure: the initial delay */
  /* A request made meanwhile waits for the next connection. */
  CHECK_RC(req(f.c, 11, "echo", "again", resp, sizeof resp, &r));
  CHECK_EQ(r.epoch, 2u);
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  CHECK_EQ(ev.epoch, 2u);
  /* Same socket: auth first, then the resubscribe from seq 3. */
  int first = -1, sub = -1;
  for (int i = 0; i < f.srv.nlog; i++) {
    if (first < 0 && strncmp(f.srv.log[i], "2: ", 3) == 0)
      first = i;
    if (strcmp(f.srv.log[i], "2: sub a 3") == 0)
      sub = i;
  }
  CHECK(first >= 0 && strcmp(f.srv.log[first], "2: auth t0k") == 0);
  CHECK(sub > first);
  CHECK_EQ(f.srv.conns, 2);
  keel_wsc_stats_t st;
  keel_wsc_stats(f.c, &st);
  CHECK_EQ(st.epoch, 2u);
  CHECK_EQ(st.reconnects, 1u);
  CHECK_EQ(st.requests_failed, 1u);
  CHECK_EQ(st.pending, 0u);
  CHECK_EQ(st.topics, 1u);
  keel_wsc_sub_release(sa);
  keel_scope_close(sc);
  CHECK_RC(fx_close(&f));
  CHECK_EQ(f.srv.close_code[2], 1000);
  return 0;
}
static void test_basic_and_reconnect(void **state) {
  (void)state;
  kt_run_body(basic_body, NULL, 1);
}

/* ---- Late answers never reach a later request with the same id ------------------------- */

static int late_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  CHECK_RC(fx_start(&f));
  char resp[64];
  keel_wsc_req_t r = {.timeout_ms = 100};
  CHECK_EQ(req(f.c, 5, "sleep", "300", resp, sizeof resp, &r), -ETIMEDOUT);
  /* Id 5 stays taken on this connection until its answer comes. */
  CHECK_EQ(req(f.c, 5, "echo", "second", resp, sizeof resp, NULL), -EEXIST);
  CHECK_RC(keel_sleep_ms(400));
  CHECK_RC(req(f.c, 5, "echo", "second", resp, sizeof resp, NULL));
  CHECK_STR(resp, "res 5 second");
  keel_wsc_stats_t st;
  keel_wsc_stats(f.c, &st);
  CHECK_EQ(st.responses_dropped, 1u);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_late_answer_dropped(void **state) {
  (void)state;
  kt_run_body(late_body, NULL, 1);
}

/* ---- Backoff --------------------------------------------------------------------------- */

static int backoff_exact_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.srv.reject = true;
  f.opts.max_attempts = 7;
  CHECK_RC(fx_start(&f));
  int64_t want[] = {100, 200, 400, 800, 1000, 1000};
  keel_wsc_event_t ev;
  for (int i = 0; i < 6; i++) {
    CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECT_FAILED, &ev));
    CHECK_EQ(ev.delay_ms, want[i]);
    CHECK_EQ(ev.attempt, (unsigned)i + 1);
    CHECK(strstr(ev.reason, "503") != NULL);
  }
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_GAVE_UP, &ev));
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CLOSED, &ev));
  CHECK_EQ(keel_wsc_event(f.c, &ev), -EPIPE);
  CHECK_EQ(f.srv.attempts, 7);
  /* In lab mode time is exact: each attempt came its delay after the last. */
  if (keel_lab_active())
    for (int i = 0; i < 6; i++) {
      int64_t gap = f.srv.attempt_at[i + 1] - f.srv.attempt_at[i];
      CHECK_BETWEEN(gap, want[i] * KEEL_NS_PER_MS, want[i] * KEEL_NS_PER_MS + 20 * KEEL_NS_PER_MS);
    }
  char resp[8];
  CHECK_EQ(req(f.c, 1, "echo", "x", resp, sizeof resp, NULL), -ESHUTDOWN);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_backoff_exact_and_max_attempts(void **state) {
  (void)state;
  kt_run_where(KT_ON_LAB, backoff_exact_body, NULL, 1, 1, 4);
}

static int backoff_jitter_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.srv.reject = true;
  f.opts.no_jitter = false;
  f.opts.max_attempts = 12;
  CHECK_RC(fx_start(&f));
  int64_t ceil[] = {100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000, 1000};
  int below = 0;
  keel_wsc_event_t ev;
  for (int i = 0; i < 11; i++) {
    CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECT_FAILED, &ev));
    CHECK(ev.delay_ms >= 0 && ev.delay_ms <= ceil[i]);
    below += ev.delay_ms < ceil[i];
  }
  CHECK(below > 0); /* drawn, not the ceiling each time */
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_GAVE_UP, &ev));
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_backoff_jitter(void **state) {
  (void)state;
  kt_run_where(KT_ON_LAB, backoff_jitter_body, NULL, 1, 1, 32);
}

/* The count restarts after a connection that got through auth. */
static int reset_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.srv.reject = true;
  CHECK_RC(fx_start(&f));
  keel_wsc_event_t ev;
  for (int i = 0; i < 3; i++)
    CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECT_FAILED, &ev));
  CHECK_EQ(ev.delay_ms, 400);
  f.srv.reject = false;
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  fsrv_drop(&f.srv);
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_DISCONNECTED, &ev));
  CHECK_EQ(ev.delay_ms, 100);
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  CHECK_EQ(ev.epoch, 2u);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_backoff_reset(void **state) {
  (void)state;
  kt_run_where(KT_ON_LAB, reset_body, NULL, 1, 1, 8);
}

/* ---- Auth failure, pong timeout -------------------------------------------------------- */

static int auth_fail_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.cp.token = "wrong";
  f.opts.max_attempts = 2;
  CHECK_RC(fx_start(&f));
  keel_wsc_event_t ev;
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECT_FAILED, &ev));
  CHECK(strstr(ev.reason, "auth failed: bad token") != NULL);
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_GAVE_UP, &ev));
  CHECK_EQ(keel_wsc_epoch(f.c), 0u);
  CHECK_EQ(f.srv.conns, 2);
  CHECK(!logged(&f.srv, "1: sub a"));
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_auth_failure(void **state) {
  (void)state;
  kt_run_body(auth_fail_body, NULL, 1);
}

static int pong_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.opts.ping_interval_ms = 1000;
  f.opts.pong_timeout_ms = 500;
  CHECK_RC(fx_start(&f));
  keel_wsc_event_t ev;
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  f.srv.deaf = true;
  CHECK_RC(keel_wsc_send(f.c, 0, "x deaf", 6)); /* the server reads it, then no more */
  while (!logged(&f.srv, "1: x deaf"))
    CHECK_RC(keel_sleep_ms(1));
  int64_t t0 = keel_now_ns();
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_DISCONNECTED, &ev));
  CHECK_STR(ev.reason, "pong timeout");
  int64_t took = keel_now_ns() - t0;
  /* A ping 1 s after the last byte came (just before t0), no pong in 0.5 s. */
  CHECK_BETWEEN(took, 1400 * KEEL_NS_PER_MS, 1500 * KEEL_NS_PER_MS + kt_late_ns());
  f.srv.deaf = false;
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  CHECK_EQ(ev.epoch, 2u);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_pong_timeout(void **state) {
  (void)state;
  kt_run_body(pong_body, NULL, 1);
}

/* ---- Control before data; release; subscriptions; idempotent; events ------------------- */

typedef struct sender {
  keel_wsc_t *c;
  int n;
} sender_t;

static int send_task(void *arg) {
  sender_t *s = arg;
  char m[16];
  int n = snprintf(m, sizeof m, "x %d", s->n);
  return keel_wsc_send(s->c, 0, m, (size_t)n) < 0 ? -EIO : 0;
}

static int control_first_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  CHECK_RC(fx_start(&f));
  keel_wsc_event_t ev;
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  /* The owner is woken for the reconnect before the senders queue, and
   * runs (this worker has one thread) only once this task blocks: by then
   * control and data are both waiting, in an order the seed picks. */
  CHECK_RC(keel_wsc_reconnect(f.c, "test"));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  sender_t s[3];
  for (int i = 0; i < 3; i++) {
    s[i] = (sender_t){f.c, i};
    CHECK_RC(keel_spawn(sc, send_task, &s[i], NULL));
  }
  CHECK_RC(keel_scope_join(sc));
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_DISCONNECTED, &ev));
  CHECK_STR(ev.reason, "reconnect: test");
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  char resp[32];
  CHECK_RC(req(f.c, 1, "echo", "sync", resp, sizeof resp, NULL));
  CHECK_EQ(count_logged(&f.srv, "1: x "), 0); /* none went out before the reconnect */
  CHECK_EQ(count_logged(&f.srv, "2: x "), 3);
  keel_scope_close(sc);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_control_before_data(void **state) {
  (void)state;
  kt_run_body(control_first_body, NULL, 1);
}

static int release_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.opts.events = false;
  CHECK_RC(fx_start(&f));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  bg_t b = {.c = keel_wsc_ref(f.c), .id = 7, .method = "never"};
  CHECK_RC(keel_spawn(sc, bg_req, &b, NULL));
  while (!logged(&f.srv, "1: req 7 never x"))
    CHECK_RC(keel_sleep_ms(1));
  keel_wsc_release(f.c); /* one handle left: nothing happens */
  f.c = NULL;
  CHECK_RC(keel_sleep_ms(50));
  CHECK(!b.done);
  int64_t t0 = keel_now_ns();
  keel_wsc_release(b.c); /* the last one */
  CHECK_RC(keel_scope_join(sc));
  CHECK_EQ(b.rc, -ESHUTDOWN);
  while (f.srv.live > 0)
    CHECK_RC(keel_sleep_ms(1));
  CHECK(keel_now_ns() - t0 < 1000 * KEEL_NS_PER_MS + kt_late_ns());
  CHECK_EQ(f.srv.close_code[1], 1000);
  keel_scope_close(sc);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_release_shuts_down(void **state) {
  (void)state;
  kt_run_body(release_body, NULL, 1);
}

static int refcount_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  CHECK_RC(fx_start(&f));
  char resp[32];
  keel_wsc_sub_t *g1, *g2, *g3;
  CHECK_RC(keel_wsc_subscribe(f.c, "a", &g1));
  CHECK_RC(keel_wsc_subscribe(f.c, "a", &g2));
  CHECK_RC(req(f.c, 1, "echo", "sync", resp, sizeof resp, NULL));
  CHECK_EQ(count_logged(&f.srv, "1: sub a"), 1);
  fsrv_publish(&f.srv, 'a', 1);
  keel_wsc_update_t u;
  CHECK_EQ(keel_wsc_sub_recv(g1, resp, sizeof resp, &u), 7);
  CHECK_EQ(keel_wsc_sub_recv(g2, resp, sizeof resp, &u), 7); /* each guard has its own */
  keel_wsc_sub_release(g1);
  CHECK_RC(req(f.c, 2, "echo", "sync", resp, sizeof resp, NULL));
  CHECK_EQ(count_logged(&f.srv, "1: unsub a"), 0);
  keel_wsc_sub_release(g2);
  CHECK_RC(req(f.c, 3, "echo", "sync", resp, sizeof resp, NULL));
  CHECK_EQ(count_logged(&f.srv, "1: unsub a"), 1);
  /* Explicit unsubscribe, then release: one unsubscribe. */
  CHECK_RC(keel_wsc_subscribe(f.c, "b", &g3));
  CHECK_RC(keel_wsc_unsubscribe(g3));
  CHECK_EQ(keel_wsc_unsubscribe(g3), -EALREADY);
  CHECK_EQ(keel_wsc_sub_recv(g3, resp, sizeof resp, &u), -ENOTCONN);
  keel_wsc_sub_release(g3);
  CHECK_RC(req(f.c, 4, "echo", "sync", resp, sizeof resp, NULL));
  CHECK(count_logged(&f.srv, "1: unsub b") <= 1);
  CHECK_EQ(count_logged(&f.srv, "1: sub b"), count_logged(&f.srv, "1: unsub b"));
  keel_wsc_stats_t st;
  keel_wsc_stats(f.c, &st);
  CHECK_EQ(st.topics, 0u);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_subscription_refcount(void **state) {
  (void)state;
  kt_run_body(refcount_body, NULL, 1);
}

static int idempotent_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  CHECK_RC(fx_start(&f));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  bg_t b = {.c = f.c, .id = 9, .method = "late2", .r = {.idempotent = true}};
  CHECK_RC(keel_spawn(sc, bg_req, &b, NULL));
  bg_t n = {.c = f.c, .id = 8, .method = "never"};
  CHECK_RC(keel_spawn(sc, bg_req, &n, NULL));
  while (!logged(&f.srv, "1: req 9 late2 x") || !logged(&f.srv, "1: req 8 never x"))
    CHECK_RC(keel_sleep_ms(1));
  fsrv_drop(&f.srv);
  CHECK_RC(keel_scope_join(sc));
  CHECK_EQ(n.rc, -ECONNRESET);
  CHECK_RC(b.rc);
  CHECK_EQ(b.r.sends, 2u);
  CHECK_EQ(b.r.epoch, 2u);
  CHECK(logged(&f.srv, "2: req 9 late2 x"));
  keel_scope_close(sc);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_idempotent_resend(void **state) {
  (void)state;
  kt_run_body(idempotent_body, NULL, 1);
}

static int events_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.opts.event_capacity = 3;
  f.cp.token = "t0k";
  CHECK_RC(fx_start(&f));
  while (f.srv.conns < 1 || !logged(&f.srv, "1: auth t0k"))
    CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_sleep_ms(10)); /* connected is queued: 2 places left */
  for (int i = 0; i < 10; i++)
    fsend(f.srv.ws[1], "sys %d", i);
  char resp[32];
  CHECK_RC(req(f.c, 1, "echo", "sync", resp, sizeof resp, NULL));
  fsrv_drop(&f.srv); /* lifecycle events wait for room */
  CHECK_RC(keel_sleep_ms(300));
  keel_wsc_event_t ev;
  CHECK_RC(keel_wsc_event(f.c, &ev));
  CHECK_EQ(ev.type, KEEL_WSC_EV_CONNECTED);
  int msgs = 0;
  for (;;) {
    CHECK_RC(keel_wsc_event(f.c, &ev));
    if (ev.type != KEEL_WSC_EV_MESSAGE)
      break;
    CHECK_EQ(ev.kind, KEEL_WSC_SYSTEM);
    CHECK(strncmp(ev.data, "sys ", 4) == 0);
    free(ev.data);
    msgs++;
  }
  CHECK_EQ(ev.type, KEEL_WSC_EV_DISCONNECTED);
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  CHECK_EQ(ev.epoch, 2u);
  keel_wsc_stats_t st;
  keel_wsc_stats(f.c, &st);
  CHECK_EQ(msgs, 2);
  CHECK_EQ(st.events_dropped, 8u);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_event_backpressure(void **state) {
  (void)state;
  kt_run_body(events_body, NULL, 1);
}

/* Bad input: a message the protocol rejects drops the connection with a
 * reason and the client connects again; bad arguments are -EINVAL. */
static int bad_input_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  keel_wsc_t *c;
  keel_wsc_opts_t bad = f.opts;
  bad.url = "http://127.0.0.1:1/";
  CHECK_EQ(keel_wsc_open(NULL, &bad, &f.proto, &c), -EINVAL);
  keel_wsc_proto_t noclass = f.proto;
  noclass.classify = NULL;
  CHECK_EQ(keel_wsc_open(NULL, &f.opts, &noclass, &c), -EINVAL);
  CHECK_RC(fx_start(&f));
  keel_wsc_event_t ev;
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  keel_wsc_sub_t *s;
  CHECK_EQ(keel_wsc_subscribe(f.c, "", &s), -EINVAL);
  keel_wsc_req_t r = {.id = 1, .data = "x", .len = 1, .resp = NULL, .resp_cap = 8};
  CHECK_EQ(keel_wsc_request(f.c, &r), -EINVAL);
  CHECK_RC(keel_wsc_send(f.c, 0, "x say bad frame", 15));
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_DISCONNECTED, &ev));
  CHECK_EQ(ev.epoch, 1u);
  CHECK(strncmp(ev.reason, "protocol: ", 10) == 0);
  CHECK_RC(next_of(f.c, KEEL_WSC_EV_CONNECTED, &ev));
  CHECK_EQ(ev.epoch, 2u);
  char resp[32];
  CHECK_RC(req(f.c, 2, "echo", "after", resp, sizeof resp, NULL));
  CHECK_STR(resp, "res 2 after");
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_bad_input(void **state) {
  (void)state;
  kt_run_body(bad_input_body, NULL, 1);
}

/* A release while the connect hangs (the lab network swallows it): the
 * alert cuts the connect short, the owner ends within 1 s. */
static int hang_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.opts.connect_timeout_ms = 30000;
  keel_lab_net_faults_t nf = {.hang_permille = 1000};
  CHECK_RC(keel_lab_net_faults(&nf));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  CHECK_RC(keel_wsc_open(sc, &f.opts, &f.proto, &f.c));
  CHECK_RC(keel_sleep_ms(100));
  int64_t t0 = keel_now_ns();
  keel_wsc_release(f.c);
  f.c = NULL;
  CHECK_RC(keel_scope_join(sc)); /* the owner has ended */
  keel_scope_close(sc);
  CHECK(keel_now_ns() - t0 <= 1000 * KEEL_NS_PER_MS);
  keel_lab_net_faults_t none = {0};
  CHECK_RC(keel_lab_net_faults(&none));
  CHECK_EQ(f.srv.attempts, 0);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_release_during_hanging_connect(void **state) {
  (void)state;
  kt_run_where(KT_ON_LAB, hang_body, NULL, 1, 1, 8);
}

/* ---- Callers on another worker --------------------------------------------------------- */

typedef struct xcaller {
  keel_wsc_t *c;
  int base, ok;
} xcaller_t;

static int xcall(void *arg) {
  xcaller_t *x = arg;
  char resp[64], want[64];
  for (int i = 0; i < 200; i++) {
    uint64_t id = (uint64_t)(x->base + i);
    snprintf(want, sizeof want, "res %llu v%d", (unsigned long long)id, i);
    char v[16];
    snprintf(v, sizeof v, "v%d", i);
    if (req(x->c, id, "echo", v, resp, sizeof resp, NULL) == 0 && strcmp(resp, want) == 0)
      x->ok++;
  }
  return 0;
}

typedef struct xreader {
  keel_wsc_sub_t *s;
  int got;
} xreader_t;

static int xread(void *arg) {
  xreader_t *x = arg;
  char buf[64];
  keel_wsc_update_t u;
  ssize_t n = 0;
  while (x->got < 50 && (n = keel_wsc_sub_recv(x->s, buf, sizeof buf, &u)) >= 0)
    if (u.seq == (uint64_t)x->got + 1)
      x->got++;
  return n < 0 ? (int)n : 0;
}

static int cross_body(void *arg) {
  (void)arg;
  fixture_t f = {0};
  CHECK_RC(fx_open(&f));
  f.opts.events = false;
  CHECK_RC(fx_start(&f));
  keel_wsc_sub_t *s;
  CHECK_RC(keel_wsc_subscribe(f.c, "a", &s));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  xcaller_t x[4];
  keel_spawn_opts_t o = {.on_worker = KEEL_WORKER(1)};
  for (int i = 0; i < 4; i++) {
    x[i] = (xcaller_t){f.c, 1000 * (i + 1), 0};
    CHECK_RC(keel_spawn(sc, xcall, &x[i], &o));
  }
  xreader_t xr = {s, 0};
  CHECK_RC(keel_spawn(sc, xread, &xr, &o));
  char resp[32];
  CHECK_RC(req(f.c, 1, "echo", "sync", resp, sizeof resp, NULL)); /* after the subscribe */
  /* The server may have the connection on either worker: it publishes
   * from its own, asked by a message. */
  CHECK_RC(keel_wsc_send(f.c, 0, "x pub a 50", 10));
  CHECK_RC(keel_scope_join(sc));
  for (int i = 0; i < 4; i++)
    CHECK_EQ(x[i].ok, 200);
  CHECK_EQ(xr.got, 50);
  keel_wsc_sub_release(s);
  keel_scope_close(sc);
  CHECK_RC(fx_close(&f));
  return 0;
}
static void test_callers_on_another_worker(void **state) {
  (void)state;
  kt_run_real_body(cross_body, NULL, 2);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic_and_reconnect),
      cmocka_unit_test(test_late_answer_dropped),
      cmocka_unit_test(test_backoff_exact_and_max_attempts),
      cmocka_unit_test(test_backoff_jitter),
      cmocka_unit_test(test_backoff_reset),
      cmocka_unit_test(test_auth_failure),
      cmocka_unit_test(test_pong_timeout),
      cmocka_unit_test(test_control_before_data),
      cmocka_unit_test(test_release_shuts_down),
      cmocka_unit_test(test_subscription_refcount),
      cmocka_unit_test(test_idempotent_resend),
      cmocka_unit_test(test_event_backpressure),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_release_during_hanging_connect),
      cmocka_unit_test(test_callers_on_another_worker),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
