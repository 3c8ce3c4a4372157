/* Backend selection: forced by config, by KEEL_BACKEND, and the fallback to
 * epoll when io_uring cannot be set up (a seccomp filter makes
 * io_uring_setup fail with ENOSYS in a child process). */
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "keel-test.h"

#define KT_GUARD_MS 20000 /* no test body may take longer */
#include "kt-guard.h"

/* ---- Which backend the workers run ------------------------------------------- */

static int name_is_task(void *arg) {
  const char *want = arg;
  const char *got = keel_backend_name();
  if (got == NULL || strcmp(got, want) != 0)
    KT_FAIL("worker %d runs backend \"%s\", want \"%s\"", keel_worker_id(), got ? got : "(null)",
            want);
  return 0;
}

/* Checks the backend name on worker 0 and worker 1. */
static int backend_name_body(void *arg) {
  CHECK_RC(name_is_task(arg));
  CHECK_EQ(keel_worker_count(), 2);
  keel_scope_t *scope = NULL;
  (void)keel_scope_open(NULL, &scope);
  CHECK(scope != NULL);
  keel_spawn_opts_t on1 = {.name = "on-worker-1", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(scope, name_is_task, arg, &on1));
  CHECK_RC(keel_scope_join(scope));
  keel_scope_close(scope);
  return 0;
}

static int run_expect_name(keel_backend_t backend, const char *want) {
  return kt_run_guarded(backend, 2, backend_name_body, (void *)want);
}

static void test_forced_epoll(void **state) {
  (void)state;
  unsetenv("KEEL_BACKEND");
  assert_int_equal(run_expect_name(KEEL_BACKEND_EPOLL, "epoll"), 0);
}

static void test_forced_uring(void **state) {
  (void)state;
  if (!kt_uring_available()) {
    fprintf(stderr, "# io_uring unavailable here\n");
    skip();
  }
  unsetenv("KEEL_BACKEND");
  assert_int_equal(run_expect_name(KEEL_BACKEND_URING, "io_uring"), 0);
}

/* KEEL_BACKEND only steers AUTO: an explicit choice in the config wins. */
static void test_config_beats_env(void **state) {
  (void)state;
  setenv("KEEL_BACKEND", "uring", 1);
  int rc = run_expect_name(KEEL_BACKEND_EPOLL, "epoll");
  setenv("KEEL_BACKEND", "epoll", 1);
  int rc2 = kt_uring_available() ? run_expect_name(KEEL_BACKEND_URING, "io_uring") : 0;
  unsetenv("KEEL_BACKEND");
  assert_int_equal(rc, 0);
  assert_int_equal(rc2, 0);
}

static void test_env_epoll(void **state) {
  (void)state;
  setenv("KEEL_BACKEND", "epoll", 1);
  int rc = run_expect_name(KEEL_BACKEND_AUTO, "epoll");
  unsetenv("KEEL_BACKEND");
  assert_int_equal(rc, 0);
}

/* AUTO prefers io_uring; KEEL_BACKEND=uring|auto lead there too. */
static void test_auto_prefers_uring(void **state) {
  (void)state;
  if (!kt_uring_available()) {
    unsetenv("KEEL_BACKEND");
    assert_int_equal(run_expect_name(KEEL_BACKEND_AUTO, "epoll"), 0);
    fprintf(stderr, "# io_uring unavailable here: AUTO ran epoll, as it should\n");
    skip();
  }
  static const char *const envs[] = {NULL, "auto", "uring"};
  for (size_t i = 0; i < 3; i++) {
    if (envs[i])
      setenv("KEEL_BACKEND", envs[i], 1);
    else
      unsetenv("KEEL_BACKEND");
    int rc = run_expect_name(KEEL_BACKEND_AUTO, "io_uring");
    unsetenv("KEEL_BACKEND");
    if (rc != 0)
      fail_msg("AUTO with KEEL_BACKEND=%s did not run io_uring", envs[i] ? envs[i] : "(unset)");
  }
}

/* ---- io_uring_setup denied: a child process under seccomp --------------------- */

typedef struct child_run {
  int status; /* waitpid status */
  char *err;  /* the child's stderr, NUL-terminated */
  size_t err_len;
} child_run_t;

/* Runs child_fn in a forked child whose stderr is captured. */
static void run_child(int (*child_fn)(void), child_run_t *out) {
  out->err = kt_run_child(child_fn, 25, &out->status, &out->err_len);
}

static void child_expect_exit0(const child_run_t *run) {
  if (WIFEXITED(run->status) && WEXITSTATUS(run->status) == KT_SKIP_EXIT) {
    fprintf(stderr, "# seccomp filters cannot be installed here\n");
    skip();
  }
  if (WIFSIGNALED(run->status))
    fail_msg("child killed by signal %d", WTERMSIG(run->status));
  assert_true(WIFEXITED(run->status));
  assert_int_equal(WEXITSTATUS(run->status), 0);
}

/* Counts newline-terminated lines of text containing word; *partial is set
 * if an unterminated last line contains it. */
static int count_lines_with(const char *text, const char *word, bool *partial) {
  int count = 0;
  *partial = false;
  for (const char *line = text; *line;) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    char *copy = strndup(line, len);
    assert_non_null(copy);
    if (strstr(copy, word)) {
      if (nl)
        count++;
      else
        *partial = true;
    }
    free(copy);
    if (!nl)
      break;
    line = nl + 1;
  }
  return count;
}

/* Runs in the child: serves one echo while its caller connects. */
static int echo_once_task(void *arg) {
  keel_listener_t *l = arg;
  keel_tcp_t *c;
  CHECK_RC(keel_tcp_accept(l, &c));
  char buf[64];
  ssize_t n = keel_read(keel_tcp_stream(c), buf, sizeof buf);
  CHECK(n > 0);
  CHECK_RC(keel_write_all(keel_tcp_stream(c), buf, (size_t)n, NULL));
  keel_tcp_close(c);
  return 0;
}

static int fallback_body(void *arg) {
  CHECK_RC(backend_name_body(arg));
  /* The fallen-back runtime really works: one echo. */
  keel_listener_t *l;
  char addr[KEEL_ADDRSTRLEN];
  CHECK_RC(kt_listen_loopback(&l, addr, sizeof addr));
  keel_scope_opts_t so = {.deadline_ns = keel_now_ns() + 5 * KEEL_NS_PER_SEC};
  keel_scope_t *scope = NULL;
  (void)keel_scope_open(&so, &scope);
  CHECK(scope != NULL);
  CHECK_RC(keel_spawn(scope, echo_once_task, l, NULL));
  keel_tcp_t *c;
  CHECK_RC(keel_tcp_connect(addr, &c));
  CHECK_RC(keel_write_all(keel_tcp_stream(c), "ping", 4, NULL));
  char got[4];
  size_t n = 0;
  CHECK_RC(keel_read_exact(keel_tcp_stream(c), got, sizeof got, &n));
  CHECK(memcmp(got, "ping", 4) == 0);
  CHECK_RC(keel_scope_join(scope));
  keel_scope_close(scope);
  keel_tcp_close(c);
  keel_listener_close(l);
  return 0;
}

static int child_prepare(void) {
  unsetenv("KEEL_BACKEND");
  unsetenv("KEEL_LOG");
  int rc = kt_deny_io_uring_setup();
  if (rc < 0) {
    printf("# cannot install the seccomp filter: %s\n", strerror(-rc));
    return KT_SKIP_EXIT;
  }
  if (kt_uring_available()) {
    printf("# io_uring still works under the filter\n");
    return 2;
  }
  return 0;
}

static int fallback_child(void) {
  int rc = child_prepare();
  if (rc != 0)
    return rc;
  rc = kt_run_guarded(KEEL_BACKEND_AUTO, 2, fallback_body, "epoll");
  if (rc != 0) {
    printf("# keel_run with AUTO under the filter returned %d (%s)\n", rc, keel_strerror(rc));
    return 1;
  }
  return 0;
}

static void test_fallback_to_epoll(void **state) {
  (void)state;
  child_run_t run;
  run_child(fallback_child, &run);
  child_expect_exit0(&run);
  bool partial;
  int lines = count_lines_with(run.err, "io_uring", &partial);
  assert_false(partial);
  if (lines != 1)
    fail_msg("%d log lines mention io_uring, want exactly one (the fallback)", lines);
  assert_non_null(strstr(run.err, "epoll"));
  free(run.err);
}

static atomic_int uring_main_ran;

static int must_not_run(void *arg) {
  (void)arg;
  atomic_store(&uring_main_ran, 1);
  return 0;
}

static int forced_uring_child(void) {
  int rc = child_prepare();
  if (rc != 0)
    return rc;
  rc = kt_run(KEEL_BACKEND_URING, 1, must_not_run, NULL);
  if (atomic_load(&uring_main_ran)) {
    printf("# main ran although io_uring was forced and unavailable (rc %d)\n", rc);
    return 1;
  }
  if (rc != -ENOSYS) {
    printf("# keel_run forced to io_uring returned %d (%s), want -ENOSYS\n", rc, keel_strerror(rc));
    return 1;
  }
  return 0;
}

static void test_forced_uring_unavailable(void **state) {
  (void)state;
  child_run_t run;
  run_child(forced_uring_child, &run);
  child_expect_exit0(&run);
  free(run.err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forced_epoll),
      cmocka_unit_test(test_forced_uring),
      cmocka_unit_test(test_config_beats_env),
      cmocka_unit_test(test_env_epoll),
      cmocka_unit_test(test_auto_prefers_uring),
      cmocka_unit_test(test_fallback_to_epoll),
      cmocka_unit_test(test_forced_uring_unavailable),
  };
  kt_select_backends();
  const char *filter = getenv("KT_FILTER"); /* e.g. KT_FILTER=test_foo: run one case */
  if (filter && *filter)
    cmocka_set_test_filter(filter);
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
