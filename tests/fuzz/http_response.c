/* libFuzzer target: keel's HTTP client reading responses (src/http:
 * client-read.c, where llhttp in strict mode frames them and decodes
 * chunked bodies; client-head.c, which reads each head again strictly;
 * client.c: 1xx responses, Expect: 100-continue, keeping a connection for
 * the next request, sending a request again), fed by a server on the lab
 * network.
 *
 * Each input runs in a lab-mode runtime. The bytes after the control
 * bytes, cut at every FZ_SEP, are segments: a lab server at fz:80 answers
 * the k-th request it reads (on whichever connection) with segment k, or
 * closes that connection when segment k is empty or there is none; after
 * the last segment it shuts down writing. A client makes 1 to 4 calls to
 * http://fz/cN, one after another, each under a 10 s deadline, and reads
 * each response's body in one of several ways. Then the checks, against a
 * plain reading (RFC 9112) of the bytes each connection carried:
 *   - a call keel opened has the status, version, reason phrase and fields
 *     of the final response found where the connection's previous
 *     response ended (1xx skipped), within the client's limits, and the
 *     length its framing declares (0 when it has no body);
 *   - the body keel gave is a prefix of what that framing covers, all of
 *     it when keel said the body ended;
 *   - a connection carries another call only after a response read whole,
 *     framed by a length or chunked, that did not ask to close it (nor did
 *     the request), and a call that says it reused a connection did.
 * A violation aborts. FZ_SHOW=1 prints each run.
 *
 * The input: 4 control bytes, then the segments.
 *   in[0] bits 0-1  the calls, less one
 *         bits 2-3  the first call's method (fz_method_t); the next calls
 *                   take the next ones in turn
 *         bit 4     the lab network moves random parts of each read and write
 *         bits 5-7  how the first call's body is read (fz_read_t, modulo
 *                   its count); the next calls take the next ways in turn
 *   in[1] bit 0     max_header_bytes 256 (else the default, 64 KiB)
 *         bit 1     max_headers 4 (else 100)
 *         bit 2     max_body 64 (else 8 MiB)
 *         bit 3     no_retry
 *         bit 4     the requests carry Connection: close
 *   in[2]           unused
 *   in[3]           the lab seed */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "dechunk.h"
#include "keel/keel.h"

#define FZ_SEP "\xfe\xff\xfe\xff"
#define FZ_SEP_LEN 4
#define FZ_MAX_CALLS 4
#define FZ_MAX_CONNS 16
#define FZ_CALL_NS (10 * KEEL_NS_PER_SEC)
#define FZ_DEADLINE_NS (3600 * KEEL_NS_PER_SEC)

typedef enum fz_method { FZ_GET, FZ_HEAD, FZ_POST, FZ_POST_EXPECT, FZ_NMETHODS } fz_method_t;

typedef enum fz_read {
  FZ_READ_BODY,   /* keel_http_call_body */
  FZ_READ_PIECES, /* keel_http_call_read 1 to 7 bytes at a time */
  FZ_READ_FETCH,  /* keel_http_fetch instead of keel_http_call_open */
  FZ_READ_NONE,   /* keel_http_call_close at once */
  FZ_READ_SOME,   /* 3 bytes, then keel_http_call_close */
  FZ_NREADS
} fz_read_t;

typedef struct fz_field {
  char *name, *value;
} fz_field_t;

/* A call as the client saw it. */
typedef struct fz_call {
  fz_method_t method;
  fz_read_t read;
  int rc; /* of keel_http_call_open (or keel_http_fetch) */
  int status, version;
  char *reason;
  fz_field_t *fields;
  size_t nfields;
  int64_t content_length;
  bool reused;
  char *body; /* what the reads gave */
  size_t body_len;
  bool body_end; /* a read said the body ended */
  int conn;      /* the server's connection it went over last (-1: none) */
} fz_call_t;

/* A connection as the lab server saw it. */
typedef struct fz_conn {
  char *out; /* every byte written to it */
  size_t out_len, out_cap;
  bool ended; /* the server closed it or shut down writing (the client did not first) */
} fz_conn_t;

typedef struct fz {
  const uint8_t *ctrl;
  const uint8_t *seg[256]; /* the segments */
  size_t seg_len[256], nseg, next_seg;
  keel_http_client_opts_t limits;
  size_t max_header_bytes, max_headers, max_body;
  bool close_req;
  fz_call_t calls[FZ_MAX_CALLS];
  size_t ncalls;
  fz_conn_t conns[FZ_MAX_CONNS];
  size_t nconns;
  keel_listener_t *listener;
  keel_http_client_t *client;
} fz_t;

static bool show;

static _Noreturn void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static _Noreturn void fz_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("http_response: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

static void append(char **buf, size_t *len, size_t *cap, const void *p, size_t n) {
  if (*cap - *len < n + 1) {
    size_t ncap = *cap ? *cap : 256;
    while (ncap - *len < n + 1)
      ncap *= 2;
    char *grown = realloc(*buf, ncap);
    if (!grown)
      abort();
    *buf = grown;
    *cap = ncap;
  }
  if (n)
    memcpy(*buf + *len, p, n);
  *len += n;
  (*buf)[*len] = '\0';
}

static char *copy(const char *s) {
  char *c = strdup(s ? s : "");
  if (!c)
    abort();
  return c;
}

/* ---- The lab server -------------------------------------------------------------- */

typedef struct fz_server_conn {
  fz_t *x;
  keel_tcp_t *tcp;
  int id;
} fz_server_conn_t;

/* Reads until buf holds a request head; its length (with the empty line),
 * or 0 at the end of the connection. */
static size_t read_head(keel_stream_t *s, char **buf, size_t *len, size_t *cap) {
  for (;;) {
    const char *end = *len ? memmem(*buf, *len, "\r\n\r\n", 4) : NULL;
    if (end)
      return (size_t)(end - *buf) + 4;
    char more[2048];
    ssize_t n = keel_read(s, more, sizeof more);
    if (n <= 0)
      return 0;
    append(buf, len, cap, more, (size_t)n);
  }
}

/* The call a request head is from ("METHOD /cN ..."), or -1. */
static int call_of(const char *head) {
  const char *p = strstr(head, " /c");
  return p && p[3] >= '0' && p[3] < '0' + FZ_MAX_CALLS ? p[3] - '0' : -1;
}

/* Reads and drops the request's body (Content-Length, as keel sends it). */
static bool drop_body(keel_stream_t *s, const char *head, char **buf, size_t *len, size_t *cap) {
  const char *cl = strcasestr(head, "\r\nContent-Length: ");
  size_t body = cl ? strtoul(cl + 18, NULL, 10) : 0;
  while (*len < body) {
    char more[2048];
    ssize_t n = keel_read(s, more, sizeof more);
    if (n <= 0)
      return false;
    append(buf, len, cap, more, (size_t)n);
  }
  memmove(*buf, *buf + body, *len - body);
  *len -= body;
  return true;
}

/* Answers each request with the next segment. */
static int server_conn(void *arg) {
  fz_server_conn_t *sc = arg;
  fz_t *x = sc->x;
  fz_conn_t *rec = &x->conns[sc->id];
  keel_stream_t *s = keel_tcp_stream(sc->tcp);
  char *buf = NULL;
  size_t len = 0, cap = 0, hl;
  while ((hl = read_head(s, &buf, &len, &cap)) > 0) {
    buf[hl - 1] = '\0';
    int call = call_of(buf);
    if (call >= 0 && (size_t)call < x->ncalls)
      x->calls[call].conn = sc->id;
    char *head = copy(buf);
    memmove(buf, buf + hl, len - hl);
    len -= hl;
    size_t k = x->next_seg++;
    if (k >= x->nseg || x->seg_len[k] == 0) {
      rec->ended = true; /* closed at once: no answer */
      free(head);
      break;
    }
    append(&rec->out, &rec->out_len, &rec->out_cap, x->seg[k], x->seg_len[k]);
    int rc = keel_write_all(s, x->seg[k], x->seg_len[k], NULL);
    if (rc == 0 && k + 1 == x->nseg) {
      keel_stream_shutdown(s, SHUT_WR);
      rec->ended = true;
    }
    bool more = rc == 0 && drop_body(s, head, &buf, &len, &cap);
    free(head);
    if (!more)
      break;
  }
  keel_tcp_close(sc->tcp);
  free(buf);
  free(sc);
  return 0;
}

static int acceptor(void *arg) {
  fz_t *x = arg;
  keel_scope_t *conns;
  if (keel_scope_open(NULL, &conns) < 0)
    return 0;
  keel_tcp_t *tcp;
  while (x->nconns < FZ_MAX_CONNS && keel_tcp_accept(x->listener, &tcp) == 0) {
    fz_server_conn_t *sc = malloc(sizeof *sc);
    if (!sc)
      abort();
    *sc = (fz_server_conn_t){.x = x, .tcp = tcp, .id = (int)x->nconns++};
    if (keel_spawn(conns, server_conn, sc, NULL) < 0) {
      keel_tcp_close(tcp);
      free(sc);
    }
  }
  keel_scope_join(conns);
  keel_scope_close(conns);
  return 0;
}

/* ---- The client ------------------------------------------------------------------ */

static void keep_head(fz_call_t *c, keel_http_call_t *call) {
  c->status = keel_http_call_status(call);
  c->version = keel_http_call_version(call);
  c->reason = copy(keel_http_call_reason(call));
  c->content_length = keel_http_call_content_length(call);
  c->reused = keel_http_call_reused(call);
  c->nfields = keel_http_call_header_count(call);
  c->fields = calloc(c->nfields + 1, sizeof *c->fields);
  if (!c->fields)
    abort();
  for (size_t i = 0; i < c->nfields; i++) {
    const keel_http_header_t *h = keel_http_call_header_at(call, i);
    if (strlen(h->name) != h->name_len || strlen(h->value) != h->value_len)
      fz_fail("call field %zu's lengths are not its strings'", i);
    c->fields[i] = (fz_field_t){copy(h->name), copy(h->value)};
  }
}

static void body_add(fz_call_t *c, const void *p, size_t n) {
  size_t cap = c->body_len ? c->body_len + 1 : 0;
  append(&c->body, &c->body_len, &cap, p, n);
}

/* Reads the body in pieces of 1 to 7 bytes, up to limit bytes. */
static void read_pieces(fz_call_t *c, keel_http_call_t *call, size_t limit) {
  char buf[8];
  for (size_t piece = 1; c->body_len < limit; piece = piece % 7 + 1) {
    ssize_t n = keel_http_call_read(call, buf, piece);
    if (n == 0)
      c->body_end = true;
    if (n <= 0)
      return;
    if ((size_t)n > piece)
      fz_fail("a read of %zu bytes gave %zd", piece, n);
    body_add(c, buf, (size_t)n);
  }
}

static void read_whole(fz_call_t *c, keel_http_call_t *call) {
  const void *data;
  size_t len;
  if (keel_http_call_body(call, &data, &len) != 0)
    return;
  body_add(c, data, len);
  c->body_end = true;
}

static void one_call(fz_t *x, size_t i) {
  static const char *const methods[] = {"GET", "HEAD", "POST", "POST"};
  fz_call_t *c = &x->calls[i];
  char url[32];
  snprintf(url, sizeof url, "http://fz/c%zu", i);
  keel_http_header_t fields[2];
  size_t nfields = 0;
  if (c->method == FZ_POST_EXPECT)
    fields[nfields++] = (keel_http_header_t){.name = "Expect", .value = "100-continue"};
  if (x->close_req)
    fields[nfields++] = (keel_http_header_t){.name = "Connection", .value = "close"};
  keel_http_call_opts_t req = {
      .method = methods[c->method], .url = url, .headers = fields, .nheaders = nfields};
  if (c->method == FZ_POST || c->method == FZ_POST_EXPECT) {
    req.body = "hello";
    req.body_len = 5;
  }
  int64_t saved = keel_task_set_deadline(keel_now_ns() + FZ_CALL_NS);
  keel_http_call_t *call = NULL;
  c->rc = c->read == FZ_READ_FETCH ? keel_http_fetch(x->client, &req, &call)
                                   : keel_http_call_open(x->client, &req, &call);
  if (c->rc == 0) {
    keep_head(c, call);
    if (c->read == FZ_READ_BODY || c->read == FZ_READ_FETCH)
      read_whole(c, call);
    else if (c->read == FZ_READ_PIECES || c->read == FZ_READ_SOME)
      read_pieces(c, call, c->read == FZ_READ_SOME ? 3 : SIZE_MAX);
    keel_http_call_close(call);
  }
  keel_task_set_deadline(saved);
}

static int fz_main(void *arg) {
  fz_t *x = arg;
  /* 16 KiB a direction: a pipe's buffers then come from ASan's size
   * classes, not a mapping of their own made and unmade per connection. */
  keel_lab_net_faults_t f = {
      .conn = {.capacity = 16 * 1024, .short_permille = x->ctrl[0] & 16 ? 300 : 0}};
  keel_lab_net_faults(&f);
  if (keel_tcp_listen("fz:80", NULL, &x->listener) < 0 ||
      keel_http_client_open(&x->limits, &x->client) < 0)
    fz_fail("cannot set up the lab server or the client");
  keel_scope_opts_t so = {.deadline_ns = keel_now_ns() + FZ_DEADLINE_NS, .name = "fz"};
  keel_scope_t *scope;
  if (keel_scope_open(&so, &scope) < 0 || keel_spawn(scope, acceptor, x, NULL) < 0)
    fz_fail("cannot start the lab server");
  for (size_t i = 0; i < x->ncalls; i++)
    one_call(x, i);
  keel_http_client_close(x->client); /* its idle connections too */
  keel_scope_cancel(scope, KEEL_CANCEL_USER);
  keel_scope_join(scope);
  keel_scope_close(scope);
  keel_listener_close(x->listener);
  return 0;
}

/* ---- A plain reading of the responses ---------------------------------------------- */

typedef struct fz_span {
  size_t at, len;
} fz_span_t;

/* A response head read the plain way (offsets into its connection's bytes). */
typedef struct fz_head {
  size_t start, end; /* the final head's first byte, and just past its empty line */
  int status, version;
  fz_span_t reason;
  fz_span_t names[128], values[128];
  size_t nfields;
  int lengths, codings;
  uint64_t length;
  bool chunked, close, keep_alive;
  bool first_1xx; /* the first head read was a 1xx */
} fz_head_t;

static bool token_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* VCHAR, SP, HTAB, obs-text (RFC 9110 §5.5). */
static bool value_char(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }

static bool span_is(const char *p, fz_span_t s, const char *lit) {
  return s.len == strlen(lit) && strncasecmp(p + s.at, lit, s.len) == 0;
}

/* The value bytes of a line from at: up to its CRLF (*eol at the CR). */
static bool value_line(const char *p, size_t n, size_t at, size_t *eol) {
  while (at < n && value_char((unsigned char)p[at]))
    at++;
  *eol = at;
  return at + 1 < n && p[at] == '\r' && p[at + 1] == '\n';
}

/* "HTTP/1.x SP 3DIGIT [SP reason-phrase] CRLF". */
static bool status_line(const char *p, size_t n, size_t at, fz_head_t *h, size_t *next) {
  const char *s = p + at;
  if (n - at < 14 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ' ||
      s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
    return false;
  h->version = s[7] == '1' ? 11 : 10;
  h->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
  size_t r = at + 12 + (s[12] == ' '), eol;
  if (!value_line(p, n, r, &eol))
    return false;
  h->reason = (fz_span_t){r, eol - r};
  *next = eol + 2;
  return true;
}

/* Connection: a list of tokens (RFC 9110 §7.6.1). */
static void connection_options(const char *p, fz_span_t v, fz_head_t *h) {
  for (size_t at = v.at, end = v.at + v.len; at < end;) {
    size_t tok = at;
    while (at < end && p[at] != ',')
      at++;
    fz_span_t t = {tok, at - tok};
    while (t.len && (p[t.at] == ' ' || p[t.at] == '\t'))
      t.at++, t.len--;
    while (t.len && (p[t.at + t.len - 1] == ' ' || p[t.at + t.len - 1] == '\t'))
      t.len--;
    h->close |= span_is(p, t, "close");
    h->keep_alive |= span_is(p, t, "keep-alive");
    at++;
  }
}

static void note_field(const char *p, fz_head_t *h, fz_span_t name, fz_span_t value) {
  if (span_is(p, name, "content-length")) {
    h->lengths++;
    h->length = 0;
    for (size_t i = 0; i < value.len; i++) {
      if (value.len > 18 || p[value.at + i] < '0' || p[value.at + i] > '9')
        h->lengths = 99; /* not a length */
      h->length = h->length * 10 + (uint64_t)(p[value.at + i] - '0');
    }
    if (value.len == 0)
      h->lengths = 99;
  } else if (span_is(p, name, "transfer-encoding")) {
    h->codings++;
    h->chunked = span_is(p, value, "chunked");
  } else if (span_is(p, name, "connection")) {
    connection_options(p, value, h);
  }
}

/* One head at at: its fields up to the empty line. */
static bool head_at(const char *p, size_t n, size_t at, fz_head_t *h) {
  size_t keep_start = h->start;
  bool first_1xx = h->first_1xx;
  memset(h, 0, sizeof *h);
  h->start = keep_start;
  h->first_1xx = first_1xx;
  if (!status_line(p, n, at, h, &at))
    return false;
  for (;;) {
    if (n - at >= 2 && p[at] == '\r' && p[at + 1] == '\n') {
      h->end = at + 2;
      return true;
    }
    size_t name = at;
    while (at < n && token_char((unsigned char)p[at]))
      at++;
    if (at == name || at == n || p[at] != ':' || h->nfields == 128)
      return false;
    size_t v = at + 1, eol;
    while (v < n && (p[v] == ' ' || p[v] == '\t'))
      v++;
    if (!value_line(p, n, v, &eol))
      return false;
    size_t vend = eol;
    while (vend > v && (p[vend - 1] == ' ' || p[vend - 1] == '\t'))
      vend--;
    h->names[h->nfields] = (fz_span_t){name, at - name};
    h->values[h->nfields] = (fz_span_t){v, vend - v};
    note_field(p, h, h->names[h->nfields], h->values[h->nfields]);
    h->nfields++;
    at = eol + 2;
  }
}

static bool bodyless(const fz_head_t *h, bool head_method) {
  return head_method || h->status / 100 == 1 || h->status == 204 || h->status == 304;
}

/* The final head at at, 1xx ones before it skipped (101 is none a client
 * that asked for no upgrade takes): false when there is none, whole and
 * well-formed, with framing that says where its body ends. */
static bool final_head(const char *p, size_t n, size_t at, bool head_method, fz_head_t *h) {
  memset(h, 0, sizeof *h);
  for (int informational = 0;; informational++) {
    h->start = at;
    if (!head_at(p, n, at, h))
      return false;
    if (h->status >= 200)
      break;
    if (h->status == 101 || informational == 16)
      return false;
    h->first_1xx |= informational == 0;
    at = h->end;
  }
  if (bodyless(h, head_method))
    return true;
  return h->lengths <= 1 && h->codings <= 1 && !(h->lengths && h->codings) &&
         (!h->codings || (h->chunked && h->version == 11));
}

/* The body after head h: its bytes (malloc'd), whether it is whole, and
 * where it ends when it is. */
static void body_after(const fz_head_t *h, const fz_conn_t *conn, bool head_method, char **body,
                       size_t *len, bool *whole, size_t *end) {
  const char *p = conn->out;
  size_t n = conn->out_len, at = h->end, left = n - at;
  *body = NULL;
  *len = 0;
  *end = at;
  *whole = true;
  if (bodyless(h, head_method))
    return;
  if (h->codings) {
    size_t used = 0;
    *whole = fz_dechunk(p + at, left, 0, &used, body, len) == 0;
    *end = at + used;
    return;
  }
  size_t take = h->lengths ? (h->length < left ? (size_t)h->length : left) : left;
  *body = malloc(take + 1);
  if (!*body)
    abort();
  memcpy(*body, p + at, take);
  *len = take;
  *whole = h->lengths ? h->length <= left : conn->ended;
  *end = at + take;
}

/* ---- The checks ---------------------------------------------------------------------- */

static void check_head(const fz_t *x, const fz_call_t *c, const char *p, const fz_head_t *h,
                       bool head_method) {
  if (c->status != h->status || c->version != h->version || strlen(c->reason) != h->reason.len ||
      memcmp(c->reason, p + h->reason.at, h->reason.len))
    fz_fail("status line: keel read %d %d \"%s\", the bytes say %d %d", c->status, c->version,
            c->reason, h->status, h->version);
  if (c->nfields != h->nfields)
    fz_fail("keel read %zu fields, the bytes hold %zu", c->nfields, h->nfields);
  for (size_t i = 0; i < c->nfields; i++) {
    const fz_field_t *f = &c->fields[i];
    fz_span_t name = h->names[i], value = h->values[i];
    if (strlen(f->name) != name.len || memcmp(f->name, p + name.at, name.len) ||
        strlen(f->value) != value.len || memcmp(f->value, p + value.at, value.len))
      fz_fail("field %zu: keel read \"%s: %s\"", i, f->name, f->value);
  }
  if (h->end - h->start > x->max_header_bytes || h->nfields > x->max_headers)
    fz_fail("keel took a head of %zu bytes and %zu fields", h->end - h->start, h->nfields);
  int64_t want = bodyless(h, head_method) ? 0 : h->codings || !h->lengths ? -1 : (int64_t)h->length;
  if (c->content_length != want)
    fz_fail("keel's length is %lld, the framing says %lld", (long long)c->content_length,
            (long long)want);
}

static void check_body(const fz_t *x, const fz_call_t *c, const char *body, size_t len,
                       bool whole) {
  if (c->body_len > len || (c->body_len && memcmp(c->body, body, c->body_len)))
    fz_fail("keel's %zu body bytes are not the start of the %zu the framing covers", c->body_len,
            len);
  if (c->body_end && (!whole || c->body_len != len))
    fz_fail("keel's body ended after %zu bytes where the framing says it does not", c->body_len);
  if (c->body_end && (c->read == FZ_READ_BODY || c->read == FZ_READ_FETCH) &&
      c->body_len > x->max_body)
    fz_fail("keel read a body of %zu bytes past max_body", c->body_len);
}

/* Whether a connection may carry another request after this exchange. */
static bool reusable(const fz_t *x, const fz_call_t *c, const fz_head_t *h, bool whole,
                     bool head_method) {
  bool framed = bodyless(h, head_method) || h->codings || h->lengths;
  bool keep = h->version == 11 ? !h->close : h->keep_alive && !h->close;
  bool expect_refused = c->method == FZ_POST_EXPECT && !h->first_1xx;
  return whole && framed && keep && !x->close_req && !expect_refused;
}

static void check_calls(const fz_t *x) {
  size_t pos[FZ_MAX_CONNS] = {0};
  bool used[FZ_MAX_CONNS] = {0};
  int idle = -1; /* the connection the last call left for the next */
  for (size_t i = 0; i < x->ncalls; i++) {
    const fz_call_t *c = &x->calls[i];
    if (c->rc != 0) {
      idle = -1;
      continue;
    }
    if (c->conn < 0)
      fz_fail("call %zu opened, but its request never reached the server", i);
    if (c->reused ? c->conn != idle : used[c->conn])
      fz_fail("call %zu %s connection %d (the one left for it: %d)", i,
              c->reused ? "says it reused" : "went unannounced over an old", c->conn, idle);
    used[c->conn] = true;
    const fz_conn_t *conn = &x->conns[c->conn];
    bool head_method = c->method == FZ_HEAD;
    fz_head_t h;
    if (!final_head(conn->out, conn->out_len, c->reused ? pos[c->conn] : 0, head_method, &h))
      fz_fail("call %zu opened on connection %d's bytes from %zu, which hold no whole response", i,
              c->conn, c->reused ? pos[c->conn] : 0);
    check_head(x, c, conn->out, &h, head_method);
    char *body;
    size_t len, end;
    bool whole;
    body_after(&h, conn, head_method, &body, &len, &whole, &end);
    check_body(x, c, body, len, whole);
    free(body);
    pos[c->conn] = end;
    idle = reusable(x, c, &h, whole, head_method) ? c->conn : -1;
  }
}

/* ---- The input -------------------------------------------------------------------------- */

static void cut_segments(fz_t *x, const uint8_t *p, size_t n) {
  for (size_t at = 0; x->nseg < 256;) {
    const uint8_t *sep = memmem(p + at, n - at, FZ_SEP, FZ_SEP_LEN);
    size_t len = sep ? (size_t)(sep - (p + at)) : n - at;
    x->seg[x->nseg] = p + at;
    x->seg_len[x->nseg++] = len;
    if (!sep)
      break;
    at += len + FZ_SEP_LEN;
  }
}

static void fz_init(fz_t *x, const uint8_t *data, size_t size) {
  memset(x, 0, sizeof *x);
  x->ctrl = data;
  cut_segments(x, data + 4, size - 4);
  unsigned limits = data[1];
  x->limits = (keel_http_client_opts_t){
      .max_header_bytes = limits & 1 ? 256 : 0,
      .max_headers = limits & 2 ? 4 : 0,
      .max_body = limits & 4 ? 64 : 0,
      .no_retry = limits & 8,
  };
  x->max_header_bytes = limits & 1 ? 256 : KEEL_HTTP_CLIENT_DEFAULT_MAX_HEADER_BYTES;
  x->max_headers = limits & 2 ? 4 : 100;
  x->max_body = limits & 4 ? 64 : KEEL_HTTP_CLIENT_DEFAULT_MAX_BODY;
  x->close_req = limits & 16;
  x->ncalls = 1 + (data[0] & 3);
  for (size_t i = 0; i < x->ncalls; i++) {
    x->calls[i].method = (fz_method_t)(((data[0] >> 2 & 3) + i) % FZ_NMETHODS);
    x->calls[i].read = (fz_read_t)(((data[0] >> 5) + i) % FZ_NREADS);
    x->calls[i].conn = -1;
  }
}

static void fz_free(fz_t *x) {
  for (size_t i = 0; i < x->ncalls; i++) {
    fz_call_t *c = &x->calls[i];
    for (size_t f = 0; f < c->nfields; f++) {
      free(c->fields[f].name);
      free(c->fields[f].value);
    }
    free(c->fields);
    free(c->reason);
    free(c->body);
  }
  for (size_t i = 0; i < x->nconns; i++)
    free(x->conns[i].out);
}

static void show_run(const fz_t *x) {
  for (size_t i = 0; i < x->ncalls; i++) {
    const fz_call_t *c = &x->calls[i];
    fprintf(stderr,
            "call %zu: method %d read %d: %d (%s), conn %d%s, status %d, %zu fields, "
            "length %lld, body %zu bytes%s\n",
            i, c->method, c->read, c->rc, keel_strerror(c->rc), c->conn, c->reused ? " reused" : "",
            c->status, c->nfields, (long long)c->content_length, c->body_len,
            c->body_end ? " (whole)" : "");
  }
  for (size_t i = 0; i < x->nconns; i++)
    fprintf(stderr, "connection %zu: %zu bytes%s\n", i, x->conns[i].out_len,
            x->conns[i].ended ? ", ended by the server" : "");
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *env = getenv("FZ_SHOW");
  show = env && *env && strcmp(env, "0") != 0;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 4)
    return 0;
  static fz_t x; /* big: not on the stack */
  fz_init(&x, data, size);
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  cfg.workers = 1;
  cfg.lab_seed = (uint64_t)data[3] + 1;
  cfg.no_stack_guard_handler = true;
  int rc = keel_run(&cfg, fz_main, &x);
  if (show)
    show_run(&x);
  if (rc != 0)
    fz_fail("keel_run: %s", keel_strerror(rc));
  check_calls(&x);
  fz_free(&x);
  return 0;
}
