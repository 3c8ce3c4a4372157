/* The WebSocket connection: frames in and out over a buffered stream.
 *
 * Reading: a frame's header is parsed where it lies in the buffered
 * stream's buffer. A message of one frame that is buffered whole is
 * unmasked in place and handed to the caller from there (no copy; the
 * bytes are consumed at the next receive). Anything else (fragments, a
 * frame larger than the buffer, compressed data) is unmasked as it is
 * copied into the message buffer, or unmasked in place and inflated into
 * it. Text is checked as UTF-8 piece by piece, so a bad byte fails the
 * connection as soon as it arrives.
 *
 * Writing: a frame is written whole by one task at a time (frame_lock);
 * a data message, or every fragment of one, under msg_lock, so control
 * frames can go between fragments but data never interleaves. A pong the
 * reader owes while another task writes is left to that task, which sends
 * it before giving the lock up (only the latest pong is kept). */
#include <string.h>

#include "handshake.h"
#include "http-internal.h"
#include "keel/sync.h"

#define WS_MASK_CHUNK (16 * 1024)   /* a client masks its payload this much at a time */
#define WS_KEEP_MSG_BUF (64 * 1024) /* a bigger message buffer is freed after use */
#define WS_FINISH_SHIELD_NS (1000 * KEEL_NS_PER_MS)
#define WS_CLIENT_EOF_NS                                                   \
  (1000 * KEEL_NS_PER_MS) /* a client waits this long for the server's FIN \
                           */

/* A lock between the tasks of one worker (a WebSocket's tasks all are):
 * 16 bytes, with the wait queue made on first contention. */
typedef struct ws_lock {
  keel_task_t *owner;
  keel_notify_t *wq;
} ws_lock_t;

/* What only a connection with permessage-deflate needs. */
typedef struct ws_z {
  ws_pmd_t *pmd;
  ws_pmd_params_t params;
  size_t min_size; /* shorter messages go uncompressed */
  ws_buf_t out;    /* compressed output */
} ws_z_t;

/* Every field counts: an idle WebSocket is this struct, its buffered
 * stream and its TCP connection. */
struct keel_ws {
  keel_bufstream_t *bs; /* its stream (ws_stream) takes the writes, which pass through */
  keel_tcp_t *tcp;      /* for parking idle, or NULL */
  keel_tls_t *tls;
  keel_ws_message_fn on_message;
  void (*on_close)(keel_ws_t *ws, int code, void *ctx);
  void *ctx;
  size_t max_message;
  int32_t close_timeout_ms, ping_interval_ms, pong_timeout_ms, idle_timeout_ms;
  int64_t last_rx;  /* when bytes last arrived */
  int64_t pong_by;  /* a ping is unanswered: the pong is due by then (0: none) */
  int64_t close_by; /* a close was sent: the peer's is due by then (0: none) */
  ws_z_t *z;        /* permessage-deflate, or NULL */
  char *subprotocol;
  keel_http_request_t *req; /* sequential style: the request upgraded, for its hooks */
  unsigned *live;           /* the HTTP server's count of connections, or NULL */
  int worker;
  int hook_busy; /* the drain hook runs (in the connection's task) */
  bool server;
  bool closing; /* keel_ws_close is under way */
  /* Reading (one task at a time). */
  bool msg_z; /* the message under way is compressed */
  bool in_frame, msg_ready;
  bool part_first; /* keel_ws_recv_part: the next piece is its message's first */
  uint8_t msg_op;  /* the opcode of the message under way; 0: none */
  uint8_t part_op; /* keel_ws_recv_part: the opcode of the message assembled */
  ws_utf8_t utf8;
  unsigned f_phase;
  keel_task_t *reader;
  size_t pending;  /* bytes handed out in place, consumed at the next receive */
  ws_buf_t msg;    /* the message being assembled */
  size_t part_off; /* keel_ws_recv_part: bytes of msg handed out */
  ws_frame_t f;    /* the frame being read */
  uint64_t f_left;
  int err; /* sticky: the connection failed */
  /* Closing. */
  bool close_sent, close_rcvd, closed;
  bool frag_z; /* writing: the fragmented message under way is compressed */
  uint16_t close_code, sent_code;
  int wr_err; /* writing: sticky */
  char *close_reason;
  /* Writing. */
  ws_lock_t msg_lock, frame_lock;
  keel_task_t *frag_owner; /* the task with a fragmented message open */
  uint8_t *pong;           /* a pong owed: [0] its length, then the payload */
  uint8_t *mask_buf;
};

_Static_assert(sizeof(struct keel_ws) <= 312,
               "an idle WebSocket's struct is a 320-byte malloc chunk");

#define MS(x) ((int64_t)(x)*KEEL_NS_PER_MS)

static inline keel_stream_t *ws_stream(keel_ws_t *ws) { return keel_bufstream_stream(ws->bs); }

static int lock(ws_lock_t *l) {
  keel_task_t *self = keel_task_current();
  while (l->owner) {
    if (!l->wq) {
      if (!(l->wq = malloc(sizeof *l->wq)))
        return -ENOMEM;
      keel_notify_init(l->wq);
    }
    int rc = keel_notify_wait(l->wq);
    if (rc < 0)
      return rc;
  }
  l->owner = self;
  return 0;
}

static int try_lock(ws_lock_t *l) {
  if (l->owner)
    return -EBUSY;
  l->owner = keel_task_current();
  return 0;
}

static void unlock(ws_lock_t *l) {
  l->owner = NULL;
  if (l->wq)
    keel_notify_one(l->wq);
}

static void lock_free(ws_lock_t *l) {
  if (l->wq) {
    keel_notify_destroy(l->wq);
    free(l->wq);
  }
}

static ws_pmd_cache_t *pmd_cache(void);

/* ---- Writing -------------------------------------------------------------- */

/* Writes iov; a frame begun (started, or some bytes of it written now)
 * is finished inside a bounded shield even when the task is cancelled,
 * since half a frame would corrupt the stream for everyone. */
static int write_frame_bytes(keel_ws_t *ws, struct iovec *iov, int n, bool *started) {
  size_t done = 0;
  int rc = keel_writev_all(ws_stream(ws), iov, n, &done);
  if (rc == 0) {
    *started = true;
    return 0;
  }
  if (rc != -ECANCELED && rc != -ETIMEDOUT) {
    ws->wr_err = rc;
    return rc;
  }
  if (done == 0 && !*started)
    return rc;
  *started = true;
  while (n > 0 && done >= iov->iov_len) {
    done -= iov->iov_len;
    iov++;
    n--;
  }
  if (n > 0) {
    iov->iov_base = (char *)iov->iov_base + done;
    iov->iov_len -= done;
  }
  keel_shield_begin(keel_now_ns() + WS_FINISH_SHIELD_NS);
  int rc2 = keel_writev_all(ws_stream(ws), iov, n, NULL);
  keel_shield_end();
  if (rc2 < 0) {
    ws->wr_err = -ENOTRECOVERABLE;
    keel_stream_shutdown(ws_stream(ws), SHUT_RDWR);
    return -ENOTRECOVERABLE;
  }
  return rc;
}

/* One frame, the frame lock held. Returns 0 (also when it was finished
 * after a cancellation: the frame is out), or a negative errno (nothing
 * of it was written, or the WebSocket is now unusable for sending). */
static int frame_out(keel_ws_t *ws, unsigned opcode, bool fin, unsigned rsv,
                     const struct iovec *iov, int iovcnt) {
  if (ws->wr_err)
    return ws->wr_err;
  uint64_t plen = 0;
  for (int i = 0; i < iovcnt; i++)
    plen += iov[i].iov_len;
  uint8_t head[WS_MAX_HEAD];
  bool started = false;
  if (ws->server) {
    struct iovec v[17];
    if (iovcnt > 16)
      return -EINVAL;
    size_t hl = ws_frame_head(head, fin, rsv, opcode, plen, NULL);
    v[0] = (struct iovec){head, hl};
    int n = 1;
    for (int i = 0; i < iovcnt; i++)
      if (iov[i].iov_len)
        v[n++] = iov[i];
    int rc = write_frame_bytes(ws, v, n, &started);
    return rc < 0 && !started ? rc : (ws->wr_err ? ws->wr_err : 0);
  }
  /* A client masks with a fresh key per frame (RFC 6455 §5.3), into its
   * own buffer: the caller's bytes are not touched. */
  if (!ws->mask_buf && !(ws->mask_buf = malloc(WS_MASK_CHUNK)))
    return -ENOMEM;
  uint64_t r = keel_random();
  uint8_t key[4];
  memcpy(key, &r, 4);
  size_t hl = ws_frame_head(head, fin, rsv, opcode, plen, key);
  memcpy(ws->mask_buf, head, hl);
  size_t fill = hl;
  unsigned phase = 0;
  int cancelled = 0;
  for (int i = 0; i < iovcnt; i++) {
    const uint8_t *p = iov[i].iov_base;
    size_t left = iov[i].iov_len;
    while (left > 0) {
      size_t take = WS_MASK_CHUNK - fill < left ? WS_MASK_CHUNK - fill : left;
      phase = ws_mask(ws->mask_buf + fill, p, take, key, phase);
      fill += take;
      p += take;
      left -= take;
      if (fill == WS_MASK_CHUNK) {
        struct iovec v = {ws->mask_buf, fill};
        int rc = write_frame_bytes(ws, &v, 1, &started);
        if (rc < 0 && (!started || ws->wr_err))
          return ws->wr_err ? ws->wr_err : rc;
        if (rc < 0 && !cancelled) {
          cancelled = rc; /* finish the frame, shielded */
          keel_shield_begin(keel_now_ns() + WS_FINISH_SHIELD_NS);
        }
        fill = 0;
      }
    }
  }
  int rc = 0;
  if (fill > 0) {
    struct iovec v = {ws->mask_buf, fill};
    rc = write_frame_bytes(ws, &v, 1, &started);
  }
  if (cancelled)
    keel_shield_end();
  if (ws->wr_err)
    return ws->wr_err;
  return rc < 0 && !started ? rc : 0;
}

/* Sends the pong owed, if any (the frame lock held). */
static void pong_out(keel_ws_t *ws) {
  while (ws->pong) {
    uint8_t *p = ws->pong;
    ws->pong = NULL;
    struct iovec v = {p + 1, p[0]};
    frame_out(ws, KEEL_WS_PONG, true, 0, &v, 1);
    free(p);
  }
}

static int frame_send(keel_ws_t *ws, unsigned opcode, bool fin, unsigned rsv,
                      const struct iovec *iov, int iovcnt) {
  int rc = lock(&ws->frame_lock);
  if (rc < 0)
    return rc;
  rc = frame_out(ws, opcode, fin, rsv, iov, iovcnt);
  pong_out(ws);
  unlock(&ws->frame_lock);
  return rc;
}

/* keel's own control frames (pong, ping, close) wait at most the close
 * timeout for the peer to take them (or the task's own deadline, if
 * nearer): a peer that reads nothing is not waited on for ever. */
static int64_t bound_begin(const keel_ws_t *ws) {
  int64_t limit = keel_now_ns() + MS(ws->close_timeout_ms);
  int64_t prev = keel_task_set_deadline(limit);
  if (prev > 0 && prev < limit)
    keel_task_set_deadline(prev);
  return prev;
}

static void bound_end(int64_t prev) { keel_task_set_deadline(prev); }

/* The reader's pong: now if no frame is being written, else left to the
 * writer (only the latest one is kept). A peer that takes no pong within
 * the close timeout reads nothing: the connection is dropped. */
static void pong_owed(keel_ws_t *ws, const uint8_t *data, size_t len) {
  if (try_lock(&ws->frame_lock) == 0) {
    int64_t prev = bound_begin(ws);
    struct iovec v = {(void *)data, len};
    int rc = frame_out(ws, KEEL_WS_PONG, true, 0, &v, 1);
    bound_end(prev);
    unlock(&ws->frame_lock);
    if (rc == -ETIMEDOUT && keel_cancelled() == KEEL_CANCEL_NONE) {
      ws->err = -ETIMEDOUT;
      ws->close_code = KEEL_WS_ABNORMAL;
      keel_stream_shutdown(ws_stream(ws), SHUT_RDWR);
    }
    return;
  }
  uint8_t *p = malloc(1 + len);
  if (!p)
    return;
  p[0] = (uint8_t)len;
  memcpy(p + 1, data, len);
  free(ws->pong);
  ws->pong = p;
}

static int close_out(keel_ws_t *ws, int code, const char *reason, size_t rlen) {
  uint8_t body[125];
  size_t n = 0;
  if (code) {
    body[0] = (uint8_t)(code >> 8);
    body[1] = (uint8_t)code;
    if (rlen)
      memcpy(body + 2, reason, rlen);
    n = 2 + rlen;
  }
  ws->close_sent = true;
  ws->sent_code = code ? (uint16_t)code : KEEL_WS_NO_STATUS;
  keel__ws_count_close(false, ws->sent_code);
  ws->close_by = keel_now_ns() + MS(ws->close_timeout_ms);
  struct iovec v = {body, n};
  int64_t prev = bound_begin(ws);
  int rc = frame_send(ws, KEEL_WS_CLOSE, true, 0, &v, 1);
  bound_end(prev);
  return rc;
}

static int check_worker(const keel_ws_t *ws) { return keel_worker_id() == ws->worker ? 0 : -EXDEV; }

static int data_opcode_ok(int opcode) { return opcode == KEEL_WS_TEXT || opcode == KEEL_WS_BINARY; }

static int send_message(keel_ws_t *ws, int opcode, const struct iovec *iov, int iovcnt, bool fin,
                        bool first) {
  if (ws->close_sent || ws->err)
    return -EPIPE;
  size_t len = 0;
  for (int i = 0; i < iovcnt; i++)
    len += iov[i].iov_len;
  unsigned rsv = 0;
  bool z = ws->z && (first ? len >= 1 : ws->frag_z);
  if (first && z)
    z = len >= ws->z->min_size || !fin;
  if (!z) {
    int rc = frame_send(ws, first ? (unsigned)opcode : KEEL_WS_CONTINUATION, fin, 0, iov, iovcnt);
    if (rc == 0)
      keel__ws_count_data(false, len, fin);
    return rc;
  }
  ws->z->out.len = 0;
  for (int i = 0; i < iovcnt; i++) {
    bool last = fin && i == iovcnt - 1;
    int rc = ws_pmd_deflate(ws->z->pmd, iov[i].iov_base, iov[i].iov_len, last, &ws->z->out);
    if (rc < 0)
      return rc;
  }
  if (fin && iovcnt == 0) {
    int rc = ws_pmd_deflate(ws->z->pmd, NULL, 0, true, &ws->z->out);
    if (rc < 0)
      return rc;
  }
  if (first)
    rsv = 4; /* RSV1: this message is compressed */
  struct iovec v = {ws->z->out.p, ws->z->out.len};
  int rc = frame_send(ws, first ? (unsigned)opcode : KEEL_WS_CONTINUATION, fin, rsv, &v, 1);
  if (ws->z->out.cap > WS_KEEP_MSG_BUF)
    ws_buf_free(&ws->z->out);
  if (first)
    ws->frag_z = true;
  if (rc == 0)
    keel__ws_count_data(false, len, fin);
  return rc;
}

int keel_ws_sendv(keel_ws_t *ws, int opcode, const struct iovec *iov, int iovcnt) {
  if (!ws || !data_opcode_ok(opcode) || iovcnt < 0 || iovcnt > 16)
    return -EINVAL;
  int rc = check_worker(ws);
  if (rc < 0)
    return rc;
  if (ws->frag_owner == keel_task_current())
    return -EINVAL; /* its own fragmented message is open */
  if ((rc = lock(&ws->msg_lock)) < 0)
    return rc;
  rc = send_message(ws, opcode, iov, iovcnt, true, true);
  ws->frag_z = false;
  unlock(&ws->msg_lock);
  return rc;
}

int keel_ws_send(keel_ws_t *ws, int opcode, const void *data, size_t len) {
  struct iovec v = {(void *)data, len};
  return keel_ws_sendv(ws, opcode, &v, 1);
}

int keel_ws_send_part(keel_ws_t *ws, int opcode, const void *data, size_t len, bool fin) {
  if (!ws)
    return -EINVAL;
  int rc = check_worker(ws);
  if (rc < 0)
    return rc;
  keel_task_t *self = keel_task_current();
  bool first = ws->frag_owner != self;
  if (first ? !data_opcode_ok(opcode) : opcode != KEEL_WS_CONTINUATION)
    return -EINVAL;
  if (first) {
    if ((rc = lock(&ws->msg_lock)) < 0)
      return rc;
    ws->frag_owner = self;
    ws->frag_z = false;
  }
  struct iovec v = {(void *)data, len};
  rc = send_message(ws, opcode, &v, 1, fin, first);
  if (fin || ws->wr_err || (rc < 0 && first)) {
    /* The message ended, never began (nothing of it was sent), or can
     * never end (the connection cannot send any more). */
    ws->frag_owner = NULL;
    ws->frag_z = false;
    unlock(&ws->msg_lock);
  }
  return rc;
}

int keel_ws_ping(keel_ws_t *ws, const void *data, size_t len) {
  if (!ws || len > 125)
    return -EINVAL;
  int rc = check_worker(ws);
  if (rc < 0)
    return rc;
  if (ws->close_sent || ws->err)
    return -EPIPE;
  struct iovec v = {(void *)data, len};
  return frame_send(ws, KEEL_WS_PING, true, 0, &v, 1);
}

/* ---- Reading -------------------------------------------------------------- */

/* Fails the connection: close with code (unless one was sent), and the
 * error for this and every later receive. */
static int fail(keel_ws_t *ws, int code, int err) {
  if (!ws->close_sent && !ws->wr_err)
    close_out(ws, code, "", 0);
  ws->err = err;
  ws->close_code = KEEL_WS_ABNORMAL;
  keel_stream_shutdown(ws_stream(ws), SHUT_WR);
  return err;
}

/* The earliest of the connection's own timers. */
static int64_t next_timer(const keel_ws_t *ws) {
  int64_t t = KEEL_DEADLINE_NONE;
  if (ws->close_by)
    t = ws->close_by;
  if (ws->pong_by && ws->pong_by < t)
    t = ws->pong_by;
  else if (!ws->pong_by && MS(ws->ping_interval_ms) > 0 &&
           ws->last_rx + MS(ws->ping_interval_ms) < t)
    t = ws->last_rx + MS(ws->ping_interval_ms);
  if (MS(ws->idle_timeout_ms) > 0 && !ws->close_sent && ws->last_rx + MS(ws->idle_timeout_ms) < t)
    t = ws->last_rx + MS(ws->idle_timeout_ms);
  return t;
}

/* A timer of the connection's is due at now: act on it. Returns 1 to go
 * on reading, or a negative errno. */
static int timer_due(keel_ws_t *ws, int64_t now) {
  if (ws->close_by && now >= ws->close_by) {
    ws->err = -ETIMEDOUT;
    ws->close_code = KEEL_WS_ABNORMAL;
    return -ETIMEDOUT;
  }
  if (ws->pong_by && now >= ws->pong_by) {
    ws->err = -ETIMEDOUT;
    ws->close_code = KEEL_WS_ABNORMAL;
    keel_stream_shutdown(ws_stream(ws), SHUT_RDWR);
    return -ETIMEDOUT;
  }
  if (MS(ws->idle_timeout_ms) > 0 && !ws->close_sent &&
      now >= ws->last_rx + MS(ws->idle_timeout_ms)) {
    close_out(ws, KEEL_WS_GOING_AWAY, "idle", 4);
    return 1;
  }
  if (!ws->pong_by && MS(ws->ping_interval_ms) > 0 &&
      now >= ws->last_rx + MS(ws->ping_interval_ms)) {
    ws->pong_by = now + MS(ws->pong_timeout_ms);
    struct iovec v = {NULL, 0};
    int64_t prev = bound_begin(ws);
    frame_send(ws, KEEL_WS_PING, true, 0, &v, 1);
    bound_end(prev);
    return 1;
  }
  return 0;
}

/* Reads more bytes into the buffer, waking for the connection's timers.
 * Returns the count (> 0) or a negative errno (the end of the stream
 * without a close is -EPIPE, and sticky). */
static ssize_t fill(keel_ws_t *ws) {
  for (;;) {
    /* Without a timer of the connection's own (the default) a fill costs
     * no clock read and no deadline change. */
    int64_t wake = next_timer(ws), prev = 0;
    bool timed = wake != KEEL_DEADLINE_NONE;
    if (timed) {
      prev = keel_task_set_deadline(wake);
      if (prev > 0 && prev < wake)
        keel_task_set_deadline(prev);
    }
    ssize_t n = keel_bufstream_fill(ws->bs);
    if (timed)
      keel_task_set_deadline(prev);
    if (n > 0) {
      if (ws->ping_interval_ms || ws->idle_timeout_ms)
        ws->last_rx = keel_now_ns();
      return n;
    }
    if (n == 0 || n == -ECONNRESET || n == -EPIPE) {
      ws->err = n == 0 ? -EPIPE : (int)n;
      ws->close_code = KEEL_WS_ABNORMAL;
      return ws->err;
    }
    int64_t now = keel_now_ns();
    if (n != -ETIMEDOUT || !timed || (prev > 0 && now >= prev))
      return n;
    int rc = timer_due(ws, now);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return n; /* a scope's deadline */
  }
}

static int check_header(keel_ws_t *ws, const ws_frame_t *f) {
  unsigned allowed = ws->z && (f->opcode == KEEL_WS_TEXT || f->opcode == KEEL_WS_BINARY) ? 4 : 0;
  if (f->rsv & ~allowed)
    return fail(ws, KEEL_WS_PROTOCOL_ERROR, -EPROTO);
  switch (f->opcode) {
  case KEEL_WS_CONTINUATION:
    if (!ws->msg_op)
      return fail(ws, KEEL_WS_PROTOCOL_ERROR, -EPROTO);
    break;
  case KEEL_WS_TEXT:
  case KEEL_WS_BINARY:
    if (ws->msg_op)
      return fail(ws, KEEL_WS_PROTOCOL_ERROR, -EPROTO);
    break;
  case KEEL_WS_CLOSE:
  case KEEL_WS_PING:
  case KEEL_WS_PONG:
    break;
  default:
    return fail(ws, KEEL_WS_PROTOCOL_ERROR, -EPROTO);
  }
  if (f->masked != ws->server)
    return fail(ws, KEEL_WS_PROTOCOL_ERROR, -EPROTO);
  return 0;
}

/* A control frame's payload, unmasked. Returns 1 to go on, 0 at the
 * close, or a negative errno. */
static int control(keel_ws_t *ws, unsigned opcode, const uint8_t *p, size_t n) {
  if (opcode == KEEL_WS_PING) {
    if (!ws->close_sent)
      pong_owed(ws, p, n);
    return 1;
  }
  if (opcode == KEEL_WS_PONG) {
    ws->pong_by = 0;
    return 1;
  }
  /* Close. */
  int code = KEEL_WS_NO_STATUS;
  if (n == 1)
    return fail(ws, KEEL_WS_PROTOCOL_ERROR, -EPROTO);
  if (n >= 2) {
    code = p[0] << 8 | p[1];
    if (!ws_close_code_valid((unsigned)code))
      return fail(ws, KEEL_WS_PROTOCOL_ERROR, -EPROTO);
    ws_utf8_t u = WS_UTF8_INIT;
    if (!ws_utf8_feed(&u, p + 2, n - 2) || !ws_utf8_complete(&u))
      return fail(ws, KEEL_WS_INVALID_DATA, -EILSEQ);
  }
  ws->close_rcvd = true;
  ws->close_code = (uint16_t)code;
  keel__ws_count_close(true, code);
  free(ws->close_reason);
  ws->close_reason = NULL;
  if (n > 2 && (ws->close_reason = malloc(n - 1))) {
    memcpy(ws->close_reason, p + 2, n - 2);
    ws->close_reason[n - 2] = 0;
  }
  if (!ws->close_sent)
    close_out(ws, n >= 2 ? code : 0, "", 0); /* echo the code (RFC 6455 §5.5.1) */
  ws->close_by = 0;
  ws->closed = true;
  return 0;
}

/* Checks text as it comes: fails (1007) at the first bad byte. */
static int text_check(keel_ws_t *ws, const uint8_t *p, size_t n) {
  if (n > 0 && ws->msg_op == KEEL_WS_TEXT && !ws_utf8_feed(&ws->utf8, p, n))
    return fail(ws, KEEL_WS_INVALID_DATA, -EILSEQ);
  return 0;
}

/* Payload bytes of the current data frame, as many as are buffered,
 * into the message. Returns 0 or a negative errno. */
static int payload_in(keel_ws_t *ws, uint8_t *p, size_t take) {
  if (ws->msg_z) {
    if (ws->f.masked)
      ws->f_phase = ws_mask(p, p, take, ws->f.key, ws->f_phase);
    size_t before = ws->msg.len;
    int rc = ws_pmd_inflate(ws->z->pmd, p, take, false, &ws->msg, ws->max_message);
    if (rc == -EMSGSIZE)
      return fail(ws, KEEL_WS_TOO_BIG, -EMSGSIZE);
    if (rc < 0)
      return fail(ws, rc == -ENOMEM ? KEEL_WS_INTERNAL_ERROR : KEEL_WS_INVALID_DATA,
                  rc == -ENOMEM ? -ENOMEM : -EPROTO);
    return ws->msg.len > before ? text_check(ws, ws->msg.p + before, ws->msg.len - before) : 0;
  }
  int rc = ws_buf_reserve(&ws->msg, take, ws->max_message);
  if (rc < 0)
    return fail(ws, rc == -EMSGSIZE ? KEEL_WS_TOO_BIG : KEEL_WS_INTERNAL_ERROR, rc);
  uint8_t *dst = ws->msg.p + ws->msg.len;
  if (ws->f.masked)
    ws->f_phase = ws_mask(dst, p, take, ws->f.key, ws->f_phase);
  else
    memcpy(dst, p, take);
  ws->msg.len += take;
  return text_check(ws, dst, take);
}

/* The message assembled is complete. */
static int message_end(keel_ws_t *ws) {
  if (ws->msg_z) {
    size_t before = ws->msg.len;
    int rc = ws_pmd_inflate(ws->z->pmd, NULL, 0, true, &ws->msg, ws->max_message);
    if (rc == -EMSGSIZE)
      return fail(ws, KEEL_WS_TOO_BIG, -EMSGSIZE);
    if (rc < 0)
      return fail(ws, KEEL_WS_INVALID_DATA, -EPROTO);
    if (ws->msg.len > before && (rc = text_check(ws, ws->msg.p + before, ws->msg.len - before)) < 0)
      return rc;
  }
  if (ws->msg_op == KEEL_WS_TEXT && !ws_utf8_complete(&ws->utf8))
    return fail(ws, KEEL_WS_INVALID_DATA, -EILSEQ);
  return 0;
}

/* Forgets what the last receive handed out. */
static void release(keel_ws_t *ws) {
  if (ws->pending) {
    keel_bufstream_consume(ws->bs, ws->pending);
    ws->pending = 0;
  }
  if (ws->msg_ready) {
    ws->msg_ready = false;
    ws->msg.len = 0;
    ws->part_off = 0;
    if (ws->msg.cap > WS_KEEP_MSG_BUF)
      ws_buf_free(&ws->msg);
  }
}

enum { FS_FRAME = 1, FS_MESSAGE, FS_AGAIN };

/* Reads the next frame's header. A control frame is handled whole
 * (FS_AGAIN); so is a message of one frame already buffered when
 * zero_copy (FS_MESSAGE: its opcode in *op, the payload unmasked in place,
 * consumed at the next receive). A data frame otherwise: its header is
 * consumed and its payload is next (FS_FRAME). whole: the message is to
 * be assembled (max_message applies). 0 at the close, or an error. */
static int frame_start(keel_ws_t *ws, bool zero_copy, bool whole, const void **data, size_t *len,
                       int *op) {
  size_t avail;
  uint8_t *p = (uint8_t *)keel_bufstream_peek(ws->bs, &avail);
  ws_frame_t f;
  int hl = ws_frame_parse(p, avail, &f);
  if (hl < 0)
    return fail(ws, KEEL_WS_PROTOCOL_ERROR, -EPROTO);
  if (hl > 0 && f.opcode & 8 && avail < hl + f.len)
    hl = 0; /* a control frame is taken whole */
  if (hl == 0) {
    ssize_t n = fill(ws);
    return n < 0 ? (int)n : FS_AGAIN;
  }
  int rc = check_header(ws, &f);
  if (rc < 0)
    return rc;
  if (f.opcode & 8) {
    uint8_t body[125];
    if (f.masked)
      ws_mask(body, p + hl, f.len, f.key, 0);
    else
      memcpy(body, p + hl, f.len);
    keel_bufstream_consume(ws->bs, hl + f.len);
    rc = control(ws, f.opcode, body, f.len);
    return rc <= 0 ? rc : FS_AGAIN;
  }
  if (f.opcode != KEEL_WS_CONTINUATION) {
    ws->msg_op = f.opcode;
    ws->msg_z = f.rsv & 4;
    ws->utf8 = (ws_utf8_t)WS_UTF8_INIT;
    ws->msg.len = 0;
    ws->part_first = true;
  }
  if (whole && !ws->msg_z && f.len > ws->max_message - ws->msg.len)
    return fail(ws, KEEL_WS_TOO_BIG, -EMSGSIZE);
  if (zero_copy && f.fin && f.opcode != KEEL_WS_CONTINUATION && !ws->msg_z && avail - hl >= f.len) {
    uint8_t *pl = p + hl;
    if (f.masked)
      ws_mask(pl, pl, f.len, f.key, 0);
    if ((rc = text_check(ws, pl, f.len)) < 0)
      return rc;
    if (f.opcode == KEEL_WS_TEXT && !ws_utf8_complete(&ws->utf8))
      return fail(ws, KEEL_WS_INVALID_DATA, -EILSEQ);
    *op = ws->msg_op;
    ws->msg_op = 0;
    if (ws->close_sent) {
      keel_bufstream_consume(ws->bs, hl + f.len);
      return FS_AGAIN; /* closing: data is dropped */
    }
    ws->pending = hl + f.len;
    *data = pl;
    *len = f.len;
    return FS_MESSAGE;
  }
  keel_bufstream_consume(ws->bs, (size_t)hl);
  ws->f = f;
  ws->f_left = f.len;
  ws->f_phase = 0;
  ws->in_frame = true;
  return FS_FRAME;
}

/* Reads frames until a whole message (returns its opcode, with *data and
 * *len), the close (0) or an error. zero_copy: a message of one buffered
 * frame may be handed out in place. */
static int read_message_once(keel_ws_t *ws, const void **data, size_t *len, bool zero_copy) {
  for (;;) {
    if (ws->closed)
      return 0;
    if (ws->err)
      return ws->err;
    if (!ws->in_frame) {
      int op = 0, r = frame_start(ws, zero_copy, true, data, len, &op);
      if (r == FS_MESSAGE)
        return op;
      if (r == FS_AGAIN)
        continue;
      if (r <= 0)
        return r;
    }
    size_t avail;
    uint8_t *p = (uint8_t *)keel_bufstream_peek(ws->bs, &avail);
    while (ws->f_left > 0) {
      if (avail == 0) {
        ssize_t n = fill(ws);
        if (n < 0)
          return (int)n;
        p = (uint8_t *)keel_bufstream_peek(ws->bs, &avail);
        continue;
      }
      size_t take = avail < ws->f_left ? avail : (size_t)ws->f_left;
      int rc = payload_in(ws, p, take);
      if (rc < 0)
        return rc;
      keel_bufstream_consume(ws->bs, take);
      ws->f_left -= take;
      p = (uint8_t *)keel_bufstream_peek(ws->bs, &avail);
    }
    ws->in_frame = false;
    if (!ws->f.fin)
      continue;
    int rc = message_end(ws);
    if (rc < 0)
      return rc;
    int op = ws->msg_op;
    ws->msg_op = 0;
    ws->msg_ready = true;
    if (ws->close_sent)
      continue;
    *data = ws->msg.p ? (const void *)ws->msg.p : "";
    *len = ws->msg.len;
    return op;
  }
}

static int read_message(keel_ws_t *ws, const void **data, size_t *len, bool zero_copy) {
  int op = read_message_once(ws, data, len, zero_copy);
  if (op > 0)
    keel__ws_count_data(true, *len, true);
  return op;
}

static int next_message(keel_ws_t *ws, const void **data, size_t *len, bool zero_copy) {
  release(ws);
  return read_message(ws, data, len, zero_copy);
}

int keel_ws_recv(keel_ws_t *ws, const void **data, size_t *len) {
  if (!ws || !data || !len)
    return -EINVAL;
  int rc = check_worker(ws);
  if (rc < 0)
    return rc;
  if (ws->reader)
    return -EBUSY;
  ws->reader = keel_task_current();
  rc = next_message(ws, data, len, true);
  ws->reader = NULL;
  return rc;
}

/* The next piece of an assembled message (a compressed one). */
static ssize_t assembled_piece(keel_ws_t *ws, void *buf, size_t len, keel_ws_part_t *part) {
  size_t n = ws->msg.len - ws->part_off < len ? ws->msg.len - ws->part_off : len;
  if (n)
    memcpy(buf, ws->msg.p + ws->part_off, n);
  part->opcode = ws->part_op;
  part->first = ws->part_off == 0;
  ws->part_off += n;
  part->last = ws->part_off == ws->msg.len;
  return (ssize_t)n;
}

/* Pieces: an uncompressed message is passed on as its frames arrive,
 * however long; a compressed one is assembled (and inflated, up to
 * max_message) first, then handed out len bytes at a time. */
static ssize_t next_piece(keel_ws_t *ws, void *buf, size_t len, keel_ws_part_t *part) {
  if (ws->msg_ready && ws->part_off < ws->msg.len)
    return assembled_piece(ws, buf, len, part);
  release(ws);
  for (;;) {
    if (ws->closed)
      return KEEL_WS_CLOSED;
    if (ws->err)
      return ws->err;
    if (!ws->in_frame) {
      int op = 0, r = frame_start(ws, false, false, NULL, NULL, &op);
      if (r == FS_AGAIN)
        continue;
      if (r <= 0)
        return r == 0 ? KEEL_WS_CLOSED : r;
      if (ws->msg_z) {
        const void *d;
        size_t n;
        int mop = read_message(ws, &d, &n, false);
        if (mop <= 0)
          return mop == 0 ? KEEL_WS_CLOSED : mop;
        ws->part_op = (uint8_t)mop;
        ws->part_off = 0;
        return assembled_piece(ws, buf, len, part);
      }
    }
    size_t take = 0;
    if (ws->f_left > 0) {
      size_t avail;
      uint8_t *p = (uint8_t *)keel_bufstream_peek(ws->bs, &avail);
      if (avail == 0) {
        ssize_t n = fill(ws);
        if (n < 0)
          return n;
        continue;
      }
      take = avail < ws->f_left ? avail : (size_t)ws->f_left;
      if (take > len)
        take = len;
      if (ws->f.masked)
        ws->f_phase = ws_mask(buf, p, take, ws->f.key, ws->f_phase);
      else
        memcpy(buf, p, take);
      keel_bufstream_consume(ws->bs, take);
      ws->f_left -= take;
      int rc = text_check(ws, buf, take);
      if (rc < 0)
        return rc;
    }
    if (ws->f_left == 0)
      ws->in_frame = false;
    bool last = !ws->in_frame && ws->f.fin;
    if (last && ws->msg_op == KEEL_WS_TEXT && !ws_utf8_complete(&ws->utf8))
      return fail(ws, KEEL_WS_INVALID_DATA, -EILSEQ);
    part->opcode = ws->msg_op;
    part->first = ws->part_first;
    part->last = last;
    keel__ws_count_data(true, take, last);
    ws->part_first = false;
    if (last)
      ws->msg_op = 0;
    return (ssize_t)take;
  }
}

ssize_t keel_ws_recv_part(keel_ws_t *ws, void *buf, size_t len, keel_ws_part_t *part) {
  if (!ws || !buf || !part || len == 0)
    return -EINVAL;
  int rc = check_worker(ws);
  if (rc < 0)
    return rc;
  if (ws->reader)
    return -EBUSY;
  ws->reader = keel_task_current();
  ssize_t n = next_piece(ws, buf, len, part);
  ws->reader = NULL;
  return n;
}

/* ---- Closing -------------------------------------------------------------- */

static bool reason_ok(int code, const char *reason, size_t *rlen) {
  *rlen = reason ? strlen(reason) : 0;
  if (code == 0)
    return *rlen == 0;
  if (!ws_close_code_valid((unsigned)code) || *rlen > 123)
    return false;
  ws_utf8_t u = WS_UTF8_INIT;
  return ws_utf8_feed(&u, (const uint8_t *)reason, *rlen) && ws_utf8_complete(&u);
}

int keel_ws_shutdown(keel_ws_t *ws, int code, const char *reason) {
  size_t rlen;
  if (!ws || !reason_ok(code, reason, &rlen))
    return -EINVAL;
  int rc = check_worker(ws);
  if (rc < 0)
    return rc;
  if (ws->close_sent)
    return -EALREADY;
  if (ws->err)
    return ws->err;
  return close_out(ws, code, reason, rlen);
}

static void ws_free(keel_ws_t *ws) {
  if (ws->frag_owner == keel_task_current()) {
    ws->frag_owner = NULL;
    unlock(&ws->msg_lock);
  }
  /* The drain hook may be parked in a write of its own: let it finish. */
  if (ws->hook_busy) {
    keel_shield_begin(keel_now_ns() + WS_FINISH_SHIELD_NS);
    while (ws->hook_busy && keel_yield() == 0)
      ;
    keel_shield_end();
  }
  keel_close(keel_bufstream_stream(ws->bs));
  keel__ws_count_open(ws->server, -1);
  if (ws->live)
    (*ws->live)--;
  if (ws->z) {
    ws_pmd_close(ws->z->pmd);
    ws_buf_free(&ws->z->out);
    free(ws->z);
  }
  ws_buf_free(&ws->msg);
  free(ws->pong);
  free(ws->mask_buf);
  free(ws->subprotocol);
  free(ws->close_reason);
  lock_free(&ws->msg_lock);
  lock_free(&ws->frame_lock);
  free(ws);
}

int keel_ws_close(keel_ws_t *ws, int code, const char *reason) {
  if (!ws)
    return 0;
  size_t rlen;
  if (!reason_ok(code, reason, &rlen))
    code = KEEL_WS_NORMAL, reason = "", rlen = 0;
  int rc = check_worker(ws);
  if (rc < 0)
    return rc;
  ws->closing = true;
  if (ws->req) {
    keel__http_upgrade_set(ws->req, NULL, NULL, NULL);
    ws->req = NULL;
  }
  int first = 0;
  if (!ws->close_sent && !ws->err && !ws->wr_err)
    first = close_out(ws, code, reason ? reason : "", rlen);
  /* Wait for the peer's close (data is dropped meanwhile). */
  while (!ws->closed && !ws->err && !ws->wr_err) {
    const void *d;
    size_t n;
    int r = next_message(ws, &d, &n, true);
    if (r <= 0)
      break;
  }
  release(ws);
  /* The server closes TCP first; a client waits a moment for that. */
  if (!ws->server && ws->closed) {
    int64_t prev = keel_task_set_deadline(keel_now_ns() + WS_CLIENT_EOF_NS);
    if (prev > 0 && prev < keel_now_ns() + WS_CLIENT_EOF_NS)
      keel_task_set_deadline(prev);
    while (keel_bufstream_fill(ws->bs) > 0)
      keel_bufstream_consume(ws->bs, keel_bufstream_buffered(ws->bs));
    keel_task_set_deadline(prev);
  }
  ws_free(ws);
  return first;
}

int keel_ws_close_code(const keel_ws_t *ws) {
  return ws->close_rcvd ? ws->close_code : KEEL_WS_ABNORMAL;
}

int keel__ws_error(const keel_ws_t *ws) { return ws->err; }

int keel_ws_close_sent(const keel_ws_t *ws) { return ws->close_sent ? ws->sent_code : 0; }

const char *keel_ws_close_reason(const keel_ws_t *ws) {
  return ws->close_reason ? ws->close_reason : "";
}

const char *keel_ws_subprotocol(const keel_ws_t *ws) { return ws->subprotocol; }

bool keel_ws_deflate(const keel_ws_t *ws, keel_ws_deflate_params_t *params) {
  if (ws->z && params)
    *params = ws->z->params;
  return ws->z != NULL;
}

keel_stream_t *keel_ws_stream(keel_ws_t *ws) { return ws_stream(ws); }

void *keel_ws_ctx(const keel_ws_t *ws) { return ws->ctx; }

/* ---- Opening -------------------------------------------------------------- */

/* A time in ms from the options: def for 0 (or less), at most INT32_MAX. */
static int32_t clamp_ms(int64_t ms, int32_t def) {
  return ms <= 0 ? def : ms > INT32_MAX ? INT32_MAX : (int32_t)ms;
}

int keel__ws_new(keel_bufstream_t *bs, keel_tcp_t *tcp, keel_tls_t *tls, bool server,
                 const keel_ws_opts_t *opts, const ws_pmd_params_t *pmd, const char *subprotocol,
                 keel_ws_t **out) {
  static const keel_ws_opts_t none;
  if (!opts)
    opts = &none;
  keel_ws_t *ws = calloc(1, sizeof *ws);
  if (!ws)
    return -ENOMEM;
  ws->bs = bs;
  ws->tcp = tcp;
  ws->tls = tls;
  ws->server = server;
  ws->worker = keel_worker_id();
  ws->on_message = opts->on_message;
  ws->on_close = opts->on_close;
  ws->ctx = opts->ctx;
  ws->max_message = opts->max_message ? opts->max_message : KEEL_WS_DEFAULT_MAX_MESSAGE;
  ws->close_timeout_ms = clamp_ms(opts->close_timeout_ms, 5000);
  ws->ping_interval_ms = clamp_ms(opts->ping_interval_ms, 0);
  ws->pong_timeout_ms = clamp_ms(opts->pong_timeout_ms, 10000);
  ws->idle_timeout_ms = clamp_ms(opts->idle_timeout_ms, 0);
  ws->last_rx = keel_now_ns();
  if (subprotocol && !(ws->subprotocol = strdup(subprotocol))) {
    ws->bs = NULL;
    free(ws);
    return -ENOMEM;
  }
  if (pmd) {
    int rc = -ENOMEM;
    if ((ws->z = calloc(1, sizeof *ws->z))) {
      ws->z->params = *pmd;
      ws->z->min_size = opts->deflate.min_size ? opts->deflate.min_size : 32;
      rc = ws_pmd_open(pmd, server, opts->deflate.level ? opts->deflate.level : 6,
                       opts->deflate.mem_level ? opts->deflate.mem_level : 8, pmd_cache(),
                       &ws->z->pmd);
    }
    if (rc < 0) {
      free(ws->z);
      free(ws->subprotocol);
      free(ws);
      return rc;
    }
  }
  keel__ws_count_open(server, 1);
  *out = ws;
  return 0;
}

int keel_ws_open(keel_stream_t *s, bool server, const keel_ws_opts_t *opts,
                 const keel_ws_deflate_params_t *deflate, keel_ws_t **out) {
  if (!s || !out)
    return -EINVAL;
  keel_bufstream_t *bs;
  int rc = keel_bufstream_open(s, NULL, &bs);
  if (rc < 0)
    return rc;
  keel_tls_t *tls = keel_tls_of(s);
  if ((rc = keel__ws_new(bs, NULL, tls, server, opts, deflate, NULL, out)) < 0) {
    keel_stream_t *inner;
    keel_bufstream_detach(bs, &inner, NULL, 0, NULL);
  }
  return rc;
}

/* ---- The per-message style ------------------------------------------------ */

static int ws_loop(keel_ws_t *ws, bool may_park);

/* Woken from a park: read first (the park's reason is in the first read). */
static int ws_resume(void *arg) { return ws_loop(arg, false); }

int keel__ws_run(void *arg) { return ws_loop(arg, true); }

static int ws_loop(keel_ws_t *ws, bool may_park) {
  keel_task_set_deadline(KEEL_DEADLINE_NONE);
  for (;; may_park = true) {
    release(ws);
    /* Nothing buffered: wait without a stack or a buffer. */
    if (may_park && ws->tcp && !ws->closed && !ws->err && keel_bufstream_buffered(ws->bs) == 0 &&
        (!ws->tls || keel_tls_idle(ws->tls) == 0) && keel_cancelled() == KEEL_CANCEL_NONE) {
      if (ws->msg.cap && !ws->msg_op)
        ws_buf_free(&ws->msg);
      keel_task_set_deadline(next_timer(ws));
      keel_tcp_park(ws->tcp, ws_resume, ws); /* returns only if it cannot park */
      keel_task_set_deadline(KEEL_DEADLINE_NONE);
    }
    const void *data;
    size_t len;
    int op = next_message(ws, &data, &len, true);
    if (op > 0) {
      if (ws->on_message(ws, op, data, len, ws->ctx) < 0 && !ws->close_sent)
        close_out(ws, KEEL_WS_INTERNAL_ERROR, "", 0);
      continue;
    }
    if (op == -ECANCELED && !ws->close_sent) {
      /* The server drains: say goodbye, then wait for the answer. */
      keel_shield_begin(0);
      keel__ws_drain(ws);
      const void *d;
      size_t n;
      while (next_message(ws, &d, &n, true) > 0)
        ;
      keel_shield_end();
    }
    break;
  }
  if (ws->on_close)
    ws->on_close(ws, keel_ws_close_code(ws), ws->ctx);
  keel_shield_begin(keel_now_ns() + MS(ws->close_timeout_ms));
  keel_ws_close(ws, 0, NULL);
  keel_shield_end();
  return 0;
}

void keel__ws_set_request(keel_ws_t *ws, keel_http_request_t *req) { ws->req = req; }

void keel__ws_set_live(keel_ws_t *ws, unsigned *live) { ws->live = live; }

/* A handler that returned without closing its WebSocket: close it. */
int keel__ws_orphan(void *arg) {
  keel_ws_t *ws = arg;
  ws->req = NULL;
  keel_shield_begin(keel_now_ns() + MS(ws->close_timeout_ms));
  keel_ws_close(ws, KEEL_WS_NORMAL, NULL);
  keel_shield_end();
  return 0;
}

int keel__ws_drain(void *arg) {
  keel_ws_t *ws = arg;
  int ms = ws->close_timeout_ms;
  if (ws->closing || ws->close_sent || ws->err || ws->wr_err)
    return ms;
  ws->hook_busy++;
  close_out(ws, KEEL_WS_GOING_AWAY, "", 0);
  ws->hook_busy--;
  return ms;
}

/* ---- The worker's deflate cache ------------------------------------------- */

#include "worker.h"

static void pmd_cache_free(keel__worker_t *w, void *p) {
  (void)w;
  ws_pmd_cache_close(p);
}

static ws_pmd_cache_t *pmd_cache(void) {
  keel__worker_t *w = keel__worker_current();
  if (!w)
    return NULL;
  keel__slot_t *slot = &w->slots[KEEL__SLOT_WS];
  if (!slot->state) {
    ws_pmd_cache_t *c;
    if (ws_pmd_cache_open(&c) < 0)
      return NULL;
    slot->state = c;
    slot->destroy = pmd_cache_free;
  }
  return slot->state;
}
