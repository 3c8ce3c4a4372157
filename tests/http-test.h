/* Shared helpers for the HTTP tests (not installed): a server run in a
 * task of the test body, and a raw client that sends bytes as given and
 * reads responses strictly (status line, fields, Content-Length or chunked
 * body), so that a test sees exactly what went over the wire. Runs on
 * io_uring, epoll and the lab network alike. */
#ifndef KT_HTTP_TEST_H
#define KT_HTTP_TEST_H

#include <ctype.h>
#include <strings.h>

#include "kt-guard.h"

/* ---- The server ------------------------------------------------------------- */

typedef struct kt_server {
  keel_http_server_opts_t opts;
  keel_scope_t *scope;
  char addr[KEEL_ADDRSTRLEN];
  atomic_bool listening; /* set on the listening worker's thread */
  int rc;
} kt_server_t;

static int kt_server_task(void *arg) {
  kt_server_t *srv = arg;
  srv->rc = keel_http_serve("127.0.0.1:0", &srv->opts);
  return 0;
}

/* The server being started (one at a time): on_listen is the harness's. */
static kt_server_t *kt_on_listen_target;
static void kt_on_listen(const keel_addr_t *addr, void *ctx) {
  (void)ctx;
  keel_addr_format(addr, kt_on_listen_target->addr, sizeof kt_on_listen_target->addr);
  atomic_store(&kt_on_listen_target->listening, true);
}

/* Starts the server (opts: handler, ctx, limits) in a scope of its own and
 * waits until it listens. */
static inline int kt_server_start(kt_server_t *srv, const keel_http_server_opts_t *opts) {
  memset(srv, 0, sizeof *srv);
  srv->opts = *opts;
  srv->opts.on_listen = kt_on_listen;
  kt_on_listen_target = srv;
  CHECK_RC(keel_scope_open(NULL, &srv->scope));
  keel_spawn_opts_t so = {.name = "server"};
  CHECK_RC(keel_spawn(srv->scope, kt_server_task, srv, &so));
  for (int i = 0; i < 5000 && !atomic_load(&srv->listening); i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK(atomic_load(&srv->listening));
  return 0;
}

/* Stops the server (the drain) and checks that keel_http_serve returned 0. */
static inline int kt_server_stop(kt_server_t *srv) {
  keel_scope_cancel(srv->scope, KEEL_CANCEL_USER);
  keel_scope_join(srv->scope);
  keel_scope_close(srv->scope);
  CHECK_EQ(srv->rc, 0);
  return 0;
}

/* ---- The raw client --------------------------------------------------------- */

typedef struct kt_conn {
  keel_tcp_t *tcp;
  keel_bufstream_t *bs;
  keel_stream_t *s;
} kt_conn_t;

static inline int kt_connect(kt_server_t *srv, kt_conn_t *c) {
  CHECK_RC(keel_tcp_connect(srv->addr, &c->tcp));
  CHECK_RC(keel_bufstream_open(keel_tcp_stream(c->tcp), NULL, &c->bs));
  c->s = keel_bufstream_stream(c->bs);
  return 0;
}

static inline void kt_disconnect(kt_conn_t *c) {
  if (c->s)
    keel_close(c->s);
  c->s = NULL;
}

/* Sends bytes; returns 0 or the error (no check: a test may expect one). */
static inline int kt_try_send(kt_conn_t *c, const char *bytes) {
  return keel_write_all(c->s, bytes, strlen(bytes), NULL);
}

static inline int kt_send(kt_conn_t *c, const char *bytes) {
  CHECK_RC(keel_write_all(c->s, bytes, strlen(bytes), NULL));
  return 0;
}

#define KT_RESP_MAX_FIELDS 32
#define KT_RESP_BODY_MAX (1 << 20)

typedef struct kt_resp {
  int status;
  int nfields;
  char names[KT_RESP_MAX_FIELDS][64];
  char values[KT_RESP_MAX_FIELDS][256];
  char *body; /* malloc'd, NUL-terminated */
  size_t body_len;
  bool chunked;
} kt_resp_t;

static inline const char *kt_field(const kt_resp_t *r, const char *name) {
  for (int i = 0; i < r->nfields; i++)
    if (strcasecmp(r->names[i], name) == 0)
      return r->values[i];
  return NULL;
}

static inline void kt_resp_free(kt_resp_t *r) {
  free(r->body);
  r->body = NULL;
}

/* One CRLF-terminated line into buf (without the CRLF). 0, -EPIPE at end
 * of stream, or an error. */
static inline int kt_line(kt_conn_t *c, char *buf, size_t cap) {
  const void *start;
  ssize_t n = keel_bufstream_read_until(c->bs, "\r\n", 2, 16384, &start);
  if (n < 0)
    return (int)n;
  size_t len = (size_t)n - 2;
  if (len >= cap)
    len = cap - 1;
  memcpy(buf, start, len);
  buf[len] = '\0';
  keel_bufstream_consume(c->bs, (size_t)n);
  return 0;
}

static inline int kt_read_n(kt_conn_t *c, char *dst, size_t n) {
  return keel_read_exact(c->s, dst, n, NULL);
}

static inline int kt_body_chunked(kt_conn_t *c, kt_resp_t *r) {
  char line[256];
  for (;;) {
    int rc = kt_line(c, line, sizeof line);
    if (rc < 0)
      return rc;
    char *end;
    unsigned long size = strtoul(line, &end, 16);
    if (end == line || r->body_len + size > KT_RESP_BODY_MAX)
      return -EPROTO;
    if (size == 0)
      break;
    if ((rc = kt_read_n(c, r->body + r->body_len, size)) < 0)
      return rc;
    r->body_len += size;
    if ((rc = kt_line(c, line, sizeof line)) < 0 || line[0] != '\0')
      return rc < 0 ? rc : -EPROTO;
  }
  for (;;) { /* trailers, up to the empty line */
    int rc = kt_line(c, line, sizeof line);
    if (rc < 0)
      return rc;
    if (line[0] == '\0')
      return 0;
  }
}

static inline int kt_parse_field(kt_resp_t *r, const char *line) {
  const char *colon = strchr(line, ':');
  if (!colon || r->nfields == KT_RESP_MAX_FIELDS)
    return -EPROTO;
  snprintf(r->names[r->nfields], 64, "%.*s", (int)(colon - line), line);
  const char *v = colon + 1;
  while (*v == ' ')
    v++;
  snprintf(r->values[r->nfields], 256, "%s", v);
  r->nfields++;
  return 0;
}

/* Reads one response; head_only for the answer to HEAD. Returns 0 or a
 * negative errno (-EPIPE: end of stream before a status line). */
static inline int kt_response(kt_conn_t *c, kt_resp_t *r, bool head_only) {
  memset(r, 0, sizeof *r);
  char line[16384];
  int rc = kt_line(c, line, sizeof line);
  if (rc < 0)
    return rc;
  if (strncmp(line, "HTTP/1.1 ", 9) != 0 || !isdigit((unsigned char)line[9]))
    return -EPROTO;
  r->status = atoi(line + 9);
  while ((rc = kt_line(c, line, sizeof line)) == 0 && line[0] != '\0')
    if (kt_parse_field(r, line) < 0)
      return -EPROTO;
  if (rc < 0)
    return rc;
  r->body = malloc(KT_RESP_BODY_MAX + 1);
  if (!r->body)
    return -ENOMEM;
  const char *te = kt_field(r, "Transfer-Encoding"), *cl = kt_field(r, "Content-Length");
  bool bodyless = head_only || r->status < 200 || r->status == 204 || r->status == 304;
  if (!bodyless && te) {
    r->chunked = true;
    rc = kt_body_chunked(c, r);
  } else if (!bodyless && cl) {
    r->body_len = strtoul(cl, NULL, 10);
    rc = r->body_len > KT_RESP_BODY_MAX ? -EPROTO : kt_read_n(c, r->body, r->body_len);
  }
  r->body[r->body_len] = '\0';
  return rc;
}

/* True when the server closed: end of stream (or a reset) next. */
static inline bool kt_closed(kt_conn_t *c) {
  char b;
  ssize_t n = keel_read(c->s, &b, 1);
  return n == 0 || n == -ECONNRESET;
}

/* Sends req, reads one response, checks the status. */
#define KT_EXCHANGE(c, req, r, want)        \
  do {                                      \
    CHECK_RC(kt_send((c), (req)));          \
    CHECK_RC(kt_response((c), (r), false)); \
    CHECK_EQ((r)->status, (want));          \
  } while (0)

#endif
