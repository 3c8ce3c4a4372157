/* Responses: heads formatted by hand into the connection's output queue
 * (no printf per response), the Date field cached per worker and
 * formatted once a second, whole bodies queued when small so that the
 * responses of pipelined requests leave in one write, streamed bodies
 * written as they come (chunked, or with a declared length). */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "http-internal.h"

void keel__http_response_init(keel_http_response_t *res, keel_http_request_t *req) {
  res->req = req;
  res->status = 200;
  res->declared = -1;
}

/* ---- The output queue ----------------------------------------------------- */

static int out_reserve(http_conn_t *c, size_t n) {
  if (c->b->out_cap - c->b->out_len >= n)
    return 0;
  size_t cap = c->b->out_cap ? c->b->out_cap * 2 : 2048;
  while (cap - c->b->out_len < n)
    cap *= 2;
  char *p = keel_arena_alloc_aligned(c->arena, cap, 1);
  if (!p)
    return -ENOMEM;
  if (c->b->out_len)
    memcpy(p, c->b->out, c->b->out_len);
  c->b->out = p;
  c->b->out_cap = cap;
  return 0;
}

int keel__http_queue(http_conn_t *c, const void *p, size_t n) {
  int rc = out_reserve(c, n);
  if (rc < 0)
    return rc;
  memcpy(c->b->out + c->b->out_len, p, n);
  c->b->out_len += n;
  return 0;
}

/* Writes iov (the queue first, when there is one). A connection being
 * drained (its task cancelled) still gets its responses out, within the
 * runtime's drain deadline. */
static int write_out(http_conn_t *c, struct iovec *iov, int n, size_t *written) {
  if (c->broken)
    return -EPIPE;
  bool shield = keel_task_current() == c->task && keel_cancelled() != KEEL_CANCEL_NONE;
  if (shield)
    keel_shield_begin(0);
  size_t done = 0, queued = c->b->out_len; /* iov[0] when there is a queue */
  int rc = keel_writev_all(c->s, iov, n, &done);
  if (shield)
    keel_shield_end();
  c->b->writes++;
  if (written)
    *written = done;
  if (rc < 0 && (rc == -ECANCELED || rc == -ETIMEDOUT) && done < queued) {
    /* Cancelled (a handler's deadline, the client gone) before the queue
     * went out: the transport is as it was, and the rest of the queue
     * (whole answers, or the start of the one under way) stays for the
     * connection's task. */
    memmove(c->b->out, c->b->out + done, queued - done);
    c->b->out_len = queued - done;
    return rc;
  }
  c->b->out_len = 0;
  if (rc < 0)
    c->broken = true;
  return rc;
}

/* A write of the response under way, by its handler. Cancelled before the
 * answers queued ahead of this response went out, it leaves those for the
 * connection's task and this one ends there: unsent, or cut short if part
 * of its head went out. */
static int write_res(keel_http_response_t *res, struct iovec *iov, int n) {
  http_conn_t *c = res->req->c;
  size_t earlier = c->b->writes == res->writes_at ? res->queued_at : 0, done = 0;
  int rc = write_out(c, iov, n, &done);
  if (rc < 0 && !c->broken) {
    c->b->out_len = earlier > done ? earlier - done : 0;
    c->close = true;
    res->cut = res->finished = true; /* nothing more of it is queued */
  }
  return rc;
}

int keel__http_flush(http_conn_t *c) {
  if (!c->b || c->b->out_len == 0)
    return 0;
  struct iovec iov = {c->b->out, c->b->out_len};
  return write_out(c, &iov, 1, NULL);
}

/* The response under way cannot be completed: what is queued goes out
 * (the answers to the pipelined requests before it whole, this one cut
 * short), then nothing more is written. */
static void cut_short(http_conn_t *c) {
  if (!c->broken && keel__http_flush(c) < 0 && !c->broken) {
    /* The flush was cancelled (a handler's own cancellation) and kept the
     * queue: the connection's task sends it, then closes. */
    c->close = true;
    return;
  }
  c->broken = true;
}

/* ---- Heads ---------------------------------------------------------------- */

static void format_date(char *buf, size_t *len, time_t sec) {
  struct tm tm;
  gmtime_r(&sec, &tm);
  *len = strftime(buf, 64, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

/* The Date field, formatted when the second changes (per worker). */
static char *put_date(http_conn_t *c, char *p) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  http_worker_t *w = c->w;
  if (!w) {
    char buf[64];
    size_t n;
    format_date(buf, &n, ts.tv_sec);
    return keel__http_put(p, buf, n);
  }
  if (w->date_sec != ts.tv_sec) {
    format_date(w->date, &w->date_len, ts.tv_sec);
    w->date_sec = ts.tv_sec;
  }
  return keel__http_put(p, w->date, w->date_len);
}

static bool draining(http_conn_t *c) {
  return c->w && keel_scope_cancel_reason(c->w->conns) != KEEL_CANCEL_NONE;
}

static bool bodyless_status(int st) { return st < 200 || st == 204 || st == 304; }

/* Whether the connection must close after this response. */
static bool closing(keel_http_response_t *res) {
  keel_http_request_t *req = res->req;
  http_conn_t *c = req->c;
  if (res->close || c->close || c->broken || draining(c))
    return true;
  /* A body the handler left unread is drained only when it is small, and
   * never when the client waits for a 100 it will not get (it may not
   * send the body at all). */
  if (!req->body_done &&
      (req->content_length < 0 || (req->expect_continue && !req->sent_continue) ||
       (uint64_t)req->content_length - req->body_read > HTTP_DRAIN_BODY))
    return true;
  return false;
}

/* Queues the head. body_len: a whole body's length, or -1 for a streamed
 * one. */
static int emit_head(keel_http_response_t *res, int64_t body_len) {
  keel_http_request_t *req = res->req;
  http_conn_t *c = req->c;
  const char *reason = keel_http_reason(res->status);
  size_t rlen = strlen(reason);
  bool close = closing(res);
  int rc = out_reserve(c, 200 + rlen + c->lim->server_name_len + res->hdrs_len);
  if (rc < 0)
    return rc;
  res->queued_at = c->b->out_len;
  res->writes_at = c->b->writes;
  char *p = c->b->out + c->b->out_len;
  p = keel__http_put(p, "HTTP/1.1 ", 9);
  p = keel__http_put_u64(p, (uint64_t)res->status);
  *p++ = ' ';
  p = keel__http_put(p, reason, rlen);
  p = keel__http_put(p, "\r\n", 2);
  if (!c->lim->no_date && !res->user_date)
    p = put_date(c, p);
  if (c->lim->server_name_len) {
    p = keel__http_put(p, "Server: ", 8);
    p = keel__http_put(p, c->lim->server_name, c->lim->server_name_len);
    p = keel__http_put(p, "\r\n", 2);
  }
  if (!bodyless_status(res->status)) {
    if (body_len >= 0) {
      p = keel__http_put(p, "Content-Length: ", 16);
      p = keel__http_put_u64(p, (uint64_t)body_len);
      p = keel__http_put(p, "\r\n", 2);
    } else if (res->declared < 0 && req->version >= 11) {
      p = keel__http_put(p, "Transfer-Encoding: chunked\r\n", 28);
      res->chunked = true;
    } else if (res->declared < 0) {
      res->until_close = true; /* HTTP/1.0: the end of the body is the end of the connection */
      close = true;
    }
  }
  if (close)
    p = keel__http_put(p, "Connection: close\r\n", 19);
  else if (req->version == 10)
    p = keel__http_put(p, "Connection: keep-alive\r\n", 24);
  if (res->hdrs_len)
    p = keel__http_put(p, res->hdrs, res->hdrs_len);
  p = keel__http_put(p, "\r\n", 2);
  c->b->out_len = (size_t)(p - c->b->out);
  c->close = c->close || close;
  res->head_sent = true;
  res->no_body = req->head_method || bodyless_status(res->status);
  return 0;
}

/* ---- The response API ----------------------------------------------------- */

int keel_http_set_status(keel_http_response_t *res, int status) {
  if (res->head_sent)
    return -EALREADY;
  if (status < 100 || status > 999)
    return -EINVAL;
  res->status = status;
  return 0;
}

static bool field_value_ok(const char *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)v[i];
    if (ch == '\r' || ch == '\n' || ch == '\0')
      return false;
  }
  return true;
}

static bool field_name_ok(const char *n, size_t len) {
  if (len == 0)
    return false;
  for (size_t i = 0; i < len; i++)
    if (!keel__http_token_char((unsigned char)n[i]))
      return false;
  return true;
}

static int append_field(http_conn_t *c, char **buf, size_t *len, size_t *cap, const char *name,
                        size_t nl, const char *value, size_t vl) {
  size_t need = nl + vl + 4;
  if (*cap - *len < need) {
    size_t ncap = *cap ? *cap * 2 : 256;
    while (ncap - *len < need)
      ncap *= 2;
    char *p = keel_arena_alloc_aligned(c->arena, ncap, 1);
    if (!p)
      return -ENOMEM;
    if (*len)
      memcpy(p, *buf, *len);
    *buf = p;
    *cap = ncap;
  }
  char *p = *buf + *len;
  p = keel__http_put(p, name, nl);
  p = keel__http_put(p, ": ", 2);
  p = keel__http_put(p, value, vl);
  p = keel__http_put(p, "\r\n", 2);
  *len = (size_t)(p - *buf);
  return 0;
}

/* Takes note of the fields keel itself writes. Returns 1 to drop the
 * field, 0 to keep it, or -EINVAL. */
static int special_field(keel_http_response_t *res, const char *n, size_t nl, const char *v,
                         size_t vl) {
  if (keel__http_name_eq(n, nl, "transfer-encoding"))
    return -EINVAL;
  if (keel__http_name_eq(n, nl, "content-length")) {
    uint64_t x = 0;
    if (vl == 0 || vl > 18)
      return -EINVAL;
    for (size_t i = 0; i < vl; i++) {
      if (v[i] < '0' || v[i] > '9')
        return -EINVAL;
      x = x * 10 + (uint64_t)(v[i] - '0');
    }
    res->declared = (int64_t)x;
    return 0;
  }
  if (keel__http_name_eq(n, nl, "connection")) {
    if (keel__http_name_eq(v, vl, "close"))
      res->close = true;
    return 1;
  }
  if (keel__http_name_eq(n, nl, "date"))
    res->user_date = true;
  return 0;
}

int keel_http_add_headern(keel_http_response_t *res, const char *name, size_t name_len,
                          const char *value, size_t value_len) {
  if (res->head_sent)
    return -EALREADY;
  if (!field_name_ok(name, name_len) || !field_value_ok(value, value_len))
    return -EINVAL;
  int rc = special_field(res, name, name_len, value, value_len);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  return append_field(res->req->c, &res->hdrs, &res->hdrs_len, &res->hdrs_cap, name, name_len,
                      value, value_len);
}

int keel_http_add_header(keel_http_response_t *res, const char *name, const char *value) {
  return keel_http_add_headern(res, name, strlen(name), value, strlen(value));
}

int keel_http_add_trailer(keel_http_response_t *res, const char *name, const char *value) {
  size_t nl = strlen(name), vl = strlen(value);
  if (res->finished)
    return -EALREADY;
  if (!field_name_ok(name, nl) || !field_value_ok(value, vl))
    return -EINVAL;
  return append_field(res->req->c, &res->trailers, &res->trailers_len, &res->trailers_cap, name, nl,
                      value, vl);
}

int keel_http_send(keel_http_response_t *res, const void *body, size_t len) {
  http_conn_t *c = res->req->c;
  if (res->head_sent)
    return -EALREADY;
  if (res->declared >= 0 && (uint64_t)res->declared != len)
    return -EINVAL;
  res->declared = -1;
  int rc = emit_head(res, bodyless_status(res->status) ? -1 : (int64_t)len);
  if (rc < 0)
    return rc;
  res->finished = true;
  if (res->no_body || len == 0)
    return 0;
  res->sent = len;
  if (len <= HTTP_OUT_INLINE)
    return keel__http_queue(c, body, len);
  struct iovec iov[2] = {{c->b->out, c->b->out_len}, {(void *)body, len}};
  return write_res(res, iov, 2);
}

ssize_t keel_http_write(keel_http_response_t *res, const void *buf, size_t len) {
  http_conn_t *c = res->req->c;
  if (res->finished)
    return -EALREADY;
  if (!res->head_sent) {
    int rc = emit_head(res, -1);
    if (rc < 0)
      return rc;
  }
  if (res->no_body || len == 0)
    return (ssize_t)len;
  if (res->declared >= 0 && res->sent + len > (uint64_t)res->declared)
    return -EMSGSIZE;
  char size[24], *p = size;
  struct iovec iov[4];
  int n = 0;
  iov[n++] = (struct iovec){c->b->out, c->b->out_len};
  if (res->chunked) {
    p = keel__http_put(keel__http_put_hex(p, len), "\r\n", 2);
    iov[n++] = (struct iovec){size, (size_t)(p - size)};
  }
  iov[n++] = (struct iovec){(void *)buf, len};
  if (res->chunked)
    iov[n++] = (struct iovec){(void *)"\r\n", 2};
  int rc = write_res(res, iov, n);
  if (rc < 0)
    return rc;
  res->sent += len;
  return (ssize_t)len;
}

int keel_http_finish(keel_http_response_t *res) {
  http_conn_t *c = res->req->c;
  if (res->finished)
    return 0;
  if (!res->head_sent) {
    /* Nothing written: an empty body, chunked only to carry trailers. */
    bool chunk = res->trailers_len > 0 && res->req->version >= 11;
    int rc = emit_head(res, res->declared >= 0 || chunk ? -1 : 0);
    if (rc < 0)
      return rc;
  }
  res->finished = true;
  if (res->no_body)
    return 0;
  if (res->declared >= 0 && res->sent != (uint64_t)res->declared) {
    cut_short(c); /* the client must see the body cut short */
    return -EPROTO;
  }
  if (res->until_close)
    c->close = true;
  if (!res->chunked)
    return 0;
  int rc = keel__http_queue(c, "0\r\n", 3);
  if (rc == 0 && res->trailers_len)
    rc = keel__http_queue(c, res->trailers, res->trailers_len);
  if (rc == 0)
    rc = keel__http_queue(c, "\r\n", 2);
  return rc;
}

bool keel_http_responded(const keel_http_response_t *res) { return res->head_sent; }

void keel_http_close_after(keel_http_response_t *res) { res->close = true; }

/* A short text/plain response with Connection: close. */
void keel__http_error_response(http_conn_t *c, int status) {
  char head[256], *p = head;
  const char *reason = keel_http_reason(status);
  size_t rlen = strlen(reason);
  p = keel__http_put(p, "HTTP/1.1 ", 9);
  p = keel__http_put_u64(p, (uint64_t)status);
  *p++ = ' ';
  p = keel__http_put(p, reason, rlen);
  p = keel__http_put(p, "\r\n", 2);
  if (!c->lim->no_date)
    p = put_date(c, p);
  p = keel__http_put(p, "Content-Type: text/plain\r\nContent-Length: ", 42);
  p = keel__http_put_u64(p, rlen + 1);
  p = keel__http_put(p, "\r\nConnection: close\r\n\r\n", 23);
  c->close = true;
  bool head_method = c->b->req && c->b->req->head_method; /* no body for HEAD */
  if (keel__http_queue(c, head, (size_t)(p - head)) == 0 && !head_method &&
      keel__http_queue(c, reason, rlen) == 0)
    keel__http_queue(c, "\n", 1);
}

/* The status of a response the handler did not start, and the kind of
 * error it counts as (-1: none). */
static int unanswered_status(const keel_http_request_t *req, int *kind) {
  *kind = -1;
  if (req->body_error == -EMSGSIZE) {
    *kind = KEEL__HTTP_ERR_BODY_TOO_LARGE;
    return 413;
  }
  if (req->body_error == -ETIMEDOUT) {
    *kind = KEEL__HTTP_ERR_BODY_TIMEOUT;
    return 408;
  }
  if (req->body_error == -EPROTO) {
    *kind = KEEL__HTTP_ERR_INVALID_BODY;
    return req->c->b->err_status ? req->c->b->err_status : 400;
  }
  return req->handler_rc == -ETIMEDOUT ? 503 : 500;
}

int keel__http_response_end(keel_http_request_t *req) {
  keel_http_response_t *res = &req->res;
  http_conn_t *c = req->c;
  if (req->client_gone || res->cut) {
    /* No answer for it; the answers queued before it still go out, and
     * this one whatever of it was queued, cut short. */
    c->close = true;
    if (res->head_sent && !res->finished)
      cut_short(c);
    return 0;
  }
  if (!res->head_sent) {
    int kind, st = unanswered_status(req, &kind);
    static const char *const names[] = {"body_too_large", "body_timeout", "invalid_body"};
    if (kind >= 0)
      keel__http_count_error(kind, names[kind - KEEL__HTTP_ERR_BODY_TOO_LARGE]);
    keel__http_error_response(c, st);
    return st;
  }
  if (!res->finished) {
    if (req->handler_rc < 0)
      cut_short(c);
    else
      keel_http_finish(res);
  }
  return res->status;
}
