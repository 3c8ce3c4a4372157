/* keel_tcp_park: a connection task gives its stack back while it waits for
 * bytes, and goes on in a function it names, as the same task. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "worker.h" /* keel__uring_pbufs_out */
#include "kt-guard.h"

typedef struct conn {
  keel_tcp_t *tcp;
  int rounds;  /* messages echoed */
  int parks;   /* times fn ran after a park */
  int last_rc; /* what fn's read returned last */
  int64_t idle_ms;
} conn_t;

/* Echoes what is there, then parks until more comes. */
static int echo_resume(void *arg) {
  conn_t *c = arg;
  c->parks++;
  char buf[512];
  ssize_t n = keel_read(keel_tcp_stream(c->tcp), buf, sizeof buf);
  c->last_rc = (int)n;
  if (n <= 0)
    return 0; /* the owner of c closes it */
  if (keel_write_all(keel_tcp_stream(c->tcp), buf, (size_t)n, NULL) < 0)
    return 0;
  c->rounds++;
  if (c->idle_ms > 0)
    keel_task_set_deadline(keel_now_ns() + c->idle_ms * KEEL_NS_PER_MS);
  return keel_tcp_park(c->tcp, echo_resume, c);
}

static int echo_start(void *arg) {
  conn_t *c = arg;
  if (c->idle_ms > 0)
    keel_task_set_deadline(keel_now_ns() + c->idle_ms * KEEL_NS_PER_MS);
  return keel_tcp_park(c->tcp, echo_resume, c);
}

typedef struct pair {
  keel_listener_t *l;
  keel_tcp_t *client;
  conn_t conn;
} pair_t;

static int pair_open(pair_t *p) {
  char addr[64];
  memset(p, 0, sizeof *p);
  CHECK_RC(kt_listen_loopback(&p->l, addr, sizeof addr));
  CHECK_RC(keel_tcp_connect(addr, &p->client));
  CHECK_RC(keel_tcp_accept(p->l, &p->conn.tcp));
  return 0;
}

/* A connected pair whose server end is served by echo_start in a scope
 * of its own. */
static int serve_parked(pair_t *p, keel_scope_t **sc) {
  CHECK_RC(pair_open(p));
  CHECK_RC(keel_scope_open(NULL, sc));
  CHECK_RC(keel_spawn(*sc, echo_start, &p->conn, NULL));
  return 0;
}

static void pair_close(pair_t *p) {
  keel_tcp_close(p->client);
  keel_tcp_close(p->conn.tcp);
  keel_listener_close(p->l);
}

/* More than io_uring's 256 provided buffers, so that a burst can run them dry
 * (fewer under ThreadSanitizer, where each restart makes a fiber). */
#define CONNS (KT_SCALE > 1 ? 60 : 300)
#define ROUNDS (50 / KT_SCALE) /* each restart makes a ThreadSanitizer fiber */

/* Many connections, many round trips, each with its task parked between. */
static int echo_body(void *arg) {
  (void)arg;
  pair_t *p = calloc(CONNS, sizeof *p);
  keel_task_t *handles[CONNS];
  CHECK(p != NULL);
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  for (int i = 0; i < CONNS; i++) {
    CHECK_RC(pair_open(&p[i]));
    keel_spawn_opts_t o = {.name = "conn", .handle = &handles[i]};
    CHECK_RC(keel_spawn(sc, echo_start, &p[i].conn, &o));
  }
  /* Every connection's message is sent before any echo is read: they
   * arrive together. */
  for (int r = 0; r < ROUNDS; r++) {
    char msg[CONNS][32];
    int len[CONNS];
    for (int i = 0; i < CONNS; i++) {
      len[i] = snprintf(msg[i], sizeof msg[i], "conn %d round %d", i, r);
      CHECK_RC(keel_write_all(keel_tcp_stream(p[i].client), msg[i], (size_t)len[i], NULL));
    }
    for (int i = 0; i < CONNS; i++) {
      char back[32];
      CHECK_RC(keel_read_exact(keel_tcp_stream(p[i].client), back, (size_t)len[i], NULL));
      CHECK(memcmp(msg[i], back, (size_t)len[i]) == 0);
    }
  }
  for (int i = 0; i < CONNS; i++)
    CHECK_RC(keel_stream_shutdown(keel_tcp_stream(p[i].client), SHUT_WR));
  CHECK_RC(keel_scope_join(sc));
  for (int i = 0; i < CONNS; i++) {
    CHECK_EQ(p[i].conn.rounds, ROUNDS);
    CHECK_EQ(p[i].conn.last_rc, 0); /* end of stream */
    CHECK_EQ(p[i].conn.parks, ROUNDS + 1);
    keel_outcome_t o = keel_task_outcome(handles[i]);
    CHECK_EQ(o.kind, KEEL_OUTCOME_OK);
    CHECK(strcmp(keel_task_name(handles[i]), "conn") == 0);
  }
  CHECK_RC(keel_scope_close(sc));
  for (int i = 0; i < CONNS; i++)
    pair_close(&p[i]);
  free(p);
  return 0;
}

static void test_park_echo(void **state) {
  (void)state;
  kt_run_body(echo_body, NULL, 1);
}

/* Messages larger than one read, and than io_uring's provided buffers:
 * every byte comes back in order. */
static int big_writer(void *arg) {
  pair_t *p = arg;
  unsigned char *buf = malloc(200000);
  CHECK(buf != NULL);
  for (size_t i = 0; i < 200000; i++)
    buf[i] = (unsigned char)(i * 7 % 251);
  int rc = keel_write_all(keel_tcp_stream(p->client), buf, 200000, NULL);
  free(buf);
  CHECK_RC(rc);
  return keel_stream_shutdown(keel_tcp_stream(p->client), SHUT_WR);
}

static int big_body(void *arg) {
  (void)arg;
  pair_t p;
  keel_scope_t *sc;
  CHECK_RC(serve_parked(&p, &sc));
  CHECK_RC(keel_spawn(sc, big_writer, &p, NULL));
  unsigned char buf[7000];
  size_t got = 0;
  for (;;) {
    ssize_t n = keel_read(keel_tcp_stream(p.client), buf, sizeof buf);
    CHECK(n >= 0);
    if (n == 0)
      break;
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != (unsigned char)((got + (size_t)i) * 7 % 251))
        KT_FAIL("byte %zu differs", got + (size_t)i);
    got += (size_t)n;
    if (got == 200000)
      CHECK_RC(keel_stream_shutdown(keel_tcp_stream(p.client), SHUT_RD));
    if (got == 200000)
      break;
  }
  CHECK_EQ(got, 200000);
  CHECK_RC(keel_scope_join(sc));
  CHECK_EQ(p.conn.last_rc, 0);
  CHECK_RC(keel_scope_close(sc));
  pair_close(&p);
  return 0;
}

static void test_park_big_messages(void **state) {
  (void)state;
  kt_run_body(big_body, NULL, 1);
}

/* io_uring: once the worker has had nothing to do for a second, the pages
 * of its free provided buffers go back to the system (an idle server does
 * not keep the 1 MiB that traffic touched in them), and bytes that land in
 * them afterwards are whole. Elsewhere the echo alone. */
static int echo_rounds(pair_t *p, int rounds, unsigned seed) {
  for (int r = 0; r < rounds; r++) {
    char msg[400], back[400];
    for (size_t i = 0; i < sizeof msg; i++)
      msg[i] = (char)((i + (size_t)r * 13 + seed) % 251);
    CHECK_RC(keel_write_all(keel_tcp_stream(p->client), msg, sizeof msg, NULL));
    CHECK_RC(keel_read_exact(keel_tcp_stream(p->client), back, sizeof back, NULL));
    CHECK(memcmp(msg, back, sizeof msg) == 0);
  }
  return 0;
}

#define TRIM_ROUNDS (300 / KT_SCALE)

static int trim_body(void *arg) {
  (void)arg;
  pair_t p;
  keel_scope_t *sc;
  CHECK_RC(serve_parked(&p, &sc));
  keel__worker_t *w = keel__worker_current();
  CHECK_RC(echo_rounds(&p, TRIM_ROUNDS, 1));
  int trims = keel__uring_pbuf_trims(w);
  if (trims >= 0) {
    int before = keel__uring_pbuf_resident(w);
    CHECK(before > 0);
    for (int i = 0; i < 20 && keel__uring_pbuf_trims(w) == trims; i++)
      CHECK_RC(keel_sleep_ms(1200)); /* the worker sleeps: after 1 s, it trims */
    CHECK(keel__uring_pbuf_trims(w) > trims);
    CHECK_EQ(keel__uring_pbuf_resident(w), 0); /* the connection holds none */
  } else if (strcmp(keel_backend_name(), "io_uring") != 0) {
    CHECK_EQ(keel__uring_pbuf_resident(w), -1);
  }
  CHECK_RC(echo_rounds(&p, TRIM_ROUNDS, 7));
  CHECK_RC(keel_stream_shutdown(keel_tcp_stream(p.client), SHUT_WR));
  CHECK_RC(keel_scope_join(sc));
  CHECK_EQ(p.conn.rounds, 2 * TRIM_ROUNDS);
  CHECK_RC(keel_scope_close(sc));
  pair_close(&p);
  return 0;
}

static void test_park_idle_trim(void **state) {
  (void)state;
  kt_run_real_body(trim_body, NULL, 1);
}

/* Bytes that arrived while parked are delivered even to a cancelled task,
 * and a connection closed with bytes unread gives its buffer back (the
 * rounds after it would otherwise run out). */
/* Wakes with bytes and leaves them unread. */
static int ignore_fn(void *arg) {
  conn_t *c = arg;
  c->parks++;
  return 0;
}

static int park_ignore(void *arg) {
  conn_t *c = arg;
  return keel_tcp_park(c->tcp, ignore_fn, c);
}

static int cancel_with_bytes_body(void *arg) {
  (void)arg;
  for (int round = 0; round < 200; round++) {
    pair_t p;
    CHECK_RC(pair_open(&p));
    keel_scope_t *sc;
    CHECK_RC(keel_scope_open(NULL, &sc));
    CHECK_RC(keel_spawn(sc, (keel_task_fn)echo_start, &p.conn, NULL));
    CHECK_RC(keel_write_all(keel_tcp_stream(p.client), "abc", 3, NULL));
    char back[3];
    CHECK_RC(keel_read_exact(keel_tcp_stream(p.client), back, 3, NULL));
    CHECK_RC(keel_write_all(keel_tcp_stream(p.client), "defg", 4, NULL));
    CHECK_RC(keel_sleep_ms(1)); /* let it arrive while parked, most of the time */
    if (round % 2 == 0)
      keel_scope_cancel(sc, KEEL_CANCEL_USER); /* it reads "defg", or -ECANCELED */
    else
      CHECK_RC(keel_stream_shutdown(keel_tcp_stream(p.client), SHUT_WR)); /* echo, then EOF */
    CHECK_RC(keel_scope_join(sc));
    CHECK_RC(keel_scope_close(sc));
    if (round % 2 == 1)
      CHECK_EQ(p.conn.last_rc, 0);
    else
      CHECK(p.conn.last_rc == 4 || p.conn.last_rc == -ECANCELED);
    pair_close(&p);
  }
  /* Closed with bytes received and unread: their buffer goes back. */
  for (int round = 0; round < 100; round++) {
    pair_t p;
    CHECK_RC(pair_open(&p));
    keel_scope_t *sc;
    CHECK_RC(keel_scope_open(NULL, &sc));
    CHECK_RC(keel_spawn(sc, park_ignore, &p.conn, NULL));
    CHECK_RC(keel_write_all(keel_tcp_stream(p.client), "unread", 6, NULL));
    CHECK_RC(keel_scope_join(sc));
    CHECK_EQ(p.conn.parks, 1);
    CHECK_RC(keel_scope_close(sc));
    pair_close(&p);
  }
  /* io_uring: every provided buffer is back in the ring. */
  int out = keel__uring_pbufs_out(keel__worker_current());
  if (strcmp(keel_backend_name(), "io_uring") == 0)
    CHECK_EQ(out, 0); /* -1 would mean no provided buffers: the poll fallback ran */
  else
    CHECK_EQ(out, -1);
  return 0;
}

static void test_park_cancel_with_bytes(void **state) {
  (void)state;
  kt_run_real_body(cancel_with_bytes_body, NULL, 1);
}

/* The idle deadline ends the park: fn's read says -ETIMEDOUT. */
static int idle_body(void *arg) {
  (void)arg;
  pair_t p;
  CHECK_RC(pair_open(&p));
  p.conn.idle_ms = 30;
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  int64_t t0 = keel_now_ns();
  CHECK_RC(keel_spawn(sc, echo_start, &p.conn, NULL));
  CHECK_RC(keel_write_all(keel_tcp_stream(p.client), "x", 1, NULL));
  char c;
  CHECK_EQ(keel_read(keel_tcp_stream(p.client), &c, 1), 1);
  CHECK_RC(keel_scope_join(sc));
  CHECK_EQ(p.conn.last_rc, -ETIMEDOUT);
  CHECK_EQ(p.conn.rounds, 1);
  CHECK(keel_now_ns() - t0 >= 30 * KEEL_NS_PER_MS);
  CHECK(kt_within(t0, 30 * KEEL_NS_PER_MS + kt_late_ns() + 1)); /* lab: exactly 30 ms */
  CHECK_RC(keel_scope_close(sc));
  pair_close(&p);
  return 0;
}

static void test_park_idle_deadline(void **state) {
  (void)state;
  kt_run_body(idle_body, NULL, 1);
}

/* Cancelling the scope wakes the parked connection: fn sees -ECANCELED. */
static int cancel_body(void *arg) {
  (void)arg;
  pair_t p;
  keel_scope_t *sc;
  CHECK_RC(serve_parked(&p, &sc));
  CHECK_RC(keel_sleep_ms(10));
  CHECK_EQ(keel_scope_live(sc), 1); /* parked, still in its scope */
  /* Its wait lives in the connection: closing it, or parking on it again,
   * is refused while the task is parked. */
  CHECK_EQ(keel_tcp_close(p.conn.tcp), -EBUSY);
  CHECK_EQ(keel_tcp_park(p.conn.tcp, echo_resume, &p.conn), -EBUSY);
  keel_scope_cancel(sc, KEEL_CANCEL_USER);
  CHECK_RC(keel_scope_join(sc));
  CHECK_EQ(p.conn.parks, 1);
  CHECK_EQ(p.conn.last_rc, -ECANCELED);
  CHECK_RC(keel_scope_close(sc));
  pair_close(&p);
  return 0;
}

static void test_park_cancel(void **state) {
  (void)state;
  kt_run_body(cancel_body, NULL, 1);
}

/* A reset that comes while the task is parked reaches fn's first read as
 * -ECONNRESET on every backend (io_uring's wait took the error from the
 * socket, which reports it once). */
static int reset_body(void *arg) {
  (void)arg;
  pair_t p;
  keel_scope_t *sc;
  CHECK_RC(serve_parked(&p, &sc));
  CHECK_RC(keel_sleep_ms(5));
  struct linger lg = {1, 0};
  CHECK(setsockopt(keel_tcp_fd(p.client), SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  CHECK_RC(keel_tcp_close(p.client));
  p.client = NULL;
  CHECK_RC(keel_scope_close(sc));
  CHECK_EQ(p.conn.last_rc, -ECONNRESET);
  pair_close(&p);
  return 0;
}

static void test_park_reset(void **state) {
  (void)state;
  kt_run_real_body(reset_body, NULL, 1);
}

/* Refused: a scope open, a shield, no function. */
static int refused_body(void *arg) {
  (void)arg;
  pair_t p;
  CHECK_RC(pair_open(&p));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  CHECK_EQ(keel_tcp_park(p.conn.tcp, echo_resume, &p.conn), -EBUSY);
  CHECK_RC(keel_scope_close(sc));
  keel_shield_begin(0);
  CHECK_EQ(keel_tcp_park(p.conn.tcp, echo_resume, &p.conn), -EBUSY);
  keel_shield_end();
  CHECK_EQ(keel_tcp_park(p.conn.tcp, NULL, NULL), -EINVAL);
  pair_close(&p);
  return 0;
}

/* From a task of another worker: -EXDEV, and the connection is untouched. */
static int park_elsewhere(void *arg) {
  conn_t *c = arg;
  return keel_tcp_park(c->tcp, echo_resume, c) == -EXDEV ? 0 : -EPROTO;
}

static int exdev_body(void *arg) {
  (void)arg;
  pair_t p;
  CHECK_RC(pair_open(&p));
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  keel_spawn_opts_t o = {.on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(sc, park_elsewhere, &p.conn, &o));
  CHECK_RC(keel_scope_close(sc));
  CHECK_RC(keel_write_all(keel_tcp_stream(p.client), "x", 1, NULL));
  char c;
  CHECK_EQ(keel_read(keel_tcp_stream(p.conn.tcp), &c, 1), 1);
  pair_close(&p);
  return 0;
}

static void test_park_other_worker(void **state) {
  (void)state;
  kt_run_real_body(exdev_body, NULL, 2);
}

static void test_park_refused(void **state) {
  (void)state;
  kt_run_body(refused_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_park_echo),         cmocka_unit_test(test_park_idle_deadline),
      cmocka_unit_test(test_park_cancel),       cmocka_unit_test(test_park_refused),
      cmocka_unit_test(test_park_other_worker), cmocka_unit_test(test_park_reset),
      cmocka_unit_test(test_park_big_messages), cmocka_unit_test(test_park_cancel_with_bytes),
      cmocka_unit_test(test_park_idle_trim),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
