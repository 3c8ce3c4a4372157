/* keel-load's ws mode: WebSocket echo (RFC 6455) with every echo checked.
 *
 * Each connection first upgrades (GET --path with a random
 * Sec-WebSocket-Key; the response must be HTTP/1.1 101 with Upgrade,
 * Connection and the Sec-WebSocket-Accept the key calls for, and no
 * extension or subprotocol), then keeps `pipeline` binary messages
 * outstanding (with --conn-rate, sends one at a time when each is due),
 * each sent as one frame masked with a fresh key, and reads
 * every echo back. An echo must come unmasked, without reserved bits, as
 * a binary frame (continuation frames allowed), with the length and the
 * bytes sent; anything else, a close from the server or a failed
 * handshake counts as a mismatch and ends the connection. Pings are
 * answered, pongs ignored.
 *
 * Message contents are windows into one random pattern, as in echo mode
 * (echo.c): message seq of connection id starts at offset (mix(id) + seq *
 * WS_STRIDE) mod WS_OFFSETS, so a misordered, duplicated or crossed-over
 * echo mismatches. The keys and masks come from a per-connection
 * splitmix64 stream seeded from getrandom, so they differ run to run. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "load.h"
#include "wsframe.h"

#define WS_MAX_SIZE (16L * 1024 * 1024)
#define WS_MAX_PIPELINE 4096
#define WS_OFFSETS 65536u /* a power of two, > WS_MAX_PIPELINE */
#define WS_STRIDE 40503u  /* odd: WS_OFFSETS consecutive seqs, distinct offsets */
#define WS_MAX_HEAD 4096  /* the server's 101 response head, at most */
#define WS_HANDSHAKE_TIMEOUT_NS (10 * KEEL_NS_PER_SEC)
#define WS_MIN_RX 256 /* room for a whole control frame */
/* Payload bytes sent and not yet echoed are kept under this bound, for the
 * reason echo.c gives (one task writes and reads: the socket buffers must
 * hold everything outstanding). A message larger than it goes alone, in
 * pieces of this size; a server that echoes only whole messages, as every
 * server compared does, reads it all before it writes. */
#define WS_INFLIGHT_MAX (64 * 1024)

typedef struct ws_cfg {
  long size;
  long pipeline;
  char path[256];
  char host_port[300]; /* the Host field */
  uint64_t seed;
  uint8_t *pattern; /* size + WS_OFFSETS random bytes, read-only while running */
} ws_cfg_t;

/* One connection's state, on its task's stack; sent_ns, tx and rx are one
 * allocation. The frame being read is `frame`, frame_off bytes of its
 * payload in; msg_off bytes of echo rd_seq are checked so far. */
typedef struct ws_conn {
  load_conn_t *lc;
  keel_stream_t *stream;
  const ws_cfg_t *cfg;
  load_pace_t pace;
  uint64_t rng;
  uint32_t first_offset;
  uint64_t wr_seq, rd_seq;
  size_t inflight;  /* payload bytes sent and not yet echoed */
  int64_t *sent_ns; /* [seq % pipeline]: when the message's frame was written */
  uint8_t *tx, *rx;
  size_t tx_cap, rx_cap, rx_len;
  wsf_header_t frame;
  bool in_frame;
  bool in_message; /* an echo's first frame came without FIN: continuations follow */
  uint64_t frame_off, msg_off;
  uint8_t control[WSF_MAX_CONTROL];
} ws_conn_t;

enum { OPT_SIZE = LOAD_MODE_OPT_BASE, OPT_PIPELINE, OPT_PATH, OPT_DEFLATE };

static const struct option ws_options[] = {
    {"size", required_argument, NULL, OPT_SIZE},
    {"pipeline", required_argument, NULL, OPT_PIPELINE},
    {"path", required_argument, NULL, OPT_PATH},
    {"deflate", required_argument, NULL, OPT_DEFLATE},
    {NULL, 0, NULL, 0},
};

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

static uint64_t ws_random(ws_conn_t *w) { return load_mix64(w->rng++); }

static void ws_new_mask(ws_conn_t *w, uint8_t mask[4]) {
  uint32_t bits = (uint32_t)ws_random(w);
  memcpy(mask, &bits, 4);
}

static const uint8_t *message(const ws_conn_t *w, uint64_t seq) {
  uint32_t off = (w->first_offset + (uint32_t)seq * WS_STRIDE) & (WS_OFFSETS - 1);
  return w->cfg->pattern + off;
}

/* Counts a verification failure and says what it was. Returns 1: the
 * connection is out of step and ends. */
__attribute__((format(printf, 2, 3))) static int failed(ws_conn_t *w, const char *fmt, ...) {
  char why[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  w->lc->worker->mismatches++;
  load_complain(w->lc->worker->load, w->lc->id, "message %llu: %s", (unsigned long long)w->rd_seq,
                why);
  return 1;
}

/* ---- The opening handshake ------------------------------------------------------ */

/* Reads the response head into head (cap bytes): its length, with *got the
 * bytes read in all; or a negative errno. */
static ssize_t read_head(ws_conn_t *w, char *head, size_t cap, size_t *got) {
  size_t len = 0, head_len;
  while ((head_len = wsf_head_len(head, len)) == 0) {
    if (len == cap)
      return -EMSGSIZE;
    ssize_t n = keel_read(w->stream, head + len, cap - len);
    if (n <= 0)
      return n == 0 ? -EPIPE : n;
    len += (size_t)n;
  }
  *got = len;
  return (ssize_t)head_len;
}

/* 0, 1 after a failed check, or a negative errno. */
static int handshake(ws_conn_t *w) {
  uint8_t nonce[WSF_NONCE_LEN];
  for (size_t i = 0; i < sizeof nonce; i += 8) {
    uint64_t r = ws_random(w);
    memcpy(nonce + i, &r, 8);
  }
  char key[WSF_KEY_LEN + 1], accept[WSF_ACCEPT_LEN + 1], req[768], head[WS_MAX_HEAD];
  wsf_make_key(nonce, key);
  int len = wsf_request(req, sizeof req, w->cfg->host_port, w->cfg->path, key);
  if (len < 0 || wsf_accept_for(key, accept) < 0)
    return -EIO;
  int rc = keel_write_all(w->stream, req, (size_t)len, NULL);
  if (rc < 0)
    return rc;
  size_t got = 0;
  ssize_t head_len = read_head(w, head, sizeof head, &got);
  if (head_len == -EMSGSIZE)
    return failed(w, "handshake: no end of the response head in %d bytes", WS_MAX_HEAD);
  if (head_len < 0)
    return (int)head_len;
  const char *why = wsf_check_response(head, (size_t)head_len, accept);
  if (why != NULL)
    return failed(w, "handshake: %s", why);
  /* Bytes after the head: frames the server sent unasked, judged as such. */
  size_t extra = got - (size_t)head_len;
  if (extra > w->rx_cap)
    return failed(w, "handshake: %zu bytes sent after the 101 unasked", extra);
  memcpy(w->rx, head + head_len, extra);
  w->rx_len = extra;
  return 0;
}

/* The handshake under its own deadline: a server that never answers is an
 * error, not a connection silently missing from the figures. */
static int upgrade(ws_conn_t *w) {
  int64_t prev = keel_task_set_deadline(keel_now_ns() + WS_HANDSHAKE_TIMEOUT_NS);
  int rc = handshake(w);
  keel_task_set_deadline(prev);
  return rc;
}

/* ---- Sending -------------------------------------------------------------------- */

static bool can_write(const ws_conn_t *w) {
  uint64_t outstanding = w->wr_seq - w->rd_seq;
  if (outstanding >= (uint64_t)w->cfg->pipeline)
    return false;
  return outstanding == 0 || w->inflight + (size_t)w->cfg->size <= WS_INFLIGHT_MAX;
}

/* Frames message wr_seq at out (header, then the payload masked with a
 * fresh key) and counts it sent. Returns the frame's length. */
static size_t put_frame(ws_conn_t *w, uint8_t *out, int64_t now) {
  size_t size = (size_t)w->cfg->size;
  uint8_t mask[4];
  ws_new_mask(w, mask);
  size_t hlen = wsf_put_header(out, true, WSF_BINARY, size, mask);
  wsf_mask(out + hlen, message(w, w->wr_seq), size, mask, 0);
  w->sent_ns[w->wr_seq % (uint64_t)w->cfg->pipeline] = now;
  w->wr_seq++;
  w->inflight += size;
  return hlen + size;
}

/* A message larger than tx: its header and its payload masked piece by
 * piece into tx, each piece written before the next is masked. */
static int write_large(ws_conn_t *w, int64_t now) {
  size_t size = (size_t)w->cfg->size;
  const uint8_t *payload = message(w, w->wr_seq);
  uint8_t mask[4];
  ws_new_mask(w, mask);
  size_t used = wsf_put_header(w->tx, true, WSF_BINARY, size, mask);
  w->sent_ns[w->wr_seq % (uint64_t)w->cfg->pipeline] = now;
  w->wr_seq++;
  w->inflight += size;
  for (size_t off = 0; off < size;) {
    size_t take = min_size(size - off, w->tx_cap - used);
    wsf_mask(w->tx + used, payload + off, take, mask, off);
    int rc = keel_write_all(w->stream, w->tx, used + take, NULL);
    if (rc < 0)
      return rc;
    off += take;
    used = 0;
  }
  return 0;
}

/* Frames as many messages as the window allows and tx holds (paced: the
 * one due, when it is due), and writes them in one go. A message's send
 * time is stamped before that write (paced: when it was due). */
static int ws_write(ws_conn_t *w) {
  size_t frame_max = (size_t)w->cfg->size + WSF_MAX_HEADER;
  int64_t now;
  int rc = load_pace_wait(&w->pace, &now);
  if (rc < 0)
    return rc;
  if (frame_max > w->tx_cap)
    return write_large(w, now);
  size_t used = 0;
  do
    used += put_frame(w, w->tx + used, now);
  while (w->pace.interval_ns == 0 && can_write(w) && used + frame_max <= w->tx_cap);
  return keel_write_all(w->stream, w->tx, used, NULL);
}

/* The payload of the ping just read, back in a pong (masked: we are the
 * client). */
static int send_pong(ws_conn_t *w) {
  uint8_t frame[WSF_MAX_HEADER + WSF_MAX_CONTROL], mask[4];
  size_t len = (size_t)w->frame.payload_len;
  ws_new_mask(w, mask);
  size_t hlen = wsf_put_header(frame, true, WSF_PONG, len, mask);
  wsf_mask(frame + hlen, w->control, len, mask, 0);
  return keel_write_all(w->stream, frame, hlen + len, NULL);
}

/* ---- Receiving ------------------------------------------------------------------ */

static int mismatch(ws_conn_t *w, const uint8_t *got, const uint8_t *want, size_t len) {
  size_t i = 0;
  while (i + 1 < len && got[i] == want[i])
    i++;
  return failed(w, "differs at byte %llu: got 0x%02x, sent 0x%02x",
                (unsigned long long)(w->msg_off + i), got[i], want[i]);
}

/* A frame is read whole: acts on a control frame, or completes an echo. */
static int frame_end(ws_conn_t *w, int64_t now) {
  const wsf_header_t *f = &w->frame;
  size_t size = (size_t)w->cfg->size;
  w->in_frame = false;
  if (f->opcode == WSF_PING)
    return send_pong(w);
  if (f->opcode == WSF_PONG)
    return 0;
  if (f->opcode == WSF_CLOSE)
    return failed(w, "the server sent close (code %d)",
                  f->payload_len >= 2 ? w->control[0] << 8 | w->control[1] : 1005);
  if (!f->fin) {
    w->in_message = true;
    return 0;
  }
  w->in_message = false;
  if (w->msg_off != size)
    return failed(w, "an echo of %llu bytes for a message of %zu", (unsigned long long)w->msg_off,
                  size);
  load_record(w->lc, w->sent_ns[w->rd_seq % (uint64_t)w->cfg->pipeline], now, size);
  w->rd_seq++;
  w->msg_off = 0;
  return 0;
}

/* Judges the header just parsed: what a server may send here. */
static int frame_begin(ws_conn_t *w, int64_t now) {
  const wsf_header_t *f = &w->frame;
  if (f->masked)
    return failed(w, "a masked frame from the server");
  if (f->rsv != 0)
    return failed(w, "reserved bits 0x%x set (no extension was agreed)", f->rsv);
  if (f->opcode >= 0x8) {
    if (f->opcode > WSF_PONG)
      return failed(w, "reserved opcode 0x%x", f->opcode);
    if (!f->fin || f->payload_len > WSF_MAX_CONTROL)
      return failed(w, "a fragmented or oversized control frame");
  } else if (f->opcode == WSF_CONTINUATION && !w->in_message) {
    return failed(w, "a continuation frame with no message begun");
  } else if (f->opcode != WSF_CONTINUATION && w->in_message) {
    return failed(w, "a new message inside a fragmented one");
  } else if (f->opcode != WSF_CONTINUATION && f->opcode != WSF_BINARY) {
    return failed(w, "opcode 0x%x where binary was sent", f->opcode);
  } else if (w->rd_seq == w->wr_seq) {
    return failed(w, "a message nobody sent");
  } else if (w->msg_off + f->payload_len > (uint64_t)w->cfg->size) {
    return failed(w, "an echo longer than the %ld bytes sent", w->cfg->size);
  }
  w->in_frame = true;
  w->frame_off = 0;
  return f->payload_len == 0 ? frame_end(w, now) : 0;
}

/* n payload bytes of the current frame. */
static int frame_data(ws_conn_t *w, const uint8_t *p, size_t n, int64_t now) {
  if (w->frame.opcode >= 0x8) {
    memcpy(w->control + w->frame_off, p, n);
  } else {
    const uint8_t *want = message(w, w->rd_seq) + w->msg_off;
    if (memcmp(p, want, n) != 0)
      return mismatch(w, p, want, n);
    w->msg_off += n;
    w->inflight -= n;
  }
  w->frame_off += n;
  return w->frame_off == w->frame.payload_len ? frame_end(w, now) : 0;
}

/* Goes through the bytes in rx; a header cut short stays for the next
 * read. 0, 1 after a failed check, or a negative errno (a pong's write). */
static int parse(ws_conn_t *w, int64_t now) {
  size_t pos = 0;
  int rc = 0;
  while (rc == 0 && pos < w->rx_len) {
    if (w->in_frame) {
      size_t take = min_size((size_t)(w->frame.payload_len - w->frame_off), w->rx_len - pos);
      rc = frame_data(w, w->rx + pos, take, now);
      pos += take;
      continue;
    }
    int hlen = wsf_parse_header(w->rx + pos, w->rx_len - pos, &w->frame);
    if (hlen == 0)
      break;
    if (hlen < 0)
      return failed(w, "a frame length not in its shortest form");
    pos += (size_t)hlen;
    rc = frame_begin(w, now);
  }
  memmove(w->rx, w->rx + pos, w->rx_len - pos);
  w->rx_len -= pos;
  return rc;
}

/* Reads what has arrived. 0, 1 after a failed check, or a negative errno
 * (-EPIPE: the server closed the connection). */
static int ws_read(ws_conn_t *w) {
  ssize_t n = keel_read(w->stream, w->rx + w->rx_len, w->rx_cap - w->rx_len);
  if (n <= 0)
    return n == 0 ? -EPIPE : (int)n;
  w->rx_len += (size_t)n;
  return parse(w, keel_now_ns());
}

/* ---- The mode -------------------------------------------------------------------- */

static int ws_run(load_conn_t *c) {
  const ws_cfg_t *cfg = c->worker->load->mode_cfg;
  ws_conn_t w = {.lc = c, .stream = keel_tcp_stream(c->tcp), .cfg = cfg};
  w.first_offset = (uint32_t)load_mix64(c->id) & (WS_OFFSETS - 1);
  w.rng = cfg->seed ^ (uint64_t)c->id << 32;
  size_t window = (size_t)cfg->pipeline * ((size_t)cfg->size + WSF_MAX_HEADER);
  w.tx_cap = min_size(window, WS_INFLIGHT_MAX + WSF_MAX_HEADER);
  w.rx_cap = min_size(window, WS_INFLIGHT_MAX);
  w.rx_cap = w.rx_cap < WS_MIN_RX ? WS_MIN_RX : w.rx_cap;
  w.sent_ns = malloc((size_t)cfg->pipeline * sizeof *w.sent_ns + w.tx_cap + w.rx_cap);
  if (w.sent_ns == NULL)
    return -ENOMEM;
  w.tx = (uint8_t *)(w.sent_ns + cfg->pipeline);
  w.rx = w.tx + w.tx_cap;
  int rc = upgrade(&w);
  load_pace_start(&w.pace, c);
  while (rc == 0) /* ends by cancellation (the run is over), an error or a failed check */
    rc = can_write(&w) ? ws_write(&w) : ws_read(&w);
  c->worker->unanswered += w.wr_seq - w.rd_seq;
  free(w.sent_ns);
  return rc > 0 ? 0 : rc;
}

static int ws_init(load_t *l) {
  ws_cfg_t *cfg = calloc(1, sizeof *cfg);
  if (cfg == NULL)
    return -ENOMEM;
  cfg->size = 128;
  cfg->pipeline = 1;
  strcpy(cfg->path, "/");
  l->mode_cfg = cfg;
  return 0;
}

/* A request target of visible ASCII, starting with '/', without the two
 * characters a JSON string would need escaped (and a path never has). */
static int parse_path(const char *value, char *out, size_t cap) {
  size_t len = strlen(value);
  if (len == 0 || len >= cap || value[0] != '/')
    return -EINVAL;
  for (size_t i = 0; i < len; i++)
    if (value[i] <= ' ' || value[i] > '~' || value[i] == '"' || value[i] == '\\')
      return -EINVAL;
  memcpy(out, value, len + 1);
  return 0;
}

static int ws_parse_option(load_t *l, int id, const char *value) {
  ws_cfg_t *cfg = l->mode_cfg;
  if (id == OPT_SIZE)
    return load_parse_long(value, 1, WS_MAX_SIZE, &cfg->size);
  if (id == OPT_PIPELINE)
    return load_parse_long(value, 1, WS_MAX_PIPELINE, &cfg->pipeline);
  if (id == OPT_PATH)
    return parse_path(value, cfg->path, sizeof cfg->path);
  if (id == OPT_DEFLATE) /* permessage-deflate is never offered: "off" says so */
    return strcmp(value, "off") == 0 ? 0 : -EINVAL;
  return -EINVAL;
}

/* The pattern (a fixed seed, as in echo mode), the Host field, and the
 * seed of the keys and masks (fresh each run). */
static int ws_prepare(load_t *l) {
  ws_cfg_t *cfg = l->mode_cfg;
  if (l->opts.interval_ns > 0 && cfg->pipeline != 1) {
    fprintf(stderr, "keel-load: --conn-rate sends one message at a time: --pipeline 1\n");
    return -EINVAL;
  }
  size_t len = (size_t)cfg->size + WS_OFFSETS;
  cfg->pattern = malloc(len);
  if (cfg->pattern == NULL) {
    fprintf(stderr, "keel-load: out of memory for %zu bytes of message pattern\n", len);
    return -ENOMEM;
  }
  for (size_t i = 0; i < len; i += 8) {
    uint64_t word = load_mix64(i);
    memcpy(cfg->pattern + i, &word, min_size(8, len - i));
  }
  const char *host = l->opts.host;
  bool v6 = strchr(host, ':') != NULL;
  snprintf(cfg->host_port, sizeof cfg->host_port, v6 ? "[%s]:%ld" : "%s:%ld", host, l->opts.port);
  if (getrandom(&cfg->seed, sizeof cfg->seed, 0) != (ssize_t)sizeof cfg->seed)
    cfg->seed = load_mix64((uint64_t)keel_now_ns());
  return 0;
}

static void ws_describe(const load_t *l, FILE *out, bool json) {
  const ws_cfg_t *cfg = l->mode_cfg;
  if (json)
    fprintf(out, "\"size\":%ld,\"pipeline\":%ld,\"path\":\"%s\",\"deflate\":false,", cfg->size,
            cfg->pipeline, cfg->path); /* parse_path let no '"' or '\\' in */
  else
    fprintf(out, " size %ld pipeline %ld path %s deflate off", cfg->size, cfg->pipeline, cfg->path);
}

static void ws_destroy(load_t *l) {
  ws_cfg_t *cfg = l->mode_cfg;
  if (cfg != NULL)
    free(cfg->pattern);
  free(cfg);
  l->mode_cfg = NULL;
}

const load_mode_t load_ws_mode = {
    .name = "ws",
    .summary = "WebSocket: upgrade, send masked binary messages, check every echo",
    .usage = "  --size B                  message size in bytes, up to 16 MiB (default 128)\n"
             "  --pipeline K              messages outstanding per connection (default 1)\n"
             "  --path P                  request target of the upgrade (default /)\n"
             "  --deflate off             permessage-deflate is never offered (the only value)\n",
    .paced = true,
    .options = ws_options,
    .init = ws_init,
    .parse_option = ws_parse_option,
    .prepare = ws_prepare,
    .run_conn = ws_run,
    .describe = ws_describe,
    .destroy = ws_destroy,
};
