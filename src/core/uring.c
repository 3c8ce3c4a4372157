/* The io_uring backend: a completion engine. Operations are queued as SQEs
 * while the task parks; the worker submits the whole batch and waits for
 * completions in one io_uring_enter. A cancelled operation's buffer stays
 * untouched only once its CQE has arrived, so cancellation submits an
 * ASYNC_CANCEL and the task stays parked until then. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <liburing.h>

#include "internal.h"

/* user_data: a keel__wait_t pointer (8-aligned, tag 0), or a tagged
 * pointer for the worker's own operations. 0 marks CQEs nobody awaits. */
#define TAG_MASK 7u
#define TAG_WAKE 1u
#define TAG_ACCEPT 2u

/* A connection's descriptor is registered with the ring once it has seen
 * this many operations, so that each later one skips the kernel's file
 * lookup and reference count. Short-lived descriptors never pay the
 * registering system call. */
#define REGISTER_AFTER_OPS 8
#define SLOTS_MAX 16384

typedef struct uring_backend {
  struct io_uring ring;
  uint64_t wake_buf;
  bool ext_arg;    /* kernel waits with a timeout without a timeout SQE */
  unsigned nslots; /* registered file table size, 0 if unavailable */
  unsigned nfree;  /* free slots, on the stack below */
  unsigned *free_slots;
} uring_backend_t;

static struct io_uring_sqe *get_sqe(uring_backend_t *b) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
  while (!sqe) { /* SQ full: hand the batch to the kernel and go on */
    io_uring_submit(&b->ring);
    sqe = io_uring_get_sqe(&b->ring);
  }
  return sqe;
}

static void arm_wake(keel__worker_t *w, uring_backend_t *b) {
  struct io_uring_sqe *sqe = get_sqe(b);
  io_uring_prep_read(sqe, w->wake_fd, &b->wake_buf, sizeof b->wake_buf, 0);
  io_uring_sqe_set_data64(sqe, (uintptr_t)w | TAG_WAKE);
}

static int ring_init(uring_backend_t *b, unsigned entries) {
  struct io_uring_params p;
  /* Newest first: a single issuer and deferred task work let the kernel run
   * completions only when this worker asks for them. */
  static const unsigned flag_sets[] = {
#if KEEL_HAVE_URING_DEFER_TASKRUN
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
#endif
    IORING_SETUP_COOP_TASKRUN,
    0
  };
  int rc = -EINVAL;
  for (size_t i = 0; i < sizeof flag_sets / sizeof flag_sets[0]; i++) {
    memset(&p, 0, sizeof p);
    p.flags = flag_sets[i];
    rc = io_uring_queue_init_params(entries, &b->ring, &p);
    if (rc != -EINVAL)
      break;
  }
  if (rc < 0)
    return rc;
  b->ext_arg = p.features & IORING_FEAT_EXT_ARG;
  io_uring_register_ring_fd(&b->ring); /* saves an fd lookup per enter */
  return 0;
}

/* A sparse table of registered files, as large as the descriptor limit
 * allows up to SLOTS_MAX. Without it every operation uses the plain fd. */
static void slots_init(uring_backend_t *b) {
  struct rlimit rl;
  unsigned n = SLOTS_MAX;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < n)
    n = (unsigned)rl.rlim_cur;
  b->free_slots = malloc(n * sizeof *b->free_slots);
  if (!b->free_slots || io_uring_register_files_sparse(&b->ring, n) < 0) {
    free(b->free_slots);
    b->free_slots = NULL;
    return;
  }
  b->nslots = b->nfree = n;
  for (unsigned i = 0; i < n; i++)
    b->free_slots[i] = n - 1 - i;
}

/* Points sqe at io's registered slot, registering io once it has proved
 * long-lived. Keeps the plain fd when the table is full or absent. */
static void use_slot(uring_backend_t *b, keel__io_t *io, struct io_uring_sqe *sqe) {
  if (io->slot < 0) {
    if (++io->uses < REGISTER_AFTER_OPS || b->nfree == 0)
      return;
    unsigned slot = b->free_slots[--b->nfree];
    if (io_uring_register_files_update(&b->ring, slot, &io->fd, 1) != 1) {
      b->free_slots[b->nfree++] = slot;
      io->uses = 0; /* try again later, not on every operation */
      return;
    }
    io->slot = (int)slot;
  }
  sqe->fd = io->slot;
  sqe->flags |= IOSQE_FIXED_FILE;
}

/* Drops the ring's reference to io's file at once, so that the close(2)
 * which follows really closes the socket (the peer sees its FIN now, not
 * at the worker's next submit). One system call, paid only by descriptors
 * that lived long enough to be registered. */
static void release_slot(uring_backend_t *b, keel__io_t *io) {
  if (io->slot < 0)
    return;
  int none = -1;
  if (io_uring_register_files_update(&b->ring, (unsigned)io->slot, &none, 1) == 1)
    b->free_slots[b->nfree++] = (unsigned)io->slot;
  /* else: the slot stays taken (and its file open) until the ring goes */
  io->slot = -1;
}

static int ur_init(keel__worker_t *w) {
  uring_backend_t *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  unsigned entries = w->rt->cfg.uring_entries ? w->rt->cfg.uring_entries : 1024;
  int rc = ring_init(b, entries);
  if (rc < 0) {
    free(b);
    return rc;
  }
  slots_init(b);
  w->backend = b;
  arm_wake(w, b);
  return 0;
}

static void ur_destroy(keel__worker_t *w) {
  uring_backend_t *b = w->backend;
  if (!b)
    return;
  io_uring_queue_exit(&b->ring);
  free(b->free_slots);
  free(b);
  w->backend = NULL;
}

static void ur_wake(keel__worker_t *w) {
  uint64_t one = 1;
  ssize_t rc = write(w->wake_fd, &one, sizeof one);
  (void)rc;
}

/* ---- Completions ----------------------------------------------------------- */

static void accept_cqe(keel__acceptq_t *q, struct io_uring_cqe *cqe);
static void accept_arm(keel__acceptq_t *q);

static void handle_cqe(keel__worker_t *w, struct io_uring_cqe *cqe) {
  uint64_t data = cqe->user_data;
  /* 0: a cancel request's own CQE. LIBURING_UDATA_TIMEOUT: the timeout
   * liburing queues for a timed wait on kernels without EXT_ARG. */
  if (data == 0 || data == LIBURING_UDATA_TIMEOUT)
    return;
  switch (data & TAG_MASK) {
  case TAG_WAKE:
    arm_wake(w, w->backend);
    return;
  case TAG_ACCEPT:
    accept_cqe((keel__acceptq_t *)(uintptr_t)(data & ~(uint64_t)TAG_MASK), cqe);
    return;
  default: {
    keel__wait_t *wt = (keel__wait_t *)(uintptr_t)data;
    int res = cqe->res;
    /* The op was cancelled on the task's behalf: report why. A result
     * that arrived anyway (bytes moved) is reported as it is. */
    if (res == -ECANCELED && wt->interrupted)
      res = wt->interrupted;
    wt->cqe_flags = cqe->flags;
    keel__wait_complete(wt, res);
  }
  }
}

static void ur_poll(keel__worker_t *w, int64_t timeout_ns) {
  uring_backend_t *b = w->backend;
  struct io_uring_cqe *cqe;
  if (timeout_ns == 0) {
    io_uring_submit_and_get_events(&b->ring);
  } else if (timeout_ns < 0) {
    io_uring_submit_and_wait(&b->ring, 1);
  } else {
    struct __kernel_timespec ts = {.tv_sec = timeout_ns / KEEL_NS_PER_SEC,
                                   .tv_nsec = timeout_ns % KEEL_NS_PER_SEC};
    io_uring_submit_and_wait_timeout(&b->ring, &cqe, 1, &ts, NULL);
  }
  unsigned head, seen = 0;
  io_uring_for_each_cqe(&b->ring, head, cqe) {
    handle_cqe(w, cqe);
    if (++seen == KEEL__IO_BUDGET)
      break;
  }
  io_uring_cq_advance(&b->ring, seen);
}

/* ---- Operations ------------------------------------------------------------------ */

static void op_abort(keel__wait_t *w, int err) {
  (void)err;
  uring_backend_t *b = w->task->worker->backend;
  struct io_uring_sqe *sqe = get_sqe(b);
  io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)w, 0);
  io_uring_sqe_set_data64(sqe, 0);
}

/* Queues the prepared sqe for w and parks until its CQE. The descriptor
 * counts its operations in flight so a close can cancel and await them. */
static ssize_t op_wait(keel__io_t *io, keel__wait_t *w, struct io_uring_sqe *sqe) {
  io_uring_sqe_set_data(sqe, w);
  io->inflight++;
  ssize_t rc = keel__wait_block(w, KEEL_DEADLINE_NONE, 0);
  if (--io->inflight == 0 && io->close_wait)
    keel__wait_complete(io->close_wait, 0);
  if (rc == -ECANCELED && !w->interrupted)
    rc = -EBADF; /* cancelled by a close of the descriptor (ur_io_close) */
  return rc;
}

#define UR_BEGIN(io)                           \
  int rc_ = keel__check_cancel();              \
  if (rc_)                                     \
    return rc_;                                \
  keel__wait_t w;                              \
  keel__wait_init(&w, op_abort);               \
  uring_backend_t *b_ = (io)->worker->backend; \
  struct io_uring_sqe *sqe = get_sqe(b_)

/* A recv that left the socket empty (no SOCK_NONEMPTY in its CQE) is
 * usually followed by one that must wait: request/response peers send
 * nothing more until answered. That one skips the doomed first attempt and
 * arms the socket's poll at once; data already there is found by the arm. */
static ssize_t ur_recv(keel__io_t *io, void *buf, size_t len) {
  UR_BEGIN(io);
  io_uring_prep_recv(sqe, io->fd, buf, len, 0);
  use_slot(b_, io, sqe);
  if (io->rd_drained)
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
  ssize_t n = op_wait(io, &w, sqe);
  io->rd_drained = n > 0 && !(w.cqe_flags & IORING_CQE_F_SOCK_NONEMPTY);
  return n;
}

static ssize_t ur_readv(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  UR_BEGIN(io);
  struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
  io_uring_prep_recvmsg(sqe, io->fd, &msg, 0);
  use_slot(b_, io, sqe);
  return op_wait(io, &w, sqe);
}

static ssize_t ur_send(keel__io_t *io, const void *buf, size_t len) {
  UR_BEGIN(io);
  io_uring_prep_send(sqe, io->fd, buf, len, MSG_NOSIGNAL);
  use_slot(b_, io, sqe);
  return op_wait(io, &w, sqe);
}

static ssize_t ur_writev(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  UR_BEGIN(io);
  struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
  io_uring_prep_sendmsg(sqe, io->fd, &msg, MSG_NOSIGNAL);
  use_slot(b_, io, sqe);
  return op_wait(io, &w, sqe);
}

static int ur_connect(keel__io_t *io, const struct sockaddr *sa, socklen_t len) {
  UR_BEGIN(io);
  io_uring_prep_connect(sqe, io->fd, sa, len);
  ssize_t rc = op_wait(io, &w, sqe);
  /* Connected after all, but the caller was cancelled: it gets the reason
   * and closes the socket. */
  if (rc == 0 && w.interrupted)
    rc = w.interrupted;
  return (int)rc;
}

/* A poll, not a recv: the connection holds no buffer while it waits. */
static void ur_arm_readable(keel__io_t *io, keel__wait_t *w) {
  keel__wait_init(w, op_abort);
  uring_backend_t *b = io->worker->backend;
  struct io_uring_sqe *sqe = get_sqe(b);
  io_uring_prep_poll_add(sqe, io->fd, POLLIN | POLLRDHUP);
  use_slot(b, io, sqe);
  io_uring_sqe_set_data(sqe, w);
  io->inflight++;
}

static int ur_readable_done(keel__io_t *io, keel__wait_t *w) {
  ssize_t rc = w->result;
  if (--io->inflight == 0 && io->close_wait)
    keel__wait_complete(io->close_wait, 0);
  if (rc == -ECANCELED && !w->interrupted)
    rc = -EBADF; /* cancelled by a close of the descriptor (ur_io_close) */
  if (rc < 0)
    return (int)rc;
  io->rd_drained = false; /* bytes are there: the next recv need not poll first */
  return 0;
}

/* ---- Multishot accept --------------------------------------------------------- */

static void accept_cancel_q(keel__acceptq_t *q) {
  struct io_uring_sqe *sqe = get_sqe(keel__tls_worker->backend);
  io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)q | TAG_ACCEPT, 0);
  io_uring_sqe_set_data64(sqe, 0);
}

/* Grows the queue (a burst larger than it, arriving before the pause took
 * effect); never drops an accepted connection. */
static bool acceptq_reserve(keel__acceptq_t *q) {
  if (q->fds && q->tail - q->head < q->cap)
    return true;
  unsigned cap = q->cap ? q->cap * 2 : KEEL__ACCEPTQ_MIN;
  int *fds = malloc(cap * sizeof *fds);
  if (!fds)
    return false;
  unsigned n = q->tail - q->head;
  for (unsigned i = 0; i < n; i++)
    fds[i] = q->fds[(q->head + i) & (q->cap - 1)];
  free(q->fds);
  q->fds = fds;
  q->cap = cap;
  q->head = 0;
  q->tail = n;
  return true;
}

static void accept_cqe(keel__acceptq_t *q, struct io_uring_cqe *cqe) {
  int res = cqe->res;
  if (!(cqe->flags & IORING_CQE_F_MORE))
    q->armed = false;
  if (res >= 0) {
    if (q->closing) {
      close(res);
    } else if (keel__waiters_wake_one(&q->waiters, res)) {
      /* handed straight to the first task waiting */
    } else if (!acceptq_reserve(q)) {
      close(res); /* out of memory: the peer sees a reset */
    } else {
      q->fds[q->tail++ & (q->cap - 1)] = res;
      /* Nobody takes them: pause, and let the kernel's backlog hold the
       * rest; the next accept that finds the queue empty re-arms. */
      if (q->armed && q->tail - q->head == KEEL__ACCEPTQ_MIN)
        accept_cancel_q(q);
    }
  } else if (res != -ECANCELED && !keel__waiters_wake_one(&q->waiters, res)) {
    q->err = res; /* for the next accept (e.g. -EMFILE: it backs off) */
  }
  if (!q->armed && q->close_wait)
    keel__wait_complete(q->close_wait, 0);
  else if (!q->armed && !keel__queue_empty(&q->waiters) && !q->closing)
    accept_arm(q); /* the multishot ended with tasks still waiting */
}

static void accept_cancel(keel__io_t *io) { accept_cancel_q(io->acceptq); }

static void accept_arm(keel__acceptq_t *q) {
  struct io_uring_sqe *sqe = get_sqe(keel__tls_worker->backend);
  io_uring_prep_multishot_accept(sqe, q->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)q | TAG_ACCEPT);
  q->armed = true;
}

static int ur_accept(keel__io_t *io) {
  keel__acceptq_t *q = io->acceptq;
  int rc = keel__check_cancel();
  if (rc)
    return rc;
  if (q->head != q->tail)
    return q->fds[q->head++ & (q->cap - 1)];
  if (q->err) {
    int err = q->err;
    q->err = 0;
    return err;
  }
  if (!q->armed)
    accept_arm(q);
  /* A cancelled waiter just leaves the list: the multishot stays armed
   * and what it accepts queues for the next accept. */
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue);
  keel__queue_insert_tail(&q->waiters, &w.node);
  return (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
}

/* Parks the closing task, deaf to cancellation (the cancels it submitted
 * complete promptly), until a completion handler completes *slot. */
static void park_until_retired(keel__wait_t **slot) {
  keel__wait_t w;
  keel__wait_init(&w, NULL);
  w.shielded = true;
  *slot = &w;
  keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
  *slot = NULL;
}

/* The listener is closing: stop the multishot and wait for its last CQE,
 * which references the queue, then close what was accepted but not taken. */
static void accept_close(keel__io_t *io) {
  keel__acceptq_t *q = io->acceptq;
  q->closing = true;
  keel__waiters_wake_all(&q->waiters, -EBADF);
  if (q->armed) {
    accept_cancel(io);
    park_until_retired(&q->close_wait);
  }
  while (q->head != q->tail)
    close(q->fds[q->head++ & (q->cap - 1)]);
  free(q->fds);
  q->fds = NULL;
}

/* Tasks of this worker still parked in an operation on the descriptor
 * (a reader while another task closes) are woken with -EBADF: cancel
 * everything on the fd and wait until each has seen its CQE, since their
 * buffers and the descriptor's state must outlive the operations. */
static void ur_io_close(keel__io_t *io) {
  uring_backend_t *b = io->worker->backend;
  if (io->acceptq)
    accept_close(io);
  if (io->inflight > 0) {
    /* Matches registered-slot operations too: they share the file. */
    struct io_uring_sqe *sqe = get_sqe(b);
    io_uring_prep_cancel_fd(sqe, io->fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, 0);
    park_until_retired(&io->close_wait);
  }
  release_slot(b, io);
}

const keel__backend_ops_t keel__uring_ops = {
    .name = "io_uring",
    .init = ur_init,
    .destroy = ur_destroy,
    .poll = ur_poll,
    .wake = ur_wake,
    .recv = ur_recv,
    .arm_readable = ur_arm_readable,
    .readable_done = ur_readable_done,
    .readv = ur_readv,
    .send = ur_send,
    .writev = ur_writev,
    .accept = ur_accept,
    .connect = ur_connect,
    .io_close = ur_io_close,
};
