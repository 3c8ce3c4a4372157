/* Shared by the HTTP server fuzz targets' parts (http_request.c,
 * http_chunked.c, http_server.c, http_check.c; not installed): what a run
 * keeps about the requests its handler saw, and the checks run on the
 * bytes that went over the wire once the connection has ended. */
#ifndef FZ_HTTP_H
#define FZ_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dechunk.h"
#include "keel/keel.h"

/* The control bytes before the client's bytes (http_server.c). */
#define FZ_CTRL 4

/* What the handler does with a request. */
typedef enum fz_style {
  FZ_BODY_SEND,      /* keel_http_body, then keel_http_send */
  FZ_PIECES_SEND,    /* keel_http_read 1 to 7 bytes at a time, then send */
  FZ_PIECES_STREAM,  /* read in pieces, then a streamed body with a trailer */
  FZ_DECLARED,       /* read, then a Content-Length field and two writes */
  FZ_UNREAD_204,     /* 204 without reading the body: keel drains it or closes */
  FZ_SEND_THEN_READ, /* answer first, then read the body */
  FZ_SLEEP,          /* sleep 2 ms first: the request deadline, a client leaving */
  FZ_FAIL,           /* read a little, then fail without answering: keel's 500 */
  FZ_NO_ANSWER,      /* return 0 without answering: keel's 500 */
  FZ_CLOSE_304,      /* 304 with Connection: close and a body keel must drop */
  FZ_NSTYLES
} fz_style_t;

/* One request as its handler saw it, and what the handler answered. */
typedef struct fz_call {
  char *method, *target; /* copies, NUL-terminated */
  int version;           /* 10 or 11 */
  bool head, expect_continue;
  int64_t content_length; /* -1: chunked */
  size_t nheaders;
  int style; /* what the handler did (fz_style_t) */
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

/* http_server.c: runs one input's connection, ctrl (FZ_CTRL bytes: see
 * http_server.c) and the client's bytes, and checks it (aborting through
 * fz_fail); *run then holds what happened, until fz_run_free. */
void fz_http_run(const uint8_t *ctrl, const uint8_t *in, size_t in_len, fz_run_t *run);
void fz_run_free(fz_run_t *run);

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

#endif
