/* Shared helpers for keel's cmocka tests (not installed). */
#ifndef KEEL_TEST_H
#define KEEL_TEST_H

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include "keel/keel.h"

#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#define KT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KT_ASAN 1
#endif
#endif
#ifndef KT_ASAN
#define KT_ASAN 0
#endif

/* TSan keeps state per fiber; tens of thousands of them exhaust it (it
 * fails to mmap, or reports races it lost track of), so scale down there. */
#if defined(__SANITIZE_THREAD__)
#define KT_SCALE 10
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KT_SCALE 10
#endif
#endif
#ifndef KT_SCALE
#define KT_SCALE 1
#endif

#if KT_ASAN || KT_SCALE > 1
#define KT_SANITIZED 1
#else
#define KT_SANITIZED 0
#endif

/* Caps the address space at what the process maps now plus 256 MiB, so a
 * 1 GiB task stack cannot be mapped. The cap is process-wide: restore it
 * at once with kt_as_limit_end. Returns false under ASan/TSan (their
 * shadow memory needs the address space), where such a case is skipped. */
#define KT_UNMAPPABLE_STACK ((size_t)1 << 30)
static inline bool kt_as_limit_begin(struct rlimit *old) {
  if (KT_SANITIZED || getrlimit(RLIMIT_AS, old) != 0)
    return false;
  long kb = -1;
  char line[256];
  FILE *f = fopen("/proc/self/status", "r");
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmSize: %ld kB", &kb) == 1)
      break;
  if (f)
    fclose(f);
  if (kb < 0)
    return false;
  struct rlimit lim = *old;
  lim.rlim_cur = ((rlim_t)kb + 256 * 1024) * 1024;
  if (old->rlim_cur != RLIM_INFINITY && lim.rlim_cur > old->rlim_cur)
    lim.rlim_cur = old->rlim_cur;
  return setrlimit(RLIMIT_AS, &lim) == 0;
}
static inline void kt_as_limit_end(const struct rlimit *old) { setrlimit(RLIMIT_AS, old); }

/* The test's own clock, independent of keel's. */
static inline int64_t kt_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * KEEL_NS_PER_SEC + ts.tv_nsec;
}

/* Waits up to timeout_ms for pid; kills it and returns -1 on timeout. */
static inline int kt_wait_child(pid_t pid, int timeout_ms, int *status) {
  int64_t until = kt_mono_ns() + timeout_ms * KEEL_NS_PER_MS;
  while (waitpid(pid, status, WNOHANG) == 0) {
    if (kt_mono_ns() > until) {
      kill(pid, SIGKILL);
      waitpid(pid, status, 0);
      return -1;
    }
    usleep(1000);
  }
  return 0;
}

/* True when io_uring can be set up here (kernel, seccomp). */
static inline int kt_uring_available(void) {
  struct io_uring ring;
  if (io_uring_queue_init(4, &ring, 0) < 0)
    return 0;
  io_uring_queue_exit(&ring);
  return 1;
}

static const keel_backend_t kt_backends[] = {KEEL_BACKEND_URING, KEEL_BACKEND_EPOLL};
#define KT_NBACKENDS 2

/* Runs fn(arg) as the main task of a runtime with the given backend and
 * workers; returns fn's result. Skips (returns 0 and prints why) when the
 * backend is io_uring and io_uring is not available. */
/* The seed kt_run gives a lab runtime (KT_FOR_EACH_BACKEND_AND_LAB sets it). */
static uint64_t kt_seed = 1;

static inline int kt_run(keel_backend_t backend, int workers, keel_task_fn fn, void *arg) {
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = backend;
  cfg.workers = workers;
  cfg.lab_seed = kt_seed;
  int rc = keel_run(&cfg, fn, arg);
  if (rc != 0 && backend == KEEL_BACKEND_LAB)
    fprintf(stderr, "# lab run failed with seed %llu: %d\n", (unsigned long long)kt_seed, rc);
  return rc;
}

/* The clock timing tests measure with: real on the real backends, virtual
 * in lab mode (keel_now_ns is either, by where it is called). */
static inline int64_t kt_clock_ns(void) { return keel_now_ns(); }

/* Iterates b over both backends, skipping io_uring when unavailable. */
#define KT_FOR_EACH_BACKEND(b)                                                                   \
  for (size_t kt_i_ = 0; kt_i_ < KT_NBACKENDS; kt_i_++)                                          \
    for (keel_backend_t b = kt_backends[kt_i_]; b != (keel_backend_t)-1; b = (keel_backend_t)-1) \
      if (b == KEEL_BACKEND_URING && !kt_uring_available()) {                                    \
        fprintf(stderr, "# io_uring unavailable here: skipping the io_uring case\n");            \
      } else

/* As KT_FOR_EACH_BACKEND, then lab mode with seeds 1..KT_LAB_SEEDS (in
 * kt_seed): timing tests run exact and across interleavings there. */
#define KT_LAB_SEEDS 16
#define KT_FOR_EACH_BACKEND_AND_LAB(b)                                                    \
  for (size_t kt_j_ = 0; kt_j_ < KT_NBACKENDS + KT_LAB_SEEDS; kt_j_++)                    \
    for (keel_backend_t b = kt_j_ < KT_NBACKENDS                                          \
                                ? kt_backends[kt_j_]                                      \
                                : (kt_seed = kt_j_ - KT_NBACKENDS + 1, KEEL_BACKEND_LAB); \
         b != (keel_backend_t)-1; b = (keel_backend_t)-1)                                 \
      if (b == KEEL_BACKEND_URING && !kt_uring_available()) {                             \
        fprintf(stderr, "# io_uring unavailable here: skipping the io_uring case\n");     \
      } else

static inline const char *kt_backend_name(keel_backend_t b) {
  return b == KEEL_BACKEND_URING   ? "io_uring"
         : b == KEEL_BACKEND_EPOLL ? "epoll"
         : b == KEEL_BACKEND_LAB   ? "lab"
                                   : "auto";
}

/* Runs fn(arg) as the main task of a lab runtime with the given seed; the
 * trace hash goes to *trace if not NULL. A failing run prints its seed so
 * it can be replayed (KEEL_SEED=N, or this seed in the test). */
static inline int kt_run_lab(uint64_t seed, keel_task_fn fn, void *arg, uint64_t *trace) {
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  cfg.workers = 1;
  cfg.lab_seed = seed;
  cfg.lab_trace = trace;
  int rc = keel_run(&cfg, fn, arg);
  if (rc != 0)
    fprintf(stderr, "# lab run failed with seed %llu: %d (%s)\n", (unsigned long long)seed, rc,
            keel_strerror(rc));
  return rc;
}

/* Runs child_fn in a forked child whose stderr is captured and returned
 * (NUL-terminated, malloc'd; its length in *err_len if not NULL); *status
 * gets the waitpid status. The child's own diagnostics go to stdout, so
 * they never count as library log lines; a hung child dies by alarm. */
static inline char *kt_run_child(int (*child_fn)(void), unsigned alarm_s, int *status,
                                 size_t *err_len) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* cmocka's crash handlers would longjmp into its runner in the child. */
    static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++)
      signal(crash_signals[i], SIG_DFL);
    close(fds[0]);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    alarm(alarm_s); /* a hung child fails instead of hanging the test */
    int rc = child_fn();
    fflush(stdout);
    _exit(rc);
  }
  close(fds[1]);
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  assert_non_null(buf);
  for (;;) {
    if (len + 1 == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
    ssize_t n = read(fds[0], buf + len, cap - len - 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  close(fds[0]);
  assert_int_equal(waitpid(pid, status, 0), pid);
  fprintf(stderr, "# child stderr (%zu bytes):\n%s%s", len, buf,
          len && buf[len - 1] != '\n' ? "\n" : "");
  if (err_len)
    *err_len = len;
  return buf;
}

#endif
