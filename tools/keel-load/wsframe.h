/* keel-load's WebSocket wire format (RFC 6455): frame headers, masking, the
 * opening handshake's key, request and response check.
 *
 * Written apart from keel's own WebSocket layer (src/ws) on purpose: the
 * benchmark checks keel's server with a second implementation, so a bug
 * the two shared would not pass unseen. Pure functions over buffers, no
 * I/O, so that tests/test_load_ws.c checks them on their own. */
#ifndef KEEL_LOAD_WSFRAME_H
#define KEEL_LOAD_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WSF_MAX_HEADER 14   /* 2 + 8 (64-bit length) + 4 (mask) */
#define WSF_MAX_CONTROL 125 /* payload of a control frame, at most */
#define WSF_NONCE_LEN 16    /* Sec-WebSocket-Key: 16 random bytes */
#define WSF_KEY_LEN 24      /* ... in base64 */
#define WSF_ACCEPT_LEN 28   /* base64 of a SHA-1 digest */

enum {
  WSF_CONTINUATION = 0x0,
  WSF_TEXT = 0x1,
  WSF_BINARY = 0x2,
  WSF_CLOSE = 0x8,
  WSF_PING = 0x9,
  WSF_PONG = 0xa,
};

typedef struct wsf_header {
  bool fin;
  uint8_t rsv;    /* RSV1..RSV3 as bits 2..0: 0 without an extension */
  uint8_t opcode; /* 0x0 .. 0xf */
  bool masked;
  uint8_t mask[4]; /* when masked */
  uint64_t payload_len;
} wsf_header_t;

/* Writes a frame header into out (WSF_MAX_HEADER bytes of room), with the
 * shortest length encoding and, if mask is not NULL, the masking key.
 * Returns its length in bytes (2 .. 14). */
size_t wsf_put_header(uint8_t *out, bool fin, uint8_t opcode, uint64_t payload_len,
                      const uint8_t *mask);

/* Parses the frame header at the start of buf[0 .. len). Returns its length
 * (2 .. 14) with *out filled in; 0 when buf holds only part of it; -EPROTO
 * for a length that is not in its shortest form or has the top bit of the
 * 64-bit form set (RFC 6455 §5.2 forbids both). Opcode, RSV bits and the
 * mask bit are reported, not judged: what is acceptable depends on who
 * sent the frame. */
int wsf_parse_header(const uint8_t *buf, size_t len, wsf_header_t *out);

/* dst[i] = src[i] ^ mask[(phase + i) % 4] for i < len, eight bytes at a
 * time: phase is the offset in the payload of src[0], so that a payload
 * can be masked in pieces. dst may be src. */
void wsf_mask(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t mask[4], uint64_t phase);

/* Sec-WebSocket-Key: nonce in base64, NUL-terminated. */
void wsf_make_key(const uint8_t nonce[WSF_NONCE_LEN], char key[WSF_KEY_LEN + 1]);

/* Sec-WebSocket-Accept for key: base64(SHA-1(key || RFC 6455's GUID)),
 * NUL-terminated. 0, or -EIO if the digest cannot be computed. */
int wsf_accept_for(const char *key, char accept[WSF_ACCEPT_LEN + 1]);

/* The upgrade request (GET path, no extension and no subprotocol offered)
 * into out. Returns its length, or -ENOSPC if it does not fit in cap. */
int wsf_request(char *out, size_t cap, const char *host_port, const char *path, const char *key);

/* Length of the response head at the start of buf (through its blank
 * line), or 0 while it is incomplete. */
size_t wsf_head_len(const char *buf, size_t len);

/* Checks a response head (head_len bytes, from wsf_head_len) to the
 * request: HTTP/1.1 101, `Upgrade: websocket`, `Connection` naming
 * upgrade, Sec-WebSocket-Accept equal to accept, and neither an extension
 * nor a subprotocol (none was offered). Returns NULL if it passes, else
 * why not (a static string). */
const char *wsf_check_response(const char *head, size_t head_len, const char *accept);

#endif
