/* Buffered streams: read_until over fragments and split delimiters, the
 * byte limit and the capacity, end of stream mid-line, peek/consume, reads
 * mixing buffered and direct, both detaches, one reader, cancellation,
 * close under a parked reader, full duplex, use from another worker, and
 * the buffer policy (none held while idle, default buffers cached on the
 * worker). Each case runs over a lab pipe, a lab pipe with short
 * transfers (and, in lab mode, delayed writes) and, on the real backends,
 * TCP on loopback; lab mode runs over many seeds. */
#define KT_GUARD_MS 30000
#include <limits.h>
#include <sys/socket.h>

#include "kt-guard.h"

#include "bufstream-internal.h" /* the worker's buffer cache */

#define LAB_SEEDS 32

/* ---- Transports and the case harness ---------------------------------------- */

enum { T_PIPE, T_PIPE_FAULTY, T_TCP, T_COUNT };
static const char *const transport_name[] = {"lab pipe", "faulty lab pipe", "tcp"};

static int tcp_pair(keel_stream_t **near, keel_stream_t **far) {
  keel_listener_t *l;
  char addr[64];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_tcp_t *c, *s;
  int rc = keel_tcp_connect(addr, &c);
  if (rc == 0) {
    rc = keel_tcp_accept(l, &s);
    if (rc < 0)
      keel_tcp_close(c);
  }
  keel_listener_close(l);
  CHECK_RC(rc);
  *near = keel_tcp_stream(s);
  *far = keel_tcp_stream(c);
  return 0;
}

static int pair_open(int transport, keel_stream_t **near, keel_stream_t **far) {
  if (transport == T_TCP)
    return tcp_pair(near, far);
  keel_lab_faults_t f = {0};
  if (transport == T_PIPE_FAULTY) {
    f.capacity = 1000;
    f.short_permille = 400;
    /* Real sleeps would take a timer tick each: delays in lab mode only. */
    f.delay_max_ns = keel_lab_active() ? 200 * 1000 : 0;
  }
  CHECK_RC(keel_lab_pipe(&f, near, far));
  return 0;
}

/* ---- Helper tasks ------------------------------------------------------------- */

/* A task writing len bytes in random chunks of 1..chunk_max, yielding now
 * and then so that the reader sees fragments, then shutting down writing. */
typedef struct feed {
  keel_stream_t *s;
  const char *data;
  size_t len, chunk_max;
} feed_t;

static int feed_task(void *arg) {
  feed_t *f = arg;
  for (size_t off = 0; off < f->len;) {
    size_t n = 1 + (size_t)keel_random_below(f->chunk_max);
    if (n > f->len - off)
      n = f->len - off;
    CHECK_RC(keel_write_all(f->s, f->data + off, n, NULL));
    off += n;
    if (keel_random_below(4) == 0)
      CHECK_RC(keel_yield());
  }
  CHECK_RC(keel_stream_shutdown(f->s, SHUT_WR));
  return 0;
}

/* A task parked in one fill; its result lands in `result`. */
typedef struct filler {
  keel_bufstream_t *b;
  bool started;
  ssize_t result;
} filler_t;

static int filler_task(void *arg) {
  filler_t *f = arg;
  f->started = true; /* and parks in the fill without switching first */
  f->result = keel_bufstream_fill(f->b);
  return 0;
}

/* A task writing its bytes a little later, once the reader is parked. */
typedef struct late_write {
  keel_stream_t *s;
  char data[16];
} late_write_t;

static int late_write_task(void *arg) {
  late_write_t *lw = arg;
  CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_write_all(lw->s, lw->data, strlen(lw->data), NULL));
  return 0;
}

#define CASE_SCOPES 2

/* A case's streams, and its helper tasks: their state lives here, not in
 * the case's frame, and the harness closes their scopes when a failed
 * check returns early, before anything they use is gone. */
typedef struct bcase {
  keel_bufstream_t *b; /* over the near end */
  keel_stream_t *bs;   /* its stream view */
  keel_stream_t *peer; /* the far end */
  keel_stream_t *top;  /* what is closed at the end (NULL: already closed) */
  size_t capacity;
  int transport;
  feed_t feed;
  filler_t filler;
  late_write_t late;
  keel_scope_t *scopes[CASE_SCOPES]; /* helper tasks' scopes not closed yet */
} bcase_t;

/* Spawns fn(arg) in a scope of its own, so that it can be cancelled alone. */
static keel_scope_t *case_spawn(bcase_t *c, keel_task_fn fn, void *arg) {
  for (int i = 0; i < CASE_SCOPES; i++) {
    if (c->scopes[i] == NULL)
      return c->scopes[i] = kt_spawn_in_scope(fn, arg, KEEL_WORKER_CURRENT);
  }
  return NULL;
}

/* Joins and closes a scope from case_spawn: its tasks' result. */
static int case_join(bcase_t *c, keel_scope_t *s) {
  for (int i = 0; i < CASE_SCOPES; i++) {
    if (c->scopes[i] == s)
      c->scopes[i] = NULL;
  }
  return keel_scope_close(s);
}

static keel_scope_t *start_feed(bcase_t *c, const char *data, size_t len, size_t chunk_max) {
  c->feed = (feed_t){c->peer, data, len, chunk_max};
  return case_spawn(c, feed_task, &c->feed);
}

/* Starts a filler and returns once it is parked. */
static keel_scope_t *start_filler(bcase_t *c) {
  c->filler = (filler_t){.b = c->b, .result = 1};
  keel_scope_t *s = case_spawn(c, filler_task, &c->filler);
  while (s && !c->filler.started && keel_yield() == 0)
    ;
  return s;
}

static keel_scope_t *start_late_write(bcase_t *c, const char *data) {
  c->late.s = c->peer;
  snprintf(c->late.data, sizeof c->late.data, "%s", data);
  return case_spawn(c, late_write_task, &c->late);
}

typedef int (*case_fn)(bcase_t *c);
typedef struct case_spec {
  case_fn fn;
  size_t capacity; /* 0: the default */
} case_spec_t;

static int run_case_on(const case_spec_t *spec, int transport) {
  bcase_t c = {.transport = transport};
  keel_stream_t *near;
  CHECK_RC(pair_open(transport, &near, &c.peer));
  keel_bufstream_opts_t o = {.capacity = spec->capacity};
  int rc = keel_bufstream_open(near, &o, &c.b);
  if (rc < 0) {
    keel_close(near);
    keel_close(c.peer);
    CHECK_RC(rc);
  }
  c.bs = c.top = keel_bufstream_stream(c.b);
  c.capacity = spec->capacity ? spec->capacity : KEEL_BUFSTREAM_DEFAULT_CAPACITY;
  rc = spec->fn(&c);
  for (int i = 0; i < CASE_SCOPES; i++)
    keel_scope_close(c.scopes[i]); /* a failed check cancelled them */
  keel_close(c.top);
  keel_close(c.peer);
  return rc;
}

/* Body: the case on every transport this backend has. */
static int run_case(void *arg) {
  for (int t = 0; t < T_COUNT; t++) {
    if (t == T_TCP && keel_lab_active())
      continue; /* lab mode drives no descriptor */
    int rc = run_case_on(arg, t);
    if (rc != 0) {
      fprintf(stderr, "# failed over %s\n", transport_name[t]);
      return rc;
    }
  }
  return 0;
}

static void run(case_fn fn, size_t capacity) {
  case_spec_t spec = {fn, capacity};
  kt_run_where(KT_ON_REAL | KT_ON_LAB, run_case, &spec, 1, 1, LAB_SEEDS);
}

/* ---- Helpers ------------------------------------------------------------------ */

/* Byte i of a test stream (salt tells the directions apart). */
static unsigned char pattern(uint64_t i, unsigned salt) {
  return (unsigned char)(((i + salt) * 0x9E3779B97F4A7C15ull) >> 56);
}

/* Fills until at least n bytes are buffered. */
static int fill_to(keel_bufstream_t *b, size_t n) {
  while (keel_bufstream_buffered(b) < n)
    CHECK_EQ(keel_bufstream_fill(b) > 0, 1);
  return 0;
}

static int check_peek(keel_bufstream_t *b, const char *want) {
  size_t len;
  const void *p = keel_bufstream_peek(b, &len);
  CHECK_EQ(len, strlen(want));
  CHECK(p != NULL && memcmp(p, want, len) == 0);
  return 0;
}

/* ---- Cases ---------------------------------------------------------------------- */

#define LINES 300

/* Lines of varied length, written in fragments of 1..7 bytes. */
static int lines_case(bcase_t *c) {
  static char text[LINES * 64];
  size_t len = 0;
  for (int i = 0; i < LINES; i++)
    len += (size_t)snprintf(text + len, sizeof text - len, "line %d: %.*s\r\n", i, i % 37,
                            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
  keel_scope_t *s = start_feed(c, text, len, 7);
  CHECK(s != NULL);
  size_t off = 0;
  for (int lines = 0;; lines++) {
    const void *start;
    ssize_t n = keel_bufstream_read_until(c->b, "\r\n", 2, 256, &start);
    if (n == -EPIPE) {
      CHECK_EQ(lines, LINES);
      break;
    }
    CHECK_RC(n);
    CHECK(off + (size_t)n <= len && memcmp(start, text + off, (size_t)n) == 0);
    CHECK(memmem(start, (size_t)n - 1, "\r\n", 2) == NULL); /* the first delimiter */
    keel_bufstream_consume(c->b, (size_t)n);
    off += (size_t)n;
  }
  CHECK_EQ(off, len);
  CHECK_EQ(keel_bufstream_buffered(c->b), 0);
  CHECK_EQ(keel_bufstream_held(c->b), 0);
  CHECK_RC(case_join(c, s));
  return 0;
}

/* "\r\n\r\n" cut at each place: the first part is buffered by a fill of
 * its own, then one read_until finds the delimiter across the fill that
 * brings the rest, written only once it is parked. */
static int split_delim_case(bcase_t *c) {
  for (size_t cut = 1; cut < 4; cut++) {
    char first[16], second[16];
    snprintf(first, sizeof first, "head%.*s", (int)cut, "\r\n\r\n");
    snprintf(second, sizeof second, "%stail", &"\r\n\r\n"[cut]);
    CHECK_RC(keel_write_all(c->peer, first, strlen(first), NULL));
    CHECK_RC(fill_to(c->b, strlen(first)));
    CHECK_RC(check_peek(c->b, first));
    keel_scope_t *s = start_late_write(c, second);
    CHECK(s != NULL);
    const void *start;
    CHECK_EQ(keel_bufstream_read_until(c->b, "\r\n\r\n", 4, 100, &start), 8);
    CHECK(memcmp(start, "head\r\n\r\n", 8) == 0);
    CHECK_RC(case_join(c, s));
    keel_bufstream_consume(c->b, 8);
    char tail[4];
    CHECK_RC(keel_read_exact(c->bs, tail, 4, NULL));
    CHECK(memcmp(tail, "tail", 4) == 0);
    CHECK_EQ(keel_bufstream_held(c->b), 0);
  }
  return 0;
}

/* Capacity 256: the limit, then the capacity itself; the stream stays
 * usable after -EMSGSIZE, with every byte still there. */
static int limit_case(bcase_t *c) {
  char line[101];
  memset(line, 'a', 100);
  line[100] = '\n';
  CHECK_RC(keel_write_all(c->peer, line, sizeof line, NULL));
  const void *start;
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, 64, &start), -EMSGSIZE);
  CHECK(keel_bufstream_buffered(c->b) >= 64);
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, 100, &start), -EMSGSIZE);
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, 101, &start), 101);
  CHECK(memcmp(start, line, 101) == 0);
  keel_bufstream_consume(c->b, 101);

  char big[300];
  for (size_t i = 0; i < sizeof big; i++)
    big[i] = (char)('A' + i % 26);
  CHECK_RC(keel_write_all(c->peer, big, sizeof big, NULL));
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, SIZE_MAX, &start), -EMSGSIZE);
  CHECK_EQ(keel_bufstream_buffered(c->b), 256);
  CHECK_EQ(keel_bufstream_fill(c->b), -EMSGSIZE);
  keel_bufstream_consume(c->b, 200);
  CHECK_RC(keel_write_all(c->peer, "\n", 1, NULL));
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, SIZE_MAX, &start), 101);
  CHECK(memcmp(start, big + 200, 100) == 0);
  keel_bufstream_consume(c->b, 101);
  CHECK_EQ(keel_bufstream_held(c->b), 0);
  /* A limit shorter than the delimiter can hold none. */
  CHECK_EQ(keel_bufstream_read_until(c->b, "\r\n", 2, 1, &start), -EMSGSIZE);
  CHECK_EQ(keel_bufstream_read_until(c->b, "", 0, 10, &start), -EINVAL);
  return 0;
}

/* End of stream in the middle of a line: -EPIPE, and the bytes stay. */
static int eof_midline_case(bcase_t *c) {
  CHECK_RC(keel_write_all(c->peer, "partial line", 12, NULL));
  CHECK_RC(keel_stream_shutdown(c->peer, SHUT_WR));
  const void *start;
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, 1024, &start), -EPIPE);
  CHECK_RC(check_peek(c->b, "partial line"));
  CHECK_EQ(keel_bufstream_fill(c->b), 0);
  char buf[64];
  CHECK_EQ(keel_read(c->bs, buf, sizeof buf), 12);
  CHECK(memcmp(buf, "partial line", 12) == 0);
  CHECK_EQ(keel_bufstream_held(c->b), 0);
  CHECK_EQ(keel_read(c->bs, buf, sizeof buf), 0);
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, 1024, &start), -EPIPE);
  CHECK_EQ(keel_bufstream_held(c->b), 0);
  return 0;
}

/* Peek, consume and reads of the same bytes; a default-sized buffer goes
 * back to the worker's cache when the last byte is consumed. */
static int peek_consume_case(bcase_t *c) {
  keel__worker_t *w = keel__worker_current();
  size_t cached = keel__bufstream_cached(w);
  size_t len = 1;
  CHECK(keel_bufstream_peek(c->b, &len) == NULL);
  CHECK_EQ(len, 0);
  CHECK_EQ(keel_bufstream_held(c->b), 0);
  CHECK_RC(keel_write_all(c->peer, "hello world", 11, NULL));
  CHECK_RC(fill_to(c->b, 11));
  CHECK_EQ(keel_bufstream_held(c->b), c->capacity);
  if (cached > 0)
    CHECK_EQ(keel__bufstream_cached(w), cached - 1); /* taken from the cache, no malloc */
  CHECK_RC(check_peek(c->b, "hello world"));
  keel_bufstream_consume(c->b, 6);
  CHECK_RC(check_peek(c->b, "world"));
  char buf[3];
  CHECK_EQ(keel_read(c->bs, buf, 3), 3);
  CHECK(memcmp(buf, "wor", 3) == 0);
  CHECK_RC(check_peek(c->b, "ld"));
  CHECK_EQ(keel_bufstream_held(c->b), c->capacity);
  keel_bufstream_consume(c->b, 2);
  CHECK_EQ(keel_bufstream_held(c->b), 0);
  CHECK_EQ(keel_bufstream_buffered(c->b), 0);
  CHECK_EQ(keel__bufstream_cached(w), cached > 0 ? cached : 1);
  keel_bufstream_consume(c->b, 0);
  return 0;
}

/* Capacity 256, 8 KiB of pattern: reads of every size, one iovec or two.
 * Buffered bytes come first and alone; with none buffered a read of the
 * capacity or more holds no buffer (it lands in the caller's memory). */
static int mixed_reads_case(bcase_t *c) {
  enum { TOTAL = 8192 };
  static char data[TOTAL];
  for (size_t i = 0; i < TOTAL; i++)
    data[i] = (char)pattern(i, 7);
  keel_scope_t *s = NULL;
  if (c->transport == T_PIPE_FAULTY) {
    s = start_feed(c, data, TOTAL, 2000);
    CHECK(s != NULL);
  } else {
    CHECK_RC(keel_write_all(c->peer, data, TOTAL, NULL)); /* the pipe or socket holds it */
    CHECK_RC(keel_stream_shutdown(c->peer, SHUT_WR));
  }
  /* After 10, the 1000 takes the rest buffered and the next goes direct. */
  static const size_t sizes[] = {10, 1000, 1000, 3, 256, 255, 4000, 1, 700, 5000};
  enum { NSIZES = sizeof sizes / sizeof sizes[0] };
  static char buf[5000];
  size_t off = 0, biggest_direct = 0;
  for (unsigned i = 0;; i++) {
    size_t want = sizes[i % NSIZES], before = keel_bufstream_buffered(c->b);
    struct iovec iov[2] = {{buf, want / 2}, {buf + want / 2, want - want / 2}};
    ssize_t n = i % 3 == 0 ? keel_read(c->bs, buf, want) : keel_readv(c->bs, iov, 2);
    CHECK_RC(n);
    if (n == 0)
      break;
    if (before > 0)
      CHECK((size_t)n <= before); /* buffered bytes alone, no read */
    if (before == 0 && want >= 256) {
      CHECK_EQ(keel_bufstream_held(c->b), 0);
      biggest_direct = (size_t)n > biggest_direct ? (size_t)n : biggest_direct;
    }
    CHECK(off + (size_t)n <= TOTAL && memcmp(buf, data + off, (size_t)n) == 0);
    off += (size_t)n;
  }
  CHECK_EQ(off, TOTAL);
  if (c->transport == T_PIPE)
    CHECK(biggest_direct > 256); /* more than a buffer could have held */
  CHECK_EQ(keel_bufstream_held(c->b), 0);
  CHECK_RC(case_join(c, s));
  return 0;
}

/* An HTTP upgrade: the headers are consumed, the first bytes of the next
 * protocol are buffered; detaching hands them over with the inner stream,
 * and they come before what the inner stream reads next. */
static int detach_rest_case(bcase_t *c) {
  static const char headers[] = "GET /chat HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
  size_t hlen = sizeof headers - 1;
  CHECK_RC(keel_write_all(c->peer, headers, hlen, NULL));
  CHECK_RC(keel_write_all(c->peer, "FRAME-O", 7, NULL));
  const void *start;
  CHECK_EQ(keel_bufstream_read_until(c->b, "\r\n\r\n", 4, 1024, &start), hlen);
  CHECK(memcmp(start, headers, hlen) == 0);
  CHECK_RC(fill_to(c->b, hlen + 7));
  keel_bufstream_consume(c->b, hlen);

  char rest[64];
  size_t rest_len = 99;
  keel_stream_t *inner = NULL;
  CHECK_EQ(keel_bufstream_detach(c->b, &inner, rest, 6, &rest_len), -EMSGSIZE);
  CHECK(inner == NULL && rest_len == 99);
  CHECK_RC(check_peek(c->b, "FRAME-O")); /* nothing done: b still works */
  CHECK_RC(keel_bufstream_detach(c->b, &inner, rest, sizeof rest, &rest_len));
  c->top = inner;
  CHECK_EQ(rest_len, 7);
  CHECK(memcmp(rest, "FRAME-O", 7) == 0);

  CHECK_RC(keel_write_all(c->peer, "NE|FRAME-TWO", 12, NULL));
  CHECK_RC(keel_stream_shutdown(c->peer, SHUT_WR));
  char next[32];
  memcpy(next, rest, rest_len);
  CHECK_RC(keel_read_exact(inner, next + rest_len, 12, NULL));
  CHECK(memcmp(next, "FRAME-ONE|FRAME-TWO", 19) == 0);
  CHECK_EQ(keel_read(inner, next, sizeof next), 0);
  return 0;
}

/* keel_stream_detach refuses while bytes are buffered or a fill is parked
 * (-EBUSY, nothing done), and hands the inner stream back when empty. */
static int detach_generic_case(bcase_t *c) {
  keel_stream_t *inner = c->peer;
  CHECK_RC(keel_write_all(c->peer, "abc", 3, NULL));
  CHECK_RC(fill_to(c->b, 3));
  CHECK_EQ(keel_stream_detach(c->bs, &inner), -EBUSY);
  CHECK(inner == NULL);
  CHECK_RC(check_peek(c->b, "abc"));
  keel_bufstream_consume(c->b, 3);

  keel_scope_t *s = start_filler(c);
  CHECK(s != NULL);
  CHECK_EQ(keel_stream_detach(c->bs, &inner), -EBUSY);
  size_t rest_len;
  CHECK_EQ(keel_bufstream_detach(c->b, &inner, NULL, 0, &rest_len), -EBUSY);
  CHECK_RC(keel_write_all(c->peer, "d", 1, NULL));
  CHECK_RC(case_join(c, s));
  CHECK_EQ(c->filler.result, 1);
  keel_bufstream_consume(c->b, 1);

  CHECK_RC(keel_stream_detach(c->bs, &inner));
  c->top = inner;
  CHECK_RC(keel_write_all(c->peer, "xyz", 3, NULL));
  char buf[3];
  CHECK_RC(keel_read_exact(inner, buf, 3, NULL));
  CHECK(memcmp(buf, "xyz", 3) == 0);
  return 0;
}

/* One reader at a time: a second one gets -EBUSY while a fill is parked. */
static int one_reader_case(bcase_t *c) {
  keel_scope_t *s = start_filler(c);
  CHECK(s != NULL);
  char buf[8];
  const void *start;
  CHECK_EQ(keel_bufstream_fill(c->b), -EBUSY);
  CHECK_EQ(keel_read(c->bs, buf, sizeof buf), -EBUSY);
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, 10, &start), -EBUSY);
  /* Writing meanwhile is full duplex, not a second reader. */
  CHECK_EQ(keel_write(c->bs, "ping", 4) > 0, 1);
  CHECK_RC(keel_write_all(c->peer, "x\n", 2, NULL));
  CHECK_RC(case_join(c, s));
  CHECK(c->filler.result > 0);
  CHECK_EQ(keel_bufstream_read_until(c->b, "\n", 1, 10, &start), 2);
  keel_bufstream_consume(c->b, 2);
  return 0;
}

/* A cancelled fill loses nothing: the bytes buffered before it stay, in
 * order. An idle fill waits holding no buffer, on every transport. */
static int cancel_fill_case(bcase_t *c) {
  CHECK_RC(keel_write_all(c->peer, "abc", 3, NULL));
  CHECK_RC(fill_to(c->b, 3));
  keel_scope_t *s = start_filler(c);
  CHECK(s != NULL);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  CHECK_RC(case_join(c, s));
  CHECK_EQ(c->filler.result, -ECANCELED);
  CHECK_RC(check_peek(c->b, "abc"));

  /* A deadline passing in the fill: the same. */
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 2 * KEEL_NS_PER_MS);
  ssize_t n = keel_bufstream_fill(c->b);
  keel_task_set_deadline(prev);
  CHECK_EQ(n, -ETIMEDOUT);
  CHECK_RC(check_peek(c->b, "abc"));
  CHECK_RC(keel_write_all(c->peer, "def", 3, NULL));
  char buf[6];
  CHECK_RC(keel_read_exact(c->bs, buf, 6, NULL));
  CHECK(memcmp(buf, "abcdef", 6) == 0);
  CHECK_EQ(keel_bufstream_held(c->b), 0);

  s = start_filler(c);
  CHECK(s != NULL);
  CHECK_EQ(keel_bufstream_held(c->b), 0); /* parked without a buffer */
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  CHECK_RC(case_join(c, s));
  CHECK_EQ(c->filler.result, -ECANCELED);
  CHECK_EQ(keel_bufstream_held(c->b), 0);
  return 0;
}

/* Closing the stream under a parked reader wakes it with -EBADF; the
 * bufstream is freed once it is out (ASan checks the order). */
static int close_parked_case(bcase_t *c) {
  keel_scope_t *s = start_filler(c);
  CHECK(s != NULL);
  c->top = NULL;
  CHECK_RC(keel_close(c->bs));
  CHECK_RC(case_join(c, s));
  CHECK_EQ(c->filler.result, -EBADF);
  return 0;
}

/* The stream view: queries pass down, a read of nothing is refused, and
 * shutdown passes through. */
static int stream_view_case(bcase_t *c) {
  const char *transport = NULL;
  CHECK_RC(keel_stream_query(c->bs, KEEL_STREAM_Q_TRANSPORT, &transport, sizeof transport));
  CHECK(strcmp(transport, c->transport == T_TCP ? "tcp" : "lab-pipe") == 0);
  int worker = -1;
  CHECK_RC(keel_stream_query(c->bs, KEEL_STREAM_Q_WORKER, &worker, sizeof worker));
  CHECK_EQ(worker, keel_worker_id());
  char buf[4];
  CHECK_EQ(keel_read(c->bs, buf, 0), -EINVAL);
  CHECK_RC(keel_stream_shutdown(c->bs, SHUT_WR));
  CHECK_EQ(keel_read(c->peer, buf, sizeof buf), 0);
  CHECK_RC(keel_write_all(c->peer, "ok", 2, NULL));
  CHECK_RC(keel_stream_wait_readable(c->bs));
  CHECK_EQ(keel_read(c->bs, buf, 1), 1);
  CHECK_RC(keel_stream_wait_readable(c->bs)); /* "k" is buffered: at once */
  CHECK_EQ(keel_read(c->bs, buf + 1, 1), 1);
  CHECK(memcmp(buf, "ok", 2) == 0);
  return 0;
}

/* ---- Full duplex ----------------------------------------------------------------- */

#define DUPLEX_BYTES ((size_t)1 << 20)

typedef struct duplex_end {
  keel_stream_t *s;
  keel_bufstream_t *b; /* the reading side's buffered stream */
  unsigned salt;       /* of the bytes this end writes */
  char wbuf[3000];     /* the writer's and the reader's own: both park */
  char rbuf[40000];
} duplex_end_t;

/* Writes DUPLEX_BYTES of pattern in random pieces, one iovec or two. */
static int duplex_writer(void *arg) {
  duplex_end_t *e = arg;
  char *chunk = e->wbuf;
  for (size_t off = 0; off < DUPLEX_BYTES;) {
    size_t n = 1 + (size_t)keel_random_below(sizeof e->wbuf);
    if (n > DUPLEX_BYTES - off)
      n = DUPLEX_BYTES - off;
    for (size_t i = 0; i < n; i++)
      chunk[i] = (char)pattern(off + i, e->salt);
    struct iovec iov[2] = {{chunk, n / 3}, {chunk + n / 3, n - n / 3}};
    ssize_t w = keel_random_below(2) ? keel_write(e->s, chunk, n) : keel_writev(e->s, iov, 2);
    CHECK_RC(w);
    off += (size_t)w;
  }
  CHECK_RC(keel_stream_shutdown(e->s, SHUT_WR));
  return 0;
}

/* Reads the other end's pattern to its end through reads of random size
 * (buffered and direct) and peek/consume, checking every byte. */
static int duplex_reader(void *arg) {
  duplex_end_t *e = arg;
  char *buf = e->rbuf;
  size_t off = 0;
  for (;;) {
    ssize_t n;
    const void *p = NULL;
    size_t len = 0;
    if (keel_random_below(4) == 0)
      p = keel_bufstream_peek(e->b, &len);
    if (p) {
      n = (ssize_t)(1 + keel_random_below(len));
    } else {
      p = buf;
      n = keel_read(e->s, buf, 1 + (size_t)keel_random_below(sizeof e->rbuf));
      CHECK_RC(n);
      if (n == 0)
        break;
    }
    const unsigned char *got = p;
    for (ssize_t i = 0; i < n; i++)
      if (got[i] != pattern(off + (size_t)i, e->salt ^ 1))
        KT_FAIL("byte %zu: %u, expected %u", off + (size_t)i, got[i],
                pattern(off + (size_t)i, e->salt ^ 1));
    if (p != buf)
      keel_bufstream_consume(e->b, (size_t)n);
    off += (size_t)n;
  }
  CHECK_EQ(off, DUPLEX_BYTES);
  CHECK_EQ(keel_bufstream_held(e->b), 0);
  return 0;
}

/* Both ends buffered; on each, one task reads while another writes. */
static int duplex_case(bcase_t *c) {
  keel_bufstream_t *far;
  CHECK_RC(keel_bufstream_open(c->peer, NULL, &far));
  c->peer = keel_bufstream_stream(far);
  duplex_end_t *ends = calloc(2, sizeof *ends);
  CHECK(ends != NULL);
  ends[0] = (duplex_end_t){.s = c->bs, .b = c->b, .salt = 2};
  ends[1] = (duplex_end_t){.s = c->peer, .b = far, .salt = 3};
  keel_scope_t *s;
  int rc = keel_scope_open(NULL, &s);
  for (int i = 0; i < 4 && rc == 0; i++)
    rc = keel_spawn(s, i % 2 ? duplex_reader : duplex_writer, &ends[i / 2], NULL);
  int join_rc = s ? keel_scope_close(s) : 0;
  free(ends);
  CHECK_RC(rc);
  CHECK_RC(join_rc);
  return 0;
}

/* ---- Another worker ----------------------------------------------------------------- */

typedef struct foreign {
  keel_bufstream_t *b;
  keel_stream_t *far;
} foreign_t;

static int foreign_task(void *arg) {
  foreign_t *f = arg;
  CHECK(keel_worker_id() != 0);
  keel_stream_t *bs = keel_bufstream_stream(f->b), *inner;
  char buf[8];
  const void *start;
  size_t rest_len;
  CHECK_EQ(keel_bufstream_fill(f->b), -EXDEV);
  CHECK_EQ(keel_read(bs, buf, sizeof buf), -EXDEV);
  CHECK_EQ(keel_bufstream_read_until(f->b, "\n", 1, 8, &start), -EXDEV);
  CHECK_EQ(keel_write(bs, "x", 1), -EXDEV);
  CHECK_EQ(keel_stream_wait_readable(bs), -EXDEV);
  CHECK_EQ(keel_stream_detach(bs, &inner), -EXDEV);
  CHECK_EQ(keel_bufstream_detach(f->b, &inner, buf, sizeof buf, &rest_len), -EXDEV);
  CHECK_EQ(keel_close(bs), -EXDEV);
  keel_bufstream_t *other;
  CHECK_EQ(keel_bufstream_open(f->far, NULL, &other), -EXDEV);
  CHECK(other == NULL);
  return 0;
}

/* A bufstream over worker 0's stream, used from worker 1: -EXDEV, nothing
 * done; it still works on worker 0 afterwards. */
static int foreign_body(void *arg) {
  (void)arg;
  keel_stream_t *near, *far;
  CHECK_RC(keel_lab_pipe(NULL, &near, &far));
  foreign_t f = {NULL, far};
  CHECK_RC(keel_bufstream_open(near, NULL, &f.b));
  CHECK_RC(keel_write_all(far, "hi\n", 3, NULL));
  keel_scope_t *s = kt_spawn_in_scope(foreign_task, &f, KEEL_WORKER(1));
  CHECK(s != NULL);
  int rc = keel_scope_close(s);
  const void *start;
  if (rc == 0)
    rc = keel_bufstream_read_until(f.b, "\n", 1, 8, &start) == 3 ? 0 : -EPROTO;
  keel_close(keel_bufstream_stream(f.b));
  keel_close(far);
  CHECK_RC(rc);
  return 0;
}

/* Open's own checks. */
static int open_args_body(void *arg) {
  (void)arg;
  keel_stream_t *near, *far;
  CHECK_RC(keel_lab_pipe(NULL, &near, &far));
  keel_bufstream_t *b = (keel_bufstream_t *)1;
  keel_bufstream_opts_t huge = {.capacity = (size_t)SSIZE_MAX + 1};
  CHECK_EQ(keel_bufstream_open(near, &huge, &b), -EINVAL);
  CHECK(b == NULL);
  CHECK_EQ(keel_bufstream_open(NULL, NULL, &b), -EINVAL);
  keel_bufstream_opts_t zero = {0};
  CHECK_RC(keel_bufstream_open(near, &zero, &b));
  CHECK_EQ(keel_bufstream_held(b), 0); /* nothing allocated for reading yet */
  CHECK_RC(keel_close(keel_bufstream_stream(b)));
  CHECK_RC(keel_close(far));
  return 0;
}

/* ---- cmocka ---------------------------------------------------------------------- */

static void test_lines(void **state) {
  (void)state;
  run(lines_case, 0);
  run(lines_case, 64); /* lines nearly as long as the buffer: compaction */
}
static void test_split_delimiter(void **state) {
  (void)state;
  run(split_delim_case, 0);
}
static void test_limit(void **state) {
  (void)state;
  run(limit_case, 256);
}
static void test_eof_midline(void **state) {
  (void)state;
  run(eof_midline_case, 0);
}
static void test_peek_consume(void **state) {
  (void)state;
  run(peek_consume_case, 0);
}
static void test_mixed_reads(void **state) {
  (void)state;
  run(mixed_reads_case, 256);
}
static void test_detach_rest(void **state) {
  (void)state;
  run(detach_rest_case, 0);
}
static void test_detach_generic(void **state) {
  (void)state;
  run(detach_generic_case, 0);
}
static void test_one_reader(void **state) {
  (void)state;
  run(one_reader_case, 0);
}
static void test_cancel_fill(void **state) {
  (void)state;
  run(cancel_fill_case, 0);
}
static void test_close_parked(void **state) {
  (void)state;
  run(close_parked_case, 0);
}
static void test_stream_view(void **state) {
  (void)state;
  run(stream_view_case, 0);
}
static void test_full_duplex(void **state) {
  (void)state;
  run(duplex_case, 0);
  run(duplex_case, 512); /* small buffers: many fills, many direct reads */
}
static void test_other_worker(void **state) {
  (void)state;
  kt_run_real_body(foreign_body, NULL, 2);
}
static void test_open_args(void **state) {
  (void)state;
  kt_run_body(open_args_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_args),       cmocka_unit_test(test_lines),
      cmocka_unit_test(test_split_delimiter), cmocka_unit_test(test_limit),
      cmocka_unit_test(test_eof_midline),     cmocka_unit_test(test_peek_consume),
      cmocka_unit_test(test_mixed_reads),     cmocka_unit_test(test_detach_rest),
      cmocka_unit_test(test_detach_generic),  cmocka_unit_test(test_one_reader),
      cmocka_unit_test(test_cancel_fill),     cmocka_unit_test(test_close_parked),
      cmocka_unit_test(test_stream_view),     cmocka_unit_test(test_full_duplex),
      cmocka_unit_test(test_other_worker),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
