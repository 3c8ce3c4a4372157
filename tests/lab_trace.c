/* lab_trace: runs a small concurrent program in lab mode and prints the
 * hash of its scheduling trace, so two runs can be compared from a shell.
 *
 *   usage: lab_trace [--seed N]     (default: KEEL_SEED, else 1)
 *   prints: trace <16 hex digits>
 *           order <the first 16 steps: which spinner took each>
 * The program: tasks yielding and sleeping random times, a producer and a
 * consumer on a channel, and a writer and a reader on a faulty pipe. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"

enum { SPINNERS = 4, ITEMS = 200, PIPE_BYTES = 4096 };

typedef struct run {
  int order[16];
  int order_len;
  keel_chan_t *chan;
  keel_stream_t *a, *b;
  int failures;
} run_t;

typedef struct spinner {
  run_t *run;
  int id;
} spinner_t;

static int spinner(void *arg) {
  spinner_t *s = arg;
  for (int i = 0; i < 5; i++) {
    if (s->run->order_len < 16)
      s->run->order[s->run->order_len++] = s->id;
    if (keel_random_below(2))
      keel_yield();
    else
      keel_sleep_ns((int64_t)keel_random_below(2 * KEEL_NS_PER_MS));
  }
  return 0;
}

static int producer(void *arg) {
  run_t *r = arg;
  for (int i = 0; i < ITEMS; i++)
    if (keel_chan_send(r->chan, &i) < 0)
      return -EIO;
  keel_chan_shutdown(r->chan);
  return 0;
}

static int consumer(void *arg) {
  run_t *r = arg;
  int v, expect = 0;
  while (keel_chan_recv(r->chan, &v) == 0)
    if (v != expect++)
      r->failures++;
  return expect == ITEMS ? 0 : -EIO;
}

static int pipe_writer(void *arg) {
  run_t *r = arg;
  char buf[PIPE_BYTES];
  for (int i = 0; i < PIPE_BYTES; i++)
    buf[i] = (char)i;
  int rc = keel_write_all(r->a, buf, sizeof buf, NULL);
  keel_stream_shutdown(r->a, 1 /* SHUT_WR */);
  return rc;
}

static int pipe_reader(void *arg) {
  run_t *r = arg;
  char buf[PIPE_BYTES];
  size_t got = 0;
  int rc = keel_read_exact(r->b, buf, sizeof buf, &got);
  for (size_t i = 0; i < got; i++)
    if (buf[i] != (char)i)
      r->failures++;
  return rc;
}

static int main_task(void *arg) {
  run_t *r = arg;
  keel_chan_opts_t co = {.elem_size = sizeof(int), .capacity = 4};
  keel_lab_faults_t f = {.capacity = 512, .short_permille = 300, .delay_max_ns = 50000};
  if (keel_chan_open(&co, &r->chan) < 0 || keel_lab_pipe(&f, &r->a, &r->b) < 0)
    return -ENOMEM;
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  if (!sc)
    return -ENOMEM;
  spinner_t sp[SPINNERS];
  for (int i = 0; i < SPINNERS; i++) {
    sp[i] = (spinner_t){r, i};
    keel_spawn(sc, spinner, &sp[i], NULL);
  }
  keel_spawn(sc, producer, r, NULL);
  keel_spawn(sc, consumer, r, NULL);
  keel_spawn(sc, pipe_writer, r, NULL);
  keel_spawn(sc, pipe_reader, r, NULL);
  int rc = keel_scope_join(sc);
  keel_scope_close(sc);
  keel_chan_close(r->chan);
  keel_close(r->a);
  keel_close(r->b);
  return rc < 0 ? rc : r->failures ? -EIO : 0;
}

int main(int argc, char **argv) {
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
      char *end;
      cfg.lab_seed = strtoull(argv[++i], &end, 0);
      if (*end || cfg.lab_seed == 0) {
        fprintf(stderr, "lab_trace: --seed takes a non-zero number\n");
        return 2;
      }
    } else {
      fprintf(stderr, "usage: lab_trace [--seed N]\n");
      return 2;
    }
  }
  uint64_t trace = 0;
  cfg.lab_trace = &trace;
  run_t r = {0};
  int rc = keel_run(&cfg, main_task, &r);
  if (rc < 0) {
    fprintf(stderr, "lab_trace: run failed: %s\n", keel_strerror(rc));
    return 1;
  }
  printf("trace %016" PRIx64 "\n", trace);
  printf("order");
  for (int i = 0; i < r.order_len; i++)
    printf(" %d", r.order[i]);
  printf("\n");
  return 0;
}
