/* UTF-8 validation (RFC 3629 §4), incremental, for text messages and close
 * reasons that arrive in pieces.
 *
 * A DFA over byte classes. Its states say what the next byte must be, so
 * a byte that no valid text can have there is rejected at once: the second
 * byte of a sequence carries the rules against overlongs (after E0, F0),
 * surrogates (after ED) and code points above U+10FFFF (after F4), and the
 * lead bytes C0, C1 and F5..FF never start a valid sequence.
 *
 * The DFA is a shift DFA: a state is the offset of a 6-bit field, and each
 * byte class has a 64-bit row whose field at offset s holds the state
 * that follows s. A step is then `row >> state`, one shift on the loop's
 * critical path (a 2-D table costs a load that waits for the state). */
#include <string.h>

#include "ws-internal.h"

enum byte_class {
  C_ASCII,  /* 00..7F */
  C_CONT_8, /* 80..8F: continuation, but not second after E0, F0 (overlong) */
  C_CONT_9, /* 90..9F: continuation, but not second after E0 (overlong), F4 (> U+10FFFF) */
  C_CONT_A, /* A0..BF: continuation, but not second after ED (surrogate), F4 (> U+10FFFF) */
  C_NEVER,  /* C0, C1 (overlong 2-byte), F5..FF (above U+10FFFF, 5- and 6-byte forms) */
  C_LEAD2,  /* C2..DF */
  C_E0,     /* E0: the second byte A0..BF (else overlong) */
  C_LEAD3,  /* E1..EC, EE, EF */
  C_ED,     /* ED: the second byte 80..9F (else a surrogate) */
  C_F0,     /* F0: the second byte 90..BF (else overlong) */
  C_LEAD4,  /* F1..F3 */
  C_F4,     /* F4: the second byte 80..8F (else above U+10FFFF) */
  N_CLASSES
};

static const uint8_t byte_class[256] = {
    /* 00..7F */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 00 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 08 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 10 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 18 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 20 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 28 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 30 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 38 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 40 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 48 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 50 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 58 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 60 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 68 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 70 */
    C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, C_ASCII, /* 78 */
    /* 80..BF */
    C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, /* 80 */
    C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, C_CONT_8, /* 88 */
    C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, /* 90 */
    C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, C_CONT_9, /* 98 */
    C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, /* A0 */
    C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, /* A8 */
    C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, /* B0 */
    C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, C_CONT_A, /* B8 */
    /* C0..DF */
    C_NEVER, C_NEVER, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, /* C0 */
    C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, /* C8 */
    C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, /* D0 */
    C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, C_LEAD2, /* D8 */
    /* E0..EF */
    C_E0, C_LEAD3, C_LEAD3, C_LEAD3, C_LEAD3, C_LEAD3, C_LEAD3, C_LEAD3, /* E0 */
    C_LEAD3, C_LEAD3, C_LEAD3, C_LEAD3, C_LEAD3, C_ED, C_LEAD3, C_LEAD3, /* E8 */
    /* F0..FF */
    C_F0, C_LEAD4, C_LEAD4, C_LEAD4, C_F4, C_NEVER, C_NEVER, C_NEVER,       /* F0 */
    C_NEVER, C_NEVER, C_NEVER, C_NEVER, C_NEVER, C_NEVER, C_NEVER, C_NEVER, /* F8 */
};

/* States: what the next byte must be, each the offset of its field in a
 * row. S_REJECT is 0 so that every transition a row leaves out rejects,
 * and a rejection is final (no row sets a field at offset 0). */
enum state {
  S_REJECT = 0,
  S_ACCEPT = 6,
  S_TAIL1 = 12,    /* one more continuation byte */
  S_TAIL2 = 18,    /* two more */
  S_TAIL3 = 24,    /* three more */
  S_AFTER_E0 = 30, /* A0..BF, then one more */
  S_AFTER_ED = 36, /* 80..9F, then one more */
  S_AFTER_F0 = 42, /* 90..BF, then two more */
  S_AFTER_F4 = 48, /* 80..8F, then two more */
};

/* ws_utf8_t.state is the state XOR S_ACCEPT: 0 at a boundary, as the
 * header (and WS_UTF8_INIT) has it. */
static uint64_t state_in(const ws_utf8_t *u) { return u->state ^ S_ACCEPT; }
static void state_out(ws_utf8_t *u, uint64_t state) { u->state = (uint32_t)state ^ S_ACCEPT; }

#define GO(from, to) ((uint64_t)(to) << (from))
#define CONTINUE_ANY (GO(S_TAIL1, S_ACCEPT) | GO(S_TAIL2, S_TAIL1) | GO(S_TAIL3, S_TAIL2))
static const uint64_t row[N_CLASSES] = {
    [C_ASCII] = GO(S_ACCEPT, S_ACCEPT),
    [C_CONT_8] = CONTINUE_ANY | GO(S_AFTER_ED, S_TAIL1) | GO(S_AFTER_F4, S_TAIL2),
    [C_CONT_9] = CONTINUE_ANY | GO(S_AFTER_ED, S_TAIL1) | GO(S_AFTER_F0, S_TAIL2),
    [C_CONT_A] = CONTINUE_ANY | GO(S_AFTER_E0, S_TAIL1) | GO(S_AFTER_F0, S_TAIL2),
    [C_NEVER] = 0,
    [C_LEAD2] = GO(S_ACCEPT, S_TAIL1),
    [C_E0] = GO(S_ACCEPT, S_AFTER_E0),
    [C_LEAD3] = GO(S_ACCEPT, S_TAIL2),
    [C_ED] = GO(S_ACCEPT, S_AFTER_ED),
    [C_F0] = GO(S_ACCEPT, S_AFTER_F0),
    [C_LEAD4] = GO(S_ACCEPT, S_TAIL3),
    [C_F4] = GO(S_ACCEPT, S_AFTER_F4),
};
#undef GO
#undef CONTINUE_ANY

/* Skips whole blocks of 16 ASCII bytes; the DFA takes what is left. */
static const uint8_t *skip_ascii(const uint8_t *p, const uint8_t *end) {
  const uint64_t high_bits = UINT64_C(0x8080808080808080);
  while (end - p >= 16) {
    uint64_t a, b;
    memcpy(&a, p, sizeof a);
    memcpy(&b, p + 8, sizeof b);
    if ((a | b) & high_bits)
      break;
    p += 16;
  }
  return p;
}

/* Between ASCII blocks the DFA takes 16 bytes at a time, without looking
 * at the state inside them: a rejection is final, so it shows at the
 * block's end, and the verdict is the same as the first bad byte's. The
 * upper bits `row >> state` leaves are ignored by `& 63`, which x86-64's
 * shift instructions do anyway. */
bool ws_utf8_feed(ws_utf8_t *u, const uint8_t *p, size_t n) {
  uint64_t state = state_in(u);
  if (n == 0 || state == S_REJECT)
    return state != S_REJECT;
  const uint8_t *end = p + n;
  while (p != end && state != S_REJECT) {
    if (state == S_ACCEPT) {
      p = skip_ascii(p, end);
      if (p == end)
        break;
    }
    const uint8_t *stop = end - p > 16 ? p + 16 : end;
    do
      state = row[byte_class[*p]] >> (state & 63);
    while (++p != stop);
    state &= 63;
  }
  state_out(u, state);
  return state != S_REJECT;
}
