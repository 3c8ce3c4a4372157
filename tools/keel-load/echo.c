/* keel-load's echo mode: keep `pipeline` messages outstanding per
 * connection, read every echo back and compare each byte with what was sent.
 *
 * Message contents are windows into one random pattern: message seq of
 * connection id starts at offset (mix(id) + seq * ECHO_STRIDE) mod
 * ECHO_OFFSETS. The messages in flight on one connection all start at
 * different offsets, so an echo that is corrupted, misordered or duplicated
 * mismatches (for messages of a few bytes only with high probability), yet
 * a message is sent straight from the pattern without being filled.
 * Connections start at offsets drawn from ECHO_OFFSETS, so an echo crossed
 * over from another connection is caught unless the two drew the same one
 * (with 10,000 connections, a few hundred pairs do). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "load.h"

#define ECHO_MAX_SIZE (16L * 1024 * 1024)
#define ECHO_MAX_PIPELINE 4096
#define ECHO_OFFSETS 65536u /* a power of two, > ECHO_MAX_PIPELINE */
#define ECHO_STRIDE 40503u  /* odd: ECHO_OFFSETS consecutive seqs, distinct offsets */
#define ECHO_IOV_MAX 64
/* One task both writes and reads a connection, so while it is blocked in a
 * write nobody drains the echoes. If more than the socket buffers hold were
 * outstanding, the server would block writing echoes to us and stop
 * reading, and our write would never finish. Bytes sent and not yet echoed
 * are therefore kept under this bound, well below the buffering of a
 * loopback or LAN path (both ends' send and receive buffers), and a larger
 * size * pipeline is written as the echoes drain. */
#define ECHO_INFLIGHT_MAX (64 * 1024)

typedef struct echo_cfg {
  long size;
  long pipeline;
  uint8_t *pattern; /* size + ECHO_OFFSETS random bytes, read-only while running */
} echo_cfg_t;

/* One connection's state, on its task's stack; rx and sent_ns are its only
 * allocation. The send side is at byte wr_off of message wr_seq, the receive
 * side at byte rd_off of message rd_seq. */
typedef struct echo_conn {
  load_conn_t *lc;
  keel_stream_t *stream;
  const echo_cfg_t *cfg;
  uint32_t first_offset;
  uint64_t wr_seq, rd_seq;
  size_t wr_off, rd_off;
  size_t inflight;  /* bytes sent and not yet echoed */
  int64_t *sent_ns; /* [seq % pipeline]: when the message's first byte was sent */
  uint8_t *rx;
  size_t rx_cap;
  struct iovec iov[ECHO_IOV_MAX];
} echo_conn_t;

enum { OPT_SIZE = LOAD_MODE_OPT_BASE, OPT_PIPELINE };

static const struct option echo_options[] = {
    {"size", required_argument, NULL, OPT_SIZE},
    {"pipeline", required_argument, NULL, OPT_PIPELINE},
    {NULL, 0, NULL, 0},
};

static const uint8_t *message(const echo_conn_t *e, uint64_t seq) {
  uint32_t off = (e->first_offset + (uint32_t)seq * ECHO_STRIDE) & (ECHO_OFFSETS - 1);
  return e->cfg->pattern + off;
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* ---- Sending ---------------------------------------------------------------- */

static bool can_write(const echo_conn_t *e) {
  if (e->inflight >= ECHO_INFLIGHT_MAX)
    return false;
  return e->wr_off > 0 || e->wr_seq - e->rd_seq < (uint64_t)e->cfg->pipeline;
}

static void sent(echo_conn_t *e, size_t n) {
  size_t size = (size_t)e->cfg->size;
  e->inflight += n;
  n += e->wr_off;
  e->wr_seq += n / size;
  e->wr_off = n % size;
}

/* One writev of what the window allows: the rest of the message being
 * sent, then new messages while fewer than pipeline are outstanding. A
 * message's send time is stamped before the write that carries its first
 * byte (again, if a short write did not get that far). */
static int echo_write(echo_conn_t *e) {
  size_t size = (size_t)e->cfg->size, budget = ECHO_INFLIGHT_MAX - e->inflight;
  uint64_t seq = e->wr_seq;
  size_t off = e->wr_off;
  int64_t now = keel_now_ns();
  int n = 0;
  while (budget > 0 && n < ECHO_IOV_MAX) {
    if (off == 0) {
      if (seq - e->rd_seq >= (uint64_t)e->cfg->pipeline)
        break;
      e->sent_ns[seq % (uint64_t)e->cfg->pipeline] = now;
    }
    size_t len = min_size(size - off, budget);
    e->iov[n++] = (struct iovec){(void *)(message(e, seq) + off), len};
    budget -= len;
    off += len;
    if (off == size) {
      seq++;
      off = 0;
    }
  }
  ssize_t done = keel_writev(e->stream, e->iov, n);
  if (done < 0)
    return (int)done;
  sent(e, (size_t)done);
  return 0;
}

/* ---- Receiving -------------------------------------------------------------- */

static int mismatch(echo_conn_t *e, const uint8_t *got, const uint8_t *want, size_t len) {
  size_t i = 0;
  while (i + 1 < len && got[i] == want[i])
    i++;
  e->lc->worker->mismatches++;
  load_complain(e->lc->worker->load, e->lc->id,
                "message %llu differs at byte %zu: got 0x%02x, sent 0x%02x",
                (unsigned long long)e->rd_seq, e->rd_off + i, got[i], want[i]);
  return 1; /* the byte stream is out of step: this connection is done */
}

/* Checks n received bytes against what was sent and records each message
 * whose echo they complete. 0, or 1 after a mismatch. */
static int check(echo_conn_t *e, size_t n, int64_t now) {
  size_t size = (size_t)e->cfg->size;
  const uint8_t *p = e->rx;
  while (n > 0) {
    size_t take = min_size(n, size - e->rd_off);
    const uint8_t *want = message(e, e->rd_seq) + e->rd_off;
    if (memcmp(p, want, take) != 0)
      return mismatch(e, p, want, take);
    p += take;
    n -= take;
    e->rd_off += take;
    if (e->rd_off == size) {
      load_record(e->lc, e->sent_ns[e->rd_seq % (uint64_t)e->cfg->pipeline], now, size);
      e->rd_seq++;
      e->rd_off = 0;
    }
  }
  return 0;
}

/* Reads whatever has arrived of the outstanding echoes. 0, 1 after a
 * mismatch, or a negative errno (-EPIPE: the server closed early). */
static int echo_read(echo_conn_t *e) {
  ssize_t n = keel_read(e->stream, e->rx, min_size(e->inflight, e->rx_cap));
  if (n <= 0)
    return n == 0 ? -EPIPE : (int)n;
  int64_t now = keel_now_ns();
  e->inflight -= (size_t)n;
  return check(e, (size_t)n, now);
}

/* ---- The mode ---------------------------------------------------------------- */

static int echo_run(load_conn_t *c) {
  const echo_cfg_t *cfg = c->worker->load->mode_cfg;
  echo_conn_t e = {.lc = c, .stream = keel_tcp_stream(c->tcp), .cfg = cfg};
  e.first_offset = (uint32_t)load_mix64(c->id) & (ECHO_OFFSETS - 1);
  e.rx_cap = min_size((size_t)cfg->size * (size_t)cfg->pipeline, ECHO_INFLIGHT_MAX);
  e.sent_ns = malloc((size_t)cfg->pipeline * sizeof *e.sent_ns + e.rx_cap);
  if (e.sent_ns == NULL)
    return -ENOMEM;
  e.rx = (uint8_t *)(e.sent_ns + cfg->pipeline);
  int rc = 0;
  while (rc == 0) /* ends by cancellation (the run is over), an error or a mismatch */
    rc = can_write(&e) ? echo_write(&e) : echo_read(&e);
  c->worker->unanswered += e.wr_seq - e.rd_seq + (e.wr_off > 0);
  free(e.sent_ns);
  return rc > 0 ? 0 : rc;
}

static int echo_init(load_t *l) {
  echo_cfg_t *cfg = calloc(1, sizeof *cfg);
  if (cfg == NULL)
    return -ENOMEM;
  cfg->size = 128;
  cfg->pipeline = 1;
  l->mode_cfg = cfg;
  return 0;
}

static int echo_parse_option(load_t *l, int id, const char *value) {
  echo_cfg_t *cfg = l->mode_cfg;
  if (id == OPT_SIZE)
    return load_parse_long(value, 1, ECHO_MAX_SIZE, &cfg->size);
  if (id == OPT_PIPELINE)
    return load_parse_long(value, 1, ECHO_MAX_PIPELINE, &cfg->pipeline);
  return -EINVAL;
}

/* The pattern: a fixed seed, so that runs send the same bytes. */
static int echo_prepare(load_t *l) {
  echo_cfg_t *cfg = l->mode_cfg;
  size_t len = (size_t)cfg->size + ECHO_OFFSETS;
  cfg->pattern = malloc(len);
  if (cfg->pattern == NULL) {
    fprintf(stderr, "keel-load: out of memory for %zu bytes of message pattern\n", len);
    return -ENOMEM;
  }
  for (size_t i = 0; i < len; i += 8) {
    uint64_t word = load_mix64(i);
    memcpy(cfg->pattern + i, &word, min_size(8, len - i));
  }
  if (cfg->size * cfg->pipeline > ECHO_INFLIGHT_MAX)
    fprintf(stderr,
            "keel-load: note: size * pipeline exceeds %d bytes; at most that many are kept "
            "outstanding per connection (%.2f messages' worth)\n",
            ECHO_INFLIGHT_MAX, (double)ECHO_INFLIGHT_MAX / (double)cfg->size);
  return 0;
}

static void echo_describe(const load_t *l, FILE *out, bool json) {
  const echo_cfg_t *cfg = l->mode_cfg;
  if (json)
    fprintf(out, "\"size\":%ld,\"pipeline\":%ld,", cfg->size, cfg->pipeline);
  else
    fprintf(out, " size %ld pipeline %ld", cfg->size, cfg->pipeline);
}

static void echo_destroy(load_t *l) {
  echo_cfg_t *cfg = l->mode_cfg;
  if (cfg != NULL)
    free(cfg->pattern);
  free(cfg);
  l->mode_cfg = NULL;
}

const load_mode_t load_echo_mode = {
    .name = "echo",
    .summary = "send messages, check every echoed byte, time each round trip",
    .usage = "  --size B                  message size in bytes, up to 16 MiB (default 128)\n"
             "  --pipeline K              messages outstanding per connection (default 1)\n",
    .options = echo_options,
    .init = echo_init,
    .parse_option = echo_parse_option,
    .prepare = echo_prepare,
    .run_conn = echo_run,
    .describe = echo_describe,
    .destroy = echo_destroy,
};
