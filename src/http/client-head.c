/* Client response heads, read again strictly from their copy.
 *
 * llhttp 8.1.0 in strict mode lets through what a client must refuse
 * (obs-fold, empty field names, a status of two digits, a
 * Transfer-Encoding other than chunked, read up to the end of the
 * connection), so keel reads each head again in one pass that checks every
 * byte, cuts names and values with NUL terminators and checks the framing
 * fields (RFC 9112 §6.3) against what llhttp made of them. */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "client-internal.h"

bool keel__hc_bodyless(const keel_http_call_t *call, int status) {
  return call->head_method || status / 100 == 1 || status == 204 || status == 304;
}

/* A field value byte (RFC 9110 §5.5): VCHAR, SP, HTAB or obs-text. */

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
    while (p < end && keel__http_value_char((unsigned char)*p))
      p++;
  }
  if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
    return -EPROTO;
  *p = '\0';
  call->reason = reason;
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
    if (keel__http_parse_field(&p, end, &call->headers[call->nheaders]) < 0)
      return -EPROTO;
    call->nheaders++;
  }
  return -EPROTO;
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
    return keel__http_parse_length(h->value, h->value_len, &f->length) ? 0 : -EPROTO;
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
  if (keel__hc_bodyless(call, call->status)) {
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
int keel__hc_head_parse(keel_http_call_t *call) {
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
