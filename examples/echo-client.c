/* echo-client: load and correctness client for echo-server.
 *
 *   echo-client [--host H] [--port P] [--conns N] [--size BYTES]
 *               [--duration SECONDS | --count MESSAGES] [--workers N] [--backend B]
 *
 * Every connection sends messages whose bytes derive from the connection id
 * and the sequence number, reads each one back and compares every byte, so
 * a lost, duplicated or misrouted byte shows up as a mismatch. Prints
 *   messages: N  msgs/s: X  p50: Y us  p99: Z us  errors: E  mismatches: M
 * and exits 1 if anything went wrong or nothing was echoed. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"

/* Log-linear latency histogram in nanoseconds: values below 16 exactly, then
 * 16 sub-buckets per power of two (relative error <= 1/16), up to 2^48 ns. */
#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP 47
#define HIST_BUCKETS (HIST_SUB + (HIST_MAX_EXP - HIST_SUB_BITS + 1) * HIST_SUB)

/* Bytes in flight per direction: write a chunk, read its echo, repeat. The
 * socket buffers always hold a chunk, so a big message cannot deadlock
 * client and server, each blocked writing to the other. */
#define CHUNK_SIZE (64 * 1024)
#define MAX_SIZE (64L * 1024 * 1024)
#define MAX_REPORTED_ERRORS 10

typedef struct client {
  char hostport[300];
  long conns;
  size_t size;
  uint64_t count;      /* messages per connection, 0: until the deadline */
  int64_t duration_ns; /* 0: no deadline */
  int64_t deadline_ns; /* set by the main task before any connection starts */
  int workers;
  keel_backend_t backend;
  atomic_int reported; /* error lines printed, to keep a failing run readable */
  struct conn_stats *stats;
} client_t;

typedef struct conn_stats {
  client_t *client;
  uint32_t id;
  uint64_t messages;
  uint64_t errors;
  uint64_t mismatches;
  uint32_t hist[HIST_BUCKETS];
} conn_stats_t;

static unsigned hist_bucket(uint64_t ns) {
  if (ns < HIST_SUB)
    return (unsigned)ns;
  unsigned exp = 63u - (unsigned)__builtin_clzll(ns);
  if (exp > HIST_MAX_EXP)
    return HIST_BUCKETS - 1;
  unsigned sub = (unsigned)(ns >> (exp - HIST_SUB_BITS)) & (HIST_SUB - 1);
  return HIST_SUB + (exp - HIST_SUB_BITS) * HIST_SUB + sub;
}

/* The middle of a bucket: the value a percentile falling in it reports. */
static double hist_bucket_mid(unsigned b) {
  if (b < HIST_SUB)
    return b;
  unsigned exp = (b - HIST_SUB) / HIST_SUB + HIST_SUB_BITS;
  unsigned sub = (b - HIST_SUB) % HIST_SUB;
  double width = (double)(UINT64_C(1) << (exp - HIST_SUB_BITS));
  return (HIST_SUB + sub) * width + width / 2;
}

/* Value (ns) at quantile q of the merged histogram. */
static double hist_quantile(const uint64_t *hist, uint64_t total, double q) {
  if (total == 0)
    return 0;
  uint64_t rank = (uint64_t)ceil(q * (double)total), seen = 0;
  if (rank == 0)
    rank = 1;
  for (unsigned b = 0; b < HIST_BUCKETS; b++) {
    seen += hist[b];
    if (seen >= rank)
      return hist_bucket_mid(b);
  }
  return hist_bucket_mid(HIST_BUCKETS - 1);
}

/* splitmix64's finaliser: neighbouring (connection, sequence) pairs give
 * unrelated patterns, so an echo from the wrong message cannot match. */
static uint64_t mix64(uint64_t x) {
  x += UINT64_C(0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static void fill_message(uint8_t *buf, size_t len, uint32_t conn, uint64_t seq) {
  uint64_t word = mix64(((uint64_t)conn << 40) ^ seq);
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    memcpy(buf + i, &word, 8);
    word = word * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
  }
  memcpy(buf + i, &word, len - i);
}

static size_t first_difference(const uint8_t *a, const uint8_t *b, size_t len) {
  size_t i = 0;
  while (i < len && a[i] == b[i])
    i++;
  return i;
}

static void report_error(client_t *cl, uint32_t id, const char *what, int err) {
  if (atomic_fetch_add(&cl->reported, 1) < MAX_REPORTED_ERRORS)
    fprintf(stderr, "echo-client: conn %u: %s: %s\n", id, what, keel_strerror(err));
}

/* The end of the run rather than a failure: the duration's deadline, or
 * Ctrl-C (SIGINT cancels the root scope). */
static bool normal_stop(const client_t *cl, int err) {
  if (err == -ECANCELED)
    return true;
  return err == -ETIMEDOUT && cl->deadline_ns != 0 && keel_now_ns() >= cl->deadline_ns;
}

/* One round trip, a chunk at a time (see CHUNK_SIZE). */
static int round_trip(keel_stream_t *s, const uint8_t *tx, uint8_t *rx, size_t size) {
  for (size_t off = 0; off < size; off += CHUNK_SIZE) {
    size_t len = size - off < CHUNK_SIZE ? size - off : CHUNK_SIZE;
    int rc = keel_write_all(s, tx + off, len, NULL);
    if (rc == 0)
      rc = keel_read_exact(s, rx + off, len, NULL);
    if (rc < 0)
      return rc;
  }
  return 0;
}

/* Sends, reads back and checks messages until the count, the deadline or a
 * failure. A mismatch ends the connection: the byte stream is out of step. */
static int echo_loop(conn_stats_t *st, keel_stream_t *s, uint8_t *tx, uint8_t *rx) {
  const client_t *cl = st->client;
  for (uint64_t seq = 0; cl->count == 0 || seq < cl->count; seq++) {
    fill_message(tx, cl->size, st->id, seq);
    int64_t start = keel_now_ns();
    int rc = round_trip(s, tx, rx, cl->size);
    if (rc < 0)
      return rc;
    int64_t rtt = keel_now_ns() - start;
    if (memcmp(tx, rx, cl->size) != 0) {
      st->mismatches++;
      fprintf(stderr, "echo-client: conn %u: message %llu differs at byte %zu\n", st->id,
              (unsigned long long)seq, first_difference(tx, rx, cl->size));
      return 0;
    }
    st->hist[hist_bucket(rtt > 0 ? (uint64_t)rtt : 0)]++;
    st->messages++;
  }
  return 0;
}

/* Connection task. Always returns 0: failures are counted, not propagated,
 * so one bad connection does not stop the others' measurements. */
static int conn_task(void *arg) {
  conn_stats_t *st = arg;
  client_t *cl = st->client;
  uint8_t *tx = malloc(cl->size), *rx = malloc(cl->size);
  keel_tcp_t *tcp = NULL;
  int rc = tx != NULL && rx != NULL ? 0 : -ENOMEM;
  const char *what = "buffers";
  if (rc == 0) {
    what = "connect";
    rc = keel_tcp_connect(cl->hostport, &tcp);
  }
  if (rc == 0) {
    what = "echo";
    keel_tcp_set_nodelay(tcp, true);
    rc = echo_loop(st, keel_tcp_stream(tcp), tx, rx);
    keel_tcp_close(tcp);
  }
  if (rc < 0 && !normal_stop(cl, rc)) {
    st->errors++;
    report_error(cl, st->id, what, rc);
  }
  free(tx);
  free(rx);
  return 0;
}

/* Sums every connection's counters and prints the result line. Returns the
 * process exit status. */
static int report(const client_t *cl, int64_t elapsed_ns, uint64_t spawn_errors) {
  uint64_t *hist = calloc(HIST_BUCKETS, sizeof *hist); /* 5.6 KiB: off the task stack */
  if (hist == NULL) {
    fprintf(stderr, "echo-client: %s\n", keel_strerror(-ENOMEM));
    return 1;
  }
  uint64_t messages = 0, errors = spawn_errors, mismatches = 0;
  for (long i = 0; i < cl->conns; i++) {
    const conn_stats_t *st = &cl->stats[i];
    messages += st->messages;
    errors += st->errors;
    mismatches += st->mismatches;
    for (unsigned b = 0; b < HIST_BUCKETS; b++)
      hist[b] += st->hist[b];
  }
  double secs = elapsed_ns > 0 ? (double)elapsed_ns / 1e9 : 1e-9;
  printf("messages: %llu  msgs/s: %.0f  p50: %.1f us  p99: %.1f us  errors: %llu  "
         "mismatches: %llu\n",
         (unsigned long long)messages, (double)messages / secs,
         hist_quantile(hist, messages, 0.50) / 1e3, hist_quantile(hist, messages, 0.99) / 1e3,
         (unsigned long long)errors, (unsigned long long)mismatches);
  fflush(stdout);
  free(hist);
  return errors > 0 || mismatches > 0 || messages == 0 ? 1 : 0;
}

/* Spawns the connections across the workers into one scope whose deadline
 * ends the run, waits for all of them and reports. */
static int main_task(void *arg) {
  client_t *cl = arg;
  int64_t start = keel_now_ns();
  keel_scope_opts_t so = {.name = "conns"};
  if (cl->duration_ns > 0)
    so.deadline_ns = cl->deadline_ns = start + cl->duration_ns;
  keel_scope_t *scope = NULL;
  int rc = keel_scope_open(&so, &scope);
  if (rc < 0) {
    fprintf(stderr, "echo-client: %s\n", keel_strerror(rc));
    return 1;
  }
  uint64_t spawn_errors = 0;
  for (long i = 0; i < cl->conns; i++) {
    keel_spawn_opts_t opts = {.name = "conn",
                              .on_worker = KEEL_WORKER((int)(i % keel_worker_count()))};
    int rc = keel_spawn(scope, conn_task, &cl->stats[i], &opts);
    if (rc < 0) {
      if (!normal_stop(cl, rc)) {
        spawn_errors += (uint64_t)(cl->conns - i);
        report_error(cl, (uint32_t)i, "spawn", rc);
      }
      break;
    }
  }
  keel_scope_join(scope); /* connection tasks only ever return 0 */
  keel_scope_close(scope);
  return report(cl, keel_now_ns() - start, spawn_errors);
}

static void usage(FILE *out) {
  fprintf(out, "usage: echo-client [options]\n"
               "  --host H          server address (default 127.0.0.1)\n"
               "  --port P          server port (default 7000)\n"
               "  --conns N         connections (default 10)\n"
               "  --size BYTES      message size (default 128)\n"
               "  --duration SECS   run time, fractions allowed (default 5)\n"
               "  --count N         messages per connection instead of a duration\n"
               "  --workers N       worker threads, 0 = one per CPU (default 0)\n"
               "  --backend B       auto|uring|epoll (default auto)\n"
               "  --help            this text\n");
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    return false;
  *out = v;
  return true;
}

static bool parse_seconds(const char *s, int64_t *out_ns) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > 1e9)
    return false;
  *out_ns = (int64_t)(v * 1e9);
  return *out_ns > 0;
}

static bool parse_backend(const char *s, keel_backend_t *out) {
  if (strcmp(s, "auto") == 0)
    *out = KEEL_BACKEND_AUTO;
  else if (strcmp(s, "uring") == 0 || strcmp(s, "io_uring") == 0)
    *out = KEEL_BACKEND_URING;
  else if (strcmp(s, "epoll") == 0)
    *out = KEEL_BACKEND_EPOLL;
  else
    return false;
  return true;
}

/* Applies one option; false on a bad value. */
static bool apply_option(client_t *cl, int c, const char *val, const char **host, long *port,
                         bool *duration_set) {
  long v = 0;
  switch (c) {
  case 'h':
    *host = val;
    return true;
  case 'p':
    return parse_long(val, 1, 65535, port);
  case 'c':
    return parse_long(val, 1, 10000000, &v) && (cl->conns = v, true);
  case 's':
    return parse_long(val, 1, MAX_SIZE, &v) && (cl->size = (size_t)v, true);
  case 'd':
    return (*duration_set = true) && parse_seconds(val, &cl->duration_ns);
  case 'n':
    return parse_long(val, 1, LONG_MAX, &v) && (cl->count = (uint64_t)v, true);
  case 'w':
    return parse_long(val, 0, 4096, &v) && (cl->workers = (int)v, true);
  case 'b':
    return parse_backend(val, &cl->backend);
  default:
    return false;
  }
}

/* Returns 0 to run, 1 on bad flags, 2 after --help. */
static int parse_args(int argc, char **argv, client_t *cl) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'h'},     {"port", required_argument, NULL, 'p'},
      {"conns", required_argument, NULL, 'c'},    {"size", required_argument, NULL, 's'},
      {"duration", required_argument, NULL, 'd'}, {"count", required_argument, NULL, 'n'},
      {"workers", required_argument, NULL, 'w'},  {"backend", required_argument, NULL, 'b'},
      {"help", no_argument, NULL, 'H'},           {NULL, 0, NULL, 0},
  };
  const char *host = "127.0.0.1";
  long port = 7000;
  bool ok = true, duration_set = false;
  int c, idx = 0;
  while (ok && (c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
    if (c == 'H') {
      usage(stdout);
      return 2;
    }
    ok = c != '?' && apply_option(cl, c, optarg, &host, &port, &duration_set);
    if (!ok && c != '?') /* getopt_long has already complained about '?' */
      fprintf(stderr, "echo-client: bad value for --%s: %s\n", longopts[idx].name, optarg);
  }
  if (ok && optind < argc) {
    fprintf(stderr, "echo-client: unexpected argument: %s\n", argv[optind]);
    ok = false;
  }
  bool v6 = strchr(host, ':') != NULL && host[0] != '[';
  int n = snprintf(cl->hostport, sizeof cl->hostport, v6 ? "[%s]:%ld" : "%s:%ld", host, port);
  if (ok && (n < 0 || (size_t)n >= sizeof cl->hostport)) {
    fprintf(stderr, "echo-client: host too long\n");
    ok = false;
  }
  if (!ok) {
    usage(stderr);
    return 1;
  }
  if (cl->count > 0 && !duration_set)
    cl->duration_ns = 0; /* --count alone: no time limit */
  return 0;
}

int main(int argc, char **argv) {
  /* main's frame outlives keel_run, so every worker may share it. */
  client_t cl = {
      .conns = 10, .size = 128, .duration_ns = 5 * KEEL_NS_PER_SEC, .backend = KEEL_BACKEND_AUTO};
  atomic_init(&cl.reported, 0);
  int rc = parse_args(argc, argv, &cl);
  if (rc != 0)
    return rc == 2 ? 0 : 1;
  cl.stats = calloc((size_t)cl.conns, sizeof *cl.stats);
  if (cl.stats == NULL) {
    fprintf(stderr, "echo-client: %s\n", keel_strerror(-ENOMEM));
    return 1;
  }
  for (long i = 0; i < cl.conns; i++) {
    cl.stats[i].client = &cl;
    cl.stats[i].id = (uint32_t)i;
  }
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = cl.workers;
  cfg.backend = cl.backend;
  cfg.handle_signals = true; /* Ctrl-C ends the run early and still reports */
  rc = keel_run(&cfg, main_task, &cl);
  free(cl.stats);
  if (rc < 0) {
    fprintf(stderr, "echo-client: cannot start the runtime: %s\n", keel_strerror(rc));
    return 1;
  }
  return rc;
}
