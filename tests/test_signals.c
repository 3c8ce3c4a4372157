/* handle_signals in a process with threads of its own: a thread the
 * application created before keel_run keeps SIGINT/SIGTERM unblocked, and
 * a signal delivered to it (pthread_kill) or to the process (kill) still
 * shuts the runtime down (the main task sees cancellation with reason
 * shutdown, keel_run returns normally) instead of killing the process;
 * the handler meanwhile restarts calls (SA_RESTART); keel_run restores the
 * dispositions and the signal mask it found; a second runtime that wants
 * the signals while one has them gets -EBUSY. Each case runs in a forked
 * child, on io_uring and epoll. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "keel-test.h"

#define CHILD_ALARM_S 30
#define HOUR_MS (3600 * 1000)

/* What the child does; set before the fork. */
static keel_backend_t child_backend;
static int child_signal;
static bool child_to_process; /* kill(getpid()) rather than pthread_kill */

/* The application's own thread, idle until the child is done. It naps
 * rather than blocking in a read: TSan runs a handler that interrupted a
 * read only once the read returns, and SA_RESTART would never let it. */
static pthread_t app_thread;
static atomic_bool app_stop;

static void *app_thread_fn(void *arg) {
  (void)arg;
  while (!atomic_load(&app_stop))
    usleep(1000);
  return NULL;
}

/* The application's own SIGINT handler, to see it restored. */
static void app_sigint(int sig) { (void)sig; }

static void child_config(keel_config_t *cfg) {
  keel_config_init(cfg);
  cfg->backend = child_backend;
  cfg->workers = 2;
  cfg->handle_signals = true;
}

static int signalled_main(void *arg) {
  (void)arg;
  int rc = child_to_process ? kill(getpid(), child_signal) : pthread_kill(app_thread, child_signal);
  if (rc != 0) {
    printf("child: sending the signal failed: %d\n", rc);
    return 2;
  }
  rc = keel_sleep_ms(HOUR_MS);
  keel_cancel_reason_t why = keel_cancelled();
  if (rc != -ECANCELED || why != KEEL_CANCEL_SHUTDOWN) {
    printf("child: the main task's sleep returned %d, reason %d\n", rc, (int)why);
    return 3;
  }
  struct sigaction sa;
  if (sigaction(child_signal, NULL, &sa) != 0 || !(sa.sa_flags & SA_RESTART)) {
    printf("child: no SA_RESTART handler while the runtime runs\n");
    return 4;
  }
  return 0;
}

/* Whether sig's disposition is handler. */
static bool disposition_is(int sig, void (*handler)(int)) {
  struct sigaction sa;
  return sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == handler;
}

static int signal_child(void) {
  sigset_t both, mask_before, mask_after;
  sigemptyset(&both);
  sigaddset(&both, SIGINT);
  sigaddset(&both, SIGTERM);
  pthread_sigmask(SIG_UNBLOCK, &both, NULL);
  pthread_sigmask(SIG_BLOCK, NULL, &mask_before);
  signal(SIGINT, app_sigint);
  signal(SIGTERM, SIG_DFL);
  if (pthread_create(&app_thread, NULL, app_thread_fn, NULL) != 0)
    return 10;
  keel_config_t cfg;
  child_config(&cfg);
  int rc = keel_run(&cfg, signalled_main, NULL);
  if (rc != 0) {
    printf("child: keel_run returned %d\n", rc);
    return 11;
  }
  if (!disposition_is(SIGINT, app_sigint) || !disposition_is(SIGTERM, SIG_DFL)) {
    printf("child: keel_run left other dispositions than it found\n");
    return 12;
  }
  pthread_sigmask(SIG_BLOCK, NULL, &mask_after);
  if (sigismember(&mask_after, SIGINT) != sigismember(&mask_before, SIGINT) ||
      sigismember(&mask_after, SIGTERM) != sigismember(&mask_before, SIGTERM)) {
    printf("child: keel_run left another signal mask than it found\n");
    return 13;
  }
  atomic_store(&app_stop, true);
  return pthread_join(app_thread, NULL) == 0 ? 0 : 14;
}

static void run_signal_case(int sig, bool to_process) {
  KT_FOR_EACH_BACKEND(b) {
    child_backend = b;
    child_signal = sig;
    child_to_process = to_process;
    int status = 0;
    free(kt_run_child(signal_child, CHILD_ALARM_S, &status, NULL));
    const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
    const char *to = to_process ? "kill(getpid())" : "pthread_kill to the application's thread";
    if (WIFSIGNALED(status))
      fail_msg("[%s] %s (%s) killed the process: %s", kt_backend_name(b), name, to,
               strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("[%s] %s (%s): the child exited with %d", kt_backend_name(b), name, to,
               WEXITSTATUS(status));
  }
}

static void test_sigterm_to_app_thread(void **state) {
  (void)state;
  run_signal_case(SIGTERM, false);
}

static void test_sigterm_to_process(void **state) {
  (void)state;
  run_signal_case(SIGTERM, true);
}

static void test_sigint_to_app_thread(void **state) {
  (void)state;
  run_signal_case(SIGINT, false);
}

/* ---- Signals aimed at keel's own threads, and forked children --------------------------- */

/* raise() from a task aims at that worker's thread, where keel blocks the
 * signal: it is not handled, and must not kill the process when keel_run
 * restores the mask after a clean end. */
static int raising_main(void *arg) {
  (void)arg;
  raise(SIGTERM);
  return keel_sleep_ms(50) == 0 ? 0 : 2; /* not handled: no shutdown */
}

static int raise_child(void) {
  keel_config_t cfg;
  child_config(&cfg);
  int rc = keel_run(&cfg, raising_main, NULL);
  if (rc != 0) {
    printf("child: keel_run returned %d\n", rc);
    return 11;
  }
  return 0;
}

static void test_raise_in_task(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    child_backend = b;
    int status = 0;
    char *err = kt_run_child(raise_child, CHILD_ALARM_S, &status, NULL);
    if (WIFSIGNALED(status))
      fail_msg("[%s] raise(SIGTERM) in a task killed the process after keel_run: %s",
               kt_backend_name(b), strsignal(WTERMSIG(status)));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("[%s] the child exited with %d", kt_backend_name(b), WEXITSTATUS(status));
    if (!strstr(err, "not handled"))
      fail_msg("[%s] no warning about the unhandled signal: %s", kt_backend_name(b), err);
    free(err);
  }
}

/* A child forked (without exec) while the runtime runs inherits its
 * handler: SIGTERM to the child must end the child, not shut down the
 * parent's runtime. */
static int forking_main(void *arg) {
  (void)arg;
  pid_t pid = fork();
  if (pid == 0) {
    /* Off the test's pipes (its reader waits for their end), and gone in
     * 15 s whatever happens to the parent. */
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, STDOUT_FILENO);
    dup2(devnull, STDERR_FILENO);
    alarm(15);
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &term, NULL); /* forked from a worker: blocked */
    for (;;)
      pause();
  }
  if (pid < 0)
    return 2;
  kill(pid, SIGTERM);
  int status = 0;
  int64_t until = kt_mono_ns() + 10 * KEEL_NS_PER_SEC;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (kt_mono_ns() > until) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      printf("child: the grandchild survived SIGTERM\n");
      return 3;
    }
    keel_sleep_ms(1);
  }
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGTERM) {
    printf("child: the grandchild ended with status %#x\n", (unsigned)status);
    return 4;
  }
  /* The parent's runtime must not have been told. */
  if (keel_sleep_ms(100) != 0 || keel_shutting_down()) {
    printf("child: the grandchild's SIGTERM shut the parent's runtime down\n");
    return 5;
  }
  return 0;
}

static int fork_child(void) {
  keel_config_t cfg;
  child_config(&cfg);
  int rc = keel_run(&cfg, forking_main, NULL);
  if (rc != 0) {
    printf("child: keel_run returned %d\n", rc);
    return 11;
  }
  return 0;
}

static void test_forked_child_signal(void **state) {
  (void)state;
#if KT_SCALE > 1
  /* Under ThreadSanitizer the forked child's SIGTERM never takes its
   * default action: TSan keeps its own handler installed and drops a
   * signal raised inside a handler after the handler set SIG_DFL (the
   * child was seen in pause() with SIGTERM unblocked and still caught). */
  fprintf(stderr, "# ThreadSanitizer does not deliver the default action here: skipped\n");
  skip();
#endif
  KT_FOR_EACH_BACKEND(b) {
    child_backend = b;
    int status = 0;
    free(kt_run_child(fork_child, CHILD_ALARM_S, &status, NULL));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("[%s] the child ended with status %#x", kt_backend_name(b), (unsigned)status);
  }
}

/* ---- One runtime at a time handles the signals -------------------------------- */

static atomic_int first_ready, first_release;
static int first_rc;

static int waiting_main(void *arg) {
  (void)arg;
  atomic_store(&first_ready, 1);
  while (!atomic_load(&first_release))
    if (keel_sleep_ms(1) != 0)
      return 3;
  return 0;
}

static void *first_runtime(void *arg) {
  (void)arg;
  keel_config_t cfg;
  child_config(&cfg);
  first_rc = keel_run(&cfg, waiting_main, NULL);
  return NULL;
}

static int quick_main(void *arg) {
  (void)arg;
  return 0;
}

static int busy_child(void) {
  pthread_t first;
  if (pthread_create(&first, NULL, first_runtime, NULL) != 0)
    return 10;
  while (!atomic_load(&first_ready))
    usleep(1000);
  keel_config_t cfg;
  child_config(&cfg);
  int rc = keel_run(&cfg, quick_main, NULL);
  atomic_store(&first_release, 1);
  pthread_join(first, NULL);
  if (rc != -EBUSY) {
    printf("child: a second runtime with handle_signals returned %d, not -EBUSY\n", rc);
    return 11;
  }
  if (first_rc != 0) {
    printf("child: the first runtime returned %d\n", first_rc);
    return 12;
  }
  rc = keel_run(&cfg, quick_main, NULL); /* the first one has let go of the signals */
  if (rc != 0) {
    printf("child: a runtime after the first returned %d\n", rc);
    return 13;
  }
  return 0;
}

static void test_second_runtime_busy(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    child_backend = b;
    int status = 0;
    free(kt_run_child(busy_child, CHILD_ALARM_S, &status, NULL));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("[%s] the child ended with status %#x", kt_backend_name(b), (unsigned)status);
  }
}

/* SIGPIPE while keel_run runs: ignored by default, left alone with
 * no_sigpipe_ignore; the disposition found is back when keel_run returns. */
static int sigpipe_main(void *arg) {
  struct sigaction cur;
  sigaction(SIGPIPE, NULL, &cur);
  *(void (**)(int))arg = cur.sa_handler;
  return 0;
}

static void test_sigpipe_choice(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    keel_config_t cfg = {.backend = b, .workers = 1};
    void (*seen)(int) = NULL;
    signal(SIGPIPE, SIG_DFL);
    assert_int_equal(keel_run(&cfg, sigpipe_main, (void *)&seen), 0);
    assert_true(seen == SIG_IGN);
    struct sigaction after;
    sigaction(SIGPIPE, NULL, &after);
    assert_true(after.sa_handler == SIG_DFL);
    cfg.no_sigpipe_ignore = true;
    assert_int_equal(keel_run(&cfg, sigpipe_main, (void *)&seen), 0);
    assert_true(seen == SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(keel_run(&cfg, sigpipe_main, (void *)&seen), 0);
    assert_true(seen == SIG_IGN);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sigterm_to_app_thread), cmocka_unit_test(test_sigterm_to_process),
      cmocka_unit_test(test_sigint_to_app_thread),  cmocka_unit_test(test_second_runtime_busy),
      cmocka_unit_test(test_raise_in_task),         cmocka_unit_test(test_forked_child_signal),
      cmocka_unit_test(test_sigpipe_choice),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
