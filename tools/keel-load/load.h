/* keel-load's shared types: run options, modes, workers, connections, results.
 *
 * A mode (echo, ws, http, slow) only says how one connected connection talks
 * to the server; connecting, pacing, the timing windows, the histogram
 * and the report are shared and live in their own files. */
#ifndef KEEL_LOAD_H
#define KEEL_LOAD_H

#include <getopt.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "hist.h"
#include "keel/keel.h"

#define LOAD_MAX_WORKERS 256
#define LOAD_MODE_OPTS_MAX 16  /* long options a mode may add */
#define LOAD_MODE_OPT_BASE 512 /* getopt ids of mode options start here */

typedef struct load load_t;
typedef struct load_worker load_worker_t;

/* Options every mode shares. */
typedef struct load_opts {
  char host[256];
  long port;
  long conns;
  int64_t duration_ns; /* measured window */
  int64_t warmup_ns;   /* after every connection settled, before the window */
  int workers;         /* connection workers (worker 0 only keeps time) */
  keel_backend_t backend;
  long connect_concurrency; /* connects in flight, over all workers */
  bool json;
  pid_t server_pid;       /* 0: none */
  int64_t interval_ns;    /* --conn-rate: between one connection's messages; 0: unpaced */
  int64_t connect_gap_ns; /* --connect-rate: between two connects' starts; 0: at once */
  int64_t linger_ns;      /* after the window, for connections to end by themselves */
} load_opts_t;

/* One connection, owned by one worker. */
typedef struct load_conn {
  load_worker_t *worker;
  uint32_t id; /* 0 .. conns-1 over the whole run: modes derive content from it */
  keel_tcp_t *tcp;
  int64_t connect_ns; /* when its (latest) connect started */
} load_conn_t;

/* A mode's hooks. run_conn talks over an established connection until it is
 * cancelled (return -ECANCELED), fails (a negative errno, counted as an
 * error) or finds a wrong response (it counts the mismatch and returns 0). */
typedef struct load_mode {
  const char *name;
  const char *summary;          /* one line for the top-level usage */
  const char *usage;            /* the mode's option lines */
  bool paced;                   /* honours --conn-rate (with one message in flight) */
  const struct option *options; /* ends with a zero entry; ids >= LOAD_MODE_OPT_BASE */
  int (*init)(load_t *l);       /* defaults into l->mode_cfg; 0 or -ENOMEM */
  int (*parse_option)(load_t *l, int id, const char *value); /* 0 or -EINVAL */
  int (*prepare)(load_t *l); /* after parsing, says why it fails: 0 or -errno */
  int (*run_conn)(load_conn_t *c);
  /* The mode's settings for the report: " size 128 pipeline 1" as text,
   * "\"size\":128,\"pipeline\":1," as JSON members. */
  void (*describe)(const load_t *l, FILE *out, bool json);
  void (*destroy)(load_t *l);
} load_mode_t;

extern const load_mode_t load_echo_mode;
extern const load_mode_t load_ws_mode;
extern const load_mode_t load_http_mode;
extern const load_mode_t load_slow_mode;

/* splitmix64's step and finaliser: modes derive patterns, offsets and
 * (ws) masks from it. */
static inline uint64_t load_mix64(uint64_t x) {
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

/* A connection worker's counters and histogram. Only its own thread writes
 * them while the runtime runs, so they need no atomics; the main task reads
 * them after every connection task has finished. */
struct load_worker {
  load_t *load;
  int index; /* keel worker index (1 ..), 0 is the timekeeper */
  const char *backend;
  load_conn_t *conns;
  long nconns;
  long next_conn;  /* next connection a connector takes */
  long connectors; /* this worker's share of connect_concurrency */
  keel_scope_t *scope;
  uint64_t established, connect_errors, errors, mismatches;
  uint64_t messages, bytes; /* completed in the measured window */
  hist_t hist;              /* their latencies */
  uint64_t completed;       /* every message completed, in the window or not */
  uint64_t unanswered;      /* sent and not answered when their connection ended */
  uint64_t reconnects;      /* connections a server closed as announced, opened again */
};

struct load {
  const load_mode_t *mode;
  void *mode_cfg;
  load_opts_t opts;
  keel_addr_t addr;
  load_worker_t **workers; /* opts.workers of them */
  /* Written by the timekeeper, read by every connection worker. */
  atomic_llong window_start_ns; /* INT64_MAX until connections settle */
  atomic_llong window_end_ns;
  atomic_long settled;   /* connections established or failed */
  atomic_long live;      /* connection tasks running */
  atomic_bool lingering; /* the window is over: --linger, modes start nothing new */
  atomic_bool stopping;
  int64_t start_ns;    /* when the workers were started: --connect-rate's origin */
  atomic_int reported; /* error lines printed, to keep a failing run readable */
};

/* Counts a completed response: in the measured window, its latency and
 * bytes; outside it, only in `completed` (what a server's own counters
 * are checked against). */
static inline void load_record(load_conn_t *c, int64_t sent_ns, int64_t done_ns, size_t bytes) {
  load_t *l = c->worker->load;
  c->worker->completed++;
  if (done_ns < atomic_load_explicit(&l->window_start_ns, memory_order_relaxed) ||
      done_ns >= atomic_load_explicit(&l->window_end_ns, memory_order_relaxed))
    return;
  load_worker_t *w = c->worker;
  hist_record(&w->hist, done_ns > sent_ns ? (uint64_t)(done_ns - sent_ns) : 0);
  w->messages++;
  w->bytes += bytes;
}

/* --conn-rate: a paced connection's first message is due at once (a
 * server may close a connection that sends nothing for a while), the
 * second one interval plus a phase later, the phase drawn from [0,
 * interval) by its id so that connections do not send in step, and each
 * next one interval after the one before. */
typedef struct load_pace {
  int64_t interval_ns; /* 0: unpaced, every message due at once */
  int64_t next_ns;
  int64_t phase_ns; /* still to add, after the first message */
} load_pace_t;

/* conn.c: starts c's schedule now. */
void load_pace_start(load_pace_t *p, const load_conn_t *c);
/* Waits until the next message is due and gives in *due_ns when that was:
 * its latency runs from then, not from when it could be sent, so that a
 * server that holds a connection up cannot hide the requests it kept
 * from being sent (coordinated omission). A connection that fell behind
 * sends at once until it has caught up. 0, or -ECANCELED. */
int load_pace_wait(load_pace_t *p, int64_t *due_ns);

/* Prints a diagnostic for connection id on stderr, the first few only. */
void load_complain(load_t *l, uint32_t id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* args.c: parses argv into l (mode first). Returns 0 to run, 1 after
 * --help (exit 0), 2 on bad usage (already reported). */
int load_parse_args(load_t *l, int argc, char **argv);
/* Parses a whole decimal number in [lo, hi] into *out: 0, or -EINVAL. For
 * the common options and the modes' own. */
int load_parse_long(const char *s, long lo, long hi, long *out);

/* conn.c: the task run on connection worker w: connects its share of the
 * connections, runs the mode on each, returns when all have finished. */
int load_worker_task(void *arg);
/* Closes c's connection and opens a new one to the server, for a mode
 * whose server closed it as its protocol announced (counted in
 * reconnects; a failure is the caller's error). 0 or a negative errno. */
int load_reconnect(load_conn_t *c);
/* Stops every connection (their reads and writes return -ECANCELED); the
 * worker tasks then finish, and scope, where they run, can be joined. */
void load_stop(load_t *l, keel_scope_t *scope);

/* Sums of every worker's counters at the end of the run. */
typedef struct load_result {
  uint64_t established, connect_errors, errors, mismatches;
  uint64_t messages, bytes;
  hist_t hist;
  uint64_t completed, unanswered, reconnects;
  int64_t duration_ns; /* the measured window as it happened */
  const char *backend;
  bool interrupted; /* SIGINT/SIGTERM cut the run short */
  bool server;      /* --server-pid figures below are valid */
  double server_cpu_s;
  uint64_t server_rss_kib;
} load_result_t;

/* report.c: prints the summary (text or one JSON object) on stdout. */
void load_report(const load_t *l, const load_result_t *r);

/* proc.c: a process's CPU time (utime + stime, clock ticks) and resident
 * set (KiB) from /proc. 0 or a negative errno. */
int load_proc_cpu_ticks(pid_t pid, uint64_t *ticks);
int load_proc_rss_kib(pid_t pid, uint64_t *kib);

#endif
