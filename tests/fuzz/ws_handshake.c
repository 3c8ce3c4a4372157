/* libFuzzer target: the WebSocket opening handshake's validation, both
 * sides (src/ws/server.c, src/ws/client.c, src/ws/handshake.c and the
 * permessage-deflate negotiation of src/ws/deflate.c).
 *
 * Server side: the input is what a client sends; keel's HTTP server (over
 * a lab pipe) hands each request to a handler that calls keel_ws_accept
 * and, once upgraded, echoes until the close. Checks: an upgrade (101) is
 * only ever given to a request that asked for one properly (GET, Upgrade
 * and Connection tokens, version 13, a 24-character key), with the right
 * Sec-WebSocket-Accept for its key; nothing else answers 101.
 *
 * Client side: the input is what the server answers; keel_ws_connect
 * runs against a lab listener that reads the request and writes the input.
 * Checks: a connect that succeeds saw a 101 with the right accept key for
 * the key keel sent.
 *
 * The input: 4 control bytes, then the bytes.
 *   in[0] bit 0     the client side (else the server side)
 *         bit 1     permessage-deflate enabled
 *         bit 2     subprotocols {"chat", "v2"} and an origin hook
 *         bit 3     the pipe moves random parts of each read and write
 *   in[1]           size of the pieces written (0: all at once)
 *   in[2]           unused
 *   in[3]           the lab seed */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "handshake.h"
#include "keel/keel.h"

#define FZ_CTRL 4
/* 16 KiB a direction: a pipe's buffers then come from ASan's size classes,
 * not a mapping of their own made and unmade per input. */
#define FZ_PIPE_CAPACITY (16 * 1024)

typedef struct fz {
  const uint8_t *ctrl, *in;
  size_t in_len;
  char *seen; /* what the other side received (the request, for the client side) */
  size_t seen_len, seen_cap;
  char *out; /* what keel sent (server side) */
  size_t out_len, out_cap;
  bool upgraded, connected;
  keel_stream_t *peer, *mine;
} fz_t;

static void fz_fail(const char *what) {
  fprintf(stderr, "ws_handshake: %s\n", what);
  abort();
}

static void append(char **buf, size_t *len, size_t *cap, const void *p, size_t n) {
  if (*cap - *len < n + 1) {
    *cap = (*len + n) * 2 + 1024;
    *buf = realloc(*buf, *cap);
  }
  memcpy(*buf + *len, p, n);
  *len += n;
  (*buf)[*len] = 0;
}

static bool origin_hook(const char *origin, void *ctx) {
  (void)ctx;
  return !origin || strncmp(origin, "http", 4) == 0;
}

static void opts_of(const fz_t *x, keel_ws_opts_t *o) {
  static const char *const protos[] = {"chat", "v2", NULL};
  memset(o, 0, sizeof *o);
  o->deflate.enable = x->ctrl[0] & 2;
  if (x->ctrl[0] & 4) {
    o->subprotocols = protos;
    o->check_origin = origin_hook;
  }
  o->close_timeout_ms = 100;
}

static int handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  fz_t *x = ctx;
  keel_ws_opts_t o;
  opts_of(x, &o);
  keel_ws_t *ws;
  int rc = keel_ws_accept(req, res, &o, &ws);
  if (rc < 0)
    return keel_http_responded(res) ? 0 : rc;
  x->upgraded = true;
  const void *d;
  size_t n;
  while ((rc = keel_ws_recv(ws, &d, &n)) > 0)
    if (keel_ws_send(ws, rc, d, n) < 0)
      break;
  keel_ws_close(ws, 0, NULL);
  return 0;
}

static int writer(void *arg) {
  fz_t *x = arg;
  size_t piece = x->ctrl[1] ? x->ctrl[1] : x->in_len;
  for (size_t off = 0; off < x->in_len;) {
    size_t n = x->in_len - off < piece ? x->in_len - off : piece;
    if (keel_write_all(x->peer, x->in + off, n, NULL) < 0)
      return 0;
    off += n;
    keel_sleep_ms(1);
  }
  keel_stream_shutdown(x->peer, SHUT_WR);
  return 0;
}

static int server_side(void *arg) {
  fz_t *x = arg;
  keel_http_server_opts_t so = {.handler = handler, .ctx = x, .no_date = true};
  keel_http_serve_stream(x->mine, &so);
  return 0;
}

/* The lab server of the client side: reads the request head, then
 * answers with the input. */
static int lab_server(void *arg) {
  fz_t *x = arg;
  keel_listener_t *l = NULL;
  keel_tcp_t *c;
  if (keel_tcp_listen("fz:80", NULL, &l) < 0 || keel_tcp_accept(l, &c) < 0) {
    keel_listener_close(l);
    return 0;
  }
  keel_listener_close(l);
  x->peer = keel_tcp_stream(c);
  char buf[4096];
  while (!x->seen || !strstr(x->seen, "\r\n\r\n")) {
    ssize_t n = keel_read(x->peer, buf, sizeof buf);
    if (n <= 0)
      break;
    append(&x->seen, &x->seen_len, &x->seen_cap, buf, (size_t)n);
  }
  writer(x);
  while (keel_read(x->peer, buf, sizeof buf) > 0)
    ;
  keel_close(x->peer);
  return 0;
}

static int client_side(void *arg) {
  fz_t *x = arg;
  keel_ws_opts_t o;
  opts_of(x, &o);
  keel_ws_t *ws;
  keel_sleep_ms(1); /* the listener first */
  if (keel_ws_connect("ws://fz/", &o, &ws) < 0)
    return 0;
  x->connected = true;
  const void *d;
  size_t n;
  while (keel_ws_recv(ws, &d, &n) > 0)
    ;
  keel_ws_close(ws, 0, NULL);
  return 0;
}

static int fz_main(void *arg) {
  fz_t *x = arg;
  keel_scope_opts_t so = {.deadline_ns = keel_now_ns() + 3600 * KEEL_NS_PER_SEC};
  keel_scope_t *s;
  if (keel_scope_open(&so, &s) < 0)
    return -ENOMEM;
  if (x->ctrl[0] & 1) {
    keel_lab_net_faults_t f = {
        .conn = {.capacity = FZ_PIPE_CAPACITY, .short_permille = x->ctrl[0] & 8 ? 300 : 0}};
    keel_lab_net_faults(&f);
    keel_spawn(s, lab_server, x, NULL);
    keel_spawn(s, client_side, x, NULL);
    keel_scope_join(s);
    keel_scope_close(s);
    return 0;
  }
  keel_lab_faults_t f = {.capacity = FZ_PIPE_CAPACITY, .short_permille = x->ctrl[0] & 8 ? 300 : 0};
  if (keel_lab_pipe(&f, &x->peer, &x->mine) < 0)
    return -ENOMEM;
  keel_spawn(s, server_side, x, NULL);
  keel_spawn(s, writer, x, NULL);
  char buf[4096];
  ssize_t n;
  while ((n = keel_read(x->peer, buf, sizeof buf)) > 0)
    append(&x->out, &x->out_len, &x->out_cap, buf, (size_t)n);
  keel_scope_join(s);
  keel_scope_close(s);
  keel_close(x->peer);
  return 0;
}

/* The value of field name in the head at p (case-insensitive name), into
 * out; false if absent. */
static bool field(const char *p, const char *name, char *out, size_t cap) {
  size_t nl = strlen(name);
  for (const char *l = strstr(p, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
    if (strncasecmp(l + 2, name, nl) == 0 && l[2 + nl] == ':') {
      const char *v = l + 3 + nl;
      while (*v == ' ' || *v == '\t')
        v++;
      size_t n = strcspn(v, "\r\n");
      if (n >= cap)
        n = cap - 1;
      memcpy(out, v, n);
      out[n] = 0;
      while (n && (out[n - 1] == ' ' || out[n - 1] == '\t'))
        out[--n] = 0;
      return true;
    }
    if (l[2] == '\r')
      break;
  }
  return false;
}

static void check(const fz_t *x) {
  if (x->ctrl[0] & 1) {
    if (!x->connected)
      return;
    /* keel accepted a response: it must be a 101 with the right accept. */
    char *in = malloc(x->in_len + 1);
    memcpy(in, x->in, x->in_len);
    in[x->in_len] = 0;
    char key[64], accept[64], want[WS_ACCEPT_LEN + 1];
    /* "HTTP/1.1 101 ", then reason-phrase bytes (RFC 9112 §4) up to CRLF:
     * no NUL, so that the head reads as a string below. */
    const uint8_t *eol = memmem(x->in, x->in_len, "\r\n", 2);
    if (!eol || x->in_len < 13 || memcmp(x->in, "HTTP/1.1 101 ", 13) != 0)
      fz_fail("connected on a response that is not 101");
    for (const uint8_t *r = x->in + 13; r < eol; r++)
      if ((*r < 0x20 && *r != '\t') || *r == 0x7f)
        fz_fail("connected on a status line with a control byte in its reason phrase");
    if (!x->seen || !field(x->seen, "Sec-WebSocket-Key", key, sizeof key))
      fz_fail("connected without having sent a key");
    if (!field(in, "Sec-WebSocket-Accept", accept, sizeof accept))
      fz_fail("connected without an accept key");
    keel__ws_accept_key(key, strlen(key), want);
    if (strcmp(accept, want) != 0)
      fz_fail("connected with a wrong accept key");
    free(in);
    return;
  }
  /* Server side: a 101 goes only to a proper upgrade request. */
  const char *up = x->out ? strstr(x->out, "HTTP/1.1 101 ") : NULL;
  if (!up)
    return;
  if (!x->upgraded)
    fz_fail("101 sent without keel_ws_accept succeeding");
  char *in = malloc(x->in_len + 1);
  memcpy(in, x->in, x->in_len);
  in[x->in_len] = 0;
  /* Some GET of the input carried the key this accept answers. */
  char accept[64];
  if (!field(up, "Sec-WebSocket-Accept", accept, sizeof accept))
    fz_fail("101 without Sec-WebSocket-Accept");
  bool found = false;
  for (const char *r = strstr(in, "GET "); r && !found; r = strstr(r + 1, "GET ")) {
    char key[64], want[WS_ACCEPT_LEN + 1];
    if (field(r, "Sec-WebSocket-Key", key, sizeof key) && strlen(key) == 24) {
      keel__ws_accept_key(key, 24, want);
      found = strcmp(want, accept) == 0;
    }
  }
  if (!found)
    fz_fail("101 whose accept key matches no GET with a valid key");
  free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FZ_CTRL)
    return 0;
  fz_t x = {.ctrl = data, .in = data + FZ_CTRL, .in_len = size - FZ_CTRL};
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  cfg.workers = 1;
  cfg.lab_seed = (uint64_t)data[3] + 1;
  cfg.no_stack_guard_handler = true;
  if (keel_run(&cfg, fz_main, &x) != 0)
    fz_fail("keel_run failed");
  check(&x);
  free(x.seen);
  free(x.out);
  return 0;
}
