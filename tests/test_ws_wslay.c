/* The WebSocket frame codec against wslay's (libwslay 1.1.1), a second
 * implementation of RFC 6455 §5.2:
 *   - receiving: random streams of frames, valid and not (a control frame
 *     fragmented or over 125 bytes, a length not in its shortest form, a
 *     64-bit length with the top bit set, random header bytes), cut short
 *     or not, read by ws_frame_parse + ws_mask and by wslay_frame_recv
 *     (from memory, in random read sizes): the same frames with the same
 *     header fields and unmasked payloads, then the same end (a protocol
 *     error, or more bytes needed);
 *   - sending: ws_frame_head + ws_mask write what wslay_frame_send writes,
 *     byte for byte, for random headers, lengths and keys.
 * Without wslay at setup (libwslay-dev) the test exits 77, saying so. */
#include "keel-test.h"

#ifdef KEEL_HAVE_WSLAY
#include <wslay/wslay.h>

#include "ws-codec-test.h"
#include "ws-internal.h"

#define STREAM_CAP (MAX_FRAMES * (WS_MAX_HEAD + FRAME_ROOM))
#define FRAME_ROOM 0x12000 /* the most payload bytes a frame gets */
#define MAX_FRAMES 8

/* A frame as read: the header, and as much of the payload as arrived,
 * unmasked. */
typedef struct read_frame {
  uint8_t fin, rsv, opcode, masked;
  uint64_t len;
  uint8_t *payload; /* into the reader's output buffer */
  size_t got;
} read_frame_t;

/* How a stream's reading ended. */
enum read_end { END_MORE_NEEDED, END_PROTO };

typedef struct read_result {
  read_frame_t frames[MAX_FRAMES + 1];
  size_t nframes;
  enum read_end end;
  uint8_t out[STREAM_CAP];
  size_t out_len;
} read_result_t;

/* Room for the next frame's payload bytes in r->out. */
static read_frame_t *add_frame(read_result_t *r) {
  assert_true(r->nframes < MAX_FRAMES + 1);
  read_frame_t *f = &r->frames[r->nframes++];
  memset(f, 0, sizeof *f);
  f->payload = r->out + r->out_len;
  return f;
}

/* ---- keel's side ------------------------------------------------------------------ */

/* Unmasks in random pieces, each at the phase the last one returned, as a
 * reader does while the payload arrives. */
static void unmask_in_pieces(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4]) {
  unsigned phase = 0;
  for (size_t at = 0; at < n;) {
    size_t piece = 1 + rng_below(rng_below(2) ? 8 : n - at);
    piece = piece > n - at ? n - at : piece;
    phase = ws_mask(dst + at, src + at, piece, key, phase);
    at += piece;
  }
}

static void read_with_keel(const uint8_t *p, size_t n, read_result_t *r) {
  r->nframes = r->out_len = 0;
  size_t pos = 0;
  for (;;) {
    ws_frame_t f;
    int rc = ws_frame_parse(p + pos, n - pos, &f);
    if (rc <= 0) {
      r->end = rc < 0 ? END_PROTO : END_MORE_NEEDED;
      return;
    }
    assert_int_equal(rc, f.head_len);
    pos += (size_t)rc;
    read_frame_t *out = add_frame(r);
    *out = (read_frame_t){.fin = f.fin,
                          .rsv = f.rsv,
                          .opcode = f.opcode,
                          .masked = f.masked,
                          .len = f.len,
                          .payload = out->payload};
    out->got = f.len < n - pos ? (size_t)f.len : n - pos;
    if (f.masked)
      unmask_in_pieces(out->payload, p + pos, out->got, f.key);
    else
      memcpy(out->payload, p + pos, out->got);
    r->out_len += out->got;
    pos += out->got;
    if (out->got < f.len) {
      /* wslay reports a frame with its first payload byte. */
      r->nframes -= out->got == 0;
      r->end = END_MORE_NEEDED;
      return;
    }
  }
}

/* ---- wslay's side ------------------------------------------------------------------ */

typedef struct mem_reader {
  const uint8_t *p;
  size_t len, pos;
  size_t max_read; /* 0: as much as wslay asks for */
} mem_reader_t;

static ssize_t mem_recv(uint8_t *buf, size_t len, int flags, void *user_data) {
  (void)flags;
  mem_reader_t *m = user_data;
  size_t n = m->len - m->pos;
  n = n < len ? n : len;
  if (m->max_read && n > m->max_read)
    n = 1 + rng_below(m->max_read);
  memcpy(buf, m->p + m->pos, n);
  m->pos += n;
  return (ssize_t)n; /* 0 at the end: wslay says WSLAY_ERR_WANT_READ */
}

static ssize_t no_recv(uint8_t *buf, size_t len, int flags, void *user_data) {
  (void)buf, (void)len, (void)flags, (void)user_data;
  return -1;
}

static ssize_t no_send(const uint8_t *data, size_t len, int flags, void *user_data) {
  (void)data, (void)len, (void)flags, (void)user_data;
  return -1;
}

static int no_genmask(uint8_t *buf, size_t len, void *user_data) {
  (void)buf, (void)len, (void)user_data;
  return -1;
}

static void read_with_wslay(const uint8_t *p, size_t n, size_t max_read, read_result_t *r) {
  mem_reader_t m = {.p = p, .len = n, .max_read = max_read};
  struct wslay_frame_callbacks cb = {no_send, mem_recv, no_genmask};
  wslay_frame_context_ptr ctx;
  assert_int_equal(wslay_frame_context_init(&ctx, &cb, &m), 0);
  r->nframes = r->out_len = 0;
  read_frame_t *cur = NULL;
  for (;;) {
    struct wslay_frame_iocb io;
    memset(&io, 0, sizeof io);
    ssize_t rc = wslay_frame_recv(ctx, &io);
    if (rc == WSLAY_ERR_WANT_READ && m.pos < m.len)
      continue; /* a header read in pieces */
    if (rc < 0) {
      assert_true(rc == WSLAY_ERR_WANT_READ || rc == WSLAY_ERR_PROTO);
      r->end = rc == WSLAY_ERR_PROTO ? END_PROTO : END_MORE_NEEDED;
      break;
    }
    if (cur == NULL || cur->got == cur->len) { /* the first piece of a frame */
      cur = add_frame(r);
      *cur = (read_frame_t){.fin = io.fin,
                            .rsv = io.rsv,
                            .opcode = io.opcode,
                            .masked = io.mask,
                            .len = io.payload_length,
                            .payload = cur->payload};
    }
    assert_int_equal(io.data_length, (size_t)rc);
    assert_true(r->out_len + io.data_length <= STREAM_CAP);
    memcpy(r->out + r->out_len, io.data, io.data_length);
    r->out_len += io.data_length;
    cur->got += io.data_length;
  }
  wslay_frame_context_free(ctx);
}

/* ---- Streams ------------------------------------------------------------------------ */

typedef struct stream_stats {
  size_t streams, frames, proto, cut, masked;
} stream_stats_t;

enum frame_kind {
  KIND_DATA,
  KIND_CONTROL,
  KIND_CONTROL_FRAGMENTED, /* error */
  KIND_CONTROL_LONG,       /* error: over 125 bytes (16- or 64-bit length) */
  KIND_NON_MINIMAL_16,     /* error */
  KIND_NON_MINIMAL_64,     /* error */
  KIND_TOP_BIT,            /* error */
  KIND_RANDOM_HEADER,      /* valid or not, often a length beyond the stream */
};

static uint64_t data_length(void) {
  switch (rng_below(16)) {
  case 0:
    return 126 + rng_below(0x10000 - 126);
  case 1:
    return 0x10000 + rng_below(0x1000);
  case 2:
  case 3: /* a form's boundaries */
    return (uint64_t[]){0, 125, 126, 0xffff, 0x10000}[rng_below(5)];
  default:
    return rng_below(300);
  }
}

/* A header to write: the encoder writes any of them, valid or not. */
typedef struct head_spec {
  bool fin, masked;
  unsigned rsv, opcode;
  enum len_form form;
  uint64_t len;
} head_spec_t;

static head_spec_t random_head(enum frame_kind kind) {
  head_spec_t h = {.fin = rng() & 1,
                   .masked = rng() & 1,
                   .rsv = (unsigned)rng_below(8),
                   .opcode = (unsigned)rng_below(8),
                   .len = data_length()};
  h.form = minimal_form(h.len);
  switch (kind) {
  case KIND_DATA:
    break;
  case KIND_CONTROL:
  case KIND_CONTROL_FRAGMENTED:
    h.opcode |= 8, h.fin = kind == KIND_CONTROL, h.len = rng_below(126), h.form = FORM_7;
    break;
  case KIND_CONTROL_LONG:
    h.opcode |= 8, h.fin = true, h.len = rng_below(2) ? 126 + rng_below(2000) : 0x10000;
    h.form = minimal_form(h.len);
    break;
  case KIND_NON_MINIMAL_16:
    h.form = FORM_16, h.len = rng_below(126);
    break;
  case KIND_NON_MINIMAL_64:
    h.form = FORM_64, h.len = rng_below(0x10000);
    break;
  case KIND_TOP_BIT:
    h.form = FORM_64, h.len = rng() | UINT64_C(1) << 63;
    break;
  case KIND_RANDOM_HEADER: {
    unsigned len7 = (unsigned)rng_below(128);
    h.opcode = (unsigned)rng_below(16);
    h.form = len7 == 126 ? FORM_16 : len7 == 127 ? FORM_64 : FORM_7;
    h.len = h.form == FORM_7 ? len7 : h.form == FORM_16 ? rng_below(0x10000) : random_length();
    break;
  }
  }
  return h;
}

/* Appends one frame of the given kind to the stream (header and payload,
 * masked or not) and returns its length. A payload longer than what fits
 * (cap, FRAME_ROOM) is cut at a random point: *cut is set, and the stream
 * ends inside it. */
static size_t put_frame(uint8_t *p, size_t cap, enum frame_kind kind, bool *cut) {
  head_spec_t h = random_head(kind);
  uint8_t key[4];
  fill_random(key, 4);
  size_t n = encode_head(p, h.fin, h.rsv, h.opcode, h.form, h.len, h.masked ? key : NULL);
  size_t room = cap - n < FRAME_ROOM ? cap - n : FRAME_ROOM;
  size_t payload = h.len <= room ? (size_t)h.len : rng_below(room + 1);
  *cut = payload < h.len;
  fill_random(p + n, payload);
  if (h.masked)
    mask_reference(p + n, p + n, payload, key, 0);
  return n + payload;
}

static enum frame_kind random_kind(void) {
  size_t r = rng_below(40);
  return r < 20   ? KIND_DATA
         : r < 28 ? KIND_CONTROL
         : r < 33 ? KIND_RANDOM_HEADER
                  : (enum frame_kind)(2 + r % 5);
}

static void expect_same(const read_result_t *k, const read_result_t *w, size_t stream) {
  if (k->nframes != w->nframes || k->end != w->end)
    fail_msg("stream %zu: keel read %zu frames and %s, wslay %zu and %s", stream, k->nframes,
             k->end == END_PROTO ? "a protocol error" : "wants more", w->nframes,
             w->end == END_PROTO ? "a protocol error" : "wants more");
  for (size_t i = 0; i < k->nframes; i++) {
    const read_frame_t *a = &k->frames[i], *b = &w->frames[i];
    if (a->fin != b->fin || a->rsv != b->rsv || a->opcode != b->opcode || a->masked != b->masked ||
        a->len != b->len || a->got != b->got)
      fail_msg("stream %zu frame %zu: keel fin %u rsv %u opcode %u masked %u len %llu got %zu; "
               "wslay %u %u %u %u %llu %zu",
               stream, i, a->fin, a->rsv, a->opcode, a->masked, (unsigned long long)a->len, a->got,
               b->fin, b->rsv, b->opcode, b->masked, (unsigned long long)b->len, b->got);
    if (memcmp(a->payload, b->payload, a->got) != 0)
      fail_msg("stream %zu frame %zu: the payloads differ", stream, i);
  }
}

static void run_stream(uint8_t *p, size_t n, size_t index, stream_stats_t *st) {
  static read_result_t keel_r, wslay_r;
  /* Reads of a few bytes split headers everywhere; long streams get
   * longer reads, to keep the test quick. */
  static const size_t read_sizes[] = {0, 0, 100, 4096, 1, 2, 3, 7};
  size_t choices = sizeof read_sizes / sizeof read_sizes[0];
  size_t max_read = read_sizes[rng_below(n <= 2000 ? choices : 4)];
  read_with_keel(p, n, &keel_r);
  read_with_wslay(p, n, max_read, &wslay_r);
  expect_same(&keel_r, &wslay_r, index);
  st->streams++;
  st->frames += keel_r.nframes;
  st->proto += keel_r.end == END_PROTO;
  for (size_t i = 0; i < keel_r.nframes; i++)
    st->masked += keel_r.frames[i].masked;
}

static void test_recv_random_streams(void **state) {
  (void)state;
  static uint8_t stream[STREAM_CAP];
  stream_stats_t st = {0};
  size_t rounds = KT_SANITIZED ? 10000 : 40000;
  for (size_t s = 0; s < rounds; s++) {
    size_t n = 0, frames = 1 + rng_below(MAX_FRAMES);
    bool cut = false;
    for (size_t i = 0; i < frames && !cut; i++)
      n += put_frame(stream + n, STREAM_CAP - n, random_kind(), &cut);
    if (rng_below(3) == 0) { /* cut short anywhere */
      n = rng_below(n + 1);
      st.cut++;
    }
    run_stream(stream, n, s, &st);
  }
  fprintf(stderr,
          "# %zu streams (%zu cut short): %zu frames (%zu masked) read alike, %zu "
          "protocol errors agreed\n",
          st.streams, st.cut, st.frames, st.masked, st.proto);
  assert_true(st.proto > rounds / 10 && st.frames > rounds);
}

/* The errors wslay names, one stream each, and the same frames valid. */
static void test_recv_known_errors(void **state) {
  (void)state;
  static const struct {
    uint8_t bytes[14];
    size_t len;
    bool proto;
  } cases[] = {
      {{0x09, 0x00}, 2, true},                                /* ping without fin */
      {{0x89, 0x7e, 0x00, 0x7e}, 4, true},                    /* ping of 126 bytes */
      {{0x88, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}, 10, true},       /* close of 64 KiB */
      {{0x82, 0x7e, 0x00, 0x7d}, 4, true},                    /* 125 in 16 bits */
      {{0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 10, true}, /* 65535 in 64 bits */
      {{0x82, 0x7f, 0x80, 0, 0, 0, 0, 1, 0, 0}, 10, true},    /* top bit set */
      {{0x89, 0x7d}, 2, false},                               /* ping of 125 */
      {{0x82, 0x7e, 0x00, 0x7e}, 4, false},                   /* 126 in 16 bits */
      {{0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0}, 10, false},      /* 65536 in 64 bits */
      {{0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 10, false}, /* 2^63 - 1 */
  };
  static read_result_t keel_r, wslay_r;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    read_with_keel(cases[i].bytes, cases[i].len, &keel_r);
    read_with_wslay(cases[i].bytes, cases[i].len, 0, &wslay_r);
    expect_same(&keel_r, &wslay_r, i);
    assert_int_equal(keel_r.end, cases[i].proto ? END_PROTO : END_MORE_NEEDED);
  }
}

/* ---- Sending ------------------------------------------------------------------------- */

typedef struct mem_writer {
  uint8_t *p;
  size_t len, cap;
  const uint8_t *key;
} mem_writer_t;

static ssize_t mem_send(const uint8_t *data, size_t len, int flags, void *user_data) {
  (void)flags;
  mem_writer_t *m = user_data;
  assert_true(m->len + len <= m->cap);
  memcpy(m->p + m->len, data, len);
  m->len += len;
  return (ssize_t)len;
}

static int fixed_genmask(uint8_t *buf, size_t len, void *user_data) {
  mem_writer_t *m = user_data;
  assert_int_equal(len, 4);
  memcpy(buf, m->key, 4);
  return 0;
}

static void test_send_same_bytes(void **state) {
  (void)state;
  enum { PAYLOAD_MAX = 70000 };
  static uint8_t payload[PAYLOAD_MAX], wslay_out[WS_MAX_HEAD + PAYLOAD_MAX],
      keel_out[WS_MAX_HEAD + PAYLOAD_MAX];
  size_t rounds = KT_SANITIZED ? 5000 : 20000;
  for (size_t round = 0; round < rounds; round++) {
    bool fin = rng() & 1, masked = rng() & 1;
    unsigned rsv = (unsigned)rng_below(8), opcode = (unsigned)rng_below(16);
    /* A length wslay can send whole, or a header alone for any length. */
    bool whole = rng_below(4) != 0;
    uint64_t len = whole ? data_length() : random_length();
    if (opcode & 8)
      len = rng_below(126); /* wslay refuses longer control frames */
    size_t data_len = len < PAYLOAD_MAX ? (size_t)len : 0;
    data_len = whole ? data_len : rng_below(data_len + 1);
    uint8_t key[4];
    fill_random(key, 4);
    fill_random(payload, data_len);

    mem_writer_t m = {.p = wslay_out, .cap = sizeof wslay_out, .key = key};
    struct wslay_frame_callbacks cb = {mem_send, no_recv, fixed_genmask};
    wslay_frame_context_ptr ctx;
    assert_int_equal(wslay_frame_context_init(&ctx, &cb, &m), 0);
    struct wslay_frame_iocb io = {.fin = fin,
                                  .rsv = (uint8_t)rsv,
                                  .opcode = (uint8_t)opcode,
                                  .payload_length = len,
                                  .mask = masked,
                                  .data = payload,
                                  .data_length = data_len};
    ssize_t sent = wslay_frame_send(ctx, &io);
    wslay_frame_context_free(ctx);
    assert_int_equal(sent, data_len);

    size_t n = ws_frame_head(keel_out, fin, rsv, opcode, len, masked ? key : NULL);
    if (masked)
      ws_mask(keel_out + n, payload, data_len, key, 0);
    else
      memcpy(keel_out + n, payload, data_len);
    n += data_len;
    if (n != m.len || memcmp(keel_out, wslay_out, n) != 0)
      fail_msg("round %zu: fin %d rsv %u opcode %u len %llu masked %d: keel wrote %zu bytes, "
               "wslay %zu%s",
               round, fin, rsv, opcode, (unsigned long long)len, masked, n, m.len,
               n == m.len ? " (different)" : "");
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_recv_random_streams),
      cmocka_unit_test(test_recv_known_errors),
      cmocka_unit_test(test_send_same_bytes),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}

#else

int main(void) {
  fprintf(stderr, "# skipped: wslay was not found at setup (Debian: libwslay-dev)\n");
  return KT_SKIP_EXIT;
}

#endif
