/* The opening handshake's shared pieces (src/ws/handshake.c) and the
 * WebSocket core's entry points for the server and the client. */
#ifndef KEEL_WS_HANDSHAKE_H
#define KEEL_WS_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>

#include "keel/bufstream.h"
#include "keel/tcp.h"
#include "ws-internal.h"

#define WS_ACCEPT_LEN 28

/* base64(SHA-1(key + GUID)) into out (NUL-terminated). 0, -ENOMEM, -EIO. */
int keel__ws_accept_key(const char *key, size_t key_len, char out[WS_ACCEPT_LEN + 1]);
/* A Sec-WebSocket-Key: 16 bytes in canonical base64. */
bool keel__ws_key_valid(const char *key, size_t len);
/* The next token of a comma-separated list (RFC 9110 §5.6.1) from *pp:
 * 1 with *tok and *len, 0 at the end, -1 for something that is not a
 * token list. */
int keel__ws_next_token(const char **pp, const char *end, const char **tok, size_t *len);
/* Whether the list value holds token (case-insensitive). */
bool keel__ws_list_has(const char *value, const char *token);

/* ws.c: a WebSocket over the buffered stream bs (taken), with tcp (may be
 * NULL) and tls (may be NULL) the layers under it, for parking idle. */
int keel__ws_new(keel_bufstream_t *bs, keel_tcp_t *tcp, keel_tls_t *tls, bool server,
                 const keel_ws_opts_t *opts, const ws_pmd_params_t *pmd, const char *subprotocol,
                 keel_ws_t **out);
/* Runs a server WebSocket in the per-message style until it ends, then
 * frees it (the connection task's continuation). */
int keel__ws_run(void *ws);
/* The drain hook: close 1001 now. Returns the close timeout (ms). */
int keel__ws_drain(void *ws);
/* Sequential style: the request whose hooks name ws (cleared when ws is
 * freed); keel__ws_orphan closes a WebSocket its handler left open. */
void keel__ws_set_request(keel_ws_t *ws, keel_http_request_t *req);
/* The HTTP server's count of connections this WebSocket still counts in
 * (max_conns); decremented when it is freed. */
void keel__ws_set_live(keel_ws_t *ws, unsigned *live);
int keel__ws_orphan(void *ws);

/* The connection's sticky error (0 if none): -ETIMEDOUT after a ping
 * went unanswered for pong_timeout_ms. */
int keel__ws_error(const keel_ws_t *ws);

#endif
