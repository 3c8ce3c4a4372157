/* TLS metrics: handshakes by role and result, resumptions. */
#include <errno.h>
#include <stdlib.h>

#include "metrics-internal.h"
#include "tls-internal.h"

/* Results of a handshake, by the errno it ended with. */
enum {
  HS_OK,
  HS_CERT,
  HS_CERT_EXPIRED,
  HS_VERSION,
  HS_ALPN,
  HS_CLOSED,
  HS_TIMEOUT,
  HS_CANCELLED,
  HS_PROTOCOL,
  HS_OTHER,
  HS_RESULTS
};
static const char *const results[HS_RESULTS] = {
    "ok",     "certificate", "certificate_expired", "protocol_version", "no_application_protocol",
    "closed", "timeout",     "cancelled",           "protocol",         "error"};

typedef struct tls_metrics {
  keel_metric_t *handshakes[2][HS_RESULTS]; /* [server][result] */
  keel_metric_t *resumed[2];
} tls_metrics_t;

static int register_all(tls_metrics_t *m) {
  keel_metric_family_t *hs, *res;
  keel_metric_opts_t o = {.type = KEEL_METRIC_COUNTER,
                          .name = "keel_tls_handshakes_total",
                          .help = "TLS handshakes by role and result (ok, or why they failed).",
                          .labels = {"role", "result"}};
  keel_metric_opts_t r = {.type = KEEL_METRIC_COUNTER,
                          .name = "keel_tls_resumptions_total",
                          .help = "TLS handshakes that resumed a session.",
                          .labels = {"role"}};
  int rc = keel_metrics_register(&o, &hs);
  if (rc == 0)
    rc = keel_metrics_register(&r, &res);
  for (int s = 0; rc == 0 && s < 2; s++) {
    const char *role = s ? "server" : "client";
    for (int i = 0; rc == 0 && i < HS_RESULTS; i++)
      rc = keel_metrics_series(hs, (const char *[]){role, results[i]}, &m->handshakes[s][i]);
    if (rc == 0)
      rc = keel_metrics_series(res, (const char *[]){role}, &m->resumed[s]);
  }
  return rc;
}

static void *tls_metrics_init(void) {
  tls_metrics_t *m = calloc(1, sizeof *m);
  int rc = m ? register_all(m) : -ENOMEM;
  if (rc < 0 && m) {
    keel_log(KEEL_LOG_WARN, "TLS metrics: %s", keel_strerror(rc));
    free(m);
    m = NULL;
  }
  return m;
}

static int result_of(int err) {
  switch (err) {
  case 0:
    return HS_OK;
  case -EKEYREJECTED:
    return HS_CERT;
  case -EKEYEXPIRED:
    return HS_CERT_EXPIRED;
  case -EPROTONOSUPPORT:
    return HS_VERSION;
  case -ENOPROTOOPT:
    return HS_ALPN;
  case -ECONNRESET:
  case -EPIPE:
    return HS_CLOSED;
  case -ETIMEDOUT:
    return HS_TIMEOUT;
  case -ECANCELED:
    return HS_CANCELLED;
  case -EPROTO:
    return HS_PROTOCOL;
  default:
    return HS_OTHER;
  }
}

void keel__tls_count_handshake(bool server, int err, bool resumed) {
  keel__worker_t *w = keel__tls_worker;
  tls_metrics_t *m = keel__metrics_layer(w, KEEL__METRICS_TLS, tls_metrics_init);
  if (!m)
    return;
  keel__metric_add(w, m->handshakes[server][result_of(err)], 1);
  if (resumed)
    keel__metric_add(w, m->resumed[server], 1);
}
