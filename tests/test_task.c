/* Tasks: context switch, spawn/join, names, outcomes, stacks, overflow. */
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

#include "keel-test.h"

static keel_spawn_opts_t spawn_opts(const char *name, keel_task_t **handle) {
  keel_spawn_opts_t o = {.name = name, .on_worker = KEEL_WORKER_CURRENT, .handle = handle};
  return o;
}

/* Spawns fn(arg) into a fresh scope, joins and closes it. */
static int run_one(keel_task_fn fn, void *arg, const keel_spawn_opts_t *opts) {
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  int rc = keel_spawn(s, fn, arg, opts);
  int join_rc = keel_scope_join(s);
  keel_scope_close(s);
  return rc ? rc : join_rc;
}

/* ---- Context switch ------------------------------------------------------ */

#define ROUNDS 100

struct alternate {
  int seq[2 * ROUNDS + 8];
  int len;
  int started;
  int yield_errors;
  uint64_t acc[2];
};

struct alternate_arg {
  struct alternate *st;
  int id;
};

static uint64_t mix(uint64_t acc, int i) {
  return acc * UINT64_C(6364136223846793005) + (uint64_t)i;
}

static int alternate_task(void *arg) {
  struct alternate_arg *a = arg;
  struct alternate *st = a->st;
  /* Wait for the other side, so the order does not depend on eager starts. */
  st->started++;
  while (st->started < 2)
    st->yield_errors += keel_yield() != 0;
  uint64_t acc = (uint64_t)a->id + 1; /* lives in registers across switches */
  for (int i = 0; i < ROUNDS; i++) {
    st->seq[st->len++] = a->id;
    acc = mix(acc, i);
    st->yield_errors += keel_yield() != 0;
  }
  st->acc[a->id] = acc;
  return 0;
}

static int alternate_main(void *arg) {
  struct alternate *st = arg;
  struct alternate_arg args[2] = {{st, 0}, {st, 1}};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  int rc = 0;
  for (int i = 0; i < 2 && rc == 0; i++)
    rc = keel_spawn(s, alternate_task, &args[i], NULL);
  int join_rc = keel_scope_join(s);
  keel_scope_close(s);
  return rc ? rc : join_rc;
}

static void test_context_switch(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct alternate st = {0};
    assert_int_equal(kt_run(b, 1, alternate_main, &st), 0);
    assert_int_equal(st.len, 2 * ROUNDS);
    assert_int_equal(st.yield_errors, 0);
    for (int i = 0; i + 1 < st.len; i++)
      assert_int_not_equal(st.seq[i], st.seq[i + 1]);
    for (int id = 0; id < 2; id++) {
      uint64_t want = (uint64_t)id + 1;
      for (int i = 0; i < ROUNDS; i++)
        want = mix(want, i);
      assert_true(st.acc[id] == want);
    }
  }
}

/* ---- Spawn and join --------------------------------------------------------- */

struct flag {
  int ran;
  void *seen_arg;
  int join_rc;
};

static int set_flag_task(void *arg) {
  struct flag *f = arg;
  f->ran++;
  f->seen_arg = arg;
  return 0;
}

static int spawn_join_main(void *arg) {
  struct flag *f = arg;
  f->join_rc = run_one(set_flag_task, f, NULL);
  return 0;
}

static void test_spawn_join(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct flag f = {0, NULL, -1};
    assert_int_equal(kt_run(b, 1, spawn_join_main, &f), 0);
    assert_int_equal(f.join_rc, 0);
    assert_int_equal(f.ran, 1);
    assert_ptr_equal(f.seen_arg, &f);
  }
}

/* ---- Names ------------------------------------------------------------------- */

struct names {
  char self[64], named[64], dflt[64], lng[256], main_task[64];
  char long_src[200];
  int rc;
};

static int name_self_task(void *arg) {
  struct names *n = arg;
  snprintf(n->self, sizeof n->self, "%s", keel_task_name(keel_task_current()));
  return 0;
}

static int noop_task(void *arg) {
  (void)arg;
  return 0;
}

static int names_main(void *arg) {
  struct names *n = arg;
  snprintf(n->main_task, sizeof n->main_task, "%s", keel_task_name(keel_task_current()));
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_task_t *h[3] = {NULL, NULL, NULL};
  char buf[16] = "worker-7";
  keel_spawn_opts_t named = spawn_opts(buf, &h[0]);
  keel_spawn_opts_t dflt = spawn_opts(NULL, &h[1]);
  keel_spawn_opts_t lng = spawn_opts(n->long_src, &h[2]);
  n->rc = keel_spawn(s, name_self_task, n, &named);
  memcpy(buf, "########", 8); /* the name must have been copied */
  n->rc = n->rc ? n->rc : keel_spawn(s, noop_task, NULL, &dflt);
  n->rc = n->rc ? n->rc : keel_spawn(s, noop_task, NULL, &lng);
  int join_rc = keel_scope_join(s);
  n->rc = n->rc ? n->rc : join_rc;
  if (h[0] && h[1] && h[2]) {
    snprintf(n->named, sizeof n->named, "%s", keel_task_name(h[0]));
    snprintf(n->dflt, sizeof n->dflt, "%s", keel_task_name(h[1]));
    snprintf(n->lng, sizeof n->lng, "%s", keel_task_name(h[2]));
  }
  keel_scope_close(s);
  return 0;
}

static void test_names(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct names n;
    memset(&n, 0, sizeof n);
    for (size_t i = 0; i + 1 < sizeof n.long_src; i++)
      n.long_src[i] = (char)('a' + i % 26);
    assert_int_equal(kt_run(b, 1, names_main, &n), 0);
    assert_int_equal(n.rc, 0);
    assert_string_equal(n.main_task, "main");
    assert_string_equal(n.self, "worker-7");
    assert_string_equal(n.named, "worker-7");
    assert_string_equal(n.dflt, "task");
    size_t len = strlen(n.lng);
    assert_true(len >= 15 && len < strlen(n.long_src)); /* truncated, not overflowing */
    assert_memory_equal(n.lng, n.long_src, len);

    /* cfg.main_name names the main task. */
    keel_config_t cfg;
    keel_config_init(&cfg);
    cfg.backend = b;
    cfg.workers = 1;
    cfg.main_name = "boss";
    memset(&n, 0, sizeof n);
    n.long_src[0] = 'x';
    assert_int_equal(keel_run(&cfg, names_main, &n), 0);
    assert_string_equal(n.main_task, "boss");
  }
}

/* ---- Outcomes ------------------------------------------------------------------ */

struct outcomes {
  keel_outcome_t ok, err, cancelled, running;
  int sleep_rc, spawn_rc, join_rc;
};

static int eio_task(void *arg) {
  (void)arg;
  return -EIO;
}

static int sleep_long_task(void *arg) {
  int *rc = arg;
  *rc = keel_sleep_ms(10000);
  return *rc;
}

static int outcomes_main(void *arg) {
  struct outcomes *o = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_task_t *h[3] = {NULL, NULL, NULL};
  keel_spawn_opts_t opts[3] = {spawn_opts("ok", &h[0]), spawn_opts("err", &h[1]),
                               spawn_opts("sleeper", &h[2])};
  o->spawn_rc = keel_spawn(s, noop_task, NULL, &opts[0]);
  o->spawn_rc |= keel_spawn(s, eio_task, NULL, &opts[1]);
  o->spawn_rc |= keel_spawn(s, sleep_long_task, &o->sleep_rc, &opts[2]);
  keel_sleep_ms(20);
  if (h[2])
    o->running = keel_task_outcome(h[2]);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  o->join_rc = keel_scope_join(s);
  if (h[0] && h[1] && h[2]) {
    o->ok = keel_task_outcome(h[0]);
    o->err = keel_task_outcome(h[1]);
    o->cancelled = keel_task_outcome(h[2]);
  }
  keel_scope_close(s);
  return 0;
}

static void test_outcomes(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct outcomes o;
    memset(&o, 0xff, sizeof o);
    assert_int_equal(kt_run(b, 1, outcomes_main, &o), 0);
    assert_int_equal(o.spawn_rc, 0);
    assert_int_equal(o.running.kind, KEEL_OUTCOME_RUNNING);
    assert_int_equal(o.ok.kind, KEEL_OUTCOME_OK);
    assert_int_equal(o.ok.error, 0);
    assert_int_equal(o.err.kind, KEEL_OUTCOME_ERROR);
    assert_int_equal(o.err.error, -EIO);
    assert_int_equal(o.sleep_rc, -ECANCELED);
    assert_int_equal(o.cancelled.kind, KEEL_OUTCOME_CANCELLED);
    assert_int_equal(o.cancelled.reason, KEEL_CANCEL_USER);
    assert_int_equal(o.cancelled.error, -ECANCELED);
    assert_int_equal(o.join_rc, -EIO); /* the first failure */
  }
}

/* ---- Spawning into a cancelled scope ----------------------------------------------- */

static int spawn_cancelled_main(void *arg) {
  struct flag *f = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  f->join_rc = keel_spawn(s, set_flag_task, f, NULL); /* the spawn result */
  keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_spawn_into_cancelled(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct flag f = {0, NULL, 0};
    assert_int_equal(kt_run(b, 1, spawn_cancelled_main, &f), 0);
    assert_int_equal(f.join_rc, -ECANCELED);
    assert_int_equal(f.ran, 0);
  }
}

/* ---- Stacks --------------------------------------------------------------------------- */

#define BIG_FRAME (200 * 1024)

static int big_stack_task(void *arg) {
  volatile unsigned char buf[BIG_FRAME];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (unsigned char)(i * 7);
  keel_yield(); /* the frame must survive a switch */
  unsigned long sum = 0;
  for (size_t i = 0; i < sizeof buf; i++)
    sum += buf[i];
  *(unsigned long *)arg = sum;
  return 0;
}

static int big_stack_main(void *arg) {
  keel_spawn_opts_t o = spawn_opts("big", NULL);
  o.stack_size = 256 * 1024;
  return run_one(big_stack_task, arg, &o);
}

static void test_custom_stack_size(void **state) {
  (void)state;
  unsigned long want = 0;
  for (size_t i = 0; i < BIG_FRAME; i++)
    want += (unsigned char)(i * 7);
  KT_FOR_EACH_BACKEND(b) {
    unsigned long sum = 0;
    assert_int_equal(kt_run(b, 1, big_stack_main, &sum), 0);
    assert_true(sum == want);
  }
}

/* ---- Many tasks ----------------------------------------------------------------------- */

#define MANY (10000 / KT_SCALE)

struct many {
  int spawned, ran, errors, join_rc;
};

static int many_task(void *arg) {
  struct many *m = arg;
  m->errors += keel_yield() != 0; /* all of them are alive at once */
  m->ran++;
  return 0;
}

static int many_main(void *arg) {
  struct many *m = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  for (int i = 0; i < MANY; i++)
    m->spawned += keel_spawn(s, many_task, m, NULL) == 0;
  m->join_rc = keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_many_tasks(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct many m = {0, 0, 0, -1};
    assert_int_equal(kt_run(b, 1, many_main, &m), 0);
    assert_int_equal(m.spawned, MANY);
    assert_int_equal(m.ran, MANY);
    assert_int_equal(m.errors, 0);
    assert_int_equal(m.join_rc, 0);
  }
}

/* ---- keel_run's result ------------------------------------------------------------------ */

static int return_arg_main(void *arg) { return *(int *)arg; }

static void test_run_returns_main_result(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    int v = 42;
    assert_int_equal(kt_run(b, 1, return_arg_main, &v), 42);
    v = -EIO;
    assert_int_equal(kt_run(b, 2, return_arg_main, &v), -EIO);
  }
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = -1;
  int v = 0;
  assert_int_equal(keel_run(&cfg, return_arg_main, &v), -EINVAL);
}

/* ---- Checkpoint ----------------------------------------------------------------------- */

struct spin {
  atomic_int started;
  long iterations;
  int rc;
  int64_t cancelled_at, stopped_at;
};

static int spin_task(void *arg) {
  struct spin *sp = arg;
  int64_t give_up = kt_mono_ns() + 10 * KEEL_NS_PER_SEC;
  int rc;
  while ((rc = keel_checkpoint()) == 0 && kt_mono_ns() < give_up) {
    sp->iterations++;
    atomic_store(&sp->started, 1); /* after a checkpoint that passed */
  }
  sp->stopped_at = kt_mono_ns();
  sp->rc = rc;
  return rc;
}

/* The spinner runs on worker 1 and never blocks; main cancels it from 0. */
static int checkpoint_main(void *arg) {
  struct spin *sp = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_spawn_opts_t o = spawn_opts("spinner", NULL);
  o.on_worker = KEEL_WORKER(1);
  int rc = keel_spawn(s, spin_task, sp, &o);
  for (int i = 0; i < 5000 && !atomic_load(&sp->started); i++)
    keel_sleep_ms(1);
  keel_sleep_ms(10);
  sp->cancelled_at = kt_mono_ns();
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_join(s);
  keel_scope_close(s);
  return rc;
}

static void test_checkpoint(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct spin sp = {.rc = 1};
    assert_int_equal(kt_run(b, 2, checkpoint_main, &sp), 0);
    assert_int_equal(sp.rc, -ECANCELED);
    assert_true(sp.iterations > 0);
    /* the spinner stops at its next checkpoint, once its thread gets a CPU
     * (on a loaded machine, maybe not at once): long before its 10 s */
    assert_true(sp.stopped_at - sp.cancelled_at < 2 * KEEL_NS_PER_SEC);
  }
}

/* ---- Stack overflow ---------------------------------------------------------------------- */

static volatile int recursion_limit = INT_MAX;

static int recurse(int depth) {
  volatile char frame[512];
  frame[0] = (char)depth;
  frame[sizeof frame - 1] = (char)depth;
  if (depth >= recursion_limit)
    return frame[0];
  return recurse(depth + 1) + frame[sizeof frame - 1];
}

static int overflow_task(void *arg) {
  (void)arg;
  return recurse(0);
}

static int overflow_main(void *arg) {
  (void)arg;
  keel_spawn_opts_t o = spawn_opts("deep-recursion", NULL);
  o.stack_size = 64 * 1024;
  return run_one(overflow_task, NULL, &o);
}

static keel_backend_t overflow_backend;

static int overflow_child(void) {
  struct rlimit no_core = {0, 0};
  setrlimit(RLIMIT_CORE, &no_core);
  int rc = kt_run(overflow_backend, 1, overflow_main, NULL);
  return rc == 0 ? 3 : 4; /* not reached when the overflow is caught */
}

/* This runs after other runtimes in this process, and cmocka swaps the
 * SIGSEGV handler around every test: keel must have its handler in place
 * for each run, not just the first one in the process. */
static void test_stack_overflow(void **state) {
  (void)state;
  if (KT_ASAN) {
    print_message("# skipped: ASan replaces the SIGSEGV handler that names the task\n");
    skip();
  }
  KT_FOR_EACH_BACKEND(b) {
    overflow_backend = b;
    int status = 0;
    char *out = kt_run_child(overflow_child, 10, &status, NULL);
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
      fail_msg("child did not die of SIGSEGV (status 0x%x); stderr: %s", status, out);
    if (!strstr(out, "deep-recursion") || !strcasestr(out, "stack"))
      fail_msg("overflow message does not name the task and its stack: %s", out);
    free(out);
  }
}

/* ---- Stack size bounds ------------------------------------------------------------------- */

struct stack_bounds {
  int rc_max, rc_2g, ran;
  size_t live_after;
  int join_rc;
};

static int count_run_task(void *arg) {
  (*(int *)arg)++;
  return 0;
}

/* A stack size past the 1 GiB bound is refused before anything starts.
 * (SIZE_MAX used to wrap to a one-page stack; 2 GiB was mapped as asked.) */
static int stack_bounds_main(void *arg) {
  struct stack_bounds *sb = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_spawn_opts_t o = spawn_opts("huge", NULL);
  o.stack_size = SIZE_MAX;
  sb->rc_max = keel_spawn(s, count_run_task, &sb->ran, &o);
  o = spawn_opts("2g", NULL);
  o.stack_size = (size_t)2 << 30;
  sb->rc_2g = keel_spawn(s, count_run_task, &sb->ran, &o);
  sb->live_after = keel_scope_live(s);
  sb->join_rc = keel_scope_join(s);
  keel_scope_close(s);
  return 0;
}

static void test_stack_size_too_large(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct stack_bounds sb = {.rc_max = 1, .rc_2g = 1, .live_after = 99, .join_rc = 1};
    assert_int_equal(kt_run(b, 1, stack_bounds_main, &sb), 0);
    assert_int_equal(sb.rc_max, -EINVAL);
    assert_int_equal(sb.rc_2g, -EINVAL);
    assert_int_equal(sb.ran, 0);
    assert_int_equal(sb.live_after, 0); /* nothing was started */
    assert_int_equal(sb.join_rc, 0);
  }
  /* The runtime-wide default has the same bound. */
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.workers = 1;
  cfg.stack_size = SIZE_MAX;
  int v = 0;
  assert_int_equal(keel_run(&cfg, return_arg_main, &v), -EINVAL);
}

/* A stack that cannot be mapped fails keel_spawn itself with -ENOMEM, on
 * this worker and on another: a spawn that returns 0 always runs fn, so
 * whoever wraps fn (a pool, a combinator) sees every task it started end. */
struct unmappable {
  int rc_here, rc_there, rc_after, live, ran;
};
static int unmappable_main(void *arg) {
  struct unmappable *u = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  struct rlimit old;
  if (!kt_as_limit_begin(&old))
    return 1; /* skipped */
  keel_spawn_opts_t o = spawn_opts("huge", NULL);
  o.stack_size = KT_UNMAPPABLE_STACK;
  u->rc_here = keel_spawn(s, count_run_task, &u->ran, &o);
  o.on_worker = KEEL_WORKER(1);
  u->rc_there = keel_spawn(s, count_run_task, &u->ran, &o);
  kt_as_limit_end(&old);
  u->live = (int)keel_scope_live(s);
  u->rc_after = keel_spawn(s, count_run_task, &u->ran, NULL);
  int rc = keel_scope_join(s);
  keel_scope_close(s);
  return rc;
}

static void test_unmappable_stack_fails_spawn(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct unmappable u = {1, 1, 1, -1, 0};
    int rc = kt_run(b, 2, unmappable_main, &u);
    if (rc == 1) {
      fprintf(stderr, "# address-space cap unavailable (sanitizer build): skipped\n");
      skip();
    }
    assert_int_equal(rc, 0);
    assert_int_equal(u.rc_here, -ENOMEM);
    assert_int_equal(u.rc_there, -ENOMEM);
    assert_int_equal(u.live, 0);
    assert_int_equal(u.rc_after, 0);
    assert_int_equal(u.ran, 1); /* only the ordinary one */
  }
}

#define SMALL_FRAME (8 * 1024)

struct small_stack {
  int spawn_rc, join_rc, ran;
  unsigned long sum;
  keel_outcome_t outcome;
};

static int small_stack_task(void *arg) {
  struct small_stack *ss = arg;
  volatile unsigned char buf[SMALL_FRAME];
  for (size_t i = 0; i < sizeof buf; i++)
    buf[i] = (unsigned char)(i * 13);
  keel_yield();
  unsigned long sum = 0;
  for (size_t i = 0; i < sizeof buf; i++)
    sum += buf[i];
  ss->sum = sum;
  ss->ran = 1;
  return 0;
}

static int small_stack_main(void *arg) {
  struct small_stack *ss = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_task_t *h = NULL;
  keel_spawn_opts_t o = spawn_opts("tiny-stack", &h);
  o.stack_size = 100; /* clamped up to the minimum */
  ss->spawn_rc = keel_spawn(s, small_stack_task, ss, &o);
  ss->join_rc = keel_scope_join(s);
  if (h)
    ss->outcome = keel_task_outcome(h);
  keel_scope_close(s);
  return 0;
}

/* A tiny stack_size is raised to the minimum, so an 8 KiB frame fits. Runs
 * in a child: with a 100-byte stack the task would overflow its guard page
 * and take the process down. Results come back in shared memory. */
static void test_stack_size_too_small(void **state) {
  (void)state;
  unsigned long want = 0;
  for (size_t i = 0; i < SMALL_FRAME; i++)
    want += (unsigned char)(i * 13);
  KT_FOR_EACH_BACKEND(b) {
    struct small_stack *ss =
        mmap(NULL, sizeof *ss, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(ss != MAP_FAILED);
    *ss = (struct small_stack){.spawn_rc = 1, .join_rc = 1};
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
      struct rlimit no_core = {0, 0};
      setrlimit(RLIMIT_CORE, &no_core);
      signal(SIGSEGV, SIG_DFL); /* cmocka's handler would longjmp in the child */
      signal(SIGBUS, SIG_DFL);
      signal(SIGABRT, SIG_DFL);
      alarm(20);
      int rc = kt_run(b, 1, small_stack_main, ss);
      _exit(rc == 0 ? 0 : 3);
    }
    int status = 0;
    if (kt_wait_child(pid, 20000, &status) != 0)
      fail_msg("[%s] child still running after 20 s", kt_backend_name(b));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail_msg("[%s] child with a 100-byte stack_size died (status 0x%x)", kt_backend_name(b),
               status);
    assert_int_equal(ss->spawn_rc, 0);
    assert_int_equal(ss->join_rc, 0);
    assert_int_equal(ss->ran, 1);
    assert_true(ss->sum == want);
    assert_int_equal(ss->outcome.kind, KEEL_OUTCOME_OK);
    munmap(ss, sizeof *ss);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_context_switch),
      cmocka_unit_test(test_spawn_join),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_outcomes),
      cmocka_unit_test(test_spawn_into_cancelled),
      cmocka_unit_test(test_custom_stack_size),
      cmocka_unit_test(test_many_tasks),
      cmocka_unit_test(test_run_returns_main_result),
      cmocka_unit_test(test_checkpoint),
      cmocka_unit_test(test_stack_overflow),
      cmocka_unit_test(test_stack_size_too_large),
      cmocka_unit_test(test_unmappable_stack_fails_spawn),
      cmocka_unit_test(test_stack_size_too_small),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
