/* ws-codec: micro-benchmarks of the WebSocket codec (src/ws/frame.c,
 * src/ws/utf8.c).
 *
 *   ws-codec [--quick]
 *
 * Unmasking a masked frame's payload of 128 bytes and of 16 KiB:
 *   - "ws_mask, in place": what keel's frame reader does to a payload
 *     already in its buffer;
 *   - "parse + ws_mask to a copy": ws_frame_parse, then ws_mask from the
 *     frame into another buffer, a copy as wslay's reader makes;
 *   - "a byte at a time": the plain loop of RFC 6455 §5.3, in place;
 *   - "wslay_frame_recv": the same frame read by wslay (when found at
 *     setup) from memory through its recv callback: it copies through its
 *     4 KiB buffer and unmasks a byte at a time.
 * UTF-8 validation (ws_utf8_feed) of 16 KiB of ASCII, of mostly ASCII text
 * with some Latin, Greek, CJK and emoji, and of text with no ASCII at all.
 *
 * Each line: nanoseconds per payload and GB/s (10^9 bytes per second),
 * the best of 5 runs, because the machines are shared and noise only ever
 * adds time. One thread, no runtime. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef KEEL_HAVE_WSLAY
#include <wslay/wslay.h>
#endif

#include "ws-internal.h"

#define RUNS 5
#define BIG (16 * 1024)

/* Bytes each run goes through; --quick: an eighth. */
static size_t run_bytes = (size_t)512 << 20;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Something the compiler cannot see through, so no work is dropped. */
static volatile unsigned sink;

typedef void (*payload_fn)(size_t len);

static void report(const char *what, size_t len, payload_fn fn) {
  size_t iterations = run_bytes / len;
  int64_t best = INT64_MAX;
  for (int run = 0; run < RUNS; run++) {
    int64_t start = mono_ns();
    for (size_t i = 0; i < iterations; i++)
      fn(len);
    int64_t ns = mono_ns() - start;
    best = ns < best ? ns : best;
  }
  double per_payload = (double)best / (double)iterations;
  printf("  %-30s %6zu B  %9.1f ns  %6.2f GB/s\n", what, len, per_payload,
         (double)len / per_payload);
}

/* ---- Unmasking ------------------------------------------------------------------ */

static const uint8_t mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};
static uint8_t frame[WS_MAX_HEAD + BIG]; /* a masked binary frame */
static size_t frame_len;
static uint8_t copy_buf[BIG];

static void make_frame(size_t len) {
  size_t head = ws_frame_head(frame, true, 0, KEEL_WS_BINARY, len, mask_key);
  for (size_t i = 0; i < len; i++)
    frame[head + i] = (uint8_t)(i * 131 + 7);
  frame_len = head + len;
}

static void mask_in_place(size_t len) {
  uint8_t *payload = frame + frame_len - len;
  sink += ws_mask(payload, payload, len, mask_key, 0) + payload[len - 1];
}

static void parse_and_mask_copy(size_t len) {
  ws_frame_t f;
  int head = ws_frame_parse(frame, frame_len, &f);
  if (head <= 0 || f.len != len)
    abort();
  ws_mask(copy_buf, frame + head, len, f.key, 0);
  sink += copy_buf[len - 1];
}

static void mask_bytewise(size_t len) {
  uint8_t *payload = frame + frame_len - len;
  for (size_t i = 0; i < len; i++)
    payload[i] ^= mask_key[i % 4];
  sink += payload[len - 1];
}

#ifdef KEEL_HAVE_WSLAY
typedef struct mem_reader {
  const uint8_t *p;
  size_t len, pos;
} mem_reader_t;

static mem_reader_t wslay_input;
static wslay_frame_context_ptr wslay_ctx;

static ssize_t mem_recv(uint8_t *buf, size_t len, int flags, void *user_data) {
  (void)flags;
  mem_reader_t *m = user_data;
  size_t n = m->len - m->pos < len ? m->len - m->pos : len;
  memcpy(buf, m->p + m->pos, n);
  m->pos += n;
  return (ssize_t)n;
}

static ssize_t no_send(const uint8_t *data, size_t len, int flags, void *user_data) {
  (void)data, (void)len, (void)flags, (void)user_data;
  return -1;
}

static int no_genmask(uint8_t *buf, size_t len, void *user_data) {
  (void)buf, (void)len, (void)user_data;
  return -1;
}

/* One whole frame through wslay_frame_recv; every piece of its payload
 * is touched once, as a consumer would. */
static void wslay_recv_frame(size_t len) {
  wslay_input = (mem_reader_t){.p = frame, .len = frame_len};
  size_t got = 0;
  while (got < len) {
    struct wslay_frame_iocb io;
    ssize_t n = wslay_frame_recv(wslay_ctx, &io);
    if (n <= 0 && len > 0)
      abort();
    got += (size_t)n;
    sink += io.data[n - 1];
  }
}

static void bench_wslay(size_t len) {
  struct wslay_frame_callbacks cb = {no_send, mem_recv, no_genmask};
  if (wslay_frame_context_init(&wslay_ctx, &cb, &wslay_input) != 0)
    abort();
  report("wslay_frame_recv", len, wslay_recv_frame);
  wslay_frame_context_free(wslay_ctx);
}
#endif

static void bench_unmask(size_t len) {
  make_frame(len);
  report("ws_mask, in place", len, mask_in_place);
  report("parse + ws_mask to a copy", len, parse_and_mask_copy);
  report("a byte at a time", len, mask_bytewise);
#ifdef KEEL_HAVE_WSLAY
  bench_wslay(len);
#else
  printf("  (wslay not found at setup: no comparison)\n");
#endif
}

/* ---- UTF-8 ------------------------------------------------------------------------- */

static uint8_t text[BIG];
static size_t text_len;

/* Repeats sample up to BIG bytes, ending at a character boundary. */
static void make_text(const char *sample) {
  size_t n = strlen(sample);
  text_len = 0;
  while (text_len + n <= BIG) {
    memcpy(text + text_len, sample, n);
    text_len += n;
  }
  for (size_t i = 0; text_len < BIG; i++) /* ASCII to the end */
    text[text_len++] = (uint8_t)('a' + i % 26);
}

static void validate(size_t len) {
  ws_utf8_t u = WS_UTF8_INIT;
  if (!ws_utf8_feed(&u, text, len) || !ws_utf8_complete(&u))
    abort();
  sink += u.state;
}

static void bench_utf8(void) {
  static const struct {
    const char *name, *sample;
  } texts[] = {
      {"ASCII", "{\"type\":\"message\",\"user\":\"alice\",\"text\":\"Hello, world!\",\"n\":42}\n"},
      {"mixed", "{\"user\":\"bob\",\"text\":\"Gr\xc3\xbc\xc3\x9f"
                "e aus K\xc3\xb6ln, "
                "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5, \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa"
                "\x9e \xf0\x9f\x98\x80 and the rest of the message in plain ASCII\"}\n"},
      {"no ASCII", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa"
                   "\x9e\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\xf0\x9f\x98\x80"},
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    make_text(texts[i].sample);
    char what[64];
    snprintf(what, sizeof what, "ws_utf8_feed, %s", texts[i].name);
    report(what, text_len, validate);
  }
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) {
      run_bytes /= 8;
    } else {
      fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  printf("unmasking a frame's payload (best of %d runs)\n", RUNS);
  bench_unmask(128);
  bench_unmask(BIG);
  printf("UTF-8 validation\n");
  bench_utf8();
  return 0;
}
