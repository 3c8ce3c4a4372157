/* llhttp's callbacks for the server: the checks that cannot wait for the
 * whole head (the URL's length) and those of what follows it (chunk
 * extensions, trailers, every line of a chunked body ending in CRLF), and
 * the body bytes llhttp decodes, copied straight into the reader's buffer. */
#include <string.h>

#include "http-internal.h"

#define C_OF(p) ((http_conn_t *)(p)->data)

/* ---- llhttp callbacks ----------------------------------------------------- */

static int fail(http_conn_t *c, int status) {
  c->b->err_status = (uint16_t)status;
  return -1;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  http_conn_t *c = C_OF(p);
  (void)at;
  c->b->url_len += (uint32_t)len;
  return c->b->url_len > c->lim->max_url ? fail(c, 414) : 0;
}

/* Fields after the head are trailers: bounded, validated, never framing. */
/* The byte k places before p in the body bytes seen so far (the current
 * feed from base, then the two bytes kept from the feeds before). */
static char byte_before(const http_batch_t *b, const char *p, int k) {
  ptrdiff_t in_feed = p - b->base;
  if (in_feed >= k)
    return p[-k];
  return b->tail[2 - (k - (int)in_feed)];
}

/* llhttp 8.1.0 takes a bare LF for the end of a trailer line: every line
 * of the trailer section must end with CRLF. */
bool keel__http_crlf_before(const http_batch_t *b, const char *p) {
  return byte_before(b, p, 2) == '\r' && byte_before(b, p, 1) == '\n';
}

static int on_field(llhttp_t *p, const char *at, size_t len) {
  http_conn_t *c = C_OF(p);
  if (!c->b->in_trailers)
    return 0;
  if (c->b->field_len == 0 && !keel__http_crlf_before(c->b, at))
    return fail(c, 400);
  for (size_t i = 0; i < len; i++) {
    if (!keel__http_token_char((unsigned char)at[i]))
      return fail(c, 400);
    if (c->b->field_len < sizeof c->b->field)
      c->b->field[c->b->field_len++] = at[i];
  }
  return 0;
}

static int on_field_complete(llhttp_t *p) {
  http_conn_t *c = C_OF(p);
  if (!c->b->in_trailers)
    return 0;
  static const char *const framing[] = {
      "content-length", "transfer-encoding", "host", "connection", "trailer", "te", "expect"};
  size_t n = c->b->field_len;
  c->b->field_len = 0;
  if (++c->b->nfields > HTTP_MAX_TRAILERS || n == 0)
    return fail(c, n == 0 ? 400 : 431);
  for (size_t i = 0; i < sizeof framing / sizeof framing[0]; i++)
    if (keel__http_name_eq(c->b->field, n, framing[i]))
      return fail(c, 400);
  return 0;
}

static int on_value(llhttp_t *p, const char *at, size_t len) {
  http_conn_t *c = C_OF(p);
  if (!c->b->in_trailers)
    return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)at[i];
    if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
      return fail(c, 400);
  }
  return 0;
}

/* Pauses where a body follows, so the handler reads it; a message without
 * one runs on to on_message_complete, which pauses too. */
static int on_headers_complete(llhttp_t *p) {
  http_conn_t *c = C_OF(p);
  c->b->in_trailers = false;
  bool body = (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
  return body ? HPE_PAUSED : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  http_conn_t *c = C_OF(p);
  keel_http_request_t *req = c->b->req;
  if (!req || !req->dst)
    return fail(c, 400);
  req->body_read += len;
  if (req->body_read > c->lim->max_body)
    return fail(c, 413);
  /* Never more than the room left: llhttp is given at most that many bytes. */
  memcpy(req->dst + req->got, at, len);
  req->got += len;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  (void)p;
  return HPE_PAUSED;
}

static int on_chunk_header(llhttp_t *p) {
  http_conn_t *c = C_OF(p);
  c->b->ext_len = 0;
  if (p->content_length == 0) { /* the last chunk: trailers may follow */
    c->b->in_trailers = true;
    c->b->nfields = 0;
    c->b->field_len = 0;
  }
  return 0;
}

/* Chunk extensions are read and dropped, but bounded (CVE-2024-22019) and
 * free of control bytes (CVE-2024-27982's family). */
static int on_ext(llhttp_t *p, const char *at, size_t len) {
  http_conn_t *c = C_OF(p);
  if (c->b->ext_len + len > HTTP_MAX_CHUNK_EXT)
    return fail(c, 400);
  c->b->ext_len = (uint16_t)(c->b->ext_len + len);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)at[i];
    if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
      return fail(c, 400);
  }
  return 0;
}

/* The chunk size line before its extensions: count it against the bound. */
static int on_ext_complete(llhttp_t *p) {
  (void)p;
  return 0;
}

const llhttp_settings_t keel__http_settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_header_field_complete = on_field_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_chunk_header = on_chunk_header,
    .on_chunk_extension_name = on_ext,
    .on_chunk_extension_value = on_ext,
    .on_chunk_extension_name_complete = on_ext_complete,
};

/* Keeps the last two bytes of a feed for byte_before. */
void keel__http_keep_tail(http_batch_t *b, const char *data, size_t n) {
  if (n >= 2) {
    b->tail[0] = data[n - 2];
    b->tail[1] = data[n - 1];
  } else if (n == 1) {
    b->tail[0] = b->tail[1];
    b->tail[1] = data[0];
  }
}
