/* TLS streams: handshake and echo in TLS 1.3 and 1.2, full duplex with
 * verified bytes, SNI (wildcards too), ALPN, each verification failure
 * with its errno and reason, mutual TLS, version mismatch, a client that
 * stalls mid-handshake and one that sends garbage, truncation against a
 * clean close and a half-close, resets inside a record, resumption and
 * ticket key rotation, cancellation of writes (the shield, then the
 * poison) and of reads, close under parked tasks, one reader and one
 * writer at a time, keel_tls_of through a buffered stream, no buffer held
 * while idle, and the context's own errors.
 *
 * Each case runs over a lab pipe, a lab pipe with short transfers (and,
 * in lab mode, delayed writes) and TCP: loopback on the real backends,
 * the lab network with short transfers and delays in lab mode; lab mode
 * runs over 32 seeds. A relay task between two streams forwards bytes
 * and cuts them at a chosen offset (stall, end of stream or reset).
 *
 * Certificates come from the directory KEEL_TEST_CERTS names (made by
 * tests/tls/gen-certs.sh); without it the test is skipped. */
#define KT_GUARD_MS 240000
#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "kt-guard.h"

#include "tls-internal.h" /* the TLS stream's buffers (idle memory) */

#define LAB_SEEDS 32

/* ---- Certificates --------------------------------------------------------- */

enum { C_CA, C_SERVER, C_OTHER, C_EXPIRED, C_WRONGHOST, C_CLIENT, C_SELF, C_ED25519, C_COUNT };
static const char *const cert_name[C_COUNT] = {
    "ca", "server", "other", "expired", "wronghost", "client", "selfsigned", "server-ed25519",
};
static char cert_path[C_COUNT][2][PATH_MAX]; /* .pem, .key */

static keel_tls_cert_t cert_of(int which) {
  return (keel_tls_cert_t){.cert_file = cert_path[which][0], .key_file = cert_path[which][1]};
}

/* Fills cert_path; false (and why) if a file is missing. */
static bool certs_find(void) {
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
static char *slurp(const char *path) {
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

static void pat_init(void) {
  for (size_t i = 0; i < sizeof pat_table; i++)
    pat_table[i] = (unsigned char)(((i % PAT_PERIOD) * 0x9E3779B97F4A7C15ull) >> 56);
}

/* Byte off of the stream salted salt, and the PAT_SPAN after it. */
static const unsigned char *pat_at(uint64_t off, unsigned salt) {
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

static int tcp_pair(tcase_t *tc, keel_stream_t **client, keel_stream_t **server) {
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

static int pipe_pair(tcase_t *tc, bool faulty, keel_stream_t **a, keel_stream_t **b) {
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

static int pair_open(tcase_t *tc, keel_stream_t **client, keel_stream_t **server) {
  if (tc->transport == T_TCP)
    return tcp_pair(tc, client, server);
  return pipe_pair(tc, tc->transport == T_PIPE_FAULTY, client, server);
}

/* ---- Helper tasks --------------------------------------------------------------- */

/* Spawns fn(arg) in a scope of its own, so that it can be cancelled alone;
 * the harness closes it if a check fails first. */
static keel_scope_t *case_spawn(tcase_t *tc, keel_task_fn fn, void *arg) {
  for (int i = 0; i < CASE_SCOPES; i++) {
    if (tc->scopes[i] == NULL)
      return tc->scopes[i] = kt_spawn_in_scope(fn, arg, KEEL_WORKER_CURRENT);
  }
  return NULL;
}

static int case_join(tcase_t *tc, keel_scope_t *s) {
  for (int i = 0; i < CASE_SCOPES; i++) {
    if (tc->scopes[i] == s)
      tc->scopes[i] = NULL;
  }
  return keel_scope_close(s);
}

/* ---- The relay ------------------------------------------------------------------- */

/* Resets `to`: a lab pipe (or lab TCP) resets the pair; a real TCP
 * connection is closed with SO_LINGER 0, which sends an RST. */
static void relay_reset(relay_dir_t *d) {
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

static void relay_act(relay_dir_t *d) {
  if (d->at_cut == AT_EOF)
    keel_stream_shutdown(d->to, SHUT_WR);
  else
    relay_reset(d);
}

/* A dumb pipe: its failures are the test's faults, not checks. */
static int relay_task(void *arg) {
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

static int relay_start(tcase_t *tc, conn_t *k) {
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
static void relay_cut_now(conn_t *k, int action) {
  keel_scope_cancel(k->relay_scope, KEEL_CANCEL_USER);
  keel_scope_close(k->relay_scope);
  k->relay_scope = NULL;
  k->dir[S2C].at_cut = action;
  relay_act(&k->dir[S2C]);
}

/* Arms a cut `after` bytes from what the direction has passed so far. */
static void relay_arm(conn_t *k, int d, size_t after, int action) {
  k->dir[d].at_cut = action;
  k->dir[d].cut = k->dir[d].passed + after;
}

/* ---- Contexts and connections ------------------------------------------------------ */

static keel_tls_ctx_opts_t server_opts(int cert) {
  return (keel_tls_ctx_opts_t){
      .server = true, .cert = cert_of(cert), .handshake_timeout_ms = 60000};
}

static keel_tls_ctx_opts_t client_opts(void) {
  return (keel_tls_ctx_opts_t){.ca_file = cert_path[C_CA][0]};
}

/* Opens a context the harness closes; *out may be tc->sctx / tc->cctx. */
static int ctx_open(tcase_t *tc, const keel_tls_ctx_opts_t *o, keel_tls_ctx_t **out) {
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

static int servers_ctx(tcase_t *tc, const keel_tls_ctx_opts_t *so, const keel_tls_ctx_opts_t *co) {
  CHECK_RC(ctx_open(tc, so, &tc->sctx));
  CHECK_RC(ctx_open(tc, co, &tc->cctx));
  return 0;
}

/* The inner ends of a new connection (through a relay if asked). */
static int conn_raw(tcase_t *tc, conn_t **out, bool relayed) {
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

static int conn_wrap_server(tcase_t *tc, conn_t *k) {
  CHECK_RC(keel_tls_open(tc->sctx, k->s_inner, NULL, &k->s));
  k->ss = keel_tls_stream(k->s);
  return 0;
}

static int conn_wrap_client(tcase_t *tc, conn_t *k, const keel_tls_opts_t *o) {
  CHECK_RC(keel_tls_open(tc->cctx, k->c_inner, o, &k->c));
  k->cs = keel_tls_stream(k->c);
  return 0;
}

/* A connection with TLS on both ends, to server_name. */
static int conn_open(tcase_t *tc, conn_t **out, const char *server_name, bool relayed) {
  CHECK_RC(conn_raw(tc, out, relayed));
  keel_tls_opts_t o = {.server_name = server_name};
  CHECK_RC(conn_wrap_server(tc, *out));
  CHECK_RC(conn_wrap_client(tc, *out, &o));
  return 0;
}

/* Closes the client's end now (the harness must not close it again). */
static int close_client(conn_t *k) {
  keel_stream_t *s = k->cs;
  k->cs = NULL;
  k->c_inner = NULL;
  return keel_close(s);
}

static void close_one(keel_stream_t **tls, keel_stream_t **inner) {
  if (*tls)
    keel_close(*tls);
  else if (*inner)
    keel_close(*inner);
  *tls = *inner = NULL;
}

/* Closes what the connection still has, under a short deadline: a close
 * that owes its peer bytes the peer never reads must not hang. */
static void conn_close(conn_t *k) {
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

static int hs_server_task(void *arg) {
  conn_t *k = arg;
  k->s_rc = keel_tls_handshake(k->s);
  k->s_done_ns = keel_now_ns();
  return 0;
}

/* Both handshakes at once; their results go to k->c_rc and k->s_rc. */
static int conn_handshake(tcase_t *tc, conn_t *k) {
  keel_scope_t *s = case_spawn(tc, hs_server_task, k);
  CHECK(s != NULL);
  k->c_rc = keel_tls_handshake(k->c);
  CHECK_RC(case_join(tc, s));
  return 0;
}

static int conn_handshake_ok(tcase_t *tc, conn_t *k) {
  CHECK_RC(conn_handshake(tc, k));
  if (k->c_rc < 0 || k->s_rc < 0)
    KT_FAIL("handshake: client %d (%s), server %d (%s)", k->c_rc, keel_tls_reason(k->c), k->s_rc,
            keel_tls_reason(k->s));
  return 0;
}

/* ---- The case harness ----------------------------------------------------------- */

/* Ends the helper tasks (a failed check cancelled them), closes the
 * connections and the contexts; the listener stays. */
static void case_clear(tcase_t *tc) {
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

static int run_case_on(const case_spec_t *spec, int transport) {
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
static int run_case(void *arg) {
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

static void run_spec(case_spec_t spec, uint64_t lab_seeds) {
  kt_run_where(KT_ON_REAL | KT_ON_LAB, run_case, &spec, 1, 1, lab_seeds);
}

static void run(case_fn fn, unsigned transports, int arg) {
  run_spec((case_spec_t){fn, transports, arg, false}, LAB_SEEDS);
}

/* Cases made of many handshakes and little I/O: OpenSSL is slow under the
 * sanitizers (TSan above all), and these depend little on interleavings. */
static void run_handshakes(case_fn fn, unsigned transports, int arg) {
  run_spec((case_spec_t){fn, transports, arg, false}, KT_SANITIZED ? 8 : LAB_SEEDS);
}

/* ---- Checks ------------------------------------------------------------------------- */

static int check_reason(keel_tls_t *t, const char *want) {
  const char *r = keel_tls_reason(t);
  if (!strstr(r, want))
    KT_FAIL("reason \"%s\" lacks \"%s\"", r, want);
  return 0;
}

static int check_str(const char *what, const char *got, const char *want) {
  if (!got != !want || (got && strcmp(got, want) != 0))
    KT_FAIL("%s: \"%s\", expected \"%s\"", what, got ? got : "(null)", want ? want : "(null)");
  return 0;
}

/* What both ends agreed on. */
static int check_info(keel_tls_t *t, int version, const char *alpn, const char *sni) {
  keel_tls_info_t i;
  CHECK_RC(keel_tls_info(t, &i));
  CHECK_RC(check_str("version", i.version, version == KEEL_TLS_1_2 ? "TLSv1.2" : "TLSv1.3"));
  CHECK(i.cipher != NULL);
  if (version == KEEL_TLS_1_2)
    CHECK(strncmp(i.cipher, "ECDHE-ECDSA-", 12) == 0);
  else
    CHECK(strncmp(i.cipher, "TLS_", 4) == 0);
  CHECK_RC(check_str("alpn", i.alpn, alpn));
  CHECK_RC(check_str("server_name", i.server_name, sni));
  CHECK(!i.resumed && !i.peer_closed);
  CHECK_EQ(i.alert_received, -1);
  return 0;
}

/* The peer's subject names the CN wanted first (RFC 2253 order: the CN,
 * then the O and the rest). */
static int check_subject(keel_tls_t *t, const char *cn) {
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

static bool info_flag(keel_tls_t *t, int which) {
  keel_tls_info_t i;
  keel_tls_info(t, &i);
  return which == 0 ? i.resumed : which == 1 ? i.peer_closed : i.peer_cert;
}
#define RESUMED(t) info_flag(t, 0)
#define PEER_CLOSED(t) info_flag(t, 1)
#define PEER_CERT(t) info_flag(t, 2)

static int read_str(keel_stream_t *s, const char *want) {
  char buf[256];
  size_t len = strlen(want);
  CHECK_RC(keel_read_exact(s, buf, len, NULL));
  if (memcmp(buf, want, len) != 0)
    KT_FAIL("read \"%.*s\", expected \"%s\"", (int)len, buf, want);
  return 0;
}

static int write_str(keel_stream_t *s, const char *str) {
  CHECK_RC(keel_write_all(s, str, strlen(str), NULL));
  return 0;
}

/* A failed stream call, with the TLS layer's reason. */
static int tls_rc(keel_stream_t *s, ssize_t rc, const char *what) {
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

static int echo_task(void *arg) {
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
static int sender_task(void *arg) {
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
static int echo_through(tcase_t *tc, keel_stream_t *a, keel_stream_t *b, unsigned salt) {
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

/* ---- Cases: handshake, echo, info ----------------------------------------------------- */

static const char *const server_alpn[] = {"h2", "http/1.1", NULL};
static const char *const client_alpn[] = {"http/1.1", "h2", NULL};

/* The first read and write run the handshake; echo both ways; what was
 * agreed (arg: the client's max_version). */
static int echo_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.alpn = server_alpn;
  co.alpn = client_alpn;
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  keel_tls_info_t i;
  CHECK_RC(keel_tls_info(k->c, &i));
  CHECK(i.version == NULL && i.cipher == NULL); /* no handshake yet */
  CHECK_RC(echo_through(tc, k->cs, k->ss, 1));
  CHECK_RC(echo_through(tc, k->ss, k->cs, 2));
  CHECK_RC(check_info(k->c, tc->arg, "h2", "localhost"));
  CHECK_RC(check_info(k->s, tc->arg, "h2", "localhost"));
  CHECK_RC(check_subject(k->c, "CN=localhost"));
  CHECK(PEER_CERT(k->c));
  CHECK(!PEER_CERT(k->s)); /* none asked for */
  CHECK_EQ(keel_tls_peer_subject(k->s, (char[8]){0}, 8), -ENOENT);
  CHECK_EQ(strlen(keel_tls_reason(k->c)), 0);
  const char *transport = NULL;
  CHECK_RC(keel_stream_query(k->cs, KEEL_STREAM_Q_TRANSPORT, &transport, sizeof transport));
  CHECK_RC(check_str("transport", transport, tc->transport == T_TCP ? "tcp" : "lab-pipe"));
  return 0;
}

/* ---- Full duplex ------------------------------------------------------------------------- */

typedef struct flow {
  keel_stream_t *s;
  uint64_t total, done;
  unsigned salt;
  unsigned char *buf; /* the reader's */
} flow_t;

/* Writes the pattern in random pieces (write or a two-piece writev), then
 * shuts down writing: the peer's reader sees close_notify. */
static int flow_writer(void *arg) {
  flow_t *f = arg;
  while (f->done < f->total) {
    size_t n = 1 + (size_t)keel_random_below(PAT_SPAN);
    if (n > f->total - f->done)
      n = (size_t)(f->total - f->done);
    unsigned char *p = (unsigned char *)pat_at(f->done, f->salt);
    struct iovec iov[2] = {{p, n / 3}, {p + n / 3, n - n / 3}};
    ssize_t w = keel_random_below(2) ? keel_write(f->s, p, n) : keel_writev(f->s, iov, 2);
    CHECK_RC(w);
    CHECK(w > 0);
    f->done += (uint64_t)w;
  }
  CHECK_RC(keel_stream_shutdown(f->s, SHUT_WR));
  return 0;
}

/* Reads to the end in random sizes, checking every byte. */
static int flow_reader(void *arg) {
  flow_t *f = arg;
  for (;;) {
    ssize_t n = keel_read(f->s, f->buf, 1 + (size_t)keel_random_below(PAT_SPAN));
    CHECK_RC(n);
    if (n == 0)
      break;
    CHECK(f->done + (uint64_t)n <= f->total);
    if (memcmp(f->buf, pat_at(f->done, f->salt), (size_t)n) != 0)
      KT_FAIL("bytes %llu..%llu differ from what was written", (unsigned long long)f->done,
              (unsigned long long)f->done + (unsigned long long)n);
    f->done += (uint64_t)n;
  }
  CHECK_EQ(f->done, f->total);
  CHECK(PEER_CLOSED(keel_tls_of(f->s)));
  return 0;
}

static uint64_t duplex_bytes(int transport) {
  uint64_t mib = 1 << 20;
  if (keel_lab_active())
    return (transport == T_PIPE ? 4 : 2) * mib / (KT_SANITIZED ? 4 : 1);
  if (transport == T_TCP)
    return (KT_SANITIZED ? 16 : 100) * mib;
  return (transport == T_PIPE ? 8 : 2) * mib / (KT_SANITIZED ? 2 : 1);
}

/* On each end one task reads while another writes, both ways at once. */
static int duplex_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  uint64_t total = duplex_bytes(tc->transport);
  flow_t f[4] = {
      {.s = k->cs, .total = total, .salt = 10},
      {.s = k->ss, .total = total, .salt = 10},
      {.s = k->ss, .total = total, .salt = 11},
      {.s = k->cs, .total = total, .salt = 11},
  };
  static unsigned char bufs[2][PAT_SPAN];
  f[1].buf = bufs[0];
  f[3].buf = bufs[1];
  keel_scope_t *s[4];
  for (int i = 0; i < 4; i++) {
    s[i] = case_spawn(tc, i % 2 ? flow_reader : flow_writer, &f[i]);
    CHECK(s[i] != NULL);
  }
  for (int i = 0; i < 4; i++)
    CHECK_RC(case_join(tc, s[i]));
  CHECK_EQ(f[1].done, total);
  CHECK_EQ(f[3].done, total);
  return 0;
}

/* ---- SNI and ALPN ---------------------------------------------------------------------- */

typedef struct sni_try {
  const char *name;
  int c_rc;
  const char *subject; /* the certificate the server chose */
} sni_try_t;

/* One name: the verifying client's outcome; the certificate the server
 * chose, seen by a client that does not verify. */
static int sni_one(tcase_t *tc, const sni_try_t *try) {
  keel_tls_ctx_t *verifying = tc->cctx;
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, try->name, false));
  CHECK_RC(conn_handshake(tc, k));
  if (k->c_rc != try->c_rc)
    KT_FAIL("%s: %d (%s)", try->name, k->c_rc, keel_tls_reason(k->c));
  if (k->c_rc < 0) {
    CHECK_RC(check_reason(k->c, "hostname mismatch"));
    conn_close(k);
    tc->nconns = 0;
    tc->cctx = tc->ctxs[2]; /* the insecure one */
    CHECK_RC(conn_open(tc, &k, try->name, false));
    CHECK_RC(conn_handshake_ok(tc, k));
    tc->cctx = verifying;
  }
  CHECK_RC(check_subject(k->c, try->subject));
  keel_tls_info_t info;
  CHECK_RC(keel_tls_info(k->s, &info));
  CHECK(info.server_name && strcasecmp(info.server_name, try->name) == 0);
  return 0;
}

/* The server picks the certificate by the SNI name (exact, wildcard of one
 * label), the default one otherwise, which then fails the client's check. */
static int sni_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  keel_tls_cert_t more[] = {cert_of(C_OTHER), cert_of(C_WRONGHOST)};
  so.sni_certs = more;
  so.sni_count = 2;
  keel_tls_ctx_opts_t ico = {.insecure_no_verify = true};
  keel_tls_ctx_t *insecure;
  CHECK_RC(servers_ctx(tc, &so, &co));
  CHECK_RC(ctx_open(tc, &ico, &insecure)); /* tc->ctxs[2] */
  static const sni_try_t tries[] = {
      {"localhost", 0, "CN=localhost"},
      {"other.test", 0, "CN=other.test"},
      {"OTHER.test", 0, "CN=other.test"},
      {"x.wild.test", 0, "CN=other.test"},
      {"wrong.test", 0, "CN=wrong.test"},
      {"a.b.wild.test", -EKEYREJECTED, "CN=localhost"},
      {"nowhere.test", -EKEYREJECTED, "CN=localhost"},
  };
  for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
    CHECK_RC(sni_one(tc, &tries[i]));
    conn_close(&tc->conns[0]);
    tc->nconns = 0;
  }
  return 0;
}

static int alpn_try(tcase_t *tc, const char *const *alpn, const char *want) {
  conn_t *k;
  CHECK_RC(conn_raw(tc, &k, false));
  keel_tls_opts_t o = {.server_name = "localhost", .alpn = alpn};
  CHECK_RC(conn_wrap_server(tc, k));
  CHECK_RC(conn_wrap_client(tc, k, &o));
  CHECK_RC(conn_handshake_ok(tc, k));
  keel_tls_info_t ci, si;
  CHECK_RC(keel_tls_info(k->c, &ci));
  CHECK_RC(keel_tls_info(k->s, &si));
  CHECK_RC(check_str("client alpn", ci.alpn, want));
  CHECK_RC(check_str("server alpn", si.alpn, want));
  conn_close(k);
  tc->nconns = 0;
  return 0;
}

/* The server takes the first of its own protocols the client offers; a
 * client offering none speaks without; nothing in common fails both. */
static int alpn_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.alpn = server_alpn;
  co.alpn = client_alpn;
  CHECK_RC(servers_ctx(tc, &so, &co));
  CHECK_RC(alpn_try(tc, NULL, "h2"));
  static const char *const only_http1[] = {"http/1.1", NULL};
  CHECK_RC(alpn_try(tc, only_http1, "http/1.1"));
  keel_tls_ctx_opts_t plain = client_opts();
  CHECK_RC(ctx_open(tc, &plain, &tc->cctx));
  CHECK_RC(alpn_try(tc, NULL, NULL));
  static const char *const foreign[] = {"x-other", "spdy/3", NULL};
  conn_t *k;
  CHECK_RC(conn_raw(tc, &k, false));
  keel_tls_opts_t o = {.server_name = "localhost", .alpn = foreign};
  CHECK_RC(conn_wrap_server(tc, k));
  CHECK_RC(conn_wrap_client(tc, k, &o));
  CHECK_RC(conn_handshake(tc, k));
  CHECK_EQ(k->c_rc, -ENOPROTOOPT);
  CHECK_EQ(k->s_rc, -ENOPROTOOPT);
  CHECK_RC(check_reason(k->c, "alert received: no application protocol"));
  CHECK_EQ(keel_write(k->cs, "x", 1), -ENOPROTOOPT); /* it sticks */
  return 0;
}

/* ---- Verification -------------------------------------------------------------------- */

typedef struct verify_try {
  int server_cert;
  const char *name;
  int ca; /* the client's trust anchor */
  int c_rc;
  const char *c_reason;
  int s_rc; /* the alert the server receives */
  const char *s_reason;
  int s_alert;
} verify_try_t;

static const verify_try_t verify_tries[] = {
    {C_EXPIRED, "localhost", C_CA, -EKEYEXPIRED, "certificate has expired", -EKEYREJECTED,
     "alert received: certificate expired", SSL_AD_CERTIFICATE_EXPIRED},
    {C_WRONGHOST, "localhost", C_CA, -EKEYREJECTED, "hostname mismatch", -EKEYREJECTED,
     "alert received: bad certificate", SSL_AD_BAD_CERTIFICATE},
    {C_SELF, "localhost", C_CA, -EKEYREJECTED, "self-signed certificate", -EKEYREJECTED,
     "alert received: unknown CA", SSL_AD_UNKNOWN_CA},
    {C_SERVER, "localhost", C_SELF, -EKEYREJECTED, "unable to get local issuer certificate",
     -EKEYREJECTED, "alert received: unknown CA", SSL_AD_UNKNOWN_CA},
    {C_SERVER, "127.0.0.2", C_CA, -EKEYREJECTED, "IP address mismatch", -EKEYREJECTED,
     "alert received: bad certificate", SSL_AD_BAD_CERTIFICATE},
    {C_WRONGHOST, "127.0.0.1", C_CA, -EKEYREJECTED, "IP address mismatch", -EKEYREJECTED,
     "alert received: bad certificate", SSL_AD_BAD_CERTIFICATE},
    {C_SERVER, "127.0.0.1", C_CA, 0, "", 0, "", -1},
    {C_SERVER, "::1", C_CA, 0, "", 0, "", -1},
};

static int verify_one(tcase_t *tc, const verify_try_t *v, bool insecure) {
  keel_tls_ctx_opts_t so = server_opts(v->server_cert), co = client_opts();
  co.ca_file = cert_path[v->ca][0];
  co.insecure_no_verify = insecure;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, v->name, false));
  CHECK_RC(conn_handshake(tc, k));
  int c_want = insecure ? 0 : v->c_rc, s_want = insecure ? 0 : v->s_rc;
  if (k->c_rc != c_want || k->s_rc != s_want)
    KT_FAIL("%s %s%s: client %d (%s), server %d (%s)", cert_name[v->server_cert], v->name,
            insecure ? " (insecure)" : "", k->c_rc, keel_tls_reason(k->c), k->s_rc,
            keel_tls_reason(k->s));
  if (!insecure) {
    CHECK_RC(check_reason(k->c, v->c_reason));
    CHECK_RC(check_reason(k->s, v->s_reason));
    keel_tls_info_t info;
    CHECK_RC(keel_tls_info(k->s, &info));
    CHECK_EQ(info.alert_received, v->s_alert);
  }
  if (s_want) {
    char buf[8];
    CHECK_EQ(keel_read(k->ss, buf, sizeof buf), s_want); /* the failure sticks */
  }
  return 0;
}

/* Each failure with its errno and reason on the client, and the alert it
 * sent on the server; insecure_no_verify accepts them all. */
static int verify_case(tcase_t *tc) {
  for (size_t i = 0; i < sizeof verify_tries / sizeof verify_tries[0]; i++) {
    for (int insecure = 0; insecure < 2; insecure++) {
      CHECK_RC(verify_one(tc, &verify_tries[i], insecure));
      case_clear(tc);
    }
  }
  return 0;
}

/* ---- Mutual TLS ------------------------------------------------------------------------ */

/* Client: fails at its handshake or (TLS 1.3: the server checks our
 * certificate after our Finished) at its first read. */
static int client_fails(conn_t *k, int want, const char *reason) {
  int rc = k->c_rc;
  if (rc == 0) {
    char buf[8];
    rc = (int)keel_read(k->cs, buf, sizeof buf);
  }
  if (rc != want)
    KT_FAIL("client: %d (%s), expected %d", rc, keel_tls_reason(k->c), want);
  CHECK_RC(check_reason(k->c, reason));
  return 0;
}

static int mtls_refused(tcase_t *tc, const keel_tls_ctx_opts_t *co, const char *s_reason,
                        const char *c_reason) {
  CHECK_RC(ctx_open(tc, co, &tc->cctx));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake(tc, k));
  if (k->s_rc != -EKEYREJECTED)
    KT_FAIL("server: %d (%s)", k->s_rc, keel_tls_reason(k->s));
  CHECK_RC(check_reason(k->s, s_reason));
  CHECK_RC(client_fails(k, -EKEYREJECTED, c_reason));
  return 0;
}

/* The client's certificate and key from memory, and its CA too. */
static int mtls_accepted(tcase_t *tc) {
  char *cert = slurp(cert_path[C_CLIENT][0]), *key = slurp(cert_path[C_CLIENT][1]);
  char *ca = slurp(cert_path[C_CA][0]);
  keel_tls_ctx_opts_t co = {.cert = {.cert_pem = cert, .key_pem = key}, .ca_pem = ca};
  int rc = cert && key && ca ? ctx_open(tc, &co, &tc->cctx) : -ENOMEM;
  free(cert);
  free(key);
  free(ca);
  CHECK_RC(rc);
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(check_subject(k->s, "CN=keel-test-client"));
  CHECK(PEER_CERT(k->s));
  CHECK_RC(echo_through(tc, k->cs, k->ss, 3));
  return 0;
}

/* client_auth REQUIRE: no certificate, or one from another CA, fails on
 * both sides; ours passes and the server sees who we are. */
static int mtls_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.client_auth = KEEL_TLS_CLIENT_CERT_REQUIRE;
  so.ca_file = cert_path[C_CA][0];
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  CHECK_RC(mtls_refused(tc, &co, "peer did not return a certificate",
                        "alert received: certificate required"));
  case_clear(tc);
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  co.cert = cert_of(C_SELF);
  CHECK_RC(mtls_refused(tc, &co, "self-signed certificate", "alert received: unknown CA"));
  case_clear(tc);
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  CHECK_RC(mtls_accepted(tc));
  return 0;
}

/* client_auth OPTIONAL: a client without a certificate gets in. */
static int mtls_optional_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.client_auth = KEEL_TLS_CLIENT_CERT_OPTIONAL;
  so.ca_file = cert_path[C_CA][0];
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK(!PEER_CERT(k->s));
  CHECK_EQ(keel_tls_peer_subject(k->s, (char[64]){0}, 64), -ENOENT);
  CHECK_RC(echo_through(tc, k->ss, k->cs, 4));
  return 0;
}

/* ---- Versions -------------------------------------------------------------------------- */

/* No version in common, either way round: -EPROTONOSUPPORT on both. */
static int version_case(tcase_t *tc) {
  static const int ranges[2][4] = {
      /* server min, max; client min, max */
      {0, KEEL_TLS_1_2, KEEL_TLS_1_3, 0},
      {KEEL_TLS_1_3, 0, 0, KEEL_TLS_1_2},
  };
  for (int i = 0; i < 2; i++) {
    keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
    so.min_version = ranges[i][0];
    so.max_version = ranges[i][1];
    co.min_version = ranges[i][2];
    co.max_version = ranges[i][3];
    CHECK_RC(servers_ctx(tc, &so, &co));
    conn_t *k;
    CHECK_RC(conn_open(tc, &k, "localhost", false));
    CHECK_RC(conn_handshake(tc, k));
    if (k->c_rc != -EPROTONOSUPPORT || k->s_rc != -EPROTONOSUPPORT)
      KT_FAIL("range %d: client %d (%s), server %d (%s)", i, k->c_rc, keel_tls_reason(k->c),
              k->s_rc, keel_tls_reason(k->s));
    CHECK(*keel_tls_reason(k->c) && *keel_tls_reason(k->s));
    case_clear(tc);
  }
  return 0;
}

/* ---- Hostile clients ------------------------------------------------------------------- */

static int hs_client_task(void *arg) {
  conn_t *k = arg;
  k->c_rc = keel_tls_handshake(k->c);
  return 0;
}

/* A second connection, served in full while the first one is stuck. */
static int serve_other(tcase_t *tc, conn_t **out) {
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(echo_through(tc, k->cs, k->ss, 5));
  *out = k;
  return 0;
}

/* A client whose ClientHello stops after 100 bytes is cut off at the
 * server's handshake limit, exactly in lab mode; another connection is
 * served meanwhile. */
static int stall_case(tcase_t *tc) {
  int64_t limit_ms = keel_lab_active() ? 2000 : 1000;
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.handshake_timeout_ms = limit_ms;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *a, *b;
  CHECK_RC(conn_raw(tc, &a, true));
  relay_arm(a, C2S, 100, AT_STALL);
  int64_t t0 = keel_now_ns();
  CHECK_RC(conn_wrap_server(tc, a));
  keel_tls_opts_t o = {.server_name = "localhost"};
  CHECK_RC(conn_wrap_client(tc, a, &o));
  keel_scope_t *sa = case_spawn(tc, hs_server_task, a), *ca = case_spawn(tc, hs_client_task, a);
  CHECK(sa && ca);
  CHECK_RC(serve_other(tc, &b));
  CHECK(b->s_done_ns < t0 + limit_ms * KEEL_NS_PER_MS);
  CHECK_RC(case_join(tc, sa));
  CHECK_EQ(a->s_rc, -ETIMEDOUT);
  CHECK_RC(check_reason(a->s, "handshake timeout"));
  CHECK_BETWEEN(a->s_done_ns - t0, limit_ms * KEEL_NS_PER_MS,
                limit_ms * KEEL_NS_PER_MS + kt_late_ns());
  CHECK_EQ(a->dir[C2S].passed, 100);
  /* The server lets go: the client hears the end. */
  keel_close(a->ss);
  a->ss = NULL;
  CHECK_RC(case_join(tc, ca));
  CHECK_EQ(a->c_rc, -ECONNRESET);
  return 0;
}

/* Text instead of a ClientHello: that connection fails (-EPROTO, for
 * every later call too), another one is served meanwhile. */
static int garbage_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  CHECK_RC(servers_ctx(tc, &so, &co));
  static const struct {
    const char *bytes;
    size_t len;
  } junk[] = {
      {"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", 35},
      {"\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9}, /* a ClientHello of nothing */
      {"\x17\x03\x03\x00\x10sixteen bytes...", 21},
  };
  for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
    conn_t *a, *b;
    CHECK_RC(conn_raw(tc, &a, false));
    CHECK_RC(conn_wrap_server(tc, a));
    keel_scope_t *sa = case_spawn(tc, hs_server_task, a);
    CHECK(sa != NULL);
    CHECK_RC(keel_write_all(a->c_inner, junk[i].bytes, junk[i].len, NULL));
    CHECK_RC(serve_other(tc, &b));
    CHECK_RC(case_join(tc, sa));
    if (a->s_rc != -EPROTO)
      KT_FAIL("junk %zu: %d (%s)", i, a->s_rc, keel_tls_reason(a->s));
    CHECK(*keel_tls_reason(a->s));
    CHECK_EQ(keel_write(a->ss, "x", 1), -EPROTO);
    CHECK_EQ(keel_read(a->ss, (char[4]){0}, 4), -EPROTO);
    case_clear(tc);
    CHECK_RC(servers_ctx(tc, &so, &co));
  }
  return 0;
}

/* ---- The end of the stream ---------------------------------------------------------------- */

/* A relayed connection, handshake done; without tickets nothing follows
 * the server's last flight, so the relay's count is where records start. */
static int relayed_conn(tcase_t *tc, conn_t **out) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.no_tickets = true;
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  CHECK_RC(conn_open(tc, out, "localhost", true));
  CHECK_RC(conn_handshake_ok(tc, *out));
  return 0;
}

/* The inner stream ends 8 bytes into a record: truncation. */
static int truncated_case(tcase_t *tc) {
  conn_t *k;
  CHECK_RC(relayed_conn(tc, &k));
  relay_arm(k, S2C, 8, AT_EOF);
  CHECK_RC(write_str(k->ss, "hello, world"));
  char buf[64];
  ssize_t n = keel_read(k->cs, buf, sizeof buf);
  CHECK_EQ(n, -EPROTO);
  CHECK_RC(check_reason(k->c, "truncated"));
  CHECK(!PEER_CLOSED(k->c));
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), -EPROTO);
  return 0;
}

/* A reset 8 bytes into a record: the read fails with the reset. */
static int reset_record_case(tcase_t *tc) {
  conn_t *k;
  CHECK_RC(relayed_conn(tc, &k));
  relay_arm(k, S2C, 8, AT_RESET);
  CHECK_RC(write_str(k->ss, "hello, world"));
  char buf[64];
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), -ECONNRESET);
  return 0;
}

/* The inner stream ends between records, without close_notify: an
 * ordinary end, which peer_closed tells from a clean close. */
static int unclean_end_case(tcase_t *tc) {
  conn_t *k;
  CHECK_RC(relayed_conn(tc, &k));
  CHECK_RC(write_str(k->ss, "hello"));
  CHECK_RC(read_str(k->cs, "hello"));
  relay_cut_now(k, AT_EOF);
  char buf[64];
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), 0);
  CHECK(!PEER_CLOSED(k->c));
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), 0);
  return 0;
}

/* shutdown(SHUT_WR) is close_notify: the peer reads 0 (peer_closed) and
 * can still write back, and then close the other way. */
static int half_close_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(write_str(k->ss, "last words"));
  CHECK_RC(keel_stream_shutdown(k->ss, SHUT_WR));
  CHECK_RC(read_str(k->cs, "last words"));
  char buf[64];
  CHECK_EQ(keel_read(k->cs, buf, sizeof buf), 0);
  CHECK(PEER_CLOSED(k->c));
  CHECK(!PEER_CLOSED(k->s));
  CHECK_RC(write_str(k->cs, "reply after the peer's close"));
  CHECK_RC(read_str(k->ss, "reply after the peer's close"));
  CHECK_RC(keel_stream_shutdown(k->cs, SHUT_WR));
  CHECK_EQ(keel_read(k->ss, buf, sizeof buf), 0);
  CHECK(PEER_CLOSED(k->s));
  return 0;
}

/* ---- Resumption ------------------------------------------------------------------------ */

/* A connection with one exchange (a TLS 1.3 ticket comes after the
 * handshake: the client takes it in its read); whether it resumed, on
 * both ends, goes to *resumed (-1: the ends disagree). */
static int resume_try(tcase_t *tc, keel_tls_ctx_t *cctx, const char *key, int *resumed) {
  tc->cctx = cctx;
  conn_t *k;
  CHECK_RC(conn_raw(tc, &k, false));
  keel_tls_opts_t o = {.server_name = "localhost", .session_key = key};
  CHECK_RC(conn_wrap_server(tc, k));
  CHECK_RC(conn_wrap_client(tc, k, &o));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(write_str(k->cs, "ping"));
  CHECK_RC(read_str(k->ss, "ping"));
  CHECK_RC(write_str(k->ss, "pong"));
  CHECK_RC(read_str(k->cs, "pong"));
  bool c = RESUMED(k->c), s = RESUMED(k->s);
  *resumed = c == s ? c : -1;
  conn_close(k);
  tc->nconns = 0;
  return 0;
}

/* The client context's cache resumes the next connection to the same
 * origin (arg: the TLS version), not one to another session key, and a
 * context without a cache never resumes. */
static int resume_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts(), nco = client_opts();
  co.max_version = nco.max_version = tc->arg;
  nco.no_session_cache = true;
  keel_tls_ctx_t *cache, *none;
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  CHECK_RC(ctx_open(tc, &co, &cache));
  CHECK_RC(ctx_open(tc, &nco, &none));
  int r;
  CHECK_RC(resume_try(tc, cache, NULL, &r));
  CHECK_EQ(r, 0);
  CHECK_RC(resume_try(tc, cache, NULL, &r));
  CHECK_EQ(r, 1);
  CHECK_RC(resume_try(tc, cache, "localhost:443", &r));
  CHECK_EQ(r, 0);
  CHECK_RC(resume_try(tc, cache, "localhost:443", &r));
  CHECK_EQ(r, 1);
  CHECK_RC(resume_try(tc, none, NULL, &r));
  CHECK_EQ(r, 0);
  CHECK_RC(resume_try(tc, none, NULL, &r));
  CHECK_EQ(r, 0);
  return 0;
}

#define TICKET_LIFETIME_S 40

/* Lab mode, virtual time: a ticket resumes within its lifetime and no
 * longer once its key is gone (lifetime + a quarter after it was made). */
static int rotation_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.ticket_lifetime_s = TICKET_LIFETIME_S;
  co.max_version = tc->arg;
  keel_tls_ctx_t *within, *after;
  CHECK_RC(ctx_open(tc, &so, &tc->sctx));
  CHECK_RC(ctx_open(tc, &co, &within));
  CHECK_RC(ctx_open(tc, &co, &after));
  int r;
  CHECK_RC(resume_try(tc, within, NULL, &r));
  CHECK_EQ(r, 0);
  CHECK_RC(keel_sleep_ms(TICKET_LIFETIME_S * 900));
  CHECK_RC(resume_try(tc, within, NULL, &r));
  CHECK_EQ(r, 1);
  CHECK_RC(resume_try(tc, after, NULL, &r)); /* a ticket under a key made just now */
  CHECK_EQ(r, 0);
  CHECK_RC(keel_sleep_ms(TICKET_LIFETIME_S * 1250 + 1000));
  CHECK_RC(resume_try(tc, after, NULL, &r));
  CHECK_EQ(r, 0);
  CHECK_RC(resume_try(tc, after, NULL, &r)); /* the fresh ticket does */
  CHECK_EQ(r, 1);
  return 0;
}

/* ---- Cancellation ------------------------------------------------------------------------- */

/* Writes the pattern until a write fails; what the cancelled write
 * returned and when go to cancelled_rc / returned_ns. */
typedef struct stuffer {
  keel_stream_t *s;
  uint64_t written;
  bool cancelled;       /* set by the test when it cancels */
  ssize_t cancelled_rc; /* the first write that returned after that */
  int64_t returned_ns;
  ssize_t last_rc;
} stuffer_t;

static int stuffer_task(void *arg) {
  stuffer_t *w = arg;
  for (;;) {
    ssize_t n = keel_write(w->s, pat_at(w->written, 20), PAT_SPAN);
    if (w->cancelled && w->returned_ns == 0) {
      w->cancelled_rc = n;
      w->returned_ns = keel_now_ns();
    }
    w->last_rc = n;
    if (n <= 0)
      return 0;
    w->written += (uint64_t)n;
  }
}

/* Reads to the end (or an error, in *end), checking the pattern. */
typedef struct drain {
  keel_stream_t *s;
  int64_t delay_ms;
  uint64_t got;
  ssize_t end;
  unsigned char buf[PAT_SPAN];
} drain_t;

static int drain_task(void *arg) {
  drain_t *d = arg;
  CHECK_RC(keel_sleep_ms(d->delay_ms));
  for (;;) {
    ssize_t n = keel_read(d->s, d->buf, sizeof d->buf);
    if (n <= 0) {
      d->end = n;
      return 0;
    }
    if (memcmp(d->buf, pat_at(d->got, 20), (size_t)n) != 0)
      KT_FAIL("bytes %llu..+%zd are not what was written", (unsigned long long)d->got, n);
    d->got += (uint64_t)n;
  }
}

/* Real TCP: a fixed buffer (no autotuning), so that a writer the peer
 * does not read from stays stuck. */
static void fix_buffers(keel_stream_t *s, int which) {
  int fd = -1, size = 64 * 1024;
  if (keel_stream_query(s, KEEL_STREAM_Q_FD, &fd, sizeof fd) == 0)
    setsockopt(fd, SOL_SOCKET, which, &size, sizeof size);
}

/* Starts a writer on the client and returns once it is stuck: the server
 * reads nothing. */
static int stuff(tcase_t *tc, conn_t **k, stuffer_t *w, keel_scope_t **ws) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  so.no_tickets = true; /* unread, a ticket would make the client's close an RST */
  CHECK_RC(servers_ctx(tc, &so, &co));
  CHECK_RC(conn_raw(tc, k, false));
  fix_buffers((*k)->c_inner, SO_SNDBUF);
  fix_buffers((*k)->s_inner, SO_RCVBUF);
  keel_tls_opts_t o = {.server_name = "localhost"};
  CHECK_RC(conn_wrap_server(tc, *k));
  CHECK_RC(conn_wrap_client(tc, *k, &o));
  CHECK_RC(conn_handshake_ok(tc, *k));
  *w = (stuffer_t){.s = (*k)->cs};
  CHECK((*ws = case_spawn(tc, stuffer_task, w)) != NULL);
  for (uint64_t before = UINT64_MAX; before != w->written;) {
    before = w->written;
    CHECK_RC(keel_sleep_ms(keel_lab_active() ? 10 : 100));
  }
  return 0;
}

static void stuffer_cancel(stuffer_t *w, keel_scope_t *ws) {
  w->cancelled = true;
  keel_scope_cancel(ws, KEEL_CANCEL_USER);
}

/* The peer reads again inside the shield: the cancelled write finishes
 * its records and returns its count; the peer gets exactly the bytes
 * the writes reported, then close_notify. */
static int cancel_write_shield_case(tcase_t *tc) {
  conn_t *k;
  stuffer_t w;
  keel_scope_t *ws;
  CHECK_RC(stuff(tc, &k, &w, &ws));
  stuffer_cancel(&w, ws);
  int64_t t0 = keel_now_ns();
  static drain_t d;
  d = (drain_t){.s = k->ss, .delay_ms = 50};
  keel_scope_t *ds = case_spawn(tc, drain_task, &d);
  CHECK(ds != NULL);
  CHECK_RC(case_join(tc, ws));
  CHECK(w.cancelled_rc > 0);
  CHECK_EQ(w.last_rc, -ECANCELED);
  CHECK(w.returned_ns - t0 < KEEL_TLS_FLUSH_SHIELD_MS * KEEL_NS_PER_MS);
  if (keel_lab_active())
    CHECK(w.returned_ns - t0 >= 50 * KEEL_NS_PER_MS); /* it waited for the reader */
  CHECK_RC(tls_rc(k->cs, close_client(k), "close"));
  CHECK_RC(case_join(tc, ds));
  CHECK_EQ(d.end, 0);
  CHECK_EQ(d.got, w.written);
  CHECK(PEER_CLOSED(k->s));
  return 0;
}

/* The peer never reads: after the shield the writing side is poisoned
 * (-ENOTRECOVERABLE, with a reason), reading goes on, and what the peer
 * finally reads is a prefix of what was written, then the cut. */
static int cancel_write_poison_case(tcase_t *tc) {
  conn_t *k;
  stuffer_t w;
  keel_scope_t *ws;
  CHECK_RC(stuff(tc, &k, &w, &ws));
  stuffer_cancel(&w, ws);
  int64_t t0 = keel_now_ns();
  CHECK_RC(case_join(tc, ws));
  CHECK_EQ(w.cancelled_rc, -ENOTRECOVERABLE);
  int64_t shield = KEEL_TLS_FLUSH_SHIELD_MS * KEEL_NS_PER_MS;
  CHECK_BETWEEN(w.returned_ns - t0, shield, shield + kt_late_ns());
  CHECK_RC(check_reason(k->c, "half sent"));
  CHECK_EQ(keel_write(k->cs, "x", 1), -ENOTRECOVERABLE);
  CHECK_EQ(keel_stream_shutdown(k->cs, SHUT_WR), -ENOTRECOVERABLE);
  CHECK_RC(write_str(k->ss, "reads go on"));
  CHECK_RC(read_str(k->cs, "reads go on"));
  CHECK_RC(tls_rc(k->cs, close_client(k), "close"));
  static drain_t d;
  d = (drain_t){.s = k->ss};
  CHECK_RC(drain_task(&d));
  CHECK(d.got >= w.written); /* what the writes reported, and maybe more */
  CHECK(d.end == -EPROTO || d.end == 0);
  CHECK(!PEER_CLOSED(k->s));
  if (d.end == -EPROTO)
    CHECK_RC(check_reason(k->s, "truncated"));
  return 0;
}

typedef struct reader {
  keel_stream_t *s;
  bool started;
  ssize_t rc;
  char buf[64];
} reader_t;

static int reader_task(void *arg) {
  reader_t *r = arg;
  r->started = true;
  r->rc = keel_read(r->s, r->buf, sizeof r->buf);
  return 0;
}

/* Starts a reader and returns once it is parked. */
static keel_scope_t *start_reader(tcase_t *tc, reader_t *r, keel_stream_t *s) {
  *r = (reader_t){.s = s, .rc = 1};
  keel_scope_t *sc = case_spawn(tc, reader_task, r);
  while (sc && !r->started && keel_yield() == 0)
    ;
  if (sc)
    keel_sleep_ms(1);
  return sc;
}

/* A read cancelled with 8 bytes of a record received loses nothing; a
 * read whose deadline passes neither. */
static int cancel_read_case(tcase_t *tc) {
  conn_t *k;
  CHECK_RC(relayed_conn(tc, &k));
  relay_arm(k, S2C, 8, AT_STALL);
  static reader_t r;
  keel_scope_t *rs = start_reader(tc, &r, k->cs);
  CHECK(rs != NULL);
  CHECK_RC(write_str(k->ss, "hello, world"));
  while (k->dir[S2C].passed < k->dir[S2C].cut)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_sleep_ms(5));
  keel_scope_cancel(rs, KEEL_CANCEL_USER);
  CHECK_RC(case_join(tc, rs));
  CHECK_EQ(r.rc, -ECANCELED);
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 5 * KEEL_NS_PER_MS);
  ssize_t n = keel_read(k->cs, r.buf, sizeof r.buf);
  keel_task_set_deadline(prev);
  CHECK_EQ(n, -ETIMEDOUT);
  k->dir[S2C].cut = SIZE_MAX;
  CHECK_RC(read_str(k->cs, "hello, world"));
  return 0;
}

/* Closing the stream under a parked reader and a parked writer wakes both
 * with -EBADF; the stream is freed once they are out (ASan checks). */
static int close_parked_case(tcase_t *tc) {
  conn_t *k;
  stuffer_t w;
  keel_scope_t *ws;
  CHECK_RC(stuff(tc, &k, &w, &ws));
  static reader_t r;
  keel_scope_t *rs = start_reader(tc, &r, k->cs);
  CHECK(rs != NULL);
  CHECK_RC(tls_rc(k->cs, close_client(k), "close"));
  CHECK_RC(case_join(tc, rs));
  CHECK_RC(case_join(tc, ws));
  CHECK_EQ(r.rc, -EBADF);
  CHECK_EQ(w.last_rc, -EBADF);
  return 0;
}

/* One reader and one writer at a time (-EBUSY), full duplex meanwhile. */
static int busy_case(tcase_t *tc) {
  conn_t *k;
  stuffer_t w;
  keel_scope_t *ws;
  CHECK_RC(stuff(tc, &k, &w, &ws));
  CHECK_EQ(keel_write(k->cs, "x", 1), -EBUSY);
  static reader_t r;
  keel_scope_t *rs = start_reader(tc, &r, k->cs);
  CHECK(rs != NULL);
  CHECK_EQ(keel_read(k->cs, r.buf, sizeof r.buf), -EBUSY);
  CHECK_RC(write_str(k->ss, "to the parked reader"));
  CHECK_RC(case_join(tc, rs));
  CHECK_EQ(r.rc, strlen("to the parked reader"));
  CHECK(memcmp(r.buf, "to the parked reader", (size_t)r.rc) == 0);
  stuffer_cancel(&w, ws);
  static drain_t d;
  d = (drain_t){.s = k->ss};
  keel_scope_t *ds = case_spawn(tc, drain_task, &d);
  CHECK(ds != NULL);
  CHECK_RC(case_join(tc, ws));
  CHECK(w.cancelled_rc > 0);
  CHECK_RC(keel_stream_shutdown(k->cs, SHUT_WR));
  CHECK_RC(case_join(tc, ds));
  CHECK_EQ(d.end, 0);
  CHECK_EQ(d.got, w.written);
  return 0;
}

/* ---- Layers and memory ------------------------------------------------------------------- */

/* keel_tls_of finds the TLS layer under a buffered stream (and none over
 * a plain stream); lines read through both. */
static int tls_of_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK(keel_tls_of(k->cs) == k->c);
  keel_bufstream_t *b;
  CHECK_RC(keel_bufstream_open(k->cs, NULL, &b));
  k->cs = keel_bufstream_stream(b);
  CHECK(keel_tls_of(k->cs) == k->c);
  CHECK(keel_tls_of(NULL) == NULL);
  keel_stream_t *a, *z;
  CHECK_RC(keel_lab_pipe(NULL, &a, &z));
  CHECK(keel_tls_of(a) == NULL);
  keel_close(a);
  keel_close(z);
  CHECK_RC(write_str(k->ss, "line one\r\nline two\r\n"));
  const void *line;
  CHECK_EQ(keel_bufstream_read_until(b, "\r\n", 2, 100, &line), 10);
  CHECK(memcmp(line, "line one\r\n", 10) == 0);
  keel_bufstream_consume(b, 10);
  CHECK_EQ(keel_bufstream_read_until(b, "\r\n", 2, 100, &line), 10);
  keel_bufstream_consume(b, 10);
  CHECK(PEER_CERT(keel_tls_of(k->cs)));
  return 0;
}

typedef struct waiter {
  keel_stream_t *s;
  bool started;
  int rc;
} waiter_t;

static int waiter_task(void *arg) {
  waiter_t *w = arg;
  w->started = true;
  w->rc = keel_stream_wait_readable(w->s);
  return 0;
}

static int check_idle(keel_tls_t *t) {
  struct keel_tls *in = (struct keel_tls *)t;
  CHECK(in->rbuf == NULL);
  CHECK(in->wbuf == NULL);
  return 0;
}

/* After an exchange, a task parked in keel_stream_wait_readable holds no
 * buffer of keel's (and has given OpenSSL's back); the bytes that wake it
 * are read whole. */
static int idle_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  co.max_version = tc->arg;
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(echo_through(tc, k->cs, k->ss, 6));
  waiter_t wc = {.s = k->cs}, wsv = {.s = k->ss};
  keel_scope_t *s1 = case_spawn(tc, waiter_task, &wc), *s2 = case_spawn(tc, waiter_task, &wsv);
  CHECK(s1 && s2);
  CHECK_RC(keel_sleep_ms(5));
  CHECK(wc.started && wsv.started);
  CHECK_RC(check_idle(k->c));
  CHECK_RC(check_idle(k->s));
  CHECK_RC(write_str(k->ss, "wake up"));
  CHECK_RC(case_join(tc, s1));
  CHECK_EQ(wc.rc, 0);
  CHECK_RC(read_str(k->cs, "wake up"));
  CHECK_RC(check_idle(k->c));
  CHECK_RC(write_str(k->cs, "you too"));
  CHECK_RC(case_join(tc, s2));
  CHECK_EQ(wsv.rc, 0);
  CHECK_RC(read_str(k->ss, "you too"));
  CHECK_RC(check_idle(k->s));
  return 0;
}

/* ---- Faults --------------------------------------------------------------------------------- */

/* The echo's far end, tolerant: the transport resets now and then. */
static int fault_echo_task(void *arg) {
  echo_t *e = arg;
  char buf[8192];
  for (;;) {
    ssize_t n = keel_read(e->s, buf, sizeof buf);
    if (n == -ECONNRESET || n == -EPIPE || n == 0)
      return 0;
    CHECK_RC(n);
    ssize_t w = keel_write_all(e->s, buf, (size_t)n, NULL);
    if (w == -ECONNRESET || w == -EPIPE)
      return 0;
    CHECK_RC(w);
  }
}

static bool reset_errno(ssize_t rc) { return rc == -ECONNRESET || rc == -EPIPE; }

static int fault_runs, fault_cut; /* runs, and those a reset cut short */

/* Messages echoed over a transport that resets: each either comes back
 * whole and right, or the stream fails with the reset, never with bytes
 * that are not the peer's. */
static int faults_case(tcase_t *tc) {
  keel_tls_ctx_opts_t so = server_opts(C_SERVER), co = client_opts();
  CHECK_RC(servers_ctx(tc, &so, &co));
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  echo_t e = {k->ss, 0};
  fault_runs++;
  keel_scope_t *es = case_spawn(tc, fault_echo_task, &e);
  CHECK(es != NULL);
  /* One message at a time, small enough for the pipes: the echo's reply
   * must fit while the client is still writing. */
  static unsigned char back[900];
  uint64_t off = 0;
  for (int i = 0; i < 60; i++) {
    size_t n = 1 + (size_t)keel_random_below(sizeof back);
    int rc = keel_write_all(k->cs, pat_at(off, 30), n, NULL);
    if (rc == 0)
      rc = keel_read_exact(k->cs, back, n, NULL);
    if (rc < 0) {
      if (!reset_errno(rc))
        KT_FAIL("message %d: %d (%s) %s", i, rc, keel_strerror(rc), keel_tls_reason(k->c));
      fault_cut++;
      break;
    }
    CHECK(memcmp(back, pat_at(off, 30), n) == 0);
    off += n;
  }
  close_client(k);
  CHECK_RC(case_join(tc, es));
  return 0;
}

static void run_faults(void) {
  run_spec((case_spec_t){faults_case, M_FAULTY | M_TCP, 0, true}, LAB_SEEDS);
  fprintf(stderr, "# %d of %d connections were cut by a reset\n", fault_cut, fault_runs);
}

/* ---- Contexts ----------------------------------------------------------------------------- */

static int ctx_refused(const keel_tls_ctx_opts_t *o, int want) {
  keel_tls_ctx_t *ctx = NULL;
  char reason[KEEL_TLS_REASON_MAX];
  int rc = keel_tls_ctx_open(o, &ctx, reason, sizeof reason);
  if (rc != want)
    KT_FAIL("keel_tls_ctx_open: %d (%s), expected %d", rc, reason, want);
  CHECK(ctx == NULL && reason[0] != '\0');
  return 0;
}

/* keel_tls_ctx_open's own errors, each with a reason. */
static int ctx_errors_case(tcase_t *tc) {
  (void)tc;
  keel_tls_ctx_opts_t o = server_opts(C_SERVER);
  o.cert.key_file = "/nonexistent/key.pem";
  CHECK_RC(ctx_refused(&o, -ENOENT));
  o = server_opts(C_SERVER);
  o.cert.key_file = cert_path[C_OTHER][1];
  CHECK_RC(ctx_refused(&o, -EINVAL)); /* the key of another certificate */
  o = server_opts(C_SERVER);
  o.cert = (keel_tls_cert_t){.cert_pem = "not PEM", .key_file = cert_path[C_SERVER][1]};
  CHECK_RC(ctx_refused(&o, -EPROTO));
  o = server_opts(C_SERVER);
  o.cert = (keel_tls_cert_t){0};
  CHECK_RC(ctx_refused(&o, -EINVAL));
  o = server_opts(C_SERVER);
  o.client_auth = KEEL_TLS_CLIENT_CERT_REQUIRE; /* and no CA */
  CHECK_RC(ctx_refused(&o, -EINVAL));
  o = client_opts();
  o.max_version = 0x0302; /* TLS 1.1 */
  CHECK_RC(ctx_refused(&o, -EINVAL));
  o.max_version = 0;
  o.groups = "no-such-group";
  CHECK_RC(ctx_refused(&o, -EINVAL));
  o = client_opts();
  o.ca_file = "/nonexistent/ca.pem";
  CHECK_RC(ctx_refused(&o, -ENOENT));
  return 0;
}

/* A verifying client needs a server name; an insecure one does not. */
static int open_args_case(tcase_t *tc) {
  keel_tls_ctx_opts_t co = client_opts(), ico = {.insecure_no_verify = true};
  keel_tls_ctx_t *insecure;
  CHECK_RC(ctx_open(tc, &co, &tc->cctx));
  CHECK_RC(ctx_open(tc, &ico, &insecure));
  keel_stream_t *a, *b;
  CHECK_RC(keel_lab_pipe(NULL, &a, &b));
  keel_tls_t *t = (keel_tls_t *)1;
  int rc = keel_tls_open(tc->cctx, a, NULL, &t);
  keel_tls_t *t2 = NULL;
  int rc2 = keel_tls_open(insecure, a, NULL, &t2);
  if (rc2 == 0)
    keel_close(keel_tls_stream(t2));
  else
    keel_close(a);
  keel_close(b);
  CHECK_EQ(rc, -EINVAL);
  CHECK(t == NULL);
  CHECK_RC(rc2);
  CHECK_EQ(keel_tls_handshake(NULL), -EINVAL);
  CHECK_EQ(keel_tls_info(NULL, &(keel_tls_info_t){0}), -EINVAL);
  CHECK(keel_tls_stream(NULL) == NULL);
  return 0;
}

/* A server certificate and key from memory; an Ed25519 certificate. */
static int server_pem_case(tcase_t *tc) {
  char *cert = slurp(cert_path[C_ED25519][0]), *key = slurp(cert_path[C_ED25519][1]);
  keel_tls_ctx_opts_t so = {.server = true, .cert = {.cert_pem = cert, .key_pem = key}};
  keel_tls_ctx_opts_t co = client_opts();
  int rc = cert && key ? servers_ctx(tc, &so, &co) : -ENOMEM;
  free(cert);
  free(key);
  CHECK_RC(rc);
  conn_t *k;
  CHECK_RC(conn_open(tc, &k, "localhost", false));
  CHECK_RC(conn_handshake_ok(tc, k));
  CHECK_RC(check_subject(k->c, "CN=localhost"));
  CHECK_RC(echo_through(tc, k->cs, k->ss, 7));
  return 0;
}

static void run_rotation(void) {
  case_spec_t s13 = {rotation_case, M_PIPE, KEEL_TLS_1_3, false};
  case_spec_t s12 = {rotation_case, M_PIPE, KEEL_TLS_1_2, false};
  kt_run_where(KT_ON_LAB, run_case, &s13, 1, 1, LAB_SEEDS);
  kt_run_where(KT_ON_LAB, run_case, &s12, 1, 1, 4);
}

/* ---- cmocka ------------------------------------------------------------------------------- */

#define TEST(name, body)                  \
  static void test_##name(void **state) { \
    (void)state;                          \
    body;                                 \
  }

TEST(echo_tls13, run(echo_case, M_ALL, KEEL_TLS_1_3))
TEST(echo_tls12, run(echo_case, M_ALL, KEEL_TLS_1_2))
TEST(full_duplex_tls13, run(duplex_case, M_ALL, KEEL_TLS_1_3))
TEST(full_duplex_tls12, run(duplex_case, M_PIPE | M_TCP, KEEL_TLS_1_2))
TEST(sni, run_handshakes(sni_case, M_ALL, 0))
TEST(alpn, run_handshakes(alpn_case, M_ALL, 0))
TEST(verify, run_handshakes(verify_case, M_PIPE | M_TCP, 0))
TEST(mtls, run_handshakes(mtls_case, M_ALL, 0))
TEST(mtls_optional, run_handshakes(mtls_optional_case, M_PIPE | M_TCP, 0))
TEST(version_mismatch, run_handshakes(version_case, M_ALL, 0))
TEST(stall, run(stall_case, M_ALL, 0))
TEST(garbage, run(garbage_case, M_ALL, 0))
TEST(truncated, run(truncated_case, M_ALL, KEEL_TLS_1_3); run(truncated_case, M_PIPE, KEEL_TLS_1_2))
TEST(reset_in_record, run(reset_record_case, M_ALL, KEEL_TLS_1_3))
TEST(unclean_end, run(unclean_end_case, M_ALL, KEEL_TLS_1_3);
     run(unclean_end_case, M_PIPE, KEEL_TLS_1_2))
TEST(half_close, run(half_close_case, M_ALL, KEEL_TLS_1_3))
TEST(resume_tls13, run(resume_case, M_ALL, KEEL_TLS_1_3))
TEST(resume_tls12, run(resume_case, M_ALL, KEEL_TLS_1_2))
TEST(ticket_rotation, run_rotation())
TEST(cancel_write_shield, run(cancel_write_shield_case, M_ALL, 0))
TEST(cancel_write_poison, run(cancel_write_poison_case, M_ALL, 0))
TEST(cancel_read, run(cancel_read_case, M_ALL, KEEL_TLS_1_3))
TEST(close_parked, run(close_parked_case, M_ALL, 0))
TEST(one_reader_one_writer, run(busy_case, M_ALL, 0))
TEST(tls_of, run(tls_of_case, M_PIPE | M_TCP, 0))
TEST(idle_memory, run(idle_case, M_ALL, KEEL_TLS_1_3); run(idle_case, M_PIPE, KEEL_TLS_1_2))
TEST(faults, run_faults())
TEST(ctx_errors, run(ctx_errors_case, M_PIPE, 0))
TEST(open_args, run(open_args_case, M_PIPE, 0))
TEST(server_pem_ed25519, run(server_pem_case, M_PIPE | M_TCP, 0))

int main(void) {
  if (!certs_find())
    return KT_SKIP_EXIT;
  kt_select_backends();
  pat_init();
  if (getenv("KT_FILTER"))
    cmocka_set_test_filter(getenv("KT_FILTER")); /* e.g. KT_FILTER=test_faults */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ctx_errors),
      cmocka_unit_test(test_open_args),
      cmocka_unit_test(test_echo_tls13),
      cmocka_unit_test(test_echo_tls12),
      cmocka_unit_test(test_server_pem_ed25519),
      cmocka_unit_test(test_sni),
      cmocka_unit_test(test_alpn),
      cmocka_unit_test(test_verify),
      cmocka_unit_test(test_mtls),
      cmocka_unit_test(test_mtls_optional),
      cmocka_unit_test(test_version_mismatch),
      cmocka_unit_test(test_stall),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_truncated),
      cmocka_unit_test(test_reset_in_record),
      cmocka_unit_test(test_unclean_end),
      cmocka_unit_test(test_half_close),
      cmocka_unit_test(test_resume_tls13),
      cmocka_unit_test(test_resume_tls12),
      cmocka_unit_test(test_ticket_rotation),
      cmocka_unit_test(test_cancel_write_shield),
      cmocka_unit_test(test_cancel_write_poison),
      cmocka_unit_test(test_cancel_read),
      cmocka_unit_test(test_close_parked),
      cmocka_unit_test(test_one_reader_one_writer),
      cmocka_unit_test(test_tls_of),
      cmocka_unit_test(test_idle_memory),
      cmocka_unit_test(test_faults),
      cmocka_unit_test(test_full_duplex_tls13),
      cmocka_unit_test(test_full_duplex_tls12),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
