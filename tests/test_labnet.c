/* The lab network: one TCP echo program, written once, on io_uring, epoll
 * and lab mode (there over 64 seeds with faults, each seed run twice for
 * the same trace hash); then the edges: refused and hanging connects,
 * dropped connections, taken addresses, cancelled accepts, a listener
 * closed with connections queued, the backlog, port 0 and addresses,
 * closing either end, and what the runtime frees when a program leaves
 * things open (ASan checks the memory). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define KT_GUARD_MS 60000 /* real time on io_uring and epoll, virtual in lab mode */
#include "kt-guard.h"

#define ECHO_SEEDS 64
#define CLIENTS 4
#define MSG_MAX 100000
#define MSG_ATTEMPTS 100 /* a message that cannot get through this often fails the test */
#define CONNECT_MS 1000  /* each connect attempt's deadline */
#define OP_MS 10000      /* bound on one exchange, a hang detector */
#define FNV_OFFSET UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x100000001b3)

static const size_t msg_sizes[] = {1, 7, 512, 4096, 20000, 65537, MSG_MAX};
#define N_SIZES (sizeof msg_sizes / sizeof msg_sizes[0])

static int64_t in_ms(int64_t ms) { return keel_now_ns() + ms * KEEL_NS_PER_MS; }

static int addr_port(const keel_addr_t *a) {
  if (a->ss.ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
  if (a->ss.ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
  return -1;
}

/* The same address, as keel_addr_format says (a real getpeername leaves
 * the rest of the storage as it was). */
static bool same_addr(const keel_addr_t *a, const keel_addr_t *b) {
  char x[KEEL_ADDRSTRLEN], y[KEEL_ADDRSTRLEN];
  return a->len == b->len &&
         strcmp(keel_addr_format(a, x, sizeof x), keel_addr_format(b, y, sizeof y)) == 0;
}

static keel_scope_t *scope_open(void) {
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  return s;
}

/* ---- The echo program ------------------------------------------------------- */

/* The lab network's faults for the echo program: connects refused and
 * hanging, connections dropped, small pipes, delays and short transfers. */
static const keel_lab_net_faults_t echo_faults = {
    .refuse_permille = 100,
    .hang_permille = 30,
    .drop_permille = 2,
    .conn = {.capacity = 8192, .delay_max_ns = 200 * 1000, .short_permille = 300},
};

typedef struct echo_stats {
  int refused, hung, lost, connects;
  long long bytes;
} echo_stats_t;

typedef struct echo_run {
  char addr[KEEL_ADDRSTRLEN];
  echo_stats_t stats;
  int clients_ok;
} echo_run_t;

static unsigned char msg_byte(int client, size_t msg, size_t i) {
  return (unsigned char)(client * 89 + msg * 37 + i * 7 + (i >> 8));
}

/* Echoes c until end of stream or an error (a dropped connection, the end
 * of the test), then closes it: the clients check what they get. */
static int echo_conn_task(void *arg) {
  keel_tcp_t *c = arg;
  keel_stream_t *s = keel_tcp_stream(c);
  char *buf = malloc(16384);
  CHECK(buf != NULL);
  for (;;) {
    ssize_t n = keel_read(s, buf, 16384);
    if (n <= 0 || keel_write_all(s, buf, (size_t)n, NULL) < 0)
      break;
  }
  free(buf);
  keel_tcp_close(c);
  return 0;
}

static int accept_loop_task(void *arg) {
  keel_listener_t *l = arg;
  for (;;) {
    keel_tcp_t *c;
    int rc = keel_tcp_accept(l, &c);
    if (rc == -ECANCELED)
      return 0;
    CHECK_RC(rc);
    rc = keel_spawn(keel_scope_current(), echo_conn_task, c, NULL);
    if (rc < 0) {
      keel_tcp_close(c);
      return rc == -ECANCELED ? 0 : rc;
    }
  }
}

typedef struct connect_try {
  echo_run_t *run;
  keel_tcp_t *conn;
} connect_try_t;

/* One connect attempt under its own deadline (a hanging connect ends there). */
static int connect_attempt(void *arg) {
  connect_try_t *t = arg;
  int64_t prev = keel_task_set_deadline(in_ms(CONNECT_MS));
  int rc = keel_tcp_connect(t->run->addr, &t->conn);
  keel_task_set_deadline(prev);
  t->run->stats.connects++;
  if (rc == -ECONNREFUSED)
    t->run->stats.refused++;
  if (rc == -ETIMEDOUT)
    t->run->stats.hung++;
  return rc;
}

static int connect_with_retry(echo_run_t *run, keel_tcp_t **out) {
  keel_retry_opts_t o = {
      .max_attempts = 50, .base_ns = KEEL_NS_PER_MS, .cap_ns = 20 * KEEL_NS_PER_MS};
  connect_try_t t = {run, NULL};
  int rc = keel_retry(&o, connect_attempt, &t);
  if (rc < 0)
    KT_FAIL("connect to %s: %d (%s) after %d attempts", run->addr, rc, keel_strerror(rc),
            run->stats.connects);
  *out = t.conn;
  return 0;
}

typedef struct writer {
  keel_stream_t *stream;
  const unsigned char *buf;
  size_t len;
  int rc;
} writer_t;

static int writer_task(void *arg) {
  writer_t *w = arg;
  w->rc = keel_write_all(w->stream, w->buf, w->len, NULL);
  return 0;
}

/* Sends msg and reads its echo into in while the writer writes (the pipes
 * hold less than a message). Returns 0, or the error that ended it; *got
 * says how much came back. */
static int exchange(keel_tcp_t *c, const unsigned char *msg, size_t len, unsigned char *in,
                    size_t *got) {
  keel_scope_t *sc = scope_open();
  CHECK(sc != NULL);
  writer_t w = {keel_tcp_stream(c), msg, len, 0};
  CHECK_RC(keel_spawn(sc, writer_task, &w, NULL));
  int64_t prev = keel_task_set_deadline(in_ms(OP_MS));
  int rc = keel_read_exact(keel_tcp_stream(c), in, len, got);
  keel_task_set_deadline(prev);
  if (rc < 0)
    keel_scope_cancel(sc, KEEL_CANCEL_USER);
  keel_scope_join(sc);
  keel_scope_close(sc);
  if (rc == -EPIPE && w.rc < 0) /* the echo ended early: say why the writer stopped */
    rc = w.rc;
  return rc;
}

/* Every byte that came back, even before a connection was lost, is checked. */
static int check_echo(int client, size_t m, const unsigned char *in, size_t got) {
  for (size_t i = 0; i < got; i++)
    if (in[i] != msg_byte(client, m, i))
      KT_FAIL("client %d message %zu byte %zu: got %u, want %u", client, m, i, in[i],
              msg_byte(client, m, i));
  return 0;
}

typedef struct client {
  echo_run_t *run;
  int id;
} client_t;

/* Sends each message size once (each client in its own order); a lost
 * connection is replaced and the message sent again. */
static int client_task(void *arg) {
  client_t *cl = arg;
  echo_run_t *run = cl->run;
  unsigned char *msg = malloc(MSG_MAX), *in = malloc(MSG_MAX);
  CHECK(msg != NULL && in != NULL);
  keel_tcp_t *c = NULL;
  for (size_t m = 0; m < N_SIZES; m++) {
    size_t len = msg_sizes[(m + (size_t)cl->id) % N_SIZES];
    for (size_t i = 0; i < len; i++)
      msg[i] = msg_byte(cl->id, m, i);
    for (int attempt = 0;; attempt++) {
      if (attempt == MSG_ATTEMPTS)
        KT_FAIL("client %d: message %zu (%zu bytes) lost %d times", cl->id, m, len, attempt);
      if (!c)
        CHECK_RC(connect_with_retry(run, &c));
      size_t got = 0;
      int rc = exchange(c, msg, len, in, &got);
      CHECK_RC(check_echo(cl->id, m, in, got));
      if (rc == 0)
        break;
      if (rc != -ECONNRESET && rc != -EPIPE)
        KT_FAIL("client %d: echo of %zu bytes: %d (%s) after %zu", cl->id, len, rc,
                keel_strerror(rc), got);
      run->stats.lost++;
      keel_tcp_close(c);
      c = NULL;
    }
    run->stats.bytes += (long long)len;
  }
  keel_tcp_close(c);
  free(msg);
  free(in);
  run->clients_ok++;
  return 0;
}

/* The program: an echo server and CLIENTS clients. Unchanged on every
 * backend; in lab mode the network misbehaves as echo_faults says. */
static int echo_body(void *arg) {
  echo_run_t *run = arg;
  *run = (echo_run_t){0};
  if (keel_lab_active())
    CHECK_RC(keel_lab_net_faults(&echo_faults));
  keel_listener_t *l;
  CHECK_RC(kt_listen_loopback(&l, run->addr, sizeof run->addr));
  keel_scope_t *server = scope_open(), *clients = scope_open();
  CHECK(server != NULL && clients != NULL);
  CHECK_RC(keel_spawn(server, accept_loop_task, l, NULL));
  client_t cl[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) {
    cl[i] = (client_t){run, i};
    CHECK_RC(keel_spawn(clients, client_task, &cl[i], NULL));
  }
  CHECK_RC(keel_scope_join(clients));
  keel_scope_close(clients);
  keel_scope_cancel(server, KEEL_CANCEL_USER);
  keel_scope_join(server);
  keel_scope_close(server);
  CHECK_RC(keel_listener_close(l));
  CHECK_EQ(run->clients_ok, CLIENTS);
  if (!keel_lab_active()) { /* a real loopback neither refuses nor drops */
    CHECK_EQ(run->stats.refused + run->stats.hung + run->stats.lost, 0);
    CHECK_EQ(run->stats.connects, CLIENTS);
  }
  long long want = 0;
  for (size_t i = 0; i < N_SIZES; i++)
    want += (long long)msg_sizes[i];
  CHECK_EQ(run->stats.bytes, want * CLIENTS);
  return 0;
}

static void test_echo_real(void **state) {
  (void)state;
  echo_run_t run;
  kt_run_where(KT_ON_REAL, echo_body, &run, 1, 1, 0);
}

static uint64_t fnv_fold(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= FNV_PRIME;
  }
  return h;
}

/* Each seed twice: the same trace hash and the same faults both times. */
static void test_echo_lab_seeds(void **state) {
  (void)state;
  if (!kt_backend_selected(KEEL_BACKEND_LAB)) {
    fprintf(stderr, "# lab mode only: not in this entry\n");
    skip();
  }
  uint64_t all = FNV_OFFSET, first = 0;
  echo_stats_t total = {0};
  bool seeds_differ = false;
  for (uint64_t seed = 1; seed <= ECHO_SEEDS; seed++) {
    echo_run_t a, b;
    uint64_t ha = 0, hb = 0;
    assert_int_equal(kt_run_guarded_lab_traced(seed, echo_body, &a, &ha), 0);
    assert_int_equal(kt_run_guarded_lab_traced(seed, echo_body, &b, &hb), 0);
    if (ha != hb)
      fail_msg("seed %llu: trace %016llx, then %016llx", (unsigned long long)seed,
               (unsigned long long)ha, (unsigned long long)hb);
    assert_memory_equal(&a.stats, &b.stats, sizeof a.stats);
    fprintf(stderr, "# seed %2llu trace %016llx: %d connects, %d refused, %d hung, %d lost\n",
            (unsigned long long)seed, (unsigned long long)ha, a.stats.connects, a.stats.refused,
            a.stats.hung, a.stats.lost);
    all = fnv_fold(all, ha);
    seeds_differ |= seed > 1 && ha != first;
    if (seed == 1)
      first = ha;
    total.connects += a.stats.connects;
    total.refused += a.stats.refused;
    total.hung += a.stats.hung;
    total.lost += a.stats.lost;
  }
  fprintf(stderr,
          "# %d seeds, each run twice with equal traces; hash of the %d traces: %016llx\n"
          "# faults met: %d connects, %d refused, %d hung, %d connections lost\n",
          ECHO_SEEDS, ECHO_SEEDS, (unsigned long long)all, total.connects, total.refused,
          total.hung, total.lost);
  assert_true(seeds_differ);
  assert_true(total.refused > 0);
  assert_true(total.hung > 0);
  assert_true(total.lost > 0);
}

/* ---- Refused and hanging connects ------------------------------------------- */

/* The same on every backend: nobody listens on a closed listener's port. */
static int refused_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  CHECK_RC(keel_listener_close(l));
  keel_tcp_t *c = NULL;
  int64_t t0 = keel_now_ns();
  CHECK_EQ(keel_tcp_connect(addr, &c), -ECONNREFUSED);
  CHECK(c == NULL);
  if (keel_lab_active()) {
    CHECK_EQ(keel_now_ns(), t0); /* at once */
    CHECK_EQ(keel_tcp_connect("nobody.example:80", &c), -ECONNREFUSED);
    CHECK_EQ(keel_now_ns(), t0);
  } else {
    CHECK_EQ(keel_lab_net_faults(NULL), -EINVAL); /* lab mode only */
  }
  return 0;
}

static void test_refused(void **state) {
  (void)state;
  kt_run_body(refused_body, NULL, 1);
}

typedef struct connector {
  const char *addr;
  keel_tcp_t *conn;
  int rc;
  int64_t ended;
} connector_t;

static int connector_task(void *arg) {
  connector_t *c = arg;
  c->rc = keel_tcp_connect(c->addr, &c->conn);
  c->ended = keel_now_ns();
  return 0;
}

/* Lab mode: faults that hang or refuse every connect, cut by a deadline or
 * a cancellation to the nanosecond; and the knobs' checks. */
static int hang_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_lab_net_faults_t f = {.hang_permille = 1000};
  CHECK_RC(keel_lab_net_faults(&f));
  keel_tcp_t *c = NULL;
  int64_t t0 = keel_now_ns();
  int64_t prev = keel_task_set_deadline(t0 + 250 * KEEL_NS_PER_MS + 7);
  CHECK_EQ(keel_tcp_connect(addr, &c), -ETIMEDOUT);
  keel_task_set_deadline(prev);
  CHECK_EQ(keel_now_ns(), t0 + 250 * KEEL_NS_PER_MS + 7);
  /* Cancelled while hanging. */
  connector_t con = {.addr = addr};
  keel_scope_t *sc = scope_open();
  CHECK(sc != NULL);
  int64_t t1 = keel_now_ns();
  CHECK_RC(keel_spawn(sc, connector_task, &con, NULL));
  CHECK_RC(keel_sleep_ms(3));
  keel_scope_cancel(sc, KEEL_CANCEL_USER);
  keel_scope_join(sc);
  keel_scope_close(sc);
  CHECK_EQ(con.rc, -ECANCELED);
  CHECK_EQ(con.ended, t1 + 3 * KEEL_NS_PER_MS);
  /* Refused although a listener is there. */
  f = (keel_lab_net_faults_t){.refuse_permille = 1000};
  CHECK_RC(keel_lab_net_faults(&f));
  int64_t t2 = keel_now_ns();
  CHECK_EQ(keel_tcp_connect(addr, &c), -ECONNREFUSED);
  CHECK_EQ(keel_now_ns(), t2);
  /* Faults off: the connect goes through, and nothing was queued before. */
  CHECK_RC(keel_lab_net_faults(NULL));
  CHECK_RC(keel_tcp_connect(addr, &c));
  keel_tcp_t *s;
  CHECK_RC(keel_tcp_accept(l, &s));
  prev = keel_task_set_deadline(keel_now_ns() + 1);
  keel_tcp_t *extra = NULL;
  CHECK_EQ(keel_tcp_accept(l, &extra), -ETIMEDOUT);
  keel_task_set_deadline(prev);
  keel_tcp_close(c);
  keel_tcp_close(s);
  CHECK_RC(keel_listener_close(l));
  /* The knobs' checks. */
  f = (keel_lab_net_faults_t){.refuse_permille = 1001};
  CHECK_EQ(keel_lab_net_faults(&f), -EINVAL);
  f = (keel_lab_net_faults_t){.refuse_permille = 600, .hang_permille = 401};
  CHECK_EQ(keel_lab_net_faults(&f), -EINVAL);
  f = (keel_lab_net_faults_t){.drop_permille = 1001};
  CHECK_EQ(keel_lab_net_faults(&f), -EINVAL);
  f = (keel_lab_net_faults_t){.conn = {.reset_permille = 1}};
  CHECK_EQ(keel_lab_net_faults(&f), -EINVAL);
  f = (keel_lab_net_faults_t){.conn = {.delay_max_ns = -1}};
  CHECK_EQ(keel_lab_net_faults(&f), -EINVAL);
  return 0;
}

static void test_connect_hangs(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 8; seed++)
    kt_run_lab_body(hang_body, NULL, seed);
}

/* ---- Dropped connections ------------------------------------------------------- */

static int parked_read_task(void *arg) {
  char c;
  return (int)keel_read(keel_tcp_stream(arg), &c, 1);
}

/* Connects to l and accepts: *client and *server. */
static int conn_pair(keel_listener_t *l, const char *addr, keel_tcp_t **client,
                     keel_tcp_t **server) {
  CHECK_RC(keel_tcp_connect(addr, client));
  CHECK_RC(keel_tcp_accept(l, server));
  return 0;
}

static int drop_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_tcp_t *c, *s;
  char buf[8];
  /* Dropped by hand, with a reader parked on the other end. */
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK_EQ(keel_write(keel_tcp_stream(c), "abc", 3), 3);
  CHECK_EQ(keel_read(keel_tcp_stream(s), buf, sizeof buf), 3);
  keel_scope_t *sc = scope_open();
  CHECK(sc != NULL);
  CHECK_RC(keel_spawn(sc, parked_read_task, c, NULL));
  CHECK_RC(keel_yield());
  CHECK_RC(keel_lab_pipe_reset(keel_tcp_stream(s)));
  CHECK_EQ(keel_scope_join(sc), -ECONNRESET);
  keel_scope_close(sc);
  CHECK_EQ(keel_write(keel_tcp_stream(c), "x", 1), -ECONNRESET);
  CHECK_EQ(keel_read(keel_tcp_stream(c), buf, 1), -ECONNRESET);
  CHECK_EQ(keel_write(keel_tcp_stream(s), "x", 1), -ECONNRESET);
  CHECK_EQ(keel_read(keel_tcp_stream(s), buf, 1), -ECONNRESET);
  CHECK_RC(keel_tcp_close(c));
  CHECK_RC(keel_tcp_close(s));
  /* Dropped by the network at the first operation. */
  keel_lab_net_faults_t f = {.drop_permille = 1000};
  CHECK_RC(keel_lab_net_faults(&f));
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK_EQ(keel_write(keel_tcp_stream(c), "x", 1), -ECONNRESET);
  CHECK_EQ(keel_read(keel_tcp_stream(s), buf, 1), -ECONNRESET);
  CHECK_RC(keel_tcp_close(s));
  CHECK_RC(keel_tcp_close(c));
  /* Faults apply to the connections made after they are set. */
  CHECK_RC(keel_lab_net_faults(NULL));
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK_RC(keel_lab_net_faults(&f));
  CHECK_EQ(keel_write(keel_tcp_stream(c), "ok", 2), 2);
  CHECK_EQ(keel_read(keel_tcp_stream(s), buf, sizeof buf), 2);
  CHECK_RC(keel_tcp_close(c));
  CHECK_RC(keel_tcp_close(s));
  CHECK_RC(keel_listener_close(l));
  return 0;
}

static void test_dropped(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 8; seed++)
    kt_run_lab_body(drop_body, NULL, seed);
}

/* ---- Taken addresses ------------------------------------------------------------ */

static int in_use_body(void *arg) {
  (void)arg;
  keel_listen_opts_t solo = {.no_reuseport = true};
  keel_listener_t *l, *l2 = NULL;
  CHECK_RC(keel_tcp_listen("127.0.0.1:0", &solo, &l));
  keel_addr_t a;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(keel_listener_addr(l, &a));
  keel_addr_format(&a, addr, sizeof addr);
  CHECK_EQ(keel_tcp_listen(addr, &solo, &l2), -EADDRINUSE);
  CHECK(l2 == NULL);
  if (keel_lab_active()) {
    /* No SO_REUSEPORT group on one worker; a wildcard on the port clashes. */
    CHECK_EQ(keel_tcp_listen(addr, NULL, &l2), -EADDRINUSE);
    char any[32];
    snprintf(any, sizeof any, ":%d", addr_port(&a));
    CHECK_EQ(keel_tcp_listen(any, NULL, &l2), -EADDRINUSE);
    snprintf(any, sizeof any, "127.0.0.2:%d", addr_port(&a)); /* another host: free */
    CHECK_RC(keel_tcp_listen(any, NULL, &l2));
    CHECK_RC(keel_listener_close(l2));
  }
  CHECK_RC(keel_listener_close(l));
  CHECK_RC(keel_tcp_listen(addr, &solo, &l)); /* free again once closed */
  CHECK_RC(keel_listener_close(l));
  return 0;
}

static void test_addr_in_use(void **state) {
  (void)state;
  kt_run_body(in_use_body, NULL, 1);
}

/* ---- Accept: cancelled, timed out, woken by close ----------------------------------- */

typedef struct acceptor {
  keel_listener_t *listener;
  keel_tcp_t *conn;
  int rc;
  int64_t ended;
} acceptor_t;

static int acceptor_task(void *arg) {
  acceptor_t *a = arg;
  a->rc = keel_tcp_accept(a->listener, &a->conn);
  a->ended = keel_now_ns();
  return 0;
}

static int accept_cancel_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  /* Cancelled while parked. */
  acceptor_t acc = {.listener = l};
  keel_scope_t *sc = scope_open();
  CHECK(sc != NULL);
  CHECK_RC(keel_spawn(sc, acceptor_task, &acc, NULL));
  CHECK_RC(keel_sleep_ms(2));
  keel_scope_cancel(sc, KEEL_CANCEL_USER);
  keel_scope_join(sc);
  keel_scope_close(sc);
  CHECK_EQ(acc.rc, -ECANCELED);
  /* A deadline. */
  int64_t t0 = keel_now_ns();
  int64_t prev = keel_task_set_deadline(t0 + 5 * KEEL_NS_PER_MS);
  keel_tcp_t *c = NULL, *s = NULL;
  CHECK_EQ(keel_tcp_accept(l, &s), -ETIMEDOUT);
  keel_task_set_deadline(prev);
  if (keel_lab_active())
    CHECK_EQ(keel_now_ns(), t0 + 5 * KEEL_NS_PER_MS);
  /* The listener still works: nothing was lost to the cancelled accepts. */
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK_EQ(keel_write(keel_tcp_stream(c), "hi", 2), 2);
  char buf[2];
  CHECK_RC(keel_read_exact(keel_tcp_stream(s), buf, 2, NULL));
  CHECK(memcmp(buf, "hi", 2) == 0);
  keel_tcp_close(c);
  keel_tcp_close(s);
  /* Two accepters parked when the listener closes: both wake with -EBADF. */
  acceptor_t two[2] = {{.listener = l}, {.listener = l}};
  sc = scope_open();
  CHECK(sc != NULL);
  CHECK_RC(keel_spawn(sc, acceptor_task, &two[0], NULL));
  CHECK_RC(keel_spawn(sc, acceptor_task, &two[1], NULL));
  CHECK_RC(keel_sleep_ms(2));
  CHECK_RC(keel_listener_close(l));
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK_EQ(two[0].rc, -EBADF);
  CHECK_EQ(two[1].rc, -EBADF);
  return 0;
}

static void test_accept_cancelled(void **state) {
  (void)state;
  kt_run_body(accept_cancel_body, NULL, 1);
}

/* ---- The backlog, and a listener closed with connections queued ------------------------ */

/* Listens with a backlog of 2 and queues two connections, in q. */
static int fill_backlog(keel_listener_t **l, char *addr, size_t len, keel_tcp_t *q[2]) {
  keel_listen_opts_t o = {.backlog = 2};
  CHECK_RC(keel_tcp_listen("10.0.0.1:0", &o, l));
  keel_addr_t a;
  CHECK_RC(keel_listener_addr(*l, &a));
  keel_addr_format(&a, addr, len);
  int64_t t0 = keel_now_ns();
  CHECK_RC(keel_tcp_connect(addr, &q[0])); /* connected before any accept */
  CHECK_RC(keel_tcp_connect(addr, &q[1]));
  CHECK_EQ(keel_now_ns(), t0);
  CHECK_EQ(keel_write(keel_tcp_stream(q[0]), "early", 5), 5);
  return 0;
}

/* The backlog is full: a connect waits, to its deadline or until an accept
 * (which takes q[0], with its bytes, into *s) makes room. *late gets the
 * connection that waited. */
static int backlog_waits(keel_listener_t *l, const char *addr, keel_tcp_t **s, keel_tcp_t **late) {
  keel_tcp_t *c = NULL;
  int64_t t0 = keel_now_ns();
  int64_t prev = keel_task_set_deadline(t0 + 4 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_tcp_connect(addr, &c), -ETIMEDOUT);
  keel_task_set_deadline(prev);
  CHECK_EQ(keel_now_ns(), t0 + 4 * KEEL_NS_PER_MS);
  connector_t con = {.addr = addr};
  keel_scope_t *sc = scope_open();
  CHECK(sc != NULL);
  CHECK_RC(keel_spawn(sc, connector_task, &con, NULL));
  CHECK_RC(keel_sleep_ms(1));
  CHECK_EQ(con.ended, 0);
  CHECK_RC(keel_tcp_accept(l, s));
  char buf[5];
  CHECK_RC(keel_read_exact(keel_tcp_stream(*s), buf, 5, NULL));
  CHECK(memcmp(buf, "early", 5) == 0);
  int64_t t1 = keel_now_ns();
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK_RC(con.rc);
  CHECK_EQ(con.ended, t1); /* at once */
  *late = con.conn;
  return 0;
}

static int backlog_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN], buf[8];
  keel_tcp_t *q[2], *s, *late;
  CHECK_RC(fill_backlog(&l, addr, sizeof addr, q));
  CHECK_RC(backlog_waits(l, addr, &s, &late));
  /* A connect waiting when the listener closes is refused; the queued
   * ones (q[1] and late) are reset; the accepted one lives on. */
  connector_t con = {.addr = addr};
  keel_scope_t *sc = scope_open();
  CHECK(sc != NULL);
  CHECK_RC(keel_spawn(sc, connector_task, &con, NULL));
  CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_listener_close(l));
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK_EQ(con.rc, -ECONNREFUSED);
  CHECK(con.conn == NULL);
  keel_tcp_t *reset[2] = {q[1], late};
  for (int i = 0; i < 2; i++) {
    CHECK_EQ(keel_read(keel_tcp_stream(reset[i]), buf, 1), -ECONNRESET);
    CHECK_EQ(keel_write(keel_tcp_stream(reset[i]), "x", 1), -ECONNRESET);
    CHECK_RC(keel_tcp_close(reset[i]));
  }
  CHECK_EQ(keel_write(keel_tcp_stream(s), "still", 5), 5);
  CHECK_RC(keel_read_exact(keel_tcp_stream(q[0]), buf, 5, NULL));
  CHECK(memcmp(buf, "still", 5) == 0);
  CHECK_RC(keel_tcp_close(q[0]));
  CHECK_RC(keel_tcp_close(s));
  CHECK_EQ(keel_tcp_connect(addr, &late), -ECONNREFUSED);
  return 0;
}

static void test_backlog_and_close(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 8; seed++)
    kt_run_lab_body(backlog_body, NULL, seed);
}

/* On every backend: a listener closed with a connection queued. A real
 * kernel resets it; io_uring may have accepted it already (multishot), and
 * closing that one is a FIN: end of stream. Lab mode resets. */
static int close_pending_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_tcp_t *c;
  CHECK_RC(keel_tcp_connect(addr, &c));
  CHECK_RC(keel_sleep_ms(10)); /* the handshake completes on a real loopback */
  CHECK_RC(keel_listener_close(l));
  char buf[1];
  int64_t prev = keel_task_set_deadline(in_ms(5000));
  ssize_t n = keel_read(keel_tcp_stream(c), buf, 1);
  keel_task_set_deadline(prev);
  if (keel_lab_active())
    CHECK_EQ(n, -ECONNRESET);
  else if (n != -ECONNRESET && n != 0)
    KT_FAIL("read from a connection its listener dropped: %zd (%s)", n, keel_strerror((int)n));
  CHECK_RC(keel_tcp_close(c));
  return 0;
}

static void test_close_with_pending(void **state) {
  (void)state;
  kt_run_body(close_pending_body, NULL, 1);
}

/* ---- Port 0, names and addresses ---------------------------------------------------------- */

/* The four addresses agree: each end's peer is the other's local. */
static int check_addrs(keel_listener_t *l, keel_tcp_t *client, keel_tcp_t *server) {
  keel_addr_t la, cl, cp, sl, sp, q;
  CHECK_RC(keel_listener_addr(l, &la));
  int port = addr_port(&la);
  CHECK(port > 0);
  CHECK_RC(keel_tcp_local_addr(client, &cl));
  CHECK_RC(keel_tcp_peer_addr(client, &cp));
  CHECK_RC(keel_tcp_local_addr(server, &sl));
  CHECK_RC(keel_tcp_peer_addr(server, &sp));
  CHECK_EQ(addr_port(&cp), port);
  CHECK_EQ(addr_port(&sl), port);
  CHECK(addr_port(&cl) > 0 && addr_port(&cl) != port);
  CHECK(same_addr(&sp, &cl));
  CHECK(same_addr(&cp, &sl));
  keel_stream_t *cs = keel_tcp_stream(client), *ss = keel_tcp_stream(server);
  CHECK_RC(keel_stream_query(cs, KEEL_STREAM_Q_PEER_ADDR, &q, sizeof q));
  CHECK(same_addr(&q, &cp));
  CHECK_RC(keel_stream_query(ss, KEEL_STREAM_Q_LOCAL_ADDR, &q, sizeof q));
  CHECK(same_addr(&q, &sl));
  CHECK_EQ(keel_stream_query(ss, KEEL_STREAM_Q_LOCAL_ADDR, &q, 3), -EINVAL);
  return 0;
}

/* The other queries; the descriptor exists only on a real backend. */
static int check_queries(keel_tcp_t *c) {
  keel_stream_t *s = keel_tcp_stream(c);
  int worker = -1, fd = -1, nodelay = -1;
  CHECK_RC(keel_stream_query(s, KEEL_STREAM_Q_WORKER, &worker, sizeof worker));
  CHECK_EQ(worker, keel_worker_id());
  const char *transport = NULL;
  CHECK_RC(keel_stream_query(s, KEEL_STREAM_Q_TRANSPORT, &transport, sizeof transport));
  CHECK(strcmp(transport, "tcp") == 0);
  CHECK_RC(keel_tcp_set_nodelay(c, true));
  CHECK_RC(keel_stream_query(s, KEEL_STREAM_Q_NODELAY, &nodelay, sizeof nodelay));
  CHECK(nodelay != 0);
  int rc = keel_stream_query(s, KEEL_STREAM_Q_FD, &fd, sizeof fd);
  if (keel_lab_active()) {
    CHECK_EQ(rc, -ENOTSUP);
    CHECK_EQ(keel_tcp_fd(c), -1);
  } else {
    CHECK_RC(rc);
    CHECK_EQ(fd, keel_tcp_fd(c));
  }
  return 0;
}

/* One exchange each way around the client's half-close; closes both. */
static int check_half_close(keel_tcp_t *client, keel_tcp_t *server) {
  keel_stream_t *cs = keel_tcp_stream(client), *ss = keel_tcp_stream(server);
  char buf[4];
  CHECK_RC(keel_write_all(cs, "ping", 4, NULL));
  CHECK_RC(keel_stream_shutdown(cs, SHUT_WR));
  CHECK_RC(keel_read_exact(ss, buf, 4, NULL));
  CHECK(memcmp(buf, "ping", 4) == 0);
  CHECK_EQ(keel_read(ss, buf, 1), 0);
  CHECK_RC(keel_write_all(ss, "pong", 4, NULL));
  CHECK_RC(keel_tcp_close(server));
  CHECK_RC(keel_read_exact(cs, buf, 4, NULL));
  CHECK(memcmp(buf, "pong", 4) == 0);
  CHECK_EQ(keel_read(cs, buf, 1), 0);
  CHECK_RC(keel_tcp_close(client));
  return 0;
}

/* Connects to addr, accepts, and checks the connection. */
static int check_conn(keel_listener_t *l, const char *addr) {
  keel_tcp_t *client, *server;
  CHECK_RC(conn_pair(l, addr, &client, &server));
  CHECK_RC(check_addrs(l, client, server));
  CHECK_RC(check_queries(client));
  CHECK_RC(check_queries(server));
  return check_half_close(client, server);
}

/* Listens on hostport and checks a connection to the formatted address. */
static int listen_and_check(const char *hostport, const char *want_addr) {
  keel_listener_t *l;
  CHECK_RC(keel_tcp_listen(hostport, NULL, &l));
  keel_addr_t a;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(keel_listener_addr(l, &a));
  keel_addr_format(&a, addr, sizeof addr);
  if (want_addr && strcmp(addr, want_addr) != 0)
    KT_FAIL("listening on %s: %s, want %s", hostport, addr, want_addr);
  CHECK_RC(check_conn(l, addr));
  CHECK_RC(keel_listener_close(l));
  return 0;
}

static int addresses_body(void *arg) {
  (void)arg;
  bool lab = keel_lab_active();
  /* Port 0 counts up from 40000 in lab mode, the same on every run. */
  CHECK_RC(listen_and_check("127.0.0.1:0", lab ? "127.0.0.1:40000" : NULL));
  CHECK_RC(listen_and_check("127.0.0.1:0", lab ? "127.0.0.1:40001" : NULL));
  if (!lab)
    return 0;
  CHECK_RC(listen_and_check("[::1]:0", "[::1]:40002"));
  /* Host names: each gets its own address; both strings reach the listener. */
  CHECK_RC(listen_and_check("db:5432", "198.18.0.1:5432"));
  CHECK_RC(listen_and_check("cache:0", "198.18.0.2:40003"));
  keel_addr_t r[2];
  CHECK_EQ(keel_addr_resolve("DB:1", r, 2), 1);
  char buf[KEEL_ADDRSTRLEN];
  CHECK(strcmp(keel_addr_format(&r[0], buf, sizeof buf), "198.18.0.1:1") == 0);
  keel_listener_t *l;
  CHECK_RC(keel_tcp_listen("db:5432", NULL, &l));
  CHECK_RC(check_conn(l, "db:5432"));
  CHECK_RC(check_conn(l, "198.18.0.1:5432"));
  CHECK_RC(keel_listener_close(l));
  /* "localhost" is 127.0.0.1; a wildcard listener takes every host. */
  CHECK_RC(keel_tcp_listen(":8080", NULL, &l));
  CHECK_RC(check_conn(l, "localhost:8080"));
  CHECK_RC(check_conn(l, "10.1.2.3:8080"));
  CHECK_RC(check_conn(l, "web:8080"));
  keel_tcp_t *c = NULL;
  CHECK_EQ(keel_tcp_connect("[::1]:8080", &c), -ECONNREFUSED); /* IPv4 wildcard only */
  CHECK_RC(keel_listener_close(l));
  keel_listen_opts_t v6only = {.v6only = true};
  CHECK_RC(keel_tcp_listen("[::]:8081", NULL, &l)); /* IPv6 wildcard: IPv4 too */
  CHECK_RC(check_conn(l, "127.0.0.1:8081"));
  CHECK_RC(check_conn(l, "[::1]:8081"));
  CHECK_RC(keel_listener_close(l));
  CHECK_RC(keel_tcp_listen("[::]:8082", &v6only, &l));
  CHECK_EQ(keel_tcp_connect("127.0.0.1:8082", &c), -ECONNREFUSED);
  CHECK_RC(check_conn(l, "[::1]:8082"));
  CHECK_RC(keel_listener_close(l));
  return 0;
}

static void test_addresses(void **state) {
  (void)state;
  kt_run_body(addresses_body, NULL, 1);
}

/* ---- Closing either end, and what the runtime frees ------------------------------------------ */

static int blocked_write_task(void *arg) {
  static const char chunk[4096];
  return keel_write_all(keel_tcp_stream(arg), chunk, sizeof chunk, NULL);
}

/* Starts fn(c) in a new scope and lets it park. */
static keel_scope_t *park(keel_task_fn fn, keel_tcp_t *c, keel_task_t **h) {
  keel_scope_t *sc = scope_open();
  keel_spawn_opts_t o = {.handle = h};
  if (!sc || keel_spawn(sc, fn, c, &o) < 0 || keel_sleep_ms(1) < 0)
    return NULL;
  return sc;
}

static int outcome(keel_scope_t *sc, keel_task_t *h) {
  keel_scope_join(sc);
  int rc = keel_task_outcome(h).error;
  keel_scope_close(sc);
  return rc;
}

static int close_ends_body(void *arg) {
  (void)arg;
  keel_lab_net_faults_t small = {.conn = {.capacity = 1024}};
  CHECK_RC(keel_lab_net_faults(&small));
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_tcp_t *c, *s;
  keel_task_t *h;
  keel_scope_t *sc;
  /* The client closes: the server's parked reader sees end of stream. */
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK(sc = park(parked_read_task, s, &h));
  CHECK_RC(keel_tcp_close(c));
  CHECK_EQ(outcome(sc, h), 0);
  CHECK_RC(keel_tcp_close(s));
  /* The server closes: the client's writer, parked on a full pipe, fails. */
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK(sc = park(blocked_write_task, c, &h));
  CHECK_RC(keel_tcp_close(s));
  CHECK_EQ(outcome(sc, h), -EPIPE);
  CHECK_RC(keel_tcp_close(c));
  /* A connection closed under its own parked reader: -EBADF, freed after. */
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK(sc = park(parked_read_task, c, &h));
  CHECK_RC(keel_tcp_close(c));
  CHECK_EQ(outcome(sc, h), -EBADF);
  CHECK_RC(keel_tcp_close(s));
  /* A read cancelled while parked takes nothing: the bytes wait. */
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK(sc = park(parked_read_task, s, &h));
  keel_scope_cancel(sc, KEEL_CANCEL_USER);
  CHECK_EQ(outcome(sc, h), -ECANCELED);
  CHECK_EQ(keel_write(keel_tcp_stream(c), "z", 1), 1);
  char z = 0;
  CHECK_EQ(keel_read(keel_tcp_stream(s), &z, 1), 1);
  CHECK_EQ(z, 'z');
  CHECK_RC(keel_tcp_close(s));
  CHECK_RC(keel_tcp_close(c));
  CHECK_RC(keel_listener_close(l));
  return 0;
}

static void test_close_either_end(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 8; seed++)
    kt_run_lab_body(close_ends_body, NULL, seed);
}

/* Returns with everything open: listeners (one with a connection queued),
 * connections with bytes in flight, one end closed, one half-closed. The
 * runtime frees them (ASan's leak check would say otherwise). */
static int leave_open_body(void *arg) {
  (void)arg;
  keel_listener_t *l, *idle, *closed;
  char addr[KEEL_ADDRSTRLEN], idle_addr[KEEL_ADDRSTRLEN], closed_addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  CHECK_RC(kt_listen_loopback(&idle, idle_addr, sizeof idle_addr));
  CHECK_RC(kt_listen_loopback(&closed, closed_addr, sizeof closed_addr));
  keel_tcp_t *c, *s, *c2, *s2, *queued;
  CHECK_RC(conn_pair(l, addr, &c, &s));
  CHECK_EQ(keel_write(keel_tcp_stream(c), "unread", 6), 6);
  CHECK_RC(conn_pair(l, addr, &c2, &s2));
  CHECK_RC(keel_tcp_close(c2));
  CHECK_RC(keel_stream_shutdown(keel_tcp_stream(s2), SHUT_WR));
  CHECK_RC(keel_tcp_connect(addr, &queued));
  CHECK_EQ(keel_write(keel_tcp_stream(queued), "waiting", 7), 7);
  CHECK_RC(keel_tcp_connect(closed_addr, &c2));
  CHECK_RC(keel_listener_close(closed)); /* c2 was queued there: reset, left open */
  (void)idle;
  return 0;
}

static void test_runtime_frees(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 4; seed++)
    kt_run_lab_body(leave_open_body, NULL, seed);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_echo_real),
      cmocka_unit_test(test_echo_lab_seeds),
      cmocka_unit_test(test_refused),
      cmocka_unit_test(test_connect_hangs),
      cmocka_unit_test(test_dropped),
      cmocka_unit_test(test_addr_in_use),
      cmocka_unit_test(test_accept_cancelled),
      cmocka_unit_test(test_backlog_and_close),
      cmocka_unit_test(test_close_with_pending),
      cmocka_unit_test(test_addresses),
      cmocka_unit_test(test_close_either_end),
      cmocka_unit_test(test_runtime_frees),
  };
  const char *filter = getenv("KT_FILTER"); /* e.g. KT_FILTER=test_foo: run one case */
  if (filter && *filter)
    cmocka_set_test_filter(filter);
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
