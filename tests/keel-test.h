/* Shared helpers for keel's cmocka tests (not installed). */
#ifndef KEEL_TEST_H
#define KEEL_TEST_H

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <liburing.h>

#include "keel/keel.h"

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
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

/* ---- The backend matrix -----------------------------------------------------
 * A test binary that runs on several backends is registered once per
 * backend in tests/meson.build (name-uring, name-epoll, name-lab), each
 * entry with KT_BACKEND naming its backend; run by hand, without
 * KT_BACKEND, it runs on every backend. KT_BACKEND may also list several,
 * comma-separated. A selected backend that cannot run here makes the
 * binary exit 77 (skipped) with the reason: at once when nothing else is
 * selected, else at the end if nothing failed (kt_exit_status). */

#define KT_SKIP_EXIT 77
#define KT_BACKEND_NONE ((keel_backend_t)-1)

static inline const char *kt_backend_name(keel_backend_t b) {
  return b == KEEL_BACKEND_URING   ? "io_uring"
         : b == KEEL_BACKEND_EPOLL ? "epoll"
         : b == KEEL_BACKEND_LAB   ? "lab"
                                   : "auto";
}

/* Set when a selected io_uring could not be set up, so the exit status
 * says that its cases did not run. */
static bool kt_uring_missing;

/* True when io_uring can be set up here (kernel, seccomp); if not, why
 * goes to *why when not NULL. Probes every time: a seccomp filter installed
 * since (a forked child's) must count. */
static inline bool kt_uring_probe(const char **why) {
  struct io_uring ring;
  int rc = io_uring_queue_init(4, &ring, 0);
  if (rc < 0) {
    if (why)
      *why = strerror(-rc);
    return false;
  }
  io_uring_queue_exit(&ring);
  return true;
}
static inline bool kt_uring_available(void) { return kt_uring_probe(NULL); }

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425 /* the same on every architecture */
#endif
#if defined(__x86_64__)
#define KT_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define KT_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#define KT_AUDIT_ARCH 0 /* unknown here: no filter */
#endif

/* Makes io_uring_setup fail with ENOSYS for this process, the threads it
 * creates later and the programs it executes, as an old kernel or a
 * container's seccomp profile would. 0, or -ENOTSUP / -errno. */
static inline int kt_deny_io_uring_setup(void) {
  if (KT_AUDIT_ARCH == 0)
    return -ENOTSUP;
  struct sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KT_AUDIT_ARCH, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return -errno;
  if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
    return -errno;
  return 0;
}

/* Bit (1 << backend) per backend KT_BACKEND selects; 0 until read. */
static unsigned kt_selected_mask;

static inline unsigned kt_parse_backends(const char *list) {
  if (list == NULL || *list == '\0')
    return 1u << KEEL_BACKEND_URING | 1u << KEEL_BACKEND_EPOLL | 1u << KEEL_BACKEND_LAB;
  static const struct {
    const char *name;
    keel_backend_t backend;
  } names[] = {{"uring", KEEL_BACKEND_URING},
               {"io_uring", KEEL_BACKEND_URING},
               {"epoll", KEEL_BACKEND_EPOLL},
               {"lab", KEEL_BACKEND_LAB}};
  unsigned mask = 0;
  for (const char *p = list; *p;) {
    size_t len = strcspn(p, ",");
    size_t i = 0;
    while (i < sizeof names / sizeof names[0] &&
           !(strlen(names[i].name) == len && strncmp(p, names[i].name, len) == 0))
      i++;
    if (i == sizeof names / sizeof names[0]) {
      fprintf(stderr, "KT_BACKEND=%s: \"%.*s\" is not uring, epoll or lab\n", list, (int)len, p);
      exit(2);
    }
    mask |= 1u << names[i].backend;
    p += len + (p[len] == ',');
  }
  return mask;
}

/* Reads KT_BACKEND once and checks that io_uring, if selected, can be set
 * up here; if it cannot and nothing else is selected, prints why and exits
 * 77 before any test runs. Call first in main; the iterators below call it
 * too. */
static inline void kt_select_backends(void) {
  if (kt_selected_mask != 0)
    return;
  unsigned mask = kt_parse_backends(getenv("KT_BACKEND"));
  const char *why = NULL;
  if ((mask & 1u << KEEL_BACKEND_URING) && !kt_uring_probe(&why)) {
    fprintf(stderr, "# io_uring unavailable here (io_uring_queue_init: %s): not tested\n", why);
    kt_uring_missing = true;
    mask &= ~(1u << KEEL_BACKEND_URING);
    if (mask == 0) {
      fprintf(stderr, "# skipped: KT_BACKEND selects io_uring only\n");
      exit(KT_SKIP_EXIT);
    }
  }
  kt_selected_mask = mask;
}

/* True when the tests run on backend b (selected, and able to run here). */
static inline bool kt_backend_selected(keel_backend_t b) {
  kt_select_backends();
  return (kt_selected_mask & 1u << b) != 0;
}

/* main's exit status from cmocka's count of failed tests: 1 if any failed,
 * else 77 (skipped) if a selected io_uring could not run, else 0. */
static inline int kt_exit_status(int failed) {
  if (failed)
    return 1;
  if (kt_uring_missing) {
    fprintf(stderr, "# io_uring was unavailable: its cases did not run (exit %d: skipped)\n",
            KT_SKIP_EXIT);
    return KT_SKIP_EXIT;
  }
  return 0;
}

/* The seed kt_run gives a lab runtime (KT_FOR_EACH_BACKEND_AND_LAB sets it). */
static uint64_t kt_seed = 1;

/* The selected real backend after prev (KT_BACKEND_NONE: the first), then
 * with_lab, lab mode once per seed 1..KT_LAB_SEEDS (in kt_seed). */
#define KT_LAB_SEEDS 16
static inline keel_backend_t kt_backend_next(keel_backend_t prev, bool with_lab) {
  static const keel_backend_t order[] = {KEEL_BACKEND_URING, KEEL_BACKEND_EPOLL, KEEL_BACKEND_LAB};
  if (prev == KEEL_BACKEND_LAB && kt_seed < KT_LAB_SEEDS) {
    kt_seed++;
    return KEEL_BACKEND_LAB;
  }
  size_t i = 0;
  if (prev != KT_BACKEND_NONE)
    while (i < 3 && order[i++] != prev)
      ;
  for (; i < 3; i++) {
    if (order[i] == KEEL_BACKEND_LAB && !with_lab)
      break;
    if (kt_backend_selected(order[i])) {
      kt_seed = 1;
      return order[i];
    }
  }
  return KT_BACKEND_NONE;
}

/* The first backend for a loop over them; when the selection leaves the
 * loop nothing to run (a real-backend case in the lab entry), the cmocka
 * test is skipped with the reason, so that it never passes having run
 * nothing. */
static inline keel_backend_t kt_backend_first(bool with_lab) {
  keel_backend_t b = kt_backend_next(KT_BACKEND_NONE, with_lab);
  if (b == KT_BACKEND_NONE) {
    fprintf(stderr, "# this case runs on %s only: not in this entry\n",
            with_lab ? "io_uring, epoll and lab mode" : "io_uring and epoll");
    skip();
  }
  return b;
}

/* Iterates b over the selected real backends (KT_BACKEND, all by default);
 * skips the test if none is selected. */
#define KT_FOR_EACH_BACKEND(b)                                           \
  for (keel_backend_t b = kt_backend_first(false); b != KT_BACKEND_NONE; \
       b = kt_backend_next(b, false))

/* As KT_FOR_EACH_BACKEND, then lab mode if selected, with seeds
 * 1..KT_LAB_SEEDS in kt_seed: timing tests run exact and across
 * interleavings there. */
#define KT_FOR_EACH_BACKEND_AND_LAB(b)                                  \
  for (keel_backend_t b = kt_backend_first(true); b != KT_BACKEND_NONE; \
       b = kt_backend_next(b, true))

/* Runs fn(arg) as the main task of a runtime with the given backend and
 * workers (lab mode: seed kt_seed); returns fn's result. */
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
