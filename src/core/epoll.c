/* The epoll backend: readiness (edge-triggered) plus non-blocking calls.
 * Each operation tries the system call first and parks the task only on
 * EAGAIN, so a busy socket costs one call per operation. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

typedef struct epoll_backend {
  int epfd;
  struct epoll_event events[KEEL__IO_BUDGET];
} epoll_backend_t;

static int ep_init(keel__worker_t *w) {
  epoll_backend_t *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  b->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (b->epfd < 0) {
    int err = -errno;
    free(b);
    return err;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0) {
    int err = -errno;
    close(b->epfd);
    free(b);
    return err;
  }
  w->backend = b;
  return 0;
}

static void ep_destroy(keel__worker_t *w) {
  epoll_backend_t *b = w->backend;
  if (!b)
    return;
  close(b->epfd);
  free(b);
  w->backend = NULL;
}

static void ep_wake(keel__worker_t *w) {
  uint64_t one = 1;
  ssize_t rc = write(w->wake_fd, &one, sizeof one);
  (void)rc;
}

static void ep_dispatch(keel__worker_t *w, struct epoll_event *ev) {
  keel__io_t *io = ev->data.ptr;
  if (!io) {
    uint64_t n;
    ssize_t rc = read(w->wake_fd, &n, sizeof n);
    (void)rc;
    return;
  }
  /* Every waiter retries its call: with edge triggering, one that finds
   * nothing (another took the connection or the bytes) parks again and
   * the next arrival is a new edge. */
  uint32_t e = ev->events;
  /* A hang-up is a state, not an event: a short read that drains the data
   * before it must not make the next read wait for an edge that will not
   * come (the end of stream, an error). */
  if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
    io->rd_hup = true;
  if (e & (EPOLLHUP | EPOLLERR))
    io->wr_hup = true;
  if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
    io->rd_ready = true;
    io->rd_edge = true;
    keel__waiters_wake_all(&io->rd_waiters, 0);
  }
  if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
    io->wr_ready = true;
    keel__waiters_wake_all(&io->wr_waiters, 0);
  }
}

static void ep_poll(keel__worker_t *w, int64_t timeout_ns) {
  epoll_backend_t *b = w->backend;
  int timeout_ms = timeout_ns < 0 ? -1 : (int)keel__ns_to_ms_ceil(timeout_ns);
  if (timeout_ns > (int64_t)INT32_MAX * KEEL_NS_PER_MS)
    timeout_ms = INT32_MAX;
  int n = epoll_wait(b->epfd, b->events, KEEL__IO_BUDGET, timeout_ms);
  keel__stat_add(&w->stats.polls, 1);
  keel__stat_add(&w->stats.poll_events, n > 0 ? (uint64_t)n : 0);
  for (int i = 0; i < n; i++)
    ep_dispatch(w, &b->events[i]);
}

/* ---- Waiting for readiness ------------------------------------------------- */

static int ep_register(keel__io_t *io) {
  if (io->registered)
    return 0;
  epoll_backend_t *b = io->worker->backend;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = io};
  if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, io->fd, &ev) < 0)
    return -errno;
  io->registered = true;
  return 0;
}

/* Parks until io is readable (or writable). Edge-triggered: callers only
 * come here after the call returned EAGAIN, so an edge is still to come. */
static int ep_wait_ready(keel__io_t *io, bool write, bool alertable, keel__wait_kind_t kind) {
  int rc = ep_register(io);
  if (rc < 0)
    return rc;
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue, kind, io);
  keel__wait_on_fd(&w, io->fd);
  w.alertable = alertable;
  keel__queue_insert_tail(write ? &io->wr_waiters : &io->rd_waiters, &w.node);
  return (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
}

/* ---- Operations --------------------------------------------------------------- */

static size_t iov_total(const struct iovec *iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  return total;
}

/* The non-blocking call an operation makes, and its arguments. The kind
 * is a constant in each operation and ep_io is always inlined, so the
 * switches below fold to the one call: nothing is dispatched at run time
 * per read or write. (Left to itself GCC keeps ep_io, with five callers,
 * out of line.) */
typedef enum ep_call_kind { EP_RECV, EP_READV, EP_SEND, EP_WRITEV, EP_ACCEPT } ep_call_kind_t;

typedef struct ep_call {
  ep_call_kind_t kind;
  void *buf; /* recv, send (which only reads it) */
  size_t len;
  const struct iovec *iov; /* readv, writev */
  int iovcnt;
} ep_call_t;

static inline bool ep_call_writes(const ep_call_t *c) {
  return c->kind == EP_SEND || c->kind == EP_WRITEV;
}

/* Makes the call once: its result, with errno set when negative. */
static inline ssize_t ep_call_once(keel__io_t *io, const ep_call_t *c) {
  switch (c->kind) {
  case EP_RECV:
    return recv(io->fd, c->buf, c->len, 0);
  case EP_READV:
    return readv(io->fd, c->iov, c->iovcnt);
  case EP_SEND:
    return send(io->fd, c->buf, c->len, MSG_NOSIGNAL);
  case EP_WRITEV: {
    struct msghdr msg = {.msg_iov = (struct iovec *)c->iov, .msg_iovlen = (size_t)c->iovcnt};
    return sendmsg(io->fd, &msg, MSG_NOSIGNAL);
  }
  case EP_ACCEPT:
    return accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  }
  errno = EINVAL; /* not a kind: unreachable */
  return -1;
}

/* What a task parked in the call waits on, for the task dump. */
static inline keel__wait_kind_t ep_call_wait_kind(const ep_call_t *c) {
  return c->kind == EP_ACCEPT ? KEEL__WAIT_ACCEPT
         : ep_call_writes(c)  ? KEEL__WAIT_SEND
                              : KEEL__WAIT_RECV;
}

/* The bytes the call asked for; 0 for an accept, whose success says
 * nothing about what is left in the backlog. */
static inline size_t ep_call_want(const ep_call_t *c) {
  switch (c->kind) {
  case EP_RECV:
  case EP_SEND:
    return c->len;
  case EP_READV:
  case EP_WRITEV:
    return iov_total(c->iov, c->iovcnt);
  case EP_ACCEPT:
    return 0;
  }
  return 0;
}

/* Makes the call, parking for readiness on EAGAIN, and returns its result
 * or a negative errno. Readiness is as the last call or edge left it.
 * Edge-triggered epoll reports only changes, and a stream read or write
 * that moved fewer bytes than asked (or hit EAGAIN) has drained the
 * socket: the next call waits for an edge instead of trying, which saves
 * the EAGAIN system call a message would otherwise cost. End of stream (0)
 * keeps the flag: it repeats. After a hang-up the call is always tried
 * (see ep_dispatch). */
static inline __attribute__((always_inline)) ssize_t ep_io(keel__io_t *io, const ep_call_t *c) {
  bool write = ep_call_writes(c);
  bool *ready = write ? &io->wr_ready : &io->rd_ready;
  const bool *hup = write ? &io->wr_hup : &io->rd_hup;
  int rc = keel__check_cancel();
  if (rc)
    return rc;
  for (;;) {
    if (*ready || *hup) {
      ssize_t n = ep_call_once(io, c);
      if (!write)
        io->rd_edge = false; /* what the edge announced has been read, or some of it */
      if (n >= 0) {
        if (n > 0 && (size_t)n < ep_call_want(c))
          *ready = false;
        return n;
      }
      if (errno == EINTR)
        continue;
      if (errno != EAGAIN)
        return -errno;
      *ready = false;
    }
    if ((rc = ep_wait_ready(io, write, !write, ep_call_wait_kind(c))) < 0)
      return rc;
  }
}

static ssize_t ep_recv(keel__io_t *io, void *buf, size_t len) {
  return ep_io(io, &(ep_call_t){.kind = EP_RECV, .buf = buf, .len = len});
}

static ssize_t ep_readv(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  return ep_io(io, &(ep_call_t){.kind = EP_READV, .iov = iov, .iovcnt = iovcnt});
}

static ssize_t ep_send(keel__io_t *io, const void *buf, size_t len) {
  return ep_io(io, &(ep_call_t){.kind = EP_SEND, .buf = (void *)buf, .len = len});
}

static ssize_t ep_writev(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  return ep_io(io, &(ep_call_t){.kind = EP_WRITEV, .iov = iov, .iovcnt = iovcnt});
}

static int ep_accept(keel__io_t *io) { return (int)ep_io(io, &(ep_call_t){.kind = EP_ACCEPT}); }

/* rd_ready may only mean "unknown, try the call": ask the socket once
 * without waiting before waiting for an edge, unless an edge came since
 * the last read (then bytes or the end of stream are there for sure: a
 * parked connection woken by its next request pays no poll). */
static void ep_arm_readable(keel__io_t *io, keel__wait_t *w) {
  keel__wait_init(w, keel__wait_abort_dequeue, KEEL__WAIT_READABLE, io);
  keel__wait_on_fd(w, io->fd);
  w->alertable = true;
  if (io->rd_ready && !io->rd_edge && !io->rd_hup) {
    struct pollfd p = {io->fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) == 0)
      io->rd_ready = false;
  }
  int rc = io->rd_ready || io->rd_hup ? 1 : ep_register(io);
  if (rc != 0) { /* readable now, or cannot wait: a read tells which */
    keel__wait_complete(w, rc < 0 ? rc : 0);
    return;
  }
  keel__queue_insert_tail(&io->rd_waiters, &w->node);
}

static int ep_readable_done(keel__io_t *io, keel__wait_t *w) {
  (void)io;
  return (int)w->result;
}

static int ep_connect(keel__io_t *io, const struct sockaddr *sa, socklen_t len) {
  int rc = keel__check_cancel();
  if (rc)
    return rc;
  if (connect(io->fd, sa, len) == 0)
    return 0;
  if (errno != EINPROGRESS)
    return -errno;
  /* A connect may be cut short by an alert. */
  if ((rc = ep_wait_ready(io, true, true, KEEL__WAIT_CONNECT)) < 0)
    return rc;
  int err = 0;
  socklen_t elen = sizeof err;
  if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
    return -errno;
  return -err;
}

static void ep_io_close(keel__io_t *io) {
  /* A task of this worker still parked on the descriptor (misuse, but it
   * must not sleep forever) learns that it is gone. */
  keel__waiters_wake_all(&io->rd_waiters, -EBADF);
  keel__waiters_wake_all(&io->wr_waiters, -EBADF);
  if (io->registered) {
    epoll_backend_t *b = io->worker->backend;
    epoll_ctl(b->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->registered = false;
  }
}

const keel__backend_ops_t keel__epoll_ops = {
    .name = "epoll",
    .init = ep_init,
    .destroy = ep_destroy,
    .poll = ep_poll,
    .wake = ep_wake,
    .recv = ep_recv,
    .arm_readable = ep_arm_readable,
    .readable_done = ep_readable_done,
    .readv = ep_readv,
    .send = ep_send,
    .writev = ep_writev,
    .accept = ep_accept,
    .connect = ep_connect,
    .io_close = ep_io_close,
};
