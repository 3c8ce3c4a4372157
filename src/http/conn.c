/* Server connections: one task per connection reads request heads, runs
 * each request's handler in a scope of its own, and queues the responses
 * so that those of pipelined requests leave in one write.
 *
 * Reading: llhttp (strict mode) runs over the bytes of the connection's
 * buffered stream; it pauses at the end of a head that a body follows and
 * at the end of every message, so the connection never parses past the
 * request being served. The head stays in the buffer until it is complete,
 * then request.c reads a copy of it in the arena. Body bytes are decoded by
 * llhttp straight into the caller's buffer of keel_http_read: llhttp is
 * never given more bytes than the caller has room for, and a body it
 * decodes is never longer than its input. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http-internal.h"
#include "tcp-pool-internal.h"
#include "worker.h"

/* ---- Arenas ------------------------------------------------------------- */

static void arena_put(http_conn_t *c);

/* An arena for a batch of requests, with the batch's state in it. */
static int arena_get(http_conn_t *c) {
  if (c->arena)
    return 0;
  if (c->w && c->w->narenas > 0) {
    c->arena = c->w->arenas[--c->w->narenas];
  } else {
    keel_arena_opts_t ao = {.chunk_size = HTTP_ARENA_CHUNK};
    int rc = keel_arena_open(&ao, &c->arena);
    if (rc < 0)
      return rc;
  }
  c->b = keel_arena_alloc(c->arena, sizeof *c->b);
  if (!c->b) {
    arena_put(c);
    return -ENOMEM;
  }
  memset(c->b, 0, sizeof *c->b);
  llhttp_init(&c->b->parser, HTTP_REQUEST, &keel__http_settings);
  c->b->parser.data = c;
  return 0;
}

/* Gives the arena back: everything in it (requests, queued output) is
 * done with. */
static void arena_put(http_conn_t *c) {
  if (!c->arena)
    return;
  keel_arena_reset(c->arena);
  if (c->w && c->w->narenas < HTTP_ARENA_CACHE)
    c->w->arenas[c->w->narenas++] = c->arena;
  else
    keel_arena_close(c->arena);
  c->arena = NULL;
  c->b = NULL;
}

/* ---- Heads ---------------------------------------------------------------- */

static int new_request(http_conn_t *c) {
  if (arena_get(c) < 0)
    return -ENOMEM;
  keel_http_request_t *req = keel_arena_alloc(c->arena, sizeof *req);
  if (!req)
    return -ENOMEM;
  memset(req, 0, sizeof *req);
  req->c = c;
  keel__http_response_init(&req->res, req);
  c->b->req = req;
  c->b->url_len = 0;
  c->b->err_status = 0;
  c->b->in_trailers = false;
  return 0;
}

/* Whether the token before the first space is a valid method keel does
 * not know (501) rather than garbage (400). */
static int method_status(const char *p, size_t n) {
  size_t i = 0;
  while (i < n && keel__http_token_char((unsigned char)p[i]))
    i++;
  return i > 0 && i < n && p[i] == ' ' ? 501 : 400;
}

/* "HTTP/d.d" with digits keel does not speak is 505 (llhttp refuses
 * HTTP/1.2 as it refuses HTTP/2.0; RFC 9112 §2.3 would let a server answer
 * a later 1.x as 1.1, but 505 is the honest answer for what keel cannot
 * know it speaks), anything else 400. */
static int version_status(const char *p, size_t n) {
  const char *v = memmem(p, n, " HTTP/", 6);
  if (v && (size_t)(p + n - v) >= 11 && isdigit((unsigned char)v[6]) && v[7] == '.' &&
      isdigit((unsigned char)v[8]) && v[9] == '\r' && v[10] == '\n' &&
      !(v[6] == '1' && (v[8] == '0' || v[8] == '1')))
    return 505;
  return 400;
}

static int error_status(http_conn_t *c, llhttp_errno_t err, const char *data, size_t n) {
  if (err == HPE_USER && c->b->err_status)
    return c->b->err_status;
  if (err == HPE_INVALID_METHOD)
    return method_status(data, n);
  if (err == HPE_INVALID_VERSION)
    return version_status(data, n);
  return 400;
}

static int head_fail(http_conn_t *c, int status, int kind, const char *name) {
  keel__http_count_error(kind, name);
  keel__http_error_response(c, status);
  c->linger = true;
  return -1;
}

/* The head is complete: the first head_len buffered bytes. */
static int head_done(http_conn_t *c, const char *data, size_t head_len, llhttp_errno_t err) {
  keel_http_request_t *req = c->b->req;
  /* Paused at the end of the message when no body follows. */
  bool body = (c->b->parser.flags & F_CHUNKED) ||
              ((c->b->parser.flags & F_CONTENT_LENGTH) && c->b->parser.content_length > 0);
  if (!llhttp_should_keep_alive(&c->b->parser))
    req->res.close = true;
  int st = keel__http_request_parse(c, data, head_len);
  keel_bufstream_consume(c->bs, head_len);
  if (err == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&c->b->parser);
    req->res.close = true; /* no upgrade taken: the connection ends here */
  } else {
    llhttp_resume(&c->b->parser);
  }
  req->body_done = !body;
  if (st != 0)
    return head_fail(c, st, KEEL__HTTP_ERR_INVALID_HEAD, "invalid_head");
  return 1;
}

/* Gives llhttp the head's bytes from parsed to avail. Returns 0 when it
 * wants more, else what read_head returns. */
static int parse_head(http_conn_t *c, const char *data, size_t parsed, size_t avail) {
  c->b->base = data;
  llhttp_errno_t err = llhttp_execute(&c->b->parser, data + parsed, avail - parsed);
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    keel_task_set_deadline(KEEL_DEADLINE_NONE);
    size_t head_len = (size_t)(llhttp_get_error_pos(&c->b->parser) - data);
    if (head_len > c->lim->max_header_bytes)
      return head_fail(c, 431, KEEL__HTTP_ERR_HEAD_TOO_LARGE, "head_too_large");
    return head_done(c, data, head_len, err);
  }
  if (err != HPE_OK)
    return head_fail(c, error_status(c, err, data, avail),
                     err == HPE_USER ? KEEL__HTTP_ERR_FIELD : (int)err,
                     err == HPE_USER ? "invalid_field" : llhttp_errno_name(err));
  return avail > c->lim->max_header_bytes
             ? head_fail(c, 431, KEEL__HTTP_ERR_HEAD_TOO_LARGE, "head_too_large")
             : 0;
}

/* Waits for more of a head. A connection the server is draining still
 * has its request read when its bytes came before the drain (they wait in
 * the socket or in keel's buffer) or a head was begun: that request is in
 * flight, and is served, with Connection: close. */
static ssize_t fill_head(http_conn_t *c, size_t parsed) {
  ssize_t n = keel_bufstream_fill(c->bs);
  if (n != -ECANCELED || !c->w || keel_scope_cancel_reason(c->w->conns) == KEEL_CANCEL_NONE)
    return n;
  if (parsed == 0 && (!c->tcp || keel__tcp_readable_now(c->tcp) != 1))
    return n;
  keel_shield_begin(0); /* the runtime's drain deadline */
  n = keel_bufstream_fill(c->bs);
  keel_shield_end();
  return n;
}

/* Reads the next request head. Returns 1 with c->b->req ready, 0 when the
 * connection ended cleanly (end of stream, idle timeout, shutdown between
 * requests), or -1 after queueing an error response. */
static int read_head(http_conn_t *c) {
  keel__task_doing("http: reading a request head");
  if (new_request(c) < 0)
    return -1;
  size_t parsed = 0;
  /* The head's time runs from its first byte; the first request's from
   * the connection's start (set by keel__http_conn_start), so that a
   * client that never sends a byte is timed out too. */
  bool timed = c->requests == 0 || keel_bufstream_buffered(c->bs) > 0;
  if (timed && c->requests > 0)
    keel_task_set_deadline(c->now + c->lim->header_timeout_ns);
  for (;;) {
    size_t avail;
    const char *data = keel_bufstream_peek(c->bs, &avail);
    if (avail > parsed) {
      int rc = parse_head(c, data, parsed, avail);
      if (rc != 0)
        return rc;
      parsed = avail;
    }
    ssize_t n = fill_head(c, parsed);
    c->now = keel_now_ns();
    if (n > 0 && !timed) {
      timed = true;
      keel_task_set_deadline(c->now + c->lim->header_timeout_ns);
    }
    if (n > 0)
      continue;
    keel_task_set_deadline(KEEL_DEADLINE_NONE);
    if (n == -EMSGSIZE)
      return head_fail(c, 431, KEEL__HTTP_ERR_HEAD_TOO_LARGE, "head_too_large");
    if (n == -ETIMEDOUT && parsed > 0)
      return head_fail(c, 408, KEEL__HTTP_ERR_HEAD_TIMEOUT, "head_timeout");
    c->close = true;
    return 0;
  }
}

/* ---- Running handlers ----------------------------------------------------- */

static int handler_task(void *arg) {
  keel_http_request_t *req = arg;
  req->handler_rc = req->c->lim->handler(req, &req->res, req->c->lim->ctx);
  if (req->watch)
    keel_scope_cancel(req->watch, KEEL_CANCEL_USER);
  req->handler_done = true;
  if (req->up_done)
    keel_notify_one(req->up_done);
  return 0;
}

/* Waits for the end of stream or a reset while the handler runs: either
 * one cancels the handler's scope. Bytes of a next request end the watch
 * (they stay buffered). The read may complete in the same loop iteration
 * as the handler ends and run only after the connection's task has
 * closed the handler's scope (end_watch's cancel does not take a result
 * back): then there is no handler left to cancel. */
static int watch_task(void *arg) {
  keel_http_request_t *req = arg;
  ssize_t n = keel_bufstream_fill(req->c->bs);
  if ((n == 0 || n == -ECONNRESET || n == -EPIPE) && !req->handler_done) {
    req->client_gone = true;
    keel_scope_cancel(req->scope, KEEL_CANCEL_USER);
  }
  return 0;
}

static void start_watch(http_conn_t *c, keel_http_request_t *req) {
  keel_scope_opts_t so = {.name = "http-watch"};
  if (keel_scope_open(&so, &req->watch) < 0) {
    req->watch = NULL;
    return;
  }
  keel_spawn_opts_t sp = {.name = "http-watch", .stack_size = 16384};
  if (keel_spawn(req->watch, watch_task, req, &sp) < 0) {
    keel_scope_close(req->watch);
    req->watch = NULL;
  }
  (void)c;
}

static void end_watch(keel_http_request_t *req) {
  if (!req->watch)
    return;
  keel_scope_cancel(req->watch, KEEL_CANCEL_USER);
  keel_scope_join(req->watch);
  keel_scope_close(req->watch);
  req->watch = NULL;
}

/* Waits for the handler. A drain that comes meanwhile reaches a handler
 * that took the connection for another protocol through its drain hook
 * (the handler's scope is shielded, so nothing else would tell it); other
 * handlers finish as they are, and the join below waits for them. */
static void await_handler(http_conn_t *c, keel_http_request_t *req) {
  keel_notify_t done;
  keel_notify_init(&done);
  req->up_done = &done;
  while (!req->handler_done) {
    if (keel_notify_wait(&done) == 0)
      continue;
    if (req->upgraded && req->up_drain) {
      keel_shield_begin(0);
      int ms = req->up_drain(req->up_arg);
      keel_shield_end();
      /* The handler's scope is shielded from the drain: bound it now. */
      if (ms > 0)
        keel_scope_set_deadline(req->scope, keel_now_ns() + (int64_t)ms * KEEL_NS_PER_MS);
    }
    break;
  }
  req->up_done = NULL;
  keel_notify_destroy(&done);
  (void)c;
}

static void serve_request(http_conn_t *c) {
  keel_http_request_t *req = c->b->req;
  if (++c->requests >= c->lim->max_requests)
    req->res.close = true;
  keel_scope_opts_t so = {.flags = KEEL_SCOPE_SHIELD, .name = "http-request"};
  if (c->lim->request_timeout_ns > 0)
    so.deadline_ns = c->now + c->lim->request_timeout_ns;
  if (keel_scope_open(&so, &req->scope) < 0) {
    keel__http_error_response(c, 503);
    return;
  }
  keel_spawn_opts_t sp = {.name = "http-handler"};
  keel__task_doing("http: waiting for the handler");
  if (keel_spawn(req->scope, handler_task, req, &sp) < 0) {
    req->handler_rc = -ENOMEM;
  } else {
    keel_yield();
    /* Still running: it waits on something. Watch the client meanwhile. */
    if (keel_scope_live(req->scope) > 0 && !req->upgraded && req->body_done && !c->close &&
        keel_bufstream_buffered(c->bs) == 0)
      start_watch(c, req);
    if (keel_scope_live(req->scope) > 0)
      await_handler(c, req);
    keel_scope_join(req->scope);
  }
  keel_scope_close(req->scope);
  req->scope = NULL;
  keel__task_doing("http: sending the response");
  end_watch(req);
  if (req->upgraded) {
    keel__http_count_request(c, req, 101);
    c->close = true;
    return;
  }
  keel__http_count_request(c, req, keel__http_response_end(req));
  if (!req->body_done && !c->close)
    keel__http_drain_body(c, req);
}

/* ---- The connection's life ------------------------------------------------ */

/* Sends what the connection still has to say, then frees it. After an
 * error response, it stops sending and reads (and drops) what the client
 * still sends for a moment, so that closing does not reset the connection
 * under the response before the client read it. */
int keel__http_conn_end(http_conn_t *c) {
  bool queued = c->b && c->b->out_len > 0;
  if (queued && keel__http_flush(c) == 0 && c->linger) {
    keel_shield_begin(keel_now_ns() + 1000 * KEEL_NS_PER_MS);
    keel_stream_shutdown(c->s, SHUT_WR);
    for (size_t dropped = 0; dropped < HTTP_DRAIN_BODY;) {
      ssize_t n = keel_bufstream_fill(c->bs);
      if (n <= 0 && n != -EMSGSIZE)
        break;
      size_t have = keel_bufstream_buffered(c->bs);
      keel_bufstream_consume(c->bs, have);
      dropped += have;
    }
    keel_shield_end();
  }
  arena_put(c);
  if (c->bs)
    keel_close(keel_bufstream_stream(c->bs));
  if (c->w && !c->handed)
    c->w->live--;
  free(c);
  return 0;
}

static int conn_resume(void *arg) { return keel__http_conn_run(arg); }

/* Between requests: give the stack, the read buffer and the arena back
 * until the next bytes, the keep-alive deadline or shutdown. */
static int conn_idle(http_conn_t *c) {
  arena_put(c);
  keel__task_doing("http: idle between requests");
  keel_task_set_deadline(keel_now_ns() + c->lim->keepalive_timeout_ns);
  /* Over TLS, only once the TLS layer holds nothing either; else the
   * next read waits on the stack. */
  if (c->tcp && (!c->tls || keel_tls_idle(c->tls) == 0))
    return keel_tcp_park(c->tcp, conn_resume, c); /* returns only if it cannot park */
  return 0;
}

int keel__http_conn_start(http_conn_t *c) {
  c->task = keel_task_current();
  c->now = keel_now_ns();
  keel_task_set_deadline(c->now + c->lim->header_timeout_ns);
  keel__task_doing("http: waiting for the first request");
  if (c->tcp)
    keel_tcp_park(c->tcp, conn_resume, c); /* returns only if it cannot park */
  return keel__http_conn_run(c);
}

int keel__http_conn_run(http_conn_t *c) {
  for (;;) {
    if (read_head(c) <= 0)
      break;
    serve_request(c);
    keel_http_request_t *req = c->b->req;
    if (req->upgraded) {
      keel_task_fn run = req->up_run;
      void *arg = req->up_arg;
      keel__http_conn_end(c);
      return run ? run(arg) : 0;
    }
    if (c->broken || c->close)
      break;
    size_t buffered = keel_bufstream_buffered(c->bs);
    if ((buffered == 0 || keel_arena_used(c->arena) > HTTP_ARENA_FLUSH) && keel__http_flush(c) < 0)
      break;
    if (buffered == 0) {
      int rc = conn_idle(c);
      if (rc < 0 && rc != -EBUSY)
        break;
    } else if (c->b->out_len == 0 && keel_arena_used(c->arena) > HTTP_ARENA_FLUSH) {
      arena_put(c);
    }
  }
  return keel__http_conn_end(c);
}

int keel__http_conn_open(const http_limits_t *lim, http_worker_t *w, keel_stream_t *s,
                         keel_tcp_t *tcp, http_conn_t **out) {
  http_conn_t *c = calloc(1, sizeof *c);
  if (!c) {
    keel_close(s);
    return -ENOMEM;
  }
  keel_bufstream_opts_t bo = {.capacity = KEEL_BUFSTREAM_DEFAULT_CAPACITY};
  if (lim->max_header_bytes + 1024 > bo.capacity)
    bo.capacity = lim->max_header_bytes + 1024;
  int rc = keel_bufstream_open(s, &bo, &c->bs);
  if (rc < 0) {
    free(c);
    keel_close(s);
    return rc;
  }
  c->lim = lim;
  c->w = w;
  c->s = s;
  c->tcp = tcp;
  c->task = keel_task_current();
  if (w)
    w->live++;
  *out = c;
  return 0;
}

/* ---- Upgrades ------------------------------------------------------------- */

int keel__http_upgrade(keel_http_request_t *req, const void *head, size_t head_len,
                       http_upgrade_t *up) {
  http_conn_t *c = req->c;
  if (req->upgraded || keel_http_responded(&req->res))
    return -EALREADY;
  if (!req->body_done)
    return -EBUSY;
  if (c->broken || (req->scope && keel_scope_cancel_reason(req->scope) != KEEL_CANCEL_NONE))
    return -EPIPE;
  /* The watch reads the connection: stop it before taking the stream. */
  if (req->watch) {
    keel_scope_cancel(req->watch, KEEL_CANCEL_USER);
    keel_shield_begin(keel_now_ns() + 1000 * KEEL_NS_PER_MS);
    while (keel_scope_live(req->watch) > 0 && keel_yield() == 0)
      ;
    keel_shield_end();
    if (keel_scope_live(req->watch) > 0 || req->client_gone)
      return -EPIPE;
  }
  /* From here the connection's task starts no watch and sends nothing
   * more for this request, whatever happens to the write. */
  req->upgraded = true;
  req->res.head_sent = req->res.finished = true;
  int rc = keel__http_queue(c, head, head_len);
  if (rc == 0)
    rc = keel__http_flush(c);
  if (rc < 0) {
    c->broken = true;
    req->up_run = NULL;
    return rc;
  }
  c->b->out_len = 0;
  if (req->scope)
    keel_scope_set_deadline(req->scope, KEEL_DEADLINE_NONE);
  up->bs = c->bs;
  up->tcp = c->tcp;
  up->tls = c->tls;
  up->draining = c->w && keel_scope_cancel_reason(c->w->conns) != KEEL_CANCEL_NONE;
  up->live = c->w ? &c->w->live : NULL;
  c->handed = c->w != NULL;
  c->bs = NULL;
  return 0;
}

void keel__http_upgrade_set(keel_http_request_t *req, keel_task_fn run, keel_task_fn drain,
                            void *arg) {
  req->up_run = run;
  req->up_drain = drain;
  req->up_arg = arg;
}
