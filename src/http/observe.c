/* The HTTP server's metrics (requests by method and status class, their
 * latency, bad requests by kind) and the /metrics handler. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http-internal.h"
#include "metrics-internal.h"

static const char *const methods[] = {"GET",   "HEAD",    "POST",  "PUT",     "DELETE",
                                      "PATCH", "OPTIONS", "TRACE", "CONNECT", "other"};
#define NMETHODS (sizeof methods / sizeof *methods)
/* 1xx .. 5xx, and "none": the client went away before an answer. */
#define NCLASSES 6
static const char *const classes[NCLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx", "none"};
/* llhttp's errors by number (HPE_*), keel's own checks, limits. */
#define NKINDS 64

typedef struct http_metrics {
  keel_metric_family_t *requests;
  _Atomic(keel_metric_t *) request_series[NMETHODS][NCLASSES];
  keel_metric_t *latency;
  keel_metric_family_t *errors;
  _Atomic(keel_metric_t *) error_kinds[NKINDS];
} http_metrics_t;

/* A series is made on first use, as the error kinds' are: the 60 methods
 * and classes would otherwise cost each runtime 60 series at its first
 * request, and fill /metrics with zeros. */
static int register_requests(http_metrics_t *m) {
  keel_metric_opts_t o = {.type = KEEL_METRIC_COUNTER,
                          .name = "keel_http_requests_total",
                          .help = "HTTP requests served, by method and status class (none: the "
                                  "client went away before the answer).",
                          .labels = {"method", "status"}};
  return keel_metrics_register(&o, &m->requests);
}

static void *http_metrics_init(void) {
  http_metrics_t *m = calloc(1, sizeof *m);
  int rc = m ? register_requests(m) : -ENOMEM;
  keel_metric_opts_t lat = {.type = KEEL_METRIC_HISTOGRAM,
                            .name = "keel_http_request_duration_seconds",
                            .help = "From a request's head read to its response queued.",
                            .scale = 1e-9};
  keel_metric_opts_t err = {.type = KEEL_METRIC_COUNTER,
                            .name = "keel_http_request_errors_total",
                            .help = "Requests refused before a handler or while reading their "
                                    "body, by kind (llhttp's error, keel's checks, limits).",
                            .labels = {"kind"}};
  keel_metric_family_t *f;
  if (rc == 0 && (rc = keel_metrics_register(&lat, &f)) == 0)
    rc = keel_metrics_series(f, NULL, &m->latency);
  if (rc == 0)
    rc = keel_metrics_register(&err, &m->errors);
  if (rc < 0 && m) {
    keel_log(KEEL_LOG_WARN, "HTTP metrics: %s", keel_strerror(rc));
    free(m);
    m = NULL;
  }
  return m;
}

static http_metrics_t *http_metrics(void) {
  return keel__metrics_layer(keel__tls_worker, KEEL__METRICS_HTTP, http_metrics_init);
}

static size_t method_index(const keel_http_request_t *req) {
  for (size_t i = 0; i + 1 < NMETHODS; i++)
    if (req->method && strlen(methods[i]) == req->method_len &&
        !memcmp(methods[i], req->method, req->method_len))
      return i;
  return NMETHODS - 1;
}

void keel__http_count_request(http_conn_t *c, keel_http_request_t *req, int status) {
  http_metrics_t *m = http_metrics();
  if (!m)
    return;
  keel__worker_t *w = keel__tls_worker;
  int cls = status >= 100 && status < 600 ? status / 100 - 1 : NCLASSES - 1;
  size_t mi = method_index(req);
  keel_metric_t *s = atomic_load_explicit(&m->request_series[mi][cls], memory_order_acquire);
  if (!KEEL__LIKELY(s != NULL)) {
    /* The lookup finds the same series on every worker. */
    if (keel_metrics_series(m->requests, (const char *[]){methods[mi], classes[cls]}, &s) < 0)
      return;
    atomic_store_explicit(&m->request_series[mi][cls], s, memory_order_release);
  }
  keel__metric_add(w, s, 1);
  int64_t took = keel_now_ns() - c->now;
  keel_metric_observe(m->latency, took);
}

/* "HPE_INVALID_METHOD" -> "invalid_method". */
static void kind_name(char *out, size_t size, const char *name) {
  if (!strncmp(name, "HPE_", 4))
    name += 4;
  size_t i = 0;
  for (; name[i] && i + 1 < size; i++)
    out[i] = (char)tolower((unsigned char)name[i]);
  out[i] = '\0';
}

void keel__http_count_error(int kind, const char *name) {
  http_metrics_t *m = http_metrics();
  if (!m || kind < 0 || kind >= NKINDS)
    return;
  keel_metric_t *s = atomic_load_explicit(&m->error_kinds[kind], memory_order_acquire);
  if (!s) {
    /* First of its kind here: the lookup is the same on every worker. */
    char label[48];
    kind_name(label, sizeof label, name);
    if (keel_metrics_series(m->errors, (const char *[]){label}, &s) < 0)
      return;
    atomic_store_explicit(&m->error_kinds[kind], s, memory_order_release);
  }
  keel__metric_add(keel__tls_worker, s, 1);
}

/* ---- /metrics ------------------------------------------------------------------ */

typedef struct text_buf {
  char *data;
  size_t len, cap;
} text_buf_t;

static int text_sink(void *arg, const char *data, size_t len) {
  text_buf_t *b = arg;
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 16384;
    while (cap < b->len + len)
      cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
      return -ENOMEM;
    b->data = p;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

int keel_http_metrics_handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req;
  (void)ctx;
  http_metrics(); /* the HTTP families exist from the first scrape */
  text_buf_t b = {0};
  int rc = keel_metrics_write(text_sink, &b);
  if (rc == 0)
    rc = keel_http_add_header(res, "Content-Type", KEEL_METRICS_CONTENT_TYPE);
  if (rc == 0)
    rc = keel_http_send(res, b.data, b.len);
  free(b.data);
  return rc;
}
