/* The blocking pool: threads outside the event loops that run functions
 * which block (getaddrinfo, fsync, a library without non-blocking calls)
 * while the submitting task parks.
 *
 * A job lives on the heap, not on the task's stack, because a cancelled
 * task returns at once while its function goes on running. The job's
 * keel__xwait_t (no waiter list: lock NULL) decides who takes the output:
 * the pool thread claims the wait when the function returns and delivers
 * to the task, or finds it aborted and disposes of the output itself. Both
 * sides touch the job after that decision (the task's wait still stops its
 * timer; the thread still posts the delivery), so the job holds two
 * references and the last side to drop one frees it.
 *
 * A delivered task does not wait for the thread to finish posting: the
 * post counts in the runtime's foreign_posts, and the runtime joins the
 * pool threads and waits for that count to reach zero before it destroys
 * the workers and their wake descriptors. */
#include "blocking-internal.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker.h"

#define BLOCKING_MIN_DEFAULT_THREADS 4

typedef struct blocking_job {
  keel__xwait_t xw;
  keel__queue_t node; /* in the pool's queue, under pool->lock */
  atomic_int refs;    /* the task and the pool thread */
  keel_blocking_fn fn;
  keel_blocking_dispose_fn dispose;
  void *data; /* copy (below) or the caller's pointer (size 0) */
  size_t size;
  max_align_t copy[]; /* size bytes: fn's input and output */
} blocking_job_t;

struct keel__blocking {
  pthread_mutex_t lock;
  pthread_cond_t cond; /* queue no longer empty, or stopping */
  keel__queue_t queue; /* jobs not yet started */
  bool stopping;
  unsigned nthreads;
  pthread_t threads[];
};

static void job_unref(blocking_job_t *job) {
  if (atomic_fetch_sub_explicit(&job->refs, 1, memory_order_acq_rel) == 1)
    free(job);
}

static bool job_aborted(blocking_job_t *job) {
  return atomic_load_explicit(&job->xw.state, memory_order_acquire) == KEEL__XWAIT_ABORTED;
}

/* On a pool thread: a job whose task left before it started is skipped;
 * otherwise the function runs, and its output goes to the task if it still
 * waits (claim), else to dispose. */
static void job_execute(blocking_job_t *job) {
  if (job_aborted(job)) {
    if (job->dispose)
      job->dispose(job->data);
  } else {
    job->fn(job->data);
    if (keel__xwait_claim(&job->xw))
      keel__xwait_deliver(&job->xw, 1);
    else if (job->dispose)
      job->dispose(job->data);
  }
  job_unref(job);
}

static void *pool_thread(void *arg) {
  struct keel__blocking *pool = arg;
  pthread_mutex_lock(&pool->lock);
  for (;;) {
    while (keel__queue_empty(&pool->queue) && !pool->stopping)
      pthread_cond_wait(&pool->cond, &pool->lock);
    /* Stopping drains the queue first: its jobs are abandoned ones whose
     * data still needs disposing. */
    if (keel__queue_empty(&pool->queue))
      break;
    keel__queue_t *n = pool->queue.next;
    keel__queue_remove(n);
    pthread_mutex_unlock(&pool->lock);
    job_execute(keel__container_of(n, blocking_job_t, node));
    pthread_mutex_lock(&pool->lock);
  }
  pthread_mutex_unlock(&pool->lock);
  return NULL;
}

static unsigned default_threads(void) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus > BLOCKING_MIN_DEFAULT_THREADS ? (unsigned)cpus : BLOCKING_MIN_DEFAULT_THREADS;
}

/* Starts up to n threads with every signal blocked (signals belong to the
 * runtime's signal thread). Returns how many started. */
static unsigned start_threads(struct keel__blocking *pool, unsigned n) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  unsigned started = 0;
  while (started < n && pthread_create(&pool->threads[started], NULL, pool_thread, pool) == 0) {
    pthread_setname_np(pool->threads[started], "keel-blocking");
    started++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return started;
}

static struct keel__blocking *pool_create(const keel_config_t *cfg) {
  unsigned n = cfg->blocking_threads ? cfg->blocking_threads : default_threads();
  struct keel__blocking *pool = calloc(1, sizeof *pool + n * sizeof(pthread_t));
  if (!pool)
    return NULL;
  pthread_mutex_init(&pool->lock, NULL);
  pthread_cond_init(&pool->cond, NULL);
  keel__queue_init(&pool->queue);
  pool->nthreads = start_threads(pool, n);
  if (pool->nthreads == 0) {
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    return NULL;
  }
  return pool;
}

/* The runtime's hook (rt->blocking_shutdown): stops the pool's threads once
 * every worker thread has ended, before the workers are destroyed; waits
 * for running functions and disposes of their results. */
static void blocking_shutdown(keel_runtime_t *rt) {
  struct keel__blocking *pool = rt->blocking;
  if (!pool)
    return;
  pthread_mutex_lock(&pool->lock);
  pool->stopping = true;
  pthread_cond_broadcast(&pool->cond);
  pthread_mutex_unlock(&pool->lock);
  for (unsigned i = 0; i < pool->nthreads; i++)
    pthread_join(pool->threads[i], NULL);
  assert(keel__queue_empty(&pool->queue));
  pthread_cond_destroy(&pool->cond);
  pthread_mutex_destroy(&pool->lock);
  free(pool);
  rt->blocking = NULL;
}

/* The runtime's pool, started on first use. */
static struct keel__blocking *pool_get(keel_runtime_t *rt) {
  struct keel__blocking *pool = __atomic_load_n(&rt->blocking, __ATOMIC_ACQUIRE);
  if (KEEL__LIKELY(pool != NULL))
    return pool;
  pthread_mutex_lock(&rt->blocking_lock);
  pool = rt->blocking;
  if (!pool) {
    pool = pool_create(&rt->cfg);
    if (pool) {
      rt->blocking_shutdown = blocking_shutdown;
      __atomic_store_n(&rt->blocking, pool, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock(&rt->blocking_lock);
  return pool;
}

static blocking_job_t *job_new(keel_blocking_fn fn, void *data, size_t size,
                               keel_blocking_dispose_fn dispose) {
  if (size > SIZE_MAX - sizeof(blocking_job_t))
    return NULL;
  blocking_job_t *job = malloc(sizeof *job + size);
  if (!job)
    return NULL;
  job->fn = fn;
  job->dispose = dispose;
  job->size = size;
  job->data = data;
  if (size > 0) {
    memcpy(job->copy, data, size);
    job->data = job->copy;
  }
  atomic_init(&job->refs, 2);
  keel__queue_init(&job->node);
  return job;
}

/* Queues the job and parks. Returns 1 (delivered: fn ran) or the error
 * that interrupted the wait. */
static int submit_and_wait(struct keel__blocking *pool, blocking_job_t *job,
                           keel__wait_kind_t kind) {
  keel__xwait_init(&job->xw, NULL, kind, (const void *)(uintptr_t)job->fn);
  pthread_mutex_lock(&pool->lock);
  keel__queue_insert_tail(&pool->queue, &job->node);
  pthread_cond_signal(&pool->cond);
  pthread_mutex_unlock(&pool->lock);
  return (int)keel__xwait_block(&job->xw);
}

int keel_blocking_run(keel_blocking_fn fn, void *data, size_t size,
                      keel_blocking_dispose_fn dispose) {
  return keel__blocking_run_as(KEEL__WAIT_BLOCKING, fn, data, size, dispose);
}

int keel__blocking_run_as(keel__wait_kind_t kind, keel_blocking_fn fn, void *data, size_t size,
                          keel_blocking_dispose_fn dispose) {
  int err = -EINVAL;
  keel__worker_t *w = keel__worker_current();
  if (!fn || !w || !w->current)
    goto fail;
  if ((err = keel__check_cancel()) < 0)
    goto fail;
  struct keel__blocking *pool = pool_get(w->rt);
  err = -EAGAIN;
  if (!pool)
    goto fail;
  blocking_job_t *job = job_new(fn, data, size, dispose);
  err = -ENOMEM;
  if (!job)
    goto fail;
  int rc = submit_and_wait(pool, job, kind);
  if (rc < 0) {
    job_unref(job); /* the pool thread disposes and frees */
    return rc;
  }
  if (size > 0)
    memcpy(data, job->copy, size);
  job_unref(job); /* the pool thread may still be returning from the delivery */
  return 0;
fail:
  if (dispose)
    dispose(data);
  return err;
}
