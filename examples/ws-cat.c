/* ws-cat: keel's WebSocket client from the command line.
 *
 *   ws-cat URL [--send TEXT]... [--binary] [--echo] [--deflate] [--deflate-context]
 *             [--subprotocol P]... [--cacert F] [--insecure]
 *             [--backend auto|uring|epoll]
 *
 * Connects to a ws:// or wss:// URL (verified against OpenSSL's default CA
 * paths, or --cacert F; --insecure verifies nothing).
 *   - With --send, sends each TEXT as a message (binary with --binary),
 *     prints each reply as `< TEXT` (or `< [N bytes binary]`), then
 *     closes with 1000.
 *   - With --echo, sends every message it receives back with its opcode
 *     until the server closes.
 * Either way it ends by printing one line: `close CODE` (the close code
 * received, or the code keel sent when it failed the connection: 1002,
 * 1007, 1009) or `error NAME` (the handshake failed, or the connection was
 * lost; NAME as in <errno.h>: EPROTO, ECONNREFUSED...), and exits 0; 1 for bad flags or an error
 * before connecting. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel/keel.h"

#define MAX_SEND 64
#define MAX_PROTOS 8

typedef struct app {
  const char *url;
  const char *send[MAX_SEND];
  int nsend;
  bool binary, echo, insecure;
  const char *cacert;
  const char *protos[MAX_PROTOS + 1];
  int nprotos;
  keel_ws_opts_t ws;
  keel_backend_t backend;
} app_t;

/* "EPROTO" for -EPROTO. */
static const char *errno_name(int err) {
  const char *n = strerrorname_np(-err);
  return n ? n : "EUNKNOWN";
}

static void report_end(keel_ws_t *ws, int rc) {
  if (rc == 0)
    printf("close %d\n", keel_ws_close_code(ws));
  else if (keel_ws_close_sent(ws) && rc != -ETIMEDOUT && rc != -ECONNRESET && rc != -EPIPE)
    printf("close %d\n", keel_ws_close_sent(ws)); /* the code keel failed it with */
  else
    printf("error %s\n", errno_name(rc));
}

static int main_task(void *arg) {
  app_t *app = arg;
  keel_tls_ctx_t *tls = NULL;
  char why[256] = "";
  if (app->cacert || app->insecure) {
    keel_tls_ctx_opts_t o = {.ca_file = app->cacert, .insecure_no_verify = app->insecure};
    int rc = keel_tls_ctx_open(&o, &tls, why, sizeof why);
    if (rc < 0) {
      fprintf(stderr, "ws-cat: TLS: %s (%s)\n", why, keel_strerror(rc));
      return 1;
    }
  }
  app->ws.tls = tls;
  app->ws.why = why;
  app->ws.why_len = sizeof why;
  app->ws.subprotocols = app->nprotos ? app->protos : NULL;
  keel_ws_t *ws;
  int rc = keel_ws_connect(app->url, &app->ws, &ws);
  if (rc < 0) {
    if (why[0])
      fprintf(stderr, "ws-cat: %s\n", why);
    printf("error %s\n", errno_name(rc));
    fflush(stdout);
    keel_tls_ctx_close(tls);
    return 0;
  }
  if (keel_ws_subprotocol(ws))
    fprintf(stderr, "ws-cat: subprotocol %s\n", keel_ws_subprotocol(ws));
  keel_ws_deflate_params_t dp;
  if (keel_ws_deflate(ws, &dp))
    fprintf(stderr, "ws-cat: permessage-deflate (server window %d%s, client window %d%s)\n",
            dp.server_max_window_bits, dp.server_no_context_takeover ? ", no context" : "",
            dp.client_max_window_bits, dp.client_no_context_takeover ? ", no context" : "");
  const void *data;
  size_t len;
  if (app->echo) {
    while ((rc = keel_ws_recv(ws, &data, &len)) > 0)
      if ((rc = keel_ws_send(ws, rc, data, len)) < 0)
        break;
  } else {
    for (int i = 0; i < app->nsend; i++) {
      int op = app->binary ? KEEL_WS_BINARY : KEEL_WS_TEXT;
      if ((rc = keel_ws_send(ws, op, app->send[i], strlen(app->send[i]))) < 0)
        break;
      if ((rc = keel_ws_recv(ws, &data, &len)) <= 0)
        break;
      if (rc == KEEL_WS_TEXT)
        printf("< %.*s\n", (int)len, (const char *)data);
      else
        printf("< [%zu bytes binary]\n", len);
    }
    if (rc > 0 || app->nsend == 0) {
      keel_ws_shutdown(ws, KEEL_WS_NORMAL, "bye");
      while ((rc = keel_ws_recv(ws, &data, &len)) > 0)
        ;
    }
  }
  report_end(ws, rc);
  fflush(stdout);
  keel_ws_close(ws, 0, NULL);
  keel_tls_ctx_close(tls);
  return 0;
}

static void usage(FILE *out) {
  fprintf(out, "usage: ws-cat URL [options]\n"
               "  --send TEXT        send TEXT and print the reply (repeatable)\n"
               "  --binary           send binary messages\n"
               "  --echo             send back every message received until the close\n"
               "  --deflate          offer permessage-deflate\n"
               "  --deflate-context  offer it without asking the server to drop its context\n"
               "  --subprotocol P    offer subprotocol P (repeatable)\n"
               "  --max-message N    the largest message accepted (default 1 MiB)\n"
               "  --cacert F         verify wss:// servers against F\n"
               "  --insecure         do not verify wss:// servers\n"
               "  --backend B        auto|uring|epoll (default auto)\n"
               "  --help             this text\n");
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"send", required_argument, NULL, 's'},
      {"binary", no_argument, NULL, 'b'},
      {"echo", no_argument, NULL, 'e'},
      {"deflate", no_argument, NULL, 'd'},
      {"subprotocol", required_argument, NULL, 'p'},
      {"max-message", required_argument, NULL, 'm'},
      {"cacert", required_argument, NULL, 'A'},
      {"insecure", no_argument, NULL, 'k'},
      {"deflate-context", no_argument, NULL, 'c'},
      {"backend", required_argument, NULL, 'B'},
      {"help", no_argument, NULL, 'H'},
      {NULL, 0, NULL, 0},
  };
  app_t app = {.backend = KEEL_BACKEND_AUTO};
  int c;
  bool ok = true;
  while (ok && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case 's':
      ok = app.nsend < MAX_SEND;
      if (ok)
        app.send[app.nsend++] = optarg;
      break;
    case 'b':
      app.binary = true;
      break;
    case 'e':
      app.echo = true;
      break;
    case 'd':
      app.ws.deflate.enable = true;
      break;
    case 'c':
      app.ws.deflate.enable = true;
      app.ws.deflate.server_context_takeover = true;
      break;
    case 'p':
      ok = app.nprotos < MAX_PROTOS;
      if (ok)
        app.protos[app.nprotos++] = optarg;
      break;
    case 'm': {
      char *end;
      long long v = strtoll(optarg, &end, 10);
      ok = *end == 0 && v > 0;
      app.ws.max_message = (size_t)v;
      break;
    }
    case 'A':
      app.cacert = optarg;
      break;
    case 'k':
      app.insecure = true;
      break;
    case 'B':
      if (strcmp(optarg, "uring") == 0)
        app.backend = KEEL_BACKEND_URING;
      else if (strcmp(optarg, "epoll") == 0)
        app.backend = KEEL_BACKEND_EPOLL;
      else
        ok = strcmp(optarg, "auto") == 0;
      break;
    case 'H':
      usage(stdout);
      return 0;
    default:
      ok = false;
    }
  }
  if (ok && optind == argc - 1)
    app.url = argv[optind];
  if (!ok || !app.url) {
    usage(stderr);
    return 1;
  }
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = 1;
  cfg.backend = app.backend;
  int rc = keel_run(&cfg, main_task, &app);
  if (rc < 0) {
    fprintf(stderr, "ws-cat: cannot start the runtime: %s\n", keel_strerror(rc));
    return 1;
  }
  return rc;
}
