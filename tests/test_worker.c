/* Workers: placement, cross-worker spawn and cancellation, shutdown. */
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <time.h>

#include "keel-test.h"

#define HOUR_MS (INT64_C(3600) * 1000)

/* How late a wake-up may be on a loaded machine (every core busy, a
 * sanitizer's slowdown): the waits these bounds cut short ask for 10 s, an
 * hour or a 60 s cleanup. */
#define LATE_MS 2000

static keel_spawn_opts_t on_worker(int worker) {
  keel_spawn_opts_t o = {.on_worker = KEEL_WORKER(worker)};
  return o;
}

/* Sleeps (1 ms steps, bounded) until *counter reaches n. */
static void await_count(atomic_int *counter, int n) {
  for (int i = 0; i < 5000 && atomic_load(counter) < n; i++)
    keel_sleep_ms(1);
}

/* ---- Worker count and ids --------------------------------------------------------- */

#define PER_WORKER 2

struct ids {
  int count, main_id;
  char backend[32];
  int seen[4][PER_WORKER];
  int current_child_id, null_opts_child_id;
  int bad_worker_rc[3];
  int spawn_rc, join_rc;
};

struct id_arg {
  struct ids *ids;
  int worker, slot;
};

static int record_id_task(void *arg) {
  struct id_arg *a = arg;
  a->ids->seen[a->worker][a->slot] = keel_worker_id();
  return 0;
}

static int current_child_task(void *arg) {
  struct ids *ids = arg;
  ids->current_child_id = keel_worker_id();
  return 0;
}

static int null_opts_child_task(void *arg) {
  struct ids *ids = arg;
  ids->null_opts_child_id = keel_worker_id();
  return 0;
}

/* On worker 2: KEEL_WORKER_CURRENT places the child next to its spawner. */
static int spawn_current_task(void *arg) {
  keel_spawn_opts_t o = {.on_worker = KEEL_WORKER_CURRENT};
  return keel_spawn(keel_scope_current(), current_child_task, arg, &o);
}

/* On worker 3: no options at all means the defaults, the current worker. */
static int spawn_null_opts_task(void *arg) {
  return keel_spawn(keel_scope_current(), null_opts_child_task, arg, NULL);
}

static int ids_main(void *arg) {
  struct ids *ids = arg;
  ids->count = keel_worker_count();
  ids->main_id = keel_worker_id();
  snprintf(ids->backend, sizeof ids->backend, "%s", keel_backend_name());
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  struct id_arg args[4][PER_WORKER];
  for (int w = 0; w < 4; w++) {
    for (int k = 0; k < PER_WORKER; k++) {
      args[w][k] = (struct id_arg){ids, w, k};
      keel_spawn_opts_t o = on_worker(w);
      ids->spawn_rc |= keel_spawn(s, record_id_task, &args[w][k], &o);
    }
  }
  keel_spawn_opts_t o = on_worker(2);
  ids->spawn_rc |= keel_spawn(s, spawn_current_task, ids, &o);
  o = on_worker(3);
  ids->spawn_rc |= keel_spawn(s, spawn_null_opts_task, ids, &o);
  o = on_worker(4);
  ids->bad_worker_rc[0] = keel_spawn(s, current_child_task, ids, &o);
  o = on_worker(1000);
  ids->bad_worker_rc[1] = keel_spawn(s, current_child_task, ids, &o);
  o.on_worker = -5;
  ids->bad_worker_rc[2] = keel_spawn(s, current_child_task, ids, &o);
  ids->join_rc = keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_worker_count_and_ids(void **state) {
  (void)state;
  assert_int_equal(keel_worker_id(), -1);
  KT_FOR_EACH_BACKEND(b) {
    struct ids ids;
    memset(&ids, 0xff, sizeof ids);
    ids.spawn_rc = 0;
    assert_int_equal(kt_run(b, 4, ids_main, &ids), 0); /* more workers than CPUs is fine */
    assert_int_equal(ids.count, 4);
    assert_int_equal(ids.main_id, 0);
    assert_string_equal(ids.backend, kt_backend_name(b));
    assert_int_equal(ids.spawn_rc, 0);
    for (int w = 0; w < 4; w++)
      for (int k = 0; k < PER_WORKER; k++)
        assert_int_equal(ids.seen[w][k], w);
    assert_int_equal(ids.current_child_id, 2);
    assert_int_equal(ids.null_opts_child_id, 3);
    assert_int_equal(ids.bad_worker_rc[0], -EINVAL);
    assert_int_equal(ids.bad_worker_rc[1], -EINVAL);
    assert_int_equal(ids.bad_worker_rc[2], -EINVAL);
    assert_int_equal(ids.join_rc, 0);
  }
  assert_int_equal(keel_worker_id(), -1);
}

/* ---- 10,000 tasks round-robin --------------------------------------------------------- */

#define RR_TASKS (10000 / KT_SCALE)
#define RR_WORKERS 4

struct rr {
  atomic_int ran, misplaced;
  int spawned, join_rc;
};

struct rr_task {
  struct rr *rr;
  int worker;
};

static int rr_task(void *arg) {
  struct rr_task *t = arg;
  if (keel_worker_id() != t->worker)
    atomic_fetch_add(&t->rr->misplaced, 1);
  atomic_fetch_add(&t->rr->ran, 1);
  return 0;
}

static int rr_main(void *arg) {
  struct rr_task *tasks = arg;
  struct rr *rr = tasks[0].rr;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  for (int i = 0; i < RR_TASKS; i++) {
    keel_spawn_opts_t o = on_worker(tasks[i].worker);
    rr->spawned += keel_spawn(s, rr_task, &tasks[i], &o) == 0;
  }
  rr->join_rc = keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_round_robin(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct rr rr = {.join_rc = -1};
    struct rr_task *tasks = calloc(RR_TASKS, sizeof *tasks);
    assert_non_null(tasks);
    for (int i = 0; i < RR_TASKS; i++)
      tasks[i] = (struct rr_task){&rr, i % RR_WORKERS};
    assert_int_equal(kt_run(b, RR_WORKERS, rr_main, tasks), 0);
    free(tasks);
    assert_int_equal(rr.spawned, RR_TASKS);
    assert_int_equal(atomic_load(&rr.ran), RR_TASKS);
    assert_int_equal(atomic_load(&rr.misplaced), 0);
    assert_int_equal(rr.join_rc, 0);
  }
}

/* ---- Ping-pong: each hop spawns the next one on the other worker ----------------------- */

#define HOPS (10000 / KT_SCALE)

struct pingpong {
  keel_scope_t *scope;
  int hops, wrong_worker, spawn_errors, last_worker, join_rc;
  int64_t elapsed_ns;
};

static int hop_task(void *arg) {
  struct pingpong *p = arg;
  int me = keel_worker_id();
  p->wrong_worker += me == p->last_worker || me < 0 || me > 1;
  p->last_worker = me;
  if (++p->hops == HOPS)
    return 0;
  keel_spawn_opts_t o = on_worker(1 - me);
  /* Counted only on failure: once the spawn succeeded, the next hop runs
   * on the other worker and owns *p. */
  if (keel_spawn(p->scope, hop_task, p, &o) != 0)
    p->spawn_errors++;
  return 0;
}

static int pingpong_main(void *arg) {
  struct pingpong *p = arg;
  (void)keel_scope_open(NULL, &p->scope);
  if (!p->scope)
    return -ENOMEM;
  int64_t t0 = kt_mono_ns();
  p->last_worker = 0;
  keel_spawn_opts_t o = on_worker(1);
  /* Counted only on failure: once the spawn succeeded, the next hop runs
   * on the other worker and owns *p. */
  if (keel_spawn(p->scope, hop_task, p, &o) != 0)
    p->spawn_errors++;
  p->join_rc = keel_scope_join(p->scope);
  p->elapsed_ns = kt_mono_ns() - t0;
  keel_scope_close(p->scope);
  return 0;
}

static void test_pingpong(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct pingpong p = {.join_rc = -1};
    assert_int_equal(kt_run(b, 2, pingpong_main, &p), 0);
    assert_int_equal(p.spawn_errors, 0);
    assert_int_equal(p.hops, HOPS);
    assert_int_equal(p.wrong_worker, 0);
    assert_int_equal(p.join_rc, 0);
    print_message("# %s: %d cross-worker hops in %.1f ms\n", kt_backend_name(b), HOPS,
                  (double)p.elapsed_ns / 1e6);
  }
}

/* ---- Cancelling a scope that spans three workers ------------------------------------------ */

#define SPAN_TASKS 6

struct span {
  atomic_int started;
  int rc[SPAN_TASKS], worker[SPAN_TASKS];
  int spawn_rc, join_rc;
  int64_t elapsed_ns;
};

struct span_arg {
  struct span *sp;
  int i;
};

static int span_task(void *arg) {
  struct span_arg *a = arg;
  a->sp->worker[a->i] = keel_worker_id();
  atomic_fetch_add(&a->sp->started, 1);
  a->sp->rc[a->i] = keel_sleep_ms(10000);
  return a->sp->rc[a->i];
}

static int span_main(void *arg) {
  struct span *sp = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  struct span_arg args[SPAN_TASKS];
  for (int i = 0; i < SPAN_TASKS; i++) {
    args[i] = (struct span_arg){sp, i};
    keel_spawn_opts_t o = on_worker(i % 3);
    sp->spawn_rc |= keel_spawn(s, span_task, &args[i], &o);
  }
  await_count(&sp->started, SPAN_TASKS);
  keel_sleep_ms(10);
  int64_t t0 = kt_mono_ns();
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  sp->join_rc = keel_scope_join(s);
  sp->elapsed_ns = kt_mono_ns() - t0;
  keel_scope_close(s);
  return 0;
}

static void test_cancel_spans_workers(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct span sp = {.join_rc = 1};
    assert_int_equal(kt_run(b, 3, span_main, &sp), 0);
    assert_int_equal(sp.spawn_rc, 0);
    assert_int_equal(atomic_load(&sp.started), SPAN_TASKS);
    for (int i = 0; i < SPAN_TASKS; i++) {
      assert_int_equal(sp.worker[i], i % 3);
      assert_int_equal(sp.rc[i], -ECANCELED);
    }
    assert_int_equal(sp.join_rc, -ECANCELED);
    assert_true(sp.elapsed_ns < LATE_MS * KEEL_NS_PER_MS);
  }
}

/* ---- keel_shutdown from a task ------------------------------------------------------------ */

struct sd {
  atomic_int started, saw_shutdown, woke;
  int main_rc;
  keel_cancel_reason_t main_reason;
  int64_t shutdown_ns, end_ns;
};

static int sd_sleeper_task(void *arg) {
  struct sd *sd = arg;
  atomic_fetch_add(&sd->started, 1);
  int rc = keel_sleep_ms(HOUR_MS);
  if (rc == -ECANCELED && keel_cancelled() == KEEL_CANCEL_SHUTDOWN)
    atomic_fetch_add(&sd->saw_shutdown, 1);
  atomic_fetch_add(&sd->woke, 1);
  return 0;
}

static int sd_trigger_task(void *arg) {
  struct sd *sd = arg;
  await_count(&sd->started, 4);
  keel_sleep_ms(10);
  sd->shutdown_ns = kt_mono_ns();
  keel_shutdown();
  return 0;
}

static int sd_main(void *arg) {
  struct sd *sd = arg;
  keel_scope_t *root = keel_scope_current();
  for (int i = 0; i < 4; i++) {
    keel_spawn_opts_t o = on_worker(i % 2);
    keel_spawn(root, sd_sleeper_task, sd, &o);
  }
  keel_spawn_opts_t o = on_worker(1);
  keel_spawn(root, sd_trigger_task, sd, &o);
  sd->main_rc = keel_sleep_ms(HOUR_MS);
  sd->main_reason = keel_cancelled();
  return 42;
}

static void test_shutdown_from_task(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct sd sd = {.main_rc = 1};
    assert_int_equal(kt_run(b, 2, sd_main, &sd), 42);
    sd.end_ns = kt_mono_ns();
    assert_int_equal(sd.main_rc, -ECANCELED);
    assert_int_equal(sd.main_reason, KEEL_CANCEL_SHUTDOWN);
    assert_int_equal(atomic_load(&sd.woke), 4);
    assert_int_equal(atomic_load(&sd.saw_shutdown), 4);
    /* the tasks woke from their hour and keel_run tore the runtime down */
    assert_true(sd.end_ns - sd.shutdown_ns < 2 * LATE_MS * KEEL_NS_PER_MS);
  }
}

/* ---- Signals: a forked child runs the runtime with handle_signals ---------------------------- */

struct drain {
  int fd; /* the child's end of the report pipe */
  atomic_int started;
};

static void report(struct drain *d, char c) {
  ssize_t n = write(d->fd, &c, 1);
  (void)n;
}

/* Sleeps until shutdown, then flushes for 50 ms under a shield. */
static int flush_task(void *arg) {
  struct drain *d = arg;
  atomic_fetch_add(&d->started, 1);
  int rc = keel_sleep_ms(HOUR_MS);
  keel_cancel_reason_t why = keel_cancelled();
  keel_shield_begin(keel_now_ns() + KEEL_NS_PER_SEC);
  int flush_rc = keel_sleep_ms(50);
  keel_shield_end();
  report(d, rc == -ECANCELED && why == KEEL_CANCEL_SHUTDOWN && flush_rc == 0 ? 'c' : 'x');
  return 0;
}

/* Sleeps until shutdown, then gets stuck in a 60 s shielded cleanup. */
static int stuck_task(void *arg) {
  struct drain *d = arg;
  atomic_fetch_add(&d->started, 1);
  keel_sleep_ms(HOUR_MS);
  keel_shield_begin(keel_now_ns() + 60 * KEEL_NS_PER_SEC);
  report(d, 'S');
  keel_sleep_ms(60000);
  keel_shield_end();
  return 0;
}

struct child_cfg {
  keel_task_fn task;
  int ntasks;
  struct drain d;
};

static int signal_child_main(void *arg) {
  struct child_cfg *c = arg;
  keel_scope_t *root = keel_scope_current();
  for (int i = 0; i < c->ntasks; i++) {
    keel_spawn_opts_t o = on_worker(i % 2);
    if (keel_spawn(root, c->task, &c->d, &o) != 0)
      return 2;
  }
  await_count(&c->d.started, c->ntasks);
  report(&c->d, 'R');
  return keel_sleep_ms(HOUR_MS) == -ECANCELED ? 0 : 3;
}

static pid_t fork_signal_child_err(keel_backend_t b, struct child_cfg *c, int64_t drain_ms, int *rd,
                                   int err_fd) {
  int fds[2];
  if (pipe(fds) != 0)
    return -1;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    if (err_fd >= 0)
      dup2(err_fd, STDERR_FILENO);
    c->d.fd = fds[1];
    keel_config_t cfg;
    keel_config_init(&cfg);
    cfg.backend = b;
    cfg.workers = 2;
    cfg.handle_signals = true;
    cfg.drain_timeout_ms = drain_ms;
    int rc = keel_run(&cfg, signal_child_main, c);
    if (rc != 0)
      fprintf(stderr, "# child: keel_run returned %d\n", rc);
    _exit(rc == 0 ? 0 : 1);
  }
  close(fds[1]);
  *rd = fds[0];
  return pid;
}

static pid_t fork_signal_child(keel_backend_t b, struct child_cfg *c, int64_t drain_ms, int *rd) {
  return fork_signal_child_err(b, c, drain_ms, rd, -1);
}

/* Reads up to n bytes, waiting at most timeout_ms overall; returns the count. */
static size_t read_bytes(int fd, char *buf, size_t n, int timeout_ms) {
  int64_t until = kt_mono_ns() + timeout_ms * KEEL_NS_PER_MS;
  size_t got = 0;
  while (got < n) {
    int left = (int)((until - kt_mono_ns()) / KEEL_NS_PER_MS);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (left <= 0 || poll(&pfd, 1, left) <= 0)
      break;
    ssize_t r = read(fd, buf + got, n - got);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  return got;
}

#define DRAIN_TASKS 4

static void test_sigterm_drains(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct child_cfg c = {.task = flush_task, .ntasks = DRAIN_TASKS};
    int rd = -1, status = 0;
    pid_t pid = fork_signal_child(b, &c, 0, &rd);
    assert_true(pid > 0);
    char buf[16] = {0};
    if (read_bytes(rd, buf, 1, 10000) != 1 || buf[0] != 'R') {
      kt_wait_child(pid, 0, &status);
      fail_msg("[%s] the child did not get ready", kt_backend_name(b));
    }
    int64_t t0 = kt_mono_ns();
    kill(pid, SIGTERM);
    size_t got = read_bytes(rd, buf, sizeof buf, 5000); /* until EOF */
    close(rd);
    if (kt_wait_child(pid, 5000, &status) != 0)
      fail_msg("[%s] the child did not exit within 5 s of SIGTERM", kt_backend_name(b));
    assert_true(kt_mono_ns() - t0 < 5 * KEEL_NS_PER_SEC);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(got, DRAIN_TASKS);
    for (size_t i = 0; i < got; i++)
      assert_int_equal(buf[i], 'c');
  }
}

static void test_second_sigint_exits_at_once(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct child_cfg c = {.task = stuck_task, .ntasks = 2};
    int rd = -1, status = 0;
    pid_t pid = fork_signal_child(b, &c, 60000, &rd);
    assert_true(pid > 0);
    char buf[4] = {0};
    if (read_bytes(rd, buf, 1, 10000) != 1 || buf[0] != 'R') {
      kt_wait_child(pid, 0, &status);
      fail_msg("[%s] the child did not get ready", kt_backend_name(b));
    }
    kill(pid, SIGINT);
    size_t got = read_bytes(rd, buf, 2, 5000); /* both tasks are in their stuck cleanup */
    if (got != 2 || buf[0] != 'S' || buf[1] != 'S') {
      kt_wait_child(pid, 0, &status);
      fail_msg("[%s] the tasks did not reach their cleanup after SIGINT", kt_backend_name(b));
    }
    usleep(50 * 1000);
    int64_t t0 = kt_mono_ns();
    kill(pid, SIGINT);
    int rc = kt_wait_child(pid, 10000, &status); /* the cleanups would take 60 s */
    close(rd);
    if (rc != 0)
      fail_msg("[%s] a second SIGINT did not end the stuck drain", kt_backend_name(b));
    assert_true(kt_mono_ns() - t0 < 10 * KEEL_NS_PER_SEC);
  }
}

/* A drain that outlives its deadline ends the process, naming what was
 * still running. */
static void test_drain_deadline_exits(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct child_cfg c = {.task = stuck_task, .ntasks = 2};
    int rd = -1, status = 0, errp[2];
    assert_int_equal(pipe(errp), 0);
    pid_t pid = fork_signal_child_err(b, &c, 300, &rd, errp[1]);
    close(errp[1]);
    assert_true(pid > 0);
    char buf[4] = {0};
    if (read_bytes(rd, buf, 1, 10000) != 1 || buf[0] != 'R') {
      kt_wait_child(pid, 0, &status);
      fail_msg("[%s] the child did not get ready", kt_backend_name(b));
    }
    int64_t t0 = kt_mono_ns();
    kill(pid, SIGTERM);
    int rc = kt_wait_child(pid, 10000, &status); /* the cleanups would take 60 s */
    int64_t took_ms = (kt_mono_ns() - t0) / KEEL_NS_PER_MS;
    char err[4096] = {0};
    read_bytes(errp[0], err, sizeof err - 1, 1000);
    close(errp[0]);
    close(rd);
    if (rc != 0)
      fail_msg("[%s] the child outlived its 300 ms drain deadline by 10 s", kt_backend_name(b));
    assert_true(took_ms >= 250); /* t0 was taken before the signal was sent */
    assert_true(took_ms < 300 + 2 * LATE_MS);
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 0);
    if (!strstr(err, "drain deadline") || !strstr(err, "task '"))
      fail_msg("[%s] no dump of the stuck tasks on stderr: %s", kt_backend_name(b), err);
  }
}

/* ---- keel_shutdown's drain deadline, without signal handling ------------------------------- */

#define SD_CLEANUP_MS 10000 /* the stuck cleanup: far past the 300 ms deadline */

/* Sleeps until shutdown, then gets stuck in a 10 s shielded cleanup. */
static int stuck_3s_task(void *arg) {
  struct drain *d = arg;
  atomic_fetch_add(&d->started, 1);
  keel_sleep_ms(HOUR_MS);
  keel_shield_begin(keel_now_ns() + (SD_CLEANUP_MS + 1000) * KEEL_NS_PER_MS);
  report(d, 'S');
  keel_sleep_ms(SD_CLEANUP_MS);
  keel_shield_end();
  return 0;
}

static int shutdown_child_main(void *arg) {
  struct drain *d = arg;
  keel_scope_t *root = keel_scope_current();
  for (int i = 0; i < 2; i++) {
    keel_spawn_opts_t o = on_worker(i);
    o.name = "stuck-cleanup";
    if (keel_spawn(root, stuck_3s_task, d, &o) != 0)
      return 2;
  }
  await_count(&d->started, 2);
  keel_sleep_ms(10);
  report(d, 'R');
  /* When the drain began, for the parent's lower bound: the parent may
   * read 'R' late on a loaded machine. */
  int64_t shutdown_ns = kt_mono_ns();
  ssize_t n = write(d->fd, &shutdown_ns, sizeof shutdown_ns);
  (void)n;
  keel_shutdown();
  return keel_sleep_ms(HOUR_MS) == -ECANCELED ? 0 : 3;
}

/* keel_shutdown (no signal thread: handle_signals is false) starts the drain
 * deadline too: a drain stuck past it ends the process. Before, only the
 * signal path had a deadline and this child ran its whole cleanup and
 * exited 0. */
static void test_shutdown_drain_deadline(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    int rdp[2], errp[2];
    assert_int_equal(pipe(rdp), 0);
    assert_int_equal(pipe(errp), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      close(rdp[0]);
      close(errp[0]);
      dup2(errp[1], STDERR_FILENO);
      alarm(30);
      struct drain d = {.fd = rdp[1]};
      keel_config_t cfg;
      keel_config_init(&cfg);
      cfg.backend = b;
      cfg.workers = 2;
      cfg.handle_signals = false;
      cfg.drain_timeout_ms = 300;
      int rc = keel_run(&cfg, shutdown_child_main, &d);
      if (rc != 0)
        fprintf(stderr, "# child: keel_run returned %d\n", rc);
      _exit(rc == 0 ? 0 : 1);
    }
    close(rdp[1]);
    close(errp[1]);
    int status = 0;
    char buf[4] = {0};
    if (read_bytes(rdp[0], buf, 1, 10000) != 1 || buf[0] != 'R') {
      kt_wait_child(pid, 0, &status);
      fail_msg("[%s] the child did not get ready", kt_backend_name(b));
    }
    int64_t t0 = kt_mono_ns(); /* keel_shutdown is being called, or was */
    int64_t shutdown_ns = 0;
    assert_int_equal(read_bytes(rdp[0], (char *)&shutdown_ns, sizeof shutdown_ns, 5000),
                     sizeof shutdown_ns);
    size_t got = read_bytes(rdp[0], buf, 2, 5000);
    int rc = kt_wait_child(pid, SD_CLEANUP_MS - 2000, &status);
    int64_t now = kt_mono_ns();
    int64_t took_ms = (now - t0) / KEEL_NS_PER_MS;
    int64_t since_shutdown_ms = (now - shutdown_ns) / KEEL_NS_PER_MS;
    char err[4096] = {0};
    read_bytes(errp[0], err, sizeof err - 1, 1000);
    close(errp[0]);
    close(rdp[0]);
    if (rc != 0)
      fail_msg("[%s] the child was still running %d s after keel_shutdown", kt_backend_name(b),
               (SD_CLEANUP_MS - 2000) / 1000);
    assert_int_equal(got, 2); /* both tasks reached their stuck cleanup */
    assert_true(buf[0] == 'S' && buf[1] == 'S');
    if (took_ms >= 300 + 2 * LATE_MS)
      fail_msg("[%s] the child exited %lld ms after keel_shutdown (drain deadline 300 ms)",
               kt_backend_name(b), (long long)took_ms);
    if (since_shutdown_ms < 300) /* the child's clock: reading 'R' late cannot shorten it */
      fail_msg("[%s] the child exited %lld ms after keel_shutdown, before its 300 ms deadline",
               kt_backend_name(b), (long long)since_shutdown_ms);
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 0)
      fail_msg("[%s] the child did not fail its drain (status 0x%x); stderr: %s",
               kt_backend_name(b), status, err);
    if (!strstr(err, "drain deadline") || !strstr(err, "stuck-cleanup"))
      fail_msg("[%s] no drain deadline report naming the stuck tasks on stderr: %s",
               kt_backend_name(b), err);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_worker_count_and_ids),
      cmocka_unit_test(test_round_robin),
      cmocka_unit_test(test_pingpong),
      cmocka_unit_test(test_cancel_spans_workers),
      cmocka_unit_test(test_shutdown_from_task),
      cmocka_unit_test(test_sigterm_drains),
      cmocka_unit_test(test_second_sigint_exits_at_once),
      cmocka_unit_test(test_drain_deadline_exits),
      cmocka_unit_test(test_shutdown_drain_deadline),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
