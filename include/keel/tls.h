/* keel TLS: OpenSSL as a stream over any stream.
 *
 * A context (keel_tls_ctx_t) holds what connections share: certificates,
 * the CA store, the policy, ALPN, the session tickets' keys (server) and
 * the session cache (client). A TLS stream (keel_tls_t) wraps any
 * keel_stream_t — a TCP connection, a lab pipe, a lab network connection —
 * and is itself a stream: keel_read, keel_write, keel_close work on it as
 * on TCP. OpenSSL reads and writes the inner stream through keel's own
 * BIO, never a socket, so the same code runs over the lab network with its
 * faults.
 *
 * Policy by default: TLS 1.2 and 1.3; TLS 1.2 suites ECDHE with AES-GCM or
 * CHACHA20-POLY1305 only; groups X25519, P-256, P-384; renegotiation and
 * compression off. The options tighten it (min_version, ciphers,
 * ciphersuites, groups).
 *
 * The client verifies the server by default: the chain against the CA
 * store (OpenSSL's default paths unless ca_file / ca_dir / ca_pem say
 * otherwise, so SSL_CERT_FILE and SSL_CERT_DIR work) and the host name
 * (or IP address) given as server_name, which is also sent as SNI (an IP
 * address is not: RFC 6066). insecure_no_verify turns verification off.
 *
 * The handshake runs on the first read or write, or explicitly with
 * keel_tls_handshake, under the calling task's deadlines; on the server
 * also under handshake_timeout_ms (10 s by default).
 *
 * Full duplex: one task may read while another writes (of the same
 * worker). OpenSSL is only ever entered by one task at a time, and never
 * across a park: a reader waiting for bytes does not hold up a writer. Two
 * readers (or two writers) at once are refused with -EBUSY.
 *
 * Cancellation: a write encrypts the caller's bytes into records and sends
 * them before it returns, so a write that returns a count has put those
 * bytes on the inner stream. If the task is cancelled (or its deadline
 * passes) before it starts, the write does nothing and returns -ECANCELED
 * (-ETIMEDOUT). If that happens while records are half sent, the write
 * finishes sending them inside a shield bounded by KEEL_TLS_FLUSH_SHIELD_MS
 * and returns the count; if even that fails (the peer reads nothing), the
 * stream is poisoned for writing: later writes and shutdown fail with
 * -ENOTRECOVERABLE (reads go on), and keel_tls_reason says why. A
 * cancelled read returns -ECANCELED (-ETIMEDOUT) and loses nothing: the
 * bytes it had received stay for the next read.
 *
 * End of stream: a read returns 0 after the peer's close_notify, and also
 * when the inner stream ends at a record boundary without one (many peers
 * close without it; keel_tls_info's peer_closed tells the two apart). An
 * end inside a record is truncation: -EPROTO, reason "truncated".
 * keel_close sends close_notify once (if the handshake completed) and
 * what was still unsent, without waiting for the peer's, then closes the
 * inner stream; keel_stream_shutdown(SHUT_WR) sends close_notify and shuts
 * the inner stream's writing side (TLS 1.3 half-close).
 *
 * Errors: a negative errno plus a readable reason (keel_tls_reason):
 *   -ETIMEDOUT      handshake limit or deadline ("handshake timeout")
 *   -EKEYEXPIRED    the peer's certificate has expired or is not yet valid
 *   -EKEYREJECTED   the peer's certificate failed verification (unknown
 *                   CA, host name mismatch, self-signed, bad signature,
 *                   no certificate when one is required), or the peer
 *                   rejected ours (a certificate alert received)
 *   -EPROTONOSUPPORT no protocol version in common
 *   -ENOPROTOOPT    ALPN: no protocol in common
 *   -EPROTO         any other TLS failure: a bad record, a decryption
 *                   failure, no cipher in common, an alert received,
 *                   truncation, garbage instead of TLS
 *   -ECONNRESET     the peer closed or reset during the handshake
 *   -ENOTRECOVERABLE the stream was poisoned by an earlier failure
 * Once a TLS error has happened, every later call fails with it.
 *
 * Memory: an idle TLS stream holds no buffer: keel_stream_wait_readable
 * (which a buffered stream above calls before it borrows its own) gives
 * OpenSSL's read and write buffers back, and keel's own ciphertext buffers
 * come from a per-worker cache only while bytes are in flight. What stays
 * is OpenSSL's per-connection state (see the README for the figure).
 *
 * kTLS is not used: the kernel on the machines keel is tested on has no
 * `tls` ULP, and OpenSSL enables kTLS only over socket BIOs. The seam for
 * it is in src/tls/stream.c (tls_offload). */
#ifndef KEEL_TLS_H
#define KEEL_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_tls_ctx keel_tls_ctx_t;
typedef struct keel_tls keel_tls_t;

/* A certificate chain and its private key, from PEM files or from PEM text
 * in memory (NUL-terminated). The chain file holds the leaf first, then
 * the intermediates. */
typedef struct keel_tls_cert {
  const char *cert_file;
  const char *key_file;
  const char *cert_pem;
  const char *key_pem;
} keel_tls_cert_t;

enum {
  KEEL_TLS_1_2 = 0x0303,
  KEEL_TLS_1_3 = 0x0304,
};

/* What a server asks of its clients' certificates. */
typedef enum keel_tls_client_auth {
  KEEL_TLS_CLIENT_CERT_NONE = 0, /* not asked for */
  KEEL_TLS_CLIENT_CERT_OPTIONAL, /* asked for; one sent must verify */
  KEEL_TLS_CLIENT_CERT_REQUIRE,  /* required, and must verify */
} keel_tls_client_auth_t;

/* Zeroed: every default (a client context that verifies with OpenSSL's
 * default CA paths). */
typedef struct keel_tls_ctx_opts {
  bool server;
  /* Server: its certificate (required); the one used when no SNI name
   * matches. Client: its certificate for mutual TLS (optional). */
  keel_tls_cert_t cert;
  /* Server: more certificates, chosen by the client's SNI against the DNS
   * names of each certificate (subjectAltName, or the CN when it has
   * none); "*.example.com" matches one label. */
  const keel_tls_cert_t *sni_certs;
  size_t sni_count;
  /* Trust anchors: a client verifies the server with them, a server its
   * clients' certificates. Client default: OpenSSL's default paths. */
  const char *ca_file;
  const char *ca_dir;
  const char *ca_pem;
  keel_tls_client_auth_t client_auth; /* server */
  /* Client: accept any certificate and any name. For tests only. */
  bool insecure_no_verify;
  /* ALPN protocols, most preferred first, NULL-terminated. A server picks
   * the first of its own that the client offers (none in common: the
   * handshake fails with no_application_protocol); a client offers them. */
  const char *const *alpn;
  int min_version;          /* 0: KEEL_TLS_1_2 */
  int max_version;          /* 0: KEEL_TLS_1_3 */
  const char *ciphers;      /* TLS 1.2 suites (OpenSSL syntax); NULL: the default policy */
  const char *ciphersuites; /* TLS 1.3 suites; NULL: OpenSSL's three AEADs */
  const char *groups;       /* NULL: "X25519:P-256:P-384" */
  /* Server: a handshake's time limit from keel_tls_open; 0: 10 s;
   * negative: none (the task's deadlines only). Client: 0 means none. */
  int64_t handshake_timeout_ms;
  /* Server: session tickets (stateless resumption), on by default. Their
   * keys rotate every quarter of the lifetime; a ticket stays valid for
   * the lifetime. */
  bool no_tickets;
  int64_t ticket_lifetime_s; /* 0: 3600 */
  /* Client: sessions kept for resumption, one per session key (the
   * origin); 0: 256. */
  size_t session_cache_size;
  bool no_session_cache;
} keel_tls_ctx_opts_t;

#define KEEL_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
#define KEEL_TLS_DEFAULT_TICKET_LIFETIME_S 3600
#define KEEL_TLS_FLUSH_SHIELD_MS 1000
#define KEEL_TLS_REASON_MAX 160

/* Makes a context; usable from every worker and thread. Returns 0, or a
 * negative errno with the reason in reason (reason_len bytes of room; may
 * be NULL): -EINVAL (bad option, unknown cipher or group, a key that does
 * not match its certificate), -ENOENT (a file missing), -EACCES, -EPROTO
 * (a PEM that does not parse), -ENOMEM. */
int keel_tls_ctx_open(const keel_tls_ctx_opts_t *opts, keel_tls_ctx_t **out, char *reason,
                      size_t reason_len);
/* Releases the caller's hold: the context is freed when its last stream
 * closes too. NULL: nothing. */
void keel_tls_ctx_close(keel_tls_ctx_t *ctx);

/* Per-connection settings; zeroed or NULL: the context's. */
typedef struct keel_tls_opts {
  /* Client: the server's name, sent as SNI and verified (required unless
   * the context is insecure_no_verify). */
  const char *server_name;
  /* Client: the key of the cached session to resume and to store the new
   * one under (the origin, e.g. "example.com:443"); NULL: server_name. */
  const char *session_key;
  /* Client: ALPN list for this connection instead of the context's. */
  const char *const *alpn;
} keel_tls_opts_t;

/* Wraps inner in TLS with ctx's role. No I/O yet: the handshake comes on
 * the first read or write or keel_tls_handshake. Takes ownership of inner
 * on success only (closing the TLS stream closes it). The stream belongs
 * to inner's worker. Returns 0; -EINVAL (no server_name on a verifying
 * client, outside a worker), -ENOMEM. */
int keel_tls_open(keel_tls_ctx_t *ctx, keel_stream_t *inner, const keel_tls_opts_t *opts,
                  keel_tls_t **out);

/* The stream view, for keel_read, keel_write, keel_close, ... */
keel_stream_t *keel_tls_stream(keel_tls_t *t);

/* The TLS layer of a stack of streams (a buffered stream over TLS, ...),
 * or NULL when there is none. */
keel_tls_t *keel_tls_of(keel_stream_t *s);

/* Runs the handshake now, or waits for the one under way. Returns 0, or a
 * negative errno (see the top of this file) with keel_tls_reason set. */
int keel_tls_handshake(keel_tls_t *t);

/* Why the last call failed, readable ("certificate has expired",
 * "hostname mismatch", "alert received: unknown ca", "handshake timeout",
 * "truncated"); "" when nothing failed. Valid while t is open. */
const char *keel_tls_reason(const keel_tls_t *t);

/* What the handshake agreed on. The strings live as long as t. */
typedef struct keel_tls_info {
  const char *version;     /* "TLSv1.3", "TLSv1.2"; NULL before the handshake */
  const char *cipher;      /* OpenSSL's name of the suite */
  const char *alpn;        /* the protocol agreed, NULL: none */
  const char *server_name; /* the SNI name (a server: what the client asked) */
  bool resumed;            /* the session was resumed */
  bool peer_cert;          /* the peer sent a certificate, and it verified */
  bool peer_closed;        /* close_notify received */
  int alert_received;      /* the TLS alert the peer sent last, -1: none */
} keel_tls_info_t;

/* Fills *info; -EINVAL when t is NULL. */
int keel_tls_info(const keel_tls_t *t, keel_tls_info_t *info);

/* Between messages: gives OpenSSL's buffers and keel's back, and returns
 * 0 when t holds no byte at all (none received and not yet read, none to
 * send, the handshake done and no task in t), so that the task may hand
 * its stack back with keel_tcp_park on the TCP connection below and lose
 * nothing: when bytes arrive, it reads them through t. -EBUSY otherwise
 * (then wait with keel_stream_wait_readable, which holds no buffer
 * either). Never parks. */
int keel_tls_idle(keel_tls_t *t);

/* The subject of the peer's certificate, one line ("CN=client,O=..."),
 * into buf. Returns its length, or -ENOENT (no certificate), -ENOSPC. */
int keel_tls_peer_subject(const keel_tls_t *t, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
