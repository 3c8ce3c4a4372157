/* WebSocket metrics: connections, messages and bytes each way, close
 * codes sent and received. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "metrics-internal.h"
#include "ws-internal.h"

/* Close codes as labels: 1000..1015 each, 3xxx and 4xxx (applications'
 * ranges) as one each, anything else as "other": a peer cannot make a
 * series per code it invents. */
#define NCODES 19

typedef struct ws_metrics {
  keel_metric_t *opened[2], *active;
  keel_metric_t *messages[2], *bytes[2]; /* [in] */
  keel_metric_family_t *closes;
  _Atomic(keel_metric_t *) close_codes[2][NCODES]; /* [received][code] */
} ws_metrics_t;

static int register_dir(keel_metric_t **out, const char *name, const char *help) {
  keel_metric_family_t *f;
  keel_metric_opts_t o = {
      .type = KEEL_METRIC_COUNTER, .name = name, .help = help, .labels = {"direction"}};
  int rc = keel_metrics_register(&o, &f);
  for (int in = 0; rc == 0 && in < 2; in++)
    rc = keel_metrics_series(f, (const char *[]){in ? "in" : "out"}, &out[in]);
  return rc;
}

static int register_all(ws_metrics_t *m) {
  keel_metric_family_t *f;
  keel_metric_opts_t o = {.type = KEEL_METRIC_COUNTER,
                          .name = "keel_ws_connections_total",
                          .help = "WebSocket connections opened, by role.",
                          .labels = {"role"}};
  keel_metric_opts_t c = {.type = KEEL_METRIC_COUNTER,
                          .name = "keel_ws_closes_total",
                          .help = "WebSocket close frames by direction and code (3xxx, 4xxx: "
                                  "applications' codes; other: outside the registered ones).",
                          .labels = {"direction", "code"}};
  int rc = keel_metrics_register(&o, &f);
  for (int s = 0; rc == 0 && s < 2; s++)
    rc = keel_metrics_series(f, (const char *[]){s ? "server" : "client"}, &m->opened[s]);
  if (rc == 0)
    rc =
        keel_metrics_gauge("keel_ws_connections_active", "WebSocket connections open.", &m->active);
  if (rc == 0)
    rc = register_dir(m->messages, "keel_ws_messages_total", "WebSocket data messages.");
  if (rc == 0)
    rc = register_dir(m->bytes, "keel_ws_payload_bytes_total",
                      "WebSocket data message payload bytes (before compression).");
  if (rc == 0)
    rc = keel_metrics_register(&c, &m->closes);
  return rc;
}

static void *ws_metrics_init(void) {
  ws_metrics_t *m = calloc(1, sizeof *m);
  int rc = m ? register_all(m) : -ENOMEM;
  if (rc < 0 && m) {
    keel_log(KEEL_LOG_WARN, "WebSocket metrics: %s", keel_strerror(rc));
    free(m);
    m = NULL;
  }
  return m;
}

static ws_metrics_t *ws_metrics(keel__worker_t *w) {
  return keel__metrics_layer(w, KEEL__METRICS_WS, ws_metrics_init);
}

void keel__ws_count_open(bool server, int delta) {
  keel__worker_t *w = keel__tls_worker;
  ws_metrics_t *m = ws_metrics(w);
  if (!m)
    return;
  if (delta > 0)
    keel__metric_add(w, m->opened[server], 1);
  keel__metric_gauge_add(w, m->active, delta);
}

void keel__ws_count_data(bool in, size_t bytes, bool message_end) {
  keel__worker_t *w = keel__tls_worker;
  ws_metrics_t *m = ws_metrics(w);
  if (!m)
    return;
  keel__metric_add(w, m->bytes[in], bytes);
  if (message_end)
    keel__metric_add(w, m->messages[in], 1);
}

static int code_index(int code, char *label, size_t size) {
  if (code >= 1000 && code <= 1015) {
    snprintf(label, size, "%d", code);
    return code - 1000;
  }
  if (code >= 3000 && code <= 4999) {
    snprintf(label, size, "%dxxx", code / 1000);
    return code < 4000 ? 16 : 17;
  }
  snprintf(label, size, "other");
  return 18;
}

void keel__ws_count_close(bool received, int code) {
  keel__worker_t *w = keel__tls_worker;
  ws_metrics_t *m = ws_metrics(w);
  if (!m)
    return;
  char label[16];
  int i = code_index(code, label, sizeof label);
  keel_metric_t *s = atomic_load_explicit(&m->close_codes[received][i], memory_order_acquire);
  if (!s) {
    const char *values[] = {received ? "in" : "out", label};
    if (keel_metrics_series(m->closes, values, &s) < 0)
      return;
    atomic_store_explicit(&m->close_codes[received][i], s, memory_order_release);
  }
  keel__metric_add(w, s, 1);
}
