/* Guarded test bodies for keel's I/O tests (not installed): checks inside
 * tasks, and a guard scope every body runs in. Define KT_GUARD_MS (the
 * longest a body may take) before including. */
#ifndef KT_GUARD_H
#define KT_GUARD_H

#include <stdatomic.h>

#include "keel-test.h"

#ifndef KT_GUARD_MS
#define KT_GUARD_MS 30000
#endif

/* Checks inside tasks: cmocka's asserts longjmp, which must not cross fiber
 * stacks. A failing check prints both sides, cancels the guard scope every
 * test body runs in (so nothing stays blocked) and returns an error that
 * keel_run hands back to the cmocka test. */
static keel_scope_t *kt_guard_scope;
static atomic_int kt_failed;

static inline void kt_abort(void) {
  atomic_store(&kt_failed, 1);
  if (kt_guard_scope)
    keel_scope_cancel(kt_guard_scope, KEEL_CANCEL_USER);
}

#define KT_FAIL(...)                                \
  do {                                              \
    fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__);                   \
    fputc('\n', stderr);                            \
    kt_abort();                                     \
    return -EPROTO;                                 \
  } while (0)
#define CHECK(cond)                       \
  do {                                    \
    if (!(cond))                          \
      KT_FAIL("check failed: %s", #cond); \
  } while (0)
#define CHECK_EQ(a, b)                                          \
  do {                                                          \
    long long a_ = (long long)(a), b_ = (long long)(b);         \
    if (a_ != b_)                                               \
      KT_FAIL("%s == %s failed: %lld != %lld", #a, #b, a_, b_); \
  } while (0)
#define CHECK_RC(expr)                                                    \
  do {                                                                    \
    long long r_ = (long long)(expr);                                     \
    if (r_ < 0)                                                           \
      KT_FAIL("%s failed: %lld (%s)", #expr, r_, keel_strerror((int)r_)); \
  } while (0)

typedef struct kt_body {
  keel_task_fn fn;
  void *arg;
} kt_body_t;

/* Main task: runs the body in the guard scope, so kt_abort reaches every
 * scope the body opens. */
static inline int kt_guard_main(void *arg) {
  kt_body_t *body = arg;
  keel_scope_opts_t o = {.deadline_ns = keel_now_ns() + KT_GUARD_MS * KEEL_NS_PER_MS,
                         .name = "guard"};
  atomic_store(&kt_failed, 0);
  int orc = keel_scope_open(&o, &kt_guard_scope);
  if (orc < 0)
    return orc;
  int rc = keel_spawn(kt_guard_scope, body->fn, body->arg, NULL);
  int join_rc = keel_scope_join(kt_guard_scope);
  keel_scope_close(kt_guard_scope);
  kt_guard_scope = NULL;
  if (rc < 0)
    return rc;
  return atomic_load(&kt_failed) ? -EPROTO : join_rc;
}

static inline int kt_run_guarded(keel_backend_t backend, int workers, keel_task_fn fn, void *arg) {
  kt_body_t body = {fn, arg};
  return kt_run(backend, workers, kt_guard_main, &body);
}

/* The same in lab mode with one seed; the run's trace hash goes to *trace
 * if not NULL, so that two runs of a seed can be compared. */
static inline int kt_run_guarded_lab_traced(uint64_t seed, keel_task_fn fn, void *arg,
                                            uint64_t *trace) {
  kt_body_t body = {fn, arg};
  return kt_run_lab(seed, kt_guard_main, &body, trace);
}

static inline int kt_run_guarded_lab(uint64_t seed, keel_task_fn fn, void *arg) {
  return kt_run_guarded_lab_traced(seed, fn, arg, NULL);
}

/* Spawns fn(arg) on worker (KEEL_WORKER_CURRENT or KEEL_WORKER(i)) in a
 * scope of its own, so that it can be cancelled alone. NULL on failure. */
static inline keel_scope_t *kt_spawn_in_scope(keel_task_fn fn, void *arg, int worker) {
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  keel_spawn_opts_t o = {.name = "op", .on_worker = worker};
  if (s && keel_spawn(s, fn, arg, &o) < 0) {
    keel_scope_close(s);
    return NULL;
  }
  return s;
}

/* ---- Running a body on the selected backends ----------------------------- */

#ifndef KT_BODY_LAB_SEEDS
#define KT_BODY_LAB_SEEDS 16
#endif

/* Where a body can run: a real backend, lab mode, or both. */
enum { KT_ON_REAL = 1, KT_ON_LAB = 2 };

/* Runs the guarded body fn(arg) on the backends that KT_BACKEND selects
 * and `where` allows: each real one with `workers` workers, and lab mode
 * once per seed from first_seed to last_seed. The cmocka test fails at the
 * first failing run; it is skipped (cmocka's skip) when none was run. */
static inline void kt_run_where(unsigned where, keel_task_fn fn, void *arg, int workers,
                                uint64_t first_seed, uint64_t last_seed) {
  int runs = 0;
  if (where & KT_ON_REAL) {
    for (keel_backend_t b = kt_backend_next(KT_BACKEND_NONE, false); b != KT_BACKEND_NONE;
         b = kt_backend_next(b, false)) {
      int rc = kt_run_guarded(b, workers, fn, arg);
      if (rc != 0)
        fail_msg("%s, %d worker(s): %d (%s)", kt_backend_name(b), workers, rc, keel_strerror(rc));
      runs++;
    }
  }
  if ((where & KT_ON_LAB) && kt_backend_selected(KEEL_BACKEND_LAB)) {
    for (uint64_t seed = first_seed; seed <= last_seed; seed++) {
      int rc = kt_run_guarded_lab(seed, fn, arg);
      if (rc != 0)
        fail_msg("lab mode, seed %llu: %d (%s)", (unsigned long long)seed, rc, keel_strerror(rc));
      runs++;
    }
  }
  if (runs == 0) {
    fprintf(stderr, "# not for the backends selected here (%s%s%s)\n",
            where & KT_ON_REAL ? "real backends" : "",
            where == (KT_ON_REAL | KT_ON_LAB) ? ", " : "", where & KT_ON_LAB ? "lab mode" : "");
    skip();
  }
}

/* The usual case: the selected real backend with `workers` workers and,
 * for one worker, lab mode over seeds 1..KT_BODY_LAB_SEEDS, whose seeded
 * scheduler tries other interleavings of the same tasks. */
static inline void kt_run_body(keel_task_fn fn, void *arg, int workers) {
  kt_run_where(workers == 1 ? KT_ON_REAL | KT_ON_LAB : KT_ON_REAL, fn, arg, workers, 1,
               KT_BODY_LAB_SEEDS);
}

/* Real backends only: bodies with real threads, which lab mode's virtual
 * clock does not wait for (it would reach the guard's deadline first). */
static inline void kt_run_real_body(keel_task_fn fn, void *arg, int workers) {
  kt_run_where(KT_ON_REAL, fn, arg, workers, 1, 0);
}

/* Lab mode only, one seed: bodies that check exact virtual times. */
static inline void kt_run_lab_body(keel_task_fn fn, void *arg, uint64_t seed) {
  kt_run_where(KT_ON_LAB, fn, arg, 1, seed, seed);
}

/* ---- Time on a loaded machine --------------------------------------------
 * Real time runs on with other work on every core (and 3-10x slower code
 * under sanitizers): a real-time upper bound allows kt_late_ns() on top of
 * what it expects. In lab mode time is exact and stands still while tasks
 * run, so the same check is exact there. */
#define KT_LATE_NS (2 * KEEL_NS_PER_SEC)
static inline int64_t kt_late_ns(void) { return keel_lab_active() ? 0 : KT_LATE_NS; }

/* True while less than span_ns has passed since t0 (keel_now_ns): a check
 * that holds only if no more time passed than that is made only then. In
 * lab mode only sleeps and waits move the clock, so there it is exact. */
static inline bool kt_within(int64_t t0, int64_t span_ns) { return keel_now_ns() - t0 < span_ns; }

#define CHECK_BETWEEN(v, lo, hi)                                                              \
  do {                                                                                        \
    long long v_ = (long long)(v), lo_ = (long long)(lo), hi_ = (long long)(hi);              \
    if (v_ < lo_ || v_ > hi_)                                                                 \
      KT_FAIL("%s in [%s, %s] failed: %lld not in [%lld, %lld]", #v, #lo, #hi, v_, lo_, hi_); \
  } while (0)

/* Listens on an ephemeral loopback port; the address goes to addr as text
 * ("127.0.0.1:PORT") for keel_tcp_connect. */
static inline int kt_listen_loopback(keel_listener_t **out, char *addr, size_t len) {
  keel_listen_opts_t o = {0};
  CHECK_RC(keel_tcp_listen("127.0.0.1:0", &o, out));
  keel_addr_t a;
  CHECK_RC(keel_listener_addr(*out, &a));
  keel_addr_format(&a, addr, len);
  return 0;
}

#endif
