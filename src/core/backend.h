/* Internal header: descriptors and the backends behind them (uring.c, epoll.c, lab.c). */
#ifndef KEEL_BACKEND_H
#define KEEL_BACKEND_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "queue.h"
#include "wait.h"

typedef struct keel__worker keel__worker_t;

/* ---- Backends -------------------------------------------------------------- */

/* io_uring multishot accept: the kernel keeps accepting and keel queues
 * the descriptors until a task asks for them. Listeners only. */
#define KEEL__ACCEPTQ_MIN 64
typedef struct keel__acceptq {
  int fd;                   /* the listening socket */
  bool armed;               /* a multishot accept is in flight */
  bool closing;             /* listener closing: accepted fds are closed */
  int err;                  /* an error to hand to the next accept (e.g. -EMFILE) */
  keel__queue_t waiters;    /* tasks waiting in accept, first come first served */
  keel__wait_t *close_wait; /* the closer waiting for the final CQE */
  unsigned head, tail;      /* free-running; cap is a power of two */
  unsigned cap;
  int *fds;
} keel__acceptq_t;

/* Per-descriptor state shared by TCP and the backends. */
typedef struct keel__io {
  int fd;
  int slot; /* io_uring: registered file index, or -1 */
  keel__worker_t *worker;
  keel__queue_t rd_waiters; /* epoll: tasks waiting for readability */
  keel__queue_t wr_waiters; /* epoll: tasks waiting for writability */
  keel__wait_t *close_wait; /* io_uring: the closer waiting for them */
  keel__acceptq_t *acceptq;
  int pend_err;      /* io_uring: an error such a wait took from the socket, for the next read */
  unsigned inflight; /* io_uring: operations submitted, not yet retired */
  /* io_uring: bytes a readiness wait received into one of the worker's
   * provided buffers (pbuf), delivered by the next reads */
  unsigned short pend_bid, pend_off, pend_len;
  unsigned short uses;     /* io_uring: operations so far, until registered */
  bool registered;         /* epoll: added to the interest list */
  bool rd_ready, wr_ready; /* epoll: may read/write without waiting for an edge */
  bool rd_hup, wr_hup;     /* epoll: hang-up or error seen: calls never wait again */
  bool rd_edge;            /* epoll: a readable edge came after the last read */
  bool rd_drained;         /* io_uring: the last recv left nothing queued */
} keel__io_t;

typedef struct keel__backend_ops {
  const char *name;
  int (*init)(keel__worker_t *w);
  void (*destroy)(keel__worker_t *w);
  /* Waits up to timeout_ns (< 0: no limit, 0: do not block) and handles a
   * bounded batch of completions. */
  void (*poll)(keel__worker_t *w, int64_t timeout_ns);
  /* Wakes w's poll from another thread. */
  void (*wake)(keel__worker_t *w);
  /* Task-side I/O. Each blocks the calling task and returns a count, a fd or
   * a negative errno, honouring cancellation and deadlines. */
  ssize_t (*recv)(keel__io_t *io, void *buf, size_t len);
  ssize_t (*readv)(keel__io_t *io, const struct iovec *iov, int iovcnt);
  ssize_t (*send)(keel__io_t *io, const void *buf, size_t len);
  ssize_t (*writev)(keel__io_t *io, const struct iovec *iov, int iovcnt);
  int (*accept)(keel__io_t *io);
  int (*connect)(keel__io_t *io, const struct sockaddr *sa, socklen_t len);
  /* Readiness without a buffer: arm_readable initialises w for the current
   * task and starts waiting for a read that would not park (bytes, end of
   * stream or an error), without parking (w may end at once); after w has
   * ended, readable_done retires it and returns 0 or a negative errno. */
  void (*arm_readable)(keel__io_t *io, keel__wait_t *w);
  int (*readable_done)(keel__io_t *io, keel__wait_t *w);
  /* Releases backend state of io before its fd is closed. */
  void (*io_close)(keel__io_t *io);
  /* Lab mode's differences from the real backends, which leave these false
   * and NULL. virtual_time: time moves only when the backend moves it
   * (timer ticks are nanoseconds, a worker never spins waiting for
   * messages) and no real descriptor is driven (TCP runs on the lab
   * network instead). */
  bool virtual_time;
  int64_t (*clock)(keel__worker_t *w);           /* keel__now_ns */
  keel_task_t *(*pick_ready)(keel__worker_t *w); /* the next task to run */
  void (*on_spawn)(keel__worker_t *w, keel_task_t *t);
  void (*on_yield)(keel__worker_t *w, keel_task_t *t);
} keel__backend_ops_t;

extern const keel__backend_ops_t keel__uring_ops;
extern const keel__backend_ops_t keel__epoll_ops;
extern const keel__backend_ops_t keel__lab_ops;

/* io_uring, with ring's SQ full: submits the batch and returns a free SQE,
 * or NULL with the negative errno in *err once the kernel has refused it
 * (at once for a lasting error; after a few tries for -EINTR, -EAGAIN and
 * -EBUSY). */
struct io_uring;
struct io_uring_sqe;
struct io_uring_sqe *keel__uring_sqe_after_submit(struct io_uring *ring, int *err);
/* The ring of worker w, or NULL if w does not run io_uring. For tests
 * that make the kernel refuse its submissions for a while. */
struct io_uring *keel__uring_ring(keel__worker_t *w);
/* Provided buffers of w's ring that connections hold (bytes received and
 * not yet read), or -1 if w has none (another backend, an older kernel). */
int keel__uring_pbufs_out(keel__worker_t *w);
/* How often w gave the pages of its free provided buffers back after
 * having nothing to do for a second, or -1 if it does not (no provided
 * buffers, or a kernel without deferred task work). */
int keel__uring_pbuf_trims(keel__worker_t *w);
/* The pages of w's provided buffers that are resident (mincore), or -1. */
int keel__uring_pbuf_resident(keel__worker_t *w);

/* Sets up io for fd, owned by the calling worker (src/core/worker.c). */
void keel__io_init(keel__io_t *io, int fd);

#endif
