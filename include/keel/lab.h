/* keel lab mode: a deterministic runtime for tests of timing-dependent
 * code, and in-memory stream pairs with fault injection.
 *
 * Run with cfg.backend = KEEL_BACKEND_LAB (or KEEL_BACKEND=lab):
 *   - one worker (cfg.workers > 1 is -EINVAL);
 *   - a virtual clock: keel_now_ns, sleeps, deadlines and timers use it.
 *     Time stands still while tasks run and jumps to the next timer when
 *     every task is blocked, so an hour of backoff takes milliseconds and
 *     each deadline is met to the nanosecond;
 *   - a seeded scheduler: the next ready task is drawn from a generator
 *     seeded by cfg.lab_seed, else KEEL_SEED, else 1; keel_random draws from
 *     the same generator. The same seed gives the same run, as long as the
 *     program itself is deterministic (no real threads, no real I/O);
 *   - a trace: spawns, task runs and clock jumps are folded into a hash
 *     (keel_lab_trace_hash, cfg.lab_trace), so two runs can be compared;
 *   - a failed run (keel_run returning a negative errno) logs its seed;
 *   - real descriptors are not driven: their operations fail with
 *     -EOPNOTSUPP. Use keel_lab_pipe. Blocking-pool functions run on real
 *     threads; virtual time does not wait for them unless nothing else is
 *     armed, so keep them out of tests that need exact times.
 * If every task is blocked with no timer armed, lab mode waits for another
 * thread and after one real second logs the blocked tasks (a deadlock). */
#ifndef KEEL_LAB_H
#define KEEL_LAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* True in a task of a lab runtime. */
bool keel_lab_active(void);
/* The lab runtime's seed (0 outside lab mode). */
uint64_t keel_lab_seed(void);
/* Hash of the scheduling events so far, and their number (0 outside). */
uint64_t keel_lab_trace_hash(void);
uint64_t keel_lab_trace_events(void);
/* Folds a value of the program's own into the trace (no-op outside). */
void keel_lab_trace_note(uint64_t value);

/* Faults a lab pipe injects, drawn from keel_random. Zero: none. */
typedef struct keel_lab_faults {
  size_t capacity;         /* bytes buffered per direction; 0: 64 KiB */
  int64_t delay_max_ns;    /* each write first waits a random [0, max] ns */
  unsigned short_permille; /* chance (per 1000) a read or write moves only part */
  unsigned reset_permille; /* chance (per 1000) an operation resets the pair */
} keel_lab_faults_t;

/* Creates two connected in-memory streams owned by the calling worker
 * (any backend; other workers get -EXDEV). What is written to one is read
 * from the other, through keel_read/keel_write/keel_close like TCP:
 * reads return 0 after the peer shuts down writing, writes fail with
 * -EPIPE once the peer stopped reading, a reset makes every later call on
 * either end fail with -ECONNRESET, and blocked calls honour cancellation
 * and deadlines without losing bytes. Close both ends to free the pair.
 * faults may be NULL. Returns 0, -EINVAL (a permille over 1000, a negative
 * delay, outside a worker) or -ENOMEM. */
int keel_lab_pipe(const keel_lab_faults_t *faults, keel_stream_t **a, keel_stream_t **b);

/* Resets the pair s belongs to, as an injected fault would. Returns 0,
 * -EINVAL (not a lab pipe) or -EXDEV. */
int keel_lab_pipe_reset(keel_stream_t *s);

#ifdef __cplusplus
}
#endif
#endif
