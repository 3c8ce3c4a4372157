/* Internal header of the TLS layer (src/tls): the context and stream
 * layouts shared by ctx.c, bio.c and stream.c. */
#ifndef KEEL_TLS_INTERNAL_H
#define KEEL_TLS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "queue.h"
#include "worker.h"
#include "keel/stream-impl.h"
#include "keel/tls.h"

/* The largest record on the wire: header, 16 KiB of plaintext and the
 * most any suite of the policy adds (OpenSSL's bound). */
#define TLS_RECORD_MAX (SSL3_RT_HEADER_LENGTH + SSL3_RT_MAX_PLAIN_LENGTH + 256)
/* Ciphertext read from the inner stream at once: two full records. */
#define TLS_RBUF_CAP ((size_t)32 * 1024)
/* Ciphertext written to the inner stream at once: four full records, then
 * a record's worth of room to gather small pieces of a writev into one. */
#define TLS_WBUF_CAP ((size_t)4 * TLS_RECORD_MAX)
#define TLS_STAGE_CAP ((size_t)SSL3_RT_MAX_PLAIN_LENGTH)
#define TLS_WBUF_ALLOC (TLS_WBUF_CAP + TLS_STAGE_CAP)

/* Session ticket keys: a new one every quarter of the lifetime, each kept
 * until the last ticket it encrypted has expired. */
#define TLS_TICKET_KEYS 6

typedef struct tls_ticket_key {
  unsigned char name[16];
  unsigned char aes[32];
  unsigned char hmac[32];
  int64_t created_ns;
} tls_ticket_key_t;

typedef struct tls_sni_cert {
  X509 *cert;
  EVP_PKEY *key;
  STACK_OF(X509) * chain;
  char **names; /* DNS names, lowercase; "*.x" for wildcards */
  size_t nnames;
} tls_sni_cert_t;

typedef struct tls_session {
  char *key;
  SSL_SESSION *sess;
  uint64_t used; /* the cache's clock when last stored or taken */
} tls_session_t;

struct keel_tls_ctx {
  atomic_int refs; /* the user's hold and one per open stream */
  bool server;
  bool verify; /* a client that verifies the server */
  SSL_CTX *ssl;
  BIO_METHOD *bio_method;
  int64_t handshake_timeout_ns; /* 0: none */
  int64_t ticket_lifetime_ns;
  tls_sni_cert_t *sni;
  size_t nsni;
  unsigned char *alpn; /* wire format: length-prefixed names */
  size_t alpn_len;
  pthread_mutex_t lock; /* the ticket keys and the session cache */
  tls_ticket_key_t keys[TLS_TICKET_KEYS];
  int nkeys;
  tls_session_t *sessions;
  size_t nsessions, max_sessions;
  uint64_t session_clock;
};

enum { HS_NONE, HS_RUNNING, HS_DONE };

struct keel_tls {
  keel_stream_t super;
  keel_tls_ctx_t *ctx;
  keel__worker_t *worker; /* the inner stream's: t is used only there */
  SSL *ssl;
  char *session_key; /* client: the session cache's key */
  char *alpn;        /* the protocol agreed, NUL-terminated */
  /* Ciphertext from the inner stream, not yet given to OpenSSL:
   * rbuf[rhead, rhead + rlen). */
  char *rbuf;
  size_t rhead, rlen;
  bool rd_eof;     /* the inner stream ended */
  bool rd_drained; /* the last inner read did not fill the room it had */
  /* Where the bytes given to OpenSSL stand in the record stream, so that
   * an end of stream inside a record is told from one between records. */
  unsigned char rec_hdr[SSL3_RT_HEADER_LENGTH];
  unsigned rec_hdr_have;
  size_t rec_left;
  /* Ciphertext for the inner stream: wbuf[whead, whead + wlen). */
  char *wbuf;
  size_t whead, wlen;
  bool flushing;      /* a task is sending wbuf (it sends what others add) */
  bool reader;        /* the one reader is in an op */
  bool reading;       /* ... and parked reading the inner stream into rbuf */
  bool writing;       /* the one writer is in an op (it may use the stage) */
  bool shutdown_sent; /* close_notify written */
  bool peer_closed;   /* close_notify received */
  bool closed;        /* closed while tasks were parked: the last one frees t */
  int hs_state;
  int failed; /* 0, or the negative errno every op now returns */
  int parked; /* tasks inside t's ops that may park */
  int64_t hs_deadline_ns;
  int alert_received, alert_sent;
  keel__queue_t waiters; /* tasks waiting for the handshake or the flusher */
  char reason[KEEL_TLS_REASON_MAX];
};

/* bio.c */
BIO_METHOD *keel__tls_bio_method(void);
/* Gives t's empty ciphertext buffers back to the worker. */
void keel__tls_bufs_settle(keel_tls_t *t);
char *keel__tls_buf_take(keel__worker_t *w, size_t size);
void keel__tls_buf_give(keel__worker_t *w, char *buf, size_t size);

/* ctx.c */
void keel__tls_ctx_hold(keel_tls_ctx_t *ctx);
SSL_SESSION *keel__tls_session_get(keel_tls_ctx_t *ctx, const char *key);
/* The ALPN wire form of a NULL-terminated list (malloc'd): 0, -EINVAL. */
int keel__tls_alpn_wire(const char *const *list, unsigned char **out, size_t *len);

/* stream.c, for the layers above */
/* Frees t without any I/O, leaving its inner stream alone: for streams
 * that outlive their worker's loop (the HTTP client's idle pool). */
void keel__tls_free_stopped(keel_tls_t *t);

/* errors.c */
/* Sets t->reason from the failure OpenSSL reports now and returns the
 * errno for it; ssl_err is SSL_get_error's. */
int keel__tls_error(keel_tls_t *t, int ssl_err);
void keel__tls_set_reason(keel_tls_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The ctx-level reason for keel_tls_ctx_open's failures. */
int keel__tls_ctx_error(char *reason, size_t len, int err, const char *what);

/* Counts a handshake's end in the metrics (observe.c): err 0 or why it failed. */
void keel__tls_count_handshake(bool server, int err, bool resumed);

#endif
