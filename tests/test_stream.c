/* The stream calls' own contract, the same for every stream: 0 from a read
 * means end of stream and nothing else, so a read of nothing is refused. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "keel/stream-impl.h"
#include "kt-guard.h"

/* a and b are the two ends of one connection. */
static int zero_reads(keel_stream_t *a, keel_stream_t *b, void *arg) {
  (void)arg;
  char buf[8];
  CHECK_EQ(keel_read(a, buf, 0), -EINVAL);
  struct iovec empty[2] = {{buf, 0}, {buf + 1, 0}};
  CHECK_EQ(keel_readv(a, empty, 2), -EINVAL);
  CHECK_EQ(keel_readv(a, empty, 0), -EINVAL);
  CHECK_EQ(keel_readv(a, empty, IOV_MAX + 1), -EINVAL);
  /* An empty iovec ahead of a real one is fine. */
  struct iovec mixed[2] = {{buf, 0}, {buf, sizeof buf}};
  CHECK_RC(keel_write_all(b, "hi", 2, NULL));
  CHECK_EQ(keel_readv(a, mixed, 2), 2);
  CHECK(buf[0] == 'h' && buf[1] == 'i');
  /* And the stream still reports the real end of stream as 0. */
  CHECK_RC(keel_stream_shutdown(b, SHUT_WR));
  CHECK_EQ(keel_read(a, buf, sizeof buf), 0);
  return 0;
}

/* ---- A pair of connected streams on any backend ------------------------- */

typedef int (*pair_fn)(keel_stream_t *a, keel_stream_t *b, void *arg);

/* Runs fn over the two ends of a TCP connection (real backends) or a lab
 * pipe (lab mode; with short transfers and delays unless plain), and
 * closes them. */
static int with_pair(pair_fn fn, void *arg, bool plain) {
  if (keel_lab_active()) {
    keel_lab_faults_t f = {.short_permille = 300, .delay_max_ns = 50000, .capacity = 4096};
    keel_stream_t *a, *b;
    CHECK_RC(keel_lab_pipe(plain ? NULL : &f, &a, &b));
    int rc = fn(a, b, arg);
    keel_close(a);
    keel_close(b);
    return rc;
  }
  keel_listener_t *l;
  char addr[64];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_tcp_t *c, *s;
  CHECK_RC(keel_tcp_connect(addr, &c));
  CHECK_RC(keel_tcp_accept(l, &s));
  int rc = fn(keel_tcp_stream(s), keel_tcp_stream(c), arg);
  keel_tcp_close(c);
  keel_tcp_close(s);
  keel_listener_close(l);
  return rc;
}

/* A test body that runs the pair function it is given. */
static int pair_body(void *fn) { return with_pair((pair_fn)fn, NULL, false); }
/* The same without faults, for checks of exact counts. */
static int pair_body_plain(void *fn) { return with_pair((pair_fn)fn, NULL, true); }

static void test_zero_length_read(void **state) {
  (void)state;
  kt_run_body(pair_body_plain, (void *)zero_reads, 1);
}

static unsigned char pattern(size_t i, unsigned salt) {
  return (unsigned char)((i * 31 + salt) % 251);
}

/* ---- Full duplex: a reader and a writer on each end at once ------------- */

#define DUPLEX_IOVS 7

typedef struct flow {
  keel_stream_t *s;
  size_t total;
  unsigned salt;
  int rc;
} flow_t;

/* Writes total patterned bytes with keel_writev_all over odd-sized iovecs. */
static int writer_task(void *arg) {
  flow_t *f = arg;
  unsigned char *buf = malloc(f->total);
  CHECK(buf != NULL);
  for (size_t i = 0; i < f->total; i++)
    buf[i] = pattern(i, f->salt);
  size_t off = 0;
  while (off < f->total) {
    struct iovec iov[DUPLEX_IOVS];
    int n = 0;
    for (size_t len = 1 + off % 9000; n < DUPLEX_IOVS && off < f->total; n++, len = len * 3 + 1) {
      size_t take = len < f->total - off ? len : f->total - off;
      iov[n] = (struct iovec){buf + off, take};
      off += take;
    }
    size_t written = 0;
    f->rc = keel_writev_all(f->s, iov, n, &written);
    if (f->rc < 0)
      break;
  }
  free(buf);
  return f->rc;
}

static int reader_task(void *arg) {
  flow_t *f = arg;
  unsigned char buf[5000];
  size_t got = 0;
  while (got < f->total) {
    ssize_t n = keel_read(f->s, buf, sizeof buf);
    CHECK(n > 0);
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != pattern(got + (size_t)i, f->salt))
        KT_FAIL("byte %zu of a flow: %u, expected %u", got + (size_t)i, buf[i],
                pattern(got + (size_t)i, f->salt));
    got += (size_t)n;
  }
  return 0;
}

static int duplex(keel_stream_t *a, keel_stream_t *b, void *arg) {
  (void)arg;
  size_t total = keel_lab_active() ? 300000 : 8u << 20;
  flow_t ab_w = {a, total, 1, 0}, ab_r = {b, total, 1, 0};
  flow_t ba_w = {b, total, 2, 0}, ba_r = {a, total, 2, 0};
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(&(keel_scope_opts_t){.flags = KEEL_SCOPE_FAIL_FAST}, &sc));
  CHECK_RC(keel_spawn(sc, reader_task, &ab_r, NULL));
  CHECK_RC(keel_spawn(sc, reader_task, &ba_r, NULL));
  CHECK_RC(keel_spawn(sc, writer_task, &ab_w, NULL));
  CHECK_RC(keel_spawn(sc, writer_task, &ba_w, NULL));
  int rc = keel_scope_close(sc);
  CHECK_RC(rc);
  return 0;
}

static void test_full_duplex(void **state) {
  (void)state;
  kt_run_body(pair_body, (void *)duplex, 1);
}

/* ---- keel_writev_all: many iovecs, empty ones, short writes ------------- */

static int writev_all_pair(keel_stream_t *a, keel_stream_t *b, void *arg) {
  (void)arg;
  enum { N = 200 };
  static unsigned char src[N * 13];
  struct iovec iov[N];
  size_t total = 0;
  for (int i = 0; i < N; i++) {
    size_t len = (size_t)(i % 5 == 0 ? 0 : i % 13);
    iov[i] = (struct iovec){src + total, len};
    total += len;
  }
  for (size_t i = 0; i < total; i++)
    src[i] = pattern(i, 7);
  struct iovec copy[N];
  memcpy(copy, iov, sizeof iov);
  size_t written = 0;
  CHECK_RC(keel_writev_all(b, iov, N, &written));
  CHECK_EQ(written, total);
  CHECK(memcmp(copy, iov, sizeof iov) == 0); /* the caller's iovecs are untouched */
  unsigned char dst[N * 13];
  size_t got = 0;
  CHECK_RC(keel_read_exact(a, dst, total, &got));
  CHECK(memcmp(src, dst, total) == 0);
  CHECK_RC(keel_writev_all(b, iov, 0, &written)); /* nothing to write */
  CHECK_EQ(written, 0);
  CHECK_EQ(keel_writev_all(b, iov, -1, &written), -EINVAL);
  return 0;
}

static void test_writev_all(void **state) {
  (void)state;
  kt_run_body(pair_body, (void *)writev_all_pair, 1);
}

/* ---- A layer written against stream-impl.h alone ------------------------ */

#define Q_COUNT KEEL_STREAM_Q_USER

typedef struct counting {
  keel_stream_t super;
  size_t rd, wr;
  int *closed;
} counting_t;

static ssize_t counting_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  counting_t *c = (counting_t *)s;
  ssize_t n = keel_readv(s->inner, iov, iovcnt);
  if (n > 0)
    c->rd += (size_t)n;
  return n;
}

static ssize_t counting_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  counting_t *c = (counting_t *)s;
  ssize_t n = keel_writev(s->inner, iov, iovcnt);
  if (n > 0)
    c->wr += (size_t)n;
  return n;
}

static int counting_shutdown(keel_stream_t *s, int how) {
  return keel_stream_shutdown(s->inner, how);
}

static int counting_close(keel_stream_t *s) {
  counting_t *c = (counting_t *)s;
  keel_stream_t *inner = s->inner;
  (*c->closed)++;
  free(c);
  return keel_close(inner);
}

static int counting_detach(keel_stream_t *s, keel_stream_t **inner) {
  *inner = s->inner;
  free(s);
  return 0;
}

static int counting_query(keel_stream_t *s, int what, void *arg, size_t len) {
  counting_t *c = (counting_t *)s;
  if (what != Q_COUNT)
    return -ENOTSUP;
  if (len != sizeof(size_t))
    return -EINVAL;
  *(size_t *)arg = c->rd + c->wr;
  return 0;
}

static const keel_stream_ops_t counting_ops = {
    .name = "counting",
    .readv = counting_readv,
    .writev = counting_writev,
    .shutdown = counting_shutdown,
    .close = counting_close,
    .detach = counting_detach,
    .query = counting_query,
};

static keel_stream_t *counting_open(keel_stream_t *inner, int *closed) {
  counting_t *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  keel_stream_init(&c->super, &counting_ops, inner);
  c->closed = closed;
  return &c->super;
}

static int layers_pair(keel_stream_t *a, keel_stream_t *b, void *arg) {
  (void)arg;
  int closed = 0;
  const char *transport = keel_lab_active() ? "lab-pipe" : "tcp";
  /* Two layers over a: queries pass down to the transport. */
  keel_stream_t *l1 = counting_open(a, &closed);
  keel_stream_t *l2 = counting_open(l1, &closed);
  CHECK(l1 && l2);
  CHECK_RC(keel_write_all(b, "hello", 5, NULL));
  char buf[8];
  CHECK_RC(keel_read_exact(l2, buf, 5, NULL));
  size_t count = 0;
  CHECK_RC(keel_stream_query(l2, Q_COUNT, &count, sizeof count));
  CHECK_EQ(count, 5);
  int worker = -1;
  CHECK_RC(keel_stream_query(l2, KEEL_STREAM_Q_WORKER, &worker, sizeof worker));
  CHECK_EQ(worker, keel_worker_id());
  const char *name = NULL;
  CHECK_RC(keel_stream_query(l2, KEEL_STREAM_Q_TRANSPORT, &name, sizeof name));
  CHECK(strcmp(name, transport) == 0);
  int fd = -1;
  if (keel_lab_active()) {
    CHECK_EQ(keel_stream_query(l2, KEEL_STREAM_Q_FD, &fd, sizeof fd), -ENOTSUP);
  } else {
    CHECK_RC(keel_stream_query(l2, KEEL_STREAM_Q_FD, &fd, sizeof fd));
    CHECK(fd >= 0);
    keel_addr_t peer, local;
    CHECK_RC(keel_stream_query(l2, KEEL_STREAM_Q_PEER_ADDR, &peer, sizeof peer));
    CHECK_RC(keel_stream_query(b, KEEL_STREAM_Q_LOCAL_ADDR, &local, sizeof local));
    CHECK(peer.len == local.len && memcmp(&peer.ss, &local.ss, peer.len) == 0);
    int on = -1, off = 0;
    CHECK_RC(keel_stream_query(l2, KEEL_STREAM_Q_NODELAY, &on, sizeof on));
    CHECK_EQ(on, 1); /* keel sets TCP_NODELAY on every connection */
    CHECK_RC(keel_stream_query(l2, KEEL_STREAM_Q_SET_NODELAY, &off, sizeof off));
    CHECK_RC(keel_stream_query(l2, KEEL_STREAM_Q_NODELAY, &on, sizeof on));
    CHECK_EQ(on, 0);
  }
  CHECK_EQ(keel_stream_query(l2, KEEL_STREAM_Q_WORKER, &worker, 1), -EINVAL);
  CHECK_EQ(keel_stream_query(l2, Q_COUNT + 1, &count, sizeof count), -ENOTSUP);
  /* Detach the top layer: the one below goes on, with its own count. */
  keel_stream_t *inner = NULL;
  CHECK_RC(keel_stream_detach(l2, &inner));
  CHECK(inner == l1);
  CHECK_RC(keel_write_all(b, "abc", 3, NULL));
  CHECK_RC(keel_read_exact(l1, buf, 3, NULL));
  CHECK_RC(keel_stream_query(l1, Q_COUNT, &count, sizeof count));
  CHECK_EQ(count, 8);
  /* A transport is not a layer. */
  CHECK_EQ(keel_stream_detach(a, &inner), -ENOTSUP);
  CHECK(inner == NULL);
  /* Poisoned for writes: writes fail, reads go on. */
  keel_stream_poison(l1, SHUT_WR, -ENOTRECOVERABLE);
  CHECK_EQ(keel_write(l1, "x", 1), -ENOTRECOVERABLE);
  CHECK_EQ(keel_writev_all(l1, &(struct iovec){"x", 1}, 1, NULL), -ENOTRECOVERABLE);
  CHECK_EQ(keel_stream_shutdown(l1, SHUT_WR), -ENOTRECOVERABLE);
  CHECK_RC(keel_write_all(b, "z", 1, NULL));
  CHECK_EQ(keel_read(l1, buf, 1), 1);
  keel_stream_poison(l1, SHUT_RD, -ENOTRECOVERABLE);
  CHECK_EQ(keel_read(l1, buf, 1), -ENOTRECOVERABLE);
  /* Closing the top closes the chain: the caller closes a, so take it back
   * from l1 first, then check l1's close reaches its inner stream. */
  CHECK_RC(keel_stream_detach(l1, &inner));
  CHECK(inner == a);
  keel_stream_t *a2, *b2;
  CHECK_RC(keel_lab_pipe(NULL, &a2, &b2));
  keel_stream_t *top = counting_open(counting_open(a2, &closed), &closed);
  CHECK(top != NULL);
  CHECK_RC(keel_close(top));
  CHECK_EQ(closed, 2);
  CHECK_EQ(keel_read(b2, buf, 1), 0); /* a2 was closed too: end of stream */
  keel_close(b2);
  return 0;
}

static void test_layers_query_detach_poison(void **state) {
  (void)state;
  kt_run_body(pair_body, (void *)layers_pair, 1);
}

/* ---- wait_readable: parks with no buffer until a read would not -------- */

static int wr_peer(void *arg) {
  keel_stream_t *b = arg;
  CHECK_RC(keel_sleep_ms(20));
  CHECK_RC(keel_write_all(b, "q", 1, NULL));
  CHECK_RC(keel_sleep_ms(20));
  CHECK_RC(keel_stream_shutdown(b, SHUT_WR));
  return 0;
}

static int wait_readable_pair(keel_stream_t *a, keel_stream_t *b, void *arg) {
  (void)arg;
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  int64_t t0 = keel_now_ns();
  CHECK_RC(keel_spawn(sc, wr_peer, b, NULL));
  CHECK_RC(keel_stream_wait_readable(a));
  CHECK(keel_now_ns() - t0 >= 20 * KEEL_NS_PER_MS);
  CHECK_RC(keel_stream_wait_readable(a)); /* still readable: at once */
  char c;
  CHECK_EQ(keel_read(a, &c, 1), 1);
  CHECK_RC(keel_stream_wait_readable(a)); /* end of stream is readable too */
  CHECK_EQ(keel_read(a, &c, 1), 0);
  CHECK_RC(keel_scope_close(sc));
  /* Cut by a deadline: -ETIMEDOUT, and the stream is fine afterwards. */
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 10 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_stream_wait_readable(b), -ETIMEDOUT);
  keel_task_set_deadline(prev);
  CHECK_RC(keel_write_all(a, "r", 1, NULL));
  CHECK_RC(keel_stream_wait_readable(b));
  CHECK_EQ(keel_read(b, &c, 1), 1);
  return 0;
}

static void test_wait_readable(void **state) {
  (void)state;
  kt_run_body(pair_body, (void *)wait_readable_pair, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_zero_length_read), cmocka_unit_test(test_full_duplex),
      cmocka_unit_test(test_writev_all),       cmocka_unit_test(test_layers_query_detach_poison),
      cmocka_unit_test(test_wait_readable),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
