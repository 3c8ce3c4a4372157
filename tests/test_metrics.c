/* Metrics: the registry (families, series, labels, errors), values
 * written from two workers and a thread outside the runtime merged on
 * read, histograms, the Prometheus text export; the kernel's per-worker
 * metrics; TCP, HTTP and WebSocket counts against what a test did. */
#define KT_GUARD_MS 60000
#include "http-test.h"

#include <pthread.h>

/* The export of the whole registry, in a malloc'd string. */
typedef struct text {
  char *data;
  size_t len, cap;
} text_t;

static int text_sink(void *arg, const char *data, size_t len) {
  text_t *t = arg;
  if (t->len + len + 1 > t->cap) {
    size_t cap = (t->len + len + 1) * 2;
    char *p = realloc(t->data, cap);
    if (!p)
      return -ENOMEM;
    t->data = p;
    t->cap = cap;
  }
  memcpy(t->data + t->len, data, len);
  t->len += len;
  t->data[t->len] = '\0';
  return 0;
}

static char *export_all(void) {
  text_t t = {0};
  if (keel_metrics_write(text_sink, &t) < 0) {
    free(t.data);
    return NULL;
  }
  return t.data;
}

/* The value on the line that starts with series (name and labels as
 * exported, followed by a space); -1 when there is no such line. */
static double value_of(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
    if (!strncmp(p, series, n) && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  return -1;
}

/* The value of a series now (0 if not exported yet: a layer registers
 * its metrics when first used). */
static double scrape(const char *series) {
  char *text = export_all();
  double v = text ? value_of(text, series) : -2;
  free(text);
  return v == -1 ? 0 : v;
}

/* ---- The registry ------------------------------------------------------------ */

static int registry_errors_body(void *arg) {
  (void)arg;
  keel_metric_family_t *f, *g;
  keel_metric_opts_t o = {.type = KEEL_METRIC_COUNTER,
                          .name = "t_requests_total",
                          .help = "Requests.",
                          .labels = {"method", "code"}};
  CHECK_RC(keel_metrics_register(&o, &f));
  CHECK_RC(keel_metrics_register(&o, &g)); /* the same shape: the same family */
  CHECK(f == g);
  keel_metric_opts_t other = o;
  other.type = KEEL_METRIC_GAUGE;
  CHECK_EQ(keel_metrics_register(&other, &g), -EEXIST);
  other = o;
  other.labels[1] = "status";
  CHECK_EQ(keel_metrics_register(&other, &g), -EEXIST);
  static const char *const bad_names[] = {"", "1abc", "a-b", "a b", "é"};
  for (size_t i = 0; i < sizeof bad_names / sizeof *bad_names; i++) {
    other = o;
    other.name = bad_names[i];
    CHECK_EQ(keel_metrics_register(&other, &g), -EINVAL);
  }
  static const char *const bad_labels[] = {"__x", "a:b", "9", "a-b"};
  for (size_t i = 0; i < sizeof bad_labels / sizeof *bad_labels; i++) {
    other = o;
    other.name = "t_other_total";
    other.labels[0] = bad_labels[i];
    CHECK_EQ(keel_metrics_register(&other, &g), -EINVAL);
  }
  other = (keel_metric_opts_t){
      .type = KEEL_METRIC_HISTOGRAM, .name = "t_h", .help = "h", .labels = {"le"}};
  CHECK_EQ(keel_metrics_register(&other, &g), -EINVAL); /* le is the buckets' */
  int64_t down[] = {5, 3};
  other = (keel_metric_opts_t){
      .type = KEEL_METRIC_HISTOGRAM, .name = "t_h", .help = "h", .buckets = down, .nbuckets = 2};
  CHECK_EQ(keel_metrics_register(&other, &g), -EINVAL);
  other = o;
  other.labels[0] = other.labels[1] = "same";
  other.name = "t_dup_total";
  CHECK_EQ(keel_metrics_register(&other, &g), -EINVAL);
  other = o;
  other.help = NULL;
  CHECK_EQ(keel_metrics_register(&other, &g), -EINVAL);
  /* Series: a value per label, each at most 255 bytes. */
  keel_metric_t *a, *b;
  CHECK_EQ(keel_metrics_series(f, (const char *[]){"GET", NULL}, &a), -EINVAL);
  CHECK_EQ(keel_metrics_series(f, NULL, &a), -EINVAL);
  char longv[300];
  memset(longv, 'x', sizeof longv - 1);
  longv[sizeof longv - 1] = '\0';
  CHECK_EQ(keel_metrics_series(f, (const char *[]){"GET", longv}, &a), -EINVAL);
  CHECK_RC(keel_metrics_series(f, (const char *[]){"GET", "200"}, &a));
  CHECK_RC(keel_metrics_series(f, (const char *[]){"GET", "200"}, &b));
  CHECK(a == b);
  CHECK_RC(keel_metrics_series(f, (const char *[]){"GET", "404"}, &b));
  CHECK(a != b);
  return 0;
}
static void test_registry_errors(void **state) {
  (void)state;
  kt_run_body(registry_errors_body, NULL, 1);
}

/* Writes from tasks on both workers and from a thread outside. */
typedef struct writers {
  keel_metric_t *counter, *gauge, *hist, *per_worker;
  int rounds;
} writers_t;

static void write_some(writers_t *w) {
  for (int i = 0; i < w->rounds; i++) {
    keel_metric_inc(w->counter);
    keel_metric_add(w->counter, 2);
    keel_metric_gauge_add(w->gauge, 1);
    keel_metric_observe(w->hist, i % 3 == 0 ? 5 : i % 3 == 1 ? 50 : 5000);
    keel_metric_inc(w->per_worker);
  }
  keel_metric_gauge_add(w->gauge, -(int64_t)w->rounds / 2);
}

static int writer_task(void *arg) {
  write_some(arg);
  return 0;
}

static void *writer_thread(void *arg) {
  write_some(arg);
  return NULL;
}

static int merge_body(void *arg) {
  (void)arg;
  writers_t w = {.rounds = 3000};
  static const int64_t bounds[] = {10, 100, 1000};
  keel_metric_family_t *f;
  keel_metric_opts_t h = {.type = KEEL_METRIC_HISTOGRAM,
                          .name = "t_size_bytes",
                          .help = "Sizes.",
                          .labels = {"kind"},
                          .buckets = bounds,
                          .nbuckets = 3};
  keel_metric_opts_t pw = {.type = KEEL_METRIC_COUNTER,
                           .name = "t_loops_total",
                           .help = "Per worker.",
                           .per_worker = true};
  CHECK_RC(keel_metrics_counter("t_ops_total", "Operations.", &w.counter));
  CHECK_RC(keel_metrics_gauge("t_inflight", "In flight.", &w.gauge));
  CHECK_RC(keel_metrics_register(&h, &f));
  CHECK_RC(keel_metrics_series(f, (const char *[]){"a \"quoted\"\\ value\n"}, &w.hist));
  CHECK_RC(keel_metrics_register(&pw, &f));
  CHECK_RC(keel_metrics_series(f, NULL, &w.per_worker));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  int workers = keel_worker_count();
  for (int i = 0; i < workers; i++) {
    keel_spawn_opts_t so = {.name = "writer", .on_worker = KEEL_WORKER(i)};
    CHECK_RC(keel_spawn(sc, writer_task, &w, &so));
  }
  pthread_t th;
  CHECK_EQ(pthread_create(&th, NULL, writer_thread, &w), 0);
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  pthread_join(th, NULL);
  int64_t writers = workers + 1, n = w.rounds;
  CHECK_EQ(keel_metric_value(w.counter), writers * n * 3);
  CHECK_EQ(keel_metric_value(w.gauge), writers * (n - n / 2));
  CHECK_EQ(keel_metric_value(w.hist), writers * n);
  CHECK_EQ(keel_metric_sum(w.hist), writers * (n / 3) * (5 + 50 + 5000));
  char *text = export_all();
  CHECK(text != NULL);
  CHECK_EQ(value_of(text, "t_ops_total"), (double)(writers * n * 3));
  CHECK_EQ(value_of(text, "t_inflight"), (double)(writers * (n - n / 2)));
  /* Buckets are cumulative; the label value escaped. */
  const char *lbl = "kind=\"a \\\"quoted\\\"\\\\ value\\n\"";
  char series[160];
  static const char *const les[] = {"10", "100", "1000", "+Inf"};
  static const int64_t cum[] = {1, 2, 2, 3};
  for (int i = 0; i < 4; i++) {
    snprintf(series, sizeof series, "t_size_bytes_bucket{%s,le=\"%s\"}", lbl, les[i]);
    CHECK_EQ(value_of(text, series), (double)(writers * (n / 3) * cum[i]));
  }
  snprintf(series, sizeof series, "t_size_bytes_count{%s}", lbl);
  CHECK_EQ(value_of(text, series), (double)(writers * n));
  /* Per worker: one series each, and one for the thread outside. */
  for (int i = 0; i < workers; i++) {
    snprintf(series, sizeof series, "t_loops_total{worker=\"%d\"}", i);
    CHECK_EQ(value_of(text, series), (double)n);
  }
  CHECK_EQ(value_of(text, "t_loops_total{worker=\"other\"}"), (double)n);
  CHECK(strstr(text, "# TYPE t_size_bytes histogram\n") != NULL);
  CHECK(strstr(text, "# HELP t_ops_total Operations.\n# TYPE t_ops_total counter\n") != NULL);
  /* The kernel's: a line per worker. */
  for (int i = 0; i < workers; i++) {
    snprintf(series, sizeof series, "keel_worker_tasks_spawned_total{worker=\"%d\"}", i);
    CHECK(value_of(text, series) >= 1);
    snprintf(series, sizeof series, "keel_worker_task_runs_total{worker=\"%d\"}", i);
    CHECK(value_of(text, series) >= 1);
  }
  /* The process's own. */
  CHECK(value_of(text, "process_open_fds") >= 3);
  CHECK(value_of(text, "process_resident_memory_bytes") > 1 << 20);
  CHECK(value_of(text, "process_cpu_seconds_total") > 0);
  /* A sleep is a wait in the loop's poll: one more iteration, idle time. */
  double loops = value_of(text, "keel_worker_loops_total{worker=\"0\"}");
  double idle = value_of(text, "keel_worker_idle_seconds_total{worker=\"0\"}");
  CHECK_RC(keel_sleep_ms(20));
  CHECK(scrape("keel_worker_loops_total{worker=\"0\"}") > loops);
  CHECK(scrape("keel_worker_idle_seconds_total{worker=\"0\"}") >= idle + 0.005);
  free(text);
  return 0;
}
static void test_merge(void **state) {
  (void)state;
  kt_run_real_body(merge_body, NULL, 2);
}

/* Families registered from tasks on different workers at once are one. */
static int racer(void *arg) {
  keel_metric_t **out = arg;
  keel_metric_family_t *f;
  keel_metric_opts_t o = {
      .type = KEEL_METRIC_COUNTER, .name = "t_race_total", .help = "Raced.", .labels = {"who"}};
  if (keel_metrics_register(&o, &f) < 0)
    return -EIO;
  return keel_metrics_series(f, (const char *[]){"x"}, &out[keel_worker_id()]);
}

static int register_race_body(void *arg) {
  (void)arg;
  keel_metric_t *got[2] = {0};
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  for (int i = 0; i < 2; i++) {
    keel_spawn_opts_t so = {.name = "racer", .on_worker = KEEL_WORKER(i)};
    CHECK_RC(keel_spawn(sc, racer, got, &so));
  }
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK(got[0] != NULL && got[0] == got[1]);
  return 0;
}
static void test_register_race(void **state) {
  (void)state;
  kt_run_real_body(register_race_body, NULL, 2);
}

/* ---- Layers ---------------------------------------------------------------------- */

static int hello(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  if (!strcmp(keel_http_path(req), "/metrics"))
    return keel_http_metrics_handler(req, res, NULL);
  if (!strcmp(keel_http_path(req), "/missing")) {
    keel_http_set_status(res, 404);
    return keel_http_send(res, "no\n", 3);
  }
  return keel_http_send(res, "hello\n", 6);
}

static double http_count(const char *method, const char *status) {
  char series[128];
  snprintf(series, sizeof series, "keel_http_requests_total{method=\"%s\",status=\"%s\"}", method,
           status);
  return scrape(series);
}

static int http_body(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = {.handler = hello};
  CHECK_RC(kt_server_start(&srv, &o));
  double get2 = http_count("GET", "2xx"), get4 = http_count("GET", "4xx");
  double post2 = http_count("POST", "2xx");
  double accepted = scrape("keel_tcp_connections_accepted_total");
  double sent = scrape("keel_tcp_sent_bytes_total");
  kt_conn_t c = {0};
  kt_resp_t r;
  CHECK_RC(kt_connect(&srv, &c));
  enum { N = 50 };
  for (int i = 0; i < N; i++) {
    KT_EXCHANGE(&c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r, 200);
    kt_resp_free(&r);
  }
  KT_EXCHANGE(&c, "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n", &r, 404);
  kt_resp_free(&r);
  KT_EXCHANGE(&c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi", &r, 200);
  kt_resp_free(&r);
  /* A request is counted once its response is queued, before the next
   * request on the connection is read. */
  KT_EXCHANGE(&c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r, 200);
  CHECK(strstr(kt_field(&r, "Content-Type"), "version=0.0.4") != NULL);
  char series[128];
  snprintf(series, sizeof series, "keel_http_requests_total{method=\"GET\",status=\"2xx\"}");
  CHECK_EQ(value_of(r.body, series), get2 + N);
  kt_resp_free(&r);
  CHECK_EQ(http_count("GET", "4xx"), get4 + 1);
  CHECK_EQ(http_count("POST", "2xx"), post2 + 1);
  /* The scrape is counted before the next request on the connection is
   * read; the last one may not be yet. */
  KT_EXCHANGE(&c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &r, 200);
  kt_resp_free(&r);
  CHECK_BETWEEN(http_count("GET", "2xx"), get2 + N + 1, get2 + N + 2);
  if (!keel_lab_active()) {
    CHECK_EQ(scrape("keel_tcp_connections_accepted_total"), accepted + 1);
    CHECK(scrape("keel_tcp_sent_bytes_total") > sent + N * 6);
  }
  kt_disconnect(&c);
  /* Bad requests: a status, and a count of their kind. */
  double bad = scrape("keel_http_request_errors_total{kind=\"invalid_method\"}");
  CHECK_RC(kt_connect(&srv, &c));
  CHECK_RC(kt_send(&c, "G@T / HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK_RC(kt_response(&c, &r, false));
  CHECK_EQ(r.status, 400);
  kt_resp_free(&r);
  kt_disconnect(&c);
  CHECK_EQ(scrape("keel_http_request_errors_total{kind=\"invalid_method\"}"), bad + 1);
  CHECK_RC(kt_server_stop(&srv));
  /* Every connection the server had is closed: none is active. */
  if (!keel_lab_active()) {
    for (int i = 0; i < 1000 && scrape("keel_tcp_connections_active") != 0; i++)
      CHECK_RC(keel_sleep_ms(1));
    CHECK_EQ(scrape("keel_tcp_connections_active"), 0);
  }
  return 0;
}
static void test_http_counts(void **state) {
  (void)state;
  kt_run_body(http_body, NULL, 1);
}

/* WebSocket: messages and bytes each way, the close codes. */
static int ws_handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
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

static int ws_body(void *arg) {
  (void)arg;
  kt_server_t srv;
  keel_http_server_opts_t o = {.handler = ws_handler};
  CHECK_RC(kt_server_start(&srv, &o));
  double in0 = scrape("keel_ws_messages_total{direction=\"in\"}");
  double bytes0 = scrape("keel_ws_payload_bytes_total{direction=\"out\"}");
  double closes0 = scrape("keel_ws_closes_total{direction=\"out\",code=\"4xxx\"}");
  char url[128];
  snprintf(url, sizeof url, "ws://%s/", srv.addr);
  keel_ws_t *ws;
  CHECK_RC(keel_ws_connect(url, NULL, &ws));
  enum { N = 20 };
  for (int i = 0; i < N; i++) {
    CHECK_RC(keel_ws_send(ws, KEEL_WS_TEXT, "0123456789", 10));
    const void *data;
    size_t len;
    CHECK_EQ(keel_ws_recv(ws, &data, &len), KEEL_WS_TEXT);
  }
  CHECK_RC(keel_ws_close(ws, 4001, "bye"));
  CHECK_RC(kt_server_stop(&srv));
  /* Both ends count: the client's and the server's messages. */
  CHECK_EQ(scrape("keel_ws_messages_total{direction=\"in\"}"), in0 + 2 * N);
  CHECK_EQ(scrape("keel_ws_payload_bytes_total{direction=\"out\"}"), bytes0 + 2 * N * 10);
  /* 4001 went out from the client; the server echoed it. */
  CHECK_EQ(scrape("keel_ws_closes_total{direction=\"out\",code=\"4xxx\"}") - closes0, 2);
  CHECK(scrape("keel_ws_closes_total{direction=\"in\",code=\"4xxx\"}") >= 2);
  CHECK_EQ(scrape("keel_ws_connections_active"), 0);
  return 0;
}
static void test_ws_counts(void **state) {
  (void)state;
  kt_run_body(ws_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_registry_errors), cmocka_unit_test(test_merge),
      cmocka_unit_test(test_register_race),   cmocka_unit_test(test_http_counts),
      cmocka_unit_test(test_ws_counts),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
