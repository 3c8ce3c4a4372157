/* Lab mode: the virtual clock, exact timing of sleeps, deadlines and
 * shields across many seeds, the seeded scheduler's determinism, in-memory
 * pipes with faults (also on the real backends), the reports a lab run
 * gives (its seed on failure, a deadlock), and that TCP reaches the lab
 * network rather than the host. */
#define KT_GUARD_MS (10 * 3600 * 1000) /* virtual in lab mode: ten hours of it are nothing */
#include "kt-guard.h"

#include <sys/socket.h>

#define SEEDS 64

/* ---- The virtual clock ------------------------------------------------------ */

static int clock_body(void *arg) {
  (void)arg;
  CHECK(keel_lab_active());
  CHECK(strcmp(keel_backend_name(), "lab") == 0);
  int64_t t0 = keel_now_ns();
  int64_t real0 = kt_mono_ns();
  for (int i = 0; i < 1000; i++) /* running tasks do not move time */
    CHECK_RC(keel_yield());
  CHECK_EQ(keel_now_ns(), t0);
  CHECK_EQ(keel_sleep_ms(3600 * 1000), 0);
  CHECK_EQ(keel_now_ns(), t0 + 3600 * KEEL_NS_PER_SEC);
  CHECK_EQ(keel_sleep_ns(1), 0);
  CHECK_EQ(keel_now_ns(), t0 + 3600 * KEEL_NS_PER_SEC + 1);
  /* an hour of sleep, at once: even a loaded machine takes far less than 10 s */
  CHECK(kt_mono_ns() - real0 < 10 * KEEL_NS_PER_SEC);
  return 0;
}

static void test_virtual_clock(void **state) {
  (void)state;
  kt_run_lab_body(clock_body, NULL, 1);
}

/* ---- Sleeps, deadlines and shields to the nanosecond, across seeds ----------- */

typedef struct sleeper {
  int64_t duration_ns, woke_at;
  int rc;
} sleeper_t;

static int sleeper_task(void *arg) {
  sleeper_t *s = arg;
  s->rc = keel_sleep_ns(s->duration_ns);
  s->woke_at = keel_now_ns();
  return 0;
}

static int sleeps_body(void *arg) {
  (void)arg;
  enum { N = 12 };
  sleeper_t s[N];
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  int64_t t0 = keel_now_ns();
  for (int i = 0; i < N; i++) {
    s[i] = (sleeper_t){.duration_ns = (int64_t)keel_random_below(5 * KEEL_NS_PER_MS) + 1};
    CHECK_RC(keel_spawn(sc, sleeper_task, &s[i], NULL));
  }
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  for (int i = 0; i < N; i++) {
    CHECK_EQ(s[i].rc, 0);
    CHECK_EQ(s[i].woke_at, t0 + s[i].duration_ns);
  }
  return 0;
}

static void test_sleeps_exact(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= SEEDS; seed++)
    kt_run_lab_body(sleeps_body, NULL, seed);
}

static int sleep_hour(void *arg) {
  int64_t *ended = arg;
  int rc = keel_sleep_ms(3600 * 1000);
  *ended = keel_now_ns();
  return rc;
}

/* Opens an inner scope with a later deadline inside the outer one. */
static int nested_sleeper(void *arg) {
  int64_t *ended = arg;
  keel_scope_opts_t io = {.deadline_ns = keel_now_ns() + 9 * KEEL_NS_PER_MS};
  keel_scope_t *inner = NULL;
  (void)keel_scope_open(&io, &inner);
  if (!inner)
    return -ENOMEM;
  keel_spawn(inner, sleep_hour, ended, NULL);
  int rc = keel_scope_join(inner);
  keel_scope_close(inner);
  return rc;
}

static int deadline_body(void *arg) {
  (void)arg;
  int64_t t0 = keel_now_ns();
  int64_t outer_d = t0 + 5 * KEEL_NS_PER_MS + 3;
  /* The nearer of nested deadlines wins, exactly. */
  keel_scope_opts_t oo = {.deadline_ns = outer_d};
  keel_scope_t *outer = NULL;
  (void)keel_scope_open(&oo, &outer);
  CHECK(outer);
  int64_t ended = 0;
  CHECK_RC(keel_spawn(outer, nested_sleeper, &ended, NULL));
  CHECK_EQ(keel_scope_join(outer), -ETIMEDOUT);
  CHECK_EQ(ended, outer_d);
  keel_scope_close(outer);
  /* A task deadline, restored afterwards. */
  int64_t t1 = keel_now_ns();
  int64_t prev = keel_task_set_deadline(t1 + 777);
  CHECK_EQ(keel_sleep_ms(1000), -ETIMEDOUT);
  CHECK_EQ(keel_now_ns(), t1 + 777);
  keel_task_set_deadline(prev);
  CHECK_EQ(keel_sleep_ns(10), 0);
  return 0;
}

static void test_deadlines_exact(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= SEEDS; seed++)
    kt_run_lab_body(deadline_body, NULL, seed);
}

typedef struct shielded {
  int64_t start, short_end, long_end;
  int short_rc, long_rc, after_rc;
} shielded_t;

static int shielded_task(void *arg) {
  shielded_t *s = arg;
  s->start = keel_now_ns();
  keel_shield_begin(s->start + 10 * KEEL_NS_PER_MS);
  s->short_rc = keel_sleep_ms(4); /* the scope is cancelled meanwhile: ignored */
  s->short_end = keel_now_ns();
  s->long_rc = keel_sleep_ms(1000); /* bounded by the shield's own deadline */
  s->long_end = keel_now_ns();
  keel_shield_end();
  s->after_rc = keel_checkpoint();
  return 0;
}

static int shield_body(void *arg) {
  (void)arg;
  shielded_t s = {0};
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  CHECK_RC(keel_spawn(sc, shielded_task, &s, NULL));
  CHECK_EQ(keel_sleep_ms(1), 0);
  keel_scope_cancel(sc, KEEL_CANCEL_USER);
  keel_scope_join(sc);
  keel_scope_close(sc);
  CHECK_EQ(s.short_rc, 0);
  CHECK_EQ(s.short_end, s.start + 4 * KEEL_NS_PER_MS);
  CHECK_EQ(s.long_rc, -ETIMEDOUT);
  CHECK_EQ(s.long_end, s.start + 10 * KEEL_NS_PER_MS);
  CHECK_EQ(s.after_rc, -ECANCELED);
  return 0;
}

static void test_shields_exact(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= SEEDS; seed++)
    kt_run_lab_body(shield_body, NULL, seed);
}

/* ---- The seeded scheduler ------------------------------------------------------ */

enum { RACERS = 6, STEPS = 5 };
typedef struct race_log {
  int order[RACERS * STEPS];
  int len;
} race_log_t;

typedef struct racer {
  race_log_t *log;
  int id;
} racer_t;

static int racer_task(void *arg) {
  racer_t *r = arg;
  for (int i = 0; i < STEPS; i++) {
    r->log->order[r->log->len++] = r->id;
    /* Nothing random here: any difference between seeds is the scheduler's. */
    if (i % 2)
      keel_yield();
    else
      keel_sleep_ms(i);
  }
  return 0;
}

static int race_body(void *arg) {
  race_log_t *log = arg;
  racer_t r[RACERS];
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  if (!sc)
    return -ENOMEM;
  for (int i = 0; i < RACERS; i++) {
    r[i] = (racer_t){log, i};
    keel_spawn(sc, racer_task, &r[i], NULL);
  }
  int rc = keel_scope_join(sc);
  keel_scope_close(sc);
  return rc;
}

/* The tests of lab mode itself run in the lab entry only. */
static void skip_unless_lab(void) {
  if (!kt_backend_selected(KEEL_BACKEND_LAB))
    skip();
}

static void test_same_seed_same_run(void **state) {
  (void)state;
  skip_unless_lab();
  race_log_t logs[20];
  uint64_t traces[20];
  int distinct = 0;
  for (int s = 0; s < 20; s++) {
    race_log_t again = {0};
    uint64_t trace_again = 0;
    logs[s] = (race_log_t){0};
    assert_int_equal(kt_run_lab((uint64_t)s + 1, race_body, &logs[s], &traces[s]), 0);
    assert_int_equal(kt_run_lab((uint64_t)s + 1, race_body, &again, &trace_again), 0);
    assert_int_equal(logs[s].len, RACERS * STEPS);
    assert_memory_equal(logs[s].order, again.order, sizeof again.order);
    assert_int_equal(traces[s], trace_again);
    assert_int_not_equal(traces[s], 0);
    bool seen = false;
    for (int p = 0; p < s; p++)
      seen |= memcmp(logs[p].order, logs[s].order, sizeof logs[s].order) == 0;
    distinct += !seen;
    for (int p = 0; p < s; p++) /* different interleavings, different traces */
      if (memcmp(logs[p].order, logs[s].order, sizeof logs[s].order) != 0)
        assert_int_not_equal(traces[p], traces[s]);
  }
  /* Six tasks over five steps have astronomically many interleavings. */
  assert_true(distinct >= 18);
}

static int seed_body(void *arg) {
  *(uint64_t *)arg = keel_lab_seed();
  return 0;
}

static void test_seed_sources(void **state) {
  (void)state;
  skip_unless_lab();
  uint64_t seen = 0;
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  setenv("KEEL_SEED", "12345", 1);
  assert_int_equal(keel_run(&cfg, seed_body, &seen), 0);
  assert_int_equal(seen, 12345);
  cfg.lab_seed = 99; /* the field wins over the environment */
  assert_int_equal(keel_run(&cfg, seed_body, &seen), 0);
  assert_int_equal(seen, 99);
  unsetenv("KEEL_SEED");
  cfg.lab_seed = 0;
  assert_int_equal(keel_run(&cfg, seed_body, &seen), 0);
  assert_int_equal(seen, 1);
  setenv("KEEL_BACKEND", "lab", 1); /* the environment picks lab mode too */
  cfg.backend = KEEL_BACKEND_AUTO;
  cfg.workers = 1;
  assert_int_equal(keel_run(&cfg, seed_body, &seen), 0);
  assert_int_equal(seen, 1);
  unsetenv("KEEL_BACKEND");
  cfg.backend = KEEL_BACKEND_LAB;
  cfg.workers = 2; /* one thread, one run per seed */
  assert_int_equal(keel_run(&cfg, seed_body, &seen), -EINVAL);
}

/* TCP runs on the lab network (tests/test_labnet.c): nobody listens here,
 * so the connect is refused at once, without touching the host. */
static int lab_net_body(void *arg) {
  (void)arg;
  keel_tcp_t *c = NULL;
  int64_t t0 = keel_now_ns();
  CHECK_EQ(keel_tcp_connect("127.0.0.1:9", &c), -ECONNREFUSED);
  CHECK_EQ(keel_now_ns(), t0);
  CHECK(c == NULL);
  return 0;
}

static void test_tcp_on_lab_network(void **state) {
  (void)state;
  kt_run_lab_body(lab_net_body, NULL, 1);
}

/* ---- Reports ------------------------------------------------------------------- */

static int failing_main(void *arg) {
  (void)arg;
  keel_sleep_ms(5);
  return -EIO;
}

static int child_failing_run(void) {
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  cfg.lab_seed = 77;
  return keel_run(&cfg, failing_main, NULL) == -EIO ? 0 : 1;
}

static void test_failure_prints_seed(void **state) {
  (void)state;
  skip_unless_lab();
  int status;
  char *err = kt_run_child(child_failing_run, 10, &status, NULL);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_non_null(strstr(err, "KEEL_SEED=77"));
  free(err);
}

static int stuck_reader(void *arg) {
  char c;
  return (int)keel_read(arg, &c, 1);
}

static int deadlock_main(void *arg) {
  (void)arg;
  keel_stream_t *a, *b;
  if (keel_lab_pipe(NULL, &a, &b) < 0)
    return 1;
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_spawn_opts_t o = {.name = "stuck-reader"};
  keel_spawn(sc, stuck_reader, a, &o);
  keel_scope_join(sc); /* never returns: nothing will write */
  return 0;
}

static int child_deadlock(void) {
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = KEEL_BACKEND_LAB;
  keel_run(&cfg, deadlock_main, NULL);
  return 1;
}

static void test_deadlock_reported(void **state) {
  (void)state;
  skip_unless_lab();
  int status;
  /* The report comes after one real second of stall; the alarm leaves a
   * loaded (and sanitized) machine time to start the runtime first. */
  char *err = kt_run_child(child_deadlock, 6, &status, NULL);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM);
  assert_non_null(strstr(err, "every task is blocked"));
  assert_non_null(strstr(err, "stuck-reader"));
  free(err);
}

/* ---- Pipes ----------------------------------------------------------------------- */

#define PIPE_BYTES (96 * 1024)

static unsigned char pattern_at(size_t i) { return (unsigned char)(i * 131 + (i >> 9)); }

static int pipe_writer(void *arg) {
  keel_stream_t *s = arg;
  unsigned char chunk[7000];
  for (size_t off = 0; off < PIPE_BYTES;) {
    size_t n = PIPE_BYTES - off < sizeof chunk ? PIPE_BYTES - off : sizeof chunk;
    for (size_t i = 0; i < n; i++)
      chunk[i] = pattern_at(off + i);
    CHECK_RC(keel_write_all(s, chunk, n, NULL));
    off += n;
  }
  CHECK_RC(keel_stream_shutdown(s, SHUT_WR));
  return 0;
}

/* Delays of up to a millisecond in lab mode; in real time, 20 us. */
static int pipe_transfer_body(void *arg) {
  keel_lab_faults_t f = *(const keel_lab_faults_t *)arg;
  if (!keel_lab_active())
    f.delay_max_ns = 20000;
  keel_stream_t *a, *b;
  CHECK_RC(keel_lab_pipe(&f, &a, &b));
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sc);
  CHECK_RC(keel_spawn(sc, pipe_writer, a, NULL));
  unsigned char buf[5000];
  size_t got = 0;
  for (;;) {
    ssize_t n = keel_read(b, buf, sizeof buf);
    CHECK(n >= 0);
    if (n == 0)
      break;
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != pattern_at(got + (size_t)i))
        KT_FAIL("byte %zu differs", got + (size_t)i);
    got += (size_t)n;
  }
  CHECK_EQ(got, PIPE_BYTES);
  CHECK_RC(keel_scope_join(sc));
  keel_scope_close(sc);
  CHECK_RC(keel_close(a));
  CHECK_RC(keel_close(b));
  return 0;
}

static void test_pipe_transfer_with_faults(void **state) {
  (void)state;
  keel_lab_faults_t f = {.capacity = 4096, .short_permille = 400, .delay_max_ns = KEEL_NS_PER_MS};
  kt_run_body(pipe_transfer_body, &f, 1);
}

static int parked_reader(void *arg) {
  char c;
  return (int)keel_read(arg, &c, 1);
}

static int delayed_writer(void *arg) { return (int)keel_write(arg, "w", 1); }

/* Starts fn(end) in a task of a new scope and lets it run until it parks. */
static keel_scope_t *park_task(keel_task_fn fn, keel_stream_t *end, keel_task_t **h) {
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_spawn_opts_t o = {.handle = h};
  if (!sc || keel_spawn(sc, fn, end, &o) < 0 || keel_yield() < 0)
    return NULL;
  return sc;
}

static int finish_task(keel_scope_t *sc, keel_task_t *h) {
  keel_scope_join(sc);
  int rc = keel_task_outcome(h).error;
  keel_scope_close(sc);
  return rc;
}

/* Closing both ends under parked tasks: they wake with -EBADF and the pair
 * is freed by the last one back (ASan checks the memory). */
static int pipe_close_parked_body(void *arg) {
  (void)arg;
  keel_stream_t *a, *b;
  keel_task_t *h;
  keel_scope_t *sc;
  char buf[4];
  /* A reader woken by the peer's close resumes after its own end closed. */
  CHECK_RC(keel_lab_pipe(NULL, &a, &b));
  CHECK(sc = park_task(parked_reader, b, &h));
  CHECK_RC(keel_close(a));
  CHECK_RC(keel_close(b));
  CHECK_EQ(finish_task(sc, h), -EBADF);
  /* A reader on an end closed by its own task. */
  CHECK_RC(keel_lab_pipe(NULL, &a, &b));
  CHECK(sc = park_task(parked_reader, b, &h));
  CHECK_RC(keel_close(b));
  CHECK_RC(keel_close(a));
  CHECK_EQ(finish_task(sc, h), -EBADF);
  /* A writer inside an injected delay. */
  keel_lab_faults_t f = {.delay_max_ns = 1000000000};
  CHECK_RC(keel_lab_pipe(&f, &a, &b));
  CHECK(sc = park_task(delayed_writer, a, &h));
  CHECK_RC(keel_close(a));
  CHECK_RC(keel_close(b));
  CHECK_EQ(finish_task(sc, h), -EBADF);
  /* A writer blocked on a full pipe. */
  f = (keel_lab_faults_t){.capacity = 1};
  CHECK_RC(keel_lab_pipe(&f, &a, &b));
  CHECK_EQ(keel_write(a, "x", 1), 1);
  CHECK(sc = park_task(delayed_writer, a, &h));
  CHECK_RC(keel_close(b));
  CHECK_RC(keel_close(a));
  CHECK_EQ(finish_task(sc, h), -EBADF);
  /* SHUT_RD: a parked reader and later reads see end of stream, the bytes
   * queued are dropped and the peer's writes fail. */
  CHECK_RC(keel_lab_pipe(NULL, &a, &b));
  CHECK(sc = park_task(parked_reader, b, &h));
  CHECK_RC(keel_stream_shutdown(b, SHUT_RD));
  CHECK_EQ(finish_task(sc, h), 0);
  CHECK_EQ(keel_read(b, buf, sizeof buf), 0);
  CHECK_EQ(keel_write(a, "x", 1), -EPIPE);
  CHECK_EQ(keel_write(b, "y", 1), 1); /* the other direction still works */
  CHECK_EQ(keel_read(a, buf, sizeof buf), 1);
  CHECK_RC(keel_close(a));
  CHECK_RC(keel_close(b));
  return 0;
}

static void test_pipe_close_parked(void **state) {
  (void)state;
  kt_run_body(pipe_close_parked_body, NULL, 1);
}

static int pipe_edges_body(void *arg) {
  (void)arg;
  keel_stream_t *a, *b;
  char buf[16];
  /* End of stream after the bytes; writes after the peer closed: -EPIPE. */
  CHECK_RC(keel_lab_pipe(NULL, &a, &b));
  CHECK_EQ(keel_write(a, "hey", 3), 3);
  CHECK_RC(keel_stream_shutdown(a, SHUT_WR));
  CHECK_EQ(keel_write(a, "x", 1), -EPIPE);
  CHECK_EQ(keel_read(b, buf, sizeof buf), 3);
  CHECK_EQ(keel_read(b, buf, sizeof buf), 0);
  CHECK_RC(keel_close(b));
  CHECK_EQ(keel_read(a, buf, sizeof buf), 0);
  CHECK_RC(keel_close(a));
  CHECK_RC(keel_lab_pipe(NULL, &a, &b));
  CHECK_RC(keel_close(b));
  CHECK_EQ(keel_write(a, "x", 1), -EPIPE);
  CHECK_RC(keel_close(a));
  /* A read cancelled while parked takes nothing: the bytes wait for the next. */
  CHECK_RC(keel_lab_pipe(NULL, &a, &b));
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_task_t *h = NULL;
  keel_spawn_opts_t o = {.handle = &h};
  CHECK_RC(keel_spawn(sc, parked_reader, b, &o));
  CHECK_RC(keel_yield());
  keel_scope_cancel(sc, KEEL_CANCEL_USER);
  keel_scope_join(sc);
  CHECK_EQ(keel_task_outcome(h).error, -ECANCELED);
  keel_scope_close(sc);
  CHECK_EQ(keel_write(a, "z", 1), 1);
  CHECK_EQ(keel_read(b, buf, 1), 1);
  CHECK_EQ(buf[0], 'z');
  /* A read deadline, exactly. */
  int64_t t0 = keel_now_ns();
  int64_t prev = keel_task_set_deadline(t0 + 12345);
  CHECK_EQ(keel_read(b, buf, 1), -ETIMEDOUT);
  if (keel_lab_active())
    CHECK_EQ(keel_now_ns(), t0 + 12345);
  keel_task_set_deadline(prev);
  /* A reset fails every later call on both ends, and wakes parked ones. */
  (void)keel_scope_open(NULL, &sc);
  o.handle = &h;
  CHECK_RC(keel_spawn(sc, parked_reader, b, &o));
  CHECK_RC(keel_yield());
  CHECK_RC(keel_lab_pipe_reset(a));
  CHECK_EQ(keel_scope_join(sc), -ECONNRESET);
  keel_scope_close(sc);
  CHECK_EQ(keel_write(a, "x", 1), -ECONNRESET);
  CHECK_EQ(keel_read(b, buf, 1), -ECONNRESET);
  CHECK_RC(keel_close(a));
  CHECK_RC(keel_close(b));
  /* An injected reset. */
  keel_lab_faults_t f = {.reset_permille = 1000};
  CHECK_RC(keel_lab_pipe(&f, &a, &b));
  CHECK_EQ(keel_write(a, "x", 1), -ECONNRESET);
  CHECK_RC(keel_close(a));
  CHECK_RC(keel_close(b));
  f = (keel_lab_faults_t){.short_permille = 1001};
  CHECK_EQ(keel_lab_pipe(&f, &a, &b), -EINVAL);
  return 0;
}

static void test_pipe_edges(void **state) {
  (void)state;
  kt_run_body(pipe_edges_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_virtual_clock),      cmocka_unit_test(test_sleeps_exact),
      cmocka_unit_test(test_deadlines_exact),    cmocka_unit_test(test_shields_exact),
      cmocka_unit_test(test_same_seed_same_run), cmocka_unit_test(test_seed_sources),
      cmocka_unit_test(test_tcp_on_lab_network), cmocka_unit_test(test_failure_prints_seed),
      cmocka_unit_test(test_deadlock_reported),  cmocka_unit_test(test_pipe_transfer_with_faults),
      cmocka_unit_test(test_pipe_edges),         cmocka_unit_test(test_pipe_close_parked),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
