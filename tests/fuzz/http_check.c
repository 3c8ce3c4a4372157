/* The checks of the HTTP request fuzz target on what went over the wire,
 * once the connection has ended:
 *   - the server's bytes are a sequence of well-formed HTTP/1.1 responses
 *     (status line, fields, framing that says where each ends), in the
 *     order of the requests, each the one its handler gave; a 4xx or 5xx
 *     (the handler never answers one: keel's own error responses) carries
 *     Connection: close, and so does any response after which bytes
 *     would be lost; nothing follows such a response;
 *   - every request the handler saw starts in the client's bytes where the
 *     one before it ended (head, then the body its framing declares, read
 *     here on our own), and its body is what those bytes hold: the
 *     server never reads a message boundary differently from a plain
 *     reading of the same bytes (request smuggling).
 * Violations abort through fz_fail. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz-http.h"

static void dec_append(char **dec, size_t *dec_len, const char *p, size_t n) {
  if (!dec || n == 0)
    return;
  char *grown = realloc(*dec, *dec_len + n + 1);
  if (!grown)
    abort();
  memcpy(grown + *dec_len, p, n);
  *dec = grown;
  *dec_len += n;
}

/* A line's end at p: 0 with *next after its CRLF, 1 when the bytes end
 * first, -1 at a bare CR or LF, or a control byte other than HTAB. */
static int line_end(const char *p, size_t n, size_t at, size_t *next) {
  for (size_t i = at; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch == '\r') {
      if (i + 1 == n)
        return 1;
      if (p[i + 1] != '\n')
        return -1;
      *next = i + 2;
      return 0;
    }
    if (ch == '\n' || (ch < 0x20 && ch != '\t') || ch == 0x7f)
      return -1;
  }
  return 1;
}

/* ---- Responses ---------------------------------------------------------------- */

typedef struct fz_resp {
  int status;
  size_t head_end; /* output offset just past the empty line */
  int lengths, codings;
  uint64_t length;
  bool close, keep_alive, text_plain;
} fz_resp_t;

static bool token_char(unsigned char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
         (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static bool digits(const char *p, size_t n, uint64_t *out) {
  uint64_t v = 0;
  if (n == 0 || n > 18)
    return false;
  for (size_t i = 0; i < n; i++) {
    if (p[i] < '0' || p[i] > '9')
      return false;
    v = v * 10 + (uint64_t)(p[i] - '0');
  }
  *out = v;
  return true;
}

/* "HTTP/1.1 DDD Reason\r\n" with keel's reason phrase for DDD. */
static int status_line(const fz_run_t *run, size_t pos, fz_resp_t *r, size_t *next) {
  const char *p = run->out + pos;
  size_t n = run->out_len - pos, eol;
  int rc = line_end(p, n, 0, &eol);
  if (rc > 0)
    return 1;
  if (rc < 0 || eol < 15 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[12] != ' ')
    fz_fail(run, (ptrdiff_t)pos, "malformed status line");
  uint64_t st;
  if (!digits(p + 9, 3, &st) || st < 100)
    fz_fail(run, (ptrdiff_t)pos, "malformed status code");
  r->status = (int)st;
  const char *reason = keel_http_reason(r->status);
  if (eol - 15 != strlen(reason) || memcmp(p + 13, reason, eol - 15) != 0)
    fz_fail(run, (ptrdiff_t)pos, "reason phrase is not keel's for %d", r->status);
  *next = pos + eol;
  return 0;
}

/* Takes note of the fields that frame the message or the connection. */
static void note_field(const fz_run_t *run, size_t pos, fz_resp_t *r, const char *name, size_t nl,
                       const char *v, size_t vl) {
  if (nl == 14 && strncasecmp(name, "content-length", 14) == 0) {
    if (r->lengths++ || !digits(v, vl, &r->length))
      fz_fail(run, (ptrdiff_t)pos, "bad or repeated Content-Length");
  } else if (nl == 17 && strncasecmp(name, "transfer-encoding", 17) == 0) {
    if (r->codings++ || vl != 7 || memcmp(v, "chunked", 7) != 0)
      fz_fail(run, (ptrdiff_t)pos, "Transfer-Encoding other than one chunked");
  } else if (nl == 10 && strncasecmp(name, "connection", 10) == 0) {
    if (r->close || r->keep_alive)
      fz_fail(run, (ptrdiff_t)pos, "two Connection fields");
    r->close = vl == 5 && memcmp(v, "close", 5) == 0;
    r->keep_alive = vl == 10 && memcmp(v, "keep-alive", 10) == 0;
    if (!r->close && !r->keep_alive)
      fz_fail(run, (ptrdiff_t)pos, "Connection field of an unknown value");
  } else if (nl == 12 && strncasecmp(name, "content-type", 12) == 0) {
    r->text_plain = vl == 10 && memcmp(v, "text/plain", 10) == 0;
  }
}

/* The head at pos: 0 when complete (r filled in), 1 when the output ends
 * inside it. Aborts on a malformed one. */
static int response_head(const fz_run_t *run, size_t pos, fz_resp_t *r) {
  memset(r, 0, sizeof *r);
  size_t at;
  if (status_line(run, pos, r, &at) != 0)
    return 1;
  const char *out = run->out;
  for (;;) {
    if (at + 2 > run->out_len)
      return 1;
    if (out[at] == '\r' && out[at + 1] == '\n') {
      r->head_end = at + 2;
      return 0;
    }
    size_t name = at;
    while (at < run->out_len && token_char((unsigned char)out[at]))
      at++;
    if (at + 2 > run->out_len)
      return 1;
    if (at == name || out[at] != ':' || out[at + 1] != ' ')
      fz_fail(run, (ptrdiff_t)name, "malformed response field");
    size_t value = at + 2, eol;
    int rc = line_end(out + value, run->out_len - value, 0, &eol);
    if (rc > 0)
      return 1;
    if (rc < 0)
      fz_fail(run, (ptrdiff_t)value, "control byte or bare CR/LF in a response field");
    note_field(run, name, r, out + name, at - name, out + value, eol - 2);
    at = value + eol;
  }
}

static bool bodyless(int status) { return status < 200 || status == 204 || status == 304; }

/* The framing of a final response, against the request it answers. */
static void check_framing(const fz_run_t *run, size_t pos, const fz_resp_t *r,
                          const fz_call_t *call) {
  if (r->lengths && r->codings)
    fz_fail(run, (ptrdiff_t)pos, "both Content-Length and Transfer-Encoding");
  if (bodyless(r->status) && (r->lengths || r->codings))
    fz_fail(run, (ptrdiff_t)pos, "a %d with body framing", r->status);
  if (r->codings && call && call->version == 10)
    fz_fail(run, (ptrdiff_t)pos, "chunked response to an HTTP/1.0 request");
  bool framed = r->lengths || r->codings || bodyless(r->status);
  if (!framed && (!r->close || !call || call->version != 10))
    fz_fail(run, (ptrdiff_t)pos, "a body to the close: not HTTP/1.0, or no Connection: close");
  if (call && call->version == 10 && !r->close && !r->keep_alive)
    fz_fail(run, (ptrdiff_t)pos, "HTTP/1.0 response kept alive without saying so");
  if (r->status >= 400 && !r->close)
    fz_fail(run, (ptrdiff_t)pos, "error response %d without Connection: close", r->status);
}

/* Whose response this is: the k-th request's handler's, or keel's own
 * error response. */
static void check_owner(const fz_run_t *run, size_t pos, const fz_resp_t *r, size_t k) {
  const fz_call_t *call = k < run->ncalls ? &run->calls[k] : NULL;
  if (!call && r->status < 400)
    fz_fail(run, (ptrdiff_t)pos, "response %zu (%d) to no request the handler saw", k, r->status);
  if (call && call->responded && r->status != call->status)
    fz_fail(run, (ptrdiff_t)pos, "response %zu is %d, its handler answered %d", k, r->status,
            call->status);
  if (call && !call->responded && r->status < 400)
    fz_fail(run, (ptrdiff_t)pos, "response %zu (%d) to a request its handler left unanswered", k,
            r->status);
}

/* Where the body at r->head_end ends, and what it holds (malloc'd into
 * *body). Returns 0, or 1 when the output ends inside it. */
static int response_body(const fz_run_t *run, const fz_resp_t *r, const fz_call_t *call,
                         size_t *end, char **body, size_t *body_len) {
  size_t at = r->head_end, left = run->out_len - at;
  *body = NULL;
  *body_len = 0;
  /* keel's error response to a request its handler never saw leaves out
   * the body when that request was HEAD: the output then ends at the head
   * (an error response is the last). */
  bool unseen_head = !call && r->status >= 400 && left == 0;
  if (bodyless(r->status) || (call && call->head) || unseen_head) {
    *end = at;
    return 0;
  }
  if (r->codings) {
    size_t used;
    int rc = fz_dechunk(run->out + at, left, 0, &used, body, body_len);
    if (rc < 0)
      fz_fail(run, (ptrdiff_t)at, "malformed chunked response body");
    *end = at + used;
    return rc;
  }
  size_t n = r->lengths ? (r->length < left ? (size_t)r->length : left) : left;
  dec_append(body, body_len, run->out + at, n);
  *end = at + n;
  return r->lengths && r->length > left;
}

/* keel's own error response: text/plain, the reason phrase and a newline
 * (to a HEAD request, only its length). */
static void check_error_body(const fz_run_t *run, size_t pos, const fz_resp_t *r,
                             const fz_call_t *call, const char *body, size_t len) {
  const char *reason = keel_http_reason(r->status);
  size_t rl = strlen(reason);
  bool head = (call && call->head) || (!call && len == 0);
  if (!r->text_plain || !r->lengths || r->length != rl + 1 ||
      (!head && (len != rl + 1 || memcmp(body, reason, rl) != 0 || body[rl] != '\n')))
    fz_fail(run, (ptrdiff_t)pos, "error response %d is not keel's", r->status);
}

/* The output ends before the end of response k (inside it, or before
 * it): only a client that went away first may see that. keel reads a shut
 * down writing side as the client leaving, and cancels the handler that
 * waits then: from that request on, responses may be missing or cut. */
static void ended_early(const fz_run_t *run, size_t pos, size_t k, bool inside) {
  if (!run->half_close)
    fz_fail(run, (ptrdiff_t)pos, "the output ends %s response %zu (of %zu requests)",
            inside ? "inside" : "before", k, run->ncalls);
  size_t cut = 0;
  while (cut < run->ncalls && !run->calls[cut].cut_short)
    cut++;
  if (k < cut)
    fz_fail(run, (ptrdiff_t)pos, "response %zu, answered before any handler was cut short, is %s",
            k, inside ? "cut" : "missing");
}

/* One final response at *pos, the k-th; moves *pos past it. Returns false
 * when the output ended inside it. */
static bool final_response(const fz_run_t *run, size_t *pos, const fz_resp_t *r, size_t k) {
  const fz_call_t *call = k < run->ncalls ? &run->calls[k] : NULL;
  check_owner(run, *pos, r, k);
  check_framing(run, *pos, r, call);
  size_t end, len;
  char *body;
  if (response_body(run, r, call, &end, &body, &len) != 0) {
    free(body);
    ended_early(run, *pos, k, true);
    return false;
  }
  if (r->status >= 400) {
    check_error_body(run, *pos, r, call, body, len);
  } else if (call && !bodyless(r->status) && !call->head &&
             (len != call->resp_len || (len && memcmp(body, call->resp, len) != 0))) {
    fz_fail(run, (ptrdiff_t)*pos, "response %zu's body is not what its handler sent", k);
  }
  free(body);
  if (r->close && end != run->out_len)
    fz_fail(run, (ptrdiff_t)end, "bytes after a response with Connection: close");
  *pos = end;
  return true;
}

void fz_check_output(const fz_run_t *run) {
  size_t pos = 0, k = 0, continued = SIZE_MAX;
  while (pos < run->out_len) {
    fz_resp_t r;
    if (response_head(run, pos, &r) != 0) {
      ended_early(run, pos, k, true);
      return;
    }
    if (r.status == 100) {
      if (k >= run->ncalls || !run->calls[k].expect_continue || continued == k ||
          r.head_end - pos != 25)
        fz_fail(run, (ptrdiff_t)pos, "100 Continue to no request that expects one");
      continued = k;
      pos = r.head_end;
      continue;
    }
    if (r.status < 200)
      fz_fail(run, (ptrdiff_t)pos, "interim response %d", r.status);
    if (!final_response(run, &pos, &r, k))
      return;
    k++;
  }
  if (k > run->ncalls + 1)
    fz_fail(run, -1, "%zu responses to %zu requests", k, run->ncalls);
  if (k < run->ncalls)
    ended_early(run, pos, k, false);
}

/* ---- Requests in the client's bytes -------------------------------------------- */

/* "METHOD SP target SP HTTP/1.x CRLF" of the call at at. */
static bool request_line_at(const fz_run_t *run, size_t at, const fz_call_t *call) {
  const char *p = (const char *)run->in + at;
  size_t n = run->in_len - at, ml = strlen(call->method), tl = strlen(call->target);
  if (n < ml + tl + 12 || memcmp(p, call->method, ml) != 0 || p[ml] != ' ' ||
      memcmp(p + ml + 1, call->target, tl) != 0)
    return false;
  p += ml + tl + 1;
  if (memcmp(p, " HTTP/1.", 8) != 0 || p[8] < '0' || p[8] > '9' || p[9] != '\r' || p[10] != '\n')
    return false;
  return (p[8] == '0') == (call->version == 10);
}

static size_t count_crlf(const char *p, size_t n) {
  size_t count = 0;
  for (size_t i = 0; i + 1 < n; i++)
    count += p[i] == '\r' && p[i + 1] == '\n';
  return count;
}

/* The body the handler read against the bytes its framing covers (the
 * reference reading of them in ref): the same when it read to the end,
 * a prefix of them otherwise. Returns NULL, or what is wrong. */
static const char *body_mismatch(const fz_run_t *run, size_t i, const char *ref, size_t ref_len,
                                 bool ref_complete) {
  const fz_call_t *call = &run->calls[i];
  if (call->body_len > ref_len || (call->body_len && memcmp(call->body, ref, call->body_len)))
    return "its body is not what the client sent";
  if (call->body_complete && (!ref_complete || call->body_len != ref_len))
    return "its body ended where the client's bytes say it does not";
  if (!ref_complete && i + 1 < run->ncalls)
    return "another request follows its body, which does not end";
  return NULL;
}

/* A chunked body at body_at read with flags: NULL, or what is wrong; *at
 * and *complete say where it ends. */
static const char *chunked_mismatch(const fz_run_t *run, size_t i, size_t body_at, unsigned flags,
                                    size_t *at, bool *complete) {
  size_t used = 0, dec_len = 0;
  char *dec = NULL;
  int rc = fz_dechunk((const char *)run->in + body_at, run->in_len - body_at, flags, &used, &dec,
                      &dec_len);
  const char *why = body_mismatch(run, i, dec, dec_len, rc == 0);
  free(dec);
  *at = body_at + used;
  *complete = rc == 0;
  return why;
}

/* Checks the i-th request at *at and moves *at past its body. Returns
 * false when where it ends cannot be known (the requests after it would
 * have failed already). */
static bool check_request(const fz_run_t *run, size_t i, size_t *at) {
  const fz_call_t *call = &run->calls[i];
  const char *in = (const char *)run->in;
  /* Empty lines before a request line are skipped (RFC 9112 §2.2). */
  while (*at + 2 <= run->in_len && in[*at] == '\r' && in[*at + 1] == '\n')
    *at += 2;
  if (!request_line_at(run, *at, call))
    fz_fail(run, -1, "request %zu (%s %s) does not start at byte %zu, where request %zu ended", i,
            call->method, call->target, *at, i ? i - 1 : 0);
  const char *head_end = memmem(in + *at, run->in_len - *at, "\r\n\r\n", 4);
  if (!head_end)
    fz_fail(run, -1, "request %zu has no end of head", i);
  size_t body_at = (size_t)(head_end - in) + 4, left = run->in_len - body_at;
  if (count_crlf(in + *at, body_at - *at) != call->nheaders + 2)
    fz_fail(run, -1, "request %zu: %zu fields seen in a head of %zu lines", i, call->nheaders,
            count_crlf(in + *at, body_at - *at) - 1);
  if (call->content_length >= 0) {
    uint64_t cl = (uint64_t)call->content_length;
    bool complete = cl <= left;
    const char *why = body_mismatch(run, i, in + body_at, complete ? (size_t)cl : left, complete);
    if (why)
      fz_fail(run, -1, "request %zu (Content-Length %llu): %s", i, (unsigned long long)cl, why);
    *at = body_at + (complete ? (size_t)cl : left);
    return complete;
  }
  bool complete;
  const char *why = chunked_mismatch(run, i, body_at, 0, at, &complete);
  if (why)
    fz_fail(run, -1, "request %zu (chunked): %s", i, why);
  return complete;
}

void fz_check_requests(const fz_run_t *run) {
  size_t heads = 0;
  for (const char *p = (const char *)run->in, *end = p + run->in_len;
       (p = memmem(p, (size_t)(end - p), "\r\n\r\n", 4)) != NULL; p++)
    heads++;
  if (run->ncalls > heads)
    fz_fail(run, -1, "%zu requests served from bytes with %zu ends of head", run->ncalls, heads);
  size_t at = 0;
  for (size_t i = 0; i < run->ncalls; i++)
    if (!check_request(run, i, &at))
      return;
}
