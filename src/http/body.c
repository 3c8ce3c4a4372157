/* Request bodies: keel_http_read gives llhttp no more bytes than the
 * caller has room for (a decoded body is never longer than its input), so
 * llhttp's on_body copies straight into the caller's buffer; the first read
 * sends 100 Continue when the client waits for it; a stalled body times
 * out; what the handler leaves of a small body is drained. */
#include <errno.h>
#include <string.h>

#include "http-internal.h"

/* ---- Bodies --------------------------------------------------------------- */

/* The body cannot be read to its end: the connection closes after the
 * response (an error status, when the client can still read one). */
static ssize_t body_error(keel_http_request_t *req, int err) {
  req->body_error = err;
  req->c->close = true;
  if (err == -EMSGSIZE || err == -EPROTO)
    req->c->linger = true;
  return err;
}

/* Waits for more body bytes under the body's idle deadline. */
static ssize_t body_fill(http_conn_t *c, keel_http_request_t *req) {
  int64_t saved = keel_task_set_deadline(keel_now_ns() + c->lim->body_timeout_ns);
  ssize_t n = keel_bufstream_fill(c->bs);
  keel_task_set_deadline(saved);
  if (n > 0)
    return n;
  if (n == 0)
    return body_error(req, -EPIPE);
  return body_error(req, (int)n);
}

static int send_continue(keel_http_request_t *req) {
  static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
  http_conn_t *c = req->c;
  req->sent_continue = true;
  if (req->res.head_sent)
    return 0;
  int rc = keel__http_queue(c, cont, sizeof cont - 1);
  return rc < 0 ? rc : keel__http_flush(c);
}

/* Gives llhttp what the caller has room for. Returns 0 to go on. */
static int body_step(http_conn_t *c, keel_http_request_t *req) {
  size_t avail;
  const char *data = keel_bufstream_peek(c->bs, &avail);
  size_t feed = avail < req->room - req->got ? avail : req->room - req->got;
  c->b->base = data;
  llhttp_errno_t err = llhttp_execute(&c->b->parser, data, feed);
  if (err == HPE_OK) {
    keel__http_keep_tail(c->b, data, feed);
    keel_bufstream_consume(c->bs, feed);
    return 0;
  }
  if (err == HPE_PAUSED) {
    const char *end = llhttp_get_error_pos(&c->b->parser);
    if (req->content_length < 0 &&
        !keel__http_crlf_before(c->b, end)) { /* the last line of a chunked body */
      c->b->err_status = 400;
      return (int)body_error(req, -EPROTO);
    }
    keel_bufstream_consume(c->bs, (size_t)(end - data));
    llhttp_resume(&c->b->parser);
    req->body_done = true;
    return 0;
  }
  if (c->b->err_status == 0)
    c->b->err_status = 400;
  return (int)body_error(req, c->b->err_status == 413 ? -EMSGSIZE : -EPROTO);
}

ssize_t keel_http_read(keel_http_request_t *req, void *buf, size_t len) {
  http_conn_t *c = req->c;
  if (len == 0)
    return -EINVAL;
  if (req->body_error)
    return req->body_error;
  if (req->body_done)
    return 0;
  if (req->expect_continue && !req->sent_continue) {
    int rc = send_continue(req);
    if (rc < 0)
      return body_error(req, rc);
  }
  req->dst = buf;
  req->room = len;
  req->got = 0;
  ssize_t rc = 0;
  while (rc == 0 && req->got == 0 && !req->body_done) {
    if (keel_bufstream_buffered(c->bs) == 0) {
      rc = body_fill(c, req);
      rc = rc > 0 ? 0 : rc;
    } else {
      rc = body_step(c, req);
    }
  }
  req->dst = NULL;
  return rc < 0 ? rc : (ssize_t)req->got;
}

int keel_http_body(keel_http_request_t *req, const void **data, size_t *len) {
  keel_arena_t *a = req->c->arena;
  size_t cap = req->content_length > 0 ? (size_t)req->content_length : 4096, n = 0;
  char *buf = keel_arena_alloc_aligned(a, cap + 1, 1);
  for (;;) {
    if (!buf)
      return -ENOMEM;
    if (n == cap) {
      char *bigger = keel_arena_alloc_aligned(a, cap * 2 + 1, 1);
      if (bigger)
        memcpy(bigger, buf, n);
      buf = bigger;
      cap *= 2;
      continue;
    }
    ssize_t got = keel_http_read(req, buf + n, cap - n);
    if (got < 0)
      return (int)got;
    if (got == 0)
      break;
    n += (size_t)got;
  }
  buf[n] = '\0';
  *data = buf;
  *len = n;
  return 0;
}

/* Reads and drops what the handler left of a small body, so the connection
 * can carry the next request. */
void keel__http_drain_body(http_conn_t *c, keel_http_request_t *req) {
  char sink[4096];
  size_t total = 0;
  while (!req->body_done && !c->close) {
    ssize_t n = keel_http_read(req, sink, sizeof sink);
    if (n <= 0 || (total += (size_t)n) > HTTP_DRAIN_BODY) {
      c->close = true;
      return;
    }
  }
}
