/* keel HTTP/1.1 server.
 *
 * The user writes a handler; keel runs one SO_REUSEPORT listener and accept
 * loop per worker and one task per connection, parses requests with llhttp
 * (strict mode) plus keel's own checks, and runs each request's handler as
 * a task in a scope of its own:
 *   - the scope carries the request deadline (request_timeout_ms);
 *   - it is cancelled when the client goes away (end of stream or a reset
 *     seen while the handler runs), so a handler parked on a backend call
 *     stops at once;
 *   - it is shielded from the server's own shutdown: in-flight requests
 *     finish during the drain, their responses carry Connection: close.
 *
 * Keep-alive (HTTP/1.1 by default, HTTP/1.0 with Connection: keep-alive),
 * pipelining (responses in request order; the responses of requests that
 * arrived together leave in one write), Expect: 100-continue (the 100 goes
 * out on the handler's first body read), HEAD, chunked bodies both ways,
 * a Date header formatted once a second per worker.
 *
 * Bad input gets the proper status with Connection: close, and the
 * connection closes: 400 (malformed, ambiguous framing, smuggling
 * attempts), 413 (body over the limit), 414 (URL over the limit), 431
 * (header bytes or count over the limit), 417 (an Expect other than
 * 100-continue), 501 (a method or transfer coding keel does not know), 505
 * (an HTTP version other than 1.0 and 1.1), 408 (the header block did not
 * arrive within header_timeout_ms). A connection over the per-worker limit
 * is accepted and closed at once, without a response.
 *
 * Memory: a request's headers and whatever the handler allocates with
 * keel_http_arena come from one arena per connection, reset between
 * requests; an idle keep-alive connection gives its task's stack, its read
 * buffer and its arena back (a few hundred bytes remain). */
#ifndef KEEL_HTTP_H
#define KEEL_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "arena.h"
#include "core.h"
#include "stream.h"
#include "tcp.h"
#include "tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_http_request keel_http_request_t;
typedef struct keel_http_response keel_http_response_t;
typedef struct keel_http_router keel_http_router_t;

/* A header field: NUL-terminated name and value with their lengths. The
 * value has no leading or trailing whitespace. */
typedef struct keel_http_header {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} keel_http_header_t;

/* Returns 0 when it answered (or will have answered once it returns); a
 * negative errno answers 500 (503 for -ETIMEDOUT: the request deadline)
 * if no response was started, or closes the connection if one was. A
 * handler that returns 0 without answering gets a 500 too. */
typedef int (*keel_http_handler_fn)(keel_http_request_t *req, keel_http_response_t *res, void *ctx);

/* ---- Server --------------------------------------------------------------- */

/* Zeroed (or a NULL pointer): every default. Times in milliseconds; a
 * negative time means none. */
typedef struct keel_http_server_opts {
  keel_http_handler_fn handler; /* required; a router: keel_http_router_handler */
  void *ctx;                    /* the handler's ctx */
  /* Called once on the first worker to listen, when every worker listens,
   * with the address (the port the kernel chose for port 0). */
  void (*on_listen)(const keel_addr_t *addr, void *ctx);
  keel_listen_opts_t listen;
  size_t max_url;               /* request target bytes; 0: 8 KiB (414) */
  size_t max_header_bytes;      /* request line + headers; 0: 16 KiB (431) */
  size_t max_headers;           /* header fields; 0: 100 (431) */
  size_t max_body;              /* request body bytes; 0: 1 MiB (413) */
  int64_t header_timeout_ms;    /* the whole header block; 0: 10 s (408) */
  int64_t body_timeout_ms;      /* idle time within a body; 0: 30 s */
  int64_t keepalive_timeout_ms; /* idle time between requests; 0: 60 s */
  int64_t request_timeout_ms;   /* the handler's deadline; 0: 60 s */
  unsigned max_requests;        /* per connection; 0: 10,000 (then Connection: close) */
  unsigned max_conns;           /* per worker; 0: 10,000 (more are closed at once) */
  const char *server_name;      /* a Server header; NULL: none */
  bool no_date;                 /* no Date header */
  /* HTTPS: a server context (keel/tls.h), ALPN {"http/1.1"} for clients
   * that offer it; it must outlive the server. Each connection's
   * handshake runs in its task under the context's handshake limit (and
   * header_timeout_ms from the accept); a failed one closes that
   * connection only. NULL: plain HTTP. */
  keel_tls_ctx_t *tls;
} keel_http_server_opts_t;

#define KEEL_HTTP_DEFAULT_MAX_URL ((size_t)8 * 1024)
#define KEEL_HTTP_DEFAULT_MAX_HEADER_BYTES ((size_t)16 * 1024)
#define KEEL_HTTP_DEFAULT_MAX_HEADERS 100
#define KEEL_HTTP_DEFAULT_MAX_BODY ((size_t)1024 * 1024)

/* Serves HTTP on "host:port" on every worker until the calling task's
 * scope is cancelled (or the runtime shuts down). Then it stops accepting,
 * closes idle connections at once, lets the requests in flight finish
 * (their handlers' scopes are shielded; the runtime's drain deadline bounds
 * them) and returns 0 once every connection has closed. Returns a negative
 * errno if a worker cannot listen (-EADDRINUSE, -EINVAL, ...): the other
 * workers stop then. Must run in a task. */
int keel_http_serve(const char *hostport, const keel_http_server_opts_t *opts);

/* Serves one connection already open (a lab pipe, a TLS stream, an
 * accepted TCP connection) in the calling task until the peer closes, an
 * error, or cancellation; takes ownership of s and closes it. Returns 0 or
 * a negative errno about the connection (for the caller's logs). */
int keel_http_serve_stream(keel_stream_t *s, const keel_http_server_opts_t *opts);

/* ---- Requests ------------------------------------------------------------- */

/* The request line, as received: "GET", "/a/b?x=1", "/a/b", "x=1" ("" when
 * there is no query). For an absolute-form target (http://host/p?q) path
 * and query are those of the URL. */
const char *keel_http_method(const keel_http_request_t *req);
const char *keel_http_target(const keel_http_request_t *req);
const char *keel_http_path(const keel_http_request_t *req);
const char *keel_http_query(const keel_http_request_t *req);
/* 10 for HTTP/1.0, 11 for HTTP/1.1. */
int keel_http_version(const keel_http_request_t *req);

/* The header fields in the order received. */
size_t keel_http_header_count(const keel_http_request_t *req);
const keel_http_header_t *keel_http_header_at(const keel_http_request_t *req, size_t i);
/* The value of the first field named name (case-insensitive), or NULL. */
const char *keel_http_header(const keel_http_request_t *req, const char *name);

/* The declared body length, or -1 for a chunked body (0: none). */
int64_t keel_http_content_length(const keel_http_request_t *req);

/* Reads up to len bytes of the body (chunked framing removed); the first
 * read sends "100 Continue" when the client asked for it. Returns the count
 * (> 0), 0 at the end of the body, or a negative errno: -EMSGSIZE past
 * max_body (the server answers 413 if no response was started), -EPROTO
 * for a malformed chunked body (400), -ETIMEDOUT when body_timeout_ms
 * passes with no byte, -EPIPE if the client closed mid-body,
 * -ECANCELED... */
ssize_t keel_http_read(keel_http_request_t *req, void *buf, size_t len);

/* Reads the whole body into the request's arena, up to max_body. Returns 0
 * and the body in *data (NUL-terminated, not counted in *len), or
 * keel_http_read's errors. */
int keel_http_body(keel_http_request_t *req, const void **data, size_t *len);

/* Memory that lives until the response is sent (the connection's arena). */
keel_arena_t *keel_http_arena(keel_http_request_t *req);
/* The connection's TLS layer (HTTPS: keel_tls_info, keel_tls_peer_subject
 * for a client certificate), or NULL over plain HTTP. */
keel_tls_t *keel_http_tls(const keel_http_request_t *req);

/* The peer's address (-ENOTSUP for a stream that has none). */
int keel_http_peer_addr(const keel_http_request_t *req, keel_addr_t *out);

/* ---- Responses ------------------------------------------------------------ */

/* Before anything is sent: the status (default 200) and header fields.
 * Names must be tokens, values free of CR, LF and NUL: -EINVAL otherwise.
 * keel writes Date, Content-Length or Transfer-Encoding, and Connection
 * itself: a Transfer-Encoding field is refused (-EINVAL); a Content-Length
 * field sets the length of a streamed body; Connection: close is honoured.
 * -EALREADY once the head is sent. */
int keel_http_set_status(keel_http_response_t *res, int status);
int keel_http_add_header(keel_http_response_t *res, const char *name, const char *value);
int keel_http_add_headern(keel_http_response_t *res, const char *name, size_t name_len,
                          const char *value, size_t value_len);

/* The whole response: head and body, with Content-Length (no body bytes
 * for HEAD, 1xx, 204 and 304). A small response is queued so that the
 * responses to pipelined requests leave together; a large one is written
 * at once. Returns 0, -EALREADY (a response was started), or a write
 * error. */
int keel_http_send(keel_http_response_t *res, const void *body, size_t len);

/* A streamed body: the first write sends the head (chunked, or with the
 * Content-Length field added; to an HTTP/1.0 client without one, the end
 * of the body is the end of the connection). Each write leaves at once.
 * Returns len, or a negative errno (-EMSGSIZE past a declared
 * Content-Length; a write error). */
ssize_t keel_http_write(keel_http_response_t *res, const void *buf, size_t len);

/* Trailer fields for a chunked body, before keel_http_finish. */
int keel_http_add_trailer(keel_http_response_t *res, const char *name, const char *value);

/* Ends a streamed body (the last chunk and the trailers). keel calls it
 * when the handler returns without it. Returns 0, -EPROTO if fewer bytes
 * than a declared Content-Length were written (the connection will close),
 * or a write error. */
int keel_http_finish(keel_http_response_t *res);

/* True once the head was queued or sent. */
bool keel_http_responded(const keel_http_response_t *res);

/* Marks the connection to close after this response (Connection: close). */
void keel_http_close_after(keel_http_response_t *res);

/* The reason phrase of a status code ("Not Found"; "" for one keel does not
 * know). */
const char *keel_http_reason(int status);

/* ---- Router --------------------------------------------------------------- */

enum {
  KEEL_HTTP_ROUTE_PREFIX = 1u << 0 /* path is a prefix ("/static/") */
};

/* A router: method + exact path, or method + path prefix (the longest
 * prefix wins; an exact path beats every prefix). A path that matches with
 * another method gets 405 with an Allow field; no match, 404. Routes are
 * added before serving; the router is read-only while it serves, shared by
 * every worker. */
int keel_http_router_open(keel_http_router_t **out);
/* method: "GET", "POST", ... or NULL for any. GET routes also answer HEAD.
 * Strings are copied. Returns 0, -EINVAL (path not starting with '/'),
 * -EEXIST (the same method and path), -ENOMEM. */
int keel_http_route(keel_http_router_t *r, const char *method, const char *path, unsigned flags,
                    keel_http_handler_fn handler, void *ctx);
/* The handler to give keel_http_serve, with the router as ctx. */
int keel_http_router_handler(keel_http_request_t *req, keel_http_response_t *res, void *router);
int keel_http_router_close(keel_http_router_t *r);

/* ---- Observability --------------------------------------------------------- */

/* Serves the runtime's metrics in the Prometheus text format
 * (keel_metrics_write): mount it at /metrics, e.g.
 * keel_http_route(r, "GET", "/metrics", 0, keel_http_metrics_handler, NULL). */
int keel_http_metrics_handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx);

/* A handler that answers with the task dump (keel_tasks_write): text
 * (text/plain; charset=utf-8) by default, JSON (application/json) with
 * ?format=json or an Accept field naming application/json; ?format=text
 * asks for text whatever Accept says. ctx is unused. It shows every task
 * of the process, so mount it where only operators reach it:
 *   keel_http_route(r, "GET", "/debug/tasks", 0, keel_http_tasks_handler, NULL); */
int keel_http_tasks_handler(keel_http_request_t *req, keel_http_response_t *res, void *ctx);

/* ---- Client --------------------------------------------------------------- */

/* keel_http_call_open sends one request and reads the head of its
 * response; the body is then read in pieces (keel_http_call_read) or whole
 * (keel_http_call_body), and keel_http_call_close frees the call.
 * keel_http_fetch opens a call and reads its whole body. Everything runs
 * under the calling task's deadlines and cancellation: there is no
 * per-request timeout (use keel_timeout or a scope deadline). A call
 * belongs to the worker that opened it.
 *
 * Connections are pooled per worker (no lock: each worker keeps its own)
 * and per origin (scheme, host, port). A client (keel_http_client_open)
 * has its own settings; a NULL client is the runtime's default one, made
 * on each worker on first use with every default, and closed when
 * keel_run returns.
 *   - At most max_conns_per_origin connections per origin and worker; a
 *     call that finds them all busy waits for one (FIFO) under its
 *     deadline.
 *   - An idle connection is reused, most recent first, until
 *     idle_timeout_ms, shortened by a response's `Keep-Alive: timeout=N`
 *     to N-1 s; before reuse it is checked without waiting, and one that
 *     became readable (closed by the server, or stray bytes) is closed.
 *   - A request that fails on a reused connection before any byte of its
 *     response arrived (the server closed it at that very moment) is sent
 *     once more on a new connection if its method is idempotent (GET,
 *     HEAD, PUT, DELETE, OPTIONS, TRACE) and its body can be sent again (a
 *     whole body, or a streamed one not started yet). Any other request
 *     fails with that error: -ECONNRESET (closed or reset before a byte of
 *     the response) or -EPIPE (closed while the request was sent); the
 *     server may or may not have acted on it.
 *   - A connection carries another request only when its response was
 *     read to the end and said nothing against it: not HTTP/1.0 without
 *     keep-alive, no `Connection: close` either way, no body delimited by
 *     the end of the connection, no error, no byte past the response.
 *
 * Responses are parsed with llhttp (strict) and keel's own strict reading
 * of the head: a malformed response (bad status line or fields, obs-fold,
 * a bare CR or LF, Content-Length twice or invalid, Content-Length with
 * Transfer-Encoding, a Transfer-Encoding other than chunked, a bad chunk)
 * fails with -EPROTO, a head over max_header_bytes or max_headers with
 * -EMSGSIZE, and its connection is closed. 1xx responses are skipped.
 * With `Expect: 100-continue` among the fields, the body waits for the
 * 100 (at most expect_timeout_ms); a final response instead means the
 * body is not sent, and the connection closes after it. The response to
 * HEAD, a 1xx, 204 or 304 has no body. Trailers are read and dropped.
 *
 * Memory: a call and its response head live in one arena, taken from and
 * given back to the worker's pool with the read buffers: once the pool is
 * warm, a request on a kept connection allocates nothing.
 *
 * https:// runs over keel's TLS stream (keel/tls.h): the server is
 * verified (chain, and the URL's host as its name) unless the client's
 * context says otherwise, and each worker's pool keeps the sessions per
 * origin, so a new connection to an origin resumes the last session. A
 * TLS failure fails the call with the errors of keel/tls.h (-EKEYREJECTED,
 * -EKEYEXPIRED, -EPROTO, ...) and its reason goes to the call's `why`. */

typedef struct keel_http_client keel_http_client_t;
typedef struct keel_http_call keel_http_call_t;

/* Zeroed (or a NULL pointer): every default. */
typedef struct keel_http_client_opts {
  unsigned max_conns_per_origin; /* per worker; 0: 8 */
  unsigned max_idle;             /* idle connections kept per worker; 0: 64 */
  int64_t idle_timeout_ms;       /* 0: 30 s; negative: no reuse */
  size_t max_header_bytes;       /* a response's status line + fields; 0: 64 KiB */
  size_t max_headers;            /* fields of a response; 0: 100 */
  size_t max_body;               /* keel_http_call_body, keel_http_fetch; 0: 8 MiB */
  int64_t expect_timeout_ms;     /* wait for 100 Continue at most; 0: 1 s */
  bool no_retry;                 /* never send a request twice */
  /* https: a client context (keel/tls.h) that outlives the client; NULL:
   * one made per worker on first use, which verifies servers against
   * OpenSSL's default CA paths (SSL_CERT_FILE, SSL_CERT_DIR), offers ALPN
   * http/1.1 and keeps sessions for resumption. */
  keel_tls_ctx_t *tls;
  /* Addresses to connect to instead of resolving, as curl's --resolve:
   * "host:port:address" entries (NULL-terminated list); the host is still
   * the name sent and verified. */
  const char *const *resolve;
} keel_http_client_opts_t;

#define KEEL_HTTP_CLIENT_DEFAULT_MAX_HEADER_BYTES ((size_t)64 * 1024)
#define KEEL_HTTP_CLIENT_DEFAULT_MAX_BODY ((size_t)8 * 1024 * 1024)

/* A client: a connection pool with its settings, usable from every worker.
 * Returns 0, -EINVAL (outside keel_run) or -ENOMEM. */
int keel_http_client_open(const keel_http_client_opts_t *opts, keel_http_client_t **out);
/* Closes the idle connections on every worker and frees the client; calls
 * still open finish on their own and close their connections. No call may
 * be opened on it any more. Must run in a task. Returns 0, -EINVAL
 * (outside a task) or -ENOMEM. NULL: 0. */
int keel_http_client_close(keel_http_client_t *client);

/* A streamed request body: fills buf with up to len bytes and returns the
 * count, 0 at the end, or a negative errno that fails the request. */
typedef ssize_t (*keel_http_body_fn)(void *ctx, void *buf, size_t len);

/* A request. Only url is required. */
typedef struct keel_http_call_opts {
  const char *method; /* NULL: "GET" */
  /* "http://host[:port][/path][?query]": no user info; a #fragment is
   * not sent. */
  const char *url;
  /* Fields to send (a name_len or value_len of 0: strlen). keel writes
   * Host (unless given), Content-Length or Transfer-Encoding itself: a
   * Content-Length or Transfer-Encoding field is -EINVAL, as are names
   * that are not tokens and values with CR, LF or NUL. `Connection:
   * close` closes the connection after the response. */
  const keel_http_header_t *headers;
  size_t nheaders;
  /* A whole body (sent with Content-Length; also for POST/PUT with none) */
  const void *body;
  size_t body_len;
  /* or a streamed one: body_fn(body_ctx, ...) until it returns 0, sent
   * with Content-Length when body_fn_length > 0, else chunked. */
  keel_http_body_fn body_fn;
  void *body_ctx;
  int64_t body_fn_length;
  /* Optional: when the call fails and there is more to say than the
   * errno (a TLS failure: "certificate has expired"), why gets it. */
  char *why;
  size_t why_len;
} keel_http_call_opts_t;

/* Sends the request (on a pooled connection or a new one) and reads the
 * response head, 1xx skipped. Returns 0 and *out, to be closed with
 * keel_http_call_close; or a negative errno: -EINVAL (a bad URL, method
 * or field; outside a task), -EPROTONOSUPPORT (a scheme other than http
 * and https), a TLS failure (keel/tls.h; its reason in req->why),
 * a name resolution or connect error (-ECONNREFUSED, -ENOENT, ...),
 * -ECONNRESET / -EPIPE (the connection closed under the request), -EPROTO
 * (a malformed response), -EMSGSIZE (a head over the limits), the body
 * function's error, -ECANCELED / -ETIMEDOUT, -ENOMEM. */
int keel_http_call_open(keel_http_client_t *client, const keel_http_call_opts_t *req,
                        keel_http_call_t **out);

/* keel_http_call_open and keel_http_call_body at once: on 0 the whole
 * body is there (keel_http_call_body gives it again) and the connection
 * is back in the pool. The call is to be closed as ever. Its errors, and
 * keel_http_call_read's. */
int keel_http_fetch(keel_http_client_t *client, const keel_http_call_opts_t *req,
                    keel_http_call_t **out);

/* The response: status (200), HTTP version (10, 11), reason phrase. */
int keel_http_call_status(const keel_http_call_t *call);
int keel_http_call_version(const keel_http_call_t *call);
const char *keel_http_call_reason(const keel_http_call_t *call);
/* Its header fields, in the order received; the first named name
 * (case-insensitive) or NULL. */
size_t keel_http_call_header_count(const keel_http_call_t *call);
const keel_http_header_t *keel_http_call_header_at(const keel_http_call_t *call, size_t i);
const char *keel_http_call_header(const keel_http_call_t *call, const char *name);
/* The body's declared length; -1 when it has none (chunked, or up to the
 * end of the connection); 0 for a response without a body (HEAD, 204...). */
int64_t keel_http_call_content_length(const keel_http_call_t *call);
/* Whether the request went over a connection an earlier request used,
 * and whether it was sent twice (the first connection failed under it). */
bool keel_http_call_reused(const keel_http_call_t *call);
bool keel_http_call_retried(const keel_http_call_t *call);

/* Reads up to len bytes of the body (chunked framing removed). Returns
 * the count (> 0), 0 at the end of the body, or a negative errno: -EPROTO
 * (a malformed body), -EPIPE (the connection ended before the body did),
 * -ECANCELED, -ETIMEDOUT... An error is sticky and closes the connection.
 * At the end of the body the connection goes back to the pool. */
ssize_t keel_http_call_read(keel_http_call_t *call, void *buf, size_t len);

/* Reads the rest of the body into the call's arena, up to max_body.
 * Returns 0 and the body in *data (NUL-terminated, not counted in *len),
 * or keel_http_call_read's errors, or -EMSGSIZE past max_body. */
int keel_http_call_body(keel_http_call_t *call, const void **data, size_t *len);

/* Memory that lives until the call is closed. */
keel_arena_t *keel_http_call_arena(keel_http_call_t *call);

/* Frees the call. A connection whose body was not read to the end is
 * closed, unless the rest of it is already buffered. Returns 0. NULL: 0. */
int keel_http_call_close(keel_http_call_t *call);

#ifdef __cplusplus
}
#endif
#endif
