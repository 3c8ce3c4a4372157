/* kernel: micro-benchmarks of the task kernel on this machine.
 *
 *   kernel [--json] [--quick] [--runs N] [--backend auto|uring|epoll]
 *
 * Context switch (two tasks ping-ponging with keel_yield on one worker),
 * spawn+join of a trivial task (one at a time, and in batches of 1000), and
 * timer-wheel start+stop. Each figure is the best of several runs, because
 * the machines are shared and noise only ever adds time. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/keel.h"
#include "timer-internal.h"

#define BATCH 1000
#define TIMER_SLOTS 4096       /* timers cycled through by the start+stop loop */
#define TIMER_BACKGROUND 10000 /* armed timers sitting in the wheel meanwhile */

typedef struct bench_opts {
  int runs;
  long scale; /* iteration divisor: 1, or 10 with --quick */
  bool json;
  keel_backend_t backend;
} bench_opts_t;

typedef struct result {
  const char *name;
  const char *key; /* JSON key */
  double ns;       /* best run, ns per operation; < 0 if it failed */
  double target;
} result_t;

enum { R_SWITCH, R_SPAWN, R_SPAWN_BATCH, R_SPAWN_OTHER, R_TIMER, R_COUNT };

typedef struct bench {
  bench_opts_t opts;
  result_t results[R_COUNT];
  const char *backend_name;
} bench_t;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- Context switch ------------------------------------------------------ */

static int yielder(void *arg) {
  long n = *(const long *)arg;
  for (long i = 0; i < n; i++)
    if (keel_yield() < 0)
      return -ECANCELED;
  return 0;
}

/* ns per keel_yield with exactly two ready tasks: each yield hands the
 * worker to the other task. */
static double run_switch(long yields_per_task) {
  keel_scope_t *scope = NULL;
  if (keel_scope_open(NULL, &scope) < 0)
    return -1;
  int64_t start = now_ns();
  int rc = keel_spawn(scope, yielder, &yields_per_task, NULL);
  if (rc == 0)
    rc = keel_spawn(scope, yielder, &yields_per_task, NULL);
  int join = keel_scope_join(scope);
  int64_t elapsed = now_ns() - start;
  keel_scope_close(scope);
  if (rc < 0 || join < 0)
    return -1;
  return (double)elapsed / (2.0 * (double)yields_per_task);
}

/* ---- Spawn + join -------------------------------------------------------- */

static int noop_task(void *arg) {
  (void)arg;
  return 0;
}

/* ns per spawn+join, batch tasks spawned before each join (1: the
 * one-at-a-time case). A fresh scope per BATCH tasks keeps the scope's
 * bookkeeping bounded and amortises opening it. */
static double run_spawn(long tasks, int batch) {
  int64_t start = now_ns();
  for (long done = 0; done < tasks; done += BATCH) {
    keel_scope_t *scope = NULL;
    if (keel_scope_open(NULL, &scope) < 0)
      return -1;
    int rc = 0;
    for (int i = 0; i < BATCH && rc == 0; i += batch) {
      for (int j = 0; j < batch && rc == 0; j++)
        rc = keel_spawn(scope, noop_task, NULL, NULL);
      if (rc == 0)
        rc = keel_scope_join(scope);
    }
    keel_scope_close(scope);
    if (rc < 0)
      return -1;
  }
  return (double)(now_ns() - start) / (double)tasks;
}

/* ns per spawn+join of tasks spawned onto worker 1 from worker 0, in
 * batches of OTHER_BATCH: the fan-out of a dispatcher. Every stack is
 * allocated on worker 0 and freed on worker 1, so this also measures
 * the stacks' way back through the runtime's depot. */
#define OTHER_BATCH 100
static double run_spawn_other(long tasks) {
  keel_spawn_opts_t on1 = {.name = "other", .on_worker = KEEL_WORKER(1)};
  int64_t start = now_ns();
  for (long done = 0; done < tasks; done += OTHER_BATCH) {
    keel_scope_t *scope = NULL;
    if (keel_scope_open(NULL, &scope) < 0)
      return -1;
    int rc = 0;
    for (int j = 0; j < OTHER_BATCH && rc == 0; j++)
      rc = keel_spawn(scope, noop_task, NULL, &on1);
    if (rc == 0)
      rc = keel_scope_join(scope);
    keel_scope_close(scope);
    if (rc < 0)
      return -1;
  }
  return (double)(now_ns() - start) / (double)tasks;
}

static int bench_other_main(void *arg);

/* ---- Timer wheel ----------------------------------------------------------- */

static void timer_noop(keel__timer_t *t) { (void)t; }

/* Delays spread over every wheel level (1 ms .. ~1 day), deterministic. */
static int64_t timer_delay(uint64_t *rng) {
  *rng = *rng * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
  unsigned bits = 1 + (unsigned)(*rng >> 59) % 27; /* up to 2^27 ms */
  return 1 + (int64_t)((*rng >> 20) & ((UINT64_C(1) << bits) - 1));
}

typedef struct timer_bench {
  keel__wheel_t wheel;
  keel__timer_t background[TIMER_BACKGROUND];
  keel__timer_t timers[TIMER_SLOTS];
  int64_t delays[TIMER_SLOTS];
} timer_bench_t;

/* ns per start+stop pair on a wheel already holding TIMER_BACKGROUND timers,
 * as a worker's wheel does under load (deadlines come and go per read). */
static double run_timer(timer_bench_t *tb, long pairs) {
  const int64_t now = 1000000;
  uint64_t rng = 42;
  keel__wheel_init(&tb->wheel, now);
  for (int i = 0; i < TIMER_BACKGROUND; i++) {
    keel__timer_init(&tb->background[i], timer_noop);
    keel__timer_start(&tb->wheel, &tb->background[i], now + timer_delay(&rng));
  }
  for (int i = 0; i < TIMER_SLOTS; i++) {
    keel__timer_init(&tb->timers[i], timer_noop);
    tb->delays[i] = now + timer_delay(&rng);
  }
  int64_t start = now_ns();
  for (long i = 0; i < pairs; i++) {
    keel__timer_t *t = &tb->timers[i & (TIMER_SLOTS - 1)];
    keel__timer_start(&tb->wheel, t, tb->delays[i & (TIMER_SLOTS - 1)]);
    keel__timer_stop(&tb->wheel, t);
  }
  int64_t elapsed = now_ns() - start;
  return tb->wheel.count == TIMER_BACKGROUND ? (double)elapsed / (double)pairs : -1;
}

/* ---- Driver ----------------------------------------------------------------- */

/* Keeps the best (smallest) successful figure; a failed run marks it failed. */
static void keep_best(result_t *r, double ns, int run) {
  if (ns < 0 || (run > 0 && r->ns < 0))
    r->ns = -1;
  else if (run == 0 || ns < r->ns)
    r->ns = ns;
}

/* The task benchmarks, run inside the runtime's single worker. */
static int bench_main(void *arg) {
  bench_t *b = arg;
  long scale = b->opts.scale;
  b->backend_name = keel_backend_name();
  for (int run = 0; run < b->opts.runs; run++) {
    keep_best(&b->results[R_SWITCH], run_switch(2000000 / scale), run);
    keep_best(&b->results[R_SPAWN], run_spawn(1000000 / scale, 1), run);
    keep_best(&b->results[R_SPAWN_BATCH], run_spawn(1000000 / scale, BATCH), run);
  }
  return 0;
}

/* Run in a second runtime, with two workers. */
static int bench_other_main(void *arg) {
  bench_t *b = arg;
  for (int run = 0; run < b->opts.runs; run++)
    keep_best(&b->results[R_SPAWN_OTHER], run_spawn_other(200000 / b->opts.scale), run);
  return 0;
}

static int bench_timer(bench_t *b) {
  timer_bench_t *tb = malloc(sizeof *tb);
  if (tb == NULL)
    return -ENOMEM;
  for (int run = 0; run < b->opts.runs; run++)
    keep_best(&b->results[R_TIMER], run_timer(tb, 5000000 / b->opts.scale), run);
  free(tb);
  return 0;
}

static const char *verdict(const result_t *r) {
  if (r->ns < 0)
    return "FAILED";
  return r->ns <= r->target ? "PASS" : "ABOVE";
}

static void print_text(const bench_t *b) {
  printf("keel kernel micro-benchmarks (backend %s, 1 worker; 2 for the other-worker case; best "
         "of %d)\n",
         b->backend_name, b->opts.runs);
  for (int i = 0; i < R_COUNT; i++) {
    const result_t *r = &b->results[i];
    char label[48];
    snprintf(label, sizeof label, "%s:", r->name);
    printf("%-26s %8.1f ns   (target <= %3.0f ns)  %s\n", label, r->ns, r->target, verdict(r));
  }
}

static void print_json(const bench_t *b) {
  printf("{\"backend\": \"%s\", \"runs\": %d", b->backend_name, b->opts.runs);
  for (int i = 0; i < R_COUNT; i++) {
    const result_t *r = &b->results[i];
    printf(", \"%s\": {\"ns\": %.1f, \"target_ns\": %.0f, \"verdict\": \"%s\"}", r->key, r->ns,
           r->target, verdict(r));
  }
  printf("}\n");
}

static void usage(FILE *out) {
  fprintf(out, "usage: kernel [--json] [--quick] [--runs N] [--backend auto|uring|epoll]\n");
}

/* Returns 0 to run, 1 on bad flags, 2 after --help. */
static int parse_args(int argc, char **argv, bench_opts_t *o) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--json") == 0) {
      o->json = true;
    } else if (strcmp(a, "--quick") == 0) {
      o->scale = 10;
    } else if (strcmp(a, "--runs") == 0 && i + 1 < argc) {
      o->runs = atoi(argv[++i]);
      if (o->runs < 1 || o->runs > 1000)
        return 1;
    } else if (strcmp(a, "--backend") == 0 && i + 1 < argc) {
      const char *v = argv[++i];
      if (strcmp(v, "auto") == 0)
        o->backend = KEEL_BACKEND_AUTO;
      else if (strcmp(v, "uring") == 0)
        o->backend = KEEL_BACKEND_URING;
      else if (strcmp(v, "epoll") == 0)
        o->backend = KEEL_BACKEND_EPOLL;
      else
        return 1;
    } else if (strcmp(a, "--help") == 0) {
      return 2;
    } else {
      return 1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  bench_t b = {
      .opts = {.runs = 5, .scale = 1, .backend = KEEL_BACKEND_AUTO},
      .results = {[R_SWITCH] = {"context switch", "context_switch_ns", 0, 20},
                  [R_SPAWN] = {"spawn+join", "spawn_join_ns", 0, 300},
                  [R_SPAWN_BATCH] = {"spawn+join (batch 1000)", "spawn_join_batch_ns", 0, 300},
                  [R_SPAWN_OTHER] = {"spawn on other worker", "spawn_join_other_worker_ns", 0,
                                     1000},
                  [R_TIMER] = {"timer start+stop", "timer_start_stop_ns", 0, 50}},
  };
  int rc = parse_args(argc, argv, &b.opts);
  if (rc != 0) {
    usage(rc == 2 ? stdout : stderr);
    return rc == 2 ? 0 : 1;
  }
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = 1;
  cfg.backend = b.opts.backend;
  rc = keel_run(&cfg, bench_main, &b);
  if (rc < 0) {
    fprintf(stderr, "kernel: cannot start the runtime: %s\n", keel_strerror(rc));
    return 1;
  }
  cfg.workers = 2;
  rc = keel_run(&cfg, bench_other_main, &b);
  if (rc < 0) {
    fprintf(stderr, "kernel: cannot start the two-worker runtime: %s\n", keel_strerror(rc));
    return 1;
  }
  if (bench_timer(&b) < 0) {
    fprintf(stderr, "kernel: %s\n", keel_strerror(-ENOMEM));
    return 1;
  }
  if (b.opts.json)
    print_json(&b);
  else
    print_text(&b);
  return 0;
}
