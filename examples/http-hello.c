/* http-hello: keel's HTTP/1.1 server with a few routes.
 *
 *   http-hello [--host H] [--port P] [--workers N] [--backend auto|uring|epoll]
 *              [--max-conns N] [--max-requests N] [--header-timeout-ms N]
 *              [--tls-cert F --tls-key F [--tls-sni-cert F --tls-sni-key F]
 *               [--tls-client-ca F]]
 *
 * With --tls-cert and --tls-key it serves HTTPS (ALPN http/1.1, session
 * tickets); --tls-sni-cert/--tls-sni-key add a certificate chosen by SNI
 * for the names it carries; --tls-client-ca requires client certificates
 * that verify against F.
 *
 *   GET  /                        200 "Hello, World!" (text/plain, 13 bytes)
 *   POST /echo                    200 with the request body
 *   GET  /sleep?ms=N              200 "slept N ms\n" after N ms (at most 60 s)
 *   GET  /stream?chunks=N&size=S  200, a chunked body of N chunks of S bytes
 *   GET  /metrics                 the runtime's metrics (Prometheus text format)
 *   GET  /debug/tasks             every live task and what it waits on
 *                                 (?format=json for JSON)
 *   GET  /ws                      WebSocket: every message back with its opcode
 *                                 (per-message style: an idle one holds no stack)
 *
 * SIGINT/SIGTERM stop accepting, close idle connections, let the requests
 * in flight finish (their responses carry Connection: close) and exit 0.
 * A startup failure exits 1. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"

typedef struct app {
  char hostport[300];
  int workers;
  keel_backend_t backend;
  long max_conns, max_requests, header_timeout_ms;
  keel_http_router_t *router;
  keel_tls_cert_t cert, sni_cert;
  const char *client_ca;
  keel_tls_ctx_t *tls;
  keel_ws_opts_t ws;
} app_t;

static int hello(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)req, (void)ctx;
  keel_http_add_header(res, "Content-Type", "text/plain");
  return keel_http_send(res, "Hello, World!", 13);
}

static int echo(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  const void *body;
  size_t len;
  int rc = keel_http_body(req, &body, &len);
  if (rc < 0)
    return rc; /* keel answers 413 / 400 / 500 */
  const char *type = keel_http_header(req, "Content-Type");
  keel_http_add_header(res, "Content-Type", type ? type : "application/octet-stream");
  return keel_http_send(res, body, len);
}

/* The value of key in a query string "a=1&b=2", as a number in [0, max]. */
static long query_num(const char *query, const char *key, long dflt, long max) {
  size_t klen = strlen(key);
  for (const char *p = query; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
    if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
      char *end;
      long v = strtol(p + klen + 1, &end, 10);
      if (end == p + klen + 1 || v < 0)
        return dflt;
      return v > max ? max : v;
    }
  }
  return dflt;
}

static int sleep_route(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  long ms = query_num(keel_http_query(req), "ms", 0, 60000);
  int rc = keel_sleep_ms(ms);
  if (rc < 0)
    return rc;
  char body[64];
  int n = snprintf(body, sizeof body, "slept %ld ms\n", ms);
  keel_http_add_header(res, "Content-Type", "text/plain");
  return keel_http_send(res, body, (size_t)n);
}

static int stream_route(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  (void)ctx;
  long chunks = query_num(keel_http_query(req), "chunks", 4, 1000000);
  long size = query_num(keel_http_query(req), "size", 16, 1 << 20);
  char *buf = keel_arena_alloc(keel_http_arena(req), (size_t)size + 1);
  if (!buf)
    return -ENOMEM;
  keel_http_add_header(res, "Content-Type", "text/plain");
  for (long i = 0; i < chunks; i++) {
    memset(buf, 'a' + (int)(i % 26), (size_t)size);
    ssize_t n = keel_http_write(res, buf, (size_t)size);
    if (n < 0)
      return (int)n;
  }
  return keel_http_finish(res);
}

static int ws_echo(keel_ws_t *ws, int opcode, const void *data, size_t len, void *ctx) {
  (void)ctx;
  return keel_ws_send(ws, opcode, data, len);
}

/* The upgrade; a refused one (not a WebSocket request) has its 4xx sent. */
static int ws_route(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  const keel_ws_opts_t *ws = ctx;
  return keel_ws_accept(req, res, ws, NULL) < 0 && !keel_http_responded(res) ? -EPROTO : 0;
}

static void on_listen(const keel_addr_t *addr, void *ctx) {
  char text[KEEL_ADDRSTRLEN];
  const app_t *app = ctx;
  printf("http-hello listening on %s (backend %s, %d workers%s)\n",
         keel_addr_format(addr, text, sizeof text), keel_backend_name(), keel_worker_count(),
         app->tls ? ", https" : "");
  fflush(stdout);
}

static int route(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  const app_t *app = ctx;
  return keel_http_router_handler(req, res, app->router);
}

/* The HTTPS context of --tls-cert and friends; 0 without them. */
static int tls_open(app_t *app) {
  if (!app->cert.cert_file)
    return 0;
  static const char *const alpn[] = {"http/1.1", NULL};
  keel_tls_ctx_opts_t o = {
      .server = true,
      .cert = app->cert,
      .sni_certs = &app->sni_cert,
      .sni_count = app->sni_cert.cert_file ? 1 : 0,
      .alpn = alpn,
      .ca_file = app->client_ca,
      .client_auth = app->client_ca ? KEEL_TLS_CLIENT_CERT_REQUIRE : KEEL_TLS_CLIENT_CERT_NONE,
  };
  char why[KEEL_TLS_REASON_MAX];
  int rc = keel_tls_ctx_open(&o, &app->tls, why, sizeof why);
  if (rc < 0)
    fprintf(stderr, "http-hello: TLS: %s (%s)\n", why, keel_strerror(rc));
  return rc;
}

static int main_task(void *arg) {
  app_t *app = arg;
  if (tls_open(app) < 0)
    return 1;
  keel_http_server_opts_t opts = {
      .handler = route,
      .ctx = app,
      .on_listen = on_listen,
      .max_conns = (unsigned)app->max_conns,
      .max_requests = (unsigned)app->max_requests,
      .header_timeout_ms = app->header_timeout_ms,
      .tls = app->tls,
  };
  int rc = keel_http_serve(app->hostport, &opts);
  keel_tls_ctx_close(app->tls);
  if (rc < 0) {
    fprintf(stderr, "http-hello: %s: %s\n", app->hostport, keel_strerror(rc));
    return 1;
  }
  return 0;
}

static int add_routes(keel_http_router_t *r, app_t *app) {
  app->ws.on_message = ws_echo;
  int rc = keel_http_route(r, "GET", "/", 0, hello, NULL);
  if (rc == 0)
    rc = keel_http_route(r, "POST", "/echo", 0, echo, NULL);
  if (rc == 0)
    rc = keel_http_route(r, "GET", "/sleep", 0, sleep_route, NULL);
  if (rc == 0)
    rc = keel_http_route(r, "GET", "/stream", 0, stream_route, NULL);
  if (rc == 0)
    rc = keel_http_route(r, "GET", "/metrics", 0, keel_http_metrics_handler, NULL);
  if (rc == 0)
    rc = keel_http_route(r, "GET", "/debug/tasks", 0, keel_http_tasks_handler, NULL);
  if (rc == 0)
    rc = keel_http_route(r, "GET", "/ws", 0, ws_route, &app->ws);
  return rc;
}

static void usage(FILE *out) {
  fprintf(out, "usage: http-hello [options]\n"
               "  --host H          address to listen on (default 127.0.0.1)\n"
               "  --port P          port, 0 = any free one (default 8080)\n"
               "  --workers N       worker threads, 0 = one per CPU (default 0)\n"
               "  --backend B       auto|uring|epoll (default auto)\n"
               "  --max-conns N     connections per worker; more are closed (default 10000)\n"
               "  --max-requests N  requests per connection, the last with Connection: close\n"
               "                    (default 10000)\n"
               "  --header-timeout-ms N\n"
               "                    a request head must arrive within N ms, else 408 and a\n"
               "                    close; the first from the accept (default 10000)\n"
               "  --tls-cert F      serve HTTPS with this certificate chain (PEM) ...\n"
               "  --tls-key F       ... and its private key (PEM)\n"
               "  --tls-sni-cert F  a second certificate, chosen by SNI ...\n"
               "  --tls-sni-key F   ... and its key\n"
               "  --tls-client-ca F require client certificates that verify against F\n"
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

/* Returns 0 to run, 1 on bad flags, 2 after --help. */
static int parse_args(int argc, char **argv, app_t *app) {
  static const struct option longopts[] = {
      {"host", required_argument, NULL, 'h'},
      {"port", required_argument, NULL, 'p'},
      {"workers", required_argument, NULL, 'w'},
      {"backend", required_argument, NULL, 'b'},
      {"max-conns", required_argument, NULL, 'm'},
      {"max-requests", required_argument, NULL, 'r'},
      {"header-timeout-ms", required_argument, NULL, 't'},
      {"tls-cert", required_argument, NULL, 'C'},
      {"tls-key", required_argument, NULL, 'K'},
      {"tls-sni-cert", required_argument, NULL, 'S'},
      {"tls-sni-key", required_argument, NULL, 'T'},
      {"tls-client-ca", required_argument, NULL, 'A'},
      {"help", no_argument, NULL, 'H'},
      {NULL, 0, NULL, 0},
  };
  const char *host = "127.0.0.1";
  long port = 8080, workers = 0;
  int c, idx = 0;
  bool ok = true;
  while (ok && (c = getopt_long(argc, argv, "", longopts, &idx)) != -1) {
    switch (c) {
    case 'h':
      host = optarg;
      break;
    case 'p':
      ok = parse_long(optarg, 0, 65535, &port);
      break;
    case 'w':
      ok = parse_long(optarg, 0, 4096, &workers);
      break;
    case 'b':
      ok = parse_backend(optarg, &app->backend);
      break;
    case 'm':
      ok = parse_long(optarg, 1, UINT_MAX, &app->max_conns);
      break;
    case 'r':
      ok = parse_long(optarg, 1, UINT_MAX, &app->max_requests);
      break;
    case 't':
      ok = parse_long(optarg, 1, 3600000, &app->header_timeout_ms);
      break;
    case 'C':
      app->cert.cert_file = optarg;
      break;
    case 'K':
      app->cert.key_file = optarg;
      break;
    case 'S':
      app->sni_cert.cert_file = optarg;
      break;
    case 'T':
      app->sni_cert.key_file = optarg;
      break;
    case 'A':
      app->client_ca = optarg;
      break;
    case 'H':
      usage(stdout);
      return 2;
    default:
      ok = false;
    }
    if (!ok && c != '?')
      fprintf(stderr, "http-hello: bad value for --%s: %s\n", longopts[idx].name, optarg);
  }
  if (ok && optind < argc) {
    fprintf(stderr, "http-hello: unexpected argument: %s\n", argv[optind]);
    ok = false;
  }
  if (ok && (!app->cert.cert_file != !app->cert.key_file ||
             !app->sni_cert.cert_file != !app->sni_cert.key_file ||
             ((app->sni_cert.cert_file || app->client_ca) && !app->cert.cert_file))) {
    fprintf(stderr, "http-hello: --tls-cert and --tls-key go together (and the other --tls "
                    "options need them)\n");
    ok = false;
  }
  bool v6 = strchr(host, ':') != NULL && host[0] != '[';
  int n = snprintf(app->hostport, sizeof app->hostport, v6 ? "[%s]:%ld" : "%s:%ld", host, port);
  if (ok && (n < 0 || (size_t)n >= sizeof app->hostport)) {
    fprintf(stderr, "http-hello: host too long\n");
    ok = false;
  }
  if (!ok) {
    usage(stderr);
    return 1;
  }
  app->workers = (int)workers;
  return 0;
}

int main(int argc, char **argv) {
  app_t app = {.backend = KEEL_BACKEND_AUTO, .max_conns = 10000, .max_requests = 10000};
  int rc = parse_args(argc, argv, &app);
  if (rc != 0)
    return rc == 2 ? 0 : 1;
  if (keel_http_router_open(&app.router) < 0 || add_routes(app.router, &app) < 0) {
    fprintf(stderr, "http-hello: out of memory\n");
    return 1;
  }
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = app.workers;
  cfg.backend = app.backend;
  cfg.handle_signals = true;
  rc = keel_run(&cfg, main_task, &app);
  keel_http_router_close(app.router);
  if (rc < 0) {
    fprintf(stderr, "http-hello: cannot start the runtime: %s\n", keel_strerror(rc));
    return 1;
  }
  return rc;
}
