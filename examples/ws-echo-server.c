/* ws-echo-server: a WebSocket echo server on keel.
 *
 *   ws-echo-server [--host H] [--port P] [--workers N] [--backend auto|uring|epoll]
 *                  [--tls-cert F --tls-key F] [--max-message N] [--deflate]
 *                  [--sequential]
 *
 * Every message received on path "/" goes back with its opcode. Each
 * connection runs in the per-message style (keel_ws_opts.on_message): an
 * idle WebSocket holds no stack and no buffer. --sequential runs each one
 * in its handler's task instead (keel_ws_recv in a loop), the style that
 * reads as plain code. GET /metrics serves the runtime's metrics
 * (Prometheus text format), GET /debug/tasks every live task and what it
 * waits on. Any other path answers 404; a plain GET of
 * "/" answers 426. With --tls-cert and --tls-key it serves wss://. */
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
  keel_tls_cert_t cert;
  keel_tls_ctx_t *tls;
  bool sequential;
  keel_ws_opts_t ws;
} app_t;

static int echo(keel_ws_t *ws, int opcode, const void *data, size_t len, void *ctx) {
  (void)ctx;
  return keel_ws_send(ws, opcode, data, len);
}

static int handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  app_t *app = ctx;
  if (strcmp(keel_http_path(req), "/metrics") == 0)
    return keel_http_metrics_handler(req, res, NULL);
  if (strcmp(keel_http_path(req), "/debug/tasks") == 0)
    return keel_http_tasks_handler(req, res, NULL);
  if (strcmp(keel_http_path(req), "/") != 0) {
    keel_http_set_status(res, 404);
    return keel_http_send(res, "not found\n", 10);
  }
  if (!app->sequential)
    return keel_ws_accept(req, res, &app->ws, NULL) < 0 && !keel_http_responded(res) ? -EPROTO : 0;
  keel_ws_t *ws;
  int rc = keel_ws_accept(req, res, &app->ws, &ws);
  if (rc < 0)
    return keel_http_responded(res) ? 0 : rc;
  const void *data;
  size_t len;
  while ((rc = keel_ws_recv(ws, &data, &len)) > 0)
    if (keel_ws_send(ws, rc, data, len) < 0)
      break;
  return keel_ws_close(ws, 0, NULL) < 0 ? 0 : 0;
}

static void on_listen(const keel_addr_t *addr, void *ctx) {
  char text[KEEL_ADDRSTRLEN];
  const app_t *app = ctx;
  printf("ws-echo-server listening on %s (backend %s, %d workers%s%s)\n",
         keel_addr_format(addr, text, sizeof text), keel_backend_name(), keel_worker_count(),
         app->tls ? ", wss" : "", app->ws.deflate.enable ? ", permessage-deflate" : "");
  fflush(stdout);
}

static int main_task(void *arg) {
  app_t *app = arg;
  if (app->cert.cert_file) {
    static const char *const alpn[] = {"http/1.1", NULL};
    keel_tls_ctx_opts_t o = {.server = true, .cert = app->cert, .alpn = alpn};
    char why[KEEL_TLS_REASON_MAX];
    int rc = keel_tls_ctx_open(&o, &app->tls, why, sizeof why);
    if (rc < 0) {
      fprintf(stderr, "ws-echo-server: TLS: %s (%s)\n", why, keel_strerror(rc));
      return 1;
    }
  }
  keel_http_server_opts_t opts = {
      .handler = handler, .ctx = app, .on_listen = on_listen, .tls = app->tls};
  int rc = keel_http_serve(app->hostport, &opts);
  keel_tls_ctx_close(app->tls);
  if (rc < 0) {
    fprintf(stderr, "ws-echo-server: %s: %s\n", app->hostport, keel_strerror(rc));
    return 1;
  }
  return 0;
}

static void usage(FILE *out) {
  fprintf(out, "usage: ws-echo-server [options]\n"
               "  --host H          address to listen on (default 127.0.0.1)\n"
               "  --port P          port, 0 = any free one (default 9001)\n"
               "  --workers N       worker threads, 0 = one per CPU (default 0)\n"
               "  --backend B       auto|uring|epoll (default auto)\n"
               "  --tls-cert F      serve wss:// with this certificate chain (PEM) ...\n"
               "  --tls-key F       ... and its private key (PEM)\n"
               "  --max-message N   the largest message in bytes (default 1 MiB; 1009 beyond)\n"
               "  --deflate         accept permessage-deflate\n"
               "  --sequential      one task per connection running keel_ws_recv in a loop\n"
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
      {"tls-cert", required_argument, NULL, 'C'},
      {"tls-key", required_argument, NULL, 'K'},
      {"max-message", required_argument, NULL, 'm'},
      {"deflate", no_argument, NULL, 'd'},
      {"sequential", no_argument, NULL, 's'},
      {"help", no_argument, NULL, 'H'},
      {NULL, 0, NULL, 0},
  };
  const char *host = "127.0.0.1";
  long port = 9001, workers = 0, max_message = 0;
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
    case 'C':
      app->cert.cert_file = optarg;
      break;
    case 'K':
      app->cert.key_file = optarg;
      break;
    case 'm':
      ok = parse_long(optarg, 1, LONG_MAX, &max_message);
      break;
    case 'd':
      app->ws.deflate.enable = true;
      break;
    case 's':
      app->sequential = true;
      break;
    case 'H':
      usage(stdout);
      return 2;
    default:
      ok = false;
    }
    if (!ok && c != '?')
      fprintf(stderr, "ws-echo-server: bad value for --%s: %s\n", longopts[idx].name, optarg);
  }
  if (ok && optind < argc) {
    fprintf(stderr, "ws-echo-server: unexpected argument: %s\n", argv[optind]);
    ok = false;
  }
  if (ok && !app->cert.cert_file != !app->cert.key_file) {
    fprintf(stderr, "ws-echo-server: --tls-cert and --tls-key go together\n");
    ok = false;
  }
  bool v6 = strchr(host, ':') != NULL && host[0] != '[';
  int n = snprintf(app->hostport, sizeof app->hostport, v6 ? "[%s]:%ld" : "%s:%ld", host, port);
  if (ok && (n < 0 || (size_t)n >= sizeof app->hostport)) {
    fprintf(stderr, "ws-echo-server: host too long\n");
    ok = false;
  }
  if (!ok) {
    usage(stderr);
    return 1;
  }
  app->workers = (int)workers;
  app->ws.max_message = (size_t)max_message;
  if (!app->sequential)
    app->ws.on_message = echo;
  return 0;
}

int main(int argc, char **argv) {
  app_t app = {.backend = KEEL_BACKEND_AUTO};
  int rc = parse_args(argc, argv, &app);
  if (rc != 0)
    return rc == 2 ? 0 : 1;
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = app.workers;
  cfg.backend = app.backend;
  cfg.handle_signals = true;
  rc = keel_run(&cfg, main_task, &app);
  if (rc < 0) {
    fprintf(stderr, "ws-echo-server: cannot start the runtime: %s\n", keel_strerror(rc));
    return 1;
  }
  return rc;
}
