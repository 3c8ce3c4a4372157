/* chan: micro-benchmarks of keel channels.
 *
 *   chan [--quick]
 *
 * "send+recv" is one task sending and receiving a long on a channel (the
 * channel's own cost per message, target <= 50 ns); "producer->consumer" is
 * a producer and a consumer task on a 64-slot channel, so the figure
 * includes the context switches when one side blocks. The "shared" lines
 * run the same on a KEEL_CHAN_SHARED channel (the lock's cost), and
 * "cross-worker stream" has the producer on worker 0 and the consumer on
 * worker 1 (target <= 300 ns per message). Best of 5 runs, because the
 * machines are shared and noise only ever adds time. Needs 2 CPUs. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "keel/keel.h"

#define RUNS 5

static long iterations = 10 * 1000 * 1000;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * KEEL_NS_PER_SEC + ts.tv_nsec;
}

static unsigned chan_flags; /* KEEL_CHAN_SHARED for the shared runs */

static keel_chan_t *open_int_chan(size_t cap) {
  keel_chan_opts_t o = {.elem_size = sizeof(long), .capacity = cap, .flags = chan_flags};
  keel_chan_t *c = NULL;
  return keel_chan_open(&o, &c) == 0 ? c : NULL;
}

static double bench_same_task(void) {
  keel_chan_t *c = open_int_chan(64);
  if (!c)
    return -1;
  int64_t t0 = mono_ns();
  long sum = 0;
  for (long i = 0; i < iterations; i++) {
    long v;
    if (keel_chan_send(c, &i) != 0 || keel_chan_recv(c, &v) != 0)
      return -1;
    sum += v;
  }
  double ns = (double)(mono_ns() - t0) / (double)iterations;
  keel_chan_close(c);
  return sum == iterations * (iterations - 1) / 2 ? ns : -1;
}

static int producer(void *arg) {
  keel_chan_t *c = arg;
  for (long i = 0; i < iterations; i++) {
    int rc = keel_chan_send(c, &i);
    if (rc != 0)
      return rc;
  }
  return keel_chan_shutdown(c);
}

static int consumer(void *arg) {
  keel_chan_t *c = arg;
  long v, n = 0;
  int rc;
  while ((rc = keel_chan_recv(c, &v)) == 0)
    n++;
  return rc == -EPIPE && n == iterations ? 0 : -EPROTO;
}

static int consumer_worker; /* 0: the producer's; 1: cross-worker */
static size_t stream_capacity = 64;

static double bench_two_tasks(void) {
  keel_chan_t *c = open_int_chan(stream_capacity);
  keel_scope_t *s = NULL;
  if (keel_scope_open(NULL, &s) < 0 || !c)
    return -1;
  keel_spawn_opts_t on = {.name = "consumer", .on_worker = KEEL_WORKER(consumer_worker)};
  int64_t t0 = mono_ns();
  if (keel_spawn(s, consumer, c, &on) < 0 || keel_spawn(s, producer, c, NULL) < 0)
    return -1;
  int rc = keel_scope_join(s);
  double ns = (double)(mono_ns() - t0) / (double)iterations;
  keel_scope_close(s);
  keel_chan_close(c);
  return rc == 0 ? ns : -1;
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
  printf("%-36s %8.1f ns/msg (target 50)\n", "send+recv (one task)", best_of(bench_same_task));
  printf("%-36s %8.1f ns/msg\n", "producer->consumer (cap 64)", best_of(bench_two_tasks));
  chan_flags = KEEL_CHAN_SHARED;
  printf("%-36s %8.1f ns/msg\n", "shared send+recv (one task)", best_of(bench_same_task));
  printf("%-36s %8.1f ns/msg\n", "shared producer->consumer (cap 64)", best_of(bench_two_tasks));
  consumer_worker = 1;
  static const size_t caps[] = {64, 256, 1024};
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
    char label[64];
    stream_capacity = caps[i];
    snprintf(label, sizeof label, "cross-worker stream (cap %zu)", caps[i]);
    printf("%-36s %8.1f ns/msg (target 300)\n", label, best_of(bench_two_tasks));
  }
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
    fprintf(stderr, "chan: %s\n", keel_strerror(rc));
    return 1;
  }
  return 0;
}
