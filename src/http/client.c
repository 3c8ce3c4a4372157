/* Client calls: the request formatted once into the call's arena, sent on
 * a pooled connection (a second time, on a new one, when a reused
 * connection failed under an idempotent request before any byte of its
 * response), Expect: 100-continue, streamed bodies, and the accessors. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "client-internal.h"

/* ---- The request head ----------------------------------------------------- */

static bool field_value_ok(const char *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)v[i];
    if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
      return false;
  }
  return true;
}

static bool token_ok(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!keel__http_token_char((unsigned char)s[i]))
      return false;
  return n > 0;
}

static bool has_token(const char *v, size_t n, const char *tok) {
  size_t tl = strlen(tok);
  for (size_t i = 0; i + tl <= n; i++)
    if (strncasecmp(v + i, tok, tl) == 0 && (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
        (i + tl == n || v[i + tl] == ',' || v[i + tl] == ' '))
      return true;
  return false;
}

/* Checks the caller's fields and what they ask for. Returns the bytes they
 * take, or -EINVAL. */
static ssize_t scan_fields(keel_http_call_t *call, const keel_http_call_opts_t *req,
                           bool *has_host) {
  size_t total = 0;
  for (size_t i = 0; i < req->nheaders; i++) {
    const keel_http_header_t *h = &req->headers[i];
    if (!h->name || !h->value)
      return -EINVAL;
    size_t nl = h->name_len ? h->name_len : strlen(h->name);
    size_t vl = h->value_len ? h->value_len : strlen(h->value);
    if (!token_ok(h->name, nl) || !field_value_ok(h->value, vl) ||
        keel__http_name_eq(h->name, nl, "content-length") ||
        keel__http_name_eq(h->name, nl, "transfer-encoding"))
      return -EINVAL;
    if (keel__http_name_eq(h->name, nl, "host"))
      *has_host = true;
    if (keel__http_name_eq(h->name, nl, "connection") && has_token(h->value, vl, "close"))
      call->close_req = true;
    if (keel__http_name_eq(h->name, nl, "expect") && has_token(h->value, vl, "100-continue"))
      call->expect = true;
    total += nl + vl + 4;
  }
  return (ssize_t)total;
}

/* The framing fields: a whole body always has a length (POST and PUT
 * without one say 0); a streamed one its length or chunked. */
static char *put_framing(char *p, const keel_http_call_opts_t *req, const char *method) {
  if (req->body_fn && req->body_fn_length <= 0)
    return keel__http_put(p, "Transfer-Encoding: chunked\r\n", 28);
  uint64_t n = req->body_fn ? (uint64_t)req->body_fn_length : req->body_len;
  if (n == 0 && strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0 &&
      strcmp(method, "PATCH") != 0)
    return p;
  p = keel__http_put(p, "Content-Length: ", 16);
  p = keel__http_put_u64(p, n);
  return keel__http_put(p, "\r\n", 2);
}

static char *put_host(char *p, const hc_url_t *u) {
  p = keel__http_put(p, "Host: ", 6);
  if (u->ipv6)
    *p++ = '[';
  p = keel__http_put(p, u->host, u->host_len);
  if (u->ipv6)
    *p++ = ']';
  if (u->port != (u->tls ? 443 : 80)) {
    *p++ = ':';
    p = keel__http_put_u64(p, u->port);
  }
  return keel__http_put(p, "\r\n", 2);
}

static int format_request(keel_http_call_t *call, const keel_http_call_opts_t *req,
                          const hc_url_t *u) {
  const char *method = req->method ? req->method : "GET";
  size_t ml = strlen(method);
  if (!token_ok(method, ml) || strcmp(method, "CONNECT") == 0 || (req->body && req->body_fn))
    return -EINVAL;
  bool has_host = false;
  ssize_t fields = scan_fields(call, req, &has_host);
  if (fields < 0)
    return (int)fields;
  bool slash = u->target_len == 0 || u->target[0] != '/';
  size_t cap = ml + u->target_len + 16 + (has_host ? 0 : u->host_len + 16) + (size_t)fields + 64;
  char *head = keel_arena_alloc_aligned(call->arena, cap, 1), *p = head;
  if (!head)
    return -ENOMEM;
  p = keel__http_put(p, method, ml);
  *p++ = ' ';
  if (slash)
    *p++ = '/';
  p = keel__http_put(p, u->target, u->target_len);
  p = keel__http_put(p, " HTTP/1.1\r\n", 11);
  if (!has_host)
    p = put_host(p, u);
  for (size_t i = 0; i < req->nheaders; i++) {
    const keel_http_header_t *h = &req->headers[i];
    p = keel__http_put(p, h->name, h->name_len ? h->name_len : strlen(h->name));
    p = keel__http_put(p, ": ", 2);
    p = keel__http_put(p, h->value, h->value_len ? h->value_len : strlen(h->value));
    p = keel__http_put(p, "\r\n", 2);
  }
  p = put_framing(p, req, method);
  p = keel__http_put(p, "\r\n", 2);
  call->req_head = head;
  call->req_head_len = (size_t)(p - head);
  static const char *const idempotent[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
  for (size_t i = 0; i < sizeof idempotent / sizeof idempotent[0]; i++)
    call->idempotent |= strcmp(method, idempotent[i]) == 0;
  call->head_method = strcmp(method, "HEAD") == 0;
  call->expect = call->expect && (req->body_len > 0 || req->body_fn);
  return 0;
}

/* ---- Sending -------------------------------------------------------------- */

/* "hex CRLF" before a chunk of n bytes. */
static size_t chunk_prefix(char *p, size_t n) {
  char *e = keel__http_put(keel__http_put_hex(p, n), "\r\n", 2);
  return (size_t)(e - p);
}

static int send_streamed(keel_http_call_t *call, const keel_http_call_opts_t *req, char *buf) {
  bool chunked = req->body_fn_length <= 0;
  uint64_t sent = 0;
  for (;;) {
    call->body_pulled = true;
    ssize_t n = req->body_fn(req->body_ctx, buf, HC_BUF_SIZE);
    if (n < 0)
      return (int)n;
    if (n == 0)
      break;
    if ((size_t)n > HC_BUF_SIZE || (!chunked && sent + (uint64_t)n > (uint64_t)req->body_fn_length))
      return -EINVAL;
    sent += (uint64_t)n;
    char prefix[24];
    struct iovec iov[3] = {{prefix, chunked ? chunk_prefix(prefix, (size_t)n) : 0},
                           {buf, (size_t)n},
                           {"\r\n", chunked ? 2 : 0}};
    int rc = keel_writev_all(call->conn->s, iov, 3, NULL);
    if (rc < 0)
      return rc;
  }
  if (!chunked)
    return sent == (uint64_t)req->body_fn_length ? 0 : -EINVAL;
  return keel_write_all(call->conn->s, "0\r\n\r\n", 5, NULL);
}

static int send_body(keel_http_call_t *call, const keel_http_call_opts_t *req) {
  if (!req->body_fn)
    return keel_write_all(call->conn->s, req->body, req->body_len, NULL);
  char *buf = keel__hc_buf_take(call->pool);
  if (!buf)
    return -ENOMEM;
  int rc = send_streamed(call, req, buf);
  keel__hc_buf_give(call->pool, buf);
  return rc;
}

/* Expect: 100-continue: the head has gone; the body follows a 100, or no
 * answer within expect_timeout; a final answer means it is not wanted
 * (the connection then closes: it owes the server a body). Returns 0 when
 * the final head was read, 1 to send the body, or a negative errno. */
static int await_continue(keel_http_call_t *call) {
  int64_t saved = keel_task_set_deadline(keel_now_ns() + call->pool->lim.expect_timeout_ns);
  int rc = keel__hc_read_head(call, true);
  keel_task_set_deadline(saved);
  if (rc == -ETIMEDOUT && keel_checkpoint() == 0)
    return 1; /* the server said nothing: send it anyway */
  if (rc == 0)
    call->no_keep = true;
  return rc;
}

/* Sends the request and reads the final response head. */
static int exchange(keel_http_call_t *call, const keel_http_call_opts_t *req) {
  bool whole = req->body_len > 0 && !call->expect;
  struct iovec iov[2] = {{call->req_head, call->req_head_len},
                         {(void *)req->body, whole ? req->body_len : 0}};
  int rc = keel_writev_all(call->conn->s, iov, 2, NULL);
  if (rc == 0 && call->expect) {
    rc = await_continue(call);
    if (rc <= 0)
      return rc;
    rc = 0;
  }
  if (rc == 0 && !whole && (req->body_fn || call->expect))
    rc = send_body(call, req);
  if (rc == -EPIPE || rc == -ECONNRESET) {
    /* The server may have answered before it stopped reading (a 413). */
    call->no_keep = true;
    int head_rc = keel__hc_read_head(call, false);
    return head_rc == 0 || call->got_bytes ? head_rc : rc;
  }
  return rc < 0 ? rc : keel__hc_read_head(call, false);
}

/* ---- Calls ---------------------------------------------------------------- */

void keel__hc_call_release(keel_http_call_t *call, bool keep) {
  if (call->conn) {
    int64_t idle = call->pool->lim.idle_timeout_ns;
    if (call->keepalive_ns >= 0 && call->keepalive_ns < idle)
      idle = call->keepalive_ns;
    keel__hc_conn_put(call->conn, keep, idle);
    call->conn = NULL;
  }
  if (call->origin) {
    keel_sem_release(&call->origin->permits, 1);
    keel__hc_origin_put(call->origin);
    call->origin = NULL;
  }
}

/* Fresh state for a response on the call's connection. */
static void response_reset(keel_http_call_t *call) {
  llhttp_init(&call->parser, HTTP_RESPONSE, &keel__hc_settings);
  call->parser.data = call;
  call->head_len = 0;
  call->status = call->version = 0;
  call->reason = "";
  call->headers = NULL;
  call->nheaders = 0;
  call->keepalive_ns = -1;
  call->informational = 0;
  call->trailer_bytes = 0;
  call->got_bytes = call->head_done = call->msg_done = call->body_until_eof = false;
  call->no_keep = false;
}

/* A request that may go again: it failed on a reused connection before any
 * byte of its response, is idempotent, and its body can be sent again. */
static bool retryable(const keel_http_call_t *call, int rc) {
  return call->reused && !call->retried && call->idempotent && !call->got_bytes &&
         !call->body_pulled && !call->pool->lim.no_retry &&
         (rc == -ECONNRESET || rc == -EPIPE || rc == -ECONNABORTED);
}

static int attempt(keel_http_call_t *call, const keel_http_call_opts_t *req, bool fresh) {
  int rc =
      keel__hc_conn_get(call->origin, fresh, &call->conn, &call->reused, req->why, req->why_len);
  if (rc < 0)
    return rc;
  call->conn->uses++;
  response_reset(call);
  rc = exchange(call, req);
  /* A TLS failure after the handshake (TLS 1.3: the server refuses the
   * client's certificate once the client is done) has its reason too. */
  if (rc < 0 && req->why && req->why_len && call->conn && call->conn->tls &&
      keel_tls_reason(call->conn->tls)[0])
    snprintf(req->why, req->why_len, "%s", keel_tls_reason(call->conn->tls));
  return rc;
}

/* Takes a permit of the origin (waiting for one under the deadline) and
 * runs the request, twice at most. */
static int run(keel_http_call_t *call, const keel_http_call_opts_t *req, const hc_url_t *url) {
  hc_origin_t *o;
  int rc = keel__hc_origin_get(call->pool, url, &o);
  if (rc < 0)
    return rc;
  rc = keel_sem_acquire(&o->permits, 1);
  if (rc < 0) {
    keel__hc_origin_put(o);
    return rc;
  }
  call->origin = o;
  rc = attempt(call, req, false);
  if (rc < 0 && retryable(call, rc)) {
    keel__hc_conn_put(call->conn, false, 0);
    call->conn = NULL;
    call->retried = true;
    rc = attempt(call, req, true);
  }
  if (rc == 0 && call->msg_done)
    keel__hc_call_release(call, keel__hc_reusable(call));
  return rc;
}

static void call_free(keel_http_call_t *call) {
  hc_pool_t *pool = call->pool;
  keel__hc_call_release(call, false);
  keel__hc_arena_give(pool, call->arena); /* the call lives in it */
  keel__hc_pool_call_done(pool);
}

int keel_http_call_open(keel_http_client_t *client, const keel_http_call_opts_t *req,
                        keel_http_call_t **out) {
  *out = NULL;
  if (!req || !req->url || !keel_task_current())
    return -EINVAL;
  hc_url_t url;
  int rc = keel__hc_url_parse(req->url, &url);
  if (rc < 0)
    return rc;
  hc_pool_t *pool = keel__hc_pool_get(client);
  keel_arena_t *arena = pool ? keel__hc_arena_take(pool) : NULL;
  keel_http_call_t *call = arena ? keel_arena_alloc(arena, sizeof *call) : NULL;
  if (!call) {
    if (arena)
      keel__hc_arena_give(pool, arena);
    return -ENOMEM;
  }
  memset(call, 0, sizeof *call);
  call->pool = pool;
  call->arena = arena;
  pool->calls++;
  rc = format_request(call, req, &url);
  if (rc == 0)
    rc = run(call, req, &url);
  if (rc < 0) {
    call_free(call);
    return rc;
  }
  *out = call;
  return 0;
}

int keel_http_fetch(keel_http_client_t *client, const keel_http_call_opts_t *req,
                    keel_http_call_t **out) {
  int rc = keel_http_call_open(client, req, out);
  if (rc < 0)
    return rc;
  const void *data;
  size_t len;
  rc = keel_http_call_body(*out, &data, &len);
  if (rc < 0) {
    keel_http_call_close(*out);
    *out = NULL;
  }
  return rc;
}

int keel_http_call_close(keel_http_call_t *call) {
  if (!call)
    return 0;
  /* A body left unread: the connection is kept only if the rest of it is
   * here already. */
  if (call->conn && !call->err && !call->msg_done && keel__hc_finish_buffered(call))
    keel__hc_call_release(call, keel__hc_reusable(call));
  call_free(call);
  return 0;
}

/* ---- Accessors ------------------------------------------------------------ */

int keel_http_call_status(const keel_http_call_t *call) { return call->status; }
int keel_http_call_version(const keel_http_call_t *call) { return call->version; }
const char *keel_http_call_reason(const keel_http_call_t *call) { return call->reason; }
size_t keel_http_call_header_count(const keel_http_call_t *call) { return call->nheaders; }
int64_t keel_http_call_content_length(const keel_http_call_t *call) { return call->content_length; }
bool keel_http_call_reused(const keel_http_call_t *call) { return call->reused; }
bool keel_http_call_retried(const keel_http_call_t *call) { return call->retried; }
keel_arena_t *keel_http_call_arena(keel_http_call_t *call) { return call->arena; }

const keel_http_header_t *keel_http_call_header_at(const keel_http_call_t *call, size_t i) {
  return i < call->nheaders ? &call->headers[i] : NULL;
}

const char *keel_http_call_header(const keel_http_call_t *call, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < call->nheaders; i++) {
    const keel_http_header_t *h = &call->headers[i];
    if (h->name_len == n && strncasecmp(h->name, name, n) == 0)
      return h->value;
  }
  return NULL;
}
