/* bench/wsc: the reconnecting WebSocket client's costs, against
 * examples/ws-echo-server in a child process (pinned to one CPU, this
 * process to another), whose echo of a request serves as its response:
 *
 *   rtt        a request round trip through keel_wsc_request (owner task,
 *              pending store, correlation by id) against the same message
 *              written and read directly on a keel WebSocket: CPU time of
 *              this process per request, and allocations per request in
 *              the measured window (malloc, calloc, realloc counted here);
 *              rounds alternate the two, medians reported;
 *   inflight   10,000 requests in flight at once on one connection (one
 *              task each): time until all are answered;
 *   subs       1,000 live subscriptions, 10 updates each sent through the
 *              client and echoed back: time until every guard has its 10;
 *   reconnect  the server killed and started again: from the moment it
 *              accepts again to connected{epoch} with the 1,000 topics
 *              subscribed again, beside the backoff the client drew.
 *
 *   wsc --server PATH [--requests N] [--rounds R] [--backend uring|epoll]
 *       [--server-cpu C] [--client-cpu C] [--json FILE]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keel/keel.h"

/* ---- Counting allocations ------------------------------------------------------ */

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static atomic_ulong allocs;

void *malloc(size_t n) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
  atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
  return __libc_realloc(p, n);
}

/* ---- The server child ------------------------------------------------------------- */

typedef struct bench {
  const char *server, *backend;
  int port, server_cpu, client_cpu, rounds;
  long requests;
  pid_t child;
  const char *json;
  double up_at; /* when the restarted server accepted */
} bench_t;

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0)
    return -1;
  close(fd);
  return ntohs(a.sin_port);
}

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  if (fd >= 0)
    close(fd);
  return ok;
}

/* Starts the server; returns the monotonic time it first accepted. */
static double server_start(bench_t *b) {
  char port[16];
  snprintf(port, sizeof port, "%d", b->port);
  pid_t pid = fork();
  if (pid == 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(b->server_cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
    int null = open("/dev/null", 1);
    dup2(null, 1);
    execl(b->server, b->server, "--port", port, "--workers", "1", "--backend", b->backend,
          "--max-message", "65536", (char *)NULL);
    _exit(127);
  }
  b->child = pid;
  for (int i = 0; i < 5000; i++) {
    if (accepts(b->port))
      return mono();
    usleep(1000);
  }
  return -1;
}

static void server_kill(bench_t *b) {
  if (b->child > 0) {
    kill(b->child, SIGKILL);
    waitpid(b->child, NULL, 0);
    b->child = 0;
  }
}

static void *restart_thread(void *arg) {
  bench_t *b = arg;
  usleep(300000);
  b->up_at = server_start(b);
  return NULL;
}

/* ---- The protocol: the echo of "req ID" answers it ------------------------------------ */

static int p_sub(void *ctx, const char *topic, const uint64_t *from, keel_wsc_out_t *o) {
  (void)ctx;
  (void)from;
  return keel_wsc_out_printf(o, "sub %s", topic) < 0 ? -ENOMEM : 1;
}

static int p_unsub(void *ctx, const char *topic, keel_wsc_out_t *o) {
  (void)ctx;
  return keel_wsc_out_printf(o, "unsub %s", topic) < 0 ? -ENOMEM : 1;
}

static uint64_t num(const char *p, const char *end) {
  uint64_t v = 0;
  while (p < end && *p >= '0' && *p <= '9')
    v = v * 10 + (uint64_t)(*p++ - '0');
  return v;
}

static int p_classify(void *ctx, int op, const void *data, size_t len, keel_wsc_msg_t *m) {
  (void)ctx;
  (void)op;
  const char *p = data, *end = p + len;
  if (len > 4 && memcmp(p, "req ", 4) == 0) {
    m->kind = KEEL_WSC_RESPONSE;
    m->id = num(p + 4, end);
  } else if (len > 4 && memcmp(p, "upd ", 4) == 0) {
    const char *sp = memchr(p + 4, ' ', (size_t)(end - p - 4));
    if (!sp)
      return -EPROTO;
    m->kind = KEEL_WSC_UPDATE;
    m->topic = p + 4;
    m->topic_len = (size_t)(sp - p - 4);
    m->seq = num(sp + 1, end);
    m->has_seq = true;
  } else {
    m->kind = KEEL_WSC_IGNORE;
  }
  return 0;
}

static const keel_wsc_proto_t proto = {
    .subscribe = p_sub, .unsubscribe = p_unsub, .classify = p_classify};

/* ---- Figures ------------------------------------------------------------------------------ */

static double cpu_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct run {
  bench_t *b;
  char url[64];
  keel_wsc_t *c;
  double direct_us[16], wsc_us[16], direct_alloc[16], wsc_alloc[16];
  double inflight_s, inflight_rss_kib, subs_s;
  long inflight_ok, subs_got;
  double up_to_connected_ms, drawn_ms, fail_to_connected_ms, after_backoff_ms;
  int err;
} run_t;

static int direct_round(run_t *r, int round, long n) {
  keel_ws_t *ws;
  int rc = keel_ws_connect(r->url, NULL, &ws);
  if (rc < 0)
    return rc;
  char msg[64];
  const void *d;
  size_t len;
  for (long i = 0; i < n + 2000; i++) {
    if (i == 2000) {
      r->direct_alloc[round] = (double)atomic_load(&allocs);
      r->direct_us[round] = cpu_now();
    }
    int k = snprintf(msg, sizeof msg, "req %ld echo", i);
    if ((rc = keel_ws_send(ws, KEEL_WS_TEXT, msg, (size_t)k)) < 0 ||
        (rc = keel_ws_recv(ws, &d, &len)) <= 0)
      break;
  }
  r->direct_us[round] = (cpu_now() - r->direct_us[round]) * 1e6 / (double)n;
  r->direct_alloc[round] = ((double)atomic_load(&allocs) - r->direct_alloc[round]) / (double)n;
  keel_ws_close(ws, 1000, NULL);
  return rc < 0 ? rc : 0;
}

static int wait_connected(keel_wsc_t *c, double *at, int64_t *drawn, double *failed_at) {
  keel_wsc_event_t ev;
  int rc;
  while ((rc = keel_wsc_event(c, &ev)) == 0) {
    if (ev.type == KEEL_WSC_EV_MESSAGE)
      free(ev.data);
    if ((ev.type == KEEL_WSC_EV_DISCONNECTED || ev.type == KEEL_WSC_EV_CONNECT_FAILED) && drawn) {
      *drawn = ev.delay_ms;
      *failed_at = (double)ev.at_ns / 1e9; /* keel_now_ns: CLOCK_MONOTONIC, as mono() */
    }
    if (ev.type == KEEL_WSC_EV_CONNECTED) {
      if (at)
        *at = (double)ev.at_ns / 1e9;
      return 0;
    }
  }
  return rc;
}

static uint64_t next_id = 1000000;

static int wsc_round(run_t *r, int round, long n) {
  char msg[64], resp[64];
  for (long i = 0; i < n + 2000; i++) {
    if (i == 2000) {
      r->wsc_alloc[round] = (double)atomic_load(&allocs);
      r->wsc_us[round] = cpu_now();
    }
    uint64_t id = next_id++;
    int k = snprintf(msg, sizeof msg, "req %llu echo", (unsigned long long)id);
    keel_wsc_req_t q = {
        .id = id, .data = msg, .len = (size_t)k, .resp = resp, .resp_cap = sizeof resp};
    int rc = keel_wsc_request(r->c, &q);
    if (rc < 0)
      return rc;
  }
  r->wsc_us[round] = (cpu_now() - r->wsc_us[round]) * 1e6 / (double)n;
  r->wsc_alloc[round] = ((double)atomic_load(&allocs) - r->wsc_alloc[round]) / (double)n;
  return 0;
}

typedef struct one {
  run_t *r;
  uint64_t id;
  int rc;
} one_t;

static int one_request(void *arg) {
  one_t *o = arg;
  char msg[64], resp[64];
  int k = snprintf(msg, sizeof msg, "req %llu echo", (unsigned long long)o->id);
  keel_wsc_req_t q = {.id = o->id,
                      .data = msg,
                      .len = (size_t)k,
                      .resp = resp,
                      .resp_cap = sizeof resp,
                      .timeout_ms = 60000};
  o->rc = keel_wsc_request(o->r->c, &q);
  return 0;
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
      res = 0;
    fclose(f);
  }
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

#define INFLIGHT 10000
#define TOPICS 1000
#define PER_TOPIC 10

static int inflight(run_t *r) {
  one_t *o = calloc(INFLIGHT, sizeof *o);
  keel_scope_t *sc;
  if (!o || keel_scope_open(NULL, &sc) < 0)
    return -ENOMEM;
  long rss0 = rss_kib();
  double t0 = mono();
  for (int i = 0; i < INFLIGHT; i++) {
    o[i] = (one_t){r, next_id++, 0};
    keel_spawn_opts_t so = {.stack_size = 16384};
    if (keel_spawn(sc, one_request, &o[i], &so) < 0)
      break;
  }
  keel_scope_join(sc);
  r->inflight_s = mono() - t0;
  r->inflight_rss_kib = (double)(rss_kib() - rss0);
  keel_scope_close(sc);
  for (int i = 0; i < INFLIGHT; i++)
    r->inflight_ok += o[i].rc == 0;
  free(o);
  return 0;
}

typedef struct reader {
  keel_wsc_sub_t *s;
  long got;
} reader_t;

static int read_topic(void *arg) {
  reader_t *rd = arg;
  char buf[128];
  keel_wsc_update_t u;
  while (rd->got < PER_TOPIC && keel_wsc_sub_recv(rd->s, buf, sizeof buf, &u) >= 0)
    rd->got++;
  return 0;
}

static int subs(run_t *r, reader_t *rd) {
  char name[16], msg[64];
  for (int i = 0; i < TOPICS; i++) {
    snprintf(name, sizeof name, "t%d", i);
    int rc = keel_wsc_subscribe(r->c, name, &rd[i].s);
    if (rc < 0)
      return rc;
  }
  keel_scope_t *sc;
  if (keel_scope_open(NULL, &sc) < 0)
    return -ENOMEM;
  for (int i = 0; i < TOPICS; i++)
    keel_spawn(sc, read_topic, &rd[i], &(keel_spawn_opts_t){.stack_size = 16384});
  double t0 = mono();
  for (int k = 1; k <= PER_TOPIC; k++)
    for (int i = 0; i < TOPICS; i++) {
      int n = snprintf(msg, sizeof msg, "upd t%d %d", i, k);
      if (keel_wsc_send(r->c, 0, msg, (size_t)n) < 0)
        break;
    }
  keel_scope_join(sc);
  r->subs_s = mono() - t0;
  keel_scope_close(sc);
  for (int i = 0; i < TOPICS; i++)
    r->subs_got += rd[i].got;
  return 0;
}

static int bench_main(void *arg) {
  run_t *r = arg;
  bench_t *b = r->b;
  keel_wsc_opts_t o = {.url = r->url,
                       .events = true,
                       .backoff_initial_ms = 100,
                       .backoff_max_ms = 1000,
                       .sub_capacity = 64,
                       .request_timeout_ms = 60000};
  keel_scope_t *sc;
  if (keel_scope_open(NULL, &sc) < 0)
    return -ENOMEM;
  int rc = keel_wsc_open(sc, &o, &proto, &r->c);
  if (rc < 0 || (rc = wait_connected(r->c, NULL, NULL, NULL)) < 0)
    goto out;
  for (int i = 0; i < b->rounds && rc == 0; i++) {
    if (i % 2 == 0) {
      rc = direct_round(r, i, b->requests);
      if (rc == 0)
        rc = wsc_round(r, i, b->requests);
    } else {
      rc = wsc_round(r, i, b->requests);
      if (rc == 0)
        rc = direct_round(r, i, b->requests);
    }
  }
  if (rc < 0 || (rc = inflight(r)) < 0)
    goto out;
  reader_t *rd = calloc(TOPICS, sizeof *rd);
  if (!rd || (rc = subs(r, rd)) < 0) {
    free(rd);
    goto out;
  }
  /* Reconnect: the server killed, started again 300 ms later by a thread
   * (its start polls with blocking calls), while this task waits. */
  server_kill(b);
  double fail_at = mono();
  pthread_t th;
  if (pthread_create(&th, NULL, restart_thread, b) != 0) {
    rc = -EAGAIN;
    goto out;
  }
  double connected = 0, last_fail = 0;
  int64_t drawn = -1;
  rc = wait_connected(r->c, &connected, &drawn, &last_fail);
  pthread_join(th, NULL);
  double up = b->up_at;
  r->up_to_connected_ms = (connected - up) * 1e3;
  /* What the attempt itself took: from the end of the backoff drawn last
   * to connected with every topic subscribed again. */
  r->after_backoff_ms = (connected - (last_fail + (double)drawn / 1e3)) * 1e3;
  r->fail_to_connected_ms = (connected - fail_at) * 1e3;
  r->drawn_ms = (double)drawn;
  for (int i = 0; i < TOPICS; i++)
    keel_wsc_sub_release(rd[i].s);
  free(rd);
out:
  r->err = rc;
  keel_wsc_release(r->c);
  keel_scope_join(sc);
  keel_scope_close(sc);
  return 0;
}

int main(int argc, char **argv) {
  bench_t b = {
      .backend = "epoll", .server_cpu = 0, .client_cpu = 1, .rounds = 5, .requests = 100000};
  static const struct option opts[] = {
      {"server", required_argument, NULL, 's'},     {"requests", required_argument, NULL, 'n'},
      {"rounds", required_argument, NULL, 'r'},     {"backend", required_argument, NULL, 'b'},
      {"server-cpu", required_argument, NULL, 'S'}, {"client-cpu", required_argument, NULL, 'C'},
      {"json", required_argument, NULL, 'j'},       {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 's':
      b.server = optarg;
      break;
    case 'n':
      b.requests = atol(optarg);
      break;
    case 'r':
      b.rounds = atoi(optarg);
      break;
    case 'b':
      b.backend = optarg;
      break;
    case 'S':
      b.server_cpu = atoi(optarg);
      break;
    case 'C':
      b.client_cpu = atoi(optarg);
      break;
    case 'j':
      b.json = optarg;
      break;
    default:
      return 1;
    }
  }
  if (!b.server || b.rounds < 1 || b.rounds > 16 || b.requests < 1) {
    fprintf(stderr, "usage: wsc --server PATH [--requests N] [--rounds R(1-16)] [--backend B]\n");
    return 1;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(b.client_cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
  if ((b.port = free_port()) < 0 || server_start(&b) < 0) {
    fprintf(stderr, "wsc: the server did not start\n");
    return 1;
  }
  static run_t r;
  r.b = &b;
  snprintf(r.url, sizeof r.url, "ws://127.0.0.1:%d/", b.port);
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = 1;
  cfg.backend = strcmp(b.backend, "uring") == 0 ? KEEL_BACKEND_URING : KEEL_BACKEND_EPOLL;
  int rc = keel_run(&cfg, bench_main, &r);
  server_kill(&b);
  if (rc < 0 || r.err < 0) {
    fprintf(stderr, "wsc: failed: %s\n", keel_strerror(r.err < 0 ? r.err : rc));
    return 1;
  }
  double d = median(r.direct_us, b.rounds), w = median(r.wsc_us, b.rounds);
  double da = median(r.direct_alloc, b.rounds), wa = median(r.wsc_alloc, b.rounds);
  printf("backend %s, %ld requests x %d rounds (medians)\n", b.backend, b.requests, b.rounds);
  printf("rtt: direct %.2f us CPU/req, through the client %.2f us (%.2fx); allocations/req "
         "direct %.3f, client %.3f\n",
         d, w, w / d, da, wa);
  printf("inflight: %d requests at once: %ld ok in %.3f s, RSS +%.0f KiB\n", INFLIGHT,
         r.inflight_ok, r.inflight_s, r.inflight_rss_kib);
  printf("subs: %d subscriptions x %d updates: %ld delivered in %.3f s\n", TOPICS, PER_TOPIC,
         r.subs_got, r.subs_s);
  printf("reconnect: the last backoff drawn %.0f ms; connected with %d topics subscribed again "
         "%.1f ms after it ended, %.1f ms after the server accepted again (%.1f ms after the "
         "kill)\n",
         r.drawn_ms, TOPICS, r.after_backoff_ms, r.up_to_connected_ms, r.fail_to_connected_ms);
  if (b.json) {
    FILE *f = fopen(b.json, "w");
    if (f) {
      fprintf(f,
              "{\"backend\":\"%s\",\"requests\":%ld,\"rounds\":%d,\"direct_us\":%.3f,"
              "\"wsc_us\":%.3f,\"ratio\":%.3f,\"direct_allocs\":%.4f,\"wsc_allocs\":%.4f,"
              "\"inflight\":%d,\"inflight_ok\":%ld,\"inflight_s\":%.4f,\"topics\":%d,"
              "\"updates\":%ld,\"subs_s\":%.4f,\"drawn_ms\":%.0f,\"up_to_connected_ms\":%.2f,"
              "\"after_backoff_ms\":%.2f}\n",
              b.backend, b.requests, b.rounds, d, w, w / d, da, wa, INFLIGHT, r.inflight_ok,
              r.inflight_s, TOPICS, r.subs_got, r.subs_s, r.drawn_ms, r.up_to_connected_ms,
              r.after_backoff_ms);
      fclose(f);
    }
  }
  return r.inflight_ok == INFLIGHT && r.subs_got == TOPICS * PER_TOPIC ? 0 : 1;
}
