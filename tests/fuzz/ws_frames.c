/* libFuzzer target: keel's WebSocket frame reader (src/ws/ws.c: headers,
 * masking, fragments, control frames, close codes, UTF-8, limits, and
 * permessage-deflate's inflating), fed as the network would feed it.
 *
 * Each input runs in a lab-mode runtime. The peer writes the input into
 * one end of a lab pipe in pieces and reads everything that comes back;
 * keel's WebSocket over the other end receives messages (whole, or piece
 * by piece) and echoes them, until the close or an error. Then the checks:
 * every whole message keel handed over was within the limit (pieces of
 * an uncompressed one pass it by design), text was valid
 * UTF-8 (checked here by a decoder of the target's own), and what keel
 * sent is a well-formed sequence of frames (unmasked from a server,
 * masked from a client; nothing after a close frame; a close frame's code
 * valid on the wire). A violation aborts. FZ_SHOW=1 prints the run.
 *
 * The input: 4 control bytes, then the bytes the peer sends.
 *   in[0] bit 0     keel is the client (else the server)
 *         bit 1     permessage-deflate was agreed
 *         bit 2     without context takeover (both directions)
 *         bit 3     the pipe moves random parts of each read and write
 *         bit 4     pieces: keel_ws_recv_part with a 7-byte buffer
 *         bits 5-6  max_message: 1 MiB, 64, 1000, 70000
 *   in[1]           size of the pieces the peer writes (0: all at once)
 *   in[2]           window bits of the peer's compressor (8 + in[2] % 8)
 *   in[3]           the lab seed */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "keel/keel.h"
#include "ws-internal.h"

#define FZ_CTRL 4

static bool show;

typedef struct fz {
  const uint8_t *ctrl, *in;
  size_t in_len;
  bool client, pieces;
  size_t max_message;
  keel_ws_deflate_params_t pmd;
  bool deflate;
  keel_stream_t *peer, *mine;
  uint8_t *out; /* what keel sent */
  size_t out_len, out_cap;
  int end; /* how keel's side ended */
} fz_t;

static void fz_fail(const char *what) {
  fprintf(stderr, "ws_frames: %s\n", what);
  abort();
}

/* Valid UTF-8 (RFC 3629), decoded the plain way. */
static bool utf8_ok(const uint8_t *p, size_t n) {
  static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
  for (size_t i = 0; i < n;) {
    uint32_t c = p[i];
    size_t k;
    if (c < 0x80)
      k = 0;
    else if ((c & 0xe0) == 0xc0)
      k = 1, c &= 0x1f;
    else if ((c & 0xf0) == 0xe0)
      k = 2, c &= 0x0f;
    else if ((c & 0xf8) == 0xf0)
      k = 3, c &= 0x07;
    else
      return false;
    if (k > n - i - 1)
      return false;
    for (size_t j = 1; j <= k; j++) {
      if ((p[i + j] & 0xc0) != 0x80)
        return false;
      c = c << 6 | (p[i + j] & 0x3f);
    }
    if (c < min[k] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
      return false;
    i += k + 1;
  }
  return true;
}

static int keel_side(void *arg) {
  fz_t *x = arg;
  keel_ws_opts_t o = {.max_message = x->max_message, .close_timeout_ms = 1000};
  keel_ws_t *ws;
  int rc = keel_ws_open(x->mine, !x->client, &o, x->deflate ? &x->pmd : NULL, &ws);
  if (rc < 0) {
    keel_close(x->mine);
    x->end = rc;
    return 0;
  }
  uint8_t *text = NULL;
  size_t text_len = 0;
  for (;;) {
    if (x->pieces) {
      uint8_t buf[7];
      keel_ws_part_t part;
      ssize_t n = keel_ws_recv_part(ws, buf, sizeof buf, &part);
      if (n < 0 || n == KEEL_WS_CLOSED) {
        rc = n == KEEL_WS_CLOSED ? 0 : (int)n;
        break;
      }
      if (part.first)
        text_len = 0;
      if (part.opcode == KEEL_WS_TEXT) {
        text = realloc(text, text_len + (size_t)n + 1);
        memcpy(text + text_len, buf, (size_t)n);
        text_len += (size_t)n;
        if (part.last && !utf8_ok(text, text_len))
          fz_fail("a text message of invalid UTF-8 was handed over");
      }
      /* Pieces of an uncompressed message pass max_message by design. */
      continue;
    }
    const void *d;
    size_t n;
    rc = keel_ws_recv(ws, &d, &n);
    if (rc <= 0)
      break;
    if (n > x->max_message)
      fz_fail("a message over max_message was handed over");
    if (rc == KEEL_WS_TEXT && !utf8_ok(d, n))
      fz_fail("a text message of invalid UTF-8 was handed over");
    if (rc != KEEL_WS_TEXT && rc != KEEL_WS_BINARY)
      fz_fail("keel_ws_recv returned an opcode that is not data");
    if (keel_ws_send(ws, rc, d, n) < 0)
      break;
  }
  free(text);
  x->end = rc;
  keel_ws_close(ws, 0, NULL);
  return 0;
}

static int peer_writer(void *arg) {
  fz_t *x = arg;
  size_t piece = x->ctrl[1] ? x->ctrl[1] : x->in_len;
  for (size_t off = 0; off < x->in_len;) {
    size_t n = x->in_len - off < piece ? x->in_len - off : piece;
    if (keel_write_all(x->peer, x->in + off, n, NULL) < 0)
      return 0;
    off += n;
    keel_sleep_ms(1);
  }
  keel_stream_shutdown(x->peer, SHUT_WR);
  return 0;
}

static int fz_main(void *arg) {
  fz_t *x = arg;
  keel_lab_faults_t f = {.short_permille = x->ctrl[0] & 8 ? 300 : 0};
  if (keel_lab_pipe(&f, &x->peer, &x->mine) < 0)
    return -ENOMEM;
  keel_scope_opts_t so = {.deadline_ns = keel_now_ns() + 3600 * KEEL_NS_PER_SEC};
  keel_scope_t *s;
  if (keel_scope_open(&so, &s) < 0)
    return -ENOMEM;
  keel_spawn(s, keel_side, x, NULL);
  keel_spawn(s, peer_writer, x, NULL);
  /* Read what keel sends, to the end. */
  for (;;) {
    if (x->out_cap - x->out_len < 4096) {
      x->out_cap = x->out_cap * 2 + 8192;
      x->out = realloc(x->out, x->out_cap);
    }
    ssize_t n = keel_read(x->peer, x->out + x->out_len, x->out_cap - x->out_len);
    if (n <= 0)
      break;
    x->out_len += (size_t)n;
  }
  keel_scope_join(s);
  keel_scope_close(s);
  keel_close(x->peer);
  return 0;
}

/* What keel sent: frames, masked as its role says, none after a close. */
static void check_output(const fz_t *x) {
  size_t off = 0;
  bool closed = false;
  while (off < x->out_len) {
    ws_frame_t f;
    int hl = ws_frame_parse(x->out + off, x->out_len - off, &f);
    if (hl <= 0)
      fz_fail("keel sent bytes that are not a frame");
    if (closed)
      fz_fail("keel sent a frame after its close");
    if (f.masked != x->client)
      fz_fail("keel's frames are masked wrongly for its role");
    if (x->out_len - off - (size_t)hl < f.len)
      fz_fail("keel's last frame is cut short");
    if (f.opcode == KEEL_WS_CLOSE) {
      closed = true;
      uint8_t body[125];
      if (f.len == 1 || f.len > 125)
        fz_fail("keel sent a close of 1 byte or over 125");
      if (f.masked)
        ws_mask(body, x->out + off + hl, f.len, f.key, 0);
      else
        memcpy(body, x->out + off + hl, f.len);
      if (f.len >= 2 && !ws_close_code_valid((unsigned)(body[0] << 8 | body[1])))
        fz_fail("keel sent a close code not valid on the wire");
    }
    off += (size_t)hl + f.len;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < FZ_CTRL)
    return 0;
  static const size_t maxes[4] = {1024 * 1024, 64, 1000, 70000};
  show = getenv("FZ_SHOW") != NULL;
  fz_t x = {
      .ctrl = data,
      .in = data + FZ_CTRL,
      .in_len = size - FZ_CTRL,
      .client = data[0] & 1,
      .deflate = data[0] & 2,
      .pieces = data[0] & 16,
      .max_message = maxes[(data[0] >> 5) & 3],
  };
  int bits = 8 + data[2] % 8;
  x.pmd = (keel_ws_deflate_params_t){
      .server_no_context_takeover = data[0] & 4,
      .client_no_context_takeover = data[0] & 4,
      .server_max_window_bits = bits,
      .client_max_window_bits = bits,
  };
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  cfg.workers = 1;
  cfg.lab_seed = (uint64_t)data[3] + 1;
  cfg.no_stack_guard_handler = true;
  int rc = keel_run(&cfg, fz_main, &x);
  if (rc != 0)
    fz_fail("keel_run failed");
  if (show)
    fprintf(stderr, "in %zu bytes, out %zu bytes, end %d (%s)\n", x.in_len, x.out_len, x.end,
            keel_strerror(x.end));
  check_output(&x);
  free(x.out);
  return 0;
}
