/* libFuzzer targets ws_frames and ws_frames_deflate: keel's WebSocket
 * frame reader (src/ws/ws.c: headers, masking, fragments, control frames,
 * close codes, UTF-8, limits), fed as the network would feed it; in
 * ws_frames_deflate (built with FZ_DEFLATE=1) with permessage-deflate
 * agreed, so that the messages are inflated (src/ws/deflate.c) and what
 * keel echoes is deflated.
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
 * valid on the wire). The messages keel handed over are the ones a plain
 * reading of the peer's frames gives, in order (unmasked, fragments joined,
 * compressed ones inflated by zlib itself, window and context takeover as
 * agreed); the messages keel echoed are those it handed over (inflated by
 * zlib when keel compressed them). A violation aborts. FZ_SHOW=1 prints
 * the run.
 *
 * The input: 4 control bytes, then the bytes the peer sends.
 *   in[0] bit 0     keel is the client (else the server)
 *         bit 1     unused (permessage-deflate is the target's: FZ_DEFLATE)
 *         bit 2     without context takeover (both directions; deflate)
 *         bit 3     the pipe moves random parts of each read and write
 *         bit 4     pieces: keel_ws_recv_part with a 7-byte buffer
 *         bits 5-6  max_message: 1 MiB, 64, 1000, 70000
 *   in[1]           size of the pieces the peer writes (0: all at once)
 *   in[2]           window bits of the peer's compressor (8 + in[2] % 8;
 *                   deflate)
 *   in[3]           the lab seed */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#define ZLIB_CONST
#include <zlib.h>

#include "keel/keel.h"
#include "ws-internal.h"

#define FZ_CTRL 4

#ifndef FZ_DEFLATE
#error "FZ_DEFLATE: 1 for ws_frames_deflate, 0 for ws_frames (tests/fuzz/meson.build)"
#endif

static bool show;

/* Messages in order: their bytes in one buffer, and where each ends. */
typedef struct fz_msg {
  size_t end;
  int opcode;
} fz_msg_t;

typedef struct fz_msgs {
  uint8_t *bytes;
  size_t len, cap;
  fz_msg_t *at;
  size_t n, n_cap;
} fz_msgs_t;

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
  int end;       /* how keel's side ended */
  fz_msgs_t got; /* what keel handed over */
} fz_t;

static void fz_fail(const char *what) {
  fprintf(stderr, "ws_frames: %s\n", what);
  abort();
}

static void *grow(void *p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap)
    return p;
  size_t ncap = *cap ? *cap : 16;
  while (ncap < need)
    ncap *= 2;
  p = realloc(p, ncap * size);
  if (!p)
    abort();
  *cap = ncap;
  return p;
}

/* Appends bytes to the message being put together (not one of m's yet). */
static void msgs_add(fz_msgs_t *m, const uint8_t *p, size_t n) {
  m->bytes = grow(m->bytes, &m->cap, m->len + n, 1);
  if (n)
    memcpy(m->bytes + m->len, p, n);
  m->len += n;
}

/* The bytes added since the last message are the next message. */
static void msgs_end(fz_msgs_t *m, int opcode) {
  m->at = grow(m->at, &m->n_cap, m->n + 1, sizeof *m->at);
  m->at[m->n++] = (fz_msg_t){.end = m->len, .opcode = opcode};
}

/* Where the message under way starts. */
static size_t msgs_start(const fz_msgs_t *m) { return m->n ? m->at[m->n - 1].end : 0; }

/* Drops the bytes added since the last message. */
static void msgs_drop(fz_msgs_t *m) { m->len = msgs_start(m); }

static const uint8_t *msgs_get(const fz_msgs_t *m, size_t i, size_t *len) {
  size_t start = i ? m->at[i - 1].end : 0;
  *len = m->at[i].end - start;
  return *len ? m->bytes + start : NULL;
}

static void msgs_free(fz_msgs_t *m) {
  free(m->bytes);
  free(m->at);
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
      msgs_add(&x->got, buf, (size_t)n);
      if (part.last)
        msgs_end(&x->got, part.opcode);
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
    msgs_add(&x->got, d, n);
    msgs_end(&x->got, rc);
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
  /* 16 KiB a direction: the pipe's buffers then come from ASan's size
   * classes, not a mapping of their own made and unmade per input. */
  keel_lab_faults_t f = {.capacity = 16 * 1024, .short_permille = x->ctrl[0] & 8 ? 300 : 0};
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

/* ---- A plain reading of frames ------------------------------------------------ */

/* zlib's inflating of one direction's compressed messages (RFC 7692). */
typedef struct fz_inflater {
  z_stream z;
  bool open, takeover, ended;
  int bits;
} fz_inflater_t;

/* Feeds n bytes at p to inflate, the output added to m, up to max bytes
 * in all: false on an error or past max. */
static bool inflate_some(fz_inflater_t *inf, const uint8_t *p, size_t n, fz_msgs_t *m, size_t start,
                         size_t max) {
  inf->z.next_in = p;
  inf->z.avail_in = (uInt)n;
  while (!inf->ended) {
    uint8_t out[4096];
    inf->z.next_out = out;
    inf->z.avail_out = sizeof out;
    int zrc = inflate(&inf->z, Z_SYNC_FLUSH);
    msgs_add(m, out, sizeof out - inf->z.avail_out);
    if (m->len - start > max)
      return false;
    if (zrc == Z_STREAM_END)
      inf->ended = true;
    else if (zrc != Z_OK && zrc != Z_BUF_ERROR)
      return false;
    else if (inf->z.avail_in == 0 && inf->z.avail_out > 0)
      break;
  }
  return true;
}

/* Inflates one message's payload (n bytes at p, with the 00 00 ff ff the
 * sender took off) onto m: false when zlib cannot, or past max bytes. */
static bool inflate_message(fz_inflater_t *inf, const uint8_t *p, size_t n, fz_msgs_t *m,
                            size_t max) {
  static const uint8_t tail[4] = {0x00, 0x00, 0xff, 0xff};
  if (n == 0)
    return true; /* an empty payload: an empty message */
  if (!inf->open) {
    memset(&inf->z, 0, sizeof inf->z);
    if (inflateInit2(&inf->z, -inf->bits) != Z_OK)
      abort();
    inf->open = true;
  }
  size_t start = m->len;
  bool ok = inflate_some(inf, p, n, m, start, max) && inflate_some(inf, tail, 4, m, start, max);
  /* The next message: a fresh window, or this one's (as keel keeps it
   * after a final block). */
  uint8_t window[32768];
  uInt wl = 0;
  if (!inf->takeover)
    ok = ok && inflateReset(&inf->z) == Z_OK;
  else if (inf->ended)
    ok = ok && inflateGetDictionary(&inf->z, window, &wl) == Z_OK &&
         inflateReset(&inf->z) == Z_OK && inflateSetDictionary(&inf->z, window, wl) == Z_OK;
  inf->ended = false;
  return ok;
}

static void inflater_end(fz_inflater_t *inf) {
  if (inf->open)
    inflateEnd(&inf->z);
}

/* The frames at p (n bytes) from a sender that masks (or not), read the
 * plain way into the messages they hold, up to the first frame that is
 * not whole or breaks the rules; compressed ones (RSV1 on the first frame,
 * deflate agreed) inflated by inf. max: past it a message ends the
 * reading (not one left uncompressed when read in pieces: keel passes
 * those on). */
static void read_frames(const fz_t *x, const uint8_t *p, size_t n, bool masked, fz_inflater_t *inf,
                        size_t max, fz_msgs_t *msgs) {
  fz_msgs_t raw = {0}; /* the payload of the message under way */
  int opcode = 0;
  bool compressed = false;
  for (size_t off = 0; off < n;) {
    ws_frame_t f;
    int hl = ws_frame_parse(p + off, n - off, &f);
    if (hl <= 0 || f.masked != masked || n - off - (size_t)hl < f.len)
      break;
    const uint8_t *payload = p + off + hl;
    off += (size_t)hl + f.len;
    if (f.opcode >= 8) {
      if (f.opcode == KEEL_WS_CLOSE || f.rsv || (f.opcode != 9 && f.opcode != 10))
        break;
      continue; /* ping, pong */
    }
    bool first = f.opcode == KEEL_WS_TEXT || f.opcode == KEEL_WS_BINARY;
    if ((first == (opcode != 0)) || (!first && f.opcode != 0) ||
        (f.rsv & ~(first && inf ? 4 : 0)) != 0)
      break;
    if (first) {
      opcode = f.opcode;
      compressed = f.rsv & 4;
    }
    size_t at = raw.len;
    msgs_add(&raw, payload, (size_t)f.len);
    if (masked && f.len)
      ws_mask(raw.bytes + at, raw.bytes + at, (size_t)f.len, f.key, 0);
    if (!f.fin)
      continue;
    bool ok = true;
    if (compressed)
      ok = inflate_message(inf, raw.bytes, raw.len, msgs, max);
    else
      msgs_add(msgs, raw.bytes, raw.len);
    size_t len = msgs->len - msgs_start(msgs);
    if (!ok || (len > max && (compressed || !x->pieces))) {
      msgs_drop(msgs);
      break;
    }
    msgs_end(msgs, opcode);
    raw.len = 0;
    opcode = 0;
  }
  msgs_free(&raw);
}

/* Message i of a against message i of b, for every i of a: b has them. */
static void same_messages(const fz_msgs_t *a, const fz_msgs_t *b, const char *what) {
  for (size_t i = 0; i < a->n; i++) {
    size_t al, bl = 0;
    const uint8_t *ap = msgs_get(a, i, &al), *bp = i < b->n ? msgs_get(b, i, &bl) : NULL;
    if (i >= b->n || al != bl || a->at[i].opcode != b->at[i].opcode || (al && memcmp(ap, bp, al))) {
      if (show)
        fprintf(stderr, "message %zu of %zu: %zu bytes, opcode %d; %zu messages to compare\n", i,
                a->n, al, a->at[i].opcode, b->n);
      fz_fail(what);
    }
  }
}

/* What keel handed over is what the peer's frames hold; what keel echoed
 * is what it handed over. */
static void check_messages(const fz_t *x) {
  fz_inflater_t rx = {.takeover = !(x->ctrl[0] & 4), .bits = x->pmd.client_max_window_bits};
  fz_msgs_t sent = {0};
  read_frames(x, x->in, x->in_len, !x->client, x->deflate ? &rx : NULL, x->max_message, &sent);
  same_messages(&x->got, &sent, "keel handed over a message the peer's frames do not hold");
  inflater_end(&rx);
  msgs_free(&sent);
  if (x->pieces)
    return; /* nothing echoed */
  fz_inflater_t tx = {.takeover = true, .bits = 15};
  fz_msgs_t echoed = {0};
  read_frames(x, x->out, x->out_len, x->client, x->deflate ? &tx : NULL, SIZE_MAX, &echoed);
  same_messages(&echoed, &x->got, "keel echoed a message other than the one it handed over");
  inflater_end(&tx);
  msgs_free(&echoed);
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
      .deflate = FZ_DEFLATE,
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
    fprintf(stderr, "in %zu bytes, out %zu bytes, %zu messages handed over, end %d (%s)\n",
            x.in_len, x.out_len, x.got.n, x.end, keel_strerror(x.end));
  check_output(&x);
  check_messages(&x);
  msgs_free(&x.got);
  free(x.out);
  return 0;
}
