/* keel_http_serve: one SO_REUSEPORT listener and accept loop per worker,
 * one task per connection, and the drain on cancellation. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http-internal.h"

typedef struct server {
  http_limits_t lim;
  const keel_http_server_opts_t *opts;
  char hostport[300];
  atomic_int listening;
  keel_addr_t bound; /* worker 0's listener address */
  http_worker_t *workers;
} server_t;

static int64_t ms_or(int64_t ms, int64_t dflt_ms) {
  if (ms < 0)
    return 0;
  return (ms ? ms : dflt_ms) * KEEL_NS_PER_MS;
}

void keel__http_limits(const keel_http_server_opts_t *o, http_limits_t *lim) {
  keel_http_server_opts_t zero = {0};
  if (!o)
    o = &zero;
  lim->handler = o->handler;
  lim->ctx = o->ctx;
  lim->max_url = o->max_url ? o->max_url : KEEL_HTTP_DEFAULT_MAX_URL;
  lim->max_header_bytes =
      o->max_header_bytes ? o->max_header_bytes : KEEL_HTTP_DEFAULT_MAX_HEADER_BYTES;
  lim->max_headers = o->max_headers ? o->max_headers : KEEL_HTTP_DEFAULT_MAX_HEADERS;
  lim->max_body = o->max_body ? o->max_body : KEEL_HTTP_DEFAULT_MAX_BODY;
  lim->header_timeout_ns = ms_or(o->header_timeout_ms, 10000);
  lim->body_timeout_ns = ms_or(o->body_timeout_ms, 30000);
  lim->keepalive_timeout_ns = ms_or(o->keepalive_timeout_ms, 60000);
  lim->request_timeout_ns = ms_or(o->request_timeout_ms, 60000);
  /* "No timeout" for the waits that take a deadline: the far future. */
  if (lim->header_timeout_ns == 0)
    lim->header_timeout_ns = INT64_MAX / 2;
  if (lim->body_timeout_ns == 0)
    lim->body_timeout_ns = INT64_MAX / 2;
  if (lim->keepalive_timeout_ns == 0)
    lim->keepalive_timeout_ns = INT64_MAX / 2;
  lim->max_requests = o->max_requests ? o->max_requests : 10000;
  lim->max_conns = o->max_conns ? o->max_conns : 10000;
  lim->server_name = o->server_name;
  lim->server_name_len = o->server_name ? strlen(o->server_name) : 0;
  lim->no_date = o->no_date;
}

static bool name_ok(const char *s) {
  for (; *s; s++)
    if (*s == '\r' || *s == '\n')
      return false;
  return true;
}

int keel_http_serve_stream(keel_stream_t *s, const keel_http_server_opts_t *opts) {
  if (!s || !opts || !opts->handler || (opts->server_name && !name_ok(opts->server_name))) {
    if (s)
      keel_close(s);
    return -EINVAL;
  }
  http_limits_t lim;
  keel__http_limits(opts, &lim);
  http_conn_t *c;
  int rc = keel__http_conn_open(&lim, NULL, s, NULL, &c);
  if (rc < 0)
    return rc;
  return keel__http_conn_start(c);
}

/* ---- Accepting ------------------------------------------------------------ */

static int conn_task(void *arg) {
  keel__http_conn_start(arg);
  return 0; /* a connection's failure is its peer's business, not the scope's */
}

static void start_conn(server_t *srv, http_worker_t *w, keel_tcp_t *tcp) {
  if (w->live >= srv->lim.max_conns) {
    keel_tcp_close(tcp); /* over the limit: closed at once, no response */
    return;
  }
  keel_stream_t *s = keel_tcp_stream(tcp);
  keel_tls_t *tls = NULL;
  if (srv->opts->tls) {
    /* The handshake runs in the connection's task, on its first read. */
    if (keel_tls_open(srv->opts->tls, s, NULL, &tls) < 0) {
      keel_tcp_close(tcp);
      return;
    }
    s = keel_tls_stream(tls);
  }
  http_conn_t *c;
  if (keel__http_conn_open(&srv->lim, w, s, tcp, &c) < 0)
    return; /* closed by the open */
  c->tls = tls;
  keel_spawn_opts_t so = {.name = "http-conn"};
  if (keel_spawn(w->conns, conn_task, c, &so) < 0)
    keel__http_conn_end(c);
}

static int accept_loop(server_t *srv, http_worker_t *w, keel_listener_t *l) {
  for (;;) {
    keel_tcp_t *tcp;
    int rc = keel_tcp_accept(l, &tcp);
    if (rc == 0) {
      start_conn(srv, w, tcp);
    } else if (rc == -ECANCELED || rc == -ETIMEDOUT) {
      return 0;
    } else if (keel_tcp_accept_error_transient(rc)) {
      if ((rc == -ENOBUFS || rc == -ENOMEM) && keel_sleep_ms(10) < 0)
        return 0;
    } else {
      keel_log(KEEL_LOG_ERROR, "http: accept on worker %d: %s", keel_worker_id(),
               keel_strerror(rc));
      return rc;
    }
  }
}

static void announce(server_t *srv, keel_listener_t *l) {
  if (atomic_fetch_add(&srv->listening, 1) + 1 != keel_worker_count() || !srv->opts->on_listen)
    return;
  keel_addr_t addr;
  if (keel_listener_addr(l, &addr) == 0)
    srv->opts->on_listen(&addr, srv->opts->ctx);
}

static void worker_free(http_worker_t *w) {
  for (int i = 0; i < w->narenas; i++)
    keel_arena_close(w->arenas[i]);
  w->narenas = 0;
}

static int accept_task(void *arg) {
  server_t *srv = arg;
  http_worker_t *w = &srv->workers[keel_worker_id()];
  keel_listener_t *l;
  int rc = keel_tcp_listen(srv->hostport, &srv->opts->listen, &l);
  if (rc < 0)
    return rc;
  keel_scope_opts_t co = {.name = "http-conns"};
  rc = keel_scope_open(&co, &w->conns);
  if (rc < 0) {
    keel_listener_close(l);
    return rc;
  }
  if (keel_worker_id() == 0)
    keel_listener_addr(l, &srv->bound);
  announce(srv, l);
  rc = accept_loop(srv, w, l);
  keel_listener_close(l);
  /* Idle connections wake and close; busy ones finish their request. */
  keel_scope_cancel(w->conns, KEEL_CANCEL_USER);
  keel_scope_join(w->conns);
  keel_scope_close(w->conns);
  w->conns = NULL;
  worker_free(w);
  return rc;
}

/* With port 0, worker 0 listens first and the others take its port. */
static int adopt_port(server_t *srv, keel_scope_t *scope) {
  while (atomic_load(&srv->listening) == 0) {
    if (keel_scope_live(scope) == 0 || keel_sleep_ms(1) < 0)
      return -1;
  }
  char text[KEEL_ADDRSTRLEN];
  keel_addr_format(&srv->bound, text, sizeof text);
  snprintf(srv->hostport, sizeof srv->hostport, "%s", text);
  return 0;
}

static bool port_zero(const char *hostport) {
  const char *colon = strrchr(hostport, ':');
  return colon && strcmp(colon + 1, "0") == 0;
}

static int spawn_accepts(server_t *srv, keel_scope_t *scope) {
  bool ephemeral = port_zero(srv->hostport);
  for (int i = 0; i < keel_worker_count(); i++) {
    if (i == 1 && ephemeral && adopt_port(srv, scope) < 0)
      return 0;
    char name[32];
    snprintf(name, sizeof name, "http-accept/%d", i);
    keel_spawn_opts_t so = {.name = name, .on_worker = KEEL_WORKER(i)};
    int rc = keel_spawn(scope, accept_task, srv, &so);
    if (rc < 0) {
      keel_scope_cancel(scope, KEEL_CANCEL_USER);
      return rc;
    }
  }
  return 0;
}

int keel_http_serve(const char *hostport, const keel_http_server_opts_t *opts) {
  if (!hostport || !opts || !opts->handler || strlen(hostport) >= 300 ||
      (opts->server_name && !name_ok(opts->server_name)))
    return -EINVAL;
  if (!keel_task_current())
    return -EINVAL;
  server_t *srv = calloc(1, sizeof *srv);
  http_worker_t *workers = calloc((size_t)keel_worker_count(), sizeof *workers);
  if (!srv || !workers) {
    free(srv);
    free(workers);
    return -ENOMEM;
  }
  keel__http_limits(opts, &srv->lim);
  srv->opts = opts;
  srv->workers = workers;
  snprintf(srv->hostport, sizeof srv->hostport, "%s", hostport);
  atomic_init(&srv->listening, 0);
  keel_scope_opts_t so = {.flags = KEEL_SCOPE_FAIL_FAST, .name = "http-serve"};
  keel_scope_t *scope;
  int rc = keel_scope_open(&so, &scope);
  if (rc == 0) {
    int spawned = spawn_accepts(srv, scope);
    int join = keel_scope_join(scope);
    keel_scope_close(scope);
    rc = spawned < 0 ? spawned : join;
    /* Cancellation (shutdown, the caller's scope) is the normal end. */
    if (rc == -ECANCELED && keel_cancelled() != KEEL_CANCEL_NONE)
      rc = 0;
  }
  free(workers);
  free(srv);
  return rc;
}

/* ---- Reason phrases --------------------------------------------------------- */

const char *keel_http_reason(int status) {
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 411:
    return "Length Required";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 417:
    return "Expectation Failed";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  default:
    return "";
  }
}
