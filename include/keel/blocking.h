/* keel/blocking.h: the blocking pool (functions that block a thread, run
 * outside the event loops while the calling task parks) and the batch queue
 * (a processor thread working through batches of submitted items). */
#ifndef KEEL_BLOCKING_H
#define KEEL_BLOCKING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Blocking pool ------------------------------------------------------ */

/* Runs on a pool thread; reads its input from data and writes its output
 * there. It must not call keel task functions. */
typedef void (*keel_blocking_fn)(void *data);
/* Releases what data owns (fn's output, and any input it points to) when
 * the caller will not receive it. Runs on a pool thread or, when nothing
 * was submitted, on the calling task. Must handle data as submitted (fn
 * never ran): initialise output fields (NULL) before submitting. */
typedef void (*keel_blocking_dispose_fn)(void *data);

/* Runs fn(data) on the runtime's blocking pool and parks the calling task
 * until it returns. The pool has keel_config_t.blocking_threads threads
 * (0: the number of CPUs, at least 4, since its functions mostly wait),
 * started on first use and stopped by keel_run after every task ended;
 * its queue is unbounded (each queued job holds a parked task).
 *
 * size > 0: the size bytes at data are copied into the job, fn works on
 * the copy (so data may live on the task's stack) and, on success, the
 * copy is written back to data. size == 0: data is passed as is and must
 * stay valid until run returns 0 or dispose has run.
 *
 * Returns 0 when fn ran and its output is in data: the caller owns it and
 * dispose is not called. Otherwise the caller owns nothing and dispose (if
 * not NULL) is called exactly once, now or later:
 *   -ECANCELED / -ETIMEDOUT: the task was cancelled or its deadline passed,
 *     at once even while fn runs. A job still queued is skipped (fn never
 *     runs; dispose gets data as submitted); a running fn finishes on its
 *     thread and dispose gets its output. Cancelled before submitting:
 *     nothing starts, dispose runs now.
 *   -EINVAL (fn NULL or not called from a task), -ENOMEM,
 *   -EAGAIN (no pool thread could be started): dispose runs now. */
int keel_blocking_run(keel_blocking_fn fn, void *data, size_t size,
                      keel_blocking_dispose_fn dispose);

/* ---- Batch queue ---------------------------------------------------------- */

typedef struct keel_batch keel_batch_t;

/* One submitted item as the processor sees it. */
typedef struct keel_batch_entry {
  void *item;     /* item_size bytes, copied from the submitter */
  int64_t result; /* 0 on entry; what process sets goes to the submitter */
} keel_batch_entry_t;

/* Processes n (1..max_batch) entries in submission order on the queue's
 * own thread, setting each entry's result. Must not call keel task
 * functions. */
typedef void (*keel_batch_process_fn)(void *ctx, keel_batch_entry_t *entries, size_t n);

typedef struct keel_batch_opts {
  size_t item_size;         /* bytes per item, > 0 */
  size_t max_batch;         /* entries per process call at most, > 0 */
  int64_t batch_timeout_ns; /* after seeing a batch's first item, wait this long
                               for max_batch items; 0: process what is there */
  size_t capacity;          /* items queued or being processed, >= max_batch;
                               submitters wait for room (back-pressure) */
  keel_batch_process_fn process;
  void *ctx; /* passed to process */
} keel_batch_opts_t;

/* Creates the queue (a ring of capacity slots: submitting allocates
 * nothing) and starts its processor thread. Callable from any thread.
 * Returns 0, -EINVAL (a zero size, batch or capacity, capacity below
 * max_batch, negative timeout, no process, overflow), -ENOMEM, or the
 * error of pthread_create. */
int keel_batch_open(const keel_batch_opts_t *opts, keel_batch_t **out);

/* Copies item into the queue and parks until the processor has processed
 * it. Waits for room while capacity items are queued or being processed.
 * Any task on any worker. Returns
 *   0: processed; *result (if result is not NULL) gets the entry's result;
 *   -EPIPE: the queue was closed (also for a submitter waiting for room);
 *   -ECANCELED / -ETIMEDOUT: cancelled or deadline passed while waiting
 *     for room or while queued: the item is removed (process never sees
 *     it). Once the processor has taken the item into a batch the
 *     submitter is committed: it waits for that batch (cancellation then
 *     shows at its next blocking point), so a submitter always learns
 *     whether its item was processed and items are never lost.
 *   -EINVAL: not called from a task. */
int keel_batch_submit(keel_batch_t *q, const void *item, int64_t *result);

/* Shuts the queue down (stops accepting; keel_batch_close frees it): new submits and submitters
 * waiting for room get -EPIPE; queued items are all processed (their submitters get their results),
 * without waiting for batch_timeout; then the processor thread exits. From a task, parks until then
 * and returns 0, or -ECANCELED / -ETIMEDOUT (the drain goes on). Outside a task it does not wait
 * and returns 0. Shutting down twice is fine. */
int keel_batch_shutdown(keel_batch_t *q);

/* Shuts down (if needed), waits for the processor thread to exit (a blocking
 * join: from a task, call it after keel_batch_shutdown returned 0) and frees
 * the queue. No submitter may be parked on it. NULL is a no-op. */
void keel_batch_close(keel_batch_t *q);

/* Number of process calls so far (a processed batch each). */
uint64_t keel_batch_batches(const keel_batch_t *q);
/* Slots in use: items queued or being processed (at most capacity; a
 * cancelled submitter's slot counts until the processor passes it). */
size_t keel_batch_pending(keel_batch_t *q);

#ifdef __cplusplus
}
#endif
#endif
