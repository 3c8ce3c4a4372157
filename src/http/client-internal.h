/* Internal header of the HTTP client (src/http: url.c, pool.c, client.c,
 * client-read.c). */
#ifndef KEEL_HTTP_CLIENT_INTERNAL_H
#define KEEL_HTTP_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http-internal.h"
#include "queue.h"
#include "keel/sync.h"

#define HC_BUF_SIZE (16 * 1024) /* a connection's read buffer while in use */
#define HC_BUF_CACHE 16         /* free read buffers kept per worker */
#define HC_ARENA_CACHE 16       /* free call arenas kept per worker */
#define HC_ARENA_CHUNK \
  8192 /* bytes of an arena's chunks: a call with a small head and body fits in the first */
#define HC_HEAD_INITIAL 1024        /* first room for a response head's copy */
#define HC_MAX_INFORMATIONAL 16     /* 1xx responses skipped before a final one */
#define HC_PRUNE_NS KEEL_NS_PER_SEC /* idle connections looked over at most this often */

/* A client's settings, every default filled in. */
typedef struct hc_limits {
  unsigned max_per_origin, max_idle;
  int64_t idle_timeout_ns; /* 0: no reuse */
  int64_t expect_timeout_ns;
  size_t max_header_bytes, max_headers, max_body;
  bool no_retry;
  keel_tls_ctx_t *tls;        /* the user's, or NULL: the pool's own */
  const char *const *resolve; /* "host:port:address" overrides */
} hc_limits_t;

/* A URL split up (pointers into the URL; host without brackets). */
typedef struct hc_url {
  bool tls;
  const char *host;
  size_t host_len;
  bool ipv6;
  uint16_t port;
  const char *target; /* path and query; "" means "/" */
  size_t target_len;
} hc_url_t;

typedef struct hc_pool hc_pool_t;

/* An origin (scheme, host, port) of one worker's pool. */
typedef struct hc_origin {
  keel__queue_t node; /* in the pool's origins, most recently used first */
  hc_pool_t *pool;
  keel__queue_t idle; /* idle connections (hc_conn_t.node), most recent first */
  unsigned nidle;
  unsigned users;     /* calls holding or waiting for a permit */
  keel_sem_t permits; /* connections in use: max_per_origin */
  bool tls;
  uint16_t port;
  size_t host_len;
  char *host;      /* lowercase, no brackets */
  char hostport[]; /* what keel_tcp_connect is given; host follows it */
} hc_origin_t;

/* A connection: in use by one call, or idle in its origin's list. */
typedef struct hc_conn {
  keel__queue_t node; /* in the origin's idle list */
  keel__queue_t lru;  /* in the pool's idle list, oldest first */
  hc_origin_t *origin;
  keel_tcp_t *tcp;  /* the socket under s: the liveness check looks at it */
  keel_tls_t *tls;  /* https: the TLS layer over tcp */
  keel_stream_t *s; /* what requests go through: TCP or TLS */
  char *buf;        /* HC_BUF_SIZE bytes while in use; NULL when idle */
  size_t head, len; /* the buffered bytes: buf[head, head + len) */
  int64_t idle_deadline;
  unsigned uses; /* requests carried */
  bool lab;      /* on the lab network, which frees it when the run ends */
} hc_conn_t;

/* One worker's pool of a client (or the worker's default one). */
struct hc_pool {
  hc_limits_t lim;
  keel__queue_t origins;
  keel__queue_t idle; /* every idle connection (hc_conn_t.lru), oldest first */
  unsigned nidle;
  unsigned calls; /* calls open */
  bool closing;   /* its client was closed: freed when the last call closes */
  int64_t next_prune;
  int nbufs, narenas;
  keel_tls_ctx_t *own_tls; /* https without a context of the user's: made on first use */
  char *bufs[HC_BUF_CACHE];
  keel_arena_t *arenas[HC_ARENA_CACHE];
};

struct keel_http_client {
  hc_limits_t lim;
  int nworkers;
  hc_pool_t *pools[]; /* per worker, made by that worker on first use */
};

struct keel_http_call {
  hc_pool_t *pool;
  keel_arena_t *arena;
  hc_origin_t *origin; /* while it holds a permit */
  hc_conn_t *conn;     /* until the end of the response */
  llhttp_t parser;
  /* The request, formatted. */
  char *req_head;
  size_t req_head_len;
  const keel_http_call_opts_t *req; /* during keel_http_call_open only */
  /* The response head: a copy of its bytes, then what was read from it. */
  char *head;
  size_t head_len, head_cap;
  int status, version;
  const char *reason;
  keel_http_header_t *headers;
  size_t nheaders;
  int64_t content_length; /* -1: chunked, or up to the end of the connection */
  int64_t keepalive_ns;   /* from Keep-Alive: timeout=N; -1: none */
  int informational;      /* 1xx responses skipped */
  /* keel_http_call_read's destination while llhttp runs */
  char *dst;
  size_t room, got;
  const void *body; /* keel_http_call_body's result */
  size_t body_len;
  size_t trailer_bytes;
  uint16_t ext_len; /* chunk extension bytes of this chunk */
  char tail[2];     /* the last two body bytes llhttp was given before this feed */
  int err;          /* sticky error of the response (negative errno) */
  bool head_method, idempotent, close_req, expect;
  bool no_keep; /* this attempt's connection must not be reused */
  bool reused, retried, got_bytes, body_pulled;
  bool head_done, msg_done, body_until_eof, discard;
};

/* url.c: splits an absolute http(s) URL. 0, -EINVAL, -EPROTONOSUPPORT. */
int keel__hc_url_parse(const char *url, hc_url_t *out);

/* pool.c */
/* The worker's default client TLS context (OpenSSL's default CA paths,
 * ALPN http/1.1, sessions kept), made on first use; the WebSocket client
 * shares it. */
int keel__hc_default_tls(keel_tls_ctx_t **out, char *why, size_t why_len);
hc_pool_t *keel__hc_pool_get(keel_http_client_t *client);
keel_arena_t *keel__hc_arena_take(hc_pool_t *p);
void keel__hc_arena_give(hc_pool_t *p, keel_arena_t *a);
/* The origin of url in p (made if new), counted as used by the caller. */
int keel__hc_origin_get(hc_pool_t *p, const hc_url_t *url, hc_origin_t **out);
/* Drops the caller's use; frees the origin when nobody uses it. */
void keel__hc_origin_put(hc_origin_t *o);
/* A live idle connection of o, or a new one (fresh: never an idle one).
 * The caller holds one of o's permits. A failure's reason in words goes
 * to why (may be NULL) when there is more to say than the errno (TLS). */
int keel__hc_conn_get(hc_origin_t *o, bool fresh, hc_conn_t **out, bool *reused, char *why,
                      size_t why_len);
/* Back to o's idle list (keep, idle_ns > 0) or closed. */
void keel__hc_conn_put(hc_conn_t *c, bool keep, int64_t idle_ns);
char *keel__hc_buf_take(hc_pool_t *p);
void keel__hc_buf_give(hc_pool_t *p, char *buf);
/* The call was closed: frees a closed client's pool once its last call is. */
void keel__hc_pool_call_done(hc_pool_t *p);

/* client.c: hands the connection back (keep: for another request) and
 * the origin's permit. */
void keel__hc_call_release(keel_http_call_t *call, bool keep);

/* client-head.c: reads the copy of a complete head (status line, fields,
 * framing). 0, -EPROTO, -EMSGSIZE (too many fields) or -ENOMEM. */
int keel__hc_head_parse(keel_http_call_t *call);
/* Whether the response has no body whatever its fields say. */
bool keel__hc_bodyless(const keel_http_call_t *call, int status);

/* client-read.c */
extern const llhttp_settings_t keel__hc_settings;
/* Reads the response head. Returns 0 at a final response, 1 after a 1xx
 * when stop_at_1xx, or a negative errno. */
int keel__hc_read_head(keel_http_call_t *call, bool stop_at_1xx);
/* Whether the connection may carry another request after this response. */
bool keel__hc_reusable(keel_http_call_t *call);
/* Feeds llhttp the bytes already buffered, dropping body bytes: true if
 * the response ended within them. */
bool keel__hc_finish_buffered(keel_http_call_t *call);

#endif
