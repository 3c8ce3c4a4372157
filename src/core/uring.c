/* The io_uring backend: a completion engine. Operations are queued as SQEs
 * while the task parks; the worker submits the whole batch and waits for
 * completions in one io_uring_enter. A cancelled operation's buffer stays
 * untouched only once its CQE has arrived, so cancellation submits an
 * ASYNC_CANCEL and the task stays parked until then. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* Provided buffers: a connection that waits for bytes with no task stack
 * (keel_tcp_park) or no buffer of its own (keel_stream_wait_readable)
 * waits in a recv that takes one of these only when bytes arrive, so that
 * it costs one operation, as a plain recv does, where a poll and then a
 * recv cost two. The reads that follow deliver them first. 256 buffers
 * keep 1,000 busy connections from running the ring dry (with 64 they
 * did, often enough to cost 15% of CPU per message); a burst beyond it
 * falls back to an ordinary recv (-ENOBUFS). 16 KiB each (4 MiB of address
 * space per worker, resident only where bytes have landed): with 4 KiB, a
 * 16 KiB message cost a copy and a second system call, 27% more CPU.
 * The kernel takes them in ring order, so traffic touches every one (at
 * least a page each: 1 MiB). A worker that has had nothing to do for
 * PBUF_TRIM_IDLE_NS gives the pages of the free ones back (pbuf_trim). */
#define PBUF_COUNT 256
#define PBUF_SIZE 16384
#define PBUF_GROUP 0
#define PBUF_TRIM_IDLE_NS KEEL_NS_PER_SEC
_Static_assert(PBUF_SIZE <= 65535, "pend_off and pend_len are unsigned short");

typedef struct uring_backend {
  struct io_uring ring;
  uint64_t wake_buf;
  bool ext_arg;    /* kernel waits with a timeout without a timeout SQE */
  bool wake_armed; /* the wake read is queued or in flight */
  unsigned nslots; /* registered file table size, 0 if unavailable */
  unsigned nfree;  /* free slots, on the stack below */
  unsigned *free_slots;
  /* Waits whose cancel found no SQE to go in (the kernel refused the full
   * SQ): ur_poll queues each cancel once it can, still behind the SQE of
   * the operation it cancels. See owe_cancel. */
  keel__queue_t cancels_owed;
  struct io_uring_buf_ring *pbuf_ring; /* NULL: readiness waits poll */
  char *pbufs;
  size_t pbuf_map_size;
  unsigned pbufs_out;                   /* taken by a completion, not yet given back */
  uint64_t pbuf_taken[PBUF_COUNT / 64]; /* which: a bit per buffer id */
  bool pbufs_dirty;                     /* some were filled since the last trim */
  bool local_work;     /* deferred task work: the kernel fills buffers only in our enter */
  unsigned pbuf_trims; /* idle trims done */
} uring_backend_t;

/* How often a full SQ's submit is tried while the kernel reports a passing
 * condition (-EINTR, -EAGAIN, -EBUSY), and how long ur_poll may sleep while
 * work is owed to the ring (the wake read, cancels). */
#define SUBMIT_TRIES 8
#define OWED_RETRY_NS KEEL_NS_PER_MS

/* The SQ is full: hand the batch to the kernel, which frees its entries.
 * This used to retry until the kernel took it, so a kernel that refuses
 * the batch for good (-ENOMEM, -EBADFD, -EEXIST for a thread that is not
 * the ring's issuer) spun the worker forever with every task on it stuck.
 * A passing refusal gets a few more tries, each after io_uring_get_events:
 * it runs the completions deferred to this thread, which hands their
 * requests back to the kernel (-EAGAIN: it could not allocate one), and
 * flushes overflowed CQEs where they fit (-EBUSY: some could not be).
 * Waiting for a completion would not free CQ space: only reaping does, and
 * reaping here would run completion handlers inside whatever asked for the
 * SQE (ur_poll's CQE loop, an abort hook run by a timer). Then the caller
 * fails what it was starting, or owes it (owe_cancel, wake_armed). */
struct io_uring_sqe *keel__uring_sqe_after_submit(struct io_uring *ring, int *err) {
  int rc = -EBUSY;
  for (int tries = 0; tries < SUBMIT_TRIES; tries++) {
    rc = io_uring_submit(ring);
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (sqe)
      return sqe;
    if (rc >= 0)
      rc = -EBUSY; /* the kernel took none */
    else if (rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
      break;
    if (rc != -EINTR)
      io_uring_get_events(ring);
  }
  *err = rc;
  return NULL;
}

/* An SQE to prepare, or NULL with the negative errno in *err when the SQ
 * is full and the kernel will not take it. */
static inline struct io_uring_sqe *get_sqe(uring_backend_t *b, int *err) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
  if (KEEL__LIKELY(sqe != NULL))
    return sqe;
  return keel__uring_sqe_after_submit(&b->ring, err);
}

static void log_refused(const char *what, int err) {
  keel_log(KEEL_LOG_WARN, "io_uring refused a full submission queue (%s); %s until it takes one",
           keel_strerror(err), what);
}

/* Other threads' posts wake a worker asleep in the ring through this read
 * of its eventfd. Without an SQE it stays unarmed, and ur_poll arms it
 * again (waking for that meanwhile) before it sleeps. */
static void arm_wake(keel__worker_t *w, uring_backend_t *b) {
  int err;
  struct io_uring_sqe *sqe = get_sqe(b, &err);
  if (KEEL__UNLIKELY(!sqe)) {
    if (b->wake_armed)
      log_refused("the wake-up read waits", err);
    b->wake_armed = false;
    return;
  }
  io_uring_prep_read(sqe, w->wake_fd, &b->wake_buf, sizeof b->wake_buf, 0);
  io_uring_sqe_set_data64(sqe, (uintptr_t)w | TAG_WAKE);
  b->wake_armed = true;
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
#ifdef IORING_SETUP_DEFER_TASKRUN
  b->local_work = p.flags & IORING_SETUP_DEFER_TASKRUN;
#endif
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
static void use_slot(keel__io_t *io, struct io_uring_sqe *sqe) {
  if (io->slot < 0) {
    uring_backend_t *b = io->worker->backend;
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

/* The ring's entries on the first page of one mapping, the buffers after. */
static void pbuf_init(uring_backend_t *b) {
  size_t ring_bytes = (PBUF_COUNT * sizeof(struct io_uring_buf) + 4095) & ~(size_t)4095;
  size_t size = ring_bytes + (size_t)PBUF_COUNT * PBUF_SIZE;
  void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED)
    return;
  struct io_uring_buf_reg reg = {
      .ring_addr = (uintptr_t)map, .ring_entries = PBUF_COUNT, .bgid = PBUF_GROUP};
  if (io_uring_register_buf_ring(&b->ring, &reg, 0) != 0) { /* before Linux 5.19 */
    munmap(map, size);
    return;
  }
  b->pbuf_ring = map;
  b->pbufs = (char *)map + ring_bytes;
  b->pbuf_map_size = size;
  io_uring_buf_ring_init(b->pbuf_ring);
  int mask = io_uring_buf_ring_mask(PBUF_COUNT);
  for (unsigned i = 0; i < PBUF_COUNT; i++)
    io_uring_buf_ring_add(b->pbuf_ring, b->pbufs + (size_t)i * PBUF_SIZE, PBUF_SIZE,
                          (unsigned short)i, mask, (int)i);
  io_uring_buf_ring_advance(b->pbuf_ring, PBUF_COUNT);
}

static bool pbuf_is_taken(const uring_backend_t *b, unsigned bid) {
  return b->pbuf_taken[bid / 64] & ((uint64_t)1 << (bid % 64));
}

static void pbuf_taken(uring_backend_t *b, unsigned short bid) {
  b->pbufs_out++;
  b->pbuf_taken[bid / 64] |= (uint64_t)1 << (bid % 64);
  b->pbufs_dirty = true;
}

static void pbuf_return(uring_backend_t *b, unsigned short bid) {
  b->pbufs_out--;
  b->pbuf_taken[bid / 64] &= ~((uint64_t)1 << (bid % 64));
  io_uring_buf_ring_add(b->pbuf_ring, b->pbufs + (size_t)bid * PBUF_SIZE, PBUF_SIZE, bid,
                        io_uring_buf_ring_mask(PBUF_COUNT), 0);
  io_uring_buf_ring_advance(b->pbuf_ring, 1);
}

/* Copies what a readiness wait received into iov; the buffer goes back to
 * the ring once it is all delivered. Returns the count (> 0). */
static size_t pbuf_take(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  uring_backend_t *b = io->worker->backend;
  const char *src = b->pbufs + (size_t)io->pend_bid * PBUF_SIZE + io->pend_off;
  size_t done = 0;
  for (int i = 0; i < iovcnt && done < io->pend_len; i++) {
    size_t n = iov[i].iov_len < io->pend_len - done ? iov[i].iov_len : io->pend_len - done;
    memcpy(iov[i].iov_base, src + done, n);
    done += n;
  }
  io->pend_off = (unsigned short)(io->pend_off + done);
  io->pend_len = (unsigned short)(io->pend_len - done);
  if (io->pend_len == 0)
    pbuf_return(b, io->pend_bid);
  return done;
}

/* Bytes already received come first, even for a cancelled task: they are
 * never dropped. When they do not fill the read and the socket holds more,
 * one non-blocking recv adds what is there, instead of a round through the
 * ring for each provided buffer's worth. */
static ssize_t pbuf_read(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  bool more = !io->rd_drained;
  size_t n = pbuf_take(io, iov, iovcnt);
  if (io->pend_len > 0 || !more || keel__check_cancel() < 0)
    return (ssize_t)n; /* a cancelled task gets what is here, starts nothing */
  struct iovec rest[8];
  int k = 0;
  size_t skip = n;
  for (int i = 0; i < iovcnt && k < 8; i++) {
    if (skip >= iov[i].iov_len) {
      skip -= iov[i].iov_len;
      continue;
    }
    rest[k++] = (struct iovec){(char *)iov[i].iov_base + skip, iov[i].iov_len - skip};
    skip = 0;
  }
  if (k == 0)
    return (ssize_t)n;
  struct msghdr msg = {.msg_iov = rest, .msg_iovlen = (size_t)k};
  ssize_t m = recvmsg(io->fd, &msg, MSG_DONTWAIT);
  if (m > 0)
    n += (size_t)m;
  io->rd_drained = m <= 0;
  return (ssize_t)n;
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
  pbuf_init(b);
  keel__queue_init(&b->cancels_owed);
  w->backend = b;
  arm_wake(w, b); /* cannot lack an SQE: the ring is empty */
  return 0;
}

static void ur_destroy(keel__worker_t *w) {
  uring_backend_t *b = w->backend;
  if (!b)
    return;
  io_uring_queue_exit(&b->ring);
  if (b->pbuf_ring)
    munmap(b->pbuf_ring, b->pbuf_map_size);
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
static int accept_arm(keel__acceptq_t *q);

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

static void pay_owed_cancels(uring_backend_t *b);

/* Work owed to the ring goes in before the submit. While some is still
 * owed the sleep is capped: without the wake read, posts from other
 * threads would not end it, and the CQEs an owed cancel brings are not
 * coming either. */
static int64_t settle_owed(keel__worker_t *w, uring_backend_t *b, int64_t timeout_ns) {
  if (!b->wake_armed)
    arm_wake(w, b);
  pay_owed_cancels(b);
  if (b->wake_armed && keel__queue_empty(&b->cancels_owed))
    return timeout_ns;
  return timeout_ns < 0 || timeout_ns > OWED_RETRY_NS ? OWED_RETRY_NS : timeout_ns;
}

/* The worker had nothing to do for PBUF_TRIM_IDLE_NS: the pages of the
 * provided buffers in the ring go back to the system (they read as zeros
 * when next filled), in runs of free buffers. Only with deferred task
 * work, where the kernel fills a buffer only inside this thread's
 * io_uring_enter: never while madvise runs. */
static void pbuf_trim(uring_backend_t *b) {
  b->pbufs_dirty = false;
  b->pbuf_trims++;
  for (unsigned i = 0; i < PBUF_COUNT;) {
    if (pbuf_is_taken(b, i)) {
      i++;
      continue;
    }
    unsigned j = i + 1;
    while (j < PBUF_COUNT && !pbuf_is_taken(b, j))
      j++;
    madvise(b->pbufs + (size_t)i * PBUF_SIZE, (size_t)(j - i) * PBUF_SIZE, MADV_DONTNEED);
    i = j;
  }
}

static void ur_poll(keel__worker_t *w, int64_t timeout_ns) {
  uring_backend_t *b = w->backend;
  struct io_uring_cqe *cqe;
  if (KEEL__UNLIKELY(!b->wake_armed || !keel__queue_empty(&b->cancels_owed)))
    timeout_ns = settle_owed(w, b, timeout_ns);
  /* Going to sleep for long with buffers filled since the last trim: wake
   * after PBUF_TRIM_IDLE_NS to trim them if nothing came meanwhile. */
  bool trim = b->pbufs_dirty && b->local_work && (timeout_ns < 0 || timeout_ns > PBUF_TRIM_IDLE_NS);
  if (trim)
    timeout_ns = PBUF_TRIM_IDLE_NS;
  keel__stat_add(&w->stats.io_submitted, io_uring_sq_ready(&b->ring));
  keel__stat_add(&w->stats.io_enters, 1);
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
  keel__stat_add(&w->stats.io_completed, seen);
  if (trim && seen == 0)
    pbuf_trim(b);
}

/* ---- Cancels ---------------------------------------------------------------------- */

static void prep_cancel_op(struct io_uring_sqe *sqe, keel__wait_t *w) {
  io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)w, 0);
  io_uring_sqe_set_data64(sqe, 0);
}

/* Matches registered-slot operations too: they share the file. */
static void prep_cancel_fd(struct io_uring_sqe *sqe, keel__io_t *io) {
  io_uring_prep_cancel_fd(sqe, io->fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data64(sqe, 0);
}

/* A cancel that found no SQE cannot be dropped: the task it serves stays
 * parked until the operation's CQE, which may never come unasked (a recv
 * on a quiet socket). w waits on the owed list instead: an operation's
 * own wait (data NULL) owes the cancel of that operation, a closer's
 * (data: the descriptor) the cancel of everything on it. Each leaves the
 * list when it ends (op_wait, park_until_retired). */
static void owe_cancel(uring_backend_t *b, keel__wait_t *w, int err) {
  if (keel__queue_empty(&b->cancels_owed))
    log_refused("cancels wait", err);
  keel__queue_insert_tail(&b->cancels_owed, &w->node);
}

/* In the order they were owed, so each stays behind what it cancels;
 * stops at the first that still finds no SQE. */
static void pay_owed_cancels(uring_backend_t *b) {
  while (!keel__queue_empty(&b->cancels_owed)) {
    keel__wait_t *w = keel__container_of(b->cancels_owed.next, keel__wait_t, node);
    if (!w->done) { /* done: its CQE came anyway, its task not yet back */
      int err;
      struct io_uring_sqe *sqe = get_sqe(b, &err);
      if (!sqe)
        return;
      if (w->data)
        prep_cancel_fd(sqe, w->data);
      else
        prep_cancel_op(sqe, w);
    }
    keel__queue_remove(&w->node);
  }
}

/* ---- Operations ------------------------------------------------------------------ */

static void op_abort(keel__wait_t *w, int err) {
  (void)err;
  uring_backend_t *b = w->task->worker->backend;
  int rc;
  struct io_uring_sqe *sqe = get_sqe(b, &rc);
  if (KEEL__UNLIKELY(!sqe)) {
    owe_cancel(b, w, rc);
    return;
  }
  prep_cancel_op(sqe, w);
}

/* The start every operation shares: a cancelled task starts nothing, and
 * w is set up so that an interruption cancels the SQE handed out. 0 with
 * *sqe to prepare, or the negative errno the operation returns at once. */
static inline int op_begin(keel__io_t *io, keel__wait_t *w, keel__wait_kind_t kind,
                           struct io_uring_sqe **sqe) {
  int rc = keel__check_cancel();
  if (rc)
    return rc;
  keel__wait_init(w, op_abort, kind, io);
  keel__wait_on_fd(w, io->fd);
  int err;
  *sqe = get_sqe(io->worker->backend, &err);
  return KEEL__LIKELY(*sqe != NULL) ? 0 : err;
}

/* Queues the prepared sqe for w and parks until its CQE. The descriptor
 * counts its operations in flight so a close can cancel and await them. */
static ssize_t op_wait(keel__io_t *io, keel__wait_t *w, struct io_uring_sqe *sqe) {
  io_uring_sqe_set_data(sqe, w);
  io->inflight++;
  ssize_t rc = keel__wait_block(w, KEEL_DEADLINE_NONE, 0);
  if (--io->inflight == 0 && io->close_wait)
    keel__wait_complete(io->close_wait, 0);
  if (KEEL__UNLIKELY(w->interrupted))
    keel__queue_remove(&w->node); /* off the owed cancels, if it was on */
  if (rc == -ECANCELED && !w->interrupted)
    rc = -EBADF; /* cancelled by a close of the descriptor (ur_io_close) */
  return rc;
}

/* A recv that left the socket empty (no SOCK_NONEMPTY in its CQE) is
 * usually followed by one that must wait: request/response peers send
 * nothing more until answered. That one skips the doomed first attempt and
 * arms the socket's poll at once; data already there is found by the arm. */
/* What a readiness wait left for the next read: bytes in a provided
 * buffer, or an error it took from the socket (the kernel clears it once
 * reported), which the read reports as it would have. */
static inline bool pend_any(const keel__io_t *io) { return (io->pend_len | io->pend_err) != 0; }

static ssize_t pend_read(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  if (io->pend_len > 0)
    return pbuf_read(io, iov, iovcnt);
  int err = io->pend_err;
  io->pend_err = 0;
  return err;
}

static ssize_t ur_recv(keel__io_t *io, void *buf, size_t len) {
  if (KEEL__UNLIKELY(pend_any(io)))
    return pend_read(io, &(struct iovec){buf, len}, 1);
  keel__wait_t w;
  struct io_uring_sqe *sqe;
  int rc = op_begin(io, &w, KEEL__WAIT_RECV, &sqe);
  if (rc)
    return rc;
  w.alertable = true;
  io_uring_prep_recv(sqe, io->fd, buf, len, 0);
  use_slot(io, sqe);
  if (io->rd_drained)
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
  ssize_t n = op_wait(io, &w, sqe);
  io->rd_drained = n > 0 && !(w.cqe_flags & IORING_CQE_F_SOCK_NONEMPTY);
  return n;
}

static ssize_t ur_readv(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  if (KEEL__UNLIKELY(pend_any(io)))
    return pend_read(io, iov, iovcnt);
  keel__wait_t w;
  struct io_uring_sqe *sqe;
  int rc = op_begin(io, &w, KEEL__WAIT_RECV, &sqe);
  if (rc)
    return rc;
  w.alertable = true;
  struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
  io_uring_prep_recvmsg(sqe, io->fd, &msg, 0);
  use_slot(io, sqe);
  return op_wait(io, &w, sqe);
}

static ssize_t ur_send(keel__io_t *io, const void *buf, size_t len) {
  keel__wait_t w;
  struct io_uring_sqe *sqe;
  int rc = op_begin(io, &w, KEEL__WAIT_SEND, &sqe);
  if (rc)
    return rc;
  io_uring_prep_send(sqe, io->fd, buf, len, MSG_NOSIGNAL);
  use_slot(io, sqe);
  return op_wait(io, &w, sqe);
}

static ssize_t ur_writev(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  keel__wait_t w;
  struct io_uring_sqe *sqe;
  int rc = op_begin(io, &w, KEEL__WAIT_SEND, &sqe);
  if (rc)
    return rc;
  struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
  io_uring_prep_sendmsg(sqe, io->fd, &msg, MSG_NOSIGNAL);
  use_slot(io, sqe);
  return op_wait(io, &w, sqe);
}

static int ur_connect(keel__io_t *io, const struct sockaddr *sa, socklen_t len) {
  keel__wait_t w;
  struct io_uring_sqe *sqe;
  int rc = op_begin(io, &w, KEEL__WAIT_CONNECT, &sqe);
  if (rc)
    return rc;
  w.alertable = true; /* a connect cut short leaves a socket to close, nothing lost */
  io_uring_prep_connect(sqe, io->fd, sa, len);
  ssize_t n = op_wait(io, &w, sqe);
  /* Connected after all, but the caller was cancelled: it gets the reason
   * and closes the socket. */
  if (n == 0 && w.interrupted)
    n = w.interrupted;
  return (int)n;
}

/* The connection holds no buffer while it waits: a recv into a provided
 * buffer, taken only when bytes arrive (it polls first, and takes none
 * before), or a poll where the kernel has no provided buffers. */
static void ur_arm_readable(keel__io_t *io, keel__wait_t *w) {
  keel__wait_init(w, op_abort, KEEL__WAIT_READABLE, io);
  keel__wait_on_fd(w, io->fd);
  w->alertable = true;
  uring_backend_t *b = io->worker->backend;
  if (pend_any(io)) {
    w->abort = NULL;
    keel__wait_complete(w, 0); /* bytes (or an error) are here already */
    return;
  }
  int err;
  struct io_uring_sqe *sqe = get_sqe(b, &err);
  if (KEEL__UNLIKELY(!sqe)) {
    w->abort = NULL; /* nothing in flight: readable_done has nothing to retire */
    keel__wait_complete(w, err);
    return;
  }
  if (b->pbuf_ring) {
    io_uring_prep_recv(sqe, io->fd, NULL, PBUF_SIZE, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = PBUF_GROUP;
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
  } else {
    io_uring_prep_poll_add(sqe, io->fd, POLLIN | POLLRDHUP);
  }
  use_slot(io, sqe);
  io_uring_sqe_set_data(sqe, w);
  io->inflight++;
}

/* w->data stays NULL: pay_owed_cancels reads it as a closer's wait. */
static int ur_readable_done(keel__io_t *io, keel__wait_t *w) {
  ssize_t rc = w->result;
  if (w->abort != op_abort) /* never went to the kernel */
    return (int)rc;
  if (--io->inflight == 0 && io->close_wait)
    keel__wait_complete(io->close_wait, 0);
  if (KEEL__UNLIKELY(w->interrupted))
    keel__queue_remove(&w->node); /* off the owed cancels, if it was on */
  if (w->cqe_flags & IORING_CQE_F_BUFFER) {
    unsigned short bid = (unsigned short)(w->cqe_flags >> IORING_CQE_BUFFER_SHIFT);
    pbuf_taken(io->worker->backend, bid);
    if (rc > 0) { /* even if interrupted: the bytes are delivered, not lost */
      io->pend_bid = bid;
      io->pend_off = 0;
      io->pend_len = (unsigned short)rc;
      io->rd_drained = !(w->cqe_flags & IORING_CQE_F_SOCK_NONEMPTY);
      return 0;
    }
    pbuf_return(io->worker->backend, bid);
  }
  if (rc == -ECANCELED && !w->interrupted)
    rc = -EBADF;      /* cancelled by a close of the descriptor (ur_io_close) */
  if (rc == -ENOBUFS) /* bytes came, no buffer: a read takes them */
    rc = 0;
  if (rc < 0 && !w->interrupted && rc != -EBADF) { /* the socket's own error */
    io->pend_err = (int)rc;
    return 0;
  }
  if (rc < 0)
    return (int)rc;
  io->rd_drained = false; /* bytes (or the end) are there: the next recv need not poll first */
  return 0;
}

/* ---- Multishot accept --------------------------------------------------------- */

/* 0, or the negative errno when no SQE was to be had. */
static int accept_cancel_q(keel__acceptq_t *q) {
  int err;
  struct io_uring_sqe *sqe = get_sqe(keel__tls_worker->backend, &err);
  if (!sqe)
    return err;
  io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)q | TAG_ACCEPT, 0);
  io_uring_sqe_set_data64(sqe, 0);
  return 0;
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

/* The multishot ended with tasks still waiting. If it cannot be armed
 * again nothing would wake them: each gets the error instead. */
static void accept_rearm(keel__acceptq_t *q) {
  int rc = accept_arm(q);
  if (rc < 0)
    keel__waiters_wake_all(&q->waiters, rc);
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
       * rest; the next accept that finds the queue empty re-arms. Without
       * an SQE for the cancel it keeps accepting and the queue grows. */
      if (q->armed && q->tail - q->head == KEEL__ACCEPTQ_MIN)
        (void)accept_cancel_q(q);
    }
  } else if (res != -ECANCELED && !keel__waiters_wake_one(&q->waiters, res)) {
    q->err = res; /* for the next accept (e.g. -EMFILE: it backs off) */
  }
  if (!q->armed && q->close_wait)
    keel__wait_complete(q->close_wait, 0);
  else if (!q->armed && !keel__queue_empty(&q->waiters) && !q->closing)
    accept_rearm(q);
}

/* 0, or the negative errno when no SQE was to be had (still unarmed). */
static int accept_arm(keel__acceptq_t *q) {
  int err;
  struct io_uring_sqe *sqe = get_sqe(keel__tls_worker->backend, &err);
  if (!sqe)
    return err;
  io_uring_prep_multishot_accept(sqe, q->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)q | TAG_ACCEPT);
  q->armed = true;
  return 0;
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
  if (!q->armed && (rc = accept_arm(q)) < 0)
    return rc;
  /* A cancelled waiter just leaves the list: the multishot stays armed
   * and what it accepts queues for the next accept. */
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue, KEEL__WAIT_ACCEPT, io);
  keel__wait_on_fd(&w, io->fd);
  keel__queue_insert_tail(&q->waiters, &w.node);
  return (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
}

/* Parks the closing task, deaf to cancellation (the cancels it submitted
 * complete promptly), until a completion handler completes *slot. A closer
 * whose cancel found no SQE (owed_err < 0) owes the cancel of everything
 * on io instead (owe_cancel). */
static void park_until_retired(keel__io_t *io, keel__wait_t **slot, int owed_err) {
  keel__wait_t w;
  keel__wait_init(&w, NULL, KEEL__WAIT_CLOSE, io);
  keel__wait_on_fd(&w, io->fd);
  w.shielded = true;
  if (KEEL__UNLIKELY(owed_err < 0)) {
    w.data = io;
    owe_cancel(io->worker->backend, &w, owed_err);
  }
  *slot = &w;
  keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
  *slot = NULL;
  keel__queue_remove(&w.node); /* off the owed cancels, if it was on */
}

/* The listener is closing: stop the multishot and wait for its last CQE,
 * which references the queue, then close what was accepted but not taken.
 * An owed cancel cancels everything on the listener: only the multishot. */
static void accept_close(keel__io_t *io) {
  keel__acceptq_t *q = io->acceptq;
  q->closing = true;
  keel__waiters_wake_all(&q->waiters, -EBADF);
  if (q->armed)
    park_until_retired(io, &q->close_wait, accept_cancel_q(q));
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
    int err = 0;
    struct io_uring_sqe *sqe = get_sqe(b, &err);
    if (sqe)
      prep_cancel_fd(sqe, io);
    park_until_retired(io, &io->close_wait, err);
  }
  if (io->pend_len > 0) { /* received, never read */
    pbuf_return(b, io->pend_bid);
    io->pend_len = 0;
  }
  release_slot(b, io);
}

int keel__uring_pbufs_out(keel__worker_t *w) {
  if (w->ops != &keel__uring_ops || !((uring_backend_t *)w->backend)->pbuf_ring)
    return -1;
  return (int)((uring_backend_t *)w->backend)->pbufs_out;
}

int keel__uring_pbuf_trims(keel__worker_t *w) {
  if (w->ops != &keel__uring_ops)
    return -1;
  uring_backend_t *b = w->backend;
  return b->pbuf_ring && b->local_work ? (int)b->pbuf_trims : -1;
}

int keel__uring_pbuf_resident(keel__worker_t *w) {
  if (w->ops != &keel__uring_ops || !((uring_backend_t *)w->backend)->pbuf_ring)
    return -1;
  return (int)keel__resident_pages(((uring_backend_t *)w->backend)->pbufs,
                                   (size_t)PBUF_COUNT * PBUF_SIZE);
}

struct io_uring *keel__uring_ring(keel__worker_t *w) {
  if (w->ops != &keel__uring_ops)
    return NULL;
  return &((uring_backend_t *)w->backend)->ring;
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
