/* Internal header: the metrics registry (src/core/metrics.c) and the
 * layers' built-in metric sets. */
#ifndef KEEL_METRICS_INTERNAL_H
#define KEEL_METRICS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "keel/metrics.h"
#include "worker.h"

/* Each layer's built-in metrics, registered on first use in a runtime. */
enum {
  KEEL__METRICS_NET,
  KEEL__METRICS_TLS,
  KEEL__METRICS_HTTP,
  KEEL__METRICS_WS,
  KEEL__METRICS_WSC,
  KEEL__METRICS_LAYERS
};

typedef struct keel__metrics keel__metrics_t;

struct keel_metric {
  keel_metric_family_t *family;
  keel_runtime_t *rt;       /* whose workers own the cells */
  keel_metric_t *next;      /* the family's series, in creation order */
  char *labels;             /* rendered: name="value",... (escaped), or "" */
  int ncells;               /* workers + 1: the last is for other threads */
  _Atomic uint64_t *cell[]; /* per worker (and one shared): this series' first slot */
};

/* Creates the registry of rt (before its workers start) and frees it. */
int keel__metrics_open(keel_runtime_t *rt);
void keel__metrics_close(keel_runtime_t *rt);

/* The layer's metric set of w's runtime, made by init (under a lock, once)
 * on first use; NULL if init failed (the layer then counts nothing). */
void *keel__metrics_layer(keel__worker_t *w, int layer, void *(*init)(void));

/* The fast path of keel_metric_add for code that has its worker at hand
 * (NULL-safe: a layer whose metrics failed to register passes NULL). */
static inline void keel__metric_add(keel__worker_t *w, keel_metric_t *m, uint64_t n) {
  if (!m)
    return;
  if (KEEL__LIKELY(w && w->rt == m->rt))
    keel__stat_add(m->cell[w->id], n);
  else
    atomic_fetch_add_explicit(m->cell[m->ncells - 1], n, memory_order_relaxed);
}

static inline void keel__metric_gauge_add(keel__worker_t *w, keel_metric_t *m, int64_t d) {
  keel__metric_add(w, m, (uint64_t)d);
}

#endif
