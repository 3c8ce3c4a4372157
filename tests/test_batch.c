/* Batch queue: an fsync-per-batch processor doing the work of 64
 * submitters on two workers in four full batches, each submitter getting
 * its own result; a batch that does not fill is processed after the batch
 * timeout; close drains queued items without waiting for the batch timeout;
 * back-pressure at capacity; a submitter cancelled (or timed out) while
 * waiting for room or while queued is removed, one whose item was taken
 * waits for its result; bad options. Every body frees its queue (joining
 * the processor thread) even when a check fails part-way. */
#define KT_GUARD_MS 20000
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "kt-guard.h"

static int run2(keel_backend_t backend, keel_task_fn fn, void *arg) {
  return kt_run_guarded(backend, 2, fn, arg);
}

/* A submitter task: submits one item, records the outcome. */
struct sub {
  keel_batch_t *q;
  const void *item;
  int64_t deadline_ms; /* 0: none */
  int rc;
  int64_t result;
  int64_t waited_ns; /* in keel_batch_submit */
  atomic_bool started, done;
};

static int submit_task(void *arg) {
  struct sub *s = arg;
  if (s->deadline_ms)
    keel_task_set_deadline(keel_now_ns() + s->deadline_ms * KEEL_NS_PER_MS);
  atomic_store(&s->started, true);
  int64_t t0 = kt_mono_ns();
  s->rc = keel_batch_submit(s->q, s->item, &s->result);
  s->waited_ns = kt_mono_ns() - t0;
  atomic_store(&s->done, true);
  return 0;
}

static int spawn_sub(keel_scope_t *scope, struct sub *s, int worker) {
  keel_spawn_opts_t o = {.name = "submitter", .on_worker = KEEL_WORKER(worker)};
  return keel_spawn(scope, submit_task, s, &o);
}

/* Sleeps (1 ms steps, at most ~5 s) until the queue holds n items: the
 * submitters on the other worker get there when its thread runs, which on
 * a loaded machine can be many milliseconds later. */
static int await_pending(keel_batch_t *q, size_t n) {
  for (int i = 0; i < 5000 && keel_batch_pending(q) < n; i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_EQ(keel_batch_pending(q), n);
  return 0;
}

/* Runs steps(q, arg) as a task of its own, then frees q (joining the
 * processor thread) whether the steps passed or failed part-way. A failed
 * check has cancelled the guard scope, so queued submitters leave, and
 * opened the test's gate (kt_failed), so taken ones get their results; the
 * steps' open scopes are joined when their task returns. So no submitter
 * is left when keel_batch_close runs, and no thread outlives the test. */
struct steps {
  int (*fn)(keel_batch_t *q, void *arg);
  keel_batch_t *q;
  void *arg;
};

static int steps_task(void *arg) {
  struct steps *st = arg;
  return st->fn(st->q, st->arg);
}

static int run_steps(keel_batch_t *q, int (*fn)(keel_batch_t *q, void *arg), void *arg) {
  struct steps st = {fn, q, arg};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  int rc = s ? keel_spawn(s, steps_task, &st, NULL) : -ENOMEM;
  int join_rc = s ? keel_scope_join(s) : 0;
  if (s)
    keel_scope_close(s);
  keel_batch_close(q);
  return rc < 0 ? rc : join_rc;
}

/* ---- fsync per batch ------------------------------------------------------------ */

#define WRITERS 64
#define LOG_BATCH 16
#define REC_SIZE 16

struct log_file {
  int fd;
  int64_t offset; /* processor thread only */
  int fsyncs;     /* processor thread only; read after close */
};

/* Appends the whole batch with one write and makes it durable with one
 * fsync: each submitter's result is its record's offset. */
static void log_process(void *ctx, keel_batch_entry_t *e, size_t n) {
  struct log_file *lf = ctx;
  struct iovec iov[LOG_BATCH];
  for (size_t i = 0; i < n; i++) {
    iov[i].iov_base = e[i].item;
    iov[i].iov_len = REC_SIZE;
    e[i].result = lf->offset + (int64_t)(i * REC_SIZE);
  }
  ssize_t w = pwritev(lf->fd, iov, (int)n, lf->offset);
  if (w != (ssize_t)(n * REC_SIZE) || fsync(lf->fd) != 0) {
    for (size_t i = 0; i < n; i++)
      e[i].result = -EIO;
    return;
  }
  lf->offset += w;
  lf->fsyncs++;
}

/* 64 submitters, batches of 16 and a batch timeout longer than the test:
 * the processor waits for each batch to fill, so the 64 records take
 * exactly four writes and fsyncs however the submitters' workers are
 * scheduled. (test_partial_batch_after_timeout covers the timeout.) */
static int fsync_steps(keel_batch_t *q, void *arg) {
  struct log_file *lf = arg;
  static struct sub subs[WRITERS];
  static char recs[WRITERS][REC_SIZE];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < WRITERS; i++) {
    snprintf(recs[i], REC_SIZE, "record %02d", i);
    recs[i][REC_SIZE - 1] = '\n';
    subs[i] = (struct sub){.q = q, .item = recs[i]};
    CHECK_RC(spawn_sub(s, &subs[i], i % 2));
  }
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  CHECK_EQ(keel_batch_shutdown(q), 0);
  /* each submitter got its own record's offset; the file holds them all */
  struct stat st;
  CHECK_EQ(fstat(lf->fd, &st), 0);
  CHECK_EQ(st.st_size, WRITERS * REC_SIZE);
  unsigned char used[WRITERS] = {0};
  for (int i = 0; i < WRITERS; i++) {
    CHECK_EQ(subs[i].rc, 0);
    CHECK(subs[i].result >= 0 && subs[i].result % REC_SIZE == 0);
    CHECK(subs[i].result < WRITERS * REC_SIZE);
    CHECK_EQ(used[subs[i].result / REC_SIZE]++, 0);
    char got[REC_SIZE];
    CHECK_EQ(pread(lf->fd, got, REC_SIZE, subs[i].result), REC_SIZE);
    CHECK(memcmp(got, recs[i], REC_SIZE) == 0);
  }
  fprintf(stderr, "# %d submitters, %d fsyncs\n", WRITERS, lf->fsyncs);
  CHECK_EQ((uint64_t)lf->fsyncs, keel_batch_batches(q));
  CHECK_EQ(lf->fsyncs, WRITERS / LOG_BATCH);
  return 0;
}

static int fsync_body(void *arg) {
  (void)arg;
  char path[] = "/tmp/keel-batch-XXXXXX";
  struct log_file lf = {.fd = mkstemp(path)};
  CHECK(lf.fd >= 0);
  unlink(path);
  keel_batch_opts_t o = {.item_size = REC_SIZE,
                         .max_batch = LOG_BATCH,
                         .batch_timeout_ns = 3600 * KEEL_NS_PER_SEC,
                         .capacity = WRITERS,
                         .process = log_process,
                         .ctx = &lf};
  keel_batch_t *q = NULL;
  int rc = keel_batch_open(&o, &q);
  if (rc == 0)
    rc = run_steps(q, fsync_steps, &lf);
  close(lf.fd);
  return rc;
}

static void test_fsync_per_batch(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) { assert_int_equal(run2(b, fsync_body, NULL), 0); }
}

/* ---- A processor the test holds --------------------------------------------------- */

#define IDS 16

/* Items are ints; process records each id it sees and the batch sizes,
 * and waits while the gate is shut (at most 5 s, and not at all once a
 * check has failed). */
struct gated {
  atomic_bool gate_open;
  atomic_int in_process; /* process calls entered */
  atomic_int seen[IDS];
  atomic_int batch_size[IDS];
};

static void gated_process(void *ctx, keel_batch_entry_t *e, size_t n) {
  struct gated *g = ctx;
  int call = atomic_fetch_add(&g->in_process, 1);
  if (call < IDS)
    atomic_store(&g->batch_size[call], (int)n);
  for (int i = 0; i < 5000 && !atomic_load(&g->gate_open) && !atomic_load(&kt_failed); i++)
    usleep(1000);
  for (size_t i = 0; i < n; i++) {
    int id = *(int *)e[i].item;
    atomic_fetch_add(&g->seen[id], 1);
    e[i].result = id * 10 + 1;
  }
}

static keel_batch_t *open_gated(struct gated *g, size_t max_batch, size_t capacity,
                                int64_t timeout_ns) {
  keel_batch_opts_t o = {.item_size = sizeof(int),
                         .max_batch = max_batch,
                         .batch_timeout_ns = timeout_ns,
                         .capacity = capacity,
                         .process = gated_process,
                         .ctx = g};
  keel_batch_t *q = NULL;
  return keel_batch_open(&o, &q) == 0 ? q : NULL;
}

static int ids[IDS] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* Waits (polling) until the processor has entered process n times. */
static int await_process(struct gated *g, int n) {
  for (int i = 0; i < 2000 && atomic_load(&g->in_process) < n; i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_EQ(atomic_load(&g->in_process), n);
  return 0;
}

/* ---- A batch that does not fill ------------------------------------------------------ */

#define PARTIAL 3
#define PARTIAL_TIMEOUT_MS 50

/* Three submitters and batches of 16: the processor waits the batch
 * timeout for more items, then processes what came. Each batch's first
 * submitter waited at least the timeout (its item was queued before the
 * processor saw it); how much longer depends on the machine's load, so
 * only that lower bound is checked: a processor that never stopped
 * waiting would hold the submitters until the guard ends the test. */
static int partial_steps(keel_batch_t *q, void *arg) {
  struct gated *g = arg;
  static struct sub subs[PARTIAL];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < PARTIAL; i++) {
    subs[i] = (struct sub){.q = q, .item = &ids[i]};
    CHECK_RC(spawn_sub(s, &subs[i], i % 2));
  }
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  int64_t longest_ns = 0;
  for (int i = 0; i < PARTIAL; i++) {
    CHECK_EQ(subs[i].rc, 0);
    CHECK_EQ(subs[i].result, i * 10 + 1);
    CHECK_EQ(atomic_load(&g->seen[i]), 1);
    if (subs[i].waited_ns > longest_ns)
      longest_ns = subs[i].waited_ns;
  }
  int batches = atomic_load(&g->in_process), items = 0;
  CHECK(batches >= 1 && batches <= PARTIAL);
  for (int i = 0; i < batches; i++)
    items += atomic_load(&g->batch_size[i]);
  CHECK_EQ(items, PARTIAL);
  CHECK_EQ(keel_batch_batches(q), batches);
  if (longest_ns < PARTIAL_TIMEOUT_MS * KEEL_NS_PER_MS)
    KT_FAIL("the longest submit took %.3f ms, under the %d ms batch timeout",
            (double)longest_ns / 1e6, PARTIAL_TIMEOUT_MS);
  CHECK_EQ(keel_batch_shutdown(q), 0);
  return 0;
}

static int partial_body(void *arg) {
  (void)arg;
  static struct gated g;
  memset(&g, 0, sizeof g);
  atomic_store(&g.gate_open, true);
  keel_batch_t *q = open_gated(&g, 16, 16, PARTIAL_TIMEOUT_MS * KEEL_NS_PER_MS);
  CHECK(q);
  return run_steps(q, partial_steps, &g);
}

static void test_partial_batch_after_timeout(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) { assert_int_equal(run2(b, partial_body, NULL), 0); }
}

/* ---- Drain on close ------------------------------------------------------------------ */

#define DRAINED 10

static int drain_steps(keel_batch_t *q, void *arg) {
  struct gated *g = arg;
  static struct sub subs[DRAINED];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < DRAINED; i++) {
    subs[i] = (struct sub){.q = q, .item = &ids[i]};
    CHECK_RC(spawn_sub(s, &subs[i], i % 2));
  }
  CHECK_RC(await_pending(q, DRAINED));
  CHECK_EQ(atomic_load(&g->in_process), 0);
  int64_t t0 = kt_mono_ns();
  CHECK_EQ(keel_batch_shutdown(q), 0); /* returns once drained */
  /* a close that did not wake the processor would wait for ever: allow
   * for a loaded machine */
  CHECK((kt_mono_ns() - t0) / KEEL_NS_PER_MS < 5000);
  CHECK_EQ(keel_batch_batches(q), 1);
  /* the results are on their way to the submitters */
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  for (int i = 0; i < DRAINED; i++) {
    CHECK_EQ(subs[i].rc, 0);
    CHECK_EQ(subs[i].result, i * 10 + 1);
    CHECK_EQ(atomic_load(&g->seen[i]), 1);
  }
  int64_t r = -1;
  CHECK_EQ(keel_batch_submit(q, &ids[0], &r), -EPIPE);
  CHECK_EQ(r, -1);
  CHECK_EQ(keel_batch_shutdown(q), 0); /* twice is fine */
  return 0;
}

static int drain_body(void *arg) {
  (void)arg;
  static struct gated g;
  memset(&g, 0, sizeof g);
  atomic_store(&g.gate_open, true);
  /* a batch would wait for ever for 64 items (the longest timeout there
   * is: no overflow): only close ends the wait */
  keel_batch_t *q = open_gated(&g, 64, 64, INT64_MAX);
  CHECK(q);
  return run_steps(q, drain_steps, &g);
}

static void test_close_drains(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) { assert_int_equal(run2(b, drain_body, NULL), 0); }
}

/* ---- Back-pressure ------------------------------------------------------------------------ */

#define BP_CAP 4
#define BP_SUBS 8

static int backpressure_steps(keel_batch_t *q, void *arg) {
  struct gated *g = arg;
  static struct sub subs[BP_SUBS];
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  /* the first item is taken into a batch the gate holds */
  subs[0] = (struct sub){.q = q, .item = &ids[0]};
  CHECK_RC(spawn_sub(s, &subs[0], 1));
  CHECK_RC(await_process(g, 1));
  for (int i = 1; i < BP_SUBS - 1; i++) {
    subs[i] = (struct sub){.q = q, .item = &ids[i]};
    CHECK_RC(spawn_sub(s, &subs[i], i % 2));
  }
  /* the last waiter for room is cancelled */
  keel_scope_t *cs = NULL;
  (void)keel_scope_open(NULL, &cs);
  CHECK(cs);
  subs[BP_SUBS - 1] = (struct sub){.q = q, .item = &ids[BP_SUBS - 1]};
  CHECK_RC(spawn_sub(cs, &subs[BP_SUBS - 1], 1));
  CHECK_RC(await_pending(q, BP_CAP)); /* full: the other submitters wait */
  for (int i = 0; i < 5000 && !atomic_load(&subs[BP_SUBS - 1].started); i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_sleep_ms(20)); /* let it park (it ends cancelled either way) */
  CHECK_EQ(keel_batch_pending(q), BP_CAP);
  for (int i = 0; i < BP_SUBS; i++)
    CHECK(!atomic_load(&subs[i].done));
  keel_scope_cancel(cs, KEEL_CANCEL_USER);
  keel_scope_join(cs);
  keel_scope_close(cs);
  CHECK_EQ(subs[BP_SUBS - 1].rc, -ECANCELED);
  CHECK_EQ(keel_batch_pending(q), BP_CAP);
  atomic_store(&g->gate_open, true);
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  for (int i = 0; i < BP_SUBS - 1; i++) {
    CHECK_EQ(subs[i].rc, 0);
    CHECK_EQ(subs[i].result, i * 10 + 1);
    CHECK_EQ(atomic_load(&g->seen[i]), 1);
  }
  CHECK_EQ(atomic_load(&g->seen[BP_SUBS - 1]), 0); /* never submitted */
  CHECK_EQ(atomic_load(&g->batch_size[0]), 1);
  for (int i = 0; i < atomic_load(&g->in_process) && i < IDS; i++)
    CHECK(atomic_load(&g->batch_size[i]) <= BP_CAP);
  CHECK_EQ(keel_batch_shutdown(q), 0);
  return 0;
}

static int backpressure_body(void *arg) {
  (void)arg;
  static struct gated g;
  memset(&g, 0, sizeof g);
  keel_batch_t *q = open_gated(&g, BP_CAP, BP_CAP, 0);
  CHECK(q);
  return run_steps(q, backpressure_steps, &g);
}

static void test_back_pressure(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) { assert_int_equal(run2(b, backpressure_body, NULL), 0); }
}

/* ---- Cancellation while queued, and after being taken ---------------------------------- */

/* A gate-held batch holds a's item; b, c and d queue behind it; queued c
 * is cancelled and queued e times out; the gate opens. */
static int cancel_steps(keel_batch_t *q, void *arg) {
  struct gated *g = arg;
  static struct sub a, b, c, d, e;
  keel_scope_t *sa = NULL;
  (void)keel_scope_open(NULL, &sa);
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  CHECK(sa && s && sc);
  a = (struct sub){.q = q, .item = &ids[0]};
  CHECK_RC(spawn_sub(sa, &a, 1));
  CHECK_RC(await_process(g, 1)); /* a's item is taken, the gate holds it */
  b = (struct sub){.q = q, .item = &ids[1]};
  c = (struct sub){.q = q, .item = &ids[2]};
  d = (struct sub){.q = q, .item = &ids[3]};
  e = (struct sub){.q = q, .item = &ids[4], .deadline_ms = 30};
  CHECK_RC(spawn_sub(s, &b, 0));
  CHECK_RC(spawn_sub(sc, &c, 1));
  CHECK_RC(spawn_sub(s, &d, 1));
  CHECK_RC(await_pending(q, 4));
  /* queued c is cancelled: it returns at once, where a taken item's
   * submitter would wait for the gate (5 s) */
  int64_t t0 = kt_mono_ns();
  keel_scope_cancel(sc, KEEL_CANCEL_USER);
  keel_scope_join(sc);
  keel_scope_close(sc);
  CHECK_EQ(c.rc, -ECANCELED);
  CHECK((kt_mono_ns() - t0) / KEEL_NS_PER_MS < 2000);
  /* queued e's deadline (30 ms from its start) passes */
  CHECK_RC(spawn_sub(s, &e, 0));
  for (int i = 0; i < 5000 && !atomic_load(&e.done); i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_EQ(e.rc, -ETIMEDOUT);
  /* a was taken: cancelling it does not end its wait before its result */
  keel_scope_cancel(sa, KEEL_CANCEL_USER);
  CHECK_RC(keel_sleep_ms(20));
  CHECK(!atomic_load(&a.done));
  atomic_store(&g->gate_open, true);
  keel_scope_join(sa);
  keel_scope_close(sa);
  CHECK_EQ(a.rc, 0);
  CHECK_EQ(a.result, 1);
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  CHECK_EQ(b.rc, 0);
  CHECK_EQ(b.result, 11);
  CHECK_EQ(d.rc, 0);
  CHECK_EQ(d.result, 31);
  /* removed items never reach the processor; the rest once each */
  CHECK_EQ(atomic_load(&g->seen[2]), 0);
  CHECK_EQ(atomic_load(&g->seen[4]), 0);
  CHECK_EQ(atomic_load(&g->seen[0]), 1);
  CHECK_EQ(atomic_load(&g->seen[1]), 1);
  CHECK_EQ(atomic_load(&g->seen[3]), 1);
  CHECK_EQ(atomic_load(&g->batch_size[1]), 2); /* b and d */
  CHECK_EQ(keel_batch_shutdown(q), 0);
  CHECK_EQ(keel_batch_pending(q), 0);
  return 0;
}

static int cancel_body(void *arg) {
  (void)arg;
  static struct gated g;
  memset(&g, 0, sizeof g);
  keel_batch_t *q = open_gated(&g, 8, 8, 0);
  CHECK(q);
  return run_steps(q, cancel_steps, &g);
}

static void test_cancel_queued_removes_item(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) { assert_int_equal(run2(b, cancel_body, NULL), 0); }
}

/* ---- Options and misuse ------------------------------------------------------------------------
 */

static void noop_process(void *ctx, keel_batch_entry_t *e, size_t n) {
  (void)ctx;
  (void)e;
  (void)n;
}

static void test_open_rejects_bad_options(void **state) {
  (void)state;
  keel_batch_t *q = (keel_batch_t *)1;
  keel_batch_opts_t ok = {.item_size = 4, .max_batch = 4, .capacity = 4, .process = noop_process};
  keel_batch_opts_t o = ok;
  o.item_size = 0;
  assert_int_equal(keel_batch_open(&o, &q), -EINVAL);
  assert_null(q);
  o = ok;
  o.max_batch = 0;
  assert_int_equal(keel_batch_open(&o, &q), -EINVAL);
  o = ok;
  o.capacity = 3; /* below max_batch */
  assert_int_equal(keel_batch_open(&o, &q), -EINVAL);
  o = ok;
  o.process = NULL;
  assert_int_equal(keel_batch_open(&o, &q), -EINVAL);
  o = ok;
  o.batch_timeout_ns = -1;
  assert_int_equal(keel_batch_open(&o, &q), -EINVAL);
  o = ok;
  o.item_size = SIZE_MAX / 2;
  assert_int_equal(keel_batch_open(&o, &q), -EINVAL);
  assert_int_equal(keel_batch_open(NULL, &q), -EINVAL);
  /* outside a task: submit refuses, close does not wait, free joins */
  assert_int_equal(keel_batch_open(&ok, &q), 0);
  int v = 1;
  assert_int_equal(keel_batch_submit(q, &v, NULL), -EINVAL);
  assert_int_equal(keel_batch_shutdown(q), 0);
  keel_batch_close(q);
  assert_int_equal(keel_batch_open(&ok, &q), 0);
  keel_batch_close(q); /* free closes an open queue */
  keel_batch_close(NULL);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fsync_per_batch),
      cmocka_unit_test(test_partial_batch_after_timeout),
      cmocka_unit_test(test_close_drains),
      cmocka_unit_test(test_back_pressure),
      cmocka_unit_test(test_cancel_queued_removes_item),
      cmocka_unit_test(test_open_rejects_bad_options),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
