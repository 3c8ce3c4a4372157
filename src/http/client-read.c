/* Client responses: llhttp (strict mode) frames them; keel reads each head
 * again, strictly, from a copy in the call's arena.
 *
 * llhttp 8.1.0 lets through what a client must refuse (obs-fold, empty
 * field names, a status of two digits, a Transfer-Encoding other than
 * chunked read up to the end of the connection), so the head's bytes are
 * copied as llhttp takes them (the read buffer is reused meanwhile: the
 * copy, not the buffer, bounds the head by max_header_bytes) and read
 * again in one pass that checks every byte and the framing fields. llhttp
 * pauses at the end of a head that a body follows and at the end of every
 * message, so it never parses past the response being read. Body bytes
 * are decoded by llhttp straight into the reader's buffer: llhttp is never
 * given more bytes than the reader has room for, and a decoded body is
 * never longer than its input. */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "client-internal.h"

#define CALL_OF(p) ((keel_http_call_t *)(p)->data)

/* ---- llhttp callbacks ----------------------------------------------------- */

static bool bodyless(const keel_http_call_t *call, int status) {
  return call->head_method || status / 100 == 1 || status == 204 || status == 304;
}

/* A body follows: pause so that the head is read first. No body: the
 * message ends here and on_message_complete pauses. A 304's or a HEAD
 * response's Content-Length describes another message: llhttp is told to
 * skip the body (1). */
static int on_headers_complete(llhttp_t *p) {
  keel_http_call_t *call = CALL_OF(p);
  call->head_done = true;
  if (bodyless(call, p->status_code))
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

/* ---- The head, read again ------------------------------------------------- */

/* A field value byte (RFC 9110 §5.5): VCHAR, SP, HTAB or obs-text. */
static bool value_char(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }

/* "HTTP/1.x SP 3DIGIT [SP reason] CRLF". */
static int parse_status_line(keel_http_call_t *call, char **pp, char *end) {
  char *p = *pp;
  if (end - p < 14 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
    return -EPROTO;
  call->version = p[7] == '1' ? 11 : 10;
  p += 9;
  if (p[0] < '1' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
    return -EPROTO;
  call->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
  p += 3;
  char *reason = p; /* "HTTP/1.1 200\r\n": no reason at all */
  if (*p == ' ') {
    reason = ++p;
    while (p < end && value_char((unsigned char)*p))
      p++;
  }
  if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
    return -EPROTO;
  *p = '\0';
  call->reason = reason;
  *pp = p + 2;
  return 0;
}

/* One "name: value CRLF" line: a token, the colon at once, a value of
 * value bytes, CRLF and nothing else (a bare CR or LF, a NUL: -EPROTO). */
static int parse_field(char **pp, char *end, keel_http_header_t *h) {
  char *p = *pp, *name = p;
  while (p < end && keel__http_token_char((unsigned char)*p))
    p++;
  if (p == name || p >= end || *p != ':')
    return -EPROTO;
  h->name = name;
  h->name_len = (size_t)(p - name);
  *p++ = '\0';
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  char *v = p;
  while (p < end && value_char((unsigned char)*p))
    p++;
  if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
    return -EPROTO;
  char *ve = p;
  while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
    ve--;
  *ve = '\0';
  h->value = v;
  h->value_len = (size_t)(ve - v);
  *pp = p + 2;
  return 0;
}

static int parse_fields(keel_http_call_t *call, char *p, char *end) {
  size_t lines = 0;
  for (const char *q = p; (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
    lines++;
  if (lines > call->pool->lim.max_headers + 1)
    return -EMSGSIZE;
  call->headers = keel_arena_alloc(call->arena, (lines ? lines : 1) * sizeof *call->headers);
  if (!call->headers)
    return -ENOMEM;
  call->nheaders = 0;
  while (p < end) {
    if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
      return p + 2 == end ? 0 : -EPROTO;
    if (*p == ' ' || *p == '\t' || call->nheaders == lines) /* obs-fold (§5.2) */
      return -EPROTO;
    if (parse_field(&p, end, &call->headers[call->nheaders]) < 0)
      return -EPROTO;
    call->nheaders++;
  }
  return -EPROTO;
}

/* 1*DIGIT, at most 18 digits. */
static bool parse_length(const char *v, size_t n, int64_t *out) {
  if (n == 0 || n > 18)
    return false;
  int64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9')
      return false;
    x = x * 10 + (v[i] - '0');
  }
  *out = x;
  return true;
}

/* Keep-Alive: timeout=N (RFC 2068 §19.7.1.1): the server closes an idle
 * connection after N s, so keel stops using it a second earlier. */
static void parse_keepalive(keel_http_call_t *call, const char *v) {
  for (const char *p = v; (p = strcasestr(p, "timeout")) != NULL; p += 7) {
    const char *q = p + 7;
    while (*q == ' ')
      q++;
    if (*q != '=')
      continue;
    int64_t n = 0;
    const char *d = ++q;
    while (*q >= '0' && *q <= '9' && q - d < 9)
      n = n * 10 + (*q++ - '0');
    if (q == d)
      return;
    call->keepalive_ns = n >= 2 ? (n - 1) * KEEL_NS_PER_SEC : n * KEEL_NS_PER_SEC / 2;
    return;
  }
}

typedef struct framing {
  int lengths, codings;
  int64_t length;
  bool chunked;
} framing_t;

static int scan_field(keel_http_call_t *call, const keel_http_header_t *h, framing_t *f) {
  if (keel__http_name_eq(h->name, h->name_len, "content-length")) {
    f->lengths++;
    return parse_length(h->value, h->value_len, &f->length) ? 0 : -EPROTO;
  }
  if (keel__http_name_eq(h->name, h->name_len, "transfer-encoding")) {
    f->codings++;
    /* keel decodes chunked only: anything else cannot be framed. */
    f->chunked = keel__http_name_eq(h->value, h->value_len, "chunked");
    return f->chunked ? 0 : -EPROTO;
  }
  if (keel__http_name_eq(h->name, h->name_len, "keep-alive"))
    parse_keepalive(call, h->value);
  return 0;
}

/* RFC 9112 §6.3, strictly: one valid Content-Length, or Transfer-Encoding:
 * chunked alone in HTTP/1.1, never both; llhttp must frame it the same. */
static int check_framing(keel_http_call_t *call) {
  framing_t f = {0};
  for (size_t i = 0; i < call->nheaders; i++)
    if (scan_field(call, &call->headers[i], &f) < 0)
      return -EPROTO;
  if (f.lengths > 1 || f.codings > 1 || (f.lengths && f.codings) ||
      (f.codings && call->version < 11))
    return -EPROTO;
  const llhttp_t *p = &call->parser;
  call->body_until_eof = false;
  if (bodyless(call, call->status)) {
    call->content_length = 0;
    return 0;
  }
  if ((f.codings > 0) != ((p->flags & F_CHUNKED) != 0))
    return -EPROTO;
  if (f.codings) {
    call->content_length = -1;
  } else if (f.lengths) {
    /* Paused at the end of the head (or of a message with no body),
     * llhttp's count is still the declared one. */
    if (!(p->flags & F_CONTENT_LENGTH) ||
        (call->msg_done ? f.length != 0 : p->content_length != (uint64_t)f.length))
      return -EPROTO;
    call->content_length = f.length;
  } else {
    call->content_length = -1;
    call->body_until_eof = true;
  }
  return 0;
}

/* The head's copy is complete: read it. */
static int head_parse(keel_http_call_t *call) {
  char *p = call->head, *end = call->head + call->head_len;
  call->keepalive_ns = -1;
  int rc = parse_status_line(call, &p, end);
  if (rc == 0)
    rc = parse_fields(call, p, end);
  if (rc == 0)
    rc = check_framing(call);
  if (rc == 0 && call->parser.status_code != call->status)
    rc = -EPROTO;
  return rc;
}

static int head_append(keel_http_call_t *call, const char *p, size_t n) {
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
  int rc = head_parse(call);
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
    consume(c, feed);
    return 0;
  }
  if (err == HPE_PAUSED) {
    consume(c, (size_t)(llhttp_get_error_pos(&call->parser) - data));
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
  for (;;) {
    if (!buf)
      return (int)body_fail(call, -ENOMEM);
    if (call->msg_done || call->err)
      break;
    if (n == cap && cap == max) {
      char extra;
      ssize_t more = keel_http_call_read(call, &extra, 1);
      if (more < 0)
        return (int)more;
      if (more > 0)
        return (int)body_fail(call, -EMSGSIZE);
      break;
    }
    if (n == cap) {
      size_t bigger_cap = cap < 512 ? 1024 : cap * 2;
      if (bigger_cap > max)
        bigger_cap = max;
      char *bigger = keel_arena_alloc_aligned(call->arena, bigger_cap + 1, 1);
      if (bigger)
        memcpy(bigger, buf, n);
      buf = bigger;
      cap = bigger_cap;
      continue;
    }
    ssize_t got = keel_http_call_read(call, buf + n, cap - n);
    if (got < 0)
      return (int)got;
    if (got == 0)
      break;
    n += (size_t)got;
  }
  if (call->err)
    return call->err;
  buf[n] = '\0';
  call->body = buf;
  call->body_len = n;
  *data = buf;
  *len = n;
  return 0;
}
