/* Shared by the WebSocket codec's tests (not installed): a fixed random
 * sequence, the tests' own frame header encoder (which also writes the
 * forms the parser must refuse) and masking a byte at a time. */
#ifndef KT_WS_CODEC_TEST_H
#define KT_WS_CODEC_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static uint64_t rng_state = 0x2545f4914f6cdd1du;

/* xorshift64: a fixed sequence, so a failure replays. */
static inline uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static inline size_t rng_below(size_t n) { return (size_t)(rng() % n); }

static inline void fill_random(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    uint64_t r = rng();
    memcpy(p + i, &r, n - i < 8 ? n - i : 8);
  }
}

/* A length of random magnitude: each bit width 0..63 equally likely. */
static inline uint64_t random_length(void) {
  unsigned bits = (unsigned)rng_below(64);
  return bits ? rng() >> (64 - bits) : 0;
}

/* How the encoder writes a length: in the 7-bit field, or as 126 or 127
 * and 2 or 8 bytes, whatever the value (so non-minimal forms too). */
enum len_form { FORM_7, FORM_16, FORM_64 };

static inline enum len_form minimal_form(uint64_t len) {
  return len <= 125 ? FORM_7 : len <= 0xffff ? FORM_16 : FORM_64;
}

/* Writes a header (up to 14 bytes) and returns its length. */
static inline size_t encode_head(uint8_t *out, bool fin, unsigned rsv, unsigned opcode,
                                 enum len_form form, uint64_t len, const uint8_t *key) {
  size_t n = 0;
  out[n++] = (uint8_t)((fin ? 0x80 : 0) | (rsv << 4) | opcode);
  uint8_t mask_bit = key ? 0x80 : 0;
  if (form == FORM_7) {
    out[n++] = (uint8_t)(mask_bit | len);
  } else {
    size_t bytes = form == FORM_16 ? 2 : 8;
    out[n++] = (uint8_t)(mask_bit | (form == FORM_16 ? 126 : 127));
    for (size_t i = 0; i < bytes; i++)
      out[n++] = (uint8_t)(len >> (8 * (bytes - 1 - i)));
  }
  for (size_t i = 0; key && i < 4; i++)
    out[n++] = key[i];
  return n;
}

/* RFC 6455 §5.3, a byte at a time. */
static inline void mask_reference(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                                  unsigned phase) {
  for (size_t i = 0; i < n; i++)
    dst[i] = src[i] ^ key[(phase + i) % 4];
}

#endif
