/* Internal header of the HTTP layer (src/http). */
#ifndef KEEL_HTTP_INTERNAL_H
#define KEEL_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keel/arena.h"
#include "keel/sync.h"
#include "keel/bufstream.h"
#include "keel/http.h"
#include "keel/tls.h"
#include "llhttp.h"

#define HTTP_ARENA_CACHE 32          /* idle arenas kept per worker */
#define HTTP_ARENA_CHUNK 4096        /* bytes of an arena's chunks */
#define HTTP_ARENA_FLUSH (64 * 1024) /* a batch holding more is flushed early */
#define HTTP_OUT_INLINE (8 * 1024)   /* bodies up to this are queued, not written at once */
#define HTTP_DRAIN_BODY (64 * 1024)  /* unread body bytes drained to keep a connection */
#define HTTP_MAX_CHUNK_EXT 1024      /* chunk extension bytes per chunk (CVE-2024-22019) */
#define HTTP_MAX_TRAILERS 32         /* trailer fields */

/* Server settings with every default filled in. */
typedef struct http_limits {
  keel_http_handler_fn handler;
  void *ctx;
  size_t max_url, max_header_bytes, max_headers, max_body;
  int64_t header_timeout_ns, body_timeout_ns, keepalive_timeout_ns, request_timeout_ns;
  unsigned max_requests, max_conns;
  const char *server_name;
  size_t server_name_len;
  bool no_date;
} http_limits_t;

/* What one worker keeps for the server: touched only on that worker. */
typedef struct http_worker {
  keel_scope_t *conns; /* the worker's connection tasks; cancelled to drain */
  unsigned live;       /* connections open */
  int narenas;
  keel_arena_t *arenas[HTTP_ARENA_CACHE];
  int64_t date_sec;
  char date[64]; /* "Date: ...\r\n" */
  size_t date_len;
} http_worker_t;

typedef struct http_conn http_conn_t;

struct keel_http_response {
  keel_http_request_t *req;
  int status;
  char *hdrs; /* the user's fields, formatted "Name: value\r\n" */
  size_t hdrs_len, hdrs_cap;
  char *trailers;
  size_t trailers_len, trailers_cap;
  int64_t declared;   /* a Content-Length field the user added, or -1 */
  uint64_t sent;      /* body bytes written */
  size_t queued_at;   /* where its head starts in the queue, */
  uint32_t writes_at; /* if the queue has not been written since */
  bool head_sent, finished, chunked, until_close, no_body, close, user_date;
  bool cut; /* a write was cancelled before the answers queued ahead of it went out */
};

struct keel_http_request {
  http_conn_t *c;
  const char *method, *target, *path, *query;
  size_t method_len;
  int version;
  keel_http_header_t *headers;
  size_t nheaders;
  int64_t content_length; /* -1: chunked */
  uint64_t body_read;
  bool body_done, expect_continue, sent_continue, head_method, client_gone;
  int body_error; /* sticky error of the body (negative errno) */
  keel_scope_t *scope, *watch;
  int handler_rc;
  /* Taken by another protocol (keel__http_upgrade): the connection's task
   * no longer reads or writes it. */
  bool upgraded, handler_done;
  keel_task_fn up_run, up_drain; /* see keel__http_upgrade_set */
  void *up_arg;
  keel_notify_t *up_done; /* set while the connection's task waits on the handler */
  /* keel_http_read's destination while llhttp runs */
  char *dst;
  size_t room, got;
  keel_http_response_t res;
};

/* What a connection needs only while it works through a batch of
 * requests: it lives in the arena, which goes back to the worker when the
 * connection turns idle between requests (always at a message boundary,
 * where a fresh parser equals the one it replaces). */
typedef struct http_batch {
  keel_http_request_t *req; /* the request being parsed or served */
  char *out;                /* queued response bytes, in the arena */
  size_t out_len, out_cap;
  const char *base;    /* the buffered bytes llhttp is given (callbacks) */
  uint32_t url_len;    /* request target bytes seen */
  uint16_t nfields;    /* trailer fields seen */
  uint16_t ext_len;    /* chunk extension bytes of this chunk */
  uint16_t err_status; /* the status a callback's error answers */
  uint32_t writes;     /* writes of the queue: whether it went out since a response began */
  bool in_trailers;
  uint8_t field_len;
  char field[24]; /* the start of a trailer field's name */
  char tail[2];   /* the last two body bytes of the feeds before this one */
  llhttp_t parser;
} http_batch_t;

/* One connection: allocated when accepted, freed when closed. Small, since
 * it is most of what an idle keep-alive connection costs. */
struct http_conn {
  const http_limits_t *lim;
  http_worker_t *w;  /* NULL for keel_http_serve_stream */
  keel_stream_t *s;  /* the transport: writes go here */
  keel_tcp_t *tcp;   /* for parking, or NULL */
  keel_tls_t *tls;   /* the TLS layer over tcp (HTTPS), or NULL */
  keel_task_t *task; /* the connection's own task (not a handler's) */
  keel_bufstream_t *bs;
  keel_arena_t *arena; /* while a batch is under way, else NULL */
  http_batch_t *b;     /* in the arena, likewise */
  int64_t now;         /* the clock at the last fill: bytes buffered arrived by then */
  unsigned requests;
  bool broken; /* the transport failed: nothing more is written */
  bool handed; /* upgraded: the new protocol counts itself in w->live */
  bool close;  /* close after the responses queued */
  bool linger; /* an error response: read a while before closing */
};

extern const llhttp_settings_t keel__http_settings;

/* request.c: builds c->req from the head_len bytes of the header block at
 * the start of the buffer. Returns 0 or the status to answer (400, 414,
 * 431, 501, 505, 417...). */
int keel__http_request_parse(http_conn_t *c, const char *head, size_t head_len);

/* fields.c */
bool keel__http_token_char(unsigned char ch);
/* A field value byte (RFC 9110 §5.5): VCHAR, SP, HTAB or obs-text. */
bool keel__http_value_char(unsigned char ch);
/* Case-insensitive comparison of a field name with a lowercase literal. */
bool keel__http_name_eq(const char *a, size_t alen, const char *lit);
/* Reads one "name: value CRLF" line at *pp into h, cutting name and value
 * with NUL terminators (the value without its surrounding whitespace):
 * a non-empty token, the colon at once (no whitespace before it, RFC 9112
 * §5.1), value bytes only, and CRLF (no bare CR or LF, §2.2). Returns 0
 * and moves *pp past the line, or -1. */
int keel__http_parse_field(char **pp, char *end, keel_http_header_t *h);
/* A Content-Length value: 1*DIGIT, at most 18 digits (no sign, no list,
 * no junk). */
bool keel__http_parse_length(const char *v, size_t n, int64_t *out);
/* Writes the n bytes at s, v in decimal, v in lowercase hex at p; each
 * returns the end of what it wrote (room is the caller's). */
char *keel__http_put(char *p, const char *s, size_t n);
char *keel__http_put_u64(char *p, uint64_t v);
char *keel__http_put_hex(char *p, uint64_t v);

/* parse.c: whether the two bytes before p (in the feed from b->base, then
 * those kept by keel__http_keep_tail) are CRLF. */
bool keel__http_crlf_before(const http_batch_t *b, const char *p);
void keel__http_keep_tail(http_batch_t *b, const char *data, size_t n);

/* body.c: reads and drops what the handler left of a small body, so that
 * the connection can carry the next request (else it is marked to close). */
void keel__http_drain_body(http_conn_t *c, keel_http_request_t *req);

/* response.c */
int keel__http_queue(http_conn_t *c, const void *p, size_t n);
int keel__http_flush(http_conn_t *c);
/* Queues a complete error response with Connection: close. */
void keel__http_error_response(http_conn_t *c, int status);
/* After the handler: completes whatever response it left unfinished. */
/* Returns the status answered (0: none, the client went away). */
int keel__http_response_end(keel_http_request_t *req);

/* Metrics (observe.c). Kinds of refused requests: llhttp's errors by
 * number (HPE_*), then keel's own. */
enum {
  KEEL__HTTP_ERR_HEAD_TOO_LARGE = 40,
  KEEL__HTTP_ERR_HEAD_TIMEOUT,
  KEEL__HTTP_ERR_INVALID_HEAD, /* keel's checks of a head llhttp took */
  KEEL__HTTP_ERR_FIELD,        /* keel's checks while llhttp parsed (HPE_USER) */
  KEEL__HTTP_ERR_BODY_TOO_LARGE,
  KEEL__HTTP_ERR_BODY_TIMEOUT,
  KEEL__HTTP_ERR_INVALID_BODY,
};
void keel__http_count_request(http_conn_t *c, keel_http_request_t *req, int status);
void keel__http_count_error(int kind, const char *name);
void keel__http_response_init(keel_http_response_t *res, keel_http_request_t *req);

/* conn.c: runs a new connection in the calling task (its own from now
 * on): the first request's head must come within header_timeout_ms of
 * this call; until its first byte the task waits parked (TCP). */
int keel__http_conn_start(http_conn_t *c);
int keel__http_conn_run(http_conn_t *c);
/* Flushes what is queued (within a shield when the connection is being
 * drained), closes the connection and frees it. Returns 0. */
int keel__http_conn_end(http_conn_t *c);
/* Opens the connection state over s (taking it), or returns a negative
 * errno and closes s. */
int keel__http_conn_open(const http_limits_t *lim, http_worker_t *w, keel_stream_t *s,
                         keel_tcp_t *tcp, http_conn_t **out);
void keel__http_limits(const keel_http_server_opts_t *opts, http_limits_t *lim);

/* The connection handed to another protocol (a WebSocket), from the
 * request's handler before any response: what was queued for earlier
 * requests and then head (the complete 101 response) are written; the
 * request's deadline is lifted; the watch on the client stops; the
 * connection's buffered stream (with the bytes read past the head still
 * in it) is handed over in *bs, and its TCP connection (for parking, or
 * NULL) in *tcp. The connection's task then neither reads nor writes it
 * and does not close it. Returns 0, -EALREADY (a response was started),
 * -EBUSY (a body is still unread), -EPIPE (the connection is broken or
 * the handler's scope was cancelled), or the write's error (the
 * connection is then still the HTTP server's, which closes it). */
typedef struct http_upgrade {
  keel_bufstream_t *bs;
  keel_tcp_t *tcp;
  keel_tls_t *tls;
  bool draining; /* the server was already draining: say goodbye at once */
  /* The worker's count of connections (max_conns), which the connection
   * still counts in: the new protocol decrements it when it ends (NULL for
   * keel_http_serve_stream). */
  unsigned *live;
} http_upgrade_t;
int keel__http_upgrade(keel_http_request_t *req, const void *head, size_t head_len,
                       http_upgrade_t *up);
/* After keel__http_upgrade:
 *   - run: once the handler returned, the connection's task frees the
 *     HTTP state and goes on in run(arg) (it returns what run returns);
 *   - drain: if the server drains while the handler still runs, the
 *     connection's task calls drain(arg) once (inside a shield bounded by
 *     the drain deadline), then waits for the handler as before. */
void keel__http_upgrade_set(keel_http_request_t *req, keel_task_fn run, keel_task_fn drain,
                            void *arg);

#endif
