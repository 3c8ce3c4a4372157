/* TCP echo under io_uring and epoll: bulk data, many connections on two
 * workers with SO_REUSEPORT, IPv6, addresses, resets, half-close, and a
 * python3 peer. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "keel-test.h"

extern char **environ;

#define KT_GUARD_MS 60000 /* no test body may take longer */
#include "kt-guard.h"

#define WATCHDOG_MS 20000 /* upper bound for the scopes of one case */
#define MIB (1u << 20)
/* ThreadSanitizer makes every new fiber cost milliseconds (it maps and
 * clears a shadow stack and a thread state for each): a thousand
 * connections, two fibers each, took longer than the reads' deadline on a
 * loaded machine. The races it looks for show with a hundred. */
#ifndef MANY_CONNS
#define MANY_CONNS (1000 / KT_SCALE)
#endif
/* How long one echo may take in the many-connections case: a hang
 * detector, not a speed check (sanitized builds on a loaded machine are
 * tens of times slower). */
#define MANY_READ_MS (KT_SANITIZED ? 30000 : 5000)
#define MANY_MSGS 10
#define MSG_LEN 64

static int64_t in_ms(int64_t ms) { return keel_now_ns() + ms * KEEL_NS_PER_MS; }

static keel_scope_t *scope_with_deadline_ms(int64_t ms) {
  keel_scope_opts_t o = {.deadline_ns = in_ms(ms), .name = "test"};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(&o, &s);
  return s;
}

static unsigned char pattern_byte(size_t i) { return (unsigned char)(i % 251); }

static int addr_port(const keel_addr_t *a) {
  if (a->ss.ss_family == AF_INET)
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
  if (a->ss.ss_family == AF_INET6)
    return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
  return -1;
}

static int listen_on(const char *hostport, keel_listener_t **out, char *addr, size_t len) {
  keel_listen_opts_t o = {0};
  int rc = keel_tcp_listen(hostport, &o, out);
  if (rc < 0)
    return rc;
  keel_addr_t a;
  CHECK_RC(keel_listener_addr(*out, &a));
  keel_addr_format(&a, addr, len);
  return 0;
}

/* Reads exactly len bytes within ms. */
static int read_n_within(keel_stream_t *s, void *buf, size_t len, int64_t ms) {
  int64_t prev = keel_task_set_deadline(in_ms(ms));
  size_t got = 0;
  int rc = keel_read_exact(s, buf, len, &got);
  keel_task_set_deadline(prev);
  if (rc < 0)
    KT_FAIL("read_exact(%zu) failed: %d (%s) after %zu bytes", len, rc, keel_strerror(rc), got);
  CHECK_EQ(got, len);
  return 0;
}

/* Reads exactly len bytes under a bounded deadline. */
static int read_n(keel_stream_t *s, void *buf, size_t len) {
  return read_n_within(s, buf, len, 5000);
}

/* Reads until EOF (bounded), expecting exactly want bytes of want_buf. */
static int read_to_eof_expect(keel_stream_t *s, const void *want_buf, size_t want) {
  char buf[256];
  size_t n = 0;
  int64_t prev = keel_task_set_deadline(in_ms(5000));
  for (;;) {
    ssize_t k = keel_read(s, buf + n, sizeof buf - n);
    if (k == 0)
      break;
    if (k < 0)
      KT_FAIL("read after %zu bytes: %zd (%s)", n, k, keel_strerror((int)k));
    n += (size_t)k;
    CHECK(n < sizeof buf);
  }
  keel_task_set_deadline(prev);
  CHECK_EQ(n, want);
  CHECK(memcmp(buf, want_buf, want) == 0);
  return 0;
}

/* Echoes c until EOF or an error, then closes it. Server side: errors end
 * the connection only; the clients check what they got. */
static int echo_conn_task(void *arg) {
  keel_tcp_t *c = arg;
  keel_stream_t *s = keel_tcp_stream(c);
  size_t len = 64 * 1024;
  char *buf = malloc(len);
  CHECK(buf != NULL);
  for (;;) {
    ssize_t n = keel_read(s, buf, len);
    int rc = n > 0 ? keel_write_all(s, buf, (size_t)n, NULL) : (int)n;
    if (rc == 0 && n > 0)
      continue;
    /* Only the end of the stream or the end of the test are expected. */
    if (rc != 0 && rc != -ECANCELED && rc != -ETIMEDOUT)
      fprintf(stderr, "# echo server: %s failed: %d (%s)\n", n > 0 ? "write" : "read", rc,
              keel_strerror(rc));
    break;
  }
  free(buf);
  keel_tcp_close(c);
  return 0;
}

/* Accepts one connection and echoes it. */
static int serve_one_task(void *arg) {
  keel_listener_t *l = arg;
  keel_tcp_t *c;
  CHECK_RC(keel_tcp_accept(l, &c));
  return echo_conn_task(c);
}

/* ---- 1 MiB round trip ------------------------------------------------------ */

typedef struct bulk_writer {
  keel_stream_t *stream;
  const unsigned char *buf;
  size_t len;
} bulk_writer_t;

static int bulk_writer_task(void *arg) {
  bulk_writer_t *w = arg;
  size_t written = 0;
  int rc = keel_write_all(w->stream, w->buf, w->len, &written);
  if (rc < 0)
    KT_FAIL("write_all: %d (%s) after %zu bytes", rc, keel_strerror(rc), written);
  CHECK_EQ(written, w->len);
  CHECK_RC(keel_stream_shutdown(w->stream, SHUT_WR));
  return 0;
}

static int bulk_echo_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(listen_on("127.0.0.1:0", &l, addr, sizeof addr));
  unsigned char *out = malloc(MIB), *in = malloc(64 * 1024);
  CHECK(out != NULL && in != NULL);
  for (size_t i = 0; i < MIB; i++)
    out[i] = pattern_byte(i);

  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, serve_one_task, l, NULL));
  keel_tcp_t *c;
  CHECK_RC(keel_tcp_connect(addr, &c));
  bulk_writer_t w = {keel_tcp_stream(c), out, MIB};
  CHECK_RC(keel_spawn(scope, bulk_writer_task, &w, NULL));

  /* This task reads while the writer writes: neither side can get ahead of
   * the other by more than the socket buffers. */
  size_t n = 0;
  int64_t prev = keel_task_set_deadline(in_ms(WATCHDOG_MS));
  for (;;) {
    ssize_t k = keel_read(keel_tcp_stream(c), in, 64 * 1024);
    if (k == 0)
      break;
    if (k < 0)
      KT_FAIL("read after %zu bytes: %zd (%s)", n, k, keel_strerror((int)k));
    for (ssize_t i = 0; i < k; i++)
      if (in[i] != pattern_byte(n + (size_t)i))
        KT_FAIL("echoed byte %zu is %u, want %u", n + (size_t)i, in[i],
                pattern_byte(n + (size_t)i));
    n += (size_t)k;
  }
  keel_task_set_deadline(prev);
  CHECK_EQ(n, MIB);
  CHECK_RC(keel_scope_join(scope));
  keel_scope_close(scope);
  keel_tcp_close(c);
  keel_listener_close(l);
  free(out);
  free(in);
  return 0;
}

/* ---- 1,000 connections on two workers ------------------------------------------ */

typedef struct many {
  char addr[KEEL_ADDRSTRLEN];
  keel_listener_t *listener0;
  atomic_int worker1_listening;
  atomic_int accepted[2];
  atomic_int ok;
} many_t;

typedef struct many_client {
  many_t *many;
  int index;
} many_client_t;

static int accept_loop(keel_listener_t *l, many_t *m) {
  for (;;) {
    keel_tcp_t *c;
    int rc = keel_tcp_accept(l, &c);
    if (rc == -ECANCELED || rc == -ETIMEDOUT)
      return 0;
    CHECK_RC(rc);
    int worker = keel_worker_id();
    CHECK(worker == 0 || worker == 1);
    atomic_fetch_add(&m->accepted[worker], 1);
    rc = keel_spawn(keel_scope_current(), echo_conn_task, c, NULL);
    if (rc < 0) {
      keel_tcp_close(c);
      if (rc == -ECANCELED)
        return 0;
      CHECK_RC(rc);
    }
  }
}

static int accept_loop0_task(void *arg) {
  many_t *m = arg;
  return accept_loop(m->listener0, m);
}

/* Worker 1's listener joins the SO_REUSEPORT group on the same port. */
static int accept_loop1_task(void *arg) {
  many_t *m = arg;
  CHECK_EQ(keel_worker_id(), 1);
  keel_listen_opts_t o = {0};
  keel_listener_t *l;
  CHECK_RC(keel_tcp_listen(m->addr, &o, &l));
  atomic_store(&m->worker1_listening, 1);
  int rc = accept_loop(l, m);
  keel_listener_close(l);
  return rc;
}

static int many_client_task(void *arg) {
  many_client_t *mc = arg;
  keel_tcp_t *c;
  CHECK_RC(keel_tcp_connect(mc->many->addr, &c));
  keel_stream_t *s = keel_tcp_stream(c);
  unsigned char msg[MSG_LEN], echo[MSG_LEN];
  for (int j = 0; j < MANY_MSGS; j++) {
    for (int k = 0; k < MSG_LEN; k++)
      msg[k] = (unsigned char)(mc->index * 31 + j * 7 + k);
    CHECK_RC(keel_write_all(s, msg, sizeof msg, NULL));
    CHECK_RC(read_n_within(s, echo, sizeof echo, MANY_READ_MS));
    if (memcmp(msg, echo, sizeof msg) != 0)
      KT_FAIL("client %d message %d: echo differs", mc->index, j);
  }
  keel_tcp_close(c);
  atomic_fetch_add(&mc->many->ok, 1);
  return 0;
}

static int wait_flag(atomic_int *flag, int64_t ms) {
  int64_t until = in_ms(ms);
  while (!atomic_load(flag)) {
    if (keel_now_ns() > until)
      KT_FAIL("flag not set within %lld ms", (long long)ms);
    CHECK_RC(keel_sleep_ms(1));
  }
  return 0;
}

static int many_body(void *arg) {
  (void)arg;
  many_t m = {0};
  keel_listen_opts_t o = {0};
  CHECK_RC(keel_tcp_listen("127.0.0.1:0", &o, &m.listener0));
  keel_addr_t a;
  CHECK_RC(keel_listener_addr(m.listener0, &a));
  keel_addr_format(&a, m.addr, sizeof m.addr);

  keel_scope_t *server = NULL;
  (void)keel_scope_open(NULL, &server);
  CHECK(server != NULL);
  keel_spawn_opts_t on0 = {.name = "accept0", .on_worker = KEEL_WORKER(0)};
  keel_spawn_opts_t on1 = {.name = "accept1", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(server, accept_loop0_task, &m, &on0));
  CHECK_RC(keel_spawn(server, accept_loop1_task, &m, &on1));
  CHECK_RC(wait_flag(&m.worker1_listening, 5000));

  many_client_t *clients = calloc(MANY_CONNS, sizeof *clients);
  CHECK(clients != NULL);
  keel_scope_t *scope = scope_with_deadline_ms(2 * MANY_READ_MS);
  CHECK(scope != NULL);
  int64_t start = keel_now_ns();
  for (int i = 0; i < MANY_CONNS; i++) {
    clients[i] = (many_client_t){&m, i};
    keel_spawn_opts_t so = {.name = "client", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(scope, many_client_task, &clients[i], &so));
  }
  int rc = keel_scope_join(scope);
  keel_scope_close(scope);
  int a0 = atomic_load(&m.accepted[0]), a1 = atomic_load(&m.accepted[1]);
  fprintf(stderr, "# %d connections in %lld ms; accepted by worker 0: %d, worker 1: %d\n",
          atomic_load(&m.ok), (long long)((keel_now_ns() - start) / KEEL_NS_PER_MS), a0, a1);
  CHECK_RC(rc);
  CHECK_EQ(atomic_load(&m.ok), MANY_CONNS);
  CHECK_EQ(a0 + a1, MANY_CONNS);
  CHECK(a0 > 0); /* SO_REUSEPORT spread the connections over both listeners */
  CHECK(a1 > 0);

  keel_scope_cancel(server, KEEL_CANCEL_USER);
  keel_scope_join(server);
  keel_scope_close(server);
  keel_listener_close(m.listener0);
  free(clients);
  return 0;
}

/* ---- IPv6 and addresses ------------------------------------------------------------ */

/* Connects to addr, accepts, and checks one echo and the four addresses. */
static int check_conn_addrs(keel_listener_t *l, const char *addr, int family) {
  keel_addr_t la, cl, cp, sl, sp;
  CHECK_RC(keel_listener_addr(l, &la));
  int port = addr_port(&la);
  CHECK(port > 0);
  keel_tcp_t *client, *server;
  CHECK_RC(keel_tcp_connect(addr, &client));
  CHECK_RC(keel_tcp_accept(l, &server));
  CHECK_RC(keel_tcp_local_addr(client, &cl));
  CHECK_RC(keel_tcp_peer_addr(client, &cp));
  CHECK_RC(keel_tcp_local_addr(server, &sl));
  CHECK_RC(keel_tcp_peer_addr(server, &sp));
  CHECK_EQ(cl.ss.ss_family, family);
  CHECK_EQ(cp.ss.ss_family, family);
  CHECK_EQ(sl.ss.ss_family, family);
  CHECK_EQ(sp.ss.ss_family, family);
  CHECK_EQ(addr_port(&cp), port); /* the client talks to the listener's port */
  CHECK_EQ(addr_port(&sl), port);
  CHECK(addr_port(&cl) > 0);
  CHECK(addr_port(&cl) != port);
  CHECK_EQ(addr_port(&sp), addr_port(&cl)); /* the server sees the client's port */
  char buf[KEEL_ADDRSTRLEN];
  keel_addr_format(&cp, buf, sizeof buf);
  if (strcmp(buf, addr) != 0)
    KT_FAIL("client's peer address is %s, want %s", buf, addr);

  CHECK_RC(keel_write_all(keel_tcp_stream(client), "hello", 5, NULL));
  char got[5];
  CHECK_RC(read_n(keel_tcp_stream(server), got, sizeof got));
  CHECK(memcmp(got, "hello", 5) == 0);
  keel_tcp_close(client);
  keel_tcp_close(server);
  return 0;
}

static int addrs_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(listen_on("127.0.0.1:0", &l, addr, sizeof addr));
  CHECK(strncmp(addr, "127.0.0.1:", 10) == 0);
  CHECK_RC(check_conn_addrs(l, addr, AF_INET));
  keel_listener_close(l);
  return 0;
}

static int ipv6_body(void *arg) {
  bool *skipped = arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  int rc = listen_on("[::1]:0", &l, addr, sizeof addr);
  if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) {
    *skipped = true;
    return 0;
  }
  CHECK_RC(rc);
  CHECK(strncmp(addr, "[::1]:", 6) == 0);
  CHECK_RC(check_conn_addrs(l, addr, AF_INET6));
  keel_listener_close(l);
  return 0;
}

/* ---- Peer reset mid-write ----------------------------------------------------------- */

typedef struct flood {
  keel_stream_t *stream;
  int result;
  size_t total;
} flood_t;

static int flood_task(void *arg) {
  flood_t *f = arg;
  static unsigned char chunk[64 * 1024];
  for (;;) {
    size_t written = 0;
    int rc = keel_write_all(f->stream, chunk, sizeof chunk, &written);
    f->total += written;
    if (rc < 0) {
      f->result = rc;
      return 0;
    }
  }
}

static int reset_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(listen_on("127.0.0.1:0", &l, addr, sizeof addr));
  keel_tcp_t *client, *server;
  CHECK_RC(keel_tcp_connect(addr, &client));
  CHECK_RC(keel_tcp_accept(l, &server));

  flood_t f = {.stream = keel_tcp_stream(server)};
  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, flood_task, &f, NULL));
  /* Take some of the flood so the writer is surely mid-stream, then stop
   * reading and reset. */
  static unsigned char sink[256 * 1024];
  CHECK_RC(read_n(keel_tcp_stream(client), sink, sizeof sink));
  CHECK_RC(keel_sleep_ms(20));
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  CHECK(setsockopt(keel_tcp_fd(client), SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  keel_tcp_close(client);
  keel_scope_join(scope);
  keel_scope_close(scope);
  if (f.result != -EPIPE && f.result != -ECONNRESET)
    KT_FAIL("writer to a reset peer got %d (%s), want -EPIPE or -ECONNRESET", f.result,
            keel_strerror(f.result));
  /* Writing again on the dead connection: an error, and no SIGPIPE. */
  ssize_t rc = keel_write(keel_tcp_stream(server), "x", 1);
  if (rc != -EPIPE && rc != -ECONNRESET)
    KT_FAIL("second write to a reset peer got %zd, want -EPIPE or -ECONNRESET", rc);
  keel_tcp_close(server);
  keel_listener_close(l);
  return 0;
}

/* ---- Half-close --------------------------------------------------------------------- */

static int half_close_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(listen_on("127.0.0.1:0", &l, addr, sizeof addr));
  keel_tcp_t *client, *server;
  CHECK_RC(keel_tcp_connect(addr, &client));
  CHECK_RC(keel_tcp_accept(l, &server));
  keel_stream_t *cs = keel_tcp_stream(client), *ss = keel_tcp_stream(server);

  CHECK_RC(keel_write_all(cs, "abc", 3, NULL));
  CHECK_RC(keel_stream_shutdown(cs, SHUT_WR));
  CHECK_RC(read_to_eof_expect(ss, "abc", 3));
  char c;
  CHECK_EQ(keel_read(ss, &c, 1), 0); /* EOF stays EOF */
  /* The other direction still works after the peer's SHUT_WR. */
  CHECK_RC(keel_write_all(ss, "reply", 5, NULL));
  CHECK_RC(keel_tcp_close(server));
  CHECK_RC(read_to_eof_expect(cs, "reply", 5));
  keel_tcp_close(client);
  keel_listener_close(l);
  return 0;
}

/* ---- python3 peer --------------------------------------------------------------------- */

static const char python_client[] =
    "import os, socket, sys\n"
    "data = os.urandom(65536)\n"
    "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)\n"
    "s.sendall(data)\n"
    "s.shutdown(socket.SHUT_WR)\n"
    "got = bytearray()\n"
    "while True:\n"
    "    b = s.recv(65536)\n"
    "    if not b:\n"
    "        break\n"
    "    got += b\n"
    "if bytes(got) != data:\n"
    "    sys.stderr.write('python peer: echo mismatch (%d bytes back)\\n' % len(got))\n"
    "    sys.exit(1)\n";

static int python_body(void *arg) {
  (void)arg;
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(listen_on("127.0.0.1:0", &l, addr, sizeof addr));
  keel_addr_t a;
  CHECK_RC(keel_listener_addr(l, &a));
  char port[16];
  snprintf(port, sizeof port, "%d", addr_port(&a));

  keel_scope_t *scope = scope_with_deadline_ms(WATCHDOG_MS);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, serve_one_task, l, NULL));
  char *argv[] = {"python3", "-c", (char *)python_client, port, NULL};
  pid_t pid;
  int err = posix_spawnp(&pid, "python3", NULL, NULL, argv, environ);
  if (err != 0)
    KT_FAIL("cannot spawn python3: %s", strerror(err));
  /* Poll: a blocking waitpid would stall this worker and the echo server. */
  int status = 0;
  int64_t until = in_ms(WATCHDOG_MS);
  pid_t got;
  while ((got = waitpid(pid, &status, WNOHANG)) == 0 && keel_now_ns() < until)
    if (keel_sleep_ms(10) < 0)
      break;
  if (got == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    KT_FAIL("python3 peer did not finish");
  }
  CHECK_EQ(got, pid);
  CHECK(WIFEXITED(status));
  CHECK_EQ(WEXITSTATUS(status), 0);
  CHECK_RC(keel_scope_join(scope)); /* the server saw EOF and finished */
  keel_scope_close(scope);
  keel_listener_close(l);
  return 0;
}

/* ---- cmocka ------------------------------------------------------------------------------ */

static void run_each_backend(int workers, keel_task_fn fn, void *arg) {
  KT_FOR_EACH_BACKEND(b) {
    fprintf(stderr, "# backend %s\n", kt_backend_name(b));
    assert_int_equal(kt_run_guarded(b, workers, fn, arg), 0);
  }
}

static void test_bulk_echo(void **state) {
  (void)state;
  run_each_backend(1, bulk_echo_body, NULL);
}

static void test_many_connections(void **state) {
  (void)state;
  /* Each connection costs two descriptors here (client and server side). */
  struct rlimit rl;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rlim_t want = 4 * MANY_CONNS;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  if (rl.rlim_cur < 2 * MANY_CONNS + 64) {
    fprintf(stderr, "# RLIMIT_NOFILE hard limit %llu is too low for %d connections\n",
            (unsigned long long)rl.rlim_max, MANY_CONNS);
    skip();
  }
  run_each_backend(2, many_body, NULL);
}

static void test_ipv6(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    bool skipped = false;
    fprintf(stderr, "# backend %s\n", kt_backend_name(b));
    assert_int_equal(kt_run_guarded(b, 1, ipv6_body, &skipped), 0);
    if (skipped)
      fprintf(stderr, "# IPv6 loopback unavailable here: skipping the IPv6 case\n");
  }
}

static void test_addresses(void **state) {
  (void)state;
  run_each_backend(1, addrs_body, NULL);
}

static void test_addr_parse(void **state) {
  (void)state;
  static const char *const garbage[] = {
      "",        "host",          "1.2.3.4:99999", "[::1",        "1.2.3.4:",     "1.2.3.4",
      ":",       "1.2.3.4:65536", "1.2.3.4:-1",    "1.2.3.4:80x", "256.1.1.1:80", "[::1]",
      "[::1]80", "[zz::1]:80",    "host:80",       "1.2.3.4: 80",
  };
  keel_addr_t a;
  for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
    int rc = keel_addr_parse(garbage[i], &a);
    if (rc != -EINVAL)
      fail_msg("keel_addr_parse(\"%s\") = %d, want -EINVAL", garbage[i], rc);
  }

  char buf[KEEL_ADDRSTRLEN];
  assert_int_equal(keel_addr_parse("127.0.0.1:80", &a), 0);
  assert_int_equal(a.ss.ss_family, AF_INET);
  const struct sockaddr_in *v4 = (const struct sockaddr_in *)&a.ss;
  assert_int_equal(ntohs(v4->sin_port), 80);
  assert_int_equal(ntohl(v4->sin_addr.s_addr), INADDR_LOOPBACK);
  assert_int_equal(a.len, sizeof(struct sockaddr_in));
  assert_string_equal(keel_addr_format(&a, buf, sizeof buf), "127.0.0.1:80");

  assert_int_equal(keel_addr_parse("[::1]:80", &a), 0);
  assert_int_equal(a.ss.ss_family, AF_INET6);
  const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&a.ss;
  assert_int_equal(ntohs(v6->sin6_port), 80);
  assert_true(IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr));
  assert_int_equal(a.len, sizeof(struct sockaddr_in6));
  assert_string_equal(keel_addr_format(&a, buf, sizeof buf), "[::1]:80");

  assert_int_equal(keel_addr_parse(":8080", &a), 0);
  if (a.ss.ss_family == AF_INET) {
    assert_int_equal(ntohl(((const struct sockaddr_in *)&a.ss)->sin_addr.s_addr), INADDR_ANY);
  } else {
    assert_int_equal(a.ss.ss_family, AF_INET6);
    assert_true(IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a.ss)->sin6_addr));
  }
  assert_int_equal(addr_port(&a), 8080);

  assert_int_equal(keel_addr_parse("10.0.0.1:0", &a), 0);
  assert_int_equal(addr_port(&a), 0);
  assert_int_equal(keel_addr_parse("10.0.0.1:65535", &a), 0);
  assert_int_equal(addr_port(&a), 65535);
}

static void test_reset_mid_write(void **state) {
  (void)state;
  run_each_backend(1, reset_body, NULL);
}

static void test_half_close(void **state) {
  (void)state;
  run_each_backend(1, half_close_body, NULL);
}

static void test_python_peer(void **state) {
  (void)state;
  run_each_backend(1, python_body, NULL);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_addr_parse),  cmocka_unit_test(test_addresses),
      cmocka_unit_test(test_ipv6),        cmocka_unit_test(test_bulk_echo),
      cmocka_unit_test(test_half_close),  cmocka_unit_test(test_reset_mid_write),
      cmocka_unit_test(test_python_peer), cmocka_unit_test(test_many_connections),
  };
  const char *filter = getenv("KT_FILTER"); /* e.g. KT_FILTER=test_foo: run one case */
  if (filter && *filter)
    cmocka_set_test_filter(filter);
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
