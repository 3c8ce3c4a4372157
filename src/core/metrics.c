/* The metrics registry: families and series, per-worker cells, the
 * Prometheus text export. */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "metrics-internal.h"

/* Cells live in chunks, one table of chunks per worker plus one for other
 * threads. A series' cells never straddle two chunks, and chunks never
 * move: a series keeps a pointer to its first cell in each table. */
#define CHUNK_CELLS 1024
#define MAX_CHUNKS 256
#define LABEL_VALUE_MAX 255
#define KERNEL_STATS_MAX 16

struct keel_metric_family {
  keel__metrics_t *reg;
  keel_metric_family_t *next;
  keel_metric_type_t type;
  char *name, *help;
  char *labels[KEEL_METRIC_LABELS_MAX];
  int nlabels;
  int64_t buckets[KEEL_METRIC_BUCKETS_MAX];
  size_t nbuckets;
  double scale;
  bool per_worker;
  keel_metric_read_fn read;
  void *read_arg;
  int ncells_per_series; /* 1, or a histogram's buckets + the +Inf bucket + the sum */
  keel_metric_t *series, **series_tail;
};

/* What one of the kernel's metrics reads: a field of each worker's stats. */
typedef struct stat_ref {
  keel_runtime_t *rt;
  size_t offset;
} stat_ref_t;

struct keel__metrics {
  keel_runtime_t *rt;
  pthread_mutex_t lock;         /* families, series, chunks */
  int ncells;                   /* workers + 1 */
  _Atomic uint64_t **chunks;    /* [cell table][chunk] */
  size_t next_chunk, next_cell; /* where the next series' cells go */
  keel_metric_family_t *families, **families_tail;
  pthread_mutex_t layer_lock;
  _Atomic(void *) layers[KEEL__METRICS_LAYERS];
  struct stat_ref *stat_refs; /* the kernel's metrics: which worker stat each reads */
  int nstat_refs;
  int64_t started_ns; /* process_start_time_seconds: keel_run's start, wall clock */
};

static int register_kernel(keel__metrics_t *reg);

static const int64_t default_buckets[] = {50000,      100000,     250000,    500000,     1000000,
                                          2500000,    5000000,    10000000,  25000000,   50000000,
                                          100000000,  250000000,  500000000, 1000000000, 2500000000,
                                          5000000000, 10000000000};

int keel__metrics_open(keel_runtime_t *rt) {
  keel__metrics_t *reg = calloc(1, sizeof *reg);
  if (!reg)
    return -ENOMEM;
  reg->rt = rt;
  reg->ncells = rt->nworkers + 1;
  reg->chunks = calloc((size_t)reg->ncells * MAX_CHUNKS, sizeof *reg->chunks);
  reg->stat_refs = calloc(KERNEL_STATS_MAX, sizeof *reg->stat_refs);
  if (!reg->chunks || !reg->stat_refs) {
    free(reg->chunks);
    free(reg->stat_refs);
    free(reg);
    return -ENOMEM;
  }
  pthread_mutex_init(&reg->lock, NULL);
  pthread_mutex_init(&reg->layer_lock, NULL);
  reg->families_tail = &reg->families;
  rt->metrics = reg;
  int rc = register_kernel(reg);
  if (rc < 0)
    keel__metrics_close(rt);
  return rc;
}

static void family_free(keel_metric_family_t *f) {
  for (keel_metric_t *m = f->series, *next; m; m = next) {
    next = m->next;
    free(m->labels);
    free(m);
  }
  for (int i = 0; i < f->nlabels; i++)
    free(f->labels[i]);
  free(f->name);
  free(f->help);
  free(f);
}

void keel__metrics_close(keel_runtime_t *rt) {
  keel__metrics_t *reg = rt->metrics;
  if (!reg)
    return;
  for (keel_metric_family_t *f = reg->families, *next; f; f = next) {
    next = f->next;
    family_free(f);
  }
  for (size_t i = 0; i < (size_t)reg->ncells * MAX_CHUNKS; i++)
    free(reg->chunks[i]);
  for (int i = 0; i < KEEL__METRICS_LAYERS; i++)
    free(atomic_load(&reg->layers[i]));
  pthread_mutex_destroy(&reg->lock);
  pthread_mutex_destroy(&reg->layer_lock);
  free(reg->chunks);
  free(reg->stat_refs);
  free(reg);
  rt->metrics = NULL;
}

void *keel__metrics_layer(keel__worker_t *w, int layer, void *(*init)(void)) {
  keel__metrics_t *reg = w ? w->rt->metrics : NULL;
  if (!reg)
    return NULL;
  void *set = atomic_load_explicit(&reg->layers[layer], memory_order_acquire);
  if (KEEL__LIKELY(set != NULL))
    return set;
  pthread_mutex_lock(&reg->layer_lock);
  set = atomic_load_explicit(&reg->layers[layer], memory_order_relaxed);
  if (!set) {
    set = init();
    atomic_store_explicit(&reg->layers[layer], set, memory_order_release);
  }
  pthread_mutex_unlock(&reg->layer_lock);
  return set;
}

/* ---- Registration ---------------------------------------------------------------- */

static bool name_ok(const char *s, bool colon) {
  if (!s || !*s)
    return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
    if (!alpha && !(p > s && c >= '0' && c <= '9'))
      return false;
  }
  return true;
}

static int count_labels(const keel_metric_opts_t *o) {
  int n = 0;
  while (n < KEEL_METRIC_LABELS_MAX && o->labels[n])
    n++;
  for (int i = 0; i < n; i++) {
    const char *l = o->labels[i];
    if (!name_ok(l, false) || !strncmp(l, "__", 2))
      return -EINVAL;
    if ((o->type == KEEL_METRIC_HISTOGRAM && !strcmp(l, "le")) ||
        (o->per_worker && !strcmp(l, "worker")))
      return -EINVAL;
    for (int j = 0; j < i; j++)
      if (!strcmp(l, o->labels[j]))
        return -EINVAL;
  }
  return n;
}

static int opts_check(const keel_metric_opts_t *o, int *nlabels) {
  if (!o || !name_ok(o->name, true) || !o->help)
    return -EINVAL;
  if (o->type != KEEL_METRIC_COUNTER && o->type != KEEL_METRIC_GAUGE &&
      o->type != KEEL_METRIC_HISTOGRAM)
    return -EINVAL;
  if ((*nlabels = count_labels(o)) < 0)
    return -EINVAL;
  if (o->read && (o->type == KEEL_METRIC_HISTOGRAM || *nlabels > 0))
    return -EINVAL;
  if (o->type == KEEL_METRIC_HISTOGRAM && o->buckets) {
    if (o->nbuckets == 0 || o->nbuckets > KEEL_METRIC_BUCKETS_MAX)
      return -EINVAL;
    for (size_t i = 1; i < o->nbuckets; i++)
      if (o->buckets[i] <= o->buckets[i - 1])
        return -EINVAL;
  }
  return o->scale < 0 ? -EINVAL : 0;
}

static bool family_same(const keel_metric_family_t *f, const keel_metric_opts_t *o, int nlabels) {
  if (f->type != o->type || f->nlabels != nlabels || f->per_worker != o->per_worker ||
      f->read != o->read || f->read_arg != o->read_arg)
    return false;
  for (int i = 0; i < nlabels; i++)
    if (strcmp(f->labels[i], o->labels[i]))
      return false;
  if (f->type != KEEL_METRIC_HISTOGRAM || !o->buckets)
    return true;
  return f->nbuckets == o->nbuckets &&
         !memcmp(f->buckets, o->buckets, o->nbuckets * sizeof(int64_t));
}

static keel_metric_family_t *family_new(keel__metrics_t *reg, const keel_metric_opts_t *o,
                                        int nlabels) {
  keel_metric_family_t *f = calloc(1, sizeof *f);
  if (!f)
    return NULL;
  f->reg = reg;
  f->type = o->type;
  f->name = strdup(o->name);
  f->help = strdup(o->help);
  f->scale = o->scale > 0 ? o->scale : 1;
  f->per_worker = o->per_worker;
  f->read = o->read;
  f->read_arg = o->read_arg;
  f->series_tail = &f->series;
  f->ncells_per_series = 1;
  bool ok = f->name && f->help;
  for (int i = 0; i < nlabels; i++)
    ok = ok && (f->labels[f->nlabels++] = strdup(o->labels[i])) != NULL;
  if (o->type == KEEL_METRIC_HISTOGRAM) {
    const int64_t *b = o->buckets ? o->buckets : default_buckets;
    f->nbuckets = o->buckets ? o->nbuckets : sizeof default_buckets / sizeof *default_buckets;
    memcpy(f->buckets, b, f->nbuckets * sizeof *b);
    f->ncells_per_series = (int)f->nbuckets + 2;
  }
  if (!ok) {
    family_free(f);
    return NULL;
  }
  return f;
}

static int family_register(keel__metrics_t *reg, const keel_metric_opts_t *opts,
                           keel_metric_family_t **out) {
  int nlabels = 0, rc = opts_check(opts, &nlabels);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&reg->lock);
  keel_metric_family_t *f = reg->families;
  while (f && strcmp(f->name, opts->name))
    f = f->next;
  if (f && !family_same(f, opts, nlabels))
    rc = -EEXIST;
  else if (!f && (f = family_new(reg, opts, nlabels)) != NULL) {
    *reg->families_tail = f;
    reg->families_tail = &f->next;
  } else if (!f)
    rc = -ENOMEM;
  pthread_mutex_unlock(&reg->lock);
  if (rc == 0)
    *out = f;
  return rc;
}

int keel_metrics_register(const keel_metric_opts_t *opts, keel_metric_family_t **out) {
  keel__worker_t *w = keel__tls_worker;
  if (!w || !w->rt->metrics)
    return -EPERM;
  return family_register(w->rt->metrics, opts, out);
}

/* ---- The kernel's own metrics: read from each worker's stats ------------------------ */

typedef struct stat_def {
  const char *name, *help;
  keel_metric_type_t type;
  size_t offset; /* in keel__worker_stats_t */
  double scale;
} stat_def_t;

#define STAT(field) offsetof(keel__worker_stats_t, field)
static const stat_def_t kernel_stats[] = {
    {"keel_worker_loops_total", "Event loop iterations.", KEEL_METRIC_COUNTER, STAT(loops), 0},
    {"keel_worker_busy_seconds_total", "Time the loop spent running tasks and handling events.",
     KEEL_METRIC_COUNTER, STAT(busy_ns), 1e-9},
    {"keel_worker_idle_seconds_total", "Time the loop spent waiting for events.",
     KEEL_METRIC_COUNTER, STAT(idle_ns), 1e-9},
    {"keel_worker_tasks", "Live tasks (at the end of the last loop iteration).", KEEL_METRIC_GAUGE,
     STAT(tasks), 0},
    {"keel_worker_tasks_spawned_total", "Tasks started.", KEEL_METRIC_COUNTER, STAT(spawned), 0},
    {"keel_worker_task_runs_total", "Switches into a task.", KEEL_METRIC_COUNTER, STAT(runs), 0},
    {"keel_worker_timers", "Timers armed (at the end of the last loop iteration).",
     KEEL_METRIC_GAUGE, STAT(timers), 0},
    {"keel_worker_messages_total", "Messages from other workers and threads handled.",
     KEEL_METRIC_COUNTER, STAT(messages), 0},
};
static const stat_def_t uring_stats[] = {
    {"keel_io_uring_submitted_total", "Submission queue entries handed to the kernel by the loop.",
     KEEL_METRIC_COUNTER, STAT(io_submitted), 0},
    {"keel_io_uring_completed_total", "Completion queue entries handled.", KEEL_METRIC_COUNTER,
     STAT(io_completed), 0},
    {"keel_io_uring_enters_total",
     "Submit-and-reap calls of the loop (one io_uring_enter each at most).", KEEL_METRIC_COUNTER,
     STAT(io_enters), 0},
};
static const stat_def_t epoll_stats[] = {
    {"keel_epoll_waits_total", "epoll_wait calls.", KEEL_METRIC_COUNTER, STAT(polls), 0},
    {"keel_epoll_events_total", "Events epoll_wait returned.", KEEL_METRIC_COUNTER,
     STAT(poll_events), 0},
};
#undef STAT

static int64_t stat_read(void *arg, int worker) {
  const stat_ref_t *ref = arg;
  const char *stats = (const char *)&ref->rt->workers[worker].stats;
  return (int64_t)atomic_load_explicit((_Atomic uint64_t *)(stats + ref->offset),
                                       memory_order_relaxed);
}

/* Tasks made ready and not yet run: two counters read apart, so clamped. */
static int64_t ready_read(void *arg, int worker) {
  keel__worker_stats_t *st = &((keel_runtime_t *)arg)->workers[worker].stats;
  uint64_t runs = atomic_load_explicit(&st->runs, memory_order_relaxed);
  uint64_t readied = atomic_load_explicit(&st->readied, memory_order_relaxed);
  return readied > runs ? (int64_t)(readied - runs) : 0;
}

static int register_stats(keel__metrics_t *reg, const stat_def_t *defs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    stat_ref_t *ref = &reg->stat_refs[reg->nstat_refs++];
    *ref = (stat_ref_t){.rt = reg->rt, .offset = defs[i].offset};
    keel_metric_opts_t o = {.type = defs[i].type,
                            .name = defs[i].name,
                            .help = defs[i].help,
                            .scale = defs[i].scale,
                            .per_worker = true,
                            .read = stat_read,
                            .read_arg = ref};
    keel_metric_family_t *f;
    int rc = family_register(reg, &o, &f);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* ---- The process's own, under the names Prometheus's client libraries use ---------- */

static int64_t process_cpu_ns(void *arg, int worker) {
  (void)arg, (void)worker;
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * KEEL_NS_PER_SEC + ts.tv_nsec;
}

/* Field (0: size, 1: resident) of /proc/self/statm, in bytes. */
static int64_t statm_bytes(int field) {
  long pages[2] = {0, 0};
  FILE *f = fopen("/proc/self/statm", "r");
  if (f) {
    if (fscanf(f, "%ld %ld", &pages[0], &pages[1]) != 2)
      pages[0] = pages[1] = 0;
    fclose(f);
  }
  return (int64_t)pages[field] * sysconf(_SC_PAGESIZE);
}

static int64_t process_rss(void *arg, int worker) {
  (void)arg, (void)worker;
  return statm_bytes(1);
}

static int64_t process_vsize(void *arg, int worker) {
  (void)arg, (void)worker;
  return statm_bytes(0);
}

static int64_t process_open_fds(void *arg, int worker) {
  (void)arg, (void)worker;
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return 0;
  int64_t n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    n += e->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the directory's own */
}

static int64_t process_max_fds(void *arg, int worker) {
  (void)arg, (void)worker;
  struct rlimit rl;
  return getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (int64_t)rl.rlim_cur
                                                                            : 0;
}

static int64_t process_start(void *arg, int worker) {
  (void)worker;
  return *(const int64_t *)arg;
}

static int register_process(keel__metrics_t *reg) {
  static const struct {
    const char *name, *help;
    keel_metric_type_t type;
    keel_metric_read_fn read;
    double scale;
  } defs[] = {
      {"process_cpu_seconds_total", "User and system CPU time of the process.", KEEL_METRIC_COUNTER,
       process_cpu_ns, 1e-9},
      {"process_resident_memory_bytes", "Resident memory of the process.", KEEL_METRIC_GAUGE,
       process_rss, 0},
      {"process_virtual_memory_bytes", "Virtual memory of the process.", KEEL_METRIC_GAUGE,
       process_vsize, 0},
      {"process_open_fds", "Open file descriptors of the process.", KEEL_METRIC_GAUGE,
       process_open_fds, 0},
      {"process_max_fds", "The process's limit of open file descriptors.", KEEL_METRIC_GAUGE,
       process_max_fds, 0},
      {"process_start_time_seconds",
       "When the runtime started (keel_run), seconds since the epoch.", KEEL_METRIC_GAUGE,
       process_start, 1e-9},
  };
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  reg->started_ns = (int64_t)now.tv_sec * KEEL_NS_PER_SEC + now.tv_nsec;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < sizeof defs / sizeof *defs; i++) {
    keel_metric_opts_t o = {.type = defs[i].type,
                            .name = defs[i].name,
                            .help = defs[i].help,
                            .read = defs[i].read,
                            .scale = defs[i].scale,
                            .read_arg = &reg->started_ns};
    keel_metric_family_t *f;
    rc = family_register(reg, &o, &f);
  }
  return rc;
}

static int register_kernel(keel__metrics_t *reg) {
  keel_metric_opts_t ready = {.type = KEEL_METRIC_GAUGE,
                              .name = "keel_worker_ready_tasks",
                              .help = "Tasks ready to run, waiting for their turn.",
                              .per_worker = true,
                              .read = ready_read,
                              .read_arg = reg->rt};
  keel_metric_family_t *f;
  int rc = register_stats(reg, kernel_stats, sizeof kernel_stats / sizeof *kernel_stats);
  if (rc == 0)
    rc = family_register(reg, &ready, &f);
  const char *backend = reg->rt->ops->name;
  if (rc == 0 && !strcmp(backend, "io_uring"))
    rc = register_stats(reg, uring_stats, sizeof uring_stats / sizeof *uring_stats);
  if (rc == 0 && !strcmp(backend, "epoll"))
    rc = register_stats(reg, epoll_stats, sizeof epoll_stats / sizeof *epoll_stats);
  return rc == 0 ? register_process(reg) : rc;
}

/* ---- Series ---------------------------------------------------------------------- */

typedef struct buf {
  char *data;
  size_t len, cap;
  int err;
} buf_t;

static void buf_grow(buf_t *b, size_t more) {
  if (b->err || b->len + more + 1 <= b->cap)
    return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + more + 1)
    cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) {
    b->err = -ENOMEM;
    return;
  }
  b->data = p;
  b->cap = cap;
}

static void buf_put(buf_t *b, const char *s, size_t n) {
  buf_grow(b, n);
  if (b->err)
    return;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void buf_printf(buf_t *b, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0)
    buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A label value as the text format quotes it: \\, \" and \n escaped. */
static void put_label_value(buf_t *b, const char *v) {
  for (const char *p = v; *p; p++) {
    if (*p == '\\' || *p == '"')
      buf_put(b, "\\", 1);
    if (*p == '\n')
      buf_put(b, "\\n", 2);
    else
      buf_put(b, p, 1);
  }
}

static int render_labels(const keel_metric_family_t *f, const char *const *values, char **out) {
  buf_t b = {0};
  buf_put(&b, "", 0);
  for (int i = 0; i < f->nlabels; i++) {
    if (!values || !values[i] || strlen(values[i]) > LABEL_VALUE_MAX) {
      free(b.data);
      return -EINVAL;
    }
    buf_printf(&b, "%s%s=\"", i ? "," : "", f->labels[i]);
    put_label_value(&b, values[i]);
    buf_put(&b, "\"", 1);
  }
  if (b.err) {
    free(b.data);
    return b.err;
  }
  char *fit = realloc(b.data, b.len + 1); /* kept as long as the series: no slack */
  *out = fit ? fit : b.data;
  return 0;
}

/* Cells for one more series in every table (under the registry lock). */
static int cells_take(keel__metrics_t *reg, keel_metric_t *m, int n) {
  if (reg->next_cell + (size_t)n > CHUNK_CELLS) {
    reg->next_chunk++;
    reg->next_cell = 0;
  }
  if (reg->next_chunk >= MAX_CHUNKS)
    return -ENOSPC;
  for (int t = 0; t < reg->ncells; t++) {
    _Atomic uint64_t **chunk = &reg->chunks[(size_t)t * MAX_CHUNKS + reg->next_chunk];
    if (!*chunk && !(*chunk = calloc(CHUNK_CELLS, sizeof **chunk)))
      return -ENOMEM;
    m->cell[t] = *chunk + reg->next_cell;
  }
  reg->next_cell += (size_t)n;
  return 0;
}

static int series_new(keel_metric_family_t *f, char *labels, keel_metric_t **out) {
  keel__metrics_t *reg = f->reg;
  keel_metric_t *m = calloc(1, sizeof *m + (size_t)reg->ncells * sizeof m->cell[0]);
  if (!m)
    return -ENOMEM;
  m->family = f;
  m->rt = reg->rt;
  m->labels = labels;
  m->ncells = reg->ncells;
  int rc = cells_take(reg, m, f->ncells_per_series);
  if (rc < 0) {
    free(m);
    return rc;
  }
  *f->series_tail = m;
  f->series_tail = &m->next;
  *out = m;
  return 0;
}

int keel_metrics_series(keel_metric_family_t *f, const char *const *values, keel_metric_t **out) {
  if (!f || f->read)
    return -EINVAL;
  char *labels = NULL;
  int rc = render_labels(f, values, &labels);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&f->reg->lock);
  keel_metric_t *m = f->series;
  while (m && strcmp(m->labels, labels))
    m = m->next;
  if (m) {
    free(labels);
    *out = m;
  } else if ((rc = series_new(f, labels, out)) < 0) {
    free(labels);
  }
  pthread_mutex_unlock(&f->reg->lock);
  return rc;
}

static int simple(keel_metric_type_t type, const char *name, const char *help,
                  keel_metric_t **out) {
  keel_metric_family_t *f;
  keel_metric_opts_t o = {.type = type, .name = name, .help = help};
  int rc = keel_metrics_register(&o, &f);
  return rc < 0 ? rc : keel_metrics_series(f, NULL, out);
}

int keel_metrics_counter(const char *name, const char *help, keel_metric_t **out) {
  return simple(KEEL_METRIC_COUNTER, name, help, out);
}

int keel_metrics_gauge(const char *name, const char *help, keel_metric_t **out) {
  return simple(KEEL_METRIC_GAUGE, name, help, out);
}

/* ---- Writing and reading values --------------------------------------------------- */

void keel_metric_add(keel_metric_t *m, uint64_t n) { keel__metric_add(keel__tls_worker, m, n); }

void keel_metric_inc(keel_metric_t *m) { keel__metric_add(keel__tls_worker, m, 1); }

void keel_metric_gauge_add(keel_metric_t *m, int64_t delta) {
  keel__metric_add(keel__tls_worker, m, (uint64_t)delta);
}

void keel_metric_gauge_set(keel_metric_t *m, int64_t value) {
  keel__worker_t *w = keel__tls_worker;
  if (w && w->rt == m->rt)
    atomic_store_explicit(m->cell[w->id], (uint64_t)value, memory_order_relaxed);
  else
    atomic_store_explicit(m->cell[m->ncells - 1], (uint64_t)value, memory_order_relaxed);
}

static size_t bucket_of(const keel_metric_family_t *f, int64_t value) {
  size_t lo = 0, hi = f->nbuckets; /* the first bound >= value; nbuckets: +Inf */
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (f->buckets[mid] < value)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

void keel_metric_observe(keel_metric_t *m, int64_t value) {
  keel_metric_family_t *f = m->family;
  if (value < 0)
    value = 0;
  size_t b = bucket_of(f, value);
  keel__worker_t *w = keel__tls_worker;
  if (KEEL__LIKELY(w && w->rt == m->rt)) {
    keel__stat_add(&m->cell[w->id][b], 1);
    keel__stat_add(&m->cell[w->id][f->nbuckets + 1], (uint64_t)value);
  } else {
    atomic_fetch_add_explicit(&m->cell[m->ncells - 1][b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->cell[m->ncells - 1][f->nbuckets + 1], (uint64_t)value,
                              memory_order_relaxed);
  }
}

static uint64_t cell_load(const keel_metric_t *m, int table, size_t i) {
  return atomic_load_explicit(&m->cell[table][i], memory_order_relaxed);
}

/* Sum of cell i over the tables in [from, to). */
static uint64_t cell_sum(const keel_metric_t *m, int from, int to, size_t i) {
  uint64_t sum = 0;
  for (int t = from; t < to; t++)
    sum += cell_load(m, t, i);
  return sum;
}

int64_t keel_metric_value(const keel_metric_t *m) {
  const keel_metric_family_t *f = m->family;
  if (f->type != KEEL_METRIC_HISTOGRAM)
    return (int64_t)cell_sum(m, 0, m->ncells, 0);
  uint64_t count = 0;
  for (size_t b = 0; b <= f->nbuckets; b++)
    count += cell_sum(m, 0, m->ncells, b);
  return (int64_t)count;
}

int64_t keel_metric_sum(const keel_metric_t *m) {
  const keel_metric_family_t *f = m->family;
  if (f->type != KEEL_METRIC_HISTOGRAM)
    return keel_metric_value(m);
  return (int64_t)cell_sum(m, 0, m->ncells, f->nbuckets + 1);
}

/* ---- Export -------------------------------------------------------------------------- */

static void put_number(buf_t *b, const keel_metric_family_t *f, int64_t raw, bool is_signed) {
  if (f->scale == 1 && is_signed)
    buf_printf(b, "%lld", (long long)raw);
  else if (f->scale == 1)
    buf_printf(b, "%llu", (unsigned long long)(uint64_t)raw);
  else
    buf_printf(b, "%.12g", (is_signed ? (double)raw : (double)(uint64_t)raw) * f->scale);
}

/* name{worker="w",labels,extra} — each part only when present. */
static void put_series_name(buf_t *b, const keel_metric_family_t *f, const char *suffix, int worker,
                            const char *labels, const char *extra) {
  buf_printf(b, "%s%s", f->name, suffix);
  bool any = worker >= -1 && f->per_worker;
  any = any || (labels && *labels) || extra;
  if (!any)
    return;
  buf_put(b, "{", 1);
  const char *sep = "";
  if (f->per_worker && worker >= 0) {
    buf_printf(b, "worker=\"%d\"", worker);
    sep = ",";
  } else if (f->per_worker) {
    buf_put(b, "worker=\"other\"", 14);
    sep = ",";
  }
  if (labels && *labels) {
    buf_printf(b, "%s%s", sep, labels);
    sep = ",";
  }
  if (extra)
    buf_printf(b, "%s%s", sep, extra);
  buf_put(b, "}", 1);
}

static void put_histogram(buf_t *b, const keel_metric_family_t *f, const keel_metric_t *m,
                          int worker, int from, int to) {
  uint64_t cumulative = 0;
  char le[64];
  for (size_t i = 0; i <= f->nbuckets; i++) {
    cumulative += cell_sum(m, from, to, i);
    if (i < f->nbuckets)
      snprintf(le, sizeof le, "le=\"%.12g\"", (double)f->buckets[i] * f->scale);
    else
      snprintf(le, sizeof le, "le=\"+Inf\"");
    put_series_name(b, f, "_bucket", worker, m->labels, le);
    buf_printf(b, " %llu\n", (unsigned long long)cumulative);
  }
  put_series_name(b, f, "_sum", worker, m->labels, NULL);
  buf_put(b, " ", 1);
  put_number(b, f, (int64_t)cell_sum(m, from, to, f->nbuckets + 1), false);
  buf_put(b, "\n", 1);
  put_series_name(b, f, "_count", worker, m->labels, NULL);
  buf_printf(b, " %llu\n", (unsigned long long)cumulative);
}

/* True if threads outside the workers wrote to m (its shared cells). */
static bool foreign_written(const keel_metric_t *m) {
  int cells = m->family->ncells_per_series;
  for (int i = 0; i < cells; i++)
    if (cell_load(m, m->ncells - 1, (size_t)i))
      return true;
  return false;
}

/* One series: per worker (and "other" when threads outside wrote), or summed. */
static void put_series(buf_t *b, const keel_metric_family_t *f, const keel_metric_t *m) {
  int n = m->ncells, groups = f->per_worker ? n : 1;
  for (int g = 0; g < groups; g++) {
    int from = f->per_worker ? g : 0, to = f->per_worker ? g + 1 : n;
    int worker = f->per_worker ? (g == n - 1 ? -1 : g) : -2;
    if (worker == -1 && !foreign_written(m))
      continue;
    if (f->type == KEEL_METRIC_HISTOGRAM) {
      put_histogram(b, f, m, worker, from, to);
      continue;
    }
    put_series_name(b, f, "", worker, m->labels, NULL);
    buf_put(b, " ", 1);
    put_number(b, f, (int64_t)cell_sum(m, from, to, 0), f->type == KEEL_METRIC_GAUGE);
    buf_put(b, "\n", 1);
  }
}

static void put_read_family(buf_t *b, const keel_metric_family_t *f, int nworkers) {
  for (int i = 0; i < (f->per_worker ? nworkers : 1); i++) {
    put_series_name(b, f, "", f->per_worker ? i : -2, NULL, NULL);
    buf_put(b, " ", 1);
    put_number(b, f, f->read(f->read_arg, f->per_worker ? i : -1), f->type == KEEL_METRIC_GAUGE);
    buf_put(b, "\n", 1);
  }
}

static void put_help(buf_t *b, const char *help) {
  for (const char *p = help; *p; p++) {
    if (*p == '\\')
      buf_put(b, "\\\\", 2);
    else if (*p == '\n')
      buf_put(b, "\\n", 2);
    else
      buf_put(b, p, 1);
  }
}

static void put_family(buf_t *b, const keel_metric_family_t *f, int nworkers) {
  static const char *const types[] = {"", "counter", "gauge", "histogram"};
  if (!f->read && !f->series)
    return; /* no series yet: nothing to say */
  buf_printf(b, "# HELP %s ", f->name);
  put_help(b, f->help);
  buf_printf(b, "\n# TYPE %s %s\n", f->name, types[f->type]);
  if (f->read) {
    put_read_family(b, f, nworkers);
    return;
  }
  for (const keel_metric_t *m = f->series; m; m = m->next)
    put_series(b, f, m);
}

int keel_metrics_write(keel_sink_fn sink, void *arg) {
  keel__worker_t *w = keel__tls_worker;
  if (!w || !w->rt->metrics)
    return -EPERM;
  keel__metrics_t *reg = w->rt->metrics;
  buf_t b = {0};
  pthread_mutex_lock(&reg->lock);
  for (const keel_metric_family_t *f = reg->families; f; f = f->next)
    put_family(&b, f, reg->ncells - 1);
  pthread_mutex_unlock(&reg->lock);
  int rc = b.err;
  for (size_t off = 0; rc == 0 && off < b.len; off += 65536) {
    size_t n = b.len - off < 65536 ? b.len - off : 65536;
    rc = sink(arg, b.data + off, n);
  }
  free(b.data);
  return rc;
}
