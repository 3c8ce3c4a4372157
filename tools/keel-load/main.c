/* keel-load: a load generator on keel, for comparing servers.
 *
 *   keel-load MODE [options]      (keel-load --help lists modes and options)
 *
 * Phases: connect every connection (at most --connect-concurrency at a
 * time, and --connect-rate a second), warm up, measure for --duration,
 * give connections --linger to end by themselves, then cancel everything
 * and report.
 * Worker 0 only keeps time, so that the window's edges and the server's
 * /proc readings there are not held up by connection work; connections run
 * on workers 1 .. --workers. Exit status: 0 when every connection was
 * established and nothing failed or mismatched and some message completed,
 * 1 otherwise (the reason on stderr), 2 for bad usage. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "load.h"

#define SETTLE_POLL_MS 1

typedef struct run {
  load_t *load;
  load_result_t *result;
  int server_err; /* reading the server's /proc files failed */
  int failure;    /* the run itself could not go on (-ENOMEM...) */
} run_t;

/* 10,000 connections need more descriptors than the usual soft limit. */
static void raise_nofile(long conns) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
    return;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur != RLIM_INFINITY && (rlim_t)conns + 64 > rl.rlim_cur)
    fprintf(stderr, "keel-load: warning: %ld connections but a limit of %llu descriptors\n", conns,
            (unsigned long long)rl.rlim_cur);
}

static void workers_destroy(load_t *l) {
  for (int i = 0; l->workers != NULL && i < l->opts.workers; i++) {
    if (l->workers[i] != NULL)
      free(l->workers[i]->conns);
    free(l->workers[i]);
  }
  free(l->workers);
  l->workers = NULL;
}

/* Connection i goes to worker i % workers, and so does an even share of
 * the connect concurrency. */
static int workers_create(load_t *l) {
  const load_opts_t *o = &l->opts;
  l->workers = calloc((size_t)o->workers, sizeof *l->workers);
  if (l->workers == NULL)
    return -ENOMEM;
  size_t stride = (sizeof(load_worker_t) + 63) / 64 * 64; /* no false sharing */
  for (int i = 0; i < o->workers; i++) {
    load_worker_t *w = l->workers[i] = aligned_alloc(64, stride);
    if (w == NULL)
      return -ENOMEM;
    memset(w, 0, sizeof *w);
    w->load = l;
    w->index = i + 1;
    w->nconns = o->conns / o->workers + (i < o->conns % o->workers);
    w->connectors = o->connect_concurrency / o->workers + (i < o->connect_concurrency % o->workers);
    w->connectors = w->connectors < 1 ? 1 : w->connectors;
    hist_init(&w->hist);
    w->conns = calloc((size_t)(w->nconns ? w->nconns : 1), sizeof *w->conns);
    if (w->conns == NULL)
      return -ENOMEM;
    for (long j = 0; j < w->nconns; j++)
      w->conns[j] = (load_conn_t){.worker = w, .id = (uint32_t)(i + j * o->workers)};
  }
  return 0;
}

static int spawn_workers(load_t *l, keel_scope_t *scope) {
  for (int i = 0; i < l->opts.workers; i++) {
    keel_spawn_opts_t so = {.name = "worker", .on_worker = KEEL_WORKER(l->workers[i]->index)};
    int rc = keel_spawn(scope, load_worker_task, l->workers[i], &so);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Waits until every connection is established or has failed. */
static int wait_settled(load_t *l) {
  int64_t start = keel_now_ns();
  while (atomic_load(&l->settled) < l->opts.conns) {
    int rc = keel_sleep_ms(SETTLE_POLL_MS);
    if (rc < 0)
      return rc;
  }
  fprintf(stderr, "keel-load: %ld connections settled in %.2f s; warming up for %.2f s\n",
          l->opts.conns, (double)(keel_now_ns() - start) / 1e9, (double)l->opts.warmup_ns / 1e9);
  return 0;
}

/* Reads the server's CPU time at a window edge (and its RSS at the end). */
static void read_server(run_t *run, uint64_t *ticks, bool rss) {
  pid_t pid = run->load->opts.server_pid;
  if (pid == 0 || run->server_err != 0)
    return;
  run->server_err = load_proc_cpu_ticks(pid, ticks);
  if (run->server_err == 0 && rss)
    run->server_err = load_proc_rss_kib(pid, &run->result->server_rss_kib);
}

/* Warm-up, then the measured window. Its edges are published before it
 * starts: a response counts when its completion time falls inside. */
static int measure(run_t *run) {
  load_t *l = run->load;
  load_result_t *r = run->result;
  uint64_t ticks_start = 0, ticks_end = 0;
  int rc = keel_sleep_ns(l->opts.warmup_ns);
  if (rc < 0)
    return rc;
  read_server(run, &ticks_start, false);
  int64_t start = keel_now_ns(), end = start + l->opts.duration_ns;
  atomic_store(&l->window_end_ns, end);
  atomic_store(&l->window_start_ns, start);
  rc = keel_sleep_until(end);
  if (rc < 0) { /* interrupted: the window ends now */
    end = keel_now_ns();
    atomic_store(&l->window_end_ns, end);
  }
  read_server(run, &ticks_end, true);
  r->duration_ns = end - start;
  r->server = l->opts.server_pid != 0 && run->server_err == 0;
  r->server_cpu_s = (double)(ticks_end - ticks_start) / (double)sysconf(_SC_CLK_TCK);
  return rc;
}

static void collect(const load_t *l, load_result_t *r) {
  r->backend = "none";
  for (int i = 0; i < l->opts.workers; i++) {
    const load_worker_t *w = l->workers[i];
    if (w->backend != NULL && i == 0)
      r->backend = w->backend;
    r->established += w->established;
    r->connect_errors += w->connect_errors;
    r->errors += w->errors;
    r->mismatches += w->mismatches;
    r->messages += w->messages;
    r->bytes += w->bytes;
    r->completed += w->completed;
    r->unanswered += w->unanswered;
    r->reconnects += w->reconnects;
    hist_merge(&r->hist, &w->hist);
  }
}

/* --linger: after the window, connections may end by themselves (modes
 * start nothing new once `lingering` is set) for that long at most. */
static int linger(load_t *l) {
  atomic_store(&l->lingering, true);
  int64_t end = keel_now_ns() + l->opts.linger_ns;
  int rc = 0;
  while (rc == 0 && atomic_load(&l->live) > 0 && keel_now_ns() < end)
    rc = keel_sleep_ms(SETTLE_POLL_MS);
  return rc;
}

/* The main task: runs the phases, stops every connection, sums up. */
static int control_task(void *arg) {
  run_t *run = arg;
  load_t *l = run->load;
  keel_scope_t *scope = NULL;
  int src = keel_scope_open(&(keel_scope_opts_t){.name = "load"}, &scope);
  if (src < 0) {
    run->failure = src;
    return 0;
  }
  l->start_ns = keel_now_ns();
  int rc = spawn_workers(l, scope);
  if (rc == 0)
    rc = wait_settled(l);
  if (rc == 0)
    rc = measure(run);
  if (rc == 0 && l->opts.linger_ns > 0)
    rc = linger(l);
  load_stop(l, scope);
  keel_scope_join(scope);
  keel_scope_close(scope);
  collect(l, run->result);
  run->result->interrupted = rc == -ECANCELED;
  run->failure = rc == -ECANCELED ? 0 : rc;
  return 0; /* the verdict tells */
}

/* Exit status 0 or 1, saying on stderr why a run failed. */
static int verdict(const run_t *run) {
  const load_t *l = run->load;
  const load_result_t *r = run->result;
  int bad = 0;
  if (r->interrupted && ++bad)
    fprintf(stderr, "keel-load: interrupted\n");
  if (r->established < (uint64_t)l->opts.conns && ++bad)
    fprintf(stderr, "keel-load: %llu of %ld connections established\n",
            (unsigned long long)r->established, l->opts.conns);
  if (r->errors > 0 && ++bad)
    fprintf(stderr, "keel-load: %llu errors\n", (unsigned long long)r->errors);
  if (r->mismatches > 0 && ++bad)
    fprintf(stderr, "keel-load: %llu mismatched responses\n", (unsigned long long)r->mismatches);
  if (r->messages == 0 && ++bad)
    fprintf(stderr, "keel-load: no message completed in the measured window\n");
  if (run->failure != 0 && ++bad)
    fprintf(stderr, "keel-load: %s\n", keel_strerror(run->failure));
  if (run->server_err != 0 && ++bad)
    fprintf(stderr, "keel-load: cannot read /proc/%ld: %s\n", (long)l->opts.server_pid,
            keel_strerror(run->server_err));
  return bad ? 1 : 0;
}

static void load_init(load_t *l) {
  memset(l, 0, sizeof *l);
  strcpy(l->opts.host, "127.0.0.1");
  l->opts.port = 7000;
  l->opts.conns = 100;
  l->opts.duration_ns = 10 * KEEL_NS_PER_SEC;
  l->opts.warmup_ns = KEEL_NS_PER_SEC;
  l->opts.workers = 1;
  l->opts.backend = KEEL_BACKEND_AUTO;
  l->opts.connect_concurrency = 256;
  atomic_init(&l->window_start_ns, INT64_MAX);
  atomic_init(&l->window_end_ns, INT64_MAX);
  atomic_init(&l->settled, 0);
  atomic_init(&l->live, 0);
  atomic_init(&l->lingering, false);
  atomic_init(&l->stopping, false);
  atomic_init(&l->reported, 0);
}

/* Starts the runtime: worker 0 keeps time, the others run connections. */
static int run_load(run_t *run) {
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = run->load->opts.workers + 1;
  cfg.backend = run->load->opts.backend;
  cfg.handle_signals = true; /* Ctrl-C ends the run early and still reports */
  int rc = keel_run(&cfg, control_task, run);
  if (rc < 0) {
    fprintf(stderr, "keel-load: %s\n", keel_strerror(rc));
    return 1;
  }
  load_report(run->load, run->result);
  return verdict(run);
}

int main(int argc, char **argv) {
  /* Both outlive keel_run, so every worker may share them. */
  load_t *l = malloc(sizeof *l);
  load_result_t *result = calloc(1, sizeof *result);
  if (l == NULL || result == NULL) {
    fprintf(stderr, "keel-load: out of memory\n");
    return 1;
  }
  load_init(l);
  hist_init(&result->hist);
  int rc = load_parse_args(l, argc, argv);
  if (rc == 0) {
    raise_nofile(l->opts.conns);
    rc = l->mode->prepare(l) < 0 || workers_create(l) < 0 ? -ENOMEM : 0;
    if (rc < 0)
      fprintf(stderr, "keel-load: cannot set up the run\n");
    run_t run = {.load = l, .result = result};
    rc = rc < 0 ? 1 : run_load(&run);
  } else {
    rc = rc == 1 ? 0 : 2;
  }
  workers_destroy(l);
  if (l->mode != NULL)
    l->mode->destroy(l);
  free(result);
  free(l);
  return rc;
}
