/* keel core: runtime, tasks, scopes, cancellation, deadlines, time. */
#ifndef KEEL_CORE_H
#define KEEL_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_runtime keel_runtime_t;
typedef struct keel_task keel_task_t;
typedef struct keel_scope keel_scope_t;

/* A task body: returns 0 (or any value >= 0) on success, or a negative
 * errno. */
typedef int (*keel_task_fn)(void *arg);

/* ---- Backends -------------------------------------------------------- */

typedef enum keel_backend {
  KEEL_BACKEND_AUTO = 0, /* io_uring, falling back to epoll */
  KEEL_BACKEND_URING,    /* io_uring or fail */
  KEEL_BACKEND_EPOLL,    /* epoll */
  KEEL_BACKEND_LAB,      /* lab mode: virtual clock, seeded scheduler (keel/lab.h) */
} keel_backend_t;

/* ---- Runtime ---------------------------------------------------------- */

typedef struct keel_config {
  int workers;               /* 0: number of CPUs */
  keel_backend_t backend;    /* AUTO: also honours KEEL_BACKEND=uring|epoll|auto */
  size_t stack_size;         /* default task stack, 0: 64 KiB */
  int64_t drain_timeout_ms;  /* shutdown drain deadline, 0: 5000 */
  bool handle_signals;       /* SIGINT/SIGTERM cancel the root scope (reason shutdown) */
  bool dump_on_sigusr1;      /* SIGUSR1 logs the task dump (keel_dump_tasks) */
  unsigned uring_entries;    /* io_uring SQ size per worker, 0: 1024 */
  const char *main_name;     /* name of the main task, NULL: "main" */
  unsigned blocking_threads; /* blocking pool threads (keel/blocking.h), 0: default */
  uint64_t lab_seed;         /* lab mode: the seed; 0: KEEL_SEED from the environment, else 1 */
  uint64_t *lab_trace;       /* lab mode: if set, receives the trace hash when keel_run returns */
  /* Process-wide effects, each on by default (see keel_run): */
  bool no_sigpipe_ignore;      /* leave SIGPIPE's disposition alone */
  bool no_stack_guard_handler; /* install no SIGSEGV handler for stack overflows */
  bool no_drain_exit;          /* when the drain deadline passes, log and keep waiting */
} keel_config_t;

/* Fills cfg with the defaults a zeroed keel_config_t (or a NULL pointer)
 * stands for. */
void keel_config_init(keel_config_t *cfg);

/* Starts the runtime, runs main_fn(arg) as a task in the root scope on
 * worker 0 (the calling thread) and returns when the root scope is
 * quiescent: every task on every worker has finished.
 * With cfg->handle_signals, the first SIGINT or SIGTERM cancels the root
 * scope with reason shutdown and starts the drain deadline (drain_timeout_ms:
 * tasks still running then end the process); a second one ends the process
 * at once. That holds whichever thread receives the signal: keel blocks
 * both in its own threads and installs a handler (SA_RESTART) for threads
 * the application created before keel_run with them unblocked, where it
 * may still interrupt a call that SA_RESTART does not restart (EINTR). A
 * signal aimed at one of keel's own threads (raise or pthread_kill from a
 * task) is not handled: it is logged and dropped when keel_run returns;
 * use keel_shutdown, or kill(getpid(), ...). When keel_run returns, the
 * SIGINT/SIGTERM dispositions and the calling thread's signal mask are
 * those it found. Only one runtime at a time handles the signals; a child
 * forked without exec gets the default actions back.
 * With cfg->dump_on_sigusr1 (with or without handle_signals), SIGUSR1 logs
 * the task dump (keel_dump_tasks) and does nothing else, through the same
 * mechanism: a handler that forwards it to keel's signal thread, which
 * writes the dump even while every worker is stuck. SIGUSR1's disposition
 * is restored when keel_run returns; without the flag keel leaves SIGUSR1
 * alone.
 *
 * Process-wide effects while keel_run runs, each a config choice:
 * - SIGPIPE is ignored (restored when keel_run returns), so a write to a
 *   peer that has gone is -EPIPE, not death (no_sigpipe_ignore: leave it);
 * - a SIGSEGV handler (on a per-thread alternate signal stack) names the
 *   task whose stack overflowed its guard page, and hands other faults to
 *   the handler that was there before, or the default action; it stays
 *   installed after keel_run returns (no_stack_guard_handler: none, and no
 *   alternate stack);
 * - with handle_signals, when the drain deadline passes with tasks still
 *   running, the live tasks are logged and the process ends with
 *   _exit(EXIT_FAILURE) (no_drain_exit: log them and keep waiting); a
 *   second SIGINT/SIGTERM ends it at once with _exit(128 + signal).
 * When keel_run returns, up to 16 task stacks stay mapped, process-wide,
 * for the next keel_run (the pages its tasks touched: a few KiB each).
 * Returns main_fn's return value, or a negative errno if the runtime could
 * not start (-EINVAL bad config, -ENOSYS backend unavailable, -ENOMEM,
 * -EBUSY handle_signals or dump_on_sigusr1 while another runtime in the
 * process handles signals, or pthread_create's error when a worker thread
 * cannot start). */
int keel_run(const keel_config_t *cfg, keel_task_fn main_fn, void *arg);

/* Name of the backend the current worker uses: "io_uring", "epoll" or
 * "lab"; "none" outside a worker. */
const char *keel_backend_name(void);
/* Number of workers; index of the current worker (0-based, -1 outside). */
int keel_worker_count(void);
int keel_worker_id(void);

/* Cancels the root scope with reason shutdown (what SIGINT/SIGTERM do).
 * Callable from any task on any worker. */
void keel_shutdown(void);
/* True once keel_shutdown or a handled signal has started the drain (any
 * thread of the runtime; false outside one). A server reads it to tell
 * its peers it is going away, whatever its own scopes' reasons say. */
bool keel_shutting_down(void);

/* ---- Time -------------------------------------------------------------- */

#define KEEL_NS_PER_MS INT64_C(1000000)
#define KEEL_NS_PER_SEC INT64_C(1000000000)
#define KEEL_DEADLINE_NONE INT64_MAX

/* Monotonic clock in nanoseconds. */
int64_t keel_now_ns(void);

/* Sleep. Returns 0 after the duration, -ECANCELED if the task is
 * cancelled, -ETIMEDOUT if a deadline comes first. A duration <= 0
 * returns at once (still 0, still reporting cancellation). */
int keel_sleep_ms(int64_t ms);
int keel_sleep_ns(int64_t ns);
int keel_sleep_until(int64_t when_ns);

/* Lets other ready tasks run. Returns 0, or -ECANCELED/-ETIMEDOUT. */
int keel_yield(void);

/* Checkpoint for CPU-bound loops: 0, or -ECANCELED/-ETIMEDOUT if the
 * task's scope was cancelled or its deadline has passed. Never blocks. */
int keel_checkpoint(void);

/* ---- Randomness ----------------------------------------------------------- */

/* A fast pseudo-random 64-bit number (xoroshiro128+; not cryptographic),
 * from a per-worker generator seeded from getrandom at start, or from the
 * seed in lab mode, so jitter and fault injection replay with the seed. */
uint64_t keel_random(void);
/* Uniform in [0, bound) (bound > 0; 0 gives 0). */
uint64_t keel_random_below(uint64_t bound);

/* ---- Cancellation reasons and outcomes --------------------------------- */

typedef enum keel_cancel_reason {
  KEEL_CANCEL_NONE = 0,
  KEEL_CANCEL_USER,      /* keel_scope_cancel */
  KEEL_CANCEL_TIMEOUT,   /* a deadline passed */
  KEEL_CANCEL_FAIL_FAST, /* a sibling failed */
  KEEL_CANCEL_PARENT,    /* an enclosing scope was cancelled */
  KEEL_CANCEL_SHUTDOWN,  /* runtime shutdown */
} keel_cancel_reason_t;

const char *keel_cancel_reason_name(keel_cancel_reason_t r);

typedef enum keel_outcome_kind {
  KEEL_OUTCOME_RUNNING = 0, /* not finished yet */
  KEEL_OUTCOME_OK,
  KEEL_OUTCOME_ERROR,
  KEEL_OUTCOME_CANCELLED,
} keel_outcome_kind_t;

typedef struct keel_outcome {
  keel_outcome_kind_t kind;
  int error;                   /* the task's return value (a negative errno if ERROR) */
  keel_cancel_reason_t reason; /* for KEEL_OUTCOME_CANCELLED */
} keel_outcome_t;

/* ---- Scopes ------------------------------------------------------------- */

enum {
  KEEL_SCOPE_FAIL_FAST = 1u << 0, /* a child error cancels its siblings */
  KEEL_SCOPE_SHIELD = 1u << 1,    /* enclosing cancellation does not reach in */
};

typedef struct keel_scope_opts {
  unsigned flags;      /* KEEL_SCOPE_* */
  int64_t deadline_ns; /* absolute monotonic deadline; 0 or KEEL_DEADLINE_NONE: none */
  const char *name;
} keel_scope_opts_t;

/* Opens a scope nested in the current task's scope. opts may be NULL.
 * Returns 0 and *out, or -EINVAL outside a task, or -ENOMEM (*out is then
 * NULL).
 *
 * Ownership: the task that opens a scope is its opener, and only the
 * opener joins and closes it; any task may spawn into it, cancel it or set
 * its deadline while the opener has not closed it. The pointer is valid
 * until the opener closes the scope (or ends: a task that finishes with
 * scopes still open closes them first, waiting for their tasks). */
int keel_scope_open(const keel_scope_opts_t *opts, keel_scope_t **out);

/* Waits until every task spawned into the scope, and every scope nested in
 * it, has finished. If the joining task is cancelled while waiting, the
 * scope is cancelled (reason parent) and join keeps waiting for it to drain:
 * join never leaves orphans. A KEEL_SCOPE_SHIELD scope is not cancelled by
 * its joiner's cancellation: its own deadline bounds it.
 * Returns 0 when every child succeeded (returned 0 or a positive value),
 * even if the scope was cancelled or its deadline passed after they did;
 * else the error of the first child that failed; else, when children were
 * only cut short by cancellation, -ECANCELED, or -ETIMEDOUT if the first
 * of them was cut short by a deadline. -EPERM if the caller is not the
 * scope's opener (nothing is waited for), -EINVAL outside a task. A scope
 * that was joined may be joined again (the same result) or reused: other
 * tasks get -EPIPE from keel_spawn until the opener spawns into it again,
 * which opens it to everyone; the next join reports on what ran since. */
int keel_scope_join(keel_scope_t *scope);

/* Joins (if needed) and frees the scope and the handles of its tasks.
 * Returns what the join returned; -EPERM (and nothing is freed) if the
 * caller is not the scope's opener. NULL: 0. */
int keel_scope_close(keel_scope_t *scope);

/* Cancels every task in the scope and nested scopes, on every worker.
 * Level-triggered: blocking points fail with -ECANCELED from now on. */
void keel_scope_cancel(keel_scope_t *scope, keel_cancel_reason_t reason);

/* Sets the scope's absolute deadline (effective for blocking points from
 * now on; the nearest of a task's scopes' deadlines applies). */
void keel_scope_set_deadline(keel_scope_t *scope, int64_t deadline_ns);

/* Reason the scope was cancelled: the one given to keel_scope_cancel,
 * KEEL_CANCEL_PARENT if an enclosing scope (up to a shield scope) was
 * cancelled, or KEEL_CANCEL_NONE. A scope under a cancelled one reads
 * cancelled as soon as the enclosing one does. */
keel_cancel_reason_t keel_scope_cancel_reason(const keel_scope_t *scope);
/* The reason given where the cancellation began: for a scope under one
 * cancelled by shutdown, KEEL_CANCEL_SHUTDOWN rather than PARENT. NONE if
 * the scope is not cancelled. */
keel_cancel_reason_t keel_scope_cancel_origin(const keel_scope_t *scope);
/* Number of tasks and nested scopes not finished yet. */
size_t keel_scope_live(const keel_scope_t *scope);
/* The scope the current task runs in. */
keel_scope_t *keel_scope_current(void);

/* ---- Tasks -------------------------------------------------------------- */

/* keel_spawn_opts.on_worker: zero (so `{.name = "x"}` does the expected
 * thing) is the spawning task's worker; KEEL_WORKER(i) pins to worker i. */
#define KEEL_WORKER_CURRENT 0
#define KEEL_WORKER(index) ((index) + 1)

typedef struct keel_spawn_opts {
  const char *name;     /* copied; NULL: "task" */
  int on_worker;        /* KEEL_WORKER_CURRENT (0) or KEEL_WORKER(index) */
  size_t stack_size;    /* 0: runtime default; at least 16 KiB, at most 1 GiB */
  keel_task_t **handle; /* if set, receives a handle valid until the scope closes */
} keel_spawn_opts_t;

/* Spawns fn(arg) as a task in scope. opts may be NULL.
 * Returns 0 (fn will run, on any worker), -ENOMEM (no memory for the task
 * or its stack), -EINVAL (bad worker, stack too large, not on a worker),
 * -ECANCELED if the scope, or a scope it is nested in, is already
 * cancelled (the task is not started), or -EPIPE if the scope was joined
 * and the caller is not its opener. */
int keel_spawn(keel_scope_t *scope, keel_task_fn fn, void *arg, const keel_spawn_opts_t *opts);

/* Outcome of a task (KEEL_OUTCOME_RUNNING until it finishes). */
keel_outcome_t keel_task_outcome(const keel_task_t *task);
const char *keel_task_name(const keel_task_t *task);
keel_task_t *keel_task_current(void);

/* Per-task deadline (absolute ns; <= 0: none), combined with the scopes'
 * by min. Returns the previous value so callers can restore it. Cheap: use
 * it for idle timeouts around a single read. Inside a shield it sets a
 * deadline for the rest of the shield (combined with the shield's own);
 * keel_shield_end restores the one from before the shield. */
int64_t keel_task_set_deadline(int64_t deadline_ns);

/* The effective deadline of the current task (KEEL_DEADLINE_NONE if none). */
int64_t keel_deadline(void);

/* Why the current task's blocking points fail now: the reason its own
 * scope was cancelled with (KEEL_CANCEL_PARENT for an enclosing scope),
 * KEEL_CANCEL_TIMEOUT once its effective deadline has passed, or
 * KEEL_CANCEL_NONE. Inside a shield, only the shield's deadline (and a
 * per-task deadline set inside it) counts: NONE until it passes. */
keel_cancel_reason_t keel_cancelled(void);

/* Where the current task's cancellation began, inside a keel_shield_begin
 * or not: the reason given to the nearest keel_scope_cancel up its scopes
 * (to a shield scope) that is not KEEL_CANCEL_PARENT — so a task deep in
 * nested scopes reads KEEL_CANCEL_SHUTDOWN for a shutdown, USER for a
 * user's cancel, FAIL_FAST for a sibling's failure — or
 * KEEL_CANCEL_TIMEOUT if no scope was cancelled but a scope or task
 * deadline (outside any shield) has passed, else KEEL_CANCEL_NONE.
 * Cleanup code in a shield reads this to learn why it is cleaning up; a
 * task in a KEEL_SCOPE_SHIELD scope is not being cancelled and reads
 * NONE (keel_shutting_down says whether the runtime is draining). */
keel_cancel_reason_t keel_cancel_origin(void);

/* Shields: between begin and end the task ignores cancellation of its
 * scopes and their deadlines; only the shield's own deadline applies (and
 * a per-task deadline set inside the shield). Cleanup must be bounded: a
 * deadline_ns <= 0 gives the runtime's drain_timeout_ms from now (5 s by
 * default); KEEL_DEADLINE_NONE asks for an unbounded shield explicitly. A
 * nested shield never outlasts the one around it. Shields nest up to 8
 * deep; unbalanced shields abort. */
void keel_shield_begin(int64_t deadline_ns);
void keel_shield_end(void);

/* ---- Alerts: one task waiting on several sources -------------------------- *
 *
 * An alert belongs to the task that opened it. Any task, on any worker, or
 * any thread may ring it. While the owner has it enabled, a ring cuts short
 * the owner's wait for input -- a read or receive on a stream or socket, a
 * readiness wait, a sleep, a TCP connect -- which returns -EINTR, having
 * lost nothing (a connect cut short leaves its socket to be closed):
 * bytes already received are returned, not dropped, and the stream stays
 * usable. Writes, locks, joins and handshakes are never cut short. A ring
 * stays pending until the owner takes it, so a ring that comes before the
 * wait begins ends that wait at once.
 *
 * The pattern: producers put work somewhere the owner looks (a channel, a
 * list under a lock) and ring; the owner loops: take the ring, serve every
 * source in its own order, then wait for input with the alert enabled:
 *
 *   keel_alert_enable(a);
 *   n = keel_read(s, buf, len);   // or keel_ws_recv, keel_sleep_until, ...
 *   keel_alert_disable(a);
 *   if (n == -EINTR) ...          // rung: serve the other sources
 */
typedef struct keel_alert keel_alert_t;

/* Opens an alert for the calling task (0, -ENOMEM, -EINVAL outside a task). */
int keel_alert_open(keel_alert_t **out);
/* Owner only; no ring may follow (a ring posted from another worker and
 * still in flight is taken care of). */
void keel_alert_close(keel_alert_t *a);
/* Any thread. Cheap when already pending. */
void keel_alert_ring(keel_alert_t *a);
/* Owner: clears a pending ring; true if there was one. */
bool keel_alert_take(keel_alert_t *a);
/* Owner: true if a ring is pending (not cleared). */
bool keel_alert_pending(const keel_alert_t *a);
/* Owner: while enabled, a ring cuts short the owner's input waits. One
 * alert is enabled per task at a time; enabling another replaces it. */
void keel_alert_enable(keel_alert_t *a);
void keel_alert_disable(keel_alert_t *a);
/* Owner: parks until a ring (takes it, returns 1) or until_ns (0;
 * KEEL_DEADLINE_NONE: no end), or -ECANCELED / -ETIMEDOUT. */
int keel_alert_wait(keel_alert_t *a, int64_t until_ns);

/* ---- Errors and logging -------------------------------------------------- */

/* A destination for text keel writes out (metrics, task dumps; log lines
 * have their own, keel_log_sink_fn): called with each piece in order.
 * Returns 0, or a negative errno, which stops the writer; the writer then
 * returns it. */
typedef int (*keel_sink_fn)(void *arg, const char *data, size_t len);

/* Name of a (negative or positive) errno value. */
const char *keel_strerror(int err);

/* ---- Logging ---------------------------------------------------------------
 * One line per event, written whole (one write(2), never split, never
 * interleaved with another thread's line), to stderr or to the sink set
 * with keel_log_set_sink. Each line has the wall-clock time (RFC 3339, UTC,
 * ms), the level, the worker's id and the current task's name (only when
 * logged from a worker / a task), the message, then key=value fields:
 *
 *   text: 2026-12-06T19:01:02.345Z info worker=0 task=conn msg="accepted" peer=127.0.0.1:5555
 *   json: {"ts":"2026-12-06T19:01:02.345Z","level":"info","worker":0,"task":"conn",
 *          "msg":"accepted","peer":"127.0.0.1:5555"}
 *
 * Text (logfmt) quotes msg always, and any other value that is empty or has
 * a space, '"', '=', '\\', a control byte or a non-ASCII byte; inside quotes
 * '"' '\\' \n \r \t are backslash-escaped, and other control bytes and bytes
 * that are not valid UTF-8 are \xHH. In a key, each byte a value would be
 * quoted for becomes '_'. JSON lines are always valid JSON: strings escaped
 * per RFC 8259, control bytes as \u00XX, bytes that are not valid UTF-8 as
 * \ufffd, a NaN or infinite double as null. Keys are not checked for
 * duplicates (with ts, level, worker, task, msg or each other): pick
 * distinct ones.
 *
 * A line is at most KEEL_LOG_LINE_MAX bytes with its newline; a longer one
 * is cut at a character boundary (the string it was in is closed, the
 * fields that do not fit are left out) and ends with truncated=true
 * ("truncated":true), still one valid line. keel_log's formatted message is
 * cut at KEEL_LOG_MSG_MAX bytes the same way.
 *
 * Rate limit: a line identical to an earlier one (same level, message and
 * fields; the time, worker and task do not count) is written at most
 * `burst` times per `window_ms` (default 10 per 5000 ms, for each distinct
 * line); the rest are dropped and counted. The count is reported, once the
 * window has passed, by a line of the same level:
 *
 *   ... warn msg="suppressed identical lines" line="accept failed" suppressed=1234
 *
 * (line: the dropped lines' message, its first 127 bytes; no worker or
 * task, whichever thread writes it), written before the next line keel
 * logs (of any kind) after the window, or by keel_log_flush. The table of
 * recent lines is small and fixed (256 lines, 4 per hash bucket): when
 * more distinct lines flood at once than it holds, some are limited less
 * (never more) than the setting says.
 *
 * The level, format, rate limit and sink are process-wide settings (like
 * the environment they default from), not any loop's state; every function
 * here may be called from any thread, in or out of keel_run. */

#define KEEL_LOG_LINE_MAX 1024 /* bytes in a line, its newline included */
#define KEEL_LOG_MSG_MAX 512   /* bytes of keel_log's formatted message */

typedef enum keel_log_level {
  KEEL_LOG_DEBUG,
  KEEL_LOG_INFO,
  KEEL_LOG_WARN,
  KEEL_LOG_ERROR
} keel_log_level_t;

typedef enum keel_log_format {
  KEEL_LOG_TEXT, /* logfmt, as above (the default) */
  KEEL_LOG_JSON  /* a JSON object per line */
} keel_log_format_t;

typedef enum keel_log_field_type {
  KEEL_LOG_FIELD_STR,    /* v.str: NUL-terminated; NULL prints as null (text: (null)) */
  KEEL_LOG_FIELD_INT,    /* v.i */
  KEEL_LOG_FIELD_UINT,   /* v.u */
  KEEL_LOG_FIELD_DOUBLE, /* v.d */
  KEEL_LOG_FIELD_BOOL    /* v.b: true / false */
} keel_log_field_type_t;

/* A key=value field. Build one with the constructors below, which work in
 * C and C++ alike. The strings are read during the call only. */
typedef struct keel_log_field {
  const char *key;
  keel_log_field_type_t type;
  union {
    const char *str;
    int64_t i;
    uint64_t u;
    double d;
    bool b;
  } v;
} keel_log_field_t;

static inline keel_log_field_t keel_log_str(const char *key, const char *value) {
  keel_log_field_t f;
  f.key = key;
  f.type = KEEL_LOG_FIELD_STR;
  f.v.str = value;
  return f;
}
static inline keel_log_field_t keel_log_int(const char *key, int64_t value) {
  keel_log_field_t f;
  f.key = key;
  f.type = KEEL_LOG_FIELD_INT;
  f.v.i = value;
  return f;
}
static inline keel_log_field_t keel_log_uint(const char *key, uint64_t value) {
  keel_log_field_t f;
  f.key = key;
  f.type = KEEL_LOG_FIELD_UINT;
  f.v.u = value;
  return f;
}
static inline keel_log_field_t keel_log_double(const char *key, double value) {
  keel_log_field_t f;
  f.key = key;
  f.type = KEEL_LOG_FIELD_DOUBLE;
  f.v.d = value;
  return f;
}
static inline keel_log_field_t keel_log_bool(const char *key, bool value) {
  keel_log_field_t f;
  f.key = key;
  f.type = KEEL_LOG_FIELD_BOOL;
  f.v.b = value;
  return f;
}
/* A (negative or positive) errno as its keel_strerror text. */
static inline keel_log_field_t keel_log_errno(const char *key, int err) {
  return keel_log_str(key, keel_strerror(err));
}

/* One line: msg (a plain string, not a format; NULL: "") and nfields
 * fields (fields may be NULL when nfields is 0). Returns nothing: a line
 * below the level, dropped by the rate limit or that the sink fails to
 * write is gone, and the caller is not told. Never allocates, never parks
 * the task, keeps errno: the line is one write(2) to stderr (a blocking
 * one, if stderr blocks) or one call of the sink, after, at times, the
 * line of a count of dropped lines. */
void keel_log_fields(keel_log_level_t level, const char *msg, const keel_log_field_t *fields,
                     size_t nfields);

#ifndef __cplusplus
/* C: keel_log_fields with the fields listed in the call (one or more), e.g.
 *   KEEL_LOG_FIELDS(KEEL_LOG_INFO, "accepted", keel_log_str("peer", peer),
 *                   keel_log_int("fd", fd));
 * The field expressions are evaluated once. (From C++, pass an array.) */
#define KEEL_LOG_FIELDS(level, msg, ...)                                   \
  keel_log_fields((level), (msg), (const keel_log_field_t[]){__VA_ARGS__}, \
                  sizeof((const keel_log_field_t[]){__VA_ARGS__}) / sizeof(keel_log_field_t))
#endif

/* One line whose msg is the printf-formatted text (cut at KEEL_LOG_MSG_MAX
 * bytes), with no fields. As keel_log_fields otherwise. */
void keel_log(keel_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* True when a line of this level would be written (it passes the level):
 * lets a caller skip preparing fields that would be thrown away. */
bool keel_log_enabled(keel_log_level_t level);

/* Minimum level written (default INFO; env KEEL_LOG=debug|info|warn|error). */
void keel_log_set_level(keel_log_level_t level);

/* The line format (default KEEL_LOG_TEXT; env KEEL_LOG_FORMAT=text|json).
 * Returns 0, or -EINVAL for a value that is not a keel_log_format_t. */
int keel_log_set_format(keel_log_format_t format);

/* The rate limit: at most burst identical lines per window_ms; a burst or a
 * window of 0 turns it off (counts already taken are still reported). A
 * change applies to the windows already open too. */
void keel_log_set_rate_limit(unsigned burst, unsigned window_ms);

/* Reports now, a line each, the counts of dropped lines that no line has
 * reported yet, their windows passed or not (keel_run does when it
 * returns): call it before the process exits so that no count is lost.
 * Returns the number of lines written. */
int keel_log_flush(void);

/* "debug", "info", "warn" or "error" (a value out of range: "error"). */
const char *keel_log_level_name(keel_log_level_t level);

/* The parts of a line, for a sink; valid during the sink's call only. */
typedef struct keel_log_record {
  keel_log_level_t level;
  int64_t time_ns;  /* wall clock: ns since the Unix epoch (CLOCK_REALTIME) */
  int worker;       /* the worker's id; -1 outside the workers (and in a summary) */
  const char *task; /* the current task's name; NULL outside a task (and in a summary) */
  const char *msg;  /* never NULL */
  const keel_log_field_t *fields;
  size_t nfields;
} keel_log_record_t;

/* Receives each line written: rec, its parts, and line, the same formatted
 * as the format setting says, len bytes ending in '\n' (a NUL follows). A
 * sink is called from any thread that logs (every worker, blocking-pool
 * threads, the application's), at once from several: it must be
 * thread-safe and must not park (no keel blocking call). A keel_log from
 * inside a sink goes straight to stderr. */
typedef void (*keel_log_sink_fn)(void *arg, const keel_log_record_t *rec, const char *line,
                                 size_t len);

/* Sends every later line to fn(arg, ...) instead of stderr; fn NULL:
 * stderr again. Lines that other threads are writing at the time go to the
 * old sink or the new one, each whole. When this returns, every call of
 * the previous sink has returned and no new one starts, so its arg may be
 * freed (it waits for them: keep sinks quick). Returns 0, -ENOMEM, or
 * -EDEADLK when called from inside a sink (never call it holding a lock
 * the sink takes). Each call keeps a few bytes until the process ends (a
 * thread may still hold an old sink's address). */
int keel_log_set_sink(keel_log_sink_fn fn, void *arg);

/* ---- Task dump ---------------------------------------------------------- *
 *
 * Every live task, by scope from the root: its name, scope path, worker
 * and state (new, ready, running, blocked, or parked: blocked having given
 * its stack back), and for a blocked task what it waits on and for how
 * long, and its effective deadline; for each scope its live count (tasks
 * and nested scopes), deadline and cancellation reason. What a task waits
 * on: recv, send, readable, accept, connect (with the descriptor and the
 * peer's address for a socket), sleep (until when), chan send/recv, mutex,
 * rwlock, semaphore, notify, barrier, once, oneshot, watch, broadcast,
 * join (the scope's path), blocking call, resolve, batch, rate limit,
 * alert, tls turn, close. A layer may add what the task is doing (the HTTP
 * server: reading a request head, waiting for its handler).
 *
 * The dump is a snapshot taken without stopping the workers: it works
 * while a worker is stuck in a task that never yields, and a task may have
 * moved on by the time it is read (a socket's address is looked up after
 * the snapshot). Times are the runtime's clock (virtual in lab mode); how
 * long a task has waited counts from the worker's loop round in which it
 * began to wait (timer resolution: 1 ms, exact in lab mode).
 *
 *   2 tasks in 2 scopes on 2 workers
 *   scope root: 2 live
 *     task 'main' [worker 0] blocked 2.001s: join root/backend
 *     scope root/backend: 1 live, deadline +2.999s
 *       task 'reader' [worker 1] blocked 2.000s: recv fd=12 peer=127.0.0.1:54321, deadline +2.999s
 */

/* keel_tasks_write's flags: text (0) or JSON. The JSON document is
 * {"workers":N,"now_ns":T,"tasks":[...],"scopes":[...]}; a task has name,
 * scope (its path), worker, state, and when blocked age_ns and wait (kind,
 * fd, peer or local address, scope for a join, until_in_ns for a sleep,
 * object: the address of what it waits on), and deadline_in_ns when it has
 * one; activity when a layer said; a scope has path, name, live,
 * cancelled (the reason, when cancelled), deadline_in_ns, shield. Keys
 * that do not apply are left out; times are nanoseconds, relative ones
 * negative once passed. */
enum { KEEL_TASKS_JSON = 1u << 0 };

/* Writes the task dump to sink, in one piece: it is rendered into memory
 * of its own first (no scope lock is held while the sink runs, so the sink
 * may park: a stream write, an HTTP response). Callable from a task or any
 * thread of the runtime's workers. Returns 0, the sink's negative errno,
 * -ENOMEM, or -EINVAL outside the runtime (or for unknown flags). */
int keel_tasks_write(unsigned flags, keel_sink_fn sink, void *arg);

/* Logs the text form (INFO, one line per entry): what SIGUSR1 does with
 * dump_on_sigusr1, and what keel_run logs when a drain deadline passes. */
void keel_dump_tasks(void);

#ifdef __cplusplus
}
#endif
#endif
