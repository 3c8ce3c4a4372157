/* Accept under EMFILE, under io_uring and epoll: the listener survives,
 * accept backs off instead of spinning, the condition is logged, and the
 * pending connections are accepted once descriptors are free again.
 *
 * Each backend runs in a forked child, so the lowered RLIMIT_NOFILE does not
 * leak into other tests. The numbers: CLIENTS connections are made first,
 * while nobody accepts (the handshakes complete into the backlog); then the
 * descriptor limit is lowered so that exactly ACCEPT_ROOM descriptors are
 * free, and the accept loop starts: it accepts ACCEPT_ROOM connections and
 * then hits EMFILE with CLIENTS - ACCEPT_ROOM still pending. Closing CLOSED
 * clients frees their descriptors and, once the server sees EOF, the
 * server's side too; the rest must then be accepted and echoed, and LATE new
 * connections as well. Descriptors below the limit at the end:
 * (CLIENTS - CLOSED + LATE) * 2 = 40 <= CLIENTS + ACCEPT_ROOM = 48. */
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include "keel-test.h"

#define CLIENTS 40
#define ACCEPT_ROOM 8
#define CLOSED 24
#define LATE 4
#define EMFILE_WINDOW_MS 500

#define KT_GUARD_MS 40000 /* no test body may take longer */
#include "kt-guard.h"

static int64_t in_ms(int64_t ms) { return keel_now_ns() + ms * KEEL_NS_PER_MS; }

/* ---- The server: an accept loop spawning echo tasks ------------------------- */

typedef struct server {
  keel_listener_t *listener;
  int accepted; /* one worker: no atomics needed */
} server_t;

static server_t srv;

static int echo_conn_task(void *arg) {
  keel_tcp_t *c = arg;
  char buf[256];
  for (;;) {
    ssize_t n = keel_read(keel_tcp_stream(c), buf, sizeof buf);
    if (n <= 0 || keel_write_all(keel_tcp_stream(c), buf, (size_t)n, NULL) < 0)
      break;
  }
  keel_tcp_close(c);
  return 0;
}

static int accept_loop_task(void *arg) {
  (void)arg;
  for (;;) {
    keel_tcp_t *c;
    int rc = keel_tcp_accept(srv.listener, &c);
    if (rc == -ECANCELED || rc == -ETIMEDOUT)
      return 0;
    CHECK_RC(rc); /* EMFILE must never come back from accept */
    srv.accepted++;
    rc = keel_spawn(keel_scope_current(), echo_conn_task, c, NULL);
    if (rc < 0) {
      keel_tcp_close(c);
      return rc == -ECANCELED ? 0 : rc;
    }
  }
}

/* ---- Helpers ---------------------------------------------------------------------- */

static bool fd_in_use(int fd) { return fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

/* The RLIMIT_NOFILE that leaves exactly room descriptors free for new
 * descriptors (which always take the lowest free number). */
static rlim_t limit_leaving(int room) {
  for (int fd = 0;; fd++)
    if (!fd_in_use(fd) && --room == 0)
      return (rlim_t)fd + 1;
}

static int64_t cpu_ns(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru); /* every thread, io_uring workers included */
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * KEEL_NS_PER_SEC +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * INT64_C(1000);
}

static int wait_accepted(int want, int64_t ms) {
  int64_t until = in_ms(ms);
  while (srv.accepted < want) {
    if (keel_now_ns() > until)
      KT_FAIL("accepted %d connections, want %d", srv.accepted, want);
    CHECK_RC(keel_sleep_ms(5));
  }
  return 0;
}

static int echo_check(keel_tcp_t *c, int index) {
  char msg[24], got[24];
  snprintf(msg, sizeof msg, "hello %9d", index);
  CHECK_RC(keel_write_all(keel_tcp_stream(c), msg, sizeof msg, NULL));
  int64_t prev = keel_task_set_deadline(in_ms(5000));
  size_t n = 0;
  int rc = keel_read_exact(keel_tcp_stream(c), got, sizeof got, &n);
  keel_task_set_deadline(prev);
  if (rc < 0)
    KT_FAIL("client %d: no echo: %d after %zu bytes", index, rc, n);
  CHECK(memcmp(msg, got, sizeof msg) == 0);
  return 0;
}

/* ---- The test body (in the child) -------------------------------------------------- */

static int emfile_period(void) {
  /* Let the loop take the ACCEPT_ROOM descriptors and hit the limit. */
  CHECK_RC(wait_accepted(ACCEPT_ROOM, 5000));
  CHECK_RC(keel_sleep_ms(50));
  int64_t wall0 = keel_now_ns(), cpu0 = cpu_ns();
  CHECK_RC(keel_sleep_ms(EMFILE_WINDOW_MS));
  int64_t wall = keel_now_ns() - wall0, cpu = cpu_ns() - cpu0;
  printf("# %s: accepted %d of %d at the limit; CPU %lld ms over %lld ms\n", keel_backend_name(),
         srv.accepted, CLIENTS, (long long)(cpu / KEEL_NS_PER_MS),
         (long long)(wall / KEEL_NS_PER_MS));
  /* Stuck at the limit: accept really ran out of descriptors. */
  CHECK_EQ(srv.accepted, ACCEPT_ROOM);
  if (cpu * 2 >= wall)
    KT_FAIL("accept spun at the limit: CPU %lld ms over %lld ms", (long long)(cpu / KEEL_NS_PER_MS),
            (long long)(wall / KEEL_NS_PER_MS));
  return 0;
}

static int emfile_body(void *arg) {
  (void)arg;
  keel_listen_opts_t o = {0};
  CHECK_RC(keel_tcp_listen("127.0.0.1:0", &o, &srv.listener));
  keel_addr_t a;
  CHECK_RC(keel_listener_addr(srv.listener, &a));
  char addr[KEEL_ADDRSTRLEN];
  keel_addr_format(&a, addr, sizeof addr);

  keel_tcp_t *clients[CLIENTS], *late[LATE];
  for (int i = 0; i < CLIENTS; i++)
    CHECK_RC(keel_tcp_connect(addr, &clients[i]));
  struct rlimit rl;
  CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  rl.rlim_cur = limit_leaving(ACCEPT_ROOM);
  printf("# RLIMIT_NOFILE lowered to %llu\n", (unsigned long long)rl.rlim_cur);
  CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);

  keel_scope_t *server = NULL;
  (void)keel_scope_open(NULL, &server);
  CHECK(server != NULL);
  CHECK_RC(keel_spawn(server, accept_loop_task, NULL, NULL));
  CHECK_RC(emfile_period());

  for (int i = 0; i < CLOSED; i++)
    CHECK_RC(keel_tcp_close(clients[i]));
  /* The listener survived: every pending connection is accepted, the open
   * ones are echoed, and new ones still work. */
  CHECK_RC(wait_accepted(CLIENTS, 10000));
  for (int i = CLOSED; i < CLIENTS; i++)
    CHECK_RC(echo_check(clients[i], i));
  for (int i = 0; i < LATE; i++) {
    CHECK_RC(keel_tcp_connect(addr, &late[i]));
    CHECK_RC(echo_check(late[i], CLIENTS + i));
  }
  CHECK_EQ(srv.accepted, CLIENTS + LATE);

  for (int i = CLOSED; i < CLIENTS; i++)
    keel_tcp_close(clients[i]);
  for (int i = 0; i < LATE; i++)
    keel_tcp_close(late[i]);
  keel_scope_cancel(server, KEEL_CANCEL_USER);
  keel_scope_join(server);
  keel_scope_close(server);
  keel_listener_close(srv.listener);
  return 0;
}

/* ---- The parent: one child per backend ---------------------------------------------- */

static keel_backend_t child_backend;

static int emfile_child(void) {
  unsetenv("KEEL_LOG"); /* the default level must report EMFILE */
  int rc = kt_run_guarded(child_backend, 1, emfile_body, NULL);
  if (rc != 0)
    printf("# %s child: keel_run returned %d\n", kt_backend_name(child_backend), rc);
  return rc == 0 ? 0 : 1;
}

/* Runs child_fn in a forked child and returns its stderr (NUL-terminated);
 * *status gets the waitpid status. */
static char *run_child(int (*child_fn)(void), int *status) {
  return kt_run_child(child_fn, 50, status, NULL);
}

static void test_accept_emfile(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    fprintf(stderr, "# backend %s\n", kt_backend_name(b));
    child_backend = b;
    int status;
    char *err = run_child(emfile_child, &status);
    if (WIFSIGNALED(status))
      fail_msg("%s child killed by signal %d", kt_backend_name(b), WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    if (!strstr(err, "EMFILE") && !strstr(err, "Too many open files"))
      fail_msg("%s: the EMFILE condition was not logged", kt_backend_name(b));
    free(err);
  }
}

/* ---- The listener closed under an acceptor backing off ------------------------------ */

/* The acceptor hits EMFILE at once and backs off 10, 20, 40, ... 500 ms, so
 * it spends nearly all its time asleep in the back-off; CLOSE_AT_MS lands
 * 70 ms into a 500 ms one (the sleeps start near 0, 10, 30, 70, 150, 310,
 * 630, 1130 ms). */
#define CLOSE_AT_MS 700
/* Sleeping out the back-off would return ~430 ms after the close; waking
 * at the close takes a few ms, more on a loaded machine. */
#define CLOSE_PROMPT_MS 350

typedef struct backoff_close {
  keel_listener_t *listener;
  int result;
  int64_t done_ns;
} backoff_close_t;

static int backoff_acceptor_task(void *arg) {
  backoff_close_t *bc = arg;
  keel_tcp_t *c = NULL;
  bc->result = keel_tcp_accept(bc->listener, &c);
  bc->done_ns = keel_now_ns();
  if (bc->result == 0)
    keel_tcp_close(c);
  return 0;
}

/* keel_listener_close frees the listener; an acceptor sleeping off EMFILE
 * used to wake from its back-off and retry on the freed listener (a
 * use-after-free under ASan, a late or wrong result without). It must wake
 * at the close with -EBADF. */
static int backoff_close_body(void *arg) {
  (void)arg;
  backoff_close_t bc = {.result = 1};
  keel_listen_opts_t o = {0};
  CHECK_RC(keel_tcp_listen("127.0.0.1:0", &o, &bc.listener));
  keel_addr_t a;
  CHECK_RC(keel_listener_addr(bc.listener, &a));
  char addr[KEEL_ADDRSTRLEN];
  keel_addr_format(&a, addr, sizeof addr);
  keel_tcp_t *client;
  CHECK_RC(keel_tcp_connect(addr, &client)); /* pending in the backlog */

  /* No descriptor left: accepting the pending connection fails with EMFILE. */
  struct rlimit rl, saved;
  CHECK(getrlimit(RLIMIT_NOFILE, &saved) == 0);
  rl = saved;
  rl.rlim_cur = limit_leaving(1) - 1;
  CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);

  keel_scope_opts_t so = {.deadline_ns = in_ms(5000), .name = "acceptor"};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(&so, &s);
  CHECK(s != NULL);
  CHECK_RC(keel_spawn(s, backoff_acceptor_task, &bc, NULL));
  CHECK_RC(keel_sleep_ms(CLOSE_AT_MS));
  CHECK_EQ(bc.done_ns, 0); /* still backing off: EMFILE is never returned */
  int64_t close_ns = keel_now_ns();
  CHECK_RC(keel_listener_close(bc.listener));
  bc.listener = NULL;
  keel_scope_join(s);
  keel_scope_close(s);
  CHECK(setrlimit(RLIMIT_NOFILE, &saved) == 0);

  printf("# %s: accept returned %d, %lld ms after the close\n", keel_backend_name(), bc.result,
         (long long)((bc.done_ns - close_ns) / KEEL_NS_PER_MS));
  if (bc.result != -EBADF)
    KT_FAIL("accept on a listener closed during its back-off: %d (%s), want -EBADF", bc.result,
            keel_strerror(bc.result));
  if (bc.done_ns - close_ns > CLOSE_PROMPT_MS * KEEL_NS_PER_MS)
    KT_FAIL("accept returned %lld ms after the close: it slept out its back-off",
            (long long)((bc.done_ns - close_ns) / KEEL_NS_PER_MS));
  keel_tcp_close(client);
  return 0;
}

static int backoff_close_child(void) {
  unsetenv("KEEL_LOG");
  int rc = kt_run_guarded(child_backend, 1, backoff_close_body, NULL);
  if (rc != 0)
    printf("# %s child: keel_run returned %d\n", kt_backend_name(child_backend), rc);
  return rc == 0 ? 0 : 1;
}

static void test_listener_closed_during_backoff(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    fprintf(stderr, "# backend %s\n", kt_backend_name(b));
    child_backend = b;
    int status;
    char *err = run_child(backoff_close_child, &status);
    if (WIFSIGNALED(status))
      fail_msg("%s child killed by signal %d", kt_backend_name(b), WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The acceptor really was out of descriptors (in the back-off). */
    if (!strstr(err, "EMFILE") && !strstr(err, "Too many open files"))
      fail_msg("%s: accept never hit EMFILE", kt_backend_name(b));
    free(err);
  }
}

/* Which accept errors concern one connection (accept again) and which the
 * listener (stop): the accept loops of http and the echo example ask. */
static void test_transient_errors(void **state) {
  (void)state;
  const int transient[] = {ECONNABORTED, EPROTO,      EPERM,     EINTR,  EAGAIN,
                           ENOBUFS,      ENOMEM,      ENETDOWN,  ENONET, EHOSTUNREACH,
                           EHOSTDOWN,    ENETUNREACH, EOPNOTSUPP};
  for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
    assert_true(keel_tcp_accept_error_transient(-transient[i]));
  const int fatal[] = {EBADF, EINVAL, ENOTSOCK, EFAULT, ECANCELED, 0};
  for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
    assert_false(keel_tcp_accept_error_transient(-fatal[i]));
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transient_errors),
      cmocka_unit_test(test_accept_emfile),
      cmocka_unit_test(test_listener_closed_during_backoff),
  };
  const char *filter = getenv("KT_FILTER"); /* e.g. KT_FILTER=test_foo: run one case */
  if (filter && *filter)
    cmocka_set_test_filter(filter);
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
