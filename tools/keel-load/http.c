/* keel-load's http mode: HTTP/1.1 keep-alive GETs with every response
 * checked.
 *
 * Each connection sends `GET --path HTTP/1.1` with a Host field and nothing
 * else, `pipeline` requests outstanding (or, with --conn-rate, one at a
 * time when each is due), and reads every response. A response must be
 * HTTP/1.1 with the status --status, framed by Content-Length, and, with
 * --expect-body, carry exactly those bytes. A chunked or unframed
 * response, a response nobody asked for, or any other failed check is a
 * mismatch and ends the connection; an end of stream is an error. After a
 * response that announces Connection: close (a server's limit of requests
 * per connection), the connection is opened again and counted as a
 * reconnect; the requests it still had outstanding count as unanswered.
 *
 * The response reader is written apart from keel's HTTP client on purpose
 * (as wsframe.c is from keel's WebSocket layer): a bug the two shared
 * would not pass unseen. It reads what a load generator needs and refuses
 * the rest. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "load.h"

#define HTTP_MAX_PIPELINE 1024
#define HTTP_MAX_HEAD 8192 /* a response head, at most */
#define HTTP_MAX_BODY_EXPECTED 65536
#define HTTP_MAX_CONTENT_LENGTH (UINT64_C(1) << 40)
/* Request bytes written and not yet answered stay under this bound (one
 * task writes and reads a connection: see echo.c). */
#define HTTP_BATCH_MAX (64 * 1024)

typedef struct http_cfg {
  char path[256];
  char host_port[300];
  long pipeline;
  long status;
  char *body; /* --expect-body, or NULL: any body */
  size_t body_len;
  char *batch; /* the request, pipeline times over */
  size_t request_len;
} http_cfg_t;

/* One connection's state, on its task's stack; sent_ns and rx are one
 * allocation. A response body being read has body_left bytes to come,
 * body_off bytes of it checked. */
typedef struct http_conn {
  load_conn_t *lc;
  keel_stream_t *stream;
  const http_cfg_t *cfg;
  load_pace_t pace;
  uint64_t wr_seq, rd_seq;
  int64_t *sent_ns; /* [seq % pipeline]: when the request was due or written */
  char *rx;
  size_t rx_len;
  bool in_body;
  bool close_after; /* the response being read announced Connection: close */
  bool closed;      /* ... and has been read: the connection is done */
  uint64_t body_left, body_off, response_bytes;
} http_conn_t;

enum { OPT_PATH = LOAD_MODE_OPT_BASE, OPT_PIPELINE, OPT_STATUS, OPT_EXPECT_BODY };

static const struct option http_options[] = {
    {"path", required_argument, NULL, OPT_PATH},
    {"pipeline", required_argument, NULL, OPT_PIPELINE},
    {"status", required_argument, NULL, OPT_STATUS},
    {"expect-body", required_argument, NULL, OPT_EXPECT_BODY},
    {NULL, 0, NULL, 0},
};

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* Counts a failed check and says what it was. Returns 1: the connection
 * is out of step and ends. */
__attribute__((format(printf, 2, 3))) static int failed(http_conn_t *h, const char *fmt, ...) {
  char why[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  h->lc->worker->mismatches++;
  load_complain(h->lc->worker->load, h->lc->id, "response %llu: %s", (unsigned long long)h->rd_seq,
                why);
  return 1;
}

/* ---- Sending -------------------------------------------------------------------- */

/* Paced: the next request when it is due. Unpaced: as many as the window
 * allows, in one write. */
static int http_write(http_conn_t *h) {
  const http_cfg_t *cfg = h->cfg;
  int64_t due;
  int rc = load_pace_wait(&h->pace, &due);
  if (rc < 0)
    return rc;
  uint64_t n = h->pace.interval_ns > 0 ? 1 : (uint64_t)cfg->pipeline - (h->wr_seq - h->rd_seq);
  for (uint64_t i = 0; i < n; i++)
    h->sent_ns[(h->wr_seq + i) % (uint64_t)cfg->pipeline] = due;
  h->wr_seq += n;
  return keel_write_all(h->stream, cfg->batch, (size_t)n * cfg->request_len, NULL);
}

/* ---- Receiving ------------------------------------------------------------------ */

/* Length of the head at the start of buf (through its blank line), or 0
 * while it is incomplete. */
static size_t head_len(const char *buf, size_t len) {
  for (size_t i = 3; i < len; i++)
    if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
      return i + 1;
  return 0;
}

/* Does the comma-separated field value [v, end) hold the token tok? */
static bool has_token(const char *v, const char *end, const char *tok) {
  size_t tlen = strlen(tok);
  while (v < end) {
    while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
      v++;
    const char *t = v;
    while (v < end && *v != ',')
      v++;
    const char *te = v;
    while (te > t && (te[-1] == ' ' || te[-1] == '\t'))
      te--;
    if ((size_t)(te - t) == tlen && strncasecmp(t, tok, tlen) == 0)
      return true;
  }
  return false;
}

/* A whole decimal Content-Length in [v, end), or -1. */
static int64_t parse_length(const char *v, const char *end) {
  uint64_t n = 0;
  if (v == end)
    return -1;
  for (; v < end; v++) {
    if (*v < '0' || *v > '9' || n > HTTP_MAX_CONTENT_LENGTH)
      return -1;
    n = n * 10 + (uint64_t)(*v - '0');
  }
  return n > HTTP_MAX_CONTENT_LENGTH ? -1 : (int64_t)n;
}

/* Goes through the header fields of a head (after its status line, up to
 * its blank line) for the framing and Connection: close. Returns NULL, or
 * what is wrong with them. */
static const char *read_fields(const char *p, const char *end, int64_t *length, bool *close) {
  *length = -1;
  *close = false;
  while (p < end) {
    const char *eol = memchr(p, '\r', (size_t)(end - p));
    if (eol == NULL || eol + 1 >= end || eol[1] != '\n')
      return "a header line not ended by CRLF";
    if (eol == p)
      break; /* the blank line */
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (colon == NULL || colon == p)
      return "a header line without a name";
    const char *v = colon + 1, *ve = eol;
    while (v < ve && (*v == ' ' || *v == '\t'))
      v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
      ve--;
    size_t nlen = (size_t)(colon - p);
    if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
      int64_t n = parse_length(v, ve);
      if (n < 0 || (*length >= 0 && *length != n))
        return "a bad or conflicting Content-Length";
      *length = n;
    } else if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0) {
      return "a Transfer-Encoding (only Content-Length bodies are read)";
    } else if (nlen == 10 && strncasecmp(p, "connection", 10) == 0) {
      *close = *close || has_token(v, ve, "close");
    }
    p = eol + 2;
  }
  return *length < 0 ? "no Content-Length" : NULL;
}

/* The response for request rd_seq is read whole. */
static void response_end(http_conn_t *h, int64_t now) {
  h->in_body = false;
  h->closed = h->close_after;
  load_record(h->lc, h->sent_ns[h->rd_seq % (uint64_t)h->cfg->pipeline], now, h->response_bytes);
  h->rd_seq++;
}

/* The length of the first line of a head (at most 60 bytes), to quote it. */
static int line_len(const char *p, size_t len) {
  const char *cr = memchr(p, '\r', len);
  size_t n = cr ? (size_t)(cr - p) : len;
  return (int)min_size(n, 60);
}

/* Judges a response head of len bytes at p. 0, or 1 after a failed check. */
static int head(http_conn_t *h, const char *p, size_t len, int64_t now) {
  const http_cfg_t *cfg = h->cfg;
  if (h->rd_seq == h->wr_seq)
    return failed(h, "a response to no request");
  if (len < 14 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[9] < '1' || p[9] > '5' || p[10] < '0' ||
      p[10] > '9' || p[11] < '0' || p[11] > '9' || (p[12] != ' ' && p[12] != '\r'))
    return failed(h, "not an HTTP/1.1 status line: %.*s", line_len(p, len), p);
  long status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  if (status != cfg->status)
    return failed(h, "status %ld, not %ld", status, cfg->status);
  int64_t length;
  const char *fields = memchr(p, '\n', len);
  const char *why = read_fields(fields + 1, p + len, &length, &h->close_after);
  if (why != NULL)
    return failed(h, "%s", why);
  if (cfg->body != NULL && (uint64_t)length != cfg->body_len)
    return failed(h, "a body of %lld bytes, not %zu", (long long)length, cfg->body_len);
  h->response_bytes = len + (uint64_t)length;
  h->body_left = (uint64_t)length;
  h->body_off = 0;
  h->in_body = true;
  if (length == 0)
    response_end(h, now);
  return 0;
}

/* n bytes of the body being read. */
static int body_data(http_conn_t *h, const char *p, size_t n, int64_t now) {
  const http_cfg_t *cfg = h->cfg;
  if (cfg->body != NULL && memcmp(p, cfg->body + h->body_off, n) != 0) {
    size_t i = 0;
    while (i + 1 < n && p[i] == cfg->body[h->body_off + i])
      i++;
    return failed(h, "the body differs at byte %llu: got 0x%02x, expected 0x%02x",
                  (unsigned long long)(h->body_off + i), (unsigned char)p[i],
                  (unsigned char)cfg->body[h->body_off + i]);
  }
  h->body_off += n;
  h->body_left -= n;
  if (h->body_left == 0)
    response_end(h, now);
  return 0;
}

/* Goes through the bytes in rx; a head cut short stays for the next read.
 * 0, or 1 after a failed check. */
static int parse(http_conn_t *h, int64_t now) {
  size_t pos = 0;
  int rc = 0;
  while (rc == 0 && pos < h->rx_len && !h->closed) {
    if (h->in_body) {
      size_t take = (size_t)min_size((size_t)h->body_left, h->rx_len - pos);
      rc = body_data(h, h->rx + pos, take, now);
      pos += take;
      continue;
    }
    size_t len = head_len(h->rx + pos, h->rx_len - pos);
    if (len == 0) {
      if (pos == 0 && h->rx_len == HTTP_MAX_HEAD)
        rc = failed(h, "no end of the response head in %d bytes", HTTP_MAX_HEAD);
      break;
    }
    rc = head(h, h->rx + pos, len, now);
    pos += len;
  }
  memmove(h->rx, h->rx + pos, h->rx_len - pos);
  h->rx_len -= pos;
  return rc;
}

/* Reads what has arrived. 0, 1 after a failed check, or a negative errno
 * (-EPIPE: the server closed the connection). */
static int http_read(http_conn_t *h) {
  ssize_t n = keel_read(h->stream, h->rx + h->rx_len, HTTP_MAX_HEAD - h->rx_len);
  if (n <= 0)
    return n == 0 ? -EPIPE : (int)n;
  h->rx_len += (size_t)n;
  return parse(h, keel_now_ns());
}

/* After a response with Connection: close: a new connection, the same
 * schedule. What was still outstanding will never be answered. */
static int reopen(http_conn_t *h) {
  h->lc->worker->unanswered += h->wr_seq - h->rd_seq;
  h->wr_seq = h->rd_seq;
  h->rx_len = 0;
  h->in_body = h->closed = false;
  int rc = load_reconnect(h->lc);
  if (rc == 0)
    h->stream = keel_tcp_stream(h->lc->tcp);
  return rc;
}

/* ---- The mode -------------------------------------------------------------------- */

static int http_run(load_conn_t *c) {
  const http_cfg_t *cfg = c->worker->load->mode_cfg;
  http_conn_t h = {.lc = c, .stream = keel_tcp_stream(c->tcp), .cfg = cfg};
  h.sent_ns = malloc((size_t)cfg->pipeline * sizeof *h.sent_ns + HTTP_MAX_HEAD);
  if (h.sent_ns == NULL)
    return -ENOMEM;
  h.rx = (char *)(h.sent_ns + cfg->pipeline);
  load_pace_start(&h.pace, c);
  int rc = 0;
  while (rc == 0) { /* ends by cancellation (the run is over), an error or a failed check */
    if (h.closed)
      rc = reopen(&h);
    else
      rc = h.wr_seq - h.rd_seq < (uint64_t)cfg->pipeline ? http_write(&h) : http_read(&h);
  }
  c->worker->unanswered += h.wr_seq - h.rd_seq;
  free(h.sent_ns);
  return rc > 0 ? 0 : rc;
}

static int http_init(load_t *l) {
  http_cfg_t *cfg = calloc(1, sizeof *cfg);
  if (cfg == NULL)
    return -ENOMEM;
  strcpy(cfg->path, "/");
  cfg->pipeline = 1;
  cfg->status = 200;
  l->mode_cfg = cfg;
  return 0;
}

/* A request target of visible ASCII starting with '/', without the two
 * characters a JSON string would need escaped. */
static int parse_path(const char *value, char *out, size_t cap) {
  size_t len = strlen(value);
  if (len == 0 || len >= cap || value[0] != '/')
    return -EINVAL;
  for (size_t i = 0; i < len; i++)
    if (value[i] <= ' ' || value[i] > '~' || value[i] == '"' || value[i] == '\\')
      return -EINVAL;
  memcpy(out, value, len + 1);
  return 0;
}

static int http_parse_option(load_t *l, int id, const char *value) {
  http_cfg_t *cfg = l->mode_cfg;
  if (id == OPT_PATH)
    return parse_path(value, cfg->path, sizeof cfg->path);
  if (id == OPT_PIPELINE)
    return load_parse_long(value, 1, HTTP_MAX_PIPELINE, &cfg->pipeline);
  if (id == OPT_STATUS)
    return load_parse_long(value, 200, 599, &cfg->status);
  if (id == OPT_EXPECT_BODY) {
    size_t len = strlen(value);
    if (len > HTTP_MAX_BODY_EXPECTED)
      return -EINVAL;
    free(cfg->body);
    cfg->body = strdup(value);
    cfg->body_len = len;
    return cfg->body ? 0 : -EINVAL;
  }
  return -EINVAL;
}

/* The request, pipeline times over, and the checks of the options
 * together. */
static int http_prepare(load_t *l) {
  http_cfg_t *cfg = l->mode_cfg;
  if (l->opts.interval_ns > 0 && cfg->pipeline != 1) {
    fprintf(stderr, "keel-load: --conn-rate sends one request at a time: --pipeline 1\n");
    return -EINVAL;
  }
  const char *host = l->opts.host;
  bool v6 = strchr(host, ':') != NULL;
  snprintf(cfg->host_port, sizeof cfg->host_port, v6 ? "[%s]:%ld" : "%s:%ld", host, l->opts.port);
  char request[700];
  int len = snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", cfg->path,
                     cfg->host_port);
  if (len < 0 || (size_t)len >= sizeof request ||
      (size_t)len * (size_t)cfg->pipeline > HTTP_BATCH_MAX) {
    fprintf(stderr, "keel-load: --pipeline %ld requests of %d bytes are more than %d bytes\n",
            cfg->pipeline, len, HTTP_BATCH_MAX);
    return -EINVAL;
  }
  cfg->request_len = (size_t)len;
  cfg->batch = malloc(cfg->request_len * (size_t)cfg->pipeline);
  if (cfg->batch == NULL)
    return -ENOMEM;
  for (long i = 0; i < cfg->pipeline; i++)
    memcpy(cfg->batch + (size_t)i * cfg->request_len, request, cfg->request_len);
  return 0;
}

static void http_describe(const load_t *l, FILE *out, bool json) {
  const http_cfg_t *cfg = l->mode_cfg;
  long long body = cfg->body ? (long long)cfg->body_len : -1;
  if (json)
    fprintf(out, "\"path\":\"%s\",\"pipeline\":%ld,\"status\":%ld,\"expect_body_len\":%lld,",
            cfg->path, cfg->pipeline, cfg->status, body); /* parse_path let no '"' or '\\' in */
  else
    fprintf(out, " path %s pipeline %ld status %ld", cfg->path, cfg->pipeline, cfg->status);
  if (!json && cfg->body)
    fprintf(out, " body %zu B checked", cfg->body_len);
}

static void http_destroy(load_t *l) {
  http_cfg_t *cfg = l->mode_cfg;
  if (cfg != NULL) {
    free(cfg->body);
    free(cfg->batch);
  }
  free(cfg);
  l->mode_cfg = NULL;
}

const load_mode_t load_http_mode = {
    .name = "http",
    .summary = "HTTP/1.1 keep-alive GETs, check every response's status, framing and body",
    .usage = "  --path P                  request target (default /)\n"
             "  --pipeline K              requests outstanding per connection (default 1)\n"
             "  --status N                the status every response must have (default 200)\n"
             "  --expect-body TEXT        the exact body every response must carry\n"
             "                            (default: any body framed by Content-Length)\n",
    .paced = true,
    .options = http_options,
    .init = http_init,
    .parse_option = http_parse_option,
    .prepare = http_prepare,
    .run_conn = http_run,
    .describe = http_describe,
    .destroy = http_destroy,
};
