/* Internal header of the WebSocket layer (src/ws). */
#ifndef KEEL_WS_INTERNAL_H
#define KEEL_WS_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "keel/ws.h"

/* ---- A growable buffer (messages, inflated data) ------------------------------ */

typedef struct ws_buf {
  uint8_t *p;
  size_t len, cap;
} ws_buf_t;

/* Makes room for `more` bytes after len (capacity doubling, never above
 * max). Returns 0, -EMSGSIZE when len + more > max, or -ENOMEM. */
static inline int ws_buf_reserve(ws_buf_t *b, size_t more, size_t max) {
  if (more > max || b->len > max - more)
    return -EMSGSIZE;
  size_t need = b->len + more;
  if (need <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  if (cap > max)
    cap = max;
  uint8_t *p = realloc(b->p, cap);
  if (!p)
    return -ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static inline void ws_buf_free(ws_buf_t *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ---- Frames (frame.c) ------------------------------------------------------- */

#define WS_MAX_HEAD 14 /* 2 + 8 (length) + 4 (mask key) */

typedef struct ws_frame {
  uint8_t fin, rsv, opcode, masked; /* rsv: RSV1 << 2 | RSV2 << 1 | RSV3 */
  uint8_t key[4];
  uint64_t len;    /* payload length */
  size_t head_len; /* 2..14 */
} ws_frame_t;

/* Parses the frame header at p (n bytes available). Returns its length
 * (2..14) with *f filled; 0 when more bytes are needed; or -1002 for what
 * the header alone shows to be a protocol error: a control frame (opcode
 * 8..15) over 125 bytes or without FIN, a length with the most significant
 * bit set, a length not in its shortest form. Opcodes, RSV bits and the
 * mask bit are the caller's to judge. */
int ws_frame_parse(const uint8_t *p, size_t n, ws_frame_t *f);

/* Writes a frame header to out: fin, rsv (as in ws_frame_t), opcode,
 * payload length, and the mask key (NULL: unmasked). Returns its length. */
size_t ws_frame_head(uint8_t out[WS_MAX_HEAD], bool fin, unsigned rsv, unsigned opcode,
                     uint64_t len, const uint8_t *key);

/* dst[i] = src[i] ^ key[(phase + i) % 4] for n bytes, a word (or vector)
 * at a time; dst may be src. Returns the phase after the n bytes
 * ((phase + n) % 4). */
unsigned ws_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], unsigned phase);

/* A close code that may appear on the wire (RFC 6455 §7.4: 1000-1003,
 * 1007-1014, 3000-4999). */
bool ws_close_code_valid(unsigned code);

/* ---- UTF-8 (utf8.c) ----------------------------------------------------------- */

/* Incremental validation (RFC 3629: no overlongs, no surrogates, nothing
 * above U+10FFFF). state 0: at a code point boundary. */
typedef struct ws_utf8 {
  uint32_t state;
} ws_utf8_t;

#define WS_UTF8_INIT \
  { 0 }

/* Feeds n more bytes. Returns false at the first byte that no valid text
 * can have there (so a sequence that cannot be completed validly fails at
 * once, not at its end); the state is then unusable. ASCII runs go a word
 * (or vector) at a time. */
bool ws_utf8_feed(ws_utf8_t *u, const uint8_t *p, size_t n);

static inline bool ws_utf8_complete(const ws_utf8_t *u) { return u->state == 0; }

/* ---- permessage-deflate (deflate.c) ---------------------------------------------- */

/* Parameters agreed for a connection (keel_ws_deflate_params_t). */
typedef keel_ws_deflate_params_t ws_pmd_params_t;

/* Server: reads the client's offers (the values of every
 * Sec-WebSocket-Extensions field, in order; each a comma-separated list
 * of extensions with parameters) and accepts the first permessage-deflate
 * offer it can under cfg, per RFC 7692 §7.1. Offers with unknown or
 * repeated parameters or bad values are declined (the next one is tried).
 * Returns 1 with *out and the response's extension value in resp
 * (NUL-terminated), 0 when no offer is acceptable (or none was made), or
 * -1 if a field is not valid syntax (RFC 6455 §9.1): the server answers
 * 400. */
int ws_pmd_server_negotiate(const keel_ws_deflate_opts_t *cfg, const char *const *values,
                            size_t nvalues, ws_pmd_params_t *out, char *resp, size_t resp_cap);

/* Room for any offer or response those make (NUL included). */
#define WS_PMD_EXT_MAX 160

/* Client: the offer for cfg (NUL-terminated). Returns its length, or -1
 * if it does not fit. */
int ws_pmd_client_offer(const keel_ws_deflate_opts_t *cfg, char *buf, size_t cap);

/* Client: checks the server's Sec-WebSocket-Extensions values against the
 * offer made for cfg (RFC 7692 §7.1: one permessage-deflate, known
 * parameters once each, server_max_window_bits not above the offer's,
 * client_max_window_bits only if offered...). Returns 1 with *out, 0 if
 * the server accepted no extension (nvalues 0), -1 if the response must
 * fail the connection. */
int ws_pmd_client_accept(const keel_ws_deflate_opts_t *cfg, const char *const *values,
                         size_t nvalues, ws_pmd_params_t *out);

/* zlib streams borrowed for one message (a direction without context
 * takeover) are kept per worker for the next connection that needs one:
 * one cache per worker, touched by its tasks only. */
typedef struct ws_pmd_cache ws_pmd_cache_t;
int ws_pmd_cache_open(ws_pmd_cache_t **out);
/* After every ws_pmd_t that uses c is closed (they give their state back). */
void ws_pmd_cache_close(ws_pmd_cache_t *c);
/* The bytes of zlib state c keeps idle (for tests and the memory figures). */
size_t ws_pmd_cache_held(const ws_pmd_cache_t *c);

/* One connection's compression state: what it sends (the server's side
 * compresses with the server_* parameters) and what it receives. zlib
 * state is made on first use; a direction without context takeover takes
 * it from the cache for one message and gives it back at the message's
 * end. cache may be NULL (then such state is freed after each message).
 * level and mem_level as in keel_ws_deflate_opts_t (0: 6 and 8). Returns
 * 0, -EINVAL (a window outside 8..15, or 0 for 15; a level or mem_level
 * outside 1..9), -ENOMEM. */
typedef struct ws_pmd ws_pmd_t;
int ws_pmd_open(const ws_pmd_params_t *p, bool server, int level, int mem_level,
                ws_pmd_cache_t *cache, ws_pmd_t **out);
void ws_pmd_close(ws_pmd_t *d);

/* Inflates n bytes of a compressed message's payload (fin on the last
 * piece of the message: the 00 00 ff ff tail is added then), appending to
 * out, which never grows past max. Returns 0; -EMSGSIZE as soon as the
 * output would pass max (the rest is not inflated); -EPROTO for data zlib
 * rejects, a message that does not end at a block boundary, and bytes
 * after the end of the deflate stream (but the 0x00 of RFC 7692
 * §7.2.3.4); -ENOMEM. An empty payload is an empty message. After an
 * error every call returns it. */
int ws_pmd_inflate(ws_pmd_t *d, const uint8_t *in, size_t n, bool fin, ws_buf_t *out, size_t max);

/* Compresses n bytes of a message (fin: the last piece; the 00 00 ff ff
 * of its final flush is removed), appending to out. A piece before the
 * last may append nothing (zlib keeps what it has not yet coded); what it
 * appends may be sent as it is, as a fragment. An empty message is the
 * byte 0x00. Returns 0 or -ENOMEM. */
int ws_pmd_deflate(ws_pmd_t *d, const uint8_t *in, size_t n, bool fin, ws_buf_t *out);

/* The bytes of zlib state d holds now (for tests and the memory figures). */
size_t ws_pmd_held(const ws_pmd_t *d);

/* Metrics (observe.c). */
void keel__ws_count_open(bool server, int delta);
void keel__ws_count_data(bool in, size_t bytes, bool message_end);
void keel__ws_count_close(bool received, int code);

#endif
