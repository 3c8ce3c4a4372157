/* Client responses: llhttp (strict mode) frames them; client-head.c reads
 * each head again, strictly, from a copy in the call's arena.
 *
 * The head's bytes are copied as llhttp takes them (the read buffer is
 * reused meanwhile: the copy, not the buffer, bounds the head by
 * max_header_bytes). llhttp pauses at the end of a head that a body
 * follows and at the end of every message, so it never parses past the
 * response being read. Body bytes are decoded by llhttp straight into the
 * reader's buffer: llhttp is never given more bytes than the reader has
 * room for, and a decoded body is never longer than its input. */
#include <errno.h>
#include <string.h>

#include "client-internal.h"

#define CALL_OF(p) ((keel_http_call_t *)(p)->data)

/* ---- llhttp callbacks ----------------------------------------------------- */

/* A body follows: pause so that the head is read first. No body: the
 * message ends here and on_message_complete pauses. A 304's or a HEAD
 * response's Content-Length describes another message: llhttp is told to
 * skip the body (1). */
static int on_headers_complete(llhttp_t *p) {
  keel_http_call_t *call = CALL_OF(p);
  call->head_done = true;
  if (keel__hc_bodyless(call, p->status_code))
    return 1;
  bool body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0) ||
              llhttp_message_needs_eof(p);
  return body ? HPE_PAUSED : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  keel_http_call_t *call = CALL_OF(p);
  if (call->discard)
    return 0;
  if (!call->dst || len > call->room - call->got)
    return -1;
  /* A body read straight into the reader's buffer is already in place. */
  if (at != call->dst + call->got)
    memcpy(call->dst + call->got, at, len);
  call->got += len;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  CALL_OF(p)->msg_done = true;
  return HPE_PAUSED;
}

/* Trailers (fields after the head): counted against max_header_bytes. */
static int on_trailer(llhttp_t *p, const char *at, size_t len) {
  keel_http_call_t *call = CALL_OF(p);
  (void)at;
  if (!call->head_done)
    return 0;
  call->trailer_bytes += len;
  return call->trailer_bytes > call->pool->lim.max_header_bytes ? -1 : 0;
}

static int on_chunk_header(llhttp_t *p) {
  CALL_OF(p)->ext_len = 0;
  return 0;
}

/* Chunk extensions are dropped, but bounded (CVE-2024-22019's family). */
static int on_ext(llhttp_t *p, const char *at, size_t len) {
  keel_http_call_t *call = CALL_OF(p);
  (void)at;
  if (call->ext_len + len > HTTP_MAX_CHUNK_EXT)
    return -1;
  call->ext_len = (uint16_t)(call->ext_len + len);
  return 0;
}

const llhttp_settings_t keel__hc_settings = {
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_header_field = on_trailer,
    .on_header_value = on_trailer,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_ext,
    .on_chunk_extension_value = on_ext,
};

/* ---- The connection's buffer ---------------------------------------------- */

static ssize_t fill(hc_conn_t *c) {
  if (c->head > 0) {
    memmove(c->buf, c->buf + c->head, c->len);
    c->head = 0;
  }
  if (c->len == HC_BUF_SIZE)
    return -EMSGSIZE;
  ssize_t n = keel_read(c->s, c->buf + c->len, HC_BUF_SIZE - c->len);
  if (n > 0)
    c->len += (size_t)n;
  return n;
}

static void consume(hc_conn_t *c, size_t n) {
  c->head += n;
  c->len -= n;
  if (c->len == 0)
    c->head = 0;
}

static int head_append(keel_http_call_t *call, const char *p, size_t n) {
  if (n == 0) /* nothing to keep (and maybe no head buffer yet) */
    return 0;
  size_t max = call->pool->lim.max_header_bytes;
  if (call->head_len + n > max)
    return -EMSGSIZE;
  if (call->head_len + n > call->head_cap) {
    size_t cap = call->head_cap ? call->head_cap * 2 : HC_HEAD_INITIAL;
    while (cap < call->head_len + n)
      cap *= 2;
    if (cap > max)
      cap = max;
    char *bigger = keel_arena_alloc_aligned(call->arena, cap + 1, 1);
    if (!bigger)
      return -ENOMEM;
    if (call->head_len)
      memcpy(bigger, call->head, call->head_len);
    call->head = bigger;
    call->head_cap = cap;
  }
  memcpy(call->head + call->head_len, p, n);
  call->head_len += n;
  return 0;
}

/* A head ended (paused): a final one, or a 1xx to skip. */
static int head_end(keel_http_call_t *call, bool stop_at_1xx) {
  int rc = keel__hc_head_parse(call);
  if (rc < 0)
    return rc;
  if (call->status >= 200)
    return 0;
  if (call->status == 101 || ++call->informational > HC_MAX_INFORMATIONAL)
    return -EPROTO; /* no upgrade was asked for */
  call->head_len = 0;
  call->head_done = call->msg_done = false;
  return stop_at_1xx ? 1 : 2;
}

/* Gives llhttp the buffered bytes of the head. 0: more are needed; 1: a
 * head ended (head_end's answer in *end_rc); or a negative errno. */
static int head_step(keel_http_call_t *call, bool stop_at_1xx, int *end_rc) {
  hc_conn_t *c = call->conn;
  const char *data = c->buf + c->head;
  llhttp_errno_t err = llhttp_execute(&call->parser, data, c->len);
  size_t used = err == HPE_OK ? c->len : (size_t)(llhttp_get_error_pos(&call->parser) - data);
  call->got_bytes = true;
  int rc = head_append(call, data, used);
  consume(c, used);
  if (rc < 0)
    return rc;
  if (err == HPE_OK)
    return 0;
  if (err != HPE_PAUSED)
    return -EPROTO; /* HPE_PAUSED_UPGRADE too: nothing was upgraded */
  llhttp_resume(&call->parser);
  *end_rc = head_end(call, stop_at_1xx);
  return 1;
}

int keel__hc_read_head(keel_http_call_t *call, bool stop_at_1xx) {
  for (;;) {
    hc_conn_t *c = call->conn;
    if (c->len > 0) {
      int end_rc = 0, rc = head_step(call, stop_at_1xx, &end_rc);
      if (rc < 0)
        return rc;
      if (rc == 1 && end_rc != 2)
        return end_rc;
      if (rc == 1)
        continue;
    }
    ssize_t n = fill(c);
    if (n == 0) /* the end before a byte of it: the server closed under us */
      return call->got_bytes ? -EPROTO : -ECONNRESET;
    if (n < 0)
      return (int)n;
  }
}

/* ---- Bodies --------------------------------------------------------------- */

bool keel__hc_reusable(keel_http_call_t *call) {
  return call->msg_done && !call->err && !call->body_until_eof && !call->close_req &&
         !call->no_keep && call->keepalive_ns != 0 && call->conn && call->conn->len == 0 &&
         llhttp_should_keep_alive(&call->parser);
}

/* The end of the body: the connection goes back now. */
static void body_end(keel_http_call_t *call) {
  if (call->conn)
    keel__hc_call_release(call, keel__hc_reusable(call));
}

static ssize_t body_fail(keel_http_call_t *call, int err) {
  call->err = err;
  keel__hc_call_release(call, false);
  return err;
}

/* The end of the connection: the end of a body that runs up to it, or a
 * body cut short. */
static int body_eof(keel_http_call_t *call) {
  if (!call->body_until_eof)
    return -EPIPE;
  llhttp_errno_t err = llhttp_finish(&call->parser);
  return (err == HPE_OK || err == HPE_PAUSED) && call->msg_done ? 0 : -EPROTO;
}

/* No byte buffered: reads more, straight into the reader's buffer when it
 * cannot hold more than what remains of a Content-Length body. */
static int body_read_more(keel_http_call_t *call) {
  hc_conn_t *c = call->conn;
  size_t room = call->room - call->got;
  uint64_t left = call->parser.content_length;
  if (call->content_length > 0 && room >= 1024 && left > 0) {
    size_t want = left < room ? (size_t)left : room;
    char *dst = call->dst + call->got;
    ssize_t n = keel_read(c->s, dst, want);
    if (n <= 0)
      return n == 0 ? body_eof(call) : (int)n;
    llhttp_errno_t err = llhttp_execute(&call->parser, dst, (size_t)n);
    if (err == HPE_PAUSED)
      llhttp_resume(&call->parser);
    return err == HPE_OK || err == HPE_PAUSED ? 0 : -EPROTO;
  }
  ssize_t n = fill(c);
  if (n == 0)
    return body_eof(call);
  return n < 0 ? (int)n : 0;
}

/* Keeps the last two of the n body bytes at data that llhttp took. */
static void keep_tail(keel_http_call_t *call, const char *data, size_t n) {
  if (n >= 2) {
    call->tail[0] = data[n - 2];
    call->tail[1] = data[n - 1];
  } else if (n == 1) {
    call->tail[0] = call->tail[1];
    call->tail[1] = data[0];
  }
}

/* llhttp 8.1.0 takes a bare LF for the empty line that ends a chunked
 * body's trailer section: the two bytes before end (in this feed from
 * data, or kept from the feeds before) must be CRLF. */
static bool crlf_before(const keel_http_call_t *call, const char *data, const char *end) {
  size_t fed = (size_t)(end - data);
  char cr = fed >= 2 ? end[-2] : call->tail[fed];
  char lf = fed >= 1 ? end[-1] : call->tail[1];
  return cr == '\r' && lf == '\n';
}

/* Gives llhttp what the reader has room for. */
static int body_step(keel_http_call_t *call) {
  hc_conn_t *c = call->conn;
  if (c->len == 0)
    return body_read_more(call);
  const char *data = c->buf + c->head;
  size_t feed = call->discard ? c->len : call->room - call->got;
  if (feed > c->len)
    feed = c->len;
  llhttp_errno_t err = llhttp_execute(&call->parser, data, feed);
  if (err == HPE_OK) {
    keep_tail(call, data, feed);
    consume(c, feed);
    return 0;
  }
  if (err == HPE_PAUSED) {
    const char *end = llhttp_get_error_pos(&call->parser);
    /* Chunked, as the head said: llhttp's flags change with trailer fields. */
    bool chunked = call->content_length < 0 && !call->body_until_eof;
    if (chunked && !crlf_before(call, data, end))
      return -EPROTO;
    consume(c, (size_t)(end - data));
    llhttp_resume(&call->parser);
    return 0;
  }
  return call->trailer_bytes > call->pool->lim.max_header_bytes ? -EMSGSIZE : -EPROTO;
}

ssize_t keel_http_call_read(keel_http_call_t *call, void *buf, size_t len) {
  if (len == 0)
    return -EINVAL;
  if (call->err)
    return call->err;
  if (call->msg_done)
    return 0;
  call->dst = buf;
  call->room = len;
  call->got = 0;
  int rc = 0;
  while (rc == 0 && call->got == 0 && !call->msg_done)
    rc = body_step(call);
  call->dst = NULL;
  if (rc < 0)
    return body_fail(call, rc);
  if (call->msg_done)
    body_end(call);
  return (ssize_t)call->got;
}

bool keel__hc_finish_buffered(keel_http_call_t *call) {
  hc_conn_t *c = call->conn;
  call->discard = true;
  while (!call->err && !call->msg_done && c->len > 0)
    if (body_step(call) < 0)
      break;
  call->discard = false;
  return call->msg_done;
}

/* Room for more of a whole body: at least twice the old, at most max. */
static char *body_grow(keel_http_call_t *call, char *buf, size_t n, size_t *cap, size_t max) {
  size_t bigger_cap = *cap < 512 ? 1024 : *cap * 2;
  if (bigger_cap > max)
    bigger_cap = max;
  char *bigger = keel_arena_alloc_aligned(call->arena, bigger_cap + 1, 1);
  if (bigger && n)
    memcpy(bigger, buf, n);
  *cap = bigger_cap;
  return bigger;
}

/* max_body bytes were read: 0 if the body ends there, else -EMSGSIZE. */
static int body_past_max(keel_http_call_t *call) {
  char extra;
  ssize_t more = keel_http_call_read(call, &extra, 1);
  if (more > 0)
    return (int)body_fail(call, -EMSGSIZE);
  return (int)more;
}

int keel_http_call_body(keel_http_call_t *call, const void **data, size_t *len) {
  if (call->body) {
    *data = call->body;
    *len = call->body_len;
    return 0;
  }
  size_t max = call->pool->lim.max_body;
  if (call->content_length > 0 && (uint64_t)call->content_length > max)
    return (int)body_fail(call, -EMSGSIZE);
  size_t cap = call->content_length >= 0 ? (size_t)call->content_length : 1024, n = 0;
  if (cap > max)
    cap = max;
  char *buf = keel_arena_alloc_aligned(call->arena, cap + 1, 1);
  int rc = 0;
  while (rc == 0 && buf && !call->msg_done && !call->err) {
    if (n == cap && cap == max) {
      rc = body_past_max(call);
      break;
    }
    if (n == cap) {
      buf = body_grow(call, buf, n, &cap, max);
      continue;
    }
    ssize_t got = keel_http_call_read(call, buf + n, cap - n);
    rc = got < 0 ? (int)got : 0;
    n += got > 0 ? (size_t)got : 0;
  }
  if (!buf)
    return (int)body_fail(call, -ENOMEM);
  if (rc < 0 || call->err)
    return rc < 0 ? rc : call->err;
  buf[n] = '\0';
  call->body = buf;
  call->body_len = n;
  *data = buf;
  *len = n;
  return 0;
}
