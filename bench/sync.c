/* sync: micro-benchmarks of keel's task synchronisation.
 *
 *   sync [--quick]
 *
 * "mutex lock+unlock" is one task locking and unlocking an uncontended
 * keel_mutex_t (target <= 20 ns; pthread_mutex_t alongside for scale).
 * "hand-off" runs two tasks that each lock, yield while holding the lock
 * (so the other parks on it), and unlock, which hands the lock straight to
 * the parked one: the figure is per hand-off, context switches included.
 * With the two tasks on two workers, each may re-take the lock before the
 * other parks, so that line is per lock, some of them hand-offs (each a
 * message to the other worker). "sem acquire+release" is one task on an
 * uncontended semaphore. Best of 5 runs, because the machines are shared
 * and noise only ever adds time. Needs 2 CPUs for the cross-worker line. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keel/keel.h"

#define RUNS 5

static long iterations = 20 * 1000 * 1000;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * KEEL_NS_PER_SEC + ts.tv_nsec;
}

static double bench_mutex(void) {
  keel_mutex_t m;
  keel_mutex_init(&m);
  int64_t t0 = mono_ns();
  for (long i = 0; i < iterations; i++) {
    if (keel_mutex_lock(&m) != 0)
      return -1;
    keel_mutex_unlock(&m);
  }
  double ns = (double)(mono_ns() - t0) / (double)iterations;
  keel_mutex_destroy(&m);
  return ns;
}

static double bench_pthread_mutex(void) {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  int64_t t0 = mono_ns();
  for (long i = 0; i < iterations; i++) {
    pthread_mutex_lock(&m);
    pthread_mutex_unlock(&m);
  }
  return (double)(mono_ns() - t0) / (double)iterations;
}

static double bench_sem(void) {
  keel_sem_t s;
  keel_sem_init(&s, 1);
  int64_t t0 = mono_ns();
  for (long i = 0; i < iterations; i++) {
    if (keel_sem_acquire(&s, 1) != 0)
      return -1;
    keel_sem_release(&s, 1);
  }
  double ns = (double)(mono_ns() - t0) / (double)iterations;
  keel_sem_destroy(&s);
  return ns;
}

static double bench_rwlock_read(void) {
  keel_rwlock_t l;
  keel_rwlock_init(&l);
  int64_t t0 = mono_ns();
  for (long i = 0; i < iterations; i++) {
    if (keel_rwlock_read_lock(&l) != 0)
      return -1;
    keel_rwlock_unlock_read(&l);
  }
  double ns = (double)(mono_ns() - t0) / (double)iterations;
  keel_rwlock_destroy(&l);
  return ns;
}

/* ---- Contended hand-off ------------------------------------------------------- */

struct handoff {
  keel_mutex_t m;
  long rounds;
  long count; /* under m */
};

static int handoff_task(void *arg) {
  struct handoff *h = arg;
  for (long i = 0; i < h->rounds; i++) {
    int rc = keel_mutex_lock(&h->m);
    if (rc != 0)
      return rc;
    h->count++;
    keel_yield(); /* the other task runs and parks on the lock */
    keel_mutex_unlock(&h->m);
  }
  return 0;
}

static int handoff_worker; /* the second task's worker: 0 or 1 */

static double bench_handoff(void) {
  struct handoff h = {.rounds = iterations / 20, .count = 0};
  keel_mutex_init(&h.m);
  keel_scope_t *s = NULL;
  if (keel_scope_open(NULL, &s) < 0)
    return -1;
  keel_spawn_opts_t on = {.name = "other", .on_worker = KEEL_WORKER(handoff_worker)};
  int64_t t0 = mono_ns();
  if (keel_spawn(s, handoff_task, &h, NULL) < 0 || keel_spawn(s, handoff_task, &h, &on) < 0)
    return -1;
  int rc = keel_scope_join(s);
  double ns = (double)(mono_ns() - t0) / (double)(2 * h.rounds);
  keel_scope_close(s);
  keel_mutex_destroy(&h.m);
  return rc == 0 && h.count == 2 * h.rounds ? ns : -1;
}

static double best_of(double (*fn)(void)) {
  double best = -1;
  for (int r = 0; r < RUNS; r++) {
    double ns = fn();
    if (ns < 0)
      return -1;
    if (best < 0 || ns < best)
      best = ns;
  }
  return best;
}

static int bench_main(void *arg) {
  (void)arg;
  printf("%-40s %8.1f ns/op (target 20)\n", "mutex lock+unlock (uncontended)",
         best_of(bench_mutex));
  printf("%-40s %8.1f ns/op\n", "pthread_mutex lock+unlock (reference)",
         best_of(bench_pthread_mutex));
  printf("%-40s %8.1f ns/op\n", "rwlock read lock+unlock (uncontended)",
         best_of(bench_rwlock_read));
  printf("%-40s %8.1f ns/op\n", "sem acquire+release (uncontended)", best_of(bench_sem));
  handoff_worker = 0;
  printf("%-40s %8.1f ns/hand-off\n", "mutex hand-off, 2 tasks, one worker",
         best_of(bench_handoff));
  handoff_worker = 1;
  printf("%-40s %8.1f ns/lock\n", "mutex contended, 2 tasks on two workers",
         best_of(bench_handoff));
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--quick") == 0)
    iterations /= 10;
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = 2;
  int rc = keel_run(&cfg, bench_main, NULL);
  if (rc < 0) {
    fprintf(stderr, "sync: %s\n", keel_strerror(rc));
    return 1;
  }
  return 0;
}
