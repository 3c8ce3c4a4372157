/* WebSocket frame headers (RFC 6455 §5.2), masking (§5.3) and the close
 * codes a peer may send (§7.4). */
#include <assert.h>
#include <string.h>

#include "ws-internal.h"

/* The 7-bit length field: up to 125 the length itself, else an escape to a
 * 16- or a 64-bit length after it. */
#define WS_LEN7_MAX 125
#define WS_LEN7_16 126
#define WS_LEN7_64 127

static uint64_t load_be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

static void store_be(uint8_t *p, uint64_t v, size_t n) {
  for (size_t i = n; i-- > 0; v >>= 8)
    p[i] = (uint8_t)v;
}

/* Bytes of the extended length that the 7-bit field announces. */
static size_t ext_len_bytes(unsigned len7) {
  return len7 == WS_LEN7_16 ? 2 : len7 == WS_LEN7_64 ? 8 : 0;
}

/* Each error is reported as soon as the bytes that show it are in (the
 * control-frame rules at 2 bytes, a length once it is whole), without
 * waiting for the rest of the header: a peer that sent a bad header and
 * then stalls is failed at once. */
int ws_frame_parse(const uint8_t *p, size_t n, ws_frame_t *f) {
  if (n < 2)
    return 0;
  bool fin = p[0] & 0x80, masked = p[1] & 0x80;
  unsigned opcode = p[0] & 0x0f, len7 = p[1] & 0x7f;
  /* §5.5: control frames are never fragmented and carry 125 bytes at most. */
  if ((opcode & 0x8) && (!fin || len7 > WS_LEN7_MAX))
    return -KEEL_WS_PROTOCOL_ERROR;
  size_t ext = ext_len_bytes(len7);
  if (n < 2 + ext)
    return 0;
  uint64_t len = ext ? load_be(p + 2, ext) : len7;
  /* §5.2: "the minimal number of bytes MUST be used", and a 64-bit length
   * has its most significant bit 0. */
  if ((ext == 2 && len <= WS_LEN7_MAX) || (ext == 8 && (len <= UINT16_MAX || len >> 63)))
    return -KEEL_WS_PROTOCOL_ERROR;
  size_t head_len = 2 + ext + (masked ? 4 : 0);
  if (n < head_len)
    return 0;
  f->fin = fin;
  f->rsv = p[0] >> 4 & 0x7;
  f->opcode = (uint8_t)opcode;
  f->masked = masked;
  if (masked)
    memcpy(f->key, p + 2 + ext, 4);
  else
    memset(f->key, 0, 4);
  f->len = len;
  f->head_len = head_len;
  return (int)head_len;
}

size_t ws_frame_head(uint8_t out[WS_MAX_HEAD], bool fin, unsigned rsv, unsigned opcode,
                     uint64_t len, const uint8_t *key) {
  assert(rsv <= 0x7 && opcode <= 0xf && len >> 63 == 0);
  out[0] = (uint8_t)((fin ? 0x80 : 0) | rsv << 4 | opcode);
  uint8_t mask_bit = key ? 0x80 : 0;
  size_t n = 2;
  if (len <= WS_LEN7_MAX) {
    out[1] = (uint8_t)(mask_bit | len);
  } else if (len <= UINT16_MAX) {
    out[1] = mask_bit | WS_LEN7_16;
    store_be(out + n, len, 2);
    n += 2;
  } else {
    out[1] = mask_bit | WS_LEN7_64;
    store_be(out + n, len, 8);
    n += 8;
  }
  if (key) {
    memcpy(out + n, key, 4);
    n += 4;
  }
  return n;
}

/* Generic vectors (GCC and clang): SSE2 on x86-64, NEON on arm64, and
 * plain words where the target has neither. */
#if defined(__GNUC__)
#define WS_MASK_VECTOR 16
typedef uint32_t ws_vec_t __attribute__((vector_size(WS_MASK_VECTOR)));
#endif

/* The key rotated to start at the phase, as 4 bytes in memory order. A
 * word rotation where the byte order is known (building it a byte at a
 * time and loading it as a word stalls store forwarding: clang made that
 * 15 ns a call). */
static uint32_t rotated_key(const uint8_t key[4], unsigned phase) {
  uint32_t k;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(&k, key, sizeof k);
  unsigned bits = 8 * (phase & 3);
  return bits ? k >> bits | k << (32 - bits) : k;
#else
  const uint8_t bytes[4] = {key[phase & 3], key[(phase + 1) & 3], key[(phase + 2) & 3],
                            key[(phase + 3) & 3]};
  memcpy(&k, bytes, sizeof k);
  return k;
#endif
}

/* The key repeats every 4 bytes, so the rotated key, repeated in a word or
 * a vector, XORs any word or vector of the payload that starts a multiple
 * of 4 bytes after src. Loads and stores go through memcpy, which allows
 * any alignment and compiles to unaligned moves. */
unsigned ws_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4], unsigned phase) {
  const uint32_t k32 = rotated_key(key, phase);
  size_t i = 0;
#ifdef WS_MASK_VECTOR
  if (n >= 2 * WS_MASK_VECTOR) {
    const ws_vec_t k = {k32, k32, k32, k32};
    ws_vec_t a, b;
    for (; n - i >= 2 * WS_MASK_VECTOR; i += 2 * WS_MASK_VECTOR) {
      memcpy(&a, src + i, sizeof a);
      memcpy(&b, src + i + WS_MASK_VECTOR, sizeof b);
      a ^= k;
      b ^= k;
      memcpy(dst + i, &a, sizeof a);
      memcpy(dst + i + WS_MASK_VECTOR, &b, sizeof b);
    }
  }
#endif
  const uint64_t k64 = (uint64_t)k32 << 32 | k32;
  uint64_t w;
  for (; n - i >= sizeof w; i += sizeof w) {
    memcpy(&w, src + i, sizeof w);
    w ^= k64;
    memcpy(dst + i, &w, sizeof w);
  }
  uint8_t rotated[4];
  memcpy(rotated, &k32, sizeof rotated);
  for (; i < n; i++)
    dst[i] = src[i] ^ rotated[i & 3];
  return (unsigned)((phase + n) & 3);
}

/* §7.4.1 and IANA's registry: 1004 is reserved; 1005, 1006 and 1015 (a
 * TLS handshake failure) are only reported locally, never sent; 1012-1014
 * (service restart, try again later, bad gateway) were registered after
 * the RFC. 1016-2999 are reserved for the protocol, 3000-3999 registered
 * for libraries and applications, 4000-4999 private. */
bool ws_close_code_valid(unsigned code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}
