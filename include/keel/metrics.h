/* keel metrics: counters, gauges and histograms in a registry per
 * runtime, written by each worker into its own cells (no lock and no
 * atomic read-modify-write on the hot path), merged when read, exported
 * in the Prometheus text format. */
#ifndef KEEL_METRICS_H
#define KEEL_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KEEL_METRIC_LABELS_MAX 4
#define KEEL_METRIC_BUCKETS_MAX 30

typedef enum keel_metric_type {
  KEEL_METRIC_COUNTER = 1,
  KEEL_METRIC_GAUGE,
  KEEL_METRIC_HISTOGRAM
} keel_metric_type_t;

/* A metric family: a name, its help and type, and its label names. */
typedef struct keel_metric_family keel_metric_family_t;
/* One series of a family: the family with a value for each label. */
typedef struct keel_metric keel_metric_t;

/* Reads a value when the metrics are exported, on the exporting thread:
 * worker is 0..n-1 for a per-worker family, else -1. Must not block or
 * register metrics. */
typedef int64_t (*keel_metric_read_fn)(void *arg, int worker);

typedef struct keel_metric_opts {
  keel_metric_type_t type;
  /* Required: [a-zA-Z_:][a-zA-Z0-9_:]*. Prometheus's conventions: a
   * counter's name ends in _total, a unit is spelled out (_seconds,
   * _bytes). */
  const char *name;
  const char *help; /* required */
  /* Label names ([a-zA-Z_][a-zA-Z0-9_]*, not starting with "__"; not "le"
   * in a histogram, not "worker" with per_worker), NULL after the last. */
  const char *labels[KEEL_METRIC_LABELS_MAX];
  /* Histograms: the buckets' upper bounds in raw units, increasing (at
   * most KEEL_METRIC_BUCKETS_MAX; +Inf is implicit). NULL: latency
   * buckets from 50 µs to 10 s in nanoseconds (with scale 1e-9, seconds). */
  const int64_t *buckets;
  size_t nbuckets;
  /* What one raw unit is worth in the export (0: 1): 1e-9 exports a
   * count of nanoseconds as seconds. */
  double scale;
  /* Export one series per worker with a label worker="N", not their sum. */
  bool per_worker;
  /* A counter or gauge without cells: read (read_arg, worker) gives its
   * value when exported. A family with read has no labels of its own. */
  keel_metric_read_fn read;
  void *read_arg;
} keel_metric_opts_t;

/* Registers a family in the current runtime (from a task). Registering a
 * name again with the same type, labels and buckets returns the family
 * registered first (so that tasks on every worker may each register);
 * another shape is -EEXIST. Returns 0, -EINVAL (a bad name, label or
 * bucket list), -EEXIST, -ENOSPC (too many series in all), -ENOMEM, or
 * -EPERM outside a task. Families live until keel_run returns. */
int keel_metrics_register(const keel_metric_opts_t *opts, keel_metric_family_t **out);

/* The series of f with the given label values (one per label name; NULL
 * for a family without labels), created on first use. Values are any
 * bytes up to 255 long (escaped when exported). Look series up once and
 * keep them: this takes the registry's lock. Returns 0, -EINVAL (a family
 * read by a callback, a value missing or too long), -ENOSPC, -ENOMEM. */
int keel_metrics_series(keel_metric_family_t *f, const char *const *values, keel_metric_t **out);

/* Registers a family without labels and returns its one series. */
int keel_metrics_counter(const char *name, const char *help, keel_metric_t **out);
int keel_metrics_gauge(const char *name, const char *help, keel_metric_t **out);

/* Hot path, any thread: a worker writes its own cells; a thread outside
 * the runtime's workers writes shared cells with atomic operations. */
void keel_metric_add(keel_metric_t *m, uint64_t n); /* counter */
void keel_metric_inc(keel_metric_t *m);
/* Gauges: each worker adds to (or sets) its own cell; the exported value
 * is the sum of the cells (with per_worker, each one). */
void keel_metric_gauge_add(keel_metric_t *m, int64_t delta);
void keel_metric_gauge_set(keel_metric_t *m, int64_t value);
/* Histograms: counts value (raw units; a negative one counts as 0). */
void keel_metric_observe(keel_metric_t *m, int64_t value);

/* The value now, merged over every worker: a counter's or gauge's value,
 * a histogram's count of observations (raw units, before scale). */
int64_t keel_metric_value(const keel_metric_t *m);
/* A histogram's sum of observations (raw units). */
int64_t keel_metric_sum(const keel_metric_t *m);

/* Writes every family of the current runtime in the Prometheus text
 * exposition format (version 0.0.4), from a task. The registry is read
 * into a buffer first; sink then gets it in pieces. Returns 0, -EPERM
 * outside a task, -ENOMEM, or the sink's error. */
int keel_metrics_write(keel_sink_fn sink, void *arg);

/* The content type of that format. */
#define KEEL_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#ifdef __cplusplus
}
#endif
#endif
