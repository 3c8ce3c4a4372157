/* The HTTP fuzz targets' connection (http_request, http_chunked): keel's
 * HTTP/1.1 server connection code (llhttp in strict mode, keel's own
 * reading of request heads, body decoding, the connection loop,
 * responses), fed as the network would feed it.
 *
 * Each input runs in a lab-mode runtime: the virtual clock makes every
 * timeout instant, the seeded scheduler makes a run replay. A client
 * writes the client's bytes into one end of a lab pipe, in pieces, and
 * reads every byte of the other end, which keel_http_serve_stream serves
 * with a handler that reads bodies in the ways an application does and
 * answers. Once the connection has ended, http_check.c checks the bytes
 * both ways; the handler checks each request keel hands it. A violation
 * aborts. FZ_SHOW=1 prints the bytes both ways of each run (to read a
 * crash).
 *
 * The control bytes (FZ_CTRL of them, before the client's bytes):
 *   ctrl[0] bits 0-1  the server's limits (profiles below)
 *           bit 2     the client shuts down writing after its last byte
 *                     (else it stays open: the server's timeouts end it)
 *           bit 3     the pipe moves random parts of each read and write
 *           bit 4     a slow client: 3 s of virtual time between pieces
 *           bits 5-7  what the handler does with the first request, plus 8
 *                     when ctrl[3]'s top bit is set (fz_style_t; the
 *                     requests after it take the next ways in turn)
 *   ctrl[1], ctrl[2]  sizes of the pieces the client writes, in turn (0:
 *                     the rest); each piece reaches the server alone
 *   ctrl[3]           the lab seed */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "fuzz-http.h"

#define FZ_DEADLINE_NS (3600 * KEEL_NS_PER_SEC) /* virtual: far past every timeout */
#define FZ_SLOW_GAP_NS (3 * KEEL_NS_PER_SEC)

/* The server's limits: defaults, small ones, short timeouts and few
 * requests, middle-sized ones. */
static const keel_http_server_opts_t fz_profiles[4] = {
    {0},
    {.max_url = 40,
     .max_header_bytes = 256,
     .max_headers = 6,
     .max_body = 64,
     .request_timeout_ms = 1,
     .no_date = true,
     .server_name = "fz"},
    {.max_requests = 3,
     .header_timeout_ms = 50,
     .body_timeout_ms = 20,
     .keepalive_timeout_ms = 30,
     .no_date = true},
    {.max_url = 512, .max_header_bytes = 1024, .max_headers = 20, .max_body = 4096},
};

/* One input's connection, on the keel side. */
typedef struct fz_conn {
  fz_run_t *run;
  const uint8_t *ctrl;
  keel_http_server_opts_t opts;
  keel_stream_t *client, *server;
  size_t pieces[2];
  int64_t gap_ns;
  int serve_rc;
  bool hung;
} fz_conn_t;

/* ---- Failing ---------------------------------------------------------------- */

static bool show; /* FZ_SHOW=1: print every run's bytes both ways */

static void dump(const char *label, const void *p, size_t n, size_t from, size_t max) {
  const unsigned char *b = p;
  size_t to = from + max < n ? from + max : n;
  fprintf(stderr, "%s [%zu..%zu of %zu]: \"", label, from, to, n);
  for (size_t i = from; i < to; i++) {
    if (b[i] == '\r')
      fputs("\\r", stderr);
    else if (b[i] == '\n')
      fputs("\\n", stderr);
    else if (b[i] == '"' || b[i] == '\\')
      fprintf(stderr, "\\%c", b[i]);
    else if (b[i] >= 0x20 && b[i] < 0x7f)
      fputc(b[i], stderr);
    else
      fprintf(stderr, "\\x%02x", b[i]);
  }
  fputs("\"\n", stderr);
}

_Noreturn void fz_fail(const fz_run_t *run, ptrdiff_t at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("http: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (run) {
    dump("client sent", run->in, run->in_len, 0, 1024);
    size_t from = at > 64 ? (size_t)at - 64 : 0;
    dump("server sent", run->out, run->out_len, at >= 0 ? from : 0, 1024);
    fprintf(stderr, "requests the handler saw: %zu\n", run->ncalls);
  }
  abort();
}

/* ---- Buffers -------------------------------------------------------------------- */

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
  memcpy(*buf + *len, p, n);
  *len += n;
  (*buf)[*len] = '\0';
}

static char *copy(const char *s) {
  char *c = strdup(s);
  if (!c)
    abort();
  return c;
}

/* ---- What keel hands the handler ------------------------------------------------ */

static bool all_tokens(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch && strchr("!#$%&'*+-.^_`|~", ch));
    if (!ok)
      return false;
  }
  return n > 0;
}

/* A field value: no CR, LF, NUL or other control but HTAB; no whitespace
 * at either end. */
static bool value_ok(const char *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)v[i];
    if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
      return false;
  }
  return n == 0 || (v[0] != ' ' && v[0] != '\t' && v[n - 1] != ' ' && v[n - 1] != '\t');
}

static void check_line(fz_run_t *run, keel_http_request_t *req, fz_call_t *call) {
  const char *m = keel_http_method(req), *t = keel_http_target(req);
  const char *path = keel_http_path(req), *query = keel_http_query(req);
  size_t tl = strlen(t);
  if (!all_tokens(m, strlen(m)) || strcmp(m, "CONNECT") == 0)
    fz_fail(run, -1, "method \"%s\" reached the handler", m);
  if (tl == 0 || tl > run->max_url)
    fz_fail(run, -1, "a target of %zu bytes reached the handler", tl);
  for (size_t i = 0; i < tl; i++)
    if ((unsigned char)t[i] <= 0x20 || (unsigned char)t[i] >= 0x7f)
      fz_fail(run, -1, "target byte 0x%02x reached the handler", (unsigned char)t[i]);
  bool star = strcmp(t, "*") == 0;
  if ((star && (strcmp(m, "OPTIONS") != 0 || strcmp(path, "*") != 0)) ||
      (!star && path[0] != '/') || (!strchr(t, '?') && query[0] != '\0'))
    fz_fail(run, -1, "target \"%s\" split as path \"%s\", query \"%s\"", t, path, query);
  int v = keel_http_version(req);
  if (v != 10 && v != 11)
    fz_fail(run, -1, "version %d", v);
  call->method = copy(m);
  call->target = copy(t);
  call->version = v;
  call->head = strcmp(m, "HEAD") == 0;
}

typedef struct fz_framing {
  int lengths, codings, hosts, expects, other_expects;
  int64_t length;
  bool last_chunked;
} fz_framing_t;

/* Whether the last coding of a Transfer-Encoding list is chunked (empty
 * list elements do not count: RFC 9110 §5.6.1). */
static bool last_coding_chunked(const char *v) {
  bool chunked = false;
  for (const char *p = v; *p;) {
    size_t n = strcspn(p, ","), a = 0, b = n;
    while (a < b && (p[a] == ' ' || p[a] == '\t'))
      a++;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
      b--;
    if (b > a)
      chunked = b - a == 7 && strncasecmp(p + a, "chunked", 7) == 0;
    p += n + (p[n] == ',');
  }
  return chunked;
}

static void note_field(fz_framing_t *f, const keel_http_header_t *h) {
  if (strcasecmp(h->name, "content-length") == 0) {
    f->lengths++;
    char *end;
    f->length = (int64_t)strtoll(h->value, &end, 10);
  } else if (strcasecmp(h->name, "transfer-encoding") == 0) {
    f->codings++;
    f->last_chunked = last_coding_chunked(h->value);
  } else if (strcasecmp(h->name, "host") == 0) {
    f->hosts++;
  } else if (strcasecmp(h->name, "expect") == 0) {
    f->expects++;
    f->other_expects += strcasecmp(h->value, "100-continue") != 0;
  }
}

/* The fields, and the framing rules of RFC 9112 §6 that keep a request
 * from being read two ways. */
static void check_fields(fz_run_t *run, keel_http_request_t *req, fz_call_t *call) {
  size_t n = keel_http_header_count(req);
  if (n > run->max_headers || keel_http_header_at(req, n) != NULL)
    fz_fail(run, -1, "%zu fields reached the handler", n);
  fz_framing_t f = {0};
  for (size_t i = 0; i < n; i++) {
    const keel_http_header_t *h = keel_http_header_at(req, i);
    if (strlen(h->name) != h->name_len || !all_tokens(h->name, h->name_len) ||
        strlen(h->value) != h->value_len || !value_ok(h->value, h->value_len))
      fz_fail(run, -1, "field %zu (\"%s\") reached the handler malformed", i, h->name);
    note_field(&f, h);
  }
  int64_t cl = keel_http_content_length(req);
  bool te_ok = f.codings == 1 && f.lengths == 0 && call->version == 11 && f.last_chunked;
  bool cl_ok = f.codings == 0 && f.lengths == 1 && f.length == cl && cl >= 0;
  bool none_ok = f.codings == 0 && f.lengths == 0 && cl == 0;
  if (!(cl == -1 ? te_ok : cl_ok || none_ok) || (cl > 0 && (uint64_t)cl > run->max_body))
    fz_fail(run, -1, "framing: %d Content-Length, %d Transfer-Encoding, length %lld", f.lengths,
            f.codings, (long long)cl);
  if (f.hosts > 1 || (call->version == 11 && f.hosts != 1))
    fz_fail(run, -1, "%d Host fields in an HTTP/1.%d request", f.hosts, call->version % 10);
  if (call->version == 11 && f.other_expects)
    fz_fail(run, -1, "an Expect other than 100-continue reached the handler");
  call->content_length = cl;
  call->nheaders = n;
  call->expect_continue = call->version == 11 && f.expects > 0;
}

/* ---- Bodies ---------------------------------------------------------------------- */

static void body_grew(fz_run_t *run, fz_call_t *call, const void *p, size_t n) {
  append(&call->body, &call->body_len, &call->body_cap, p, n);
  if (call->body_len > run->max_body ||
      (call->content_length >= 0 && call->body_len > (uint64_t)call->content_length))
    fz_fail(run, -1, "a body of %zu bytes read (length %lld, limit %zu)", call->body_len,
            (long long)call->content_length, run->max_body);
}

static void body_ended(fz_run_t *run, fz_call_t *call) {
  call->body_complete = true;
  if (call->content_length >= 0 && call->body_len != (uint64_t)call->content_length)
    fz_fail(run, -1, "the body ended after %zu of %lld bytes", call->body_len,
            (long long)call->content_length);
}

/* A failed read fails again the same way. */
static ssize_t read_failed(fz_run_t *run, keel_http_request_t *req, ssize_t rc) {
  char b;
  ssize_t again = keel_http_read(req, &b, 1);
  if (again != rc)
    fz_fail(run, -1, "a body read failed with %zd, then %zd", rc, again);
  return rc;
}

/* Reads up to limit bytes 1, 2, ... 7 at a time. */
static ssize_t read_pieces(fz_run_t *run, keel_http_request_t *req, fz_call_t *call, size_t limit) {
  char buf[8];
  for (size_t piece = 1; call->body_len < limit; piece = piece % 7 + 1) {
    ssize_t n = keel_http_read(req, buf, piece);
    if (n < 0)
      return read_failed(run, req, n);
    if (n == 0) {
      body_ended(run, call);
      if (keel_http_read(req, buf, piece) != 0)
        fz_fail(run, -1, "a read after the end of the body did not return 0");
      return 0;
    }
    if ((size_t)n > piece)
      fz_fail(run, -1, "a read of %zu bytes returned %zd", piece, n);
    body_grew(run, call, buf, (size_t)n);
  }
  return 0;
}

static ssize_t read_whole(fz_run_t *run, keel_http_request_t *req, fz_call_t *call) {
  const void *data;
  size_t len;
  int rc = keel_http_body(req, &data, &len);
  if (rc < 0)
    return read_failed(run, req, rc);
  if (((const char *)data)[len] != '\0')
    fz_fail(run, -1, "keel_http_body's body is not NUL-terminated");
  body_grew(run, call, data, len);
  body_ended(run, call);
  return 0;
}

/* ---- Answers --------------------------------------------------------------------- */

static void noted(keel_http_response_t *res, fz_call_t *call, int status, const char *body,
                  size_t len) {
  if (!keel_http_responded(res) || call->responded)
    return;
  call->responded = true;
  call->status = status;
  append(&call->resp, &call->resp_len, &call->resp_cap, body, len);
}

/* What the handler says: the request as it saw it. */
static int text(const fz_call_t *call, char *buf, size_t cap) {
  return snprintf(buf, cap, "%s %.64s %d fields=%zu body=%zu\n", call->method, call->target,
                  call->version, call->nheaders, call->body_len);
}

static int send_text(keel_http_response_t *res, fz_call_t *call, int status) {
  char buf[160];
  int n = text(call, buf, sizeof buf);
  int rc = keel_http_set_status(res, status);
  if (rc == 0)
    rc = keel_http_send(res, buf, (size_t)n);
  noted(res, call, status, buf, (size_t)n);
  return rc;
}

/* Two writes of a streamed body: chunked with a trailer (HTTP/1.1), to the
 * end of the connection (1.0), or of a declared length. */
static int stream_text(keel_http_response_t *res, fz_call_t *call, bool declared) {
  char buf[160], len[24];
  int n = text(call, buf, sizeof buf), rc = 0;
  if (declared) {
    snprintf(len, sizeof len, "%d", n);
    rc = keel_http_add_header(res, "Content-Length", len);
  } else {
    rc = keel_http_add_trailer(res, "X-Fz-Sum", "1");
  }
  ssize_t w = rc < 0 ? rc : keel_http_write(res, buf, (size_t)n / 2);
  noted(res, call, 200, buf, (size_t)n);
  if (w >= 0)
    w = keel_http_write(res, buf + n / 2, (size_t)(n - n / 2));
  if (w >= 0 && declared)
    w = keel_http_finish(res);
  return w < 0 ? (int)w : 0;
}

static int run_style(fz_run_t *run, keel_http_request_t *req, keel_http_response_t *res,
                     fz_call_t *call) {
  ssize_t rc = 0;
  switch ((fz_style_t)call->style) {
  case FZ_BODY_SEND:
    return (rc = read_whole(run, req, call)) < 0 ? (int)rc : send_text(res, call, 200);
  case FZ_PIECES_SEND:
    return (rc = read_pieces(run, req, call, SIZE_MAX)) < 0 ? (int)rc : send_text(res, call, 201);
  case FZ_PIECES_STREAM:
    return (rc = read_pieces(run, req, call, SIZE_MAX)) < 0 ? (int)rc : stream_text(res, call, 0);
  case FZ_DECLARED:
    return (rc = read_whole(run, req, call)) < 0 ? (int)rc : stream_text(res, call, 1);
  case FZ_UNREAD_204:
    return send_text(res, call, 204);
  case FZ_SEND_THEN_READ:
    rc = send_text(res, call, 202);
    return rc < 0 ? (int)rc : (int)read_whole(run, req, call);
  case FZ_SLEEP:
    rc = keel_sleep_ms(2);
    return rc < 0 ? (int)rc : send_text(res, call, 200);
  case FZ_FAIL:
    rc = read_pieces(run, req, call, 3);
    return rc < 0 ? (int)rc : -EIO;
  case FZ_NO_ANSWER:
    return 0;
  case FZ_CLOSE_304:
    rc = keel_http_add_header(res, "Connection", "close");
    return rc < 0 ? (int)rc : send_text(res, call, 304);
  case FZ_NSTYLES:
    break;
  }
  abort();
}

static fz_call_t *call_new(fz_run_t *run) {
  if (run->ncalls == run->calls_cap) {
    size_t cap = run->calls_cap ? run->calls_cap * 2 : 8;
    fz_call_t *grown = realloc(run->calls, cap * sizeof *grown);
    if (!grown)
      abort();
    run->calls = grown;
    run->calls_cap = cap;
  }
  fz_call_t *call = &run->calls[run->ncalls++];
  memset(call, 0, sizeof *call);
  return call;
}

static int handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx) {
  fz_conn_t *x = ctx;
  fz_run_t *run = x->run;
  fz_call_t *call = call_new(run);
  size_t first = (size_t)(x->ctrl[0] >> 5) + (x->ctrl[3] & 0x80 ? 8 : 0);
  call->style = (int)((first + run->ncalls - 1) % FZ_NSTYLES);
  check_line(run, req, call);
  check_fields(run, req, call);
  int rc = run_style(run, req, res, call);
  call->cut_short = keel_cancelled() != KEEL_CANCEL_NONE;
  return rc;
}

/* ---- The connection ---------------------------------------------------------------- */

static int server_task(void *arg) {
  fz_conn_t *x = arg;
  x->serve_rc = keel_http_serve_stream(x->server, &x->opts);
  return 0;
}

/* Writes the input in pieces; each reaches the server before the next. */
static int writer_task(void *arg) {
  fz_conn_t *x = arg;
  const fz_run_t *run = x->run;
  size_t at = 0;
  for (unsigned turn = 0; at < run->in_len; turn++) {
    size_t piece = x->pieces[turn % 2];
    if (piece == 0 || piece > run->in_len - at)
      piece = run->in_len - at;
    if (at > 0 && keel_sleep_ns(x->gap_ns) < 0)
      return 0;
    if (keel_write_all(x->client, run->in + at, piece, NULL) < 0)
      return 0; /* the server closed: it may */
    at += piece;
  }
  if (run->half_close)
    keel_stream_shutdown(x->client, SHUT_WR);
  return 0;
}

static int reader_task(void *arg) {
  fz_conn_t *x = arg;
  fz_run_t *run = x->run;
  char buf[4096];
  for (;;) {
    ssize_t n = keel_read(x->client, buf, sizeof buf);
    if (n <= 0) {
      run->read_end = n;
      return 0;
    }
    append(&run->out, &run->out_len, &run->out_cap, buf, (size_t)n);
  }
}

static int spawn(keel_scope_t *scope, keel_task_fn fn, fz_conn_t *x, const char *name) {
  keel_spawn_opts_t so = {.name = name};
  return keel_spawn(scope, fn, x, &so);
}

static int fz_main(void *arg) {
  fz_conn_t *x = arg;
  /* 16 KiB a direction: the pipe's buffers then come from ASan's size
   * classes, not a mapping of their own made and unmade per input. */
  keel_lab_faults_t faults = {.capacity = 16 * 1024, .short_permille = x->ctrl[0] & 8 ? 300 : 0};
  if (keel_lab_pipe(&faults, &x->client, &x->server) < 0)
    fz_fail(x->run, -1, "keel_lab_pipe failed");
  int64_t start = keel_now_ns();
  keel_scope_opts_t so = {.deadline_ns = start + FZ_DEADLINE_NS, .name = "fz"};
  keel_scope_t *scope;
  if (keel_scope_open(&so, &scope) < 0 || spawn(scope, server_task, x, "fz-server") < 0 ||
      spawn(scope, writer_task, x, "fz-writer") < 0 ||
      spawn(scope, reader_task, x, "fz-reader") < 0)
    fz_fail(x->run, -1, "cannot start the connection's tasks");
  keel_scope_join(scope);
  keel_scope_close(scope);
  keel_close(x->client);
  x->hung = keel_now_ns() - start >= FZ_DEADLINE_NS;
  return 0;
}

void fz_run_free(fz_run_t *run) {
  for (size_t i = 0; i < run->ncalls; i++) {
    free(run->calls[i].method);
    free(run->calls[i].target);
    free(run->calls[i].body);
    free(run->calls[i].resp);
  }
  free(run->calls);
  free(run->out);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *env = getenv("FZ_SHOW");
  show = env && *env && strcmp(env, "0") != 0;
  return 0;
}

/* The connection and the run of one input. */
static void conn_init(fz_conn_t *x, fz_run_t *run, const uint8_t *ctrl, const uint8_t *in,
                      size_t in_len) {
  *x = (fz_conn_t){.run = run, .ctrl = ctrl, .opts = fz_profiles[ctrl[0] & 3]};
  x->opts.handler = handler;
  x->opts.ctx = x;
  x->pieces[0] = ctrl[1];
  x->pieces[1] = ctrl[2];
  x->gap_ns = ctrl[0] & 16 ? FZ_SLOW_GAP_NS : 1;
  const keel_http_server_opts_t *o = &x->opts;
  *run = (fz_run_t){
      .in = in,
      .in_len = in_len,
      .max_body = o->max_body ? o->max_body : KEEL_HTTP_DEFAULT_MAX_BODY,
      .max_headers = o->max_headers ? o->max_headers : KEEL_HTTP_DEFAULT_MAX_HEADERS,
      .max_url = o->max_url ? o->max_url : KEEL_HTTP_DEFAULT_MAX_URL,
      .half_close = (ctrl[0] & 4) != 0,
  };
}

/* Everything the run must show once keel_run has returned rc. */
static void check_run(const fz_conn_t *x, const fz_run_t *run, int rc) {
  if (rc != 0)
    fz_fail(run, -1, "keel_run: %s", keel_strerror(rc));
  if (x->hung)
    fz_fail(run, -1, "the connection did not end within an hour of virtual time");
  if (x->serve_rc != 0)
    fz_fail(run, -1, "keel_http_serve_stream: %s", keel_strerror(x->serve_rc));
  if (show) {
    dump("client sent", run->in, run->in_len, 0, SIZE_MAX / 2);
    dump("server sent", run->out, run->out_len, 0, SIZE_MAX / 2);
    fprintf(stderr, "requests the handler saw: %zu\n", run->ncalls);
  }
  fz_check_output(run);
  fz_check_requests(run);
}

void fz_http_run(const uint8_t *ctrl, const uint8_t *in, size_t in_len, fz_run_t *run) {
  fz_conn_t x;
  conn_init(&x, run, ctrl, in, in_len);
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  cfg.workers = 1;
  cfg.lab_seed = (uint64_t)ctrl[3] + 1;
  cfg.no_stack_guard_handler = true; /* the sanitizers' own handler reports faults */
  check_run(&x, run, keel_run(&cfg, fz_main, &x));
}
