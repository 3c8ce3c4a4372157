/* Cancellation and deadlines of TCP operations, under io_uring and epoll.
 *
 * The property under test is promise 3 of DESIGN.md: a cancelled operation
 * either did not happen or reports exactly what happened. A read whose
 * kernel operation was not really cancelled would fill its buffer later and
 * swallow bytes; a cancelled write must report the bytes the peer gets. */
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "keel-test.h"

#define KT_GUARD_MS 30000 /* no test body may take longer */
#include "kt-guard.h"

#define WATCHDOG_MS 10000 /* upper bound for any scope of these tests */
/* "Promptly": cancellation (or a close) to return. A wake-up takes well
 * under a millisecond, but on a loaded machine (every core busy, a
 * sanitizer's slowdown) the thread may wait for a CPU far longer; what
 * these bounds catch is a wait that lasts until some other deadline. */
#define PROMPT_MS 2000
#define SENTINEL 0xA5
#define READ_BUF_LEN 4096
#define BIG_WRITE (64u << 20)

static int64_t in_ms(int64_t ms) { return keel_now_ns() + ms * KEEL_NS_PER_MS; }
static int64_t elapsed_ms(int64_t from_ns, int64_t to_ns) {
  return (to_ns - from_ns) / KEEL_NS_PER_MS;
}

static keel_scope_t *scope_with_deadline_ms(int64_t ms) {
  keel_scope_opts_t o = {.deadline_ns = in_ms(ms), .name = "test"};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(&o, &s);
  return s;
}

static unsigned char pattern_byte(size_t i) { return (unsigned char)(i % 251); }

/* ---- A connected loopback pair ---------------------------------------- */

typedef struct pair {
  keel_listener_t *listener;
  keel_tcp_t *client, *server;
  char addr[KEEL_ADDRSTRLEN];
} pair_t;

static int pair_open(pair_t *p) {
  memset(p, 0, sizeof *p);
  CHECK_RC(kt_listen_loopback(&p->listener, p->addr, sizeof p->addr));
  /* On loopback the handshake completes into the backlog, so one task can
   * connect first and accept afterwards. */
  CHECK_RC(keel_tcp_connect(p->addr, &p->client));
  CHECK_RC(keel_tcp_accept(p->listener, &p->server));
  return 0;
}

static void pair_close(pair_t *p) {
  if (p->client)
    keel_tcp_close(p->client);
  if (p->server)
    keel_tcp_close(p->server);
  if (p->listener)
    keel_listener_close(p->listener);
}

/* Reads exactly len bytes from s under a bounded deadline. */
static int read_n(keel_stream_t *s, void *buf, size_t len) {
  int64_t prev = keel_task_set_deadline(in_ms(5000));
  size_t got = 0;
  int rc = keel_read_exact(s, buf, len, &got);
  keel_task_set_deadline(prev);
  if (rc < 0)
    KT_FAIL("read_exact(%zu) failed: %d (%s) after %zu bytes", len, rc, keel_strerror(rc), got);
  CHECK_EQ(got, len);
  return 0;
}

static int buffer_untouched(const unsigned char *buf, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (buf[i] != SENTINEL)
      KT_FAIL("buffer byte %zu is 0x%02x, not the sentinel: the read was not cancelled", i, buf[i]);
  return 0;
}

/* ---- A task that reads once -------------------------------------------- */

typedef struct one_read {
  keel_stream_t *stream;
  unsigned char *buf;
  size_t len;
  bool started;
  ssize_t result;
  int64_t done_ns;
} one_read_t;

static int one_read_task(void *arg) {
  one_read_t *r = arg;
  r->started = true;
  r->result = keel_read(r->stream, r->buf, r->len);
  r->done_ns = keel_now_ns();
  return 0;
}

/* After the cancelled read: the peer writes, the cancelled read's buffer
 * must stay untouched, and a fresh read gets every byte. */
static int check_nothing_lost(pair_t *p, one_read_t *r) {
  static const char msg[] = "bytes written after the read was cancelled";
  CHECK_RC(keel_write_all(keel_tcp_stream(p->client), msg, sizeof msg, NULL));
  CHECK_RC(keel_sleep_ms(50));
  CHECK_RC(buffer_untouched(r->buf, r->len));
  char got[sizeof msg];
  CHECK_RC(read_n(keel_tcp_stream(p->server), got, sizeof got));
  CHECK(memcmp(got, msg, sizeof msg) == 0);
  return 0;
}

static int read_cancel_main(void *arg) {
  (void)arg;
  pair_t p;
  CHECK_RC(pair_open(&p));
  unsigned char buf[READ_BUF_LEN];
  memset(buf, SENTINEL, sizeof buf);
  one_read_t r = {.stream = keel_tcp_stream(p.server), .buf = buf, .len = sizeof buf};

  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, one_read_task, &r, NULL));
  CHECK_RC(keel_sleep_ms(20));
  CHECK(r.started);
  CHECK_EQ(r.done_ns, 0); /* still blocked: the peer never wrote */
  int64_t cancel_ns = keel_now_ns();
  keel_scope_cancel(scope, KEEL_CANCEL_USER);
  keel_scope_join(scope);
  keel_scope_close(scope);

  CHECK_EQ(r.result, -ECANCELED);
  int64_t took = elapsed_ms(cancel_ns, r.done_ns);
  if (took > PROMPT_MS)
    KT_FAIL("cancelled read returned %lld ms after the cancel", (long long)took);
  CHECK_RC(check_nothing_lost(&p, &r));
  pair_close(&p);
  return 0;
}

static int read_deadline_main(void *arg) {
  (void)arg;
  pair_t p;
  CHECK_RC(pair_open(&p));
  unsigned char buf[READ_BUF_LEN];
  memset(buf, SENTINEL, sizeof buf);
  one_read_t r = {.stream = keel_tcp_stream(p.server), .buf = buf, .len = sizeof buf};

  int64_t start_ns = keel_now_ns();
  keel_scope_t *scope = scope_with_deadline_ms(50);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, one_read_task, &r, NULL));
  keel_scope_join(scope);
  keel_scope_close(scope);

  CHECK_EQ(r.result, -ETIMEDOUT);
  int64_t took = elapsed_ms(start_ns, r.done_ns);
  if (took < 45 || took > 50 + PROMPT_MS)
    KT_FAIL("read with a 50 ms deadline returned after %lld ms", (long long)took);
  CHECK_RC(check_nothing_lost(&p, &r));
  pair_close(&p);
  return 0;
}

/* ---- Accept -------------------------------------------------------------- */

typedef struct one_accept {
  keel_listener_t *listener;
  bool started;
  int result;
  keel_tcp_t *conn;
  int64_t done_ns;
} one_accept_t;

static int one_accept_task(void *arg) {
  one_accept_t *a = arg;
  a->started = true;
  a->result = keel_tcp_accept(a->listener, &a->conn);
  a->done_ns = keel_now_ns();
  return 0;
}

/* Accepts in a fresh scope; if connect_first is false, the connection is
 * made while the accept is already waiting. Checks bytes flow both ways. */
static int accept_one_works(keel_listener_t *l, const char *addr, bool connect_first) {
  one_accept_t a = {.listener = l};
  keel_tcp_t *client = NULL;
  if (connect_first)
    CHECK_RC(keel_tcp_connect(addr, &client));
  keel_scope_t *scope = scope_with_deadline_ms(5000);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, one_accept_task, &a, NULL));
  if (!connect_first) {
    CHECK_RC(keel_sleep_ms(10));
    CHECK_RC(keel_tcp_connect(addr, &client));
  }
  keel_scope_join(scope);
  keel_scope_close(scope);
  if (a.result < 0)
    KT_FAIL("accept after a cancelled accept failed: %d (%s)", a.result, keel_strerror(a.result));
  CHECK(a.conn != NULL);
  CHECK_RC(keel_write_all(keel_tcp_stream(client), "ping", 4, NULL));
  char got[4];
  CHECK_RC(read_n(keel_tcp_stream(a.conn), got, sizeof got));
  CHECK(memcmp(got, "ping", 4) == 0);
  CHECK_RC(keel_write_all(keel_tcp_stream(a.conn), "pong", 4, NULL));
  CHECK_RC(read_n(keel_tcp_stream(client), got, sizeof got));
  CHECK(memcmp(got, "pong", 4) == 0);
  keel_tcp_close(client);
  keel_tcp_close(a.conn);
  return 0;
}

static int accept_cancel_main(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));

  one_accept_t a = {.listener = l};
  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, one_accept_task, &a, NULL));
  CHECK_RC(keel_sleep_ms(20));
  CHECK(a.started);
  CHECK_EQ(a.done_ns, 0);
  int64_t cancel_ns = keel_now_ns();
  keel_scope_cancel(scope, KEEL_CANCEL_USER);
  keel_scope_join(scope);
  keel_scope_close(scope);
  CHECK_EQ(a.result, -ECANCELED);
  int64_t took = elapsed_ms(cancel_ns, a.done_ns);
  if (took > PROMPT_MS)
    KT_FAIL("cancelled accept returned %lld ms after the cancel", (long long)took);

  /* The listener still works: a connection made while nobody accepts, and
   * one made while an accept waits, are both delivered. */
  CHECK_RC(accept_one_works(l, addr, true));
  CHECK_RC(accept_one_works(l, addr, false));
  keel_listener_close(l);
  return 0;
}

/* ---- Connect ------------------------------------------------------------- */

static int connect_refused_main(void *arg) {
  (void)arg;
  /* Learn a free port, then stop listening on it. */
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  CHECK_RC(keel_listener_close(l));

  int64_t prev = keel_task_set_deadline(in_ms(5000));
  keel_tcp_t *c = NULL;
  int rc = keel_tcp_connect(addr, &c);
  keel_task_set_deadline(prev);
  if (rc != -ECONNREFUSED)
    KT_FAIL("connect to %s with nothing listening: %d (%s), want -ECONNREFUSED", addr, rc,
            keel_strerror(rc));
  return 0;
}

/* ---- write_all cancelled part-way ---------------------------------------- */

typedef struct big_write {
  keel_stream_t *stream;
  const unsigned char *buf;
  size_t len;
  bool started;
  int result;
  size_t written;
  int64_t done_ns;
} big_write_t;

static int big_write_task(void *arg) {
  big_write_t *w = arg;
  w->started = true;
  w->written = SIZE_MAX;
  w->result = keel_write_all(w->stream, w->buf, w->len, &w->written);
  w->done_ns = keel_now_ns();
  return 0;
}

/* Reads s to EOF, checking every byte against the pattern; *total gets the
 * count. */
static int drain_to_eof(keel_stream_t *s, size_t *total) {
  static unsigned char chunk[64 * 1024];
  int64_t prev = keel_task_set_deadline(in_ms(WATCHDOG_MS));
  size_t n = 0;
  for (;;) {
    ssize_t k = keel_read(s, chunk, sizeof chunk);
    if (k == 0)
      break;
    if (k < 0)
      KT_FAIL("read after %zu bytes failed: %zd (%s)", n, k, keel_strerror((int)k));
    for (ssize_t i = 0; i < k; i++)
      if (chunk[i] != pattern_byte(n + (size_t)i))
        KT_FAIL("byte %zu is %u, want %u", n + (size_t)i, chunk[i], pattern_byte(n + (size_t)i));
    n += (size_t)k;
  }
  keel_task_set_deadline(prev);
  *total = n;
  return 0;
}

static int write_all_cancel_main(void *arg) {
  (void)arg;
  unsigned char *big = malloc(BIG_WRITE);
  CHECK(big != NULL);
  for (size_t i = 0; i < BIG_WRITE; i++)
    big[i] = pattern_byte(i);
  pair_t p;
  CHECK_RC(pair_open(&p));
  big_write_t w = {.stream = keel_tcp_stream(p.client), .buf = big, .len = BIG_WRITE};

  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, big_write_task, &w, NULL));
  CHECK_RC(keel_sleep_ms(200)); /* loopback buffers fill in far less */
  CHECK(w.started);
  CHECK_EQ(w.done_ns, 0); /* blocked: the peer does not read */
  int64_t cancel_ns = keel_now_ns();
  keel_scope_cancel(scope, KEEL_CANCEL_USER);
  keel_scope_join(scope);
  keel_scope_close(scope);

  CHECK_EQ(w.result, -ECANCELED);
  int64_t took = elapsed_ms(cancel_ns, w.done_ns);
  if (took > PROMPT_MS)
    KT_FAIL("cancelled write_all returned %lld ms after the cancel", (long long)took);
  CHECK(w.written > 0);
  CHECK(w.written < BIG_WRITE);
  fprintf(stderr, "# write_all cancelled after %zu bytes\n", w.written);

  CHECK_RC(keel_tcp_close(p.client));
  p.client = NULL;
  size_t total = 0;
  CHECK_RC(drain_to_eof(keel_tcp_stream(p.server), &total));
  CHECK_EQ(total, w.written);
  pair_close(&p);
  free(big);
  return 0;
}

/* ---- Closing a connection wakes a task parked on it ------------------------------------ */

/* Closing a connection while another task of the same worker is parked in a
 * read on it wakes that reader promptly with an error, on both backends (on
 * io_uring the close must cancel the recv, which keeps the file alive). */
typedef struct parked_read {
  keel_stream_t *stream;
  ssize_t result;
  int64_t done_ns;
} parked_read_t;

static int parked_read_task(void *arg) {
  parked_read_t *r = arg;
  unsigned char buf[64];
  r->result = keel_read(r->stream, buf, sizeof buf);
  r->done_ns = keel_now_ns();
  return 0;
}

static int close_wakes_reader_main(void *arg) {
  (void)arg;
  pair_t p;
  CHECK_RC(pair_open(&p));
  parked_read_t r = {.stream = keel_tcp_stream(p.server), .result = 1};
  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, parked_read_task, &r, NULL));
  CHECK_RC(keel_sleep_ms(50));
  CHECK_EQ(r.done_ns, 0); /* parked: the client sends nothing */
  int64_t close_ns = keel_now_ns();
  keel_tcp_close(p.server);
  p.server = NULL;
  keel_scope_join(scope);
  keel_scope_close(scope);
  CHECK(r.result < 0);
  CHECK(r.result != -ETIMEDOUT);
  int64_t took = elapsed_ms(close_ns, r.done_ns);
  if (took > PROMPT_MS)
    KT_FAIL("reader returned %lld ms after its connection was closed", (long long)took);
  pair_close(&p);
  return 0;
}

/* ---- Long-lived connections ----------------------------------------------------------- */

/* On io_uring a connection that has carried a few operations is registered
 * with the ring. Closing it must still wake a parked reader, send the peer
 * its EOF at once (the ring's reference must not keep the socket open),
 * and free the slot for the next connection: many rounds in a row. */
#define LONG_LIVED_ROUNDS 40
#define LONG_LIVED_MSGS 24

static int ping_pong(pair_t *p, int msgs) {
  keel_stream_t *c = keel_tcp_stream(p->client), *s = keel_tcp_stream(p->server);
  for (int i = 0; i < msgs; i++) {
    unsigned char out[32], in[32];
    for (size_t k = 0; k < sizeof out; k++)
      out[k] = pattern_byte(k + (size_t)i);
    CHECK_RC(keel_write_all(c, out, sizeof out, NULL));
    CHECK_RC(read_n(s, in, sizeof in));
    CHECK_RC(keel_write_all(s, in, sizeof in, NULL));
    CHECK_RC(read_n(c, in, sizeof in));
    CHECK(memcmp(in, out, sizeof in) == 0);
  }
  return 0;
}

static int long_lived_round(void) {
  pair_t p;
  CHECK_RC(pair_open(&p));
  CHECK_RC(ping_pong(&p, LONG_LIVED_MSGS));
  parked_read_t r = {.stream = keel_tcp_stream(p.server), .result = 1};
  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, parked_read_task, &r, NULL));
  CHECK_RC(keel_yield());
  keel_tcp_close(p.server);
  p.server = NULL;
  keel_scope_join(scope);
  keel_scope_close(scope);
  CHECK(r.result < 0 && r.result != -ETIMEDOUT);
  /* The client sees the close as end of stream, well within its deadline. */
  unsigned char b;
  int64_t prev = keel_task_set_deadline(in_ms(PROMPT_MS));
  ssize_t n = keel_read(keel_tcp_stream(p.client), &b, 1);
  keel_task_set_deadline(prev);
  if (n != 0)
    KT_FAIL("client read after the server closed: %zd (%s), want EOF", n,
            n < 0 ? keel_strerror((int)n) : "data");
  pair_close(&p);
  return 0;
}

static int long_lived_close_main(void *arg) {
  (void)arg;
  for (int i = 0; i < LONG_LIVED_ROUNDS; i++)
    CHECK_RC(long_lived_round());
  return 0;
}

/* The ring's table of registered files is sized by the descriptor limit
 * when the runtime starts. A limit raised later allows more long-lived
 * connections than slots: those go on with plain descriptors, and every
 * connection still echoes and closes cleanly. */
#define SLOTS_START_LIMIT 48
#define SLOTS_PAIRS 30 /* 90 descriptors, far beyond the 48 slots */

static int close_and_see_eof(pair_t *p) {
  keel_tcp_close(p->server);
  p->server = NULL;
  unsigned char b;
  int64_t prev = keel_task_set_deadline(in_ms(PROMPT_MS));
  ssize_t n = keel_read(keel_tcp_stream(p->client), &b, 1);
  keel_task_set_deadline(prev);
  if (n != 0)
    KT_FAIL("client read after the server closed: %zd, want EOF", n);
  return 0;
}

static int slots_exhausted_main(void *arg) {
  const struct rlimit *start = arg;
  CHECK(setrlimit(RLIMIT_NOFILE, start) == 0); /* back to the test's own limit */
  pair_t p[SLOTS_PAIRS];
  int opened = 0, rc = 0;
  while (rc == 0 && opened < SLOTS_PAIRS)
    if ((rc = pair_open(&p[opened])) == 0)
      opened++;
  for (int i = 0; rc == 0 && i < opened; i++)
    rc = ping_pong(&p[i], LONG_LIVED_MSGS);
  for (int i = 0; rc == 0 && i < opened; i++)
    rc = close_and_see_eof(&p[i]);
  for (int i = 0; i < opened; i++)
    pair_close(&p[i]);
  return rc;
}

static void test_more_connections_than_slots(void **state) {
  (void)state;
  struct rlimit orig, low;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &orig), 0);
  if (orig.rlim_cur < 3 * SLOTS_PAIRS + 64)
    skip();
  low = orig;
  low.rlim_cur = SLOTS_START_LIMIT;
  KT_FOR_EACH_BACKEND(b) {
    fprintf(stderr, "# backend %s\n", kt_backend_name(b));
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    int rc = kt_run_guarded(b, 1, slots_exhausted_main, &orig);
    setrlimit(RLIMIT_NOFILE, &orig);
    assert_int_equal(rc, 0);
  }
}

/* ---- Several waiters on one descriptor -------------------------------------------------- */

#define WAITERS_MS PROMPT_MS /* both waiters must be served within this */

/* Two tasks blocked in accept on the same listener, then two clients
 * connect: each acceptor gets one of them. With a single waiter slot per
 * listener the second accept displaced the first, which then waited until
 * its deadline. */
static int two_acceptors_main(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  one_accept_t a[2] = {{.listener = l}, {.listener = l}};
  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  for (int i = 0; i < 2; i++)
    CHECK_RC(keel_spawn(scope, one_accept_task, &a[i], NULL));
  CHECK_RC(keel_sleep_ms(20));
  CHECK(a[0].started && a[1].started);
  CHECK_EQ(a[0].done_ns, 0); /* both parked: nobody connected yet */
  CHECK_EQ(a[1].done_ns, 0);
  keel_tcp_t *client[2] = {NULL, NULL};
  int64_t connect_ns = keel_now_ns();
  for (int i = 0; i < 2; i++)
    CHECK_RC(keel_tcp_connect(addr, &client[i]));
  /* Bounded: a stranded acceptor must not hold the test for WATCHDOG_MS. */
  keel_scope_set_deadline(scope, in_ms(WAITERS_MS + PROMPT_MS));
  keel_scope_join(scope);
  keel_scope_close(scope);

  for (int i = 0; i < 2; i++) {
    if (a[i].result < 0)
      KT_FAIL("acceptor %d: %d (%s)", i, a[i].result, keel_strerror(a[i].result));
    CHECK(a[i].conn != NULL);
    int64_t took = elapsed_ms(connect_ns, a[i].done_ns);
    if (took > WAITERS_MS)
      KT_FAIL("acceptor %d returned %lld ms after the connects", i, (long long)took);
  }
  /* Two distinct connections, one per client: each accepted socket's peer
   * is one client's local address, and bytes flow. */
  CHECK(a[0].conn != a[1].conn);
  bool matched[2] = {false, false};
  for (int i = 0; i < 2; i++) {
    keel_addr_t peer;
    CHECK_RC(keel_tcp_peer_addr(a[i].conn, &peer));
    for (int k = 0; k < 2; k++) {
      keel_addr_t local;
      CHECK_RC(keel_tcp_local_addr(client[k], &local));
      if (local.len == peer.len && memcmp(&local.ss, &peer.ss, peer.len) == 0) {
        CHECK(!matched[k]);
        matched[k] = true;
        char msg[2] = {'0', (char)('0' + k)}, got[2];
        CHECK_RC(keel_write_all(keel_tcp_stream(client[k]), msg, sizeof msg, NULL));
        CHECK_RC(read_n(keel_tcp_stream(a[i].conn), got, sizeof got));
        CHECK(memcmp(got, msg, sizeof msg) == 0);
      }
    }
  }
  CHECK(matched[0] && matched[1]);
  for (int i = 0; i < 2; i++) {
    keel_tcp_close(a[i].conn);
    keel_tcp_close(client[i]);
  }
  keel_listener_close(l);
  return 0;
}

typedef struct closer {
  keel_listener_t *listener;
  int64_t delay_ms;
  int result;
  int64_t close_ns;
} closer_t;

static int listener_closer_task(void *arg) {
  closer_t *c = arg;
  c->result = keel_sleep_ms(c->delay_ms);
  if (c->result < 0)
    return c->result;
  c->close_ns = keel_now_ns();
  c->result = keel_listener_close(c->listener);
  return 0;
}

/* Two tasks blocked in accept, a third task of the same worker closes the
 * listener: both acceptors wake with -EBADF and the scope joins. Before,
 * only the acceptor in the single slot was woken; the other stayed parked
 * on a freed listener. */
static int close_wakes_acceptors_main(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  one_accept_t a[2] = {{.listener = l, .result = 1}, {.listener = l, .result = 1}};
  closer_t c = {.listener = l, .delay_ms = 50, .result = 1};
  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  int64_t start_ns = keel_now_ns();
  for (int i = 0; i < 2; i++)
    CHECK_RC(keel_spawn(scope, one_accept_task, &a[i], NULL));
  CHECK_RC(keel_spawn(scope, listener_closer_task, &c, NULL));
  int join_rc = keel_scope_join(scope);
  int64_t joined_ns = keel_now_ns();
  keel_scope_close(scope);

  CHECK_EQ(c.result, 0);
  CHECK(c.close_ns != 0);
  for (int i = 0; i < 2; i++) {
    CHECK(a[i].started);
    if (a[i].result != -EBADF)
      KT_FAIL("acceptor %d: %d (%s), want -EBADF", i, a[i].result, keel_strerror(a[i].result));
    int64_t took = elapsed_ms(c.close_ns, a[i].done_ns);
    if (took > PROMPT_MS)
      KT_FAIL("acceptor %d returned %lld ms after the close", i, (long long)took);
  }
  CHECK_EQ(join_rc, 0); /* the scope was not ended by its deadline */
  if (elapsed_ms(start_ns, joined_ns) > 50 + PROMPT_MS)
    KT_FAIL("scope joined %lld ms after start", (long long)elapsed_ms(start_ns, joined_ns));
  return 0;
}

/* Two tasks blocked in a read on the same connection; the peer writes
 * twice with a pause: each reader gets one of the writes (either order).
 * With a single reader slot per descriptor, epoll woke only the last one
 * parked and the other waited past the second write. */
static int two_readers_main(void *arg) {
  (void)arg;
  pair_t p;
  CHECK_RC(pair_open(&p));
  unsigned char buf[2][64];
  memset(buf, SENTINEL, sizeof buf);
  one_read_t r[2] = {{.stream = keel_tcp_stream(p.server), .buf = buf[0], .len = sizeof buf[0]},
                     {.stream = keel_tcp_stream(p.server), .buf = buf[1], .len = sizeof buf[1]}};
  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  for (int i = 0; i < 2; i++)
    CHECK_RC(keel_spawn(scope, one_read_task, &r[i], NULL));
  CHECK_RC(keel_sleep_ms(20));
  CHECK(r[0].started && r[1].started);
  CHECK_EQ(r[0].done_ns, 0); /* both parked: the peer has not written */
  CHECK_EQ(r[1].done_ns, 0);

  static const char first[] = "first write", second[] = "second write";
  int64_t first_ns = keel_now_ns();
  CHECK_RC(keel_write_all(keel_tcp_stream(p.client), first, sizeof first, NULL));
  CHECK_RC(keel_sleep_ms(100));
  int64_t second_ns = keel_now_ns();
  CHECK_RC(keel_write_all(keel_tcp_stream(p.client), second, sizeof second, NULL));
  keel_scope_set_deadline(scope, in_ms(WAITERS_MS + PROMPT_MS));
  keel_scope_join(scope);
  keel_scope_close(scope);

  for (int i = 0; i < 2; i++)
    if (r[i].result <= 0)
      KT_FAIL("reader %d: %zd (%s)", i, r[i].result, keel_strerror((int)r[i].result));
  /* Whichever reader got the first write, the other got the second. */
  int f = r[0].result == (ssize_t)sizeof first && memcmp(buf[0], first, sizeof first) == 0 ? 0 : 1;
  CHECK_EQ(r[f].result, sizeof first);
  CHECK(memcmp(buf[f], first, sizeof first) == 0);
  CHECK_EQ(r[1 - f].result, sizeof second);
  CHECK(memcmp(buf[1 - f], second, sizeof second) == 0);
  if (elapsed_ms(first_ns, r[f].done_ns) > WAITERS_MS)
    KT_FAIL("first reader returned %lld ms after the write",
            (long long)elapsed_ms(first_ns, r[f].done_ns));
  if (elapsed_ms(second_ns, r[1 - f].done_ns) > WAITERS_MS)
    KT_FAIL("second reader returned %lld ms after the write",
            (long long)elapsed_ms(second_ns, r[1 - f].done_ns));
  pair_close(&p);
  return 0;
}

/* ---- cmocka ---------------------------------------------------------------- */

static void run_each_backend(keel_task_fn fn) {
  KT_FOR_EACH_BACKEND(b) {
    fprintf(stderr, "# backend %s\n", kt_backend_name(b));
    assert_int_equal(kt_run_guarded(b, 1, fn, NULL), 0);
  }
}

static void test_read_cancel(void **state) {
  (void)state;
  run_each_backend(read_cancel_main);
}

static void test_read_deadline(void **state) {
  (void)state;
  run_each_backend(read_deadline_main);
}

static void test_accept_cancel(void **state) {
  (void)state;
  run_each_backend(accept_cancel_main);
}

static void test_connect_refused(void **state) {
  (void)state;
  run_each_backend(connect_refused_main);
}

static void test_write_all_cancel(void **state) {
  (void)state;
  run_each_backend(write_all_cancel_main);
}

static void test_close_wakes_reader(void **state) {
  (void)state;
  run_each_backend(close_wakes_reader_main);
}

static void test_two_acceptors(void **state) {
  (void)state;
  run_each_backend(two_acceptors_main);
}

static void test_close_wakes_acceptors(void **state) {
  (void)state;
  run_each_backend(close_wakes_acceptors_main);
}

static void test_long_lived_close(void **state) {
  (void)state;
  run_each_backend(long_lived_close_main);
}

static void test_two_readers(void **state) {
  (void)state;
  run_each_backend(two_readers_main);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_read_cancel),
      cmocka_unit_test(test_read_deadline),
      cmocka_unit_test(test_accept_cancel),
      cmocka_unit_test(test_connect_refused),
      cmocka_unit_test(test_write_all_cancel),
      cmocka_unit_test(test_close_wakes_reader),
      cmocka_unit_test(test_two_acceptors),
      cmocka_unit_test(test_close_wakes_acceptors),
      cmocka_unit_test(test_two_readers),
      cmocka_unit_test(test_long_lived_close),
      cmocka_unit_test(test_more_connections_than_slots),
  };
  const char *filter = getenv("KT_FILTER"); /* e.g. KT_FILTER=test_foo: run one case */
  if (filter && *filter)
    cmocka_set_test_filter(filter);
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
