/* Shared harness for the TLS tests (not installed): the certificates in
 * the directory KEEL_TEST_CERTS names (made by tests/tls/gen-certs.sh), a
 * byte pattern, the transports, a relay, contexts and connections, checks,
 * an echo, and the case runner.
 *
 * Each case runs over a lab pipe, a lab pipe with short transfers (and,
 * in lab mode, delayed writes) and TCP: loopback on the real backends,
 * the lab network with short transfers and delays in lab mode; lab mode
 * runs over LAB_SEEDS seeds. A relay task between two streams forwards
 * bytes and cuts them at a chosen offset (stall, end of stream or reset).
 * Define KT_GUARD_MS before including. */
#ifndef KT_TLS_TEST_H
#define KT_TLS_TEST_H

#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "kt-guard.h"

#define LAB_SEEDS 32

/* ---- Certificates --------------------------------------------------------- */

enum { C_CA, C_SERVER, C_OTHER, C_EXPIRED, C_WRONGHOST, C_CLIENT, C_SELF, C_ED25519, C_COUNT };
static const char *const cert_name[C_COUNT] = {
    "ca", "server", "other", "expired", "wronghost", "client", "selfsigned", "server-ed25519",
};
static char cert_path[C_COUNT][2][PATH_MAX]; /* .pem, .key */

static inline keel_tls_cert_t cert_of(int which) {
  return (keel_tls_cert_t){.cert_file = cert_path[which][0], .key_file = cert_path[which][1]};
}

/* Fills cert_path; false (and why) if a file is missing. */
static inline bool certs_find(void) {
  const char *dir = getenv("KEEL_TEST_CERTS");
  if (!dir || !*dir) {
    fprintf(stderr, "# skipped: KEEL_TEST_CERTS is not set (tests/tls/gen-certs.sh makes them)\n");
    return false;
  }
  for (int i = 0; i < C_COUNT; i++) {
    snprintf(cert_path[i][0], PATH_MAX, "%s/%s.pem", dir, cert_name[i]);
    snprintf(cert_path[i][1], PATH_MAX, "%s/%s.key", dir, cert_name[i]);
    for (int j = 0; j < 2; j++) {
      if (access(cert_path[i][j], R_OK) != 0) {
        fprintf(stderr, "# skipped: %s: %s\n", cert_path[i][j], strerror(errno));
        return false;
      }
    }
  }
  return true;
}

/* A file's contents, NUL-terminated (malloc'd), for the *_pem options. */
static inline char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf = f ? calloc(1, 65536) : NULL;
  if (buf)
    (void)fread(buf, 1, 65535, f);
  if (f)
    fclose(f);
  return buf;
}

/* ---- Bytes ------------------------------------------------------------------ */

/* A pattern with a prime period, so that bytes off by any shift short of
 * it differ; PAT_SPAN bytes from any offset are contiguous in the table. */
#define PAT_PERIOD 65521u
#define PAT_SPAN 131072u
static unsigned char pat_table[PAT_PERIOD + PAT_SPAN];

static inline void pat_init(void) {
  for (size_t i = 0; i < sizeof pat_table; i++)
    pat_table[i] = (unsigned char)(((i % PAT_PERIOD) * 0x9E3779B97F4A7C15ull) >> 56);
}

/* Byte off of the stream salted salt, and the PAT_SPAN after it. */
static inline const unsigned char *pat_at(uint64_t off, unsigned salt) {
  return pat_table + (off + (uint64_t)salt * 7919u) % PAT_PERIOD;
}

/* ---- Transports --------------------------------------------------------------- */

enum { T_PIPE, T_PIPE_FAULTY, T_TCP, T_COUNT };
enum { M_PIPE = 1 << T_PIPE, M_FAULTY = 1 << T_PIPE_FAULTY, M_TCP = 1 << T_TCP, M_ALL = 7 };
static const char *const transport_name[] = {"lab pipe", "faulty lab pipe", "tcp"};

#define MAX_CONNS 4
#define CASE_SCOPES 8
#define CASE_CTXS 6

enum { C2S, S2C };
enum { AT_STALL, AT_EOF, AT_RESET };

/* One direction of a relay: forwards from -> to up to `cut` bytes, then
 * stalls (until cut is raised), ends `to` (shutdown) or resets it. */
typedef struct relay_dir {
  keel_stream_t *from, *to;
  keel_stream_t **to_owner; /* where the connection keeps `to` */
  size_t passed, cut;
  int at_cut;
  char buf[8192];
  size_t head, len; /* bytes read and not yet forwarded */
} relay_dir_t;

/* One connection: a client and a server TLS stream over an inner pair,
 * through a relay when asked. */
typedef struct conn {
  keel_stream_t *c_inner, *s_inner; /* owned by c and s once they exist */
  keel_tls_t *c, *s;
  keel_stream_t *cs, *ss;        /* c's and s's stream views */
  keel_stream_t *r_near, *r_far; /* the relay's ends: the client's side, the server's */
  relay_dir_t dir[2];
  keel_scope_t *relay_scope;
  int c_rc, s_rc; /* handshake results */
  int64_t s_done_ns;
} conn_t;

typedef struct tcase tcase_t;
typedef int (*case_fn)(tcase_t *tc);

struct tcase {
  int transport;
  int arg;     /* the case's parameter (a TLS version, ...) */
  bool resets; /* the transport also resets connections now and then */
  keel_listener_t *listener;
  char addr[64];
  keel_tls_ctx_t *ctxs[CASE_CTXS];
  keel_tls_ctx_t *sctx, *cctx; /* what conn_open uses */
  conn_t conns[MAX_CONNS];
  int nconns;
  keel_scope_t *scopes[CASE_SCOPES];
};

static inline int tcp_pair(tcase_t *tc, keel_stream_t **client, keel_stream_t **server) {
  if (!tc->listener)
    CHECK_RC(kt_listen_loopback(&tc->listener, tc->addr, sizeof tc->addr));
  keel_lab_net_faults_t f = {.conn = {.capacity = 4096, .short_permille = 300}};
  f.conn.delay_max_ns = 100 * 1000;
  f.drop_permille = tc->resets ? 1 : 0;
  if (keel_lab_active())
    CHECK_RC(keel_lab_net_faults(&f));
  keel_tcp_t *c, *s;
  int rc = keel_tcp_connect(tc->addr, &c);
  if (keel_lab_active())
    keel_lab_net_faults(NULL);
  CHECK_RC(rc);
  if ((rc = keel_tcp_accept(tc->listener, &s)) < 0)
    keel_tcp_close(c);
  CHECK_RC(rc);
  *client = keel_tcp_stream(c);
  *server = keel_tcp_stream(s);
  return 0;
}

static inline int pipe_pair(tcase_t *tc, bool faulty, keel_stream_t **a, keel_stream_t **b) {
  keel_lab_faults_t f = {0};
  if (faulty) {
    f.capacity = 1000;
    f.short_permille = 400;
    /* Real sleeps would take a timer tick each: delays in lab mode only. */
    f.delay_max_ns = keel_lab_active() ? 200 * 1000 : 0;
    f.reset_permille = tc->resets ? 1 : 0;
  }
  CHECK_RC(keel_lab_pipe(&f, a, b));
  return 0;
}

static inline int pair_open(tcase_t *tc, keel_stream_t **client, keel_stream_t **server) {
  if (tc->transport == T_TCP)
    return tcp_pair(tc, client, server);
  return pipe_pair(tc, tc->transport == T_PIPE_FAULTY, client, server);
}

/* ---- Helper tasks --------------------------------------------------------------- */

/* Spawns fn(arg) in a scope of its own, so that it can be cancelled alone;
 * the harness closes it if a check fails first. */
static inline keel_scope_t *case_spawn(tcase_t *tc, keel_task_fn fn, void *arg) {
  for (int i = 0; i < CASE_SCOPES; i++) {
    if (tc->scopes[i] == NULL)
      return tc->scopes[i] = kt_spawn_in_scope(fn, arg, KEEL_WORKER_CURRENT);
  }
  return NULL;
}

static inline int case_join(tcase_t *tc, keel_scope_t *s) {
  for (int i = 0; i < CASE_SCOPES; i++) {
    if (tc->scopes[i] == s)
      tc->scopes[i] = NULL;
  }
  return keel_scope_close(s);
}

/* ---- The relay ------------------------------------------------------------------- */

/* Resets `to`: a lab pipe (or lab TCP) resets the pair; a real TCP
 * connection is closed with SO_LINGER 0, which sends an RST. */
static inline void relay_reset(relay_dir_t *d) {
  if (keel_lab_pipe_reset(d->to) == 0)
    return;
  int fd = -1;
  if (keel_stream_query(d->to, KEEL_STREAM_Q_FD, &fd, sizeof fd) == 0) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  keel_close(d->to);
  *d->to_owner = NULL;
}

static inline void relay_act(relay_dir_t *d) {
  if (d->at_cut == AT_EOF)
    keel_stream_shutdown(d->to, SHUT_WR);
  else
    relay_reset(d);
}

/* A dumb pipe: its failures are the test's faults, not checks. */
static inline int relay_task(void *arg) {
  relay_dir_t *d = arg;
  for (;;) {
    if (d->passed >= d->cut) {
      if (d->at_cut != AT_STALL)
        return relay_act(d), 0;
      if (keel_sleep_ms(1) < 0)
        return 0;
      continue;
    }
    if (d->len == 0) {
      ssize_t n = keel_read(d->from, d->buf, sizeof d->buf);
      if (n <= 0) {
        if (n == 0)
          keel_stream_shutdown(d->to, SHUT_WR);
        return 0;
      }
      d->head = 0;
      d->len = (size_t)n;
    }
    size_t k = d->len < d->cut - d->passed ? d->len : d->cut - d->passed;
    if (keel_write_all(d->to, d->buf + d->head, k, NULL) < 0)
      return 0;
    d->head += k;
    d->len -= k;
    d->passed += k;
  }
}

static inline int relay_start(tcase_t *tc, conn_t *k) {
  k->dir[C2S] = (relay_dir_t){.from = k->r_near, .to = k->r_far, .to_owner = &k->r_far};
  k->dir[S2C] = (relay_dir_t){.from = k->r_far, .to = k->r_near, .to_owner = &k->r_near};
  k->dir[C2S].cut = k->dir[S2C].cut = SIZE_MAX;
  CHECK_RC(keel_scope_open(NULL, &k->relay_scope));
  for (int d = 0; d < 2; d++)
    CHECK_RC(keel_spawn(k->relay_scope, relay_task, &k->dir[d], NULL));
  (void)tc;
  return 0;
}

/* Stops the relay now and ends (or resets) the client's side. */
static inline void relay_cut_now(conn_t *k, int action) {
  keel_scope_cancel(k->relay_scope, KEEL_CANCEL_USER);
  keel_scope_close(k->relay_scope);
  k->relay_scope = NULL;
  k->dir[S2C].at_cut = action;
  relay_act(&k->dir[S2C]);
}

/* Arms a cut `after` bytes from what the direction has passed so far. */
static inline void relay_arm(conn_t *k, int d, size_t after, int action) {
  k->dir[d].at_cut = action;
  k->dir[d].cut = k->dir[d].passed + after;
}

/* ---- Contexts and connections ------------------------------------------------------ */

static inline keel_tls_ctx_opts_t server_opts(int cert) {
  return (keel_tls_ctx_opts_t){
      .server = true, .cert = cert_of(cert), .handshake_timeout_ms = 60000};
}

static inline keel_tls_ctx_opts_t client_opts(void) {
  return (keel_tls_ctx_opts_t){.ca_file = cert_path[C_CA][0]};
}

/* Opens a context the harness closes; *out may be tc->sctx / tc->cctx. */
static inline int ctx_open(tcase_t *tc, const keel_tls_ctx_opts_t *o, keel_tls_ctx_t **out) {
  char reason[KEEL_TLS_REASON_MAX];
  int i = 0;
  while (i < CASE_CTXS && tc->ctxs[i])
    i++;
  CHECK(i < CASE_CTXS);
  int rc = keel_tls_ctx_open(o, &tc->ctxs[i], reason, sizeof reason);
  if (rc < 0)
    KT_FAIL("keel_tls_ctx_open: %d (%s)", rc, reason);
  *out = tc->ctxs[i];
  return 0;
}

static inline int servers_ctx(tcase_t *tc, const keel_tls_ctx_opts_t *so,
                              const keel_tls_ctx_opts_t *co) {
  CHECK_RC(ctx_open(tc, so, &tc->sctx));
  CHECK_RC(ctx_open(tc, co, &tc->cctx));
  return 0;
}

/* The inner ends of a new connection (through a relay if asked). */
static inline int conn_raw(tcase_t *tc, conn_t **out, bool relayed) {
  CHECK(tc->nconns < MAX_CONNS);
  conn_t *k = &tc->conns[tc->nconns++];
  memset(k, 0, sizeof *k);
  if (!relayed) {
    CHECK_RC(pair_open(tc, &k->c_inner, &k->s_inner));
  } else {
    CHECK_RC(pair_open(tc, &k->c_inner, &k->r_near));
    CHECK_RC(pipe_pair(tc, false, &k->r_far, &k->s_inner));
    CHECK_RC(relay_start(tc, k));
  }
  *out = k;
  return 0;
}

static inline int conn_wrap_server(tcase_t *tc, conn_t *k) {
  CHECK_RC(keel_tls_open(tc->sctx, k->s_inner, NULL, &k->s));
  k->ss = keel_tls_stream(k->s);
  return 0;
}

static inline int conn_wrap_client(tcase_t *tc, conn_t *k, const keel_tls_opts_t *o) {
  CHECK_RC(keel_tls_open(tc->cctx, k->c_inner, o, &k->c));
  k->cs = keel_tls_stream(k->c);
  return 0;
}

/* A connection with TLS on both ends, to server_name. */
static inline int conn_open(tcase_t *tc, conn_t **out, const char *server_name, bool relayed) {
  CHECK_RC(conn_raw(tc, out, relayed));
  keel_tls_opts_t o = {.server_name = server_name};
  CHECK_RC(conn_wrap_server(tc, *out));
  CHECK_RC(conn_wrap_client(tc, *out, &o));
  return 0;
}

/* Closes the client's end now (the harness must not close it again). */
static inline int close_client(conn_t *k) {
  keel_stream_t *s = k->cs;
  k->cs = NULL;
  k->c_inner = NULL;
  return keel_close(s);
}

static inline void close_one(keel_stream_t **tls, keel_stream_t **inner) {
  if (*tls)
    keel_close(*tls);
  else if (*inner)
    keel_close(*inner);
  *tls = *inner = NULL;
}

/* Closes what the connection still has, under a short deadline: a close
 * that owes its peer bytes the peer never reads must not hang. */
static inline void conn_close(conn_t *k) {
  if (k->relay_scope) {
    keel_scope_cancel(k->relay_scope, KEEL_CANCEL_USER);
    keel_scope_close(k->relay_scope);
    k->relay_scope = NULL;
  }
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 200 * KEEL_NS_PER_MS);
  close_one(&k->cs, &k->c_inner);
  close_one(&k->ss, &k->s_inner);
  keel_stream_t *none = NULL;
  close_one(&k->r_near, &none);
  close_one(&k->r_far, &none);
  keel_task_set_deadline(prev);
  k->c = k->s = NULL;
}

static inline int hs_server_task(void *arg) {
  conn_t *k = arg;
  k->s_rc = keel_tls_handshake(k->s);
  k->s_done_ns = keel_now_ns();
  return 0;
}

/* Both handshakes at once; their results go to k->c_rc and k->s_rc. */
static inline int conn_handshake(tcase_t *tc, conn_t *k) {
  keel_scope_t *s = case_spawn(tc, hs_server_task, k);
  CHECK(s != NULL);
  k->c_rc = keel_tls_handshake(k->c);
  CHECK_RC(case_join(tc, s));
  return 0;
}

static inline int conn_handshake_ok(tcase_t *tc, conn_t *k) {
  CHECK_RC(conn_handshake(tc, k));
  if (k->c_rc < 0 || k->s_rc < 0)
    KT_FAIL("handshake: client %d (%s), server %d (%s)", k->c_rc, keel_tls_reason(k->c), k->s_rc,
            keel_tls_reason(k->s));
  return 0;
}

/* ---- The case harness ----------------------------------------------------------- */

/* Ends the helper tasks (a failed check cancelled them), closes the
 * connections and the contexts; the listener stays. */
static inline void case_clear(tcase_t *tc) {
  for (int i = 0; i < CASE_SCOPES; i++) {
    keel_scope_close(tc->scopes[i]);
    tc->scopes[i] = NULL;
  }
  for (int i = 0; i < tc->nconns; i++)
    conn_close(&tc->conns[i]);
  tc->nconns = 0;
  for (int i = 0; i < CASE_CTXS; i++) {
    keel_tls_ctx_close(tc->ctxs[i]);
    tc->ctxs[i] = NULL;
  }
  tc->sctx = tc->cctx = NULL;
}

typedef struct case_spec {
  case_fn fn;
  unsigned transports; /* M_* */
  int arg;
  bool resets;
} case_spec_t;

static inline int run_case_on(const case_spec_t *spec, int transport) {
  tcase_t *tc = calloc(1, sizeof *tc);
  CHECK(tc != NULL);
  tc->transport = transport;
  tc->arg = spec->arg;
  tc->resets = spec->resets;
  int rc = spec->fn(tc);
  case_clear(tc);
  if (tc->listener)
    keel_listener_close(tc->listener);
  free(tc);
  return rc;
}

/* Body: the case on every transport it asks for. */
static inline int run_case(void *arg) {
  const case_spec_t *spec = arg;
  for (int t = 0; t < T_COUNT; t++) {
    if (!(spec->transports & 1u << t))
      continue;
    if (spec->resets && t == T_TCP && !keel_lab_active())
      continue; /* the lab network drops connections; loopback does not */
    int rc = run_case_on(spec, t);
    if (rc != 0) {
      fprintf(stderr, "# failed over %s\n", transport_name[t]);
      return rc;
    }
  }
  return 0;
}

static inline void run_spec(case_spec_t spec, uint64_t lab_seeds) {
  kt_run_where(KT_ON_REAL | KT_ON_LAB, run_case, &spec, 1, 1, lab_seeds);
}

static inline void run(case_fn fn, unsigned transports, int arg) {
  run_spec((case_spec_t){fn, transports, arg, false}, LAB_SEEDS);
}

/* Cases made of many handshakes and little I/O: OpenSSL is slow under the
 * sanitizers (TSan above all), and these depend little on interleavings. */
static inline void run_handshakes(case_fn fn, unsigned transports, int arg) {
  run_spec((case_spec_t){fn, transports, arg, false}, KT_SANITIZED ? 8 : LAB_SEEDS);
}

/* ---- Checks ------------------------------------------------------------------------- */

static inline int check_reason(keel_tls_t *t, const char *want) {
  const char *r = keel_tls_reason(t);
  if (!strstr(r, want))
    KT_FAIL("reason \"%s\" lacks \"%s\"", r, want);
  return 0;
}

static inline int check_str(const char *what, const char *got, const char *want) {
  if (!got != !want || (got && strcmp(got, want) != 0))
    KT_FAIL("%s: \"%s\", expected \"%s\"", what, got ? got : "(null)", want ? want : "(null)");
  return 0;
}

/* The peer's subject names the CN wanted first (RFC 2253 order: the CN,
 * then the O and the rest). */
static inline int check_subject(keel_tls_t *t, const char *cn) {
  char buf[256];
  int n = keel_tls_peer_subject(t, buf, sizeof buf);
  CHECK_RC(n);
  CHECK_EQ(n, strlen(buf));
  size_t len = strlen(cn);
  if (strncmp(buf, cn, len) != 0 || (buf[len] != '\0' && buf[len] != ','))
    KT_FAIL("peer subject \"%s\" does not start with %s", buf, cn);
  CHECK_EQ(keel_tls_peer_subject(t, buf, (size_t)n), -ENOSPC);
  return 0;
}

static inline bool info_flag(keel_tls_t *t, int which) {
  keel_tls_info_t i;
  keel_tls_info(t, &i);
  return which == 0 ? i.resumed : which == 1 ? i.peer_closed : i.peer_cert;
}
#define RESUMED(t) info_flag(t, 0)
#define PEER_CLOSED(t) info_flag(t, 1)
#define PEER_CERT(t) info_flag(t, 2)

static inline int read_str(keel_stream_t *s, const char *want) {
  char buf[256];
  size_t len = strlen(want);
  CHECK_RC(keel_read_exact(s, buf, len, NULL));
  if (memcmp(buf, want, len) != 0)
    KT_FAIL("read \"%.*s\", expected \"%s\"", (int)len, buf, want);
  return 0;
}

static inline int write_str(keel_stream_t *s, const char *str) {
  CHECK_RC(keel_write_all(s, str, strlen(str), NULL));
  return 0;
}

/* A failed stream call, with the TLS layer's reason. */
static inline int tls_rc(keel_stream_t *s, ssize_t rc, const char *what) {
  if (rc < 0)
    KT_FAIL("%s: %zd (%s): \"%s\"", what, rc, keel_strerror((int)rc),
            keel_tls_reason(keel_tls_of(s)));
  return 0;
}

/* ---- Echo ------------------------------------------------------------------------------ */

typedef struct echo {
  keel_stream_t *s;
  size_t n; /* bytes to echo */
} echo_t;

static inline int echo_task(void *arg) {
  echo_t *e = arg;
  char buf[8192];
  for (size_t done = 0; done < e->n;) {
    ssize_t n = keel_read(e->s, buf, sizeof buf);
    CHECK_RC(tls_rc(e->s, n, "echo read"));
    CHECK(n > 0);
    CHECK_RC(tls_rc(e->s, keel_write_all(e->s, buf, (size_t)n, NULL), "echo write"));
    done += (size_t)n;
  }
  return 0;
}

static const size_t echo_sizes[] = {1, 100, 16384, 16385, 70000};
#define ECHO_TOTAL (1 + 100 + 16384 + 16385 + 70000)

typedef struct sender {
  keel_stream_t *s;
  unsigned salt;
} sender_t;

/* Writes the messages of every size, one write_all each. */
static inline int sender_task(void *arg) {
  sender_t *w = arg;
  uint64_t off = 0;
  for (size_t i = 0; i < sizeof echo_sizes / sizeof echo_sizes[0]; i++) {
    size_t n = echo_sizes[i];
    CHECK_RC(tls_rc(w->s, keel_write_all(w->s, pat_at(off, w->salt), n, NULL), "write"));
    off += n;
  }
  return 0;
}

/* Messages of every size from a, echoed by a task on b, read back by a
 * reader while they are still being written (echoes would otherwise fill
 * both directions). */
static inline int echo_through(tcase_t *tc, keel_stream_t *a, keel_stream_t *b, unsigned salt) {
  echo_t e = {b, ECHO_TOTAL};
  sender_t w = {a, salt};
  keel_scope_t *es = case_spawn(tc, echo_task, &e), *ws = case_spawn(tc, sender_task, &w);
  CHECK(es && ws);
  static unsigned char back[ECHO_TOTAL];
  CHECK_RC(tls_rc(a, keel_read_exact(a, back, ECHO_TOTAL, NULL), "read back"));
  CHECK(memcmp(back, pat_at(0, salt), ECHO_TOTAL) == 0);
  CHECK_RC(case_join(tc, ws));
  CHECK_RC(case_join(tc, es));
  return 0;
}

/* ---- Relayed connections ------------------------------------------------------ */

/* A relayed connection, handshake done; without tickets nothing follows
 * the server's last flight, so the relay's count is where records start. */
static inline int relayed_conn(tcase_t *tc, conn_t **out) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.no_tickets = true;
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  CHECK_RC(conn_open(tc, out, "localhost", true));
  CHECK_RC(conn_handshake_ok(tc, *out));
  return 0;
}

/* ---- cmocka ------------------------------------------------------------------------------- */

#define TEST(name, body)                  \
  static void test_##name(void **state) { \
    (void)state;                          \
    body;                                 \
  }

/* What each TLS test binary does first: false, with the reason printed,
 * when the certificates are missing (the test is then skipped). */
static inline bool tls_test_init(void) {
  if (!certs_find())
    return false;
  kt_select_backends();
  pat_init();
  if (getenv("KT_FILTER"))
    cmocka_set_test_filter(getenv("KT_FILTER")); /* e.g. KT_FILTER=test_faults */
  return true;
}

#endif
