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
static int ep_wait_ready(keel__io_t *io, bool write) {
  int rc = ep_register(io);
  if (rc < 0)
    return rc;
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue);
  keel__queue_insert_tail(write ? &io->wr_waiters : &io->rd_waiters, &w.node);
  return (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
}

/* ---- Operations --------------------------------------------------------------- */

/* Readiness as the last call or edge left it. Edge-triggered epoll reports
 * only changes, and a stream read or write that moved fewer bytes than
 * asked (or hit EAGAIN) has drained the socket: the next call waits for an
 * edge instead of trying, which saves the EAGAIN system call a message
 * would otherwise cost. End of stream (0) keeps the flag: it repeats. */
#define EP_IO(call, ready, hup, want, write)    \
  do {                                          \
    int rc_ = keel__check_cancel();             \
    if (rc_)                                    \
      return rc_;                               \
    for (;;) {                                  \
      if (io->ready || io->hup) {               \
        ssize_t n_ = (call);                    \
        if (n_ >= 0) {                          \
          size_t want_ = (want);                \
          if (n_ > 0 && (size_t)n_ < want_)     \
            io->ready = false;                  \
          return n_;                            \
        }                                       \
        if (errno == EINTR)                     \
          continue;                             \
        if (errno != EAGAIN)                    \
          return -errno;                        \
        io->ready = false;                      \
      }                                         \
      if ((rc_ = ep_wait_ready(io, write)) < 0) \
        return rc_;                             \
    }                                           \
  } while (0)

static size_t iov_total(const struct iovec *iov, int iovcnt) {
  size_t total = 0;
  for (int i = 0; i < iovcnt; i++)
    total += iov[i].iov_len;
  return total;
}

static ssize_t ep_recv(keel__io_t *io, void *buf, size_t len) {
  EP_IO(recv(io->fd, buf, len, 0), rd_ready, rd_hup, len, false);
}

static ssize_t ep_readv(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  EP_IO(readv(io->fd, iov, iovcnt), rd_ready, rd_hup, iov_total(iov, iovcnt), false);
}

static ssize_t ep_send(keel__io_t *io, const void *buf, size_t len) {
  EP_IO(send(io->fd, buf, len, MSG_NOSIGNAL), wr_ready, wr_hup, len, true);
}

static ssize_t ep_writev(keel__io_t *io, const struct iovec *iov, int iovcnt) {
  struct msghdr msg = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
  EP_IO(sendmsg(io->fd, &msg, MSG_NOSIGNAL), wr_ready, wr_hup, iov_total(iov, iovcnt), true);
}

static int ep_accept(keel__io_t *io) {
  EP_IO(accept4(io->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), rd_ready, rd_hup, 0, false);
}

/* rd_ready may only mean "unknown, try the call": ask the socket once
 * without waiting before waiting for an edge. */
static void ep_arm_readable(keel__io_t *io, keel__wait_t *w) {
  keel__wait_init(w, keel__wait_abort_dequeue);
  if (io->rd_ready && !io->rd_hup) {
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
  if ((rc = ep_wait_ready(io, true)) < 0)
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
