/* tls-bulk: bytes through one TLS stream on keel, for tools/bench --suite tls.
 *
 *   tls-bulk server --cert F --key F [--host H] [--port P] [--backend B]
 *                   [--ciphersuites S] [--buffer BYTES]
 *   tls-bulk client --bytes N [--host H] [--port P] [--backend B]
 *                   [--ciphersuites S] [--buffer BYTES] [--ca F --server-name NAME]
 *
 * server: listens (printing "listening on ADDR:PORT", the port actually
 * bound, which --port 0 needs), accepts one connection, wraps it in TLS and
 * reads into a 64 KiB buffer (--buffer), discarding, until the end of the
 * stream; then prints one line
 *   bytes: N  seconds: S  version: V  cipher: C  resumed: 0|1  peer_closed: 0|1  cpu_s: X
 * and exits 0 (1 on any error, with keel_tls_reason's words on stderr).
 * seconds runs from the accept to the end of the stream.
 *
 * client: connects, sends N bytes (--bytes; K, M, G suffixes are powers of
 * 1024) with keel_write_all in 64 KiB writes (--buffer), then
 * keel_stream_shutdown(SHUT_WR) (close_notify and the end of its side),
 * reads to the server's end (a socket closed with the server's session
 * tickets unread would be reset under the server's last reads), closes and
 * prints the same line. It verifies nothing unless given
 * --ca (a trust anchor file) and --server-name: the handshake's cost is not
 * what this measures, and the test certificate is self-signed.
 *
 * --ciphersuites restricts TLS 1.3 to the given suites (OpenSSL syntax,
 * e.g. TLS_AES_256_GCM_SHA384) and TLS 1.3 only; default: keel's policy.
 * cpu_s is the process's own user+system time (getrusage) at the end.
 * One worker, one task: the figure is keel's TLS stream over TCP, no more. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "keel/core.h"
#include "keel/tcp.h"
#include "keel/tls.h"

#define DEFAULT_BUFFER (64 * 1024)
#define MAX_BUFFER (16 * 1024 * 1024)

typedef struct bulk {
  bool server;
  const char *host;
  long port;
  const char *cert;
  const char *key;
  const char *ca;
  const char *server_name;
  const char *ciphersuites;
  unsigned long long bytes;
  size_t buffer;
  keel_backend_t backend;
} bulk_t;

static double cpu_seconds(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return -1;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* What the handshake agreed on, copied out of the stream (its strings
 * live only as long as it) so that it can be printed after the close. */
typedef struct agreed {
  char version[32];
  char cipher[64];
  bool resumed;
  bool peer_closed;
} agreed_t;

static void agreed_of(keel_tls_t *t, agreed_t *a) {
  keel_tls_info_t info;
  memset(&info, 0, sizeof info);
  memset(a, 0, sizeof *a);
  keel_tls_info(t, &info);
  snprintf(a->version, sizeof a->version, "%s", info.version ? info.version : "-");
  snprintf(a->cipher, sizeof a->cipher, "%s", info.cipher ? info.cipher : "-");
  a->resumed = info.resumed;
  a->peer_closed = info.peer_closed;
}

static void report(const agreed_t *a, unsigned long long bytes, int64_t ns) {
  printf("bytes: %llu  seconds: %.6f  version: %s  cipher: %s  resumed: %d  peer_closed: %d  "
         "cpu_s: %.6f\n",
         bytes, (double)ns / 1e9, a->version, a->cipher, a->resumed ? 1 : 0, a->peer_closed ? 1 : 0,
         cpu_seconds());
  fflush(stdout);
}

static int fail(const char *what, int err, keel_tls_t *t) {
  const char *why = t != NULL ? keel_tls_reason(t) : "";
  fprintf(stderr, "tls-bulk: %s: %s%s%s\n", what, keel_strerror(err), why[0] ? ": " : "", why);
  return 1;
}

static int open_ctx(const bulk_t *b, keel_tls_ctx_t **ctx) {
  keel_tls_ctx_opts_t o;
  memset(&o, 0, sizeof o);
  o.server = b->server;
  if (b->server) {
    o.cert.cert_file = b->cert;
    o.cert.key_file = b->key;
  } else if (b->ca != NULL) {
    o.ca_file = b->ca;
  } else {
    o.insecure_no_verify = true;
  }
  if (b->ciphersuites != NULL) {
    o.ciphersuites = b->ciphersuites;
    o.min_version = KEEL_TLS_1_3;
  }
  char reason[KEEL_TLS_REASON_MAX];
  reason[0] = '\0';
  int rc = keel_tls_ctx_open(&o, ctx, reason, sizeof reason);
  if (rc < 0)
    fprintf(stderr, "tls-bulk: TLS context: %s%s%s\n", keel_strerror(rc), reason[0] ? ": " : "",
            reason);
  return rc;
}

static int run_server(const bulk_t *b, keel_tls_ctx_t *ctx, char *buf) {
  char hostport[300];
  snprintf(hostport, sizeof hostport, strchr(b->host, ':') ? "[%s]:%ld" : "%s:%ld", b->host,
           b->port);
  keel_listen_opts_t lo;
  memset(&lo, 0, sizeof lo);
  lo.no_reuseport = true;
  keel_listener_t *l = NULL;
  int rc = keel_tcp_listen(hostport, &lo, &l);
  if (rc < 0)
    return fail("listen", rc, NULL);
  keel_addr_t addr;
  char text[KEEL_ADDRSTRLEN];
  if ((rc = keel_listener_addr(l, &addr)) < 0) {
    keel_listener_close(l);
    return fail("listener address", rc, NULL);
  }
  printf("listening on %s\n", keel_addr_format(&addr, text, sizeof text));
  fflush(stdout);
  keel_tcp_t *tcp = NULL;
  rc = keel_tcp_accept(l, &tcp);
  keel_listener_close(l);
  if (rc < 0)
    return fail("accept", rc, NULL);
  int64_t start = keel_now_ns();
  keel_tls_t *t = NULL;
  if ((rc = keel_tls_open(ctx, keel_tcp_stream(tcp), NULL, &t)) < 0) {
    keel_tcp_close(tcp);
    return fail("TLS open", rc, NULL);
  }
  keel_stream_t *s = keel_tls_stream(t);
  unsigned long long total = 0;
  ssize_t n;
  while ((n = keel_read(s, buf, b->buffer)) > 0)
    total += (unsigned long long)n;
  int64_t ns = keel_now_ns() - start;
  if (n < 0) {
    int status = fail("read", (int)n, t);
    fprintf(stderr, "tls-bulk: %llu bytes read before the error\n", total);
    keel_close(s);
    return status;
  }
  agreed_t a;
  agreed_of(t, &a);
  keel_close(s);
  report(&a, total, ns);
  return 0;
}

static int run_client(const bulk_t *b, keel_tls_ctx_t *ctx, char *buf) {
  char hostport[300];
  snprintf(hostport, sizeof hostport, strchr(b->host, ':') ? "[%s]:%ld" : "%s:%ld", b->host,
           b->port);
  memset(buf, 'k', b->buffer);
  keel_tcp_t *tcp = NULL;
  int rc = keel_tcp_connect(hostport, &tcp);
  if (rc < 0)
    return fail("connect", rc, NULL);
  int64_t start = keel_now_ns();
  keel_tls_opts_t to;
  memset(&to, 0, sizeof to);
  to.server_name = b->server_name;
  keel_tls_t *t = NULL;
  if ((rc = keel_tls_open(ctx, keel_tcp_stream(tcp), &to, &t)) < 0) {
    keel_tcp_close(tcp);
    return fail("TLS open", rc, NULL);
  }
  keel_stream_t *s = keel_tls_stream(t);
  unsigned long long sent = 0;
  while (sent < b->bytes) {
    unsigned long long left = b->bytes - sent;
    size_t len = left < b->buffer ? (size_t)left : b->buffer;
    size_t done = 0;
    rc = keel_write_all(s, buf, len, &done);
    sent += done;
    if (rc < 0) {
      int status = fail("write", rc, t);
      fprintf(stderr, "tls-bulk: %llu bytes written before the error\n", sent);
      keel_close(s);
      return status;
    }
  }
  /* close_notify and the end of our side, then read to the server's end:
   * a socket closed with unread bytes in it (the server's session tickets)
   * is reset, and the reset could reach the server before its last reads. */
  rc = keel_stream_shutdown(s, SHUT_WR);
  if (rc < 0) {
    int status = fail("shutdown", rc, t);
    keel_close(s);
    return status;
  }
  ssize_t n;
  while ((n = keel_read(s, buf, b->buffer)) > 0)
    ;
  agreed_t a;
  agreed_of(t, &a);
  rc = keel_close(s);
  int64_t ns = keel_now_ns() - start;
  report(&a, sent, ns);
  if (n < 0 && n != -ECONNRESET) {
    fprintf(stderr, "tls-bulk: reading to the server's end: %s\n", keel_strerror((int)n));
    return 1;
  }
  if (rc < 0) {
    fprintf(stderr, "tls-bulk: close: %s\n", keel_strerror(rc));
    return 1;
  }
  return 0;
}

typedef struct job {
  const bulk_t *b;
  int status;
} job_t;

static int main_task(void *arg) {
  job_t *job = arg;
  const bulk_t *b = job->b;
  char *buf = malloc(b->buffer);
  if (buf == NULL) {
    job->status = fail("buffer", -ENOMEM, NULL);
    return job->status;
  }
  keel_tls_ctx_t *ctx = NULL;
  if (open_ctx(b, &ctx) < 0) {
    free(buf);
    return job->status = 1;
  }
  job->status = b->server ? run_server(b, ctx, buf) : run_client(b, ctx, buf);
  keel_tls_ctx_close(ctx);
  free(buf);
  return job->status;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: tls-bulk server --cert F --key F [options]\n"
          "       tls-bulk client --bytes N [options]\n"
          "  --host H            address to listen on / connect to (default 127.0.0.1)\n"
          "  --port P            port (default 7443; server: 0 picks one)\n"
          "  --bytes N           client: bytes to send (K, M, G: powers of 1024)\n"
          "  --buffer BYTES      read buffer (server) / write size (client), default 65536\n"
          "  --ciphersuites S    TLS 1.3 only, with these suites (e.g. TLS_AES_256_GCM_SHA384)\n"
          "  --ca F              client: verify the server against this trust anchor\n"
          "  --server-name NAME  client: the name to send and verify (with --ca)\n"
          "  --backend B         auto|uring|epoll (default auto)\n"
          "  --help              this text\n");
}

static bool parse_size(const char *s, unsigned long long lo, unsigned long long hi,
                       unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || s[0] == '-')
    return false;
  unsigned shift = 0;
  switch (*end) {
  case 'K':
  case 'k':
    shift = 10, end++;
    break;
  case 'M':
  case 'm':
    shift = 20, end++;
    break;
  case 'G':
  case 'g':
    shift = 30, end++;
    break;
  default:
    break;
  }
  if (*end != '\0' || (shift && v > (~0ULL >> shift)))
    return false;
  v <<= shift;
  if (v < lo || v > hi)
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

static bool apply_option(bulk_t *b, int c, const char *val) {
  unsigned long long v = 0;
  switch (c) {
  case 'h':
    b->host = val;
    return true;
  case 'p':
    return parse_size(val, 0, 65535, &v) && (b->port = (long)v, true);
  case 'n':
    return parse_size(val, 1, ~0ULL, &b->bytes);
  case 'B':
    return parse_size(val, 1, MAX_BUFFER, &v) && (b->buffer = (size_t)v, true);
  case 'c':
    b->cert = val;
    return true;
  case 'k':
    b->key = val;
    return true;
  case 'a':
    b->ca = val;
    return true;
  case 's':
    b->server_name = val;
    return true;
  case 'C':
    b->ciphersuites = val;
    return true;
  case 'b':
    return parse_backend(val, &b->backend);
  default:
    return false;
  }
}

/* Returns 0 to run, 1 on bad arguments, 2 after --help. */
static int parse_args(int argc, char **argv, bulk_t *b) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'h'},
      {"port", required_argument, NULL, 'p'},
      {"bytes", required_argument, NULL, 'n'},
      {"buffer", required_argument, NULL, 'B'},
      {"cert", required_argument, NULL, 'c'},
      {"key", required_argument, NULL, 'k'},
      {"ca", required_argument, NULL, 'a'},
      {"server-name", required_argument, NULL, 's'},
      {"ciphersuites", required_argument, NULL, 'C'},
      {"backend", required_argument, NULL, 'b'},
      {"help", no_argument, NULL, 'H'},
      {NULL, 0, NULL, 0},
  };
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    usage(stdout);
    return 2;
  }
  if (argc < 2 || (strcmp(argv[1], "server") != 0 && strcmp(argv[1], "client") != 0)) {
    usage(stderr);
    return 1;
  }
  b->server = strcmp(argv[1], "server") == 0;
  bool ok = true;
  int c, idx = 0;
  optind = 2;
  while (ok && (c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
    if (c == 'H') {
      usage(stdout);
      return 2;
    }
    ok = c != '?' && apply_option(b, c, optarg);
    if (!ok && c != '?')
      fprintf(stderr, "tls-bulk: bad value for --%s: %s\n", longopts[idx].name, optarg);
  }
  if (ok && optind < argc) {
    fprintf(stderr, "tls-bulk: unexpected argument: %s\n", argv[optind]);
    ok = false;
  }
  if (ok && b->server && (b->cert == NULL || b->key == NULL)) {
    fprintf(stderr, "tls-bulk: server needs --cert and --key\n");
    ok = false;
  }
  if (ok && !b->server && b->bytes == 0) {
    fprintf(stderr, "tls-bulk: client needs --bytes\n");
    ok = false;
  }
  if (ok && !b->server && (b->ca == NULL) != (b->server_name == NULL)) {
    fprintf(stderr, "tls-bulk: --ca and --server-name go together\n");
    ok = false;
  }
  if (!ok) {
    usage(stderr);
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  bulk_t b = {
      .host = "127.0.0.1", .port = 7443, .buffer = DEFAULT_BUFFER, .backend = KEEL_BACKEND_AUTO};
  int rc = parse_args(argc, argv, &b);
  if (rc != 0)
    return rc == 2 ? 0 : 1;
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = 1;
  cfg.backend = b.backend;
  cfg.handle_signals = true;
  job_t job = {.b = &b, .status = 1};
  rc = keel_run(&cfg, main_task, &job);
  if (rc < 0) {
    fprintf(stderr, "tls-bulk: cannot start the runtime: %s\n", keel_strerror(rc));
    return 1;
  }
  return job.status;
}
