/* keel WebSocket (RFC 6455), with permessage-deflate (RFC 7692).
 *
 * A server upgrades an HTTP request (keel_ws_accept, from a handler of
 * keel_http_serve); a client connects to a ws:// or wss:// URL
 * (keel_ws_connect). Either way the result is a keel_ws_t over the
 * connection's stream (TCP, TLS over TCP, a lab pipe): the bytes the HTTP
 * layer read past the handshake are the WebSocket's first bytes.
 *
 * Two ways to run a server connection:
 *   - sequential: keel_ws_accept returns the WebSocket and the handler
 *     goes on with it (keel_ws_recv in a loop, keel_ws_send, ...), in its
 *     own task; that task keeps its stack while it waits;
 *   - per message: with opts.on_message set, keel_ws_accept returns at
 *     once and the handler returns; the connection's task then calls
 *     on_message for every message, and between messages it parks without
 *     a stack or a buffer: an idle WebSocket holds a few hundred bytes.
 *
 * Messages arrive whole (reassembled from their fragments, up to
 * max_message: beyond it the connection closes with 1009) or piece by
 * piece (keel_ws_recv_part) for streams of any size. Text is checked as
 * UTF-8 as it arrives, across fragments, and fails at the first bad byte
 * (1007). Pings are answered with a pong carrying their payload; only the
 * latest is answered when several arrive while a send is under way.
 *
 * Protocol errors close the connection with the code RFC 6455 names, and
 * the call that met them returns -EPROTO (1002: reserved bits without an
 * extension, a reserved opcode, a control frame over 125 bytes or
 * fragmented, a continuation with nothing to continue, a data frame inside
 * a fragmented message, an unmasked frame to a server or a masked one to a
 * client, a close payload of 1 byte or with an invalid code), -EILSEQ
 * (1007: invalid UTF-8 in text or a close reason), -EMSGSIZE (1009: a
 * message over max_message, counted after inflating). The close
 * handshake: a close received is answered with the same code, and a close
 * sent waits for the peer's up to close_timeout_ms; then the TCP
 * connection closes, the server's side first.
 *
 * Full duplex: one task receives while other tasks of the same worker
 * send. Frames of different messages never interleave: a whole message, or
 * a fragmented one from its first part to its last, is sent by one task
 * while the others wait their turn (control frames may go between the
 * fragments). A send returns once its frame is written to the stream; it
 * waits meanwhile, so a peer that reads nothing holds up its senders (under
 * their deadlines), never the server's memory.
 *
 * A WebSocket belongs to the worker of its connection: calls from a task
 * of another worker fail with -EXDEV. */
#ifndef KEEL_WS_H
#define KEEL_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "http.h"
#include "stream.h"
#include "tls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_ws keel_ws_t;

/* Opcodes (RFC 6455 §5.2). */
enum {
  KEEL_WS_CONTINUATION = 0x0,
  KEEL_WS_TEXT = 0x1,
  KEEL_WS_BINARY = 0x2,
  KEEL_WS_CLOSE = 0x8,
  KEEL_WS_PING = 0x9,
  KEEL_WS_PONG = 0xa
};

/* Close codes (RFC 6455 §7.4.1). 1005 and 1006 are never sent: they are
 * what keel_ws_close_code reports for a close without a code and for a
 * connection lost without a close. */
enum {
  KEEL_WS_NORMAL = 1000,
  KEEL_WS_GOING_AWAY = 1001,
  KEEL_WS_PROTOCOL_ERROR = 1002,
  KEEL_WS_UNSUPPORTED = 1003,
  KEEL_WS_NO_STATUS = 1005,
  KEEL_WS_ABNORMAL = 1006,
  KEEL_WS_INVALID_DATA = 1007,
  KEEL_WS_POLICY = 1008,
  KEEL_WS_TOO_BIG = 1009,
  KEEL_WS_MANDATORY_EXT = 1010,
  KEEL_WS_INTERNAL_ERROR = 1011
};

/* permessage-deflate (RFC 7692). Zeroed: off.
 *
 * Memory: a compressor with context takeover keeps zlib's deflate state
 * for the connection's life (about 2^(window_bits+2) + 2^(mem_level+9)
 * bytes: 256 KiB at 15 and 8), a decompressor 2^window_bits + 7 KiB
 * (39 KiB at 15). Without context takeover a direction's state is borrowed
 * from the worker for one message and given back, so an idle connection
 * holds none. A server therefore answers with server_no_context_takeover
 * unless server_context_takeover is set. */
typedef struct keel_ws_deflate_opts {
  bool enable;
  /* Server: keep the compressor's context across messages (it then costs
   * the connection its deflate state). Client: ask for it; unset, the
   * offer has server_no_context_takeover, so that the client's
   * decompressor keeps nothing between messages either. */
  bool server_context_takeover;
  /* Ask the client (server: in the answer; client: in the offer) not to
   * keep its compressor's context, so that the server's decompressor
   * need not keep one either. */
  bool client_no_context_takeover;
  /* LZ77 window of the server's compressor and of the client's (8..15;
   * 0: 15). A server answers with the smaller of its own and the
   * client's offer; a client offers them when not 0. */
  int server_max_window_bits;
  int client_max_window_bits;
  int level;       /* zlib level 1..9; 0: 6 */
  int mem_level;   /* zlib memLevel 1..9; 0: 8 */
  size_t min_size; /* messages shorter are sent uncompressed; 0: 32 */
} keel_ws_deflate_opts_t;

/* The per-message style's callback: runs in the connection's task for
 * every message (opcode KEEL_WS_TEXT or KEEL_WS_BINARY; data valid until
 * it returns). It may send on ws. Returning a negative errno closes the
 * connection with 1011 (internal error). */
typedef int (*keel_ws_message_fn)(keel_ws_t *ws, int opcode, const void *data, size_t len,
                                  void *ctx);

/* Zeroed (or a NULL pointer): every default. Times in milliseconds. */
typedef struct keel_ws_opts {
  size_t max_message;       /* a whole message, after inflating; 0: 1 MiB (1009) */
  int64_t close_timeout_ms; /* wait for the peer's close; 0: 5 s */
  int64_t ping_interval_ms; /* send a ping after this long without one; 0: none */
  int64_t pong_timeout_ms;  /* no pong by then: dropped (-ETIMEDOUT); 0: 10 s */
  int64_t idle_timeout_ms;  /* close with 1001 after this long without a frame; 0: none */
  /* Subprotocols: a server's, in its order of preference (the first of
   * them the client offers is chosen); a client's, offered in that order.
   * NULL-terminated, or NULL for none. */
  const char *const *subprotocols;
  keel_ws_deflate_opts_t deflate;
  /* Server: extra response fields; client: extra request fields. */
  const keel_http_header_t *headers;
  size_t nheaders;
  /* Server: called with the Origin field (NULL when there is none);
   * returning false refuses the upgrade with 403. NULL: every origin. */
  bool (*check_origin)(const char *origin, void *ctx);
  void *check_origin_ctx;
  /* Server, per-message style: see keel_ws_message_fn. on_close, if set,
   * runs once at the end with the close code received (or 1006) and
   * before the WebSocket is freed. */
  keel_ws_message_fn on_message;
  void (*on_close)(keel_ws_t *ws, int code, void *ctx);
  void *ctx;
  /* Client: the Origin field to send (NULL: none); a TLS client context
   * for wss:// (NULL: one per worker that verifies against OpenSSL's
   * default CA paths); "host:port:address" entries used instead of
   * resolving (NULL-terminated, or NULL); the most bytes of the
   * server's response head (0: 16 KiB). */
  const char *origin;
  keel_tls_ctx_t *tls;
  const char *const *resolve;
  size_t max_handshake;
  /* Client: when connecting fails with more to say than the errno (a
   * TLS failure, the status the server answered), why gets it. */
  char *why;
  size_t why_len;
} keel_ws_opts_t;

#define KEEL_WS_DEFAULT_MAX_MESSAGE ((size_t)1024 * 1024)

/* ---- Opening ---------------------------------------------------------------- */

/* Upgrades the request to a WebSocket (in a handler of keel_http_serve).
 * Checks it: GET, HTTP/1.1, `Upgrade: websocket`, `Connection: upgrade`, a
 * Sec-WebSocket-Key of 16 bytes in base64, no body; else answers 400 and
 * returns -EPROTO. Sec-WebSocket-Version other than 13 gets 426 with
 * `Sec-WebSocket-Version: 13` (-EPROTONOSUPPORT); an origin the hook
 * refuses, 403 (-EACCES). Otherwise chooses the subprotocol and the
 * extensions, sends 101, and takes the connection from the HTTP server
 * (the request deadline no longer applies).
 *   - Sequential style (opts->on_message NULL): returns 0 and *out; the
 *     handler owns the WebSocket and ends it with keel_ws_close.
 *   - Per-message style: returns 0 and *out NULL; the handler returns and
 *     the connection's task runs the WebSocket (opts and what they point
 *     to must outlive it).
 * When the server drains (its scope cancelled, keel_shutdown), every
 * WebSocket is sent close 1001, and the peer's close is awaited for the
 * runtime's drain deadline at most. Returns also -EALREADY (a response was
 * started), -ENOMEM, or a write error. */
int keel_ws_accept(keel_http_request_t *req, keel_http_response_t *res, const keel_ws_opts_t *opts,
                   keel_ws_t **out);

/* Whether a request asks for a WebSocket upgrade (Upgrade: websocket). */
bool keel_ws_is_upgrade(const keel_http_request_t *req);

/* Connects to "ws://host[:port][/path][?query]" or "wss://...", under the
 * calling task's deadlines: connect, TLS (wss: verified as keel/tls.h
 * says), the opening handshake and its checks (status 101, Upgrade and
 * Connection fields, Sec-WebSocket-Accept, a subprotocol among those
 * offered, extensions as offered). Returns 0 and *out; -EINVAL (a bad
 * URL), -EPROTONOSUPPORT (another scheme), a connect or TLS error,
 * -ECONNREFUSED... , -EPROTO (a handshake that fails the checks, or a
 * status other than 101: its code goes to opts->why), -EMSGSIZE (a head
 * over max_handshake), -ECANCELED / -ETIMEDOUT, -ENOMEM. */
int keel_ws_connect(const char *url, const keel_ws_opts_t *opts, keel_ws_t **out);

/* Wraps a connection whose handshake already happened elsewhere (a lab
 * pipe in a test, a protocol of the application's): server or client
 * side, with the extensions negotiated (deflate params NULL: none).
 * Takes s (closing the WebSocket closes it). */
typedef struct keel_ws_deflate_params {
  bool server_no_context_takeover, client_no_context_takeover;
  int server_max_window_bits, client_max_window_bits; /* 8..15 */
} keel_ws_deflate_params_t;
int keel_ws_open(keel_stream_t *s, bool server, const keel_ws_opts_t *opts,
                 const keel_ws_deflate_params_t *deflate, keel_ws_t **out);

/* ---- Receiving ---------------------------------------------------------------- */

/* Receives the next whole message: returns its opcode (KEEL_WS_TEXT or
 * KEEL_WS_BINARY) with *data and *len (valid until the next receive on
 * ws); 0 once the peer's close arrived and was answered (or after the
 * close keel sent was answered): keel_ws_close_code tells the code; or a
 * negative errno: -EPROTO, -EILSEQ, -EMSGSIZE (the connection was closed
 * with 1002, 1007, 1009), -ECONNRESET / -EPIPE (lost without a close:
 * 1006), -ETIMEDOUT (idle or pong timeout, or the task's deadline),
 * -ECANCELED, -EBUSY (another task is receiving), -EXDEV. A cancelled
 * receive loses nothing: a message half received goes on at the next
 * call. */
int keel_ws_recv(keel_ws_t *ws, const void **data, size_t *len);

/* A piece of a message: opcode (of the message), whether it is the
 * message's first piece and its last. */
typedef struct keel_ws_part {
  int opcode;
  bool first, last;
} keel_ws_part_t;

/* Receives the next piece of a message, up to len bytes, into buf: an
 * uncompressed message of any length goes through in pieces as its frames
 * arrive (max_message does not apply; text is still checked as UTF-8, and
 * a piece may end inside a code point); a compressed one is inflated
 * whole first (up to max_message: 1009 beyond), then handed out. Returns
 * the count (>= 0: an empty message is one piece of 0 bytes, with first
 * and last), with *part; KEEL_WS_CLOSED (never a count: see below) once
 * closed as for keel_ws_recv; or keel_ws_recv's errors. Do not mix with
 * keel_ws_recv inside one message. */
ssize_t keel_ws_recv_part(keel_ws_t *ws, void *buf, size_t len, keel_ws_part_t *part);
#define KEEL_WS_CLOSED ((ssize_t)-1 - 4095) /* below every errno */

/* ---- Sending ------------------------------------------------------------------ */

/* Sends a whole message (opcode KEEL_WS_TEXT or KEEL_WS_BINARY), deflated
 * when that was negotiated and it is long enough. Text is not checked:
 * the caller vouches for its UTF-8. Returns 0; -EINVAL (another opcode),
 * -EPIPE (a close was sent or the connection is lost), the stream's
 * errors, -ECANCELED / -ETIMEDOUT: a send cancelled before its frame
 * began did nothing; one cancelled mid-frame finishes the frame inside a
 * bounded shield, and if even that fails the WebSocket is unusable for
 * sending (-ENOTRECOVERABLE) and closes with 1006. */
int keel_ws_send(keel_ws_t *ws, int opcode, const void *data, size_t len);
int keel_ws_sendv(keel_ws_t *ws, int opcode, const struct iovec *iov, int iovcnt);

/* A fragmented message: the first call gives the opcode (TEXT or BINARY),
 * the next ones KEEL_WS_CONTINUATION, the last one fin true. Between the
 * first and the last, other senders of data wait. */
int keel_ws_send_part(keel_ws_t *ws, int opcode, const void *data, size_t len, bool fin);

/* A ping (payload up to 125 bytes, else -EINVAL). */
int keel_ws_ping(keel_ws_t *ws, const void *data, size_t len);

/* ---- Closing ------------------------------------------------------------------ */

/* Starts the close handshake: sends close with code (0: none; else a code
 * valid on the wire: 1000-1003, 1007-1014, 3000-4999) and a reason (up to
 * 123 bytes, UTF-8). The receiver then reads on, dropping data, until the
 * peer's close: keel_ws_recv returns 0. Returns 0, -EINVAL (a code or
 * reason that may not be sent), -EALREADY (sent before), or a send error. */
int keel_ws_shutdown(keel_ws_t *ws, int code, const char *reason);

/* Ends the WebSocket and frees it: sends close (code as keel_ws_shutdown;
 * unless one was sent), waits for the peer's up to close_timeout_ms
 * (unless it came), then closes the connection. Waits under the caller's
 * deadlines; a cancelled task's close sends what it can without waiting.
 * No other task may be using ws. Returns 0 or the first error met. NULL: 0. */
int keel_ws_close(keel_ws_t *ws, int code, const char *reason);

/* The close received: its code (1005 if it had none, 1006 while none
 * came), and its reason (NUL-terminated, "" if none). */
int keel_ws_close_code(const keel_ws_t *ws);
const char *keel_ws_close_reason(const keel_ws_t *ws);
/* The code of the close keel sent (1005 for one without a code), 0 if it
 * sent none: after an error, the code it failed the connection with. */
int keel_ws_close_sent(const keel_ws_t *ws);

/* ---- About the connection ----------------------------------------------------- */

/* The subprotocol chosen, or NULL. */
const char *keel_ws_subprotocol(const keel_ws_t *ws);
/* Whether permessage-deflate is in use, and its parameters. */
bool keel_ws_deflate(const keel_ws_t *ws, keel_ws_deflate_params_t *params);
/* The stream under the WebSocket (for keel_stream_query: the peer's
 * address, TLS). */
keel_stream_t *keel_ws_stream(keel_ws_t *ws);
/* The ctx given in the options. */
void *keel_ws_ctx(const keel_ws_t *ws);

#ifdef __cplusplus
}
#endif
#endif
