/* Shared by the HTTP request fuzz target's parts (not installed): what a
 * run keeps about the requests its handler saw, and the checks run on the
 * bytes that went over the wire once the connection has ended. */
#ifndef FZ_HTTP_H
#define FZ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/keel.h"

/* One request as its handler saw it, and what the handler answered. */
typedef struct fz_call {
  char *method, *target; /* copies, NUL-terminated */
  int version;           /* 10 or 11 */
  bool head, expect_continue;
  int64_t content_length; /* -1: chunked */
  size_t nheaders;
  int style; /* what the handler did (fz_style_t in http_request.c) */
  /* The body as read: complete when a read returned 0 (end of body). */
  char *body;
  size_t body_len, body_cap;
  bool body_complete;
  /* The response: status and body the handler gave, when it answered. */
  bool responded;
  int status;
  char *resp;
  size_t resp_len, resp_cap;
  bool cut_short; /* the handler saw its scope cancelled */
} fz_call_t;

/* One input's run. */
typedef struct fz_run {
  const uint8_t *in; /* what the client sends */
  size_t in_len;
  size_t max_body, max_headers, max_url;
  bool half_close; /* the client shuts down writing after its last byte */
  fz_call_t *calls;
  size_t ncalls, calls_cap;
  char *out; /* every byte the server sent */
  size_t out_len, out_cap;
  ssize_t read_end; /* the client's last read: 0 at end of stream, or an error */
} fz_run_t;

/* Prints the message (and where in the server's output, if at >= 0) and
 * aborts, so that libFuzzer reports the input. */
_Noreturn void fz_fail(const fz_run_t *run, ptrdiff_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* http_check.c: the server's output is a sequence of well-formed responses,
 * one per request the handler saw (and at most one error response of
 * keel's after them, the last bytes sent); each request the handler saw
 * starts where the one before it ended in the client's bytes, and its
 * body is what those bytes hold. Aborts through fz_fail otherwise. */
void fz_check_output(const fz_run_t *run);
void fz_check_requests(const fz_run_t *run);

/* A chunked body at p (n bytes), read as RFC 9112 §7.1 writes it: 0 when
 * it is complete and well-formed, 1 when the bytes end first, -1 when
 * malformed; *end: the bytes it used, the decoded bytes appended to *dec
 * (malloc'd; dec may be NULL). flags: FZ_DECHUNK_TRAILER_LF takes a bare
 * LF for the empty line that ends the trailer section. */
enum { FZ_DECHUNK_TRAILER_LF = 1u << 0 };
int fz_dechunk(const char *p, size_t n, unsigned flags, size_t *end, char **dec, size_t *dec_len);

#endif
