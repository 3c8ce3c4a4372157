/* keel flow: combinators built on scopes (timeout, race, join-all), retry
 * with exponential backoff and full jitter, a token-bucket rate limiter and
 * a circuit breaker. */
#ifndef KEEL_FLOW_H
#define KEEL_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Timeout, race, join-all ---------------------------------------------
 *
 * Each call opens a child scope of the calling task's scope, runs the
 * functions as tasks in it on the calling worker, and joins it before
 * returning: nothing the functions spawn into keel_scope_current() outlives
 * the call (no orphans). A function's result is its return value: >= 0 is
 * success, a negative errno a failure.
 *
 * Cancellation of the caller reaches the children; they are drained, and
 * the call returns -ECANCELED (out-parameters still say what each child
 * returned, so results holding resources can be released). The caller's
 * deadlines reach the children as well (deadlines nest: the nearest wins),
 * so a caller deadline shows up as -ETIMEDOUT in the children's results. */

/* One function to run concurrently with others. */
typedef struct keel_branch {
  keel_task_fn fn;
  void *arg;
} keel_branch_t;

/* Runs fn(arg) in a child scope whose deadline is now + timeout_ns (or
 * deadline_ns, absolute, for keel_timeout_at), nested in the caller's: the
 * nearer deadline wins. Returns fn's result: when the deadline passes, fn's
 * blocking points fail with -ETIMEDOUT, and a fn that passes that on makes
 * keel_timeout return -ETIMEDOUT (a fn that finished its work anyway still
 * returns its own result). Also -ECANCELED (the caller was cancelled; fn
 * was drained), -ENOMEM, -EINVAL (not called from a task). timeout_ns <= 0
 * gives a deadline that has passed already: fn runs and fails at its first
 * blocking point. */
int keel_timeout(int64_t timeout_ns, keel_task_fn fn, void *arg);
int keel_timeout_at(int64_t deadline_ns, keel_task_fn fn, void *arg);

enum {
  /* keel_race: the first branch to finish wins, success or not (tokio's
   * select!). Default: the first branch to SUCCEED wins; failures only
   * decide the race when every branch failed. */
  KEEL_RACE_FIRST_DONE = 1u << 0,
};

/* Runs the n branches concurrently. When the winner finishes, the others
 * (the losers) are cancelled and keel_race waits until every one of them
 * has finished (their cleanup included) before it returns. Returns the
 * winner's result, with its index in *winner (winner may be NULL).
 * When every branch failed (default mode), returns the error of the first
 * branch to fail and sets *winner to -1. A loser that succeeded after the
 * winner was decided (it did not reach a blocking point in time) has its
 * result dropped: a branch that acquires something should release it when
 * keel_cancelled() says it lost. Also -ECANCELED (caller cancelled; *winner
 * is the branch that had won before, or -1), -EINVAL (n == 0, not in a
 * task), -ENOMEM. */
int keel_race(const keel_branch_t *branches, size_t n, unsigned flags, int *winner);

enum {
  /* keel_join_all: the first failure cancels the other branches. */
  KEEL_JOIN_FAIL_FAST = 1u << 0,
};

/* Runs the n branches concurrently and waits for all of them. results (may
 * be NULL) receives each branch's result by index. By default a failure
 * does not stop the others. Returns 0 when every branch succeeded, else the
 * error of the first branch to fail (in completion order); -ECANCELED when
 * the caller was cancelled (results still filled in); -EINVAL (n == 0, not
 * in a task), -ENOMEM (results of branches never started: -ENOMEM). */
int keel_join_all(const keel_branch_t *branches, size_t n, unsigned flags, int *results);

/* ---- Retry ------------------------------------------------------------------ */

/* Whether err (negative) is worth another attempt. */
typedef bool (*keel_retry_pred_fn)(int err, void *user);
/* Called before each backoff sleep: attempt (0-based) failed with err and
 * the next attempt starts after delay_ns. */
typedef void (*keel_retry_observer_fn)(unsigned attempt, int64_t delay_ns, int err, void *user);

/* Zeroed (or a NULL pointer): every default. */
typedef struct keel_retry_opts {
  unsigned max_attempts; /* attempts in all (1: no retry); 0: 5 */
  int64_t base_ns; /* backoff before attempt k+1: random in [0, min(cap, base * 2^k)]; 0: 100 ms */
  int64_t cap_ns;  /* upper bound of one backoff, > 0; 0: 10 s */
  int64_t deadline_ns;             /* ABSOLUTE total deadline (keel_now_ns() + budget); 0 or
                                      KEEL_DEADLINE_NONE: none. Applies to attempts and sleeps. */
  keel_retry_pred_fn should_retry; /* NULL: every error but -ECANCELED */
  keel_retry_observer_fn on_retry; /* NULL: none */
  void *user;                      /* passed to should_retry and on_retry */
} keel_retry_opts_t;

/* Fills opts with the defaults a zeroed struct stands for: 5 attempts,
 * base 100 ms, cap 10 s, no deadline, retry every error but -ECANCELED. */
void keel_retry_opts_init(keel_retry_opts_t *opts);

/* The backoff ceiling before attempt + 1: min(cap, base * 2^attempt),
 * without overflow. The delay is uniform in [0, ceiling] (full jitter,
 * keel_random: per worker, seeded from the lab seed in lab mode). */
int64_t keel_retry_ceiling_ns(int64_t base_ns, int64_t cap_ns, unsigned attempt);

/* Calls fn(arg) until it succeeds (>= 0), sleeping a jittered backoff
 * between attempts. The total deadline is the task's deadline while fn runs
 * (nested: the caller's nearer deadline still wins) and no backoff sleep
 * runs past it: when the next attempt could not start before it, retry
 * stops at once. Returns fn's first success; otherwise the LAST attempt's
 * error, when attempts ran out, should_retry refused, or the deadline
 * (total or the caller's) ends the retrying (so a deadline shows as the
 * real error, or -ETIMEDOUT if the attempt itself was cut by it).
 * Returns -ECANCELED at once when the caller is cancelled (during an
 * attempt or a sleep); -EINVAL for bad options (a negative base or cap,
 * no fn) or outside a task. */
int keel_retry(const keel_retry_opts_t *opts, keel_task_fn fn, void *arg);

/* ---- Token-bucket rate limiter ---------------------------------------------
 * Usable from every worker (a spinlock guards it). Time is keel_now_ns(),
 * virtual in lab mode. Callers that must wait are served in the order they
 * came, each as soon as the tokens for it and for everyone ahead of it have
 * accrued: a large request is never overtaken by smaller ones that come
 * after it, and while anyone waits, try_acquire fails and available says 0
 * (what accrues belongs to the waiters). A waiter that is cancelled or
 * times out has taken nothing and leaves the line: those behind it move up
 * at once. */

typedef struct keel_ratelimit keel_ratelimit_t;

#define KEEL_RATELIMIT_MAX_RATE UINT64_C(1000000000000) /* tokens per second */
#define KEEL_RATELIMIT_MAX_BURST UINT64_C(1000000000)

/* Creates a bucket refilled at rate_per_sec tokens per second, holding at
 * most burst tokens; it starts full. Returns 0, -EINVAL (rate or burst 0 or
 * above the maxima) or -ENOMEM. */
int keel_ratelimit_open(uint64_t rate_per_sec, uint64_t burst, keel_ratelimit_t **out);
/* Frees it. No task may be using it. NULL is a no-op. */
void keel_ratelimit_close(keel_ratelimit_t *rl);

/* Takes n tokens, waiting in line until they exist. Returns 0 (taken);
 * -ECANCELED (cancelled while waiting: nothing taken); -ETIMEDOUT at once,
 * taking nothing and without joining the line, when the tokens could only
 * come at or after the task's deadline with the callers already waiting
 * served first (later, if the deadline moves nearer while it waits);
 * -EINVAL when n > burst (never satisfiable) or outside a task. n == 0
 * returns 0. */
int keel_ratelimit_acquire(keel_ratelimit_t *rl, uint64_t n);
/* Takes n tokens if they exist now and nobody is waiting: 0, -EAGAIN, or
 * -EINVAL (n > burst). */
int keel_ratelimit_try_acquire(keel_ratelimit_t *rl, uint64_t n);
/* Whole tokens a caller could take now: 0 while anyone waits. */
uint64_t keel_ratelimit_available(keel_ratelimit_t *rl);

/* ---- Circuit breaker ---------------------------------------------------------
 * closed: calls pass; failure_threshold consecutive failures open it.
 * open: calls are refused for open_ns. Then half-open: exactly one call
 * (the probe) passes; its success closes the breaker, its failure re-opens
 * it for open_ns. A probe that never reports (lost) is replaced after
 * open_ns. Usable from every worker (a spinlock guards it); time is
 * keel_now_ns(). */

typedef struct keel_breaker keel_breaker_t;

typedef enum keel_breaker_state {
  KEEL_BREAKER_CLOSED = 0,
  KEEL_BREAKER_OPEN,
  KEEL_BREAKER_HALF_OPEN, /* the probe is out */
} keel_breaker_state_t;

/* Returns 0, -EINVAL (threshold 0, open_ns < 0) or -ENOMEM. */
int keel_breaker_open(unsigned failure_threshold, int64_t open_ns, keel_breaker_t **out);
void keel_breaker_close(keel_breaker_t *b);

/* May a call go through now? 0 (closed, or this caller is the half-open
 * probe: it must report with record_success/record_failure), or
 * -ECONNREFUSED (open, or the probe is out): the protected service is
 * treated as refusing, the same error a refused connect gives. */
int keel_breaker_allow(keel_breaker_t *b);
/* Report the outcome of an allowed call. These reports carry no identity:
 * they are ignored while the breaker is open, and while it is half-open
 * any of them is taken as the probe's verdict. keel_breaker_call tracks
 * its calls and does better: prefer it. */
void keel_breaker_record_success(keel_breaker_t *b);
void keel_breaker_record_failure(keel_breaker_t *b);

/* allow + fn(arg) + record. Returns fn's result, or -ECONNREFUSED without
 * calling fn. A negative result is a failure, except -ECANCELED when the
 * calling task was cancelled: that is no verdict on the service (a
 * cancelled probe lets the next caller probe at once). A call's verdict
 * counts only if the breaker has not changed since it was allowed: a call
 * allowed before the breaker opened, or a probe replaced as lost, neither
 * closes nor re-opens it. */
int keel_breaker_call(keel_breaker_t *b, keel_task_fn fn, void *arg);

keel_breaker_state_t keel_breaker_state(keel_breaker_t *b);
/* Consecutive failures counted while closed. */
unsigned keel_breaker_failures(keel_breaker_t *b);

#ifdef __cplusplus
}
#endif
#endif
