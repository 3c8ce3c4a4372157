/* libFuzzer target: keel's chunked request body decoder (llhttp's chunk
 * parsing with keel's checks in src/http/parse.c: chunk extensions,
 * trailers, CRLF line ends; the reads of src/http/body.c that feed it no
 * more than the caller has room for), through the server's request path
 * (http_server.c runs the connection and checks it).
 *
 * The input is the body alone: the target puts it behind a fixed head, so
 * that every mutation lands in the chunks.
 *   in[0..3]        the control bytes of http_server.c (limits, pieces,
 *                   the handler's way of reading, the lab seed)
 *   in[4] bit 0     the head has Expect: 100-continue
 *         bit 1     a GET follows the body (where the body ends is where
 *                   the next request must start)
 *   in[5...]        the chunked body
 * Beyond http_check.c's checks (a body read is never other than the
 * reference reading of the bytes, fz_dechunk, and never ends elsewhere):
 * a body the reference reads whole, with no chunk extension or trailer
 * field and within the size limit, is read whole by every handler that
 * reads to the end, unless the client was slow enough for a timeout. */
#include <stdlib.h>
#include <string.h>

#include "fuzz-http.h"

#define FZ_FLAGS FZ_CTRL /* in[4] */
#define FZ_EXPECT 1u
#define FZ_FOLLOW 2u

static const char head[] = "POST /chunked HTTP/1.1\r\nHost: fz\r\nTransfer-Encoding: chunked\r\n";
static const char expect[] = "Expect: 100-continue\r\n";
static const char next[] = "GET /next HTTP/1.1\r\nHost: fz\r\n\r\n";

static char *put(char *at, const void *p, size_t n) {
  if (n)
    memcpy(at, p, n);
  return at + n;
}

/* The client's bytes: the head, the body, perhaps the next request. */
static char *client_bytes(unsigned flags, const uint8_t *body, size_t len, size_t *out_len) {
  size_t n = sizeof head - 1 + (flags & FZ_EXPECT ? sizeof expect - 1 : 0) + 2 + len +
             (flags & FZ_FOLLOW ? sizeof next - 1 : 0);
  char *p = malloc(n), *at = p;
  if (!p)
    abort();
  at = put(at, head, sizeof head - 1);
  if (flags & FZ_EXPECT)
    at = put(at, expect, sizeof expect - 1);
  at = put(at, "\r\n", 2);
  at = put(at, body, len);
  if (flags & FZ_FOLLOW)
    put(at, next, sizeof next - 1);
  *out_len = n;
  return p;
}

/* Whether the handler's way reads a body to its end. */
static bool reads_to_end(int style) {
  return style == FZ_BODY_SEND || style == FZ_PIECES_SEND || style == FZ_PIECES_STREAM ||
         style == FZ_DECLARED || style == FZ_SEND_THEN_READ;
}

/* A body of chunk-size CRLF lines only: no extension, no trailer field. */
static bool plain(const char *p, size_t used) {
  for (size_t at = 0; at < used;) {
    size_t size_line = strcspn(p + at, "\r"); /* the body holds a CRLF there (read whole) */
    if (memchr(p + at, ';', size_line))
      return false;
    uint64_t size = strtoull(p + at, NULL, 16);
    at += size_line + 2;
    if (size == 0)
      return at + 2 == used; /* the empty line at once */
    at += size + 2;
  }
  return false;
}

/* The run's first request is the chunked one: read whole when it had to be. */
static void check_complete(const uint8_t *ctrl, const fz_run_t *run, const uint8_t *body,
                           size_t len) {
  char *copy = malloc(len + 1), *dec = NULL;
  if (!copy)
    abort();
  memcpy(copy, body, len);
  copy[len] = '\0';
  size_t used = 0, dec_len = 0;
  int rc = fz_dechunk(copy, len, 0, &used, &dec, &dec_len);
  bool slow = ctrl[0] & 16;
  if (rc == 0 && !slow && dec_len <= run->max_body && memchr(copy, '\0', used) == NULL &&
      plain(copy, used)) {
    if (run->ncalls == 0)
      fz_fail(run, -1, "the fixed head of a chunked POST did not reach the handler");
    const fz_call_t *call = &run->calls[0];
    if (reads_to_end(call->style) && !call->cut_short && !call->body_complete)
      fz_fail(run, -1, "a plain chunked body of %zu bytes, within the limit, was not read whole",
              dec_len);
  }
  free(dec);
  free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FZ_CTRL + 1)
    return 0;
  const uint8_t *body = data + FZ_CTRL + 1;
  size_t body_len = size - FZ_CTRL - 1, in_len;
  char *in = client_bytes(data[FZ_FLAGS], body, body_len, &in_len);
  fz_run_t run;
  fz_http_run(data, (const uint8_t *)in, in_len, &run);
  check_complete(data, &run, body, body_len);
  fz_run_free(&run);
  free(in);
  return 0;
}
