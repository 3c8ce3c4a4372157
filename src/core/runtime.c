/* The runtime: configuration, backend choice, worker threads, the root
 * scope, signal-driven shutdown. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <liburing.h>

#include "internal.h"
#include "metrics-internal.h"

#define DEFAULT_STACK_SIZE (64 * 1024)
#define DEFAULT_DRAIN_MS 5000

void keel_config_init(keel_config_t *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->backend = KEEL_BACKEND_AUTO;
  cfg->stack_size = DEFAULT_STACK_SIZE;
  cfg->drain_timeout_ms = DEFAULT_DRAIN_MS;
}

/* ---- Backend choice ----------------------------------------------------------- */

static keel_backend_t backend_from_env(keel_backend_t b) {
  const char *env = getenv("KEEL_BACKEND");
  if (b != KEEL_BACKEND_AUTO || !env)
    return b;
  if (!strcasecmp(env, "uring") || !strcasecmp(env, "io_uring"))
    return KEEL_BACKEND_URING;
  if (!strcasecmp(env, "epoll"))
    return KEEL_BACKEND_EPOLL;
  if (!strcasecmp(env, "lab"))
    return KEEL_BACKEND_LAB;
  return KEEL_BACKEND_AUTO;
}

/* io_uring may be missing (old kernel), forbidden (seccomp, sysctl
 * kernel.io_uring_disabled) or out of locked memory: try one ring. */
static int probe_uring(void) {
  struct io_uring ring;
  int rc = io_uring_queue_init(8, &ring, 0);
  if (rc < 0)
    return rc;
  io_uring_queue_exit(&ring);
  return 0;
}

static int choose_backend(keel_runtime_t *rt) {
  keel_backend_t b = backend_from_env(rt->cfg.backend);
  if (b == KEEL_BACKEND_LAB) {
    rt->ops = &keel__lab_ops;
    return 0;
  }
  if (b == KEEL_BACKEND_EPOLL) {
    rt->ops = &keel__epoll_ops;
    return 0;
  }
  int rc = probe_uring();
  if (rc == 0) {
    rt->ops = &keel__uring_ops;
    return 0;
  }
  if (b == KEEL_BACKEND_URING)
    return rc;
  keel_log(KEEL_LOG_WARN, "io_uring unavailable (%s); falling back to epoll", keel_strerror(rc));
  rt->ops = &keel__epoll_ops;
  return 0;
}

/* ---- Workers ------------------------------------------------------------------ */

static void worker_stop_msg(keel__worker_t *w, keel__msg_t *m) {
  (void)m;
  w->stop = true;
}

void keel__runtime_quiescent(keel_runtime_t *rt) {
  for (int i = 0; i < rt->nworkers; i++)
    keel__worker_post(&rt->workers[i], &rt->workers[i].stop_msg);
}

static void *worker_thread(void *arg) {
  keel__worker_t *w = arg;
  keel__tls_worker = w;
  keel_runtime_t *rt = w->rt;
  w->init_result = keel__worker_init(w, rt, w->id);
  pthread_mutex_lock(&rt->start_lock);
  rt->started_workers++;
  pthread_cond_signal(&rt->start_cond);
  pthread_mutex_unlock(&rt->start_lock);
  if (w->init_result == 0)
    keel__worker_loop(w);
  keel__stack_guard_thread_exit(w); /* sigaltstack is per thread: here */
  keel__tls_worker = NULL;
  return NULL;
}

static int main_task(void *arg) {
  keel_runtime_t *rt = arg;
  rt->main_result = rt->main_fn(rt->main_arg);
  return rt->main_result;
}

/* ---- Signals ---------------------------------------------------------------------- */

/* With handle_signals, the first SIGINT/SIGTERM cancels the root scope with
 * reason shutdown and starts the drain deadline; a second one (or the
 * deadline passing) ends the process. With dump_on_sigusr1, SIGUSR1 logs
 * the task dump, from the signal thread: it runs even with every worker
 * stuck in a task that does not yield, when a dump is most wanted. The
 * signals keel handles (either set, or both) stay blocked in the
 * runtime's own threads, so no handler runs on a task's stack and no loop
 * call is interrupted. Where they are not blocked, a handler runs: in the
 * runtime's signal thread, or in a thread the application created before
 * keel_run (there, a process-directed SIGTERM would otherwise kill the
 * process). Wherever it runs, the handler only forwards the signal number
 * down a pipe to the signal thread, which does the rest. */

/* Signal dispositions are process-wide, so the handler can find the pipe
 * only through a process-wide variable: an exception to keeping all state
 * in the runtime's structs, justified by that (as the guard-page handler's
 * in stack.c). It holds no loop state, only the pipe's write end, and says
 * that a runtime has the signals (one at a time: another keel_run with
 * handle_signals or dump_on_sigusr1 gets -EBUSY). writers counts handlers
 * between reading fd and their write: the pipe is closed only after them,
 * so a handler never writes to a descriptor number reused meanwhile. */
enum { SIGNALS_FREE = -1, SIGNALS_CLAIMED = -2 };
static struct {
  _Atomic int fd; /* the pipe's write end, or SIGNALS_FREE / SIGNALS_CLAIMED */
  atomic_int writers;
  _Atomic pid_t pid; /* the process whose runtime it is (not a fork of it) */
} signal_forward = {SIGNALS_FREE, 0, 0};

#define HANDLED_SIGNALS 3
static const int handled_signals[HANDLED_SIGNALS] = {SIGINT, SIGTERM, SIGUSR1};

/* Whether rt handles handled_signals[i]. */
static bool handles(const keel_runtime_t *rt, int i) {
  return handled_signals[i] == SIGUSR1 ? rt->cfg.dump_on_sigusr1 : rt->cfg.handle_signals;
}

static void handled_set(const keel_runtime_t *rt, sigset_t *set) {
  sigemptyset(set);
  for (int i = 0; i < HANDLED_SIGNALS; i++)
    if (handles(rt, i))
      sigaddset(set, handled_signals[i]);
}

/* Async-signal-safe: lock-free atomics, getpid, sigaction, raise and
 * write(2). A child forked without exec inherits the handler and the pipe:
 * there the signal does what it would without keel (the default action,
 * once the handler returns), and never reaches the parent's runtime. */
static void forward_signal(int sig) {
  int saved_errno = errno;
  if (getpid() != atomic_load(&signal_forward.pid)) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
    raise(sig); /* blocked in the handler: delivered when it returns */
    errno = saved_errno;
    return;
  }
  atomic_fetch_add(&signal_forward.writers, 1);
  int fd = atomic_load(&signal_forward.fd);
  if (fd >= 0) {
    unsigned char signo = (unsigned char)sig;
    ssize_t n = write(fd, &signo, 1); /* a full pipe holds more than the thread acts on */
    (void)n;
  }
  atomic_fetch_sub(&signal_forward.writers, 1);
  errno = saved_errno;
}

/* The drain deadline passed: ends the process unless the drain has just
 * finished (the workers are stopping; keel_run is about to return). */
static void drain_expired(keel_runtime_t *rt) {
  if (keel_scope_live(rt->root) == 0)
    return;
  keel_log(KEEL_LOG_ERROR, "drain deadline of %lld ms passed with tasks still running:",
           (long long)rt->cfg.drain_timeout_ms);
  keel__tasks_log(rt, KEEL_LOG_INFO);
  if (rt->cfg.no_drain_exit) {
    keel_log(KEEL_LOG_ERROR, "still waiting for them (no_drain_exit)");
    return;
  }
  _exit(EXIT_FAILURE);
}

static void *signal_thread(void *arg) {
  keel_runtime_t *rt = arg;
  /* The runtime's one thread with the signals unblocked: a signal sent to
   * the process always finds a thread to run the handler. */
  sigset_t set;
  handled_set(rt, &set);
  pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  int64_t deadline = KEEL_DEADLINE_NONE;
  for (;;) {
    struct pollfd fds[2] = {{rt->signal_fd, POLLIN, 0}, {rt->signal_stop_fd, POLLIN, 0}};
    int timeout = -1;
    if (deadline != KEEL_DEADLINE_NONE) {
      int64_t left = deadline - keel__now_ns();
      timeout = left <= 0 ? 0 : (int)keel__ns_to_ms_ceil(left);
    }
    int n = poll(fds, 2, timeout); /* -1, EINTR: the handler ran on this thread */
    if (fds[1].revents)
      break;
    if (n == 0 && deadline != KEEL_DEADLINE_NONE && keel__now_ns() >= deadline) {
      drain_expired(rt);
      deadline = KEEL_DEADLINE_NONE; /* drained in time after all */
      continue;
    }
    unsigned char signo;
    if (n <= 0 || read(rt->signal_fd, &signo, 1) != 1)
      continue;
    if (signo == SIGUSR1) {
      keel_log(KEEL_LOG_INFO, "SIGUSR1: task dump");
      keel__tasks_log(rt, KEEL_LOG_INFO);
      continue;
    }
    if (deadline != KEEL_DEADLINE_NONE) {
      keel_log(KEEL_LOG_WARN, "second %s: exiting now", strsignal(signo));
      _exit(128 + signo);
    }
    keel_log(KEEL_LOG_INFO, "%s: shutting down (drain deadline %lld ms)", strsignal(signo),
             (long long)rt->cfg.drain_timeout_ms);
    deadline = keel__now_ns() + rt->cfg.drain_timeout_ms * KEEL_NS_PER_MS;
    atomic_store(&rt->shutting_down, 1);
    keel_scope_cancel(rt->root, KEEL_CANCEL_SHUTDOWN);
  }
  return NULL;
}

/* Installs the forwarding handler, keeping the dispositions it replaces.
 * An ignored SIGINT (a shell's background job) is taken over as well. */
static void handlers_install(keel_runtime_t *rt) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = forward_signal;
  sa.sa_flags = SA_RESTART; /* the application's threads' calls go on after it */
  handled_set(rt, &sa.sa_mask);
  for (int i = 0; i < HANDLED_SIGNALS; i++)
    if (handles(rt, i))
      sigaction(handled_signals[i], &sa, &rt->signal_prev[i]);
}

/* Puts the previous dispositions back (from now on a signal does what it
 * did before keel_run), then waits out handlers still writing, so the pipe
 * may be closed. */
static void handlers_restore(keel_runtime_t *rt) {
  for (int i = 0; i < HANDLED_SIGNALS; i++)
    if (handles(rt, i))
      sigaction(handled_signals[i], &rt->signal_prev[i], NULL);
  atomic_store(&signal_forward.fd, SIGNALS_CLAIMED);
  while (atomic_load(&signal_forward.writers) > 0)
    sched_yield();
}

static int signals_start(keel_runtime_t *rt, sigset_t *old_mask) {
  int expect = SIGNALS_FREE;
  if (!atomic_compare_exchange_strong(&signal_forward.fd, &expect, SIGNALS_CLAIMED))
    return -EBUSY;
  atomic_store(&signal_forward.pid, getpid());
  sigset_t set;
  handled_set(rt, &set);
  pthread_sigmask(SIG_BLOCK, &set, old_mask);
  int rc = 0;
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    rc = -errno;
    goto fail_pipe;
  }
  rt->signal_fd = pipe_fds[0];
  rt->signal_wr_fd = pipe_fds[1];
  rt->signal_stop_fd = eventfd(0, EFD_CLOEXEC);
  if (rt->signal_stop_fd < 0) {
    rc = -errno;
    goto fail_eventfd;
  }
  atomic_store(&signal_forward.fd, rt->signal_wr_fd);
  handlers_install(rt);
  rc = -pthread_create(&rt->signal_thread, NULL, signal_thread, rt);
  if (rc < 0)
    goto fail_thread;
  rt->have_signal_thread = true;
  return 0;
fail_thread:
  handlers_restore(rt);
  close(rt->signal_stop_fd);
fail_eventfd:
  close(rt->signal_wr_fd);
  close(rt->signal_fd);
fail_pipe:
  pthread_sigmask(SIG_SETMASK, old_mask, NULL);
  atomic_store(&signal_forward.fd, SIGNALS_FREE);
  return rc;
}

/* A signal sent to one of keel's threads rather than to the process
 * (raise or pthread_kill from a task) stays pending there, blocked: on the
 * calling thread it would be delivered with the restored disposition as
 * soon as its mask is, and kill the process after a clean shutdown. It is
 * taken here, and said. */
static void signals_take_pending(const keel_runtime_t *rt) {
  sigset_t set;
  handled_set(rt, &set);
  struct timespec now = {0, 0};
  int sig;
  while ((sig = sigtimedwait(&set, NULL, &now)) > 0)
    keel_log(KEEL_LOG_WARN,
             "%s was sent to a keel thread, not to the process: not handled "
             "(use kill(getpid(), ...) or keel_shutdown)",
             strsignal(sig));
}

static void signals_stop(keel_runtime_t *rt, const sigset_t *old_mask) {
  if (rt->have_signal_thread) {
    signals_take_pending(rt);
    handlers_restore(rt);
    uint64_t one = 1;
    ssize_t rc = write(rt->signal_stop_fd, &one, sizeof one);
    (void)rc;
    pthread_join(rt->signal_thread, NULL);
    close(rt->signal_stop_fd);
    close(rt->signal_wr_fd);
    close(rt->signal_fd);
    atomic_store(&signal_forward.fd, SIGNALS_FREE);
  }
  pthread_sigmask(SIG_SETMASK, old_mask, NULL);
}

/* ---- keel_run --------------------------------------------------------------------- */

static int runtime_config(keel_runtime_t *rt, const keel_config_t *cfg) {
  if (cfg)
    rt->cfg = *cfg;
  else
    keel_config_init(&rt->cfg);
  if (rt->cfg.workers < 0 || rt->cfg.workers > 1024)
    return -EINVAL;
  if (rt->cfg.stack_size == 0)
    rt->cfg.stack_size = DEFAULT_STACK_SIZE;
  if (rt->cfg.stack_size > KEEL__STACK_MAX)
    return -EINVAL;
  if (rt->cfg.stack_size < KEEL__STACK_MIN)
    rt->cfg.stack_size = KEEL__STACK_MIN;
  if (rt->cfg.drain_timeout_ms <= 0)
    rt->cfg.drain_timeout_ms = DEFAULT_DRAIN_MS;
  if (rt->cfg.workers) {
    rt->nworkers = rt->cfg.workers;
  } else {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN); /* reads /sys: only when asked */
    rt->nworkers = cpus > 0 ? (int)cpus : 1;
  }
  int rc = choose_backend(rt);
  if (rc == 0 && rt->ops == &keel__lab_ops) {
    /* One thread, so that one seed gives one run. */
    if (rt->cfg.workers > 1)
      return -EINVAL;
    rt->nworkers = 1;
    rt->lab_seed = keel__lab_seed_from(&rt->cfg);
  }
  return rc;
}

/* Starts workers 1..n-1 on their own threads; worker 0 is this thread. */
static int workers_start(keel_runtime_t *rt, int *started) {
  for (int i = 0; i < rt->nworkers; i++) {
    rt->workers[i].stop_msg.fn = worker_stop_msg;
    rt->workers[i].rt = rt;
    rt->workers[i].id = i;
    rt->workers[i].ops = rt->ops;
    rt->workers[i].wake_fd = -1;
  }
  int rc = keel__worker_init(&rt->workers[0], rt, 0);
  if (rc < 0)
    return rc;
  *started = 1;
  for (int i = 1; i < rt->nworkers && rc == 0; i++) {
    rc = -pthread_create(&rt->workers[i].thread, NULL, worker_thread, &rt->workers[i]);
    if (rc < 0)
      keel_log(KEEL_LOG_ERROR, "cannot start worker %d: %s", i, keel_strerror(rc));
    else
      *started = i + 1;
  }
  /* Every worker started has set up its loop (or failed to) before main
   * runs, or before the ones started are stopped again. */
  pthread_mutex_lock(&rt->start_lock);
  while (rt->started_workers < *started - 1)
    pthread_cond_wait(&rt->start_cond, &rt->start_lock);
  pthread_mutex_unlock(&rt->start_lock);
  for (int i = 1; i < *started && rc == 0; i++)
    rc = rt->workers[i].init_result;
  return rc;
}

/* Joins every worker thread, stops the blocking pool, waits out posts from
 * other threads still in flight, and only then destroys the workers: a
 * poster reads the worker (its sleeping flag, its wake descriptor) after
 * its message is already visible, and the message may have let the last
 * task finish. */
static int workers_join(keel_runtime_t *rt, int started) {
  int rc = 0;
  for (int i = 1; i < started; i++)
    pthread_join(rt->workers[i].thread, NULL);
  if (rt->blocking_shutdown)
    rt->blocking_shutdown(rt);
  for (unsigned spins = 0; atomic_load(&rt->foreign_posts) > 0; spins++) {
    if (spins < 64)
      keel__cpu_relax();
    else
      sched_yield();
  }
  for (int i = 1; i < started; i++) {
    if (rt->workers[i].init_result < 0)
      rc = rt->workers[i].init_result;
    else
      keel__worker_destroy(&rt->workers[i]);
  }
  if (started > 0) {
    keel__stack_guard_thread_exit(&rt->workers[0]);
    keel__worker_destroy(&rt->workers[0]);
  }
  keel__stack_depot_destroy(rt);
  return rc;
}

int keel_run(const keel_config_t *cfg, keel_task_fn main_fn, void *arg) {
  if (!main_fn || keel__tls_worker)
    return -EINVAL;
  keel_runtime_t *rt = calloc(1, sizeof *rt);
  if (!rt)
    return -ENOMEM;
  int rc = runtime_config(rt, cfg);
  if (rc < 0) {
    free(rt);
    return rc;
  }
  rt->main_fn = main_fn;
  rt->main_arg = arg;
  rt->workers = calloc((size_t)rt->nworkers, sizeof *rt->workers);
  pthread_mutex_init(&rt->start_lock, NULL);
  pthread_cond_init(&rt->start_cond, NULL);
  pthread_mutex_init(&rt->blocking_lock, NULL);
  atomic_flag_clear(&rt->depot_lock.flag);
  rt->root = keel__scope_new_root(rt);
  if (!rt->workers || !rt->root) {
    rc = -ENOMEM;
    goto fail_alloc;
  }
  if ((rc = keel__metrics_open(rt)) < 0)
    goto fail_alloc;
  sigset_t old_mask;
  pthread_sigmask(SIG_BLOCK, NULL, &old_mask);
  bool signals = rt->cfg.handle_signals || rt->cfg.dump_on_sigusr1;
  if (signals && (rc = signals_start(rt, &old_mask)) < 0)
    goto fail_alloc;
  /* A peer's reset is an error code, not death (keel's own sends say
   * MSG_NOSIGNAL; this covers writes the application makes). */
  struct sigaction old_pipe;
  bool set_pipe = !rt->cfg.no_sigpipe_ignore;
  if (set_pipe)
    sigaction(SIGPIPE, &(struct sigaction){.sa_handler = SIG_IGN}, &old_pipe);
  if (!rt->cfg.no_stack_guard_handler)
    keel__stack_guard_install();
  keel__tls_worker = &rt->workers[0];
  int started = 0;
  rc = workers_start(rt, &started);
  if (rc == 0) {
    keel_spawn_opts_t opts = {.name = rt->cfg.main_name ? rt->cfg.main_name : "main"};
    rc = keel_spawn(rt->root, main_task, rt, &opts);
  }
  if (rc == 0)
    keel__worker_loop(&rt->workers[0]);
  else
    for (int i = 0; i < started; i++)
      keel__worker_post(&rt->workers[i], &rt->workers[i].stop_msg);
  keel__tls_worker = NULL;
  int jrc = workers_join(rt, started);
  signals_stop(rt, &old_mask);
  if (set_pipe)
    sigaction(SIGPIPE, &old_pipe, NULL);
  if (rc == 0)
    rc = jrc ? jrc : rt->main_result;
  if (rc < 0 && rt->ops == &keel__lab_ops)
    keel_log(KEEL_LOG_WARN, "lab run failed (%s); replay it with KEEL_SEED=%llu", keel_strerror(rc),
             (unsigned long long)rt->lab_seed);
  pthread_mutex_destroy(&rt->start_lock);
  pthread_cond_destroy(&rt->start_cond);
  keel_log_flush(); /* counts of identical lines dropped, not yet reported */
fail_alloc:
  keel__metrics_close(rt);
  pthread_mutex_destroy(&rt->blocking_lock);
  if (rt->root)
    keel__scope_free(rt->root);
  free(rt->workers);
  free(rt);
  return rc;
}

/* ---- Introspection ------------------------------------------------------------- */

const char *keel_backend_name(void) {
  keel__worker_t *w = keel__tls_worker;
  return w ? w->ops->name : "none";
}

int keel_worker_count(void) {
  keel__worker_t *w = keel__tls_worker;
  return w ? w->rt->nworkers : 0;
}

int keel_worker_id(void) {
  keel__worker_t *w = keel__tls_worker;
  return w ? w->id : -1;
}

/* The drain deadline of keel_shutdown: a timer on worker 0 (signals have
 * their own in the signal thread, which also covers stuck workers). */
static void drain_timer_cb(keel__timer_t *t) {
  drain_expired(keel__container_of(t, keel_runtime_t, drain_timer));
}

bool keel_shutting_down(void) {
  keel__worker_t *w = keel__tls_worker;
  return w && atomic_load_explicit(&w->rt->shutting_down, memory_order_relaxed);
}

static void drain_arm_msg(keel__worker_t *w, keel__msg_t *m) {
  keel_runtime_t *rt = keel__container_of(m, keel_runtime_t, drain_msg);
  int64_t when = keel__now_ns() + rt->cfg.drain_timeout_ms * KEEL_NS_PER_MS;
  keel__timer_init(&rt->drain_timer, drain_timer_cb);
  keel__timer_start(&w->wheel, &rt->drain_timer, keel__tick_of(w, when));
}

void keel_shutdown(void) {
  keel__worker_t *w = keel__tls_worker;
  if (!w)
    return;
  keel_runtime_t *rt = w->rt;
  atomic_store(&rt->shutting_down, 1);
  if (!atomic_exchange(&rt->drain_armed, true)) {
    rt->drain_msg.fn = drain_arm_msg;
    keel__worker_post(&rt->workers[0], &rt->drain_msg);
  }
  keel_scope_cancel(rt->root, KEEL_CANCEL_SHUTDOWN);
}
