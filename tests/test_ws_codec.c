/* WebSocket codec (src/ws/frame.c, src/ws/utf8.c), no backend.
 *
 * Frame headers: every length form at its boundaries with every fin, rsv,
 * opcode and mask, parsed from every prefix (0 until whole); all 65536
 * first two bytes against a model; lengths not in their shortest form and
 * 64-bit lengths with the top bit set; the control-frame rules; the RFC
 * 6455 §5.7 examples; ws_frame_head against the test's own encoder and
 * back through ws_frame_parse. Masking: every length 0..300 at every
 * phase and misalignment of src and dst, in place and not, against a byte
 * at a time, nothing written outside dst; pieces chained by the returned
 * phase. Close codes: every code 0..70000 against the table.
 *
 * UTF-8: Autobahn's category 6 shapes (valid and invalid, with the byte
 * each fails at), fed whole, byte by byte and split at every point; fail
 * positions; every string of 1 and 2 bytes and every 3- and 4-byte one that
 * starts with a lead byte, against a reference decoder that reasons on
 * code point ranges instead of byte classes; the ASCII fast path around
 * its 16-byte blocks; a rejected state staying rejected; and random and
 * mutated strings against the reference (fixed seed). */
#include <limits.h>

#include "keel-test.h"

#include "ws-codec-test.h"
#include "ws-internal.h"

/* Sanitized builds run fewer random cases (each costs ~20 times more). */
#define RANDOM_SCALE (KT_SANITIZED ? 4 : 1)

/* ---- Frame headers ------------------------------------------------------------ */

static const uint8_t test_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Parses a header from every prefix of buf (head_len bytes, then `extra`
 * payload bytes after it): 0 before it is whole, then its length. */
static ws_frame_t parse_every_prefix(const uint8_t *buf, size_t head_len, size_t extra) {
  ws_frame_t f;
  for (size_t k = 0; k < head_len; k++) {
    int rc = ws_frame_parse(buf, k, &f);
    if (rc != 0)
      fail_msg("header of %zu bytes, %zu in: %d, expected 0", head_len, k, rc);
  }
  for (size_t k = head_len; k <= head_len + extra; k++) {
    memset(&f, 0xee, sizeof f);
    int rc = ws_frame_parse(buf, k, &f);
    if (rc != (int)head_len)
      fail_msg("header of %zu bytes, %zu in: %d, expected %zu", head_len, k, rc, head_len);
  }
  return f;
}

static void expect_frame(const ws_frame_t *f, bool fin, unsigned rsv, unsigned opcode, uint64_t len,
                         const uint8_t *key, size_t head_len) {
  assert_int_equal(f->fin, fin);
  assert_int_equal(f->rsv, rsv);
  assert_int_equal(f->opcode, opcode);
  assert_int_equal(f->masked, key != NULL);
  assert_int_equal(f->len, len);
  assert_int_equal(f->head_len, head_len);
  static const uint8_t zero_key[4];
  assert_memory_equal(f->key, key ? key : zero_key, 4);
}

static const uint64_t boundary_lengths[] = {
    0,
    1,
    2,
    100,
    124,
    125, /* 7 bits */
    126,
    127,
    128,
    255,
    256,
    1000, /* 16 bits */
    0x7fff,
    0x8000,
    0xfffe,
    0xffff, /* 16 bits */
    0x10000,
    0x10001,
    0xffffff,
    0x1000000,
    UINT64_C(0xffffffff), /* 64 bits */
    UINT64_C(0x100000000),
    UINT64_C(1) << 53,
    (UINT64_C(1) << 63) - 1,
};
#define N_BOUNDARY (sizeof boundary_lengths / sizeof boundary_lengths[0])

static void test_parse_every_form_and_prefix(void **state) {
  (void)state;
  size_t cases = 0;
  for (size_t li = 0; li < N_BOUNDARY; li++) {
    uint64_t len = boundary_lengths[li];
    for (unsigned opcode = 0; opcode < 16; opcode++) {
      bool control = opcode & 8;
      if (control && len > 125)
        continue;
      for (unsigned bits = 0; bits < 32; bits++) { /* fin, rsv, masked */
        bool fin = bits & 1, masked = bits & 16;
        unsigned rsv = bits >> 1 & 7;
        if (control && !fin)
          continue;
        uint8_t buf[WS_MAX_HEAD + 16];
        const uint8_t *key = masked ? test_key : NULL;
        size_t head_len = encode_head(buf, fin, rsv, opcode, minimal_form(len), len, key);
        memset(buf + head_len, 0x5a, 16); /* payload bytes: never part of the header */
        ws_frame_t f = parse_every_prefix(buf, head_len, 16);
        expect_frame(&f, fin, rsv, opcode, len, key, head_len);
        cases++;
      }
    }
  }
  fprintf(stderr, "# %zu headers, every prefix of each\n", cases);
}

/* The extended length bytes the exhaustive test puts after 126 and 127:
 * the smallest lengths these forms may carry. */
static const uint8_t ext16_min[2] = {0x00, 126};
static const uint8_t ext64_min[8] = {0, 0, 0, 0, 0, 1, 0, 0};

static void test_parse_first_two_bytes_exhaustive(void **state) {
  (void)state;
  for (unsigned b0 = 0; b0 < 256; b0++) {
    for (unsigned b1 = 0; b1 < 256; b1++) {
      uint8_t buf[WS_MAX_HEAD] = {(uint8_t)b0, (uint8_t)b1};
      unsigned len7 = b1 & 0x7f, opcode = b0 & 0xf;
      bool fin = b0 & 0x80, masked = b1 & 0x80;
      size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
      memcpy(buf + 2, ext == 2 ? ext16_min : ext64_min, ext);
      memcpy(buf + 2 + ext, test_key, masked ? 4 : 0);
      size_t head_len = 2 + ext + (masked ? 4 : 0);
      ws_frame_t f;
      if ((opcode & 8) && (!fin || len7 > 125)) {
        /* Shown by the first two bytes: no need to wait for the rest. */
        assert_int_equal(ws_frame_parse(buf, 1, &f), 0);
        for (size_t k = 2; k <= head_len; k++)
          if (ws_frame_parse(buf, k, &f) != -1002)
            fail_msg("%02x %02x, %zu bytes: not -1002", b0, b1, k);
        continue;
      }
      f = parse_every_prefix(buf, head_len, 0);
      uint64_t len = ext == 2 ? 126 : ext == 8 ? 0x10000 : len7;
      expect_frame(&f, fin, b0 >> 4 & 7, opcode, len, masked ? test_key : NULL, head_len);
    }
  }
}

/* A header that is an error once `shown_at` bytes are in (and 0 before). */
static void expect_error_from(const uint8_t *buf, size_t head_len, size_t shown_at) {
  ws_frame_t f;
  for (size_t k = 0; k <= head_len; k++) {
    int rc = ws_frame_parse(buf, k, &f);
    int want = k < shown_at ? 0 : -1002;
    if (rc != want)
      fail_msg("header of %zu bytes (%02x %02x), %zu in: %d, expected %d", head_len, buf[0], buf[1],
               k, rc, want);
  }
}

static void test_parse_non_minimal_lengths(void **state) {
  (void)state;
  uint8_t buf[WS_MAX_HEAD];
  for (int masked = 0; masked < 2; masked++) {
    const uint8_t *key = masked ? test_key : NULL;
    /* A 16-bit length that fits the 7-bit field. */
    for (uint64_t len = 0; len <= 125; len++)
      expect_error_from(buf, encode_head(buf, true, 0, KEEL_WS_BINARY, FORM_16, len, key), 4);
    /* A 64-bit length that fits 16 bits (or 7). */
    for (uint64_t len = 0; len <= 0xffff; len++)
      expect_error_from(buf, encode_head(buf, true, 0, KEEL_WS_TEXT, FORM_64, len, key), 10);
    /* The smallest length of each form is accepted. */
    ws_frame_t f;
    size_t n = encode_head(buf, true, 0, KEEL_WS_BINARY, FORM_16, 126, key);
    assert_int_equal(ws_frame_parse(buf, n, &f), (int)n);
    assert_int_equal(f.len, 126);
    n = encode_head(buf, true, 0, KEEL_WS_BINARY, FORM_64, 0x10000, key);
    assert_int_equal(ws_frame_parse(buf, n, &f), (int)n);
    assert_int_equal(f.len, 0x10000);
  }
}

static void test_parse_length_msb(void **state) {
  (void)state;
  static const uint64_t top_bit_set[] = {
      UINT64_C(1) << 63,         (UINT64_C(1) << 63) | 1,      (UINT64_C(1) << 63) | 0x10000,
      (UINT64_C(1) << 63) | 125, UINT64_C(0xfffffffffffffffe), UINT64_MAX,
  };
  uint8_t buf[WS_MAX_HEAD];
  for (size_t i = 0; i < sizeof top_bit_set / sizeof top_bit_set[0]; i++) {
    for (int masked = 0; masked < 2; masked++) {
      size_t n = encode_head(buf, i & 1, 0, KEEL_WS_BINARY, FORM_64, top_bit_set[i],
                             masked ? test_key : NULL);
      expect_error_from(buf, n, 10);
    }
  }
  /* Every single bit below the top one is a valid length (when above
   * 0xffff). */
  for (unsigned bit = 16; bit < 63; bit++) {
    uint64_t len = UINT64_C(1) << bit;
    size_t n = encode_head(buf, true, 0, KEEL_WS_BINARY, FORM_64, len, NULL);
    ws_frame_t f = parse_every_prefix(buf, n, 0);
    assert_int_equal(f.len, len);
  }
}

static void test_parse_control_rules(void **state) {
  (void)state;
  uint8_t buf[WS_MAX_HEAD];
  for (unsigned opcode = 0; opcode < 16; opcode++) {
    for (unsigned len7 = 0; len7 < 128; len7++) {
      for (int fin = 0; fin < 2; fin++) {
        uint64_t len = len7 == 126 ? 300 : len7 == 127 ? 70000 : len7;
        size_t n = encode_head(buf, fin, 0, opcode, minimal_form(len), len, test_key);
        if ((opcode & 8) && (!fin || len7 > 125)) {
          expect_error_from(buf, n, 2);
        } else {
          ws_frame_t f = parse_every_prefix(buf, n, 0);
          expect_frame(&f, fin, 0, opcode, len, test_key, n);
        }
      }
    }
  }
  /* Reserved control opcodes (0xb..0xf) follow the same rules; judging
   * the opcode itself is the caller's. */
  ws_frame_t f;
  uint8_t ping126[] = {0x89, 0x7e, 0x00, 0x7e};
  assert_int_equal(ws_frame_parse(ping126, 2, &f), -1002);
  uint8_t reserved_control[] = {0x8f, 0x00};
  assert_int_equal(ws_frame_parse(reserved_control, 2, &f), 2);
  assert_int_equal(f.opcode, 0xf);
}

/* RFC 6455 §5.7. */
static void test_rfc_examples(void **state) {
  (void)state;
  static const uint8_t hello_unmasked[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
  static const uint8_t hello_masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                         0x7f, 0x9f, 0x4d, 0x51, 0x58};
  static const uint8_t first_fragment[] = {0x01, 0x03, 0x48, 0x65, 0x6c};
  static const uint8_t last_fragment[] = {0x80, 0x02, 0x6c, 0x6f};
  static const uint8_t ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
  static const uint8_t pong_masked[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                        0x7f, 0x9f, 0x4d, 0x51, 0x58};
  static const uint8_t binary_256[] = {0x82, 0x7e, 0x01, 0x00};
  static const uint8_t binary_64k[] = {0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00};
  ws_frame_t f;
  uint8_t head[WS_MAX_HEAD], payload[8];

  assert_int_equal(ws_frame_parse(hello_unmasked, sizeof hello_unmasked, &f), 2);
  expect_frame(&f, true, 0, KEEL_WS_TEXT, 5, NULL, 2);
  assert_int_equal(ws_frame_head(head, true, 0, KEEL_WS_TEXT, 5, NULL), 2);
  assert_memory_equal(head, hello_unmasked, 2);

  assert_int_equal(ws_frame_parse(hello_masked, sizeof hello_masked, &f), 6);
  expect_frame(&f, true, 0, KEEL_WS_TEXT, 5, test_key, 6);
  assert_int_equal(ws_mask(payload, hello_masked + 6, 5, f.key, 0), 1);
  assert_memory_equal(payload, "Hello", 5);
  assert_int_equal(ws_frame_head(head, true, 0, KEEL_WS_TEXT, 5, test_key), 6);
  assert_memory_equal(head, hello_masked, 6);

  assert_int_equal(ws_frame_parse(first_fragment, sizeof first_fragment, &f), 2);
  expect_frame(&f, false, 0, KEEL_WS_TEXT, 3, NULL, 2);
  assert_int_equal(ws_frame_parse(last_fragment, sizeof last_fragment, &f), 2);
  expect_frame(&f, true, 0, KEEL_WS_CONTINUATION, 2, NULL, 2);
  assert_int_equal(ws_frame_parse(ping, sizeof ping, &f), 2);
  expect_frame(&f, true, 0, KEEL_WS_PING, 5, NULL, 2);
  assert_int_equal(ws_frame_parse(pong_masked, sizeof pong_masked, &f), 6);
  expect_frame(&f, true, 0, KEEL_WS_PONG, 5, test_key, 6);

  assert_int_equal(ws_frame_parse(binary_256, sizeof binary_256, &f), 4);
  expect_frame(&f, true, 0, KEEL_WS_BINARY, 256, NULL, 4);
  assert_int_equal(ws_frame_head(head, true, 0, KEEL_WS_BINARY, 256, NULL), 4);
  assert_memory_equal(head, binary_256, 4);
  assert_int_equal(ws_frame_parse(binary_64k, sizeof binary_64k, &f), 10);
  expect_frame(&f, true, 0, KEEL_WS_BINARY, 65536, NULL, 10);
  assert_int_equal(ws_frame_head(head, true, 0, KEEL_WS_BINARY, 65536, NULL), 10);
  assert_memory_equal(head, binary_64k, 10);
}

static void test_head_round_trip(void **state) {
  (void)state;
  /* Every boundary length, then random ones. */
  size_t rounds = 200000 / RANDOM_SCALE;
  for (size_t i = 0; i < N_BOUNDARY + rounds; i++) {
    uint64_t len = i < N_BOUNDARY ? boundary_lengths[i] : random_length();
    bool fin = rng() & 1;
    unsigned rsv = (unsigned)rng_below(8), opcode = (unsigned)rng_below(16);
    uint8_t key[4];
    uint64_t r = rng();
    memcpy(key, &r, 4);
    const uint8_t *keyp = r >> 63 ? key : NULL;

    uint8_t head[WS_MAX_HEAD + 1], model[WS_MAX_HEAD];
    head[WS_MAX_HEAD] = 0xa5; /* nothing past WS_MAX_HEAD */
    memset(head, 0xa5, WS_MAX_HEAD);
    size_t n = ws_frame_head(head, fin, rsv, opcode, len, keyp);
    size_t want = encode_head(model, fin, rsv, opcode, minimal_form(len), len, keyp);
    assert_int_equal(n, want);
    assert_memory_equal(head, model, n);
    for (size_t k = n; k <= WS_MAX_HEAD; k++)
      assert_int_equal(head[k], 0xa5);

    ws_frame_t f;
    if ((opcode & 8) && (!fin || len > 125)) {
      /* ws_frame_head writes what it is asked to (a test peer's bad
       * frame); the parser refuses it. */
      expect_error_from(head, n, 2);
      continue;
    }
    f = parse_every_prefix(head, n, 0);
    expect_frame(&f, fin, rsv, opcode, len, keyp, n);
  }
}

/* ---- Masking ------------------------------------------------------------------ */

#define MASK_MAX_LEN 300
#define MASK_SLACK 48 /* guard bytes on both sides, room for misalignment */

/* Masks n bytes from src + src_off to dst + dst_off (in place: the same
 * buffer, and the same offset) with a random key and compares with the
 * reference, guard bytes included. */
static void check_mask(size_t n, unsigned phase, size_t src_off, size_t dst_off, bool in_place) {
  static uint8_t src[MASK_MAX_LEN + 2 * MASK_SLACK], dst[sizeof src], want[sizeof src];
  static uint8_t src_copy[sizeof src];
  assert_true(!in_place || src_off == dst_off);
  uint8_t key[4];
  fill_random(key, sizeof key);
  fill_random(src, sizeof src);
  fill_random(dst, sizeof dst);
  if (in_place)
    memcpy(dst, src, sizeof src);
  memcpy(src_copy, src, sizeof src);
  memcpy(want, dst, sizeof dst);
  mask_reference(want + MASK_SLACK + dst_off, src + MASK_SLACK + src_off, n, key, phase);

  const uint8_t *from = (in_place ? dst : src) + MASK_SLACK + src_off;
  unsigned next = ws_mask(dst + MASK_SLACK + dst_off, from, n, key, phase);
  if (next != (phase + n) % 4)
    fail_msg("n %zu phase %u: returned phase %u", n, phase, next);
  if (memcmp(dst, want, sizeof dst) != 0) {
    size_t at = 0;
    while (dst[at] == want[at])
      at++;
    fail_msg("n %zu phase %u src+%zu dst+%zu%s: byte %td differs (%02x, expected %02x)", n, phase,
             src_off, dst_off, in_place ? " in place" : "",
             (ptrdiff_t)at - (ptrdiff_t)(MASK_SLACK + dst_off), dst[at], want[at]);
  }
  if (!in_place && memcmp(src, src_copy, sizeof src) != 0)
    fail_msg("n %zu phase %u: src was written", n, phase);
}

static void test_mask_against_reference(void **state) {
  (void)state;
  size_t calls = 0;
  for (size_t n = 0; n <= MASK_MAX_LEN; n++) {
    for (unsigned phase = 0; phase < 4; phase++) {
      for (size_t off = 0; off < 32; off++, calls++)
        check_mask(n, phase, off, off, true);
      for (size_t src_off = 0; src_off < 8; src_off++)
        for (size_t dst_off = 0; dst_off < 8; dst_off++, calls++)
          check_mask(n, phase, src_off, dst_off, false);
    }
  }
  /* A phase beyond 3 counts modulo 4, as the returned phase does. */
  for (unsigned phase = 4; phase < 12; phase++)
    for (size_t n = 0; n < 70; n++, calls++)
      check_mask(n, phase, n % 5, n & 1 ? n % 5 : n % 7, n & 1);
  fprintf(stderr, "# %zu masking calls against the reference\n", calls);
}

/* Masking in pieces, each starting at the phase the last one returned, is
 * masking the whole; masking twice gives the original back. */
static void test_mask_pieces(void **state) {
  (void)state;
  enum { LEN = 5000 };
  static uint8_t original[LEN], whole[LEN], pieces[LEN];
  const uint8_t key[4] = {0xff, 0x00, 0x80, 0x7f};
  for (int round = 0; round < 300; round++) {
    fill_random(original, LEN);
    unsigned start = (unsigned)rng_below(4);
    mask_reference(whole, original, LEN, key, start);
    memcpy(pieces, original, LEN);
    unsigned phase = start;
    for (size_t at = 0; at < LEN;) {
      size_t n = rng_below(4) == 0 ? rng_below(LEN - at + 1) : rng_below(70);
      n = n > LEN - at ? LEN - at : n;
      phase = ws_mask(pieces + at, pieces + at, n, key, phase);
      at += n;
    }
    assert_int_equal(phase, (start + LEN) % 4);
    assert_memory_equal(pieces, whole, LEN);
    ws_mask(pieces, pieces, LEN, key, start);
    assert_memory_equal(pieces, original, LEN);
  }
  /* n 0 with NULL pointers: nothing touched. */
  assert_int_equal(ws_mask(NULL, NULL, 0, key, 3), 3);
}

/* ---- Close codes --------------------------------------------------------------- */

static void test_close_codes(void **state) {
  (void)state;
  static const struct {
    unsigned lo, hi;
    bool valid;
  } ranges[] = {
      {0, 999, false},     {1000, 1003, true}, {1004, 1006, false},  {1007, 1014, true},
      {1015, 2999, false}, {3000, 4999, true}, {5000, 70000, false},
  };
  size_t valid = 0;
  for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
    for (unsigned code = ranges[r].lo; code <= ranges[r].hi; code++) {
      if (ws_close_code_valid(code) != ranges[r].valid)
        fail_msg("close code %u: %s, expected %s", code, ranges[r].valid ? "invalid" : "valid",
                 ranges[r].valid ? "valid" : "invalid");
      valid += ranges[r].valid;
    }
  }
  assert_int_equal(valid, 4 + 8 + 2000);
  static const unsigned named[] = {
      KEEL_WS_NORMAL,      KEEL_WS_GOING_AWAY,    KEEL_WS_PROTOCOL_ERROR,
      KEEL_WS_UNSUPPORTED, KEEL_WS_INVALID_DATA,  KEEL_WS_POLICY,
      KEEL_WS_TOO_BIG,     KEEL_WS_MANDATORY_EXT, KEEL_WS_INTERNAL_ERROR};
  for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
    assert_true(ws_close_code_valid(named[i]));
  assert_false(ws_close_code_valid(KEEL_WS_NO_STATUS));
  assert_false(ws_close_code_valid(KEEL_WS_ABNORMAL));
  assert_false(ws_close_code_valid(UINT_MAX));
  assert_false(ws_close_code_valid(65536 + 1000)); /* not read modulo 16 bits */
}

/* ---- UTF-8: the reference ------------------------------------------------------- */

/* Whether some code point that a `need`-byte sequence may encode (RFC
 * 3629: shortest form, no surrogates, at most U+10FFFF) begins with the
 * `got` bytes read so far, whose payload bits are `bits`. */
static bool ref_extendable(uint32_t bits, size_t got, size_t need) {
  static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
  static const uint32_t max_cp[5] = {0, 0x7f, 0x7ff, 0xffff, 0x10ffff};
  unsigned missing = 6 * (unsigned)(need - got);
  uint32_t lo = bits << missing, hi = lo | ((UINT32_C(1) << missing) - 1);
  lo = lo < min_cp[need] ? min_cp[need] : lo;
  hi = hi > max_cp[need] ? max_cp[need] : hi;
  if (lo > hi)
    return false;
  return lo < 0xd800 || hi > 0xdfff; /* not surrogates only */
}

/* The index of the first byte of p that no valid text can have there, or
 * n; *complete: whether p ends at a code point boundary. */
static size_t ref_first_bad(const uint8_t *p, size_t n, bool *complete) {
  *complete = false;
  size_t i = 0;
  while (i < n) {
    uint8_t b = p[i];
    size_t need;
    uint32_t bits;
    if (b < 0x80) {
      i++;
      continue;
    } else if ((b & 0xe0) == 0xc0) {
      need = 2, bits = b & 0x1f;
    } else if ((b & 0xf0) == 0xe0) {
      need = 3, bits = b & 0x0f;
    } else if ((b & 0xf8) == 0xf0) {
      need = 4, bits = b & 0x07;
    } else {
      return i; /* a continuation byte, or F8..FF */
    }
    for (size_t got = 1;; got++) {
      if (!ref_extendable(bits, got, need))
        return i + got - 1;
      if (got == need)
        break;
      if (i + got == n)
        return n;
      uint8_t c = p[i + got];
      if ((c & 0xc0) != 0x80)
        return i + got;
      bits = bits << 6 | (c & 0x3f);
    }
    i += need;
  }
  *complete = true;
  return n;
}

/* ---- UTF-8: checks ---------------------------------------------------------------- */

#define UTF8_VALID SIZE_MAX            /* whole code points only */
#define UTF8_INCOMPLETE (SIZE_MAX - 1) /* valid so far, ends inside one */

/* Feeds p in the pieces that `cuts` (ascending offsets) make; returns the
 * index of the piece that failed, or SIZE_MAX, with the state in *u. */
static size_t feed_pieces(ws_utf8_t *u, const uint8_t *p, size_t n, const size_t *cuts,
                          size_t ncuts) {
  size_t at = 0;
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : n;
    if (!ws_utf8_feed(u, p + at, end - at))
      return i;
    at = end;
  }
  return SIZE_MAX;
}

/* Checks the verdict on p: `expect` is the index of the byte it fails at,
 * UTF8_VALID or UTF8_INCOMPLETE. Whole, byte by byte (fails exactly at
 * that byte), and split in two at every point. */
static void check_utf8(const char *what, const uint8_t *p, size_t n, size_t expect) {
  ws_utf8_t u = WS_UTF8_INIT;
  bool ok = ws_utf8_feed(&u, p, n);
  bool want_ok = expect >= UTF8_INCOMPLETE;
  if (ok != want_ok || (ok && ws_utf8_complete(&u) != (expect == UTF8_VALID)))
    fail_msg("%s (%zu bytes): %s%s whole", what, n, ok ? "accepted" : "rejected",
             ok && !ws_utf8_complete(&u) ? " (incomplete)" : "");

  u = (ws_utf8_t)WS_UTF8_INIT;
  for (size_t i = 0; i < n; i++) {
    bool byte_ok = ws_utf8_feed(&u, p + i, 1);
    if (byte_ok != (i != expect))
      fail_msg("%s: byte %zu (%02x) %s byte by byte", what, i, p[i],
               byte_ok ? "accepted" : "rejected");
    if (!byte_ok)
      break;
  }
  if (want_ok && ws_utf8_complete(&u) != (expect == UTF8_VALID))
    fail_msg("%s: complete %d byte by byte", what, ws_utf8_complete(&u));

  for (size_t cut = 0; cut <= n; cut++) {
    u = (ws_utf8_t)WS_UTF8_INIT;
    size_t failed = feed_pieces(&u, p, n, &cut, 1);
    size_t want = want_ok ? SIZE_MAX : expect < cut ? 0 : 1;
    if (failed != want)
      fail_msg("%s split at %zu: piece %zu failed, expected %zu", what, cut, failed, want);
    if (want_ok && ws_utf8_complete(&u) != (expect == UTF8_VALID))
      fail_msg("%s split at %zu: complete %d", what, cut, ws_utf8_complete(&u));
  }

  /* The reference agrees with the table. */
  bool complete;
  size_t bad = ref_first_bad(p, n, &complete);
  size_t ref = bad < n ? bad : complete ? UTF8_VALID : UTF8_INCOMPLETE;
  if (ref != expect)
    fail_msg("%s: the reference says %zu, the table %zu", what, ref, expect);
}

typedef struct utf8_case {
  const char *name;
  const char *bytes;
  size_t expect; /* index of the failing byte, UTF8_VALID or UTF8_INCOMPLETE */
} utf8_case_t;

#define OK UTF8_VALID
#define PART UTF8_INCOMPLETE
/* The shapes of Autobahn's category 6 (its case numbers where they are
 * one string), plus neighbours of each boundary. */
static const utf8_case_t autobahn_cases[] = {
    {"6.1 empty", "", OK},
    {"6.2 Hello-(Latin-1 letters)-UTF-8!!",
     "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!", OK},
    {"6.5 kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", OK},
    {"6.3 kosme + surrogate + edited",
     "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", 12},
    {"6.4 kosme + F4 90 80 80 + edited",
     "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64", 12},
    /* First possible sequence of each length. */
    {"6.7 U+0080", "\xc2\x80", OK},
    {"6.7 U+0800", "\xe0\xa0\x80", OK},
    {"6.7 U+10000", "\xf0\x90\x80\x80", OK},
    /* 5- and 6-byte forms. */
    {"6.8 5-byte U+200000", "\xf8\x88\x80\x80\x80", 0},
    {"6.8 6-byte U+4000000", "\xfc\x84\x80\x80\x80\x80", 0},
    /* Last possible sequence of each length. */
    {"6.9 U+007F", "\x7f", OK},
    {"6.9 U+07FF", "\xdf\xbf", OK},
    {"6.9 U+FFFF", "\xef\xbf\xbf", OK},
    {"6.9 U+10FFFF", "\xf4\x8f\xbf\xbf", OK},
    {"6.10 U+1FFFFF", "\xf7\xbf\xbf\xbf", 0},
    {"6.10 U+3FFFFFF", "\xfb\xbf\xbf\xbf\xbf", 0},
    {"6.10 U+7FFFFFFF", "\xfd\xbf\xbf\xbf\xbf\xbf", 0},
    /* Other boundaries. */
    {"6.11 U+D7FF", "\xed\x9f\xbf", OK},
    {"6.11 U+E000", "\xee\x80\x80", OK},
    {"6.11 U+FFFD", "\xef\xbf\xbd", OK},
    {"6.11 U+10FFFF", "\xf4\x8f\xbf\xbf", OK},
    {"6.11 U+110000", "\xf4\x90\x80\x80", 1},
    /* Unexpected continuation bytes. */
    {"6.12 80", "\x80", 0},
    {"6.12 bf", "\xbf", 0},
    {"6.12 80 bf", "\x80\xbf", 0},
    {"6.12 80 bf 80", "\x80\xbf\x80", 0},
    {"6.12 after text", "ab\x80", 2},
    {"6.12 after a whole sequence", "\xc3\xa9\xa9", 2},
    {"6.12 one too many after 3", "\xe2\x82\xac\x80", 3},
    /* Lonely start characters, each followed by a space. */
    {"6.13 c0 space", "\xc0\x20", 0},
    {"6.13 c2 space", "\xc2\x20", 1},
    {"6.13 df space", "\xdf\x20", 1},
    {"6.13 e0 space", "\xe0\x20", 1},
    {"6.13 ef space", "\xef\x20", 1},
    {"6.13 f0 space", "\xf0\x20", 1},
    {"6.13 f4 space", "\xf4\x20", 1},
    {"6.13 f7 space", "\xf7\x20", 0},
    {"6.13 f8 space", "\xf8\x20", 0},
    {"6.13 fc space", "\xfc\x20", 0},
    /* The last continuation byte missing (alone: incomplete or worse). */
    {"6.14 c0", "\xc0", 0},
    {"6.14 e0 80", "\xe0\x80", 1},
    {"6.14 f0 80 80", "\xf0\x80\x80", 1},
    {"6.14 f8 80 80 80", "\xf8\x80\x80\x80", 0},
    {"6.14 fc 80 80 80 80", "\xfc\x80\x80\x80\x80", 0},
    {"6.14 df", "\xdf", PART},
    {"6.14 ef bf", "\xef\xbf", PART},
    {"6.14 f4 8f bf", "\xf4\x8f\xbf", PART},
    {"6.14 f7 bf bf", "\xf7\xbf\xbf", 0},
    {"6.14 fb bf bf bf", "\xfb\xbf\xbf\xbf", 0},
    {"6.14 fd bf bf bf bf", "\xfd\xbf\xbf\xbf\xbf", 0},
    {"6.14 c2 then text",
     "\xc2"
     "a",
     1},
    {"6.14 e2 82 then text",
     "\xe2\x82"
     "a",
     2},
    {"6.14 f0 9f 98 then text",
     "\xf0\x9f\x98"
     "a",
     3},
    /* Concatenated incomplete sequences. */
    {"6.15 all incomplete",
     "\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80\xdf\xef"
     "\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf",
     0},
    {"6.15 df then ef bf", "\xdf\xef\xbf", 1},
    /* Impossible bytes. */
    {"6.16 fe", "\xfe", 0},
    {"6.16 ff", "\xff", 0},
    {"6.16 fe fe ff ff", "\xfe\xfe\xff\xff", 0},
    /* Overlong "/". */
    {"6.17 c0 af", "\xc0\xaf", 0},
    {"6.17 e0 80 af", "\xe0\x80\xaf", 1},
    {"6.17 f0 80 80 af", "\xf0\x80\x80\xaf", 1},
    {"6.17 f8 80 80 80 af", "\xf8\x80\x80\x80\xaf", 0},
    {"6.17 fc 80 80 80 80 af", "\xfc\x80\x80\x80\x80\xaf", 0},
    /* Maximum overlongs. */
    {"6.18 c1 bf", "\xc1\xbf", 0},
    {"6.18 e0 9f bf", "\xe0\x9f\xbf", 1},
    {"6.18 f0 8f bf bf", "\xf0\x8f\xbf\xbf", 1},
    {"6.18 f8 87 bf bf bf", "\xf8\x87\xbf\xbf\xbf", 0},
    {"6.18 fc 83 bf bf bf bf", "\xfc\x83\xbf\xbf\xbf\xbf", 0},
    /* Overlong NUL. */
    {"6.19 c0 80", "\xc0\x80", 0},
    {"6.19 e0 80 80", "\xe0\x80\x80", 1},
    {"6.19 f0 80 80 80", "\xf0\x80\x80\x80", 1},
    {"6.19 f8 80 80 80 80", "\xf8\x80\x80\x80\x80", 0},
    {"6.19 fc 80 80 80 80 80", "\xfc\x80\x80\x80\x80\x80", 0},
    /* Single surrogates. */
    {"6.20 U+D800", "\xed\xa0\x80", 1},
    {"6.20 U+DB7F", "\xed\xad\xbf", 1},
    {"6.20 U+DB80", "\xed\xae\x80", 1},
    {"6.20 U+DBFF", "\xed\xaf\xbf", 1},
    {"6.20 U+DC00", "\xed\xb0\x80", 1},
    {"6.20 U+DF80", "\xed\xbe\x80", 1},
    {"6.20 U+DFFF", "\xed\xbf\xbf", 1},
    /* Paired surrogates. */
    {"6.21 U+D800 U+DC00", "\xed\xa0\x80\xed\xb0\x80", 1},
    {"6.21 U+DBFF U+DFFF", "\xed\xaf\xbf\xed\xbf\xbf", 1},
    {"6.21 after text", "abc\xed\xa0\x80\xed\xb0\x80", 4},
    /* Noncharacters are valid UTF-8. */
    {"6.22 U+FFFE", "\xef\xbf\xbe", OK},
    {"6.22 U+FFFF", "\xef\xbf\xbf", OK},
    {"6.22 U+1FFFE", "\xf0\x9f\xbf\xbe", OK},
    {"6.22 U+10FFFE", "\xf4\x8f\xbf\xbe", OK},
    {"6.22 U+FDD0", "\xef\xb7\x90", OK},
    {"6.22 U+FDEF", "\xef\xb7\xaf", OK},
    {"6.23 U+FEFF (BOM)", "\xef\xbb\xbf", OK},
    /* The second byte's limits after E0, ED, F0, F4. */
    {"e0 9f", "\xe0\x9f", 1},
    {"e0 a0", "\xe0\xa0", PART},
    {"ed 9f", "\xed\x9f", PART},
    {"ed a0", "\xed\xa0", 1},
    {"f0 8f", "\xf0\x8f", 1},
    {"f0 90", "\xf0\x90", PART},
    {"f4 8f", "\xf4\x8f", PART},
    {"f4 90", "\xf4\x90", 1},
    {"f5", "\xf5", 0},
    {"c1", "\xc1", 0},
    {"c2", "\xc2", PART},
    {"emoji", "\xf0\x9f\x98\x80", OK},
    {"three emoji and text", "\xf0\x9f\x98\x80\xf0\x9f\x98\x81 \xf0\x9f\x98\x82!", OK},
};
#undef OK
#undef PART

static void test_utf8_autobahn(void **state) {
  (void)state;
  size_t n_cases = sizeof autobahn_cases / sizeof autobahn_cases[0];
  for (size_t i = 0; i < n_cases; i++) {
    const utf8_case_t *c = &autobahn_cases[i];
    check_utf8(c->name, (const uint8_t *)c->bytes, strlen(c->bytes), c->expect);
  }
  check_utf8("6.7 U+0000", (const uint8_t *)"", 1, UTF8_VALID); /* its NUL */
  /* 6.6: every prefix of kosme, whole only at its character boundaries. */
  static const uint8_t kosme[] = {0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5};
  for (size_t k = 0; k <= sizeof kosme; k++) {
    bool boundary = k == 0 || k == 2 || k == 5 || k == 7 || k == 9 || k == 11;
    check_utf8("6.6 kosme prefix", kosme, k, boundary ? UTF8_VALID : UTF8_INCOMPLETE);
  }
  /* Every continuation byte alone, and all 64 in a row (6.12). */
  uint8_t conts[64];
  for (unsigned b = 0x80; b <= 0xbf; b++) {
    conts[b - 0x80] = (uint8_t)b;
    check_utf8("lone continuation", conts + (b - 0x80), 1, 0);
  }
  check_utf8("all continuation bytes", conts, sizeof conts, 0);
  /* Every lead byte followed by a space (6.13), and alone at the end. */
  for (unsigned b = 0xc0; b <= 0xff; b++) {
    uint8_t s[2] = {(uint8_t)b, ' '};
    bool never = b <= 0xc1 || b >= 0xf5;
    check_utf8("lead byte and space", s, 2, never ? 0 : 1);
    check_utf8("lead byte alone", s, 1, never ? 0 : UTF8_INCOMPLETE);
  }
  fprintf(stderr, "# %zu table cases, 12 prefixes of kosme, 64 continuation and 64 lead bytes\n",
          n_cases);
}

/* The failing byte after valid text of every length and alignment: the
 * prefix must not change where it fails, across the fast path's blocks. */
static void test_utf8_fail_position(void **state) {
  (void)state;
  static const struct {
    const char *bytes;
    size_t fail_at;
  } bad[] = {
      {"\xf4\x90", 1},     {"\xed\xa0", 1},
      {"\xe0\x80", 1},     {"\xf0\x80", 1},
      {"\xf0\x8f", 1},     {"\xc0", 0},
      {"\xc1", 0},         {"\xf5", 0},
      {"\xff", 0},         {"\x80", 0},
      {"\xc3\x41", 1},     {"\xc3\xc3", 1},
      {"\xe2\x82\x41", 2}, {"\xf0\x9f\x98\xf0", 3},
  };
  static const char *const fillers[] = {"a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "z"};
  uint8_t buf[128];
  for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
    for (size_t prefix = 0; prefix < 80; prefix++) {
      /* ASCII, or characters of mixed lengths, up to `prefix` bytes. */
      size_t n = 0;
      for (size_t k = 0; n < prefix; k++) {
        const char *fill = prefix % 2 ? fillers[0] : fillers[k % 5];
        size_t fl = strlen(fill);
        if (n + fl > prefix)
          fill = "a", fl = 1;
        memcpy(buf + n, fill, fl);
        n += fl;
      }
      size_t fail_at = n + bad[b].fail_at;
      size_t bl = strlen(bad[b].bytes);
      memcpy(buf + n, bad[b].bytes, bl);
      n += bl;
      memset(buf + n, 'x', 20); /* text after it changes nothing */
      n += 20;
      check_utf8("fail position", buf, n, fail_at);
    }
  }
}

/* Every string of 1 and 2 bytes, every 3-byte one starting at C0..FF and
 * every 4-byte one starting at F0..F7 with 80..BF after: each code point in
 * each length (overlongs, surrogates, beyond U+10FFFF), against the
 * reference, whole and byte by byte. */
static void check_against_reference(const uint8_t *p, size_t n) {
  bool complete;
  size_t bad = ref_first_bad(p, n, &complete);
  ws_utf8_t u = WS_UTF8_INIT;
  bool ok = ws_utf8_feed(&u, p, n);
  if (ok != (bad == n) || (ok && ws_utf8_complete(&u) != complete))
    fail_msg("%zu bytes %02x %02x %02x %02x: %s, the reference fails at %zu%s", n, p[0],
             n > 1 ? p[1] : 0, n > 2 ? p[2] : 0, n > 3 ? p[3] : 0, ok ? "accepted" : "rejected",
             bad, complete ? "" : " (incomplete)");
  u = (ws_utf8_t)WS_UTF8_INIT;
  for (size_t i = 0; i < n && i <= bad; i++)
    if (ws_utf8_feed(&u, p + i, 1) != (i != bad))
      fail_msg("%zu bytes %02x..: byte %zu, the reference fails at %zu", n, p[0], i, bad);
}

static void test_utf8_exhaustive_short(void **state) {
  (void)state;
  uint8_t s[4];
  size_t strings = 0;
  for (unsigned a = 0; a < 256; a++) {
    s[0] = (uint8_t)a;
    check_against_reference(s, 1);
    for (unsigned b = 0; b < 256; b++) {
      s[1] = (uint8_t)b;
      check_against_reference(s, 2);
      strings += 2;
      for (unsigned c = 0; a >= 0xc0 && c < 256; c++, strings++) {
        s[2] = (uint8_t)c;
        check_against_reference(s, 3);
      }
    }
  }
  for (unsigned a = 0xf0; a <= 0xf7; a++)
    for (unsigned b = 0x80; b <= 0xbf; b++)
      for (unsigned c = 0x80; c <= 0xbf; c++)
        for (unsigned d = 0x80; d <= 0xbf; d++, strings++) {
          s[0] = (uint8_t)a, s[1] = (uint8_t)b, s[2] = (uint8_t)c, s[3] = (uint8_t)d;
          check_against_reference(s, 4);
        }
  fprintf(stderr, "# %zu short strings against the reference\n", strings);
}

/* The 16-byte blocks: a bad byte or a multi-byte character at every
 * position of ASCII runs of every length and alignment, and ASCII blocks
 * fed in a state that expects a continuation. */
static void test_utf8_ascii_fast_path(void **state) {
  (void)state;
  static uint8_t buf[160];
  for (size_t align = 0; align < 16; align++) {
    for (size_t len = 1; len <= 100; len++) {
      uint8_t *p = buf + align;
      for (size_t at = 0; at < len; at++) {
        memset(p, 'A' + (int)(at % 26), len);
        p[at] = 0x80;
        check_against_reference(p, len);
        ws_utf8_t u = WS_UTF8_INIT;
        assert_false(ws_utf8_feed(&u, p, len));
        p[at] = 0xc3; /* a lead byte: valid if it ends the text, else not */
        u = (ws_utf8_t)WS_UTF8_INIT;
        assert_int_equal(ws_utf8_feed(&u, p, len), at == len - 1);
        if (at + 1 < len) { /* a whole character inside the run */
          p[at + 1] = 0xa9;
          u = (ws_utf8_t)WS_UTF8_INIT;
          assert_true(ws_utf8_feed(&u, p, len));
          assert_true(ws_utf8_complete(&u));
        }
      }
    }
  }
  /* In a state that expects continuation bytes, ASCII fails at once even
   * in a whole block. */
  static const char *const pending[] = {"\xc3", "\xe2", "\xe2\x82", "\xf0\x9f\x98", "\xed"};
  memset(buf, 'q', 64);
  for (size_t i = 0; i < sizeof pending / sizeof pending[0]; i++) {
    ws_utf8_t u = WS_UTF8_INIT;
    assert_true(ws_utf8_feed(&u, (const uint8_t *)pending[i], strlen(pending[i])));
    assert_false(ws_utf8_complete(&u));
    assert_false(ws_utf8_feed(&u, buf, 64));
  }
  /* A character completed by the first byte of a block, then ASCII. */
  ws_utf8_t u = WS_UTF8_INIT;
  assert_true(ws_utf8_feed(&u, (const uint8_t *)"\xe2\x82", 2));
  buf[0] = 0xac;
  assert_true(ws_utf8_feed(&u, buf, 64));
  assert_true(ws_utf8_complete(&u));
}

static void test_utf8_rejected_stays_rejected(void **state) {
  (void)state;
  ws_utf8_t u = WS_UTF8_INIT;
  assert_true(ws_utf8_feed(&u, (const uint8_t *)"ok", 2));
  assert_true(ws_utf8_feed(&u, NULL, 0));
  assert_false(ws_utf8_feed(&u, (const uint8_t *)"\xff", 1));
  assert_false(ws_utf8_complete(&u));
  assert_false(ws_utf8_feed(&u, (const uint8_t *)"abc", 3));
  assert_false(ws_utf8_feed(&u, NULL, 0));
  assert_false(ws_utf8_complete(&u));
}

/* ---- UTF-8: random text against the reference --------------------------------------- */

/* cp in `len` bytes, whether or not that is its shortest form (len 5 and
 * 6: the old forms RFC 3629 removed). */
static size_t encode_utf8(uint8_t *out, uint32_t cp, size_t len) {
  static const uint8_t lead[7] = {0, 0x00, 0xc0, 0xe0, 0xf0, 0xf8, 0xfc};
  if (len == 1) {
    out[0] = (uint8_t)(cp & 0x7f);
    return 1;
  }
  for (size_t i = len - 1; i > 0; i--, cp >>= 6)
    out[i] = (uint8_t)(0x80 | (cp & 0x3f));
  out[0] = (uint8_t)(lead[len] | cp);
  return len;
}

static size_t shortest_len(uint32_t cp) {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static uint32_t random_code_point(void) {
  static const uint32_t edges[] = {0x0,    0x7f,   0x80,    0x7ff,    0x800,    0xd7ff,
                                   0xd800, 0xdbff, 0xdc00,  0xdfff,   0xe000,   0xfffd,
                                   0xfffe, 0xffff, 0x10000, 0x10ffff, 0x110000, 0x1fffff};
  switch (rng_below(8)) {
  case 0:
    return edges[rng_below(sizeof edges / sizeof edges[0])];
  case 1:
    return (uint32_t)rng_below(0x800);
  case 2:
    return (uint32_t)rng_below(0x10000);
  case 3:
    return (uint32_t)rng_below(0x110000);
  default:
    return (uint32_t)rng_below(0x80);
  }
}

/* One character at out: cp in its shortest form, or now and then in a
 * longer one (overlong), cut short, as a surrogate, beyond U+10FFFF, or a
 * random byte. */
static size_t random_char(uint8_t *out) {
  uint32_t cp = random_code_point();
  size_t len = shortest_len(cp);
  switch (rng_below(400)) {
  case 0:
  case 1:
  case 2: /* overlong, up to the 6-byte form */
    return encode_utf8(out, cp, len + 1 + rng_below(6 - len));
  case 3:
  case 4: { /* the first bytes of its encoding only */
    uint8_t whole[4];
    encode_utf8(whole, cp, len);
    size_t cut = len > 1 ? 1 + rng_below(len - 1) : 1;
    memcpy(out, whole, cut);
    return cut;
  }
  case 5:
  case 6:
    return encode_utf8(out, 0xd800 + (uint32_t)rng_below(0x800), 3);
  case 7:
    return encode_utf8(out, 0x110000 + (uint32_t)rng_below(0x200000 - 0x110000), 4);
  case 8:
    out[0] = (uint8_t)rng();
    return 1;
  default:
    return encode_utf8(out, cp, len);
  }
}

/* Random text: mostly valid characters. */
static size_t random_text(uint8_t *out, size_t cap) {
  size_t n = 0, chars = rng_below(40);
  for (size_t i = 0; i < chars && n + 6 <= cap; i++)
    n += random_char(out + n);
  return n;
}

/* A valid text with a few bytes replaced, inserted or cut. */
static size_t mutate(uint8_t *p, size_t n, size_t cap) {
  static const uint8_t nasty[] = {0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0,
                                  0xf4, 0xf5, 0xf8, 0xfe, 0xff, 0x9f, 0xa0, 0x8f, 0x90};
  size_t edits = 1 + rng_below(3);
  for (size_t e = 0; e < edits; e++) {
    uint8_t b = rng_below(2) ? nasty[rng_below(sizeof nasty)] : (uint8_t)rng();
    size_t at = rng_below(n + 1);
    switch (rng_below(3)) {
    case 0:
      if (at < n)
        p[at] = b;
      break;
    case 1:
      if (n < cap) {
        memmove(p + at + 1, p + at, n - at);
        p[at] = b;
        n++;
      }
      break;
    default:
      n = at; /* cut */
      break;
    }
  }
  return n;
}

/* Up to max random offsets in 0..n, ascending; returns how many. */
static size_t random_cuts(size_t *cuts, size_t max, size_t n) {
  size_t count = rng_below(max + 1);
  for (size_t i = 0; i < count; i++) {
    size_t cut = rng_below(n + 1), j = i;
    for (; j > 0 && cuts[j - 1] > cut; j--) /* insertion sort */
      cuts[j] = cuts[j - 1];
    cuts[j] = cut;
  }
  return count;
}

static void test_utf8_random_vs_reference(void **state) {
  (void)state;
  size_t rounds = 400000 / RANDOM_SCALE, valid = 0, incomplete = 0, invalid = 0;
  uint8_t buf[300];
  for (size_t round = 0; round < rounds; round++) {
    size_t n = random_text(buf, sizeof buf - 8);
    if (round % 2)
      n = mutate(buf, n, sizeof buf);
    bool complete;
    size_t bad = ref_first_bad(buf, n, &complete);
    valid += bad == n && complete;
    incomplete += bad == n && !complete;
    invalid += bad < n;

    /* Whole, then in random pieces: the piece that fails holds the byte
     * the reference names, and the one before it passes. */
    ws_utf8_t u = WS_UTF8_INIT;
    bool ok = ws_utf8_feed(&u, buf, n);
    if (ok != (bad == n) || (ok && ws_utf8_complete(&u) != complete))
      fail_msg("round %zu (%zu bytes): %s, the reference fails at %zu", round, n,
               ok ? "accepted" : "rejected", bad);
    size_t cuts[8], ncuts = random_cuts(cuts, 8, n);
    u = (ws_utf8_t)WS_UTF8_INIT;
    size_t failed = feed_pieces(&u, buf, n, cuts, ncuts);
    size_t want = SIZE_MAX;
    if (bad < n) /* the piece holding byte `bad` */
      for (want = 0; want < ncuts && cuts[want] <= bad; want++)
        ;
    if (failed != want)
      fail_msg("round %zu: piece %zu failed, expected %zu (byte %zu)", round, failed, want, bad);
    if (bad == n && ws_utf8_complete(&u) != complete)
      fail_msg("round %zu: complete %d in pieces", round, ws_utf8_complete(&u));
  }
  fprintf(stderr, "# %zu random texts: %zu valid, %zu incomplete, %zu invalid\n", rounds, valid,
          incomplete, invalid);
  assert_true(valid > rounds / 10 && invalid > rounds / 10 && incomplete > rounds / 100);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_every_form_and_prefix),
      cmocka_unit_test(test_parse_first_two_bytes_exhaustive),
      cmocka_unit_test(test_parse_non_minimal_lengths),
      cmocka_unit_test(test_parse_length_msb),
      cmocka_unit_test(test_parse_control_rules),
      cmocka_unit_test(test_rfc_examples),
      cmocka_unit_test(test_head_round_trip),
      cmocka_unit_test(test_mask_against_reference),
      cmocka_unit_test(test_mask_pieces),
      cmocka_unit_test(test_close_codes),
      cmocka_unit_test(test_utf8_autobahn),
      cmocka_unit_test(test_utf8_fail_position),
      cmocka_unit_test(test_utf8_exhaustive_short),
      cmocka_unit_test(test_utf8_ascii_fast_path),
      cmocka_unit_test(test_utf8_rejected_stays_rejected),
      cmocka_unit_test(test_utf8_random_vs_reference),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
