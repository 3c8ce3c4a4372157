/* echo-server: a TCP echo server on keel, one SO_REUSEPORT listener per worker.
 *
 *   echo-server [--host H] [--port P] [--workers N] [--backend auto|uring|epoll]
 *               [--max-conns N] [--idle-timeout MS] [--tls-cert F --tls-key F]
 *
 * With --tls-cert and --tls-key each connection is a TLS stream over the
 * TCP one (keel/tls.h), and the same echo runs over it.
 *
 * SIGINT/SIGTERM shut it down cleanly (exit 0); a startup failure exits 1. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"

#define ECHO_BUF_SIZE 16384

static int conn_echo(void *arg);

typedef struct server {
  char hostport[300];
  int workers;
  keel_backend_t backend;
  long max_conns;       /* per process */
  int64_t idle_ns;      /* 0: no idle timeout */
  bool ephemeral;       /* --port 0 */
  atomic_long conns;    /* live connections, all workers */
  atomic_int listening; /* listeners up, to print the banner once all are */
  keel_addr_t bound;    /* worker 0's listener address, for --port 0 */
  const char *tls_cert, *tls_key;
  keel_tls_ctx_t *tls; /* --tls-cert: connections speak TLS */
} server_t;

/* One connection: its task's argument for the connection's whole life. */
typedef struct conn_arg {
  server_t *server;
  keel_tcp_t *tcp;
  keel_tls_t *tls; /* over tcp, with --tls-cert */
} conn_arg_t;

static int conn_end(conn_arg_t *ca) {
  if (ca->tls)
    keel_close(keel_tls_stream(ca->tls)); /* close_notify, then the TCP connection */
  else
    keel_tcp_close(ca->tcp);
  atomic_fetch_sub_explicit(&ca->server->conns, 1, memory_order_relaxed);
  free(ca);
  /* Peer errors are the peer's business: never fail the scope for them. */
  return 0;
}

/* Waits for the next bytes with no stack and no buffer: the task gives its
 * stack back and comes back in conn_echo when bytes arrive, the idle
 * deadline passes or the server shuts down. An idle connection costs its
 * two small structs. The idle deadline covers the wait only: a write held
 * up by a peer that reads slowly is back-pressure, not idleness. */
static int conn_wait(conn_arg_t *ca) {
  if (ca->server->idle_ns > 0)
    keel_task_set_deadline(keel_now_ns() + ca->server->idle_ns);
  int rc = keel_tcp_park(ca->tcp, conn_echo, ca); /* returns only if it cannot park */
  return rc < 0 ? conn_end(ca) : 0;
}

static int tls_echo(void *arg);

static int tls_park(conn_arg_t *ca) {
  int rc = keel_tcp_park(ca->tcp, tls_echo, ca); /* returns only if it cannot park */
  return rc < 0 ? conn_end(ca) : 0;
}

/* Echoes over TLS. Between messages, once the TLS layer holds nothing,
 * the task parks on the TCP connection below as a plain connection does
 * (no stack, no buffer; OpenSSL's buffers are given back too) and comes
 * back here; while it holds bytes (the rest of a record), the next read
 * waits on the stack. */
static int tls_echo(void *arg) {
  conn_arg_t *ca = arg;
  keel_stream_t *s = keel_tls_stream(ca->tls);
  char buf[ECHO_BUF_SIZE];
  for (;;) {
    ssize_t n = keel_read(s, buf, sizeof buf);
    if (n <= 0)
      return conn_end(ca); /* the end, a TLS failure (the peer's business), idle, shutdown */
    keel_task_set_deadline(KEEL_DEADLINE_NONE);
    if (keel_write_all(s, buf, (size_t)n, NULL) < 0)
      return conn_end(ca);
    if (ca->server->idle_ns > 0)
      keel_task_set_deadline(keel_now_ns() + ca->server->idle_ns);
    if (keel_tls_idle(ca->tls) == 0)
      return tls_park(ca);
  }
}

/* The first bytes of a TLS connection: the handshake, under the deadline
 * set at the accept (conn_task), then the echo. */
static int tls_start(conn_arg_t *ca) {
  if (keel_tls_open(ca->server->tls, keel_tcp_stream(ca->tcp), NULL, &ca->tls) < 0)
    return conn_end(ca);
  int rc = keel_tls_handshake(ca->tls);
  keel_task_set_deadline(KEEL_DEADLINE_NONE);
  if (rc < 0)
    return conn_end(ca);
  if (ca->server->idle_ns > 0)
    keel_task_set_deadline(keel_now_ns() + ca->server->idle_ns);
  return keel_tls_idle(ca->tls) == 0 ? tls_park(ca) : tls_echo(ca);
}

/* Echoes what has arrived, then waits again. The buffer is on a stack the
 * task holds only while bytes are in flight. */
static int conn_echo(void *arg) {
  conn_arg_t *ca = arg;
  if (ca->server->tls)
    return tls_start(ca);
  keel_stream_t *s = keel_tcp_stream(ca->tcp);
  char buf[ECHO_BUF_SIZE];
  ssize_t n = keel_read(s, buf, sizeof buf);
  if (n <= 0)
    return conn_end(ca); /* EOF, -ETIMEDOUT (idle), -ECANCELED (shutdown), reset... */
  keel_task_set_deadline(KEEL_DEADLINE_NONE);
  if (keel_write_all(s, buf, (size_t)n, NULL) < 0)
    return conn_end(ca);
  return conn_wait(ca);
}

static int conn_task(void *arg) {
  conn_arg_t *ca = arg;
  if (!ca->server->tls)
    return conn_wait(ca);
  /* TLS: the ClientHello must come within the handshake limit. */
  keel_task_set_deadline(keel_now_ns() + KEEL_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS * KEEL_NS_PER_MS);
  int rc = keel_tcp_park(ca->tcp, conn_echo, ca); /* returns only if it cannot park */
  return rc < 0 ? conn_end(ca) : 0;
}

/* Takes ownership of tcp: spawns its task, or closes it when over the
 * connection limit or when the task cannot be started. */
static void start_conn(server_t *srv, keel_scope_t *conns, keel_tcp_t *tcp) {
  long live = atomic_fetch_add_explicit(&srv->conns, 1, memory_order_relaxed);
  conn_arg_t *ca = live < srv->max_conns ? malloc(sizeof *ca) : NULL;
  if (ca != NULL) {
    ca->server = srv;
    ca->tcp = tcp;
    ca->tls = NULL;
    keel_spawn_opts_t so = {.name = "conn", .on_worker = KEEL_WORKER_CURRENT};
    if (keel_spawn(conns, conn_task, ca, &so) == 0)
      return;
    free(ca);
  }
  keel_tcp_close(tcp);
  atomic_fetch_sub_explicit(&srv->conns, 1, memory_order_relaxed);
}

/* Accepts until cancelled. Returns 0 on cancellation, or a fatal error. */
static int accept_loop(server_t *srv, keel_listener_t *l, keel_scope_t *conns) {
  for (;;) {
    keel_tcp_t *tcp;
    int rc = keel_tcp_accept(l, &tcp);
    if (rc == 0) {
      start_conn(srv, conns, tcp);
    } else if (rc == -ECANCELED || rc == -ETIMEDOUT) {
      return 0;
    } else if (keel_tcp_accept_error_transient(rc)) {
      /* Memory pressure is worth a pause; the others are one peer's failure. */
      if ((rc == -ENOBUFS || rc == -ENOMEM) && keel_sleep_ms(10) < 0)
        return 0;
    } else {
      fprintf(stderr, "echo-server: accept on worker %d: %s\n", keel_worker_id(),
              keel_strerror(rc));
      return rc;
    }
  }
}

/* The last listener to come up prints the banner, so that it appears only
 * once every worker accepts (scripts wait for it before connecting). The
 * address is the listener's own, so --port 0 shows the port it got. */
static void announce(server_t *srv, keel_listener_t *l) {
  if (atomic_fetch_add(&srv->listening, 1) + 1 != keel_worker_count())
    return;
  keel_addr_t addr;
  char text[KEEL_ADDRSTRLEN];
  const char *shown = srv->hostport;
  if (keel_listener_addr(l, &addr) == 0)
    shown = keel_addr_format(&addr, text, sizeof text);
  printf("echo-server listening on %s (backend %s, %d workers%s)\n", shown, keel_backend_name(),
         keel_worker_count(), srv->tls ? ", tls" : "");
  fflush(stdout);
}

/* One per worker: listen there, accept into a per-worker connection scope,
 * and on shutdown close the listener first, then drain the connections. */
static int accept_task(void *arg) {
  server_t *srv = arg;
  keel_listen_opts_t lo = {0};
  keel_listener_t *l;
  int rc = keel_tcp_listen(srv->hostport, &lo, &l);
  if (rc < 0) {
    fprintf(stderr, "echo-server: listen on %s (worker %d): %s\n", srv->hostport, keel_worker_id(),
            keel_strerror(rc));
    return rc;
  }
  keel_scope_opts_t co = {.name = "conns"};
  keel_scope_t *conns = NULL;
  rc = keel_scope_open(&co, &conns);
  if (rc < 0) {
    keel_listener_close(l);
    return rc;
  }
  if (keel_worker_id() == 0)
    keel_listener_addr(l, &srv->bound);
  announce(srv, l);
  rc = accept_loop(srv, l, conns);
  keel_listener_close(l);
  if (rc < 0)
    keel_scope_cancel(conns, KEEL_CANCEL_USER);
  keel_scope_join(conns); /* connections only ever return 0 */
  keel_scope_close(conns);
  return rc;
}

/* With --port 0 the kernel picks worker 0's port, and the other workers
 * must share it: wait for worker 0 to listen, then name its port. Returns 0,
 * or -1 when worker 0 failed (its error decides the exit status). */
static int adopt_ephemeral_port(server_t *srv, keel_scope_t *scope) {
  while (atomic_load(&srv->listening) == 0) {
    if (keel_scope_live(scope) == 0 || keel_sleep_ms(1) < 0)
      return -1;
  }
  char text[KEEL_ADDRSTRLEN];
  keel_addr_format(&srv->bound, text, sizeof text);
  snprintf(srv->hostport, sizeof srv->hostport, "%s", text);
  return 0;
}

/* Fail-fast: one listener that cannot start stops the others, so a bad
 * address or a taken port ends the process with status 1. */
static int spawn_accept_tasks(server_t *srv, keel_scope_t *scope) {
  for (int i = 0; i < keel_worker_count(); i++) {
    if (i == 1 && srv->ephemeral && adopt_ephemeral_port(srv, scope) < 0)
      return 0;
    char name[32];
    snprintf(name, sizeof name, "accept/%d", i);
    keel_spawn_opts_t so = {.name = name, .on_worker = KEEL_WORKER(i)};
    int rc = keel_spawn(scope, accept_task, srv, &so);
    if (rc < 0) {
      if (rc != -ECANCELED) /* cancelled: a sibling failed, or shutdown */
        fprintf(stderr, "echo-server: spawn %s: %s\n", name, keel_strerror(rc));
      keel_scope_cancel(scope, KEEL_CANCEL_USER);
      return rc;
    }
  }
  return 0;
}

static int main_task(void *arg) {
  server_t *srv = arg;
  keel_scope_opts_t opts = {.flags = KEEL_SCOPE_FAIL_FAST, .name = "accept"};
  keel_scope_t *scope = NULL;
  int rc = keel_scope_open(&opts, &scope);
  if (rc < 0) {
    fprintf(stderr, "echo-server: %s\n", keel_strerror(rc));
    return 1;
  }
  rc = spawn_accept_tasks(srv, scope);
  int join = keel_scope_join(scope);
  keel_scope_close(scope);
  /* A shutdown shows up as -ECANCELED (the scope was cancelled); anything
   * else is an accept task's own failure. */
  if (join < 0 && join != -ECANCELED)
    return 1;
  return rc < 0 && rc != -ECANCELED ? 1 : 0;
}

static void usage(FILE *out) {
  fprintf(out, "usage: echo-server [options]\n"
               "  --host H           address to listen on (default 127.0.0.1)\n"
               "  --port P           port, 0 = any free one (default 7000)\n"
               "  --workers N        worker threads, 0 = one per CPU (default 0)\n"
               "  --backend B        auto|uring|epoll (default auto)\n"
               "  --max-conns N      connections per process; more are closed (default 10000)\n"
               "  --idle-timeout MS  close a connection idle this long, 0 = never (default 0)\n"
               "  --tls-cert F       speak TLS with this certificate chain (PEM) ...\n"
               "  --tls-key F        ... and its private key (PEM)\n"
               "  --help             this text\n");
}

/* Parses a whole decimal number in [lo, hi]. */
static bool parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    return false;
  *out = v;
  return true;
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

/* "host:port", bracketing a bare IPv6 host. */
static bool format_hostport(server_t *srv, const char *host, long port) {
  bool v6 = strchr(host, ':') != NULL && host[0] != '[';
  int n = snprintf(srv->hostport, sizeof srv->hostport, v6 ? "[%s]:%ld" : "%s:%ld", host, port);
  return n > 0 && (size_t)n < sizeof srv->hostport;
}

/* Flag values before they are checked as a whole. */
typedef struct flags {
  const char *host;
  long port, workers, max_conns, idle_ms;
} flags_t;

/* Applies one option; false on a bad value. */
static bool apply_option(server_t *srv, flags_t *f, int c, const char *val) {
  switch (c) {
  case 'h':
    f->host = val;
    return true;
  case 'p':
    return parse_long(val, 0, 65535, &f->port);
  case 'w':
    return parse_long(val, 0, 4096, &f->workers);
  case 'b':
    return parse_backend(val, &srv->backend);
  case 'm':
    return parse_long(val, 0, LONG_MAX, &f->max_conns);
  case 'i':
    return parse_long(val, 0, INT64_MAX / KEEL_NS_PER_MS, &f->idle_ms);
  case 'C':
    srv->tls_cert = val;
    return true;
  case 'K':
    srv->tls_key = val;
    return true;
  default:
    return false;
  }
}

/* Returns 0 to run, 1 on bad flags, 2 after --help. */
static int parse_args(int argc, char **argv, server_t *srv) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'h'},
      {"port", required_argument, NULL, 'p'},
      {"workers", required_argument, NULL, 'w'},
      {"backend", required_argument, NULL, 'b'},
      {"max-conns", required_argument, NULL, 'm'},
      {"idle-timeout", required_argument, NULL, 'i'},
      {"tls-cert", required_argument, NULL, 'C'},
      {"tls-key", required_argument, NULL, 'K'},
      {"help", no_argument, NULL, 'H'},
      {NULL, 0, NULL, 0},
  };
  flags_t f = {.host = "127.0.0.1", .port = 7000, .max_conns = 10000};
  bool ok = true;
  int c, idx = 0;
  while (ok && (c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
    if (c == 'H') {
      usage(stdout);
      return 2;
    }
    ok = c != '?' && apply_option(srv, &f, c, optarg);
    if (!ok && c != '?') /* getopt_long has already complained about '?' */
      fprintf(stderr, "echo-server: bad value for --%s: %s\n", longopts[idx].name, optarg);
  }
  if (ok && optind < argc) {
    fprintf(stderr, "echo-server: unexpected argument: %s\n", argv[optind]);
    ok = false;
  }
  if (ok && !srv->tls_cert != !srv->tls_key) {
    fprintf(stderr, "echo-server: --tls-cert and --tls-key go together\n");
    ok = false;
  }
  if (ok && !format_hostport(srv, f.host, f.port)) {
    fprintf(stderr, "echo-server: host too long\n");
    ok = false;
  }
  if (!ok) {
    usage(stderr);
    return 1;
  }
  srv->workers = (int)f.workers;
  srv->ephemeral = f.port == 0;
  srv->max_conns = f.max_conns;
  srv->idle_ns = f.idle_ms * KEEL_NS_PER_MS;
  return 0;
}

int main(int argc, char **argv) {
  /* main's frame outlives keel_run, so every worker may share it. */
  server_t srv = {.backend = KEEL_BACKEND_AUTO};
  atomic_init(&srv.conns, 0);
  atomic_init(&srv.listening, 0);
  int rc = parse_args(argc, argv, &srv);
  if (rc != 0)
    return rc == 2 ? 0 : 1;

  if (srv.tls_cert) {
    keel_tls_ctx_opts_t to = {.server = true,
                              .cert = {.cert_file = srv.tls_cert, .key_file = srv.tls_key}};
    char why[KEEL_TLS_REASON_MAX];
    rc = keel_tls_ctx_open(&to, &srv.tls, why, sizeof why);
    if (rc < 0) {
      fprintf(stderr, "echo-server: TLS: %s (%s)\n", why, keel_strerror(rc));
      return 1;
    }
  }
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = srv.workers;
  cfg.backend = srv.backend;
  cfg.handle_signals = true;
  rc = keel_run(&cfg, main_task, &srv);
  keel_tls_ctx_close(srv.tls);
  if (rc < 0) {
    fprintf(stderr, "echo-server: cannot start the runtime: %s\n", keel_strerror(rc));
    return 1;
  }
  return rc;
}
