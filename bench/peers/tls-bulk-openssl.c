/* tls-bulk-openssl: bench/tls-bulk's peer on OpenSSL alone, blocking
 * sockets and nothing else, for tools/bench --suite tls (bulk): what moving
 * bytes through TLS costs when the application adds nothing. Same command
 * line, output line and behaviour as bench/tls-bulk:
 *
 *   tls-bulk-openssl server --cert F --key F [--host H] [--port P]
 *                           [--ciphersuites S] [--buffer BYTES]
 *   tls-bulk-openssl client --bytes N [--host H] [--port P]
 *                           [--ciphersuites S] [--buffer BYTES]
 *
 * server: one connection, SSL_read into a 64 KiB buffer until close_notify
 * or the end of the stream, with read-ahead into a read buffer of the same
 * size (many records per read(2), as keel's BIO reads); client: SSL_write
 * of 64 KiB at a time (records of 16 KiB, OpenSSL's maximum, as keel's),
 * SSL_shutdown and a shutdown of the socket's writing side, then reads to
 * the server's end and closes (a close with the server's session tickets
 * unread would reset the connection under the server's last reads). Both
 * print one line:
 *   bytes: N  seconds: S  version: V  cipher: C  resumed: 0|1  peer_closed: 0|1  cpu_s: X
 * The client verifies nothing (SSL_VERIFY_NONE). Numeric addresses only. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "peer-common.h"

#define PROG "tls-bulk-openssl"
#define DEFAULT_BUFFER (64 * 1024)
#define MAX_BUFFER (16 * 1024 * 1024)

typedef struct bulk {
  bool server;
  const char *host;
  int port;
  const char *cert;
  const char *key;
  const char *ciphersuites;
  unsigned long long bytes;
  size_t buffer;
} bulk_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return -1;
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int fail(const char *what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e != 0)
    ERR_error_string_n(e, buf, sizeof buf);
  fprintf(stderr, PROG ": %s: %s\n", what, e != 0 ? buf : (errno ? strerror(errno) : "failed"));
  return 1;
}

static void report(SSL *ssl, unsigned long long bytes, double seconds, bool peer_closed) {
  printf("bytes: %llu  seconds: %.6f  version: %s  cipher: %s  resumed: %d  peer_closed: %d  "
         "cpu_s: %.6f\n",
         bytes, seconds, SSL_get_version(ssl), SSL_get_cipher_name(ssl),
         SSL_session_reused(ssl) ? 1 : 0, peer_closed ? 1 : 0, cpu_seconds());
  fflush(stdout);
}

static SSL_CTX *make_ctx(const bulk_t *b) {
  SSL_CTX *ctx = SSL_CTX_new(b->server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL)
    return NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  /* Reads as a careful application does them: many records per read(2)
   * into a buffer of the read size, not a header and a body per record. */
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, b->buffer);
  bool ok = SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") == 1;
  if (ok && b->ciphersuites != NULL)
    ok = SSL_CTX_set_ciphersuites(ctx, b->ciphersuites) == 1 &&
         SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1;
  if (ok && b->server)
    ok = SSL_CTX_use_certificate_chain_file(ctx, b->cert) == 1 &&
         SSL_CTX_use_PrivateKey_file(ctx, b->key, SSL_FILETYPE_PEM) == 1;
  if (!b->server)
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  if (!ok) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

static int run_server(const bulk_t *b, SSL_CTX *ctx, char *buf) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (peer_parse_addr(b->host, b->port, &ss, &len) < 0) {
    fprintf(stderr, PROG ": bad address %s\n", b->host);
    return 1;
  }
  int lfd = peer_open_listener(&ss, len, 0);
  if (lfd < 0) {
    errno = -lfd;
    return fail("listen");
  }
  if (peer_announce(PROG, lfd) < 0)
    return fail("getsockname");
  int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  close(lfd);
  if (fd < 0)
    return fail("accept");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  double start = now_s();
  SSL *ssl = SSL_new(ctx);
  if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
    close(fd);
    return fail("handshake");
  }
  unsigned long long total = 0;
  bool peer_closed = false;
  for (;;) {
    int n = SSL_read(ssl, buf, (int)b->buffer);
    if (n > 0) {
      total += (unsigned long long)n;
      continue;
    }
    int err = SSL_get_error(ssl, n);
    if (err == SSL_ERROR_ZERO_RETURN) {
      peer_closed = true;
      break;
    }
    /* The end of the stream without close_notify: OpenSSL 3 reports it as
     * an error; at this benchmark's end it is an end. */
    if (err == SSL_ERROR_SSL &&
        ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
      ERR_clear_error();
      break;
    }
    fprintf(stderr, PROG ": %llu bytes read before the error\n", total);
    SSL_free(ssl);
    close(fd);
    return fail("read");
  }
  double seconds = now_s() - start;
  if (peer_closed)
    SSL_shutdown(ssl);
  report(ssl, total, seconds, peer_closed);
  SSL_free(ssl);
  close(fd);
  return 0;
}

static int run_client(const bulk_t *b, SSL_CTX *ctx, char *buf) {
  struct sockaddr_storage ss;
  socklen_t len;
  if (peer_parse_addr(b->host, b->port, &ss, &len) < 0) {
    fprintf(stderr, PROG ": bad address %s\n", b->host);
    return 1;
  }
  memset(buf, 'k', b->buffer);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) != 0)
    return fail("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  double start = now_s();
  SSL *ssl = SSL_new(ctx);
  if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1) {
    close(fd);
    return fail("handshake");
  }
  unsigned long long sent = 0;
  while (sent < b->bytes) {
    unsigned long long left = b->bytes - sent;
    int n = SSL_write(ssl, buf, (int)(left < b->buffer ? left : b->buffer));
    if (n <= 0) {
      fprintf(stderr, PROG ": %llu bytes written before the error\n", sent);
      SSL_free(ssl);
      close(fd);
      return fail("write");
    }
    sent += (unsigned long long)n;
  }
  /* close_notify and the end of our side, then read to the server's end:
   * a socket closed with unread bytes in it (the server's session tickets)
   * is reset, and the reset could reach the server before its last reads. */
  SSL_shutdown(ssl);
  shutdown(fd, SHUT_WR);
  while (SSL_read(ssl, buf, (int)b->buffer) > 0)
    ;
  ERR_clear_error();
  double seconds = now_s() - start;
  report(ssl, sent, seconds, false);
  SSL_free(ssl);
  close(fd);
  return 0;
}

static void usage(FILE *out) {
  fprintf(out, "usage: " PROG " server --cert F --key F [options]\n"
               "       " PROG " client --bytes N [options]\n"
               "  --host H            numeric address (default 127.0.0.1)\n"
               "  --port P            port (default 7443; server: 0 picks one)\n"
               "  --bytes N           client: bytes to send (K, M, G: powers of 1024)\n"
               "  --buffer BYTES      read buffer / write size (default 65536)\n"
               "  --ciphersuites S    TLS 1.3 only, with these suites\n"
               "  --help              this text\n");
}

static bool parse_size(const char *s, unsigned long long lo, unsigned long long hi,
                       unsigned long long *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || s[0] == '-')
    return false;
  unsigned shift = *end == 'K' || *end == 'k'   ? 10
                   : *end == 'M' || *end == 'm' ? 20
                   : *end == 'G' || *end == 'g' ? 30
                                                : 0;
  end += shift != 0;
  if (*end != '\0' || (shift && v > (~0ULL >> shift)))
    return false;
  v <<= shift;
  if (v < lo || v > hi)
    return false;
  *out = v;
  return true;
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
      {"ciphersuites", required_argument, NULL, 'C'},
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
    unsigned long long v = 0;
    switch (c) {
    case 'H':
      usage(stdout);
      return 2;
    case 'h':
      b->host = optarg;
      break;
    case 'p':
      ok = parse_size(optarg, 0, 65535, &v) && (b->port = (int)v, true);
      break;
    case 'n':
      ok = parse_size(optarg, 1, ~0ULL, &b->bytes);
      break;
    case 'B':
      ok = parse_size(optarg, 1, MAX_BUFFER, &v) && (b->buffer = (size_t)v, true);
      break;
    case 'c':
      b->cert = optarg;
      break;
    case 'k':
      b->key = optarg;
      break;
    case 'C':
      b->ciphersuites = optarg;
      break;
    default:
      ok = false;
      continue;
    }
    if (!ok)
      fprintf(stderr, PROG ": bad value for --%s: %s\n", longopts[idx].name, optarg);
  }
  if (ok && optind < argc) {
    fprintf(stderr, PROG ": unexpected argument: %s\n", argv[optind]);
    ok = false;
  }
  if (ok && b->server && (b->cert == NULL || b->key == NULL)) {
    fprintf(stderr, PROG ": server needs --cert and --key\n");
    ok = false;
  }
  if (ok && !b->server && b->bytes == 0) {
    fprintf(stderr, PROG ": client needs --bytes\n");
    ok = false;
  }
  if (!ok) {
    usage(stderr);
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  bulk_t b = {.host = "127.0.0.1", .port = 7443, .buffer = DEFAULT_BUFFER};
  int rc = parse_args(argc, argv, &b);
  if (rc != 0)
    return rc == 2 ? 0 : 1;
  signal(SIGPIPE, SIG_IGN);
  SSL_CTX *ctx = make_ctx(&b);
  if (ctx == NULL)
    return fail("TLS context");
  char *buf = malloc(b.buffer);
  if (buf == NULL) {
    SSL_CTX_free(ctx);
    fprintf(stderr, PROG ": out of memory\n");
    return 1;
  }
  rc = b.server ? run_server(&b, ctx, buf) : run_client(&b, ctx, buf);
  free(buf);
  SSL_CTX_free(ctx);
  return rc;
}
