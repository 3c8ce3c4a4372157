/* Request heads: keel's own reading of the header block llhttp accepted.
 *
 * llhttp 8.1.0 in strict mode lets through things a server must refuse
 * (a CR not followed by LF, empty field names, whitespace before a colon
 * in some states) and leaves to the server what RFC 9112 asks of it (one
 * Host, one valid Content-Length, Transfer-Encoding ending in chunked and
 * only in HTTP/1.1, not both framings at once). So keel reads the block
 * again, strictly: one pass over a copy in the arena that validates every
 * byte, cuts names and values with NUL terminators and checks the framing
 * fields. A message it refuses gets its status and the connection closes. */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "http-internal.h"

static char lower(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch; }

/* Request target bytes: visible ASCII only (RFC 9112 §3.2; no obs-text,
 * no whitespace, no controls). */
static bool target_char(unsigned char ch) { return ch > 0x20 && ch < 0x7f; }

/* Reads "METHOD SP target SP HTTP/d.d CRLF". Returns 0 or a status. */
static int parse_request_line(keel_http_request_t *req, const http_limits_t *lim, char **pp,
                              char *end) {
  char *p = *pp, *m = p;
  while (p < end && keel__http_token_char((unsigned char)*p))
    p++;
  if (p == m || p >= end || *p != ' ')
    return 400;
  *p++ = '\0';
  req->method = m;
  req->method_len = (size_t)(p - 1 - m);
  char *t = p;
  while (p < end && target_char((unsigned char)*p))
    p++;
  if ((size_t)(p - t) > lim->max_url)
    return 414;
  if (p == t || p >= end || *p != ' ')
    return 400;
  *p++ = '\0';
  req->target = t;
  if (end - p < 10 || memcmp(p, "HTTP/", 5) != 0 || p[5] < '0' || p[5] > '9' || p[6] != '.' ||
      p[7] < '0' || p[7] > '9' || p[8] != '\r' || p[9] != '\n')
    return 400;
  if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
    return 505;
  req->version = p[7] == '0' ? 10 : 11;
  *pp = p + 10;
  return 0;
}

/* Counts the lines of the block, to size the field array. */
static size_t count_lines(const char *p, size_t n) {
  size_t lines = 0;
  const char *end = p + n;
  while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
    lines++;
    p++;
  }
  return lines;
}

static int parse_fields(keel_http_request_t *req, const http_limits_t *lim, char *p, char *end) {
  size_t max = count_lines(p, (size_t)(end - p));
  if (max > lim->max_headers + 1)
    return 431;
  req->headers = keel_arena_alloc(req->c->arena, (max ? max : 1) * sizeof *req->headers);
  if (!req->headers)
    return 503;
  req->nheaders = 0;
  while (p < end) {
    if (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
      return p + 2 == end ? 0 : 400;
    if (*p == ' ' || *p == '\t') /* obs-fold (§5.2) */
      return 400;
    if (req->nheaders == max)
      return 400;
    if (keel__http_parse_field(&p, end, &req->headers[req->nheaders]) != 0)
      return 400;
    req->nheaders++;
  }
  return 400; /* no empty line */
}

/* RFC 3986 unreserved, sub-delims and '%' (pct-encoded, loosely). */
static bool reg_name_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch != 0 && strchr("-._~!$&'()*+,;=%", ch) != NULL);
}

/* Host (RFC 9112 §3.2, RFC 3986 §3.2.2): uri-host [":" port], the host
 * a reg-name, an IPv4 address or an IP literal in brackets, the port
 * digits only. Empty is allowed (a target without authority). */
static bool host_ok(const char *v, size_t n) {
  size_t i = 0;
  if (n > 0 && v[0] == '[') {
    while (i < n && v[i] != ']') {
      unsigned char ch = (unsigned char)v[i];
      if (i > 0 && !(ch == ':' || ch == '.' || isxdigit(ch) || reg_name_char(ch)))
        return false;
      i++;
    }
    if (i == n)
      return false;
    i++;
  } else {
    while (i < n && reg_name_char((unsigned char)v[i]))
      i++;
  }
  if (i == n)
    return true;
  if (v[i++] != ':')
    return false;
  for (; i < n; i++)
    if (v[i] < '0' || v[i] > '9')
      return false;
  return true;
}

/* Transfer-Encoding (RFC 9112 §6.1, §6.3): chunked, once, last. A coding
 * keel does not know before it is 501; chunked missing or not last, or
 * twice, is 400 (the framing cannot be known). */
static int check_te(const char *v, size_t n) {
  int chunked = 0, other = 0;
  bool last_chunked = false;
  size_t i = 0;
  while (i <= n) {
    size_t j = i;
    while (j < n && v[j] != ',')
      j++;
    size_t a = i, b = j;
    while (a < b && (v[a] == ' ' || v[a] == '\t'))
      a++;
    while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
      b--;
    if (b > a) {
      last_chunked = keel__http_name_eq(v + a, b - a, "chunked");
      if (last_chunked)
        chunked++;
      else
        other++;
    }
    i = j + 1;
  }
  if (chunked != 1 || !last_chunked)
    return 400;
  return other ? 501 : 0;
}

typedef struct framing {
  int hosts, lengths, codings;
  int64_t length;
  int te_status;
} framing_t;

static int scan_field(keel_http_request_t *req, const keel_http_header_t *h, framing_t *f) {
  const char *n = h->name;
  size_t nl = h->name_len;
  if (keel__http_name_eq(n, nl, "host")) {
    f->hosts++;
    return host_ok(h->value, h->value_len) ? 0 : 400;
  }
  if (keel__http_name_eq(n, nl, "content-length")) {
    f->lengths++;
    return keel__http_parse_length(h->value, h->value_len, &f->length) ? 0 : 400;
  }
  if (keel__http_name_eq(n, nl, "transfer-encoding")) {
    f->codings++;
    f->te_status = check_te(h->value, h->value_len);
    return 0;
  }
  if (keel__http_name_eq(n, nl, "expect") && req->version >= 11) {
    if (!keel__http_name_eq(h->value, h->value_len, "100-continue"))
      return 417;
    req->expect_continue = true;
  }
  return 0;
}

/* The framing and Host rules of RFC 9112 §3.2 and §6. */
static int check_fields(keel_http_request_t *req, const llhttp_t *parser) {
  framing_t f = {0};
  for (size_t i = 0; i < req->nheaders; i++) {
    int st = scan_field(req, &req->headers[i], &f);
    if (st != 0)
      return st;
  }
  if (f.hosts > 1 || (f.hosts == 0 && req->version >= 11))
    return 400;
  if (f.lengths > 1 || f.codings > 1 || (f.lengths && f.codings))
    return 400;
  if (f.codings) {
    if (req->version < 11)
      return 400;
    if (f.te_status)
      return f.te_status;
    req->content_length = -1;
  } else {
    req->content_length = f.lengths ? f.length : 0;
  }
  /* llhttp must have framed the message the same way. */
  bool ll_chunked = (parser->flags & F_CHUNKED) != 0;
  if (ll_chunked != (req->content_length < 0) ||
      (!ll_chunked && req->content_length > 0 && parser->content_length != (uint64_t)f.length))
    return 400;
  return 0;
}

/* origin-form, absolute-form (http/https), or "*" for OPTIONS. */
static int split_target(keel_http_request_t *req, keel_arena_t *a) {
  const char *t = req->target;
  if (t[0] == '*' && t[1] == '\0')
    return strcmp(req->method, "OPTIONS") == 0 ? (req->path = t, req->query = "", 0) : 400;
  if (t[0] != '/') {
    size_t skip = strncmp(t, "http://", 7) == 0 ? 7 : strncmp(t, "https://", 8) == 0 ? 8 : 0;
    if (skip == 0)
      return 400;
    t = strchr(t + skip, '/');
    if (!t)
      t = "/";
  }
  const char *q = strchr(t, '?');
  if (!q) {
    req->path = t;
    req->query = "";
    return 0;
  }
  req->path = keel_arena_strndup(a, t, (size_t)(q - t));
  req->query = q + 1;
  return req->path ? 0 : 503;
}

int keel__http_request_parse(http_conn_t *c, const char *src, size_t n) {
  keel_http_request_t *req = c->b->req;
  /* Empty lines before a request line are ignored (RFC 9112 §2.2). */
  while (n >= 2 && src[0] == '\r' && src[1] == '\n') {
    src += 2;
    n -= 2;
  }
  char *h = keel_arena_alloc_aligned(c->arena, n + 1, 1);
  if (!h)
    return 503;
  memcpy(h, src, n);
  h[n] = '\0';
  char *p = h, *end = h + n;
  int st = parse_request_line(req, c->lim, &p, end);
  if (st == 0)
    st = parse_fields(req, c->lim, p, end);
  if (st == 0 && strcmp(req->method, "CONNECT") == 0)
    st = 501; /* keel is no proxy */
  if (st == 0)
    st = check_fields(req, &c->b->parser);
  if (st == 0)
    st = split_target(req, c->arena);
  if (st == 0 && req->content_length > 0 && (uint64_t)req->content_length > c->lim->max_body)
    st = 413;
  req->head_method = req->method_len == 4 && memcmp(req->method, "HEAD", 4) == 0;
  return st;
}

/* ---- Accessors ------------------------------------------------------------ */

const char *keel_http_method(const keel_http_request_t *req) { return req->method; }
const char *keel_http_target(const keel_http_request_t *req) { return req->target; }
const char *keel_http_path(const keel_http_request_t *req) { return req->path; }
const char *keel_http_query(const keel_http_request_t *req) { return req->query; }
int keel_http_version(const keel_http_request_t *req) { return req->version; }
size_t keel_http_header_count(const keel_http_request_t *req) { return req->nheaders; }
int64_t keel_http_content_length(const keel_http_request_t *req) { return req->content_length; }
keel_arena_t *keel_http_arena(keel_http_request_t *req) { return req->c->arena; }
keel_tls_t *keel_http_tls(const keel_http_request_t *req) {
  return req->c->tls ? req->c->tls : keel_tls_of(req->c->s);
}

const keel_http_header_t *keel_http_header_at(const keel_http_request_t *req, size_t i) {
  return i < req->nheaders ? &req->headers[i] : NULL;
}

const char *keel_http_header(const keel_http_request_t *req, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < req->nheaders; i++) {
    const keel_http_header_t *h = &req->headers[i];
    if (h->name_len != n)
      continue;
    size_t k = 0;
    while (k < n && lower(h->name[k]) == lower(name[k]))
      k++;
    if (k == n)
      return h->value;
  }
  return NULL;
}

int keel_http_peer_addr(const keel_http_request_t *req, keel_addr_t *out) {
  return keel_stream_query(req->c->s, KEEL_STREAM_Q_PEER_ADDR, out, sizeof *out);
}
